//! Many Raft groups on one node: [`GroupHost`].
//!
//! An application whose data outgrows one Raft group (one leader's throughput, one log) splits
//! it into many groups, each replicated by its own Raft: a key range per group, say. A
//! [`GroupHost`] runs any number of such groups on one node, created and removed at run time.
//! Each group is a full quorate [`Raft`] with its own membership, leader, log store and state
//! machine, built from the same traits as a single group; what the host adds is what makes
//! thousands of groups per node affordable:
//!
//! - **One network per node.** A [`HostNetwork`] hands each group a
//!   [`RaftNetworkFactory`] whose messages carry the group's id; a transport
//!   sends every group's messages to a peer node over one connection, and its server routes
//!   each message to [`GroupHost::group`].
//! - **Node liveness instead of per-group heartbeats.** The host sends one [`NodeBeat`] per
//!   peer node and interval ([`HostConfig::beat_interval`]), for all groups at once, and
//!   suspects a peer it has not heard from for [`HostConfig::suspect_after`].
//! - **Quiescence.** A group with nothing to do stops heartbeating: once its leader's log is
//!   committed and matched by every member whose node is live, the leader sends each follower
//!   one last heartbeat marked `quiesce` and then nothing. A quiesced follower runs no election
//!   timer; it follows its leader's node's beats instead. An idle group costs no timer, no
//!   message and no wake-up.
//!
//! # Quiescence is safe, and orphans re-elect
//!
//! Raft's safety never depends on timers; what quiescence could break is liveness, and the
//! leader lease, which depends on followers refusing votes while they hear a leader. The rules:
//!
//! - A quiesced follower counts its leader's node being heard as hearing the leader: it
//!   refuses (pre-)votes exactly as a follower of a heartbeating leader would, and never
//!   campaigns while the leader's node is heard. Its last contact only moves forward, so it is
//!   never less sticky than without quiescence, which is what the lease relies on.
//! - A quiesced leader's lease runs out (no answers renew it). Any read wakes the group; a
//!   read after the lease ran out waits for a heartbeat round.
//! - Anything that needs the leader wakes it: a write, a read, a membership change, a transfer,
//!   and any vote request from a member (somebody is not hearing it). Such a request also
//!   wakes a quiesced follower, and so does any AppendEntries not marked `quiesce`. A vote
//!   request from a node that is no member (a voter removed while cut off campaigns for as
//!   long as it runs) wakes nothing.
//! - When the host suspects the leader's node, or sees it restart (a new
//!   [`NodeBeat::incarnation`]), it wakes every group quiesced under that node. When a
//!   leadership ends while some follower could still be quiesced under it (the group was
//!   removed or stopped there, or its leader stepped down), the leader's host lists the group
//!   and term in its next beats ([`NodeBeat::released`]) and the peers wake that group alone.
//!   The marked heartbeat carries the leader's host's incarnation, and a follower checks it and
//!   the releases it heard of when it quiesces, so a mark that arrives late does not quiesce
//!   it. A woken group's election timer runs from the last sign of its leader, so an orphaned
//!   group elects as soon as a heartbeating one would.
//! - A follower's node that the host does not hear need not be caught up for its leader to
//!   quiesce (a dead node must not keep thousands of groups awake); the leader's stream to it
//!   waits for the group to wake. When that node returns, its groups' elections wake their
//!   leaders, which catch it up.
//!
//! [`HostConfig::suspect_after`] must be shorter than every group's `election_timeout_min`, so
//! that a group wakes before its election would have started.
//!
//! # What a group costs, and what is shared
//!
//! A group is a Raft task, a state machine task and, while it leads, one replication task per
//! other member: tokio tasks, which cost memory while idle and no CPU. What the host shares is
//! the beat per node pair, and through the [`HostNetwork`], the connection per peer node. A
//! log store shared by every group of a node, so that appends of many groups share one
//! `fdatasync`, is the log store's business: any `RaftLogStorage` works, one per group, and
//! `quorate::file_store::SharedLog` (feature `file-store`) is one whose groups share one
//! writer, one file stream and one `fdatasync` per batch.
//!
//! # Out of scope
//!
//! Splitting a group in two and merging two groups are not supported: a group's key range (or
//! whatever the application partitions by) is fixed when the group is created. Moving a group
//! between nodes is an ordinary membership change of that group.

mod liveness;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span};

pub(crate) use liveness::Liveness;
pub use liveness::{NodeBeat, WakeRequest};

use crate::config::Config;
use crate::core::HostLink;
use crate::error::{Fatal, RPCError};
use crate::network::RPCOption;
use crate::storage::{RaftLogStorage, RaftStateMachine};
use crate::{Raft, RaftNetworkFactory, RaftTypeConfig};

/// The id of a Raft group within a [`GroupHost`]: the same on every node that hosts the group.
pub type GroupId = u64;

/// A node's network for all of its groups.
///
/// An implementation sends every group's messages to a peer node over a shared connection,
/// each tagged with its [`GroupId`], and delivers what arrives to the receiving node's
/// [`GroupHost::group`] (RPCs) and [`GroupHost::receive_beat`] (beats).
pub trait HostNetwork<C: RaftTypeConfig>: Send + Sync + 'static {
    /// The network factory of one group.
    type Group: RaftNetworkFactory<C>;

    /// The network factory for group `group`: every request its clients send reaches group
    /// `group` on the target node (the receiving host answers with an error if it does not host
    /// that group). It keeps every promise of [`RaftNetwork`](crate::RaftNetwork).
    fn group(&self, group: GroupId) -> Self::Group;

    /// Send this node's `beat` to node `target` (at `node`), and return once it was handed to
    /// the connection, or with an error. Beats need no answer; a lost beat only delays the
    /// next one. The host bounds each send with `option.timeout`.
    fn send_beat(
        &self,
        target: C::NodeId,
        node: &C::Node,
        beat: NodeBeat<C>,
        option: RPCOption,
    ) -> impl Future<Output = Result<(), RPCError>> + Send;
}

/// A [`GroupHost`]'s settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// How often this node sends a [`NodeBeat`] to each peer node. Default: 25 ms (four beats
    /// fit in `suspect_after`, so one late beat is no suspicion).
    pub beat_interval: Duration,
    /// A peer not heard from for longer than this is suspected: the groups quiesced under it
    /// wake. Must be shorter than every group's `election_timeout_min`. Default: 100 ms.
    pub suspect_after: Duration,
    /// Whether idle groups quiesce. Default: on.
    pub quiesce: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self { beat_interval: Duration::from_millis(25), suspect_after: Duration::from_millis(100), quiesce: true }
    }
}

/// Why a [`GroupHost`] call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The host's or the group's settings do not fit together.
    #[error("invalid host config: {0}")]
    Config(String),
    /// This host already runs a group of this id.
    #[error("group {0} already exists on this node")]
    GroupExists(GroupId),
    /// This host runs no group of this id.
    #[error("group {0} does not exist on this node")]
    NoSuchGroup(GroupId),
    /// The host has been shut down (or is shutting down): it runs no new group.
    #[error("the host is shut down")]
    ShutDown,
    /// The group's Raft failed to start or stop.
    #[error("group {group}: {fatal}")]
    Fatal {
        /// The group.
        group: GroupId,
        /// What its Raft reported.
        fatal: Fatal,
    },
}

/// Runs many Raft groups on one node: see the [module docs](self).
///
/// Cheap to clone: clones share the host. Dropping the last clone stops the beats; call
/// [`shutdown`](Self::shutdown) to stop the groups as well.
pub struct GroupHost<C: RaftTypeConfig, N: HostNetwork<C>> {
    inner: Arc<Inner<C, N>>,
}

impl<C: RaftTypeConfig, N: HostNetwork<C>> Clone for GroupHost<C, N> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

struct Inner<C: RaftTypeConfig, N: HostNetwork<C>> {
    id: C::NodeId,
    config: HostConfig,
    network: Arc<N>,
    liveness: Arc<Liveness<C>>,
    groups: RwLock<BTreeMap<GroupId, Hosted<C>>>,
    /// Set, under the `groups` lock, when `shutdown` starts: no group is added after.
    stopped: std::sync::atomic::AtomicBool,
    beats: Mutex<Option<JoinHandle<()>>>,
    /// Held for the whole of a `shutdown`: a second call (another clone) waits for the first
    /// to finish, releases and final beat included (found in review: it stopped the beats while
    /// the first call's groups were still stopping, and their releases never left).
    shutting_down: tokio::sync::Mutex<()>,
}

/// A group on this host.
struct Hosted<C: RaftTypeConfig> {
    raft: Raft<C>,
}

impl<C: RaftTypeConfig, N: HostNetwork<C>> Drop for Inner<C, N> {
    fn drop(&mut self) {
        if let Some(task) = self.beats.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl<C: RaftTypeConfig, N: HostNetwork<C>> GroupHost<C, N> {
    /// Start the host of node `id`: it begins beating to the peers its groups talk to. Call
    /// within a tokio runtime.
    ///
    /// # Errors
    /// [`HostError::Config`] if `config` is invalid (a zero interval, or `suspect_after` not
    /// longer than `beat_interval`).
    pub fn new(id: C::NodeId, config: HostConfig, network: N) -> Result<Self, HostError> {
        if config.beat_interval.is_zero() || config.suspect_after <= config.beat_interval {
            return Err(HostError::Config(format!(
                "suspect_after ({:?}) must be longer than a non-zero beat_interval ({:?})",
                config.suspect_after, config.beat_interval
            )));
        }
        let incarnation =
            std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), std::time::SystemTime::now());
        let liveness = Arc::new(Liveness::new(id, incarnation, config.suspect_after));
        let network = Arc::new(network);
        let span = info_span!("group_host", %id);
        let task = tokio::spawn(beat_loop(liveness.clone(), network.clone(), config.beat_interval).instrument(span));
        info!(%id, ?config, "group host started");
        Ok(Self {
            inner: Arc::new(Inner {
                id,
                config,
                network,
                liveness,
                groups: RwLock::new(BTreeMap::new()),
                stopped: std::sync::atomic::AtomicBool::new(false),
                beats: Mutex::new(Some(task)),
                shutting_down: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// This node's id.
    pub fn id(&self) -> C::NodeId {
        self.inner.id
    }

    /// The host's settings.
    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Start group `group` on this node, as [`Raft::new`] starts a single one: from its log
    /// store and state machine, with the host's network for the group. A new group waits to be
    /// [`initialize`](Raft::initialize)d (on one node) or to hear from its leader.
    ///
    /// A group id names one group for the cluster's whole life: never start a *new* group under
    /// the id of one that was ended (removed on every node). Messages do not tell the two
    /// apart, and a node that missed the end still runs the old group from its log: its
    /// candidate can win the new group's election and overwrite what it committed. Starting the
    /// *same* group again (after a restart, or on a node added to it) is what this is for.
    ///
    /// # Errors
    /// [`HostError::GroupExists`] if the host runs a group of this id;
    /// [`HostError::Config`] if `config.election_timeout_min` is not longer than the host's
    /// `suspect_after`, or if the host quiesces groups and `config` turns pre-vote or
    /// check-quorum off; [`HostError::Fatal`] if the Raft failed to start;
    /// [`HostError::ShutDown`] once [`shutdown`](Self::shutdown) has been called (the group's
    /// Raft, if it started, is shut down again).
    pub async fn create_group<LS, SM>(
        &self,
        group: GroupId,
        config: Arc<Config>,
        log_store: LS,
        state_machine: SM,
    ) -> Result<Raft<C>, HostError>
    where
        LS: RaftLogStorage<C>,
        SM: RaftStateMachine<C>,
    {
        let inner = &self.inner;
        if config.election_timeout_min <= inner.config.suspect_after {
            return Err(HostError::Config(format!(
                "group {group}: election_timeout_min ({:?}) must be longer than the host's suspect_after ({:?})",
                config.election_timeout_min, inner.config.suspect_after
            )));
        }
        if inner.config.quiesce && !(config.enable_pre_vote && config.enable_check_quorum) {
            // Without stickiness a quiesced follower woken by a suspicion would depose a live
            // leader; without check-quorum a leader never checks whether it may quiesce.
            return Err(HostError::Config(format!(
                "group {group}: quiescence needs enable_pre_vote and enable_check_quorum"
            )));
        }
        // Checked again under the groups' lock below; here so that a host shut down starts no
        // Raft on the caller's storage (which may be closed by now).
        if inner.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(HostError::ShutDown);
        }
        if self.group(group).is_some() {
            return Err(HostError::GroupExists(group));
        }
        let network = BeatTargets { inner: inner.network.group(group), liveness: inner.liveness.clone() };
        let link = HostLink::new(inner.liveness.clone(), group, inner.config.quiesce);
        let raft = Raft::new_hosted(inner.id, config, network, log_store, state_machine, link)
            .instrument(info_span!("group", group))
            .await
            .map_err(|fatal| HostError::Fatal { group, fatal })?;
        let inserted = {
            let mut groups = inner.groups.write().unwrap_or_else(|p| p.into_inner());
            if inner.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                Err(HostError::ShutDown)
            } else if let std::collections::btree_map::Entry::Vacant(vacant) = groups.entry(group) {
                vacant.insert(Hosted { raft: raft.clone() });
                Ok(())
            } else {
                // Created concurrently by another call: keep that one.
                Err(HostError::GroupExists(group))
            }
        };
        if let Err(e) = inserted {
            let _ = raft.shutdown().await;
            return Err(e);
        }
        debug!(group, "group created");
        Ok(raft)
    }

    /// The Raft of group `group`, if this host runs it. A transport's server routes every
    /// request for the group here.
    pub fn group(&self, group: GroupId) -> Option<Raft<C>> {
        self.inner.groups.read().unwrap_or_else(|p| p.into_inner()).get(&group).map(|h| h.raft.clone())
    }

    /// The ids of the groups this host runs, in no particular order.
    pub fn group_ids(&self) -> Vec<GroupId> {
        self.inner.groups.read().unwrap_or_else(|p| p.into_inner()).keys().copied().collect()
    }

    /// How many groups this host runs.
    pub fn len(&self) -> usize {
        self.inner.groups.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether this host runs no group.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stop group `group` on this node and forget it: its Raft shuts down (what it holds in
    /// its log store and state machine stays theirs). To remove a group from the cluster,
    /// remove this node from its membership first; removing a group on every node at once
    /// ends it. The host forgets the group once its Raft has stopped: a call dropped half-way
    /// leaves it to a later `remove_group` or [`shutdown`](Self::shutdown), which wait for it,
    /// and its id cannot be created again until then.
    ///
    /// # Errors
    /// [`HostError::NoSuchGroup`] if the host does not run it; [`HostError::Fatal`] if its Raft
    /// had stopped on an error.
    pub async fn remove_group(&self, group: GroupId) -> Result<(), HostError> {
        // Left in the map until it has stopped, as in `shutdown`: a call dropped half-way (a
        // caller's timeout) leaves it for a later `remove_group` or `shutdown` to wait for,
        // and `create_group` of its id refused meanwhile (found in review: taken out first,
        // nothing waited for it, and a group of the same id could start beside it).
        let raft = self.inner.groups.read().unwrap_or_else(|p| p.into_inner()).get(&group).map(|h| h.raft.clone());
        let Some(raft) = raft else { return Err(HostError::NoSuchGroup(group)) };
        debug!(group, "removing group");
        let stopped = raft.shutdown().await;
        self.inner.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&group);
        // After the Raft stopped: a leadership it released while stopping is forgotten too.
        self.inner.liveness.forget_group(group);
        match stopped {
            Ok(()) | Err(Fatal::Stopped) => Ok(()),
            Err(fatal) => Err(HostError::Fatal { group, fatal }),
        }
    }

    /// A peer's beat arrived: a transport's server calls this for every beat it receives.
    pub fn receive_beat(&self, beat: NodeBeat<C>) {
        let groups = self.inner.groups.read().unwrap_or_else(|p| p.into_inner());
        let heard = self.inner.liveness.heard(&beat, Instant::now(), |g| groups.contains_key(&g));
        for group in heard.released {
            if let Some(hosted) = groups.get(&group) {
                hosted.raft.host_released();
            }
        }
        for (group, term) in heard.wake {
            if let Some(hosted) = groups.get(&group) {
                hosted.raft.host_wake_leader(term);
            }
        }
    }

    /// Whether this host hears `node`: its beats arrive, and it is not suspected.
    pub fn is_live(&self, node: &C::NodeId) -> bool {
        self.inner.liveness.is_live(node)
    }

    /// Shut every group down, then stop beating.
    ///
    /// The beats go on while the groups stop, and one last beat follows: a group that led with
    /// its followers quiesced releases that leadership as it stops, and the releases ride on
    /// the beats, so the followers wake at once instead of when their hosts suspect this node
    /// (`suspect_after` after its last beat). Past `suspect_after` with groups still stopping (a
    /// store stuck in a call), the beats stop without that last beat, so that the peers
    /// suspect this node and wake the groups quiesced under it. A second call, from any clone,
    /// waits for the first (so, if the first waits for a group stuck in a storage call, for as
    /// long); after the first, the host creates no group. A call dropped half-way has stopped
    /// the beats and told the groups to stop; a later call waits for them.
    ///
    /// # Errors
    /// The first group whose Raft had stopped on an error (all are shut down regardless).
    pub async fn shutdown(&self) -> Result<(), HostError> {
        let _one_at_a_time = self.inner.shutting_down.lock().await;
        // If this future is dropped half-way (a caller's timeout), the beats stop with it.
        let stop_beats = StopBeats(&self.inner);
        // Left in the map until they have stopped: a call dropped half-way (a caller's
        // timeout) leaves them to the next call, which waits for them again instead of
        // finding none and returning at once (found in review).
        let groups: Vec<(GroupId, Raft<C>)> = {
            let groups = self.inner.groups.read().unwrap_or_else(|p| p.into_inner());
            self.inner.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
            groups.iter().map(|(group, hosted)| (*group, hosted.raft.clone())).collect()
        };
        // All at once: one after another, ten thousand groups would outlast `suspect_after`.
        let groups_down = async move {
            let stopped = futures_util::future::join_all(
                groups.into_iter().map(|(group, raft)| async move { (group, raft.shutdown().await) }),
            )
            .await;
            self.inner.groups.write().unwrap_or_else(|p| p.into_inner()).clear();
            stopped.into_iter().find_map(|(group, stopped)| match stopped {
                Ok(()) | Err(Fatal::Stopped) => None,
                Err(fatal) => Some(HostError::Fatal { group, fatal }),
            })
        };
        let mut groups_down = std::pin::pin!(groups_down);
        // A group whose task is stuck in a storage call does not stop: past `suspect_after` the
        // beats stop anyway, so that the peers suspect this node and wake the groups quiesced
        // under a leadership that cannot say it ended (found in review).
        let suspect_after = self.inner.config.suspect_after;
        let first_error = match tokio::time::timeout(suspect_after, groups_down.as_mut()).await {
            Ok(first_error) => first_error,
            Err(_) => {
                tracing::warn!(id = %self.inner.id, ?suspect_after, "groups still stopping; stopping the beats first");
                stop_beats.stop();
                groups_down.await
            }
        };
        if let Some(task) = stop_beats.stop() {
            drop(task);
            let inner = &self.inner;
            send_beats(inner.liveness.clone(), inner.network.clone(), inner.config.beat_interval, Instant::now()).await;
        }
        info!(id = %self.inner.id, "group host stopped");
        first_error.map_or(Ok(()), Err)
    }
}

/// Stops a host's beat loop when told to, or when dropped.
struct StopBeats<'a, C: RaftTypeConfig, N: HostNetwork<C>>(&'a Inner<C, N>);

impl<C: RaftTypeConfig, N: HostNetwork<C>> StopBeats<'_, C, N> {
    /// Abort the beat loop if it still runs; its (aborted) handle if it did.
    fn stop(&self) -> Option<JoinHandle<()>> {
        let task = self.0.beats.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        task.abort();
        Some(task)
    }
}

impl<C: RaftTypeConfig, N: HostNetwork<C>> Drop for StopBeats<'_, C, N> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How many ticks the host's own lateness is remembered for.
const LAG_WINDOW: usize = 16;

/// Beat to every peer the groups talk to, every `interval`; suspect the silent ones.
async fn beat_loop<C: RaftTypeConfig, N: HostNetwork<C>>(
    liveness: Arc<Liveness<C>>,
    network: Arc<N>,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // How late the last ticks fired: the process's own lateness (see `Liveness::sweep`).
    let mut lags = std::collections::VecDeque::with_capacity(LAG_WINDOW);
    // Owned by the loop, so that they stop with it: a send still in flight when `shutdown`
    // stops the beats would otherwise deliver a beat after the host's final one.
    let mut sends = tokio::task::JoinSet::new();
    loop {
        let due = tick.tick().await;
        while sends.try_join_next().is_some() {}
        // Suspect on time, whatever the sends below do: a hung peer must not delay the verdict
        // on the others.
        let now = Instant::now();
        if lags.len() == LAG_WINDOW {
            lags.pop_front();
        }
        lags.push_back(now.saturating_duration_since(due));
        liveness.sweep(now, lags.iter().copied().max().unwrap_or_default());
        // The sends of one tick run beside the next tick; each is bounded by one interval, so
        // at most two ticks' sends are ever in flight.
        sends.spawn(send_beats(liveness.clone(), network.clone(), interval, now));
    }
}

/// Send this host's beat of `now` to every peer its groups talk to, each send bounded by
/// `interval`, and record which peers it reached.
async fn send_beats<C: RaftTypeConfig, N: HostNetwork<C>>(
    liveness: Arc<Liveness<C>>,
    network: Arc<N>,
    interval: Duration,
    now: Instant,
) {
    let beat = liveness.beat(now);
    let targets = liveness.targets();
    let option = RPCOption::new(interval);
    let sends = targets.iter().map(|(id, node)| {
        let send = network.send_beat(*id, node, beat.clone(), option);
        let liveness = &liveness;
        async move {
            let sent = match tokio::time::timeout(interval, send).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    debug!(target = %id, error = %e, "beat not sent");
                    false
                }
                Err(_) => {
                    debug!(target = %id, "beat timed out");
                    false
                }
            };
            liveness.reached(id, sent);
        }
    });
    futures_util::future::join_all(sends).await;
}

/// A group's network factory, as the host hands it to the group's Raft: it makes the host beat
/// to every node the group talks to.
struct BeatTargets<C: RaftTypeConfig, F> {
    inner: F,
    liveness: Arc<Liveness<C>>,
}

impl<C: RaftTypeConfig, F: RaftNetworkFactory<C>> RaftNetworkFactory<C> for BeatTargets<C, F> {
    type Network = F::Network;

    async fn new_client(&mut self, target: C::NodeId, node: &C::Node) -> Self::Network {
        self.liveness.add_target(target, node);
        self.inner.new_client(target, node).await
    }
}
