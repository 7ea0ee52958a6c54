use std::io;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;
use tokio::time::Instant;

use super::{blanks, log_id};
use crate::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use crate::testing::{CrashPoint, CrashSwitch, MemLogStore, StorageCall, TypeConfig};
use crate::types::{Entry, LogId, Vote};

type FlushRx = oneshot::Receiver<Result<(), io::Error>>;

/// Append `entries` and return the receiver of their flush.
async fn append(store: &mut MemLogStore, entries: Vec<Entry<TypeConfig>>) -> FlushRx {
    let (callback, rx) = IOFlushed::with_receiver();
    store.append(entries, callback).await.expect("append follows the log");
    rx
}

fn is_flushed(rx: &mut FlushRx) -> bool {
    match rx.try_recv() {
        Ok(result) => result.is_ok(),
        Err(TryRecvError::Empty) => false,
        Err(TryRecvError::Closed) => panic!("the flush callback was dropped"),
    }
}

fn indexes(entries: &[Entry<TypeConfig>]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

fn state(purged: Option<LogId<TypeConfig>>, last: Option<LogId<TypeConfig>>) -> LogState<TypeConfig> {
    LogState { last_purged_log_id: purged, last_log_id: last }
}

#[tokio::test]
async fn appended_entries_are_readable_and_flushed_at_once() {
    let mut store = MemLogStore::new();
    assert_eq!(store.get_log_state().await.unwrap(), state(None, None));

    let mut rx = append(&mut store, blanks(1, 0..3)).await;
    assert!(is_flushed(&mut rx));
    let mut rx = append(&mut store, blanks(2, 3..5)).await;
    assert!(is_flushed(&mut rx));

    let mut reader = store.get_log_reader().await;
    assert_eq!(indexes(&reader.try_get_log_entries(1..4).await.unwrap()), vec![1, 2, 3]);
    assert_eq!(store.get_log_state().await.unwrap(), state(None, Some(log_id(2, 4))));
    assert_eq!(store.last_log_id(), Some(log_id(2, 4)));
    assert_eq!(store.durable_last_log_id(), Some(log_id(2, 4)));
    assert_eq!(store.append_count(), 2);
    assert_eq!(indexes(&store.entries()), vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn reader_returns_what_is_left_of_a_range_and_never_panics() {
    let mut store = MemLogStore::new();
    append(&mut store, blanks(1, 0..3)).await;
    let mut reader = store.get_log_reader().await;

    assert_eq!(indexes(&reader.try_get_log_entries(2..10).await.unwrap()), vec![2]);
    assert!(reader.try_get_log_entries(5..10).await.unwrap().is_empty());
    assert!(reader.try_get_log_entries(1..1).await.unwrap().is_empty());
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 3..1;
    assert!(reader.try_get_log_entries(reversed).await.unwrap().is_empty());

    // A reader sees what is appended after it was made.
    append(&mut store, blanks(1, 3..4)).await;
    assert_eq!(indexes(&reader.try_get_log_entries(0..10).await.unwrap()), vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn append_that_leaves_a_gap_or_overlaps_fails_and_changes_nothing() {
    let mut store = MemLogStore::new();
    append(&mut store, blanks(1, 0..2)).await;

    for bad in [blanks(1, 3..4), blanks(1, 1..3), vec![Entry::new_blank(log_id(1, 2)), Entry::new_blank(log_id(1, 4))]]
    {
        let (callback, mut rx) = IOFlushed::with_receiver();
        assert!(store.append(bad, callback).await.is_err());
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Closed, "no flush of a failed append");
    }
    // An older leader's entry cannot follow a newer one.
    append(&mut store, blanks(3, 2..3)).await;
    let (callback, _rx) = IOFlushed::with_receiver();
    assert!(store.append(blanks(2, 3..4), callback).await.is_err());

    assert_eq!(indexes(&store.entries()), vec![0, 1, 2]);
    assert_eq!(store.append_count(), 2);
}

#[tokio::test]
async fn truncate_deletes_from_the_given_index() {
    let mut store = MemLogStore::new();
    append(&mut store, blanks(1, 0..5)).await;

    store.truncate(log_id(1, 3)).await.unwrap();
    assert_eq!(indexes(&store.entries()), vec![0, 1, 2]);
    assert_eq!(store.get_log_state().await.unwrap(), state(None, Some(log_id(1, 2))));

    // Past the end: nothing to delete.
    store.truncate(log_id(1, 7)).await.unwrap();
    assert_eq!(store.last_log_id(), Some(log_id(1, 2)));

    // A new leader's entries follow the truncated log.
    append(&mut store, blanks(2, 3..4)).await;
    assert_eq!(store.last_log_id(), Some(log_id(2, 3)));
}

#[tokio::test]
async fn purge_deletes_up_to_the_given_id_and_remembers_it() {
    let mut store = MemLogStore::new();
    append(&mut store, blanks(1, 0..5)).await;

    store.purge(log_id(1, 1)).await.unwrap();
    assert_eq!(indexes(&store.entries()), vec![2, 3, 4]);
    assert_eq!(store.get_log_state().await.unwrap(), state(Some(log_id(1, 1)), Some(log_id(1, 4))));

    // Purging an older id changes nothing.
    store.purge(log_id(1, 0)).await.unwrap();
    assert_eq!(store.get_log_state().await.unwrap(), state(Some(log_id(1, 1)), Some(log_id(1, 4))));

    // Truncating purged entries is refused.
    assert!(store.truncate(log_id(1, 1)).await.is_err());

    // Purge everything: the last log id is the purged one.
    store.purge(log_id(1, 4)).await.unwrap();
    assert!(store.entries().is_empty());
    assert_eq!(store.get_log_state().await.unwrap(), state(Some(log_id(1, 4)), Some(log_id(1, 4))));

    // Purge past the end (after installing a snapshot): the log continues after it.
    store.purge(log_id(2, 9)).await.unwrap();
    assert_eq!(store.get_log_state().await.unwrap(), state(Some(log_id(2, 9)), Some(log_id(2, 9))));
    append(&mut store, blanks(2, 10..11)).await;
    assert_eq!(store.last_log_id(), Some(log_id(2, 10)));
}

#[tokio::test]
async fn vote_survives_a_reopen_and_committed_once_a_later_append_is_flushed() {
    let mut store = MemLogStore::new();
    assert_eq!(store.read_vote().await.unwrap(), None);
    assert_eq!(store.read_committed().await.unwrap(), None);

    store.save_vote(&Vote::new(3, 2)).await.unwrap();
    store.save_committed(Some(log_id(1, 0))).await.unwrap();
    assert_eq!(store.vote(), Some(Vote::new(3, 2)));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 0)), "readable at once");

    // The committed id is lazily durable: a crash before the next flush loses it.
    let mut store = store.reopen();
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new(3, 2)));
    assert_eq!(store.read_committed().await.unwrap(), None);

    store.save_committed(Some(log_id(1, 0))).await.unwrap();
    append(&mut store, blanks(1, 0..1)).await;
    let mut store = store.reopen();
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 0)));
}

/// A store with a durable log of four entries and, unflushed: a truncate (1 unit), an append
/// of 3 entries (3 units), a committed id (1 unit).
async fn store_with_unflushed_queue() -> MemLogStore {
    let mut store = MemLogStore::new();
    append(&mut store, blanks(1, 0..4)).await;
    store.set_flush_stalled(true);
    store.truncate(log_id(1, 2)).await.unwrap();
    append(&mut store, blanks(2, 2..5)).await;
    store.save_committed(Some(log_id(2, 3))).await.unwrap();
    store
}

#[tokio::test]
async fn a_crash_can_cut_the_unflushed_operations_anywhere() {
    assert_eq!(store_with_unflushed_queue().await.pending_units(), 5);
    // Units kept, then the log and committed id that survive.
    let cases = [
        (0, blanks(1, 0..4), None),
        (1, blanks(1, 0..2), None),
        (3, [blanks(1, 0..2), blanks(2, 2..4)].concat(), None),
        (5, [blanks(1, 0..2), blanks(2, 2..5)].concat(), Some(log_id(2, 3))),
    ];
    for (keep, entries, committed) in cases {
        let mut reopened = store_with_unflushed_queue().await.reopen_keeping(keep);
        assert_eq!(reopened.entries(), entries, "keeping {keep} units");
        assert_eq!(reopened.read_committed().await.unwrap(), committed, "keeping {keep} units");
        assert_eq!(reopened.pending_units(), 0);
    }
}

#[tokio::test]
async fn reopen_drops_unflushed_entries_and_fails_old_handles() {
    let mut store = MemLogStore::new();
    let mut old_reader = store.get_log_reader().await;
    append(&mut store, blanks(1, 0..2)).await;
    store.set_flush_stalled(true);
    let mut rx = append(&mut store, blanks(1, 2..4)).await;
    assert!(!is_flushed(&mut rx));
    assert_eq!(store.last_log_id(), Some(log_id(1, 3)));
    assert_eq!(store.durable_last_log_id(), Some(log_id(1, 1)));

    let mut reopened = store.reopen();
    reopened.set_flush_stalled(false);
    assert_eq!(indexes(&store.entries()), vec![0, 1], "inspection sees the new state");
    assert_eq!(reopened.get_log_state().await.unwrap(), state(None, Some(log_id(1, 1))));
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Closed, "a lost flush never completes");

    // The crashed node's handles fail.
    let (callback, _rx) = IOFlushed::with_receiver();
    assert!(store.append(blanks(1, 2..3), callback).await.is_err());
    assert!(store.save_vote(&Vote::new(1, 1)).await.is_err());
    assert!(old_reader.try_get_log_entries(0..2).await.is_err());

    // The restarted node continues from the durable log.
    let mut rx = append(&mut reopened, blanks(2, 2..3)).await;
    assert!(is_flushed(&mut rx));
    let mut reader = reopened.get_log_reader().await;
    assert_eq!(indexes(&reader.try_get_log_entries(0..10).await.unwrap()), vec![0, 1, 2]);
}

#[tokio::test]
async fn truncate_becomes_durable_with_the_next_flushed_append() {
    let mut store = MemLogStore::new();
    append(&mut store, blanks(1, 0..4)).await;

    // Not yet durable: a crash brings the entries back.
    store.truncate(log_id(1, 2)).await.unwrap();
    let mut store = store.reopen();
    assert_eq!(indexes(&store.entries()), vec![0, 1, 2, 3]);

    // Durable once a later append is flushed.
    store.truncate(log_id(1, 2)).await.unwrap();
    append(&mut store, blanks(2, 2..3)).await;
    let store = store.reopen();
    assert_eq!(store.entries(), [blanks(1, 0..2), blanks(2, 2..3)].concat());
}

#[tokio::test(start_paused = true)]
async fn delayed_flushes_complete_after_the_delay_and_in_order() {
    let mut store = MemLogStore::new();
    let start = Instant::now();
    store.set_flush_delay(Duration::from_millis(10));
    let mut first = append(&mut store, blanks(1, 0..1)).await;
    store.set_flush_delay(Duration::from_millis(1));
    let second = append(&mut store, blanks(1, 1..2)).await;
    assert!(!is_flushed(&mut first));
    assert_eq!(store.durable_last_log_id(), None);

    // The second flush is due first; it completes the first one too, before itself.
    second.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(1));
    assert!(is_flushed(&mut first));
    assert_eq!(store.durable_last_log_id(), Some(log_id(1, 1)));
}

#[tokio::test(start_paused = true)]
async fn stalled_flushes_complete_in_order_when_resumed() {
    let mut store = MemLogStore::new();
    store.set_flush_stalled(true);
    let mut first = append(&mut store, blanks(1, 0..1)).await;
    let mut second = append(&mut store, blanks(1, 1..2)).await;
    store.set_flush_delay(Duration::from_millis(10));
    let mut third = append(&mut store, blanks(1, 2..3)).await;
    assert!(!is_flushed(&mut first) && !is_flushed(&mut second));

    // Resuming completes what is due (the first two), not the delayed third.
    store.set_flush_stalled(false);
    assert!(is_flushed(&mut first) && is_flushed(&mut second));
    assert!(!is_flushed(&mut third));
    assert_eq!(store.durable_last_log_id(), Some(log_id(1, 1)));

    // A delay that passes while stalled completes on resume.
    store.set_flush_stalled(true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!is_flushed(&mut third));
    store.set_flush_stalled(false);
    assert!(is_flushed(&mut third));
    assert_eq!(store.durable_last_log_id(), Some(log_id(1, 2)));
}

#[tokio::test]
async fn a_crash_switch_freezes_after_the_armed_call_and_fails_frozen_calls_on_release() {
    let mut store = MemLogStore::new();
    let switch = CrashSwitch::new();
    store.set_crash_switch(switch.clone());
    append(&mut store, blanks(1, 0..2)).await;
    store.set_flush_stalled(true);

    // Count from the next truncate: it and one more mutating call complete, then the node freezes.
    switch.arm(CrashPoint { from: Some(StorageCall::Truncate), calls: 2 });
    store.save_vote(&Vote::new(2, 1)).await.unwrap();
    store.truncate(log_id(1, 1)).await.unwrap();
    let frozen = {
        let mut store = store.clone();
        tokio::spawn(async move { store.append(blanks(2, 1..2), IOFlushed::with_receiver().0).await })
    };
    let tripped = tokio::time::timeout(Duration::from_secs(1), switch.wait_tripped()).await;
    assert_eq!(tripped.ok(), Some(StorageCall::Append));
    assert_eq!(store.last_log_id(), Some(log_id(2, 1)), "the call that trips did its work");

    // Every later call pends, reads too.
    let mut reader = store.get_log_reader().await;
    let read = tokio::spawn(async move { reader.try_get_log_entries(0..2).await });
    tokio::task::yield_now().await;
    assert!(!frozen.is_finished() && !read.is_finished());

    // Crash, then release: the frozen calls fail, the new process's pass.
    let mut reopened = store.reopen();
    reopened.set_flush_stalled(false);
    switch.release();
    assert!(frozen.await.unwrap().is_err());
    assert!(read.await.unwrap().is_err());
    assert_eq!(switch.tripped(), None);
    append(&mut reopened, blanks(1, 2..3)).await;
    assert_eq!(reopened.last_log_id(), Some(log_id(1, 2)), "the truncate was not durable yet");
}
