//! A cluster of nodes on the suite's own storage and network, and the safety checks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::select_all;
use quorate::error::ClientWriteError;
use quorate::{BasicNode, ClientWriteResponse, Config, LogId, Raft, RaftError, ServerState};
use tokio::task::JoinHandle;

use crate::net::Net;
use crate::store::{LogStore, Rec, Recorder, StateMachine};
use crate::types::{C, Req};

pub type WriteResult = Result<ClientWriteResponse<C>, RaftError<ClientWriteError<C>>>;

pub struct Node {
    pub raft: Raft<C>,
    pub log: LogStore,
    pub sm: StateMachine,
    watcher: JoinHandle<()>,
}

pub struct Cluster {
    pub net: Net,
    pub rec: Rec,
    pub config: Arc<Config>,
    pub nodes: BTreeMap<u64, Node>,
    /// Storage of crashed nodes, as a restarted process finds it.
    pub down: BTreeMap<u64, (LogStore, StateMachine)>,
    /// Per term, every node seen (in its metrics) as leader.
    pub leaders_seen: Arc<Mutex<BTreeMap<u64, BTreeSet<u64>>>>,
    /// Log ids of writes a client was told succeeded.
    pub acked: Arc<Mutex<Vec<LogId<C>>>>,
    pub persistent_sm: bool,
}

pub fn config() -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(150),
        election_timeout_max: Duration::from_millis(300),
        snapshot_policy: quorate::SnapshotPolicy::Never,
        ..Config::default()
    }
}

impl Cluster {
    /// `n` fresh nodes, 1..=n, started, not initialized.
    pub async fn new(n: u64, config: Config, seed: u64, pipelined: bool) -> Self {
        let rec: Rec = Arc::new(Mutex::new(Recorder::default()));
        let mut c = Cluster {
            net: Net::new(seed, pipelined),
            rec,
            config: Arc::new(config.validate().expect("valid config")),
            nodes: BTreeMap::new(),
            down: BTreeMap::new(),
            leaders_seen: Arc::default(),
            acked: Arc::default(),
            persistent_sm: true,
        };
        for id in 1..=n {
            c.add_fresh(id).await;
        }
        c
    }

    pub async fn add_fresh(&mut self, id: u64) {
        let log = LogStore::new(id, self.rec.clone());
        let sm = StateMachine::new(id, self.rec.clone());
        self.start(id, log, sm).await;
    }

    async fn start(&mut self, id: u64, log: LogStore, sm: StateMachine) {
        let raft = Raft::new(id, self.config.clone(), self.net.factory(id), log.clone(), sm.clone())
            .await
            .unwrap_or_else(|e| panic!("node {id} failed to start: {e}"));
        self.net.add(id, raft.clone());
        let mut rx = raft.metrics();
        let seen = self.leaders_seen.clone();
        let watcher = tokio::spawn(async move {
            loop {
                let (state, term) = {
                    let m = rx.borrow_and_update();
                    (m.state, m.current_term)
                };
                if state == ServerState::Leader {
                    seen.lock().unwrap().entry(term).or_default().insert(id);
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        });
        self.nodes.insert(id, Node { raft, log, sm, watcher });
    }

    pub async fn init(&self, voters: &[u64]) {
        let members: BTreeMap<u64, BasicNode> =
            voters.iter().map(|id| (*id, BasicNode::new(format!("n{id}")))).collect();
        self.raft(voters[0]).initialize(members).await.expect("initialize");
    }

    pub fn raft(&self, id: u64) -> Raft<C> {
        self.nodes.get(&id).unwrap_or_else(|| panic!("node {id} is not running")).raft.clone()
    }

    pub fn sm(&self, id: u64) -> StateMachine {
        self.nodes.get(&id).map(|n| n.sm.clone()).unwrap_or_else(|| self.down[&id].1.clone())
    }

    pub fn log(&self, id: u64) -> LogStore {
        self.nodes.get(&id).map(|n| n.log.clone()).unwrap_or_else(|| self.down[&id].0.clone())
    }

    pub fn metrics(&self, id: u64) -> quorate::RaftMetrics<C> {
        self.raft(id).metrics().borrow().clone()
    }

    /// Crash `id`: stop it; a restart finds only what its storage made durable.
    pub async fn crash(&mut self, id: u64) {
        let node = self.nodes.remove(&id).expect("running");
        self.net.remove(id);
        node.watcher.abort();
        // Take the durable state before the node's last moments can change it.
        let log = node.log.crash_copy();
        let sm = node.sm.crash_copy(self.persistent_sm);
        let _ = node.raft.shutdown().await;
        self.down.insert(id, (log, sm));
    }

    pub async fn restart(&mut self, id: u64) {
        let (log, sm) = self.down.remove(&id).expect("down");
        self.start(id, log, sm).await;
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Wait until one of `among` is leader; returns it.
    pub async fn leader_among(&self, among: &[u64], timeout: Duration) -> u64 {
        let waits: Vec<_> = among
            .iter()
            .map(|id| {
                let raft = self.raft(*id);
                Box::pin(
                    async move { raft.wait(Some(timeout)).state(ServerState::Leader, "leader").await.map(|m| m.id) },
                )
            })
            .collect();
        let (r, _, _) = select_all(waits).await;
        r.unwrap_or_else(|e| panic!("no leader among {among:?}: {e}"))
    }

    pub async fn leader(&self) -> u64 {
        self.leader_among(&self.running(), Duration::from_secs(10)).await
    }

    /// Write through `id`; record the write if it succeeded.
    pub async fn write(&self, id: u64, key: &str, value: &str) -> WriteResult {
        let r = self.raft(id).client_write(Req::set(key, value)).await;
        if let Ok(resp) = &r {
            self.acked.lock().unwrap().push(resp.log_id);
        }
        r
    }

    /// Write through whoever leads, retrying on ForwardToLeader.
    pub async fn write_ok(&self, key: &str, value: &str) -> ClientWriteResponse<C> {
        for _ in 0..50 {
            let l = self.leader().await;
            match self.write(l, key, value).await {
                Ok(r) => return r,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))
                | Err(RaftError::APIError(ClientWriteError::Discarded { .. })) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("write {key}={value} failed: {e:?}"),
            }
        }
        panic!("write {key}={value}: no stable leader")
    }

    /// Wait until every running node has applied `index`.
    pub async fn all_applied(&self, index: u64, timeout: Duration) {
        for (id, n) in &self.nodes {
            n.raft
                .wait(Some(timeout))
                .applied_index_at_least(Some(index), format!("node {id} applies {index}"))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Every safety check the suite knows.
    pub fn check(&self) {
        let rec = self.rec.lock().unwrap();
        assert!(rec.violations.is_empty(), "storage saw violations:\n{}", rec.violations.join("\n"));
        // Election safety, from the metrics (a watch may skip values, so this only catches
        // what it sees; the committed votes saved by storage are checked in the recorder).
        for (term, leaders) in self.leaders_seen.lock().unwrap().iter() {
            assert!(leaders.len() <= 1, "election safety: term {term} had leaders {leaders:?}");
        }
        // Log matching (Raft §5.3) over every node's log, running or down.
        let mut logs: BTreeMap<u64, BTreeMap<u64, LogId<C>>> = BTreeMap::new();
        for id in self.nodes.keys().chain(self.down.keys()) {
            logs.insert(*id, self.log(*id).entries().iter().map(|e| (e.log_id.index, e.log_id)).collect());
        }
        let ids: Vec<u64> = logs.keys().copied().collect();
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                let (la, lb) = (&logs[a], &logs[b]);
                let mut matched: Option<u64> = None;
                for (idx, x) in la.iter().rev() {
                    if let Some(y) = lb.get(idx) {
                        if x == y {
                            matched.get_or_insert(*idx);
                        } else if let Some(m) = matched {
                            panic!("log matching: nodes {a} and {b} agree at {m} but differ at {idx}: {x} vs {y}");
                        }
                    }
                }
            }
        }
        // Leader completeness (Raft §5.4): a leader's log holds every write acknowledged in an
        // earlier or its own term (or has it purged behind a snapshot).
        let acked = self.acked.lock().unwrap().clone();
        for (id, n) in &self.nodes {
            let m = n.raft.metrics().borrow().clone();
            if m.state != ServerState::Leader {
                continue;
            }
            let purged = n.log.purged().map(|p| p.index);
            for a in &acked {
                if a.leader_id.term > m.current_term || purged.is_some_and(|p| a.index <= p) {
                    continue;
                }
                assert_eq!(
                    logs[id].get(&a.index),
                    Some(a),
                    "leader completeness: leader {id} of term {} lacks acknowledged {a}",
                    m.current_term
                );
            }
        }
        // Every acknowledged write was applied, where applied at all, as itself.
        for a in &acked {
            if let Some((l, _)) = rec.applied.get(&a.index) {
                assert_eq!(l, a, "state machine safety: acknowledged {a} but {l} applied at its index");
            }
        }
    }

    pub async fn shutdown(&mut self) {
        for (_, n) in std::mem::take(&mut self.nodes) {
            n.watcher.abort();
            let _ = n.raft.shutdown().await;
        }
    }
}
