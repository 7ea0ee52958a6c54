//! A quorate state machine that does nothing but remember how far it got: the last applied
//! log id and the last membership, which quorate needs back at startup.

use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError};

use quorate::error::StorageError;
use quorate::storage::{Snapshot, SnapshotMeta};
use quorate::{Entry, EntryPayload, LogId, RaftSnapshotBuilder, RaftStateMachine, StoredMembership};

use super::QuorateTypes;
use crate::Empty;

type C = QuorateTypes;

/// The no-op state machine of one node.
#[derive(Default)]
pub struct NoopStateMachine {
    applied: Option<LogId<C>>,
    membership: StoredMembership<C>,
    /// What the last built or installed snapshot covered; the data itself is always empty.
    /// Shared with the builders, which run on their own task.
    snapshot: CurrentSnapshot,
}

type CurrentSnapshot = Arc<Mutex<Option<SnapshotMeta<C>>>>;

fn set_current(slot: &CurrentSnapshot, meta: SnapshotMeta<C>) {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(meta);
}

fn empty_snapshot(meta: SnapshotMeta<C>) -> Snapshot<C> {
    Snapshot { meta, snapshot: Box::new(Cursor::new(Vec::new())) }
}

impl RaftStateMachine<C> for NoopStateMachine {
    type SnapshotBuilder = NoopSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<C>>, StoredMembership<C>), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply(&mut self, entries: Vec<Entry<C>>) -> Result<Vec<Empty>, StorageError> {
        let mut responses = Vec::with_capacity(entries.len());
        for entry in entries {
            if let EntryPayload::Membership(m) = entry.payload {
                self.membership = StoredMembership::new(Some(entry.log_id), m);
            }
            self.applied = Some(entry.log_id);
            responses.push(Empty);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoopSnapshotBuilder {
            slot: self.snapshot.clone(),
            meta: SnapshotMeta {
                last_log_id: self.applied,
                last_membership: self.membership.clone(),
                snapshot_id: format!("{}", self.applied.map_or(0, |l| l.index)),
            },
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        set_current(&self.snapshot, meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError> {
        let current = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Ok(current.map(empty_snapshot))
    }
}

/// Builds an empty snapshot stamped with what was applied when it was created.
pub struct NoopSnapshotBuilder {
    slot: CurrentSnapshot,
    meta: SnapshotMeta<C>,
}

impl RaftSnapshotBuilder<C> for NoopSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError> {
        set_current(&self.slot, self.meta.clone());
        Ok(empty_snapshot(self.meta.clone()))
    }
}
