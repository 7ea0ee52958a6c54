//! A log store and a state machine written from the trait docs alone (`quorate::storage`).
//!
//! The log store keeps two copies of the log: what readers see (updated on every call) and
//! what is durable (updated only when a flush runs). A flush applies the pending log
//! operations in call order and then completes their callbacks in order. Flushing can be held
//! (a stalled disk) per node; a crash keeps only the durable copy and the vote.
//!
//! Both record what they see in a shared [`Recorder`] so that the tests can check Raft's
//! safety properties from the storage's point of view.

use std::collections::{BTreeMap, VecDeque};
use std::io::Cursor;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use quorate::error::{ErrorSubject, ErrorVerb};
use quorate::storage::{Snapshot, SnapshotMeta};
use quorate::{
    Entry, EntryPayload, IOFlushed, LogId, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder,
    RaftStateMachine, StorageError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use crate::types::{C, Req};

/// What every store and state machine of a cluster report; the checks read it.
#[derive(Default)]
pub struct Recorder {
    /// Per term, the leader every elected (committed) vote saved by any node names.
    pub elected: BTreeMap<u64, u64>,
    /// Per index, the entry (log id and request) the first node that applied it applied.
    pub applied: BTreeMap<u64, (LogId<C>, Option<Req>)>,
    /// Per node: (log id, request) of every application entry it applied, in order, across
    /// restarts (for the "same order" check and for reads).
    pub applied_by_node: BTreeMap<u64, Vec<LogId<C>>>,
    /// Safety violations seen by storage.
    pub violations: Vec<String>,
}

pub type Rec = Arc<Mutex<Recorder>>;

enum Op {
    Append(Vec<Entry<C>>),
    Truncate(u64),
    Purge(LogId<C>),
}

#[derive(Clone, Default)]
struct LogData {
    log: BTreeMap<u64, Entry<C>>,
    purged: Option<LogId<C>>,
}

impl LogData {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(es) => {
                for e in es {
                    self.log.insert(e.log_id.index, e.clone());
                }
            }
            Op::Truncate(i) => {
                self.log.split_off(i);
            }
            Op::Purge(upto) => {
                self.log = self.log.split_off(&(upto.index + 1));
                self.purged = Some(*upto);
            }
        }
    }
}

pub struct LogInner {
    id: u64,
    vote: Option<Vote<C>>,
    committed: Option<LogId<C>>,
    visible: LogData,
    durable: LogData,
    pending: Vec<Op>,
    callbacks: VecDeque<IOFlushed<C>>,
    hold_flush: bool,
    /// Number of appends whose callback completed (for tests).
    pub flushed_appends: u64,
    rec: Rec,
}

impl LogInner {
    /// Make every pending operation durable; returns the callbacks to complete (outside the lock).
    fn flush(&mut self) -> Vec<IOFlushed<C>> {
        for op in self.pending.drain(..) {
            self.durable.apply(&op);
        }
        let cbs: Vec<_> = self.callbacks.drain(..).collect();
        self.flushed_appends += cbs.len() as u64;
        cbs
    }
}

fn complete(cbs: Vec<IOFlushed<C>>) {
    for cb in cbs {
        cb.io_completed(Ok(()));
    }
}

/// The log store. Clones share one log.
#[derive(Clone)]
pub struct LogStore {
    pub inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    pub fn new(id: u64, rec: Rec) -> Self {
        Self {
            inner: Arc::new(Mutex::new(LogInner {
                id,
                vote: None,
                committed: None,
                visible: LogData::default(),
                durable: LogData::default(),
                pending: Vec::new(),
                callbacks: VecDeque::new(),
                hold_flush: false,
                flushed_appends: 0,
                rec,
            })),
        }
    }

    /// What a restarted process finds: the vote and the durable log; unflushed operations
    /// are lost. The old store is left to the crashed node.
    pub fn crash_copy(&self) -> Self {
        let g = self.inner.lock().unwrap();
        Self {
            inner: Arc::new(Mutex::new(LogInner {
                id: g.id,
                vote: g.vote,
                committed: None,
                visible: g.durable.clone(),
                durable: g.durable.clone(),
                pending: Vec::new(),
                callbacks: VecDeque::new(),
                hold_flush: false,
                flushed_appends: 0,
                rec: g.rec.clone(),
            })),
        }
    }

    /// Stop (true) or resume (false) making appends durable. Resuming flushes what waits.
    pub fn hold_flush(&self, hold: bool) {
        let cbs = {
            let mut g = self.inner.lock().unwrap();
            g.hold_flush = hold;
            if hold { Vec::new() } else { g.flush() }
        };
        complete(cbs);
    }

    /// The visible log, in index order.
    pub fn entries(&self) -> Vec<Entry<C>> {
        self.inner.lock().unwrap().visible.log.values().cloned().collect()
    }

    pub fn purged(&self) -> Option<LogId<C>> {
        self.inner.lock().unwrap().visible.purged
    }

    /// Log ids of the durable log.
    pub fn durable_ids(&self) -> Vec<LogId<C>> {
        self.inner.lock().unwrap().durable.log.values().map(|e| e.log_id).collect()
    }

    pub fn vote(&self) -> Option<Vote<C>> {
        self.inner.lock().unwrap().vote
    }
}

pub struct LogReader {
    inner: Arc<Mutex<LogInner>>,
}

impl RaftLogReader<C> for LogReader {
    async fn try_get_log_entries(&mut self, range: Range<u64>) -> Result<Vec<Entry<C>>, StorageError> {
        let g = self.inner.lock().unwrap();
        Ok(g.visible.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError> {
        let g = self.inner.lock().unwrap();
        let last = g.visible.log.values().next_back().map(|e| e.log_id).or(g.visible.purged);
        Ok(LogState { last_purged_log_id: g.visible.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { inner: self.inner.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote<C>) -> Result<(), StorageError> {
        let mut g = self.inner.lock().unwrap();
        let id = g.id;
        // A node votes once per term: within a term the voted-for node never changes, except
        // to follow the term's elected leader (a committed vote is greater than any
        // uncommitted one, `Vote` docs): a candidate that lost follows the winner.
        if let Some(old) = g.vote
            && old.term == vote.term
            && old.node_id.is_some()
            && old.node_id != vote.node_id
            && (old.committed || !vote.committed)
        {
            let msg = format!("node {id} changed its vote within term {}: {old:?} -> {vote:?}", vote.term);
            g.rec.lock().unwrap().violations.push(msg);
        }
        if let Some(old) = g.vote
            && old.term > vote.term
        {
            let msg = format!("node {id} saved a vote of an older term: {old:?} -> {vote:?}");
            g.rec.lock().unwrap().violations.push(msg);
        }
        if vote.committed
            && let Some(leader) = vote.node_id
        {
            let mut r = g.rec.lock().unwrap();
            match r.elected.get(&vote.term) {
                Some(l) if *l != leader => {
                    let msg = format!("two leaders in term {}: {l} and {leader} (saved by node {id})", vote.term);
                    r.violations.push(msg);
                }
                _ => {
                    r.elected.insert(vote.term, leader);
                }
            }
        }
        g.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C>>, StorageError> {
        Ok(self.inner.lock().unwrap().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<C>>) -> Result<(), StorageError> {
        self.inner.lock().unwrap().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C>>, StorageError> {
        Ok(self.inner.lock().unwrap().committed)
    }

    async fn append(&mut self, entries: Vec<Entry<C>>, callback: IOFlushed<C>) -> Result<(), StorageError> {
        let cbs = {
            let mut g = self.inner.lock().unwrap();
            // No gaps: the entries follow the last one.
            let last = g.visible.log.values().next_back().map(|e| e.log_id).or(g.visible.purged);
            let next = last.map_or(0, |l| l.index + 1);
            if let Some(first) = entries.first()
                && first.log_id.index != next
            {
                let msg = format!("node {}: append at {} but the log ends before {next}", g.id, first.log_id);
                g.rec.lock().unwrap().violations.push(msg);
            }
            let op = Op::Append(entries);
            g.visible.apply(&op);
            g.pending.push(op);
            g.callbacks.push_back(callback);
            if g.hold_flush { Vec::new() } else { g.flush() }
        };
        complete(cbs);
        Ok(())
    }

    async fn truncate(&mut self, since: LogId<C>) -> Result<(), StorageError> {
        let mut g = self.inner.lock().unwrap();
        // Leader append-only (Raft §5.3): a node that is the elected leader of its current
        // term never deletes entries of its own term.
        if let Some(v) = g.vote
            && v.committed
            && v.node_id == Some(g.id)
        {
            let own: Vec<_> = g
                .visible
                .log
                .range(since.index..)
                .filter(|(_, e)| e.log_id.leader_id.term == v.term)
                .map(|(_, e)| e.log_id)
                .collect();
            if !own.is_empty() {
                let msg = format!("leader {} of term {} truncated its own entries {own:?}", g.id, v.term);
                g.rec.lock().unwrap().violations.push(msg);
            }
        }
        let op = Op::Truncate(since.index);
        g.visible.apply(&op);
        g.pending.push(op);
        Ok(())
    }

    async fn purge(&mut self, upto: LogId<C>) -> Result<(), StorageError> {
        let mut g = self.inner.lock().unwrap();
        let op = Op::Purge(upto);
        g.visible.apply(&op);
        g.pending.push(op);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// State machine

#[derive(Clone, Serialize, Deserialize)]
struct SnapshotBody {
    kv: BTreeMap<String, String>,
    last_applied: Option<LogId<C>>,
    last_membership: StoredMembership<C>,
}

pub struct SmInner {
    id: u64,
    pub kv: BTreeMap<String, String>,
    pub last_applied: Option<LogId<C>>,
    last_membership: StoredMembership<C>,
    /// The current snapshot: durable (it survives a crash in either mode).
    snapshot: Option<(SnapshotMeta<C>, Vec<u8>)>,
    snap_seq: u64,
    /// Number of snapshots installed from a leader.
    pub installs: u64,
    rec: Rec,
}

/// The state machine: a KV map. Clones share it.
#[derive(Clone)]
pub struct StateMachine {
    pub inner: Arc<Mutex<SmInner>>,
}

fn sm_err(e: impl std::error::Error + Send + Sync + 'static) -> StorageError {
    StorageError::new(ErrorSubject::StateMachine, ErrorVerb::Read, anyerror::AnyError::new(&e))
}

impl StateMachine {
    pub fn new(id: u64, rec: Rec) -> Self {
        Self {
            inner: Arc::new(Mutex::new(SmInner {
                id,
                kv: BTreeMap::new(),
                last_applied: None,
                last_membership: StoredMembership::default(),
                snapshot: None,
                snap_seq: 0,
                installs: 0,
                rec,
            })),
        }
    }

    /// After a crash. `persistent`: the state as of the last apply survives (it is written
    /// through on every apply); otherwise only the durable snapshot does, and the state starts
    /// empty (quorate then installs the snapshot itself, per the storage docs).
    pub fn crash_copy(&self, persistent: bool) -> Self {
        let g = self.inner.lock().unwrap();
        let (kv, last_applied, last_membership) = if persistent {
            (g.kv.clone(), g.last_applied, g.last_membership.clone())
        } else {
            (BTreeMap::new(), None, StoredMembership::default())
        };
        Self {
            inner: Arc::new(Mutex::new(SmInner {
                id: g.id,
                kv,
                last_applied,
                last_membership,
                snapshot: g.snapshot.clone(),
                snap_seq: g.snap_seq,
                installs: 0,
                rec: g.rec.clone(),
            })),
        }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.inner.lock().unwrap().kv.get(key).cloned()
    }

    pub fn kv(&self) -> BTreeMap<String, String> {
        self.inner.lock().unwrap().kv.clone()
    }

    pub fn installs(&self) -> u64 {
        self.inner.lock().unwrap().installs
    }
}

impl RaftStateMachine<C> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<C>>, StoredMembership<C>), StorageError> {
        let g = self.inner.lock().unwrap();
        Ok((g.last_applied, g.last_membership.clone()))
    }

    async fn apply(&mut self, entries: Vec<Entry<C>>) -> Result<Vec<Option<String>>, StorageError> {
        let mut g = self.inner.lock().unwrap();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let id = g.id;
            // In log order, once each, no gaps.
            let expect = g.last_applied.map_or(0, |l| l.index + 1);
            if e.log_id.index != expect {
                let msg = format!("node {id} applied {} but expected index {expect}", e.log_id);
                g.rec.lock().unwrap().violations.push(msg);
            }
            let req = match &e.payload {
                EntryPayload::Normal(r) => Some(r.clone()),
                _ => None,
            };
            {
                let mut r = g.rec.lock().unwrap();
                match r.applied.get(&e.log_id.index) {
                    Some((l, _)) if *l != e.log_id => {
                        let msg = format!(
                            "state machine safety: node {id} applied {} at index {} where another node applied {l}",
                            e.log_id, e.log_id.index
                        );
                        r.violations.push(msg);
                    }
                    Some(_) => {}
                    None => {
                        r.applied.insert(e.log_id.index, (e.log_id, req.clone()));
                    }
                }
                r.applied_by_node.entry(id).or_default().push(e.log_id);
            }
            match e.payload {
                EntryPayload::Blank => out.push(None),
                EntryPayload::Normal(r) => out.push(g.kv.insert(r.key, r.value)),
                EntryPayload::Membership(m) => {
                    g.last_membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(None)
                }
            }
            g.last_applied = Some(e.log_id);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Builder {
        Builder { inner: self.inner.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let body: SnapshotBody = serde_json::from_slice(&bytes).map_err(sm_err)?;
        let mut g = self.inner.lock().unwrap();
        let id = g.id;
        if body.last_applied != meta.last_log_id {
            let msg = format!("node {id}: snapshot meta {:?} but body {:?}", meta.last_log_id, body.last_applied);
            g.rec.lock().unwrap().violations.push(msg);
        }
        if let Some(l) = meta.last_log_id {
            let mut r = g.rec.lock().unwrap();
            if let Some((applied, _)) = r.applied.get(&l.index)
                && *applied != l
            {
                let msg = format!("node {id} installed a snapshot at {l} where {applied} was applied");
                r.violations.push(msg);
            }
        }
        if meta.last_log_id < g.last_applied {
            let msg =
                format!("node {id} installed snapshot {:?} older than applied {:?}", meta.last_log_id, g.last_applied);
            g.rec.lock().unwrap().violations.push(msg);
        }
        g.kv = body.kv;
        g.last_applied = meta.last_log_id;
        g.last_membership = meta.last_membership.clone();
        g.snapshot = Some((meta.clone(), bytes));
        g.installs += 1;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError> {
        let g = self.inner.lock().unwrap();
        Ok(g.snapshot
            .as_ref()
            .map(|(meta, bytes)| Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(bytes.clone())) }))
    }
}

pub struct Builder {
    inner: Arc<Mutex<SmInner>>,
}

impl RaftSnapshotBuilder<C> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError> {
        let mut g = self.inner.lock().unwrap();
        let body =
            SnapshotBody { kv: g.kv.clone(), last_applied: g.last_applied, last_membership: g.last_membership.clone() };
        let bytes = serde_json::to_vec(&body).map_err(sm_err)?;
        g.snap_seq += 1;
        let meta = SnapshotMeta {
            last_log_id: g.last_applied,
            last_membership: g.last_membership.clone(),
            snapshot_id: format!("n{}-{}-{:?}", g.id, g.snap_seq, g.last_applied.map(|l| l.index)),
        };
        // Never go back to an older snapshot.
        let newer_exists = g.snapshot.as_ref().is_some_and(|(m, _)| m.last_log_id > meta.last_log_id);
        if !newer_exists {
            g.snapshot = Some((meta.clone(), bytes.clone()));
        }
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) })
    }
}
