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
//!    each `Success { matched }` acknowledges every request up to `matched`. The leader tells
//!    which request an answer is for by `matched` (no two requests it has in flight end at the
//!    same log id), and counts the answer as proof that the follower followed it when that
//!    request was sent: an answer must never be passed off as another request's.
//! 4. **Answers in time.** While any request is unanswered, the leader expects the next
//!    `Success` within `rpc_timeout` (the [`RPCOption::timeout`] it passed) of the later of:
//!    the last `Success` on this stream, and the send of the first request that went out while
//!    nothing was in flight. It is not a deadline per request. Past it, the leader drops the
//!    stream as failed. The leader sends no heartbeat behind an unanswered request, so a
//!    missing answer stalls the stream until then.
//! 5. **Errors end the stream; so does nothing else.** After yielding an `Err`, the response
//!    stream is done; the leader resumes from what was acknowledged, on a new stream. While the
//!    leader still feeds the input, the response stream must not end (`None`) without an `Err`:
//!    the leader counts such an end as a network error, whether answers were owed or not.
//! 6. **One stream at a time.** Requests of a stream the leader dropped must never reach the
//!    follower after requests of a newer stream to it. A transport that reconnects or
//!    multiplexes must fence the old stream (its own connection or sub-stream, closed when the
//!    stream is dropped) rather than let its requests drain in behind the new one.
//!
//! What the leader does with a stream: it calls `stream_append` under `rpc_timeout` and feeds
//! the input only after the call returned, so the call must return the response stream at once
//! (opening a connection is fine; waiting for a request or a response is not: none can come
//! before it returns). After any failure (an `Err`, an end, a missed answer deadline, a call
//! that timed out) it backs off, at least one `heartbeat_interval`, then searches the match
//! point again with [`RaftNetwork::append_entries`] probes (none if the follower acknowledged
//! the leader's whole log) before it opens a new stream.
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
    /// For [`RaftNetwork::stream_append`] it bounds the call that opens the stream, and then
    /// the wait for answers (promise 4 of the [module docs](self)): while requests are
    /// unanswered, the next `Success` is due within it of the last `Success`, or of the first
    /// request sent while nothing was in flight. It is not a deadline for the stream, nor for
    /// each request. A stream may live as long as the leader feeds it; a network that ends the
    /// whole stream after this long still works, but the leader counts each such end as a
    /// failure, backs off and searches the match point again every time.
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
    /// Called on the node's Raft task, which awaits it and does nothing else meanwhile: once
    /// per target when a replication stream starts (see [`RaftNetwork`] for how long that
    /// client is kept), once per voter at every vote or pre-vote round, and once for the
    /// message that ends a leadership transfer. So it **must return at once**: do not connect,
    /// resolve names or wait on anything here. Connect on the first call, and report failures
    /// from the RPC methods, which are retried.
    fn new_client(&mut self, target: C::NodeId, node: &C::Node) -> impl Future<Output = Self::Network> + Send;
}

/// A client that sends RPCs to one target node.
///
/// Each method sends one request to the target's corresponding [`Raft`](crate::Raft) method and
/// returns its answer, or an [`RPCError`] if the call failed in transit.
///
/// # One client for a whole leadership
///
/// A leader's replication stream to a target gets its client from
/// [`RaftNetworkFactory::new_client`] once, when the stream starts (when this node is elected,
/// or when the target joins the membership), and sends every probe, stream and snapshot chunk
/// through that one client for as long as the stream runs: until the leadership ends, or
/// shortly after the target left the membership. It never asks for a new client after a
/// failure: it retries on the same one, whatever the [`RPCError`] variant, after a backoff
/// that starts at one `heartbeat_interval` and doubles up to half the minimum election
/// timeout. So **after any failed or cancelled call, the next call must try again**,
/// reconnecting if the connection broke. A client that stays failed (one that reports errors
/// for good once its connection dropped, say) stalls replication to that target for the rest
/// of the leadership.
///
/// Vote requests and the message that ends a leadership transfer each go through a client
/// made for them; a failed vote request is not retried (the next election round asks again).
///
/// # Cancel safety
///
/// quorate runs every call under [`RPCOption::timeout`] and drops the call's future when it
/// expires; it also drops a replication stream's task, in the middle of a call and with its
/// client, when the leadership ends or the target leaves the membership. Dropping a call's
/// future must leave the client usable for the next call: never half a request written into
/// a connection that the next call reuses.
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
    /// See the [module docs](self) for every promise an implementation must keep. The ones
    /// about time and ends, which a network most easily gets wrong:
    ///
    /// - **Return at once.** The leader runs this call under `option.timeout` and feeds
    ///   `input` only after it returned: return the response stream without waiting for a
    ///   request or a response (none can come before), or the call times out and the leader
    ///   backs off.
    /// - **The answer deadline is not per request.** While requests are unanswered, the next
    ///   `Success` is due within `option.timeout` of the last `Success` on this stream, or of
    ///   the first request sent while nothing was in flight. Past it the leader drops the
    ///   stream.
    /// - **An end is a failure.** A response stream that ends (`None`) while the leader still
    ///   feeds the input counts as a network error, whether answers were owed or not: the
    ///   leader backs off at least one `heartbeat_interval` and searches the match point again.
    ///   End it only after yielding an `Err`, or once the input ended.
    /// - **Old streams stay behind.** Requests of a stream the leader dropped must never reach
    ///   the follower after requests of a newer stream.
    ///
    /// The default sends one request at a time through [`append_entries`](Self::append_entries)
    /// and keeps every promise; override it to pipeline.
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
