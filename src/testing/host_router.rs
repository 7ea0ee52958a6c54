//! [`HostRouter`]: an in-memory network between the [`GroupHost`]s of one test, with faults.
//!
//! Each node's host gets a [`HostRouterNetwork`] ([`HostRouter::network`]); its groups' clients
//! call the target host's group directly (no serialization), and beats reach the target's
//! [`GroupHost::receive_beat`]. Faults are per node pair and apply to every group and to the
//! beats alike, as a broken connection would:
//!
//! - [`isolate`](HostRouter::isolate) / [`restore`](HostRouter::restore): every link to and from
//!   a node fails;
//! - [`block`](HostRouter::block) / [`unblock`](HostRouter::unblock): one direction fails;
//! - [`remove_host`](HostRouter::remove_host): the node is gone (its groups unreachable), as
//!   after `kill -9`.
//!
//! Every message is counted per ordered node pair when it is sent, delivered or not: RPCs of
//! all groups ([`HostRouter::rpcs`]) apart from beats ([`HostRouter::beats`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use anyerror::AnyError;

use super::TypeConfig;
use crate::error::{RPCError, RaftError};
use crate::multi::{GroupHost, GroupId, HostNetwork, NodeBeat};
use crate::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use crate::types::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};
use crate::{BasicNode, Raft};

type C = TypeConfig;

/// The host type a [`HostRouter`] connects.
pub type RouterHost = GroupHost<C, HostRouterNetwork>;

/// The in-memory network of a test's group hosts. Cheap to clone: clones share the network.
#[derive(Clone, Default)]
pub struct HostRouter {
    inner: Arc<Mutex<Hub>>,
}

#[derive(Default)]
struct Hub {
    hosts: BTreeMap<u64, RouterHost>,
    isolated: BTreeSet<u64>,
    blocked: BTreeSet<(u64, u64)>,
    /// `(rpcs, beats)` sent per ordered node pair.
    messages: BTreeMap<(u64, u64), (u64, u64)>,
}

/// What a message is, for counting.
#[derive(Clone, Copy)]
enum Kind {
    Rpc,
    Beat,
}

impl HostRouter {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Hub> {
        // Every update of the hub is a single insert or remove: a panic elsewhere cannot leave
        // it half-changed, so a poisoned lock is taken over.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The network of node `id`'s host.
    pub fn network(&self, id: u64) -> HostRouterNetwork {
        HostRouterNetwork { me: id, router: self.clone() }
    }

    /// Make `host` reachable as its node id.
    pub fn add_host(&self, host: RouterHost) {
        self.lock().hosts.insert(host.id(), host);
    }

    /// Make node `id` unreachable, as if its process died, and return its host (to shut down).
    pub fn remove_host(&self, id: u64) -> Option<RouterHost> {
        self.lock().hosts.remove(&id)
    }

    /// The host of node `id`, if it is reachable.
    pub fn host(&self, id: u64) -> Option<RouterHost> {
        self.lock().hosts.get(&id).cloned()
    }

    /// Cut every link to and from node `id`.
    pub fn isolate(&self, id: u64) {
        self.lock().isolated.insert(id);
    }

    /// Undo [`isolate`](Self::isolate).
    pub fn restore(&self, id: u64) {
        self.lock().isolated.remove(&id);
    }

    /// Cut messages from `from` to `to` (the other direction is unaffected).
    pub fn block(&self, from: u64, to: u64) {
        self.lock().blocked.insert((from, to));
    }

    /// Undo [`block`](Self::block).
    pub fn unblock(&self, from: u64, to: u64) {
        self.lock().blocked.remove(&(from, to));
    }

    /// RPCs (of every group) sent from `from` to `to` so far, delivered or not.
    pub fn rpcs(&self, from: u64, to: u64) -> u64 {
        self.lock().messages.get(&(from, to)).map_or(0, |m| m.0)
    }

    /// Beats sent from `from` to `to` so far, delivered or not.
    pub fn beats(&self, from: u64, to: u64) -> u64 {
        self.lock().messages.get(&(from, to)).map_or(0, |m| m.1)
    }

    /// RPCs sent between every pair so far.
    pub fn total_rpcs(&self) -> u64 {
        self.lock().messages.values().map(|m| m.0).sum()
    }

    /// Count a message from `from` to `to` and return the target host if the link is up.
    fn send(&self, from: u64, to: u64, kind: Kind) -> Result<RouterHost, RPCError> {
        let mut hub = self.lock();
        let counts = hub.messages.entry((from, to)).or_insert((0, 0));
        match kind {
            Kind::Rpc => counts.0 += 1,
            Kind::Beat => counts.1 += 1,
        }
        if hub.isolated.contains(&from) || hub.isolated.contains(&to) || hub.blocked.contains(&(from, to)) {
            return Err(RPCError::Unreachable(AnyError::error(format!("link {from}->{to} is cut"))));
        }
        hub.hosts.get(&to).cloned().ok_or_else(|| RPCError::Unreachable(AnyError::error(format!("node {to} is down"))))
    }

    /// The Raft of `group` on `to`, reached from `from`.
    fn route(&self, from: u64, to: u64, group: GroupId) -> Result<Raft<C>, RPCError> {
        let host = self.send(from, to, Kind::Rpc)?;
        host.group(group)
            .ok_or_else(|| RPCError::Unreachable(AnyError::error(format!("node {to} has no group {group}"))))
    }
}

/// One node's side of a [`HostRouter`]: its host's [`HostNetwork`].
pub struct HostRouterNetwork {
    me: u64,
    router: HostRouter,
}

impl HostNetwork<C> for HostRouterNetwork {
    type Group = HostRouterGroupNetwork;

    fn group(&self, group: GroupId) -> Self::Group {
        HostRouterGroupNetwork { me: self.me, group, router: self.router.clone() }
    }

    async fn send_beat(
        &self,
        target: u64,
        _node: &BasicNode,
        beat: NodeBeat<C>,
        _option: RPCOption,
    ) -> Result<(), RPCError> {
        let host = self.router.send(self.me, target, Kind::Beat)?;
        host.receive_beat(beat);
        Ok(())
    }
}

/// The network factory of one group of one node on a [`HostRouter`].
pub struct HostRouterGroupNetwork {
    me: u64,
    group: GroupId,
    router: HostRouter,
}

impl RaftNetworkFactory<C> for HostRouterGroupNetwork {
    type Network = HostRouterClient;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        HostRouterClient { me: self.me, target, group: self.group, router: self.router.clone() }
    }
}

/// A client from one group's node to the same group on `target`.
pub struct HostRouterClient {
    me: u64,
    target: u64,
    group: GroupId,
    router: HostRouter,
}

/// The target's error, as its caller sees it.
fn remote_error(e: RaftError) -> RPCError {
    match e {
        RaftError::Fatal(f) => RPCError::RemoteFatal(f),
        RaftError::APIError(never) => match never {},
    }
}

impl RaftNetwork<C> for HostRouterClient {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        let raft = self.router.route(self.me, self.target, self.group)?;
        raft.append_entries(req).await.map_err(remote_error)
    }

    async fn vote(&mut self, req: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError> {
        let raft = self.router.route(self.me, self.target, self.group)?;
        raft.vote(req).await.map_err(remote_error)
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<C>, RPCError> {
        let raft = self.router.route(self.me, self.target, self.group)?;
        raft.install_snapshot(req).await.map_err(remote_error)
    }

    async fn transfer_leader(&mut self, req: TransferLeaderRequest<C>, _option: RPCOption) -> Result<(), RPCError> {
        let raft = self.router.route(self.me, self.target, self.group)?;
        raft.handle_transfer_leader(req).await.map(|_| ()).map_err(remote_error)
    }
}
