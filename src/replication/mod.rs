//! ReplicationCore: one task per follower or learner, started and stopped by RaftCore.
//!
//! It replicates in two phases:
//!
//! 1. **Find the match point** by binary search. The follower's log is known to match the
//!    leader's for a prefix of `lo` entries and known not to for `hi` or more. The first probe
//!    is the whole log (a follower is usually caught up); each probe after halves the range,
//!    and a conflict's `last_log_id` hint cuts it to the follower's log length. Probes carry no
//!    entries, so a far-behind follower costs O(log n) round trips, not O(n).
//! 2. **Pipeline** from the match point through [`RaftNetwork::stream_append`]: requests are
//!    generated lazily from the log, up to `max_payload_entries` each, with at most
//!    `max_in_flight_requests` unacknowledged. A conflict goes back to phase 1; a greater vote
//!    ends the task; a network error or an unanswered stream restarts after a backoff.
//!    A quiesced stream (see `crate::multi`) closes its network stream once its follower has
//!    answered the marked heartbeat, and opens a new one when it next has something to send.
//!
//! The task reads entries with its own log reader, only up to what RaftCore published as
//! *submitted*, and stops as soon as the published leader vote is not its own. Progress goes to
//! RaftCore as `Notification::Replication`.

mod in_flight;
mod retry;
mod snapshot;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tracing::{Instrument, debug, debug_span, warn};

use crate::RaftTypeConfig;
use crate::config::Config;
use crate::core::{Clock, Notification, SmMsg, queue};
use crate::engine::{Ack, ReplicationResult, first_out_of_term_order};
use crate::error::{Fatal, RPCError};
use crate::network::{AppendResponseStream, RPCOption, RaftNetwork};
use crate::storage::RaftLogReader;
use crate::types::{AppendEntriesRequest, AppendEntriesResponse};
use crate::types::{DisplayOption, Entry, LogId, LogIdOptionExt, Vote};
use in_flight::{Answered, InFlight};
use retry::{Jitter, Retries};

/// What RaftCore has handed to the log store, under which vote: replication streams read up to
/// `last_log_id` and stop when `vote` is not the one they replicate for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IOProgress<C: RaftTypeConfig> {
    pub(crate) vote: Vote<C>,
    pub(crate) last_log_id: Option<LogId<C>>,
    /// The last purged entry: entries up to it can only be sent as a snapshot.
    pub(crate) purged: Option<LogId<C>>,
}

/// When a pipeline sends its next request without entries: a heartbeat after
/// `heartbeat_interval` of silence, or sooner, after `commit_grace`, to carry a newer commit
/// index that no request with entries took along.
struct SendTimer {
    next: Instant,
    /// When the last request left.
    last_sent: Instant,
    /// Whether `next` was pulled in for a commit index.
    commit_armed: bool,
    heartbeat: std::time::Duration,
    commit_grace: std::time::Duration,
    /// In a host of many groups, the instant heartbeats are aligned to (see [`align_up`]).
    grid: Option<Instant>,
}

impl SendTimer {
    /// A request left at `now`; it carried the latest commit index.
    ///
    /// In a host of many groups the next heartbeat is due on the host's grid, `heartbeat`
    /// apart from its epoch, between half a heartbeat and one and a half after `now`: every
    /// group of the node then heartbeats a peer at the same instants, and the transport sends
    /// those heartbeats together (one write per peer and interval, whatever the group count).
    fn sent(&mut self, now: Instant) {
        self.last_sent = now;
        self.next = self.heartbeat_after(now);
        self.commit_armed = false;
    }

    /// When the heartbeat after a request sent at `sent` is due.
    fn heartbeat_after(&self, sent: Instant) -> Instant {
        match self.grid {
            None => sent + self.heartbeat,
            Some(epoch) => align_up(sent + self.heartbeat / 2, epoch, self.heartbeat),
        }
    }

    /// Send a request now, whatever is armed: a read's round or a change of quiescence wants
    /// the follower to hear from the leader.
    fn send_now(&mut self, now: Instant) {
        self.commit_armed = false;
        self.next = now;
    }

    /// The timer was pulled in for a commit index that did not move: nothing to carry, so back
    /// to the heartbeat schedule. (Without this, every answer that emptied the pipeline pulled
    /// the timer in, and an idle stream sent a heartbeat every `commit_grace` plus a round
    /// trip, a dozen times the heartbeat rate.)
    fn commit_not_moved(&mut self) {
        self.commit_armed = false;
        self.next = self.heartbeat_after(self.last_sent);
    }

    /// A newer commit index may be waiting: send it by `now + commit_grace` unless a request
    /// with entries takes it first. Not if a request is due already (a read's round, waiting
    /// for the pipeline to empty): arming would let a commit index that did not move put that
    /// request back on the heartbeat schedule.
    fn arm_commit(&mut self, now: Instant) {
        if !self.commit_armed && self.next > now {
            self.commit_armed = true;
            self.next = self.next.min(now + self.commit_grace);
        }
    }
}

/// The first instant at or after `t` that is a whole number of `step`s after `epoch`.
fn align_up(t: Instant, epoch: Instant, step: std::time::Duration) -> Instant {
    let step_ns = step.as_nanos().max(1);
    let since = t.saturating_duration_since(epoch).as_nanos();
    let steps = since.div_ceil(step_ns);
    let offset = u64::try_from(steps * step_ns).unwrap_or(u64::MAX);
    epoch + std::time::Duration::from_nanos(offset)
}

/// What one stream has in flight, readable by RaftCore for metrics.
#[derive(Debug, Default)]
pub(crate) struct InFlightGauge {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// Clears a gauge when dropped: whatever ends a stream or a probe, nothing stays counted as in
/// flight after it.
struct GaugeReset(Arc<InFlightGauge>);

impl Drop for GaugeReset {
    fn drop(&mut self) {
        self.0.set(0, 0);
    }
}

impl InFlightGauge {
    fn set(&self, requests: u64, bytes: u64) {
        self.requests.store(requests, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }

    /// Requests and bytes sent and not yet acknowledged.
    pub(crate) fn get(&self) -> (u64, u64) {
        (self.requests.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }
}

/// A running replication task; dropping the handle stops it.
pub(crate) struct ReplicationHandle<C: RaftTypeConfig> {
    pub(crate) vote: Vote<C>,
    pub(crate) gauge: Arc<InFlightGauge>,
    /// Set when a committed config removed the target: the stream runs on until then, so that
    /// the target learns the commit (see `RaftCore::update_replications`).
    pub(crate) departing_until: Option<tokio::time::Instant>,
    join: JoinHandle<()>,
}

impl<C: RaftTypeConfig> Drop for ReplicationHandle<C> {
    fn drop(&mut self) {
        self.join.abort();
    }
}

impl<C: RaftTypeConfig> ReplicationHandle<C> {
    /// Stop the stream and wait for its task to end: a poll under way on another worker (a
    /// log read, a snapshot read, a network call) finishes first; an abort only keeps the
    /// task from being polled again.
    pub(crate) async fn stop(mut self) {
        self.join.abort();
        let _ = (&mut self.join).await;
    }

    /// Whether the stream's task has ended (its leadership ended, it met a newer term, or it
    /// failed): such a handle streams nothing, and a target added again needs a new one.
    pub(crate) fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn<N, LR>(
        leader: C::NodeId,
        target: C::NodeId,
        vote: Vote<C>,
        network: N,
        log_reader: LR,
        config: Arc<Config>,
        submitted: watch::Receiver<IOProgress<C>>,
        committed: watch::Receiver<Option<LogId<C>>>,
        heartbeat: watch::Receiver<u64>,
        quiesced: watch::Receiver<Option<(LogId<C>, crate::types::QuiesceMark)>>,
        host: Option<Arc<crate::multi::Liveness<C>>>,
        notify: queue::UnboundedSender<Notification<C>>,
        sm: queue::UnboundedSender<SmMsg<C>>,
        clock: Clock,
        jitter_seed: u64,
    ) -> Self
    where
        N: RaftNetwork<C>,
        LR: RaftLogReader<C>,
    {
        let gauge = Arc::new(InFlightGauge::default());
        let core = ReplicationCore {
            network,
            state: StreamState {
                target,
                vote,
                log_reader,
                config,
                submitted,
                committed,
                heartbeat,
                quiesced,
                heartbeat_grid: host.as_ref().map(|h| h.epoch()),
                host,
                notify,
                sm,
                gauge: gauge.clone(),
                matched: None,
                clock,
                unheard_retry: std::time::Duration::ZERO,
                jitter: Jitter::new(jitter_seed),
            },
        };
        // One span per stream; inside it one child span per state the stream is in: `probing`
        // (the binary search), `pipelining`, `snapshot`.
        let span = debug_span!("replication", id = %leader, %target, %vote);
        let join = tokio::spawn(core.run().instrument(span));
        Self { vote, gauge, departing_until: None, join }
    }
}

/// Why a phase ended.
///
/// The errors are boxed: a `Stop` is held across the awaits of the stream's loop, so its size
/// is in the task of every idle group's stream, while errors are the rare case.
enum Stop {
    /// The leadership this task replicates for is over.
    LeadershipEnded,
    /// The follower's log does not have what was believed matched: search again.
    Conflict,
    /// A network error or timeout: retry after a backoff.
    Retry(Box<RPCError>),
    /// The follower needs entries the leader purged: send the snapshot.
    NeedSnapshot,
    /// The log store failed.
    Fatal(Box<Fatal>),
}

impl Stop {
    /// Retry after a backoff, because of `e`.
    fn retry(e: RPCError) -> Self {
        Stop::Retry(Box::new(e))
    }
}

impl From<Fatal> for Stop {
    fn from(f: Fatal) -> Self {
        Stop::Fatal(Box::new(f))
    }
}

impl From<crate::error::StorageError> for Stop {
    fn from(e: crate::error::StorageError) -> Self {
        Stop::from(Fatal::from(e))
    }
}

struct ReplicationCore<C: RaftTypeConfig, N, LR> {
    network: N,
    state: StreamState<C, LR>,
}

/// Everything but the network client, so it can be used while a stream borrows the client.
struct StreamState<C: RaftTypeConfig, LR> {
    target: C::NodeId,
    vote: Vote<C>,
    log_reader: LR,
    config: Arc<Config>,
    submitted: watch::Receiver<IOProgress<C>>,
    committed: watch::Receiver<Option<LogId<C>>>,
    /// Changes when a read wants a heartbeat round now.
    heartbeat: watch::Receiver<u64>,
    /// `Some((last, mark))` while the leader is quiesced with its whole log up to `last`
    /// matched and committed: the stream sends one heartbeat marked `quiesce` (with `mark`),
    /// then none until it wakes.
    quiesced: watch::Receiver<Option<(LogId<C>, crate::types::QuiesceMark)>>,
    /// In a host of many groups: the epoch heartbeats are aligned to.
    heartbeat_grid: Option<Instant>,
    /// In a host of many groups: its view of which nodes are alive.
    host: Option<Arc<crate::multi::Liveness<C>>>,
    notify: queue::UnboundedSender<Notification<C>>,
    /// The state machine task, which hands out the current snapshot.
    sm: queue::UnboundedSender<SmMsg<C>>,
    gauge: Arc<InFlightGauge>,
    /// The follower's log matches the leader's up to here, durably.
    matched: Option<LogId<C>>,
    /// The leader's clock: send times are read on it, so they compare with the Engine's `now`.
    clock: Clock,
    /// How long a quiesced leader last waited before retrying a target its host reaches but
    /// does not hear, before the spread of `jitter` (zero: it has not waited since the target
    /// was heard, or the group woke).
    unheard_retry: std::time::Duration,
    /// Lengthens this stream's waits before a retry, so that the streams of a host's groups to
    /// one node do not all retry at the same instant.
    jitter: Jitter,
}

/// The longest a quiesced leader waits between retries of a target its host reaches but does
/// not hear, before the spread of its jitter: a node that runs but does not host the group
/// (yet) costs at most one RPC per group per this long, not per backoff.
const MAX_UNHEARD_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// A probe's outcome.
enum Probe<C: RaftTypeConfig> {
    Matched,
    Conflict { follower_last: Option<LogId<C>> },
}

impl<C, N, LR> ReplicationCore<C, N, LR>
where
    C: RaftTypeConfig,
    N: RaftNetwork<C>,
    LR: RaftLogReader<C>,
{
    /// Replicate until the leadership ends or the log store fails.
    ///
    /// Not an `async fn`, which would hold `self` twice in its future (see `RaftCore::run`);
    /// and everything but a parked stream's wait (probing, each pass of the pipeline, sending
    /// a snapshot, backing off) is boxed, so that the task of an idle group's stream is no
    /// larger than parking needs.
    #[allow(clippy::manual_async_fn, reason = "an async fn would hold the stream's state twice in its future")]
    fn run(mut self) -> impl std::future::Future<Output = ()> {
        async move {
            let config = &self.state.config;
            // Capped below the minimum election timeout: a healthy follower's stream that failed
            // once must be back before check-quorum, or its voters' stickiness, would notice.
            let max_backoff = (config.election_timeout_min / 2).max(config.heartbeat_interval);
            let mut retries = Retries::new(config.heartbeat_interval, max_backoff);
            // The match point when the last snapshot was sent: needing a snapshot again from the
            // same point means the follower did not take it.
            let mut snapshot_sent_at: Option<Option<LogId<C>>> = None;
            loop {
                // `if let`, not `match`: the probe's result is dropped before the pipeline runs,
                // instead of being held in this task while it parks.
                let stop = if let Err(stop) = Box::pin(self.find_match().instrument(debug_span!("probing"))).await {
                    stop
                } else {
                    self.pipeline(&mut retries).instrument(debug_span!("pipelining")).await
                };
                let failure = match stop {
                    Stop::LeadershipEnded => return,
                    Stop::Fatal(f) => {
                        let _ = self.state.notify.send(Notification::Fatal(f));
                        return;
                    }
                    Stop::NeedSnapshot => {
                        if snapshot_sent_at == Some(self.state.matched) {
                            Box::pin(self.back_off(&mut retries, Failure::SnapshotNotTaken)).await;
                        }
                        match Box::pin(self.send_snapshot().instrument(debug_span!("snapshot"))).await {
                            Ok(()) => {
                                snapshot_sent_at = Some(self.state.matched);
                                continue;
                            }
                            Err(Stop::LeadershipEnded) => return,
                            Err(Stop::Fatal(f)) => {
                                let _ = self.state.notify.send(Notification::Fatal(f));
                                return;
                            }
                            Err(Stop::Retry(e)) => Failure::Snapshot(*e),
                            Err(Stop::Conflict | Stop::NeedSnapshot) => Failure::Snapshot(RPCError::Unreachable(
                                anyerror::AnyError::error("the snapshot transfer was cut short"),
                            )),
                        }
                    }
                    Stop::Conflict => Failure::Conflict,
                    Stop::Retry(e) => Failure::Rpc(*e),
                };
                // Boxed, as are the rare phases: a stream that backs off is not the common case.
                Box::pin(self.back_off(&mut retries, failure)).await;
            }
        }
    }

    /// Log `failure` (at WARN once failures repeat, rate-limited) and wait before retrying.
    async fn back_off(&mut self, retries: &mut Retries<Option<LogId<C>>>, failure: Failure) {
        let st = &mut self.state;
        let verdict = retries.failed(st.clock.now(), st.matched, matches!(failure, Failure::Conflict));
        // Spread, since the streams of a host's groups to one node fail together, but kept
        // below the election timeout, as the backoff's cap is (see `run`).
        let backoff = st.jitter.spread_below(verdict.backoff, st.config.election_timeout_min);
        let matched = DisplayOption(&st.matched);
        match verdict.warn {
            Some(quiet) => warn!(
                target = %st.target, %failure, in_a_row = verdict.in_a_row, %matched,
                ?backoff, failures_not_logged = quiet, "replication keeps failing"
            ),
            None => debug!(target = %st.target, %failure, %matched, ?backoff, "replication failed"),
        }
        if !backoff.is_zero() {
            st.clock.sleep(backoff).await;
        }
        // A quiesced leader does not retry to a follower whose node the host does not hear (a
        // dead node must not cost thousands of groups a retry each per backoff): it retries once
        // the group wakes or that node is heard again, or reached (a node whose groups know no
        // members yet, new or with its storage lost, beats nobody until a leader reaches it).
        // A follower that is heard is retried as usual: it must get the heartbeat marked
        // `quiesce`, or it would stay awake.
        //
        // A target the host reaches but does not hear (a node that runs but hosts no group
        // that knows its members yet) is retried, since nothing else would catch it up, but
        // ever more rarely: it may also be a node that will never host the group.
        let Some(host) = st.host.clone() else { return };
        if matches!(failure, Failure::Conflict) {
            // The target answered: it runs the group, whether its node is heard or not (a
            // node back with its storage lost beats nobody until it is caught up). Go on
            // with the catch-up at once.
            self.state.unheard_retry = std::time::Duration::ZERO;
            return;
        }
        let mut quiesced = st.quiesced.clone();
        let mut returned = host.subscribe_return(&st.target);
        loop {
            if quiesced.borrow_and_update().is_none() || host.is_live(&self.state.target) {
                self.state.unheard_retry = std::time::Duration::ZERO;
                return;
            }
            let st = &mut self.state;
            let wait = host.is_reached(&st.target).then(|| st.next_unheard_wait());
            let retry = wait.map(|wait| st.clock.now() + wait);
            tokio::select! {
                r = quiesced.changed() => if r.is_err() { return },
                // The target is heard again, or first reached: retry it at once (a stale leader
                // there learns of the newer term; a follower there catches up and gets the
                // marked heartbeat).
                _ = returned.changed() => return,
                _ = crate::core::sleep_until(st.clock, retry) => {
                    debug!(target = %st.target, waited = ?wait, "retrying a target that is reached but not heard");
                    return;
                }
            }
        }
    }

    /// Phase 1: binary search for the longest prefix of the leader's log the follower holds.
    ///
    /// It starts from what the follower proved durable (`matched`); a follower that conflicts
    /// below that has lost entries it acknowledged, and the search starts over from nothing.
    async fn find_match(&mut self) -> Result<(), Stop> {
        let st = &mut self.state;
        let submitted = st.current_submitted()?;
        let leader_last = submitted.last_log_id;
        // The shortest prefix the leader can still describe: its purged entry.
        let purged_len = submitted.purged.next_index();
        // Invariant: a prefix of `lo` entries matches; no prefix of `hi` or more entries does.
        let mut lo = st.matched.next_index();
        let mut hi = leader_last.next_index() + 1;
        let mut matched = st.matched;
        let mut probe_len = leader_last.next_index();
        while probe_len > lo {
            let prev = st.log_id_at(probe_len - 1).await?;
            let req = AppendEntriesRequest {
                vote: st.vote,
                prev_log_id: Some(prev),
                entries: vec![],
                leader_commit: *st.committed.borrow(),
                quiesce: None,
            };
            let option = RPCOption::new(st.config.rpc_timeout);
            let ack = Ack { sent_at: st.clock.now(), round: *st.heartbeat.borrow_and_update(), marked: false };
            st.gauge.set(1, 0);
            let _reset = GaugeReset(st.gauge.clone());
            let resp = match timeout(option.timeout, self.network.append_entries(req, option)).await {
                Ok(r) => r.map_err(Stop::retry)?,
                Err(_) => return Err(Stop::retry(RPCError::Timeout(option.timeout))),
            };
            let probe = st.probe_result(resp)?;
            // Any answer but a greater vote shows the follower followed this leader.
            st.report(st.matched, Some(ack));
            match probe {
                Probe::Matched => {
                    lo = probe_len;
                    matched = Some(prev);
                }
                Probe::Conflict { follower_last } => {
                    hi = probe_len.min(follower_last.next_index() + 1);
                    if hi <= lo {
                        warn!(
                            target = %st.target, believed = %DisplayOption(&matched),
                            follower_last = %DisplayOption(&follower_last),
                            "the follower no longer holds entries it acknowledged; searching its whole log"
                        );
                        lo = 0;
                        matched = None;
                        st.lower_matched(None);
                    }
                }
            }
            if lo + 1 >= hi {
                break;
            }
            if lo < purged_len {
                if hi <= purged_len {
                    // The follower lacks entries the leader purged.
                    return Err(Stop::NeedSnapshot);
                }
                // Check the purged entry first: below it nothing can be probed or sent.
                probe_len = purged_len;
                continue;
            }
            probe_len = lo + (hi - lo) / 2;
        }
        if lo < purged_len {
            return Err(Stop::NeedSnapshot);
        }
        debug!(matched = %DisplayOption(&matched), "found the match point");
        st.report(matched, None);
        Ok(())
    }

    /// Phase 2: stream entries from the match point until something ends the stream, parking
    /// the stream whenever it has nothing to do (see [`Self::park`]); says why it ended.
    ///
    /// Each pass of the pipeline is boxed: a parked stream waits with only what [`Pipe`] and
    /// the park need, and not the pipeline's larger future, for as long as its group is idle
    /// (thousands of idle groups of a host each have such a stream per follower). One
    /// allocation per pass: per wake of a quiesced group, never per request.
    async fn pipeline(&mut self, retries: &mut Retries<Option<LogId<C>>>) -> Stop {
        let mut pipe = Pipe::new(&self.state);
        loop {
            // A block of its own, so that the pass's result is not held while the stream parks.
            {
                let mut answered = false;
                let pass = Box::pin(self.pipeline_pass(&mut pipe, &mut answered)).await;
                if answered {
                    retries.succeeded();
                }
                if let Err(stop) = pass {
                    return stop;
                }
            }
            if let Err(stop) = self.park(&mut pipe).await {
                return stop;
            }
        }
    }

    /// One pass of the pipeline: open a stream and send on it until the stream parks (then
    /// `Ok`) or something ends it. Records whether the follower answered `Success` at all.
    async fn pipeline_pass(&mut self, pipe: &mut Pipe<C>, answered: &mut bool) -> Result<(), Stop> {
        let st = &mut self.state;
        let max_in_flight = st.config.max_in_flight_requests as usize;
        let rpc_timeout = st.config.rpc_timeout;
        st.gauge.set(0, 0);
        let _reset = GaugeReset(st.gauge.clone());
        let mut answer_deadline = st.clock.now() + rpc_timeout;
        let (tx, mut responses) = open_stream(&mut self.network, max_in_flight, rpc_timeout).await?;
        // Whether this stream got a `Success`. Its first request starts at what the follower
        // acknowledged (a stream opens with nothing in flight, everything sent answered), so a
        // conflict before any success means the follower lost acknowledged entries, on a
        // reopened stream as on the first one.
        let mut stream_answered = false;
        loop {
            let look = st.look(pipe)?;
            let Look { submitted, committed, quiesced, room, send_now, may_heartbeat } = look;
            // A quiesced stream that has told its follower so and waits for no answer sends
            // nothing until the group wakes or entries arrive: its stream is closed meanwhile (a
            // channel block and the network's stream state, kept by every follower of
            // thousands of idle groups), and a new one opened before the next request.
            if look.parked(pipe) {
                pipe.in_flight.release_capacity();
                return Ok(());
            }
            pipe.arm_commit(committed, send_now, st.clock.now());
            tokio::select! {
                biased;
                resp = responses.next() => {
                    let resp = match resp {
                        None => return Err(Stop::retry(RPCError::Network(anyerror::AnyError::error("append stream closed")))),
                        Some(r) => r.map_err(Stop::retry)?,
                    };
                    match resp {
                        AppendEntriesResponse::Success { matched } => {
                            *answered = true;
                            stream_answered = true;
                            let ack = match pipe.in_flight.on_success(matched) {
                                Answered::Request(ack) => Some(ack),
                                Answered::Nothing => None,
                                Answered::NeverSent => {
                                    warn!(target = %st.target, matched = %DisplayOption(&matched), "follower acknowledged entries never sent");
                                    return Err(Stop::Conflict);
                                }
                            };
                            let now = st.clock.now();
                            answer_deadline = now + rpc_timeout;
                            st.report(matched, ack);
                            // The last answer in flight is what usually lets RaftCore commit: look
                            // for a newer commit index in `commit_grace` rather than being woken
                            // for it (each commit would wake every stream).
                            if pipe.in_flight.is_empty() {
                                pipe.timer.arm_commit(now);
                            }
                        }
                        AppendEntriesResponse::Conflict { .. } => {
                            st.report(st.matched, pipe.in_flight.oldest());
                            if !stream_answered {
                                // The stream's first request, whose prev is `matched`,
                                // conflicts: the follower no longer holds what it
                                // acknowledged.
                                warn!(target = %st.target, believed = %DisplayOption(&st.matched), "the follower conflicts at its match point; searching its whole log");
                                st.lower_matched(None);
                            }
                            return Err(Stop::Conflict);
                        }
                        AppendEntriesResponse::HigherVote(v) => return Err(st.higher_vote(v)),
                    }
                }
                permit = tx.reserve(), if send_now => {
                    let Ok(permit) = permit else { return Err(Stop::retry(RPCError::Network(anyerror::AnyError::error("append stream input closed")))) };
                    let (req, bytes) = st.next_request(pipe.last_sent, submitted.last_log_id, committed).await?;
                    let now = st.clock.now();
                    if pipe.in_flight.is_empty() {
                        answer_deadline = now + rpc_timeout;
                    }
                    pipe.last_sent = req.last_log_id();
                    debug!(prev = %DisplayOption(&req.prev_log_id), last = %DisplayOption(&pipe.last_sent), entries = req.entries.len(), "sending entries");
                    pipe.sent_commit = committed;
                    let ack = Ack { sent_at: now, round: *st.heartbeat.borrow_and_update(), marked: false };
                    pipe.in_flight.push(pipe.last_sent, ack, bytes);
                    pipe.timer.sent(now);
                    permit.send(req);
                }
                _ = st.clock.sleep_until(pipe.timer.next), if room && may_heartbeat => {
                    if pipe.timer.commit_armed && committed <= pipe.sent_commit {
                        pipe.timer.commit_not_moved();
                        continue;
                    }
                    // The follower may quiesce only on a heartbeat that brings it the leader's
                    // whole log, all committed.
                    let quiesce = quiesced.filter(|(last, _)| Some(*last) == pipe.last_sent && committed == pipe.last_sent).map(|(_, mark)| mark);
                    pipe.quiesce_sent = quiesce.is_some();
                    pipe.marked_for = if pipe.quiesce_sent { quiesced } else { None };
                    if pipe.quiesce_sent && let Some(restarted) = pipe.target_restarted.as_mut() {
                        // Restarts before this mark are covered by it.
                        restarted.mark_unchanged();
                    }
                    let req = AppendEntriesRequest { vote: st.vote, prev_log_id: pipe.last_sent, entries: vec![], leader_commit: committed, quiesce };
                    let now = st.clock.now();
                    if pipe.in_flight.is_empty() {
                        answer_deadline = now + rpc_timeout;
                    }
                    let ack = Ack { sent_at: now, round: *st.heartbeat.borrow_and_update(), marked: pipe.quiesce_sent };
                    pipe.in_flight.push(pipe.last_sent, ack, 0);
                    pipe.sent_commit = committed;
                    pipe.timer.sent(now);
                    if tx.try_send(req).is_err() {
                        return Err(Stop::retry(RPCError::Network(anyerror::AnyError::error("append stream input full"))));
                    }
                }
                _ = st.clock.sleep_until(answer_deadline), if !pipe.in_flight.is_empty() => {
                    return Err(Stop::retry(RPCError::Timeout(rpc_timeout)));
                }
                r = st.submitted.changed(), if !send_now => {
                    if r.is_err() { return Err(Stop::LeadershipEnded); }
                }
                // While requests are in flight their answers wake this loop, and it looks at
                // the commit index then: no wake-up per commit.
                r = st.committed.changed(), if !send_now && pipe.in_flight.is_empty() && !pipe.timer.commit_armed => {
                    if r.is_err() { return Err(Stop::LeadershipEnded); }
                }
                _ = changed_opt(&mut pipe.target_restarted), if pipe.quiesce_sent => pipe.on_target_restarted(st),
                _ = changed_opt(&mut pipe.target_returned), if pipe.quiesce_sent && pipe.unheard_resend.is_none() => {
                    pipe.on_target_returned(st);
                }
                _ = crate::core::sleep_until(st.clock, pipe.unheard_resend), if pipe.quiesce_sent => pipe.on_unheard_resend_due(st),
                // Quiesced: tell the follower now. Woken: be heard at once, since whatever woke
                // the group (a campaign, a read) wants the leader heard.
                r = st.quiesced.changed() => pipe.send_now_unless_ended(r, st.clock.now())?,
                // A read waits for a quorum to answer a request of its round: the next request
                // with entries carries it, or a heartbeat as soon as nothing is in flight (an
                // answer to a request sent before the read proves nothing).
                r = st.heartbeat.changed() => pipe.send_now_unless_ended(r, st.clock.now())?,
            }
        }
    }

    /// Wait with the stream closed (a quiesced group: its follower was told, nothing is in
    /// flight) until the stream is needed again: entries, the group waking, or the follower's
    /// node back from a restart or from being unheard. Handles what the pipeline's loop would
    /// while parked, and nothing else.
    async fn park(&mut self, pipe: &mut Pipe<C>) -> Result<(), Stop> {
        let st = &mut self.state;
        loop {
            // In a block of its own: a `Look` held across the wait below would be in the
            // parked stream's task, the state every idle group's leader keeps per follower.
            {
                let look = st.look(pipe)?;
                if !look.parked(pipe) {
                    return Ok(());
                }
                pipe.arm_commit(look.committed, look.send_now, st.clock.now());
            }
            tokio::select! {
                biased;
                r = st.submitted.changed() => {
                    if r.is_err() { return Err(Stop::LeadershipEnded); }
                }
                r = st.committed.changed(), if !pipe.timer.commit_armed => {
                    if r.is_err() { return Err(Stop::LeadershipEnded); }
                }
                _ = changed_opt(&mut pipe.target_restarted) => pipe.on_target_restarted(st),
                _ = changed_opt(&mut pipe.target_returned), if pipe.unheard_resend.is_none() => pipe.on_target_returned(st),
                _ = sleep_until_boxed(st.clock, pipe.unheard_resend) => pipe.on_unheard_resend_due(st),
                r = st.quiesced.changed() => pipe.send_now_unless_ended(r, st.clock.now())?,
                r = st.heartbeat.changed() => pipe.send_now_unless_ended(r, st.clock.now())?,
            }
        }
    }
}

/// [`crate::core::sleep_until`], boxed when there is a deadline: a parked stream rarely has
/// one (a resend to a node reached but not heard), and a sleep inline would be in the task of
/// every idle group's stream. One allocation per wait with a deadline.
///
/// # Cancel safety
/// Cancel safe: it only sleeps.
fn sleep_until_boxed(
    clock: Clock,
    deadline: Option<Instant>,
) -> futures_util::future::Either<std::pin::Pin<Box<tokio::time::Sleep>>, std::future::Pending<()>> {
    use futures_util::future::Either;
    match deadline {
        Some(at) => Either::Left(Box::pin(clock.sleep_until(at))),
        None => Either::Right(std::future::pending()),
    }
}

/// What a pipelining phase carries from one pass of its stream to the next.
struct Pipe<C: RaftTypeConfig> {
    in_flight: InFlight<C>,
    /// The last entry sent (requests without entries repeat it).
    last_sent: Option<LogId<C>>,
    /// The commit index the last request carried.
    sent_commit: Option<LogId<C>>,
    timer: SendTimer,
    /// Whether this stream sent its follower the heartbeat marked `quiesce` since the leader
    /// last quiesced, and for which quiescence (last log id and mark): the leader may wake and
    /// quiesce again, at another last entry, between two looks of the loop.
    quiesce_sent: bool,
    marked_for: Option<(LogId<C>, crate::types::QuiesceMark)>,
    /// In a host of many groups: changes when the target's node restarted. Its groups know no
    /// leader and would campaign after their election timeout (waking the whole group): a
    /// quiesced stream sends it the marked heartbeat again, so it follows and quiesces.
    target_restarted: Option<watch::Receiver<u64>>,
    /// Changes when the target's node is heard again, or, unheard, is first reached. A node
    /// back with its storage lost hosts groups that know no members: it beats nobody, so no
    /// restart is ever seen, and a quiesced stream that marked it before it died would wait
    /// forever. While it stays reached but unheard, the marked heartbeat is sent again, an
    /// election timeout later and then ever more rarely (`unheard_retry`): its conflict starts
    /// the catch-up. A node that is heard again gets nothing: beats that flap cost no RPC per
    /// group.
    target_returned: Option<watch::Receiver<u64>>,
    /// When the resend is due, and when it was scheduled: a node heard since then flaps (or
    /// came back), and is not sent the mark.
    unheard_resend: Option<Instant>,
    unheard_since: Instant,
}

/// What the pipeline's loop sees when it looks at the leader's progress.
#[derive(Clone, Copy)]
struct Look<C: RaftTypeConfig> {
    submitted: IOProgress<C>,
    committed: Option<LogId<C>>,
    quiesced: Option<(LogId<C>, crate::types::QuiesceMark)>,
    /// The stream may send a request: in-flight count and bytes are under their bounds.
    room: bool,
    /// Entries wait to be sent, and there is room.
    send_now: bool,
    /// A request without entries may go: it repeats `last_sent`, only with nothing in flight,
    /// so that every answer names the one request it answers (see `InFlight`). A quiesced
    /// stream sends one heartbeat, marked, and then is silent.
    may_heartbeat: bool,
}

impl<C: RaftTypeConfig> Look<C> {
    /// Whether the stream parks: quiesced, its follower told so, nothing in flight or to send.
    fn parked(&self, pipe: &Pipe<C>) -> bool {
        pipe.quiesce_sent && self.quiesced.is_some() && pipe.in_flight.is_empty() && !self.send_now
    }
}

impl<C: RaftTypeConfig> Pipe<C> {
    fn new<LR>(st: &StreamState<C, LR>) -> Self {
        let now = st.clock.now();
        let heartbeat = st.config.heartbeat_interval;
        Self {
            in_flight: InFlight::default(),
            last_sent: st.matched,
            sent_commit: None,
            timer: SendTimer {
                next: now,
                last_sent: now,
                commit_armed: false,
                heartbeat,
                commit_grace: heartbeat / 16,
                grid: st.heartbeat_grid,
            },
            quiesce_sent: false,
            marked_for: None,
            target_restarted: st.host.as_ref().map(|h| h.subscribe_restart(&st.target)),
            target_returned: st.host.as_ref().map(|h| h.subscribe_return(&st.target)),
            unheard_resend: None,
            unheard_since: now,
        }
    }

    /// A newer commit index rides on the next request with entries. Under load one comes soon,
    /// so the commit costs no request of its own; once nothing is in flight and nothing new
    /// arrived for `commit_grace`, the heartbeat timer sends it alone.
    fn arm_commit(&mut self, committed: Option<LogId<C>>, send_now: bool, now: Instant) {
        if committed > self.sent_commit && self.in_flight.is_empty() && !send_now && !self.timer.commit_armed {
            self.timer.arm_commit(now);
        }
    }

    /// A watch the stream follows changed and wants the follower to hear from the leader at
    /// once; or, if its sender is gone, the leadership is over.
    fn send_now_unless_ended(
        &mut self,
        changed: Result<(), watch::error::RecvError>,
        now: Instant,
    ) -> Result<(), Stop> {
        changed.map_err(|_| Stop::LeadershipEnded)?;
        self.timer.send_now(now);
        Ok(())
    }

    fn on_target_restarted<LR>(&mut self, st: &StreamState<C, LR>) {
        debug!(target = %st.target, "the target's node restarted; sending it the marked heartbeat again");
        self.quiesce_sent = false;
        self.timer.send_now(st.clock.now());
    }

    fn on_target_returned<LR: RaftLogReader<C>>(&mut self, st: &mut StreamState<C, LR>) {
        // Not at once: a node whose beats flap is reached but unheard for a moment at each
        // flap. One still unheard a whole election timeout later (or the last wait) gets the
        // mark.
        if st.reached_unheard() {
            self.unheard_since = st.clock.now();
            let wait = st.jitter.spread(st.unheard_retry.max(st.config.election_timeout_max));
            self.unheard_resend = Some(self.unheard_since + wait);
        }
    }

    fn on_unheard_resend_due<LR: RaftLogReader<C>>(&mut self, st: &mut StreamState<C, LR>) {
        self.unheard_resend = None;
        let heard_since =
            st.host.as_ref().and_then(|h| h.last_heard(&st.target)).is_some_and(|t| t > self.unheard_since);
        if st.reached_unheard() && !heard_since {
            let wait = st.next_unheard_wait();
            debug!(target = %st.target, next_in = ?wait, "the target's node is reached but not heard; sending it the marked heartbeat again");
            self.unheard_since = st.clock.now();
            self.unheard_resend = Some(self.unheard_since + wait);
            self.quiesce_sent = false;
            self.timer.send_now(st.clock.now());
        } else {
            st.unheard_retry = std::time::Duration::ZERO;
        }
    }
}

/// Open a pipelined stream to the follower: the sender of its requests, and its answers.
async fn open_stream<C: RaftTypeConfig, N: RaftNetwork<C>>(
    network: &mut N,
    max_in_flight: usize,
    rpc_timeout: std::time::Duration,
) -> Result<(mpsc::Sender<AppendEntriesRequest<C>>, AppendResponseStream<'_, C>), Stop> {
    let (tx, rx) = mpsc::channel::<AppendEntriesRequest<C>>(max_in_flight);
    let input = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }).boxed();
    let option = RPCOption::new(rpc_timeout);
    match timeout(rpc_timeout, network.stream_append(input, option)).await {
        Ok(r) => Ok((tx, r.map_err(Stop::retry)?)),
        Err(_) => Err(Stop::retry(RPCError::Timeout(rpc_timeout))),
    }
}

/// Why an attempt to replicate failed, for the log.
enum Failure {
    Conflict,
    Rpc(RPCError),
    Snapshot(RPCError),
    /// The follower needs the snapshot again from where it was before the last one was sent.
    SnapshotNotTaken,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conflict => f.write_str("the follower's log conflicts with what was believed matched"),
            Self::Rpc(e) => write!(f, "{e}"),
            Self::Snapshot(e) => write!(f, "sending the snapshot: {e}"),
            Self::SnapshotNotTaken => f.write_str("the follower did not install the snapshot it was sent"),
        }
    }
}

impl<C: RaftTypeConfig, LR: RaftLogReader<C>> StreamState<C, LR> {
    /// Look at the leader's progress and the stream's state: what may be sent now.
    fn look(&mut self, pipe: &mut Pipe<C>) -> Result<Look<C>, Stop> {
        let submitted = self.current_submitted()?;
        let committed = *self.committed.borrow_and_update();
        let quiesced = *self.quiesced.borrow_and_update();
        if quiesced.is_none() || quiesced != pipe.marked_for {
            pipe.quiesce_sent = false;
        }
        let in_flight = &pipe.in_flight;
        self.gauge.set(in_flight.len() as u64, in_flight.bytes());
        let room = in_flight.len() < self.config.max_in_flight_requests as usize
            && in_flight.bytes() < self.config.max_in_flight_bytes;
        let has_entries = pipe.last_sent.next_index() < submitted.last_log_id.next_index();
        let send_now = room && has_entries;
        let may_heartbeat = in_flight.may_send(pipe.last_sent) && !send_now && !pipe.quiesce_sent;
        Ok(Look { submitted, committed, quiesced, room, send_now, may_heartbeat })
    }

    /// What the leader has submitted, or the end of this task if leadership changed.
    ///
    /// RaftCore publishes the leader vote before it starts streams, so any other vote means the
    /// leadership this task serves is over.
    pub(super) fn current_submitted(&mut self) -> Result<IOProgress<C>, Stop> {
        let submitted = *self.submitted.borrow_and_update();
        if submitted.vote != self.vote {
            return Err(Stop::LeadershipEnded);
        }
        Ok(submitted)
    }

    /// The leader's log id at `index`, read from the log (the purged entry's id is known).
    async fn log_id_at(&mut self, index: u64) -> Result<LogId<C>, Stop> {
        if let Some(purged) = self.submitted.borrow().purged.filter(|p| p.index == index) {
            return Ok(purged);
        }
        let entries = self.log_reader.try_get_log_entries(index..index + 1).await?;
        self.still_leading_after_read()?;
        match entries.first() {
            // An entry of a later leader: this leadership is over (see `next_request`).
            Some(e) if e.log_id.leader_id.term > self.vote.term => Err(Stop::LeadershipEnded),
            Some(e) if e.log_id.index == index => Ok(e.log_id),
            // Purged since the search started: the follower gets the snapshot.
            _ => Err(Stop::NeedSnapshot),
        }
    }

    /// Whether the leadership still stands after a log read: if not, what was read may be a
    /// newer leader's log. RaftCore aborts this task when its leadership ends, but a poll under
    /// way (on another worker) runs on; it closes the streams' watches before it changes the
    /// log for another leader (`CloseReplicationStreams` comes before `TruncateLog` and
    /// `AppendEntries`), so a read that saw such a change finds them closed. Without this, the
    /// read entries went out after this leader's `last_sent`, splicing two leaders' logs on the
    /// follower (found in review).
    fn still_leading_after_read(&self) -> Result<(), Stop> {
        match self.submitted.has_changed() {
            Err(_) => Err(Stop::LeadershipEnded),
            Ok(_) if self.submitted.borrow().vote != self.vote => Err(Stop::LeadershipEnded),
            Ok(_) => Ok(()),
        }
    }

    /// The next AppendEntries after `last_sent`, with entries up to `submitted`.
    async fn next_request(
        &mut self,
        last_sent: Option<LogId<C>>,
        submitted: Option<LogId<C>>,
        committed: Option<LogId<C>>,
    ) -> Result<(AppendEntriesRequest<C>, u64), Stop> {
        let start = last_sent.next_index();
        let end = submitted.next_index().min(start + self.config.max_payload_entries);
        let mut entries: Vec<Entry<C>> =
            if start < end { self.log_reader.try_get_log_entries(start..end).await? } else { Vec::new() };
        self.still_leading_after_read()?;
        let consecutive =
            entries.len() as u64 == end - start && entries.iter().zip(start..).all(|(e, i)| e.log_id.index == i);
        if !consecutive {
            if self.submitted.borrow().purged.next_index() > start {
                return Err(Stop::NeedSnapshot);
            }
            warn!(start, end, got = entries.len(), "log reader returned an incomplete range");
            return Err(Stop::retry(RPCError::Unreachable(anyerror::AnyError::error("log range not readable"))));
        }
        if let Some(newer) = first_out_of_term_order(self.vote.term, last_sent, entries.iter().map(|e| e.log_id)) {
            // Not a log this leader could hold: a second line behind `still_leading_after_read`
            // (a log store that showed a change before it returned, say).
            warn!(target = %self.target, vote = %self.vote, at = %newer, "the log changed under the stream: stopping");
            return Err(Stop::LeadershipEnded);
        }
        // Keep the request within max_payload_bytes, but carry at least one entry.
        let mut bytes = 0;
        let keep = entries
            .iter()
            .take_while(|e| {
                bytes += e.approx_size();
                bytes <= self.config.max_payload_bytes
            })
            .count()
            .max(1)
            .min(entries.len());
        entries.truncate(keep);
        let bytes = entries.iter().map(Entry::approx_size).sum();
        Ok((
            AppendEntriesRequest {
                vote: self.vote,
                prev_log_id: last_sent,
                entries,
                leader_commit: committed,
                quiesce: None,
            },
            bytes,
        ))
    }

    fn probe_result(&mut self, resp: AppendEntriesResponse<C>) -> Result<Probe<C>, Stop> {
        match resp {
            AppendEntriesResponse::Success { .. } => Ok(Probe::Matched),
            AppendEntriesResponse::Conflict { last_log_id, .. } => Ok(Probe::Conflict { follower_last: last_log_id }),
            AppendEntriesResponse::HigherVote(v) => Err(self.higher_vote(v)),
        }
    }

    pub(super) fn higher_vote(&mut self, vote: Vote<C>) -> Stop {
        if vote.is_gt(&self.vote) {
            let _ = self.notify.send(Notification::Replication {
                target: self.target,
                vote: self.vote,
                result: ReplicationResult::HigherVote(vote),
                ack: None,
            });
            Stop::LeadershipEnded
        } else {
            // An answer that is not a greater vote but rejects ours: a confused peer.
            warn!(%vote, mine = %self.vote, "follower rejected a vote that is not lower than its own");
            Stop::retry(RPCError::Network(anyerror::AnyError::error("follower rejected the leader vote")))
        }
    }

    /// Tell RaftCore what was learned: the follower matches up to `matched` (reported when it
    /// advanced), and `ack`, what the answer to one request proves.
    pub(super) fn report(&mut self, matched: Option<LogId<C>>, ack: Option<Ack>) {
        let advanced = matched > self.matched;
        if !advanced && ack.is_none() {
            return;
        }
        if advanced {
            debug!(matched = %DisplayOption(&matched), "follower acknowledged");
            self.matched = matched;
        }
        let _ = self.notify.send(Notification::Replication {
            target: self.target,
            vote: self.vote,
            result: ReplicationResult::Matched(self.matched),
            ack,
        });
    }

    /// In a host of many groups: whether the host's beats get through to the target's node
    /// while that node is not heard (it runs, but hosts no group that knows its members).
    fn reached_unheard(&self) -> bool {
        self.host.as_ref().is_some_and(|h| !h.is_live(&self.target) && h.is_reached(&self.target))
    }

    /// The target's node is still reached but not heard: how long to wait before the next
    /// retry. An election timeout at first, then twice the last wait, up to
    /// [`MAX_UNHEARD_RETRY`], each spread by this stream's jitter (never shortened).
    fn next_unheard_wait(&mut self) -> std::time::Duration {
        self.unheard_retry = if self.unheard_retry.is_zero() {
            self.config.election_timeout_max
        } else {
            (self.unheard_retry * 2).min(MAX_UNHEARD_RETRY)
        };
        self.jitter.spread(self.unheard_retry)
    }

    /// The follower does not hold what it was believed to match: tell RaftCore it matches
    /// only up to `matched`, so nothing more is counted on it.
    fn lower_matched(&mut self, matched: Option<LogId<C>>) {
        if matched < self.matched {
            self.matched = matched;
            let _ = self.notify.send(Notification::Replication {
                target: self.target,
                vote: self.vote,
                result: ReplicationResult::Matched(matched),
                ack: None,
            });
        }
    }
}

/// Resolves when `rx` changes; never if there is none or its sender is gone.
///
/// # Cancel safety
/// Cancel safe: it only waits on a watch.
async fn changed_opt(rx: &mut Option<watch::Receiver<u64>>) {
    let Some(rx) = rx.as_mut() else { return std::future::pending().await };
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
