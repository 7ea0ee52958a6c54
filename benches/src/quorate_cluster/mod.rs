//! quorate on the harness: type config, three voters, leader election, writes.

mod log_store;
mod network;
mod state_machine;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use log_store::LogStore;
pub use network::{DirectClient, Router};
use quorate::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
pub use state_machine::{NoopSnapshotBuilder, NoopStateMachine};

use crate::tuning::{QuorateTuning, Settings, Snapshots};
use crate::workload::Writer;
use crate::{BenchCluster, ClusterProbe, Empty, LeaderQueues, Phase, PhaseError, within};

quorate::declare_raft_types!(
    /// quorate's types for the bench: empty requests and responses, `u64` node ids.
    pub QuorateTypes:
        D = Empty,
        R = Empty,
);

const NODE_IDS: [u64; 3] = [1, 2, 3];

/// Three quorate voters in this process.
pub struct QuorateCluster {
    nodes: BTreeMap<u64, Raft<QuorateTypes>>,
    /// Each node's log store, shared with the node, for the memory probe.
    stores: Vec<LogStore>,
    router: Router,
    leader: Raft<QuorateTypes>,
    /// The follower whose RPCs hang, if one was hung.
    hung: Option<u64>,
    /// The leader's last log index when start-up finished; writes are appended after it.
    base_index: u64,
}

/// Writes to the leader found at startup.
#[derive(Clone)]
pub struct QuorateWriter {
    leader: Raft<QuorateTypes>,
}

impl Writer for QuorateWriter {
    async fn write(&self) -> Result<(), String> {
        self.leader.client_write(Empty).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn write_many(&self, entries: usize) -> Result<(), String> {
        let answers =
            self.leader.client_write_many(std::iter::repeat_n(Empty, entries)).await.map_err(|e| e.to_string())?;
        match answers.into_iter().find_map(Result::err) {
            Some(e) => Err(e.to_string()),
            None => Ok(()),
        }
    }
}

/// quorate's config for `settings`.
///
/// - Same settings: quorate's defaults, which match openraft's where both have the knob (50 ms
///   heartbeat, 150..300 ms election timeout, 300 entries per AppendEntries, up to 4096 writes
///   per log append), except that snapshots are off on both sides unless asked for: the
///   no-op state machine has nothing to save, and building and purging would only add noise.
///   With snapshots on, the policy is the default of both libraries: every 5000 applied
///   entries, keeping 1000 behind the snapshot.
/// - Each tuned: the defaults with the fields of [`QuorateTuning`] set.
fn config(settings: Settings) -> Config {
    let base = Config { cluster_name: "bench".to_string(), max_in_snapshot_log_to_keep: 1000, ..Config::default() };
    match settings {
        Settings::Same { snapshots } => Config {
            snapshot_policy: if snapshots { SnapshotPolicy::LogsSinceLast(5000) } else { SnapshotPolicy::Never },
            ..base
        },
        Settings::Tuned(tuning) => {
            let QuorateTuning {
                max_payload_entries,
                max_append_batch,
                max_in_flight_requests,
                max_pending_requests,
                snapshots,
                // The runtime is the harness's business, not the Config's.
                server_workers: _,
            } = tuning.quorate;
            Config {
                max_payload_entries,
                max_append_batch,
                max_in_flight_requests,
                max_pending_requests,
                snapshot_policy: match snapshots {
                    Snapshots::Never => SnapshotPolicy::Never,
                    Snapshots::Every(n) => SnapshotPolicy::LogsSinceLast(n),
                },
                ..base
            }
        }
    }
}

impl BenchCluster for QuorateCluster {
    type Writer = QuorateWriter;

    async fn start(limit: Duration, settings: Settings) -> Result<Self, PhaseError> {
        let router = Router::default();
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
        let c = config(settings);
        let snapshots = match c.snapshot_policy {
            SnapshotPolicy::Never => "never".to_string(),
            SnapshotPolicy::LogsSinceLast(n) => {
                format!("every {n} applied entries, {} kept behind", c.max_in_snapshot_log_to_keep)
            }
        };
        format!(
            "heartbeat_interval {} ms, election_timeout {}..{} ms, max_payload_entries {}, max_append_batch {}, \
             max_in_flight_requests {}, max_in_flight_bytes {} MiB, max_pending_requests {}, max_pending_writes {}, \
             pre-vote {}, check-quorum {}, snapshots {snapshots}; replication pipelined (`stream_append` passes the \
             leader's request stream to the target)",
            c.heartbeat_interval.as_millis(),
            c.election_timeout_min.as_millis(),
            c.election_timeout_max.as_millis(),
            c.max_payload_entries,
            c.max_append_batch,
            c.max_in_flight_requests,
            c.max_in_flight_bytes / (1024 * 1024),
            c.max_pending_requests,
            c.max_pending_writes,
            if c.enable_pre_vote { "on" } else { "off" },
            if c.enable_check_quorum { "on" } else { "off" },
        )
    }

    fn writer(&self) -> QuorateWriter {
        QuorateWriter { leader: self.leader.clone() }
    }

    fn hang_follower(&mut self) -> Result<u64, PhaseError> {
        let leader = self.leader.metrics().borrow().id;
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
            let m = metrics.borrow();
            let q = &m.queues;
            ClusterProbe {
                log_entries: stores.iter().map(LogStore::entries_held).sum(),
                leader_last_log: m.last_log_index,
                leader_purged: m.purged.map(|p| p.index),
                queues: Some(LeaderQueues {
                    write_queue: q.write_queue,
                    pending_writes: q.pending_writes,
                    in_flight: q.in_flight.iter().map(|(id, (reqs, bytes))| (*id, *reqs, *bytes)).collect(),
                }),
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
    nodes: &mut BTreeMap<u64, Raft<QuorateTypes>>,
    stores: &[LogStore],
    router: &Router,
    limit: Duration,
    settings: Settings,
) -> Result<(Raft<QuorateTypes>, u64), PhaseError> {
    let config = Arc::new(config(settings));

    for (id, store) in NODE_IDS.into_iter().zip(stores) {
        let raft = within(Phase::Start, limit, async {
            Raft::new(id, config.clone(), router.clone(), store.clone(), NoopStateMachine::default())
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

    // `Wait` has its own timeout; the outer one also covers a metrics channel that never
    // changes again.
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

    // A new leader first commits a blank entry of its term; wait until it has applied its
    // whole log, so the first measured write does not race the election's tail.
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
    nodes: impl Iterator<Item = (&u64, &Raft<QuorateTypes>)>,
    leader: &Raft<QuorateTypes>,
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
async fn shutdown_all(nodes: &BTreeMap<u64, Raft<QuorateTypes>>, router: &Router) -> Result<(), PhaseError> {
    let mut first_error = None;
    for (id, raft) in nodes {
        if let Err(e) = raft.shutdown().await {
            first_error.get_or_insert_with(|| PhaseError::new(Phase::Shutdown, format_args!("node {id}: {e}")));
        }
    }
    router.clear();
    first_error.map_or(Ok(()), Err)
}
