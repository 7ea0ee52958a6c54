//! One measurement: one client's load on one system at one connection count, with the
//! servers' readings over its measured window ([`super::probe`]) and both clusters' leaders
//! and terms before and after it.

use std::time::{Duration, Instant};

use super::probe::{self, Leaders, Leadership, MachineCpu, Probe, Probed};
use super::report::Sample;
use super::{Client, CompareOptions, System, wrk};
use crate::bench::{self, Api, BenchOptions, Load};
use crate::node::BoxError;

/// What a measurement sends its load to.
pub(super) struct Target {
    pub(super) system: System,
    /// The leader's base URL.
    pub(super) url: String,
    /// The leader's Prometheus page.
    pub(super) metrics_url: String,
    /// The system's processes.
    pub(super) pids: Vec<u32>,
}

/// What a client saw in its measured window.
struct Seen {
    ok_per_sec: f64,
    errors: u64,
    /// `None` if no write succeeded.
    p50_us: Option<f64>,
    /// `None` if no write succeeded.
    p99_us: Option<f64>,
}

/// One measurement of `target` by `client` at `connections`, `idle` being the other system.
///
/// # Errors
/// If the client cannot run.
pub(super) async fn measure(
    opts: &CompareOptions,
    round: usize,
    client: Client,
    target: &Target,
    idle: &Target,
    connections: usize,
) -> Result<Sample, BoxError> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let leaders_before = leaders(&http, [target, idle]).await;
    let (seen, closed) = match client {
        Client::Bench => with_bench(opts, &http, target, idle, connections).await?,
        Client::Wrk => with_wrk(opts, &http, target, idle, connections).await?,
    };
    let leaders_after = leaders(&http, [target, idle]).await;
    Ok(Sample {
        round,
        system: target.system,
        client,
        connections,
        ops_per_sec: seen.ok_per_sec,
        errors: seen.errors,
        p50_us: seen.p50_us,
        p99_us: seen.p99_us,
        server_cpu_cores: closed.probed.cpu_cores,
        client_cpu_cores: closed.client_cores,
        idle_system_cpu_cores: closed.idle_cores,
        machine_busy: closed.machine_busy,
        leader_fsyncs_per_sec: closed.probed.fsyncs.map(|f| f.per_sec),
        leader_fsync_mean_us: closed.probed.fsyncs.map(|f| f.mean_us),
        leader_changed: leaders_before.changed(&leaders_after),
        leaders_before,
        leaders_after,
    })
}

/// The bench client's load: its warm-up, then the window the probes watch.
async fn with_bench(
    opts: &CompareOptions,
    http: &reqwest::Client,
    target: &Target,
    idle: &Target,
    connections: usize,
) -> Result<(Seen, Closed), BoxError> {
    let bench_opts = BenchOptions {
        api: match target.system {
            System::RaftKv => Api::RaftKv,
            System::Etcd => Api::Etcd,
        },
        targets: vec![target.url.clone()],
        clients: connections,
        load: Load::Timed { warmup: opts.warmup, measure: opts.measure },
        value_size: opts.value_size,
    };
    let load = tokio::spawn(async move { bench::run(&bench_opts).await.map_err(|e| e.to_string()) });
    tokio::time::sleep(opts.warmup).await;
    let opened = Opened::read(http, target, idle).await;
    let report = load.await??;
    let closed = opened.close(http, idle).await;
    let latency = |q| (report.ok > 0).then(|| report.latency_at(q) as f64);
    let seen =
        Seen { ok_per_sec: report.ops_per_sec(), errors: report.errors, p50_us: latency(0.5), p99_us: latency(0.99) };
    Ok((seen, closed))
}

/// wrk's load: a run of its own for the warm-up, thrown away, then the measured run.
async fn with_wrk(
    opts: &CompareOptions,
    http: &reqwest::Client,
    target: &Target,
    idle: &Target,
    connections: usize,
) -> Result<(Seen, Closed), BoxError> {
    let run = |duration| wrk::run(&opts.work_dir, target.system, &target.url, connections, duration, opts.value_size);
    if !opts.warmup.is_zero() {
        run(opts.warmup).await?;
    }
    let opened = Opened::read(http, target, idle).await;
    let report = run(opts.measure).await?;
    let closed = Closed { client_cores: None, ..opened.close(http, idle).await };
    let seen =
        Seen { ok_per_sec: report.ok_per_sec(), errors: report.errors, p50_us: report.p50_us, p99_us: report.p99_us };
    Ok((seen, closed))
}

/// Both clusters' leaders now, each as the member the load goes to says.
async fn leaders(http: &reqwest::Client, targets: [&Target; 2]) -> Leaders {
    let mut leaders = Leaders::default();
    for target in targets {
        let read = leadership(http, target).await;
        match target.system {
            System::RaftKv => leaders.raft_kv = read,
            System::Etcd => leaders.etcd = read,
        }
    }
    leaders
}

async fn leadership(http: &reqwest::Client, target: &Target) -> Option<Leadership> {
    let request = match target.system {
        System::RaftKv => http.get(format!("{}/admin/metrics", target.url)),
        System::Etcd => http.post(format!("{}/v3/maintenance/status", target.url)).body("{}"),
    };
    let answer: serde_json::Value = request.send().await.ok()?.error_for_status().ok()?.json().await.ok()?;
    match target.system {
        System::RaftKv => Leadership::of_raft_kv(&answer),
        System::Etcd => Leadership::of_etcd(&answer),
    }
}

/// Readings taken when a measured window opens: the measured system's probe, the idle
/// system's CPU, the machine's, this process's.
struct Opened {
    probe: Probe,
    idle_cpu: Option<(f64, Instant)>,
    machine: Option<MachineCpu>,
    own_cpu: Option<(f64, Instant)>,
}

/// What was used by the time the window closed, in cores (the machine's as a share).
struct Closed {
    probed: Probed,
    idle_cores: Option<f64>,
    machine_busy: Option<f64>,
    client_cores: Option<f64>,
}

impl Opened {
    async fn read(http: &reqwest::Client, target: &Target, idle: &Target) -> Self {
        let probe =
            Probe::start(http, target.pids.clone(), target.metrics_url.clone(), target.system.fsync_metric()).await;
        let now = Instant::now();
        Self {
            probe,
            idle_cpu: probe::total_cpu(&idle.pids).map(|c| (c, now)),
            machine: MachineCpu::read(),
            own_cpu: probe::own_cpu_secs().map(|c| (c, now)),
        }
    }

    async fn close(self, http: &reqwest::Client, idle: &Target) -> Closed {
        let rate = |before: Option<(f64, Instant)>, after: Option<f64>| {
            before.zip(after).map(|((b, at), a)| (a - b) / at.elapsed().as_secs_f64().max(1e-9))
        };
        Closed {
            idle_cores: rate(self.idle_cpu, probe::total_cpu(&idle.pids)),
            client_cores: rate(self.own_cpu, probe::own_cpu_secs()),
            machine_busy: self.machine.zip(MachineCpu::read()).and_then(|(before, after)| after.busy_since(&before)),
            probed: self.probe.finish(http).await,
        }
    }
}

/// One line per sample, as it is measured.
pub(super) fn print_sample(s: &Sample) {
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or_else(|| "–".to_string(), f);
    let cores = |v| opt(v, &|c| format!("{c:.2}"));
    let ms = |v| opt(v, &|us| format!("{:.2}", us / 1000.0));
    println!(
        "  round {} {:>3} conns {:<7} ({}): {:>7.0} writes/s, p50 {} ms, p99 {} ms, {} errors; CPU: server {} \
         client {} idle system {}, machine busy {}; leader fsyncs/s {}, mean {} ms{}",
        s.round,
        s.connections,
        s.system.to_string(),
        s.client,
        s.ops_per_sec,
        ms(s.p50_us),
        ms(s.p99_us),
        s.errors,
        cores(s.server_cpu_cores),
        cores(s.client_cpu_cores),
        cores(s.idle_system_cpu_cores),
        opt(s.machine_busy, &|b| format!("{:.0} %", b * 100.0)),
        opt(s.leader_fsyncs_per_sec, &|f| format!("{f:.0}")),
        ms(s.leader_fsync_mean_us),
        if s.leader_changed {
            format!("; LEADER CHANGED: {:?} -> {:?}", s.leaders_before, s.leaders_after)
        } else {
            String::new()
        },
    );
}
