//! The `raft-kv bench` command: a closed-loop write load generator.
//!
//! `clients` tasks each send their share of `ops` PUTs, one at a time, to the target and
//! record each successful write's latency. Reports writes per second and latency percentiles.
//!
//! With [`Api::Etcd`] the same load goes to an etcd v3 cluster through its JSON gateway
//! (`POST /v3/kv/put`), so that both systems are measured by one client over HTTP/JSON.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::node::BoxError;

/// Which API the targets speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Api {
    /// raft-kv: `PUT /kv/{key}` with the value as body.
    #[default]
    RaftKv,
    /// etcd v3's JSON gateway: `POST /v3/kv/put` with base64 key and value.
    Etcd,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The API of the targets.
    pub api: Api,
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
        let (client, value, api) = (client.clone(), value.clone(), opts.api);
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            for i in 0..share {
                let t = Instant::now();
                let key = format!("bench-{c}-{i}");
                let r = match api {
                    Api::RaftKv => client.put(format!("{target}/kv/{key}")).body(value.clone()),
                    Api::Etcd => {
                        let body =
                            serde_json::json!({ "key": base64(key.as_bytes()), "value": base64(value.as_bytes()) });
                        client.post(format!("{target}/v3/kv/put")).json(&body)
                    }
                };
                let r = r.send().await;
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

/// Standard base64 with padding, for etcd's JSON gateway.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")];
        for (plain, encoded) in cases {
            assert_eq!(super::base64(plain.as_bytes()), encoded);
        }
    }
}
