//! The `raft-kv bench` command: a closed-loop write load generator.
//!
//! `clients` tasks each send their share of `ops` PUTs, one at a time, to the target and
//! record each successful write's latency. Reports writes per second and latency percentiles.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::node::BoxError;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Base URLs of the nodes to send to, e.g. `http://127.0.0.1:8001`; clients are spread
    /// over them round-robin.
    pub targets: Vec<String>,
    /// Concurrent clients.
    pub clients: usize,
    /// Total writes.
    pub ops: usize,
    /// Bytes of each value.
    pub value_size: usize,
}

/// What a run measured.
#[derive(Debug)]
pub struct BenchReport {
    /// Writes answered 200.
    pub ok: u64,
    /// Writes answered otherwise, or not at all.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of successful writes, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        write!(
            f,
            "{} writes ok, {} errors in {:.2} s: {:.0} writes/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.ok,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.ok as f64 / self.elapsed.as_secs_f64(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.latency_us.max() as f64 / 1000.0,
        )
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 100 s at 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant histogram bounds are valid")
}

/// Run the load and measure it.
///
/// # Errors
/// If no target is given or the HTTP client cannot be built.
pub async fn run(opts: &BenchOptions) -> Result<BenchReport, BoxError> {
    if opts.targets.is_empty() || opts.clients == 0 {
        return Err("bench needs at least one target and one client".into());
    }
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(opts.clients).timeout(Duration::from_secs(10)).build()?;
    let value = "x".repeat(opts.value_size);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(opts.clients);
    for c in 0..opts.clients {
        let share = opts.ops / opts.clients + usize::from(c < opts.ops % opts.clients);
        let target = opts.targets[c % opts.targets.len()].trim_end_matches('/').to_string();
        let (client, value) = (client.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            for i in 0..share {
                let t = Instant::now();
                let r = client.put(format!("{target}/kv/bench-{c}-{i}")).body(value.clone()).send().await;
                match r {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.bytes().await;
                        ok += 1;
                        let _ = hist.record(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
            }
            (hist, ok, errors)
        }));
    }
    let mut report = BenchReport { ok: 0, errors: 0, elapsed: Duration::ZERO, latency_us: histogram() };
    for t in tasks {
        let (hist, ok, errors) = t.await?;
        let _ = report.latency_us.add(&hist);
        report.ok += ok;
        report.errors += errors;
    }
    report.elapsed = start.elapsed();
    Ok(report)
}
