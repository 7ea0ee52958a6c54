//! Messages into the Raft task: API calls, RPCs and internal notifications.

use std::io;

use tokio::sync::{mpsc, oneshot};

use crate::RaftTypeConfig;
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
pub(crate) enum ApiMsg<C: RaftTypeConfig> {
    /// Start a new cluster with `membership`.
    Initialize { membership: Membership<C>, tx: oneshot::Sender<Result<(), InitializeError<C>>> },
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
    ChangeMembership { changes: ChangeMembers<C>, retain: bool, tx: MembershipResponder<C> },
}

/// An RPC from another node, delivered by the application's server.
pub(crate) enum RpcMsg<C: RaftTypeConfig> {
    AppendEntries { req: AppendEntriesRequest<C>, tx: oneshot::Sender<AppendEntriesResponse<C>> },
    Vote { req: VoteRequest<C>, tx: oneshot::Sender<VoteResponse<C>> },
    InstallSnapshot { req: InstallSnapshotRequest<C>, tx: oneshot::Sender<InstallSnapshotResponse<C>> },
    TransferLeader { req: TransferLeaderRequest<C>, tx: oneshot::Sender<bool> },
}

/// Something that happened inside the node: I/O completed, a peer answered, a task failed.
pub(crate) enum Notification<C: RaftTypeConfig> {
    /// The log store finished `io`.
    LogFlushed { io: LogIOId<C>, result: Result<(), io::Error> },
    /// A vote request sent for `vote` to `target` was answered (or failed).
    VoteResponse { target: C::NodeId, resp: Result<VoteResponse<C>, RPCError> },
    /// A replication stream of leadership `vote` learned something about `target`; `ack`, if
    /// the target answered a request: when and in which heartbeat round that request was sent.
    Replication { target: C::NodeId, vote: Vote<C>, result: ReplicationResult<C>, ack: Option<Ack> },
    /// The state machine applied up to `last`.
    Applied { last: LogId<C> },
    /// A snapshot build finished.
    SnapshotBuilt { result: Result<SnapshotMeta<C>, StorageError> },
    /// A task of this node hit a fatal error.
    Fatal(Fatal),
}

/// Forwards a log store's flush reports ([`IOFlushed`](crate::IOFlushed)) into the Raft task's
/// notifications.
pub(crate) struct FlushNotifier<C: RaftTypeConfig>(pub(crate) mpsc::UnboundedSender<Notification<C>>);

impl<C: RaftTypeConfig> FlushReceiver<C> for FlushNotifier<C> {
    fn flushed(&self, io: LogIOId<C>, result: Result<(), io::Error>) {
        // The receiver is gone only when the node has shut down; nothing waits then.
        let _ = self.0.send(Notification::LogFlushed { io, result });
    }
}
