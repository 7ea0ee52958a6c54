//! Clients: random reads, writes and compare-and-set on a few keys, recorded as a history.

use std::time::Duration;

use quorate::testing::linearizability::{KvInput, KvOp, KvOutput};
use quorate::testing::{Request, Response};
use quorate::{ClientWriteError, RaftError, ReadPolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, timeout};

use crate::cluster::{Shared, lock};

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OpKind {
    Get,
    Put(String),
    Cas { expected: Option<String>, new: Option<String> },
}

/// What it got back; `None` in [`Op::output`] means the outcome is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OpOutput {
    Value(Option<String>),
    Written,
    Swapped(bool),
}

/// One operation of the history, timed in virtual nanoseconds since the run started.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub kind: OpKind,
    pub call: u64,
    /// When the answer came; `None` if the outcome is unknown (it may take effect any time).
    pub ret: Option<u64>,
    pub output: Option<OpOutput>,
}

/// How long a client waits for an answer before it counts the outcome as unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// Run one client until `until`, returning its history.
pub async fn run_client(c: Shared, client: usize, seed: u64, keys: usize, start: Instant, until: Instant) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut history = Vec::new();
    let mut counter = 0u64;
    let nanos = |t: Instant| t.duration_since(start).as_nanos() as u64;
    while Instant::now() < until {
        let key = format!("k{}", rng.random_range(0..keys));
        counter += 1;
        let value = format!("c{client}-{counter}");
        let kind = match rng.random_range(0..10) {
            0..4 => OpKind::Get,
            4..8 => OpKind::Put(value),
            _ => {
                let expected = if rng.random_bool(0.3) {
                    None
                } else {
                    Some(format!("c{}-{}", rng.random_range(0..4), rng.random_range(1..counter + 1)))
                };
                OpKind::Cas { expected, new: Some(value) }
            }
        };
        // Most clients go to the leader they hear of; some to any node.
        let target = {
            let g = lock(&c);
            let running = g.running();
            let leader = g.known_leader();
            if running.is_empty() {
                None
            } else if let (Some(l), true) = (leader, rng.random_bool(0.9)) {
                running.into_iter().find(|(id, _)| *id == l).map(|(id, r)| (id, r, g.nodes[&id].sm.clone()))
            } else {
                let (id, r) = running[rng.random_range(0..running.len())].clone();
                Some((id, r, g.nodes[&id].sm.clone()))
            }
        };
        let Some((_, raft, sm)) = target else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let call = Instant::now();
        let outcome = match &kind {
            OpKind::Get => match timeout(OP_TIMEOUT, raft.ensure_linearizable(ReadPolicy::ReadIndex)).await {
                Ok(Ok(_)) => Some(Some(OpOutput::Value(sm.data().get(&key).cloned()))),
                // A read that failed had no effect: leave it out of the history.
                _ => None,
            },
            OpKind::Put(v) => {
                write(&raft, Request::Set { key: key.clone(), value: v.clone() }, |_| OpOutput::Written).await
            }
            OpKind::Cas { expected, new } => {
                let req = Request::CompareAndSet { key: key.clone(), expected: expected.clone(), new: new.clone() };
                write(&raft, req, |r| OpOutput::Swapped(r.ok)).await
            }
        };
        if outcome.is_none() && std::env::var("SIM_PRINT_REFUSED").is_ok() {
            println!("  refused c{client} {key} {kind:?} at {}", nanos(call));
        }
        let Some(output) = outcome else {
            // Back off a little after a refusal, as a real client would.
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
            continue;
        };
        let ret = output.as_ref().map(|_| nanos(Instant::now()));
        history.push(Op { client, key, kind, call: nanos(call), ret, output });
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..5))).await;
    }
    history
}

/// Propose a write. `None`: it certainly did not happen; `Some(None)`: unknown outcome;
/// `Some(Some(out))`: it happened with that answer.
async fn write(
    raft: &quorate::Raft<quorate::testing::TypeConfig>,
    req: Request,
    answer: impl Fn(&Response) -> OpOutput,
) -> Option<Option<OpOutput>> {
    match timeout(OP_TIMEOUT, raft.client_write(req)).await {
        Ok(Ok(resp)) => Some(Some(answer(&resp.data))),
        Ok(Err(e))
            if std::env::var("SIM_PRINT_REFUSED").is_ok()
                && !matches!(e, RaftError::Fatal(_) | RaftError::APIError(ClientWriteError::OutcomeUnknown { .. })) =>
        {
            println!("  refusal: {e}");
            None
        }
        Ok(Err(RaftError::APIError(
            ClientWriteError::ForwardToLeader(_)
            | ClientWriteError::Discarded { .. }
            | ClientWriteError::Overloaded
            | ClientWriteError::InvalidMembership(_)
            | ClientWriteError::MembershipChangeInProgress { .. },
        ))) => None,
        // The node stopped, the outcome was lost, or no answer in time: it may or may not have
        // happened.
        Ok(Err(RaftError::Fatal(_) | RaftError::APIError(ClientWriteError::OutcomeUnknown { .. }))) | Err(_) => {
            Some(None)
        }
    }
}

impl Op {
    /// The operation as the linearizability checker takes it.
    pub fn to_kv_op(&self) -> KvOp {
        let input = match &self.kind {
            OpKind::Get => KvInput::get(&self.key),
            OpKind::Put(v) => KvInput::put(&self.key, v),
            OpKind::Cas { expected, new } => KvInput::compare_and_set(&self.key, expected.as_deref(), new.as_deref()),
        };
        let client = self.client as u64;
        match (&self.output, self.ret) {
            (Some(out), Some(at)) => {
                let output = match out {
                    OpOutput::Value(v) => KvOutput::Get(v.clone()),
                    OpOutput::Written => KvOutput::Put,
                    OpOutput::Swapped(b) => KvOutput::CompareAndSet(*b),
                };
                KvOp::returned(client, input, self.call, at, output)
            }
            _ => KvOp::unknown(client, input, self.call),
        }
    }
}
