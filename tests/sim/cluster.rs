//! The simulated cluster: nodes that can crash and restart, shared by the clients, the
//! nemesis and the checker.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use quorate::testing::invariants::{ElectionSafety, NodeView, SafetyViolation, check_logs_and_state_machines};
use quorate::testing::{MemLogStore, MemStateMachine, Router, TypeConfig};
use quorate::{Config, Raft};

/// One node: its handle while it runs, and its storage, which survives crashes.
pub struct SimNode {
    pub raft: Option<Raft<TypeConfig>>,
    pub log: MemLogStore,
    pub sm: MemStateMachine,
}

/// Everything the tasks of a run share. Locked only briefly, never across an await.
pub struct SimCluster {
    pub config: Arc<Config>,
    pub router: Router,
    pub nodes: BTreeMap<u64, SimNode>,
    pub safety: Arc<Mutex<ElectionSafety>>,
    /// The first safety violation seen, if any.
    pub violation: Arc<Mutex<Option<SafetyViolation>>>,
}

pub type Shared = Arc<Mutex<SimCluster>>;

pub fn lock(c: &Shared) -> std::sync::MutexGuard<'_, SimCluster> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

impl SimCluster {
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

    /// Check log matching, committed entries and state machine safety now.
    pub fn check(&self) -> Result<(), SafetyViolation> {
        let views: Vec<NodeView<'_>> = self
            .nodes
            .iter()
            .filter_map(|(id, n)| {
                let metrics = n.raft.as_ref()?.metrics().borrow().clone();
                Some(NodeView { id: *id, log: &n.log, sm: &n.sm, metrics })
            })
            .collect();
        check_logs_and_state_machines(&views)
    }

    pub fn record_violation(&self, v: SafetyViolation) {
        let mut slot = self.violation.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(v);
    }
}

/// Start node `id` on its storage and watch its metrics for election safety.
pub async fn start_node(c: &Shared, id: u64) {
    let (config, factory, log, sm, safety, violation) = {
        let g = lock(c);
        let n = &g.nodes[&id];
        (g.config.clone(), g.router.factory(id), n.log.clone(), n.sm.clone(), g.safety.clone(), g.violation.clone())
    };
    let raft = match Raft::new(id, config, factory, log, sm).await {
        Ok(r) => r,
        Err(e) => panic!("node {id} failed to start from its storage: {e}"),
    };
    {
        let mut g = lock(c);
        g.router.add_node(id, raft.clone());
        if let Some(n) = g.nodes.get_mut(&id) {
            n.raft = Some(raft.clone());
        }
    }
    let mut rx = raft.metrics();
    tokio::spawn(async move {
        loop {
            let m = rx.borrow_and_update().clone();
            if let Err(v) = safety.lock().unwrap_or_else(|e| e.into_inner()).observe(&m) {
                violation.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(v);
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Crash node `id`: stop it and keep only what its storage made durable.
pub async fn crash_node(c: &Shared, id: u64, volatile_state_machine: bool) {
    let raft = {
        let mut g = lock(c);
        g.router.remove_node(id);
        let Some(n) = g.nodes.get_mut(&id) else { return };
        let raft = n.raft.take();
        n.log = n.log.reopen();
        n.sm = if volatile_state_machine { n.sm.reopen_empty_from_snapshot() } else { n.sm.reopen() };
        raft
    };
    if let Some(raft) = raft {
        let _ = raft.shutdown().await;
    }
    lock(c).safety.lock().unwrap_or_else(|e| e.into_inner()).node_restarted(id);
}
