//! The simulated cluster: nodes that can crash and restart, shared by the clients, the
//! nemesis and the checker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use quorate::testing::invariants::{
    ElectionSafety, NodeView, SafetyViolation, check_acked_entries_are_durable, check_logs_and_state_machines,
};
use quorate::testing::suite::StateMachinePersistence;
use quorate::testing::{CrashSwitch, MemLogStore, MemStateMachine, Router, TypeConfig};
use quorate::{Config, Raft, ServerState};
use tokio::time::Instant;

use crate::clients::Op;

/// One node: its handle while it runs, and its storage, which survives crashes.
pub struct SimNode {
    pub raft: Option<Raft<TypeConfig>>,
    pub log: MemLogStore,
    pub sm: MemStateMachine,
    /// Shared by `log` and `sm`: freezes the node between two storage calls.
    pub crash: CrashSwitch,
    /// How fast this node's clock runs against the simulation's (see `harness::ClockSkew`).
    pub clock_rate: f64,
    /// Bumped by every start, so a watcher of an earlier run of the node can tell it is stale.
    pub incarnation: u64,
}

impl SimNode {
    /// A node with empty storage, not started.
    pub fn new(clock_rate: f64) -> Self {
        let (log, sm, crash) = (MemLogStore::new(), MemStateMachine::new(), CrashSwitch::new());
        log.set_crash_switch(crash.clone());
        sm.set_crash_switch(crash.clone());
        Self { raft: None, log, sm, crash, clock_rate, incarnation: 0 }
    }
}

/// Everything the tasks of a run share. Locked only briefly, never across an await.
pub struct SimCluster {
    pub config: Arc<Config>,
    /// The single-group network. In multi-group mode (`groups.rs`) every group's nodes talk
    /// over one `HostRouter` instead and this router carries nothing.
    pub router: Router,
    pub nodes: BTreeMap<u64, SimNode>,
    pub safety: Arc<Mutex<ElectionSafety>>,
    /// Violations seen while the run goes on, first first (the final checks add theirs).
    pub violations: Vec<String>,
    /// Operations of the nemesis's read bursts; the clients return their own.
    pub burst_history: Vec<Op>,
    pub clock: HistoryClock,
    /// The highest term a leader was seen in so far, and that leader: tells a read served
    /// by a deposed leader from one served by the newest.
    pub newest_leader: Option<(u64, u64)>,
    /// Whether the state machines keep what they applied across a crash, or restart from
    /// their snapshot; one kind for the whole cluster, as a deployment runs one.
    pub sm_persistence: StateMachinePersistence,
    /// Times a node of this cluster was seen to quiesce, and to wake from it (from its
    /// metrics; transitions within one instant may be missed, so these are lower bounds).
    pub quiesces: u64,
    pub wakes: u64,
    /// The group was removed from every running host (multi-group mode): its clients stop,
    /// and it is no longer expected to converge or serve.
    pub ended: bool,
}

pub type Shared = Arc<Mutex<SimCluster>>;

pub fn lock(c: &Shared) -> std::sync::MutexGuard<'_, SimCluster> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// At most this many violations are kept per run: the first ones tell the story.
const MAX_VIOLATIONS: usize = 8;

impl SimCluster {
    /// A cluster of `nodes`, none started yet.
    pub fn new_shared(
        config: Config,
        router: Router,
        nodes: BTreeMap<u64, SimNode>,
        sm_persistence: StateMachinePersistence,
    ) -> Shared {
        Arc::new(Mutex::new(SimCluster {
            config: Arc::new(config),
            router,
            nodes,
            safety: Arc::new(Mutex::new(ElectionSafety::new())),
            violations: Vec::new(),
            burst_history: Vec::new(),
            clock: HistoryClock::new(Instant::now()),
            newest_leader: None,
            sm_persistence,
            quiesces: 0,
            wakes: 0,
            ended: false,
        }))
    }

    /// The handles of the running nodes.
    pub fn running(&self) -> Vec<(u64, Raft<TypeConfig>)> {
        self.nodes.iter().filter_map(|(id, n)| n.raft.clone().map(|r| (*id, r))).collect()
    }

    /// The leader that some running node knows of and that runs.
    pub fn known_leader(&self) -> Option<u64> {
        self.running()
            .iter()
            .filter_map(|(_, r)| r.metrics().borrow().current_leader)
            .find(|l| self.nodes.get(l).is_some_and(|n| n.raft.is_some()))
    }

    /// The running nodes that believe they lead (more than one while a deposed leader has not
    /// noticed yet).
    pub fn self_declared_leaders(&self) -> Vec<u64> {
        self.running()
            .into_iter()
            .filter(|(_, r)| r.metrics().borrow().state == ServerState::Leader)
            .map(|(id, _)| id)
            .collect()
    }

    /// Check log matching, committed entries, state machine safety and that leaders count
    /// only durable entries, now.
    pub fn check(&self) -> Result<(), SafetyViolation> {
        let views: Vec<NodeView<'_>> = self
            .nodes
            .iter()
            .filter_map(|(id, n)| {
                let metrics = n.raft.as_ref()?.metrics().borrow().clone();
                Some(NodeView { id: *id, log: &n.log, sm: &n.sm, metrics })
            })
            .collect();
        check_logs_and_state_machines(&views)?;
        check_acked_entries_are_durable(&views, self.sm_persistence)
    }

    /// Record a violation seen now.
    pub fn record_violation(&mut self, v: impl ToString) {
        let v = format!("at {} ms: {}", self.clock.millis(), v.to_string());
        if self.violations.len() < MAX_VIOLATIONS
            && !self.violations.iter().any(|seen| seen.ends_with(&v[v.find(": ").unwrap_or(0)..]))
        {
            self.violations.push(v);
        }
    }
}

/// Timestamps for the history: virtual time, with ties within one instant broken in the order
/// the single-threaded simulation saw the events. Under a paused clock a whole election or a
/// write can happen within one instant; without the tie-break, the checker would take
/// operations that follow each other within it for concurrent ones and miss a stale read.
pub struct HistoryClock {
    start: Instant,
    last: u64,
    seq: u64,
}

/// Events one instant can order; far more than a run produces.
const SEQ_BITS: u32 = 20;

impl HistoryClock {
    pub fn new(start: Instant) -> Self {
        Self { start, last: 0, seq: 0 }
    }

    /// Virtual milliseconds since the run started.
    pub fn millis(&self) -> u64 {
        Instant::now().saturating_duration_since(self.start).as_millis() as u64
    }

    /// The timestamp of an event happening now.
    pub fn stamp(&mut self) -> u64 {
        let nanos = Instant::now().saturating_duration_since(self.start).as_nanos() as u64;
        if nanos == self.last {
            self.seq = (self.seq + 1).min((1 << SEQ_BITS) - 1);
        } else {
            (self.last, self.seq) = (nanos, 0);
        }
        (nanos << SEQ_BITS) | self.seq
    }
}

/// The virtual milliseconds a history timestamp stands for.
pub fn stamp_millis(stamp: u64) -> f64 {
    (stamp >> SEQ_BITS) as f64 / 1e6
}

/// Start node `id` on its storage and watch its metrics for election safety and for stopping
/// on its own. A node that cannot start from its storage is a violation: it stays down.
pub async fn start_node(c: &Shared, id: u64) {
    let Some(start) = begin_start(c, id) else { return };
    let factory = lock(c).router.factory(id);
    let raft = Raft::new_with_clock_rate(id, start.config, factory, start.log, start.sm, start.clock_rate).await;
    let Some(raft) = started(c, id, start.incarnation, raft) else { return };
    lock(c).router.add_node(id, raft);
}

/// What a node starts from: its config and storage, and the number of this start.
pub struct NodeStart {
    pub config: Arc<Config>,
    pub log: MemLogStore,
    pub sm: MemStateMachine,
    pub clock_rate: f64,
    pub incarnation: u64,
}

/// Count a start of node `id` and hand out what it starts from (`None`: no such node).
pub fn begin_start(c: &Shared, id: u64) -> Option<NodeStart> {
    let mut g = lock(c);
    let config = g.config.clone();
    let n = g.nodes.get_mut(&id)?;
    n.incarnation += 1;
    Some(NodeStart {
        config,
        log: n.log.clone(),
        sm: n.sm.clone(),
        clock_rate: n.clock_rate,
        incarnation: n.incarnation,
    })
}

/// Node `id`'s start number `incarnation` ended in `raft`: record it as running and watch it,
/// or record why it could not start.
pub fn started<E: std::fmt::Display>(
    c: &Shared,
    id: u64,
    incarnation: u64,
    raft: Result<Raft<TypeConfig>, E>,
) -> Option<Raft<TypeConfig>> {
    let raft = match raft {
        Ok(r) => r,
        Err(e) => {
            lock(c).record_violation(format!("node {id} cannot restart from its storage: {e}"));
            return None;
        }
    };
    if let Some(n) = lock(c).nodes.get_mut(&id) {
        n.raft = Some(raft.clone());
    }
    tokio::spawn(watch_node(c.clone(), id, incarnation, raft.clone()));
    Some(raft)
}

/// Feed the node's metrics to the election safety check until it stops; if it stops while the
/// simulation still counts it as running, record why.
async fn watch_node(c: Shared, id: u64, incarnation: u64, raft: Raft<TypeConfig>) {
    let mut rx = raft.metrics();
    let safety = lock(&c).safety.clone();
    let mut quiesced = false;
    loop {
        let m = rx.borrow_and_update().clone();
        // Only while this incarnation runs: once the nemesis crashed it (its handle is taken
        // first), what it still publishes while it stops — its last committed id among it —
        // is not the restarted node's, whose committed id starts again from what it recovers.
        let current = lock(&c).nodes.get(&id).is_some_and(|n| n.incarnation == incarnation && n.raft.is_some());
        if current && let Err(v) = safety.lock().unwrap_or_else(|e| e.into_inner()).observe(&m) {
            lock(&c).record_violation(v);
        }
        if m.state == ServerState::Leader {
            let mut g = lock(&c);
            g.newest_leader = g.newest_leader.max(Some((m.current_term, id)));
        }
        if m.quiesced != quiesced {
            quiesced = m.quiesced;
            let mut g = lock(&c);
            if quiesced { g.quiesces += 1 } else { g.wakes += 1 }
        }
        if m.state == ServerState::Shutdown || rx.changed().await.is_err() {
            break;
        }
    }
    let stopped_on_its_own = {
        let mut g = lock(&c);
        let current = g.nodes.get(&id).is_some_and(|n| n.incarnation == incarnation && n.raft.is_some());
        if current {
            // Down for good: the nemesis must not take it for running.
            g.router.remove_node(id);
            if let Some(n) = g.nodes.get_mut(&id) {
                n.raft = None;
            }
        }
        current
    };
    if stopped_on_its_own {
        let why = match raft.shutdown().await {
            Err(e) => e.to_string(),
            Ok(()) => "no error".to_string(),
        };
        lock(&c).record_violation(format!("node {id} stopped on its own: {why}"));
    }
}

/// How much of what a crashed node's log had not made durable survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CrashLoss {
    /// Of the log's unflushed operations, the share (in per mille) that became durable anyway:
    /// 0 loses all of them.
    pub keep_per_mille: u32,
}

/// Crash node `id`: stop it and keep only what its storage made durable (and `loss` allows).
/// A node frozen by its crash switch is crashed where it froze.
pub async fn crash_node(c: &Shared, id: u64, loss: CrashLoss) {
    let raft = {
        let mut g = lock(c);
        g.router.remove_node(id);
        g.lose_unflushed(id, loss)
    };
    if let Some(raft) = raft {
        let _ = raft.shutdown().await;
    }
    crashed(c, id);
}

impl SimCluster {
    /// The storage side of a crash of node `id`: its stores reopen with what was durable (and
    /// `loss` allows), its frozen storage calls fail, and its handle, to be shut down, is
    /// returned; the node counts as down from now on.
    pub fn lose_unflushed(&mut self, id: u64, loss: CrashLoss) -> Option<Raft<TypeConfig>> {
        let persistence = self.sm_persistence;
        let n = self.nodes.get_mut(&id)?;
        let raft = n.raft.take();
        let keep = n.log.pending_units() * loss.keep_per_mille as usize / 1000;
        n.log = n.log.reopen_keeping(keep);
        n.sm = match persistence {
            StateMachinePersistence::Persistent => n.sm.reopen(),
            StateMachinePersistence::Snapshot => n.sm.reopen_empty_from_snapshot(),
        };
        // The frozen calls of the old process fail now, so it stops.
        n.crash.release();
        raft
    }
}

/// The crashed node `id` is stopped: the election safety check learns that it restarts.
pub fn crashed(c: &Shared, id: u64) {
    lock(c).safety.lock().unwrap_or_else(|e| e.into_inner()).node_restarted(id);
}
