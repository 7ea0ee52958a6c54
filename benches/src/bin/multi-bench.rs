//! `multi-bench`: 3 nodes × N Raft groups in one process, on quorate's `GroupHost` and the
//! in-memory `HostRouter`: idle cost (CPU, memory, messages) with and without quiescence,
//! write throughput spread over every group against all on one group, and re-election after a
//! node is killed. See "Many groups (multi-bench)" in `benches/README.md`.
//!
//! ```text
//! cargo run -p quorate-bench --release --bin multi-bench
//! cargo run -p quorate-bench --release --bin multi-bench -- --groups 1,100 --no-quiesce-groups 1 --shared-log-groups ""
//! ```
//!
//! Every run (one group count, one setting) is a child process of its own (`--child`), so
//! that the resident set each one reports grows from a clean baseline.

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use quorate_bench::alloc::CountingAlloc;
use quorate_bench::multi::{self, Outcome, Plan, process, report};
use tokio::runtime::Builder;

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// The line prefix under which a child prints its outcome.
const OUTCOME: &str = "MULTI-BENCH-OUTCOME ";

/// Measure 3 nodes × N Raft groups in one process: idle cost, write throughput, failover.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Group counts to measure with quiescence on: idle, writes, failover (given with no
    /// value: none).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_values_t = [1, 100, 1000, 10000])]
    groups: Vec<u64>,

    /// Group counts to measure idle with quiescence off, for contrast (given with no value: none).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_values_t = [1, 100, 1000])]
    no_quiesce_groups: Vec<u64>,

    /// Group counts to measure idle cost and writes on with one `SharedLog` file stream per
    /// node, the log store a host of many groups is meant to run on (empty: none).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_values_t = [1, 1000, 10000])]
    shared_log_groups: Vec<u64>,

    /// Where the shared logs go (a directory per run, removed afterwards); must be a real
    /// disk, not tmpfs, for the fsyncs to mean anything.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    shared_log_dir: PathBuf,

    /// Idle windows per run (the table shows their median).
    #[arg(long, default_value_t = 3)]
    idle_rounds: u32,

    /// Seconds per idle window.
    #[arg(long, default_value_t = 5.0)]
    idle_secs: f64,

    /// Write rounds per run; each measures spread, then one group (order flipped every round).
    #[arg(long, default_value_t = 3)]
    write_rounds: u32,

    /// Concurrent writers.
    #[arg(long, default_value_t = 256)]
    writers: u64,

    /// Seconds per write measurement.
    #[arg(long, default_value_t = 2.0)]
    write_secs: f64,

    /// Nodes killed per run, one after another (each restarted before the next).
    #[arg(long, default_value_t = 3)]
    failover_rounds: u32,

    /// Groups initialized at a time while a cluster is brought up: each batch elects, writes
    /// and quiesces before the next one starts.
    #[arg(long, default_value_t = 100)]
    bring_up_batch: u64,

    /// Seconds any wait (elections, quiescence, a re-election) may take before the run gives up.
    #[arg(long, default_value_t = 60.0)]
    limit_secs: f64,

    /// The groups' election timeout in ms, `MIN,MAX` (quorate's default: 150,300). Many
    /// groups on few cores want longer ones; the failover goal is twice the maximum.
    #[arg(long, value_delimiter = ',', num_args = 1, default_values_t = [150, 300])]
    election_timeout: Vec<u64>,

    /// Worker threads of the nodes' runtime.
    #[arg(long, default_value_t = 2)]
    server_workers: usize,

    /// Worker threads of the writers' and watchers' runtime.
    #[arg(long, default_value_t = 1)]
    client_workers: usize,

    /// Run one plan (JSON) and print its outcome: how the parent runs each measurement.
    #[arg(long, hide = true)]
    child: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(plan) = &args.child {
        return child(&args, plan);
    }
    let started = Instant::now();
    let plans = plans(&args);
    eprintln!("multi-bench: {} runs, load average {}", plans.len(), process::load_average().unwrap_or_default());
    let outcomes: Vec<Outcome> = plans.iter().map(|plan| run_child(&args, plan)).collect();
    print_report(&args, &outcomes, started.elapsed());
    if outcomes.iter().any(|o| o.error.is_some()) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Every run of the default command: quiescence on at each group count (everything), off
/// (idle only), shared logs (idle and writes).
fn plans(args: &Args) -> Vec<Plan> {
    let base = Plan {
        groups: 0,
        quiesce: true,
        shared_log_dir: None,
        idle_rounds: args.idle_rounds,
        idle_window: Duration::from_secs_f64(args.idle_secs),
        write_rounds: args.write_rounds,
        writers: args.writers,
        write_window: Duration::from_secs_f64(args.write_secs),
        failover_rounds: args.failover_rounds,
        bring_up_batch: args.bring_up_batch,
        limit: Duration::from_secs_f64(args.limit_secs),
        election_timeout_ms: match args.election_timeout[..] {
            [min, max] if min < max => (min, max),
            _ => {
                eprintln!("multi-bench: --election-timeout takes MIN,MAX with MIN < MAX; using 150,300");
                multi::default_election_timeout()
            }
        },
    };
    let mut plans: Vec<Plan> = args.groups.iter().map(|n| Plan { groups: *n, ..base.clone() }).collect();
    plans.extend(args.no_quiesce_groups.iter().map(|n| Plan {
        groups: *n,
        quiesce: false,
        failover_rounds: 0,
        ..base.clone()
    }));
    plans.extend(args.shared_log_groups.iter().map(|n| Plan {
        groups: *n,
        shared_log_dir: Some(args.shared_log_dir.join(format!("multi-bench-{}-{n}", std::process::id()))),
        failover_rounds: 0,
        ..base.clone()
    }));
    plans
}

/// Run `plan` in a child process and read its outcome.
fn run_child(args: &Args, plan: &Plan) -> Outcome {
    let failed = |e: String| Outcome {
        groups: plan.groups,
        quiesce: plan.quiesce,
        shared_log: plan.shared_log_dir.is_some(),
        error: Some(e),
        ..Default::default()
    };
    let Ok(exe) = std::env::current_exe() else { return failed("cannot find this executable".into()) };
    let json = serde_json::to_string(plan).unwrap_or_default();
    let output = Command::new(exe)
        .args(["--server-workers", &args.server_workers.to_string()])
        .args(["--client-workers", &args.client_workers.to_string()])
        .args(["--child", &json])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) => return failed(format!("child did not start: {e}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix(OUTCOME)) {
        Some(line) => serde_json::from_str(line).unwrap_or_else(|e| failed(format!("unreadable outcome: {e}"))),
        None => failed(format!("child ended ({}) without an outcome", output.status)),
    }
}

/// The child: carry out one plan on fresh runtimes and print the outcome.
fn child(args: &Args, plan: &str) -> ExitCode {
    {
        use tracing_subscriber::prelude::*;
        // The failover diagnosis counts the Engine's election events (and formats none).
        let counter = quorate_bench::multi::election_count::layer();
        if std::env::var_os("RUST_LOG").is_some() {
            // Diagnosis only (e.g. RUST_LOG=quorate::multi=info shows every suspicion and wake-up).
            let log = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(tracing_subscriber::EnvFilter::from_default_env());
            tracing_subscriber::registry().with(counter).with(log).init();
        } else {
            // Not an absent `Option` layer: it would declare an interest in every callsite, and
            // every span and debug event of every group would be built for nothing.
            tracing_subscriber::registry().with(counter).init();
        }
    }
    let plan: Plan = match serde_json::from_str(plan) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("multi-bench: bad plan: {e}");
            return ExitCode::FAILURE;
        }
    };
    let build = |workers: usize, name: &str| {
        Builder::new_multi_thread().worker_threads(workers).thread_name(name).enable_all().build()
    };
    let (Ok(nodes), Ok(clients)) = (build(args.server_workers, "nodes"), build(args.client_workers, "clients")) else {
        eprintln!("multi-bench: cannot build the runtimes");
        return ExitCode::FAILURE;
    };
    let outcome = nodes.block_on(multi::run(&plan, clients.handle()));
    println!("{OUTCOME}{}", serde_json::to_string(&outcome).unwrap_or_default());
    // Whatever a failed run left running must not hold the process up.
    nodes.shutdown_timeout(Duration::from_secs(1));
    clients.shutdown_timeout(Duration::from_secs(1));
    ExitCode::SUCCESS
}

fn print_report(args: &Args, outcomes: &[Outcome], elapsed: Duration) {
    println!("## multi-bench: 3 nodes × N groups, one process\n");
    println!(
        "{} writers, {} s per write measurement, {} write rounds; {} idle windows of {} s; {} kills per run; \
         nodes on {} workers, writers on {}; total {:.0} s\n",
        args.writers,
        args.write_secs,
        args.write_rounds,
        args.idle_rounds,
        args.idle_secs,
        args.failover_rounds,
        args.server_workers,
        args.client_workers,
        elapsed.as_secs_f64()
    );
    println!("### Idle\n\n{}", report::idle_table(outcomes));
    println!("### Writes, memory stores\n\n{}", report::write_table(outcomes, false));
    if outcomes.iter().any(|o| o.shared_log) {
        println!("### Writes, one SharedLog per node\n\n{}", report::write_table(outcomes, true));
    }
    println!("### Failover\n\n{}", report::failover_table(outcomes));
    println!("### Failover, where the time went\n\n{}", report::failover_diagnosis(outcomes));
    println!("### Goals\n\n{}", report::verdicts(outcomes));
    println!("### Runs\n\n{}", report::notes(outcomes));
}
