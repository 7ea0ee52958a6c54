//! [`Router`]: an in-memory network between the [`Raft`] nodes of one test, with faults.
//!
//! A node's network clients (made by [`Router::factory`]) call the target node's [`Raft`]
//! methods directly: no serialization, no sockets. Faults are checked per message when it is
//! sent, so a test can cut, delay or freeze links while the cluster runs:
//!
//! - [`isolate`](Router::isolate) / [`restore`](Router::restore): every link to and from a
//!   node fails;
//! - [`block`](Router::block) / [`unblock`](Router::unblock): requests in one direction fail;
//! - [`set_delay`](Router::set_delay): requests on a link arrive after a delay (on the tokio
//!   clock, so tests with paused time run instantly);
//! - [`set_hang`](Router::set_hang): requests to a node are accepted and never answered;
//! - [`set_answer_delay`](Router::set_answer_delay): answers on a link reach the sender after
//!   a delay (the target has acted on the request long before its sender learns of it);
//! - [`set_late_delivery`](Router::set_late_delivery): requests on a link are delivered by a
//!   task of their own, after a delay, whether or not the sender still waits: a sender that
//!   timed out, dropped the call or closed its stream still has its requests arrive later.
//!
//! A failed link answers [`RPCError::Unreachable`]. The router enforces no timeout of its own:
//! a hung request pends until quorate gives up on it, which is what a hang test exercises.
//! Every request is counted by [`RpcKind`] when it is sent, delivered or not.
//!
//! A simulation that runs on a paused clock cannot see a busy loop in virtual time: the
//! clock only moves when every task is idle. [`set_real_time_limit`](Router::set_real_time_limit)
//! bounds the wall-clock time of a run: past it every message hangs, so a livelock ends and
//! shows in [`real_time_limit_exceeded`](Router::real_time_limit_exceeded).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyerror::AnyError;
use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::TypeConfig;
use crate::BasicNode;
use crate::error::{Infallible, RPCError, RaftError};
use crate::network::{AppendResponseStream, RPCOption, RaftNetwork, RaftNetworkFactory};
use crate::raft::Raft;
use crate::types::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    TransferLeaderRequest, VoteRequest, VoteResponse,
};

type C = TypeConfig;

/// Requests of one `stream_append` that may be on the wire at once; more wait in the sender.
const WIRE_CAPACITY: usize = 64;

/// The kinds of message the [`Router`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RpcKind {
    /// A request/response [`RaftNetwork::append_entries`] call, not one sent through a
    /// stream: the leader's replication probes.
    AppendEntries,
    /// A [`RaftNetwork::vote`] call.
    Vote,
    /// A [`RaftNetwork::install_snapshot`] call.
    InstallSnapshot,
    /// A [`RaftNetwork::transfer_leader`] call.
    TransferLeader,
    /// One request sent through a [`RaftNetwork::stream_append`] stream.
    StreamAppendRequest,
    /// One [`RaftNetwork::stream_append`] call: a stream opened.
    StreamOpen,
}

/// An in-memory network between the nodes of a test. Cheap to clone; clones share everything.
///
/// Register each node with [`add_node`](Self::add_node) and give it
/// [`factory(id)`](Self::factory) as its network. Faults and counters are keyed by node id and
/// survive [`remove_node`](Self::remove_node) and re-adding, so a restarted node keeps its
/// faults.
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<Mutex<RouterInner>>,
}

#[derive(Default)]
struct RouterInner {
    nodes: BTreeMap<u64, Raft<C>>,
    isolated: BTreeSet<u64>,
    /// Directed links `(from, to)` whose requests fail.
    blocked: BTreeSet<(u64, u64)>,
    delays: BTreeMap<(u64, u64), Duration>,
    hung: BTreeSet<u64>,
    /// Directed links `(from, to)` whose answers reach the sender late.
    answer_delays: BTreeMap<(u64, u64), Duration>,
    /// Directed links `(from, to)` whose requests are delivered by a task of their own.
    late: BTreeMap<(u64, u64), Duration>,
    counts: BTreeMap<(u64, u64, RpcKind), u64>,
    /// How long making a client takes (`RaftNetworkFactory::new_client`), as connecting does.
    connect_delay: Duration,
    /// The wall-clock instant after which every message hangs, and whether one did.
    real_time_limit: Option<std::time::Instant>,
    real_time_limit_exceeded: bool,
    /// Random faults on every link, drawn from a seeded generator so a run can be replayed.
    random: RandomFaults,
}

/// Seeded random faults: message loss, duplication and jitter.
#[derive(Default)]
struct RandomFaults {
    rng: super::Xorshift,
    /// Probability that a request is lost.
    loss: f64,
    /// Probability that a single (not streamed) request is delivered twice.
    duplicate: f64,
    /// The most extra delay of a single request; independent draws reorder them.
    jitter: Duration,
    /// Probability that a single request is delivered late, by a task of its own.
    late: f64,
    /// The most extra delay of a request delivered late.
    late_max: Duration,
}

impl RandomFaults {
    /// A uniform draw in [0, 1) from the seeded generator.
    fn draw(&mut self) -> f64 {
        self.rng.draw()
    }
}

/// What one request meets on its way, decided when it is sent.
struct Route {
    raft: Raft<C>,
    delay: Duration,
    hang: bool,
    /// Extra delay for a single request (streams keep their order and get none).
    jitter: Duration,
    /// Whether a single request is delivered twice.
    duplicate: bool,
    /// How long the answer takes back to the sender.
    answer_delay: Duration,
    /// If set, the request is delivered by a task of its own after this extra delay, which
    /// outlives the sender's call.
    late: Option<Duration>,
}

impl Route {
    /// Wait out the link's delay and hand over the target; pend forever if the target hangs.
    async fn arrive(self) -> Raft<C> {
        let delay = self.delay + self.jitter;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
        self.raft
    }

    /// Deliver a single request by calling `call` on the target, and bring back its answer as
    /// the sender sees it: late if the link delays answers. A request delivered late is
    /// handled by a task of its own, so it reaches the target even if the sender stopped
    /// waiting.
    async fn deliver<T, F, Fut>(self, call: F) -> Result<T, RPCError>
    where
        T: Send + 'static,
        F: FnOnce(Raft<C>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, RPCError>> + Send + 'static,
    {
        let answer_delay = self.answer_delay;
        let answer = match self.late {
            None => call(self.arrive().await).await,
            Some(extra) => {
                let (tx, rx) = oneshot::channel();
                tokio::spawn(async move {
                    tokio::time::sleep(extra).await;
                    let raft = self.arrive().await;
                    let _ = tx.send(call(raft).await);
                });
                match rx.await {
                    Ok(answer) => answer,
                    // The delivering task ended without an answer: only if the runtime stops.
                    Err(_) => Err(RPCError::Network(AnyError::error("a late delivery was cancelled"))),
                }
            }
        };
        if !answer_delay.is_zero() {
            tokio::time::sleep(answer_delay).await;
        }
        answer
    }
}

impl Router {
    /// A network with no nodes and no faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Seed the generator of random faults, so that a run with the same seed draws the same
    /// faults.
    pub fn set_seed(&self, seed: u64) {
        self.lock().random.rng.seed(seed);
    }

    /// Lose each request with probability `p` (the sender sees a network error; a stream
    /// ends).
    pub fn set_loss(&self, p: f64) {
        self.lock().random.loss = p;
    }

    /// Deliver each single (not streamed) request twice with probability `p`.
    pub fn set_duplicate(&self, p: f64) {
        self.lock().random.duplicate = p;
    }

    /// Delay each single request by a random extra amount up to `max`, so that they can
    /// overtake each other. Streams keep their order.
    pub fn set_jitter(&self, max: Duration) {
        self.lock().random.jitter = max;
    }

    /// Deliver each single (not streamed) request late with probability `p`: by a task of its
    /// own, after a random extra delay up to `max`, whether or not its sender still waits (see
    /// [`set_late_delivery`](Self::set_late_delivery)).
    pub fn set_late(&self, p: f64, max: Duration) {
        let mut inner = self.lock();
        inner.random.late = p;
        inner.random.late_max = max;
    }

    /// Make every client made from now on take `delay` to make (`new_client` waits that
    /// long, as a real network's connect does); zero by default. A leader makes one per
    /// target as it takes office, so a stream started first runs while the next is made.
    pub fn set_connect_delay(&self, delay: Duration) {
        self.lock().connect_delay = delay;
    }

    /// Make `raft` reachable as node `id`, replacing the node registered as `id`, if any (as
    /// a restarted node does).
    pub fn add_node(&self, id: u64, raft: Raft<C>) {
        self.lock().nodes.insert(id, raft);
    }

    /// Make node `id` unreachable, as if it had crashed; returns its handle, if it was
    /// registered.
    pub fn remove_node(&self, id: u64) -> Option<Raft<C>> {
        self.lock().nodes.remove(&id)
    }

    /// The handle of node `id`, if it is registered.
    pub fn node(&self, id: u64) -> Option<Raft<C>> {
        self.lock().nodes.get(&id).cloned()
    }

    /// The network of node `source`: pass it to [`Raft::new`] for that node.
    pub fn factory(&self, source: u64) -> RouterNetworkFactory {
        RouterNetworkFactory { router: self.clone(), source }
    }

    /// Cut every link to and from node `id` until [`restore`](Self::restore).
    pub fn isolate(&self, id: u64) {
        self.lock().isolated.insert(id);
    }

    /// Undo [`isolate`](Self::isolate). Links blocked with [`block`](Self::block) stay blocked.
    pub fn restore(&self, id: u64) {
        self.lock().isolated.remove(&id);
    }

    /// Make requests from `from` to `to` fail with [`RPCError::Unreachable`]. The other
    /// direction is unaffected.
    pub fn block(&self, from: u64, to: u64) {
        self.lock().blocked.insert((from, to));
    }

    /// Undo [`block`](Self::block).
    pub fn unblock(&self, from: u64, to: u64) {
        self.lock().blocked.remove(&(from, to));
    }

    /// Deliver each request from `from` to `to` `delay` after it is sent (`Duration::ZERO`
    /// removes the delay). Streamed requests stay pipelined: each is delayed, not the stream.
    pub fn set_delay(&self, from: u64, to: u64, delay: Duration) {
        let mut inner = self.lock();
        if delay.is_zero() {
            inner.delays.remove(&(from, to));
        } else {
            inner.delays.insert((from, to), delay);
        }
    }

    /// While `hang` is true, requests sent to `to` are accepted and never delivered or
    /// answered: their futures pend forever (a stream stops taking requests and answers no
    /// more).
    pub fn set_hang(&self, to: u64, hang: bool) {
        let mut inner = self.lock();
        if hang {
            inner.hung.insert(to);
        } else {
            inner.hung.remove(&to);
        }
    }

    /// Hold every answer to a request from `from` to `to` for `delay` before the sender sees it
    /// (`Duration::ZERO` removes the delay). The target has acted on the request by then:
    /// a vote granted, entries appended. Streamed answers keep their order, each held `delay`.
    pub fn set_answer_delay(&self, from: u64, to: u64, delay: Duration) {
        let mut inner = self.lock();
        if delay.is_zero() {
            inner.answer_delays.remove(&(from, to));
        } else {
            inner.answer_delays.insert((from, to), delay);
        }
    }

    /// Deliver requests from `from` to `to` by a task of their own, `extra` after they were
    /// sent (plus the link's delay), whether or not the sender still waits: a request whose
    /// sender timed out or dropped the call still arrives. A stream the sender closes keeps
    /// delivering the requests it had sent. `None` ends it for requests sent from now on.
    pub fn set_late_delivery(&self, from: u64, to: u64, extra: Option<Duration>) {
        let mut inner = self.lock();
        match extra {
            Some(extra) => inner.late.insert((from, to), extra),
            None => inner.late.remove(&(from, to)),
        };
    }

    /// Bound the wall-clock time of a run: once `limit` has passed from now, every message
    /// sent hangs, so a livelock under a paused clock ends. `None` removes the bound.
    pub fn set_real_time_limit(&self, limit: Option<Duration>) {
        self.lock().real_time_limit = limit.map(|l| std::time::Instant::now() + l);
    }

    /// Whether a message was sent after the [real-time limit](Self::set_real_time_limit).
    pub fn real_time_limit_exceeded(&self) -> bool {
        self.lock().real_time_limit_exceeded
    }

    /// How many messages of `kind` were sent, between any nodes, since the last
    /// [`reset_counts`](Self::reset_counts). A message counts when it is sent, delivered or
    /// not (a blocked one counts too).
    pub fn rpc_count(&self, kind: RpcKind) -> u64 {
        let inner = self.lock();
        inner.counts.iter().filter(|((_, _, k), _)| *k == kind).map(|(_, n)| n).sum()
    }

    /// How many messages of `kind` `from` sent to `to` since the last
    /// [`reset_counts`](Self::reset_counts).
    pub fn rpc_count_from_to(&self, from: u64, to: u64, kind: RpcKind) -> u64 {
        let inner = self.lock();
        inner.counts.get(&(from, to, kind)).copied().unwrap_or(0)
    }

    /// Set every counter back to zero.
    pub fn reset_counts(&self) {
        self.lock().counts.clear();
    }

    fn lock(&self) -> MutexGuard<'_, RouterInner> {
        // A panic while holding the lock only happens in a test that is already failing.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Count a message and check the link: the route it takes, or why it cannot be sent.
    fn send(&self, from: u64, to: u64, kind: RpcKind) -> Result<Route, RPCError> {
        let mut inner = self.lock();
        *inner.counts.entry((from, to, kind)).or_default() += 1;
        if inner.isolated.contains(&from) || inner.isolated.contains(&to) {
            return Err(unreachable_error(format!("link {from}->{to} is cut: a node is isolated")));
        }
        if inner.blocked.contains(&(from, to)) {
            return Err(unreachable_error(format!("link {from}->{to} is blocked")));
        }
        let raft = inner
            .nodes
            .get(&to)
            .cloned()
            .ok_or_else(|| unreachable_error(format!("node {to} is not in the router")))?;
        let random = &mut inner.random;
        if random.loss > 0.0 && random.draw() < random.loss {
            return Err(RPCError::Network(AnyError::error(format!("a message {from}->{to} was lost"))));
        }
        let single = !matches!(kind, RpcKind::StreamAppendRequest | RpcKind::StreamOpen);
        let jitter =
            if single && !random.jitter.is_zero() { random.jitter.mul_f64(random.draw()) } else { Duration::ZERO };
        let duplicate = single && random.duplicate > 0.0 && random.draw() < random.duplicate;
        let random_late = (single && random.late > 0.0 && random.draw() < random.late)
            .then(|| random.late_max.mul_f64(random.draw()));
        let over_time = inner.real_time_limit.is_some_and(|l| std::time::Instant::now() > l);
        inner.real_time_limit_exceeded |= over_time;
        Ok(Route {
            raft,
            delay: inner.delays.get(&(from, to)).copied().unwrap_or_default(),
            hang: inner.hung.contains(&to) || over_time,
            jitter,
            duplicate,
            answer_delay: inner.answer_delays.get(&(from, to)).copied().unwrap_or_default(),
            late: inner.late.get(&(from, to)).copied().or(random_late),
        })
    }
}

fn unreachable_error(msg: String) -> RPCError {
    RPCError::Unreachable(AnyError::error(msg))
}

/// The target's error, as its caller sees it.
fn remote_error(e: RaftError<Infallible>) -> RPCError {
    match e {
        RaftError::Fatal(f) => RPCError::RemoteFatal(f),
        RaftError::APIError(never) => match never {},
    }
}

/// Makes [`RouterNetwork`] clients for one source node; see [`Router::factory`].
pub struct RouterNetworkFactory {
    router: Router,
    source: u64,
}

impl RaftNetworkFactory<C> for RouterNetworkFactory {
    type Network = RouterNetwork;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> RouterNetwork {
        let delay = self.router.lock().connect_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        RouterNetwork { router: self.router.clone(), source: self.source, target }
    }
}

/// A client from one node to another through a [`Router`]; made by [`RouterNetworkFactory`].
///
/// Calls reach the target's [`Raft`] handle directly.
pub struct RouterNetwork {
    router: Router,
    source: u64,
    target: u64,
}

impl RaftNetwork<C> for RouterNetwork {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError> {
        let route = self.router.send(self.source, self.target, RpcKind::AppendEntries)?;
        let duplicate = route.duplicate;
        route
            .deliver(move |raft| async move {
                if duplicate {
                    let _ = raft.append_entries(req.clone()).await;
                }
                raft.append_entries(req).await.map_err(remote_error)
            })
            .await
    }

    async fn vote(&mut self, req: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError> {
        let route = self.router.send(self.source, self.target, RpcKind::Vote)?;
        let duplicate = route.duplicate;
        route
            .deliver(move |raft| async move {
                if duplicate {
                    let _ = raft.vote(req.clone()).await;
                }
                raft.vote(req).await.map_err(remote_error)
            })
            .await
    }

    async fn transfer_leader(&mut self, req: TransferLeaderRequest<C>, _option: RPCOption) -> Result<(), RPCError> {
        let route = self.router.send(self.source, self.target, RpcKind::TransferLeader)?;
        route
            .deliver(
                move |raft| async move { raft.handle_transfer_leader(req).await.map(|_| ()).map_err(remote_error) },
            )
            .await
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<C>, RPCError> {
        let route = self.router.send(self.source, self.target, RpcKind::InstallSnapshot)?;
        route.deliver(move |raft| async move { raft.install_snapshot(req).await.map_err(remote_error) }).await
    }

    /// Pipeline `input` into the target's [`Raft::stream_append`].
    ///
    /// Each request is checked against the faults when it is taken from `input`: a cut link
    /// ends the response stream with [`RPCError::Unreachable`] (the request is not delivered),
    /// a delayed link delivers it after the delay, and a hung target stops the stream. The
    /// target's own errors end the stream as [`RPCError::RemoteFatal`]. Answers are held for
    /// the link's answer delay, in order. If the link delivers late when the stream opens, the
    /// requests already on the wire are still delivered after the sender drops the stream;
    /// otherwise they are lost with it.
    ///
    /// # Errors
    /// [`RPCError::Unreachable`] if the link is cut when the stream is opened.
    async fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        _option: RPCOption,
    ) -> Result<AppendResponseStream<'s, C>, RPCError>
    where
        S: Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 's,
    {
        let (from, to) = (self.source, self.target);
        let open = self.router.send(from, to, RpcKind::StreamOpen)?;
        let (raft, outlives_sender) = (open.raft, open.late.is_some());

        // The wire: requests with the instant they arrive. The target's stream must be
        // 'static, so `input` (which may borrow) is pumped into it from the response stream.
        let (wire_tx, wire_rx) = mpsc::channel::<(AppendEntriesRequest<C>, Option<Instant>)>(WIRE_CAPACITY);
        let router = self.router.clone();
        let pump = async move {
            let mut input = input;
            while let Some(req) = input.next().await {
                let route = router.send(from, to, RpcKind::StreamAppendRequest)?;
                if route.hang {
                    std::future::pending::<()>().await;
                }
                let arrival = (!route.delay.is_zero()).then(|| Instant::now() + route.delay);
                if wire_tx.send((req, arrival)).await.is_err() {
                    // The target ended its stream; its responses say why.
                    break;
                }
            }
            // Dropping `wire_tx` ends the target's input once the wire is drained.
            Ok::<(), RPCError>(())
        };
        let delivered = futures_util::stream::unfold(wire_rx, |mut wire_rx| async move {
            let (req, arrival) = wire_rx.recv().await?;
            if let Some(at) = arrival {
                tokio::time::sleep_until(at).await;
            }
            Some((req, wire_rx))
        });

        // Each answer is held for the link's answer delay as it is when the answer is given,
        // so that a delay set while a stream is open holds that stream's answers too.
        let router = self.router.clone();
        let answer_delay = move || router.lock().answer_delays.get(&(from, to)).copied().unwrap_or_default();
        let responses = held_or_outliving(raft.stream_append(delivered), answer_delay, outlives_sender);
        // The pump yields only its error, if it fails.
        let pump_error = futures_util::stream::once(pump).filter_map(|r| std::future::ready(r.err().map(Err)));
        let merged = futures_util::stream::select(responses, pump_error).scan(false, |ended, r| {
            // The first error ends the stream (contract 4), whichever side it came from.
            if *ended {
                return std::future::ready(None);
            }
            *ended = r.is_err();
            std::future::ready(Some(r))
        });
        Ok(merged.boxed())
    }
}

/// The answers of a target's side of `stream_append`, run in a task of its own: each answer
/// reaches the sender `answer_delay()` (the link's delay when the target gave it) after the
/// target gave it, in order, and if `outlives_sender`, the target goes on taking the requests
/// already on the wire after the sender dropped the stream.
fn held_or_outliving(
    target_side: impl Stream<Item = Result<AppendEntriesResponse<C>, RaftError>> + Send + 'static,
    answer_delay: impl Fn() -> Duration + Send + 'static,
    outlives_sender: bool,
) -> futures_util::stream::BoxStream<'static, Result<AppendEntriesResponse<C>, RPCError>> {
    let (answer_tx, answer_rx) =
        mpsc::unbounded_channel::<(Result<AppendEntriesResponse<C>, RPCError>, Option<Instant>)>();
    tokio::spawn(async move {
        let mut target_side = std::pin::pin!(target_side);
        loop {
            tokio::select! {
                answer = target_side.next() => {
                    let Some(answer) = answer else { break };
                    let delay = answer_delay();
                    let at = (!delay.is_zero()).then(|| Instant::now() + delay);
                    if answer_tx.send((answer.map_err(remote_error), at)).is_err() && !outlives_sender {
                        break;
                    }
                }
                _ = answer_tx.closed(), if !outlives_sender => break,
            }
        }
    });
    futures_util::stream::unfold(answer_rx, |mut answer_rx| async move {
        let (answer, at) = answer_rx.recv().await?;
        if let Some(at) = at {
            tokio::time::sleep_until(at).await;
        }
        Some((answer, answer_rx))
    })
    .boxed()
}
