//! `KvService` on one in-process node whose state machine the test can hold: what a write
//! answers when the leader's write queue is full.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use quorate::storage::{Snapshot, SnapshotMeta};
use quorate::tcp::{TcpConfig, TcpNetworkFactory};
use quorate::{Entry, LogId, RaftStateMachine, ServerState, StorageError, StoredMembership};
use raft_kv::service::{KvService, Outcome};
use raft_kv::store::{LogStore, StateMachineStore};
use raft_kv::{KvNode, Raft, Request, Response, TypeConfig};
use tokio::sync::watch;

type C = TypeConfig;

const WAIT: Duration = Duration::from_secs(20);

/// raft-kv's state machine, whose `apply` waits while the test holds it, and counts the
/// applies that started.
struct HeldStateMachine {
    inner: StateMachineStore,
    held: watch::Receiver<bool>,
    started: watch::Sender<u64>,
}

impl RaftStateMachine<C> for HeldStateMachine {
    type SnapshotBuilder = <StateMachineStore as RaftStateMachine<C>>::SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<C>>, StoredMembership<C>), StorageError> {
        self.inner.applied_state().await
    }

    async fn apply(&mut self, entries: Vec<Entry<C>>) -> Result<Vec<Response>, StorageError> {
        self.started.send_modify(|n| *n += 1);
        // Err: the test is over; nothing holds any more.
        let _ = self.held.wait_for(|held| !*held).await;
        self.inner.apply(entries).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.inner.get_snapshot_builder().await
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        self.inner.begin_receiving_snapshot().await
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<C>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        self.inner.install_snapshot(meta, snapshot).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError> {
        self.inner.get_current_snapshot().await
    }
}

/// A one-node cluster, leading, everything applied, that takes one write into its queue
/// (`max_pending_requests`) and proposes one at a time (`max_pending_writes`); with the switch
/// that holds its applies and the count of applies started.
struct HeldNode {
    service: KvService,
    hold: watch::Sender<bool>,
    started: watch::Receiver<u64>,
    _dir: tempfile::TempDir,
}

impl HeldNode {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config =
            quorate::Config { max_pending_requests: 1, max_pending_writes: 1, ..raft_kv::node::default_config() };
        let log = LogStore::open(&dir.path().join("log")).unwrap();
        let state_machine = StateMachineStore::open(dir.path()).unwrap();
        let (hold, held) = watch::channel(false);
        let (started_tx, started) = watch::channel(0);
        let held_sm = HeldStateMachine { inner: state_machine.clone(), held, started: started_tx };
        let network = TcpNetworkFactory::new(1, TcpConfig::new("raft-kv"));
        let raft = Raft::new(1, Arc::new(config), network, log, held_sm).await.unwrap();
        let node = KvNode { raft_addr: "127.0.0.1:1".into(), http_addr: "127.0.0.1:2".into() };
        raft.initialize(BTreeMap::from([(1, node)])).await.unwrap();
        let m = raft.wait(Some(WAIT)).state(ServerState::Leader, "leads").await.unwrap();
        let last = m.last_log_id.map(|l| l.index);
        raft.wait(Some(WAIT)).metrics(|m| m.last_applied.map(|l| l.index) >= last, "applied").await.unwrap();
        let service = KvService { raft, state_machine, timeout: Duration::from_secs(5) };
        Self { service, hold, started, _dir: dir }
    }
}

fn set(key: &str) -> Request {
    Request::Set { key: key.into(), value: "v".into() }
}

/// Found in review: `write` waited for room in the queue (`client_write`), so an overloaded
/// leader's writes ended in `Timeout` (504, outcome unknown) although they were never
/// proposed. A write that finds the queue full is `Overloaded` at once (503, not applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_finds_the_queue_full_is_overloaded_at_once() {
    let mut node = HeldNode::start().await;
    node.hold.send_replace(true);
    let applies = *node.started.borrow();

    // The first write is proposed and committed; its apply is held, so it stays pending and
    // the leader takes nothing more from the queue.
    let service = node.service.clone();
    let first = tokio::spawn(async move { service.write(set("first")).await });
    let started = tokio::time::timeout(WAIT, node.started.wait_for(|n| *n > applies)).await;
    assert!(started.is_ok_and(|r| r.is_ok()), "the first write was never applied");

    // The second fills the queue: queued in its first poll, then waiting for its answer.
    let mut second = Box::pin(node.service.write(set("second")));
    assert!(futures_util::poll!(second.as_mut()).is_pending());

    // The third finds no room.
    let third = tokio::time::timeout(WAIT, node.service.write(set("third"))).await.unwrap();
    assert_eq!(third, Outcome::Overloaded);

    node.hold.send_replace(false);
    let first = tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
    assert!(matches!(first, Outcome::Done((_, Response { ok: true, .. }))), "{first:?}");
    let second = tokio::time::timeout(WAIT, second).await.unwrap();
    assert!(matches!(second, Outcome::Done((_, Response { ok: true, .. }))), "{second:?}");
    assert_eq!(node.service.state_machine.get("third"), None, "an overloaded write was applied");
    node.service.raft.shutdown().await.unwrap();
}
