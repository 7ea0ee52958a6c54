//! quorate's storage conformance suite, run against the groups of one shared log: every store
//! the suite builds is a new group of the same [`SharedLog`], every reopen restarts the whole
//! shared log from its directory, and a neighbour group writes and purges between the suite's
//! steps, so its records are interleaved with the group's in the same segments.

use std::sync::{Arc, Mutex};

use quorate::StorageError;
use quorate::error::{ErrorSubject, ErrorVerb};
use quorate::file_store::{FileStoreOptions, GroupLogStore, SharedLog};
use quorate::testing::suite::{StateMachinePersistence, StoreBuilder, Suite};
use quorate::testing::{MemStateMachine, Request};
use quorate::{IOFlushed, RaftLogStorage};

use crate::shared::state_of;
use crate::{C, entry, log_id};

/// The group that writes beside the suite's groups.
const NEIGHBOUR: u64 = 0;

struct SharedStores {
    dir: tempfile::TempDir,
    inner: Mutex<Inner>,
}

struct Inner {
    /// `None` only while restarting.
    log: Option<Arc<SharedLog<C>>>,
    next_group: u64,
    /// The neighbour's last index.
    neighbour_last: u64,
}

fn storage_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageError::new(ErrorSubject::Logs, ErrorVerb::Read, anyerror::AnyError::new(&e))
}

fn options() -> FileStoreOptions {
    // Small segments: the suite's records spread over many, with headers and deletions.
    FileStoreOptions::default().segment_bytes(1024)
}

impl SharedStores {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = SharedLog::open_with(dir.path(), options()).unwrap();
        Self { dir, inner: Mutex::new(Inner { log: Some(Arc::new(log)), next_group: 1, neighbour_last: 0 }) }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self) -> Arc<SharedLog<C>> {
        self.inner().log.clone().expect("the shared log is open")
    }

    /// The neighbour appends an entry (and every fifth time purges most of its log), durably.
    async fn neighbour_writes(&self) {
        let index = {
            let mut inner = self.inner();
            inner.neighbour_last += 1;
            inner.neighbour_last
        };
        let mut store = self.log().group(NEIGHBOUR).unwrap();
        let (cb, rx) = IOFlushed::with_receiver();
        store.append(vec![entry(1, index)], cb).await.unwrap();
        rx.await.unwrap().unwrap();
        if index % 5 == 0 {
            store.purge(log_id(1, index - 2)).await.unwrap();
        }
    }

    /// After a restart, the neighbour's log is what it wrote.
    async fn check_neighbour(&self) {
        let last = self.inner().neighbour_last;
        let state = state_of(&mut self.log().group(NEIGHBOUR).unwrap()).await;
        assert_eq!(state.entries.last().map(|l| l.index), Some(last), "{state:?}");
    }

    /// Drop the shared log and open it again from its directory.
    fn restart(&self) -> Result<(), StorageError> {
        let mut inner = self.inner();
        let log = inner.log.take().expect("the shared log is open");
        // Every store of the suite's groups is dropped by now; this was the last handle.
        drop(Arc::into_inner(log).expect("no other handle of the shared log"));
        inner.log = Some(Arc::new(SharedLog::open_with(self.dir.path(), options()).map_err(storage_error)?));
        Ok(())
    }
}

impl StoreBuilder<C> for SharedStores {
    type LogStore = GroupLogStore<C>;
    type StateMachine = MemStateMachine;

    async fn build(&self) -> Result<(GroupLogStore<C>, MemStateMachine), StorageError> {
        self.neighbour_writes().await;
        let group = {
            let mut inner = self.inner();
            inner.next_group += 1;
            inner.next_group
        };
        Ok((self.log().group(group).map_err(storage_error)?, MemStateMachine::new()))
    }

    async fn reopen(
        &self,
        log: GroupLogStore<C>,
        sm: MemStateMachine,
    ) -> Result<(GroupLogStore<C>, MemStateMachine), StorageError> {
        let group = log.group_id();
        self.neighbour_writes().await;
        drop(log);
        self.restart()?;
        self.check_neighbour().await;
        Ok((self.log().group(group).map_err(storage_error)?, sm))
    }

    fn make_request(&self, index: u64) -> Request {
        Request::set(format!("k{index}"), format!("v{index}"))
    }

    fn state_machine_persistence(&self) -> StateMachinePersistence {
        StateMachinePersistence::Persistent
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_the_shared_log_passes_the_conformance_suite_beside_another() {
    let stores = SharedStores::new();
    if let Err(e) = Suite::test_all(&stores).await {
        panic!("{e}");
    }
    // Every group the suite wrote to is still there after one more restart.
    stores.restart().unwrap();
    assert!(stores.log().groups().len() > 5, "{:?}", stores.log().groups());
}
