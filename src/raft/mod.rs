//! [`Raft`]: the handle an application holds to one Raft node.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::{oneshot, watch};
use tracing::field::Empty;
use tracing::{Instrument, debug, debug_span, error, info_span};

use crate::ServerState;
use crate::config::Config;
use crate::core::{
    ApiMsg, Clock, FlushNotifier, HostLink, Notification, RaftCore, RpcMsg, StateMachineWorker, Watches, WriteMsg,
    load_state, queue,
};
use crate::engine::{Engine, EngineConfig, LogIOId};
use crate::error::{ClientWriteError, Fatal, InitializeError, LinearizableReadError, RaftError, TransferLeaderError};
use crate::metrics::{RaftMetrics, Wait};
use crate::storage::{RaftLogStorage, RaftStateMachine};
use crate::types::{
    AppendEntriesRequest, AppendEntriesResponse, ChangeMembers, DisplayOption, EntryPayload, InstallSnapshotRequest,
    InstallSnapshotResponse, LogId, Membership, ReadPolicy, TransferLeaderRequest, VoteRequest, VoteResponse,
};
use crate::{RaftNetworkFactory, RaftTypeConfig};

/// The result of a successful [`Raft::client_write`]: where the entry was committed and what the
/// state machine answered.
pub struct ClientWriteResponse<C: RaftTypeConfig> {
    /// The id of the entry that carried the write.
    pub log_id: LogId<C>,
    /// The state machine's response to applying it.
    pub data: C::R,
}

impl<C: RaftTypeConfig> fmt::Debug for ClientWriteResponse<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientWriteResponse").field("log_id", &self.log_id).field("data", &self.data).finish()
    }
}

/// The result of a completed [`Raft::change_membership`]: the committed configuration.
pub struct ChangeMembershipResponse<C: RaftTypeConfig> {
    /// The entry that carries the committed configuration (`None` only before initialization).
    pub log_id: Option<LogId<C>>,
    /// The committed configuration.
    pub membership: Membership<C>,
}

impl<C: RaftTypeConfig> fmt::Debug for ChangeMembershipResponse<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeMembershipResponse")
            .field("log_id", &self.log_id)
            .field("membership", &self.membership)
            .finish()
    }
}

/// The answer to [`Raft::get_read_index`]: once the state machine has applied `read_log_id`,
/// reading it is linearizable.
pub struct ReadIndex<C: RaftTypeConfig> {
    /// The log id a read must see applied.
    pub read_log_id: Option<LogId<C>>,
    /// What the leader had applied when it answered.
    pub applied: Option<LogId<C>>,
}

impl<C: RaftTypeConfig> fmt::Debug for ReadIndex<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadIndex").field("read_log_id", &self.read_log_id).field("applied", &self.applied).finish()
    }
}

struct RaftInner<C: RaftTypeConfig> {
    id: C::NodeId,
    config: Arc<Config>,
    api_tx: queue::Sender<ApiMsg<C>>,
    write_tx: queue::Sender<WriteMsg<C>>,
    rpc_tx: queue::Sender<RpcMsg<C>>,
    /// For the host of a group of many: a peer released this group's leadership.
    notify_tx: queue::UnboundedSender<Notification<C>>,
    metrics_rx: watch::Receiver<RaftMetrics<C>>,
    shutdown_tx: Mutex<Option<oneshot::Sender<()>>>,
    /// The end of the node's task, for every `shutdown` call: shared, so that a call dropped
    /// half-way (a caller's timeout) leaves it to the next one, which waits for the task
    /// too, instead of returning at once while the task still runs (found in review).
    core: CoreEnd,
}

/// How the node's task ended, awaited by any number of callers.
type CoreEnd = futures_util::future::Shared<futures_util::future::BoxFuture<'static, Result<(), Fatal>>>;

/// A handle to one Raft node. Cheap to clone; every clone drives the same node.
///
/// Built by [`Raft::new`], which loads the node's state from its storage and spawns its tasks
/// on the current tokio runtime. The node runs until [`Raft::shutdown`] or until every handle is
/// dropped.
///
/// The application's server calls the RPC entry points ([`append_entries`](Self::append_entries),
/// [`stream_append`](Self::stream_append), [`vote`](Self::vote)) with requests received from other
/// nodes' [`RaftNetwork`](crate::RaftNetwork) clients.
pub struct Raft<C: RaftTypeConfig> {
    inner: Arc<RaftInner<C>>,
}

impl<C: RaftTypeConfig> Clone for Raft<C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<C: RaftTypeConfig> Raft<C> {
    /// Start node `id`: load its state from `log_store` and `state_machine`, then spawn its
    /// tasks. A node with no state waits to be [`initialize`](Self::initialize)d or to be
    /// contacted by a leader. When it returns, [`metrics`](Self::metrics) already shows the
    /// loaded state (term, vote, log, membership, applied id).
    ///
    /// # Errors
    /// [`Fatal::StorageError`] if the state could not be loaded; [`Fatal::Invariant`] if the
    /// config is invalid or the storage is inconsistent.
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::sync::Arc;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use quorate::testing::{MemLogStore, MemStateMachine, Router};
    /// use quorate::{Config, Raft};
    ///
    /// // The test kit's in-memory storage and network; your own implementations go here.
    /// let router = Router::new();
    /// let config = Arc::new(Config::default());
    /// let raft = Raft::new(1, config, router.factory(1), MemLogStore::new(), MemStateMachine::new()).await?;
    /// router.add_node(1, raft.clone()); // so that peers can reach it
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub async fn new<N, LS, SM>(
        id: C::NodeId,
        config: Arc<Config>,
        network: N,
        log_store: LS,
        state_machine: SM,
    ) -> Result<Self, Fatal>
    where
        N: RaftNetworkFactory<C>,
        LS: RaftLogStorage<C>,
        SM: RaftStateMachine<C>,
    {
        Self::start(id, config, network, log_store, state_machine, Clock::default(), None).await
    }

    /// Start node `id` as [`Raft::new`] does, on a clock that runs `rate` times as fast as the
    /// runtime's (1.01: one percent fast). Every time this node reads — election deadlines,
    /// heartbeats, the leader lease, check-quorum — is on that clock, so a test can give the
    /// nodes of one cluster drifting clocks and check what [`ReadPolicy::LeaseRead`] assumes
    /// about drift. Test kit only.
    ///
    /// # Errors
    /// As [`Raft::new`].
    #[cfg(feature = "testing")]
    pub async fn new_with_clock_rate<N, LS, SM>(
        id: C::NodeId,
        config: Arc<Config>,
        network: N,
        log_store: LS,
        state_machine: SM,
        rate: f64,
    ) -> Result<Self, Fatal>
    where
        N: RaftNetworkFactory<C>,
        LS: RaftLogStorage<C>,
        SM: RaftStateMachine<C>,
    {
        Self::start(id, config, network, log_store, state_machine, Clock::with_rate(rate), None).await
    }

    /// Start a group of a [`GroupHost`](crate::multi::GroupHost): as [`Raft::new`], with the
    /// host's node liveness, which quiesces the group when `quiesce` is set.
    pub(crate) async fn new_hosted<N, LS, SM>(
        id: C::NodeId,
        config: Arc<Config>,
        network: N,
        log_store: LS,
        state_machine: SM,
        host: HostLink<C>,
    ) -> Result<Self, Fatal>
    where
        N: RaftNetworkFactory<C>,
        LS: RaftLogStorage<C>,
        SM: RaftStateMachine<C>,
    {
        Self::start(id, config, network, log_store, state_machine, Clock::default(), Some(host)).await
    }

    async fn start<N, LS, SM>(
        id: C::NodeId,
        config: Arc<Config>,
        network: N,
        mut log_store: LS,
        mut state_machine: SM,
        clock: Clock,
        host: Option<HostLink<C>>,
    ) -> Result<Self, Fatal>
    where
        N: RaftNetworkFactory<C>,
        LS: RaftLogStorage<C>,
        SM: RaftStateMachine<C>,
    {
        // `validate` changes nothing: the caller's Arc is kept, so that the groups of a host that
        // share one config share one copy.
        Config::clone(&config).validate().map_err(|e| Fatal::Invariant(e.to_string()))?;
        let span = info_span!("raft", %id, cluster = %config.cluster_name);
        let state = load_state(id, &mut log_store, &mut state_machine).instrument(span).await?;

        // Different nodes get different timeouts; a given node and seed the same every run. So
        // do the groups of a host: they share one `Config`, and groups whose histories drew the
        // same numbers from one seed would time out in step, thousands at the same instant.
        let group = host.as_ref().map(|h| h.group);
        let seed = {
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(&(id, config.election_seed.unwrap_or(0)), &mut h);
            if let Some(group) = group {
                std::hash::Hash::hash(&group, &mut h);
            }
            std::hash::Hasher::finish(&h)
        };
        let engine_config = EngineConfig {
            id,
            election_timeout_min: config.election_timeout_min,
            election_timeout_max: config.election_timeout_max,
            seed,
            snapshot_policy: config.snapshot_policy,
            log_to_keep: config.max_in_snapshot_log_to_keep,
            pre_vote: config.enable_pre_vote,
            check_quorum: config.enable_check_quorum,
            lease: config.election_timeout_min.saturating_sub(config.max_clock_drift),
            quiesce: host.as_ref().is_some_and(|h| h.quiesce),
            rank_salt: group.unwrap_or(0),
        };
        let submitted = LogIOId { seq: 0, vote: state.vote, last_log_id: state.last_log_id() };
        let engine = Engine::new(engine_config, state);

        // Queues that allocate nothing until used (see `core::queue`): an idle group of a host
        // pays for none of them.
        let pending = usize::try_from(config.max_pending_requests).unwrap_or(usize::MAX);
        let (api_tx, api_rx) = queue::bounded(pending);
        let (write_tx, write_rx) = queue::bounded(pending);
        let (rpc_tx, rpc_rx) = queue::bounded(pending);
        let (notify_tx, notify_rx) = queue::unbounded();
        let (sm_tx, sm_rx) = queue::unbounded();
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        // The metrics show the loaded state from the start: a caller that reads them as soon
        // as `new` returns sees the node's term, log and membership, not a blank node (found
        // by a conformance suite written from the docs).
        let mut loaded = RaftMetrics::from_engine(
            &engine,
            clock.now(),
            crate::core::Stalls::default(),
            crate::metrics::Queues::default(),
            0,
        );
        // The role the task starts in (`Engine::startup` takes it first).
        loaded.state = engine.follower_or_learner();
        let (metrics_tx, metrics_rx) = watch::channel(loaded);
        let watches = Watches::new(metrics_tx);

        let sm_worker = StateMachineWorker {
            id,
            state_machine,
            log_reader: log_store.get_log_reader().await,
            rx: sm_rx,
            notify_tx: notify_tx.clone(),
            building: Vec::new(),
        };
        let sm = tokio::spawn(sm_worker.run());
        // The Raft task closes the state machine task's queue when it ends, however it ends.
        let sm_closer = sm_tx.clone();

        let core = RaftCore {
            config: config.clone(),
            engine,
            network,
            log_store,
            sm_tx,
            api_rx,
            write_rx,
            rpc_rx,
            notify_rx,
            flush_receiver: Arc::new(FlushNotifier(notify_tx.clone())),
            notify_tx: notify_tx.clone(),
            shutdown_rx,
            watches,
            responders: VecDeque::new(),
            parked_append_responses: VecDeque::new(),
            replications: crate::engine::TargetMap::new(),
            submitted,
            membership_waiter: None,
            receiving: None,
            installing: None,
            pending_reads: Vec::new(),
            pending_transfers: Vec::new(),
            progress: crate::core::ProgressWatch::new(),
            io_stall_deadline: None,
            clock,
            known_leader: None,
            leader_changes: 0,
            election: Default::default(),
            host,
            quiesce_check: None,
        };
        // A panic in the Raft task (a user's store or state machine, or a bug) unwinds past
        // `RaftCore::run`, which tells the host when a leadership that quiesced its followers
        // ends. Without that the followers, quiesced under this node, would take every beat
        // of its host for their leader's and never elect (found in review): the host is told
        // here instead, with the last term the node published, and the panic goes on.
        let on_panic = core.host.as_ref().map(|h| (h.liveness.clone(), h.group, metrics_rx.clone()));
        let core = tokio::spawn(async move {
            let ended = std::panic::AssertUnwindSafe(core.run()).catch_unwind().await;
            sm_closer.close();
            match ended {
                Ok(result) => result,
                Err(panic) => {
                    if let Some((liveness, group, metrics)) = on_panic {
                        let term = metrics.borrow().current_term;
                        error!(group, term, "the Raft task panicked; releasing any quiesced leadership");
                        liveness.release(group, term, tokio::time::Instant::now());
                    }
                    std::panic::resume_unwind(panic)
                }
            }
        });

        Ok(Self {
            inner: Arc::new(RaftInner {
                id,
                config,
                api_tx,
                write_tx,
                rpc_tx,
                notify_tx,
                metrics_rx,
                shutdown_tx: Mutex::new(Some(shutdown_tx)),
                core: async move {
                    let core = core.await;
                    // Then the state machine task, which stops after its current chunk (see
                    // `core::sm_worker`): a node restarted on the same state machine after
                    // `shutdown` returns must be the only one applying to it.
                    let sm = sm.await;
                    core.map_err(|_| Fatal::Panicked)??;
                    sm.map_err(|_| Fatal::Panicked)
                }
                .boxed()
                .shared(),
            }),
        })
    }

    /// A peer's beat released this group's leadership there: wake if quiesced under it.
    pub(crate) fn host_released(&self) {
        // Fails only once the node has stopped; nothing is quiesced then.
        let _ = self.inner.notify_tx.send(Notification::HostReleased);
    }

    /// A follower on a peer asked, through its host's beats, that this group's leader at
    /// `term` heartbeat again: wake if this node is that leader, quiesced.
    pub(crate) fn host_wake_leader(&self, term: u64) {
        // Fails only once the node has stopped; nothing is quiesced then.
        let _ = self.inner.notify_tx.send(Notification::HostWakeLeader { term });
    }

    /// This node's id.
    pub fn id(&self) -> C::NodeId {
        self.inner.id
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// Start a new cluster whose voters are `members`.
    ///
    /// Call it on one node of a new cluster (or on every node, with the same `members`). The
    /// node appends the membership as the first log entry and starts an election as soon as
    /// that entry is durable (a crash before then leaves the node as it was, to be initialized
    /// again), unless it has meanwhile voted or heard from a leader: then the cluster has
    /// started without it and it follows, as any member does. The other members join when the
    /// leader reaches them. That entry's log id is
    /// index 0 of term 0 with `C::NodeId::default()` as its leader: no node leads term 0, the
    /// id names the initial configuration, not an elected leader (a checker of "one leader per
    /// term" should skip term 0).
    ///
    /// Called on every node, only the first call to reach an empty node starts anything: a
    /// node the new leader reached first has a log and answers `NotAllowed`, which, for a
    /// caller that initializes every node with the same `members`, means the cluster is
    /// already started: treat it as success.
    ///
    /// # Errors
    /// [`InitializeError::NotAllowed`] if the node already has a log or a vote;
    /// [`InitializeError::NotAVoter`] if this node is not in `members`.
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// // Once per cluster, on one node: every initial voter and its address.
    /// raft.initialize(BTreeMap::from([(1, BasicNode::new("10.0.0.1:7001"))])).await?;
    /// raft.wait(None).state(ServerState::Leader, "a one-voter cluster elects itself").await?;
    ///
    /// // A node that has state refuses, so calling it on every start is harmless.
    /// assert!(raft.initialize(BTreeMap::from([(1, BasicNode::new("10.0.0.1:7001"))])).await.is_err());
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub async fn initialize(&self, members: BTreeMap<C::NodeId, C::Node>) -> Result<(), RaftError<InitializeError<C>>> {
        let membership = Membership::new_voters(members).map_err(|e| RaftError::APIError(e.into()))?;
        let (tx, rx) = oneshot::channel();
        self.send_api(ApiMsg::Initialize { membership: Box::new(membership), tx }).await?;
        rx.await.map_err(|_| self.stopped_error())?.map_err(RaftError::APIError)
    }

    /// Propose `data` to the cluster and wait until it is committed and applied.
    ///
    /// Only the leader accepts writes. Writes queued while the leader was busy are appended and
    /// replicated as one batch, so many concurrent callers share the cost of each log write.
    /// If the write queue is full (`Config::max_pending_requests`), or the leader already has
    /// `Config::max_pending_writes` writes in progress, this waits for room;
    /// [`try_client_write`](Self::try_client_write) fails fast instead once the queue is full.
    ///
    /// **It has no deadline of its own.** A proposed write stays pending when this node stops
    /// leading: it is answered only once this node applies the entry at its index (its own,
    /// or a newer leader's that replaced it), removes the entry from its log, learns that it
    /// was removed from the cluster, or stops. A deposed leader cut off from the others
    /// learns none of that until it hears from them again, so the call can wait
    /// indefinitely. Wrap it in a timeout of your own, and treat a timeout as an unknown
    /// outcome, like [`ClientWriteError::OutcomeUnknown`]: the write may still commit.
    ///
    /// # Errors
    /// - [`ClientWriteError::ForwardToLeader`]: not the leader; nothing was proposed.
    /// - [`ClientWriteError::Discarded`]: proposed, then removed by a newer leader once it could
    ///   no longer commit; it will never apply.
    /// - [`ClientWriteError::OutcomeUnknown`]: proposed, then lost by this node before it knew
    ///   whether it committed (superseded by a snapshot from the leader, replaced by a newer
    ///   leader's entries that had not committed yet, or this node was removed); it may or may
    ///   not be applied.
    /// - [`Fatal`]: the node stopped; whether the write applies is unknown.
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw the write: once queued it may still commit.
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// # raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
    /// # raft.wait(None).state(ServerState::Leader, "elected").await?;
    /// let resp = raft.client_write(Request::set("k", "v1")).await?;
    /// // Committed and applied: the state machine answered (here, with the previous value).
    /// assert_eq!(resp.data.value, None);
    /// assert_eq!(sm.data()["k"], "v1");
    ///
    /// let resp = raft.client_write(Request::set("k", "v2")).await?;
    /// assert_eq!(resp.data.value.as_deref(), Some("v1"));
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub async fn client_write(&self, data: C::D) -> Result<ClientWriteResponse<C>, RaftError<ClientWriteError<C>>> {
        self.write_one(data, Admission::Wait).await
    }

    /// Propose many writes in one call and wait until each is answered; the answers come back
    /// in the order of `data`.
    ///
    /// The batch is admitted whole or not at all: it waits until the write queue has room for
    /// every entry (as [`client_write`](Self::client_write) waits for room for one), and fails
    /// with [`ClientWriteError::Overloaded`] — nothing proposed — if it is larger than the
    /// whole queue (`Config::max_pending_requests`). Once admitted, its entries are proposed in
    /// order, in as many log appends as the leader's bounds allow (`Config::max_append_batch`,
    /// `Config::max_pending_writes`), each admitted against the same bounds as a single
    /// write. Each entry then has its own outcome, exactly as if it had been written alone: a
    /// leadership change in the middle of a batch can leave its first entries `Discarded`,
    /// `OutcomeUnknown` or applied, and its later ones refused with `ForwardToLeader` (never
    /// proposed).
    ///
    /// # Errors
    /// The outer `Err`: [`ClientWriteError::Overloaded`] if the batch can never fit the queue;
    /// [`Fatal`] if the node stopped before the batch was queued. Each inner result is what
    /// [`client_write`](Self::client_write) would have returned for that entry.
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw the entries already queued.
    pub async fn client_write_many<I>(
        &self,
        data: I,
    ) -> Result<Vec<ClientWriteResult<C>>, RaftError<ClientWriteError<C>>>
    where
        I: IntoIterator<Item = C::D>,
        I::IntoIter: ExactSizeIterator,
    {
        self.write_many(data, Admission::Wait).await
    }

    /// Like [`client_write_many`](Self::client_write_many), but fails at once with
    /// [`ClientWriteError::Overloaded`] — nothing proposed — unless the write queue has room
    /// for the whole batch now.
    ///
    /// # Errors
    /// As [`client_write_many`](Self::client_write_many).
    pub async fn try_client_write_many<I>(
        &self,
        data: I,
    ) -> Result<Vec<ClientWriteResult<C>>, RaftError<ClientWriteError<C>>>
    where
        I: IntoIterator<Item = C::D>,
        I::IntoIter: ExactSizeIterator,
    {
        self.write_many(data, Admission::FailFast).await
    }

    /// Admit the whole batch (waiting for room, or not), then queue and answer it.
    async fn write_many<I>(
        &self,
        data: I,
        admission: Admission,
    ) -> Result<Vec<ClientWriteResult<C>>, RaftError<ClientWriteError<C>>>
    where
        I: IntoIterator<Item = C::D>,
        I::IntoIter: ExactSizeIterator,
    {
        let data = data.into_iter();
        let n = data.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let permits = match admission {
            Admission::Wait if n > self.inner.config.max_pending_requests as usize => {
                return Err(RaftError::APIError(ClientWriteError::Overloaded));
            }
            Admission::Wait => self.inner.write_tx.reserve_many(n).await.map_err(|_| self.stopped_error())?,
            Admission::FailFast => match self.inner.write_tx.try_reserve_many(n) {
                Ok(p) => p,
                Err(queue::TrySendError::Full(())) => {
                    return Err(RaftError::APIError(ClientWriteError::Overloaded));
                }
                Err(queue::TrySendError::Closed(())) => return Err(self.stopped_error()),
            },
        };
        Ok(self.send_batch(permits, data.take(n)).await)
    }

    /// Queue one write per permit (`data` has no more items than `permits` has places), in
    /// order, and collect every answer.
    async fn send_batch(
        &self,
        mut permits: queue::Permits<'_, WriteMsg<C>>,
        data: impl Iterator<Item = C::D>,
    ) -> Vec<ClientWriteResult<C>> {
        let span = debug_span!("client_write_many", id = %self.inner.id, entries = data.size_hint().0);
        let answers: Vec<_> = data
            .map(|d| {
                let (tx, rx) = oneshot::channel();
                // A write that cannot be queued (the node stopped) is handed back and dropped
                // with its responder: its answer below is then the stopped error.
                let _ = permits.send(WriteMsg { payload: EntryPayload::Normal(d), tx });
                rx
            })
            .collect();
        drop(permits);
        let mut results = Vec::with_capacity(answers.len());
        for rx in answers {
            results.push(match rx.instrument(span.clone()).await {
                Ok(r) => r.map_err(RaftError::APIError),
                Err(_) => Err(self.stopped_error()),
            });
        }
        debug!(parent: &span, answered = results.len(), "batch answered");
        results
    }

    /// Change the cluster's membership, and wait until the new configuration is committed.
    ///
    /// A change of voters goes through joint consensus (old and new voters both needed for
    /// every decision) and then the new voters alone; this returns when the final
    /// configuration is committed. `retain` keeps voters that the change removes as learners.
    /// A leader that the change removes keeps leading until the final configuration commits,
    /// then steps down.
    ///
    /// A node removed without `retain` is not stopped by quorate: it keeps running as a
    /// [`ServerState::Learner`](crate::ServerState::Learner) that nobody replicates to. Once
    /// its metrics' `committed_membership` no longer names it, the application may shut it
    /// down.
    ///
    /// New voters count in every quorum from the moment the joint configuration is appended,
    /// whether they have caught up or not: a voter added while far behind (or still receiving
    /// a snapshot) stalls every write until it catches up, and adding as many lagging voters
    /// as there are old ones stalls the group (dissertation §4.2.1). Add each new node with
    /// [`add_learner`](Self::add_learner)`(.., blocking = true)` first, which returns once it
    /// has caught up, as the example below does.
    ///
    /// **Another leader may finish the change.** If this node stops leading after the joint
    /// configuration is appended, and the joint configuration commits anyway, whichever node
    /// leads next (this one too, if elected again) appends the final configuration itself. It
    /// does not know `retain`: it keeps every node of the joint configuration, so voters that
    /// the change removes stay in the membership as learners, whatever `retain` said (remove
    /// them with a second change). This call still returns `Ok` once that final configuration
    /// is committed, with it as the response's `membership`: check the membership it returns
    /// rather than assume the one asked for.
    ///
    /// Like [`client_write`](Self::client_write), it has no deadline of its own: a change
    /// proposed by a leader that is then cut off waits until this node learns what became of
    /// it. Wrap it in a timeout of your own; a timeout leaves the outcome unknown.
    ///
    /// # Errors
    /// - [`ClientWriteError::ForwardToLeader`]: not the leader; nothing was proposed.
    /// - [`ClientWriteError::MembershipChangeInProgress`]: another change is not committed yet,
    ///   or this leader was just elected and no entry of its term has committed (see the
    ///   variant); nothing was proposed.
    /// - [`ClientWriteError::InvalidMembership`]: the result would be invalid (no voters, a
    ///   voter that is not a member, removing a voter); nothing was proposed.
    /// - [`ClientWriteError::Discarded`]: proposed, then discarded by a newer leader; it will
    ///   never take effect.
    /// - [`ClientWriteError::OutcomeUnknown`]: proposed, then replaced in this node's log by a
    ///   newer leader's entries before they committed; another node may still commit it.
    /// - [`Fatal`]: the node stopped; the outcome is unknown.
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// # raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
    /// # raft.wait(None).state(ServerState::Leader, "elected").await?;
    /// use std::collections::BTreeSet;
    /// use quorate::ChangeMembers;
    ///
    /// // Start node 2, add it as a learner (caught up), then make it a voter.
    /// let raft2 = Raft::new(2, Arc::new(Config::default()), router.factory(2), MemLogStore::new(), MemStateMachine::new()).await?;
    /// router.add_node(2, raft2.clone());
    /// raft.add_learner(2, BasicNode::new("n2"), true).await?;
    /// let done = raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([2])), false).await?;
    /// assert_eq!(done.membership.voter_ids(), BTreeSet::from([1, 2]));
    /// # raft2.shutdown().await?;
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub async fn change_membership(
        &self,
        changes: ChangeMembers<C>,
        retain: bool,
    ) -> Result<ChangeMembershipResponse<C>, RaftError<ClientWriteError<C>>> {
        let (tx, rx) = oneshot::channel();
        self.send_api(ApiMsg::ChangeMembership { changes: Box::new(changes), retain, tx }).await?;
        match rx.await {
            Ok(r) => r.map_err(RaftError::APIError),
            Err(_) => Err(self.stopped_error()),
        }
    }

    /// Add `id`, reachable as `node`, as a learner: it receives the log but does not vote.
    ///
    /// With `blocking`, wait until the learner's log has caught up with the leader's as of
    /// this call, so that promoting it to voter next does not stall commits. The wait also
    /// ends when this node stops leading, and the call then still returns `Ok`, though the
    /// learner may not have caught up. Before promoting the learner, check in this node's
    /// [metrics](Self::metrics) that it still leads (`state`), and how far the learner's log
    /// reached (its entry in `replication`).
    ///
    /// # Errors
    /// As [`change_membership`](Self::change_membership); and [`Fatal`] if the node stopped
    /// while it waited for the learner.
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// # raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
    /// # raft.wait(None).state(ServerState::Leader, "elected").await?;
    /// let raft2 = Raft::new(2, Arc::new(Config::default()), router.factory(2), MemLogStore::new(), MemStateMachine::new()).await?;
    /// router.add_node(2, raft2.clone());
    ///
    /// // blocking = true: return once node 2 holds the leader's log as of the call.
    /// let done = raft.add_learner(2, BasicNode::new("n2"), true).await?;
    /// assert!(done.membership.get_node(&2).is_some());
    /// assert!(!done.membership.is_voter(&2));
    /// # raft2.shutdown().await?;
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub async fn add_learner(
        &self,
        id: C::NodeId,
        node: C::Node,
        blocking: bool,
    ) -> Result<ChangeMembershipResponse<C>, RaftError<ClientWriteError<C>>> {
        let target = self.inner.metrics_rx.borrow().last_log_id;
        let resp = self.change_membership(ChangeMembers::AddNodes([(id, node)].into()), true).await?;
        if blocking {
            let mut rx = self.inner.metrics_rx.clone();
            let caught_up = rx
                .wait_for(|m| {
                    m.state != ServerState::Leader
                        || m.replication.as_ref().is_some_and(|r| r.get(&id).copied().flatten() >= target)
                })
                .await;
            if caught_up.is_err() {
                return Err(self.stopped_error());
            }
        }
        Ok(resp)
    }

    /// Like [`client_write`](Self::client_write), but fail at once with
    /// [`ClientWriteError::Overloaded`] instead of waiting when the write queue is full.
    ///
    /// # Errors
    /// As [`client_write`](Self::client_write), plus `Overloaded`: nothing was proposed; back
    /// off and retry, or shed the load.
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// # raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
    /// # raft.wait(None).state(ServerState::Leader, "elected").await?;
    /// use quorate::RaftError;
    /// use quorate::error::ClientWriteError;
    ///
    /// match raft.try_client_write(Request::set("k", "v")).await {
    ///     Ok(resp) => println!("committed at {}", resp.log_id),
    ///     Err(RaftError::APIError(ClientWriteError::Overloaded)) => {
    ///         // Nothing was proposed: back off, or tell the client to.
    ///     }
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub async fn try_client_write(&self, data: C::D) -> Result<ClientWriteResponse<C>, RaftError<ClientWriteError<C>>> {
        self.write_one(data, Admission::FailFast).await
    }

    /// Queue one write (waiting for room, or not) and wait for its answer, in a span of its own.
    async fn write_one(
        &self,
        data: C::D,
        admission: Admission,
    ) -> Result<ClientWriteResponse<C>, RaftError<ClientWriteError<C>>> {
        let span = write_span(self.inner.id);
        let result = async {
            let (tx, rx) = oneshot::channel();
            let msg = WriteMsg { payload: EntryPayload::Normal(data), tx };
            match admission {
                Admission::Wait => self.inner.write_tx.send(msg).await.map_err(|_| self.stopped_error())?,
                Admission::FailFast => match self.inner.write_tx.try_send(msg) {
                    Ok(()) => {}
                    Err(queue::TrySendError::Full(_)) => {
                        return Err(RaftError::APIError(ClientWriteError::Overloaded));
                    }
                    Err(queue::TrySendError::Closed(_)) => return Err(self.stopped_error()),
                },
            }
            match rx.await {
                Ok(r) => r.map_err(RaftError::APIError),
                Err(_) => Err(self.stopped_error()),
            }
        }
        .instrument(span.clone())
        .await;
        record_write(&span, &result);
        result
    }

    /// Handle an AppendEntries request from the leader; answer once the entries are durable.
    ///
    /// # Errors
    /// [`Fatal`] if this node has stopped.
    pub async fn append_entries(&self, req: AppendEntriesRequest<C>) -> Result<AppendEntriesResponse<C>, RaftError> {
        let rx = self.send_append(req).await?;
        rx.await.map_err(|_| self.stopped_error())
    }

    /// Handle a stream of AppendEntries requests from the leader: the server side of
    /// [`RaftNetwork::stream_append`](crate::RaftNetwork::stream_append).
    ///
    /// Requests are handed to the node in order as they arrive, without waiting for earlier
    /// ones to be durable, so the follower's disk and the network work in parallel. Responses
    /// come out in request order. At most `Config::max_in_flight_requests` requests are
    /// outstanding; the input is not read further until earlier ones are answered. The output
    /// ends after the first error.
    ///
    /// The output borrows nothing from `self` and lives as long as `input` does, so an
    /// in-process transport can hand over the leader's request stream itself, borrowed or not.
    pub fn stream_append<'s, S>(
        &self,
        input: S,
    ) -> impl Stream<Item = Result<AppendEntriesResponse<C>, RaftError>> + Send + 's
    where
        S: Stream<Item = AppendEntriesRequest<C>> + Send + 's,
    {
        let raft = self.clone();
        let window = self.inner.config.max_in_flight_requests as usize;
        input
            .then(move |req| {
                let raft = raft.clone();
                async move {
                    let rx = raft.send_append(req).await;
                    (raft, rx)
                }
            })
            .map(|(raft, rx)| async move {
                match rx {
                    Ok(rx) => rx.await.map_err(|_| raft.stopped_error()),
                    Err(e) => Err(e),
                }
            })
            .buffered(window)
            .scan(false, |failed, r| {
                // End the stream after the first error.
                if *failed {
                    return futures_util::future::ready(None);
                }
                *failed = r.is_err();
                futures_util::future::ready(Some(r))
            })
    }

    /// Confirm that this node leads and return the log id a linearizable read must see
    /// applied, without waiting for it to be applied. For follower reads: a follower asks the
    /// leader for this (through the application's own RPC), then waits on its own state
    /// machine with [`wait_applied`](Self::wait_applied) and reads locally.
    ///
    /// The returned `read_log_id` is always committed. A leader that has not committed an
    /// entry of its term yet answers only after it has, under either policy. A leader cut off
    /// from the majority never answers with a stale index: it waits, and fails with
    /// `ForwardToLeader` when check-quorum makes it step down. A read is answered only under the
    /// leadership it arrived under: if this node stops leading, even to lead again in a later
    /// term, the read fails with `ForwardToLeader`.
    ///
    /// With [`Config::enable_check_quorum`] off, a leader cut off from the majority does not
    /// step down on its own: the read waits until the leader hears of a newer term, which may
    /// be never while the partition lasts. Put a timeout of your own on it. (Without
    /// check-quorum, [`ReadPolicy::LeaseRead`] also never uses a lease: it behaves as
    /// `ReadIndex`.)
    ///
    /// # Errors
    /// [`LinearizableReadError::ForwardToLeader`] if this node is not (or stopped being) the
    /// leader; [`Fatal`] if it stopped.
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// # raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
    /// # raft.wait(None).state(ServerState::Leader, "elected").await?;
    /// use quorate::ReadPolicy;
    ///
    /// raft.client_write(Request::set("k", "v")).await?;
    /// // On the leader: where must a linearizable read read?
    /// let index = raft.get_read_index(ReadPolicy::ReadIndex).await?;
    /// // On the node that serves the read (a follower, after your own RPC carried `index`):
    /// raft.wait_applied(index.read_log_id).await?;
    /// assert_eq!(sm.data()["k"], "v");
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub async fn get_read_index(
        &self,
        policy: ReadPolicy,
    ) -> Result<ReadIndex<C>, RaftError<LinearizableReadError<C>>> {
        let span = debug_span!("read", id = %self.inner.id, ?policy, read_log_id = Empty, outcome = Empty);
        let result = async {
            let (tx, rx) = oneshot::channel();
            self.send_api(ApiMsg::GetReadLogId { policy, tx }).await?;
            match rx.await {
                Ok(r) => r.map_err(RaftError::APIError),
                Err(_) => Err(self.stopped_error()),
            }
        }
        .instrument(span.clone())
        .await;
        match &result {
            Ok(index) => {
                span.record("read_log_id", tracing::field::display(DisplayOption(&index.read_log_id)));
                span.record("outcome", "confirmed");
            }
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => {
                span.record("outcome", "forward_to_leader");
            }
            Err(RaftError::Fatal(_)) => {
                span.record("outcome", "stopped");
            }
        }
        debug!(parent: &span, "read answered");
        result
    }

    /// Make the next read of this (leader) node's state machine linearizable: confirm the
    /// leadership, then wait until the state machine has applied everything committed before
    /// this call. Returns the read log id.
    ///
    /// It waits as [`get_read_index`](Self::get_read_index) does: with
    /// [`Config::enable_check_quorum`] off, a leader cut off from the majority may never
    /// return. Put a timeout of your own on it.
    ///
    /// # Errors
    /// As [`get_read_index`](Self::get_read_index).
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// # raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
    /// # raft.wait(None).state(ServerState::Leader, "elected").await?;
    /// use quorate::ReadPolicy;
    ///
    /// raft.client_write(Request::set("k", "v")).await?;
    /// raft.ensure_linearizable(ReadPolicy::ReadIndex).await?;
    /// // Reading the local state machine now sees every write completed before the call.
    /// assert_eq!(sm.data()["k"], "v");
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub async fn ensure_linearizable(
        &self,
        policy: ReadPolicy,
    ) -> Result<Option<LogId<C>>, RaftError<LinearizableReadError<C>>> {
        let index = self.get_read_index(policy).await?;
        if index.applied < index.read_log_id {
            self.wait_applied(index.read_log_id).await.map_err(|_| self.stopped_error())?;
        }
        Ok(index.read_log_id)
    }

    /// Wait until this node's state machine has applied `log_id`.
    ///
    /// `log_id` must be committed: one returned by [`get_read_index`](Self::get_read_index)
    /// (on any node of the cluster) or by a write's response. Then every node applies exactly
    /// that entry at its index, so waiting for the index is waiting for the entry. (An id that
    /// was never committed may be replaced by another leader's entry at the same index; this
    /// call cannot tell, so do not pass one.)
    ///
    /// # Errors
    /// [`Fatal::Stopped`] if the node stops first.
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// # raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
    /// # raft.wait(None).state(ServerState::Leader, "elected").await?;
    /// let written = raft.client_write(Request::set("k", "v")).await?;
    /// // On any node: wait until this node's state machine has applied the write, then read it.
    /// raft.wait_applied(Some(written.log_id)).await?;
    /// assert_eq!(sm.data()["k"], "v");
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub async fn wait_applied(&self, log_id: Option<LogId<C>>) -> Result<(), Fatal> {
        let Some(log_id) = log_id else { return Ok(()) };
        let mut rx = self.inner.metrics_rx.clone();
        rx.wait_for(|m| m.last_applied.is_some_and(|a| a.index >= log_id.index) || m.state == ServerState::Shutdown)
            .await
            .map_err(|_| Fatal::Stopped)
            .and_then(|m| if m.state == ServerState::Shutdown { Err(Fatal::Stopped) } else { Ok(()) })
    }

    /// Handle the leader's request to campaign now (the last step of a leadership transfer).
    /// Returns whether this node started an election.
    ///
    /// # Errors
    /// [`Fatal`] if this node has stopped.
    pub async fn handle_transfer_leader(&self, req: TransferLeaderRequest<C>) -> Result<bool, RaftError> {
        let (tx, rx) = oneshot::channel();
        self.inner.rpc_tx.send(RpcMsg::TransferLeader { req, tx }).await.map_err(|_| self.stopped_error())?;
        rx.await.map_err(|_| self.stopped_error())
    }

    /// Handle one chunk of a snapshot from the leader. The snapshot is installed when its last
    /// chunk arrives; the answer says which offset the follower expects next.
    ///
    /// # Errors
    /// [`Fatal`] if this node has stopped.
    pub async fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<C>,
    ) -> Result<InstallSnapshotResponse<C>, RaftError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .rpc_tx
            .send(RpcMsg::InstallSnapshot { req: Box::new(req), tx })
            .await
            .map_err(|_| self.stopped_error())?;
        rx.await.map_err(|_| self.stopped_error())
    }

    /// Handle a vote request from a candidate.
    ///
    /// # Errors
    /// [`Fatal`] if this node has stopped.
    pub async fn vote(&self, req: VoteRequest<C>) -> Result<VoteResponse<C>, RaftError> {
        let (tx, rx) = oneshot::channel();
        self.inner.rpc_tx.send(RpcMsg::Vote { req, tx }).await.map_err(|_| self.stopped_error())?;
        rx.await.map_err(|_| self.stopped_error())
    }

    /// Actions to trigger on this node now.
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// # raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
    /// # raft.wait(None).state(ServerState::Leader, "elected").await?;
    /// // Snapshot now, and watch the metrics for it.
    /// let last = raft.client_write(Request::set("k", "v")).await?.log_id;
    /// raft.trigger().snapshot().await?;
    /// raft.wait(None).metrics(|m| m.snapshot >= Some(last), "snapshot built").await?;
    ///
    /// // Purge the log up to the snapshot (never further).
    /// raft.trigger().purge_log(last.index).await?;
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub fn trigger(&self) -> Trigger<'_, C> {
        Trigger { raft: self }
    }

    /// A receiver of this node's metrics: a `tokio::sync::watch` receiver, so it sees the
    /// latest value, not every change. A receiver that is slow, or that looks only now and
    /// then, skips the values in between (a leader of a short term, an index passed on the
    /// way): do not build a history from it (one leader per term, say) where every value
    /// matters; the log and the votes the storage saw are the record of that.
    ///
    /// Copy what you need out of `borrow()` and drop the guard before awaiting anything: the
    /// node publishes through the same lock, so a guard held across an await stalls the node
    /// (on a single-threaded runtime, for good).
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// # raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
    /// # raft.wait(None).state(ServerState::Leader, "elected").await?;
    /// let m = raft.metrics().borrow().clone();
    /// assert_eq!(m.state, ServerState::Leader);
    /// assert_eq!(m.current_leader, Some(1));
    ///
    /// // Follow the leader as it changes (a change and back within one look is not seen).
    /// let mut rx = raft.metrics();
    /// tokio::spawn(async move {
    ///     while rx.changed().await.is_ok() {
    ///         let leader = rx.borrow_and_update().current_leader;
    ///         println!("leader: {leader:?}");
    ///     }
    /// });
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<C>> {
        self.inner.metrics_rx.clone()
    }

    /// Wait for a condition on the metrics, for at most `timeout` (default: 500 ms).
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// # raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
    /// # raft.wait(None).state(ServerState::Leader, "elected").await?;
    /// use std::time::Duration;
    ///
    /// let written = raft.client_write(Request::set("k", "v")).await?;
    /// raft.wait(Some(Duration::from_secs(1)))
    ///     .applied_index_at_least(Some(written.log_id.index), "the write is applied")
    ///     .await?;
    /// // Any condition on the metrics:
    /// raft.wait(None).metrics(|m| m.committed >= Some(written.log_id), "committed").await?;
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub fn wait(&self, timeout: Option<Duration>) -> Wait<C> {
        Wait { timeout: timeout.unwrap_or(Duration::from_millis(500)), rx: self.inner.metrics_rx.clone() }
    }

    /// Stop the node and wait for its tasks to end. Pending client writes fail with
    /// [`Fatal::Stopped`]: their outcome is unknown.
    ///
    /// When it returns, every task of the node has ended, and no call of the node's into the
    /// log store, the state machine or the network is in progress (work your own code handed
    /// to other threads, such as `spawn_blocking`, aside): the replication streams have
    /// stopped, and the state machine task has finished the chunk of entries it was applying
    /// (at most 4096; committed entries not yet applied are left to the next node to open the
    /// state machine) and any snapshot it was building. So a node may be restarted at once on
    /// the same storage, in the same process. Do not await it from inside the state machine
    /// (its `apply` or a snapshot builder): it waits for them.
    ///
    /// Any number of calls, from any clones, each wait for the tasks to end and return the same
    /// result. A call dropped half-way (a caller's timeout) has still told the node to stop: a
    /// later call waits for the end of the same tasks.
    ///
    /// # Errors
    /// The fatal error that had already stopped the node, if any ([`Fatal::Panicked`] if its
    /// task panicked).
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// # raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
    /// # raft.wait(None).state(ServerState::Leader, "elected").await?;
    /// raft.client_write(Request::set("k", "v")).await?;
    /// raft.shutdown().await?;
    /// // Every call fails from now on.
    /// assert!(raft.client_write(Request::set("k", "w")).await.is_err());
    ///
    /// // Restart from the same storage (here: what the in-memory log flushed).
    /// let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.reopen(), sm.reopen()).await?;
    /// # raft.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub async fn shutdown(&self) -> Result<(), Fatal> {
        let tx = self.inner.shutdown_tx.lock().map(|mut g| g.take()).unwrap_or(None);
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
        self.inner.core.clone().await
    }

    /// Wait until this node has stopped: by [`shutdown`](Self::shutdown) or on a fatal error.
    /// Once it returns, [`metrics`](Self::metrics) show [`ServerState::Shutdown`] (unless the
    /// node's task panicked, or the runtime shut down under it: then it also returns, without
    /// that last publish), and, as after `shutdown`, every task of the node has ended (so do
    /// not await it from inside the state machine either).
    ///
    /// Waiting on [`metrics`](Self::metrics) for `Shutdown` would do too, but wakes the waiter
    /// on every change of the metrics (several per write on a busy node); this wakes it once.
    ///
    /// # Examples
    ///
    #[cfg_attr(feature = "testing", doc = "```")]
    #[cfg_attr(not(feature = "testing"), doc = "```ignore")]
    /// # use std::collections::BTreeMap;
    /// # use std::sync::Arc;
    /// # use quorate::testing::{MemLogStore, MemStateMachine, Request, Router};
    /// # use quorate::{BasicNode, Config, Raft, ServerState};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let router = Router::new();
    /// # let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
    /// # let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), log.clone(), sm.clone()).await?;
    /// # router.add_node(1, raft.clone());
    /// # raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
    /// # raft.wait(None).state(ServerState::Leader, "elected").await?;
    /// let watcher = tokio::spawn({
    ///     let raft = raft.clone();
    ///     async move { raft.wait_stopped().await }
    /// });
    /// raft.client_write(Request::set("k", "v")).await?;
    /// assert!(!watcher.is_finished());
    /// raft.shutdown().await?;
    /// watcher.await?;
    /// assert_eq!(raft.metrics().borrow().state, ServerState::Shutdown);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// (Examples run on the `testing` feature's in-memory kit.)
    pub async fn wait_stopped(&self) {
        // The Raft task owns the receiving end of the API channel and drops it, after its last
        // metrics, when it ends.
        self.inner.api_tx.closed().await;
        // Then the state machine task (see `shutdown`).
        let _ = self.inner.core.clone().await;
    }

    async fn send_api<E>(&self, msg: ApiMsg<C>) -> Result<(), RaftError<E>> {
        self.inner.api_tx.send(msg).await.map_err(|_| self.stopped_error())
    }

    async fn send_append(
        &self,
        req: AppendEntriesRequest<C>,
    ) -> Result<oneshot::Receiver<AppendEntriesResponse<C>>, RaftError> {
        let (tx, rx) = oneshot::channel();
        self.inner.rpc_tx.send(RpcMsg::AppendEntries { req, tx }).await.map_err(|_| self.stopped_error())?;
        Ok(rx)
    }

    fn stopped_error<E>(&self) -> RaftError<E> {
        RaftError::Fatal(Fatal::Stopped)
    }
}

/// Actions to start on a node now; see [`Raft::trigger`].
pub struct Trigger<'r, C: RaftTypeConfig> {
    raft: &'r Raft<C>,
}

impl<C: RaftTypeConfig> Trigger<'_, C> {
    /// Start an election now, if this node is a voter.
    ///
    /// On a follower it campaigns as its election timer would (with pre-vote if enabled): if it
    /// heard from a live leader within `election_timeout_min` it does not stand at all, and
    /// voters that did refuse it (leader stickiness), so it never deposes a healthy leader —
    /// nor breaks that leader's lease. It wins once the leader is gone or unreachable. To move leadership away from a healthy
    /// leader, use [`transfer_leader`](Self::transfer_leader) on the leader.
    ///
    /// On the leader it steps down and campaigns at once in the next term, asking voters to
    /// vote even though they heard from it: nothing of another leader's can be broken by that,
    /// since this node ends its own lease and voters that follow a newer leader refuse it.
    ///
    /// # Errors
    /// [`Fatal`] if the node has stopped.
    pub async fn elect(&self) -> Result<(), RaftError> {
        self.raft.send_api(ApiMsg::Elect).await
    }

    /// Hand leadership to `to`: stop accepting writes, bring `to` up to date, then tell it to
    /// campaign. Returns `Ok` once this node has stepped down: normally because `to` took over,
    /// but a step-down for another reason during the transfer (a newer term seen, check-quorum)
    /// is `Ok` too, since this node no longer leads either way; the metrics' `current_leader`
    /// says who leads now. Until the new leader's first message arrives this node knows no
    /// leader: writes here get `ForwardToLeader` with `leader_id: None` (while the transfer
    /// runs, they name `to`).
    ///
    /// The message telling `to` to campaign ([`RaftNetwork::transfer_leader`]) is sent once,
    /// when `to` first holds the whole log, and never again: if it is lost, or the network
    /// does not implement it, or `to` refuses it, `to` does not take over, and the call fails
    /// with `Timeout` at the deadline (unless this node steps down for another reason first).
    ///
    /// [`RaftNetwork::transfer_leader`]: crate::RaftNetwork::transfer_leader
    ///
    /// # Errors
    /// [`TransferLeaderError::Timeout`] if `to` did not take over within twice the maximum
    /// election timeout (this node then leads on and accepts writes again);
    /// `ForwardToLeader` if this node is not the leader; `NotAVoter`; `InProgress` if a
    /// transfer to another node has not ended yet (asking again for the same target joins the
    /// transfer in progress).
    pub async fn transfer_leader(&self, to: C::NodeId) -> Result<(), RaftError<TransferLeaderError<C>>> {
        let (tx, rx) = oneshot::channel();
        self.raft.send_api(ApiMsg::TransferLeader { to, tx }).await?;
        match rx.await {
            Ok(r) => r.map_err(RaftError::APIError),
            Err(_) => Err(self.raft.stopped_error()),
        }
    }

    /// Build a snapshot now (unless one is being built). Its completion shows in
    /// [`RaftMetrics::snapshot`].
    ///
    /// # Errors
    /// [`Fatal`] if the node has stopped.
    pub async fn snapshot(&self) -> Result<(), RaftError> {
        self.raft.send_api(ApiMsg::TriggerSnapshot).await
    }

    /// Purge the log up to index `upto`, bounded by the last snapshot and by what is applied:
    /// entries a snapshot cannot replace are never purged.
    ///
    /// # Errors
    /// [`Fatal`] if the node has stopped.
    pub async fn purge_log(&self, upto: u64) -> Result<(), RaftError> {
        self.raft.send_api(ApiMsg::PurgeLog { upto }).await
    }
}

/// How a write is admitted to a full write queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// Wait for room.
    Wait,
    /// Fail with `Overloaded` at once.
    FailFast,
}

/// The outcome of one write of a batch: what [`Raft::client_write`] returns.
pub type ClientWriteResult<C> = Result<ClientWriteResponse<C>, RaftError<ClientWriteError<C>>>;

/// The span of one client write: `id` (this node), and once answered `log_id`, `term` and
/// `outcome` (see [`record_write`]).
fn write_span<N: std::fmt::Display>(id: N) -> tracing::Span {
    debug_span!("client_write", %id, log_id = Empty, term = Empty, outcome = Empty)
}

/// Record how a client write ended on its span, and log it there.
fn record_write<C: RaftTypeConfig>(
    span: &tracing::Span,
    result: &Result<ClientWriteResponse<C>, RaftError<ClientWriteError<C>>>,
) {
    let (log_id, outcome) = match result {
        Ok(r) => (Some(r.log_id), "applied"),
        Err(RaftError::APIError(e)) => match e {
            ClientWriteError::ForwardToLeader(_) => (None, "forward_to_leader"),
            ClientWriteError::Discarded { log_id } => (Some(*log_id), "discarded"),
            ClientWriteError::OutcomeUnknown { log_id } => (Some(*log_id), "outcome_unknown"),
            ClientWriteError::Overloaded => (None, "overloaded"),
            ClientWriteError::InvalidMembership(_) => (None, "invalid_membership"),
            ClientWriteError::MembershipChangeInProgress { .. } => (None, "membership_change_in_progress"),
        },
        Err(RaftError::Fatal(_)) => (None, "stopped"),
    };
    if let Some(log_id) = log_id {
        span.record("log_id", tracing::field::display(log_id));
        span.record("term", log_id.leader_id.term);
    }
    span.record("outcome", outcome);
    debug!(parent: span, "write answered");
}
