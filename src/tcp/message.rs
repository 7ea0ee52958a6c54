//! The messages of a connection, in both directions.
//!
//! The first frame from the client is a [`ToServer::Hello`]; the server answers
//! [`ToClient::Welcome`] or [`ToClient::Refused`] (then closes). After that the client sends
//! calls (one answer each unless the client cancels it, matched by id, any number at once) and the requests of replication
//! streams (answered in order on the same stream id), and the server sends the answers.
//!
//! Calls and streams of a [`GroupHost`](crate::multi::GroupHost)'s groups carry the group's
//! id ([`ToServer::GroupCall`], [`ToServer::GroupAppend`]); a node's beats travel as
//! [`ToServer::Beat`]. Call ids and stream ids are drawn from one sequence per connection, so
//! that [`ToClient::NotServed`] can name either.
//!
//! Variant order is the format: never reorder, only append.

use serde::{Deserialize, Serialize};

use crate::RaftTypeConfig;
use crate::error::RaftError;
use crate::multi::{GroupId, NodeBeat};
use crate::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};

/// Who is calling, and whom it means to reach.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct Hello<C: RaftTypeConfig> {
    /// The caller's cluster id: a node serves only callers of its own cluster.
    pub(crate) cluster_id: String,
    /// The caller's node id (with TLS, its certificate must name it).
    pub(crate) from: C::NodeId,
    /// The node the caller means to reach: the server refuses if it is another one (an
    /// address book that points at the wrong node).
    pub(crate) to: C::NodeId,
}

/// A client's frame.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum ToServer<C: RaftTypeConfig> {
    /// The first frame of a connection.
    Hello(Hello<C>),
    /// A call: answered by one [`ToClient::Reply`] of the same id. `within_ms`: how long the
    /// client waits for the answer; the server stops executing the call after that long (its
    /// answer would be dropped anyway), so a call the node never answers (a stalled store)
    /// frees its slot even when the client's `Cancel` cannot be read (found in review).
    Call { id: u64, within_ms: u64, rpc: Rpc<C> },
    /// The next request of replication stream `stream`. The first request of a stream id
    /// greater than every earlier one opens it; requests of a stream that has ended are dropped.
    Append { stream: u64, req: AppendEntriesRequest<C> },
    /// The client is done with `stream`: no more requests will come on it.
    EndStream { stream: u64 },
    /// A call to group `group` of the server's [`GroupHost`](crate::multi::GroupHost):
    /// answered by one [`ToClient::Reply`] of the same id, or by [`ToClient::NotServed`].
    GroupCall { group: GroupId, id: u64, within_ms: u64, rpc: Rpc<C> },
    /// The next request of replication stream `stream`, to group `group`: as
    /// [`Append`](Self::Append), and every request of a stream names the same group. A stream
    /// the server cannot route is answered by [`ToClient::NotServed`] and ended.
    GroupAppend { group: GroupId, stream: u64, req: AppendEntriesRequest<C> },
    /// The client's node is alive: delivered to the server's host, unanswered. Dropped unless
    /// its `from` is the node that said hello.
    Beat(NodeBeat<C>),
    /// The client gave up on call `id` (it timed out or was dropped): the server stops
    /// executing it, if it still is, and sends no answer. Without it an abandoned call held
    /// one of the connection's call slots until the node answered, and a group whose store
    /// stalled filled them all, stopping every other group's messages on the connection
    /// (found in review).
    Cancel { id: u64 },
}

impl<C: RaftTypeConfig> ToServer<C> {
    /// Call `id`, answered within `within`: to the node's single Raft when `group` is
    /// `None`, else to that group.
    pub(crate) fn call(group: Option<GroupId>, id: u64, within: std::time::Duration, rpc: Rpc<C>) -> Self {
        // Rounded up: the server must not stop a call before its caller stops waiting.
        let within_ms = u64::try_from(within.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        match group {
            None => Self::Call { id, within_ms, rpc },
            Some(group) => Self::GroupCall { group, id, within_ms, rpc },
        }
    }

    /// The next request of stream `stream`, addressed as [`call`](Self::call) addresses.
    pub(crate) fn append(group: Option<GroupId>, stream: u64, req: AppendEntriesRequest<C>) -> Self {
        match group {
            None => Self::Append { stream, req },
            Some(group) => Self::GroupAppend { group, stream, req },
        }
    }
}

/// The calls.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum Rpc<C: RaftTypeConfig> {
    Vote(VoteRequest<C>),
    AppendEntries(AppendEntriesRequest<C>),
    InstallSnapshot(InstallSnapshotRequest<C>),
    TransferLeader(TransferLeaderRequest<C>),
}

/// The answers to [`Rpc`]s, variant for variant.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum Reply<C: RaftTypeConfig> {
    Vote(Result<VoteResponse<C>, RaftError>),
    AppendEntries(Result<AppendEntriesResponse<C>, RaftError>),
    InstallSnapshot(Result<InstallSnapshotResponse<C>, RaftError>),
    TransferLeader(Result<bool, RaftError>),
}

/// A server's frame.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) enum ToClient<C: RaftTypeConfig> {
    /// The handshake is accepted: the server's cluster id and node id.
    Welcome { cluster_id: String, node_id: C::NodeId },
    /// The handshake is refused, and why; the server closes the connection.
    Refused { reason: String },
    /// The answer to the call `id`.
    Reply { id: u64, reply: Reply<C> },
    /// The next answer of replication stream `stream`, in request order.
    Appended { stream: u64, resp: Result<AppendEntriesResponse<C>, RaftError> },
    /// The server ended `stream` (after an error answer, or when the node stopped); requests
    /// still arriving on it are dropped.
    StreamEnded { stream: u64 },
    /// The call or stream `id` reached nothing to serve it, and why: a group the host does not
    /// run, a group message to a single-group server, or a single-group message to a host. A
    /// stream so answered is ended. The client reports it as unreachable (the leader backs off
    /// and retries), not as a broken connection.
    NotServed { id: u64, reason: String },
}
