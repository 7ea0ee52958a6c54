//! A cluster of in-memory nodes and the checks every test shares.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use quorate::testing::invariants::{NodeView, check_logs_and_state_machines};
use quorate::testing::{MemLogStore, MemStateMachine, Request, Router, TypeConfig};
use quorate::{BasicNode, ClientWriteResponse, Config, Raft, ServerState};

/// How long a test waits for a condition, in (virtual) time.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One node of a test cluster, with handles to its storage for inspection and restarts.
pub struct TestNode {
    pub raft: Raft<TypeConfig>,
    pub log: MemLogStore,
    pub sm: MemStateMachine,
}

/// Nodes wired together by a [`Router`].
pub struct TestCluster {
    pub config: Arc<Config>,
    pub router: Router,
    pub nodes: BTreeMap<u64, TestNode>,
}

pub fn test_config() -> Config {
    Config { cluster_name: "test".into(), ..Default::default() }
}

pub fn node_addr(id: u64) -> BasicNode {
    BasicNode::new(format!("node-{id}"))
}

impl TestCluster {
    /// Start nodes `ids` with empty storage; nothing is initialized yet.
    pub async fn new(ids: &[u64]) -> Self {
        Self::with_config(ids, test_config()).await
    }

    pub async fn with_config(ids: &[u64], config: Config) -> Self {
        let mut cluster = Self { config: Arc::new(config), router: Router::new(), nodes: BTreeMap::new() };
        for id in ids {
            cluster.start_node(*id, MemLogStore::new(), MemStateMachine::new()).await;
        }
        cluster
    }

    /// Start node `id` on the given storage and connect it to the router.
    pub async fn start_node(&mut self, id: u64, log: MemLogStore, sm: MemStateMachine) {
        let raft = Raft::new(id, self.config.clone(), self.router.factory(id), log.clone(), sm.clone())
            .await
            .expect("start node");
        self.router.add_node(id, raft.clone());
        self.nodes.insert(id, TestNode { raft, log, sm });
    }

    /// Crash node `id` (losing unflushed log writes) and start it again from its storage.
    pub async fn restart_node(&mut self, id: u64) {
        let node = self.nodes.remove(&id).expect("node exists");
        node.raft.shutdown().await.expect("clean shutdown");
        self.router.remove_node(id);
        self.start_node(id, node.log.reopen(), node.sm.reopen()).await;
    }

    /// Stop node `id` for good and disconnect it.
    pub async fn stop_node(&mut self, id: u64) -> TestNode {
        let node = self.nodes.remove(&id).expect("node exists");
        node.raft.shutdown().await.expect("clean shutdown");
        self.router.remove_node(id);
        node
    }

    pub fn raft(&self, id: u64) -> &Raft<TypeConfig> {
        &self.nodes[&id].raft
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Initialize the cluster with every node as a voter, through node `id`, and wait until
    /// every node knows the same leader.
    pub async fn initialize(&self, id: u64) -> u64 {
        let members: BTreeMap<u64, BasicNode> = self.nodes.keys().map(|id| (*id, node_addr(*id))).collect();
        self.raft(id).initialize(members).await.expect("initialize");
        self.wait_for_leader(&self.ids()).await
    }

    /// Wait until all of `among` agree on one leader that is among them and leads; return it.
    pub async fn wait_for_leader(&self, among: &[u64]) -> u64 {
        let first = self.raft(among[0]);
        let m = first
            .wait(Some(TIMEOUT))
            .metrics(|m| m.current_leader.is_some_and(|l| among.contains(&l)), "a leader among the given nodes")
            .await
            .expect("a leader is elected");
        let leader = m.current_leader.expect("checked above");
        self.raft(leader).wait(Some(TIMEOUT)).state(ServerState::Leader, "leader leads").await.expect("leader state");
        for id in among {
            self.raft(*id).wait(Some(TIMEOUT)).current_leader(leader, "all agree").await.expect("agree on leader");
        }
        leader
    }

    /// Write `key = value` through node `id`, which must be the leader.
    pub async fn set(&self, id: u64, key: &str, value: &str) -> ClientWriteResponse<TypeConfig> {
        self.raft(id)
            .client_write(Request::Set { key: key.into(), value: value.into() })
            .await
            .unwrap_or_else(|e| panic!("write {key} through node {id}: {e}"))
    }

    /// Start moving the group from leader `from` alone to a new node `to` alone: `to` starts,
    /// its answers reach `from` 50 ms late (so that each config is on `to` 50 ms before `from`
    /// learns it committed), joins as a learner, and `from` replaces every voter with it in a
    /// task of its own.
    pub async fn start_moving_group(&mut self, from: u64, to: u64) {
        self.start_node(to, MemLogStore::new(), MemStateMachine::new()).await;
        self.router.set_answer_delay(from, to, Duration::from_millis(50));
        self.raft(from).add_learner(to, node_addr(to), true).await.expect("add learner");
        let leader = self.raft(from).clone();
        let change = quorate::ChangeMembers::ReplaceAllVoters([to].into());
        tokio::spawn(async move { leader.change_membership(change, false).await });
    }

    /// Wait until every node in `ids` has applied at least `index`.
    pub async fn wait_applied(&self, ids: &[u64], index: u64) {
        for id in ids {
            self.raft(*id)
                .wait(Some(TIMEOUT))
                .applied_index_at_least(Some(index), format!("node {id} applies {index}"))
                .await
                .expect("applied");
        }
    }

    /// Raft's safety properties, checked across the nodes' storage: log matching, committed
    /// entries held, state machine safety (see `quorate::testing::invariants`).
    pub fn check_safety(&self) {
        let views: Vec<NodeView<'_>> = self
            .nodes
            .iter()
            .map(|(id, n)| NodeView { id: *id, log: &n.log, sm: &n.sm, metrics: n.raft.metrics().borrow().clone() })
            .collect();
        if let Err(v) = check_logs_and_state_machines(&views) {
            panic!("safety violated: {v}");
        }
    }
}

/// Have `leader` snapshot its whole log and purge it; return the index of its last entry,
/// which the snapshot covers.
pub async fn snapshot_and_purge(leader: &Raft<TypeConfig>) -> u64 {
    let last = leader.metrics().borrow().last_log_index.expect("a log");
    leader.trigger().snapshot().await.expect("snapshot");
    let covered = |m: &quorate::RaftMetrics<TypeConfig>| m.snapshot.is_some_and(|s| s.index >= last);
    leader.wait(Some(TIMEOUT)).metrics(covered, "the snapshot covers the log").await.expect("built");
    leader.trigger().purge_log(last).await.expect("purge");
    let purged = |m: &quorate::RaftMetrics<TypeConfig>| m.purged.is_some_and(|p| p.index >= last);
    leader.wait(Some(TIMEOUT)).metrics(purged, "the leader purged its log").await.expect("purged");
    last
}

/// Install a tracing subscriber once, honouring RUST_LOG, so failing tests can be debugged.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
