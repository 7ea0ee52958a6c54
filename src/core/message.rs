//! Messages into the Raft task: API calls, RPCs and internal notifications.

use std::io;

use tokio::sync::oneshot;

use crate::RaftTypeConfig;
use crate::core::queue;
use crate::engine::{Ack, LogIOId, ReplicationResult};
use crate::error::{
    ClientWriteError, Fatal, InitializeError, LinearizableReadError, RPCError, StorageError, TransferLeaderError,
};
use crate::raft::ReadIndex;
use crate::raft::{ChangeMembershipResponse, ClientWriteResponse};
use crate::storage::FlushReceiver;
use crate::types::SnapshotMeta;
use crate::types::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use crate::types::{ChangeMembers, EntryPayload, LogId, Membership, Vote};
use crate::types::{ReadPolicy, TransferLeaderRequest};

/// Where the outcome of one client write goes.
pub(crate) type WriteResponder<C> = oneshot::Sender<Result<ClientWriteResponse<C>, ClientWriteError<C>>>;

/// Where the outcome of a membership change goes.
pub(crate) type MembershipResponder<C> = oneshot::Sender<Result<ChangeMembershipResponse<C>, ClientWriteError<C>>>;

/// Where the answer to a read-index request goes: the log id to wait for and what was applied.
pub(crate) type ReadResponder<C> = oneshot::Sender<Result<ReadIndex<C>, LinearizableReadError<C>>>;

/// A client write: propose `payload`, answer on `tx` once applied (or failed).
pub(crate) struct WriteMsg<C: RaftTypeConfig> {
    pub(crate) payload: EntryPayload<C>,
    pub(crate) tx: WriteResponder<C>,
}

/// A call from the [`Raft`](crate::Raft) handle.
///
/// Every message of a channel's queue takes the size of its largest variant, and tokio
/// allocates a channel's first block of 32 of them when the channel is made, so each node of a
/// [`GroupHost`](crate::multi::GroupHost) pays for that block while it idles: rare variants
/// with large fields box them (here and in [`RpcMsg`], [`Notification`] and `SmMsg`).
pub(crate) enum ApiMsg<C: RaftTypeConfig> {
    /// Start a new cluster with `membership`.
    Initialize { membership: Box<Membership<C>>, tx: oneshot::Sender<Result<(), InitializeError<C>>> },
    /// Start an election now.
    Elect,
    /// Build a snapshot now.
    TriggerSnapshot,
    /// Purge the log up to this index (bounded by the last snapshot and applied).
    PurgeLog { upto: u64 },
    /// The log id a linearizable read must wait for, once leadership is confirmed.
    GetReadLogId { policy: ReadPolicy, tx: ReadResponder<C> },
    /// Hand leadership to `to`.
    TransferLeader { to: C::NodeId, tx: oneshot::Sender<Result<(), TransferLeaderError<C>>> },
    /// Move to the membership `changes` makes of the current one.
    ChangeMembership { changes: Box<ChangeMembers<C>>, retain: bool, tx: MembershipResponder<C> },
}

/// An RPC from another node, delivered by the application's server. Snapshot chunks are rare
/// and their request is the largest: boxed (see [`ApiMsg`] for why).
pub(crate) enum RpcMsg<C: RaftTypeConfig> {
    AppendEntries { req: AppendEntriesRequest<C>, tx: oneshot::Sender<AppendEntriesResponse<C>> },
    Vote { req: VoteRequest<C>, tx: oneshot::Sender<VoteResponse<C>> },
    InstallSnapshot { req: Box<InstallSnapshotRequest<C>>, tx: oneshot::Sender<InstallSnapshotResponse<C>> },
    TransferLeader { req: TransferLeaderRequest<C>, tx: oneshot::Sender<bool> },
}

/// Something that happened inside the node: I/O completed, a peer answered, a task failed.
///
/// The rare outcomes with large payloads (a failed vote request, a snapshot built, a fatal
/// error) are boxed, so that a slot is no larger than the frequent `Replication` (see
/// [`ApiMsg`] for why).
pub(crate) enum Notification<C: RaftTypeConfig> {
    /// The log store finished `io`.
    LogFlushed { io: LogIOId<C>, result: Result<(), io::Error> },
    /// A vote request sent for `vote` to `target` was answered (or failed).
    VoteResponse { target: C::NodeId, resp: Result<VoteResponse<C>, Box<RPCError>> },
    /// A replication stream of leadership `vote` learned something about `target`; `ack`, if
    /// the target answered a request: when and in which heartbeat round that request was sent.
    Replication { target: C::NodeId, vote: Vote<C>, result: ReplicationResult<C>, ack: Option<Ack> },
    /// The state machine applied up to `last`.
    Applied { last: LogId<C> },
    /// A snapshot build finished.
    SnapshotBuilt { result: Box<Result<SnapshotMeta<C>, StorageError>> },
    /// A task of this node hit a fatal error.
    Fatal(Box<Fatal>),
    /// A peer's beat released this group's leadership on that peer (groups of a
    /// [`GroupHost`](crate::multi::GroupHost)): a follower quiesced under it wakes.
    HostReleased,
    /// A follower on a peer asked that this group's leader of `term` heartbeat again (groups
    /// of a [`GroupHost`](crate::multi::GroupHost); see
    /// [`WakeRequest`](crate::multi::WakeRequest)).
    HostWakeLeader { term: u64 },
}

/// Forwards a log store's flush reports ([`IOFlushed`](crate::IOFlushed)) into the Raft task's
/// notifications.
pub(crate) struct FlushNotifier<C: RaftTypeConfig>(pub(crate) queue::UnboundedSender<Notification<C>>);

impl<C: RaftTypeConfig> FlushReceiver<C> for FlushNotifier<C> {
    fn flushed(&self, io: LogIOId<C>, result: Result<(), io::Error>) {
        // The receiver is gone only when the node has shut down; nothing waits then.
        let _ = self.0.send(Notification::LogFlushed { io, result });
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::{ApiMsg, Notification, RpcMsg};
    use crate::core::SmMsg;
    use crate::engine::{Ack, ReplicationResult};
    use crate::testing_types::UTConfig as C;
    use crate::types::{AppendEntriesRequest, LogId, Vote};

    /// A queue's buffer holds its messages by value, so every queued message (and every spare
    /// place of a buffer grown while busy) costs the largest variant: none may be larger than
    /// the frequent messages need.
    #[test]
    fn messages_are_no_larger_than_their_frequent_variants() {
        // Append-entries: the request and its responder, plus the discriminant.
        assert!(size_of::<RpcMsg<C>>() <= size_of::<AppendEntriesRequest<C>>() + 16);
        // Replication progress: target, vote, result, ack, plus the discriminant.
        let replication =
            size_of::<u64>() + size_of::<Vote<C>>() + size_of::<ReplicationResult<C>>() + size_of::<Ack>();
        assert!(size_of::<Notification<C>>() <= replication + 8);
        // Apply: first, last, responders, plus the discriminant.
        assert!(size_of::<SmMsg<C>>() <= 8 + size_of::<LogId<C>>() + size_of::<Vec<()>>() + 8);
        // Reads: a policy and a responder.
        assert!(size_of::<ApiMsg<C>>() <= 24);
    }
}
