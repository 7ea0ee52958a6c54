//! [`MultiCluster`]: three [`GroupHost`]s on one [`HostRouter`], each running the same N groups.
//!
//! Group `g` is initialized through node `g % 3 + 1`, so leadership starts spread evenly over
//! the nodes. Each group's log is a [`MemLogStore`] (kept, so that a killed node can restart
//! from it) or one [`GroupLogStore`](quorate::file_store::GroupLogStore) of its node's [`SharedLog`]; its state machine is a
//! [`MemStateMachine`].

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream;
use quorate::error::{ClientWriteError, RaftError};
use quorate::file_store::{FileStoreOptions, SharedLog, SyncObserver};
use quorate::multi::{GroupHost, GroupId, HostConfig};
use quorate::testing::{HostRouter, MemLogStore, MemStateMachine, Request, RouterHost, TypeConfig};
use quorate::{BasicNode, Config, Raft, RaftMetrics, ServerState};
use tokio::sync::watch;

/// The three nodes of every cluster.
pub const NODES: [u64; 3] = [1, 2, 3];

/// How many group operations (initialize, first write, waits) run at once while the cluster
/// is brought up: enough to overlap the groups' elections, few enough not to flood the
/// runtime with tens of thousands of waiting tasks.
const SETUP_CONCURRENCY: usize = 512;

/// Where the groups keep their logs.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A [`MemLogStore`] per group and node: appends are durable at once.
    Memory,
    /// One [`SharedLog`] per node, in a directory of its own under this one.
    Shared(PathBuf),
}

/// `fdatasync`s of every node's shared log, and the entries they made durable.
#[derive(Debug, Default)]
pub struct SyncCount {
    /// Group commits that synced.
    pub syncs: AtomicU64,
    /// Entries those commits appended.
    pub entries: AtomicU64,
}

/// Three hosts of N groups each, on one in-memory network.
pub struct MultiCluster {
    config: Arc<Config>,
    host_config: HostConfig,
    storage: Storage,
    router: HostRouter,
    hosts: BTreeMap<u64, RouterHost>,
    /// Every group's memory stores per node, to restart a killed node from.
    mem_stores: BTreeMap<(u64, GroupId), (MemLogStore, MemStateMachine)>,
    shared_logs: BTreeMap<u64, SharedLog<TypeConfig>>,
    syncs: Arc<SyncCount>,
    groups: u64,
    limit: Duration,
}

impl MultiCluster {
    /// Start three hosts of `groups` groups each, none initialized yet (see
    /// [`bring_up`](Self::bring_up)). `limit` bounds every wait of the cluster's helpers.
    ///
    /// # Errors
    /// If a host or group does not start.
    pub async fn start(
        groups: u64,
        config: Config,
        host_config: HostConfig,
        storage: Storage,
        limit: Duration,
    ) -> Result<Self, String> {
        let mut cluster = Self {
            config: Arc::new(config),
            host_config,
            storage,
            router: HostRouter::new(),
            hosts: BTreeMap::new(),
            mem_stores: BTreeMap::new(),
            shared_logs: BTreeMap::new(),
            syncs: Arc::new(SyncCount::default()),
            groups,
            limit,
        };
        for id in NODES {
            cluster.start_host(id, false).await?;
        }
        Ok(cluster)
    }

    /// Initialize the groups `batch` at a time, and before the next batch wait until the
    /// batch's groups have elected, written one entry each and (with quiescence on)
    /// quiesced: groups created over time, as an application adds them, rather than ten
    /// thousand elections at once (see `benches/README.md` for what that does). Returns each
    /// group's leader.
    ///
    /// # Errors
    /// The first group that failed to initialize, elect, take its write or quiesce.
    pub async fn bring_up(&self, batch: u64, quiesce: bool) -> Result<Vec<u64>, String> {
        let mut leaders = Vec::with_capacity(self.groups as usize);
        let mut first = 0;
        while first < self.groups {
            let batch = first..(first + batch.max(1)).min(self.groups);
            self.initialize(batch.clone()).await?;
            let batch_leaders = self.wait_for_leaders(batch.clone()).await?;
            self.write_each_once(batch.clone(), &batch_leaders).await?;
            if quiesce {
                self.wait_all_quiesced(batch.clone()).await?;
            }
            leaders.extend(batch_leaders);
            first = batch.end;
        }
        Ok(leaders)
    }

    /// Initialize each group of `groups` as a cluster of the three nodes, through node
    /// `g % 3 + 1`.
    async fn initialize(&self, groups: Range<u64>) -> Result<(), String> {
        let members: BTreeMap<u64, BasicNode> = NODES.iter().map(|id| (*id, node_addr(*id))).collect();
        let inits = groups.map(|g| {
            let raft = self.raft(g % 3 + 1, g);
            let members = members.clone();
            async move { raft.initialize(members).await.map_err(|e| format!("initialize group {g}: {e}")) }
        });
        let failed = stream::iter(inits).buffer_unordered(SETUP_CONCURRENCY).filter_map(|r| async { r.err() });
        match Box::pin(failed).next().await {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Start node `id`'s host and its groups: on fresh stores, or on `reopen` those a killed
    /// host left.
    async fn start_host(&mut self, id: u64, reopen: bool) -> Result<(), String> {
        let host = GroupHost::new(id, self.host_config.clone(), self.router.network(id)).map_err(|e| e.to_string())?;
        self.router.add_host(host.clone());
        if let Storage::Shared(dir) = &self.storage {
            let syncs = self.syncs.clone();
            let observer = SyncObserver::new(move |batch| {
                syncs.syncs.fetch_add(1, Ordering::Relaxed);
                syncs.entries.fetch_add(batch.entries, Ordering::Relaxed);
            });
            let dir = dir.join(format!("node-{id}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let log = SharedLog::open_with(&dir, FileStoreOptions::default().on_sync(observer))
                .map_err(|e| format!("open shared log: {e}"))?;
            self.shared_logs.insert(id, log);
        }
        for g in 0..self.groups {
            let sm = MemStateMachine::new();
            let created = match &self.storage {
                Storage::Memory => {
                    let (log, sm) = match self.mem_stores.get(&(id, g)) {
                        Some((log, sm)) if reopen => (log.reopen(), sm.reopen()),
                        _ => (MemLogStore::new(), sm),
                    };
                    self.mem_stores.insert((id, g), (log.clone(), sm.clone()));
                    host.create_group(g, self.config.clone(), log, sm).await
                }
                Storage::Shared(_) => {
                    let log = self.shared_logs[&id].group(g).map_err(|e| format!("group {g} log: {e}"))?;
                    host.create_group(g, self.config.clone(), log, sm).await
                }
            };
            created.map_err(|e| format!("node {id}: {e}"))?;
        }
        self.hosts.insert(id, host);
        Ok(())
    }

    /// How many groups each node runs.
    pub fn groups(&self) -> u64 {
        self.groups
    }

    /// The network, with its message counters.
    pub fn router(&self) -> &HostRouter {
        &self.router
    }

    /// The shared logs' syncs so far (zero on memory stores).
    pub fn syncs(&self) -> &SyncCount {
        &self.syncs
    }

    /// The nodes running now.
    pub fn live(&self) -> Vec<u64> {
        self.hosts.keys().copied().collect()
    }

    /// Group `group`'s Raft on node `node`.
    ///
    /// # Panics
    /// If the node is not running or does not run the group: a bug in the bench.
    pub fn raft(&self, node: u64, group: GroupId) -> Raft<TypeConfig> {
        self.hosts[&node].group(group).expect("every live node runs every group")
    }

    /// The Raft of every group on every node, indexed `[group][node - 1]`: the writers' table.
    pub fn handles(&self) -> Vec<Vec<Raft<TypeConfig>>> {
        (0..self.groups).map(|g| NODES.iter().map(|id| self.raft(*id, g)).collect()).collect()
    }

    /// Wait until each group of `groups` has one leader among the live nodes and all of them
    /// know it. Returns each one's leader, in order.
    ///
    /// # Errors
    /// The first group that did not settle within the limit.
    pub async fn wait_for_leaders(&self, groups: Range<u64>) -> Result<Vec<u64>, String> {
        let live = self.live();
        let limit = self.limit;
        let first = groups.start;
        let mut leaders = vec![0; groups.clone().count()];
        let waits = groups.map(|g| {
            let rafts: Vec<_> = live.iter().map(|id| self.raft(*id, g)).collect();
            let live = live.clone();
            async move {
                let agreed = |rafts: &[Raft<TypeConfig>]| -> Option<u64> {
                    let leader = rafts[0].metrics().borrow().current_leader?;
                    let at = live.iter().position(|id| *id == leader)?;
                    let leads = rafts[at].metrics().borrow().state == ServerState::Leader;
                    let all = rafts.iter().all(|r| r.metrics().borrow().current_leader == Some(leader));
                    (leads && all).then_some(leader)
                };
                let deadline = tokio::time::Instant::now() + limit;
                loop {
                    if let Some(leader) = agreed(&rafts) {
                        return Ok((g, leader));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(format!("group {g} has no agreed leader after {limit:?}"));
                    }
                    let mut rx = rafts[0].metrics();
                    let _ = tokio::time::timeout(Duration::from_millis(20), rx.changed()).await;
                }
            }
        });
        let mut results = stream::iter(waits).buffer_unordered(SETUP_CONCURRENCY);
        let mut census_tick = tokio::time::interval(Duration::from_secs(10));
        census_tick.tick().await;
        loop {
            tokio::select! {
                r = results.next() => match r {
                    Some(Ok((g, leader))) => leaders[(g - first) as usize] = leader,
                    Some(Err(e)) => return Err(format!("{e}; {}", self.census())),
                    None => return Ok(leaders),
                },
                _ = census_tick.tick() => eprintln!("multi-bench: waiting for leaders: {}", self.census()),
            }
        }
    }

    /// Where the groups stand, for a progress line or an error: replicas per role, leaders
    /// per node, quiesced replicas, elections started.
    pub fn census(&self) -> String {
        let (mut leaders, mut candidates, mut followers, mut quiesced, mut elections) = (BTreeMap::new(), 0, 0, 0, 0);
        for id in self.live() {
            for g in 0..self.groups {
                let raft = self.raft(id, g);
                let m = raft.metrics();
                let m = m.borrow();
                match m.state {
                    ServerState::Leader => *leaders.entry(id).or_insert(0u64) += 1,
                    ServerState::Candidate => candidates += 1,
                    _ => followers += 1,
                }
                quiesced += u64::from(m.quiesced);
                elections += m.elections_started;
            }
        }
        format!(
            "leaders per node {leaders:?}, {candidates} candidates, {followers} followers or other, \
             {quiesced} quiesced, {elections} elections started"
        )
    }

    /// Write one entry to each group of `groups` through its leader (`leaders`, in order).
    ///
    /// # Errors
    /// The first write that failed.
    pub async fn write_each_once(&self, groups: Range<u64>, leaders: &[u64]) -> Result<(), String> {
        let first = groups.start;
        let writes = groups.map(|g| {
            let raft = self.raft(leaders[(g - first) as usize], g);
            async move {
                // The leader may have changed since it was seen: follow it a few times.
                let mut raft = raft;
                for _ in 0..10 {
                    match raft.client_write(Request::set("k", "v")).await {
                        Ok(_) => return Ok(()),
                        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match f.leader_id {
                            Some(l) if NODES.contains(&l) => raft = self.raft(l, g),
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        },
                        // Appended, then overwritten by a newer leader (maybe applied all the
                        // same, if unknown): the same write again is harmless.
                        Err(RaftError::APIError(
                            ClientWriteError::Discarded { .. } | ClientWriteError::OutcomeUnknown { .. },
                        )) => {}
                        Err(e) => return Err(format!("group {g}: {e}")),
                    }
                }
                Err(format!("group {g}: no stable leader to write to"))
            }
        });
        let failed = stream::iter(writes).buffer_unordered(SETUP_CONCURRENCY).filter_map(|r| async { r.err() });
        match Box::pin(failed).next().await {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Wait until each group of `groups` reports itself quiesced on every live node.
    ///
    /// # Errors
    /// How many did not within the limit.
    pub async fn wait_all_quiesced(&self, groups: Range<u64>) -> Result<(), String> {
        let mut rxs = Vec::new();
        for id in self.live() {
            for g in groups.clone() {
                rxs.push(self.raft(id, g).metrics());
            }
        }
        let limit = self.limit;
        let waits = rxs.into_iter().map(|rx| wait_metrics(rx, limit, |m| m.quiesced));
        let missed = stream::iter(waits).buffer_unordered(SETUP_CONCURRENCY).filter(|ok| std::future::ready(!ok));
        let missed = missed.count().await;
        if missed == 0 { Ok(()) } else { Err(format!("{missed} group replicas not quiesced after {limit:?}")) }
    }

    /// Elections started by every group on every live node, so far.
    pub fn elections(&self) -> u64 {
        let mut n = 0;
        for id in self.live() {
            for g in 0..self.groups {
                n += self.raft(id, g).metrics().borrow().elections_started;
            }
        }
        n
    }

    /// Kill node `id` as `kill -9` would: every link to and from it is cut and it is gone from
    /// the network at once (so that none of its groups, which keep running until the host
    /// has stopped them one by one, reaches a peer). Returns its host, still running, for the
    /// caller to shut down.
    ///
    /// # Panics
    /// If the node is not running.
    pub fn kill(&mut self, id: u64) -> RouterHost {
        self.router.isolate(id);
        self.router.remove_host(id);
        self.hosts.remove(&id).expect("the node runs")
    }

    /// Start killed node `id` again from its groups' memory stores, and heal its links.
    ///
    /// # Errors
    /// If the host or a group does not start.
    pub async fn restart(&mut self, id: u64) -> Result<(), String> {
        self.router.restore(id);
        self.start_host(id, true).await
    }

    /// Stop every host.
    pub async fn shutdown(self) {
        for host in self.hosts.into_values() {
            let _ = host.shutdown().await;
        }
    }
}

/// Wait until `pred` holds on `rx`'s metrics, for at most `limit`. Returns whether it did.
pub async fn wait_metrics(
    mut rx: watch::Receiver<RaftMetrics<TypeConfig>>,
    limit: Duration,
    pred: impl Fn(&RaftMetrics<TypeConfig>) -> bool,
) -> bool {
    let waited = tokio::time::timeout(limit, async {
        loop {
            if pred(&rx.borrow_and_update()) {
                return true;
            }
            if rx.changed().await.is_err() {
                return false;
            }
        }
    });
    waited.await.unwrap_or(false)
}

/// The address of node `id` (the HostRouter routes by id; the address is only a label).
pub fn node_addr(id: u64) -> BasicNode {
    BasicNode::new(format!("node-{id}"))
}
