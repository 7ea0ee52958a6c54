//! The RPC messages nodes exchange. Every one is serde-serializable so a network
//! implementation can put it on the wire as it is.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::RaftTypeConfig;
use crate::types::{DisplayOption, Entry, LogId, SnapshotMeta, Vote};

/// A candidate asks for a vote (Raft §5.2).
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct VoteRequest<C: RaftTypeConfig> {
    /// The candidate's vote: its new term and itself.
    pub vote: Vote<C>,
    /// The candidate's last log id, for the up-to-date check (Raft §5.4.1).
    pub last_log_id: Option<LogId<C>>,
    /// A pre-vote (Raft dissertation §9.6): "would you vote for me?" The receiver answers
    /// without changing its state, so a node that cannot win never raises the term.
    #[serde(default)]
    pub pre_vote: bool,
    /// Sent on the leader's request (leadership transfer) or by an operator: the receiver
    /// votes even though it heard from a leader recently.
    #[serde(default)]
    pub force: bool,
}

impl<C: RaftTypeConfig> VoteRequest<C> {
    /// A plain vote request of `vote` with the candidate's `last_log_id`.
    pub fn new(vote: Vote<C>, last_log_id: Option<LogId<C>>) -> Self {
        Self { vote, last_log_id, pre_vote: false, force: false }
    }
}

/// The answer to a [`VoteRequest`].
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct VoteResponse<C: RaftTypeConfig> {
    /// The responder's vote after handling the request; greater than the request's vote if the
    /// responder has seen a newer term.
    pub vote: Vote<C>,
    /// Whether the vote was granted.
    pub vote_granted: bool,
    /// The responder's last log id.
    pub last_log_id: Option<LogId<C>>,
    /// Whether this answers a pre-vote. A granted pre-vote carries the request's vote; it is
    /// no vote, and is never counted as one.
    #[serde(default)]
    pub pre_vote: bool,
    /// An entry the responder knows committed: its last committed entry, or, when that lies
    /// beyond the candidate's last log index, its own entry at that index (committed too, as
    /// everything up to its commit index is). A candidate whose log holds this very entry
    /// learns that it is committed (its log matches up to there): how a node that holds the
    /// config removing it, but never heard that it committed, learns that it was removed and
    /// stops campaigning.
    #[serde(default)]
    pub committed: Option<LogId<C>>,
}

impl<C: RaftTypeConfig> VoteResponse<C> {
    /// An answer to a plain vote request, with no committed entry named.
    pub fn new(vote: Vote<C>, vote_granted: bool, last_log_id: Option<LogId<C>>) -> Self {
        Self { vote, vote_granted, last_log_id, pre_vote: false, committed: None }
    }
}

/// The leader asks a caught-up follower to start an election at once: the last step of a
/// leadership transfer.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct TransferLeaderRequest<C: RaftTypeConfig> {
    /// The leader's elected vote.
    pub vote: Vote<C>,
    /// The leader's last log id; the follower holds it (it is caught up).
    pub last_log_id: Option<LogId<C>>,
}

/// A leader replicates entries, or just its commit index as a heartbeat (Raft §5.3).
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct AppendEntriesRequest<C: RaftTypeConfig> {
    /// The leader's elected vote.
    pub vote: Vote<C>,
    /// The id of the entry just before `entries`; `None` if `entries` start the log.
    pub prev_log_id: Option<LogId<C>>,
    /// The entries to append; empty for a probe or a heartbeat.
    pub entries: Vec<Entry<C>>,
    /// The leader's committed log id.
    pub leader_commit: Option<LogId<C>>,
    /// Set on the last heartbeat of a leader whose group goes quiet (quiescence, used by
    /// [`multi`](crate::multi)): a follower whose log then equals the leader's, all of it
    /// committed, stops its election timer and follows the leader's node liveness instead.
    /// `None` on every other request; a follower outside a host ignores it.
    #[serde(default)]
    pub quiesce: Option<QuiesceMark>,
}

/// Who quiesced a group: the leader's host as its beats name it
/// ([`NodeBeat::incarnation`](crate::multi::NodeBeat::incarnation)). A follower whose host
/// already hears another incarnation of that node (it restarted before the mark arrived), or
/// heard that node release this leadership, does not stay quiesced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuiesceMark {
    /// The leader's host's incarnation.
    pub incarnation: u64,
}

impl<C: RaftTypeConfig> AppendEntriesRequest<C> {
    /// The id of the last entry this request makes the follower hold: the last of `entries`,
    /// or `prev_log_id` if there are none.
    pub fn last_log_id(&self) -> Option<LogId<C>> {
        self.entries.last().map(|e| e.log_id).or(self.prev_log_id)
    }
}

/// The answer to an [`AppendEntriesRequest`].
///
/// In a pipelined stream one response may acknowledge several requests: a leader reads
/// `Success { matched }` as "the follower's log equals mine up to `matched`", whichever request
/// it answers.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub enum AppendEntriesResponse<C: RaftTypeConfig> {
    /// The follower's log matches the leader's up to `matched`, and those entries are durable.
    Success {
        /// The last log id of the request that was answered.
        matched: Option<LogId<C>>,
    },
    /// The follower refused the request and appended nothing: normally because its log does
    /// not hold the request's `prev_log_id`; also for a request no legitimate leader sends
    /// (entries out of term order, not consecutive, leaving a gap, or replacing a committed
    /// entry). The leader reads it as "the log does not match where this request assumed"
    /// and searches for the match point again.
    Conflict {
        /// Where the follower found the conflict, for diagnosis (the leader does not read it):
        /// - the request's `prev_log_id`, when the follower's log does not hold it, or when
        ///   the request's entries are out of term order;
        /// - the first entry of the request not already in the follower's log, when the
        ///   entries from there on are not consecutive or do not follow the follower's last
        ///   entry;
        /// - the follower's own committed entry that the request's first new entry would
        ///   replace.
        prev_log_id: Option<LogId<C>>,
        /// The follower's last log id: a hint that bounds the leader's search for the match.
        last_log_id: Option<LogId<C>>,
    },
    /// The follower has seen a greater vote; the leader must step down.
    HigherVote(Vote<C>),
}

/// One chunk of a snapshot, sent by a leader to a follower whose log is behind its purged log.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct InstallSnapshotRequest<C: RaftTypeConfig> {
    /// The leader's elected vote.
    pub vote: Vote<C>,
    /// What the snapshot covers.
    pub meta: SnapshotMeta<C>,
    /// Where this chunk starts in the snapshot data.
    pub offset: u64,
    /// The chunk.
    pub data: Vec<u8>,
    /// Whether this is the last chunk.
    pub done: bool,
}

/// The answer to an [`InstallSnapshotRequest`].
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct InstallSnapshotResponse<C: RaftTypeConfig> {
    /// The follower's vote; greater than the request's if the follower has seen a newer term.
    pub vote: Vote<C>,
    /// The offset of the next chunk the follower expects for this snapshot. A leader whose
    /// chunk was not at this offset (a transfer resumed after an interruption, or a follower
    /// that lost what it had) continues from here; 0 means start over.
    pub next_offset: u64,
}

macro_rules! impl_clone_debug {
    ($t:ident { $($f:ident),* }) => {
        impl<C: RaftTypeConfig> Clone for $t<C> {
            fn clone(&self) -> Self {
                Self { $($f: self.$f.clone()),* }
            }
        }
        impl<C: RaftTypeConfig> fmt::Debug for $t<C> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))$(.field(stringify!($f), &self.$f))*.finish()
            }
        }
    };
}

impl_clone_debug!(VoteRequest { vote, last_log_id, pre_vote, force });
impl_clone_debug!(TransferLeaderRequest { vote, last_log_id });
impl_clone_debug!(VoteResponse { vote, vote_granted, last_log_id, pre_vote, committed });
impl_clone_debug!(AppendEntriesRequest { vote, prev_log_id, entries, leader_commit, quiesce });
impl_clone_debug!(InstallSnapshotRequest { vote, meta, offset, data, done });
impl_clone_debug!(InstallSnapshotResponse { vote, next_offset });

impl<C: RaftTypeConfig> PartialEq for VoteResponse<C> {
    fn eq(&self, other: &Self) -> bool {
        self.vote == other.vote
            && self.vote_granted == other.vote_granted
            && self.last_log_id == other.last_log_id
            && self.pre_vote == other.pre_vote
            && self.committed == other.committed
    }
}
impl<C: RaftTypeConfig> Eq for VoteResponse<C> {}

impl<C: RaftTypeConfig> Clone for AppendEntriesResponse<C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: RaftTypeConfig> Copy for AppendEntriesResponse<C> {}
impl<C: RaftTypeConfig> PartialEq for AppendEntriesResponse<C> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Success { matched: a }, Self::Success { matched: b }) => a == b,
            (
                Self::Conflict { prev_log_id: a, last_log_id: la },
                Self::Conflict { prev_log_id: b, last_log_id: lb },
            ) => a == b && la == lb,
            (Self::HigherVote(a), Self::HigherVote(b)) => a == b,
            _ => false,
        }
    }
}
impl<C: RaftTypeConfig> Eq for AppendEntriesResponse<C> {}
impl<C: RaftTypeConfig> fmt::Debug for AppendEntriesResponse<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl<C: RaftTypeConfig> fmt::Display for AppendEntriesResponse<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success { matched } => write!(f, "Success(matched={})", DisplayOption(matched)),
            Self::Conflict { prev_log_id, last_log_id } => {
                write!(f, "Conflict(prev={}, last={})", DisplayOption(prev_log_id), DisplayOption(last_log_id))
            }
            Self::HigherVote(v) => write!(f, "HigherVote({v})"),
        }
    }
}

impl<C: RaftTypeConfig> fmt::Display for AppendEntriesRequest<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AppendEntries(vote={}, prev={}, entries={}, commit={})",
            self.vote,
            DisplayOption(&self.prev_log_id),
            self.entries.len(),
            DisplayOption(&self.leader_commit)
        )
    }
}
