//! `multi-bench`: what many Raft groups per node cost, on quorate's [`GroupHost`].
//!
//! One run stands up three [`GroupHost`]s on an in-memory [`HostRouter`], each running the
//! same N groups ([`cluster`]), and measures, in order:
//!
//! 1. [`idle`]: once every group has elected, written one entry and quiesced, the process's
//!    CPU, memory per group and messages between a node pair while nothing happens;
//! 2. [`writes`]: throughput of W writers spread over every group, against all of them on one;
//! 3. [`failover`]: with every group quiesced, one node killed; how long each group it led
//!    takes to have a new leader.
//!
//! Each run is one [`Plan`] and yields one [`Outcome`]. The binary runs every plan in a child
//! process of its own, so that one run's freed memory does not hide the next one's growth in
//! the resident set, and prints the outcomes as the tables of `benches/README.md`
//! ([`report`]).
//!
//! [`GroupHost`]: quorate::multi::GroupHost
//! [`HostRouter`]: quorate::testing::HostRouter

pub mod cluster;
pub mod election_count;
pub mod failover;
pub mod idle;
pub mod process;
pub mod report;
pub mod writes;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use quorate::Config;
use quorate::multi::HostConfig;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;

use crate::alloc;
use cluster::{MultiCluster, NODES, Storage};
use failover::FailoverRound;
use idle::IdleWindow;
use writes::{Routes, Target, WriteRun};

/// What one run measures, on how many groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Groups per node.
    pub groups: u64,
    /// `HostConfig::quiesce`.
    pub quiesce: bool,
    /// Where the logs are: `None` for memory stores, or a directory for one `SharedLog` per
    /// node (removed afterwards).
    pub shared_log_dir: Option<PathBuf>,
    /// Idle windows to measure (0: none).
    pub idle_rounds: u32,
    /// Length of each idle window.
    pub idle_window: Duration,
    /// Rounds of writes, each one spread and one on a single group (0: none).
    pub write_rounds: u32,
    /// Concurrent writers.
    pub writers: u64,
    /// Length of each write measurement.
    pub write_window: Duration,
    /// Nodes to kill, one after the other, each restarted before the next (0: none).
    pub failover_rounds: u32,
    /// Groups initialized at a time while the cluster is brought up (see
    /// [`MultiCluster::bring_up`]).
    pub bring_up_batch: u64,
    /// Bound on every wait: elections, quiescence, a re-election.
    pub limit: Duration,
    /// The groups' election timeout, `[min, max)` in ms (quorate's default: 150, 300).
    #[serde(default = "default_election_timeout")]
    pub election_timeout_ms: (u64, u64),
}

/// quorate's default election timeout, in ms.
pub fn default_election_timeout() -> (u64, u64) {
    (150, 300)
}

/// The write measurements of one round, one per target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriteSample {
    /// Spread over every group, or all on one.
    pub target: Target,
    /// What the writers did.
    pub run: WriteRun,
    /// `fdatasync`s of the shared logs during the run (0 on memory stores).
    pub syncs: u64,
    /// Entries those syncs made durable.
    pub synced_entries: u64,
}

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Groups per node.
    pub groups: u64,
    /// The groups' election timeout, `[min, max)` in ms.
    pub election_timeout_ms: (u64, u64),
    /// Whether idle groups quiesced.
    pub quiesce: bool,
    /// Whether the logs were shared files (else memory).
    pub shared_log: bool,
    /// Starting the hosts and groups, electing, the first write, and quiescing (if on).
    pub setup_secs: f64,
    /// Resident set and live heap before any host started.
    pub rss_before: u64,
    /// Live heap before any host started (0 without the counting allocator).
    pub heap_before: u64,
    /// Resident set once the cluster was idle.
    pub rss_idle: u64,
    /// Live heap once the cluster was idle.
    pub heap_idle: u64,
    /// The idle windows.
    pub idle: Vec<IdleWindow>,
    /// The write rounds.
    pub writes: Vec<WriteSample>,
    /// The kills.
    pub failover: Vec<FailoverRound>,
    /// `/proc/loadavg` at the start and at the end.
    pub load: (String, String),
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
}

impl Outcome {
    /// Resident bytes per group replica (3 per group) once idle, over the no-groups baseline.
    pub fn rss_per_replica(&self) -> f64 {
        self.rss_idle.saturating_sub(self.rss_before) as f64 / (3 * self.groups.max(1)) as f64
    }

    /// Live heap bytes per group replica once idle, over the no-groups baseline.
    pub fn heap_per_replica(&self) -> f64 {
        self.heap_idle.saturating_sub(self.heap_before) as f64 / (3 * self.groups.max(1)) as f64
    }
}

/// The groups' Raft settings: quorate's defaults (50 ms heartbeat, snapshots every 5000
/// entries), with the election timeout `[min, max)` ms (default 150–300); a log store may stall
/// for twice the maximum before a leader steps down.
pub fn group_config((min, max): (u64, u64)) -> Config {
    Config {
        cluster_name: "multi-bench".into(),
        election_timeout_min: Duration::from_millis(min),
        election_timeout_max: Duration::from_millis(max),
        max_log_io_stall: Duration::from_millis(max * 2).max(Config::default().max_log_io_stall),
        ..Default::default()
    }
}

/// Carry out `plan`. Call within the nodes' runtime; writers and watchers run on `clients`.
pub async fn run(plan: &Plan, clients: &Handle) -> Outcome {
    let mut outcome = Outcome {
        groups: plan.groups,
        election_timeout_ms: plan.election_timeout_ms,
        quiesce: plan.quiesce,
        shared_log: plan.shared_log_dir.is_some(),
        rss_before: process::rss_bytes(),
        heap_before: alloc::live_bytes() as u64,
        ..Default::default()
    };
    outcome.load.0 = process::load_average().unwrap_or_default();
    if let Err(e) = run_phases(plan, clients, &mut outcome).await {
        eprintln!("multi-bench: {} groups: {e}", plan.groups);
        outcome.error = Some(e);
    }
    outcome.load.1 = process::load_average().unwrap_or_default();
    if let Some(dir) = &plan.shared_log_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    outcome
}

async fn run_phases(plan: &Plan, clients: &Handle, outcome: &mut Outcome) -> Result<(), String> {
    let t0 = Instant::now();
    let storage = plan.shared_log_dir.clone().map_or(Storage::Memory, Storage::Shared);
    let host_config = HostConfig { quiesce: plan.quiesce, ..Default::default() };
    let mut cluster =
        MultiCluster::start(plan.groups, group_config(plan.election_timeout_ms), host_config, storage, plan.limit)
            .await?;
    let leaders = cluster.bring_up(plan.bring_up_batch, plan.quiesce).await?;
    settle(&cluster, plan.quiesce).await?;
    outcome.setup_secs = t0.elapsed().as_secs_f64();
    outcome.rss_idle = process::rss_bytes();
    outcome.heap_idle = alloc::live_bytes() as u64;
    progress(plan, format_args!("set up in {:.1} s", outcome.setup_secs));

    for _ in 0..plan.idle_rounds {
        outcome.idle.push(idle::measure(&cluster, plan.idle_window).await);
    }
    if plan.idle_rounds > 0 {
        progress(plan, format_args!("idle measured"));
    }

    let routes = Arc::new(Routes::new(cluster.handles(), &leaders));
    for round in 0..plan.write_rounds {
        let order =
            if round % 2 == 0 { [Target::Spread, Target::OneGroup] } else { [Target::OneGroup, Target::Spread] };
        for target in order {
            let (syncs0, entries0) = sync_counts(&cluster);
            let run = writes::measure(clients, routes.clone(), plan.writers, plan.write_window, target).await;
            let (syncs, entries) = sync_counts(&cluster);
            progress(plan, format_args!("writes {target:?}: {:.0} ops/s", run.ops_per_sec()));
            outcome.writes.push(WriteSample { target, run, syncs: syncs - syncs0, synced_entries: entries - entries0 });
        }
    }
    drop(routes);

    for round in 0..plan.failover_rounds {
        if round > 0 || plan.write_rounds > 0 {
            settle(&cluster, plan.quiesce).await?;
        }
        let victim = NODES[round as usize % NODES.len()];
        let kill = failover::kill_and_watch(&mut cluster, clients, victim, plan.limit).await;
        progress(plan, format_args!("killed node {victim}: {}", kill.summary()));
        outcome.failover.push(kill);
        cluster.restart(victim).await?;
        cluster.wait_for_leaders(0..plan.groups).await?;
    }
    cluster.shutdown().await;
    Ok(())
}

/// Wait until the cluster is idle: every group quiesced, or with quiescence off, a second for
/// the first write's replication to finish.
async fn settle(cluster: &MultiCluster, quiesce: bool) -> Result<(), String> {
    if quiesce {
        cluster.wait_all_quiesced(0..cluster.groups()).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

fn sync_counts(cluster: &MultiCluster) -> (u64, u64) {
    let s = cluster.syncs();
    (s.syncs.load(Ordering::Relaxed), s.entries.load(Ordering::Relaxed))
}

fn progress(plan: &Plan, what: std::fmt::Arguments<'_>) {
    let q = if plan.quiesce { "quiesce on" } else { "quiesce off" };
    let store = if plan.shared_log_dir.is_some() { ", shared log" } else { "" };
    eprintln!("multi-bench: {} groups ({q}{store}): {what}", plan.groups);
}
