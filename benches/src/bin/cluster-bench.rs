//! `cluster-bench`: the same write workload on a three-node quorate cluster and a three-node
//! openraft cluster, measured alternately, reported as medians over rounds.
//!
//! With `--scenarios healthy,hung-follower` each library is also measured with one follower
//! that takes every RPC and never answers, alternating with the healthy cluster, and
//! `--memory-secs N` adds a timed run per library and scenario at the largest client count
//! that samples the heap (the binary installs a counting allocator) every 100 ms.
//!
//! ```text
//! cargo run -p quorate-bench --release --bin cluster-bench -- --quick
//! cargo run -p quorate-bench --release --bin cluster-bench -- --clients 1,64,256,1024,4096 --ops 500000 --rounds 3
//! cargo run -p quorate-bench --release --bin cluster-bench -- --scenarios healthy,hung-follower --memory-secs 20
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use quorate_bench::alloc::{self, CountingAlloc};
use quorate_bench::memory::{self, Accounting, Sampler};
use quorate_bench::openraft_cluster::OpenraftCluster;
use quorate_bench::quorate_cluster::QuorateCluster;
use quorate_bench::report::{self, Library, Sample, Scenario};
use quorate_bench::workload::{self, Measurement};
use quorate_bench::{BenchCluster, ClusterOptions, Phase, PhaseError, PhaseTimeouts, within};
use tokio::runtime::{Builder, Runtime};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Total operations per measurement unless `--ops` says otherwise.
const DEFAULT_OPS: u64 = 500_000;
/// Total operations per measurement in `--quick` mode.
const QUICK_OPS: u64 = 50_000;

/// Benchmark quorate against openraft: 3 voters in one process, in-memory log, no-op state
/// machine, direct-call network; N client tasks doing sequential empty writes.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Client counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64, 256, 1024, 4096])]
    clients: Vec<usize>,

    /// Total writes per measurement, split across the clients [default: 500000; 50000 with --quick].
    #[arg(long)]
    ops: Option<u64>,

    /// How many times to measure each (library, client count); the table shows medians
    /// [default: 3; 1 with --quick].
    #[arg(long)]
    rounds: Option<usize>,

    /// A short run (fewer writes, one round) that finishes well within a minute.
    #[arg(long)]
    quick: bool,

    /// Worker threads of the runtime the Raft nodes run on.
    #[arg(long, default_value_t = 2)]
    server_workers: usize,

    /// Worker threads of the separate runtime the clients run on.
    #[arg(long, default_value_t = 1)]
    client_workers: usize,

    /// Measure only these libraries (e.g. to profile one), comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Library::Quorate, Library::Openraft])]
    libs: Vec<Library>,

    /// Seconds one workload may run before it is reported as failed.
    #[arg(long, default_value_t = 120)]
    workload_timeout: u64,

    /// Seconds start-up (each of: start, initialize, election) and shutdown may take.
    #[arg(long, default_value_t = 10)]
    phase_timeout: u64,

    /// What the cluster goes through, comma-separated: `healthy`, `hung-follower` (one follower
    /// takes every RPC and never answers, from just after the election). Scenarios alternate
    /// within each library and client count [default: healthy; healthy,hung-follower with
    /// --quick].
    #[arg(long, value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,

    /// Seconds of the timed memory run, per library and scenario, at the largest client count,
    /// with snapshots on so the log is purged; 0 for none [default: 0; 2 with --quick].
    #[arg(long)]
    memory_secs: Option<u64>,

    /// Rows of the printed memory series: one per this many 100 ms samples.
    #[arg(long, default_value_t = 10)]
    memory_row_every: usize,

    /// Do not count allocations (to measure what counting costs). No memory run then.
    #[arg(long)]
    no_alloc_count: bool,
}

struct Runtimes {
    server: Runtime,
    client: Runtime,
}

fn runtime(name: &str, workers: usize) -> std::io::Result<Runtime> {
    Builder::new_multi_thread().worker_threads(workers.max(1)).thread_name(name).enable_all().build()
}

/// Start a cluster of `L` on the server runtime, run the workload from the client runtime,
/// verify it replicated, shut the cluster down. Every phase is bounded by `timeouts`.
fn measure<L: BenchCluster>(
    rt: &Runtimes,
    scenario: Scenario,
    clients: usize,
    ops: u64,
    timeouts: PhaseTimeouts,
) -> Result<Measurement, PhaseError> {
    let mut cluster = rt.server.block_on(L::start(timeouts.startup, ClusterOptions::default()))?;
    if scenario == Scenario::HungFollower
        && let Err(e) = cluster.hang_follower()
    {
        let _ = rt.server.block_on(within(Phase::Shutdown, timeouts.shutdown, cluster.shutdown()));
        return Err(e);
    }
    let mut measurement = rt.client.block_on(workload::run(cluster.writer(), clients, ops, timeouts.workload));
    if measurement.failure.is_none() {
        // The verify phase shares the shutdown timeout: both only wait for a settled cluster.
        let verified = rt.server.block_on(within(
            Phase::Verify,
            timeouts.shutdown,
            cluster.verify(measurement.completed, timeouts.shutdown),
        ));
        if let Err(e) = verified {
            measurement.failure = Some(e.to_string());
        }
    }
    let shutdown = rt.server.block_on(within(Phase::Shutdown, timeouts.shutdown, cluster.shutdown()));
    if let Err(e) = shutdown {
        // The numbers stand, but a node that does not stop may keep burning the server
        // runtime's CPU under the next measurement: say so.
        let note = format!("after the workload, {e}");
        measurement.failure = Some(match measurement.failure.take() {
            Some(f) => format!("{f}; {note}"),
            None => note,
        });
    }
    Ok(measurement)
}

/// What a timed memory run found.
struct MemoryRun {
    library: Library,
    scenario: Scenario,
    ops_per_sec: f64,
    accounting: Accounting,
    series: Vec<memory::MemorySample>,
    failure: Option<String>,
}

/// Start a cluster of `L` with snapshots on, hang a follower if `scenario` says so, and run
/// `clients` writers for `secs` seconds while a thread samples the heap every 100 ms.
fn memory_run<L: BenchCluster>(
    rt: &Runtimes,
    library: Library,
    scenario: Scenario,
    clients: usize,
    secs: u64,
    timeouts: PhaseTimeouts,
) -> Result<MemoryRun, PhaseError> {
    let baseline = alloc::live_bytes();
    let mut cluster = rt.server.block_on(L::start(timeouts.startup, ClusterOptions { snapshots: true }))?;
    let log_entry_bytes = cluster.log_entry_bytes();
    let accounting = Accounting { baseline, log_entry_bytes };
    let mut failure = None;
    if scenario == Scenario::HungFollower
        && let Err(e) = cluster.hang_follower()
    {
        failure = Some(e.to_string());
    }
    let duration = Duration::from_secs(secs);
    let sampler = Sampler::start(cluster.prober(), Duration::from_millis(100), duration)
        .map_err(|e| PhaseError::new(Phase::Workload, format_args!("cannot start the heap sampler: {e}")))?;
    let run = rt.client.block_on(workload::run_for(cluster.writer(), clients, duration, timeouts.shutdown));
    let series = sampler.stop();
    failure = failure.or(run.failure);
    if failure.is_none() {
        let verified = rt.server.block_on(within(
            Phase::Verify,
            timeouts.shutdown,
            cluster.verify(run.completed, timeouts.shutdown),
        ));
        failure = verified.err().map(|e| e.to_string());
    }
    if let Err(e) = rt.server.block_on(within(Phase::Shutdown, timeouts.shutdown, cluster.shutdown())) {
        failure.get_or_insert_with(|| format!("after the workload, {e}"));
    }
    let ops_per_sec = run.completed as f64 / run.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    Ok(MemoryRun { library, scenario, ops_per_sec, accounting, series, failure })
}

/// The memory runs: a summary table, then each run's series.
fn memory_markdown(runs: &[MemoryRun], clients: usize, row_every: usize) -> String {
    let mut out = format!(
        "Memory at {clients} clients, snapshots on (every 5000 entries, 1000 kept). *library share* = heap peak − heap before start-up − log stores (entries held × bytes per entry); *flatness* = max of the last quarter of the run ÷ max of the second quarter.\n\n"
    );
    out.push_str("| library | scenario | ops/s | log entry bytes | library share peak MiB | flatness | verified |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---|\n");
    for run in runs {
        let (peak, flat) = memory::flatness(&run.series, run.accounting);
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.1} | {} | {} |\n",
            run.library,
            run.scenario,
            run.ops_per_sec,
            run.accounting.log_entry_bytes,
            peak / (1024.0 * 1024.0),
            flat.map_or_else(|| "–".to_string(), |f| format!("{f:.2}")),
            run.failure.as_deref().map_or_else(|| "yes".to_string(), |f| format!("FAILED: {f}")),
        ));
    }
    for run in runs {
        out.push_str(&format!("\n{} {}, one row per {row_every} samples:\n\n", run.library, run.scenario));
        out.push_str(&memory::series_markdown(&run.series, run.accounting, row_every));
    }
    out
}

fn describe(sample: &Sample) -> String {
    let head = format!(
        "round {} {:>8} {:>13} × {:>4} clients:",
        sample.round, sample.library, sample.scenario, sample.clients
    );
    match &sample.outcome {
        Err(e) => format!("{head} {e}"),
        Ok(m) => {
            let mut line = format!(
                "{head} {:>9.0} ops/s  p50 {:>9.1} µs  p99 {:>9.1} µs  ({} writes in {:.2?})",
                m.ops_per_sec(),
                m.latency_us(0.50),
                m.latency_us(0.99),
                m.completed,
                m.elapsed
            );
            if let Some(f) = &m.failure {
                line.push_str(&format!("  FAILED: {f}"));
            }
            line
        }
    }
}

/// The first three fields of `/proc/loadavg`, where there is one.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3).then(|| fields.join(" "))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.no_alloc_count {
        alloc::disable();
    }
    // Both libraries log through `tracing`; say `RUST_LOG=quorate=debug` to see why a round
    // failed. Off by default: a subscriber would cost both libraries time on the hot path.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let ops = args.ops.unwrap_or(if args.quick { QUICK_OPS } else { DEFAULT_OPS });
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let scenarios = if !args.scenarios.is_empty() {
        args.scenarios.clone()
    } else if args.quick {
        vec![Scenario::Healthy, Scenario::HungFollower]
    } else {
        vec![Scenario::Healthy]
    };
    let memory_secs = if args.no_alloc_count { 0 } else { args.memory_secs.unwrap_or(if args.quick { 2 } else { 0 }) };
    let phase = Duration::from_secs(args.phase_timeout);
    let timeouts =
        PhaseTimeouts { startup: phase, workload: Duration::from_secs(args.workload_timeout), shutdown: phase };

    let rt = match (runtime("raft-server", args.server_workers), runtime("bench-client", args.client_workers)) {
        (Ok(server), Ok(client)) => Runtimes { server, client },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cannot build the tokio runtimes: {e}");
            return ExitCode::FAILURE;
        }
    };

    eprintln!(
        "cluster-bench: {ops} writes per measurement, clients {:?}, {rounds} round(s), scenarios {scenarios:?}, server workers {}, client workers {}, allocation counting {}",
        args.clients,
        args.server_workers,
        args.client_workers,
        if alloc::enabled() { "on" } else { "off" }
    );
    if alloc::enabled() {
        let (counted, plain) = alloc::overhead_ns(64, 1_000_000);
        eprintln!("allocator: 64-byte alloc+free {counted:.1} ns counted, {plain:.1} ns plain (one thread)");
    }
    let load_before = load_average();
    let mut samples = Vec::new();
    for round in 1..=rounds {
        for &clients in &args.clients {
            // Alternate libraries and scenarios at each client count so drift on the machine
            // hits all of them.
            for &library in &args.libs {
                for &scenario in &scenarios {
                    let outcome = match library {
                        Library::Quorate => measure::<QuorateCluster>(&rt, scenario, clients, ops, timeouts),
                        Library::Openraft => measure::<OpenraftCluster>(&rt, scenario, clients, ops, timeouts),
                    };
                    let sample = Sample { library, scenario, clients, round, outcome };
                    eprintln!("{}", describe(&sample));
                    samples.push(sample);
                }
            }
        }
    }

    let mut memory_runs = Vec::new();
    let mut memory_failed = false;
    let heaviest = args.clients.iter().copied().max().unwrap_or(1);
    if memory_secs > 0 {
        for &library in &args.libs {
            for &scenario in &scenarios {
                let run = match library {
                    Library::Quorate => {
                        memory_run::<QuorateCluster>(&rt, library, scenario, heaviest, memory_secs, timeouts)
                    }
                    Library::Openraft => {
                        memory_run::<OpenraftCluster>(&rt, library, scenario, heaviest, memory_secs, timeouts)
                    }
                };
                match run {
                    Ok(run) => {
                        let (peak, flat) = memory::flatness(&run.series, run.accounting);
                        eprintln!(
                            "memory {library} {scenario} × {heaviest} clients: {:.0} ops/s, library share peak {:.1} MiB, flatness {}{}",
                            run.ops_per_sec,
                            peak / (1024.0 * 1024.0),
                            flat.map_or_else(|| "–".to_string(), |f| format!("{f:.2}")),
                            run.failure.as_deref().map_or_else(String::new, |f| format!("  FAILED: {f}")),
                        );
                        memory_failed |= run.failure.is_some();
                        memory_runs.push(run);
                    }
                    Err(e) => {
                        eprintln!("memory {library} {scenario} × {heaviest} clients: {e}");
                        memory_failed = true;
                    }
                }
            }
        }
    }

    println!("\n{}", report::markdown(&samples, &args.clients));
    if scenarios.contains(&Scenario::HungFollower) && scenarios.contains(&Scenario::Healthy) {
        println!("{}", report::hung_markdown(&samples, &args.clients, &args.libs));
    }
    if !memory_runs.is_empty() {
        println!("{}", memory_markdown(&memory_runs, heaviest, args.memory_row_every));
    }
    // Other work on the machine shows up in every number; the load says how much there was.
    if let (Some(before), Some(after)) = (load_before, load_average()) {
        println!("Load average (1/5/15 min) before: {before}; after: {after}.");
    }
    if memory_failed || samples.iter().any(|s| s.failure().is_some()) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
