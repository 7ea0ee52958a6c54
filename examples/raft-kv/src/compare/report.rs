//! The samples of a comparison and their summary: medians over rounds per system, client and
//! connection count, the ratios raft-kv / etcd, as markdown tables; and [`SampleLog`], the
//! samples written down one by one as they are measured.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use serde::Serialize;

use super::probe::Leaders;
use super::{Client, System};

/// One measurement: one system, one client, one connection count, one round.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// 1-based.
    pub round: usize,
    /// What was measured.
    pub system: System,
    /// What sent the load.
    pub client: Client,
    /// Concurrent connections, one request in flight on each.
    pub connections: usize,
    /// Successful writes per second.
    pub ops_per_sec: f64,
    /// Failed writes in the measured window.
    pub errors: u64,
    /// Median latency, µs; `None` if no write succeeded.
    pub p50_us: Option<f64>,
    /// 99th percentile latency, µs; `None` if no write succeeded.
    pub p99_us: Option<f64>,
    /// CPU used by the measured system's three processes, in cores.
    pub server_cpu_cores: Option<f64>,
    /// CPU used by this process (the bench client; `None` for wrk), in cores.
    pub client_cpu_cores: Option<f64>,
    /// CPU used by the other, idle, system's processes, in cores.
    pub idle_system_cpu_cores: Option<f64>,
    /// Share of the machine's CPU that was busy (1.0: every core).
    pub machine_busy: Option<f64>,
    /// Log fsyncs per second on the leader.
    pub leader_fsyncs_per_sec: Option<f64>,
    /// Their mean duration, µs.
    pub leader_fsync_mean_us: Option<f64>,
    /// Both clusters' leaders and terms before the sample's load started.
    pub leaders_before: Leaders,
    /// And after it ended.
    pub leaders_after: Leaders,
    /// Whether a leader or term of either cluster changed (or could not be read) from
    /// `leaders_before` to `leaders_after`.
    pub leader_changed: bool,
}

/// The median of `values` (the mean of the middle two for an even count), `None` if empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

/// The medians of one system, client and connection count over its rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Writes per second.
    pub ops_per_sec: f64,
    /// Median latency, µs, over the rounds that had a success.
    pub p50_us: Option<f64>,
    /// p99 latency, µs, over the rounds that had a success.
    pub p99_us: Option<f64>,
    /// Server CPU, cores.
    pub server_cpu_cores: Option<f64>,
    /// Leader fsyncs per second.
    pub leader_fsyncs_per_sec: Option<f64>,
    /// Mean fsync duration, µs.
    pub leader_fsync_mean_us: Option<f64>,
    /// Errors over all rounds.
    pub errors: u64,
    /// How many rounds.
    pub rounds: usize,
    /// How many of them saw a leader change ([`Sample::leader_changed`]).
    pub leader_changes: usize,
}

/// The samples of `system` sent load by `client` at `connections`, in round order.
fn cell(samples: &[Sample], system: System, client: Client, connections: usize) -> Vec<&Sample> {
    let mut of: Vec<&Sample> =
        samples.iter().filter(|s| s.system == system && s.client == client && s.connections == connections).collect();
    of.sort_by_key(|s| s.round);
    of
}

/// The summary of `system` sent load by `client` at `connections`, if measured.
pub fn summarize(samples: &[Sample], system: System, client: Client, connections: usize) -> Option<Summary> {
    let of = cell(samples, system, client, connections);
    let med = |f: &dyn Fn(&Sample) -> Option<f64>| median(of.iter().filter_map(|s| f(s)).collect());
    Some(Summary {
        ops_per_sec: med(&|s| Some(s.ops_per_sec))?,
        p50_us: med(&|s| s.p50_us),
        p99_us: med(&|s| s.p99_us),
        server_cpu_cores: med(&|s| s.server_cpu_cores),
        leader_fsyncs_per_sec: med(&|s| s.leader_fsyncs_per_sec),
        leader_fsync_mean_us: med(&|s| s.leader_fsync_mean_us),
        errors: of.iter().map(|s| s.errors).sum(),
        rounds: of.len(),
        leader_changes: of.iter().filter(|s| s.leader_changed).count(),
    })
}

/// The median over rounds of raft-kv's writes/s divided by etcd's in the same round (rounds
/// where etcd wrote nothing left out), under `client` at `connections`.
pub fn median_paired_ratio(samples: &[Sample], client: Client, connections: usize) -> Option<f64> {
    let etcd = cell(samples, System::Etcd, client, connections);
    let ratios = cell(samples, System::RaftKv, client, connections)
        .iter()
        .filter_map(|r| {
            let e = etcd.iter().find(|e| e.round == r.round)?;
            (e.ops_per_sec > 0.0).then(|| r.ops_per_sec / e.ops_per_sec)
        })
        .collect();
    median(ratios)
}

/// `a / b`, if `b` is positive.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "–".to_string(), f)
}

fn ms(us: Option<f64>) -> String {
    opt(us, |v| format!("{:.2}", v / 1000.0))
}

/// Marks a value measured while a leader changed.
const LEADER_CHANGED: &str = "†";

/// The per-round throughputs of one cell, in round order, `†` on those during which a leader
/// changed: `812 · 790† · 845`.
fn per_round(samples: &[Sample], system: System, client: Client, connections: usize) -> String {
    let mark = |s: &Sample| if s.leader_changed { LEADER_CHANGED } else { "" };
    let of = cell(samples, system, client, connections);
    of.iter().map(|s| format!("{:.0}{}", s.ops_per_sec, mark(s))).collect::<Vec<_>>().join(" · ")
}

/// The markdown tables of `client`'s samples: one with the medians and ratios, one with what
/// the servers did.
pub fn markdown(samples: &[Sample], client: Client, connection_counts: &[usize]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "load from {client}; medians over rounds, errors summed over them; writes/s ratio: raft-kv / etcd of \
         the medians; paired: the median of the per-round ratios; p99 ratio: raft-kv / etcd (below 1: \
         raft-kv's is lower)\n"
    );
    let _ = writeln!(
        out,
        "| conns | raft-kv writes/s | p50 ms | p99 ms | errors | etcd writes/s | p50 ms | p99 ms | errors | \
         writes/s ratio | paired | p99 ratio |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut leader_changes = 0;
    for &c in connection_counts {
        let (Some(r), Some(e)) =
            (summarize(samples, System::RaftKv, client, c), summarize(samples, System::Etcd, client, c))
        else {
            continue;
        };
        leader_changes += r.leader_changes + e.leader_changes;
        let writes =
            |s: &Summary| format!("{:.0}{}", s.ops_per_sec, if s.leader_changes > 0 { LEADER_CHANGED } else { "" });
        let times = |v: f64| format!("{v:.2}×");
        let _ = writeln!(
            out,
            "| {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            writes(&r),
            ms(r.p50_us),
            ms(r.p99_us),
            r.errors,
            writes(&e),
            ms(e.p50_us),
            ms(e.p99_us),
            e.errors,
            opt(ratio(r.ops_per_sec, e.ops_per_sec), times),
            opt(median_paired_ratio(samples, client, c), times),
            opt(r.p99_us.zip(e.p99_us).and_then(|(r, e)| ratio(r, e)), times),
        );
    }
    if leader_changes > 0 {
        let _ = writeln!(
            out,
            "\n{LEADER_CHANGED} a leader or term of either cluster changed (or could not be read) during \
             {leader_changes} of these samples: `leader_changed` in etcd-compare.json"
        );
    }
    let _ = writeln!(out, "\nper round (writes/s), server CPU (cores, 3 processes), leader log fsyncs:\n");
    let _ = writeln!(out, "| conns | system | rounds | server CPU | fsyncs/s | mean fsync ms | writes/fsync |");
    let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|");
    for &c in connection_counts {
        for system in [System::RaftKv, System::Etcd] {
            let Some(s) = summarize(samples, system, client, c) else { continue };
            let per_fsync = s.leader_fsyncs_per_sec.and_then(|f| ratio(s.ops_per_sec, f));
            let _ = writeln!(
                out,
                "| {c} | {system} | {} | {} | {} | {} | {} |",
                per_round(samples, system, client, c),
                opt(s.server_cpu_cores, |v| format!("{v:.2}")),
                opt(s.leader_fsyncs_per_sec, |v| format!("{v:.0}")),
                ms(s.leader_fsync_mean_us),
                opt(per_fsync, |v| format!("{v:.1}")),
            );
        }
    }
    out
}

/// Samples appended to a JSON Lines file, one per line, as they are measured: a run that
/// fails late keeps what it measured.
pub struct SampleLog {
    file: File,
}

impl SampleLog {
    /// Create `path`, or empty it.
    ///
    /// # Errors
    /// If it cannot be created.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self { file: File::create(path)? })
    }

    /// Append `sample` as one line, written through to the file.
    ///
    /// # Errors
    /// If it cannot be written.
    pub fn append(&mut self, sample: &Sample) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(sample)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::{Sample, SampleLog, markdown, median, median_paired_ratio, summarize};
    use crate::compare::probe::Leaders;
    use crate::compare::{Client, System};

    fn sample(round: usize, system: System, ops: f64) -> Sample {
        Sample {
            round,
            system,
            client: Client::Bench,
            connections: 16,
            ops_per_sec: ops,
            errors: 0,
            p50_us: Some(1000.0),
            p99_us: Some(if system == System::RaftKv { 3000.0 } else { 9000.0 }),
            server_cpu_cores: Some(1.0),
            client_cpu_cores: None,
            idle_system_cpu_cores: None,
            machine_busy: None,
            leader_fsyncs_per_sec: Some(500.0),
            leader_fsync_mean_us: Some(1500.0),
            leaders_before: Leaders::default(),
            leaders_after: Leaders::default(),
            leader_changed: false,
        }
    }

    fn rounds() -> Vec<Sample> {
        vec![
            sample(1, System::RaftKv, 6000.0),
            sample(2, System::RaftKv, 4000.0),
            sample(3, System::RaftKv, 5000.0),
            sample(1, System::Etcd, 1000.0),
            sample(2, System::Etcd, 1000.0),
            sample(3, System::Etcd, 2500.0),
        ]
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn the_table_gives_medians_errors_and_ratios() {
        let mut samples = rounds();
        samples[1].errors = 2;
        samples[2].errors = 3;
        let r = summarize(&samples, System::RaftKv, Client::Bench, 16).expect("measured");
        assert_eq!((r.ops_per_sec, r.rounds, r.errors), (5000.0, 3, 5));
        assert!(summarize(&samples, System::RaftKv, Client::Wrk, 16).is_none());
        // Per round: 6×, 4×, 2×; the ratio of the medians is 5000 / 1000.
        assert_eq!(median_paired_ratio(&samples, Client::Bench, 16), Some(4.0));
        let table = markdown(&samples, Client::Bench, &[16, 64]);
        assert!(
            table.contains("| 16 | 5000 | 1.00 | 3.00 | 5 | 1000 | 1.00 | 9.00 | 0 | 5.00× | 4.00× | 0.33× |"),
            "{table}"
        );
        assert!(table.contains("| 16 | raft-kv | 6000 · 4000 · 5000 | 1.00 | 500 | 1.50 | 10.0 |"), "{table}");
        assert!(!table.contains("| 64 |"));
        assert!(!table.contains('†'), "no leader changed");
    }

    #[test]
    fn a_sample_without_successes_has_no_latency_and_is_left_out_of_the_latency_medians() {
        let mut samples = rounds();
        samples[3].ops_per_sec = 0.0;
        samples[3].errors = 900;
        (samples[3].p50_us, samples[3].p99_us) = (None, None);
        samples[4].p99_us = Some(7000.0);
        let e = summarize(&samples, System::Etcd, Client::Bench, 16).expect("measured");
        assert_eq!((e.ops_per_sec, e.p99_us, e.errors), (1000.0, Some(8000.0), 900));
        // Round 1's ratio (etcd wrote nothing) is left out: 4× and 2×.
        assert_eq!(median_paired_ratio(&samples, Client::Bench, 16), Some(3.0));
        for s in &mut samples[3..] {
            (s.p50_us, s.p99_us) = (None, None);
        }
        let table = markdown(&samples, Client::Bench, &[16]);
        assert!(table.contains("| 1000 | – | – | 900 | 5.00× | 3.00× | – |"), "{table}");
    }

    #[test]
    fn a_sample_during_a_leader_change_is_marked() {
        let mut samples = rounds();
        samples[4].leader_changed = true;
        let table = markdown(&samples, Client::Bench, &[16]);
        assert!(table.contains("| 16 | 5000 | 1.00 | 3.00 | 0 | 1000† |"), "{table}");
        assert!(table.contains("| 16 | etcd | 1000 · 1000† · 2500 |"), "{table}");
        assert!(table.contains("changed (or could not be read) during 1 of these samples"), "{table}");
    }

    #[test]
    fn the_sample_log_holds_one_json_line_per_sample() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("samples.jsonl");
        let mut log = SampleLog::create(&path).expect("created");
        for s in &rounds()[..2] {
            log.append(s).expect("appended");
        }
        let text = std::fs::read_to_string(&path).expect("written");
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("one sample per line")).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[1]["round"].as_u64(), lines[1]["system"].as_str()), (Some(2), Some("raft-kv")));
        assert_eq!(lines[0]["leader_changed"], false);
        assert!(lines[0]["leaders_before"]["raft_kv"].is_null());
    }
}
