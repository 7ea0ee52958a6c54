//! An openraft state machine that does nothing but remember the last applied log id and the
//! last membership, and answer each client write with [`Empty`].

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{Stream, TryStreamExt};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{OptionalSend, StoredMembership};

use super::OpenraftTypes;
use crate::Empty;

type C = OpenraftTypes;

/// The last built or installed snapshot's metadata; the data is always `()`. Shared with the
/// builders, which run on their own task.
type CurrentSnapshot = Arc<Mutex<Option<SnapshotMetaOf<C>>>>;

fn set_current(slot: &CurrentSnapshot, meta: SnapshotMetaOf<C>) {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(meta);
}

/// The no-op state machine of one node.
#[derive(Default)]
pub struct NoopStateMachine {
    applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    snapshot: CurrentSnapshot,
}

impl RaftStateMachine<C> for NoopStateMachine {
    type SnapshotData = ();
    type SnapshotBuilder = NoopSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            if let Some(m) = entry.get_membership() {
                self.membership = StoredMembership::new(Some(log_id), m);
            }
            self.applied = Some(log_id);
            if let Some(responder) = responder {
                responder.send(Empty);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        NoopSnapshotBuilder {
            slot: self.snapshot.clone(),
            meta: SnapshotMetaOf::<C> { last_log_id: self.applied, last_membership: self.membership.clone() },
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<C>, _snapshot: ()) -> Result<(), io::Error> {
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        set_current(&self.snapshot, meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<C, ()>>, io::Error> {
        let current = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Ok(current.map(|meta| SnapshotOf::<C, ()> { meta, snapshot: () }))
    }
}

/// Builds an empty snapshot stamped with what was applied when it was created.
pub struct NoopSnapshotBuilder {
    slot: CurrentSnapshot,
    meta: SnapshotMetaOf<C>,
}

impl RaftSnapshotBuilder<C> for NoopSnapshotBuilder {
    type SnapshotData = ();

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, ()>, io::Error> {
        set_current(&self.slot, self.meta.clone());
        Ok(SnapshotOf::<C, ()> { meta: self.meta.clone(), snapshot: () })
    }
}
