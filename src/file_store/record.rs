//! The records of one Raft log, as both formats write them, and how replaying one changes a
//! [`MemLog`].
//!
//! [`FileLogStore`](super::FileLogStore) frames a [`RecordRef`] as it is; the shared log frames
//! it behind the group id it belongs to. The formats are described for users in the
//! [module docs](super#on-disk-format); this file and `shared_format.rs` are their one
//! implementation.

use serde::{Deserialize, Serialize};

use super::frame::Format;
use super::mem_log::MemLog;
use crate::RaftTypeConfig;
use crate::types::{Entry, LogId, Vote};

/// The format of [`FileLogStore`](super::FileLogStore)'s segments.
pub(crate) const FORMAT: Format = Format { magic: *b"QRTLOG\0\0", version: 1, what: "a quorate log segment" };

/// What a log knows besides its entries; a segment header records it as of the segment's
/// creation, so that replaying the segments left after older ones were deleted rebuilds it.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct LogMeta<C: RaftTypeConfig> {
    pub(crate) vote: Option<Vote<C>>,
    pub(crate) committed: Option<LogId<C>>,
    /// Entries at or below it are gone.
    pub(crate) purged: Option<LogId<C>>,
}

impl<C: RaftTypeConfig> LogMeta<C> {
    /// Whether nothing was ever recorded: such a log need not be restated in a header.
    pub(crate) fn is_empty(&self) -> bool {
        self.vote.is_none() && self.committed.is_none() && self.purged.is_none()
    }

    /// Raise `purged` to `upto` (a purge never goes back).
    pub(crate) fn purge(&mut self, upto: LogId<C>) {
        if self.purged.map(|p| p.index) < Some(upto.index) {
            self.purged = Some(upto);
        }
    }
}

impl<C: RaftTypeConfig> Clone for LogMeta<C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: RaftTypeConfig> Copy for LogMeta<C> {}
impl<C: RaftTypeConfig> Default for LogMeta<C> {
    fn default() -> Self {
        Self { vote: None, committed: None, purged: None }
    }
}

/// One record, as written. Variant order is the format: never reorder.
#[derive(Serialize)]
#[serde(bound = "")]
pub(crate) enum RecordRef<'a, C: RaftTypeConfig> {
    Header(&'a LogMeta<C>),
    Entry(&'a Entry<C>),
    /// Every entry with index `>=` this is deleted.
    Truncate(u64),
    /// Every entry with index `<=` this id's index is deleted.
    Purge(LogId<C>),
    Vote(Vote<C>),
    Committed(Option<LogId<C>>),
}

/// One record, as read back. Mirrors [`RecordRef`].
#[derive(Deserialize)]
#[serde(bound = "")]
pub(crate) enum Record<C: RaftTypeConfig> {
    Header(LogMeta<C>),
    Entry(Entry<C>),
    Truncate(u64),
    Purge(LogId<C>),
    Vote(Vote<C>),
    Committed(Option<LogId<C>>),
}

impl<C: RaftTypeConfig> MemLog<C> {
    /// Replay one record. Returns the index of the entry it wrote, if it wrote one; an error
    /// says what is wrong with it.
    pub(crate) fn replay(&mut self, record: Record<C>) -> Result<Option<u64>, String> {
        match record {
            Record::Header(meta) => self.meta = meta,
            Record::Entry(e) => {
                let index = e.log_id.index;
                self.truncate(index);
                // With no entry before it, an entry may start past the purged id: the entries
                // between were in deleted segments, and a purge record later in the stream
                // covers them (segments are deleted only once that purge is durable).
                if let Some(last) = self.entries.back().map(|l| l.log_id.index).filter(|last| last + 1 != index) {
                    return Err(format!("log gap: entry {} after index {last}", e.log_id));
                }
                self.entries.push_back(e);
                return Ok(Some(index));
            }
            Record::Truncate(since) => self.truncate(since),
            Record::Purge(upto) => self.purge(upto),
            Record::Vote(v) => self.meta.vote = Some(v),
            Record::Committed(c) => self.meta.committed = c,
        }
        Ok(None)
    }

    /// After replay: the entries must start right after the purged id.
    pub(crate) fn check_start(&self) -> Result<(), String> {
        let first = self.entries.front().map(|e| e.log_id);
        match first.zip(self.meta.purged) {
            Some((first, purged)) if first.index != purged.index + 1 => {
                Err(format!("the log starts at {first} but is purged up to {purged}"))
            }
            _ => Ok(()),
        }
    }
}
