//! What the servers did during a measurement, read from outside: CPU time of processes
//! (`/proc/<pid>/stat`), the machine's busy time (`/proc/stat`), counters of a
//! Prometheus text page (fsyncs and their total duration), and who leads each cluster in
//! which term ([`Leaders`]).
//!
//! Linux only: elsewhere every reading is `None` and the report leaves the columns empty.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on every Linux we know of).
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system, all threads, exited ones included) that process `pid` used.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_secs_of_stat(&stat)
}

/// CPU seconds this process used.
pub fn own_cpu_secs() -> Option<f64> {
    process_cpu_secs(std::process::id())
}

/// utime + stime of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces: fields are counted after its closing parenthesis.
fn cpu_secs_of_stat(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name, field 3 (state) is at index 0: utime (14) and stime (15) at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// The machine's CPU time so far, busy and total, in ticks (the `cpu` line of `/proc/stat`).
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    /// Now.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        Self::parse(stat.lines().next()?)
    }

    fn parse(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
        let total: u64 = ticks.iter().take(8).sum();
        let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
        Some(Self { busy: total - idle, total })
    }

    /// The share of the machine's CPU that was busy between `earlier` and `self` (1.0: every
    /// core all the time).
    pub fn busy_since(&self, earlier: &Self) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        (total > 0).then(|| (self.busy.saturating_sub(earlier.busy)) as f64 / total as f64)
    }
}

/// A histogram's `_sum` and `_count` summed over all its label sets.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SumCount {
    /// The sum of the observations.
    pub sum: f64,
    /// How many observations.
    pub count: f64,
}

/// `name`'s `_sum` and `_count` in a Prometheus text page.
pub fn sum_count(page: &str, name: &str) -> SumCount {
    let mut out = SumCount::default();
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (suffix, value) = match (rest.split_once([' ', '{']), rest.rsplit_once(' ')) {
            (Some((suffix, _)), Some((_, value))) => (suffix, value),
            _ => continue,
        };
        let Ok(value) = value.parse::<f64>() else { continue };
        match suffix {
            "_sum" => out.sum += value,
            "_count" => out.count += value,
            _ => {}
        }
    }
    out
}

/// The log fsyncs of one node over a measurement.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fsyncs {
    /// How many.
    pub count: f64,
    /// How many per second of the time between the two readings.
    pub per_sec: f64,
    /// Their mean duration, in microseconds.
    pub mean_us: f64,
}

impl Fsyncs {
    /// From the counters before and after, read `elapsed_secs` apart.
    pub fn between(before: SumCount, after: SumCount, elapsed_secs: f64) -> Self {
        let count = after.count - before.count;
        let mean_us = if count > 0.0 { (after.sum - before.sum) / count * 1e6 } else { 0.0 };
        Self { count, per_sec: count / elapsed_secs.max(1e-9), mean_us }
    }
}

/// Readings of a set of processes and of one metrics page, taken before a measurement.
pub struct Probe {
    pids: Vec<u32>,
    metrics_url: String,
    fsync_metric: &'static str,
    cpu: Option<f64>,
    fsyncs: Option<SumCount>,
    at: Instant,
}

/// What a [`Probe`] saw between its start and [`Probe::finish`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Probed {
    /// CPU the processes used, in cores (1.0: one core all the time).
    pub cpu_cores: Option<f64>,
    /// The fsyncs of the node whose metrics were read.
    pub fsyncs: Option<Fsyncs>,
}

impl Probe {
    /// Read the CPU time of `pids` and the fsync histogram `fsync_metric` of the page at
    /// `metrics_url`.
    pub async fn start(
        client: &reqwest::Client,
        pids: Vec<u32>,
        metrics_url: String,
        fsync_metric: &'static str,
    ) -> Self {
        let cpu = total_cpu(&pids);
        let fsyncs = scrape(client, &metrics_url, fsync_metric).await;
        Self { pids, metrics_url, fsync_metric, cpu, fsyncs, at: Instant::now() }
    }

    /// Read again; what changed, per second of the probe's own time (which may outlast the
    /// load's measured window: requests in flight when it closes still complete).
    pub async fn finish(self, client: &reqwest::Client) -> Probed {
        let cpu = total_cpu(&self.pids);
        let fsyncs = scrape(client, &self.metrics_url, self.fsync_metric).await;
        let elapsed = self.at.elapsed().as_secs_f64();
        Probed {
            cpu_cores: self.cpu.zip(cpu).map(|(before, after)| (after - before) / elapsed.max(1e-9)),
            fsyncs: self.fsyncs.zip(fsyncs).map(|(before, after)| Fsyncs::between(before, after, elapsed)),
        }
    }
}

/// CPU seconds the processes `pids` used, if every one can be read.
pub fn total_cpu(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&pid| process_cpu_secs(pid)).sum()
}

async fn scrape(client: &reqwest::Client, url: &str, metric: &str) -> Option<SumCount> {
    let page = client.get(url).send().await.ok()?.text().await.ok()?;
    Some(sum_count(&page, metric))
}

/// Who leads a cluster, in which term, as one of its members says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Leadership {
    /// The leader's id (raft-kv's node id, etcd's member id).
    pub leader: u64,
    /// The Raft term.
    pub term: u64,
}

impl Leadership {
    /// From raft-kv's `GET /admin/metrics`; `None` if it names no leader.
    pub fn of_raft_kv(metrics: &Value) -> Option<Self> {
        Some(Self { leader: metrics["current_leader"].as_u64()?, term: metrics["current_term"].as_u64()? })
    }

    /// From etcd's `POST /v3/maintenance/status` through its JSON gateway, which writes 64-bit
    /// numbers as strings; `None` if it names no leader (id 0).
    pub fn of_etcd(status: &Value) -> Option<Self> {
        let number = |field: &str| status[field].as_str()?.parse::<u64>().ok();
        let leader = number("leader").filter(|&id| id != 0)?;
        Some(Self { leader, term: number("raftTerm")? })
    }
}

/// Both clusters' leadership at one moment, each as its leader of the round's start says;
/// `None` where it could not be read or named no leader.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Leaders {
    /// raft-kv's.
    pub raft_kv: Option<Leadership>,
    /// etcd's.
    pub etcd: Option<Leadership>,
}

impl Leaders {
    /// Whether a leader or term may have changed between `self` and `after`: either differs,
    /// or a reading is missing (a leader that does not answer may be being replaced).
    pub fn changed(&self, after: &Self) -> bool {
        [(self.raft_kv, after.raft_kv), (self.etcd, after.etcd)]
            .into_iter()
            .any(|(before, after)| before.is_none() || before != after)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Fsyncs, Leaders, Leadership, MachineCpu, SumCount, cpu_secs_of_stat, sum_count};

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "4242 (etcd server) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 0 0";
        assert_eq!(cpu_secs_of_stat(stat), Some(3.0));
        assert_eq!(cpu_secs_of_stat("garbage"), None);
    }

    #[test]
    fn machine_busy_share_leaves_out_idle_and_iowait() {
        let before = MachineCpu::parse("cpu  100 0 100 700 100 0 0 0 0 0").expect("parses");
        let after = MachineCpu::parse("cpu  200 0 200 800 200 0 0 0 0 0").expect("parses");
        assert_eq!(after.busy_since(&before), Some(0.5));
        assert!(MachineCpu::parse("cpu0 1 2 3 4").is_none());
    }

    #[test]
    fn histogram_sum_and_count_add_up_over_labels() {
        let page = "# HELP x\n\
            quorate_file_store_fsync_duration_seconds_bucket{node_id=\"1\",le=\"0.001\"} 3\n\
            quorate_file_store_fsync_duration_seconds_sum{node_id=\"1\"} 0.5\n\
            quorate_file_store_fsync_duration_seconds_count{node_id=\"1\"} 10\n\
            quorate_file_store_fsync_duration_seconds_count{node_id=\"2\"} 5\n\
            etcd_disk_wal_fsync_duration_seconds_sum 0.25\n\
            etcd_disk_wal_fsync_duration_seconds_count 7\n";
        assert_eq!(sum_count(page, "quorate_file_store_fsync_duration_seconds"), SumCount { sum: 0.5, count: 15.0 });
        assert_eq!(sum_count(page, "etcd_disk_wal_fsync_duration_seconds"), SumCount { sum: 0.25, count: 7.0 });
    }

    #[test]
    fn fsyncs_per_second_count_the_probe_time() {
        let before = SumCount { sum: 1.0, count: 100.0 };
        let after = SumCount { sum: 1.5, count: 1100.0 };
        assert_eq!(Fsyncs::between(before, after, 12.5), Fsyncs { count: 1000.0, per_sec: 80.0, mean_us: 500.0 });
        assert_eq!(Fsyncs::between(before, before, 1.0).mean_us, 0.0);
    }

    #[test]
    fn leadership_is_read_from_raft_kv_metrics_and_etcd_status() {
        let metrics = json!({ "state": "Leader", "current_leader": 2, "current_term": 3 });
        assert_eq!(Leadership::of_raft_kv(&metrics), Some(Leadership { leader: 2, term: 3 }));
        assert_eq!(Leadership::of_raft_kv(&json!({ "current_leader": null, "current_term": 3 })), None);
        let status = json!({ "leader": "13668033151171901709", "raftTerm": "2", "header": { "raft_term": "2" } });
        assert_eq!(Leadership::of_etcd(&status), Some(Leadership { leader: 13_668_033_151_171_901_709, term: 2 }));
        assert_eq!(Leadership::of_etcd(&json!({ "leader": "0", "raftTerm": "2" })), None);
    }

    #[test]
    fn a_new_term_a_new_leader_or_a_missing_reading_is_a_change() {
        let at = |leader, term| Some(Leadership { leader, term });
        let before = Leaders { raft_kv: at(1, 2), etcd: at(7, 2) };
        assert!(!before.changed(&before));
        assert!(before.changed(&Leaders { raft_kv: at(1, 3), ..before }));
        assert!(before.changed(&Leaders { etcd: at(8, 2), ..before }));
        assert!(before.changed(&Leaders { etcd: None, ..before }));
        let unread = Leaders { raft_kv: None, ..before };
        assert!(unread.changed(&unread));
    }
}
