//! [`FileLogStore`]: quorate's [`RaftLogStorage`] over the segmented log files.
//!
//! Entries not yet purged are also kept in memory, in a [`VecDeque`] shared with the readers:
//! readers never touch the files, and an append is visible to them as soon as it returns, as
//! the storage contract requires. The snapshot policy bounds how many entries that is.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::disk::{Disk, FsDisk};
use super::error::FileStoreError;
use super::lock::DataDirLock;
use super::observer::SyncObserver;
use super::record::{self, RecordRef};
use super::writer::{WriteOp, Writer};
use crate::RaftTypeConfig;
use crate::error::{ErrorSubject, ErrorVerb, StorageError};
use crate::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use crate::types::{Entry, LogId, Vote};

/// How a [`FileLogStore`] lays out its files, and who watches it write them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FileStoreOptions {
    /// Start a new segment file once the current one holds this many bytes. Purged entries
    /// leave the disk a whole segment at a time, so this is also about how much disk a purge
    /// may leave behind. Default: 64 MiB.
    pub segment_bytes: u64,
    /// Called after every group commit with what it wrote and how long its `fdatasync` took
    /// (see [`SyncObserver`]). Default: none.
    pub on_sync: Option<SyncObserver>,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        Self { segment_bytes: 64 * 1024 * 1024, on_sync: None }
    }
}

impl FileStoreOptions {
    /// These options with segments of `bytes` bytes.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// These options with `observer` called after every group commit: how to measure fsync
    /// latency and batch sizes.
    pub fn on_sync(mut self, observer: SyncObserver) -> Self {
        self.on_sync = Some(observer);
        self
    }
}

/// The durable Raft log and vote of one node, in a directory of segment files.
///
/// See the [module docs](super) for what is durable when, the files and their format, and
/// recovery. It is generic over the application's [`RaftTypeConfig`]: entries are stored as
/// serde encodes them (in postcard), so any request type that quorate accepts is stored as is.
///
/// Dropping it stops its writer thread after the operations already queued are written (the
/// drop waits for that), then releases the directory's lock.
pub struct FileLogStore<C: RaftTypeConfig> {
    cache: Arc<RwLock<Cache<C>>>,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<WriteOp<C>>>,
    writer: Option<JoinHandle<()>>,
    /// Held until the writer thread has stopped.
    _lock: Option<DataDirLock>,
}

/// Reads the entries of a [`FileLogStore`], from memory: never from the files.
pub struct FileLogReader<C: RaftTypeConfig> {
    cache: Arc<RwLock<Cache<C>>>,
}

/// What readers see: every operation whose call has returned.
struct Cache<C: RaftTypeConfig> {
    vote: Option<Vote<C>>,
    committed: Option<LogId<C>>,
    purged: Option<LogId<C>>,
    /// Consecutive entries after `purged`.
    entries: VecDeque<Entry<C>>,
}

impl<C: RaftTypeConfig> Cache<C> {
    fn last_log_id(&self) -> Option<LogId<C>> {
        self.entries.back().map(|e| e.log_id).or(self.purged)
    }
}

fn read_lock<C: RaftTypeConfig>(cache: &RwLock<Cache<C>>) -> RwLockReadGuard<'_, Cache<C>> {
    // No update of the cache can panic half-way: a poisoned lock holds a consistent cache.
    cache.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock<C: RaftTypeConfig>(cache: &RwLock<Cache<C>>) -> RwLockWriteGuard<'_, Cache<C>> {
    cache.write().unwrap_or_else(|e| e.into_inner())
}

fn writer_gone(subject: ErrorSubject, verb: ErrorVerb) -> StorageError {
    StorageError::new(subject, verb, anyerror::AnyError::error("the log writer thread has stopped"))
}

impl<C: RaftTypeConfig> FileLogStore<C> {
    /// Open (or create) the log in directory `dir` with default [`FileStoreOptions`]: lock the
    /// directory, recover what a crash left, and start the writer thread.
    ///
    /// It blocks while it reads and syncs the log: call it before starting the node, or from
    /// `spawn_blocking`.
    ///
    /// # Errors
    /// [`FileStoreError::Locked`] if another process uses `dir`; [`FileStoreError::Io`] if a
    /// file cannot be read, written or synced; [`FileStoreError::Corrupt`] if the log cannot
    /// be read back as it was written (see [recovery](super#recovery)). Each names the file.
    pub fn open(dir: &Path) -> Result<Self, FileStoreError> {
        Self::open_with(dir, FileStoreOptions::default())
    }

    /// [`open`](Self::open) with `options`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with(dir: &Path, options: FileStoreOptions) -> Result<Self, FileStoreError> {
        let lock = DataDirLock::acquire(dir)?;
        let disk = FsDisk::open(dir).map_err(|e| FileStoreError::io(dir, e))?;
        let mut store = Self::open_on(Arc::new(disk), options)?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// [`open_with`](Self::open_with) on any [`Disk`], e.g. a test's fault layer. It takes no
    /// lock: the disk is the caller's.
    ///
    /// # Errors
    /// As [`open`](Self::open), but for the lock.
    pub fn open_on(disk: Arc<dyn Disk>, options: FileStoreOptions) -> Result<Self, FileStoreError> {
        let recovered = record::recover::<C>(disk.as_ref())?;
        tracing::info!(
            dir = %disk.path("").display(),
            entries = recovered.entries.len(),
            segments = recovered.segments.len(),
            vote = %crate::types::DisplayOption(&recovered.header.vote),
            "recovered the log"
        );
        let cache = Cache {
            vote: recovered.header.vote,
            committed: recovered.header.committed,
            purged: recovered.header.purged,
            entries: recovered.entries,
        };
        let dir = disk.path("");
        let writer = Writer::open(disk, recovered.segments, recovered.header, options.segment_bytes, options.on_sync)
            .map_err(|e| FileStoreError::io(&dir, e))?;
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("quorate-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| FileStoreError::io(&dir, e))?;
        Ok(Self { cache: Arc::new(RwLock::new(cache)), tx: Some(tx), writer: Some(writer), _lock: None })
    }

    fn send(&self, op: WriteOp<C>, subject: ErrorSubject, verb: ErrorVerb) -> Result<(), StorageError> {
        let tx = self.tx.as_ref().ok_or_else(|| writer_gone(subject.clone(), verb))?;
        tx.send(op).map_err(|_| writer_gone(subject, verb))
    }
}

impl<C: RaftTypeConfig> Drop for FileLogStore<C> {
    fn drop(&mut self) {
        // Closing the queue ends the writer's loop once it has written what is queued; wait for
        // that, so that the directory is free when this returns (a restart in the same process
        // opens it at once).
        drop(self.tx.take());
        if self.writer.take().is_some_and(|writer| writer.join().is_err()) {
            tracing::error!("the log writer thread panicked");
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for FileLogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cache = read_lock(&self.cache);
        f.debug_struct("FileLogStore")
            .field("purged", &cache.purged)
            .field("last_log_id", &cache.last_log_id())
            .finish_non_exhaustive()
    }
}

impl<C: RaftTypeConfig> fmt::Debug for FileLogReader<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileLogReader")
    }
}

impl<C: RaftTypeConfig> RaftLogReader<C> for FileLogReader<C> {
    async fn try_get_log_entries(&mut self, range: Range<u64>) -> Result<Vec<Entry<C>>, StorageError> {
        let cache = read_lock(&self.cache);
        let Some(first) = cache.entries.front().map(|e| e.log_id.index) else {
            return Ok(Vec::new());
        };
        let start = range.start.max(first) - first;
        let end = range.end.saturating_sub(first).min(cache.entries.len() as u64);
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(cache.entries.range(start as usize..end as usize).cloned().collect())
    }
}

impl<C: RaftTypeConfig> RaftLogStorage<C> for FileLogStore<C> {
    type LogReader = FileLogReader<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError> {
        let cache = read_lock(&self.cache);
        Ok(LogState { last_purged_log_id: cache.purged, last_log_id: cache.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> FileLogReader<C> {
        FileLogReader { cache: self.cache.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote<C>) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Vote(*vote, tx), ErrorSubject::Vote, ErrorVerb::Write)?;
        let r = rx.await.map_err(|_| writer_gone(ErrorSubject::Vote, ErrorVerb::Write))?;
        r.map_err(|e| StorageError::new(ErrorSubject::Vote, ErrorVerb::Write, anyerror::AnyError::new(&e)))?;
        write_lock(&self.cache).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C>>, StorageError> {
        Ok(read_lock(&self.cache).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<C>>) -> Result<(), StorageError> {
        write_lock(&self.cache).committed = committed;
        self.send(WriteOp::Committed(committed), ErrorSubject::Logs, ErrorVerb::Write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C>>, StorageError> {
        Ok(read_lock(&self.cache).committed)
    }

    async fn append(&mut self, entries: Vec<Entry<C>>, callback: IOFlushed<C>) -> Result<(), StorageError> {
        let (Some(first), Some(last)) = (entries.first().map(|e| e.log_id), entries.last().map(|e| e.log_id)) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        // Encoding here, on the caller's task, keeps the writer thread's batch to one write.
        let mut frames = Vec::with_capacity(entries.len() * 64);
        for e in &entries {
            record::encode(&RecordRef::Entry(e), &mut frames).map_err(|e| StorageError::write_logs(&e))?;
        }
        {
            let mut cache = write_lock(&self.cache);
            let expected = cache.last_log_id().map_or(first.index, |l| l.index + 1);
            if first.index != expected {
                let msg = format!(
                    "append of {first} does not follow the last log id {}",
                    crate::types::DisplayOption(&cache.last_log_id())
                );
                return Err(StorageError::new(ErrorSubject::Logs, ErrorVerb::Write, anyerror::AnyError::error(msg)));
            }
            cache.entries.extend(entries);
        }
        let op = WriteOp::Append { frames, entries: last.index - first.index + 1, last_index: last.index, callback };
        self.send(op, ErrorSubject::Logs, ErrorVerb::Write)
    }

    async fn truncate(&mut self, since: LogId<C>) -> Result<(), StorageError> {
        {
            let mut cache = write_lock(&self.cache);
            while cache.entries.back().is_some_and(|e| e.log_id.index >= since.index) {
                cache.entries.pop_back();
            }
        }
        self.send(WriteOp::Truncate(since.index), ErrorSubject::Logs, ErrorVerb::Delete)
    }

    async fn purge(&mut self, upto: LogId<C>) -> Result<(), StorageError> {
        {
            let mut cache = write_lock(&self.cache);
            while cache.entries.front().is_some_and(|e| e.log_id.index <= upto.index) {
                cache.entries.pop_front();
            }
            if cache.purged.map(|p| p.index) < Some(upto.index) {
                cache.purged = Some(upto);
            }
        }
        self.send(WriteOp::Purge(upto), ErrorSubject::Logs, ErrorVerb::Delete)
    }
}
