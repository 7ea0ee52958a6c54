//! [`Command`]: an effect the Engine asks RaftCore to carry out.

use std::fmt;

use crate::RaftTypeConfig;
use crate::engine::LogIOId;
use crate::types::SnapshotMeta;
use crate::types::{DisplayOption, Entry, LogId, Vote};
use crate::types::{TransferLeaderRequest, VoteRequest};

/// A replication target: a node and its address, for a stream the leader runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicationTarget<C: RaftTypeConfig> {
    pub(crate) id: C::NodeId,
    pub(crate) node: C::Node,
}

/// One effect decided by the Engine, to be executed by RaftCore in queue order.
///
/// Commands run in the order they were pushed; each variant says when it may run and what
/// RaftCore must do before running the next one.
///
/// # Crash points
///
/// A node may stop between any two commands. What survives is what the storage contract
/// makes durable, and restarting from it must be safe (`core::startup::load_state` builds the
/// Engine's state from it):
///
/// - `SaveVote` is durable before the next command runs: a vote is never granted, nor a term
///   acted on, that a restart forgets.
/// - `AppendEntries` is durable only once its flush callback fired; until then a restart may
///   lose it (and every later log write). Nothing that relies on it — an acknowledgement to
///   the leader, the leader's own count toward commit — happens before the callback.
/// - `TruncateLog` and `PurgeLog` may become durable as late as the next append's flush: a
///   restart may find the truncated or purged entries back. Truncated entries were never
///   acknowledged past the conflict, so getting them back is as if the truncation had not
///   happened yet; purged ones are behind a snapshot and harmless.
/// - `InstallSnapshot` is durable at once, while the `TruncateLog` before it and the
///   `PurgeLog` after it may not be: a restart can find the state machine at the snapshot with
///   the log still holding entries the snapshot replaced, possibly of an older term after its
///   last index. `load_state` truncates those and purges up to what was applied, so the log
///   continues from the snapshot.
/// - `Apply` runs in the state machine task; a state machine that persists what it applied
///   may be ahead of the durable log after a crash (it applied committed entries this node had
///   not flushed yet). `load_state` then continues the log after what was applied.
/// - `SaveCommitted` is a hint: a restart that lost it recomputes `committed` as at least what
///   was applied.
/// - The other commands change nothing durable.
#[cfg_attr(test, derive(Clone))] // The model checker forks Engines, queue and all.
pub(crate) enum Command<C: RaftTypeConfig> {
    /// Persist `vote` and wait until it is durable before running the next command: a vote
    /// response or an acknowledgement sent after this relies on it.
    SaveVote { vote: Vote<C> },

    /// Append `entries` to the log store, labelled `io` for its flush callback. The entries
    /// follow the log's last entry. When the store returns they are readable: publish `io`
    /// as submitted so replication streams can read them.
    AppendEntries { io: LogIOId<C>, entries: Vec<Entry<C>> },

    /// Delete log entries at index `>= since.index` (never committed ones). Fail the pending
    /// client writes at those indexes: they will never be applied. Labelled `io`, the log
    /// state after it.
    TruncateLog { io: LogIOId<C>, since: LogId<C> },

    /// Send `req` to every voter but this node. Responses come back through
    /// `Engine::handle_vote_resp`; they must not block the next command.
    SendVote { req: VoteRequest<C> },

    /// Run one replication stream per target under the leader vote `vote`: start the missing,
    /// stop the ones not listed, keep the rest.
    UpdateReplicationStreams { vote: Vote<C>, targets: Vec<ReplicationTarget<C>> },

    /// Stop every replication stream: this node is no longer leader.
    CloseReplicationStreams,

    /// Have every replication stream send a request now, and tag every request it sends from
    /// now on with heartbeat round `round` (or a later one), which its answer brings back.
    /// Must not block the next command.
    BroadcastHeartbeat { round: u64 },

    /// Apply the committed entries `first..=last.index` to the state machine, in order, and
    /// answer their client writes with the state machine's responses.
    Apply { first: u64, last: LogId<C> },

    /// Record the committed log id in the log store (optional, lazily durable).
    SaveCommitted { committed: LogId<C> },

    /// Have the state machine build a snapshot, off the Raft task; its completion comes back
    /// through `Engine::on_snapshot_built`.
    BuildSnapshot,

    /// Delete log entries up to `upto` from the log store. Only applied entries covered by a
    /// snapshot are purged, so nothing queued for the state machine reads them.
    PurgeLog { upto: LogId<C> },

    /// Tell `to`, a caught-up voter, to campaign now: the last step of a leadership transfer.
    /// Must not block the next command.
    SendTransferLeader { to: C::NodeId, req: TransferLeaderRequest<C> },

    /// The leader quiesced with its whole log up to `last` matched and committed
    /// (`Some`), or woke (`None`). While quiesced, each replication stream sends its follower
    /// one heartbeat marked `quiesce` (at `last`, carrying it as committed) and then no more
    /// heartbeats until it wakes. Must not block the next command.
    SetQuiesced { last: Option<LogId<C>> },

    /// This node's leadership of `term` ended while some follower could still be quiesced
    /// under it: have the host's beats tell the followers' hosts, which wake the group. Must
    /// not block the next command.
    ReleaseQuiesced { term: u64 },

    /// Install the snapshot received from the leader into the state machine, and wait until
    /// it is installed (after every Apply queued before it) before running the next command.
    InstallSnapshot { meta: SnapshotMeta<C> },
}

impl<C: RaftTypeConfig> fmt::Debug for Command<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SaveVote { vote } => write!(f, "SaveVote({vote})"),
            Self::AppendEntries { io, entries } => write!(f, "AppendEntries({io}, {entries:?})"),
            Self::TruncateLog { io, since } => write!(f, "TruncateLog({io}, since={since})"),
            Self::SendVote { req } => {
                let kind = if req.pre_vote { "SendPreVote" } else { "SendVote" };
                let force = if req.force { ", force" } else { "" };
                write!(f, "{kind}({}, last={}{force})", req.vote, DisplayOption(&req.last_log_id))
            }
            Self::UpdateReplicationStreams { vote, targets } => {
                let ids: Vec<_> = targets.iter().map(|t| t.id).collect();
                write!(f, "UpdateReplicationStreams({vote}, {ids:?})")
            }
            Self::CloseReplicationStreams => f.write_str("CloseReplicationStreams"),
            Self::BroadcastHeartbeat { round } => write!(f, "BroadcastHeartbeat({round})"),
            Self::Apply { first, last } => write!(f, "Apply({first}..={last})"),
            Self::SaveCommitted { committed } => write!(f, "SaveCommitted({committed})"),
            Self::BuildSnapshot => f.write_str("BuildSnapshot"),
            Self::PurgeLog { upto } => write!(f, "PurgeLog({upto})"),
            Self::SetQuiesced { last } => write!(f, "SetQuiesced({})", DisplayOption(last)),
            Self::ReleaseQuiesced { term } => write!(f, "ReleaseQuiesced(term={term})"),
            Self::InstallSnapshot { meta } => write!(f, "InstallSnapshot({meta})"),
            Self::SendTransferLeader { to, req } => {
                write!(f, "SendTransferLeader(to={to}, {}, last={})", req.vote, DisplayOption(&req.last_log_id))
            }
        }
    }
}

/// Commands compare by their debug text, which shows every field that matters; it keeps the
/// Engine's tests readable without requiring `PartialEq` of application data.
impl<C: RaftTypeConfig> PartialEq for Command<C> {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}
