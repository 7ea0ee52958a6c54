//! An openraft network that calls the target node's [`openraft::Raft`] handle directly: no
//! sockets, no serialization. With [`Replication::Pipelined`], `stream_append` hands the
//! leader's request stream to the target's `Raft::stream_append`, so replication runs
//! pipelined; with [`Replication::Sequential`] it keeps openraft's default (one
//! `append_entries` at a time), as openraft's own benchmark does.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};

use futures_util::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, stream_append_sequential};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, OptionalSend, RaftNetworkV2};

use super::{OpenraftNode, OpenraftTypes};
use crate::hang::Hang;
use crate::tuning::Replication;

type C = OpenraftTypes;

/// Every node of the cluster by id, and whether RPCs to it hang. Filled once all nodes are
/// built, before any RPC is sent.
#[derive(Clone)]
pub struct Router {
    nodes: Arc<RwLock<Peers>>,
    replication: Replication,
}

/// Each node's handle and whether RPCs to it hang.
type Peers = BTreeMap<u64, (OpenraftNode, Hang)>;

impl Router {
    /// A router whose clients replicate as `replication` says.
    pub fn new(replication: Replication) -> Self {
        Self { nodes: Arc::default(), replication }
    }

    /// Make `raft` reachable as node `id`.
    pub fn add(&self, id: u64, raft: OpenraftNode) {
        self.nodes.write().unwrap_or_else(PoisonError::into_inner).insert(id, (raft, Hang::default()));
    }

    fn get(&self, id: u64) -> Option<(OpenraftNode, Hang)> {
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
        DirectClient { router: self.clone(), target, raft: None, replication: self.replication }
    }
}

/// A client to one target node. Looks the target up on first use and keeps its handle.
pub struct DirectClient {
    router: Router,
    target: u64,
    raft: Option<(OpenraftNode, Hang)>,
    replication: Replication,
}

#[derive(Debug, thiserror::Error)]
#[error("node {0} is not in the router")]
struct UnknownNode(u64);

fn unreachable(e: &(impl std::error::Error + 'static)) -> RPCError<C> {
    RPCError::Unreachable(Unreachable::new(e))
}

impl DirectClient {
    fn target(&mut self) -> Result<(OpenraftNode, Hang), Unreachable<C>> {
        if self.raft.is_none() {
            self.raft = self.router.get(self.target);
        }
        self.raft.clone().ok_or_else(|| Unreachable::new(&UnknownNode(self.target)))
    }
}

impl RaftNetworkV2<C> for DirectClient {
    type SnapshotData = ();

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let (target, hang) = self.target()?;
        hang.call(target.append_entries(rpc)).await.map_err(|e| unreachable(&e))
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<C>, RPCError<C>>>, RPCError<C>>>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + OptionalSend + Unpin + 'static,
    {
        if self.replication == Replication::Sequential {
            // openraft's own default: each request through `append_entries` (which a hung
            // target never answers), the next one only after the answer.
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let (target, hang) = self.target()?;
            // A hung target takes requests and drops them, and answers none.
            let requests = Box::pin(hang.requests(input));
            let responses = hang.responses(target.stream_append(requests)).map(|r| r.map_err(|e| unreachable(&e)));
            Ok(responses.boxed())
        })
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        let (target, hang) = self.target()?;
        hang.call(target.vote(rpc)).await.map_err(|e| unreachable(&e))
    }

    async fn pre_vote(&mut self, rpc: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        let (target, hang) = self.target()?;
        hang.call(target.pre_vote(rpc)).await.map_err(|e| unreachable(&e))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, ()>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let (target, hang) = self.target()?;
        hang.call(target.install_full_snapshot(vote, snapshot))
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}
