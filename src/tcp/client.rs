//! The client side: [`TcpNetworkFactory`] and [`TcpNetwork`], quorate's network traits over
//! one shared connection per peer, for a node's single Raft or for one group of a
//! [`TcpHostNetwork`](super::TcpHostNetwork).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

use super::config::{PeerAddr, TcpConfig};
use super::connection::{Connection, StreamEvent};
use super::error::TcpError;
use super::message::{Reply, Rpc};
use super::pool::ConnectionPool;
use crate::error::{RPCError, RaftError};
use crate::multi::GroupId;
use crate::network::{AppendResponseStream, RPCOption, RaftNetwork, RaftNetworkFactory};
use crate::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, RaftTypeConfig,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};

/// quorate's [`RaftNetworkFactory`] over TCP: hands out a [`TcpNetwork`] per target, all of
/// them sharing one connection per peer.
///
/// Made by [`new`](Self::new) for a node's single Raft (served by
/// [`TcpServer::serve`](super::TcpServer::serve)), or by
/// [`TcpHostNetwork`](super::TcpHostNetwork) for one group of a
/// [`GroupHost`](crate::multi::GroupHost) (served by
/// [`TcpServer::serve_host`](super::TcpServer::serve_host)); then every message its clients
/// send names the group, and it shares its connections with every other group of the host.
///
/// Peers' addresses come from the membership, through [`PeerAddr`] on the node type. Cheap to
/// clone; clones share the connections.
pub struct TcpNetworkFactory<C: RaftTypeConfig> {
    pool: Arc<ConnectionPool<C>>,
    /// The group its clients reach on their targets; `None` for the targets' single Raft.
    group: Option<GroupId>,
}

impl<C: RaftTypeConfig> Clone for TcpNetworkFactory<C> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone(), group: self.group }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for TcpNetworkFactory<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpNetworkFactory")
            .field("node_id", &self.pool.node_id)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> TcpNetworkFactory<C> {
    /// The client side of node `node_id`'s transport. It connects to nobody until quorate
    /// sends its first RPC.
    ///
    /// With TLS, the node's certificate must name it (see [`TlsConfig`](super::TlsConfig));
    /// [`TcpServer::serve`](super::TcpServer::serve) checks that when the node starts.
    pub fn new(node_id: C::NodeId, config: TcpConfig) -> Self {
        Self { pool: Arc::new(ConnectionPool::new(node_id, config)), group: None }
    }

    /// The factory of group `group`, over the connections of `pool`.
    pub(crate) fn for_group(pool: Arc<ConnectionPool<C>>, group: GroupId) -> Self {
        Self { pool, group: Some(group) }
    }
}

impl<C> RaftNetworkFactory<C> for TcpNetworkFactory<C>
where
    C: RaftTypeConfig,
    C::Node: PeerAddr,
{
    type Network = TcpNetwork<C>;

    async fn new_client(&mut self, target: C::NodeId, node: &C::Node) -> TcpNetwork<C> {
        TcpNetwork { target, addr: node.peer_addr().to_string(), group: self.group, pool: self.pool.clone() }
    }
}

/// quorate's [`RaftNetwork`] to one target, over the connection the factory keeps to it.
///
/// Calls are multiplexed: each waits for its own answer, any number at once, on one
/// connection. [`stream_append`](RaftNetwork::stream_append) pipelines: it sends each request
/// as the leader yields it and yields the follower's answers as they arrive.
pub struct TcpNetwork<C: RaftTypeConfig> {
    target: C::NodeId,
    addr: String,
    /// As [`TcpNetworkFactory`]'s.
    group: Option<GroupId>,
    pool: Arc<ConnectionPool<C>>,
}

impl<C: RaftTypeConfig> fmt::Debug for TcpNetwork<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpNetwork")
            .field("target", &self.target)
            .field("addr", &self.addr)
            .field("group", &self.group)
            .finish()
    }
}

fn remote(e: RaftError) -> RPCError {
    match e {
        RaftError::Fatal(f) => RPCError::RemoteFatal(f),
        RaftError::APIError(never) => match never {},
    }
}

fn unexpected(addr: &str) -> RPCError {
    RPCError::Network(anyerror::AnyError::error(format!("{addr} answered with the wrong message type")))
}

impl<C: RaftTypeConfig> TcpNetwork<C> {
    /// One call under `option.timeout`, connecting first if needed.
    ///
    /// A call that times out while nothing at all arrived from the peer since it was sent
    /// closes the connection: the peer (or the path to it) is hung, and the next call should
    /// not queue behind it.
    async fn call(&self, rpc: Rpc<C>, option: RPCOption) -> Result<Reply<C>, RPCError> {
        let deadline = Instant::now() + option.timeout;
        let conn = self.pool.connection_by(self.target, &self.addr, deadline, option.timeout).await?;
        let sent_at = conn.now_us();
        let within = deadline.saturating_duration_since(Instant::now());
        if within.is_zero() {
            // Connecting took the whole wait: nothing is sent.
            return Err(RPCError::Timeout(option.timeout));
        }
        match timeout_at(deadline, conn.call(self.group, rpc, within)).await {
            Ok(reply) => Ok(reply?),
            Err(_) => {
                if conn.last_received_us() <= sent_at {
                    conn.close(&format!("no answer and nothing else received for {:?}", option.timeout));
                }
                Err(RPCError::Timeout(option.timeout))
            }
        }
    }
}

impl<C: RaftTypeConfig> RaftNetwork<C> for TcpNetwork<C> {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        match self.call(Rpc::AppendEntries(req), option).await? {
            Reply::AppendEntries(r) => r.map_err(remote),
            _ => Err(unexpected(&self.addr)),
        }
    }

    async fn vote(&mut self, req: VoteRequest<C>, option: RPCOption) -> Result<VoteResponse<C>, RPCError> {
        match self.call(Rpc::Vote(req), option).await? {
            Reply::Vote(r) => r.map_err(remote),
            _ => Err(unexpected(&self.addr)),
        }
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<C>, RPCError> {
        match self.call(Rpc::InstallSnapshot(req), option).await? {
            Reply::InstallSnapshot(r) => r.map_err(remote),
            _ => Err(unexpected(&self.addr)),
        }
    }

    async fn transfer_leader(&mut self, req: TransferLeaderRequest<C>, option: RPCOption) -> Result<(), RPCError> {
        match self.call(Rpc::TransferLeader(req), option).await? {
            Reply::TransferLeader(r) => r.map(|_| ()).map_err(remote),
            _ => Err(unexpected(&self.addr)),
        }
    }

    /// Pipelined replication on the shared connection, keeping the promises of the
    /// [network contract](crate::network):
    ///
    /// 1. each request is one frame, which the server decodes whole or not at all;
    /// 2. the stream's requests leave in the order the leader yields them, on one TCP
    ///    connection, and none is ever sent twice: a stream never moves to another connection;
    /// 3. the server answers a stream's requests in order, with its node's own answers;
    /// 4. any failure (the connection closing, a timeout, an error answer) is yielded once and
    ///    ends the stream.
    ///
    /// Opening is bounded by `option.timeout`; after that, each request's send, and the wait
    /// for the next answer while any request is unanswered, is bounded by it too.
    async fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> Result<AppendResponseStream<'s, C>, RPCError>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 's,
    {
        let deadline = Instant::now() + option.timeout;
        let conn = self.pool.connection_by(self.target, &self.addr, deadline, option.timeout).await?;
        let (stream, answers) = conn.open_stream()?;
        let pipe = Pipe {
            conn,
            group: self.group,
            stream,
            input: Some(input),
            answers,
            unanswered: 0,
            timeout: option.timeout,
        };
        Ok(futures_util::stream::unfold(Some(pipe), |pipe| async move {
            let mut pipe = pipe?;
            match pipe.next_answer().await {
                Some(Ok(resp)) => Some((Ok(resp), Some(pipe))),
                Some(Err(e)) => Some((Err(e), None)),
                None => None,
            }
        })
        .boxed())
    }
}

/// One replication stream. Dropping it ends the stream on the server.
struct Pipe<C: RaftTypeConfig, S> {
    conn: Arc<Connection<C>>,
    group: Option<GroupId>,
    stream: u64,
    /// `None` once the leader ended its request stream.
    input: Option<S>,
    answers: mpsc::UnboundedReceiver<StreamEvent<C>>,
    /// Requests sent and not yet answered.
    unanswered: u64,
    timeout: Duration,
}

impl<C: RaftTypeConfig, S> Drop for Pipe<C, S> {
    fn drop(&mut self) {
        self.conn.end_stream(self.stream);
    }
}

impl<C, S> Pipe<C, S>
where
    C: RaftTypeConfig,
    S: Stream<Item = AppendEntriesRequest<C>> + Send + Unpin,
{
    /// Send requests as the leader yields them until the next answer arrives. `None` when the
    /// leader's input is done and every request is answered.
    async fn next_answer(&mut self) -> Option<Result<AppendEntriesResponse<C>, RPCError>> {
        loop {
            if self.input.is_none() && self.unanswered == 0 {
                return None;
            }
            let sent_at = self.conn.now_us();
            let idle = tokio::time::sleep(self.timeout);
            tokio::select! {
                biased;
                event = self.answers.recv() => return Some(self.on_event(event)),
                req = next_request(&mut self.input), if self.input.is_some() => {
                    let Some(req) = req else {
                        self.input = None;
                        continue;
                    };
                    match tokio::time::timeout(self.timeout, self.conn.send_append(self.group, self.stream, req)).await {
                        Ok(Ok(())) => self.unanswered += 1,
                        Ok(Err(e)) => return Some(Err(e.into())),
                        Err(_) => return Some(Err(RPCError::Timeout(self.timeout))),
                    }
                }
                _ = idle, if self.unanswered > 0 => {
                    if self.conn.last_received_us() <= sent_at {
                        self.conn.close(&format!("no answer and nothing else received for {:?}", self.timeout));
                    }
                    return Some(Err(RPCError::Timeout(self.timeout)));
                }
            }
        }
    }

    fn on_event(&mut self, event: Option<StreamEvent<C>>) -> Result<AppendEntriesResponse<C>, RPCError> {
        match event {
            Some(StreamEvent::Appended(resp)) => {
                self.unanswered = self.unanswered.saturating_sub(1);
                resp.map_err(remote)
            }
            Some(StreamEvent::Ended(reason)) => Err(TcpError::Closed { addr: self.conn.addr.clone(), reason }.into()),
            Some(StreamEvent::NotServed(reason)) => {
                Err(TcpError::NotServed { addr: self.conn.addr.clone(), reason }.into())
            }
            None => Err(TcpError::Closed { addr: self.conn.addr.clone(), reason: "the stream ended".into() }.into()),
        }
    }
}

/// The next request of `input`. Cancel safe: `StreamExt::next` is.
async fn next_request<C, S>(input: &mut Option<S>) -> Option<AppendEntriesRequest<C>>
where
    C: RaftTypeConfig,
    S: Stream<Item = AppendEntriesRequest<C>> + Unpin,
{
    match input {
        Some(s) => s.next().await,
        None => None,
    }
}
