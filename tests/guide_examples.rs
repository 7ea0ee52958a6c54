//! The guide's compiled examples, run as tests: the getting-started cluster runs to the end,
//! and its in-memory storage passes the storage conformance suite (the testing chapter
//! includes the `StoreBuilder` below).

#[path = "../examples/getting_started.rs"]
mod getting_started;

use getting_started::{Command, KvTypes, LogStore, StateMachine};
use quorate::StorageError;
use quorate::testing::suite::{StateMachinePersistence, StoreBuilder, Suite};

#[test]
fn getting_started_cluster_writes_and_reads() {
    if let Err(e) = getting_started::main() {
        panic!("the getting-started example failed: {e}");
    }
}

// ANCHOR: store_builder
/// Opens the getting-started storage for the conformance suite.
struct GettingStartedStorage;

impl StoreBuilder<KvTypes> for GettingStartedStorage {
    type LogStore = LogStore;
    type StateMachine = StateMachine;

    async fn build(&self) -> Result<(LogStore, StateMachine), StorageError> {
        Ok((LogStore::default(), StateMachine::default()))
    }

    async fn reopen(&self, log: LogStore, sm: StateMachine) -> Result<(LogStore, StateMachine), StorageError> {
        // In memory, a "restart" hands back the same memory. A disk-backed builder drops
        // `log` and `sm` here and opens the files again, so the suite sees only what was
        // really made durable.
        Ok((log, sm))
    }

    fn make_request(&self, index: u64) -> Command {
        Command::Set { key: format!("k{}", index % 3), value: format!("v{index}") }
    }

    fn state_machine_persistence(&self) -> StateMachinePersistence {
        StateMachinePersistence::Persistent
    }
}

#[tokio::test]
async fn getting_started_storage_keeps_the_contract() {
    if let Err(e) = Suite::test_all(&GettingStartedStorage).await {
        panic!("the getting-started storage breaks the contract: {e}");
    }
}
// ANCHOR_END: store_builder

// ANCHOR: partition_test
mod partition {
    use std::sync::Arc;
    use std::time::Duration;

    use quorate::testing::invariants::{NodeView, check_logs_and_state_machines};
    use quorate::testing::linearizability::{KvInput, KvOp, KvOutput, check_kv_history};
    use quorate::testing::{MemLogStore, MemStateMachine, Request, Router, TypeConfig};
    use quorate::{BasicNode, Config, Raft, ReadPolicy};

    struct Node {
        raft: Raft<TypeConfig>,
        log: MemLogStore,
        sm: MemStateMachine,
    }

    /// A leader cut off from the others is replaced, and the cluster stays consistent.
    /// tokio's clock is paused: timeouts fire as soon as every task is idle, so the test
    /// takes milliseconds of real time and runs the same way every time.
    #[tokio::test(start_paused = true)]
    async fn isolated_leader_is_replaced() -> Result<(), Box<dyn std::error::Error>> {
        let router = Router::new();
        let config = Arc::new(Config::default());
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
            let (log, sm) = (MemLogStore::new(), MemStateMachine::new());
            let raft = Raft::new(id, config.clone(), router.factory(id), log.clone(), sm.clone()).await?;
            router.add_node(id, raft.clone());
            nodes.push(Node { raft, log, sm });
        }
        nodes[0].raft.initialize((1..=3).map(|id| (id, BasicNode::new(id))).collect()).await?;
        let wait = Some(Duration::from_secs(10));
        let m = nodes[0].raft.wait(wait).metrics(|m| m.current_leader.is_some(), "first leader").await?;
        let old = m.current_leader.ok_or("a leader")?;

        // Cut the leader off: every link to and from it fails.
        router.isolate(old);
        let survivor = nodes.iter().find(|n| n.raft.id() != old).ok_or("another node")?;
        let m =
            survivor.raft.wait(wait).metrics(|m| m.current_leader.is_some_and(|l| l != old), "a new leader").await?;
        let new = &nodes[m.current_leader.ok_or("a leader")? as usize - 1];

        // Record what the client saw, with virtual timestamps, and check it.
        let t0 = tokio::time::Instant::now();
        let at = || tokio::time::Instant::now().duration_since(t0).as_micros() as u64;
        let mut history = Vec::new();
        let call = at();
        new.raft.client_write(Request::set("k", "after")).await?;
        history.push(KvOp::returned(1, KvInput::put("k", "after"), call, at(), KvOutput::Put));
        let call = at();
        new.raft.ensure_linearizable(ReadPolicy::ReadIndex).await?;
        let read = new.sm.data().get("k").cloned();
        history.push(KvOp::returned(2, KvInput::get("k"), call, at(), KvOutput::Get(read)));
        assert!(check_kv_history(&history)?.is_linearizable());

        // Heal; the old leader catches up, and every node agrees.
        router.restore(old);
        let last = new.raft.metrics().borrow().last_log_id;
        for n in &nodes {
            n.raft.wait(wait).applied_index_at_least(last.map(|l| l.index), "caught up").await?;
        }
        let views: Vec<NodeView<'_>> = nodes
            .iter()
            .map(|n| NodeView { id: n.raft.id(), log: &n.log, sm: &n.sm, metrics: n.raft.metrics().borrow().clone() })
            .collect();
        check_logs_and_state_machines(&views)?;
        for n in &nodes {
            n.raft.shutdown().await?;
        }
        Ok(())
    }
}
// ANCHOR_END: partition_test
