//! Reducing rounds to medians, and the markdown table.

use std::fmt::{self, Write as _};

use crate::PhaseError;
use crate::workload::Measurement;

/// The library a measurement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
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

/// One measurement of one library at one client count in one round.
#[derive(Debug)]
pub struct Sample {
    /// Which library.
    pub library: Library,
    /// What the cluster went through.
    pub scenario: Scenario,
    /// How many concurrent clients.
    pub clients: usize,
    /// Which round, from 1.
    pub round: usize,
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
}

/// The medians over the successful rounds of one library at one client count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Median throughput, writes per second.
    pub ops_per_sec: f64,
    /// Median of the per-round median latencies, microseconds.
    pub p50_us: f64,
    /// Median of the per-round 99th-percentile latencies, microseconds.
    pub p99_us: f64,
    /// How many rounds counted.
    pub rounds: usize,
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

/// Summarize the successful samples of `library` in `scenario` at `clients`; `None` if none
/// succeeded.
pub fn summarize(samples: &[Sample], library: Library, scenario: Scenario, clients: usize) -> Option<Summary> {
    let ok: Vec<&Measurement> = samples
        .iter()
        .filter(|s| s.library == library && s.scenario == scenario && s.clients == clients && s.failure().is_none())
        .filter_map(|s| s.outcome.as_ref().ok())
        .collect();
    Some(Summary {
        ops_per_sec: median(ok.iter().map(|m| m.ops_per_sec()).collect())?,
        p50_us: median(ok.iter().map(|m| m.latency_us(0.50)).collect())?,
        p99_us: median(ok.iter().map(|m| m.latency_us(0.99)).collect())?,
        rounds: ok.len(),
    })
}

/// The median over rounds of the ops/s of `a` divided by that of `b` in the same round, using
/// only rounds where both succeeded. Each key is a (library, scenario) pair. The two ran back
/// to back, so load from elsewhere on the machine tends to hit both: this ratio is steadier
/// than the ratio of the two medians.
pub fn paired_ratio(samples: &[Sample], clients: usize, a: (Library, Scenario), b: (Library, Scenario)) -> Option<f64> {
    let ops_in = |(library, scenario): (Library, Scenario), round: usize| {
        samples
            .iter()
            .find(|s| {
                s.library == library
                    && s.scenario == scenario
                    && s.clients == clients
                    && s.round == round
                    && s.failure().is_none()
            })
            .and_then(|s| s.outcome.as_ref().ok())
            .map(Measurement::ops_per_sec)
    };
    let rounds = samples.iter().map(|s| s.round).max().unwrap_or(0);
    let ratios = (1..=rounds)
        .filter_map(|r| match (ops_in(a, r), ops_in(b, r)) {
            (Some(x), Some(y)) if y > 0.0 => Some(x / y),
            _ => None,
        })
        .collect();
    median(ratios)
}

/// [`paired_ratio`] of quorate over openraft, both healthy.
pub fn paired_ops_ratio(samples: &[Sample], clients: usize) -> Option<f64> {
    paired_ratio(samples, clients, (Library::Quorate, Scenario::Healthy), (Library::Openraft, Scenario::Healthy))
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

/// The healthy results as a markdown table, one row per client count, then the failures of
/// every scenario, if any.
pub fn markdown(samples: &[Sample], client_counts: &[usize]) -> String {
    let mut out = String::new();
    out.push_str(
        "| clients | quorate ops/s | openraft ops/s | ops/s ratio q/o | paired ratio | quorate p50 µs | openraft p50 µs | p50 ratio q/o | quorate p99 µs | openraft p99 µs | p99 ratio q/o |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for &clients in client_counts {
        let q = summarize(samples, Library::Quorate, Scenario::Healthy, clients);
        let o = summarize(samples, Library::Openraft, Scenario::Healthy, clients);
        let (q_ops, o_ops) = (q.map(|s| s.ops_per_sec), o.map(|s| s.ops_per_sec));
        let (q_p50, o_p50) = (q.map(|s| s.p50_us), o.map(|s| s.p50_us));
        let (q_p99, o_p99) = (q.map(|s| s.p99_us), o.map(|s| s.p99_us));
        let _ = writeln!(
            out,
            "| {clients} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(q_ops, 0),
            cell(o_ops, 0),
            ratio(q_ops, o_ops),
            paired_ops_ratio(samples, clients).map_or_else(|| "–".to_string(), |r| format!("{r:.2}")),
            cell(q_p50, 1),
            cell(o_p50, 1),
            ratio(q_p50, o_p50),
            cell(q_p99, 1),
            cell(o_p99, 1),
            ratio(q_p99, o_p99),
        );
    }
    out.push_str(
        "\nMedians over the rounds that succeeded. *ops/s ratio* divides the two medians; *paired ratio* is the \
         median of the per-round ratios (both libraries measured back to back in each round).\n",
    );
    let failures: Vec<String> = samples
        .iter()
        .filter_map(|s| {
            s.failure()
                .map(|f| format!("- {} {} × {} clients, round {}: {f}", s.library, s.scenario, s.clients, s.round))
        })
        .collect();
    if !failures.is_empty() {
        out.push_str("\nFailed rounds (left out of the medians):\n\n");
        for f in failures {
            out.push_str(&f);
            out.push('\n');
        }
    }
    out
}

/// The hung-follower results as a markdown table: per library and client count, healthy and
/// hung throughput and their ratio (target: at least 0.9), and p99 latency of both.
pub fn hung_markdown(samples: &[Sample], client_counts: &[usize], libraries: &[Library]) -> String {
    let mut out = String::new();
    out.push_str(
        "| library | clients | healthy ops/s | hung ops/s | ratio hung/healthy | paired ratio | healthy p99 µs | hung p99 µs |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for &library in libraries {
        for &clients in client_counts {
            let healthy = summarize(samples, library, Scenario::Healthy, clients);
            let hung = summarize(samples, library, Scenario::HungFollower, clients);
            let (h_ops, g_ops) = (healthy.map(|s| s.ops_per_sec), hung.map(|s| s.ops_per_sec));
            let paired =
                paired_ratio(samples, clients, (library, Scenario::HungFollower), (library, Scenario::Healthy));
            let _ = writeln!(
                out,
                "| {library} | {clients} | {} | {} | {} | {} | {} | {} |",
                cell(h_ops, 0),
                cell(g_ops, 0),
                ratio(g_ops, h_ops),
                paired.map_or_else(|| "–".to_string(), |r| format!("{r:.2}")),
                cell(healthy.map(|s| s.p99_us), 1),
                cell(hung.map(|s| s.p99_us), 1),
            );
        }
    }
    out.push_str(
        "\nHealthy and hung runs alternate (same round, same client count, back to back on fresh clusters); \
         *paired ratio* is the median of the per-round ratios.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hdrhistogram::Histogram;

    use super::{Library, Sample, Scenario, median, paired_ops_ratio};
    use crate::workload::Measurement;
    use crate::{Phase, PhaseError};

    fn sample(library: Library, round: usize, ops_per_sec: u64) -> Sample {
        let latency = Histogram::new(3).expect("valid precision");
        let m = Measurement { completed: ops_per_sec, elapsed: Duration::from_secs(1), latency, failure: None };
        Sample { library, scenario: Scenario::Healthy, clients: 8, round, outcome: Ok(m) }
    }

    #[test]
    fn paired_ratio_uses_only_rounds_where_both_succeeded() {
        let samples = vec![
            sample(Library::Quorate, 1, 300),
            sample(Library::Openraft, 1, 100),
            sample(Library::Quorate, 2, 200),
            Sample {
                library: Library::Openraft,
                scenario: Scenario::Healthy,
                clients: 8,
                round: 2,
                outcome: Err(PhaseError::new(Phase::Start, "x")),
            },
            sample(Library::Quorate, 3, 100),
            sample(Library::Openraft, 3, 100),
        ];
        assert_eq!(paired_ops_ratio(&samples, 8), Some(2.0));
        assert_eq!(paired_ops_ratio(&samples, 9), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
