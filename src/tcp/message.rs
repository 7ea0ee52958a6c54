//! The messages of a connection, in both directions.
//!
//! The first frame from the client is a [`ToServer::Hello`]; the server answers
//! [`ToClient::Welcome`] or [`ToClient::Refused`] (then closes). After that the client sends
//! calls (one answer each, matched by id, any number at once) and the requests of replication
//! streams (answered in order on the same stream id), and the server sends the answers.
//!
//! Variant order is the format: never reorder, only append.

use serde::{Deserialize, Serialize};

use crate::RaftTypeConfig;
use crate::error::RaftError;
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
    /// A call: answered by one [`ToClient::Reply`] of the same id.
    Call { id: u64, rpc: Rpc<C> },
    /// The next request of replication stream `stream`. The first request of a stream id
    /// greater than every earlier one opens it; requests of a stream that has ended are dropped.
    Append { stream: u64, req: AppendEntriesRequest<C> },
    /// The client is done with `stream`: no more requests will come on it.
    EndStream { stream: u64 },
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
}
