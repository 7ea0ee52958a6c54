//! [`LogIdList`]: the log ids of a whole log in O(number of leaders) memory.

use crate::RaftTypeConfig;
use crate::types::LogId;

/// The log ids of a log, kept as the first id of every run of entries by one leader.
///
/// Leaders only grow in a log, so the leader of any index is the leader of the last run that
/// starts at or before it. This lets the Engine answer "what id does my log hold at index i"
/// (the log matching check) without reading storage.
///
/// Invariants: `keys` is strictly increasing in index and leader; `last` is `None` iff
/// `keys` is empty; the first key is the purged log id or the first entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogIdList<C: RaftTypeConfig> {
    purged: Option<LogId<C>>,
    keys: Vec<LogId<C>>,
    last: Option<LogId<C>>,
}

impl<C: RaftTypeConfig> Default for LogIdList<C> {
    fn default() -> Self {
        Self { purged: None, keys: Vec::new(), last: None }
    }
}

impl<C: RaftTypeConfig> LogIdList<C> {
    /// A list from its purged log id and its leader-change keys, as loaded at startup.
    /// `keys` must start with `purged` (if any) and end with `last`'s run.
    pub(crate) fn new(purged: Option<LogId<C>>, keys: Vec<LogId<C>>, last: Option<LogId<C>>) -> Self {
        debug_assert!(keys.windows(2).all(|w| w[0].index < w[1].index && w[0].leader_id < w[1].leader_id));
        debug_assert_eq!(keys.is_empty(), last.is_none());
        Self { purged, keys, last }
    }

    pub(crate) fn purged(&self) -> Option<LogId<C>> {
        self.purged
    }

    pub(crate) fn last(&self) -> Option<LogId<C>> {
        self.last
    }

    /// The leader-change keys, for tests and metrics.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> &[LogId<C>] {
        &self.keys
    }

    /// The id at `index`, or `None` if the log does not hold it (beyond the end, or purged:
    /// the purged id itself is still known).
    pub(crate) fn get(&self, index: u64) -> Option<LogId<C>> {
        let last = self.last?;
        if index > last.index {
            return None;
        }
        if let Some(p) = self.purged {
            if index < p.index {
                return None;
            }
        }
        let pos = self.keys.partition_point(|k| k.index <= index);
        // `pos > 0`: keys[0].index is the first index held, and index >= it was checked above
        // through `purged`, or keys[0] is the first entry of an unpurged log at index 0.
        let key = self.keys.get(pos.checked_sub(1)?)?;
        Some(LogId::new(key.leader_id, index))
    }

    /// Record an appended entry. Entries must follow the last one.
    pub(crate) fn append(&mut self, log_id: LogId<C>) {
        debug_assert_eq!(log_id.index, self.last.map_or(log_id.index, |l| l.index + 1));
        if self.last.is_none_or(|l| l.leader_id != log_id.leader_id) {
            self.keys.push(log_id);
        }
        self.last = Some(log_id);
    }

    /// Forget every id at index `>= since`.
    pub(crate) fn truncate(&mut self, since: u64) {
        let new_last = since.checked_sub(1).and_then(|i| self.get(i));
        self.keys.truncate(self.keys.partition_point(|k| k.index < since));
        self.last = new_last;
        if self.last.is_none() {
            self.keys.clear();
        }
    }

    /// Forget every id at index `<= upto.index`, keeping `upto` as the purged id.
    #[allow(dead_code)] // Log purging arrives with snapshots; tested here already.
    pub(crate) fn purge(&mut self, upto: LogId<C>) {
        if self.purged.is_some_and(|p| p.index >= upto.index) {
            return;
        }
        let first_kept = self.keys.partition_point(|k| k.index <= upto.index);
        self.keys.drain(..first_kept);
        self.keys.insert(0, upto);
        self.purged = Some(upto);
        if self.last.is_none_or(|l| l.index < upto.index) {
            self.last = Some(upto);
            self.keys.truncate(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing_types::{UTConfig, log_id};

    type L = LogIdList<UTConfig>;

    fn list(ids: &[(u64, u64)]) -> L {
        let mut l = L::default();
        for (t, i) in ids {
            l.append(log_id(*t, *i));
        }
        l
    }

    #[test]
    fn get_finds_the_leader_of_each_index() {
        let l = list(&[(1, 0), (1, 1), (2, 2), (2, 3), (5, 4)]);
        assert_eq!(l.keys(), &[log_id(1, 0), log_id(2, 2), log_id(5, 4)]);
        assert_eq!(l.get(0), Some(log_id(1, 0)));
        assert_eq!(l.get(1), Some(log_id(1, 1)));
        assert_eq!(l.get(3), Some(log_id(2, 3)));
        assert_eq!(l.get(4), Some(log_id(5, 4)));
        assert_eq!(l.get(5), None);
        assert_eq!(L::default().get(0), None);
    }

    #[test]
    fn truncate_drops_tail_and_keys() {
        let mut l = list(&[(1, 0), (1, 1), (2, 2), (2, 3), (5, 4)]);
        l.truncate(3);
        assert_eq!(l.last(), Some(log_id(2, 2)));
        assert_eq!(l.keys(), &[log_id(1, 0), log_id(2, 2)]);
        l.truncate(2);
        assert_eq!(l.last(), Some(log_id(1, 1)));
        assert_eq!(l.keys(), &[log_id(1, 0)]);
        l.truncate(0);
        assert_eq!(l, L::default());
        // Appending after a truncation starts a new run.
        l.append(log_id(7, 0));
        assert_eq!(l.get(0), Some(log_id(7, 0)));
    }

    #[test]
    fn purge_keeps_the_purged_id() {
        let mut l = list(&[(1, 0), (1, 1), (2, 2), (2, 3), (5, 4)]);
        l.purge(log_id(2, 2));
        assert_eq!(l.purged(), Some(log_id(2, 2)));
        assert_eq!(l.get(1), None);
        assert_eq!(l.get(2), Some(log_id(2, 2)));
        assert_eq!(l.get(3), Some(log_id(2, 3)));
        assert_eq!(l.keys(), &[log_id(2, 2), log_id(5, 4)]);
        // Purging beyond the end (a snapshot newer than the log) leaves only the purged id.
        l.purge(log_id(6, 9));
        assert_eq!(l.last(), Some(log_id(6, 9)));
        assert_eq!(l.get(9), Some(log_id(6, 9)));
        assert_eq!(l.get(4), None);
        l.append(log_id(6, 10));
        assert_eq!(l.get(10), Some(log_id(6, 10)));
    }
}
