//! The network: a bag of messages in flight. Any one may be delivered next (reordering),
//! delivered and kept (duplication), or dropped (loss).

use std::fmt;
use std::sync::Arc;

use super::reads::AckToken;
use super::storage::{C, ModelSnapshot};
use crate::types::Vote;
use crate::types::{AppendEntriesRequest, AppendEntriesResponse, TransferLeaderRequest, VoteRequest, VoteResponse};

/// What a message carries.
#[derive(Clone)]
pub(super) enum Payload {
    Vote(VoteRequest<C>),
    VoteResp(VoteResponse<C>),
    /// An AppendEntries of the leader's replication stream, with what its answer brings back.
    Append {
        req: AppendEntriesRequest<C>,
        token: AckToken,
    },
    /// The answer to an AppendEntries of the stream of leadership `vote`.
    AppendResp {
        vote: Vote<C>,
        resp: AppendEntriesResponse<C>,
        token: AckToken,
    },
    /// A whole snapshot in one message.
    Snapshot {
        vote: Vote<C>,
        snapshot: ModelSnapshot,
        token: AckToken,
    },
    /// The answer to a snapshot of the stream of leadership `vote`: the follower's vote.
    SnapshotResp {
        vote: Vote<C>,
        snapshot: ModelSnapshot,
        resp_vote: Vote<C>,
        token: AckToken,
    },
    TransferLeader(TransferLeaderRequest<C>),
}

/// A message from `from` to `to`.
#[derive(Clone)]
pub(super) struct Msg {
    pub(super) from: u64,
    pub(super) to: u64,
    pub(super) payload: Payload,
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}->n{} ", self.from, self.to)?;
        match &self.payload {
            Payload::Vote(r) => {
                let kind = if r.pre_vote { "PreVote" } else { "Vote" };
                let force = if r.force { " force" } else { "" };
                write!(f, "{kind}({} last={:?}{force})", r.vote, r.last_log_id)
            }
            Payload::VoteResp(r) => {
                let kind = if r.pre_vote { "PreVoteResp" } else { "VoteResp" };
                write!(f, "{kind}({} granted={} last={:?})", r.vote, r.vote_granted, r.last_log_id)
            }
            Payload::Append { req, token } => write!(
                f,
                "Append({} prev={:?} entries={:?} commit={:?} {token:?})",
                req.vote, req.prev_log_id, req.entries, req.leader_commit
            ),
            Payload::AppendResp { vote, resp, token } => write!(f, "AppendResp({vote} {resp} {token:?})"),
            Payload::Snapshot { vote, snapshot, token } => {
                write!(f, "Snapshot({vote} {:?} {token:?})", snapshot.meta)
            }
            Payload::SnapshotResp { vote, snapshot, resp_vote, token } => {
                write!(f, "SnapshotResp({vote} upto={:?} resp_vote={resp_vote} {token:?})", snapshot.meta.last_log_id)
            }
            Payload::TransferLeader(r) => write!(f, "TimeoutNow({} last={:?})", r.vote, r.last_log_id),
        }
    }
}

/// The messages in flight, kept sorted by their rendering so that two bags holding the same
/// messages are the same state whatever order they were sent in. States share messages.
#[derive(Clone, Default)]
pub(super) struct Net {
    msgs: Vec<Arc<(String, Msg)>>,
}

impl Net {
    pub(super) fn len(&self) -> usize {
        self.msgs.len()
    }

    pub(super) fn get(&self, i: usize) -> &Msg {
        &self.msgs[i].1
    }

    /// Whether message `i` renders the same as message `i - 1`: delivering either is the same.
    pub(super) fn same_as_previous(&self, i: usize) -> bool {
        i > 0 && self.msgs[i].0 == self.msgs[i - 1].0
    }

    pub(super) fn contains(&self, msg: &Msg) -> bool {
        let key = format!("{msg:?}");
        self.msgs.binary_search_by(|m| m.0.as_str().cmp(&key)).is_ok()
    }

    pub(super) fn push(&mut self, msg: Msg) {
        let key = format!("{msg:?}");
        let at = self.msgs.partition_point(|m| m.0 <= key);
        self.msgs.insert(at, Arc::new((key, msg)));
    }

    /// Requests (AppendEntries or snapshots) from `from` to `to` in flight.
    pub(super) fn requests_between(&self, from: u64, to: u64) -> usize {
        self.msgs
            .iter()
            .filter(|m| {
                let m = &m.1;
                m.from == from && m.to == to && matches!(m.payload, Payload::Append { .. } | Payload::Snapshot { .. })
            })
            .count()
    }

    /// Keep only the messages `keep` says yes to.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Msg) -> bool) {
        self.msgs.retain(|m| keep(&m.1));
    }

    pub(super) fn remove(&mut self, i: usize) -> Msg {
        let m = self.msgs.remove(i);
        Arc::try_unwrap(m).map_or_else(|m| m.1.clone(), |m| m.1)
    }
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.msgs.iter().map(|m| &m.0)).finish()
    }
}
