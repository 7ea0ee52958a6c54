//! openraft on the harness: type config, three voters, leader election, writes. Written
//! against openraft's public API only.

mod log_store;
mod network;
mod state_machine;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
pub use log_store::LogStore;
pub use network::{DirectClient, Router};
use openraft::async_runtime::WatchReceiver;
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
pub use state_machine::{NoopSnapshotBuilder, NoopStateMachine};

use crate::tuning::{Replication, Settings, openraft_benchmark};
use crate::workload::Writer;
use crate::{BenchCluster, ClusterProbe, Empty, Phase, PhaseError, within};

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
    /// Each node's log store, shared with the node, for the memory probe.
    stores: Vec<LogStore>,
    router: Router,
    leader: OpenraftNode,
    /// The follower whose RPCs hang, if one was hung.
    hung: Option<u64>,
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

    async fn write_many(&self, entries: usize) -> Result<(), String> {
        let mut answers =
            self.leader.client_write_many(std::iter::repeat_n(Empty, entries)).await.map_err(|e| e.to_string())?;
        // The stream yields one answer per entry, in order; a `Fatal` ends it.
        let mut answered = 0;
        while let Some(answer) = answers.next().await {
            answer.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            answered += 1;
        }
        if answered == entries {
            Ok(())
        } else {
            Err(format!("client_write_many answered {answered} of {entries} entries"))
        }
    }
}

/// openraft's config for `settings`.
///
/// - Same settings: openraft's defaults, which match quorate's where both have the knob,
///   except that snapshots are off on both sides unless asked for (see the quorate config).
/// - Each tuned: what openraft's own `benchmarks/minimal` sets (see
///   [`OpenraftTuning`](crate::tuning::OpenraftTuning)): the defaults with
///   `election_timeout_min: 200`, `election_timeout_max: 2000`, `purge_batch_size: 1024`,
///   `max_payload_entries: 1024`; snapshots on with the default policy.
fn config(settings: Settings) -> Result<Config, PhaseError> {
    let config = match settings {
        Settings::Same { snapshots } => Config {
            cluster_name: "bench".to_string(),
            snapshot_policy: if snapshots { SnapshotPolicy::LogsSinceLast(5000) } else { SnapshotPolicy::Never },
            max_in_snapshot_log_to_keep: 1000,
            ..Config::default()
        },
        Settings::Tuned(_) => Config {
            cluster_name: "bench".to_string(),
            election_timeout_min: openraft_benchmark::ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max: openraft_benchmark::ELECTION_TIMEOUT_MAX_MS,
            purge_batch_size: openraft_benchmark::PURGE_BATCH_SIZE,
            max_payload_entries: openraft_benchmark::MAX_PAYLOAD_ENTRIES,
            ..Config::default()
        },
    };
    config.validate().map_err(|e| PhaseError::new(Phase::Start, e))
}

/// How the network replicates under `settings`: pipelined for the same-settings table, as
/// tuned otherwise.
fn replication(settings: Settings) -> Replication {
    match settings {
        Settings::Same { .. } => Replication::Pipelined,
        Settings::Tuned(tuning) => tuning.openraft.replication,
    }
}

impl BenchCluster for OpenraftCluster {
    type Writer = OpenraftWriter;

    async fn start(limit: Duration, settings: Settings) -> Result<Self, PhaseError> {
        let router = Router::new(replication(settings));
        let mut nodes = BTreeMap::new();
        let stores: Vec<LogStore> = NODE_IDS.iter().map(|_| LogStore::default()).collect();
        match boot(&mut nodes, &stores, &router, limit, settings).await {
            Ok((leader, base_index)) => Ok(Self { nodes, stores, router, leader, hung: None, base_index }),
            Err(e) => {
                // Best effort: the error to report is the one that stopped the start-up.
                let _ = within(Phase::Shutdown, limit, shutdown_all(&nodes, &router)).await;
                Err(e)
            }
        }
    }

    fn describe(settings: Settings) -> String {
        let c = match config(settings) {
            Ok(c) => c,
            Err(e) => return format!("invalid config: {e}"),
        };
        let snapshots = match c.snapshot_policy {
            SnapshotPolicy::Never => "never".to_string(),
            SnapshotPolicy::LogsSinceLast(n) => {
                format!("every {n} applied entries, {} kept behind", c.max_in_snapshot_log_to_keep)
            }
        };
        let replication = match replication(settings) {
            Replication::Pipelined => "pipelined (`stream_append` passes the leader's request stream to the target)",
            Replication::Sequential => {
                "sequential (openraft's default `stream_append`: one AppendEntries in flight per follower, as \
                 its benchmark's V1 network runs)"
            }
        };
        format!(
            "heartbeat_interval {} ms, election_timeout {}..{} ms, max_payload_entries {}, max_append_entries {}, \
             api_channel_size {}, api_batch_capacity {}, purge_batch_size {}, pre-vote {}, snapshots {snapshots}; \
             replication {replication}",
            c.heartbeat_interval,
            c.election_timeout_min,
            c.election_timeout_max,
            c.max_payload_entries,
            c.max_append_entries.map_or_else(|| "default".to_string(), |n| n.to_string()),
            c.api_channel_size.map_or_else(|| "default".to_string(), |n| n.to_string()),
            c.api_batch_capacity,
            c.purge_batch_size,
            // openraft's default (`None`) is off.
            if c.enable_pre_vote == Some(true) { "on" } else { "off" },
        )
    }

    fn writer(&self) -> OpenraftWriter {
        OpenraftWriter { leader: self.leader.clone() }
    }

    fn hang_follower(&mut self) -> Result<u64, PhaseError> {
        let leader = self.leader.metrics().borrow_watched().id;
        let follower = self
            .nodes
            .keys()
            .copied()
            .find(|id| *id != leader)
            .ok_or_else(|| PhaseError::new(Phase::Election, "no follower to hang"))?;
        self.router.hang(follower);
        self.hung = Some(follower);
        Ok(follower)
    }

    fn prober(&self) -> Box<dyn Fn() -> ClusterProbe + Send> {
        let stores = self.stores.clone();
        let metrics = self.leader.metrics();
        Box::new(move || {
            let m = metrics.borrow_watched();
            ClusterProbe {
                log_entries: stores.iter().map(LogStore::entries_held).sum(),
                leader_last_log: m.last_log_index,
                leader_purged: m.purged.as_ref().map(|p| p.index()),
                // openraft publishes no queue lengths.
                queues: None,
            }
        })
    }

    fn log_entry_bytes(&self) -> f64 {
        self.stores.iter().find_map(|s| s.heap_bytes_per_entry(100_000)).unwrap_or(0.0)
    }

    async fn verify(&self, writes: u64, limit: Duration) -> Result<(), PhaseError> {
        let healthy = self.nodes.iter().filter(|(id, _)| Some(**id) != self.hung);
        verify(healthy, &self.leader, self.base_index + writes, limit).await
    }

    async fn shutdown(self) -> Result<(), PhaseError> {
        shutdown_all(&self.nodes, &self.router).await
    }
}

/// Start the three nodes into `nodes`, initialize them and wait for a leader, which it returns.
async fn boot(
    nodes: &mut BTreeMap<u64, OpenraftNode>,
    stores: &[LogStore],
    router: &Router,
    limit: Duration,
    settings: Settings,
) -> Result<(OpenraftNode, u64), PhaseError> {
    let config = Arc::new(config(settings)?);

    for (id, store) in NODE_IDS.into_iter().zip(stores) {
        let raft = within(Phase::Start, limit, async {
            OpenraftNode::new(id, config.clone(), router.clone(), store.clone(), NoopStateMachine::default())
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

/// See [`BenchCluster::verify`]: the leader's log reaches `expected_last`, and every node of
/// `nodes` applies up to the leader's last index.
async fn verify(
    nodes: impl Iterator<Item = (&u64, &OpenraftNode)>,
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
