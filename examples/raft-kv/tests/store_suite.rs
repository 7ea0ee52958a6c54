//! quorate's storage conformance suite, run against raft-kv's durable log and state machine.

use std::path::PathBuf;
use std::sync::Mutex;

use quorate::StorageError;
use quorate::error::{ErrorSubject, ErrorVerb};
use quorate::testing::suite::{StateMachinePersistence, StoreBuilder, Suite};
use raft_kv::store::{LogStore, StateMachineStore};
use raft_kv::{Request, TypeConfig};

/// Builds each store pair in a fresh temporary directory and reopens the latest one from disk.
#[derive(Default)]
struct DiskStores {
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

fn io_error(e: std::io::Error) -> StorageError {
    StorageError::new(ErrorSubject::Logs, ErrorVerb::Read, anyerror::AnyError::new(&e))
}

fn store_error(e: raft_kv::store::StoreError) -> StorageError {
    StorageError::new(ErrorSubject::Logs, ErrorVerb::Read, anyerror::AnyError::new(&e))
}

impl DiskStores {
    fn latest(&self) -> Option<PathBuf> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner()).last().map(|d| d.path().to_path_buf())
    }

    fn open(dir: &std::path::Path) -> Result<(LogStore, StateMachineStore), StorageError> {
        let log = LogStore::open(&dir.join("log")).map_err(|e| store_error(e.into()))?;
        let sm = StateMachineStore::open(&dir.join("sm")).map_err(store_error)?;
        Ok((log, sm))
    }
}

impl StoreBuilder<TypeConfig> for DiskStores {
    type LogStore = LogStore;
    type StateMachine = StateMachineStore;

    async fn build(&self) -> Result<(LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(io_error)?;
        let stores = Self::open(dir.path())?;
        self.dirs.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
        Ok(stores)
    }

    async fn reopen(
        &self,
        log: LogStore,
        sm: StateMachineStore,
    ) -> Result<(LogStore, StateMachineStore), StorageError> {
        // The suite reopens the stores it built last; closing them first is the restart.
        drop((log, sm));
        let dir = self.latest().ok_or_else(|| io_error(std::io::Error::other("nothing built yet")))?;
        Self::open(&dir)
    }

    fn make_request(&self, index: u64) -> Request {
        Request::Set { key: format!("k{index}"), value: format!("v{index}") }
    }

    fn state_machine_persistence(&self) -> StateMachinePersistence {
        // The state machine keeps its snapshot file; quorate replays the log after it.
        StateMachinePersistence::Snapshot
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_storage_passes_the_conformance_suite() {
    if let Err(e) = Suite::test_all(&DiskStores::default()).await {
        panic!("{e}");
    }
}
