//! The log under a fault layer that models a page cache: a crash of the process keeps every
//! write, a power loss keeps only what was synced.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use quorate::file_store::{Disk, DiskFile, FileLogStore, FileStoreOptions};
use quorate::{Entry, IOFlushed, RaftLogStorage};

use crate::C;

type LogStore = FileLogStore<C>;

/// Files as a page cache sees them (`cached`) and as the disk holds them (`durable`), with the
/// names the disk's directory holds.
#[derive(Default)]
struct Files {
    cached: BTreeMap<String, Vec<u8>>,
    durable: BTreeMap<String, Vec<u8>>,
    durable_names: BTreeSet<String>,
    /// While set, every sync fails: the process dies before its fsync returns.
    syncs_fail: bool,
}

#[derive(Clone, Default)]
struct MemDisk(Arc<Mutex<Files>>);

impl MemDisk {
    fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.0.lock().unwrap()
    }

    /// The power goes out: what was not synced is gone.
    fn power_loss(&self) {
        let mut f = self.files();
        let names = f.durable_names.clone();
        f.cached = names.into_iter().map(|n| (n.clone(), f.durable.get(&n).cloned().unwrap_or_default())).collect();
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        let mut f = self.files();
        if f.syncs_fail {
            return Err(io::Error::other("injected: the process died before fsync returned"));
        }
        let content = f.cached.get(name).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        f.durable.insert(name.to_string(), content);
        Ok(())
    }
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl Disk for MemDisk {
    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from("/mem").join(name)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.files().cached.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.files().cached.get(name).cloned().ok_or_else(not_found)
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn DiskFile>> {
        self.files().cached.insert(name.to_string(), Vec::new());
        Ok(Box::new(MemFile { disk: self.clone(), name: name.to_string() }))
    }

    fn set_len(&self, name: &str, len: u64) -> io::Result<()> {
        self.files().cached.get_mut(name).ok_or_else(not_found)?.truncate(len as usize);
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.files().cached.remove(name).map(|_| ()).ok_or_else(not_found)
    }

    fn sync_file(&self, name: &str) -> io::Result<()> {
        self.sync(name)
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut f = self.files();
        if f.syncs_fail {
            return Err(io::Error::other("injected: the process died before fsync returned"));
        }
        f.durable_names = f.cached.keys().cloned().collect();
        Ok(())
    }
}

struct MemFile {
    disk: MemDisk,
    name: String,
}

impl DiskFile for MemFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.disk.files().cached.get_mut(&self.name).ok_or_else(not_found)?.extend_from_slice(buf);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.disk.sync(&self.name)
    }
}

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
