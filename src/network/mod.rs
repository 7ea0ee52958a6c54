//! The network traits an application implements: [`RaftNetworkFactory`] makes one
//! [`RaftNetwork`] client per target node.
//!
//! quorate ships a transport that keeps every promise below, behind the `tcp` feature (with
//! mutual TLS behind `tls`): `quorate::tcp`, one multiplexed, pipelined connection per peer.
//!
//! # Pipelining: the `stream_append` contract
//!
//! A leader replicates to a caught-up follower through [`RaftNetwork::stream_append`]: it hands
//! the network a stream of AppendEntries requests and reads a stream of responses. A network
//! that pipelines (sends request N+1 before the answer to N arrives) makes replication
//! throughput independent of round-trip time. An implementation must keep these promises:
//!
//! 1. **Whole requests.** A request taken from the input stream is delivered to the follower
//!    whole, or the response stream ends with an error. Never half of its entries.
//! 2. **In order, at most once.** Requests reach the follower's
//!    [`Raft::append_entries`](crate::Raft::append_entries) (or
//!    [`Raft::stream_append`](crate::Raft::stream_append)) in the order the input yields them,
//!    each at most once: a request the network retries must not reach the follower twice on
//!    one stream.
//! 3. **Responses in order, possibly fewer.** Responses come back in request order, each the
//!    follower's own answer to one request. Yielding fewer responses than requests is allowed:
//!    each `Success { matched }` acknowledges every request up to `matched`. But the last
//!    request taken from the input must be answered (or the stream end with an error) within
//!    the RPC timeout: the leader sends no heartbeat behind an unanswered request, so a missing
//!    last answer stalls the stream until that timeout. The leader tells
//!    which request an answer is for by `matched` (no two requests it has in flight end at the
//!    same log id), and counts the answer as proof that the follower followed it when that
//!    request was sent: an answer must never be passed off as another request's.
//! 4. **Errors end the stream.** After yielding an `Err`, the response stream is done; the
//!    leader resumes from what was acknowledged, on a new stream.
//!
//! A leader may also end a stream that nothing failed on, by dropping it (its input then
//! ends): a group hosted by [`crate::multi::GroupHost`] closes its streams while it is
//! quiesced and opens a new one when it next sends, so each wake of an idle group opens a
//! stream. Opening one should therefore be cheap (TCP: a frame on a connection already open),
//! and a network must not take a dropped stream for a failure of the follower.
//!
//! The leader bounds what is in flight (`Config::max_in_flight_requests`), so the network
//! need not buffer without limit. The default implementation sends one request at a time with
//! [`RaftNetwork::append_entries`], which keeps these promises trivially.

use std::future::Future;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};

use crate::RaftTypeConfig;
use crate::error::RPCError;
use crate::types::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};

/// Options for one RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RPCOption {
    /// How long the call may take before the caller gives up on it. The network should give up
    /// too, returning [`RPCError::Timeout`]; quorate also enforces it from outside.
    ///
    /// For [`RaftNetwork::stream_append`] it is a deadline **per request**, not for the
    /// stream: each request taken from the input must be answered within it (promise 3 of the
    /// [module docs](self)). A stream may live as long as the leader feeds it; a network that
    /// ends the whole stream after this long still works, but re-opens (and re-probes) it
    /// every time.
    pub timeout: Duration,
}

impl RPCOption {
    /// Options with the given timeout.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

/// The stream of responses returned by [`RaftNetwork::stream_append`].
pub type AppendResponseStream<'s, C> = BoxStream<'s, Result<AppendEntriesResponse<C>, RPCError>>;

/// Makes network clients, one per target node. Owned by the node's Raft task.
pub trait RaftNetworkFactory<C: RaftTypeConfig>: Send + 'static {
    /// The client type.
    type Network: RaftNetwork<C>;

    /// A client for `target`, reachable as described by `node`.
    ///
    /// It should not connect eagerly or fail: connect on first use and report failures from the
    /// RPC methods, which are retried.
    fn new_client(&mut self, target: C::NodeId, node: &C::Node) -> impl Future<Output = Self::Network> + Send;
}

/// A client that sends RPCs to one target node.
///
/// Each method sends one request to the target's corresponding [`Raft`](crate::Raft) method and
/// returns its answer. A call that fails in transit returns an [`RPCError`]: a replication
/// task retries it, whatever the variant, after a backoff that starts at one
/// `heartbeat_interval` and doubles up to half the minimum election timeout; a failed vote
/// request is not retried (the next election round asks again). quorate runs every call under
/// [`RPCOption::timeout`], so a hung call is cancelled (dropped): implementations must be
/// cancel-safe in the sense that dropping a call's future leaves the client usable, or reports
/// errors from then on.
///
/// On the receiving side, the [`Raft`](crate::Raft) methods a server calls
/// ([`append_entries`](crate::Raft::append_entries), [`vote`](crate::Raft::vote),
/// [`install_snapshot`](crate::Raft::install_snapshot),
/// [`stream_append`](crate::Raft::stream_append)) may be dropped before they answer (an
/// in-process network drops the server's future when the caller's times out): the node
/// then either did what was asked or not, exactly as if the answer was lost on the way back.
pub trait RaftNetwork<C: RaftTypeConfig>: Send + Sync + 'static {
    /// Send an AppendEntries request and return the follower's answer.
    fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> impl Future<Output = Result<AppendEntriesResponse<C>, RPCError>> + Send;

    /// Send a vote request and return the answer.
    fn vote(
        &mut self,
        req: VoteRequest<C>,
        option: RPCOption,
    ) -> impl Future<Output = Result<VoteResponse<C>, RPCError>> + Send;

    /// Send one snapshot chunk and return the answer.
    fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> impl Future<Output = Result<InstallSnapshotResponse<C>, RPCError>> + Send;

    /// Tell the target to campaign now: the last step of a leadership transfer. Deliver it to
    /// the target's [`Raft::handle_transfer_leader`](crate::Raft::handle_transfer_leader).
    ///
    /// The default answers [`RPCError::Unreachable`]: a network that does not implement it
    /// makes leadership transfers time out (harmlessly) instead of completing.
    fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        option: RPCOption,
    ) -> impl Future<Output = Result<(), RPCError>> + Send {
        let _ = (req, option);
        async {
            Err(RPCError::Unreachable(anyerror::AnyError::error("transfer_leader is not implemented by this network")))
        }
    }

    /// Replicate a stream of AppendEntries requests, returning the stream of responses.
    ///
    /// See the [module docs](self) for what an implementation must guarantee. The default
    /// sends one request at a time through [`append_entries`](Self::append_entries); override it
    /// to pipeline.
    ///
    /// # Errors
    /// [`RPCError`] if the stream could not be opened.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> impl Future<Output = Result<AppendResponseStream<'s, C>, RPCError>> + Send
    where
        S: Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 's,
    {
        async move {
            let responses = futures_util::stream::unfold(Some((self, input)), move |state| async move {
                let (network, mut input) = state?;
                let req = input.next().await?;
                match network.append_entries(req, option).await {
                    Ok(resp) => Some((Ok(resp), Some((network, input)))),
                    // An error ends the stream: yield it, then stop.
                    Err(e) => Some((Err(e), None)),
                }
            });
            Ok(responses.boxed())
        }
    }
}
