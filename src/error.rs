//! Errors, one enum per API family.
//!
//! Every fallible public call returns `Result<T, RaftError<C, E>>` where `E` is the error of
//! that call family and [`Fatal`] is the case shared by all: the node has stopped (shut down, or
//! its storage failed) and will not serve anything again. Retriable errors are in `E`.

use std::fmt;
use std::time::Duration;

use anyerror::AnyError;
use serde::{Deserialize, Serialize};

use crate::RaftTypeConfig;
use crate::types::{DisplayOption, LogId, MembershipError, Vote};

/// What a storage operation was working on when it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorSubject {
    /// The persisted vote.
    Vote,
    /// The log as a whole (its state, a range, an append).
    Logs,
    /// The state machine.
    StateMachine,
    /// A snapshot.
    Snapshot,
}

/// What a storage operation was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorVerb {
    /// Reading.
    Read,
    /// Writing or flushing.
    Write,
    /// Deleting (truncate, purge).
    Delete,
}

/// A storage operation failed. quorate treats it as fatal: the node stops rather than risk
/// acting on state it could not read or persist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("storage error: when {verb:?} {subject:?}: {source}")]
pub struct StorageError {
    /// What was being accessed.
    pub subject: ErrorSubject,
    /// What was being done.
    pub verb: ErrorVerb,
    /// The underlying error.
    pub source: AnyError,
}

impl StorageError {
    /// A storage error about `subject` while doing `verb`, caused by `source`.
    pub fn new(subject: ErrorSubject, verb: ErrorVerb, source: impl Into<AnyError>) -> Self {
        Self { subject, verb, source: source.into() }
    }

    /// Reading the log failed.
    pub fn read_logs(e: &(impl std::error::Error + 'static)) -> Self {
        Self::new(ErrorSubject::Logs, ErrorVerb::Read, AnyError::new(e))
    }

    /// Writing the log failed.
    pub fn write_logs(e: &(impl std::error::Error + 'static)) -> Self {
        Self::new(ErrorSubject::Logs, ErrorVerb::Write, AnyError::new(e))
    }
}

/// The node stopped and will not serve any more requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Fatal {
    /// Storage failed; the node stopped to protect the data.
    #[error(transparent)]
    StorageError(#[from] StorageError),
    /// The node found state that breaks a Raft invariant (e.g. storage returned entries it
    /// never appended) and stopped to avoid spreading it.
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// The Raft task panicked.
    #[error("the raft task panicked")]
    Panicked,
    /// The node was shut down.
    #[error("the raft node was shut down")]
    Stopped,
}

/// The error of a public API call: the call family's own error `E`, or [`Fatal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RaftError<E = Infallible> {
    /// The call's own, retriable or actionable, error.
    #[error(transparent)]
    APIError(E),
    /// The node stopped.
    #[error(transparent)]
    Fatal(#[from] Fatal),
}

impl<E> RaftError<E> {
    /// The call's own error, if that is what this is.
    pub fn api_error(&self) -> Option<&E> {
        match self {
            Self::APIError(e) => Some(e),
            Self::Fatal(_) => None,
        }
    }

    /// The fatal error, if that is what this is.
    pub fn fatal(&self) -> Option<&Fatal> {
        match self {
            Self::APIError(_) => None,
            Self::Fatal(f) => Some(f),
        }
    }
}

/// An error that never happens: the API error type of calls that only fail fatally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Infallible {}

/// This node is not the leader. The request was not proposed; send it to `leader_id`.
#[derive(Serialize, Deserialize, thiserror::Error)]
#[serde(bound = "")]
#[error("not the leader; forward to {leader_id:?} at {leader_node:?}")]
pub struct ForwardToLeader<C: RaftTypeConfig> {
    /// The leader this node knows of, if any.
    pub leader_id: Option<C::NodeId>,
    /// How to reach that leader, if it is known.
    pub leader_node: Option<C::Node>,
}

impl<C: RaftTypeConfig> ForwardToLeader<C> {
    /// No leader is known (e.g. during an election).
    pub fn empty() -> Self {
        Self { leader_id: None, leader_node: None }
    }
}

impl<C: RaftTypeConfig> Clone for ForwardToLeader<C> {
    fn clone(&self) -> Self {
        Self { leader_id: self.leader_id, leader_node: self.leader_node.clone() }
    }
}
impl<C: RaftTypeConfig> PartialEq for ForwardToLeader<C> {
    fn eq(&self, other: &Self) -> bool {
        self.leader_id == other.leader_id && self.leader_node == other.leader_node
    }
}
impl<C: RaftTypeConfig> Eq for ForwardToLeader<C> {}
impl<C: RaftTypeConfig> fmt::Debug for ForwardToLeader<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardToLeader")
            .field("leader_id", &self.leader_id)
            .field("leader_node", &self.leader_node)
            .finish()
    }
}

/// Why a [`Raft::client_write`](crate::Raft::client_write) failed.
///
/// Each variant says whether the write may still take effect, which is what a client needs to
/// answer its own caller correctly.
#[derive(Serialize, Deserialize, thiserror::Error)]
#[serde(bound = "")]
pub enum ClientWriteError<C: RaftTypeConfig> {
    /// Not proposed: this node is not the leader. Retry at the leader.
    #[error(transparent)]
    ForwardToLeader(ForwardToLeader<C>),
    /// Proposed at `log_id`, then removed from the log by a newer leader, and an entry at or
    /// before the point where the logs parted is known to be committed. It will never be
    /// applied; it is safe to retry. (A write removed while the newer leader's own entry there
    /// was not yet committed may still commit from another node's log: that is
    /// [`Self::OutcomeUnknown`].)
    #[error("the entry {log_id} was discarded by a newer leader and will not be applied")]
    Discarded {
        /// Where the write had been appended.
        log_id: LogId<C>,
    },
    /// Not proposed: the membership given is invalid.
    #[error(transparent)]
    InvalidMembership(#[from] MembershipError),
    /// Proposed at `log_id`, but this node lost the entry before it learned whether it
    /// committed: a leader's snapshot replaced it, or a newer leader's entries replaced it
    /// before any of them committed (another node may still hold the entry and commit it: Raft
    /// §5.4.2), or this node was removed from the cluster. The write may or may not be applied.
    /// Treat it like a timeout: read back to find out, or make the write idempotent.
    #[error("the outcome of the entry {log_id} is unknown: this node lost it before learning whether it committed")]
    OutcomeUnknown {
        /// Where the write had been appended.
        log_id: LogId<C>,
    },
    /// Not proposed: the write queue is full (see `Config::max_pending_requests`). Back off and
    /// retry, or shed load.
    #[error("the node is overloaded: the write queue is full")]
    Overloaded,
    /// Not proposed: another membership change, at `log_id`, is not committed yet. Retry when
    /// it is (watch `RaftMetrics::committed_membership`).
    ///
    /// A leader just elected answers this too, with `log_id` naming the latest membership entry
    /// it has (possibly the cluster's first, at index 0): until an entry of its own term
    /// commits (the blank entry it appends on election, in one round trip in a healthy group)
    /// it cannot know that membership is committed, and Raft allows a change only on a
    /// committed one. Wait until `RaftMetrics::committed_membership.log_id` equals
    /// `RaftMetrics::membership_config.log_id`, or retry.
    #[error("a membership change at {} is still in progress", DisplayOption(log_id))]
    MembershipChangeInProgress {
        /// The uncommitted membership entry.
        log_id: Option<LogId<C>>,
    },
}

impl<C: RaftTypeConfig> Clone for ClientWriteError<C> {
    fn clone(&self) -> Self {
        match self {
            Self::ForwardToLeader(f) => Self::ForwardToLeader(f.clone()),
            Self::Discarded { log_id } => Self::Discarded { log_id: *log_id },
            Self::InvalidMembership(e) => Self::InvalidMembership(e.clone()),
            Self::MembershipChangeInProgress { log_id } => Self::MembershipChangeInProgress { log_id: *log_id },
            Self::Overloaded => Self::Overloaded,
            Self::OutcomeUnknown { log_id } => Self::OutcomeUnknown { log_id: *log_id },
        }
    }
}
impl<C: RaftTypeConfig> PartialEq for ClientWriteError<C> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::ForwardToLeader(a), Self::ForwardToLeader(b)) => a == b,
            (Self::Discarded { log_id: a }, Self::Discarded { log_id: b }) => a == b,
            (Self::InvalidMembership(a), Self::InvalidMembership(b)) => a == b,
            (Self::MembershipChangeInProgress { log_id: a }, Self::MembershipChangeInProgress { log_id: b }) => a == b,
            (Self::Overloaded, Self::Overloaded) => true,
            (Self::OutcomeUnknown { log_id: a }, Self::OutcomeUnknown { log_id: b }) => a == b,
            _ => false,
        }
    }
}
impl<C: RaftTypeConfig> Eq for ClientWriteError<C> {}
impl<C: RaftTypeConfig> fmt::Debug for ClientWriteError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ForwardToLeader(e) => e.fmt(f),
            Self::Discarded { log_id } => write!(f, "Discarded({log_id})"),
            Self::InvalidMembership(e) => write!(f, "InvalidMembership({e:?})"),
            Self::MembershipChangeInProgress { log_id } => {
                write!(f, "MembershipChangeInProgress({})", DisplayOption(log_id))
            }
            Self::Overloaded => f.write_str("Overloaded"),
            Self::OutcomeUnknown { log_id } => write!(f, "OutcomeUnknown({log_id})"),
        }
    }
}

/// Why a linearizable read ([`Raft::ensure_linearizable`](crate::Raft::ensure_linearizable),
/// [`Raft::get_read_index`](crate::Raft::get_read_index)) could not be served. The read had no
/// effect; retry it, at the leader.
#[derive(Serialize, Deserialize, thiserror::Error)]
#[serde(bound = "")]
pub enum LinearizableReadError<C: RaftTypeConfig> {
    /// This node is not the leader, or stopped leading before a quorum confirmed it.
    #[error(transparent)]
    ForwardToLeader(ForwardToLeader<C>),
}

impl<C: RaftTypeConfig> fmt::Debug for LinearizableReadError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ForwardToLeader(e) => e.fmt(f),
        }
    }
}
impl<C: RaftTypeConfig> Clone for LinearizableReadError<C> {
    fn clone(&self) -> Self {
        match self {
            Self::ForwardToLeader(e) => Self::ForwardToLeader(e.clone()),
        }
    }
}
impl<C: RaftTypeConfig> PartialEq for LinearizableReadError<C> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::ForwardToLeader(a), Self::ForwardToLeader(b)) => a == b,
        }
    }
}

/// Why [`Trigger::transfer_leader`](crate::Trigger::transfer_leader) failed.
#[derive(Serialize, Deserialize, thiserror::Error)]
#[serde(bound = "")]
pub enum TransferLeaderError<C: RaftTypeConfig> {
    /// This node is not the leader.
    #[error(transparent)]
    ForwardToLeader(ForwardToLeader<C>),
    /// The target is not a voter.
    #[error("node {0} is not a voter")]
    NotAVoter(C::NodeId),
    /// The target did not take over in time; this node leads on and accepts writes again.
    #[error("node {0} did not take over in time")]
    Timeout(C::NodeId),
    /// A transfer to another node (named here) is in progress; nothing was started. Wait for
    /// it to end (it succeeds, or times out after twice the maximum election timeout), then
    /// ask again.
    #[error("a leadership transfer to node {0} is in progress")]
    InProgress(C::NodeId),
}

impl<C: RaftTypeConfig> fmt::Debug for TransferLeaderError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why [`Raft::initialize`](crate::Raft::initialize) failed.
#[derive(Serialize, Deserialize, thiserror::Error)]
#[serde(bound = "")]
pub enum InitializeError<C: RaftTypeConfig> {
    /// The node already has a log or a vote: it is, or was, part of a cluster.
    #[error("cannot initialize: the node already has state (last log {last_log_id:?}, vote {vote})")]
    NotAllowed {
        /// The node's last log id.
        last_log_id: Option<LogId<C>>,
        /// The node's vote.
        vote: Vote<C>,
    },
    /// This node is not among the voters it was asked to initialize with.
    #[error("cannot initialize: this node is not a voter of the given membership")]
    NotAVoter,
    /// The membership given is invalid.
    #[error(transparent)]
    InvalidMembership(#[from] MembershipError),
}

impl<C: RaftTypeConfig> fmt::Debug for InitializeError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl<C: RaftTypeConfig> Clone for InitializeError<C> {
    fn clone(&self) -> Self {
        match self {
            Self::NotAllowed { last_log_id, vote } => Self::NotAllowed { last_log_id: *last_log_id, vote: *vote },
            Self::NotAVoter => Self::NotAVoter,
            Self::InvalidMembership(e) => Self::InvalidMembership(e.clone()),
        }
    }
}
impl<C: RaftTypeConfig> PartialEq for InitializeError<C> {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// A condition awaited by [`Wait`](crate::metrics::Wait) was not met in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The timeout expired; `waiting_for` describes the condition.
    #[error("timeout after {timeout:?} waiting for {waiting_for}")]
    Timeout {
        /// How long was waited.
        timeout: Duration,
        /// What was awaited.
        waiting_for: String,
    },
    /// The node stopped while waiting.
    #[error("the raft node stopped")]
    Stopped,
}

/// A network call failed. Returned by [`RaftNetwork`](crate::RaftNetwork) implementations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RPCError {
    /// The call did not complete within its [`RPCOption`](crate::network::RPCOption) timeout.
    #[error("timeout after {0:?}")]
    Timeout(Duration),
    /// The target is known to be down or unreachable. Retried like the other failures (see
    /// [`RaftNetwork`](crate::RaftNetwork)); return it when it is what happened, for the logs.
    #[error("unreachable: {0}")]
    Unreachable(AnyError),
    /// The call failed in transit (connection reset, decode error, ...); retried like the other
    /// failures (see [`RaftNetwork`](crate::RaftNetwork)).
    #[error("network error: {0}")]
    Network(AnyError),
    /// The remote node returned a fatal error: it has stopped.
    #[error("remote node stopped: {0}")]
    RemoteFatal(Fatal),
}

impl RPCError {
    /// A transient network error caused by `e`.
    pub fn network(e: &(impl std::error::Error + 'static)) -> Self {
        Self::Network(AnyError::new(e))
    }

    /// The target is unreachable, caused by `e`.
    pub fn unreachable(e: &(impl std::error::Error + 'static)) -> Self {
        Self::Unreachable(AnyError::new(e))
    }
}
