//! [`FileLogStore`]: quorate's [`RaftLogStorage`](crate::RaftLogStorage) over the segmented
//! log files of one Raft log, and [`FileStoreOptions`], which both stores take.
//!
//! Entries not yet purged are also kept in memory ([`MemLog`]), shared with the readers.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::{Arc, RwLock, mpsc};

use super::disk::{Disk, FsDisk};
use super::error::FileStoreError;
use super::frame::{self, Format, Segment};
use super::handle::{LogHandle, LogQueue, delegate_log_storage};
use super::lock::DataDirLock;
use super::mem_log::{MemLog, read_lock};
use super::observer::SyncObserver;
use super::record::{self, LogMeta, Record, RecordRef};
use super::recovery;
use super::writer::{Batch, Journal, Queued, WriteOp, Writer, WriterThread, write_log_op};
use crate::RaftTypeConfig;
use crate::types::Entry;

/// How a [`FileLogStore`] or a [`SharedLog`](super::SharedLog) lays out its files, and who
/// watches it write them.
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
    handle: LogHandle<C, OneLog<C>>,
    _writer: WriterThread<WriteOp<C>>,
    /// Held until the writer thread has stopped (fields drop in order).
    _lock: Option<DataDirLock>,
}

/// The queue of a [`FileLogStore`]: its records go to the writer as they are.
struct OneLog<C: RaftTypeConfig>(mpsc::Sender<Queued<WriteOp<C>>>);

impl<C: RaftTypeConfig> LogQueue<C> for OneLog<C> {
    fn frame_entry(&self, entry: &Entry<C>, buf: &mut Vec<u8>) -> io::Result<()> {
        frame::encode(&RecordRef::Entry(entry), buf)
    }

    fn send(&self, op: WriteOp<C>) -> bool {
        self.0.send(Queued::Op(op)).is_ok()
    }
}

/// The greatest entry index a segment ever held, if it held any.
type Held = Option<u64>;

/// The writer's view of the one log: its state as written, and per segment the greatest
/// entry index it ever held (it may be deleted once that is purged).
struct OneJournal<C: RaftTypeConfig> {
    meta: LogMeta<C>,
}

impl<C: RaftTypeConfig> Journal for OneJournal<C> {
    type C = C;
    type Op = WriteOp<C>;
    type Held = Held;
    const FORMAT: Format = record::FORMAT;

    fn write_op(&mut self, op: WriteOp<C>, segments: &mut [Segment<Held>], batch: &mut Batch<C>) -> io::Result<()> {
        let mut held_max = None;
        let current = segments.last_mut().map_or(&mut held_max, |s| &mut s.held);
        write_log_op(op, &mut self.meta, current, batch, |r, buf| frame::encode(r, buf))
    }

    fn write_header(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        frame::encode(&RecordRef::<C>::Header(&self.meta), buf)
    }

    fn is_released(&self, held: &Held) -> bool {
        match held {
            None => true,
            Some(max) => self.meta.purged.is_some_and(|p| *max <= p.index),
        }
    }
}

/// Lock `dir`, then open a store on it with `open_on`: the `open_with` of both stores.
pub(crate) fn open_locked<T>(
    dir: &Path,
    options: FileStoreOptions,
    open_on: impl FnOnce(Arc<dyn Disk>, FileStoreOptions) -> Result<T, FileStoreError>,
) -> Result<(T, DataDirLock), FileStoreError> {
    let lock = DataDirLock::acquire(dir)?;
    let disk = FsDisk::open(dir).map_err(|e| FileStoreError::io(dir, e))?;
    Ok((open_on(Arc::new(disk), options)?, lock))
}

/// Replay the segments of one log (see [recovery](super#recovery)).
fn recover<C: RaftTypeConfig>(disk: &dyn Disk) -> Result<(MemLog<C>, Vec<Segment<Held>>), FileStoreError> {
    let mut log = MemLog::default();
    let segments = recovery::replay_segments(disk, &record::FORMAT, |payload, segments: &mut Vec<Segment<Held>>| {
        let record: Record<C> = postcard::from_bytes(payload).map_err(|e| format!("undecodable record: {e}"))?;
        let written = log.replay(record)?;
        if let Some(current) = segments.last_mut() {
            current.held = current.held.max(written);
        }
        Ok(())
    })?;
    if let Err(problem) = log.check_start() {
        let (path, offset) = recovery::oldest(disk, &segments);
        return Err(FileStoreError::corrupt(path, offset, problem));
    }
    recovery::make_durable(disk, &segments)?;
    Ok((log, segments))
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
        let (mut store, lock) = open_locked(dir, options, Self::open_on)?;
        store._lock = Some(lock);
        Ok(store)
    }

    /// [`open_with`](Self::open_with) on any [`Disk`], e.g. a test's fault layer. It takes no
    /// lock: the disk is the caller's.
    ///
    /// # Errors
    /// As [`open`](Self::open), but for the lock.
    pub fn open_on(disk: Arc<dyn Disk>, options: FileStoreOptions) -> Result<Self, FileStoreError> {
        let (log, segments) = recover::<C>(disk.as_ref())?;
        tracing::info!(
            dir = %disk.path("").display(),
            entries = log.entries.len(),
            segments = segments.len(),
            vote = %crate::types::DisplayOption(&log.meta.vote),
            "recovered the log"
        );
        let dir = disk.path("");
        let journal = OneJournal { meta: log.meta };
        let writer = Writer::open(disk, segments, journal, options.segment_bytes, options.on_sync)
            .map_err(|e| FileStoreError::io(&dir, e))?;
        let writer = WriterThread::spawn(writer, &dir)?;
        let handle = LogHandle { log: Arc::new(RwLock::new(log)), queue: OneLog(writer.sender()) };
        Ok(Self { handle, _writer: writer, _lock: None })
    }
}

delegate_log_storage!(FileLogStore, handle);

impl<C: RaftTypeConfig> fmt::Debug for FileLogStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log = read_lock(&self.handle.log);
        f.debug_struct("FileLogStore")
            .field("purged", &log.meta.purged)
            .field("last_log_id", &log.last_log_id())
            .finish_non_exhaustive()
    }
}
