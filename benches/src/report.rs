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

/// One measurement of one library at one client count in one round.
#[derive(Debug)]
pub struct Sample {
    /// Which library.
    pub library: Library,
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

/// Summarize the successful samples of `library` at `clients`; `None` if none succeeded.
pub fn summarize(samples: &[Sample], library: Library, clients: usize) -> Option<Summary> {
    let ok: Vec<&Measurement> = samples
        .iter()
        .filter(|s| s.library == library && s.clients == clients && s.failure().is_none())
        .filter_map(|s| s.outcome.as_ref().ok())
        .collect();
    Some(Summary {
        ops_per_sec: median(ok.iter().map(|m| m.ops_per_sec()).collect())?,
        p50_us: median(ok.iter().map(|m| m.latency_us(0.50)).collect())?,
        p99_us: median(ok.iter().map(|m| m.latency_us(0.99)).collect())?,
        rounds: ok.len(),
    })
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

/// The results as a markdown table, one row per client count, then the failures, if any.
pub fn markdown(samples: &[Sample], client_counts: &[usize]) -> String {
    let mut out = String::new();
    out.push_str(
        "| clients | quorate ops/s | openraft ops/s | ops/s ratio q/o | quorate p50 µs | openraft p50 µs | p50 ratio q/o | quorate p99 µs | openraft p99 µs | p99 ratio q/o |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for &clients in client_counts {
        let q = summarize(samples, Library::Quorate, clients);
        let o = summarize(samples, Library::Openraft, clients);
        let (q_ops, o_ops) = (q.map(|s| s.ops_per_sec), o.map(|s| s.ops_per_sec));
        let (q_p50, o_p50) = (q.map(|s| s.p50_us), o.map(|s| s.p50_us));
        let (q_p99, o_p99) = (q.map(|s| s.p99_us), o.map(|s| s.p99_us));
        let _ = writeln!(
            out,
            "| {clients} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(q_ops, 0),
            cell(o_ops, 0),
            ratio(q_ops, o_ops),
            cell(q_p50, 1),
            cell(o_p50, 1),
            ratio(q_p50, o_p50),
            cell(q_p99, 1),
            cell(o_p99, 1),
            ratio(q_p99, o_p99),
        );
    }
    let failures: Vec<String> = samples
        .iter()
        .filter_map(|s| s.failure().map(|f| format!("- {} × {} clients, round {}: {f}", s.library, s.clients, s.round)))
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

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
