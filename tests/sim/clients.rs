//! Clients: random reads (by every read path quorate offers), writes and compare-and-set on a
//! few keys, recorded as a history.
//!
//! A read takes one of four paths:
//!
//! - `ReadIndex` / `Lease`: `ensure_linearizable` on a node that leads (or believes it does),
//!   then read that node's state machine;
//! - `FollowerReadIndex` / `FollowerLease`: `get_read_index` with that policy on the leader,
//!   then `wait_applied(read_log_id)` on some node (a follower, or the leader itself), then
//!   read *that* node's state machine.
//!
//! A read is called before its first step and returns once the value is read; one that fails
//! had no effect and stays out of the history. Every step is bounded by the op timeout.

use std::time::Duration;

use quorate::testing::linearizability::{KvInput, KvOp, KvOutput};
use quorate::testing::{MemStateMachine, Request, Response, TypeConfig};
use quorate::{ClientWriteError, Raft, RaftError, ReadPolicy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, timeout};

use crate::cluster::{Shared, lock};

/// How a read was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReadPath {
    /// `ensure_linearizable(ReadIndex)` on the leader, read there.
    ReadIndex,
    /// `ensure_linearizable(LeaseRead)` on the leader, read there.
    Lease,
    /// `get_read_index(ReadIndex)` on the leader, `wait_applied` and read on another node.
    FollowerReadIndex,
    /// `get_read_index(LeaseRead)` on the leader, `wait_applied` and read on another node.
    FollowerLease,
}

impl ReadPath {
    pub const ALL: [ReadPath; 4] =
        [ReadPath::ReadIndex, ReadPath::Lease, ReadPath::FollowerReadIndex, ReadPath::FollowerLease];

    fn policy(self) -> ReadPolicy {
        match self {
            ReadPath::ReadIndex | ReadPath::FollowerReadIndex => ReadPolicy::ReadIndex,
            ReadPath::Lease | ReadPath::FollowerLease => ReadPolicy::LeaseRead,
        }
    }

    /// A path drawn at random: leader and follower reads, each policy, equally often.
    pub fn random(rng: &mut StdRng) -> Self {
        Self::ALL[rng.random_range(0..Self::ALL.len())]
    }
}

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OpKind {
    Get(ReadPath),
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

/// One operation of the history, timed by the run's `HistoryClock`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub kind: OpKind,
    pub call: u64,
    /// When the answer came; `None` if the outcome is unknown (it may take effect any time).
    pub ret: Option<u64>,
    pub output: Option<OpOutput>,
    /// Who served it, for reading a witness: e.g. `n2 read T3-N2.41 on n3`.
    pub served: String,
}

/// How long a client waits for an answer before it counts the outcome as unknown.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// A node to send a request to: its id, handle and state machine.
pub type Target = (u64, Raft<TypeConfig>, MemStateMachine);

/// Run one client until `until`, returning its history.
pub async fn run_client(c: Shared, client: usize, seed: u64, keys: usize, until: Instant) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut history = Vec::new();
    let mut counter = 0u64;
    // A client of a group that ended stops: nobody serves it any more.
    while Instant::now() < until && !lock(&c).ended {
        let key = format!("k{}", rng.random_range(0..keys));
        counter += 1;
        let value = format!("c{client}-{counter}");
        let kind = match rng.random_range(0..10) {
            0..4 => OpKind::Get(ReadPath::random(&mut rng)),
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
        let is_read = matches!(kind, OpKind::Get(_));
        let Some(target) = pick_target(&c, &mut rng, is_read) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let op = match kind {
            OpKind::Get(path) => {
                let follower = if matches!(path, ReadPath::FollowerReadIndex | ReadPath::FollowerLease) {
                    pick_any(&c, &mut rng)
                } else {
                    None
                };
                read(&c, client, key, path, target, follower).await
            }
            kind => write(&c, client, key, kind, &target.1).await,
        };
        let Some(op) = op else {
            // Back off a little after a refusal, as a real client would.
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
            continue;
        };
        history.push(op);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..5))).await;
    }
    history
}

/// Where to send: most requests go to the leader some node knows of, some to any node; reads
/// go half the time to a node that believes it leads, which may have been deposed.
pub fn pick_target(c: &Shared, rng: &mut StdRng, is_read: bool) -> Option<Target> {
    let g = lock(c);
    let running = g.running();
    if running.is_empty() {
        return None;
    }
    let self_declared = g.self_declared_leaders();
    let id = if is_read && !self_declared.is_empty() && rng.random_bool(0.5) {
        self_declared[rng.random_range(0..self_declared.len())]
    } else if let (Some(l), true) = (g.known_leader(), rng.random_bool(0.9)) {
        l
    } else {
        running[rng.random_range(0..running.len())].0
    };
    let n = g.nodes.get(&id)?;
    Some((id, n.raft.clone()?, n.sm.clone()))
}

/// Any running node.
pub fn pick_any(c: &Shared, rng: &mut StdRng) -> Option<Target> {
    let g = lock(c);
    let running = g.running();
    if running.is_empty() {
        return None;
    }
    let (id, raft) = running[rng.random_range(0..running.len())].clone();
    Some((id, raft, g.nodes.get(&id)?.sm.clone()))
}

/// Read `key` by `path` from `leader` (and `follower`, for a follower read; the leader itself
/// if none). `None` if the read failed: it had no effect.
pub async fn read(
    c: &Shared,
    client: usize,
    key: String,
    path: ReadPath,
    leader: Target,
    follower: Option<Target>,
) -> Option<Op> {
    let call = lock(c).clock.stamp();
    let policy = path.policy();
    let (leader_id, leader_raft, leader_sm) = leader;
    let served = timeout(OP_TIMEOUT, async {
        match path {
            ReadPath::ReadIndex | ReadPath::Lease => {
                let read_log_id = leader_raft.ensure_linearizable(policy).await.ok()?;
                // A node that crashed meanwhile answers nothing (its state may be rolled back).
                let value = leader_sm.data_if_current()?.get(&key).cloned();
                Some((value, format!("n{leader_id} {path:?} at {}", display(read_log_id))))
            }
            ReadPath::FollowerReadIndex | ReadPath::FollowerLease => {
                let index = leader_raft.get_read_index(policy).await.ok()?;
                // A leader that crashed meanwhile answers nothing either (its Raft task may
                // still run on until its host has stopped it).
                if !leader_sm.is_current() {
                    return None;
                }
                let (fid, fraft, fsm) = follower.unwrap_or((leader_id, leader_raft.clone(), leader_sm.clone()));
                fraft.wait_applied(index.read_log_id).await.ok()?;
                // Read in the same step as the wait ends: nothing runs in between. A node that
                // crashed meanwhile answers nothing (its state may be rolled back).
                let value = fsm.data_if_current()?.get(&key).cloned();
                Some((value, format!("n{leader_id} {path:?} at {} read on n{fid}", display(index.read_log_id))))
            }
        }
    })
    .await;
    let (value, served) = served.ok().flatten()?;
    let (ret, newest) = {
        let mut g = lock(c);
        (g.clock.stamp(), g.newest_leader)
    };
    let served = match newest {
        Some((term, id)) => format!("{served}; newest leader then: n{id} in term {term}"),
        None => served,
    };
    Some(Op {
        client,
        key,
        kind: OpKind::Get(path),
        call,
        ret: Some(ret),
        output: Some(OpOutput::Value(value)),
        served,
    })
}

fn display(log_id: Option<quorate::LogId<TypeConfig>>) -> String {
    log_id.map_or("none".to_string(), |l| l.to_string())
}

/// Propose a write or compare-and-set to `raft`. `None`: it certainly did not happen.
pub async fn write(c: &Shared, client: usize, key: String, kind: OpKind, raft: &Raft<TypeConfig>) -> Option<Op> {
    let (req, answer): (Request, fn(&Response) -> OpOutput) = match &kind {
        OpKind::Put(v) => (Request::Set { key: key.clone(), value: v.clone() }, |_| OpOutput::Written),
        OpKind::Cas { expected, new } => {
            (Request::CompareAndSet { key: key.clone(), expected: expected.clone(), new: new.clone() }, |r| {
                OpOutput::Swapped(r.ok)
            })
        }
        OpKind::Get(_) => return None,
    };
    let call = lock(c).clock.stamp();
    let served = format!("n{}", raft.id());
    let output = match timeout(OP_TIMEOUT, raft.client_write(req)).await {
        Ok(Ok(resp)) => Some(answer(&resp.data)),
        Ok(Err(RaftError::APIError(
            ClientWriteError::ForwardToLeader(_)
            | ClientWriteError::Discarded { .. }
            | ClientWriteError::Overloaded
            | ClientWriteError::InvalidMembership(_)
            | ClientWriteError::MembershipChangeInProgress { .. },
        ))) => return None,
        // The node stopped, the outcome was lost, or no answer in time: it may or may not have
        // happened.
        Ok(Err(RaftError::Fatal(_) | RaftError::APIError(ClientWriteError::OutcomeUnknown { .. }))) | Err(_) => None,
    };
    let ret = output.as_ref().map(|_| lock(c).clock.stamp());
    Some(Op { client, key, kind, call, ret, output, served })
}

impl Op {
    /// The operation as the linearizability checker takes it.
    pub fn to_kv_op(&self) -> KvOp {
        let input = match &self.kind {
            OpKind::Get(_) => KvInput::get(&self.key),
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
