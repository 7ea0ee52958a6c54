//! An in-memory quorate log store: a `BTreeMap` of entries behind a std mutex, shared with
//! its readers. Every append is "durable" as soon as it is in the map, so it completes the
//! I/O callback before returning.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use quorate::error::StorageError;
use quorate::{Entry, IOFlushed, LogId, LogState, RaftLogReader, RaftLogStorage, Vote};

use super::QuorateTypes;

type C = QuorateTypes;

#[derive(Default)]
struct LogData {
    vote: Option<Vote<C>>,
    committed: Option<LogId<C>>,
    /// Invariant: every key in `entries` is above `purged.index`.
    purged: Option<LogId<C>>,
    entries: BTreeMap<u64, Entry<C>>,
}

/// The log store of one node, and (through clones of the same `Arc`) its readers.
#[derive(Clone, Default)]
pub struct LogStore {
    data: Arc<Mutex<LogData>>,
}

impl LogStore {
    /// How many entries the store holds now (not purged, not truncated).
    pub fn entries_held(&self) -> u64 {
        self.lock().entries.len() as u64
    }

    /// What one entry like the last one held costs on the heap in a map like this store's,
    /// measured by building a map of `n` clones with the counting allocator (so only
    /// meaningful in the `cluster-bench` binary). `None` if the store is empty.
    pub fn heap_bytes_per_entry(&self, n: usize) -> Option<f64> {
        let entry = self.lock().entries.last_key_value().map(|(_, e)| e.clone())?;
        Some(crate::memory::heap_bytes_per_item(n, |n| {
            (0..n as u64).map(|i| (i, entry.clone())).collect::<BTreeMap<_, _>>()
        }))
    }

    fn lock(&self) -> MutexGuard<'_, LogData> {
        // Nothing panics while holding the lock, but a poisoned map is still a consistent map.
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries(&mut self, range: Range<u64>) -> Result<Vec<Entry<C>>, StorageError> {
        Ok(self.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError> {
        let data = self.lock();
        let last = data.entries.last_key_value().map(|(_, e)| e.log_id).or(data.purged);
        Ok(LogState { last_purged_log_id: data.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C>) -> Result<(), StorageError> {
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<C>>) -> Result<(), StorageError> {
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C>>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append(&mut self, entries: Vec<Entry<C>>, callback: IOFlushed<C>) -> Result<(), StorageError> {
        {
            let mut data = self.lock();
            for entry in entries {
                data.entries.insert(entry.log_id.index, entry);
            }
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, since: LogId<C>) -> Result<(), StorageError> {
        let _removed = self.lock().entries.split_off(&since.index);
        Ok(())
    }

    async fn purge(&mut self, upto: LogId<C>) -> Result<(), StorageError> {
        let mut data = self.lock();
        data.entries = data.entries.split_off(&(upto.index + 1));
        data.purged = Some(upto);
        Ok(())
    }
}
