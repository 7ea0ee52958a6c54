//! [`MemLog`]: one Raft log as its readers see it, in memory, and [`FileLogReader`], which
//! reads it. Both stores keep one per log: [`FileLogStore`](super::FileLogStore) one, a
//! [`SharedLog`](super::SharedLog) one per group.
//!
//! Readers never touch the files: an append is visible to them as soon as it returns, as the
//! storage contract requires. The snapshot policy bounds how many entries that is.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Range;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::record::LogMeta;
use crate::RaftTypeConfig;
use crate::error::StorageError;
use crate::storage::RaftLogReader;
use crate::types::{Entry, LogId};

/// Every operation on one log whose call has returned (or, at startup, that was recovered).
pub(crate) struct MemLog<C: RaftTypeConfig> {
    pub(crate) meta: LogMeta<C>,
    /// Consecutive entries after `meta.purged`.
    pub(crate) entries: VecDeque<Entry<C>>,
}

impl<C: RaftTypeConfig> Default for MemLog<C> {
    fn default() -> Self {
        Self { meta: LogMeta::default(), entries: VecDeque::new() }
    }
}

impl<C: RaftTypeConfig> MemLog<C> {
    pub(crate) fn last_log_id(&self) -> Option<LogId<C>> {
        self.entries.back().map(|e| e.log_id).or(self.meta.purged)
    }

    /// Whether the log holds nothing: no vote, committed id, purge, or entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.meta.is_empty() && self.entries.is_empty()
    }

    /// Delete every entry with index `>= since`.
    pub(crate) fn truncate(&mut self, since: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= since) {
            self.entries.pop_back();
        }
    }

    /// Delete every entry with index `<= upto.index`, and remember `upto` if it is newer.
    pub(crate) fn purge(&mut self, upto: LogId<C>) {
        while self.entries.front().is_some_and(|e| e.log_id.index <= upto.index) {
            self.entries.pop_front();
        }
        self.meta.purge(upto);
        if self.entries.capacity() > 64 && self.entries.len() < self.entries.capacity() / 4 {
            // A group that went idle after a burst should not keep the burst's buffer.
            self.entries.shrink_to_fit();
        }
    }

    /// The entries with index in `range` that the log holds.
    fn read(&self, range: Range<u64>) -> Vec<Entry<C>> {
        let Some(first) = self.entries.front().map(|e| e.log_id.index) else {
            return Vec::new();
        };
        let start = range.start.max(first) - first;
        let end = range.end.saturating_sub(first).min(self.entries.len() as u64);
        if start >= end {
            return Vec::new();
        }
        self.entries.range(start as usize..end as usize).cloned().collect()
    }
}

pub(crate) fn read_lock<C: RaftTypeConfig>(log: &RwLock<MemLog<C>>) -> RwLockReadGuard<'_, MemLog<C>> {
    // No update of a MemLog can panic half-way: a poisoned lock holds a consistent log.
    log.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write_lock<C: RaftTypeConfig>(log: &RwLock<MemLog<C>>) -> RwLockWriteGuard<'_, MemLog<C>> {
    log.write().unwrap_or_else(|e| e.into_inner())
}

/// Reads the entries of a [`FileLogStore`](super::FileLogStore) or of one group of a
/// [`SharedLog`](super::SharedLog), from memory: never from the files.
pub struct FileLogReader<C: RaftTypeConfig> {
    pub(crate) log: std::sync::Arc<RwLock<MemLog<C>>>,
}

impl<C: RaftTypeConfig> fmt::Debug for FileLogReader<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileLogReader")
    }
}

impl<C: RaftTypeConfig> RaftLogReader<C> for FileLogReader<C> {
    async fn try_get_log_entries(&mut self, range: Range<u64>) -> Result<Vec<Entry<C>>, StorageError> {
        Ok(read_lock(&self.log).read(range))
    }
}
