//! RaftCore: the one task per node that owns the [`Engine`](crate::engine) and carries out its
//! commands against storage, the state machine task and the replication tasks.
//!
//! It owns everything that is not pure: channels, timers, the log store, client responders.
//! It must not decide protocol questions; every such decision is the Engine's.
//!
//! ```text
//!  Raft handle ──api (bounded)──┐
//!  peers' RPCs ──rpc (bounded)──┼─► RaftCore loop ─► Engine ─► commands ─► log store (append)
//!  notifications (flush, votes, ┘        │                               ├► state machine task
//!   replication progress, applied)       │                               └► replication tasks
//!                                        └─► watch: submitted, committed, metrics
//! ```

mod clock;
mod commands;
mod election_trace;
mod membership;
mod message;
mod progress;
pub(crate) mod queue;
mod quiesce;
mod read;
mod sm_worker;
mod snapshot;
mod startup;
mod watches;
mod write;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

pub(crate) use clock::Clock;
pub(crate) use message::{
    ApiMsg, FlushNotifier, MembershipResponder, Notification, ReadResponder, RpcMsg, WriteMsg, WriteResponder,
};
pub(crate) use progress::{ProgressWatch, Stalls};
pub(crate) use quiesce::HostLink;
pub(crate) use sm_worker::{SmMsg, StateMachineWorker};
pub(crate) use startup::load_state;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, info_span};
pub(crate) use watches::Watches;

use crate::config::Config;
use crate::engine::{Engine, LogIOId, ServerState};
use crate::error::{Fatal, ForwardToLeader, InitializeError};
use crate::metrics::{self, RaftMetrics};
use crate::replication::{IOProgress, ReplicationHandle};
use crate::storage::RaftLogStorage;
use crate::types::AppendEntriesResponse;
use crate::types::{DisplayOption, LogId};
use crate::{RaftNetworkFactory, RaftTypeConfig};

/// The Raft task of one node.
pub(crate) struct RaftCore<C, N, LS>
where
    C: RaftTypeConfig,
    N: RaftNetworkFactory<C>,
    LS: RaftLogStorage<C>,
{
    pub(crate) config: Arc<Config>,
    pub(crate) engine: Engine<C>,
    pub(crate) network: N,
    pub(crate) log_store: LS,
    pub(crate) sm_tx: queue::UnboundedSender<SmMsg<C>>,
    pub(crate) api_rx: queue::Receiver<ApiMsg<C>>,
    /// Client writes: bounded, and not read while `max_pending_writes` writes are in progress,
    /// so a slow disk, network or state machine slows clients instead of growing memory.
    pub(crate) write_rx: queue::Receiver<WriteMsg<C>>,
    pub(crate) rpc_rx: queue::Receiver<RpcMsg<C>>,
    pub(crate) notify_rx: queue::Receiver<Notification<C>>,
    pub(crate) notify_tx: queue::UnboundedSender<Notification<C>>,
    /// Where the log store's flush callbacks report: into `notify_tx`.
    pub(crate) flush_receiver: Arc<dyn crate::storage::FlushReceiver<C>>,
    pub(crate) shutdown_rx: oneshot::Receiver<()>,
    pub(crate) watches: Watches<C>,
    /// Client writes proposed by this node and not yet answered, in log order.
    pub(crate) responders: VecDeque<(LogId<C>, WriteResponder<C>)>,
    /// AppendEntries answers that wait for their log I/O to be flushed, in seq order.
    pub(crate) parked_append_responses:
        VecDeque<(u64, oneshot::Sender<AppendEntriesResponse<C>>, AppendEntriesResponse<C>)>,
    /// The replication streams: one per target, and for a while one per node a committed
    /// config removed (`ReplicationHandle::departing_until`, see `update_replications`).
    pub(crate) replications: crate::engine::TargetMap<C::NodeId, ReplicationHandle<C>>,
    /// The last log I/O handed to the log store.
    pub(crate) submitted: LogIOId<C>,
    /// The caller of the membership change in progress, and the change's first entry.
    pub(crate) membership_waiter: Option<(LogId<C>, MembershipResponder<C>)>,
    /// A snapshot being received from the leader.
    pub(crate) receiving: Option<Box<snapshot::SnapshotReceiver<C>>>,
    /// A received snapshot waiting for its `InstallSnapshot` command.
    pub(crate) installing: Option<Box<C::SnapshotData>>,
    /// Linearizable reads waiting for a quorum to confirm this leader.
    pub(crate) pending_reads: Vec<read::PendingRead<C>>,
    /// The callers of the leadership transfer in progress (all for the same target).
    pub(crate) pending_transfers: Vec<read::PendingTransfer<C>>,
    /// Since when each kind of progress is stuck.
    pub(crate) progress: progress::ProgressWatch<C>,
    /// When a leader whose log store is stuck must step down.
    pub(crate) io_stall_deadline: Option<Instant>,
    /// Where this node reads the time: every `now` the Engine gets comes from here.
    pub(crate) clock: Clock,
    /// The last leader this node knew of, and how often that changed, for logs and metrics.
    pub(crate) known_leader: Option<C::NodeId>,
    pub(crate) leader_changes: u64,
    /// The span of the election this node runs, if any.
    pub(crate) election: election_trace::ElectionTrace<C>,
    /// The host of a group of many (`crate::multi`): node liveness, for quiescence.
    pub(crate) host: Option<HostLink<C>>,
    /// When an awake leader of a hosted group next checks whether it is idle enough to
    /// quiesce (every heartbeat interval), so that a group quiesces soon after its last write
    /// instead of heartbeating until check-quorum's timer.
    pub(crate) quiesce_check: Option<Instant>,
}

impl<C, N, LS> RaftCore<C, N, LS>
where
    C: RaftTypeConfig,
    N: RaftNetworkFactory<C>,
    LS: RaftLogStorage<C>,
{
    /// Run until shut down or a fatal error; then stop every task this node started.
    ///
    /// Not an `async fn`: the future of one that takes `self` by value holds the RaftCore twice
    /// (the argument and the local it is moved into), which every idle group of a host would
    /// pay for; an `async move` block holds it once.
    #[allow(clippy::manual_async_fn, reason = "an async fn would hold the RaftCore twice in its future")]
    pub(crate) fn run(mut self) -> impl std::future::Future<Output = Result<(), Fatal>> {
        async move {
            let span = info_span!("raft_core", id = %self.engine.id(), cluster = %self.config.cluster_name);
            let result = self.run_loop().instrument(span).await;
            if let Err(e) = &result {
                error!(id = %self.engine.id(), error = %e, "raft node stopped on a fatal error");
            }
            if self.engine.followers_may_be_quiesced() {
                self.release_quiesced_leadership(self.engine.state.vote.term);
            }
            // Waited for, so that `Raft::shutdown` returns with no call of the node's in
            // progress (found in review: dropped, a poll under way could still read the log).
            Box::pin(futures_util::future::join_all(self.replications.take_values().map(ReplicationHandle::stop)))
                .await;
            self.engine.state.server_state = ServerState::Shutdown;
            self.publish_inner(true);
            result
        }
    }

    async fn run_loop(&mut self) -> Result<(), Fatal> {
        self.engine.startup(self.clock.now());
        self.run_commands_boxed().await?;
        loop {
            // Quiescence first: it may wake the group at once (the leader's node is not
            // heard), and the metrics must not show it quiesced meanwhile.
            self.sync_quiescence();
            self.release_idle_buffers();
            self.publish();
            // One timer for the four deadlines: every sleep in this `select!` is part of the
            // task's future, which every idle group of a host keeps.
            let departed = self.replications.values().filter_map(|h| h.departing_until).min();
            let timer = Timer::next(
                self.engine.election_deadline(),
                self.next_quiesce_check(),
                self.io_stall_deadline,
                departed,
            );
            // Messages whose handling awaits are handled after the `select!`, not in its arms:
            // an arm runs while the `select!`'s output (the largest message) is held, so an
            // await there would make that output part of the task's future too.
            let deferred = tokio::select! {
                biased;
                _ = &mut self.shutdown_rx => return Ok(()),
                Some(n) = self.notify_rx.recv() => {
                    self.handle_notification(n)?;
                    // Drain what else has arrived so that its commands run as one batch.
                    while let Ok(n) = self.notify_rx.try_recv() {
                        self.handle_notification(n)?;
                    }
                    None
                }
                Some(m) = self.rpc_rx.recv() => Some(Deferred::Rpc(m)),
                Some(w) = self.write_rx.recv(), if self.responders.len() < self.config.max_pending_writes as usize => {
                    self.handle_client_writes(w);
                    None
                }
                msg = self.api_rx.recv() => match msg {
                    Some(m) => Some(Deferred::Api(m)),
                    // Every handle is gone: nobody can use this node any more.
                    None => return Ok(()),
                },
                _ = sleep_until(self.clock, timer.map(|(_, at)| at)) => {
                    self.on_timer(timer.map(|(t, _)| t));
                    None
                }
                signal = quiesce::host_signal(&mut self.host) => {
                    self.on_host_signal(signal);
                    None
                }
            };
            // Moved whole, so that the loop's future holds the message only while it is handled,
            // not also while the commands run after it.
            self.handle_deferred(deferred).await?;
            self.run_commands_boxed().await?;
        }
    }

    /// Act on the timer that fired.
    fn on_timer(&mut self, timer: Option<Timer>) {
        match timer {
            Some(Timer::Election) => {
                self.engine.handle_timeout(self.clock.now());
                self.maybe_quiesce();
            }
            Some(Timer::QuiesceCheck) => {
                self.quiesce_check = None;
                self.maybe_quiesce();
            }
            Some(Timer::Departed) => {
                let now = self.clock.now();
                self.replications.retain(|_, h| h.departing_until.is_none_or(|until| until > now));
                if self.replications.is_empty() {
                    self.watches.close_streams();
                }
            }
            Some(Timer::LogIoStall) => {
                error!(
                    id = %self.engine.id(), stalled_for = ?self.config.max_log_io_stall,
                    "the log store has made no progress; stepping down so a node with a working disk can lead"
                );
                self.io_stall_deadline = None;
                self.engine.on_log_io_stalled(self.clock.now());
            }
            None => {}
        }
    }

    /// Handle a message the loop's `select!` took, in a boxed future: each runs the commands
    /// inside its own future, which, inline, would make every group's idle task larger by its
    /// size. One allocation per RPC batch or API call (never per entry).
    fn handle_deferred(
        &mut self,
        deferred: Option<Deferred<C>>,
    ) -> impl std::future::Future<Output = Result<(), Fatal>> {
        use futures_util::future::{Either, Ready, ready};
        match deferred {
            Some(Deferred::Rpc(m)) => Either::Left(Either::Left(Box::pin(self.handle_rpc(m)))),
            Some(Deferred::Api(m)) => Either::Left(Either::Right(Box::pin(self.handle_api(m)))),
            None => Either::Right::<_, Ready<_>>(ready(Ok(()))),
        }
    }

    fn handle_notification(&mut self, n: Notification<C>) -> Result<(), Fatal> {
        match n {
            Notification::LogFlushed { io, result } => {
                if let Err(e) = result {
                    return Err(crate::error::StorageError::write_logs(&e).into());
                }
                debug!(flushed = %DisplayOption(&io.last_log_id), "log flushed");
                self.engine.on_log_flushed(io);
                self.engine.after_log_flushed(self.clock.now());
            }
            Notification::VoteResponse { target, resp } => match resp {
                Ok(resp) => {
                    let now = self.clock.now();
                    self.election.span().in_scope(|| self.engine.handle_vote_resp(now, target, &resp));
                }
                Err(e) => debug!(%target, error = %e, "vote request failed"),
            },
            Notification::Replication { target, vote, result, ack } => {
                if let Some(ack) = ack {
                    self.engine.on_heartbeat_acked(target, vote, ack);
                }
                self.engine.on_replication_progress(self.clock.now(), target, vote, result);
            }
            Notification::Applied { last } => self.engine.on_applied(last),
            Notification::SnapshotBuilt { result } => match *result {
                Ok(meta) => self.engine.on_snapshot_built(meta.last_log_id),
                Err(e) => {
                    error!(error = %e, "building a snapshot failed");
                    return Err(e.into());
                }
            },
            Notification::Fatal(f) => return Err(*f),
            Notification::HostReleased => self.on_host_signal(quiesce::HostSignal::Released),
            Notification::HostWakeLeader { term } => self.engine.leader_wake_for_follower(self.clock.now(), term),
        }
        Ok(())
    }

    /// Not an `async fn`, whose future would hold the message twice (see [`Self::run`]).
    #[allow(clippy::manual_async_fn, reason = "an async fn would hold the message twice in its future")]
    fn handle_rpc(&mut self, m: RpcMsg<C>) -> impl std::future::Future<Output = Result<(), Fatal>> {
        async move {
            match m {
                RpcMsg::AppendEntries { req, tx } => {
                    let (resp, wait_for) = self.engine.handle_append_entries(self.clock.now(), req);
                    self.run_commands().await?;
                    if wait_for.is_some_and(|io| io.seq > self.engine.state.io.flushed.seq) {
                        // A store that flushes within `append` has queued its notification already:
                        // take it now, so the answer leaves this round instead of after a metrics
                        // publish and another pass through the loop.
                        while let Ok(n) = self.notify_rx.try_recv() {
                            self.handle_notification(n)?;
                        }
                        self.run_commands().await?;
                    }
                    match wait_for {
                        Some(io) if io.seq > self.engine.state.io.flushed.seq => {
                            self.parked_append_responses.push_back((io.seq, tx, resp));
                        }
                        _ => {
                            let _ = tx.send(resp);
                        }
                    }
                }
                RpcMsg::TransferLeader { req, tx } => {
                    let accepted = self.engine.handle_transfer_leader(self.clock.now(), &req);
                    self.run_commands().await?;
                    let _ = tx.send(accepted);
                }
                RpcMsg::InstallSnapshot { req, tx } => {
                    // Boxed: snapshot chunks are rare, and their future, inline, would make every
                    // group's Raft task larger by its size for as long as the group lives.
                    let resp = Box::pin(self.handle_install_snapshot(*req)).await?;
                    let _ = tx.send(resp);
                }
                RpcMsg::Vote { req, tx } => {
                    self.feed_leader_liveness();
                    let (under, term) = (self.engine.quiesced_under(), self.engine.state.vote.term);
                    let resp = self.engine.handle_vote_req(self.clock.now(), &req);
                    if let Some(leader) = under.filter(|_| self.engine.quiesced_under().is_none()) {
                        self.ask_leader_to_wake(leader, term);
                    }
                    // The vote must be durable before the answer leaves.
                    self.run_commands().await?;
                    let _ = tx.send(resp);
                }
            }
            Ok(())
        }
    }

    async fn handle_api(&mut self, m: ApiMsg<C>) -> Result<(), Fatal> {
        match m {
            ApiMsg::Initialize { membership, tx } => {
                let state = &self.engine.state;
                if state.last_log_id().is_some() || state.vote != Default::default() {
                    let e = InitializeError::NotAllowed { last_log_id: state.last_log_id(), vote: state.vote };
                    let _ = tx.send(Err(e));
                } else if !membership.is_voter(&self.engine.id()) {
                    let _ = tx.send(Err(InitializeError::NotAVoter));
                } else {
                    self.engine.initialize(*membership);
                    self.run_commands().await?;
                    let _ = tx.send(Ok(()));
                }
            }
            ApiMsg::Elect => {
                // A quiesced follower's stickiness follows its leader's node (as for a vote).
                self.feed_leader_liveness();
                self.engine.trigger_elect(self.clock.now())
            }
            ApiMsg::GetReadLogId { policy, tx } => self.handle_get_read_log_id(policy, tx),
            ApiMsg::TransferLeader { to, tx } => self.handle_transfer_leader_api(to, tx),
            ApiMsg::TriggerSnapshot => self.engine.trigger_snapshot(),
            ApiMsg::PurgeLog { upto } => self.engine.purge_log(upto),
            ApiMsg::ChangeMembership { changes, retain, tx } => self.handle_change_membership(*changes, retain, tx),
        }
        Ok(())
    }

    /// Whether the loop has input it will handle without waiting: then the coming round is
    /// certain to publish again, so this one may skip the metrics.
    fn input_queued(&self) -> bool {
        !self.notify_rx.is_empty()
            || !self.rpc_rx.is_empty()
            || (!self.write_rx.is_empty() && self.responders.len() < self.config.max_pending_writes as usize)
    }

    pub(crate) fn forward_to_leader(&self) -> ForwardToLeader<C> {
        // While handing leadership over, point clients at the node taking over.
        let transfer_to = self.engine.leader.as_ref().and_then(|l| l.transfer.as_ref()).map(|t| t.to);
        let leader_id = transfer_to.or(self.engine.state.leader_id).filter(|id| *id != self.engine.id());
        let leader_node = leader_id.and_then(|id| self.engine.state.membership.effective().get_node(&id).cloned());
        ForwardToLeader { leader_id, leader_node }
    }

    /// Publish progress on the watch channels, only where it changed. Metrics are left to a
    /// later round while more input is queued (see [`Self::input_queued`]).
    pub(crate) fn publish(&mut self) {
        self.publish_inner(false);
    }

    fn publish_inner(&mut self, force_metrics: bool) {
        self.note_leader_change();
        self.drop_stale_receiver();
        self.election.observe(&self.engine);
        self.watches.publish_progress(self.io_progress(), self.engine.state.committed);
        let now = self.clock.now();
        let stalls = self.progress.observe(&self.engine, now);
        self.io_stall_deadline = match (&self.engine.leader, stalls.log_io) {
            (Some(_), Some(since)) => Some(since + self.config.max_log_io_stall),
            _ => None,
        };
        // Metrics are a snapshot for observers, built with a few allocations: while more input
        // is already queued, the next round publishes them instead. The loop never sleeps with
        // unpublished metrics, since it only sleeps after a round that found every queue empty.
        if !force_metrics && self.input_queued() {
            return;
        }
        let in_flight = self.engine.leader.as_ref().map(|_| {
            self.replications
                .iter()
                .filter(|(_, h)| h.departing_until.is_none())
                .map(|(id, h)| (*id, h.gauge.get()))
                .collect::<BTreeMap<_, _>>()
        });
        let queues = metrics::Queues {
            write_queue: self.write_rx.len() as u64,
            pending_writes: self.responders.len() as u64,
            pending_reads: self.pending_reads.len() as u64,
            in_flight: in_flight.unwrap_or_default(),
        };
        let metrics = RaftMetrics::from_engine(&self.engine, now, stalls, queues, self.leader_changes);
        self.watches.metrics.send_if_modified(|cur| {
            let changed = *cur != metrics;
            if changed {
                *cur = metrics;
            }
            changed
        });
    }
}

impl<C, N, LS> RaftCore<C, N, LS>
where
    C: RaftTypeConfig,
    N: RaftNetworkFactory<C>,
    LS: RaftLogStorage<C>,
{
    /// What the replication streams follow: the leader vote, and the log as submitted.
    ///
    /// A log that is an installed snapshot and nothing after it ends at the snapshot's last
    /// entry (its purged one), though no append reached that far: found in review, a node
    /// elected right after installing one published the log as it was before the install
    /// until its first append, and a stream started in that window sent a follower that held
    /// everything the whole snapshot.
    pub(crate) fn io_progress(&self) -> IOProgress<C> {
        let state = &self.engine.state;
        let purged = state.log_ids.purged();
        IOProgress { vote: state.vote, last_log_id: self.submitted.last_log_id.max(purged), purged }
    }

    /// Drop the part of a snapshot received under a vote this node no longer holds: a transfer
    /// resumes only under the vote it began in (see `handle_install_snapshot`), and votes
    /// only grow, so it can never be completed. Found in review: kept, it held its buffer, and
    /// on a node that later led, it counted as a snapshot in progress and the group never
    /// quiesced.
    fn drop_stale_receiver(&mut self) {
        if self.receiving.as_ref().is_some_and(|r| r.vote != self.engine.state.vote) {
            debug!(vote = %self.engine.state.vote, "dropping a partly received snapshot of an ended leadership");
            self.receiving = None;
        }
    }

    /// Log and count a change of the leader this node knows of.
    fn note_leader_change(&mut self) {
        let leader = self.engine.state.leader_id;
        if leader.is_none() || leader == self.known_leader {
            return;
        }
        info!(
            id = %self.engine.id(), term = self.engine.state.vote.term, leader = %DisplayOption(&leader),
            previous = %DisplayOption(&self.known_leader), "leader changed"
        );
        self.known_leader = leader;
        self.leader_changes += 1;
    }
}

/// The timers of the Raft task's loop, of which it sleeps on the earliest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The Engine's election (or, on a leader, check-quorum) deadline.
    Election,
    /// An awake leader of a hosted group checks whether it may quiesce.
    QuiesceCheck,
    /// The log store made no progress for `max_log_io_stall`.
    LogIoStall,
    /// A stream to a removed node has run its time.
    Departed,
}

impl Timer {
    /// The earliest of the deadlines, and which it is. Of deadlines at the same instant the
    /// first in this order fires first; the others fire in the next rounds.
    fn next(
        election: Option<Instant>,
        quiesce_check: Option<Instant>,
        io_stall: Option<Instant>,
        departed: Option<Instant>,
    ) -> Option<(Self, Instant)> {
        [
            (Self::Election, election),
            (Self::QuiesceCheck, quiesce_check),
            (Self::LogIoStall, io_stall),
            (Self::Departed, departed),
        ]
        .into_iter()
        .filter_map(|(timer, at)| Some((timer, at?)))
        .min_by_key(|(_, at)| *at)
    }
}

/// A message the loop of [`RaftCore::run_loop`] took and handles after its `select!`.
enum Deferred<C: RaftTypeConfig> {
    Rpc(RpcMsg<C>),
    Api(ApiMsg<C>),
}

/// Sleep until `clock` shows `deadline`, or forever if there is none.
///
/// Not an `async fn`, whose future would hold the clock and the deadline beside the sleep: the
/// task of every idle group waits in one of these.
///
/// # Cancel safety
/// Cancel safe: it only sleeps.
pub(crate) fn sleep_until(
    clock: Clock,
    deadline: Option<Instant>,
) -> futures_util::future::Either<tokio::time::Sleep, std::future::Pending<()>> {
    use futures_util::future::Either;
    match deadline {
        Some(d) => Either::Left(clock.sleep_until(d)),
        None => Either::Right(std::future::pending()),
    }
}
