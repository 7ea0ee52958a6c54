//! The `raft-kv compare-etcd` command: raft-kv against etcd, measured the way etcd's users
//! measure it, on one machine, alternated.
//!
//! Each round starts a fresh 3-node raft-kv cluster and a fresh 3-member etcd cluster on
//! loopback (every node its own data directory, all under one temporary directory on one
//! disk; both with their defaults, so both fsync their log before acknowledging a write), then
//! for each connection count measures both with the same load: HTTP/JSON PUTs of fixed-size
//! values over keep-alive connections to the leader, one request in flight per connection,
//! for a fixed time after a warm-up. Which system goes first alternates from one connection
//! count to the next and from one round to the next, so neither always runs on a warmer or
//! busier machine. The bench client ([`crate::bench`]) sends the load; optionally `wrk` too.
//!
//! Around each measurement it reads what the servers did: the CPU time of the measured
//! system's processes (and of the idle one's), the machine's busy share, and the leader's log
//! fsyncs from its Prometheus page (`quorate_file_store_fsync_duration_seconds` for raft-kv,
//! `etcd_disk_wal_fsync_duration_seconds` for etcd).
//!
//! Every process it started is killed when it returns, fails, panics or is interrupted
//! (Ctrl-C, SIGTERM: see the binary), and the temporary directory is removed.

pub mod chart;
mod etcd;
pub mod probe;
pub mod report;
mod wrk;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::bench::{self, Api, BenchOptions, Load};
use crate::local_cluster::LocalCluster;
use crate::node::{self, BoxError};
use etcd::EtcdCluster;
use probe::{MachineCpu, Probe};
use report::Sample;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// A raft-kv cluster.
    RaftKv,
    /// An etcd cluster, through its v3 JSON gateway.
    Etcd,
}

impl System {
    fn slug(self) -> &'static str {
        match self {
            Self::RaftKv => "raft-kv",
            Self::Etcd => "etcd",
        }
    }

    /// The histogram of its log fsyncs on its Prometheus page.
    fn fsync_metric(self) -> &'static str {
        match self {
            Self::RaftKv => "quorate_file_store_fsync_duration_seconds",
            Self::Etcd => "etcd_disk_wal_fsync_duration_seconds",
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.slug())
    }
}

/// What sends the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Client {
    /// `raft-kv bench`'s client (reqwest, keep-alive), in this process.
    Bench,
    /// `wrk`, with a Lua script per system.
    Wrk,
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bench => "raft-kv bench",
            Self::Wrk => "wrk",
        })
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The `raft-kv` binary to run the nodes with.
    pub raft_kv_binary: PathBuf,
    /// The `etcd` binary.
    pub etcd_binary: PathBuf,
    /// Rounds; the report gives medians over them.
    pub rounds: usize,
    /// Connection counts, measured in this order.
    pub connections: Vec<usize>,
    /// Unmeasured load before each measurement.
    pub warmup: Duration,
    /// Each measurement's window.
    pub measure: Duration,
    /// Bytes per value.
    pub value_size: usize,
    /// Also measure with `wrk`.
    pub wrk: bool,
    /// Where the clusters' data directories go (removed at the end).
    pub work_dir: PathBuf,
}

/// Removes a directory when dropped: after the clusters in it, which are declared later.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The load average of the machine (1, 5, 15 minutes), as `/proc/loadavg` says.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// What a measurement sends its load to.
struct Target {
    system: System,
    /// The leader's base URL.
    url: String,
    /// The leader's Prometheus page.
    metrics_url: String,
    /// The system's processes.
    pids: Vec<u32>,
}

/// Run the comparison, printing each measurement as it completes; the samples.
///
/// # Errors
/// If a cluster does not start or elect a leader, or a tool cannot run.
pub async fn run(opts: &CompareOptions) -> Result<Vec<Sample>, BoxError> {
    let _work_dir = RemoveOnDrop(opts.work_dir.clone());
    let version = std::process::Command::new(&opts.etcd_binary).arg("--version").output().map_err(|e| {
        format!("cannot run {}: {e} (Debian: apt-get install -y etcd-server)", opts.etcd_binary.display())
    })?;
    println!("{}", String::from_utf8_lossy(&version.stdout).lines().next().unwrap_or("etcd: unknown version"));
    if opts.wrk && !wrk::available() {
        return Err("--wrk: cannot run wrk (Debian: apt-get install -y wrk)".into());
    }
    if cfg!(debug_assertions) {
        println!("WARNING: a debug build runs the raft-kv nodes: its numbers mean nothing (build with --release)");
    }
    print_raft_kv_settings();
    let mut samples = Vec::new();
    for round in 1..=opts.rounds {
        println!("round {round}/{}: load average {}", opts.rounds, load_average());
        let dir = opts.work_dir.join(format!("round-{round}"));
        let mut raft_kv = LocalCluster::new(&opts.raft_kv_binary, &dir.join("raft-kv"), 3)?;
        let mut etcd = EtcdCluster::new(&opts.etcd_binary, &dir.join("etcd"), 3)?;
        let (raft_kv_target, etcd_target) = start_clusters(&mut raft_kv, &mut etcd, round == 1).await?;
        for (k, &connections) in opts.connections.iter().enumerate() {
            let order =
                if (round + k) % 2 == 1 { [&raft_kv_target, &etcd_target] } else { [&etcd_target, &raft_kv_target] };
            let clients: &[Client] = if opts.wrk { &[Client::Bench, Client::Wrk] } else { &[Client::Bench] };
            for &client in clients {
                for (i, target) in order.iter().enumerate() {
                    let idle = order[1 - i];
                    let sample = measure(opts, round, client, target, idle, connections).await?;
                    print_sample(&sample);
                    samples.push(sample);
                }
            }
        }
        drop((raft_kv, etcd));
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(samples)
}

fn print_raft_kv_settings() {
    let c = node::default_config();
    println!(
        "raft-kv defaults: heartbeat {:?}, election timeout {:?}..{:?}, snapshot {:?}, \
         max_payload_entries {}, max_payload_bytes {}, log fsync (fdatasync) per group commit",
        c.heartbeat_interval,
        c.election_timeout_min,
        c.election_timeout_max,
        c.snapshot_policy,
        c.max_payload_entries,
        c.max_payload_bytes,
    );
}

/// Start both clusters, wait for their leaders; what to send the load to. With `verbose`,
/// print each process's command line and etcd's reported settings.
async fn start_clusters(
    raft_kv: &mut LocalCluster,
    etcd: &mut EtcdCluster,
    verbose: bool,
) -> Result<(Target, Target), BoxError> {
    const WAIT: Duration = Duration::from_secs(30);
    raft_kv.start_all()?;
    etcd.start_all()?;
    for i in 0..raft_kv.nodes.len() {
        raft_kv.wait_metrics(i, WAIT, "the HTTP API", |_| true).await?;
    }
    raft_kv.init(0).await?;
    let leader = raft_kv.wait_leader(WAIT).await?;
    let etcd_leader = etcd.wait_leader(WAIT).await?;
    if verbose {
        for n in &raft_kv.nodes {
            println!(
                "  raft-kv node --id {} --raft-addr {} --http-addr {} --data-dir {} --admin-token-file {}",
                n.id,
                n.raft_addr,
                n.http_addr,
                n.data_dir.display(),
                raft_kv.root().join("admin.token").display()
            );
        }
        println!("  then POST /admin/init with the three nodes as voters");
        for i in 0..etcd.members.len() {
            println!("  {}", etcd.command_line(i).join(" "));
        }
        for line in etcd.reported_settings(etcd_leader) {
            println!("  etcd says: {line}");
        }
    }
    let raft_kv_target = Target {
        system: System::RaftKv,
        url: raft_kv.nodes[leader].url(),
        metrics_url: format!("{}/metrics", raft_kv.nodes[leader].url()),
        pids: raft_kv.nodes.iter().filter_map(|n| n.pid()).collect(),
    };
    let etcd_target = Target {
        system: System::Etcd,
        url: etcd.members[etcd_leader].client_url.clone(),
        metrics_url: format!("{}/metrics", etcd.members[etcd_leader].client_url),
        pids: etcd.members.iter().filter_map(|m| m.pid()).collect(),
    };
    println!(
        "  leaders: raft-kv node {} ({}), etcd {} ({})",
        leader + 1,
        raft_kv_target.url,
        etcd.members[etcd_leader].name,
        etcd_target.url
    );
    Ok((raft_kv_target, etcd_target))
}

/// One measurement of `target` by `client` at `connections`, `idle` being the other system.
async fn measure(
    opts: &CompareOptions,
    round: usize,
    client: Client,
    target: &Target,
    idle: &Target,
    connections: usize,
) -> Result<Sample, BoxError> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let (ops_per_sec, errors, p50_us, p99_us, probed, idle_cpu, machine_busy, client_cpu) = match client {
        Client::Bench => {
            let bench_opts = BenchOptions {
                api: match target.system {
                    System::RaftKv => Api::RaftKv,
                    System::Etcd => Api::Etcd,
                },
                targets: vec![target.url.clone()],
                clients: connections,
                load: Load::Timed { warmup: opts.warmup, measure: opts.measure },
                value_size: opts.value_size,
            };
            let load = tokio::spawn(async move { bench::run(&bench_opts).await.map_err(|e| e.to_string()) });
            tokio::time::sleep(opts.warmup).await;
            let (probe, idle_cpu, machine, own) = start_probes(&http, target, idle).await;
            let report = load.await??;
            let (probed, idle_cpu, busy, own) = finish_probes(&http, probe, idle, idle_cpu, machine, own).await;
            let (p50, p99) = (report.latency_at(0.5) as f64, report.latency_at(0.99) as f64);
            (report.ops_per_sec(), report.errors, p50, p99, probed, idle_cpu, busy, own)
        }
        Client::Wrk => {
            let (probe, idle_cpu, machine, _) = start_probes(&http, target, idle).await;
            let report =
                wrk::run(&opts.work_dir, target.system, &target.url, connections, opts.measure, opts.value_size)
                    .await?;
            let (probed, idle_cpu, busy, _) = finish_probes(&http, probe, idle, idle_cpu, machine, None).await;
            (report.requests_per_sec, report.errors, report.p50_us, report.p99_us, probed, idle_cpu, busy, None)
        }
    };
    let secs = opts.measure.as_secs_f64();
    Ok(Sample {
        round,
        system: target.system,
        client,
        connections,
        ops_per_sec,
        errors,
        p50_us,
        p99_us,
        server_cpu_cores: probed.cpu_cores,
        client_cpu_cores: client_cpu,
        idle_system_cpu_cores: idle_cpu,
        machine_busy,
        leader_fsyncs_per_sec: probed.fsyncs.map(|f| f.count / secs),
        leader_fsync_mean_us: probed.fsyncs.map(|f| f.mean_us),
    })
}

/// Readings taken when a measured window opens: the measured system's probe, the idle
/// system's CPU, the machine's, this process's.
async fn start_probes(
    http: &reqwest::Client,
    target: &Target,
    idle: &Target,
) -> (Probe, Option<(f64, std::time::Instant)>, Option<MachineCpu>, Option<(f64, std::time::Instant)>) {
    let probe = Probe::start(http, target.pids.clone(), target.metrics_url.clone(), target.system.fsync_metric()).await;
    let now = std::time::Instant::now();
    let idle_cpu = probe::total_cpu(&idle.pids).map(|c| (c, now));
    let own = probe::own_cpu_secs().map(|c| (c, now));
    (probe, idle_cpu, MachineCpu::read(), own)
}

type Finished = (probe::Probed, Option<f64>, Option<f64>, Option<f64>);

/// Read again when the window closes: what each used, in cores (the machine's as a share).
async fn finish_probes(
    http: &reqwest::Client,
    probe: Probe,
    idle: &Target,
    idle_cpu: Option<(f64, std::time::Instant)>,
    machine: Option<MachineCpu>,
    own: Option<(f64, std::time::Instant)>,
) -> Finished {
    let rate = |before: Option<(f64, std::time::Instant)>, after: Option<f64>| {
        before.zip(after).map(|((b, at), a)| (a - b) / at.elapsed().as_secs_f64().max(1e-9))
    };
    let idle_cores = rate(idle_cpu, probe::total_cpu(&idle.pids));
    let own_cores = rate(own, probe::own_cpu_secs());
    let busy = machine.zip(MachineCpu::read()).and_then(|(before, after)| after.busy_since(&before));
    (probe.finish(http).await, idle_cores, busy, own_cores)
}

fn print_sample(s: &Sample) {
    let cores = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |c| format!("{c:.2}"));
    println!(
        "  round {} {:>3} conns {:<7} ({}): {:>7.0} writes/s, p50 {:.2} ms, p99 {:.2} ms, {} errors; CPU: server {} \
         client {} idle system {}, machine busy {}; leader fsyncs/s {}, mean {} ms",
        s.round,
        s.connections,
        s.system.to_string(),
        s.client,
        s.ops_per_sec,
        s.p50_us / 1000.0,
        s.p99_us / 1000.0,
        s.errors,
        cores(s.server_cpu_cores),
        cores(s.client_cpu_cores),
        cores(s.idle_system_cpu_cores),
        s.machine_busy.map_or_else(|| "–".to_string(), |b| format!("{:.0} %", b * 100.0)),
        s.leader_fsyncs_per_sec.map_or_else(|| "–".to_string(), |f| format!("{f:.0}")),
        s.leader_fsync_mean_us.map_or_else(|| "–".to_string(), |f| format!("{:.2}", f / 1000.0)),
    );
}

/// Write the report: `<out>/etcd-compare.md` (the tables), `.json` (every sample) and `.svg`
/// (the chart of the medians); print the tables.
///
/// # Errors
/// If a file cannot be written.
pub fn write_report(out: &Path, header: &str, samples: &[Sample], connections: &[usize]) -> Result<(), BoxError> {
    std::fs::create_dir_all(out)?;
    let mut text = format!("{header}\n\n");
    for client in [Client::Bench, Client::Wrk] {
        if samples.iter().any(|s| s.client == client) {
            text.push_str(&report::markdown(samples, client, connections));
            text.push('\n');
        }
    }
    println!("\n{text}");
    std::fs::write(out.join("etcd-compare.md"), &text)?;
    std::fs::write(out.join("etcd-compare.json"), serde_json::to_string_pretty(samples)?)?;
    let svg = out.join("etcd-compare.svg");
    chart::write_svg(&svg, "raft-kv vs etcd 3.4: HTTP/JSON puts, 3 nodes, medians", samples, connections)?;
    println!("wrote etcd-compare.md, etcd-compare.json and etcd-compare.svg in {}", out.display());
    Ok(())
}
