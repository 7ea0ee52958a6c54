//! quorate's storage conformance suite, run against the file log store (with the test kit's
//! state machine: the suite checks the log here).

use std::path::PathBuf;
use std::sync::Mutex;

use quorate::StorageError;
use quorate::error::{ErrorSubject, ErrorVerb};
use quorate::file_store::FileLogStore;
use quorate::testing::suite::{StateMachinePersistence, StoreBuilder, Suite};
use quorate::testing::{MemStateMachine, Request};

use crate::C;

/// Builds each log in a fresh temporary directory and reopens the latest one from disk.
#[derive(Default)]
struct FileStores {
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

fn storage_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::new(ErrorSubject::Logs, ErrorVerb::Read, anyerror::AnyError::new(&e))
}

impl FileStores {
    fn latest(&self) -> Option<PathBuf> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner()).last().map(|d| d.path().to_path_buf())
    }
}

impl StoreBuilder<C> for FileStores {
    type LogStore = FileLogStore<C>;
    type StateMachine = MemStateMachine;

    async fn build(&self) -> Result<(FileLogStore<C>, MemStateMachine), StorageError> {
        let dir = tempfile::tempdir().map_err(storage_error)?;
        let log = FileLogStore::open(dir.path()).map_err(storage_error)?;
        self.dirs.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
        Ok((log, MemStateMachine::new()))
    }

    async fn reopen(
        &self,
        log: FileLogStore<C>,
        sm: MemStateMachine,
    ) -> Result<(FileLogStore<C>, MemStateMachine), StorageError> {
        // Dropping the store stops its writer and frees the directory: a restart.
        drop(log);
        let dir = self.latest().ok_or_else(|| storage_error(std::io::Error::other("nothing built yet")))?;
        Ok((FileLogStore::open(&dir).map_err(storage_error)?, sm))
    }

    fn make_request(&self, index: u64) -> Request {
        Request::set(format!("k{index}"), format!("v{index}"))
    }

    fn state_machine_persistence(&self) -> StateMachinePersistence {
        // The test kit's state machine lives in memory and is handed back as it is.
        StateMachinePersistence::Persistent
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_log_store_passes_the_conformance_suite() {
    if let Err(e) = Suite::test_all(&FileStores::default()).await {
        panic!("{e}");
    }
}
