use std::time::Duration;

use crate::error::StorageError;
use crate::storage::{IOFlushed, LogState, RaftLogStorage};
use crate::testing::suite::{self, StateMachinePersistence, StoreBuilder, Suite, Violation};
use crate::testing::{MemLogReader, MemLogStore, MemStateMachine, MemStoreBuilder, Request, TypeConfig};
use crate::types::{Entry, LogId, Vote};

#[tokio::test]
async fn mem_stores_with_a_persistent_state_machine_pass_the_suite() {
    Suite::test_all(&MemStoreBuilder::persistent()).await.unwrap();
}

#[tokio::test]
async fn mem_stores_with_a_state_machine_restored_from_snapshot_pass_the_suite() {
    Suite::test_all(&MemStoreBuilder::from_snapshot()).await.unwrap();
}

#[tokio::test]
async fn mem_stores_with_delayed_flushes_pass_the_suite() {
    let builder = MemStoreBuilder::persistent().with_flush_delay(Duration::from_millis(2));
    Suite::test_all(&builder).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_runs_on_a_spawned_task() {
    let builder = MemStoreBuilder::from_snapshot();
    tokio::spawn(async move { Suite::test_all(&builder).await }).await.unwrap().unwrap();
}

#[tokio::test]
async fn checks_run_one_by_one() {
    let builder = MemStoreBuilder::persistent();
    suite::vote_survives_reopen(&builder).await.unwrap();
    suite::purge_all_and_beyond_last(&builder).await.unwrap();
    suite::snapshot_round_trip(&builder).await.unwrap();
}

/// A defect planted in a [`FaultyLog`], each breaking one rule of the storage contract.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// `reopen` hands back an empty store: nothing, not even the vote, is durable.
    ForgetsEverythingOnReopen,
    /// The first append's flush completes only after later appends' flushes.
    FlushesOutOfOrder,
    /// `get_log_state` never reports a purged id.
    ForgetsPurgedId,
    /// `truncate` keeps the entry at `since`.
    TruncatesOneTooFew,
}

/// A [`MemLogStore`] with one [`Fault`].
struct FaultyLog {
    inner: MemLogStore,
    fault: Fault,
    appends: u64,
    held: Option<IOFlushed<TypeConfig>>,
}

impl RaftLogStorage<TypeConfig> for FaultyLog {
    type LogReader = MemLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let state = self.inner.get_log_state().await?;
        match self.fault {
            Fault::ForgetsPurgedId => Ok(LogState { last_purged_log_id: None, ..state }),
            _ => Ok(state),
        }
    }

    async fn get_log_reader(&mut self) -> MemLogReader {
        self.inner.get_log_reader().await
    }

    async fn save_vote(&mut self, vote: &Vote<TypeConfig>) -> Result<(), StorageError> {
        self.inner.save_vote(vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<TypeConfig>>, StorageError> {
        self.inner.read_vote().await
    }

    async fn append(
        &mut self,
        entries: Vec<Entry<TypeConfig>>,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), StorageError> {
        self.appends += 1;
        if self.fault != Fault::FlushesOutOfOrder {
            return self.inner.append(entries, callback).await;
        }
        match self.appends {
            1 => {
                self.held = Some(callback);
                self.inner.append(entries, IOFlushed::with_receiver().0).await
            }
            n => {
                self.inner.append(entries, callback).await?;
                if let Some(held) = self.held.take_if(|_| n >= 3) {
                    held.io_completed(Ok(()));
                }
                Ok(())
            }
        }
    }

    async fn truncate(&mut self, since: LogId<TypeConfig>) -> Result<(), StorageError> {
        match self.fault {
            Fault::TruncatesOneTooFew => self.inner.truncate(LogId { index: since.index + 1, ..since }).await,
            _ => self.inner.truncate(since).await,
        }
    }

    async fn purge(&mut self, upto: LogId<TypeConfig>) -> Result<(), StorageError> {
        self.inner.purge(upto).await
    }
}

struct FaultyBuilder(Fault);

impl StoreBuilder<TypeConfig> for FaultyBuilder {
    type LogStore = FaultyLog;
    type StateMachine = MemStateMachine;

    async fn build(&self) -> Result<(FaultyLog, MemStateMachine), StorageError> {
        let log = FaultyLog { inner: MemLogStore::new(), fault: self.0, appends: 0, held: None };
        Ok((log, MemStateMachine::new()))
    }

    async fn reopen(&self, log: FaultyLog, sm: MemStateMachine) -> Result<(FaultyLog, MemStateMachine), StorageError> {
        if self.0 == Fault::ForgetsEverythingOnReopen {
            return self.build().await;
        }
        Ok((FaultyLog { inner: log.inner.reopen(), appends: 0, held: None, ..log }, sm.reopen()))
    }

    fn make_request(&self, index: u64) -> Request {
        Request::set("k", index.to_string())
    }

    fn state_machine_persistence(&self) -> StateMachinePersistence {
        StateMachinePersistence::Persistent
    }
}

/// Run the whole suite on a store with `fault` and return the check that failed.
async fn failed_check(fault: Fault) -> &'static str {
    match Suite::test_all(&FaultyBuilder(fault)).await {
        Ok(()) => panic!("the suite passed a faulty store"),
        Err(e) => {
            assert!(matches!(*e.violation, Violation::Mismatch { .. }), "{e}");
            e.check
        }
    }
}

#[tokio::test]
async fn suite_catches_a_store_that_loses_its_vote() {
    assert_eq!(failed_check(Fault::ForgetsEverythingOnReopen).await, "vote_survives_reopen");
}

#[tokio::test]
async fn suite_catches_flushes_out_of_order() {
    let e = Suite::test_all(&FaultyBuilder(Fault::FlushesOutOfOrder)).await.unwrap_err();
    assert_eq!(e.check, "flush_callbacks_fire_in_append_order");
    assert!(
        matches!(*e.violation, Violation::Mismatch { rule: "flush callbacks complete in append order", .. }),
        "{e}"
    );
}

#[tokio::test]
async fn suite_catches_a_forgotten_purged_id() {
    assert_eq!(failed_check(Fault::ForgetsPurgedId).await, "purge_removes_entries_upto_index");
}

#[tokio::test]
async fn suite_catches_an_off_by_one_truncate() {
    assert_eq!(failed_check(Fault::TruncatesOneTooFew).await, "truncate_removes_entries_since_index");
}

#[tokio::test]
async fn suite_error_names_the_check_and_the_rule() {
    let e = suite::vote_survives_reopen(&FaultyBuilder(Fault::ForgetsEverythingOnReopen)).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "storage suite check `vote_survives_reopen` failed: a saved vote is durable when save_vote returns: \
         expected Some(Vote { term: 2, node_id: Some(0), committed: true }), got None"
    );
}
