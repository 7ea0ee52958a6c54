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
