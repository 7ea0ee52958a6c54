//! Progress watchdogs: since when each kind of progress (log I/O, commit, apply, a target's
//! replication) has been stuck while there was work for it. They feed the metrics an operator
//! alerts on, and the leader's step-down on a stalled log store.

use std::collections::BTreeMap;

use tokio::time::Instant;

use crate::RaftTypeConfig;
use crate::engine::Engine;
use crate::types::LogId;

/// One progress value and since when it has not moved while work was pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watch<V> {
    value: V,
    since: Instant,
}

impl<V: PartialEq + Copy> Watch<V> {
    fn new(value: V, now: Instant) -> Self {
        Self { value, since: now }
    }

    /// Record `value`; return since when it is stuck, if `pending` work waits on it.
    fn observe(&mut self, value: V, pending: bool, now: Instant) -> Option<Instant> {
        if value != self.value || !pending {
            self.value = value;
            self.since = now;
            return None;
        }
        Some(self.since)
    }
}

/// Since when each kind of progress has been stuck; `None` where it is moving or idle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stalls<C: RaftTypeConfig> {
    pub(crate) log_io: Option<Instant>,
    pub(crate) commit: Option<Instant>,
    pub(crate) apply: Option<Instant>,
    pub(crate) replication: BTreeMap<C::NodeId, Instant>,
}

/// The watchdogs of one node.
pub(crate) struct ProgressWatch<C: RaftTypeConfig> {
    flushed: Watch<u64>,
    committed: Watch<Option<LogId<C>>>,
    applied: Watch<Option<LogId<C>>>,
    matched: BTreeMap<C::NodeId, Watch<Option<LogId<C>>>>,
}

impl<C: RaftTypeConfig> ProgressWatch<C> {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            flushed: Watch::new(0, now),
            committed: Watch::new(None, now),
            applied: Watch::new(None, now),
            matched: BTreeMap::new(),
        }
    }

    /// Look at the Engine's state at `now` and say what is stuck.
    pub(crate) fn observe(&mut self, engine: &Engine<C>, now: Instant) -> Stalls<C> {
        let st = &engine.state;
        let last = st.last_log_id();
        let mut stalls = Stalls {
            log_io: self.flushed.observe(st.io.flushed.seq, st.io.appended.seq > st.io.flushed.seq, now),
            // Commit is stuck only on a leader with entries of its own to commit.
            commit: self.committed.observe(st.committed, engine.leader.is_some() && st.committed < last, now),
            apply: self.applied.observe(st.applied, st.applied < st.committed, now),
            replication: BTreeMap::new(),
        };
        match &engine.leader {
            Some(leader) => {
                self.matched.retain(|id, _| leader.progress.contains_key(id));
                for (id, matched) in &leader.progress {
                    let w = self.matched.entry(*id).or_insert_with(|| Watch::new(*matched, now));
                    if let Some(since) = w.observe(*matched, *matched < last, now) {
                        stalls.replication.insert(*id, since);
                    }
                }
            }
            None => self.matched.clear(),
        }
        stalls
    }
}
