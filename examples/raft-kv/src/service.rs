//! [`KvService`]: the key-value operations as a node executes them against its Raft, shared by
//! the HTTP API (requests from clients) and the forwarding RPC (requests a follower relays to
//! the leader).
//!
//! Each operation ends in an [`Outcome`] that says exactly what the client may assume, and
//! travels on the wire unchanged, so a follower answers a forwarded request the way the leader
//! would have.

use std::time::Duration;

use quorate::error::RaftError;
use quorate::{ClientWriteError, LinearizableReadError, ReadPolicy};
use serde::{Deserialize, Serialize};

use crate::store::StateMachineStore;
use crate::{Raft, Request, Response};

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome<T> {
    /// It happened; here is its result.
    Done(T),
    /// This node is not the leader (the one it knows of, if any): nothing was proposed.
    NotLeader(Option<u64>),
    /// Proposed at this index, then overwritten by a new leader: it will never apply.
    Discarded(u64),
    /// Proposed, then lost by this node before it learned whether it committed (quorate's
    /// `OutcomeUnknown`: replaced by a snapshot, or by a newer leader's entries that had not
    /// committed yet): it may still happen.
    Unknown(String),
    /// The leader's queues are full: nothing was proposed.
    Overloaded,
    /// Not confirmed in time: it may still happen.
    Timeout,
    /// The node failed or stopped while the operation was pending: it may still happen.
    Failed(String),
}

/// The result of an applied write: its log index and the state machine's answer.
pub type WriteOutcome = Outcome<(u64, Response)>;

/// The result of a linearizable read: the value, if the key exists.
pub type ReadOutcome = Outcome<Option<String>>;

/// A node's key-value operations. Cheap to clone.
#[derive(Clone)]
pub struct KvService {
    /// The node.
    pub raft: Raft,
    /// Its state machine, read after a linearizable barrier.
    pub state_machine: StateMachineStore,
    /// How long an operation waits for Raft before ending in [`Outcome::Timeout`].
    pub timeout: Duration,
}

impl KvService {
    /// Whether this node believes it leads (it may have been deposed a moment ago).
    pub fn believes_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.raft.id())
    }

    /// The leader this node knows of, if any.
    pub fn known_leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// Propose `req` and wait for it to apply.
    ///
    /// A full write queue ends it at once in [`Outcome::Overloaded`], with nothing proposed
    /// (quorate's `try_client_write`): waiting for room instead would end an overloaded
    /// leader's writes in [`Outcome::Timeout`], "outcome unknown", for writes that were never
    /// proposed, and keep their clients waiting on a queue that is not draining.
    pub async fn write(&self, req: Request) -> WriteOutcome {
        let result = match tokio::time::timeout(self.timeout, self.raft.try_client_write(req)).await {
            Ok(r) => r,
            Err(_) => return Outcome::Timeout,
        };
        match result {
            Ok(resp) => Outcome::Done((resp.log_id.index, resp.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Outcome::NotLeader(f.leader_id),
            Err(RaftError::APIError(ClientWriteError::Discarded { log_id })) => Outcome::Discarded(log_id.index),
            Err(RaftError::APIError(ClientWriteError::Overloaded)) => Outcome::Overloaded,
            Err(RaftError::APIError(e @ ClientWriteError::OutcomeUnknown { .. })) => Outcome::Unknown(e.to_string()),
            Err(RaftError::APIError(e)) => Outcome::Failed(e.to_string()),
            Err(RaftError::Fatal(f)) => Outcome::Failed(f.to_string()),
        }
    }

    /// Read `key` linearizably: quorate's ReadIndex confirms with a quorum that this node still
    /// leads, then waits until everything committed before the read is applied here; the local
    /// map is read after that. This is the one place that decides how reads are made
    /// linearizable.
    pub async fn read(&self, key: &str) -> ReadOutcome {
        let barrier = self.raft.ensure_linearizable(ReadPolicy::ReadIndex);
        match tokio::time::timeout(self.timeout, barrier).await {
            Ok(Ok(_read_log_id)) => Outcome::Done(self.state_machine.get(key)),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => Outcome::NotLeader(f.leader_id),
            Ok(Err(RaftError::Fatal(f))) => Outcome::Failed(f.to_string()),
            Err(_) => Outcome::Timeout,
        }
    }
}
