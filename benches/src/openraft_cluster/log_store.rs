//! An in-memory openraft log store, built like the quorate one: a `BTreeMap` of entries
//! behind a std mutex, shared with its readers, completing the I/O callback inside `append`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::OptionalSend;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};

use super::OpenraftTypes;

type C = OpenraftTypes;

#[derive(Default)]
struct LogData {
    vote: Option<VoteOf<C>>,
    committed: Option<LogIdOf<C>>,
    /// Invariant: every key in `entries` is above `purged.index`.
    purged: Option<LogIdOf<C>>,
    entries: BTreeMap<u64, EntryOf<C>>,
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
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        Ok(self.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(self.lock().vote)
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let data = self.lock();
        let last = data.entries.last_key_value().map(|(_, e)| e.log_id()).or(data.purged);
        Ok(LogState { last_purged_log_id: data.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut data = self.lock();
            for entry in entries {
                data.entries.insert(entry.index(), entry);
            }
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let mut data = self.lock();
        let keep_below = last_log_id.map_or(0, |l| l.index + 1);
        let _removed = data.entries.split_off(&keep_below);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let mut data = self.lock();
        data.entries = data.entries.split_off(&(log_id.index + 1));
        data.purged = Some(log_id);
        Ok(())
    }
}
