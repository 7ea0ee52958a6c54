//! The `raft-kv compare-etcd` command: raft-kv against etcd, measured the way etcd's users
//! measure it, on one machine, alternated.
//!
//! Each round starts a fresh 3-node raft-kv cluster and a fresh 3-member etcd cluster on
//! loopback (every node its own data directory, all under one work directory on one disk,
//! never tmpfs: see [`host`]; both with their defaults, so both fsync their log before
//! acknowledging a write), then for each connection count measures both with the same load:
//! HTTP/JSON PUTs of fixed-size values over keep-alive connections to the leader, one request
//! in flight per connection, for a fixed time after a warm-up. Which system goes first
//! alternates from one connection count to the next and from one round to the next, so
//! neither always runs on a warmer or busier machine (with an even number of rounds, each
//! goes first equally often at every count). The bench client ([`crate::bench`]) sends the
//! load; optionally `wrk` too.
//!
//! Around each measurement it reads what the servers did: the CPU time of the measured
//! system's processes (and of the idle one's), the machine's busy share, the leader's log
//! fsyncs from its Prometheus page (`quorate_file_store_fsync_duration_seconds` for raft-kv,
//! `etcd_disk_wal_fsync_duration_seconds` for etcd), and both clusters' leaders and terms,
//! so that a sample during which one changed is marked. Each sample is appended to
//! `etcd-compare.jsonl` in the output directory as soon as it is measured.
//!
//! Every process it started is killed when it returns, fails, panics or is interrupted
//! (Ctrl-C, SIGTERM: see the binary), and its work directory is removed.

pub mod chart;
mod etcd;
pub mod host;
mod measure;
pub mod probe;
pub mod report;
mod wrk;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::local_cluster::{LocalCluster, free_port_pairs};
use crate::node::BoxError;
use etcd::EtcdCluster;
pub use host::{Host, HostError};
use measure::Target;
use report::{Sample, SampleLog};

/// What raft-kv's nodes are given besides their ids, addresses and data directories: one
/// runtime thread each. Three nodes and the load generator share the machine (two cores where
/// this was measured), so no node gains from threads of its own, and one thread saves the
/// wake-ups of handing a request between threads: about a fifth less CPU per write at 64
/// connections (examples/raft-kv/README.md). etcd runs with every flag at its default.
pub const NODE_ARGS: &[&str] = &["--runtime-threads", "1"];

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
    /// Rounds; the report gives medians over them. An even number puts each system first
    /// equally often.
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
    /// A directory for this run alone, where the clusters' data directories go; created by
    /// [`Host::detect`], removed with everything in it at the end of [`run`].
    pub work_dir: PathBuf,
    /// Measure even if the work directory is on tmpfs or ramfs (or its filesystem cannot be
    /// told).
    pub allow_tmpfs: bool,
    /// Where the report goes: `etcd-compare.{md,json,svg}`, and `etcd-compare.jsonl` while
    /// it runs.
    pub out: PathBuf,
    /// The settings the raft-kv nodes run with, as the binary derives them from a node's
    /// command line; printed with the results.
    pub raft_kv_settings: String,
}

impl CompareOptions {
    /// The file each sample is appended to as soon as it is measured.
    pub fn sample_log(&self) -> PathBuf {
        self.out.join("etcd-compare.jsonl")
    }
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

/// Run the comparison, printing each measurement as it completes and appending it to
/// [`CompareOptions::sample_log`]; the samples. Call [`Host::detect`] first: it creates the work
/// directory and checks that it is on a disk.
///
/// # Errors
/// If a cluster does not start or elect a leader, a tool cannot run, or the sample log cannot
/// be written.
pub async fn run(opts: &CompareOptions) -> Result<Vec<Sample>, BoxError> {
    let _work_dir = RemoveOnDrop(opts.work_dir.clone());
    if cfg!(debug_assertions) {
        println!("WARNING: a debug build runs the raft-kv nodes: its numbers mean nothing (build with --release)");
    }
    println!("raft-kv nodes: {}", opts.raft_kv_settings);
    std::fs::create_dir_all(&opts.out)?;
    let log_path = opts.sample_log();
    let log_error = |e: std::io::Error| format!("{}: {e}", log_path.display());
    let mut log = SampleLog::create(&log_path).map_err(log_error)?;
    let mut samples = Vec::new();
    for round in 1..=opts.rounds {
        println!("round {round}/{}: load average {}", opts.rounds, load_average());
        let dir = opts.work_dir.join(format!("round-{round}"));
        // One call for both clusters: their ports differ.
        let ports = free_port_pairs(6)?;
        let mut raft_kv = LocalCluster::with_ports(&opts.raft_kv_binary, &dir.join("raft-kv"), &ports[..3])?;
        raft_kv.node_args(NODE_ARGS);
        let mut etcd = EtcdCluster::new(&opts.etcd_binary, &dir.join("etcd"), &ports[3..])?;
        let (raft_kv_target, etcd_target) = start_clusters(&mut raft_kv, &mut etcd, round == 1).await?;
        for (k, &connections) in opts.connections.iter().enumerate() {
            let order =
                if (round + k) % 2 == 1 { [&raft_kv_target, &etcd_target] } else { [&etcd_target, &raft_kv_target] };
            let clients: &[Client] = if opts.wrk { &[Client::Bench, Client::Wrk] } else { &[Client::Bench] };
            for &client in clients {
                for (i, target) in order.iter().enumerate() {
                    let idle = order[1 - i];
                    let sample = measure::measure(opts, round, client, target, idle, connections).await?;
                    measure::print_sample(&sample);
                    log.append(&sample).map_err(log_error)?;
                    samples.push(sample);
                }
            }
        }
        drop((raft_kv, etcd));
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(samples)
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

/// Write the report: `<out>/etcd-compare.md` (`header`, the raft-kv settings and the tables),
/// `.json` (every sample) and `.svg` (the chart of the medians, titled with `host`'s etcd
/// version); print the tables.
///
/// # Errors
/// If a file cannot be written.
pub fn write_report(opts: &CompareOptions, host: &Host, header: &str, samples: &[Sample]) -> Result<(), BoxError> {
    let out = &opts.out;
    std::fs::create_dir_all(out)?;
    let mut text = format!("{header}\n\nraft-kv nodes: {}\n\n", opts.raft_kv_settings);
    for client in [Client::Bench, Client::Wrk] {
        if samples.iter().any(|s| s.client == client) {
            text.push_str(&report::markdown(samples, client, &opts.connections));
            text.push('\n');
        }
    }
    println!("\n{text}");
    std::fs::write(out.join("etcd-compare.md"), &text)?;
    std::fs::write(out.join("etcd-compare.json"), serde_json::to_string_pretty(samples)?)?;
    let svg = out.join("etcd-compare.svg");
    let title = format!("raft-kv vs {}: HTTP/JSON puts, 3 nodes, medians", host.etcd_name());
    chart::write_svg(&svg, &title, samples, &opts.connections)?;
    println!("wrote etcd-compare.md, etcd-compare.json and etcd-compare.svg in {}", out.display());
    Ok(())
}
