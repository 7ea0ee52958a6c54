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
//! | [`RaftLogStorage::append`] | **on return** | when it calls [`IOFlushed::io_completed`] (callbacks complete in append order); at that point every earlier log operation must be durable too |
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
///
/// A log is a run of consecutive entries with no gaps. Where it begins is fixed by
/// `last_purged_log_id`:
///
/// - `None`: nothing was ever purged, and the log, unless it is empty, **begins at index 0**.
///   Every cluster's log does: [`Raft::initialize`](crate::Raft::initialize) writes the first
///   entry, a membership entry at index 0 (term 0), and a node that joins later receives its
///   log from index 0 too (or a snapshot). At startup quorate reads the entry at index 0; a
///   store that reports a log but holds no entry 0 makes the node refuse to start with
///   [`Fatal::Invariant`](crate::error::Fatal::Invariant).
/// - `Some(p)`: the log begins at index `p.index + 1`. A log whose first entry is at index
///   `k > 0` must report the id of entry `k - 1` here (the `upto` of the last
///   [`RaftLogStorage::purge`]), even though that entry is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogState<C: RaftTypeConfig> {
    /// The id of the last entry removed by [`RaftLogStorage::purge`], or `None` if nothing was
    /// ever purged. Entries at or below it are gone; a snapshot covers them. The log's first
    /// entry, if any, is the one right after it (index 0 when it is `None`).
    pub last_purged_log_id: Option<LogId<C>>,
    /// The id of the last entry in the log, or, if the log is empty, `last_purged_log_id`.
    pub last_log_id: Option<LogId<C>>,
}

/// Reads entries from the log. Every replication task and the state machine task hold their own.
///
/// A reader sees every entry whose [`RaftLogStorage::append`] call has returned, whether or not
/// it is durable yet, and sees truncations and purges once those calls return.
///
/// # Cancel safety
///
/// A reader's call may be dropped before it completes, together with the reader: quorate
/// aborts a replication task, whatever it awaits, when the leadership it replicates for ends
/// or its target leaves the membership. Dropping a call's future must leave the store and
/// every other reader working: whatever a call holds across an await (a flag, a slot in a
/// pool, a lock on a file) must be released when its future is dropped, not only when the
/// call completes.
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

    /// The first and last log ids; see [`LogState`] for where the log must begin. Called at
    /// startup, more than once if startup changes the log (after a truncation and a purge that
    /// reconcile the log with the state machine, see [`purge`](Self::purge)); keep no one-shot
    /// state in it.
    ///
    /// Every entry it reports must be durable when it returns: quorate counts the whole log it
    /// reports as flushed, and may acknowledge its entries to a leader at once. A store that
    /// recovers entries a crashed process wrote but never synced (still in the page cache)
    /// must sync them before reporting them.
    ///
    /// When it is called again after startup's own [`truncate`](Self::truncate) or
    /// [`purge`](Self::purge), it must report the log as those calls left it, but need not
    /// make them durable first: they may stay lazily durable, as at any other time (durable no
    /// later than the next append's callback). A crash before that may bring back the log as
    /// it was, and the next startup reconciles it again.
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
    /// and every log operation before them, survive a crash. Complete callbacks in the order
    /// of their appends (see [`IOFlushed`]). Call it with `Err` if they could not be made
    /// durable: the node then stops.
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
    /// `since` is this log's own entry at that index (the one being deleted); only its index
    /// matters. Called only on entries that are not committed, in three cases:
    /// - a leader's entries conflict with this log from `since` on (its entry there is of an
    ///   older term than the leader's that replaces it);
    /// - a snapshot from the leader is being installed and this log holds another entry at
    ///   the snapshot's last index: that entry and all after it go, before the snapshot is
    ///   installed and the log is purged up to it;
    /// - at startup, on entries a durable snapshot replaced, or on a stale tail after the
    ///   purged id.
    ///
    /// It must be durable no later than the next append is reported durable, and never after
    /// a later purge is (see the module docs).
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
    /// membership entry is never seen by a client; return any value. A call holds at most
    /// 4096 entries; a longer committed range comes in several calls.
    ///
    /// Returning a number of responses other than the number of entries is a bug the node
    /// cannot recover from: it stops with [`Fatal::Invariant`](crate::error::Fatal::Invariant).
    ///
    /// After a crash, quorate applies again every committed entry after what
    /// [`applied_state`](Self::applied_state) reports. A state machine that persists its state
    /// must therefore store the last applied log id atomically with the effects of the entries
    /// up to it; or else make applying an entry twice harmless (idempotent), since entries
    /// whose effects survived a crash that their applied id did not are applied again.
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
    /// quorate writes each chunk into the buffer on the node's Raft task, as the chunk
    /// arrives, and awaits the write: the node handles nothing else meanwhile, so a write
    /// that is slow stalls the whole node (heartbeats, votes, client calls). Keep writes
    /// quick, e.g. buffered. A write, flush or seek that fails stops the node, as any storage
    /// error does.
    ///
    /// The buffer may be dropped at any time, with no call to say so: when a newer leader or
    /// a vote of a newer term ends the transfer, when the leader starts sending another
    /// snapshot, when the whole snapshot arrived but covers nothing new, and when the node
    /// shuts down. A buffer backed by a temporary file must remove it in its `Drop`.
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
    /// **Its time is on the leader's clock.** For a snapshot received from the leader, the
    /// follower answers the final chunk only once this call returned, and the call runs after
    /// every apply queued before it. The leader waits for that answer under
    /// [`Config::rpc_timeout`](crate::Config::rpc_timeout): an install (with the applies
    /// ahead of it) that takes longer shows on the leader as a timed-out chunk, after which
    /// it backs off, probes again (its probes also wait, since the follower's Raft task handles
    /// nothing else until the install returns) and may send the snapshot again. Keep it well
    /// under `rpc_timeout`, or raise `rpc_timeout`.
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
    /// A leader calls it when a follower needs entries it purged, and hands the returned
    /// [`Snapshot::snapshot`] to that follower's replication task, which reads it later, chunk
    /// by chunk, while this state machine goes on applying, building newer snapshots and
    /// installing others. The reader first seeks to `SeekFrom::End(0)` to learn the length,
    /// then, for each chunk, to `SeekFrom::Start(offset)` and reads it whole. So the returned
    /// data must stay readable, and byte for byte the same, for as long as the box lives
    /// (hold the file open, or a copy, not a path a newer snapshot replaces). A failed seek or
    /// read there is a storage error: the leader stops.
    ///
    /// It is called at startup too (see [`install_snapshot`](Self::install_snapshot)).
    ///
    /// # Errors
    /// [`StorageError`] if it could not be read.
    fn get_current_snapshot(&mut self) -> impl Future<Output = Result<Option<Snapshot<C>>, StorageError>> + Send;
}

/// Builds a snapshot of the state machine, off the Raft task.
pub trait RaftSnapshotBuilder<C: RaftTypeConfig>: Send + Sync + 'static {
    /// Build a snapshot of the state machine, and keep it as the current snapshot (what
    /// [`RaftStateMachine::get_current_snapshot`] returns) — unless the current snapshot is
    /// already newer (a snapshot installed from the leader while this one was being built):
    /// the current snapshot never goes back, since the log behind it may be purged.
    ///
    /// quorate gets the builder from
    /// [`get_snapshot_builder`](RaftStateMachine::get_snapshot_builder) between two applies,
    /// then runs this in a task of its own while the state machine goes on applying. So "the
    /// state" is whatever state the builder serializes, taken at any point, and the meta must
    /// describe exactly that state: `meta.last_log_id` is the last entry whose effects the
    /// data holds (no entry after it has any effect in it), and `meta.last_membership` is the
    /// last membership applied at or before `meta.last_log_id`, with its log id. A follower
    /// that installs the snapshot takes `last_log_id` as applied and committed and adopts
    /// `last_membership` as its membership; a meta that does not match the data corrupts it.
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
    /// [`StorageError`] if the snapshot could not be built. It is fatal: the node stops.
    fn build_snapshot(&mut self) -> impl Future<Output = Result<Snapshot<C>, StorageError>> + Send;
}
