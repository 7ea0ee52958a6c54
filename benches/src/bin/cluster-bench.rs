//! `cluster-bench`: the same write workload on a three-node quorate cluster and a three-node
//! openraft cluster, measured alternately, reported as medians over rounds.
//!
//! ```text
//! cargo run -p quorate-bench --release --bin cluster-bench -- --quick
//! cargo run -p quorate-bench --release --bin cluster-bench -- --clients 1,64,256,1024,4096 --ops 500000 --rounds 3
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use quorate_bench::openraft_cluster::OpenraftCluster;
use quorate_bench::quorate_cluster::QuorateCluster;
use quorate_bench::report::{self, Library, Sample};
use quorate_bench::workload::{self, Measurement};
use quorate_bench::{BenchCluster, Phase, PhaseError, PhaseTimeouts, within};
use tokio::runtime::{Builder, Runtime};

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
    clients: usize,
    ops: u64,
    timeouts: PhaseTimeouts,
) -> Result<Measurement, PhaseError> {
    let cluster = rt.server.block_on(L::start(timeouts.startup))?;
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

fn describe(sample: &Sample) -> String {
    let head = format!("round {} {:>8} × {:>4} clients:", sample.round, sample.library, sample.clients);
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
        "cluster-bench: {ops} writes per measurement, clients {:?}, {rounds} round(s), server workers {}, client workers {}",
        args.clients, args.server_workers, args.client_workers
    );
    let load_before = load_average();
    let mut samples = Vec::new();
    for round in 1..=rounds {
        for &clients in &args.clients {
            // Alternate libraries at each client count so drift on the machine hits both.
            for &library in &args.libs {
                let outcome = match library {
                    Library::Quorate => measure::<QuorateCluster>(&rt, clients, ops, timeouts),
                    Library::Openraft => measure::<OpenraftCluster>(&rt, clients, ops, timeouts),
                };
                let sample = Sample { library, clients, round, outcome };
                eprintln!("{}", describe(&sample));
                samples.push(sample);
            }
        }
    }

    println!("\n{}", report::markdown(&samples, &args.clients));
    // Other work on the machine shows up in every number; the load says how much there was.
    if let (Some(before), Some(after)) = (load_before, load_average()) {
        println!("Load average (1/5/15 min) before: {before}; after: {after}.");
    }
    if samples.iter().any(|s| s.failure().is_some()) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
