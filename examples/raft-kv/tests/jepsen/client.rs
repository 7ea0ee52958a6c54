//! The clients: each sends reads, writes and compare-and-sets to random nodes, one at a time,
//! and records every operation with its call and return times and its outcome, mapped from the
//! HTTP answer strictly by the README's status contract.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quorate::testing::linearizability::{KvInput, KvOp, KvOutput};
use serde_json::{Value, json};

use crate::rng::Rng;

/// How long a client waits for an answer before it counts the operation's outcome unknown.
/// Longer than the nodes' `--request-timeout-ms`, so that most waits end in the node's 504.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// How many operations go to one generation of keys before the clients move to fresh keys
/// (as Jepsen's independent keys): a key's history stays short enough for the checker
/// however many operations of unknown outcome a run piles up.
const OPS_PER_KEY_GENERATION: u64 = 600;

/// The kinds of operation, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Get,
    Put,
    Cas,
    /// A PUT to a key of its own, never written again: every acknowledged one must be there
    /// at the end.
    Append,
}

/// What became of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Answered with a result (200, or 409 `cas_mismatch`): in the history with its answer.
    Ok,
    /// Certainly did not happen (4xx, 503, or no connection): left out of the history.
    Failed,
    /// May or may not have happened (500, 504, timeout, connection lost after sending): in
    /// the history as [`KvOp::unknown`].
    Unknown,
}

/// What the clients share: the nodes' URLs, the clock, the key generation counter, the stop
/// flag.
pub struct Workload {
    pub urls: Vec<String>,
    pub http: reqwest::Client,
    pub start: Instant,
    pub keys: u64,
    pub ops: AtomicU64,
    pub stop: AtomicBool,
}

/// What one client recorded.
#[derive(Default)]
pub struct Record {
    pub history: Vec<KvOp>,
    pub counts: BTreeMap<(Kind, Outcome), u64>,
    /// Answers that break the contract itself (a status with the wrong `outcome`, a body that
    /// is not JSON, a status the contract does not list).
    pub contract_violations: Vec<String>,
    /// Acknowledged appends: key and value.
    pub appended: Vec<(String, String)>,
    /// CASes answered 200 (the `Cas` results that swapped; the rest were 409).
    pub cas_swapped: u64,
}

/// One HTTP exchange's result, before it is turned into an operation.
enum Answer {
    /// No connection was made: the request never left this process.
    NotSent,
    /// Sent, and no whole answer came back.
    Lost,
    Status(u16, Value),
}

impl Workload {
    /// Nanoseconds since the run started: the history's clock.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Send `req` and read its JSON answer.
    async fn exchange(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = match req.timeout(REQUEST_TIMEOUT).send().await {
            Ok(resp) => resp,
            Err(e) if e.is_connect() => return Answer::NotSent,
            Err(_) => return Answer::Lost,
        };
        let status = resp.status().as_u16();
        match resp.bytes().await {
            Ok(body) => Answer::Status(status, serde_json::from_slice(&body).unwrap_or(Value::Null)),
            Err(_) => Answer::Lost,
        }
    }
}

/// Run client `id` until the workload's stop flag is set.
pub async fn run(work: Arc<Workload>, id: u64, seed: u64) -> Record {
    let mut rng = Rng::new(seed);
    let mut record = Record::default();
    // The last value this client saw of each key: what its CAS expects.
    let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut written = 0u64;
    while !work.stop.load(Ordering::Relaxed) {
        let generation = work.ops.fetch_add(1, Ordering::Relaxed) / OPS_PER_KEY_GENERATION;
        let key = format!("k{}-{}", generation, rng.below(work.keys));
        let url = &work.urls[rng.below(work.urls.len() as u64) as usize];
        written += 1;
        let value = format!("c{id}-{written}");
        let roll = rng.below(100);
        let (kind, input) = match roll {
            0..40 => (Kind::Get, KvInput::get(&key)),
            40..65 => (Kind::Put, KvInput::put(&key, &value)),
            65..90 => {
                let expected = seen.get(&key).cloned().flatten();
                (Kind::Cas, KvInput::compare_and_set(&key, expected.as_deref(), Some(&value)))
            }
            _ => (Kind::Append, KvInput::put(format!("a-c{id}-{written}"), &value)),
        };
        let call = work.now();
        let answer = work.exchange(request(&work.http, url, &input)).await;
        let at = work.now();
        let (outcome, output) = classify(&input, answer, &mut record.contract_violations);
        *record.counts.entry((kind, outcome)).or_default() += 1;
        match (outcome, output) {
            (Outcome::Ok, Some(output)) => {
                match &output {
                    KvOutput::Get(v) => {
                        seen.insert(key.clone(), v.clone());
                    }
                    KvOutput::Put | KvOutput::CompareAndSet(true) => {
                        record.cas_swapped += u64::from(kind == Kind::Cas);
                        seen.insert(key.clone(), Some(value.clone()));
                    }
                    _ => {}
                }
                if kind == Kind::Append {
                    record.appended.push((input.key().to_string(), value));
                }
                record.history.push(KvOp::returned(id, input, call, at, output));
            }
            (Outcome::Unknown, _) => record.history.push(KvOp::unknown(id, input, call)),
            _ => {
                // Did not happen: pace the retry so a client does not spin on a node that
                // has no leader.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    record
}

/// The HTTP request of `input` to the node at `url`.
pub fn request(http: &reqwest::Client, url: &str, input: &KvInput) -> reqwest::RequestBuilder {
    match input {
        KvInput::Get { key } => http.get(format!("{url}/kv/{key}")),
        KvInput::Put { key, value } => http.put(format!("{url}/kv/{key}")).body(value.clone()),
        KvInput::Delete { key } => http.delete(format!("{url}/kv/{key}")),
        KvInput::CompareAndSet { key, expected, new } => {
            http.post(format!("{url}/kv/{key}/cas")).json(&json!({ "expected": expected, "new": new }))
        }
    }
}

/// The outcome of `input` given its answer, by the README's contract: 200 and a CAS's 409
/// `cas_mismatch` are results; other 4xx and 503 certainly did not happen; 500, 504 and an
/// exchange lost after sending are unknown. An answer that breaks the contract is noted in
/// `violations` and counted unknown.
fn classify(input: &KvInput, answer: Answer, violations: &mut Vec<String>) -> (Outcome, Option<KvOutput>) {
    let (status, body) = match answer {
        Answer::NotSent => return (Outcome::Failed, None),
        Answer::Lost => return (Outcome::Unknown, None),
        Answer::Status(status, body) => (status, body),
    };
    let mut violation = |what: String| violations.push(format!("{input}: {status} {body}: {what}"));
    if body.is_null() {
        violation("the body is not JSON".into());
        return (Outcome::Unknown, None);
    }
    let output = match (status, input) {
        (200, KvInput::Get { .. }) => match &body["value"] {
            Value::Null => Some(KvOutput::Get(None)),
            Value::String(v) => Some(KvOutput::Get(Some(v.clone()))),
            other => {
                violation(format!("a read answered the value {other}"));
                return (Outcome::Unknown, None);
            }
        },
        (200, KvInput::Put { .. }) => Some(KvOutput::Put),
        (200, KvInput::Delete { .. }) => Some(KvOutput::Delete),
        (200, KvInput::CompareAndSet { .. }) => Some(KvOutput::CompareAndSet(true)),
        (409, KvInput::CompareAndSet { .. }) if body["error"] == "cas_mismatch" => Some(KvOutput::CompareAndSet(false)),
        _ => None,
    };
    if let Some(output) = output {
        if body["ok"] != json!(status == 200) {
            violation("`ok` disagrees with the status".into());
        }
        return (Outcome::Ok, Some(output));
    }
    let (outcome, expected) = match status {
        400..500 | 503 => (Outcome::Failed, "not_applied"),
        500 | 504 => (Outcome::Unknown, "unknown"),
        _ => {
            violation("a status the contract does not list".into());
            return (Outcome::Unknown, None);
        }
    };
    if body["outcome"] != expected {
        violation(format!("`outcome` should be {expected:?}"));
    }
    (outcome, None)
}
