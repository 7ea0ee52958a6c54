//! The outcomes of `multi-bench`'s runs as markdown tables, with the goals checked.

use std::fmt::Write as _;

use super::Outcome;
use super::writes::Target;

/// The goals of issue #19 that the tables are checked against.
pub mod goals {
    /// Idle CPU of 10,000 groups on three nodes, in % of one core.
    pub const IDLE_CPU_PERCENT: f64 = 5.0;
    /// Memory per idle group on one node (resident set growth / 3N), in bytes.
    pub const BYTES_PER_GROUP: f64 = 10.0 * 1024.0;
    /// p99 of the time to re-elect an orphaned group, in maximum election timeouts.
    pub const REELECT_P99_TIMEOUTS: f64 = 2.0;
}

/// The median of `values` (the mean of the middle two for an even count); NaN if empty.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 }
}

/// The `p`-th percentile of sorted `values`, nearest rank; NaN if empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn kib(bytes: f64) -> String {
    format!("{:.1}", bytes / 1024.0)
}

fn thousands(x: f64) -> String {
    if x.is_nan() {
        return "–".into();
    }
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The idle table: one row per run that measured idle windows.
pub fn idle_table(outcomes: &[Outcome]) -> String {
    let mut t = String::from(
        "| groups | quiesce | log store | set-up s | CPU % of a core | RSS KiB per group per node | heap KiB per group per node | RPC/s 1↔2 | beats/s 1↔2 | elections while idle |\n\
         |---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for o in outcomes.iter().filter(|o| !o.idle.is_empty()) {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.1} | {:.2} | {} | {} | {} | {:.0} | {} |",
            thousands(o.groups as f64),
            if o.quiesce { "on" } else { "off" },
            if o.shared_log { "shared log" } else { "memory" },
            o.setup_secs,
            median(o.idle.iter().map(|w| w.cpu_percent())),
            kib(o.rss_per_replica()),
            kib(o.heap_per_replica()),
            thousands(median(o.idle.iter().map(|w| w.rpcs_per_sec()))),
            median(o.idle.iter().map(|w| w.beats_per_sec())),
            o.idle.iter().map(|w| w.elections).sum::<u64>(),
        );
    }
    t
}

fn write_median(o: &Outcome, target: Target) -> f64 {
    median(o.writes.iter().filter(|w| w.target == target).map(|w| w.run.ops_per_sec()))
}

/// The write table: spread against one group, per run that wrote.
pub fn write_table(outcomes: &[Outcome], shared_log: bool) -> String {
    let mut t = String::from(if shared_log {
        "| groups | spread ops/s | one group ops/s | spread ÷ one | fsyncs/s spread | entries per fsync spread | fsyncs/s one | entries per fsync one | failed writes |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    } else {
        "| groups | quiesce | spread ops/s | one group ops/s | spread ÷ one | CPU µs per write spread | CPU µs per write one | failed writes |\n|---:|---|---:|---:|---:|---:|---:|---:|\n"
    });
    for o in outcomes.iter().filter(|o| !o.writes.is_empty() && o.shared_log == shared_log) {
        let (spread, one) = (write_median(o, Target::Spread), write_median(o, Target::OneGroup));
        let errors: u64 = o.writes.iter().map(|w| w.run.errors).sum();
        let _ = write!(t, "| {} |", thousands(o.groups as f64));
        if !shared_log {
            let _ = write!(t, " {} |", if o.quiesce { "on" } else { "off" });
        }
        let _ = write!(t, " {} | {} | {:.2} |", thousands(spread), thousands(one), spread / one);
        if !shared_log {
            for target in [Target::Spread, Target::OneGroup] {
                let cpu = median(o.writes.iter().filter(|w| w.target == target).map(|w| w.run.cpu_micros_per_write()));
                let _ = write!(t, " {cpu:.1} |");
            }
        }
        if shared_log {
            for target in [Target::Spread, Target::OneGroup] {
                let samples = || o.writes.iter().filter(move |w| w.target == target);
                let per_sec = median(samples().map(|w| w.syncs as f64 / w.run.secs));
                let per_sync = median(samples().map(|w| w.synced_entries as f64 / w.syncs.max(1) as f64));
                let _ = write!(t, " {} | {:.1} |", thousands(per_sec), per_sync);
            }
        }
        let _ = writeln!(t, " {errors} |");
    }
    t
}

/// The failover table: per run, every orphan of every kill pooled.
pub fn failover_table(outcomes: &[Outcome]) -> String {
    let mut t = String::from(
        "| groups | kills | orphans per kill | median ms | p99 ms | max ms | not re-elected | killed host's shutdown s | election timeout ms | p99 ≤ 2× its max |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|---|---|\n",
    );
    for o in outcomes.iter().filter(|o| !o.failover.is_empty()) {
        let mut all: Vec<f64> = o.failover.iter().flat_map(|r| r.reelect_ms.iter().copied()).collect();
        all.sort_by(f64::total_cmp);
        let orphans: Vec<String> = o.failover.iter().map(|r| r.orphans.to_string()).collect();
        let unresolved: u64 = o.failover.iter().map(|r| r.unresolved).sum();
        let p99 = percentile(&all, 99.0);
        let (min, max) = o.election_timeout_ms;
        let met = unresolved == 0 && p99 <= goals::REELECT_P99_TIMEOUTS * max as f64;
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {:.2} | {min}–{max} | {} |",
            thousands(o.groups as f64),
            o.failover.len(),
            orphans.join(", "),
            median(all.iter().copied()),
            p99,
            all.last().copied().unwrap_or(f64::NAN),
            unresolved,
            median(o.failover.iter().map(|r| r.shutdown_secs)),
            if met { "yes" } else { "**no**" },
        );
    }
    t
}

/// Why the failover took what it took: per run, every kill pooled, when the orphans' survivors
/// were seen awake and campaigning, how many orphans needed more than one election, and how
/// the (pre-)votes of the whole process were answered from each kill until its last orphan
/// re-elected.
pub fn failover_diagnosis(outcomes: &[Outcome]) -> String {
    let mut t = String::from(
        "| groups | orphans | woke median / p99 ms | campaigning median / p99 ms | >1 election | both ran | term skipped | \
         pre-votes | elections | pre-vote granted / sticky / refused | vote granted / sticky / refused |\n\
         |---:|---:|---|---|---:|---:|---:|---:|---:|---|---|\n",
    );
    for o in outcomes.iter().filter(|o| !o.failover.is_empty()) {
        let pooled = |f: fn(&super::failover::FailoverRound) -> &Vec<f64>| {
            let mut all: Vec<f64> = o.failover.iter().flat_map(|r| f(r).iter().copied()).collect();
            all.sort_by(f64::total_cmp);
            format!("{:.0} / {:.0}", median(all.iter().copied()), percentile(&all, 99.0))
        };
        let sum = |f: fn(&super::failover::FailoverRound) -> u64| o.failover.iter().map(f).sum::<u64>();
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} / {} / {} |",
            thousands(o.groups as f64),
            sum(|r| r.orphans),
            pooled(|r| &r.woke_ms),
            pooled(|r| &r.campaign_ms),
            sum(|r| r.orphans_with_extra_elections),
            sum(|r| r.orphans_both_campaigned),
            sum(|r| r.orphans_term_skipped),
            sum(|r| r.counts.pre_votes),
            sum(|r| r.counts.elections),
            sum(|r| r.counts.pre_vote_granted),
            sum(|r| r.counts.pre_vote_sticky),
            sum(|r| r.counts.pre_vote_refused),
            sum(|r| r.counts.vote_granted),
            sum(|r| r.counts.vote_sticky),
            sum(|r| r.counts.vote_refused),
        );
    }
    t
}

/// Each run's load average, and any run that stopped early.
pub fn notes(outcomes: &[Outcome]) -> String {
    let mut t = String::new();
    for o in outcomes {
        let store = if o.shared_log { ", shared log" } else { "" };
        let q = if o.quiesce { "on" } else { "off" };
        let _ = write!(t, "- {} groups (quiesce {q}{store}): load {} → {}", o.groups, o.load.0, o.load.1);
        if let Some(e) = &o.error {
            let _ = write!(t, "; **stopped early**: {e}");
        }
        t.push('\n');
    }
    t
}

/// The verdict on each goal, from the runs that measured it.
pub fn verdicts(outcomes: &[Outcome]) -> String {
    let mut t = String::new();
    let memory = |o: &&Outcome| !o.shared_log && o.error.is_none();
    for shared_log in [false, true] {
        let idle = |o: &&Outcome| o.shared_log == shared_log && o.error.is_none() && o.quiesce && !o.idle.is_empty();
        let Some(o) = outcomes.iter().filter(idle).max_by_key(|o| o.groups) else { continue };
        let cpu = median(o.idle.iter().map(|w| w.cpu_percent()));
        let per_group = o.rss_per_replica();
        let _ = writeln!(
            t,
            "- idle, {} groups, {} log stores: CPU {cpu:.2} % of a core (goal < {}): {}; RSS {} KiB per group per node (goal < 10): {}",
            o.groups,
            if shared_log { "shared" } else { "memory" },
            goals::IDLE_CPU_PERCENT,
            if cpu < goals::IDLE_CPU_PERCENT { "met" } else { "NOT met" },
            kib(per_group),
            if per_group < goals::BYTES_PER_GROUP { "met" } else { "NOT met" },
        );
    }
    let single =
        outcomes.iter().filter(memory).find(|o| o.quiesce && o.groups == 1).map(|o| write_median(o, Target::OneGroup));
    for o in outcomes.iter().filter(memory).filter(|o| o.quiesce && o.groups >= 1000 && !o.writes.is_empty()) {
        let spread = write_median(o, Target::Spread);
        let one = write_median(o, Target::OneGroup);
        let baseline = single.unwrap_or(one).min(one);
        let _ = writeln!(
            t,
            "- writes spread over {} groups: {} ops/s against one group's {} (in the 1-group cluster: {}): {}",
            o.groups,
            thousands(spread),
            thousands(one),
            single.map_or("–".into(), thousands),
            if spread >= baseline { "met" } else { "NOT met" },
        );
    }
    t
}
