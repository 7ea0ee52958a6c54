//! One node's storage as the model sees it: a log store that keeps what a crash would keep
//! apart from what readers see, and a state machine that is durable at once.
//!
//! The log store follows the storage contract (`src/storage/mod.rs`) at its loosest:
//!
//! - the vote is durable when `save_vote` returns;
//! - `append`, `truncate` and `purge` are visible to readers at once (the *submitted* view) and
//!   queue up to become durable in order; the model's `Flush` action makes the oldest queued
//!   operation durable, so a crash can keep any prefix of them. An append's flush is reported
//!   to the Engine (`on_log_flushed`); a truncate or purge becomes durable silently, as late
//!   as just before the next append's flush, which is the latest the contract allows;
//! - the committed log id is kept as if durable at once (the contract lets it be lost; a lost
//!   one only makes a restart re-learn it).
//!
//! Both are plain values so the checker can fork them, and both implement the storage traits
//! so that a restart runs the real `load_state` (`src/core/startup.rs`) on them: its futures
//! never wait, so the model drives them with `now_or_never`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::Cursor;
use std::ops::Range;

use anyerror::AnyError;

use crate::engine::LogIOId;
use crate::error::{ErrorSubject, ErrorVerb, StorageError};
use crate::storage::{
    IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta,
};
use crate::testing_types::UTConfig;
use crate::types::{Entry, EntryPayload, LogId, LogIdOptionExt, StoredMembership, Vote};

pub(super) type C = UTConfig;

/// The log as one view sees it: the last purged id and the entries after it.
#[derive(Clone, Default)]
pub(super) struct LogView {
    pub(super) purged: Option<LogId<C>>,
    pub(super) entries: BTreeMap<u64, Entry<C>>,
}

impl LogView {
    pub(super) fn last_log_id(&self) -> Option<LogId<C>> {
        self.entries.values().next_back().map(|e| e.log_id).or(self.purged)
    }

    /// Whether this view holds `log_id`: as an entry, or as the purged id itself.
    pub(super) fn holds(&self, log_id: LogId<C>) -> bool {
        self.entries.get(&log_id.index).map(|e| e.log_id) == Some(log_id) || self.purged == Some(log_id)
    }

    /// Carry out `op`, refusing what a conforming store refuses (as `MemLogStore` does).
    fn apply(&mut self, op: &LogOp) -> Result<(), String> {
        match op {
            LogOp::Append { entries, .. } => {
                let mut prev = self.last_log_id();
                for e in entries {
                    if e.log_id.index != prev.next_index() || prev.is_some_and(|p| e.log_id.leader_id < p.leader_id) {
                        return Err(format!("append of {} does not follow the last log id {prev:?}", e.log_id));
                    }
                    prev = Some(e.log_id);
                }
                self.entries.extend(entries.iter().map(|e| (e.log_id.index, e.clone())));
            }
            LogOp::Truncate { since } => {
                if self.purged.index() >= Some(since.index) {
                    return Err(format!("truncate since {since} would delete purged entries"));
                }
                self.entries.split_off(&since.index);
            }
            LogOp::Purge { upto } => {
                self.entries = self.entries.split_off(&(upto.index + 1));
                if self.purged.index() < Some(upto.index) {
                    self.purged = Some(*upto);
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for LogView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.purged {
            write!(f, "purged={p} ")?;
        }
        f.debug_list().entries(self.entries.values()).finish()
    }
}

/// A log operation submitted and not yet durable.
#[derive(Clone, Debug)]
pub(super) enum LogOp {
    Append { io: LogIOId<C>, entries: Vec<Entry<C>> },
    Truncate { since: LogId<C> },
    Purge { upto: LogId<C> },
}

/// The log store of one node.
#[derive(Clone, Debug, Default)]
pub(super) struct ModelLogStore {
    pub(super) vote: Option<Vote<C>>,
    pub(super) committed: Option<LogId<C>>,
    /// What readers see: every operation that has returned.
    pub(super) submitted: LogView,
    /// What survives a crash.
    pub(super) durable: LogView,
    /// Submitted operations not yet durable, oldest first; replayed onto `durable` they give
    /// `submitted`.
    pub(super) pending: VecDeque<LogOp>,
}

impl ModelLogStore {
    /// Submit `op`: visible now, durable once flushed.
    pub(super) fn submit(&mut self, op: LogOp) -> Result<(), String> {
        self.submitted.apply(&op)?;
        self.pending.push_back(op);
        Ok(())
    }

    /// Make the oldest pending operation durable; return the I/O to report if it was an append.
    pub(super) fn flush_one(&mut self) -> Result<Option<LogIOId<C>>, String> {
        let Some(op) = self.pending.pop_front() else { return Ok(None) };
        self.durable.apply(&op)?;
        Ok(match op {
            LogOp::Append { io, .. } => Some(io),
            _ => None,
        })
    }

    /// The process died: what was not durable is gone.
    pub(super) fn crash(&mut self) {
        self.pending.clear();
        self.submitted = self.durable.clone();
    }
}

fn log_error(verb: ErrorVerb, msg: impl ToString) -> StorageError {
    StorageError::new(ErrorSubject::Logs, verb, AnyError::error(msg))
}

/// A reader of the submitted view as it was when the reader was made; `load_state` takes one
/// after its last write.
pub(super) struct ModelLogReader(LogView);

impl RaftLogReader<C> for ModelLogReader {
    async fn try_get_log_entries(&mut self, range: Range<u64>) -> Result<Vec<Entry<C>>, StorageError> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        Ok(self.0.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<C> for ModelLogStore {
    type LogReader = ModelLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError> {
        Ok(LogState { last_purged_log_id: self.submitted.purged, last_log_id: self.submitted.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> ModelLogReader {
        ModelLogReader(self.submitted.clone())
    }

    async fn save_vote(&mut self, vote: &Vote<C>) -> Result<(), StorageError> {
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C>>, StorageError> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<C>>) -> Result<(), StorageError> {
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C>>, StorageError> {
        Ok(self.committed)
    }

    async fn append(&mut self, _entries: Vec<Entry<C>>, _callback: IOFlushed<C>) -> Result<(), StorageError> {
        // The model appends through `submit`, which knows the I/O id; startup never appends.
        Err(log_error(ErrorVerb::Write, "the model's store appends only through the model"))
    }

    async fn truncate(&mut self, since: LogId<C>) -> Result<(), StorageError> {
        self.submit(LogOp::Truncate { since }).map_err(|e| log_error(ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, upto: LogId<C>) -> Result<(), StorageError> {
        self.submit(LogOp::Purge { upto }).map_err(|e| log_error(ErrorVerb::Delete, e))
    }
}

/// A snapshot: what it covers and its content, the ids of the entries it applied.
#[derive(Clone, Debug)]
pub(super) struct ModelSnapshot {
    pub(super) meta: SnapshotMeta<C>,
    pub(super) applied: Vec<LogId<C>>,
}

/// The state machine of one node. Its state is the list of entries it applied, by index
/// (entry `i` at position `i`), so state-machine safety compares lists. Durable at once.
#[derive(Clone, Debug, Default)]
pub(super) struct ModelStateMachine {
    pub(super) applied: Vec<LogId<C>>,
    /// The last membership applied, from an entry or a snapshot.
    pub(super) membership: StoredMembership<C>,
    /// The latest snapshot, built or installed.
    pub(super) snapshot: Option<ModelSnapshot>,
}

impl ModelStateMachine {
    pub(super) fn last_applied(&self) -> Option<LogId<C>> {
        self.applied.last().copied()
    }

    /// Apply `first..=last` read from `log`, as the state machine worker does.
    pub(super) fn apply(&mut self, first: u64, last: LogId<C>, log: &LogView) -> Result<(), String> {
        if first != self.applied.len() as u64 {
            return Err(format!(
                "Apply({first}..={last}) after applying up to index {:?}: an entry applied twice or skipped",
                self.applied.len().checked_sub(1)
            ));
        }
        for index in first..=last.index {
            let Some(e) = log.entries.get(&index) else {
                return Err(format!("Apply({first}..={last}): entry {index} is not in the log (Fatal in the worker)"));
            };
            if index == last.index && e.log_id != last {
                return Err(format!("Apply({first}..={last}): the log holds {} there (Fatal in the worker)", e.log_id));
            }
            if let EntryPayload::Membership(m) = &e.payload {
                self.membership = StoredMembership::new(Some(e.log_id), m.clone());
            }
            self.applied.push(e.log_id);
        }
        Ok(())
    }

    /// Snapshot what is applied now.
    pub(super) fn build_snapshot(&mut self, id: u64) -> ModelSnapshot {
        let snapshot = ModelSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied(),
                last_membership: self.membership.clone(),
                snapshot_id: format!("n{id}-{}", self.applied.len()),
            },
            applied: self.applied.clone(),
        };
        self.snapshot = Some(snapshot.clone());
        snapshot
    }

    pub(super) fn install(&mut self, snapshot: ModelSnapshot) {
        self.applied = snapshot.applied.clone();
        self.membership = snapshot.meta.last_membership.clone();
        self.snapshot = Some(snapshot);
    }
}

/// Never used by `load_state`; present because the trait asks for one.
pub(super) struct NoBuilder;

impl RaftSnapshotBuilder<C> for NoBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError> {
        Err(StorageError::new(ErrorSubject::Snapshot, ErrorVerb::Write, AnyError::error("not in the model")))
    }
}

impl RaftStateMachine<C> for ModelStateMachine {
    type SnapshotBuilder = NoBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<C>>, StoredMembership<C>), StorageError> {
        Ok((self.last_applied(), self.membership.clone()))
    }

    async fn apply(&mut self, _entries: Vec<Entry<C>>) -> Result<Vec<String>, StorageError> {
        Err(StorageError::new(ErrorSubject::StateMachine, ErrorVerb::Write, AnyError::error("not in the model")))
    }

    async fn get_snapshot_builder(&mut self) -> NoBuilder {
        NoBuilder
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C>,
        _data: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        // At startup the only snapshot to restore is the current one.
        match self.snapshot.clone() {
            Some(s) if s.meta == *meta => {
                self.install(s);
                Ok(())
            }
            _ => Err(StorageError::new(ErrorSubject::Snapshot, ErrorVerb::Read, AnyError::error("unknown snapshot"))),
        }
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError> {
        Ok(self.snapshot.as_ref().map(|s| Snapshot { meta: s.meta.clone(), snapshot: Box::default() }))
    }
}
