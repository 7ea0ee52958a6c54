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
//!   after `kill -9`;
//! - [`set_delay`](HostRouter::set_delay): messages on a link (requests and beats) arrive
//!   after a delay;
//! - [`set_answer_delay`](HostRouter::set_answer_delay): answers on a link reach the sender
//!   after a delay (the target acted on the request long before its sender learns of it);
//! - seeded random faults ([`set_seed`](HostRouter::set_seed)): every message is lost with
//!   probability [`set_loss`](HostRouter::set_loss), and delayed by up to
//!   [`set_jitter`](HostRouter::set_jitter), so independent messages overtake each other.
//!
//! Delays run on the tokio clock, so a test on a paused clock runs them instantly, and the
//! random faults come from one seeded generator drawn in the order messages are sent: on a
//! single-threaded runtime with a paused clock, a seed replays the same faults. A lost message
//! fails at once (with [`RPCError::Network`]); a cut link answers [`RPCError::Unreachable`].
//! A beat that takes longer than the beat interval is dropped by its sender, as a lost one.
//!
//! A simulation on a paused clock cannot see a busy loop in virtual time (the clock moves
//! only when every task is idle). [`set_real_time_limit`](HostRouter::set_real_time_limit)
//! bounds a run's wall-clock time: past it every message hangs, so a livelock ends, and
//! [`real_time_limit_exceeded`](HostRouter::real_time_limit_exceeded) says so.
//!
//! Every message is counted per ordered node pair when it is sent, delivered or not: RPCs of
//! all groups ([`HostRouter::rpcs`]) apart from beats ([`HostRouter::beats`]).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

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
    /// Directed links that carry RPCs but no beats.
    beats_blocked: BTreeSet<(u64, u64)>,
    /// `(rpcs, beats)` sent per ordered node pair.
    messages: BTreeMap<(u64, u64), (u64, u64)>,
    /// Directed links whose messages arrive late.
    delays: BTreeMap<(u64, u64), Duration>,
    /// Directed links `(from, to)` whose answers reach the sender late.
    answer_delays: BTreeMap<(u64, u64), Duration>,
    random: RandomFaults,
    /// Past this wall-clock instant every message hangs.
    real_time_limit: Option<std::time::Instant>,
    real_time_limit_exceeded: bool,
}

/// Seeded random faults: message loss and jitter.
#[derive(Default)]
struct RandomFaults {
    /// Draws nothing (all zero) until seeded.
    rng: super::Xorshift,
    /// Probability that a message is lost.
    loss: f64,
    /// The most extra delay of a message.
    jitter: Duration,
}

impl RandomFaults {
    /// A uniform draw in [0, 1) from the seeded generator.
    fn draw(&mut self) -> f64 {
        self.rng.draw()
    }
}

/// What one message meets on its way, decided when it is sent.
struct Path {
    host: RouterHost,
    /// How long it takes to arrive.
    delay: Duration,
    /// How long its answer takes back.
    answer_delay: Duration,
    /// It never arrives (the run's wall-clock limit passed).
    hang: bool,
}

impl Path {
    /// Wait until the message arrives (forever if it hangs).
    async fn arrive(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
    }

    /// Deliver a request to `raft` with `call`, and bring its answer back as the sender sees
    /// it.
    async fn deliver<T, Fut>(self, raft: Raft<C>, call: impl FnOnce(Raft<C>) -> Fut) -> Result<T, RPCError>
    where
        Fut: Future<Output = Result<T, RaftError>>,
    {
        self.arrive().await;
        let answer = call(raft).await.map_err(remote_error);
        if !self.answer_delay.is_zero() {
            tokio::time::sleep(self.answer_delay).await;
        }
        answer
    }
}

/// What a message is, for counting.
#[derive(Clone, Copy, PartialEq, Eq)]
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
    /// What its groups send from now on is lost too: a dead process sends nothing, and the
    /// host's groups may take a while to stop.
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

    /// Cut the beats from `from` to `to`, but not the RPCs: `to` hears `from`'s groups but not
    /// its host, e.g. a host that started and has not had `from`'s first beat yet.
    pub fn block_beats(&self, from: u64, to: u64) {
        self.lock().beats_blocked.insert((from, to));
    }

    /// Undo [`block_beats`](Self::block_beats).
    pub fn unblock_beats(&self, from: u64, to: u64) {
        self.lock().beats_blocked.remove(&(from, to));
    }

    /// Seed the generator of random faults: the same seed draws the same faults for the same
    /// sequence of messages.
    pub fn set_seed(&self, seed: u64) {
        self.lock().random.rng.seed(seed);
    }

    /// Lose each message (RPC or beat) with probability `p`. Needs [`set_seed`](Self::set_seed).
    pub fn set_loss(&self, p: f64) {
        self.lock().random.loss = p;
    }

    /// Delay each message by a random time up to `max`. Needs [`set_seed`](Self::set_seed).
    pub fn set_jitter(&self, max: Duration) {
        self.lock().random.jitter = max;
    }

    /// Messages from `from` to `to` arrive `delay` late (zero: on time).
    pub fn set_delay(&self, from: u64, to: u64, delay: Duration) {
        let mut hub = self.lock();
        if delay.is_zero() {
            hub.delays.remove(&(from, to));
        } else {
            hub.delays.insert((from, to), delay);
        }
    }

    /// Answers to requests from `from` to `to` reach `from` `delay` after `to` gave them (zero:
    /// at once). Beats need no answer and are not affected.
    pub fn set_answer_delay(&self, from: u64, to: u64, delay: Duration) {
        let mut hub = self.lock();
        if delay.is_zero() {
            hub.answer_delays.remove(&(from, to));
        } else {
            hub.answer_delays.insert((from, to), delay);
        }
    }

    /// Past `limit` of wall-clock time from now, every message hangs (`None`: no limit).
    pub fn set_real_time_limit(&self, limit: Option<Duration>) {
        self.lock().real_time_limit = limit.map(|l| std::time::Instant::now() + l);
    }

    /// Whether a message was sent past the wall-clock limit.
    pub fn real_time_limit_exceeded(&self) -> bool {
        self.lock().real_time_limit_exceeded
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

    /// Count a message from `from` to `to` and decide its path, if the link is up and the
    /// message is not lost.
    fn send(&self, from: u64, to: u64, kind: Kind) -> Result<Path, RPCError> {
        let mut hub = self.lock();
        let counts = hub.messages.entry((from, to)).or_insert((0, 0));
        match kind {
            Kind::Rpc => counts.0 += 1,
            Kind::Beat => counts.1 += 1,
        }
        let beat_cut = kind == Kind::Beat && hub.beats_blocked.contains(&(from, to));
        if hub.isolated.contains(&from) || hub.isolated.contains(&to) || hub.blocked.contains(&(from, to)) || beat_cut {
            return Err(RPCError::Unreachable(AnyError::error(format!("link {from}->{to} is cut"))));
        }
        if !hub.hosts.contains_key(&from) {
            return Err(RPCError::Unreachable(AnyError::error(format!("node {from} is down"))));
        }
        let host = hub
            .hosts
            .get(&to)
            .cloned()
            .ok_or_else(|| RPCError::Unreachable(AnyError::error(format!("node {to} is down"))))?;
        let random = &mut hub.random;
        if random.loss > 0.0 && random.draw() < random.loss {
            return Err(RPCError::Network(AnyError::error(format!("a message {from}->{to} was lost"))));
        }
        let jitter = if random.jitter.is_zero() { Duration::ZERO } else { random.jitter.mul_f64(random.draw()) };
        let hang = hub.real_time_limit.is_some_and(|l| std::time::Instant::now() > l);
        hub.real_time_limit_exceeded |= hang;
        Ok(Path {
            host,
            delay: hub.delays.get(&(from, to)).copied().unwrap_or_default() + jitter,
            answer_delay: hub.answer_delays.get(&(from, to)).copied().unwrap_or_default(),
            hang,
        })
    }

    /// The Raft of `group` on `to`, reached from `from`, and the path of the request.
    fn route(&self, from: u64, to: u64, group: GroupId) -> Result<(Raft<C>, Path), RPCError> {
        let path = self.send(from, to, Kind::Rpc)?;
        let raft = path
            .host
            .group(group)
            .ok_or_else(|| RPCError::Unreachable(AnyError::error(format!("node {to} has no group {group}"))))?;
        Ok((raft, path))
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
        let path = self.router.send(self.me, target, Kind::Beat)?;
        path.arrive().await;
        path.host.receive_beat(beat);
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

impl HostRouterClient {
    /// Send one request to the group on the target and bring back its answer.
    async fn call<T, Fut>(&self, call: impl FnOnce(Raft<C>) -> Fut) -> Result<T, RPCError>
    where
        Fut: Future<Output = Result<T, RaftError>>,
    {
        let (raft, path) = self.router.route(self.me, self.target, self.group)?;
        path.deliver(raft, call).await
    }
}

impl RaftNetwork<C> for HostRouterClient {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        self.call(|raft| async move { raft.append_entries(req).await }).await
    }

    async fn vote(&mut self, req: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError> {
        self.call(|raft| async move { raft.vote(req).await }).await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<C>, RPCError> {
        self.call(|raft| async move { raft.install_snapshot(req).await }).await
    }

    async fn transfer_leader(&mut self, req: TransferLeaderRequest<C>, _option: RPCOption) -> Result<(), RPCError> {
        self.call(|raft| async move { raft.handle_transfer_leader(req).await.map(|_| ()) }).await
    }
}
