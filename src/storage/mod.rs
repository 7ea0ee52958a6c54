//! The storage traits an application implements: the log ([`RaftLogStorage`] and
//! [`RaftLogReader`]) and the state machine ([`RaftStateMachine`]).
//!
//! quorate ships a durable log store that keeps this contract, behind the `file-store`
//! feature: `quorate::file_store::FileLogStore`. Most applications link it and implement only
//! their state machine.
//!
//! # What must be durable, and when
//!
//! Raft's safety rests on a few writes surviving a crash. quorate tells the storage exactly
//! when each must be durable; an implementation that acknowledges earlier loses data.
//!
//! | operation | visible to readers | durable |
//! |---|---|---|
//! | [`RaftLogStorage::save_vote`] | on return | **on return** (a node must not grant a vote twice in a term) |
//! | [`RaftLogStorage::append`] | **on return** | when it calls [`IOFlushed::io_completed`]; at that point every earlier log operation must be durable too |
//! | [`RaftLogStorage::truncate`] | on return | no later than the next append's `io_completed` |
//! | [`RaftLogStorage::purge`] | on return | lazily, but in call order: no later than the next append's `io_completed`, and never before the log operations called before it (a purge lost in a crash is harmless) |
//! | [`RaftLogStorage::save_committed`] | — | lazily; it only shortens recovery |
//! | [`RaftStateMachine::apply`] | on return | lazily: after a crash, quorate re-applies the log from [`RaftStateMachine::applied_state`]; a state machine may also persist eagerly and come back *ahead* of the node's durable log (see below) |
//! | [`RaftStateMachine::install_snapshot`] | on return | **on return**: the log behind it may be purged next, so after a crash the state machine must come back at least at the snapshot |
//! | [`RaftSnapshotBuilder::build_snapshot`] | on return | **on return**, or [`RaftStateMachine::applied_state`] never goes back below it: the log behind it is purged next, so after a crash the node must hold the snapshot, or a state at least as new |
//! | what [`RaftLogStorage::get_log_state`] reports at startup | — | **before it returns**: everything it reports counts as durable from then on (a store that reads back entries still only in the page cache after a process crash must sync them first, or a power loss later loses entries the node acknowledged) |
//!
//! **Log operations become durable in the order they were called.** Appends, truncations and
//! purges may be made durable late, in batches, but never out of order: whenever one of them is
//! durable, so is every log operation called before it. (quorate relies on it after a snapshot
//! install, which truncates the log's conflicting tail and then purges up to the snapshot: if
//! the purge survives a crash, the truncation must too.) A store that writes each operation to
//! one append-only file, or applies them to its files in call order, has this for free.
//!
//! **The state machine may get ahead of the node's own durable log.** A follower applies what
//! the leader says is committed (durable on a quorum) as soon as the entries are in its log,
//! which may be before its own `append` reported them durable. A state machine that persists
//! every `apply` can therefore come back from a crash ahead of the log (applied 7, durable log
//! ending at 2). That is not corruption and must not be refused or rolled back: quorate
//! purges the log up to what was applied ([`RaftLogStorage::purge`] with an `upto` past the
//! last entry) and the log goes on after it; until the node builds a snapshot, entries up to
//! there exist only in the state machine.
//!
//! quorate calls the log storage from one task, one call at a time, in the order the protocol
//! needs; an implementation never sees two concurrent calls on one `&mut self`. Log readers
//! ([`RaftLogStorage::get_log_reader`]) run concurrently with it, from replication tasks and
//! the state machine task.
//!
//! Every method returns [`StorageError`] on failure. quorate treats a storage error as fatal:
//! the node stops serving (see [`Fatal`](crate::error::Fatal)) rather than act on state it could
//! not persist.

mod callback;
mod snapshot;

use std::future::Future;
use std::ops::Range;

pub(crate) use callback::FlushReceiver;
pub use callback::IOFlushed;
pub use snapshot::{Snapshot, SnapshotMeta};

use crate::RaftTypeConfig;
use crate::error::StorageError;
use crate::types::{Entry, LogId, StoredMembership, Vote};

/// The shape of the log: where it starts and ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogState<C: RaftTypeConfig> {
    /// The id of the last entry removed by [`RaftLogStorage::purge`], or `None` if nothing was
    /// ever purged. Entries at or below it are gone; a snapshot covers them.
    pub last_purged_log_id: Option<LogId<C>>,
    /// The id of the last entry in the log, or, if the log is empty, `last_purged_log_id`.
    pub last_log_id: Option<LogId<C>>,
}

/// Reads entries from the log. Every replication task and the state machine task hold their own.
///
/// A reader sees every entry whose [`RaftLogStorage::append`] call has returned, whether or not
/// it is durable yet, and sees truncations and purges once those calls return.
pub trait RaftLogReader<C: RaftTypeConfig>: Send + Sync + 'static {
    /// The entries with index in `range`, in index order.
    ///
    /// Return every entry of the range that is in the log, and no others: quorate asks only for
    /// ranges it knows are present, except that a concurrent purge or truncation may have
    /// removed some, in which case return the ones left (possibly none); quorate checks what it
    /// gets and retries or falls back to a snapshot.
    ///
    /// # Errors
    /// [`StorageError`] if the log could not be read.
    fn try_get_log_entries(
        &mut self,
        range: Range<u64>,
    ) -> impl Future<Output = Result<Vec<Entry<C>>, StorageError>> + Send;
}

/// The durable Raft log and vote of one node.
///
/// See the [module docs](self) for what must be durable when. quorate never calls two
/// methods of one instance concurrently.
pub trait RaftLogStorage<C: RaftTypeConfig>: Send + Sync + 'static {
    /// The reader type handed out by [`get_log_reader`](Self::get_log_reader).
    type LogReader: RaftLogReader<C>;

    /// The first and last log ids. Called at startup, more than once if startup changes the
    /// log (after a purge that reconciles the log with the state machine, see
    /// [`purge`](Self::purge)); keep no one-shot state in it.
    ///
    /// Everything it reports must be durable when it returns: quorate counts the whole log it
    /// reports as flushed, and may acknowledge its entries to a leader at once. A store that
    /// recovers entries a crashed process wrote but never synced (still in the page cache)
    /// must sync them before reporting them.
    ///
    /// # Errors
    /// [`StorageError`] if the log could not be read.
    fn get_log_state(&mut self) -> impl Future<Output = Result<LogState<C>, StorageError>> + Send;

    /// A new reader of this log. It must see everything appended through `self`, including what
    /// is appended after it was created.
    fn get_log_reader(&mut self) -> impl Future<Output = Self::LogReader> + Send;

    /// Persist the vote. It **must be durable when this returns**: the node acts on it (grants a
    /// vote, accepts entries of a new term) right after.
    ///
    /// Called whenever the vote changes, including when only its `committed` flag does (a
    /// candidate that won, a follower that learns the term's leader): expect a durable write or
    /// two per election on every node.
    ///
    /// Within one term the vote may also change its node: a candidate that voted for itself
    /// (`{term, self, uncommitted}`) and lost follows the winner (`{term, winner, committed}`).
    /// A committed vote records the leader the node follows, not a ballot, so this is not a
    /// second vote in the term; a store (or a test) that checks "one vote per term" should
    /// compare only uncommitted votes, and accept a committed one of the same term. Votes never
    /// go back: each saved vote is at least the previous one (see [`Vote`]'s ordering).
    ///
    /// # Errors
    /// [`StorageError`] if the vote could not be persisted.
    fn save_vote(&mut self, vote: &Vote<C>) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The last vote saved, or `None` for a new node.
    ///
    /// A node saves a term's vote before it appends an entry of that term or installs a snapshot
    /// from that term's leader, so the vote read back at startup is never older than the term
    /// of the last log entry, of the purged log id, or of what the state machine applied. A
    /// vote that is (a store that lost or rolled back its vote while the node's other data
    /// stayed, e.g. a log directory deleted or restored from a backup apart from the state
    /// machine's) makes the node refuse to start with [`Fatal::Invariant`]: it could vote
    /// again in a term it voted in.
    ///
    /// [`Fatal::Invariant`]: crate::error::Fatal::Invariant
    ///
    /// # Errors
    /// [`StorageError`] if the vote could not be read.
    fn read_vote(&mut self) -> impl Future<Output = Result<Option<Vote<C>>, StorageError>> + Send;

    /// Record the committed log id, to re-apply committed entries sooner after a restart.
    /// Optional: the default does nothing. It need not be durable before returning.
    ///
    /// # Errors
    /// [`StorageError`] if it could not be recorded.
    fn save_committed(&mut self, committed: Option<LogId<C>>) -> impl Future<Output = Result<(), StorageError>> + Send {
        let _ = committed;
        async { Ok(()) }
    }

    /// The committed log id saved by [`save_committed`](Self::save_committed), if any.
    ///
    /// # Errors
    /// [`StorageError`] if it could not be read.
    fn read_committed(&mut self) -> impl Future<Output = Result<Option<LogId<C>>, StorageError>> + Send {
        async { Ok(None) }
    }

    /// Append `entries` to the end of the log.
    ///
    /// The entries are consecutive and follow the current last entry (the log never has gaps).
    /// They **must be visible to log readers when this returns**. When they are durable, call
    /// `callback.io_completed(Ok(()))` (from any thread, at any later time, e.g. after a group
    /// fsync shared with other appends). Completing the callback promises that these entries,
    /// and every log operation before them, survive a crash. Call it with `Err` if they could
    /// not be made durable: the node then stops.
    ///
    /// # Errors
    /// [`StorageError`] if the append failed before it was submitted.
    fn append(
        &mut self,
        entries: Vec<Entry<C>>,
        callback: IOFlushed<C>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Delete every entry with index `>= since.index`.
    ///
    /// `since` is this log's own entry at that index (the one being deleted, of an older term
    /// than the leader's entry that replaces it); only its index matters. Called only on
    /// entries that are not committed, when a new leader's log differs, or at startup on
    /// entries a durable snapshot replaced. It must be durable no later than the next append
    /// is reported durable.
    ///
    /// # Errors
    /// [`StorageError`] if the entries could not be deleted.
    fn truncate(&mut self, since: LogId<C>) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Delete every entry with index `<= upto.index` and remember `upto` as the last purged id.
    ///
    /// Called on entries that are applied: normally covered by a snapshot, but `upto` **may
    /// lie past the last entry** of the log, and may be covered by no snapshot:
    /// - after a snapshot is installed on a follower whose log ends before it (no truncate
    ///   comes first when the log holds nothing of the snapshot's range to conflict);
    /// - at startup, when the state machine came back ahead of the durable log (see the module
    ///   docs): the log is purged up to what the state machine applied.
    ///
    /// Afterwards the log is empty if `upto` was past its end, [`get_log_state`](Self::get_log_state)
    /// reports `upto` as both the last purged and the last log id, and the next append starts
    /// at `upto.index + 1`. Take `upto` as given; do not derive the purged id from an entry
    /// deleted, and do not refuse an `upto` beyond the last entry. It may be made durable
    /// lazily, but not before any log operation called before it (see the module docs).
    ///
    /// # Errors
    /// [`StorageError`] if the entries could not be deleted.
    fn purge(&mut self, upto: LogId<C>) -> impl Future<Output = Result<(), StorageError>> + Send;
}

/// The application's state machine: applies committed entries and makes snapshots of itself.
///
/// quorate calls it from one task, in order. Entries reach [`apply`](Self::apply) once each, in
/// log order, and only after they are committed.
pub trait RaftStateMachine<C: RaftTypeConfig>: Send + Sync + 'static {
    /// The type that builds snapshots; see [`get_snapshot_builder`](Self::get_snapshot_builder).
    type SnapshotBuilder: RaftSnapshotBuilder<C>;

    /// The id of the last applied entry and the last membership applied (from a membership
    /// entry or an installed snapshot). Called at startup; quorate re-applies the log after it.
    ///
    /// # Errors
    /// [`StorageError`] if the state could not be read.
    fn applied_state(
        &mut self,
    ) -> impl Future<Output = Result<(Option<LogId<C>>, StoredMembership<C>), StorageError>> + Send;

    /// Apply committed entries, in order, and return one response per entry, in the same order.
    ///
    /// Every entry is passed, including blank and membership entries: the state machine must
    /// record the last applied log id (and the last membership) so that
    /// [`applied_state`](Self::applied_state) reports them. The response of a blank or
    /// membership entry is never seen by a client; return any value.
    ///
    /// # Errors
    /// [`StorageError`] if the state machine failed; the node stops.
    fn apply(&mut self, entries: Vec<Entry<C>>) -> impl Future<Output = Result<Vec<C::R>, StorageError>> + Send;

    /// A snapshot builder. quorate calls it when a snapshot is due and runs the builder in
    /// another task, so the builder must not borrow the state machine: copy what it needs, or
    /// share it behind a lock.
    fn get_snapshot_builder(&mut self) -> impl Future<Output = Self::SnapshotBuilder> + Send;

    /// An empty buffer into which a snapshot sent by the leader is written, chunk by chunk.
    ///
    /// # Errors
    /// [`StorageError`] if the buffer could not be created.
    fn begin_receiving_snapshot(&mut self) -> impl Future<Output = Result<Box<C::SnapshotData>, StorageError>> + Send;

    /// Replace the state machine's state with the received snapshot, atomically and durably.
    /// After this returns, [`applied_state`](Self::applied_state) reports `meta.last_log_id`
    /// and `meta.last_membership`, and [`get_current_snapshot`](Self::get_current_snapshot)
    /// returns this snapshot — also after a crash: the log behind the snapshot is purged next,
    /// so a state machine that came back older could not be caught up from this node's log.
    /// (A state machine that keeps no state of its own restores itself from this snapshot at
    /// startup.)
    ///
    /// `snapshot` is the buffer [`begin_receiving_snapshot`](Self::begin_receiving_snapshot)
    /// returned, holding exactly the snapshot's bytes (the chunks written in order),
    /// flushed and rewound to the start: read it from position 0.
    ///
    /// It is called at startup too, with this state machine's own current snapshot (the
    /// `meta` and `snapshot` that [`get_current_snapshot`](Self::get_current_snapshot)
    /// returned), when [`applied_state`](Self::applied_state) is behind the log's purged id:
    /// a state machine that keeps no state of its own comes back empty and is restored this
    /// way. Installing the snapshot that is already current must work.
    ///
    /// # Errors
    /// [`StorageError`] if it could not be installed; the node stops.
    fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C>,
        snapshot: Box<C::SnapshotData>,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// The most recent snapshot, built or installed, if there is one.
    ///
    /// # Errors
    /// [`StorageError`] if it could not be read.
    fn get_current_snapshot(&mut self) -> impl Future<Output = Result<Option<Snapshot<C>>, StorageError>> + Send;
}

/// Builds a snapshot of the state machine, off the Raft task.
pub trait RaftSnapshotBuilder<C: RaftTypeConfig>: Send + Sync + 'static {
    /// Build a snapshot of the state as of the last applied entry, and keep it as the current
    /// snapshot (what [`RaftStateMachine::get_current_snapshot`] returns) — unless the current
    /// snapshot is already newer (a snapshot installed from the leader while this one was
    /// being built): the current snapshot never goes back, since the log behind it may be
    /// purged.
    ///
    /// What it returns, quorate reads only for its `meta.last_log_id` (the log is purged
    /// behind it) and ignores if it is not newer than the snapshot the node already has; so
    /// when the current snapshot was newer, returning the snapshot just built or the current
    /// one are both correct.
    ///
    /// **Durable on return**: quorate purges the log up to the snapshot next, so after a crash
    /// the state machine must come back with this snapshot, or with an
    /// [`applied_state`](RaftStateMachine::applied_state) at least as new. A state machine that
    /// persists `apply` lazily must not keep its snapshot in memory only.
    ///
    /// The snapshot's bytes must not change for its
    /// [`snapshot_id`](SnapshotMeta::snapshot_id): a transfer to a follower that was
    /// interrupted resumes at an offset, reading the current snapshot again. Make the id unique
    /// across nodes too (e.g. include the node id), and never serialize one snapshot twice
    /// under one id with a different byte order (hash maps with random seeds do).
    ///
    /// # Errors
    /// [`StorageError`] if the snapshot could not be built.
    fn build_snapshot(&mut self) -> impl Future<Output = Result<Snapshot<C>, StorageError>> + Send;
}
