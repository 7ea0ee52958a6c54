//! The client side: [`NetworkFactory`] and one [`NetworkClient`] per target.

use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, Stream, StreamExt};
use quorate::error::RaftError;
use quorate::network::AppendResponseStream;
use quorate::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, RPCError, RPCOption,
    RaftNetwork, RaftNetworkFactory, TransferLeaderRequest, VoteRequest, VoteResponse,
};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::wire::{Conn, RpcReply, RpcRequest, StreamReply, decode, encode, framed};
use crate::{KvNode, TypeConfig};

type C = TypeConfig;

/// Makes a [`NetworkClient`] per target. Holds nothing: addresses come from the membership.
#[derive(Debug, Clone, Default)]
pub struct NetworkFactory;

impl RaftNetworkFactory<C> for NetworkFactory {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: u64, node: &KvNode) -> NetworkClient {
        NetworkClient { target, addr: node.raft_addr.clone(), conn: None }
    }
}

/// Sends RPCs to one node. Keeps one unary connection, opened on first use and dropped on any
/// failure (or when a call is cancelled mid-way), so the next call starts on a clean one.
pub struct NetworkClient {
    target: u64,
    addr: String,
    conn: Option<Conn>,
}

fn network_error(e: impl std::fmt::Display) -> RPCError {
    RPCError::Network(anyerror::AnyError::error(e.to_string()))
}

fn remote(e: RaftError) -> RPCError {
    match e {
        RaftError::Fatal(f) => RPCError::RemoteFatal(f),
        RaftError::APIError(never) => match never {},
    }
}

async fn connect(addr: &str, deadline: Instant, timeout: Duration) -> Result<Conn, RPCError> {
    match timeout_at(deadline, TcpStream::connect(addr)).await {
        Err(_) => Err(RPCError::Timeout(timeout)),
        Ok(Err(e)) => Err(RPCError::unreachable(&e)),
        Ok(Ok(stream)) => {
            stream.set_nodelay(true).map_err(|e| RPCError::network(&e))?;
            Ok(framed(stream))
        }
    }
}

/// Send `req` on `conn` and read one reply.
async fn exchange(conn: &mut Conn, req: &RpcRequest) -> Result<RpcReply, RPCError> {
    conn.send(encode(req).map_err(network_error)?).await.map_err(|e| RPCError::network(&e))?;
    match conn.next().await {
        Some(Ok(frame)) => decode(&frame).map_err(network_error),
        Some(Err(e)) => Err(RPCError::network(&e)),
        None => Err(network_error("connection closed by the peer")),
    }
}

impl NetworkClient {
    /// One request/answer exchange under `option.timeout`.
    ///
    /// A failure on a reused connection is retried once on a fresh one: the peer may have
    /// closed an idle connection or restarted. Every request here is safe to deliver twice
    /// (votes, AppendEntries and snapshot chunks are idempotent in Raft).
    async fn call(&mut self, req: RpcRequest, option: RPCOption) -> Result<RpcReply, RPCError> {
        let deadline = Instant::now() + option.timeout;
        let exchange_all = async {
            if let Some(mut conn) = self.conn.take()
                && let Ok(reply) = exchange(&mut conn, &req).await
            {
                self.conn = Some(conn);
                return Ok(reply);
            }
            let mut conn = connect(&self.addr, deadline, option.timeout).await?;
            let reply = exchange(&mut conn, &req).await?;
            self.conn = Some(conn);
            Ok(reply)
        };
        match timeout_at(deadline, exchange_all).await {
            Ok(r) => r,
            Err(_) => Err(RPCError::Timeout(option.timeout)),
        }
    }

    fn unexpected(&self) -> RPCError {
        network_error(format!("node {} answered with the wrong message type", self.target))
    }
}

impl RaftNetwork<C> for NetworkClient {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        match self.call(RpcRequest::AppendEntries(req), option).await? {
            RpcReply::AppendEntries(r) => r.map_err(remote),
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(&mut self, req: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError> {
        match self.call(RpcRequest::Vote(req), option).await? {
            RpcReply::Vote(r) => r.map_err(remote),
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<C>, RPCError> {
        match self.call(RpcRequest::InstallSnapshot(req), option).await? {
            RpcReply::InstallSnapshot(r) => r.map_err(remote),
            _ => Err(self.unexpected()),
        }
    }

    async fn transfer_leader(&mut self, req: TransferLeaderRequest<C>, option: RPCOption) -> Result<(), RPCError> {
        match self.call(RpcRequest::TransferLeader(req), option).await? {
            RpcReply::TransferLeader(r) => r.map(|_| ()).map_err(remote),
            _ => Err(self.unexpected()),
        }
    }

    /// Pipelined replication on a connection of its own: requests are written as soon as the
    /// leader yields them, responses are read as the follower sends them.
    ///
    /// The connection is opened and switched to stream mode under `option.timeout`; after that
    /// each request write, and the wait for the next response while any request is
    /// unanswered, is bounded by it too.
    async fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> Result<AppendResponseStream<'s, C>, RPCError>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 's,
    {
        let deadline = Instant::now() + option.timeout;
        let mut conn = connect(&self.addr, deadline, option.timeout).await?;
        let open = encode(&RpcRequest::OpenStream).map_err(network_error)?;
        match timeout_at(deadline, conn.send(open)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(RPCError::network(&e)),
            Err(_) => return Err(RPCError::Timeout(option.timeout)),
        }
        let (sink, source) = conn.split();
        let pipe = Pipe { input: Some(input), sink, source, unanswered: 0, timeout: option.timeout };
        Ok(futures_util::stream::unfold(Some(pipe), |pipe| async move {
            let mut pipe = pipe?;
            match pipe.next_response().await {
                Some(Ok(resp)) => Some((Ok(resp), Some(pipe))),
                Some(Err(e)) => Some((Err(e), None)),
                None => None,
            }
        })
        .boxed())
    }
}

/// The state of one replication stream.
struct Pipe<S> {
    /// `None` once the leader ended its request stream.
    input: Option<S>,
    sink: SplitSink<Conn, bytes::Bytes>,
    source: SplitStream<Conn>,
    /// Requests sent and not yet answered.
    unanswered: u64,
    timeout: Duration,
}

impl<S> Pipe<S>
where
    S: Stream<Item = AppendEntriesRequest<C>> + Send + Unpin,
{
    /// Send requests as they come until the next response arrives. `None` when both sides are
    /// done.
    async fn next_response(&mut self) -> Option<Result<AppendEntriesResponse<C>, RPCError>> {
        loop {
            if self.input.is_none() && self.unanswered == 0 {
                return None;
            }
            let idle = tokio::time::sleep(self.timeout);
            tokio::select! {
                biased;
                frame = self.source.next() => return Some(self.on_frame(frame)),
                req = next_request(&mut self.input), if self.input.is_some() => {
                    let Some(req) = req else {
                        self.input = None;
                        continue;
                    };
                    if let Err(e) = self.send(req).await {
                        return Some(Err(e));
                    }
                }
                _ = idle, if self.unanswered > 0 => return Some(Err(RPCError::Timeout(self.timeout))),
            }
        }
    }

    fn on_frame(
        &mut self,
        frame: Option<Result<bytes::BytesMut, std::io::Error>>,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        let frame = match frame {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(RPCError::network(&e)),
            None => return Err(network_error("replication stream closed by the follower")),
        };
        let reply: StreamReply = decode(&frame).map_err(network_error)?;
        self.unanswered = self.unanswered.saturating_sub(1);
        reply.map_err(remote)
    }

    async fn send(&mut self, req: AppendEntriesRequest<C>) -> Result<(), RPCError> {
        let frame = encode(&req).map_err(network_error)?;
        match tokio::time::timeout(self.timeout, self.sink.send(frame)).await {
            Ok(Ok(())) => {
                self.unanswered += 1;
                Ok(())
            }
            Ok(Err(e)) => Err(RPCError::network(&e)),
            Err(_) => Err(RPCError::Timeout(self.timeout)),
        }
    }
}

/// The next request of `input`. Cancel safe: `StreamExt::next` is.
async fn next_request<S>(input: &mut Option<S>) -> Option<AppendEntriesRequest<C>>
where
    S: Stream<Item = AppendEntriesRequest<C>> + Unpin,
{
    match input {
        Some(s) => s.next().await,
        None => None,
    }
}
