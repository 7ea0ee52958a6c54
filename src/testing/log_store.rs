//! [`MemLogStore`]: an in-memory [`RaftLogStorage`] that models what a crash loses.
//!
//! The store keeps two views of the log:
//!
//! - the **submitted** view: every operation whose call has returned. Readers see it, and
//!   [`MemLogStore::entries`] shows it.
//! - the **durable** view: what would survive a crash. It is the submitted view as of the last
//!   completed flush: every append, truncate, purge and saved committed id is queued, and an
//!   append's flush replays everything queued up to it onto the durable view, then fires its
//!   callback. A truncate, purge or committed id therefore becomes durable with the next
//!   append's flush, which is the latest the [storage contract](crate::storage) allows.
//!
//! The vote is durable when [`save_vote`](RaftLogStorage::save_vote) returns, as the contract
//! demands.
//!
//! # What a crash loses
//!
//! [`MemLogStore::reopen`] simulates a crash and restart that loses everything not yet
//! flushed; [`MemLogStore::reopen_keeping`] one that cuts the queue of unflushed operations
//! anywhere, also inside an append (a store that writes in order, like a write-ahead log,
//! leaves such a prefix behind: entries whose flush was never reported may survive). Either
//! way the submitted view is reset to the durable one, queued flushes are forgotten (their
//! callbacks never fire), and every handle from before the restart fails its storage calls
//! with [`StorageError`], as the crashed process would have stopped.
//!
//! Against the contract's table, that is: a vote is never lost; an append reported durable is
//! never lost, and neither is any operation before it; an append not reported durable, a
//! truncate, a purge and a committed id after the last reported flush may each be lost, but
//! only together with every queued operation after it. That is exactly the contract's order
//! for log operations (appends, truncates and purges are durable in call order). The contract
//! allows one thing more than this store does: a committed id, saved lazily, lost even though
//! a later append was flushed; that only makes a restart re-apply from further back, so the
//! store keeps every crash state in write order.
//!
//! # Crash points
//!
//! A [`CrashSwitch`] set with [`MemLogStore::set_crash_switch`] freezes the node between two
//! storage calls; see [`crash_switch`](super::crash_switch).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyerror::AnyError;

use super::TypeConfig;
use super::crash_switch::{CrashSwitch, StorageCall, StoreSwitch};
use crate::error::{ErrorSubject, ErrorVerb, StorageError};
use crate::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use crate::types::{Entry, LogId, LogIdOptionExt, Vote};

type C = TypeConfig;

/// An in-memory log store for tests: cloneable, restartable, with a controllable disk.
///
/// Every clone is a handle to the same log. Keep one in the test and hand another to
/// [`Raft::new`](crate::Raft::new); inspect the log through yours while the node runs, and
/// call [`reopen`](Self::reopen) to restart the node from what was durable.
///
/// The disk is controlled by two knobs: [`set_flush_delay`](Self::set_flush_delay) and
/// [`set_flush_stalled`](Self::set_flush_stalled). Flush callbacks always fire in the order
/// of the appends, and a flush makes every operation queued before it durable too.
///
/// Storage calls never panic on bad input: an append that leaves a gap or overlaps the log,
/// a truncate at or below the purged log, and any call through a handle made stale by
/// [`reopen`](Self::reopen) return a [`StorageError`].
#[derive(Clone)]
pub struct MemLogStore {
    shared: Arc<Mutex<LogInner>>,
    /// The restart this handle belongs to; storage calls fail once it is not the current one.
    generation: u64,
}

/// Reads the submitted view of a [`MemLogStore`]. Made by
/// [`get_log_reader`](RaftLogStorage::get_log_reader); fails once the store is reopened.
pub struct MemLogReader {
    shared: Arc<Mutex<LogInner>>,
    generation: u64,
}

struct LogInner {
    /// Bumped by every `reopen`; handles of an older generation belong to a crashed node.
    generation: u64,
    vote: Option<Vote<C>>,
    /// What readers see: every operation that has returned.
    submitted: LogView,
    /// What survives a crash: the operations of `pending` not yet replayed are missing.
    durable: LogView,
    /// Operations submitted and not yet durable, oldest first. Invariant: replaying all of
    /// them onto `durable` gives `submitted`.
    pending: VecDeque<PendingIo>,
    /// The sequence number of the next operation; never reset, so a flush timer of a crashed
    /// node cannot reach operations submitted after the restart.
    next_seq: u64,
    /// Every pending operation with a sequence number `<= due` may be flushed now; they are,
    /// unless the disk is stalled.
    due: u64,
    flush_delay: Duration,
    flush_stalled: bool,
    append_count: u64,
    /// Freezes the node between two storage calls; none unless a test sets one.
    crash: StoreSwitch,
}

/// A log of up to this many entries is allocated exactly, without the spare room of doubling.
const SHORT_LOG: usize = 8;

/// The log as one of the two views sees it.
#[derive(Clone, Default)]
struct LogView {
    purged: Option<LogId<C>>,
    /// The entries in index order, without gaps: a log is contiguous, so a deque indexed from
    /// the first entry's index holds it (a B-tree's nodes of eleven entries cost every idle
    /// group of a many-groups benchmark over a kilobyte per view).
    entries: VecDeque<Entry<C>>,
    committed: Option<LogId<C>>,
}

/// A log operation waiting to become durable.
struct PendingIo {
    seq: u64,
    op: LogOp,
    /// The append's callback; the other operations have none.
    callback: Option<IOFlushed<C>>,
}

#[derive(Clone)]
enum LogOp {
    Append(Vec<Entry<C>>),
    Truncate(u64),
    Purge(LogId<C>),
    SaveCommitted(Option<LogId<C>>),
}

impl LogOp {
    /// How many places a crash can cut this operation at: one per entry of an append, one
    /// for any other operation.
    fn units(&self) -> usize {
        match self {
            LogOp::Append(entries) => entries.len(),
            _ => 1,
        }
    }
}

impl LogView {
    fn last_log_id(&self) -> Option<LogId<C>> {
        self.entries.back().map(|e| e.log_id).or(self.purged)
    }

    /// Where entry `index` is in `entries`, if it is there.
    fn position(&self, index: u64) -> Option<usize> {
        let first = self.entries.front()?.log_id.index;
        let at = usize::try_from(index.checked_sub(first)?).ok()?;
        (at < self.entries.len()).then_some(at)
    }

    /// The entry at `index`, if the view holds it.
    fn get(&self, index: u64) -> Option<&Entry<C>> {
        self.position(index).map(|at| &self.entries[at])
    }

    /// The entries of `range` the view holds, in order.
    fn range(&self, range: Range<u64>) -> impl Iterator<Item = &Entry<C>> {
        let first = self.entries.front().map_or(0, |e| e.log_id.index);
        let skip = usize::try_from(range.start.saturating_sub(first)).unwrap_or(usize::MAX);
        self.entries.iter().skip(skip).take_while(move |e| e.log_id.index < range.end)
    }

    fn apply(&mut self, op: LogOp) {
        match op {
            // Appends follow the last entry (`append_entries` checks it, and the durable view
            // replays the same operations in the same order).
            LogOp::Append(entries) => {
                // Exactly what a short log needs (an idle group of a many-groups benchmark holds
                // three entries, in each of two views); longer ones grow by doubling.
                if self.entries.len() + entries.len() <= SHORT_LOG {
                    self.entries.reserve_exact(entries.len());
                }
                self.entries.extend(entries);
            }
            LogOp::Truncate(since) => {
                let first = self.entries.front().map_or(0, |e| e.log_id.index);
                let kept = usize::try_from(since.saturating_sub(first)).unwrap_or(usize::MAX);
                self.entries.truncate(kept);
            }
            LogOp::Purge(upto) => {
                while self.entries.front().is_some_and(|e| e.log_id.index <= upto.index) {
                    self.entries.pop_front();
                }
                if self.purged.index() < Some(upto.index) {
                    self.purged = Some(upto);
                }
            }
            LogOp::SaveCommitted(committed) => self.committed = committed,
        }
    }
}

impl LogInner {
    /// Queue `op` (already applied to `submitted`) to become durable; returns its sequence.
    fn push_pending(&mut self, op: LogOp, callback: Option<IOFlushed<C>>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        // One slot for the first operation (an idle group's last one is usually its lazily
        // saved committed id, which waits for the next append): not the four a deque starts with.
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(1);
        }
        self.pending.push_back(PendingIo { seq, op, callback });
        seq
    }

    /// Mark everything up to `seq` flushable and flush it unless the disk is stalled.
    fn flush_upto(&mut self, seq: u64) {
        self.due = self.due.max(seq);
        if self.flush_stalled {
            return;
        }
        while self.pending.front().is_some_and(|p| p.seq <= self.due) {
            let Some(io) = self.pending.pop_front() else {
                break;
            };
            self.durable.apply(io.op);
            // Fired under the lock so that concurrent flushes still complete in order;
            // `io_completed` only sends on a channel and never calls back into the store.
            if let Some(callback) = io.callback {
                callback.io_completed(Ok(()));
            }
        }
        // Hand the buffer back once everything is durable: the store of an idle group of a
        // many-groups benchmark would keep it (four slots) for nothing. At most one allocation
        // per flush that drains the queue, never per entry.
        if self.pending.is_empty() {
            self.pending = VecDeque::new();
        }
    }
}

fn lock(shared: &Mutex<LogInner>) -> MutexGuard<'_, LogInner> {
    // A panic while holding the lock cannot leave the views half-updated in a way that
    // matters to a test that is already failing; keep going with the data.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lock the store for a storage call of a handle of `generation`.
fn lock_current(
    shared: &Mutex<LogInner>,
    generation: u64,
    verb: ErrorVerb,
) -> Result<MutexGuard<'_, LogInner>, StorageError> {
    let inner = lock(shared);
    if inner.generation != generation {
        return Err(log_error(verb, "this log store handle predates a reopen: its node has crashed"));
    }
    Ok(inner)
}

fn log_error(verb: ErrorVerb, msg: impl ToString) -> StorageError {
    StorageError::new(ErrorSubject::Logs, verb, AnyError::error(msg))
}

impl Default for MemLogStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemLogStore {
    /// An empty log with no vote, flushing immediately.
    pub fn new() -> Self {
        let inner = LogInner {
            generation: 0,
            vote: None,
            submitted: LogView::default(),
            durable: LogView::default(),
            pending: VecDeque::new(),
            next_seq: 1,
            due: 0,
            flush_delay: Duration::ZERO,
            flush_stalled: false,
            append_count: 0,
            crash: StoreSwitch::default(),
        };
        Self { shared: Arc::new(Mutex::new(inner)), generation: 0 }
    }

    /// Simulate a crash and restart: a handle to the log as it was durable.
    ///
    /// Entries appended but not yet flushed are dropped (their callbacks never fire), and so
    /// are truncates, purges and committed ids not yet made durable by a later flush. The vote
    /// survives. Every other handle, and every reader, of this store fails its storage calls
    /// from now on; their inspection methods keep working and see the new state. The knobs
    /// ([`set_flush_delay`](Self::set_flush_delay),
    /// [`set_flush_stalled`](Self::set_flush_stalled)), the crash switch and
    /// [`append_count`](Self::append_count) carry over: they describe the disk, not the
    /// process.
    pub fn reopen(&self) -> MemLogStore {
        self.reopen_keeping(0)
    }

    /// Simulate a crash that cut the queue of unflushed operations after its first `units`
    /// (see [`pending_units`](Self::pending_units)): those became durable (no callback fires
    /// for them), the rest are lost. Otherwise as [`reopen`](Self::reopen).
    pub fn reopen_keeping(&self, units: usize) -> MemLogStore {
        let mut inner = lock(&self.shared);
        inner.generation += 1;
        let mut left = units;
        let pending = std::mem::take(&mut inner.pending);
        for io in pending {
            if left == 0 {
                break;
            }
            let op = match io.op {
                LogOp::Append(mut entries) if entries.len() > left => {
                    entries.truncate(left);
                    LogOp::Append(entries)
                }
                op => op,
            };
            left -= op.units();
            inner.durable.apply(op);
        }
        inner.submitted = inner.durable.clone();
        MemLogStore { shared: self.shared.clone(), generation: inner.generation }
    }

    /// How many places a crash can cut the queue of unflushed operations at: one per entry of
    /// each unflushed append, one per other unflushed operation.
    pub fn pending_units(&self) -> usize {
        lock(&self.shared).pending.iter().map(|io| io.op.units()).sum()
    }

    /// Freeze this store's node at the crash points `switch` is armed with. Share the switch
    /// with the node's state machine. Carries over [`reopen`](Self::reopen).
    pub fn set_crash_switch(&self, switch: CrashSwitch) {
        lock(&self.shared).crash.set(switch);
    }

    fn crash_switch(&self) -> StoreSwitch {
        lock(&self.shared).crash.clone()
    }

    /// Complete each append's flush `delay` after the append (`Duration::ZERO`, the default:
    /// during the append call). Applies to appends made from now on.
    pub fn set_flush_delay(&self, delay: Duration) {
        lock(&self.shared).flush_delay = delay;
    }

    /// While `stalled`, no flush completes: appends are visible but not durable. Setting it
    /// back to `false` completes, in order, every flush whose delay has passed.
    pub fn set_flush_stalled(&self, stalled: bool) {
        let mut inner = lock(&self.shared);
        inner.flush_stalled = stalled;
        if !stalled {
            let due = inner.due;
            inner.flush_upto(due);
        }
    }

    /// Every entry in the log (the submitted view: durable or not), in index order.
    pub fn entries(&self) -> Vec<Entry<C>> {
        lock(&self.shared).submitted.entries.iter().cloned().collect()
    }

    /// The saved vote, if any.
    pub fn vote(&self) -> Option<Vote<C>> {
        lock(&self.shared).vote
    }

    /// The id of the last entry in the log (durable or not), or the last purged id if the log
    /// is empty.
    pub fn last_log_id(&self) -> Option<LogId<C>> {
        lock(&self.shared).submitted.last_log_id()
    }

    /// The id of the last durable entry: what [`last_log_id`](Self::last_log_id) would be
    /// after a [`reopen`](Self::reopen).
    pub fn durable_last_log_id(&self) -> Option<LogId<C>> {
        lock(&self.shared).durable.last_log_id()
    }

    /// Whether the entry `log_id` would survive a crash: the durable log holds it, or purged
    /// it (a snapshot covers it).
    pub fn is_durable(&self, log_id: LogId<C>) -> bool {
        let inner = lock(&self.shared);
        inner.durable.get(log_id.index).is_some_and(|e| e.log_id == log_id)
            || inner.durable.purged.is_some_and(|p| p >= log_id)
    }

    /// How many times [`append`](RaftLogStorage::append) was called, since the store was
    /// created (across reopens). Shows how well appends are batched.
    pub fn append_count(&self) -> u64 {
        lock(&self.shared).append_count
    }

    fn lock_current(&self, verb: ErrorVerb) -> Result<MutexGuard<'_, LogInner>, StorageError> {
        lock_current(&self.shared, self.generation, verb)
    }
}

impl RaftLogReader<C> for MemLogReader {
    async fn try_get_log_entries(&mut self, range: Range<u64>) -> Result<Vec<Entry<C>>, StorageError> {
        let crash = lock(&self.shared).crash.clone();
        crash.enter().await?;
        let inner = lock_current(&self.shared, self.generation, ErrorVerb::Read)?;
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        Ok(inner.submitted.range(range).cloned().collect())
    }
}

impl RaftLogStorage<C> for MemLogStore {
    type LogReader = MemLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError> {
        self.crash_switch().enter().await?;
        let inner = self.lock_current(ErrorVerb::Read)?;
        Ok(LogState { last_purged_log_id: inner.submitted.purged, last_log_id: inner.submitted.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> MemLogReader {
        MemLogReader { shared: self.shared.clone(), generation: self.generation }
    }

    async fn save_vote(&mut self, vote: &Vote<C>) -> Result<(), StorageError> {
        let crash = self.crash_switch();
        crash.enter().await?;
        self.lock_current(ErrorVerb::Write)?.vote = Some(*vote);
        crash.after(StorageCall::SaveVote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C>>, StorageError> {
        self.crash_switch().enter().await?;
        Ok(self.lock_current(ErrorVerb::Read)?.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<C>>) -> Result<(), StorageError> {
        let crash = self.crash_switch();
        crash.enter().await?;
        {
            let mut inner = self.lock_current(ErrorVerb::Write)?;
            let op = LogOp::SaveCommitted(committed);
            inner.submitted.apply(op.clone());
            inner.push_pending(op, None);
        }
        crash.after(StorageCall::SaveCommitted).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C>>, StorageError> {
        self.crash_switch().enter().await?;
        Ok(self.lock_current(ErrorVerb::Read)?.submitted.committed)
    }

    async fn append(&mut self, entries: Vec<Entry<C>>, callback: IOFlushed<C>) -> Result<(), StorageError> {
        let crash = self.crash_switch();
        crash.enter().await?;
        self.append_entries(entries, callback)?;
        crash.after(StorageCall::Append).await
    }

    async fn truncate(&mut self, since: LogId<C>) -> Result<(), StorageError> {
        let crash = self.crash_switch();
        crash.enter().await?;
        {
            let mut inner = self.lock_current(ErrorVerb::Delete)?;
            if inner.submitted.purged.index() >= Some(since.index) {
                return Err(log_error(
                    ErrorVerb::Delete,
                    format!("truncate since {since} would delete purged entries"),
                ));
            }
            let op = LogOp::Truncate(since.index);
            inner.submitted.apply(op.clone());
            inner.push_pending(op, None);
        }
        crash.after(StorageCall::Truncate).await
    }

    async fn purge(&mut self, upto: LogId<C>) -> Result<(), StorageError> {
        let crash = self.crash_switch();
        crash.enter().await?;
        {
            let mut inner = self.lock_current(ErrorVerb::Delete)?;
            let op = LogOp::Purge(upto);
            inner.submitted.apply(op.clone());
            inner.push_pending(op, None);
        }
        crash.after(StorageCall::Purge).await
    }
}

impl MemLogStore {
    /// The body of [`append`](RaftLogStorage::append), between the crash switch's checks.
    fn append_entries(&mut self, entries: Vec<Entry<C>>, callback: IOFlushed<C>) -> Result<(), StorageError> {
        let mut inner = self.lock_current(ErrorVerb::Write)?;
        let mut prev = inner.submitted.last_log_id();
        for e in &entries {
            if e.log_id.index != prev.next_index() {
                return Err(log_error(
                    ErrorVerb::Write,
                    format!("append of {} does not follow the last log id {prev:?}", e.log_id),
                ));
            }
            if prev.is_some_and(|p| e.log_id.leader_id < p.leader_id) {
                return Err(log_error(
                    ErrorVerb::Write,
                    format!("append of {} goes back to an older leader than {prev:?}", e.log_id),
                ));
            }
            prev = Some(e.log_id);
        }

        inner.append_count += 1;
        let op = LogOp::Append(entries);
        inner.submitted.apply(op.clone());
        let seq = inner.push_pending(op, Some(callback));

        let delay = inner.flush_delay;
        if delay.is_zero() {
            inner.flush_upto(seq);
        } else {
            drop(inner);
            let shared = self.shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                lock(&shared).flush_upto(seq);
            });
        }
        Ok(())
    }
}
