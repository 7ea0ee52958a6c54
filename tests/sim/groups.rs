//! Multi-group mode: many Raft groups on 3–5 `GroupHost`s, with quiescence and node liveness
//! beats on, under node-level and group-level faults.
//!
//! Each group is a cluster of the single-group mode ([`SimCluster`]): its nodes' storage, its
//! clients' history clock, its election safety check and its invariants, so the clients, the
//! checks and the linearizability checker are the same code. What differs is below them: the
//! groups of a node run in one host, every host talks over one `HostRouter`, and a node's
//! faults (a crash, a cut link) hit every group on it at once.
//!
//! Client load comes in bursts on a few groups at a time, with quiet stretches of 1–3 s in
//! between, so that idle groups quiesce and the next burst, vote or fault must wake them. The
//! report counts how often a replica quiesced and woke.
//!
//! Clocks all run at the same rate here: a hosted group has no clock-rate knob.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use quorate::multi::{GroupHost, GroupId, HostConfig};
use quorate::testing::suite::StateMachinePersistence;
use quorate::testing::{HostRouter, Request, Router, RouterHost};
use quorate::{BasicNode, Config, ReadPolicy, SnapshotPolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, timeout};

use crate::clients::{Op, run_client};
use crate::cluster::{CrashLoss, Shared, SimCluster, SimNode, begin_start, crashed, lock, started};
use crate::groups_nemesis::{HostFault, run_host_nemesis};
use crate::harness::{check_history, check_periodically, converge, real_time_limit};

/// What a multi-group run is asked to do.
#[derive(Debug, Clone)]
pub struct GroupsOptions {
    /// Virtual time the clients and the nemesis run for.
    pub duration: Duration,
    /// Groups per node (every group has a replica on every node).
    pub groups: usize,
    /// Kinds of fault (as `HostFault::kind` names them) the nemesis leaves out.
    pub exclude_faults: Vec<String>,
}

/// What one multi-group run did and found.
#[derive(Debug)]
pub struct GroupsReport {
    pub seed: u64,
    pub nodes: usize,
    /// Each group's history.
    pub histories: Vec<Vec<Op>>,
    pub faults: Vec<(u64, HostFault)>,
    /// Times a replica quiesced, and woke, over all groups and nodes (lower bounds).
    pub quiesces: u64,
    pub wakes: u64,
    /// Terms that had a leader, over all groups.
    pub elections: u64,
    /// Replicas not quiesced a while after the healed groups converged, described.
    pub awake_at_end: Vec<String>,
    /// Replicas of ended groups running at the end: nodes that missed a removal and started
    /// the group again from their logs.
    pub stragglers_at_end: u64,
    pub trace_hash: u64,
    pub violations: Vec<String>,
}

/// The command that replays `seed` in multi-group mode.
pub fn groups_replay_command(seed: u64) -> String {
    format!(
        "SIM_SEED={seed} cargo test --release --features testing --test sim replay_groups_seed -- --ignored --nocapture"
    )
}

/// The nodes' hosts and every group's cluster.
pub struct World {
    pub router: HostRouter,
    /// The running hosts.
    pub hosts: BTreeMap<u64, RouterHost>,
    /// Group `g`'s cluster at index `g`: the groups of the start, then those created at run
    /// time (`group_life.rs`), ended ones included. Ids are never reused.
    pub groups: Vec<Shared>,
    /// The groups removed from every running host, by id.
    pub ended: BTreeMap<usize, Ended>,
    pub ids: Vec<u64>,
    pub seed: u64,
    pub sm_persistence: StateMachinePersistence,
}

/// How an ended group was ended.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The nodes that were down when it was removed: their logs still hold it.
    pub missed_by: BTreeSet<u64>,
    /// Whether those nodes start it again from their logs when they restart (as an
    /// application that keeps no tombstone of ended groups does), or leave it.
    pub stragglers: bool,
}

impl World {
    /// Start node `id`'s host with every group on that node's storage.
    pub async fn start_host(&mut self, id: u64) {
        let host = match GroupHost::new(id, HostConfig::default(), self.router.network(id)) {
            Ok(h) => h,
            Err(e) => {
                lock(&self.groups[0]).record_violation(format!("node {id}: host does not start: {e}"));
                return;
            }
        };
        self.router.add_host(host.clone());
        for (group, c) in self.groups.iter().enumerate() {
            if !self.starts_on(group, id) {
                continue;
            }
            let Some(start) = begin_start(c, id) else { continue };
            let raft = host.create_group(group as GroupId, start.config, start.log, start.sm).await;
            started(c, id, start.incarnation, raft);
        }
        self.hosts.insert(id, host);
    }

    /// Whether node `id`'s host starts `group` when it starts: every group but an ended one,
    /// which only a node that missed its end starts, and only if the run plays stragglers.
    fn starts_on(&self, group: usize, id: u64) -> bool {
        self.ended.get(&group).is_none_or(|e| e.stragglers && e.missed_by.contains(&id))
    }

    /// `kill -9` node `id`'s host: it is gone from the network at once, and every group on it
    /// keeps only what its storage made durable (and `loss` allows).
    pub async fn crash_host(&mut self, id: u64, loss: CrashLoss) {
        self.router.remove_host(id);
        let Some(host) = self.hosts.remove(&id) else { return };
        for c in &self.groups {
            lock(c).lose_unflushed(id, loss);
        }
        let _ = host.shutdown().await;
        for c in &self.groups {
            crashed(c, id);
        }
    }

    /// Undo every link fault.
    pub fn heal_network(&self) {
        for a in &self.ids {
            self.router.restore(*a);
            for b in &self.ids {
                self.router.unblock(*a, *b);
                self.router.set_delay(*a, *b, Duration::ZERO);
                self.router.set_answer_delay(*a, *b, Duration::ZERO);
            }
        }
    }
}

/// Run `seed` in multi-group mode on a fresh single-threaded runtime with a paused clock.
pub fn run_groups_seed(seed: u64, options: GroupsOptions) -> GroupsReport {
    crate::harness::paused_runtime(seed).block_on(simulate_groups(seed, options))
}

/// How often every group's invariants are checked while the run goes on.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Client drivers, each sending bursts to a few groups at a time.
const DRIVERS: u64 = 3;

/// How long the groups are left alone after converging, to see them quiesce.
const SETTLE: Duration = Duration::from_secs(2);

/// Group `g`'s cluster, on nodes `ids`, none started, its config drawn from `rng`.
pub fn new_group(seed: u64, g: u64, ids: &[u64], rng: &mut StdRng, sm_persistence: StateMachinePersistence) -> Shared {
    let config = Config {
        cluster_name: format!("sim-{seed}-g{g}"),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(rng.random_range(20..200)),
        max_in_snapshot_log_to_keep: rng.random_range(0..30),
        snapshot_max_chunk_size: rng.random_range(64..4096),
        rpc_timeout: Duration::from_millis(500),
        election_seed: Some(seed.wrapping_mul(1_000_003).wrapping_add(g)),
        ..Config::default()
    };
    let nodes = ids.iter().map(|id| (*id, SimNode::new(1.0))).collect();
    SimCluster::new_shared(config, Router::new(), nodes, sm_persistence)
}

async fn simulate_groups(seed: u64, options: GroupsOptions) -> GroupsReport {
    // As in the single-group mode: land the first deadlines on whole timer ticks.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let n: u64 = rng.random_range(3..=5);
    let ids: Vec<u64> = (1..=n).collect();
    let router = HostRouter::new();
    router.set_seed(seed);
    router.set_loss([0.0, 0.01, 0.03][rng.random_range(0..3)]);
    router.set_jitter(Duration::from_millis(rng.random_range(0..10)));
    router.set_real_time_limit(Some(real_time_limit()));
    let sm_persistence =
        if rng.random_bool(0.5) { StateMachinePersistence::Persistent } else { StateMachinePersistence::Snapshot };
    let groups: Vec<Shared> =
        (0..options.groups as u64).map(|g| new_group(seed, g, &ids, &mut rng, sm_persistence)).collect();
    let mut world = World {
        router,
        hosts: BTreeMap::new(),
        groups: groups.clone(),
        ended: BTreeMap::new(),
        ids: ids.clone(),
        seed,
        sm_persistence,
    };
    for id in &ids {
        world.start_host(*id).await;
    }
    initialize(&world).await;

    let until = Instant::now() + options.duration;
    let next_client = Arc::new(Mutex::new(vec![0usize; groups.len()]));
    let drivers: Vec<_> = (0..DRIVERS)
        .map(|d| {
            tokio::spawn(drive_bursts(
                groups.clone(),
                seed.wrapping_mul(131).wrapping_add(d),
                until,
                next_client.clone(),
            ))
        })
        .collect();
    let nemesis =
        tokio::spawn(run_host_nemesis(world, seed ^ 0x9e37_79b9_7f4a_7c15, until, options.exclude_faults.clone()));
    let checkers: Vec<_> =
        groups.iter().map(|c| tokio::spawn(check_periodically(c.clone(), until, CHECK_EVERY))).collect();

    let mut histories: Vec<Vec<Op>> = vec![Vec::new(); groups.len()];
    for d in drivers {
        for (group, ops) in d.await.unwrap_or_default() {
            histories[group].extend(ops);
        }
    }
    let Ok(end) = nemesis.await else { panic!("seed {seed}: the nemesis panicked") };
    let (world, faults) = (end.world, end.faults);
    histories.resize(world.groups.len(), Vec::new());
    for (group, d) in end.created_drivers {
        histories[group].extend(d.await.unwrap_or_default());
    }
    join_all(checkers).await;
    join_all(end.created_checkers).await;

    world.heal_network();
    let groups = world.groups.clone();
    // Ended groups have no replicas to converge, settle or probe (a straggler campaigns alone).
    let live: Vec<(usize, Shared)> =
        groups.iter().cloned().enumerate().filter(|(g, _)| !world.ended.contains_key(g)).collect();
    let mut violations = final_checks(&world, &live, &histories, &faults).await;
    tokio::time::sleep(SETTLE).await;
    let awake_at_end = awake_replicas(&live);
    let stragglers_at_end = world.ended.keys().map(|g| lock(&groups[*g]).running().len() as u64).sum();
    violations.extend(probe_quiesced_groups(&live).await);

    let mut all = Vec::new();
    let (mut quiesces, mut wakes, mut elections) = (0, 0, 0);
    let mut h = DefaultHasher::new();
    (&histories, &faults).hash(&mut h);
    for (group, c) in groups.iter().enumerate() {
        let g = lock(c);
        all.extend(g.violations.iter().map(|v| format!("group {group}: {v}")));
        quiesces += g.quiesces;
        wakes += g.wakes;
        let safety = g.safety.lock().unwrap_or_else(|e| e.into_inner());
        let terms = safety.terms_with_leader();
        elections += terms.len() as u64;
        terms.iter().map(|t| safety.leader_of(*t)).collect::<Vec<_>>().hash(&mut h);
        for node in g.nodes.values() {
            node.sm.data().hash(&mut h);
            node.log.last_log_id().hash(&mut h);
        }
    }
    all.append(&mut violations);
    GroupsReport {
        seed,
        nodes: n as usize,
        histories,
        faults,
        quiesces,
        wakes,
        elections,
        awake_at_end,
        stragglers_at_end,
        trace_hash: h.finish(),
        violations: all,
    }
}

/// How long a settled group may take to serve a read or a write.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Every settled (mostly quiesced) group serves a read by each policy at its leader, then a
/// write, each within [`PROBE_TIMEOUT`]: whatever needs a quiesced group wakes it. A refusal
/// (leadership moved meanwhile) is retried at the leader known then; only a probe left
/// unanswered, or refused [`PROBE_TRIES`] times, is a violation.
async fn probe_quiesced_groups(groups: &[(usize, Shared)]) -> Vec<String> {
    let mut violations = Vec::new();
    for (group, c) in groups.iter().map(|(g, c)| (*g, c)) {
        for probe in [Probe::Read(ReadPolicy::ReadIndex), Probe::Read(ReadPolicy::LeaseRead), Probe::Write] {
            if let Some(why) = run_probe(c, group, probe).await {
                violations.push(format!("group {group}: {probe:?} at the settled leader: {why}"));
            }
        }
    }
    violations
}

/// What a probe asks of a settled group.
#[derive(Debug, Clone, Copy)]
enum Probe {
    Read(ReadPolicy),
    Write,
}

/// How often a refused probe is tried (a short pause apart) before it counts as failed.
const PROBE_TRIES: usize = 20;

/// Run `probe` on `group`; why it failed, if it did.
async fn run_probe(c: &Shared, group: usize, probe: Probe) -> Option<String> {
    let mut why = String::new();
    for _ in 0..PROBE_TRIES {
        let leader = {
            let g = lock(c);
            g.known_leader().and_then(|l| g.nodes.get(&l).and_then(|n| n.raft.clone()))
        };
        let Some(raft) = leader else {
            why = "no known leader".to_string();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let answer = match probe {
            Probe::Read(policy) => timeout(PROBE_TIMEOUT, raft.ensure_linearizable(policy))
                .await
                .map(|r| r.map(|_| ()).map_err(|e| e.to_string())),
            Probe::Write => {
                let write = raft.client_write(Request::set("probe", format!("g{group}")));
                timeout(PROBE_TIMEOUT, write).await.map(|r| r.map(|_| ()).map_err(|e| e.to_string()))
            }
        };
        match answer {
            Ok(Ok(())) => return None,
            Ok(Err(e)) => why = format!("n{} refused: {e}", raft.id()),
            Err(_) => return Some(format!("n{} gave no answer within {PROBE_TIMEOUT:?}", raft.id())),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some(why)
}

/// The replicas that are not quiesced, with their state.
fn awake_replicas(groups: &[(usize, Shared)]) -> Vec<String> {
    let mut awake = Vec::new();
    for (group, c) in groups.iter().map(|(g, c)| (*g, c)) {
        for (id, r) in lock(c).running() {
            let m = r.metrics().borrow().clone();
            if !m.quiesced {
                awake.push(format!(
                    "group {group} node {id}: {:?} in term {}, leader {:?}, last log {:?}, applied {:?}",
                    m.state, m.current_term, m.current_leader, m.last_log_id, m.last_applied
                ));
            }
        }
    }
    awake
}

/// Initialize group `g` through node `g % n + 1`, so that leadership starts spread out.
async fn initialize(world: &World) {
    let members: BTreeMap<u64, BasicNode> =
        world.ids.iter().map(|id| (*id, BasicNode::new(format!("n{id}")))).collect();
    for (group, c) in world.groups.iter().enumerate() {
        let first = world.ids[group % world.ids.len()];
        let raft = lock(c).nodes[&first].raft.clone();
        if let Some(r) = raft {
            if let Err(e) = r.initialize(members.clone()).await {
                lock(c).record_violation(format!("initialize failed: {e}"));
            }
        }
    }
}

/// Until `until`: a quiet stretch, then a burst of clients on one to three random groups;
/// returns each burst's history with its group.
pub async fn drive_bursts(
    groups: Vec<Shared>,
    seed: u64,
    until: Instant,
    next_client: Arc<Mutex<Vec<usize>>>,
) -> Vec<(usize, Vec<Op>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut histories = Vec::new();
    let mut quiet = Duration::from_millis(rng.random_range(0..500));
    while Instant::now() + quiet < until {
        tokio::time::sleep(quiet).await;
        let burst_end = Instant::now() + Duration::from_millis(rng.random_range(100..800));
        let mut burst = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let group = rng.random_range(0..groups.len());
            for _ in 0..rng.random_range(1..=2) {
                // Client ids count up per group: each is one sequential client of its history.
                let client = {
                    let mut next = next_client.lock().unwrap_or_else(|e| e.into_inner());
                    next[group] += 1;
                    next[group] - 1
                };
                let c = groups[group].clone();
                let client_seed = rng.random();
                burst.push((group, tokio::spawn(run_client(c, client, client_seed, 3, burst_end))));
            }
        }
        for (group, h) in burst {
            histories.push((group, h.await.unwrap_or_default()));
        }
        quiet = Duration::from_millis(rng.random_range(1000..3000));
    }
    histories
}

/// After healing: every `live` group converges, every group is safe, and every group's
/// history (an ended group's up to its end) is linearizable.
async fn final_checks(
    world: &World,
    live: &[(usize, Shared)],
    histories: &[Vec<Op>],
    faults: &[(u64, HostFault)],
) -> Vec<String> {
    let mut violations = Vec::new();
    let converged = join_all(live.iter().map(|(_, c)| converge(c))).await;
    for (group, ok) in live.iter().map(|(g, _)| *g).zip(converged) {
        if !ok {
            violations
                .push(format!("group {group}: did not converge within {:?} after healing", crate::harness::CONVERGE));
        }
    }
    if world.router.real_time_limit_exceeded() {
        violations.push(format!("livelock: the run took more than {:?} of wall-clock time", real_time_limit()));
    }
    for (group, c) in world.groups.iter().enumerate() {
        if let Err(v) = lock(c).check() {
            violations.push(format!("group {group}: {v}"));
        }
        if let Some(v) = check_history(&histories[group], faults) {
            violations.push(format!("group {group}: {v}"));
        }
    }
    violations
}
