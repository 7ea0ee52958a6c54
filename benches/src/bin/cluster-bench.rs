//! `cluster-bench`: the same write workload on a three-node quorate cluster and a three-node
//! openraft cluster, measured alternately, reported as medians over rounds, in two tables:
//! **same settings** (both libraries' shared defaults) and **each tuned** (openraft as its own
//! benchmark configures it, quorate with its best settings), plus batch writes
//! (`client_write_many`) of 4 and 64 entries per call, and SVG charts with `--chart-dir`.
//!
//! With `--scenarios healthy,hung-follower` each library is also measured with one follower
//! that takes every RPC and never answers, alternating with the healthy cluster, and
//! `--memory-secs N` adds a timed run per library and scenario at the largest client count
//! that samples the heap (the binary installs a counting allocator) every 100 ms.
//!
//! ```text
//! cargo run -p quorate-bench --release --bin cluster-bench -- --quick
//! cargo run -p quorate-bench --release --bin cluster-bench -- --rounds 5 --chart-dir benches/charts
//! cargo run -p quorate-bench --release --bin cluster-bench -- --scenarios healthy,hung-follower --memory-secs 20
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use quorate_bench::alloc::{self, CountingAlloc};
use quorate_bench::chart::{self, Chart};
use quorate_bench::memory::{self, Accounting, Sampler};
use quorate_bench::openraft_cluster::OpenraftCluster;
use quorate_bench::plan::{self, PlanConfig, Step};
use quorate_bench::quorate_cluster::QuorateCluster;
use quorate_bench::report::{self, Library, Sample, Scenario};
use quorate_bench::tuning::{OPENRAFT_BENCHMARK_COMMIT, OpenraftTuning, QuorateTuning, Replication, Table, Tuning};
use quorate_bench::workload::{self, Load, Measurement};
use quorate_bench::{BenchCluster, Phase, PhaseError, PhaseTimeouts, Settings, within};
use tokio::runtime::{Builder, Runtime};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Total operations per measurement unless `--ops` says otherwise.
const DEFAULT_OPS: u64 = 500_000;
/// Total operations per measurement in `--quick` mode.
const QUICK_OPS: u64 = 20_000;

/// Benchmark quorate against openraft: 3 voters in one process, in-memory log, no-op state
/// machine, direct-call network; N client tasks doing sequential empty writes (or batches).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Client counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64, 256, 1024, 4096])]
    clients: Vec<usize>,

    /// Total writes per measurement, split across the clients; a batch measurement writes at
    /// least this many entries [default: 500000; 20000 with --quick].
    #[arg(long)]
    ops: Option<u64>,

    /// Tables to measure single writes for, comma-separated: `same` (both libraries with the
    /// same settings), `tuned` (each as it runs best).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Table::Same, Table::Tuned])]
    tables: Vec<Table>,

    /// Entries per `client_write_many` call of the batch measurements, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [4, 64])]
    batches: Vec<u64>,

    /// Measure no batches.
    #[arg(long)]
    no_batches: bool,

    /// Client counts of the batch measurements, comma-separated. Each client makes at least
    /// 8 calls.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 64, 256, 1024])]
    batch_clients: Vec<usize>,

    /// Tables to measure batches for, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Table::Tuned])]
    batch_tables: Vec<Table>,

    /// quorate's settings in the each-tuned table, as `key=value,...` over the defaults
    /// (max_payload_entries, max_append_batch, max_in_flight_requests, max_pending_requests,
    /// snapshots=N|never) [default: what measured best, see benches/README.md].
    #[arg(long)]
    quorate_tuned: Option<QuorateTuning>,

    /// How openraft replicates in the each-tuned table: `sequential` (one AppendEntries in
    /// flight, as openraft's own benchmark runs) or `pipelined` (as in the same-settings table).
    #[arg(long, value_enum, default_value_t = Replication::Sequential)]
    openraft_tuned_replication: Replication,

    /// Worker threads of the runtime openraft's nodes run on in the each-tuned table (its own
    /// benchmark's default is 16).
    #[arg(long, default_value_t = quorate_bench::tuning::openraft_benchmark::SERVER_WORKERS)]
    openraft_tuned_server_workers: usize,

    /// Write SVG charts of the tables into this directory (created if missing):
    /// `same-settings.svg`, `each-tuned.svg`, `batches-each-tuned.svg`, ...
    #[arg(long)]
    chart_dir: Option<PathBuf>,

    /// How many times to measure each (library, client count); the table shows medians
    /// [default: 3; 1 with --quick].
    #[arg(long)]
    rounds: Option<usize>,

    /// A short smoke run (20 000 writes, one round, short hung-follower and memory runs) that
    /// finishes well within a minute.
    #[arg(long)]
    quick: bool,

    /// Worker threads of the runtime the Raft nodes run on, with the same settings (each tuned
    /// library has its own: see --quorate-tuned and --openraft-tuned-server-workers).
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
    /// takes every RPC and never answers, from just after the election), with the same
    /// settings only. Scenarios alternate within each library and client count [default:
    /// healthy; healthy,hung-follower with --quick].
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

/// The runtimes of a run: the clients' one, and one for the nodes per worker count in use.
struct Runtimes {
    /// Worker count of the same-settings table (`--server-workers`).
    default_workers: usize,
    servers: BTreeMap<usize, Runtime>,
    client: Runtime,
}

impl Runtimes {
    /// A client runtime of `client_workers` and a server runtime for each of `server_workers`.
    fn new(default_workers: usize, server_workers: &[usize], client_workers: usize) -> std::io::Result<Self> {
        let mut servers = BTreeMap::new();
        for &w in server_workers.iter().chain([&default_workers]) {
            if let std::collections::btree_map::Entry::Vacant(slot) = servers.entry(w) {
                slot.insert(runtime(&format!("raft-server-{w}"), w)?);
            }
        }
        Ok(Self { default_workers, servers, client: runtime("bench-client", client_workers)? })
    }

    /// The runtime `library`'s nodes run on under `settings`.
    fn server(&self, library: Library, settings: Settings) -> &Runtime {
        let workers = settings.server_workers(library).unwrap_or(self.default_workers);
        // Every worker count in use was built in `new`; fall back to the default one anyway.
        self.servers.get(&workers).or_else(|| self.servers.values().next()).expect("at least one server runtime")
    }
}

fn runtime(name: &str, workers: usize) -> std::io::Result<Runtime> {
    Builder::new_multi_thread().worker_threads(workers.max(1)).thread_name(name).enable_all().build()
}

/// Start a cluster of `L` with `settings` on the server runtime, run `load` from the client
/// runtime, verify it replicated, shut the cluster down. Every phase is bounded by `timeouts`.
fn measure<L: BenchCluster>(
    rt: &Runtimes,
    library: Library,
    settings: Settings,
    scenario: Scenario,
    load: Load,
    timeouts: PhaseTimeouts,
) -> Result<Measurement, PhaseError> {
    let server = rt.server(library, settings);
    let mut cluster = server.block_on(L::start(timeouts.startup, settings))?;
    if scenario == Scenario::HungFollower
        && let Err(e) = cluster.hang_follower()
    {
        let _ = server.block_on(within(Phase::Shutdown, timeouts.shutdown, cluster.shutdown()));
        return Err(e);
    }
    let mut measurement = rt.client.block_on(workload::run(cluster.writer(), load, timeouts.workload));
    if measurement.failure.is_none() {
        // The verify phase shares the shutdown timeout: both only wait for a settled cluster.
        let verified = server.block_on(within(
            Phase::Verify,
            timeouts.shutdown,
            cluster.verify(measurement.completed, timeouts.shutdown),
        ));
        if let Err(e) = verified {
            measurement.failure = Some(e.to_string());
        }
    }
    let shutdown = server.block_on(within(Phase::Shutdown, timeouts.shutdown, cluster.shutdown()));
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
    let settings = Settings::Same { snapshots: true };
    let server = rt.server(library, settings);
    let mut cluster = server.block_on(L::start(timeouts.startup, settings))?;
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
        let verified =
            server.block_on(within(Phase::Verify, timeouts.shutdown, cluster.verify(run.completed, timeouts.shutdown)));
        failure = verified.err().map(|e| e.to_string());
    }
    if let Err(e) = server.block_on(within(Phase::Shutdown, timeouts.shutdown, cluster.shutdown())) {
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
        "round {} {:>8} {:>14} {:>13} batch {:>2} × {:>4} clients ({}):",
        sample.round,
        sample.library,
        sample.series.table,
        sample.series.scenario,
        sample.series.batch,
        sample.clients,
        sample.warmth()
    );
    match &sample.outcome {
        Err(e) => format!("{head} {e}"),
        Ok(m) => {
            let mut line = format!(
                "{head} {:>9.0} entries/s  p50 {:>9.1} µs  p99 {:>9.1} µs  ({} entries in {:.2?})",
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

/// Make every measurement of `steps`, in order, printing one line per measurement.
fn run_steps(rt: &Runtimes, steps: &[Step], tuning: Tuning, timeouts: PhaseTimeouts) -> Vec<Sample> {
    let mut samples = Vec::with_capacity(steps.len());
    for step in steps {
        let settings = Settings::of(step.series.table, tuning);
        let scenario = step.series.scenario;
        let outcome = match step.library {
            Library::Quorate => measure::<QuorateCluster>(rt, step.library, settings, scenario, step.load, timeouts),
            Library::Openraft => measure::<OpenraftCluster>(rt, step.library, settings, scenario, step.load, timeouts),
        };
        let sample = Sample {
            library: step.library,
            series: step.series,
            clients: step.load.clients,
            round: step.round,
            cold: step.cold,
            outcome,
        };
        eprintln!("{}", describe(&sample));
        samples.push(sample);
    }
    samples
}

/// The timed memory runs, one per library and scenario at `clients`; whether any failed.
fn run_memory(
    rt: &Runtimes,
    args: &Args,
    scenarios: &[Scenario],
    clients: usize,
    secs: u64,
    timeouts: PhaseTimeouts,
) -> (Vec<MemoryRun>, bool) {
    let mut runs = Vec::new();
    let mut failed = false;
    for &library in &args.libs {
        for &scenario in scenarios {
            let run = match library {
                Library::Quorate => memory_run::<QuorateCluster>(rt, library, scenario, clients, secs, timeouts),
                Library::Openraft => memory_run::<OpenraftCluster>(rt, library, scenario, clients, secs, timeouts),
            };
            match run {
                Ok(run) => {
                    let (peak, flat) = memory::flatness(&run.series, run.accounting);
                    eprintln!(
                        "memory {library} {scenario} × {clients} clients: {:.0} ops/s, library share peak {:.1} MiB, flatness {}{}",
                        run.ops_per_sec,
                        peak / (1024.0 * 1024.0),
                        flat.map_or_else(|| "–".to_string(), |f| format!("{f:.2}")),
                        run.failure.as_deref().map_or_else(String::new, |f| format!("  FAILED: {f}")),
                    );
                    failed |= run.failure.is_some();
                    runs.push(run);
                }
                Err(e) => {
                    eprintln!("memory {library} {scenario} × {clients} clients: {e}");
                    failed = true;
                }
            }
        }
    }
    (runs, failed)
}

/// Each library's settings under `settings`, one bullet per library measured;
/// `default_workers` is the worker count of the same-settings runtime.
fn settings_markdown(libraries: &[Library], settings: Settings, default_workers: usize) -> String {
    let mut out = String::new();
    for &library in libraries {
        let text = match library {
            Library::Quorate => QuorateCluster::describe(settings),
            Library::Openraft => OpenraftCluster::describe(settings),
        };
        let workers = settings.server_workers(library).unwrap_or(default_workers);
        out.push_str(&format!("- {library}: {text}; nodes on a tokio runtime of {workers} workers\n"));
    }
    out
}

/// The tables of the single writes and batches, each headed by the settings it ran with.
fn tables_markdown(samples: &[Sample], plan: &PlanConfig, tuning: Tuning, default_workers: usize) -> String {
    let mut out = String::new();
    for &table in &plan.tables {
        out.push_str(&format!("### {}\n\n", capitalized(table.title())));
        if table == Table::Tuned {
            out.push_str(&format!(
                "openraft as its own `benchmarks/minimal` configures it (read at commit {OPENRAFT_BENCHMARK_COMMIT}); \
                 quorate with `--quorate-tuned {}`.\n\n",
                tuning.quorate
            ));
        }
        out.push_str(&settings_markdown(&plan.libraries, Settings::of(table, tuning), default_workers));
        out.push('\n');
        out.push_str(&report::markdown(samples, &plan.clients, table));
        out.push('\n');
    }
    if plan.batches.is_empty() {
        return out;
    }
    for &table in &plan.batch_tables {
        out.push_str(&format!("### Batch writes, {}\n\n", table.title()));
        out.push_str(&settings_markdown(&plan.libraries, Settings::of(table, tuning), default_workers));
        out.push('\n');
        out.push_str(&report::batch_markdown(samples, &plan.batch_clients, &plan.batches, table));
        out.push('\n');
    }
    out
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |c| c.to_uppercase().chain(chars).collect())
}

/// Write one chart per table measured into `dir`; the paths written.
fn write_charts(dir: &Path, samples: &[Sample], plan: &PlanConfig) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut charts: Vec<(String, Chart)> = plan
        .tables
        .iter()
        .map(|&t| (format!("{}.svg", t.slug()), chart::table_chart(samples, &plan.clients, &plan.libraries, t)))
        .collect();
    if !plan.batches.is_empty() {
        for &t in &plan.batch_tables {
            let c = chart::batch_chart(samples, &plan.batch_clients, &plan.libraries, &plan.batches, t);
            charts.push((format!("batches-{}.svg", t.slug()), c));
        }
    }
    let mut written = Vec::new();
    for (name, c) in charts {
        let path = dir.join(name);
        chart::write_svg(&path, &c).map_err(|e| e.to_string())?;
        written.push(path);
    }
    Ok(written)
}

/// Every table of the run on stdout: single writes and batches per table, the hung follower,
/// cold and warm, failures, memory.
fn print_results(samples: &[Sample], plan: &PlanConfig, tuning: Tuning, args: &Args, memory_runs: &[MemoryRun]) {
    println!("\n{}", tables_markdown(samples, plan, tuning, args.server_workers));
    if plan.scenarios.contains(&Scenario::HungFollower)
        && plan.scenarios.contains(&Scenario::Healthy)
        && plan.tables.contains(&Table::Same)
    {
        println!(
            "### Hung follower (same settings)\n\n{}",
            report::hung_markdown(samples, &plan.clients, &plan.libraries)
        );
    }
    println!("### Cold and warm\n\n{}", report::cold_markdown(samples));
    let failures = report::failures_markdown(samples);
    if !failures.is_empty() {
        println!("{failures}");
    }
    if !memory_runs.is_empty() {
        let heaviest = plan.clients.iter().copied().max().unwrap_or(1);
        println!("{}", memory_markdown(memory_runs, heaviest, args.memory_row_every));
    }
}

/// What `args` ask to measure, with `--quick`'s defaults filled in.
fn plan_config(args: &Args) -> PlanConfig {
    let scenarios = if !args.scenarios.is_empty() {
        args.scenarios.clone()
    } else if args.quick {
        vec![Scenario::Healthy, Scenario::HungFollower]
    } else {
        vec![Scenario::Healthy]
    };
    PlanConfig {
        rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        clients: args.clients.clone(),
        ops: args.ops.unwrap_or(if args.quick { QUICK_OPS } else { DEFAULT_OPS }),
        tables: args.tables.clone(),
        libraries: args.libs.clone(),
        scenarios,
        batches: if args.no_batches { Vec::new() } else { args.batches.iter().copied().filter(|b| *b > 1).collect() },
        batch_clients: args.batch_clients.clone(),
        batch_tables: args.batch_tables.clone(),
    }
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
    let plan = plan_config(&args);
    let tuning = Tuning {
        quorate: args.quorate_tuned.unwrap_or_default(),
        openraft: OpenraftTuning {
            replication: args.openraft_tuned_replication,
            server_workers: args.openraft_tuned_server_workers,
        },
    };
    let memory_secs = if args.no_alloc_count { 0 } else { args.memory_secs.unwrap_or(if args.quick { 2 } else { 0 }) };
    let phase = Duration::from_secs(args.phase_timeout);
    let timeouts =
        PhaseTimeouts { startup: phase, workload: Duration::from_secs(args.workload_timeout), shutdown: phase };

    let tuned_workers = if plan.tables.contains(&Table::Tuned) || plan.batch_tables.contains(&Table::Tuned) {
        vec![tuning.quorate.server_workers, tuning.openraft.server_workers]
    } else {
        Vec::new()
    };
    let rt = match Runtimes::new(args.server_workers, &tuned_workers, args.client_workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot build the tokio runtimes: {e}");
            return ExitCode::FAILURE;
        }
    };

    let steps = plan::plan(&plan);
    eprintln!(
        "cluster-bench: {} writes per measurement, clients {:?}, tables {:?}, batches {:?} at clients {:?} ({:?}), {} round(s), scenarios {:?}, {} measurements, server workers {}, client workers {}, allocation counting {}",
        plan.ops,
        plan.clients,
        plan.tables,
        plan.batches,
        plan.batch_clients,
        plan.batch_tables,
        plan.rounds,
        plan.scenarios,
        steps.len(),
        args.server_workers,
        args.client_workers,
        if alloc::enabled() { "on" } else { "off" }
    );
    if alloc::enabled() {
        let (counted, plain) = alloc::overhead_ns(64, 1_000_000);
        eprintln!("allocator: 64-byte alloc+free {counted:.1} ns counted, {plain:.1} ns plain (one thread)");
    }
    let load_before = load_average();
    let samples = run_steps(&rt, &steps, tuning, timeouts);

    let heaviest = plan.clients.iter().copied().max().unwrap_or(1);
    let (memory_runs, memory_failed) = if memory_secs > 0 {
        run_memory(&rt, &args, &plan.scenarios, heaviest, memory_secs, timeouts)
    } else {
        (Vec::new(), false)
    };

    print_results(&samples, &plan, tuning, &args, &memory_runs);
    // Other work on the machine shows up in every number; the load says how much there was.
    if let (Some(before), Some(after)) = (load_before, load_average()) {
        println!("Load average (1/5/15 min) before: {before}; after: {after}.");
    }
    let mut chart_failed = false;
    if let Some(dir) = &args.chart_dir {
        match write_charts(dir, &samples, &plan) {
            Ok(paths) => {
                for p in paths {
                    eprintln!("chart: {}", p.display());
                }
            }
            Err(e) => {
                eprintln!("{e}");
                chart_failed = true;
            }
        }
    }
    if memory_failed || chart_failed || samples.iter().any(|s| s.failure().is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
