//! The log writer thread: owns the segment files, and turns a queue of log operations into
//! one `write` + one `fdatasync` per batch (group commit).
//!
//! The raft tasks encode entries and queue operations; the thread blocks for the first one,
//! drains whatever else is queued, writes it all, syncs once if any operation in the batch
//! needs it, then completes the batch's callbacks in queue order. While it syncs, new
//! operations queue up and form the next batch, so the number of fsyncs adapts to the load
//! instead of growing with it.
//!
//! The thread is the same for both formats: a [`Journal`] says what an operation writes, what
//! a new segment's header restates, and when a segment holds nothing that is still needed.

use std::io;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::disk::{Disk, DiskFile};
use super::error::FileStoreError;
use super::frame::{self, Format, Segment};
use super::observer::{SyncObserver, SyncedBatch};
use super::record::{LogMeta, RecordRef};
use crate::RaftTypeConfig;
use crate::storage::IOFlushed;
use crate::types::{LogId, Vote};

/// An operation on one log, queued for the writer thread.
pub(crate) enum WriteOp<C: RaftTypeConfig> {
    /// `entries` entries, already framed; `last_index` is the index of the last one.
    Append {
        frames: Vec<u8>,
        entries: u64,
        last_index: u64,
        callback: IOFlushed<C>,
    },
    Truncate(u64),
    Purge(LogId<C>),
    Committed(Option<LogId<C>>),
    /// A vote; `done` fires after the fsync that makes it durable.
    Vote(Vote<C>, oneshot::Sender<io::Result<()>>),
    /// A barrier: `done` fires after an fsync that covers every operation queued before it.
    Sync(oneshot::Sender<io::Result<()>>),
}

/// A completion to fire once the batch is durable.
pub(crate) enum Done<C: RaftTypeConfig> {
    Flushed(IOFlushed<C>),
    Synced(oneshot::Sender<io::Result<()>>),
}

/// What a batch writes, and what to complete once it is durable. A batch with a completion
/// is synced; one without (a purge, a truncate, a committed id alone) is only written, and
/// becomes durable with the next synced one.
pub(crate) struct Batch<C: RaftTypeConfig> {
    pub(crate) buf: Vec<u8>,
    pub(crate) done: Vec<Done<C>>,
    /// Entries appended, for the [`SyncObserver`].
    pub(crate) entries: u64,
}

/// Write `op` on the log whose state is `meta` into `batch`, with `frame` encoding each record
/// (as it is, or behind a group id). `held_max` is the greatest index the current segment
/// holds of this log.
pub(crate) fn write_log_op<C: RaftTypeConfig>(
    op: WriteOp<C>,
    meta: &mut LogMeta<C>,
    held_max: &mut Option<u64>,
    batch: &mut Batch<C>,
    frame: impl FnOnce(&RecordRef<'_, C>, &mut Vec<u8>) -> io::Result<()>,
) -> io::Result<()> {
    match op {
        WriteOp::Append { frames, entries, last_index, callback } => {
            batch.buf.extend_from_slice(&frames);
            batch.entries += entries;
            *held_max = (*held_max).max(Some(last_index));
            batch.done.push(Done::Flushed(callback));
            Ok(())
        }
        WriteOp::Truncate(since) => frame(&RecordRef::Truncate(since), &mut batch.buf),
        WriteOp::Purge(upto) => {
            meta.purge(upto);
            frame(&RecordRef::Purge(upto), &mut batch.buf)
        }
        WriteOp::Committed(c) => {
            meta.committed = c;
            frame(&RecordRef::Committed(c), &mut batch.buf)
        }
        WriteOp::Vote(v, tx) => {
            meta.vote = Some(v);
            batch.done.push(Done::Synced(tx));
            frame(&RecordRef::Vote(v), &mut batch.buf)
        }
        WriteOp::Sync(tx) => {
            batch.done.push(Done::Synced(tx));
            Ok(())
        }
    }
}

/// What one log format writes: the writer thread's knowledge of its records.
pub(crate) trait Journal: Send + 'static {
    type C: RaftTypeConfig;
    /// An operation queued for the writer.
    type Op: Send + 'static;
    /// What a segment holds, as far as deleting it goes.
    type Held: Default + Send;
    /// The format of the segments.
    const FORMAT: Format;

    /// Write `op` into `batch`; the last of `segments` is the one the batch goes to.
    fn write_op(
        &mut self,
        op: Self::Op,
        segments: &mut [Segment<Self::Held>],
        batch: &mut Batch<Self::C>,
    ) -> io::Result<()>;

    /// Append the header records of a new segment: the state that replay from that segment
    /// on needs besides the entries.
    fn write_header(&self, buf: &mut Vec<u8>) -> io::Result<()>;

    /// Whether nothing a segment holds is needed any more, given what was written so far. It
    /// is asked only right after a successful sync, so "written" is "durable" then.
    fn is_released(&self, held: &Self::Held) -> bool;
}

/// What the queue carries: an operation, or the store's owner asking the thread to stop.
pub(crate) enum Queued<Op> {
    Op(Op),
    Stop,
}

/// Operations the batch queue keeps room for between batches.
const KEPT_QUEUE_CAPACITY: usize = 1024;

/// Bytes the write buffer keeps between batches.
const KEPT_BUFFER_BYTES: usize = 1 << 20;

pub(crate) struct Writer<J: Journal> {
    disk: Arc<dyn Disk>,
    /// Oldest first; the last is the one being written.
    segments: Vec<Segment<J::Held>>,
    file: Box<dyn DiskFile>,
    file_len: u64,
    /// Start a new segment once `file_len` reaches this.
    segment_bytes: u64,
    journal: J,
    /// Set after an I/O error: the files are in an unknown state, so every later op fails.
    failed: Option<String>,
    batch: Batch<J::C>,
    /// Told about every batch that was synced.
    on_sync: Option<SyncObserver>,
    /// Whether bytes were written since the last successful sync: a barrier with nothing to
    /// cover (`WriteOp::Sync` after a synced batch) completes without an `fdatasync`.
    unsynced: bool,
}

impl<J: Journal> Writer<J> {
    /// A writer that continues the recovered log in a new segment.
    pub(crate) fn open(
        disk: Arc<dyn Disk>,
        segments: Vec<Segment<J::Held>>,
        journal: J,
        segment_bytes: u64,
        on_sync: Option<SyncObserver>,
    ) -> io::Result<Self> {
        let next_seq = segments.last().map_or(1, |s| s.seq + 1);
        let file = create_segment(disk.as_ref(), next_seq)?;
        let mut writer = Self {
            disk,
            segments,
            file,
            file_len: 0,
            segment_bytes,
            journal,
            failed: None,
            batch: Batch { buf: Vec::new(), done: Vec::new(), entries: 0 },
            on_sync,
            unsynced: false,
        };
        writer.segments.push(Segment::new(next_seq));
        writer.write_header()?;
        writer.delete_released_segments();
        Ok(writer)
    }

    /// Run until told to stop or every sender is dropped.
    fn run(mut self, rx: mpsc::Receiver<Queued<J::Op>>) {
        let mut queued = Vec::new();
        while let Ok(first) = rx.recv() {
            queued.push(first);
            queued.extend(rx.try_iter());
            if self.write_batch(&mut queued) {
                return;
            }
            // A burst (a host starting ten thousand groups) must not leave its queue's
            // capacity behind for good.
            queued.shrink_to(KEPT_QUEUE_CAPACITY);
            self.batch.buf.shrink_to(KEPT_BUFFER_BYTES);
        }
    }

    /// Write and sync what is queued. Returns whether a stop was asked for.
    fn write_batch(&mut self, queued: &mut Vec<Queued<J::Op>>) -> bool {
        self.batch.buf.clear();
        self.batch.entries = 0;
        let mut stop = false;
        let mut encode_err = None;
        for item in queued.drain(..) {
            let Queued::Op(op) = item else {
                stop = true;
                continue;
            };
            if let Err(e) = self.journal.write_op(op, &mut self.segments, &mut self.batch) {
                encode_err.get_or_insert(e);
            }
        }

        // Completions need a sync, unless nothing was written since the last one (barriers
        // alone, as a restart of many groups sends one each: found in review).
        let needs_sync = !self.batch.done.is_empty() && (!self.batch.buf.is_empty() || self.unsynced);
        let result = match encode_err {
            Some(e) => Err(e),
            None => self.write_buf(needs_sync),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "log write failed; the node must stop");
            self.failed.get_or_insert_with(|| e.to_string());
        }
        for d in self.batch.done.drain(..) {
            let r = match &self.failed {
                Some(msg) => Err(io::Error::other(msg.clone())),
                None => Ok(()),
            };
            match d {
                Done::Flushed(cb) => cb.io_completed(r),
                Done::Synced(tx) => {
                    let _ = tx.send(r);
                }
            }
        }
        if let (Ok(Some(sync)), Some(observer)) = (&result, &self.on_sync) {
            let bytes = self.batch.buf.len() as u64;
            observer.observe(&SyncedBatch { entries: self.batch.entries, bytes, sync: *sync });
        }
        if self.failed.is_none() && needs_sync {
            if self.file_len >= self.segment_bytes {
                if let Err(e) = self.rotate() {
                    tracing::error!(error = %e, "starting a new log segment failed; the node must stop");
                    self.failed = Some(e.to_string());
                }
            }
            self.delete_released_segments();
        }
        stop
    }

    /// Write the buffer, and sync it if `sync`: then say how long the sync took.
    fn write_buf(&mut self, sync: bool) -> io::Result<Option<Duration>> {
        if let Some(msg) = &self.failed {
            return Err(io::Error::other(msg.clone()));
        }
        if !self.batch.buf.is_empty() {
            self.unsynced = true;
            self.file.append(&self.batch.buf)?;
            self.file_len += self.batch.buf.len() as u64;
        }
        if !sync {
            return Ok(None);
        }
        let started = Instant::now();
        self.file.sync()?;
        self.unsynced = false;
        Ok(Some(started.elapsed()))
    }

    fn write_header(&mut self) -> io::Result<()> {
        self.batch.buf.clear();
        self.batch.buf.extend_from_slice(&J::FORMAT.segment_header());
        self.journal.write_header(&mut self.batch.buf)?;
        self.write_buf(true).map(|_| ())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        self.file = create_segment(self.disk.as_ref(), seq)?;
        self.file_len = 0;
        self.segments.push(Segment::new(seq));
        self.write_header()
    }

    /// Delete the oldest segments while nothing they hold is needed. Called only after a
    /// successful sync, which made every record written so far durable: the purges (and
    /// removals) that release a segment are on disk before it goes. The current segment is
    /// never deleted. A failure only leaves a file behind: harmless.
    fn delete_released_segments(&mut self) {
        let mut deleted = 0;
        while self.segments.len() - deleted > 1 {
            let seg = &self.segments[deleted];
            if !self.journal.is_released(&seg.held) {
                break;
            }
            if let Err(e) = self.disk.remove(&seg.name) {
                let path = self.disk.path(&seg.name);
                tracing::warn!(path = %path.display(), error = %e, "could not delete a released log segment");
                break;
            }
            deleted += 1;
        }
        if deleted > 0 {
            self.segments.drain(..deleted);
            if let Err(e) = self.disk.sync_dir() {
                tracing::warn!(error = %e, "could not sync the log directory");
            }
        }
    }
}

fn create_segment(disk: &dyn Disk, seq: u64) -> io::Result<Box<dyn DiskFile>> {
    let file = disk.create(&frame::segment_name(seq))?;
    disk.sync_dir()?;
    Ok(file)
}

/// The running writer thread of a store: its queue, and its handle to wait for it.
///
/// Dropping it asks the thread to stop once it has written what is already queued, and waits
/// for that, so that the directory is free when the drop returns (a restart in the same
/// process opens it at once). Operations sent after that fail: the queue is closed.
pub(crate) struct WriterThread<Op: Send + 'static> {
    tx: mpsc::Sender<Queued<Op>>,
    thread: Option<JoinHandle<()>>,
}

impl<Op: Send + 'static> WriterThread<Op> {
    /// Start `writer` on its own thread.
    pub(crate) fn spawn<J: Journal<Op = Op>>(writer: Writer<J>, dir: &Path) -> Result<Self, FileStoreError> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("quorate-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| FileStoreError::io(dir, e))?;
        Ok(Self { tx, thread: Some(thread) })
    }

    /// A sender of operations to the thread.
    pub(crate) fn sender(&self) -> mpsc::Sender<Queued<Op>> {
        self.tx.clone()
    }
}

impl<Op: Send + 'static> Drop for WriterThread<Op> {
    fn drop(&mut self) {
        let _ = self.tx.send(Queued::Stop);
        if self.thread.take().is_some_and(|thread| thread.join().is_err()) {
            tracing::error!("the log writer thread panicked");
        }
    }
}
