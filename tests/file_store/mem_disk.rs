//! [`MemDisk`]: a [`Disk`] in memory that models a page cache for the fault tests: a crash of
//! the process keeps every write, a power loss keeps only what was synced. A test can also
//! hold the writer thread inside a sync ([`MemDisk::close_gate`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

use quorate::file_store::{Disk, DiskFile};

/// Files as a page cache sees them (`cached`) and as the disk holds them (`durable`), with the
/// names the disk's directory holds.
#[derive(Default)]
pub struct Files {
    pub cached: BTreeMap<String, Vec<u8>>,
    durable: BTreeMap<String, Vec<u8>>,
    durable_names: BTreeSet<String>,
    /// While set, every sync fails: the process dies before its fsync returns.
    pub syncs_fail: bool,
}

/// A door that file syncs wait at while it is closed, so that a test can hold the writer
/// thread inside an `fdatasync` and queue operations behind it.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    /// Syncs waiting at the closed gate.
    waiting: usize,
}

/// A directory in memory that models a page cache.
#[derive(Clone, Default)]
pub struct MemDisk {
    files: Arc<Mutex<Files>>,
    gate: Arc<Gate>,
}

impl MemDisk {
    pub fn files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap()
    }

    /// A disk holding `files`, as if synced.
    pub fn with_files(files: BTreeMap<String, Vec<u8>>) -> Self {
        let disk = Self::default();
        {
            let mut f = disk.files();
            f.durable_names = files.keys().cloned().collect();
            f.durable = files.clone();
            f.cached = files;
        }
        disk
    }

    /// The power goes out: what was not synced is gone.
    pub fn power_loss(&self) {
        let mut f = self.files();
        let names = f.durable_names.clone();
        f.cached = names.into_iter().map(|n| (n.clone(), f.durable.get(&n).cloned().unwrap_or_default())).collect();
    }

    /// What this disk would hold after a power loss now, as a new disk (the process that
    /// writes this one may go on running; the copy is the machine that restarts).
    pub fn after_power_loss(&self) -> MemDisk {
        let f = self.files();
        let durable = f.durable_names.iter().map(|n| (n.clone(), f.durable.get(n).cloned().unwrap_or_default()));
        MemDisk::with_files(durable.collect())
    }

    /// From now on, file syncs wait until [`open_gate`](Self::open_gate).
    pub fn close_gate(&self) {
        self.gate.state.lock().unwrap().closed = true;
    }

    pub fn open_gate(&self) {
        self.gate.state.lock().unwrap().closed = false;
        self.gate.changed.notify_all();
    }

    /// Block until a sync waits at the closed gate. Panics after ten seconds without one (a
    /// bound on a broken test, not a way to wait).
    pub fn wait_for_a_held_sync(&self) {
        let state = self.gate.state.lock().unwrap();
        let limit = std::time::Duration::from_secs(10);
        let (_held, waited) = self.gate.changed.wait_timeout_while(state, limit, |s| s.waiting == 0).unwrap();
        assert!(!waited.timed_out(), "no sync reached the closed gate");
    }

    fn pass_gate(&self) {
        let mut state = self.gate.state.lock().unwrap();
        if state.closed {
            state.waiting += 1;
            self.gate.changed.notify_all();
            state = self.gate.changed.wait_while(state, |s| s.closed).unwrap();
            state.waiting -= 1;
        }
    }

    fn sync(&self, name: &str) -> io::Result<()> {
        self.pass_gate();
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
