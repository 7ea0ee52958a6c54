//! [`LogStore`]: quorate's [`RaftLogStorage`] over the segmented log files.
//!
//! Entries not yet purged are also kept in memory, in a [`VecDeque`] shared with the readers:
//! readers never touch the files, and an append is visible to them as soon as it returns, as
//! the storage contract requires. The snapshot policy bounds how many entries that is.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc};

use quorate::error::{ErrorSubject, ErrorVerb};
use quorate::{Entry, IOFlushed, LogId, LogState, RaftLogReader, RaftLogStorage, StorageError, Vote};
use tokio::sync::oneshot;

use super::disk::{Disk, FsDisk};
use super::error::StoreError;
use super::record::{self, RecordRef};
use super::writer::{SEGMENT_BYTES, WriteOp, Writer};
use crate::TypeConfig;

type C = TypeConfig;

/// The durable Raft log and vote of one node. See the [module docs](super) for the format.
pub struct LogStore {
    cache: Arc<RwLock<Cache>>,
    tx: mpsc::Sender<WriteOp>,
}

/// Reads the in-memory view of a [`LogStore`].
pub struct LogReader {
    cache: Arc<RwLock<Cache>>,
}

/// What readers see: every operation whose call has returned.
struct Cache {
    vote: Option<Vote<C>>,
    committed: Option<LogId<C>>,
    purged: Option<LogId<C>>,
    /// Consecutive entries after `purged`.
    entries: VecDeque<Entry<C>>,
}

impl Cache {
    fn last_log_id(&self) -> Option<LogId<C>> {
        self.entries.back().map(|e| e.log_id).or(self.purged)
    }
}

fn read_lock(cache: &RwLock<Cache>) -> RwLockReadGuard<'_, Cache> {
    // Writers never leave the cache half-updated across a panic point that matters.
    cache.read().unwrap_or_else(|e| e.into_inner())
}

fn write_lock(cache: &RwLock<Cache>) -> RwLockWriteGuard<'_, Cache> {
    cache.write().unwrap_or_else(|e| e.into_inner())
}

fn writer_gone(verb: ErrorVerb) -> StorageError {
    StorageError::new(ErrorSubject::Logs, verb, anyerror::AnyError::error("the log writer thread has stopped"))
}

impl LogStore {
    /// Open (or create) the log in `dir`, recovering what a crash left, and start its writer
    /// thread.
    ///
    /// # Errors
    /// An I/O error, or a log that cannot be read back as written: see [`StoreError`] and the
    /// recovery rules of the [record format](super#the-log-format).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_segment_bytes(dir, SEGMENT_BYTES)
    }

    /// [`open`](Self::open), starting a new segment file whenever the current one reaches
    /// `segment_bytes` (64 MiB by default).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_with_segment_bytes(dir: &Path, segment_bytes: u64) -> Result<Self, StoreError> {
        let disk = FsDisk::open(dir).map_err(|e| StoreError::io(dir, e))?;
        Self::open_on(Arc::new(disk), segment_bytes)
    }

    /// [`open`](Self::open) on any [`Disk`], e.g. a test's fault layer.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_on(disk: Arc<dyn Disk>, segment_bytes: u64) -> Result<Self, StoreError> {
        let recovered = record::recover(disk.as_ref())?;
        tracing::info!(
            entries = recovered.entries.len(),
            segments = recovered.segments.len(),
            vote = ?recovered.header.vote,
            "recovered the log"
        );
        let cache = Cache {
            vote: recovered.header.vote,
            committed: recovered.header.committed,
            purged: recovered.header.purged,
            entries: recovered.entries,
        };
        let dir = disk.path("");
        let writer = Writer::open(disk, recovered.segments, recovered.header, segment_bytes)
            .map_err(|e| StoreError::io(&dir, e))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::io(&dir, e))?;
        Ok(Self { cache: Arc::new(RwLock::new(cache)), tx })
    }

    fn send(&self, op: WriteOp, verb: ErrorVerb) -> Result<(), StorageError> {
        self.tx.send(op).map_err(|_| writer_gone(verb))
    }
}

impl RaftLogReader<C> for LogReader {
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

impl RaftLogStorage<C> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError> {
        let cache = read_lock(&self.cache);
        Ok(LogState { last_purged_log_id: cache.purged, last_log_id: cache.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader { cache: self.cache.clone() }
    }

    async fn save_vote(&mut self, vote: &Vote<C>) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Vote(*vote, tx), ErrorVerb::Write)?;
        let r = rx.await.map_err(|_| writer_gone(ErrorVerb::Write))?;
        r.map_err(|e| StorageError::new(ErrorSubject::Vote, ErrorVerb::Write, anyerror::AnyError::new(&e)))?;
        write_lock(&self.cache).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C>>, StorageError> {
        Ok(read_lock(&self.cache).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<C>>) -> Result<(), StorageError> {
        write_lock(&self.cache).committed = committed;
        self.send(WriteOp::Committed(committed), ErrorVerb::Write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C>>, StorageError> {
        Ok(read_lock(&self.cache).committed)
    }

    async fn append(&mut self, entries: Vec<Entry<C>>, callback: IOFlushed<C>) -> Result<(), StorageError> {
        let Some(last_index) = entries.last().map(|e| e.log_id.index) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        let mut frames = Vec::with_capacity(entries.len() * 64);
        for e in &entries {
            record::encode(&RecordRef::Entry(e), &mut frames).map_err(|e| StorageError::write_logs(&e))?;
        }
        {
            let mut cache = write_lock(&self.cache);
            let expected = cache.last_log_id().map_or(entries[0].log_id.index, |l| l.index + 1);
            if entries[0].log_id.index != expected {
                let msg = format!(
                    "append of {} does not follow the last log id {:?}",
                    entries[0].log_id,
                    cache.last_log_id()
                );
                return Err(StorageError::new(ErrorSubject::Logs, ErrorVerb::Write, anyerror::AnyError::error(msg)));
            }
            cache.entries.extend(entries);
        }
        self.send(WriteOp::Append { frames, last_index, callback }, ErrorVerb::Write)
    }

    async fn truncate(&mut self, since: LogId<C>) -> Result<(), StorageError> {
        {
            let mut cache = write_lock(&self.cache);
            while cache.entries.back().is_some_and(|e| e.log_id.index >= since.index) {
                cache.entries.pop_back();
            }
        }
        self.send(WriteOp::Truncate(since.index), ErrorVerb::Delete)
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
        self.send(WriteOp::Purge(upto), ErrorVerb::Delete)
    }
}
