//! The `raft-kv bench` command: a closed-loop write load generator.
//!
//! `clients` tasks each send PUTs, one at a time, to the target over a keep-alive connection
//! of their own, and record each successful write's latency: either their share of a number
//! of writes ([`Load::Ops`]), or as many as they can in a time window after a warm-up
//! ([`Load::Timed`]). Reports writes per second and latency percentiles.
//!
//! With [`Api::Etcd`] the same load goes to an etcd v3 cluster through its JSON gateway
//! (`POST /v3/kv/put`), so that both systems are measured by one client over HTTP/JSON; the
//! `compare-etcd` command ([`crate::compare`]) runs both, alternated.

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

/// How much load to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// This many writes in all, every one measured; the run lasts as long as they take.
    Ops(usize),
    /// Writes for `warmup` (connections open, caches and the leader's batching settle: not
    /// measured), then for `measure`: the writes that complete within `measure` are counted.
    Timed {
        /// Load sent before measuring.
        warmup: Duration,
        /// The measured window.
        measure: Duration,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The API of the targets.
    pub api: Api,
    /// Base URLs of the nodes to send to, e.g. `http://127.0.0.1:8001`; clients are spread
    /// over them round-robin.
    pub targets: Vec<String>,
    /// Concurrent clients, each with its own keep-alive connection.
    pub clients: usize,
    /// How many writes, or for how long.
    pub load: Load,
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
    /// Wall time of the run (for [`Load::Timed`], the measured window).
    pub elapsed: Duration,
    /// Latency of successful writes, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl BenchReport {
    /// Successful writes per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0.5 for the median), in microseconds.
    pub fn latency_at(&self, q: f64) -> u64 {
        self.latency_us.value_at_quantile(q)
    }
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
            self.ops_per_sec(),
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

/// When a client sends and what it counts.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Count the writes that complete at or after this.
    measure_from: Instant,
    /// Send no write after this, and count none that completes after it (`None`: send the
    /// client's share of writes, all counted).
    until: Option<Instant>,
}

/// One client's requests: what it sends, to where.
struct Requests {
    client: reqwest::Client,
    api: Api,
    target: String,
    /// The value as raft-kv takes it (the body), or base64 for etcd, encoded once.
    value: String,
}

impl Requests {
    fn put(&self, key: &str) -> reqwest::RequestBuilder {
        match self.api {
            Api::RaftKv => self.client.put(format!("{}/kv/{key}", self.target)).body(self.value.clone()),
            Api::Etcd => {
                let body = format!(r#"{{"key":"{}","value":"{}"}}"#, base64(key.as_bytes()), self.value);
                self.client
                    .post(format!("{}/v3/kv/put", self.target))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
            }
        }
    }
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
    let window = match opts.load {
        Load::Ops(_) => Window { measure_from: start, until: None },
        Load::Timed { warmup, measure } => {
            Window { measure_from: start + warmup, until: Some(start + warmup + measure) }
        }
    };
    let mut tasks = Vec::with_capacity(opts.clients);
    for c in 0..opts.clients {
        let share = match opts.load {
            Load::Ops(ops) => ops / opts.clients + usize::from(c < ops % opts.clients),
            Load::Timed { .. } => usize::MAX,
        };
        let requests = Requests {
            client: client.clone(),
            api: opts.api,
            target: opts.targets[c % opts.targets.len()].trim_end_matches('/').to_string(),
            value: match opts.api {
                Api::RaftKv => value.clone(),
                Api::Etcd => base64(value.as_bytes()),
            },
        };
        tasks.push(tokio::spawn(client_loop(c, share, window, requests)));
    }
    let mut report = BenchReport { ok: 0, errors: 0, elapsed: Duration::ZERO, latency_us: histogram() };
    for t in tasks {
        let (hist, ok, errors) = t.await?;
        let _ = report.latency_us.add(&hist);
        report.ok += ok;
        report.errors += errors;
    }
    report.elapsed = match window.until {
        Some(until) => until - window.measure_from,
        None => start.elapsed(),
    };
    Ok(report)
}

/// Client `c`: send up to `share` writes one at a time within `window`; its latencies, writes
/// counted and errors counted.
async fn client_loop(c: usize, share: usize, window: Window, requests: Requests) -> (Histogram<u64>, u64, u64) {
    let mut hist = histogram();
    let (mut ok, mut errors) = (0u64, 0u64);
    for i in 0..share {
        let sent = Instant::now();
        if window.until.is_some_and(|until| sent >= until) {
            break;
        }
        let key = format!("bench-{c}-{i}");
        let answered = match requests.put(&key).send().await {
            Ok(resp) if resp.status().is_success() => resp.bytes().await.is_ok(),
            _ => false,
        };
        let done = Instant::now();
        if done < window.measure_from || window.until.is_some_and(|until| done > until) {
            continue;
        }
        if answered {
            ok += 1;
            let _ = hist.record(done.duration_since(sent).as_micros() as u64);
        } else {
            errors += 1;
        }
    }
    (hist, ok, errors)
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
