//! [`LogHandle`]: the storage contract's methods on one log, for both stores. A call updates
//! the log's [`MemLog`] (what readers see) and queues the operation for the writer thread,
//! which makes it durable; how the operation reaches the writer (as it is, or behind a group
//! id) is the store's [`LogQueue`].
//!
//! [`FileLogStore`](super::FileLogStore) and [`GroupLogStore`](super::GroupLogStore) implement
//! `RaftLogStorage` by handing each call to their `LogHandle` ([`delegate_log_storage`]).

use std::io;
use std::sync::{Arc, RwLock};

use tokio::sync::oneshot;

use super::mem_log::{FileLogReader, MemLog, read_lock, write_lock};
use super::writer::WriteOp;
use crate::RaftTypeConfig;
use crate::error::{ErrorSubject, ErrorVerb, StorageError};
use crate::storage::{IOFlushed, LogState};
use crate::types::{DisplayOption, Entry, LogId, Vote};

/// How one log's operations reach the writer thread.
pub(crate) trait LogQueue<C: RaftTypeConfig>: Send + Sync + 'static {
    /// Append the frame of the record of `entry` to `buf`, as the writer will write it.
    fn frame_entry(&self, entry: &Entry<C>, buf: &mut Vec<u8>) -> io::Result<()>;

    /// Queue `op`. `false` if the writer thread has stopped.
    fn send(&self, op: WriteOp<C>) -> bool;
}

/// One log: its memory, and its queue to the writer.
pub(crate) struct LogHandle<C: RaftTypeConfig, Q> {
    pub(crate) log: Arc<RwLock<MemLog<C>>>,
    pub(crate) queue: Q,
}

fn writer_gone(subject: ErrorSubject, verb: ErrorVerb) -> StorageError {
    StorageError::new(subject, verb, anyerror::AnyError::error("the log writer thread has stopped"))
}

impl<C: RaftTypeConfig, Q: LogQueue<C>> LogHandle<C, Q> {
    fn send(&self, op: WriteOp<C>, subject: ErrorSubject, verb: ErrorVerb) -> Result<(), StorageError> {
        if self.queue.send(op) { Ok(()) } else { Err(writer_gone(subject, verb)) }
    }

    /// The log's first and last ids, once everything queued for it so far is durable: the
    /// contract of `get_log_state` (found in review: a shared log's group taken again in the
    /// same process, with an append still queued for the writer, reported it, and the new node
    /// counted it as flushed and acknowledged it to a leader).
    pub(crate) async fn durable_log_state(&self) -> Result<LogState<C>, StorageError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Sync(tx), ErrorSubject::Logs, ErrorVerb::Read)?;
        let synced = rx.await.map_err(|_| writer_gone(ErrorSubject::Logs, ErrorVerb::Read))?;
        synced.map_err(|e| StorageError::new(ErrorSubject::Logs, ErrorVerb::Read, anyerror::AnyError::new(&e)))?;
        let log = read_lock(&self.log);
        Ok(LogState { last_purged_log_id: log.meta.purged, last_log_id: log.last_log_id() })
    }

    pub(crate) fn reader(&self) -> FileLogReader<C> {
        FileLogReader { log: self.log.clone() }
    }

    /// Returns after the fsync that makes the vote durable.
    pub(crate) async fn save_vote(&self, vote: &Vote<C>) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Vote(*vote, tx), ErrorSubject::Vote, ErrorVerb::Write)?;
        let r = rx.await.map_err(|_| writer_gone(ErrorSubject::Vote, ErrorVerb::Write))?;
        r.map_err(|e| StorageError::new(ErrorSubject::Vote, ErrorVerb::Write, anyerror::AnyError::new(&e)))?;
        write_lock(&self.log).meta.vote = Some(*vote);
        Ok(())
    }

    pub(crate) fn vote(&self) -> Option<Vote<C>> {
        read_lock(&self.log).meta.vote
    }

    pub(crate) fn save_committed(&self, committed: Option<LogId<C>>) -> Result<(), StorageError> {
        write_lock(&self.log).meta.committed = committed;
        self.send(WriteOp::Committed(committed), ErrorSubject::Logs, ErrorVerb::Write)
    }

    pub(crate) fn committed(&self) -> Option<LogId<C>> {
        read_lock(&self.log).meta.committed
    }

    pub(crate) fn append(&self, entries: Vec<Entry<C>>, callback: IOFlushed<C>) -> Result<(), StorageError> {
        let (Some(first), Some(last)) = (entries.first().map(|e| e.log_id), entries.last().map(|e| e.log_id)) else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        // Encoding here, on the caller's task, keeps the writer thread's batch to one write.
        let mut frames = Vec::with_capacity(entries.len() * 64);
        for e in &entries {
            self.queue.frame_entry(e, &mut frames).map_err(|e| StorageError::write_logs(&e))?;
        }
        {
            let mut log = write_lock(&self.log);
            let expected = log.last_log_id().map_or(first.index, |l| l.index + 1);
            if first.index != expected {
                let msg =
                    format!("append of {first} does not follow the last log id {}", DisplayOption(&log.last_log_id()));
                return Err(StorageError::new(ErrorSubject::Logs, ErrorVerb::Write, anyerror::AnyError::error(msg)));
            }
            log.entries.extend(entries);
        }
        let op = WriteOp::Append { frames, entries: last.index - first.index + 1, last_index: last.index, callback };
        self.send(op, ErrorSubject::Logs, ErrorVerb::Write)
    }

    pub(crate) fn truncate(&self, since: LogId<C>) -> Result<(), StorageError> {
        write_lock(&self.log).truncate(since.index);
        self.send(WriteOp::Truncate(since.index), ErrorSubject::Logs, ErrorVerb::Delete)
    }

    pub(crate) fn purge(&self, upto: LogId<C>) -> Result<(), StorageError> {
        write_lock(&self.log).purge(upto);
        self.send(WriteOp::Purge(upto), ErrorSubject::Logs, ErrorVerb::Delete)
    }
}

/// `impl RaftLogStorage<C> for $store<C>`, handing every call to the [`LogHandle`] in field
/// `$handle`.
macro_rules! delegate_log_storage {
    ($store:ident, $handle:ident) => {
        impl<C: $crate::RaftTypeConfig> $crate::storage::RaftLogStorage<C> for $store<C> {
            type LogReader = $crate::file_store::FileLogReader<C>;

            async fn get_log_state(&mut self) -> Result<$crate::storage::LogState<C>, $crate::error::StorageError> {
                self.$handle.durable_log_state().await
            }

            async fn get_log_reader(&mut self) -> $crate::file_store::FileLogReader<C> {
                self.$handle.reader()
            }

            async fn save_vote(&mut self, vote: &$crate::types::Vote<C>) -> Result<(), $crate::error::StorageError> {
                self.$handle.save_vote(vote).await
            }

            async fn read_vote(&mut self) -> Result<Option<$crate::types::Vote<C>>, $crate::error::StorageError> {
                Ok(self.$handle.vote())
            }

            async fn save_committed(
                &mut self,
                committed: Option<$crate::types::LogId<C>>,
            ) -> Result<(), $crate::error::StorageError> {
                self.$handle.save_committed(committed)
            }

            async fn read_committed(&mut self) -> Result<Option<$crate::types::LogId<C>>, $crate::error::StorageError> {
                Ok(self.$handle.committed())
            }

            async fn append(
                &mut self,
                entries: Vec<$crate::types::Entry<C>>,
                callback: $crate::storage::IOFlushed<C>,
            ) -> Result<(), $crate::error::StorageError> {
                self.$handle.append(entries, callback)
            }

            async fn truncate(&mut self, since: $crate::types::LogId<C>) -> Result<(), $crate::error::StorageError> {
                self.$handle.truncate(since)
            }

            async fn purge(&mut self, upto: $crate::types::LogId<C>) -> Result<(), $crate::error::StorageError> {
                self.$handle.purge(upto)
            }
        }
    };
}
pub(crate) use delegate_log_storage;
