//! [`RaftState`]: everything the Engine knows about its node, as plain values.

use std::fmt;
use std::sync::Arc;

use crate::RaftTypeConfig;
use crate::engine::LogIdList;
use crate::types::{DisplayOption, LogId, Membership, StoredMembership, Vote};

/// The role a node plays now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ServerState {
    /// Not a voter of its membership (or not initialized): receives the log, never elects.
    Learner,
    /// A voter following a leader, or waiting for one.
    Follower,
    /// A voter asking for votes.
    Candidate,
    /// The elected leader of the current term.
    Leader,
    /// The node has stopped.
    Shutdown,
}

/// One operation on the log store, identified for the flush callback.
///
/// `seq` grows by one per log operation the Engine decides (append or truncate), so "flushed up
/// to seq N" says every earlier operation is durable too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogIOId<C: RaftTypeConfig> {
    /// The position of the operation among all log operations of this node's run.
    pub(crate) seq: u64,
    /// The vote under which the operation was decided.
    pub(crate) vote: Vote<C>,
    /// The last log id of the log once the operation is done.
    pub(crate) last_log_id: Option<LogId<C>>,
}

impl<C: RaftTypeConfig> fmt::Display for LogIOId<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "io#{}({}, last={})", self.seq, self.vote, DisplayOption(&self.last_log_id))
    }
}

/// How far log I/O has got: decided by the Engine (`accepted`), the last append among it
/// (`appended`), and durable (`flushed`).
///
/// Only appends report being durable (their flush callback); a truncation or a purge becomes
/// durable with the next append's flush. So whatever waits for the log to be durable up to some
/// entries waits for `appended`, never for `accepted`: after a truncation that no append
/// follows (a snapshot install), `accepted` may stay ahead of `flushed` for a long time.
///
/// Invariant: `flushed.seq <= appended.seq <= accepted.seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IOState<C: RaftTypeConfig> {
    pub(crate) accepted: LogIOId<C>,
    pub(crate) appended: LogIOId<C>,
    pub(crate) flushed: LogIOId<C>,
}

/// A membership with the log id that carried it, shared cheaply.
pub(crate) type SharedMembership<C> = Arc<StoredMembership<C>>;

/// The two memberships that matter: the last one known committed and the last one in the log.
///
/// Leaders append a membership entry only when the previous one is committed, so the
/// second-to-last membership in any log is committed; only `effective` can be truncated away,
/// and then `committed` takes its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MembershipState<C: RaftTypeConfig> {
    pub(crate) committed: SharedMembership<C>,
    pub(crate) effective: SharedMembership<C>,
}

impl<C: RaftTypeConfig> Default for MembershipState<C> {
    fn default() -> Self {
        let empty = Arc::new(StoredMembership::default());
        Self { committed: empty.clone(), effective: empty }
    }
}

impl<C: RaftTypeConfig> MembershipState<C> {
    pub(crate) fn new(committed: StoredMembership<C>, effective: StoredMembership<C>) -> Self {
        Self { committed: Arc::new(committed), effective: Arc::new(effective) }
    }

    /// The membership decisions are made with.
    pub(crate) fn effective(&self) -> &Membership<C> {
        &self.effective.membership
    }

    /// A membership entry was appended: it takes effect now; the one before it is committed.
    pub(crate) fn append(&mut self, log_id: LogId<C>, membership: Membership<C>) {
        self.committed = self.effective.clone();
        self.effective = Arc::new(StoredMembership::new(Some(log_id), membership));
    }

    /// Entries at index `>= since` were truncated.
    pub(crate) fn truncate(&mut self, since: u64) {
        if self.effective.log_id.is_some_and(|l| l.index >= since) {
            self.effective = self.committed.clone();
        }
    }

    /// A snapshot covering the log up to `last` and carrying `membership` was installed.
    ///
    /// Entries up to `last` are replaced by the snapshot; entries after it stay (any that
    /// conflicted were truncated first). So each of the two memberships is replaced by the
    /// snapshot's only if it is not after `last`: a membership entry after `last` is newer, and
    /// the second-to-last one of the log is committed even when the snapshot's is older.
    pub(crate) fn install_snapshot(&mut self, last: LogId<C>, membership: StoredMembership<C>) {
        let membership = Arc::new(membership);
        let replaced = |m: &SharedMembership<C>| m.log_id.is_none_or(|l| l.index <= last.index);
        if replaced(&self.effective) {
            self.effective = membership.clone();
        }
        if replaced(&self.committed) {
            self.committed = membership;
        }
    }

    /// `committed` advanced to `log_id`: the effective membership may now be committed too.
    pub(crate) fn commit(&mut self, committed: Option<LogId<C>>) {
        if self.effective.log_id <= committed && self.committed.log_id != self.effective.log_id {
            self.committed = self.effective.clone();
        }
    }
}

/// Everything the Engine knows about its own node.
///
/// Invariants: `committed <= log_ids.last()`; `applied <= committed`; `committed` never
/// decreases; `log_ids.purged() <= applied`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RaftState<C: RaftTypeConfig> {
    /// The node's vote; already durable when the Engine acts on it.
    pub(crate) vote: Vote<C>,
    /// The ids of every entry in the log, including accepted but unflushed ones.
    pub(crate) log_ids: LogIdList<C>,
    /// The last entry known committed.
    pub(crate) committed: Option<LogId<C>>,
    /// The last entry handed to the state machine for applying.
    pub(crate) apply_submitted: Option<LogId<C>>,
    /// The last entry the state machine reported applied.
    pub(crate) applied: Option<LogId<C>>,
    pub(crate) membership: MembershipState<C>,
    pub(crate) io: IOState<C>,
    pub(crate) server_state: ServerState,
    /// The leader this node follows, if it knows one.
    pub(crate) leader_id: Option<C::NodeId>,
    /// The last entry covered by the latest snapshot, built or installed.
    pub(crate) snapshot_last: Option<LogId<C>>,
    /// Whether a snapshot is being built.
    pub(crate) snapshot_building: bool,
    /// Set when the log store stalled; until it flushes again the node does not campaign,
    /// since it could not persist a vote or lead.
    pub(crate) io_stalled: bool,
}

impl<C: RaftTypeConfig> Default for RaftState<C> {
    fn default() -> Self {
        let io = LogIOId { seq: 0, vote: Vote::default(), last_log_id: None };
        Self {
            vote: Vote::default(),
            log_ids: LogIdList::default(),
            committed: None,
            apply_submitted: None,
            applied: None,
            membership: MembershipState::default(),
            io: IOState { accepted: io, appended: io, flushed: io },
            server_state: ServerState::Learner,
            leader_id: None,
            snapshot_last: None,
            snapshot_building: false,
            io_stalled: false,
        }
    }
}

impl<C: RaftTypeConfig> RaftState<C> {
    pub(crate) fn last_log_id(&self) -> Option<LogId<C>> {
        self.log_ids.last()
    }
}
