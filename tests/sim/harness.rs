//! One simulated run: a seeded cluster, clients, nemesis and checks on tokio's paused clock.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorate::testing::invariants::ElectionSafety;
use quorate::testing::linearizability::{CheckResult, check_kv_history};
use quorate::testing::{MemLogStore, MemStateMachine, Router};
use quorate::{BasicNode, Config, SnapshotPolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::clients::{Op, run_client};
use crate::cluster::{Shared, SimCluster, SimNode, lock, start_node};
use crate::nemesis::{Fault, heal, run_nemesis};

/// What one run did and found.
#[derive(Debug)]
pub struct SimReport {
    pub seed: u64,
    pub nodes: usize,
    pub history: Vec<Op>,
    pub faults: Vec<Fault>,
    /// Terms that had a leader, with it.
    pub leaders: BTreeMap<u64, u64>,
    /// A hash of everything observable that happened, to compare runs of one seed.
    pub trace_hash: u64,
    pub violations: Vec<String>,
}

/// The command that replays `seed`.
pub fn replay_command(seed: u64) -> String {
    format!("SIM_SEED={seed} cargo test --release --all-features --test sim replay_one_seed -- --nocapture")
}

/// Run `seed` on a fresh single-threaded runtime with a paused clock: the same seed gives the
/// same run.
pub fn run_seed(seed: u64, duration: Duration) -> SimReport {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    // tokio orders some wake-ups (watch channel waiters) with its own RNG: seed it too.
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    let rt = builder.build().unwrap_or_else(|e| panic!("cannot build the simulation runtime: {e}"));
    rt.block_on(simulate(seed, duration))
}

async fn simulate(seed: u64, duration: Duration) -> SimReport {
    // The paused clock starts a few real nanoseconds after the timer wheel's origin; once a
    // timer has fired it sits on a whole tick, so every later instant is the same in every
    // run. Without this the first deadlines land on different ticks from run to run.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let n = if rng.random_bool(0.5) { 3 } else { 5 };
    let config = Config {
        cluster_name: format!("sim-{seed}"),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(rng.random_range(20..200)),
        max_in_snapshot_log_to_keep: rng.random_range(0..30),
        snapshot_max_chunk_size: rng.random_range(64..4096),
        rpc_timeout: Duration::from_millis(500),
        election_seed: Some(seed),
        ..Config::default()
    };
    let router = Router::new();
    router.set_seed(seed);
    let loss = [0.0, 0.01, 0.05][rng.random_range(0..3)];
    let jitter = Duration::from_millis(rng.random_range(0..20));
    router.set_loss(loss);
    router.set_duplicate(0.02);
    router.set_jitter(jitter);
    let nodes = (1..=n as u64)
        .map(|id| (id, SimNode { raft: None, log: MemLogStore::new(), sm: MemStateMachine::new() }))
        .collect();
    let c: Shared = Arc::new(Mutex::new(SimCluster {
        config: Arc::new(config),
        router,
        nodes,
        safety: Arc::new(Mutex::new(ElectionSafety::new())),
        violation: Arc::new(Mutex::new(None)),
    }));
    for id in 1..=n as u64 {
        start_node(&c, id).await;
    }
    let members: BTreeMap<u64, BasicNode> = (1..=n as u64).map(|id| (id, BasicNode::new(format!("n{id}")))).collect();
    let first = lock(&c).nodes[&1].raft.clone();
    if let Some(r) = first {
        if let Err(e) = r.initialize(members).await {
            panic!("seed {seed}: initialize failed: {e}");
        }
    }

    let start = Instant::now();
    let until = start + duration;
    let clients: Vec<_> = (0..rng.random_range(3..6))
        .map(|i| tokio::spawn(run_client(c.clone(), i, seed.wrapping_mul(31).wrapping_add(i as u64), 3, start, until)))
        .collect();
    let nemesis = tokio::spawn(run_nemesis(c.clone(), seed ^ 0x9e37_79b9_7f4a_7c15, until));
    let checker = tokio::spawn(check_periodically(c.clone(), until));

    let mut history = Vec::new();
    for h in clients {
        history.extend(h.await.unwrap_or_default());
    }
    let faults = nemesis.await.unwrap_or_default();
    let _ = checker.await;

    // Heal everything and let the cluster converge before the final checks.
    heal(&c).await;
    let mut violations = Vec::new();
    if !converge(&c).await {
        violations.push("the cluster did not converge within 30 s after healing".to_string());
    }
    let g = lock(&c);
    if let Err(v) = g.check() {
        violations.push(v.to_string());
    }
    if let Some(v) = g.violation.lock().unwrap_or_else(|e| e.into_inner()).take() {
        violations.push(v.to_string());
    }
    let kv_history: Vec<_> = history.iter().map(|op| op.to_kv_op()).collect();
    match check_kv_history(&kv_history) {
        Ok(CheckResult::Linearizable) => {}
        Ok(CheckResult::NotLinearizable { key, ops }) => {
            let ops: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
            violations.push(format!("history not linearizable on key {key}:\n  {}", ops.join("\n  ")));
        }
        Ok(CheckResult::Unknown { key }) => {
            violations.push(format!("the linearizability search gave up on key {key} (too many concurrent ops)"));
        }
        Err(e) => violations.push(format!("malformed history: {e}")),
    }
    let safety = g.safety.lock().unwrap_or_else(|e| e.into_inner());
    let leaders: BTreeMap<u64, u64> =
        safety.terms_with_leader().into_iter().filter_map(|t| safety.leader_of(t).map(|l| (t, l))).collect();
    let mut h = DefaultHasher::new();
    (&history, &faults, &leaders).hash(&mut h);
    for node in g.nodes.values() {
        node.sm.data().hash(&mut h);
        node.log.last_log_id().hash(&mut h);
    }
    SimReport { seed, nodes: n, history, faults, leaders, trace_hash: h.finish(), violations }
}

/// Check the cluster's safety properties every 20 ms of virtual time.
async fn check_periodically(c: Shared, until: Instant) {
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let g = lock(&c);
        if let Err(v) = g.check() {
            g.record_violation(v);
        }
    }
}

/// Wait until every running node applied the same last entry as the leader.
async fn converge(c: &Shared) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let g = lock(c);
        let running = g.running();
        let Some(leader) = g.known_leader() else { continue };
        let Some((_, lr)) = running.iter().find(|(id, _)| *id == leader) else { continue };
        let target = lr.metrics().borrow().last_log_id;
        if running.iter().all(|(_, r)| r.metrics().borrow().last_applied == target) {
            return true;
        }
    }
    false
}
