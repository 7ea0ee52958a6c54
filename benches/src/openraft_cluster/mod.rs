//! openraft on the harness: type config, three voters, leader election, writes. Written
//! against openraft's public API only.

mod log_store;
mod network;
mod state_machine;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use log_store::LogStore;
pub use network::{DirectClient, Router};
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
pub use state_machine::{NoopSnapshotBuilder, NoopStateMachine};

use crate::workload::Writer;
use crate::{BenchCluster, Empty, Phase, PhaseError, within};

openraft::declare_raft_types!(
    /// openraft's types for the bench: empty requests and responses, `u64` node ids, the
    /// default tokio runtime.
    pub OpenraftTypes:
        D = Empty,
        R = Empty,
);

/// One openraft node of the bench.
pub type OpenraftNode = openraft::Raft<OpenraftTypes, NoopStateMachine>;

const NODE_IDS: [u64; 3] = [1, 2, 3];

/// Three openraft voters in this process.
pub struct OpenraftCluster {
    nodes: BTreeMap<u64, OpenraftNode>,
    router: Router,
    leader: OpenraftNode,
    /// The leader's last log index when start-up finished; writes are appended after it.
    base_index: u64,
}

/// Writes to the leader found at startup.
#[derive(Clone)]
pub struct OpenraftWriter {
    leader: OpenraftNode,
}

impl Writer for OpenraftWriter {
    async fn write(&self) -> Result<(), String> {
        self.leader.client_write(Empty).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

/// openraft's defaults, which match quorate's where both have the knob, except that
/// snapshots are off on both sides (see the quorate config).
fn config() -> Result<Arc<Config>, PhaseError> {
    let config =
        Config { cluster_name: "bench".to_string(), snapshot_policy: SnapshotPolicy::Never, ..Config::default() };
    config.validate().map(Arc::new).map_err(|e| PhaseError::new(Phase::Start, e))
}

impl BenchCluster for OpenraftCluster {
    type Writer = OpenraftWriter;

    async fn start(limit: Duration) -> Result<Self, PhaseError> {
        let router = Router::default();
        let mut nodes = BTreeMap::new();
        match boot(&mut nodes, &router, limit).await {
            Ok((leader, base_index)) => Ok(Self { nodes, router, leader, base_index }),
            Err(e) => {
                // Best effort: the error to report is the one that stopped the start-up.
                let _ = within(Phase::Shutdown, limit, shutdown_all(&nodes, &router)).await;
                Err(e)
            }
        }
    }

    fn writer(&self) -> OpenraftWriter {
        OpenraftWriter { leader: self.leader.clone() }
    }

    async fn verify(&self, writes: u64, limit: Duration) -> Result<(), PhaseError> {
        verify(&self.nodes, &self.leader, self.base_index + writes, limit).await
    }

    async fn shutdown(self) -> Result<(), PhaseError> {
        shutdown_all(&self.nodes, &self.router).await
    }
}

/// Start the three nodes into `nodes`, initialize them and wait for a leader, which it returns.
async fn boot(
    nodes: &mut BTreeMap<u64, OpenraftNode>,
    router: &Router,
    limit: Duration,
) -> Result<(OpenraftNode, u64), PhaseError> {
    let config = config()?;

    for id in NODE_IDS {
        let raft = within(Phase::Start, limit, async {
            OpenraftNode::new(id, config.clone(), router.clone(), LogStore::default(), NoopStateMachine::default())
                .await
                .map_err(|e| PhaseError::new(Phase::Start, format_args!("node {id}: {e}")))
        })
        .await?;
        router.add(id, raft.clone());
        nodes.insert(id, raft);
    }

    let members: BTreeMap<u64, BasicNode> = NODE_IDS.iter().map(|id| (*id, BasicNode::new(id))).collect();
    let first = nodes.get(&NODE_IDS[0]).cloned().ok_or_else(|| PhaseError::new(Phase::Start, "node 1 missing"))?;
    within(Phase::Initialize, limit, async {
        first.initialize(members).await.map_err(|e| PhaseError::new(Phase::Initialize, e))
    })
    .await?;

    let metrics = within(Phase::Election, limit, async {
        first
            .wait(Some(limit))
            .metrics(|m| m.current_leader.is_some(), "a leader is elected")
            .await
            .map_err(|e| PhaseError::new(Phase::Election, e))
    })
    .await?;
    let leader_id = metrics.current_leader.unwrap_or(NODE_IDS[0]);
    let leader = nodes
        .get(&leader_id)
        .cloned()
        .ok_or_else(|| PhaseError::new(Phase::Election, format_args!("leader {leader_id} is not a member")))?;

    let settled = within(Phase::Election, limit, async {
        leader
            .wait(Some(limit))
            .metrics(
                |m| m.state == ServerState::Leader && m.last_applied.map(|l| l.index) == m.last_log_index,
                "the leader applied its whole log",
            )
            .await
            .map_err(|e| PhaseError::new(Phase::Election, e))
    })
    .await?;

    Ok((leader, settled.last_log_index.unwrap_or(0)))
}

/// See [`BenchCluster::verify`]: the leader's log reaches `expected_last`, and every node
/// applies up to the leader's last index.
async fn verify(
    nodes: &BTreeMap<u64, OpenraftNode>,
    leader: &OpenraftNode,
    expected_last: u64,
    limit: Duration,
) -> Result<(), PhaseError> {
    let leader_metrics = within(Phase::Verify, limit, async {
        leader
            .wait(Some(limit))
            .metrics(|m| m.last_log_index >= Some(expected_last), format!("the leader's log reaches {expected_last}"))
            .await
            .map_err(|e| PhaseError::new(Phase::Verify, e))
    })
    .await?;
    let leader_last = leader_metrics.last_log_index;
    for (id, raft) in nodes {
        within(Phase::Verify, limit, async {
            raft.wait(Some(limit))
                .metrics(
                    |m| m.last_applied.map(|l| l.index) >= leader_last,
                    format!("node {id} applies up to the leader's last log index"),
                )
                .await
                .map_err(|e| PhaseError::new(Phase::Verify, e))
        })
        .await?;
    }
    Ok(())
}

/// Shut every node down, then drop the router's handles (they would keep the nodes alive).
async fn shutdown_all(nodes: &BTreeMap<u64, OpenraftNode>, router: &Router) -> Result<(), PhaseError> {
    let mut first_error = None;
    for (id, raft) in nodes {
        if let Err(e) = raft.shutdown().await {
            first_error.get_or_insert_with(|| PhaseError::new(Phase::Shutdown, format_args!("node {id}: {e}")));
        }
    }
    router.clear();
    first_error.map_or(Ok(()), Err)
}
