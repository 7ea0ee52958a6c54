//! Deterministic simulation: seeded clusters under seeded faults, with Raft's safety
//! properties checked throughout and client histories recorded.
//!
//! Every run executes on one thread with tokio's paused clock, and every random choice (the
//! cluster, the faults, the clients, the network's losses, the nodes' election timeouts and
//! clock rates) comes from the seed, so a seed replays exactly. `cargo test` runs a bounded
//! number of seeds;
//! `SIM_SEEDS=N cargo test --release --features testing --test sim soak -- --ignored --nocapture`
//! runs many and prints a report.
//!
//! The multi-group mode (`groups.rs`) runs many Raft groups on a few `GroupHost`s with
//! quiescence on: `groups_seeds_pass` in CI, `groups_soak` and `replay_groups_seed` on demand
//! (`SIM_GROUPS` groups, default 50 in the soak).

mod bursts;
mod clients;
mod cluster;
mod crashes;
mod group_life;
mod groups;
mod groups_nemesis;
mod harness;
mod nemesis;
mod report;

use std::time::Duration;

use groups::{GroupsOptions, GroupsReport, groups_replay_command, run_groups_seed};
use harness::{ClockSkew, SimOptions, SimReport, replay_command, run_seed, run_seed_threaded};

/// Virtual time each seed runs for.
const RUN: Duration = Duration::from_secs(10);

/// The options of every test but the on-demand ones, whatever the environment says.
fn default_options() -> SimOptions {
    SimOptions::new(RUN)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn assert_clean(r: &SimReport) {
    assert!(
        r.violations.is_empty(),
        "seed {} found violations:\n{}\nreplay: {}",
        r.seed,
        r.violations.join("\n"),
        replay_command(r.seed)
    );
}

/// A bounded number of seeds for CI (`SIM_CI_SEEDS`, default 8). Every seed runs; the
/// failures are reported together.
#[test]
fn seeds_pass() {
    let seeds = env_u64("SIM_CI_SEEDS").unwrap_or(8);
    let mut failures = Vec::new();
    for seed in 0..seeds {
        let r = run_seed(seed, default_options());
        assert!(!r.history.is_empty(), "seed {seed}: clients completed operations");
        assert!(!r.leaders.is_empty(), "seed {seed}: a leader was elected");
        if !r.violations.is_empty() {
            failures.push(format!("seed {seed}:\n{}\nreplay: {}", r.violations.join("\n"), replay_command(seed)));
        }
    }
    assert!(failures.is_empty(), "{} of {seeds} seeds found violations:\n{}", failures.len(), failures.join("\n"));
}

/// Seeds that found bugs, kept as regression tests: `(seed, fault kinds left out)`.
///
/// Issue #15 (found by the extended simulator on the code before its fixes; these fail until
/// the fixes land):
/// - 10 (#15 finding 2): a leader cut off in the instant a burst of reads arrived, another
///   node forced to campaign; the old leader served a lease (follower) read older than a write
///   the new leader had acknowledged.
/// - 83 (#15 finding 4): a node crashed right after installing a snapshot, before the
///   truncation of its own uncommitted tail was durable; after the restart its store held the
///   old tail the Engine did not see, rejected the next append, and the node stopped.
/// - 1128 (#15 finding 5's symptom): a leader restarted with its log purged up to what its
///   state machine applied, past its last snapshot; a follower ignored that older snapshot
///   and never caught up while the leader sent it again and again (replication spinning, no
///   convergence).
/// - 4768 (#15 finding 3b): a leader cut off in the instant reads arrived confirmed a
///   ReadIndex by the answer to a heartbeat sent in that same instant, and returned a value
///   older than a write the new leader had acknowledged in that instant.
/// - 100081 (found by the 10,000-seed soak of issue #15, in its own fixes): after a snapshot
///   install that truncated the log, the leader's probe was answered only once "all accepted
///   I/O" was flushed, which included the truncation, which no append followed: the answer
///   waited for an append that only the answer could bring, and the follower was lost.
///
/// Before issue #15 the simulator's schedules were different: 1103 (the cluster did not
/// converge after healing) no longer replays its old run, and is kept as one more seed.
#[test]
fn regression_seeds() {
    let seeds: [(u64, &[&str]); 6] = [(10, &[]), (83, &[]), (1128, &[]), (4768, &[]), (100081, &[]), (1103, &[])];
    let mut failures = Vec::new();
    for (seed, exclude) in seeds {
        let options =
            SimOptions { exclude_faults: exclude.iter().map(|k| k.to_string()).collect(), ..default_options() };
        let r = run_seed(seed, options);
        if !r.violations.is_empty() {
            let exclude =
                if exclude.is_empty() { String::new() } else { format!("SIM_EXCLUDE_FAULTS={} ", exclude.join(",")) };
            failures.push(format!(
                "seed {seed}:\n{}\nreplay: {exclude}{}",
                r.violations.join("\n"),
                replay_command(seed)
            ));
        }
    }
    assert!(failures.is_empty(), "{} regression seeds found violations:\n{}", failures.len(), failures.join("\n"));
}

/// The same seed gives the same run, down to every operation and fault.
#[test]
fn same_seed_same_trace() {
    let a = run_seed(42, default_options());
    let b = run_seed(42, default_options());
    assert_eq!(a.history.len(), b.history.len());
    assert_eq!(a.faults, b.faults);
    assert_eq!(a.trace_hash, b.trace_hash, "seed 42 is not reproducible");
}

/// Replay one seed: `SIM_SEED=<seed>` (`SIM_RUN_MS`, `SIM_CLOCK_SKEW=excess`,
/// `SIM_EXCLUDE_FAULTS`, `SIM_PRINT_HISTORY=1` as wanted).
#[test]
#[ignore = "run on demand with SIM_SEED"]
fn replay_one_seed() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .with_ansi(false)
        .with_timer(VirtualTime)
        .try_init();
    let seed = env_u64("SIM_SEED").unwrap_or(0);
    let duration = env_u64("SIM_RUN_MS").map_or(RUN, Duration::from_millis);
    let r = run_seed(seed, SimOptions::from_env(duration));
    if std::env::var("SIM_PRINT_HISTORY").is_ok() {
        for op in &r.history {
            println!("  op {op:?}");
        }
    }
    println!(
        "seed {seed}: {} nodes, {} ops, {} faults, leaders {:?}, trace {:016x}",
        r.nodes,
        r.history.len(),
        r.faults.len(),
        r.leaders,
        r.trace_hash
    );
    for (at, f) in &r.faults {
        println!("  fault at {at} ms: {f:?}");
    }
    assert_clean(&r);
}

/// Log lines stamped with the simulation's virtual time (ms since the first line).
struct VirtualTime;

impl tracing_subscriber::fmt::time::FormatTime for VirtualTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
        // Outside a runtime there is no virtual clock to read.
        if tokio::runtime::Handle::try_current().is_err() {
            return write!(w, "-");
        }
        let start = *START.get_or_init(tokio::time::Instant::now);
        write!(w, "{:>9.3}", tokio::time::Instant::now().duration_since(start).as_secs_f64() * 1000.0)
    }
}

/// Many seeds: `SIM_SEEDS=<n>` (default 200) from `SIM_FIRST_SEED` (default 1000); two
/// processes split a range by their first seeds. `SIM_CLOCK_SKEW=excess` opts in to clocks
/// drifting past the lease's bound. Prints ops and faults by kind, violations and time.
#[test]
#[ignore = "soak: run on demand"]
fn soak() {
    let n = env_u64("SIM_SEEDS").unwrap_or(200);
    let first = env_u64("SIM_FIRST_SEED").unwrap_or(1000);
    run_seeds(first, n, SimOptions::from_env(RUN), run_seed, |seed| format!("replay: {}", replay_command(seed)));
}

/// Run seeds `first..first + n` with `run`, print each failing seed's violations (and
/// `replay`'s line) and the totals, and fail if any seed found a violation.
fn run_seeds(
    first: u64,
    n: u64,
    options: SimOptions,
    run: fn(u64, SimOptions) -> SimReport,
    replay: impl Fn(u64) -> String,
) {
    let mut totals = report::Totals::default();
    let started = std::time::Instant::now();
    for seed in first..first + n {
        let r = run(seed, options.clone());
        if !r.violations.is_empty() {
            println!(
                "seed {seed}: {} violation(s)\n  {}\n  {}",
                r.violations.len(),
                r.violations.join("\n  "),
                replay(seed)
            );
        }
        totals.add(&r);
    }
    println!("{}", totals.summary(first, n, &options, started.elapsed()));
    assert!(totals.failed.is_empty(), "violations in seeds {:?}", totals.failed);
}

/// Many seeds on worker threads and the real clock (see `run_seed_threaded`):
/// `SIM_SEEDS=<n>` (default 20) from `SIM_FIRST_SEED` (default 1000), `SIM_SECS` of faults and
/// clients each (default 5). A failing seed does not replay: its violations are the evidence.
#[test]
#[ignore = "soak: run on demand"]
fn threads_soak() {
    let n = env_u64("SIM_SEEDS").unwrap_or(20);
    let first = env_u64("SIM_FIRST_SEED").unwrap_or(1000);
    let options = SimOptions::from_env(Duration::from_secs(env_u64("SIM_SECS").unwrap_or(5)));
    run_seeds(first, n, options, run_seed_threaded, |_| "threaded: does not replay".to_string());
}

/// Clocks drifting far past `Config::max_clock_drift` break lease reads: the checker must see
/// it in some seed. Shows that the simulation can fail on lease reads, not only pass. Forced
/// elections and transfers (which end a lease by design) and crashes after a snapshot install
/// are left out, so a stale read here is the clocks' doing; within the bound the same seeds
/// pass.
#[test]
#[ignore = "opt-in: expected to find stale lease reads"]
fn excess_clock_skew_is_caught() {
    let n = env_u64("SIM_SEEDS").unwrap_or(200);
    let first = env_u64("SIM_FIRST_SEED").unwrap_or(5000);
    let exclude_faults = ["elect", "transfer", "crash-after-install"].map(String::from).to_vec();
    let options = SimOptions { duration: RUN, clock_skew: ClockSkew::Excess, exclude_faults };
    let stale: Vec<u64> = (first..first + n)
        .filter(|seed| run_seed(*seed, options.clone()).violations.iter().any(|v| v.contains("not linearizable")))
        .collect();
    println!("excess clock skew: stale reads in {} of {n} seeds: {stale:?}", stale.len());
    assert!(!stale.is_empty(), "no seed caught clocks drifting past the lease's bound");
}

/// Virtual time each multi-group seed runs for.
const GROUPS_RUN: Duration = Duration::from_secs(10);

/// The options of a multi-group run of `groups` groups: `SIM_EXCLUDE_FAULTS` as set.
fn groups_options(groups: usize) -> GroupsOptions {
    let exclude_faults = SimOptions::from_env(GROUPS_RUN).exclude_faults;
    GroupsOptions { duration: GROUPS_RUN, groups, exclude_faults }
}

fn groups_failure(r: &GroupsReport) -> Option<String> {
    (!r.violations.is_empty())
        .then(|| format!("seed {}:\n{}\nreplay: {}", r.seed, r.violations.join("\n"), groups_replay_command(r.seed)))
}

/// Many groups on 3–5 hosts under node and group faults, for CI: `SIM_CI_GROUP_SEEDS` seeds
/// (default 8) of `SIM_CI_GROUPS` groups (default 20). Every group's history is linearizable,
/// its invariants hold, groups really quiesce and wake, and settled groups serve reads and
/// writes.
#[test]
fn groups_seeds_pass() {
    let seeds = env_u64("SIM_CI_GROUP_SEEDS").unwrap_or(8);
    let groups = env_u64("SIM_CI_GROUPS").unwrap_or(20) as usize;
    let mut failures = Vec::new();
    for seed in 0..seeds {
        let r = run_groups_seed(seed, GroupsOptions { groups, ..groups_options(groups) });
        let ops: usize = r.histories.iter().map(Vec::len).sum();
        assert!(ops > 0, "seed {seed}: clients completed operations");
        assert!(r.elections >= groups as u64, "seed {seed}: every group elected a leader");
        assert!(r.quiesces > 0 && r.wakes > 0, "seed {seed}: groups quiesced ({}) and woke ({})", r.quiesces, r.wakes);
        failures.extend(groups_failure(&r));
    }
    assert!(failures.is_empty(), "{} of {seeds} seeds found violations:\n{}", failures.len(), failures.join("\n"));
}

/// The same multi-group seed gives the same run, groups created and removed at run time
/// included.
#[test]
fn groups_same_seed_same_trace() {
    let a = run_groups_seed(7, groups_options(10));
    let b = run_groups_seed(7, groups_options(10));
    assert_eq!(a.faults, b.faults);
    assert_eq!(a.trace_hash, b.trace_hash, "multi-group seed 7 is not reproducible");
}

/// Replay one multi-group seed: `SIM_SEED=<seed>` (`SIM_GROUPS`, `SIM_EXCLUDE_FAULTS`,
/// `SIM_PRINT_HISTORY=1` as wanted).
#[test]
#[ignore = "run on demand with SIM_SEED"]
fn replay_groups_seed() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .with_ansi(false)
        .with_timer(VirtualTime)
        .try_init();
    let seed = env_u64("SIM_SEED").unwrap_or(0);
    let groups = env_u64("SIM_GROUPS").unwrap_or(50) as usize;
    let r = run_groups_seed(seed, groups_options(groups));
    if std::env::var("SIM_PRINT_HISTORY").is_ok() {
        for (g, h) in r.histories.iter().enumerate() {
            for op in h {
                println!("  group {g} op {op:?}");
            }
        }
    }
    let ops: usize = r.histories.iter().map(Vec::len).sum();
    println!(
        "seed {seed}: {} nodes, {groups} groups, {ops} ops, {} faults, {} elections, quiesced {}, woke {}, awake at end {}, trace {:016x}",
        r.nodes,
        r.faults.len(),
        r.elections,
        r.quiesces,
        r.wakes,
        r.awake_at_end.len(),
        r.trace_hash
    );
    for a in &r.awake_at_end {
        println!("  awake at end: {a}");
    }
    for (at, f) in &r.faults {
        println!("  fault at {at} ms: {f:?}");
    }
    assert!(groups_failure(&r).is_none(), "{}", groups_failure(&r).unwrap_or_default());
}

/// Many multi-group seeds: `SIM_SEEDS=<n>` (default 200) from `SIM_FIRST_SEED` (default
/// 1000), `SIM_GROUPS` groups each (default 50). Prints ops, faults by kind, quiesce and wake
/// counts, elections, violations and time.
#[test]
#[ignore = "soak: run on demand"]
fn groups_soak() {
    let n = env_u64("SIM_SEEDS").unwrap_or(200);
    let first = env_u64("SIM_FIRST_SEED").unwrap_or(1000);
    let groups = env_u64("SIM_GROUPS").unwrap_or(50) as usize;
    let options = groups_options(groups);
    let mut totals = report::Totals::default();
    let started = std::time::Instant::now();
    for seed in first..first + n {
        let r = run_groups_seed(seed, options.clone());
        if let Some(f) = groups_failure(&r) {
            println!("{f}");
        }
        totals.add_groups(&r);
    }
    let setup = format!("{groups} groups per seed, faults left out {:?}", options.exclude_faults);
    println!("{}", totals.summary_of(first, n, &setup, started.elapsed()));
    assert!(totals.failed.is_empty(), "violations in seeds {:?}", totals.failed);
}
