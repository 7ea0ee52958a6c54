//! The samples of a comparison and their summary: medians over rounds per system, client and
//! connection count, the ratios raft-kv / etcd, as a markdown table.

use std::fmt::Write as _;

use serde::Serialize;

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
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
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
    /// Median latency, µs.
    pub p50_us: f64,
    /// p99 latency, µs.
    pub p99_us: f64,
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
}

/// The summary of `system` sent load by `client` at `connections`, if measured.
pub fn summarize(samples: &[Sample], system: System, client: Client, connections: usize) -> Option<Summary> {
    let of: Vec<&Sample> =
        samples.iter().filter(|s| s.system == system && s.client == client && s.connections == connections).collect();
    let med = |f: &dyn Fn(&Sample) -> Option<f64>| median(of.iter().filter_map(|s| f(s)).collect());
    Some(Summary {
        ops_per_sec: med(&|s| Some(s.ops_per_sec))?,
        p50_us: med(&|s| Some(s.p50_us))?,
        p99_us: med(&|s| Some(s.p99_us))?,
        server_cpu_cores: med(&|s| s.server_cpu_cores),
        leader_fsyncs_per_sec: med(&|s| s.leader_fsyncs_per_sec),
        leader_fsync_mean_us: med(&|s| s.leader_fsync_mean_us),
        errors: of.iter().map(|s| s.errors).sum(),
        rounds: of.len(),
    })
}

fn ms(us: f64) -> String {
    format!("{:.2}", us / 1000.0)
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "–".to_string(), f)
}

/// The per-round throughputs of one cell, in round order: `812 · 790 · 845`.
fn per_round(samples: &[Sample], system: System, client: Client, connections: usize) -> String {
    let mut of: Vec<&Sample> =
        samples.iter().filter(|s| s.system == system && s.client == client && s.connections == connections).collect();
    of.sort_by_key(|s| s.round);
    of.iter().map(|s| format!("{:.0}", s.ops_per_sec)).collect::<Vec<_>>().join(" · ")
}

/// The markdown tables of `client`'s samples: one with the medians and ratios, one with what
/// the servers did.
pub fn markdown(samples: &[Sample], client: Client, connection_counts: &[usize]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "load from {client}; medians over rounds; ratio = raft-kv / etcd writes/s\n");
    let _ = writeln!(
        out,
        "| conns | raft-kv writes/s | p50 ms | p99 ms | etcd writes/s | p50 ms | p99 ms | ratio | p99 lower |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|:---:|");
    for &c in connection_counts {
        let (Some(r), Some(e)) =
            (summarize(samples, System::RaftKv, client, c), summarize(samples, System::Etcd, client, c))
        else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {c} | {:.0} | {} | {} | {:.0} | {} | {} | {:.2}× | {} |",
            r.ops_per_sec,
            ms(r.p50_us),
            ms(r.p99_us),
            e.ops_per_sec,
            ms(e.p50_us),
            ms(e.p99_us),
            r.ops_per_sec / e.ops_per_sec.max(1e-9),
            if r.p99_us < e.p99_us { "raft-kv" } else { "etcd" },
        );
    }
    let _ = writeln!(out, "\nper round (writes/s), server CPU (cores, 3 processes), leader log fsyncs:\n");
    let _ =
        writeln!(out, "| conns | system | rounds | errors | server CPU | fsyncs/s | mean fsync ms | writes/fsync |");
    let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|---:|");
    for &c in connection_counts {
        for system in [System::RaftKv, System::Etcd] {
            let Some(s) = summarize(samples, system, client, c) else { continue };
            let per_fsync = s.leader_fsyncs_per_sec.filter(|f| *f > 0.0).map(|f| s.ops_per_sec / f);
            let _ = writeln!(
                out,
                "| {c} | {system} | {} | {} | {} | {} | {} | {} |",
                per_round(samples, system, client, c),
                s.errors,
                opt(s.server_cpu_cores, |v| format!("{v:.2}")),
                opt(s.leader_fsyncs_per_sec, |v| format!("{v:.0}")),
                opt(s.leader_fsync_mean_us, |v| format!("{:.2}", v / 1000.0)),
                opt(per_fsync, |v| format!("{v:.1}")),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Sample, markdown, median, summarize};
    use crate::compare::{Client, System};

    fn sample(round: usize, system: System, ops: f64) -> Sample {
        Sample {
            round,
            system,
            client: Client::Bench,
            connections: 16,
            ops_per_sec: ops,
            errors: 0,
            p50_us: 1000.0,
            p99_us: if system == System::RaftKv { 3000.0 } else { 9000.0 },
            server_cpu_cores: Some(1.0),
            client_cpu_cores: None,
            idle_system_cpu_cores: None,
            machine_busy: None,
            leader_fsyncs_per_sec: Some(500.0),
            leader_fsync_mean_us: Some(1500.0),
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn the_table_gives_medians_and_the_ratio() {
        let samples = vec![
            sample(1, System::RaftKv, 6000.0),
            sample(2, System::RaftKv, 4000.0),
            sample(3, System::RaftKv, 5000.0),
            sample(1, System::Etcd, 1000.0),
            sample(2, System::Etcd, 1200.0),
            sample(3, System::Etcd, 800.0),
        ];
        let r = summarize(&samples, System::RaftKv, Client::Bench, 16).expect("measured");
        assert_eq!((r.ops_per_sec, r.rounds), (5000.0, 3));
        assert!(summarize(&samples, System::RaftKv, Client::Wrk, 16).is_none());
        let table = markdown(&samples, Client::Bench, &[16, 64]);
        assert!(table.contains("| 16 | 5000 | 1.00 | 3.00 | 1000 | 1.00 | 9.00 | 5.00× | raft-kv |"), "{table}");
        assert!(table.contains("| 16 | raft-kv | 6000 · 4000 · 5000 | 0 | 1.00 | 500 | 1.50 | 10.0 |"), "{table}");
        assert!(!table.contains("| 64 |"));
    }
}
