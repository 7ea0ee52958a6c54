//! A quorate network that calls the target node's [`Raft`] handle directly: no sockets, no
//! serialization. `stream_append` hands the leader's request stream itself to the target's
//! [`Raft::stream_append`], so replication runs pipelined exactly as over a real transport.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use futures_util::{Stream, StreamExt};
use quorate::error::RPCError;
use quorate::network::AppendResponseStream;
use quorate::{
    AppendEntriesRequest, AppendEntriesResponse, BasicNode, Fatal, InstallSnapshotRequest, InstallSnapshotResponse,
    RPCOption, Raft, RaftError, RaftNetwork, RaftNetworkFactory, TransferLeaderRequest, VoteRequest, VoteResponse,
};

use super::QuorateTypes;
use crate::hang::Hang;

type C = QuorateTypes;

/// Every node of the cluster by id, and whether RPCs to it hang. Filled once all nodes are
/// built, before any RPC is sent.
#[derive(Clone, Default)]
pub struct Router {
    nodes: Arc<RwLock<Peers>>,
}

/// Each node's handle and whether RPCs to it hang.
type Peers = BTreeMap<u64, (Raft<C>, Hang)>;

impl Router {
    /// Make `raft` reachable as node `id`.
    pub fn add(&self, id: u64, raft: Raft<C>) {
        self.nodes.write().unwrap_or_else(PoisonError::into_inner).insert(id, (raft, Hang::default()));
    }

    fn get(&self, id: u64) -> Option<(Raft<C>, Hang)> {
        self.nodes.read().unwrap_or_else(PoisonError::into_inner).get(&id).cloned()
    }

    /// From now on, node `id` takes every RPC sent to it and never answers (see [`Hang`]).
    /// Returns whether `id` is known.
    pub fn hang(&self, id: u64) -> bool {
        self.get(id).map(|(_, hang)| hang.hang()).is_some()
    }

    /// Forget every node, dropping the handles the router held.
    pub fn clear(&self) {
        self.nodes.write().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

impl RaftNetworkFactory<C> for Router {
    type Network = DirectClient;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> DirectClient {
        DirectClient { router: self.clone(), target, raft: None }
    }
}

/// A client to one target node. Looks the target up on first use and keeps its handle.
pub struct DirectClient {
    router: Router,
    target: u64,
    raft: Option<(Raft<C>, Hang)>,
}

#[derive(Debug, thiserror::Error)]
#[error("node {0} is not in the router")]
struct UnknownNode(u64);

fn remote_fatal(e: RaftError) -> RPCError {
    RPCError::RemoteFatal(e.fatal().cloned().unwrap_or(Fatal::Stopped))
}

impl DirectClient {
    fn target(&mut self) -> Result<(Raft<C>, Hang), RPCError> {
        if self.raft.is_none() {
            self.raft = self.router.get(self.target);
        }
        self.raft.clone().ok_or_else(|| RPCError::unreachable(&UnknownNode(self.target)))
    }
}

impl RaftNetwork<C> for DirectClient {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        let (target, hang) = self.target()?;
        hang.call(target.append_entries(req)).await.map_err(remote_fatal)
    }

    async fn vote(&mut self, req: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError> {
        let (target, hang) = self.target()?;
        hang.call(target.vote(req)).await.map_err(remote_fatal)
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<C>, RPCError> {
        let (target, hang) = self.target()?;
        hang.call(target.install_snapshot(req)).await.map_err(remote_fatal)
    }

    async fn transfer_leader(&mut self, req: TransferLeaderRequest<C>, _option: RPCOption) -> Result<(), RPCError> {
        let (target, hang) = self.target()?;
        hang.call(target.handle_transfer_leader(req)).await.map(|_started| ()).map_err(remote_fatal)
    }

    async fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> Result<AppendResponseStream<'s, C>, RPCError>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 's,
    {
        // The leader's request stream goes straight into the target: no channel, no task. A
        // hung target takes requests and drops them, and answers none.
        let (target, hang) = self.target()?;
        let requests = hang.requests(input);
        Ok(hang.responses(target.stream_append(requests)).map(|r| r.map_err(remote_fatal)).boxed())
    }
}
