//! The same load sent by `wrk` (a C load generator, closed loop, keep-alive), as a check on
//! the bench's own client: Lua scripts that PUT distinct keys to raft-kv or to etcd's JSON
//! gateway, and a parser of wrk's report.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::System;

/// Shared by both scripts: a per-thread id for distinct keys, and base64 for etcd's gateway.
const COMMON_LUA: &str = r#"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    for k = 0, 3 do
      if k <= #s - i + 1 then
        local d = math.floor(n / 64 ^ (3 - k)) % 64
        out[#out + 1] = alphabet:sub(d + 1, d + 1)
      else
        out[#out + 1] = "="
      end
    end
  end
  return table.concat(out)
end
counter = 0
"#;

/// The request function for `system`, PUTting `value_size`-byte values.
fn script(system: System, value_size: usize) -> String {
    let request = match system {
        System::RaftKv => format!(
            r#"
local value = string.rep("x", {value_size})
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/kv/wrk-" .. tid .. "-" .. counter, nil, value)
end
"#
        ),
        System::Etcd => format!(
            r#"
local value = base64(string.rep("x", {value_size}))
local headers = {{ ["Content-Type"] = "application/json" }}
request = function()
  counter = counter + 1
  local body = '{{"key":"' .. base64("wrk-" .. tid .. "-" .. counter) .. '","value":"' .. value .. '"}}'
  return wrk.format("POST", "/v3/kv/put", headers, body)
end
"#
        ),
    };
    format!("{COMMON_LUA}{request}")
}

/// What wrk measured.
///
/// wrk's own `Requests/sec` counts every completed response, errors included; this counts
/// successes only: the completed requests less the error statuses and the socket errors.
/// A socket error on a request that never completed is subtracted too, so with socket errors
/// `ok` is a lower bound; without, it is exact. wrk's latency percentiles cover every
/// completed response, errors included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkReport {
    /// Requests that succeeded (see above).
    pub ok: u64,
    /// The run's duration as wrk measured it, seconds.
    pub elapsed_secs: f64,
    /// Responses wrk counts as `Non-2xx or 3xx` (status 400 or more), plus socket errors
    /// (connect, read, write, timeout).
    pub errors: u64,
    /// Median latency, microseconds; `None` if no request succeeded.
    pub p50_us: Option<f64>,
    /// 99th percentile, microseconds; `None` if no request succeeded.
    pub p99_us: Option<f64>,
}

impl WrkReport {
    /// Successful requests per second.
    pub fn ok_per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed_secs.max(1e-9)
    }
}

/// Whether `wrk` can be run.
pub fn available() -> bool {
    std::process::Command::new("wrk").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Run wrk against `target` (`http://host:port`) with `connections` connections for
/// `duration`; `dir` holds the script.
///
/// # Errors
/// If wrk cannot run or its report cannot be read.
pub async fn run(
    dir: &Path,
    system: System,
    target: &str,
    connections: usize,
    duration: Duration,
    value_size: usize,
) -> Result<WrkReport, String> {
    let path = dir.join(format!("{}.lua", system.slug()));
    std::fs::write(&path, script(system, value_size)).map_err(|e| format!("{}: {e}", path.display()))?;
    let threads = connections.min(2);
    let output = tokio::process::Command::new("wrk")
        .args(["-t", &threads.to_string(), "-c", &connections.to_string()])
        .args(["-d", &format!("{}s", duration.as_secs().max(1)), "--latency", "--timeout", "10s", "-s"])
        .arg(&path)
        .arg(target)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    parse(&text).ok_or_else(|| format!("unreadable wrk report: {text} {}", String::from_utf8_lossy(&output.stderr)))
}

/// `1.23ms`, `512.00us`, `1.01s`, `2.00m`, `1.00h` in microseconds.
fn micros(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(n * scale)
}

/// Read wrk's `--latency` report.
fn parse(text: &str) -> Option<WrkReport> {
    let field =
        |prefix: &str| text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|rest| rest.trim().to_string()));
    // "38811 requests in 5.00s, 5.12MB read"
    let (requests, elapsed) = text.lines().find_map(|l| l.trim().split_once(" requests in "))?;
    let requests: u64 = requests.parse().ok()?;
    let elapsed_secs = micros(elapsed.split(',').next()?.trim())? / 1e6;
    let non_2xx: u64 = field("Non-2xx or 3xx responses:").and_then(|v| v.parse().ok()).unwrap_or(0);
    let socket_errors: u64 = field("Socket errors:")
        .map(|v| v.split(',').filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    let p50_us = micros(field("50%")?.as_str())?;
    let p99_us = micros(field("99%")?.as_str())?;
    let errors = non_2xx + socket_errors;
    let ok = requests.saturating_sub(errors);
    let succeeded = ok > 0;
    Some(WrkReport {
        ok,
        elapsed_secs,
        errors,
        p50_us: succeeded.then_some(p50_us),
        p99_us: succeeded.then_some(p99_us),
    })
}

#[cfg(test)]
mod tests {
    use super::{micros, parse};

    #[test]
    fn a_wrk_report_counts_successes_only() {
        let text = "Running 5s test @ http://127.0.0.1:8001
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.01ms  20.31ms   80.00%
    Req/Sec     3.90k   200.00     4.20k    70.00%
  Latency Distribution
     50%    1.95ms
     75%    2.40ms
     90%    3.10ms
     99%    6.52ms
  38811 requests in 5.00s, 5.12MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   7761.43
Transfer/sec:      1.02MB
";
        let r = parse(text).expect("parsed");
        assert_eq!((r.ok, r.errors, r.elapsed_secs), (38_804, 7, 5.0));
        assert_eq!(r.ok_per_sec(), 7760.8);
        assert_eq!(r.p50_us, Some(1950.0));
        assert_eq!(r.p99_us, Some(6520.0));
        assert_eq!(micros("512.00us"), Some(512.0));
        assert_eq!(micros("1.50s"), Some(1_500_000.0));
    }

    #[test]
    fn a_wrk_run_without_a_success_has_no_latency() {
        let text = "Running 2s test @ http://127.0.0.1:8001
  1 threads and 1 connections
  Latency Distribution
     50%    1.00ms
     99%    2.00ms
  1200 requests in 2.00s, 100.00KB read
  Non-2xx or 3xx responses: 1200
Requests/sec:    600.00
";
        let r = parse(text).expect("parsed");
        assert_eq!((r.ok, r.errors, r.ok_per_sec()), (0, 1200, 0.0));
        assert_eq!((r.p50_us, r.p99_us), (None, None));
    }
}
