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
    /// When work was first seen waiting on `value`; `None` while nothing waits.
    ///
    /// Not the time of the last look: RaftCore looks only when its loop turns, and a quiesced
    /// group's loop may sleep for minutes. Counted from the last look, the first write after
    /// such a sleep would find its flush "stuck" since before the write was made, and the
    /// leader would step down over a disk that had done nothing wrong.
    since: Option<Instant>,
}

impl<V: PartialEq + Copy> Watch<V> {
    fn new(value: V) -> Self {
        Self { value, since: None }
    }

    /// Record `value` at `now`; return since when it is stuck, if `pending` work waits on it
    /// and it has not moved since work was first seen waiting.
    fn observe(&mut self, value: V, pending: bool, now: Instant) -> Option<Instant> {
        if !pending {
            self.value = value;
            self.since = None;
            return None;
        }
        match self.since {
            Some(since) if value == self.value => Some(since),
            // Moving: stuck from now on, if it stays so.
            Some(_) => {
                self.value = value;
                self.since = Some(now);
                None
            }
            // Work just started waiting: waiting from now on (so a watchdog's deadline is set
            // at once, even if nothing else turns the loop before it).
            None => {
                self.value = value;
                self.since = Some(now);
                Some(now)
            }
        }
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

/// The watchdog of one target's matched entry.
type MatchedWatch<C> = Watch<Option<LogId<C>>>;

/// The watchdogs of one node.
pub(crate) struct ProgressWatch<C: RaftTypeConfig> {
    flushed: Watch<u64>,
    committed: Watch<Option<LogId<C>>>,
    applied: Watch<Option<LogId<C>>>,
    /// One watch per target of this leader, in no particular order: a short list, not a
    /// B-tree, whose first node has room for eleven and which every idle group's leader keeps.
    matched: Vec<(C::NodeId, MatchedWatch<C>)>,
}

impl<C: RaftTypeConfig> ProgressWatch<C> {
    pub(crate) fn new() -> Self {
        Self { flushed: Watch::new(0), committed: Watch::new(None), applied: Watch::new(None), matched: Vec::new() }
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
                self.matched.retain(|(id, _)| leader.progress.contains_key(id));
                if self.matched.capacity() == 0 {
                    self.matched.reserve_exact(leader.progress.len());
                }
                for (id, matched) in &leader.progress {
                    let at = match self.matched.iter().position(|(m, _)| m == id) {
                        Some(at) => at,
                        None => {
                            self.matched.push((*id, Watch::new(*matched)));
                            self.matched.len() - 1
                        }
                    };
                    if let Some(since) = self.matched[at].1.observe(*matched, *matched < last, now) {
                        stalls.replication.insert(*id, since);
                    }
                }
            }
            None => self.matched = Vec::new(),
        }
        stalls
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::Watch;

    /// A value looked at while idle long ago is not stuck since then when work arrives: the
    /// stall starts when work is first seen waiting (found by multi-bench: the first write to a
    /// group quiesced for longer than `max_log_io_stall` made its leader step down).
    #[test]
    fn a_stall_starts_when_work_is_first_seen_waiting_not_at_the_last_look() {
        let t0 = Instant::now();
        let mut w = Watch::new(0u64);
        assert_eq!(w.observe(0, false, t0), None, "idle");
        let woke = t0 + Duration::from_secs(600);
        assert_eq!(w.observe(0, true, woke), Some(woke), "work just arrived: waiting from now on");
        let later = woke + Duration::from_millis(5);
        assert_eq!(w.observe(0, true, later), Some(woke), "stuck since work was first seen waiting");
        assert_eq!(w.observe(1, true, later), None, "moved");
        let after = later + Duration::from_secs(3);
        assert_eq!(w.observe(1, true, after), Some(later), "stuck since it last moved");
        assert_eq!(w.observe(1, false, after), None, "done");
        let next = after + Duration::from_secs(60);
        assert_eq!(w.observe(1, true, next), Some(next), "new work, at the same value, waits from its own start");
    }
}
