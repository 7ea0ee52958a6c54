//! The log writer thread: owns the segment files, and turns a queue of log operations into
//! one `write` + one `fdatasync` per batch (group commit).
//!
//! The raft task encodes entries and queues [`WriteOp`]s; the thread blocks for the first op,
//! drains whatever else is queued, writes it all, syncs once if any op in the batch needs it,
//! then completes the batch's callbacks in queue order. While it syncs, new ops queue up and
//! form the next batch, so the number of fsyncs adapts to the load instead of growing with it.

use std::io;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::disk::{Disk, DiskFile};
use super::observer::{SyncObserver, SyncedBatch};
use super::record::{self, Header, RecordRef, Segment};
use crate::RaftTypeConfig;
use crate::storage::IOFlushed;
use crate::types::{LogId, Vote};

/// An operation queued for the writer thread.
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
}

/// A completion to fire once the batch is durable.
enum Done<C: RaftTypeConfig> {
    Flushed(IOFlushed<C>),
    Vote(oneshot::Sender<io::Result<()>>),
}

pub(crate) struct Writer<C: RaftTypeConfig> {
    disk: Arc<dyn Disk>,
    /// Oldest first; the last is the one being written.
    segments: Vec<Segment>,
    file: Box<dyn DiskFile>,
    file_len: u64,
    /// Start a new segment once `file_len` reaches this.
    segment_bytes: u64,
    /// The state a new segment's header records; updated as ops are written.
    header: Header<C>,
    /// The purge that an fsync has made durable: segments whose entries are all at or below
    /// it may be deleted.
    durable_purged: Option<u64>,
    /// Set after an I/O error: the files are in an unknown state, so every later op fails.
    failed: Option<String>,
    buf: Vec<u8>,
    /// Told about every batch that was synced.
    on_sync: Option<SyncObserver>,
}

impl<C: RaftTypeConfig> Writer<C> {
    /// A writer that continues the recovered log in a new segment.
    pub(crate) fn open(
        disk: Arc<dyn Disk>,
        segments: Vec<Segment>,
        header: Header<C>,
        segment_bytes: u64,
        on_sync: Option<SyncObserver>,
    ) -> io::Result<Self> {
        let next_seq = segments.last().map_or(1, |s| s.seq + 1);
        let (file, name) = create_segment(disk.as_ref(), next_seq)?;
        let mut writer = Self {
            disk,
            segments,
            file,
            file_len: 0,
            segment_bytes,
            header,
            durable_purged: header.purged.map(|p| p.index),
            failed: None,
            buf: Vec::new(),
            on_sync,
        };
        writer.segments.push(Segment { seq: next_seq, name, max_index: None });
        writer.write_header()?;
        writer.delete_purged_segments();
        Ok(writer)
    }

    /// Run until every sender is dropped.
    pub(crate) fn run(mut self, rx: mpsc::Receiver<WriteOp<C>>) {
        let mut batch = Vec::new();
        while let Ok(first) = rx.recv() {
            batch.push(first);
            batch.extend(rx.try_iter());
            self.write_batch(&mut batch);
        }
    }

    fn write_batch(&mut self, batch: &mut Vec<WriteOp<C>>) {
        self.buf.clear();
        let mut done = Vec::with_capacity(batch.len());
        let mut needs_sync = false;
        let mut entries = 0;
        let mut encode_err = None;
        let last_segment = self.segments.len() - 1;
        for op in batch.drain(..) {
            let r = match op {
                WriteOp::Append { frames, entries: n, last_index, callback } => {
                    self.buf.extend_from_slice(&frames);
                    entries += n;
                    let seg = &mut self.segments[last_segment];
                    seg.max_index = seg.max_index.max(Some(last_index));
                    done.push(Done::Flushed(callback));
                    needs_sync = true;
                    Ok(())
                }
                WriteOp::Truncate(since) => record::encode(&RecordRef::<C>::Truncate(since), &mut self.buf),
                WriteOp::Purge(upto) => {
                    if self.header.purged.map(|p| p.index) < Some(upto.index) {
                        self.header.purged = Some(upto);
                    }
                    record::encode(&RecordRef::Purge(upto), &mut self.buf)
                }
                WriteOp::Committed(c) => {
                    self.header.committed = c;
                    record::encode(&RecordRef::Committed(c), &mut self.buf)
                }
                WriteOp::Vote(v, tx) => {
                    self.header.vote = Some(v);
                    done.push(Done::Vote(tx));
                    needs_sync = true;
                    record::encode(&RecordRef::Vote(v), &mut self.buf)
                }
            };
            if let Err(e) = r {
                encode_err.get_or_insert(e);
            }
        }

        let bytes = self.buf.len() as u64;
        let result = match encode_err {
            Some(e) => Err(e),
            None => self.write_buf(needs_sync),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "log write failed; the node must stop");
            self.failed.get_or_insert_with(|| e.to_string());
        }
        for d in done {
            let r = match &self.failed {
                Some(msg) => Err(io::Error::other(msg.clone())),
                None => Ok(()),
            };
            match d {
                Done::Flushed(cb) => cb.io_completed(r),
                Done::Vote(tx) => {
                    let _ = tx.send(r);
                }
            }
        }
        if let (Ok(Some(sync)), Some(observer)) = (&result, &self.on_sync) {
            observer.observe(&SyncedBatch { entries, bytes, sync: *sync });
        }
        if self.failed.is_none() && needs_sync {
            self.durable_purged = self.header.purged.map(|p| p.index);
            if self.file_len >= self.segment_bytes {
                if let Err(e) = self.rotate() {
                    tracing::error!(error = %e, "starting a new log segment failed; the node must stop");
                    self.failed = Some(e.to_string());
                }
            }
            self.delete_purged_segments();
        }
    }

    /// Write the buffer, and sync it if `sync`: then say how long the sync took.
    fn write_buf(&mut self, sync: bool) -> io::Result<Option<Duration>> {
        if let Some(msg) = &self.failed {
            return Err(io::Error::other(msg.clone()));
        }
        if !self.buf.is_empty() {
            self.file.append(&self.buf)?;
            self.file_len += self.buf.len() as u64;
        }
        if !sync {
            return Ok(None);
        }
        let started = Instant::now();
        self.file.sync()?;
        Ok(Some(started.elapsed()))
    }

    fn write_header(&mut self) -> io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&record::segment_header());
        record::encode(&RecordRef::Header(&self.header), &mut self.buf)?;
        self.write_buf(true).map(|_| ())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let seq = self.segments.last().map_or(1, |s| s.seq + 1);
        let (file, name) = create_segment(self.disk.as_ref(), seq)?;
        self.file = file;
        self.file_len = 0;
        self.segments.push(Segment { seq, name, max_index: None });
        self.write_header()
    }

    /// Delete the oldest segments while every entry they ever held is durably purged. The
    /// current segment is never deleted. A failure only leaves a file behind: harmless.
    fn delete_purged_segments(&mut self) {
        let mut deleted = 0;
        while self.segments.len() - deleted > 1 {
            let seg = &self.segments[deleted];
            let purged = match seg.max_index {
                None => true,
                Some(max) => self.durable_purged.is_some_and(|p| max <= p),
            };
            if !purged {
                break;
            }
            if let Err(e) = self.disk.remove(&seg.name) {
                let path = self.disk.path(&seg.name);
                tracing::warn!(path = %path.display(), error = %e, "could not delete a purged log segment");
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

fn create_segment(disk: &dyn Disk, seq: u64) -> io::Result<(Box<dyn DiskFile>, String)> {
    let name = record::segment_name(seq);
    let file = disk.create(&name)?;
    disk.sync_dir()?;
    Ok((file, name))
}
