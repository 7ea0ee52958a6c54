//! Reducing rounds to medians, and the markdown tables.

use std::fmt::{self, Write as _};

use crate::PhaseError;
use crate::tuning::Table;
use crate::workload::Measurement;

/// The library a measurement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Library {
    /// This crate's subject.
    Quorate,
    /// The baseline.
    Openraft,
}

impl fmt::Display for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Quorate => "quorate",
            Self::Openraft => "openraft",
        })
    }
}

/// What the cluster goes through during a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Scenario {
    /// All three nodes answer.
    Healthy,
    /// Once a leader is known, one follower takes every RPC and never answers.
    HungFollower,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Healthy => "healthy",
            Self::HungFollower => "hung-follower",
        })
    }
}

/// What a run of measurements at varying client counts has in common: the table (and so the
/// settings), what the cluster goes through, and the entries per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Series {
    /// Which settings.
    pub table: Table,
    /// What the cluster goes through.
    pub scenario: Scenario,
    /// Entries per call: 1 is `client_write`, more is `client_write_many`.
    pub batch: u64,
}

impl Series {
    /// Single healthy writes under `table`'s settings: the rows of a main table.
    pub fn healthy(table: Table) -> Self {
        Self { table, scenario: Scenario::Healthy, batch: 1 }
    }

    /// Healthy batches of `batch` entries under `table`'s settings.
    pub fn batches(table: Table, batch: u64) -> Self {
        Self { table, scenario: Scenario::Healthy, batch }
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, {}", self.table, self.scenario)?;
        if self.batch > 1 {
            write!(f, ", batch {}", self.batch)?;
        }
        Ok(())
    }
}

/// One measurement of one library at one client count in one round.
#[derive(Debug)]
pub struct Sample {
    /// Which library.
    pub library: Library,
    /// Which table, scenario and batch size.
    pub series: Series,
    /// How many concurrent clients.
    pub clients: usize,
    /// Which round, from 1.
    pub round: usize,
    /// Whether this was the first measurement of its library in this process (*cold*: its
    /// code, its allocations' size classes and the runtimes' threads not yet warmed up by an
    /// earlier measurement of the same library), or a later one (*warm*).
    pub cold: bool,
    /// What was measured, or the phase that failed before the workload could run.
    pub outcome: Result<Measurement, PhaseError>,
}

impl Sample {
    /// The reason this sample does not count, if it does not: a phase failed, or the workload
    /// reported a failure (an error or a timeout).
    pub fn failure(&self) -> Option<String> {
        match &self.outcome {
            Err(e) => Some(e.to_string()),
            Ok(m) => m.failure.clone(),
        }
    }

    /// The measurement, if it succeeded.
    pub fn succeeded(&self) -> Option<&Measurement> {
        self.outcome.as_ref().ok().filter(|m| m.failure.is_none())
    }

    /// "warm" or "cold".
    pub fn warmth(&self) -> &'static str {
        if self.cold { "cold" } else { "warm" }
    }
}

/// The medians over the successful rounds of one library at one client count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Median throughput, entries per second.
    pub ops_per_sec: f64,
    /// Median of the per-round median latencies of a call, microseconds.
    pub p50_us: f64,
    /// Median of the per-round 99th-percentile latencies of a call, microseconds.
    pub p99_us: f64,
    /// How many rounds counted.
    pub rounds: usize,
    /// Whether the only successful measurement was cold (no warm one to prefer).
    pub cold_only: bool,
}

/// The median of `values`; the mean of the middle two for an even count. `None` if empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

/// The successful samples of one cell that count: the warm ones, or the cold one if no warm
/// one succeeded (a run of one round, say).
fn counted(samples: &[Sample], library: Library, series: Series, clients: usize) -> Vec<&Sample> {
    let ok: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.library == library && s.series == series && s.clients == clients && s.succeeded().is_some())
        .collect();
    if ok.iter().any(|s| !s.cold) { ok.into_iter().filter(|s| !s.cold).collect() } else { ok }
}

/// Summarize the samples of `library` in `series` at `clients` that count (the warm ones, or
/// the cold one if no warm one succeeded); `None` if none succeeded.
pub fn summarize(samples: &[Sample], library: Library, series: Series, clients: usize) -> Option<Summary> {
    let ok = counted(samples, library, series, clients);
    let ms: Vec<&Measurement> = ok.iter().filter_map(|s| s.succeeded()).collect();
    Some(Summary {
        ops_per_sec: median(ms.iter().map(|m| m.ops_per_sec()).collect())?,
        p50_us: median(ms.iter().map(|m| m.latency_us(0.50)).collect())?,
        p99_us: median(ms.iter().map(|m| m.latency_us(0.99)).collect())?,
        rounds: ms.len(),
        cold_only: ok.iter().all(|s| s.cold),
    })
}

/// The median over rounds of the ops/s of `a` divided by that of `b` in the same round, using
/// only rounds where both succeeded and both were warm (or, if there is no such round, cold
/// ones too). Each key is a (library, series) pair. The two ran back to back, so load from
/// elsewhere on the machine tends to hit both: this ratio is steadier than the ratio of the
/// two medians.
pub fn paired_ratio(samples: &[Sample], clients: usize, a: (Library, Series), b: (Library, Series)) -> Option<f64> {
    let in_round = |(library, series): (Library, Series), round: usize| {
        samples.iter().find(|s| s.library == library && s.series == series && s.clients == clients && s.round == round)
    };
    let rounds = samples.iter().map(|s| s.round).max().unwrap_or(0);
    let pairs: Vec<(&Sample, &Sample)> =
        (1..=rounds).filter_map(|r| Some((in_round(a, r)?, in_round(b, r)?))).collect();
    let ratio = |(x, y): &(&Sample, &Sample)| match (x.succeeded(), y.succeeded()) {
        (Some(x), Some(y)) if y.ops_per_sec() > 0.0 => Some(x.ops_per_sec() / y.ops_per_sec()),
        _ => None,
    };
    let warm: Vec<f64> = pairs.iter().filter(|(x, y)| !x.cold && !y.cold).filter_map(ratio).collect();
    if warm.is_empty() { median(pairs.iter().filter_map(ratio).collect()) } else { median(warm) }
}

/// [`paired_ratio`] of quorate over openraft in `series`.
pub fn paired_ops_ratio(samples: &[Sample], clients: usize, series: Series) -> Option<f64> {
    paired_ratio(samples, clients, (Library::Quorate, series), (Library::Openraft, series))
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "FAILED".to_string(), |v| format!("{v:.decimals$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".to_string(),
    }
}

fn optional_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_string(), |r| format!("{r:.2}"))
}

/// Under a table: which cells rest on a cold measurement only.
fn cold_note(samples: &[Sample], series: &[Series], client_counts: &[usize]) -> String {
    let mut cold = Vec::new();
    for &s in series {
        for &clients in client_counts {
            for library in [Library::Quorate, Library::Openraft] {
                if summarize(samples, library, s, clients).is_some_and(|x| x.cold_only) {
                    cold.push(format!(
                        "{library} at {clients} clients{}",
                        if s.batch > 1 { format!(" (batch {})", s.batch) } else { String::new() }
                    ));
                }
            }
        }
    }
    if cold.is_empty() { String::new() } else { format!("Cold only (no warm round succeeded): {}.\n", cold.join(", ")) }
}

/// The healthy single-write results of `table` as a markdown table, one row per client count.
pub fn markdown(samples: &[Sample], client_counts: &[usize], table: Table) -> String {
    let series = Series::healthy(table);
    let mut out = String::new();
    out.push_str(
        "| clients | quorate ops/s | openraft ops/s | ops/s ratio q/o | paired ratio | quorate p50 µs | openraft p50 µs | p50 ratio q/o | quorate p99 µs | openraft p99 µs | p99 ratio q/o |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for &clients in client_counts {
        let q = summarize(samples, Library::Quorate, series, clients);
        let o = summarize(samples, Library::Openraft, series, clients);
        let (q_ops, o_ops) = (q.map(|s| s.ops_per_sec), o.map(|s| s.ops_per_sec));
        let (q_p50, o_p50) = (q.map(|s| s.p50_us), o.map(|s| s.p50_us));
        let (q_p99, o_p99) = (q.map(|s| s.p99_us), o.map(|s| s.p99_us));
        let _ = writeln!(
            out,
            "| {clients} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(q_ops, 0),
            cell(o_ops, 0),
            ratio(q_ops, o_ops),
            optional_ratio(paired_ops_ratio(samples, clients, series)),
            cell(q_p50, 1),
            cell(o_p50, 1),
            ratio(q_p50, o_p50),
            cell(q_p99, 1),
            cell(o_p99, 1),
            ratio(q_p99, o_p99),
        );
    }
    out.push_str(
        "\nMedians over the warm rounds that succeeded (the cold measurement, each library's first in the process, \
         is left out; see *cold and warm*). *ops/s ratio* divides the two medians; *paired ratio* is the \
         median of the per-round ratios (both libraries measured back to back in each round).\n",
    );
    out.push_str(&cold_note(samples, &[series], client_counts));
    out
}

/// The batch results of `table`: per batch size and client count, entries/s and latency per
/// call of both libraries.
pub fn batch_markdown(samples: &[Sample], client_counts: &[usize], batches: &[u64], table: Table) -> String {
    let mut out = String::new();
    out.push_str(
        "| batch | clients | quorate entries/s | openraft entries/s | ratio q/o | paired ratio | quorate p50 µs/call | openraft p50 µs/call | quorate p99 µs/call | openraft p99 µs/call | p99 ratio q/o |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for &batch in batches {
        let series = Series::batches(table, batch);
        for &clients in client_counts {
            let q = summarize(samples, Library::Quorate, series, clients);
            let o = summarize(samples, Library::Openraft, series, clients);
            let (q_ops, o_ops) = (q.map(|s| s.ops_per_sec), o.map(|s| s.ops_per_sec));
            let (q_p99, o_p99) = (q.map(|s| s.p99_us), o.map(|s| s.p99_us));
            let _ = writeln!(
                out,
                "| {batch} | {clients} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                cell(q_ops, 0),
                cell(o_ops, 0),
                ratio(q_ops, o_ops),
                optional_ratio(paired_ops_ratio(samples, clients, series)),
                cell(q.map(|s| s.p50_us), 1),
                cell(o.map(|s| s.p50_us), 1),
                cell(q_p99, 1),
                cell(o_p99, 1),
                ratio(q_p99, o_p99),
            );
        }
    }
    out.push_str(
        "\nEach client makes sequential calls of *batch* entries (`client_write_many` on both sides); entries/s \
         counts entries, latency is per call. Medians over the warm rounds that succeeded.\n",
    );
    let series: Vec<Series> = batches.iter().map(|&b| Series::batches(table, b)).collect();
    out.push_str(&cold_note(samples, &series, client_counts));
    out
}

/// Every cold measurement next to the warm median of the same cell, so a reader sees whether
/// the first measurement in a process differs from the rest.
pub fn cold_markdown(samples: &[Sample]) -> String {
    let mut out = String::new();
    out.push_str("| library | series | clients | cold ops/s | warm median ops/s | cold/warm | cold p99 µs | warm median p99 µs |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for s in samples.iter().filter(|s| s.cold) {
        let cold = s.succeeded();
        let warm: Vec<&Measurement> = samples
            .iter()
            .filter(|w| !w.cold && w.library == s.library && w.series == s.series && w.clients == s.clients)
            .filter_map(Sample::succeeded)
            .collect();
        let warm_ops = median(warm.iter().map(|m| m.ops_per_sec()).collect());
        let cold_ops = cold.map(Measurement::ops_per_sec);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.library,
            s.series,
            s.clients,
            cell(cold_ops, 0),
            warm_ops.map_or_else(|| "–".to_string(), |v| format!("{v:.0}")),
            ratio(cold_ops, warm_ops),
            cell(cold.map(|m| m.latency_us(0.99)), 1),
            median(warm.iter().map(|m| m.latency_us(0.99)).collect())
                .map_or_else(|| "–".to_string(), |v| format!("{v:.1}")),
        );
    }
    out.push_str(
        "\n*Cold* is each library's first measurement in this process; every other measurement is *warm*. The \
         tables above use warm rounds only where one succeeded.\n",
    );
    out
}

/// Every failed measurement, as a list; empty if none failed.
pub fn failures_markdown(samples: &[Sample]) -> String {
    let failures: Vec<String> = samples
        .iter()
        .filter_map(|s| {
            s.failure()
                .map(|f| format!("- {} ({}) × {} clients, round {}: {f}", s.library, s.series, s.clients, s.round))
        })
        .collect();
    if failures.is_empty() {
        return String::new();
    }
    let mut out = String::from("Failed rounds (left out of the medians):\n\n");
    for f in failures {
        out.push_str(&f);
        out.push('\n');
    }
    out
}

/// The hung-follower results as a markdown table: per library and client count, healthy and
/// hung throughput and their ratio (target: at least 0.9), and p99 latency of both. Both
/// scenarios run with the same settings.
pub fn hung_markdown(samples: &[Sample], client_counts: &[usize], libraries: &[Library]) -> String {
    let healthy_series = Series::healthy(Table::Same);
    let hung_series = Series { scenario: Scenario::HungFollower, ..healthy_series };
    let mut out = String::new();
    out.push_str(
        "| library | clients | healthy ops/s | hung ops/s | ratio hung/healthy | paired ratio | healthy p99 µs | hung p99 µs |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for &library in libraries {
        for &clients in client_counts {
            let healthy = summarize(samples, library, healthy_series, clients);
            let hung = summarize(samples, library, hung_series, clients);
            let (h_ops, g_ops) = (healthy.map(|s| s.ops_per_sec), hung.map(|s| s.ops_per_sec));
            let paired = paired_ratio(samples, clients, (library, hung_series), (library, healthy_series));
            let _ = writeln!(
                out,
                "| {library} | {clients} | {} | {} | {} | {} | {} | {} |",
                cell(h_ops, 0),
                cell(g_ops, 0),
                ratio(g_ops, h_ops),
                optional_ratio(paired),
                cell(healthy.map(|s| s.p99_us), 1),
                cell(hung.map(|s| s.p99_us), 1),
            );
        }
    }
    out.push_str(
        "\nHealthy and hung runs alternate (same round, same client count, back to back on fresh clusters, same \
         settings); *paired ratio* is the median of the per-round ratios.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hdrhistogram::Histogram;

    use super::{Library, Sample, Series, median, paired_ops_ratio, summarize};
    use crate::tuning::Table;
    use crate::workload::Measurement;
    use crate::{Phase, PhaseError};

    const SERIES: Series = Series { table: Table::Same, scenario: super::Scenario::Healthy, batch: 1 };

    fn sample(library: Library, round: usize, ops_per_sec: u64) -> Sample {
        let latency = Histogram::new(3).expect("valid precision");
        let m = Measurement { completed: ops_per_sec, elapsed: Duration::from_secs(1), latency, failure: None };
        Sample { library, series: SERIES, clients: 8, round, cold: false, outcome: Ok(m) }
    }

    #[test]
    fn paired_ratio_uses_only_rounds_where_both_succeeded() {
        let samples = vec![
            sample(Library::Quorate, 1, 300),
            sample(Library::Openraft, 1, 100),
            sample(Library::Quorate, 2, 200),
            Sample {
                library: Library::Openraft,
                series: SERIES,
                clients: 8,
                round: 2,
                cold: false,
                outcome: Err(PhaseError::new(Phase::Start, "x")),
            },
            sample(Library::Quorate, 3, 100),
            sample(Library::Openraft, 3, 100),
        ];
        assert_eq!(paired_ops_ratio(&samples, 8, SERIES), Some(2.0));
        assert_eq!(paired_ops_ratio(&samples, 9, SERIES), None);
    }

    #[test]
    fn a_cold_measurement_counts_only_when_no_warm_one_succeeded() {
        let cold = |library, round, ops| Sample { cold: true, ..sample(library, round, ops) };
        let samples = vec![
            cold(Library::Quorate, 1, 1000),
            cold(Library::Openraft, 1, 10),
            sample(Library::Quorate, 2, 300),
            sample(Library::Openraft, 2, 100),
        ];
        let q = summarize(&samples, Library::Quorate, SERIES, 8).expect("quorate succeeded");
        assert_eq!((q.ops_per_sec, q.rounds, q.cold_only), (300.0, 1, false));
        assert_eq!(paired_ops_ratio(&samples, 8, SERIES), Some(3.0));

        let only_cold = vec![cold(Library::Quorate, 1, 1000), cold(Library::Openraft, 1, 10)];
        let q = summarize(&only_cold, Library::Quorate, SERIES, 8).expect("quorate succeeded");
        assert_eq!((q.ops_per_sec, q.cold_only), (1000.0, true));
        assert_eq!(paired_ops_ratio(&only_cold, 8, SERIES), Some(100.0));
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
