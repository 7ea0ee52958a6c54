//! The log under a fault layer that models a page cache: a crash of the process keeps every
//! write, a power loss keeps only what was synced.

use std::io;
use std::sync::Arc;

use quorate::file_store::{FileLogStore, FileStoreOptions};
use quorate::{Entry, IOFlushed, RaftLogStorage};

use crate::C;
use crate::mem_disk::MemDisk;

type LogStore = FileLogStore<C>;

fn entry(index: u64) -> Entry<C> {
    crate::entry(1, index)
}

/// Append `entries` and wait for the flush callback; returns its result.
async fn append(store: &mut LogStore, entries: Vec<Entry<C>>) -> Result<(), io::Error> {
    let (cb, rx) = IOFlushed::with_receiver();
    store.append(entries, cb).await.unwrap();
    rx.await.unwrap()
}

async fn last_index(store: &mut LogStore) -> Option<u64> {
    store.get_log_state().await.unwrap().last_log_id.map(|l| l.index)
}

fn open(disk: &MemDisk) -> Result<LogStore, quorate::file_store::FileStoreError> {
    LogStore::open_on(Arc::new(disk.clone()), FileStoreOptions::default())
}

/// Entries written but never synced (the process died before its fsync) are read back from the
/// page cache by the next start. Recovery must sync them before the node trusts them: the
/// restarted node reports them in its log, so it acknowledges them to a leader; a power loss
/// after that must not take them away.
#[tokio::test]
async fn a_crash_then_a_power_loss_keeps_what_recovery_reported() {
    let disk = MemDisk::default();
    let mut store = open(&disk).unwrap();
    append(&mut store, (1..=5).map(entry).collect()).await.unwrap();

    disk.files().syncs_fail = true;
    let unsynced = append(&mut store, (6..=10).map(entry).collect()).await;
    assert!(unsynced.is_err(), "the flush of an append whose fsync failed is not reported");
    drop(store); // the process crashes; the page cache keeps its writes
    disk.files().syncs_fail = false;

    let mut store = open(&disk).unwrap();
    let recovered = last_index(&mut store).await;
    assert_eq!(recovered, Some(10), "the page cache's records are read back");
    drop(store);

    disk.power_loss();
    let mut store = open(&disk).unwrap_or_else(|e| panic!("the node cannot start after the power loss: {e}"));
    assert_eq!(last_index(&mut store).await, recovered, "the power loss took entries the restarted node reported");
}

/// A power loss right after a segment was created, before its header was synced, leaves an
/// empty newest segment (or a torn header): it held nothing, so the log opens without it.
#[tokio::test]
async fn a_newest_segment_torn_before_its_header_opens() {
    let disk = MemDisk::default();
    {
        let mut store = open(&disk).unwrap();
        append(&mut store, (1..=3).map(entry).collect()).await.unwrap();
    }
    // The next start creates a new segment; it is torn to a few bytes of its header.
    {
        let _store = open(&disk).unwrap();
    }
    {
        let mut f = disk.files();
        let newest = f.cached.keys().next_back().cloned().unwrap();
        f.cached.get_mut(&newest).unwrap().truncate(5);
    }
    let mut store = open(&disk).unwrap();
    assert_eq!(last_index(&mut store).await, Some(3));
}
