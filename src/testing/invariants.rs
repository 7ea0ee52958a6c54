//! Raft's safety properties, checked across the nodes of a test cluster (Raft §5.2, §5.4).
//!
//! Tests and the simulator call these after every step; each violation names the nodes and
//! the log position involved. Besides the paper's properties, [`check_acked_entries_are_durable`]
//! checks what replication rests on: a leader counts only what a follower made durable.

use std::collections::{BTreeMap, BTreeSet};

use super::suite::StateMachinePersistence;
use super::{MemLogStore, MemStateMachine, TypeConfig};
use crate::ServerState;
use crate::metrics::RaftMetrics;
use crate::types::{LogId, Vote};

/// A broken Raft safety property.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetyViolation {
    /// Election safety (§5.2): two leaders were elected in one term.
    #[error("election safety: nodes {a} and {b} both led term {term}")]
    TwoLeaders {
        /// The term.
        term: u64,
        /// One leader.
        a: u64,
        /// The other.
        b: u64,
    },
    /// Log matching (§5.3): two logs hold the same id at `at` but differ before it.
    #[error("log matching: nodes {a} and {b} agree at {at} but differ at index {index}")]
    LogMatching {
        /// One node.
        a: u64,
        /// The other.
        b: u64,
        /// The shared log id.
        at: LogId<TypeConfig>,
        /// The first index where they differ.
        index: u64,
    },
    /// A node reports committed an entry its log does not hold (and did not purge).
    #[error("node {node} committed {committed} but does not hold it")]
    CommittedNotInLog {
        /// The node.
        node: u64,
        /// Its committed id.
        committed: LogId<TypeConfig>,
    },
    /// State machine safety (§5.4.3): two nodes applied up to the same entry but differ.
    #[error("state machine safety: nodes {a} and {b} applied up to {applied} but hold different data")]
    StateMachinesDiffer {
        /// One node.
        a: u64,
        /// The other.
        b: u64,
        /// The common applied id.
        applied: LogId<TypeConfig>,
    },
    /// A leader counts a follower as holding an entry that the follower has not made durable:
    /// a crash of the follower would lose what the leader believes replicated (an entry is
    /// acknowledged to a leader only once it is durable on the follower).
    #[error(
        "node {leader} leads with vote {vote} and counts node {follower} as holding {matched}, which node {follower} has not made durable (snapshot: {snapshot:?})"
    )]
    AckedNotDurable {
        /// The leader.
        leader: u64,
        /// The leader's vote, which the follower has too.
        vote: Vote<TypeConfig>,
        /// The follower.
        follower: u64,
        /// What the leader counts as matched on the follower.
        matched: LogId<TypeConfig>,
        /// What the follower's stored snapshot covers.
        snapshot: Option<LogId<TypeConfig>>,
    },
    /// A node's committed id went backwards while it ran.
    #[error("node {node}: committed went back from {from} to {to:?}")]
    CommittedWentBack {
        /// The node.
        node: u64,
        /// The earlier committed id.
        from: LogId<TypeConfig>,
        /// The later one.
        to: Option<LogId<TypeConfig>>,
    },
}

/// One node as the checks see it.
pub struct NodeView<'a> {
    /// The node's id.
    pub id: u64,
    /// Its log store.
    pub log: &'a MemLogStore,
    /// Its state machine.
    pub sm: &'a MemStateMachine,
    /// Its latest metrics.
    pub metrics: RaftMetrics<TypeConfig>,
}

/// Check log matching, that committed entries are held, and state machine safety.
///
/// # Errors
/// The first [`SafetyViolation`] found.
pub fn check_logs_and_state_machines(nodes: &[NodeView<'_>]) -> Result<(), SafetyViolation> {
    let logs: BTreeMap<u64, BTreeMap<u64, LogId<TypeConfig>>> =
        nodes.iter().map(|n| (n.id, n.log.entries().iter().map(|e| (e.log_id.index, e.log_id)).collect())).collect();
    for (a, log_a) in &logs {
        for (b, log_b) in logs.range(a + 1..) {
            // The highest index at which both hold the same id: below it, wherever both still
            // hold entries (purging removes different prefixes), they must agree.
            let common = log_a.iter().rev().find(|(i, l)| log_b.get(i) == Some(l)).map(|(_, l)| *l);
            let Some(at) = common else { continue };
            for (index, la) in log_a.range(..=at.index) {
                if let Some(lb) = log_b.get(index) {
                    if la != lb {
                        return Err(SafetyViolation::LogMatching { a: *a, b: *b, at, index: *index });
                    }
                }
            }
        }
    }
    for n in nodes {
        if let Some(c) = n.metrics.committed {
            let held = logs[&n.id].get(&c.index) == Some(&c);
            if !held && n.metrics.purged < Some(c) && n.metrics.snapshot < Some(c) {
                return Err(SafetyViolation::CommittedNotInLog { node: n.id, committed: c });
            }
        }
    }
    let applied: Vec<_> = nodes.iter().map(|n| (n.id, n.sm.applied(), n.sm.data())).collect();
    for (i, (a, la, da)) in applied.iter().enumerate() {
        for (b, lb, db) in &applied[i + 1..] {
            if let (Some(la), Some(lb)) = (la, lb) {
                if la == lb && da != db {
                    return Err(SafetyViolation::StateMachinesDiffer { a: *a, b: *b, applied: *la });
                }
            }
        }
    }
    Ok(())
}

/// Check that every leader counts each follower as holding only what the follower made
/// durable: its durable log, its stored snapshot or, if the state machines keep their state
/// across a restart (`persistence`), what its state machine applied. A follower is checked
/// while it has the leader's vote: after it moves to a newer leader, the old leader's view of
/// it is stale and says nothing.
///
/// # Errors
/// The first [`SafetyViolation::AckedNotDurable`] found.
pub fn check_acked_entries_are_durable(
    nodes: &[NodeView<'_>],
    persistence: StateMachinePersistence,
) -> Result<(), SafetyViolation> {
    for leader in nodes.iter().filter(|n| n.metrics.state == ServerState::Leader) {
        let Some(replication) = &leader.metrics.replication else { continue };
        for (follower, matched) in replication {
            let (Some(f), Some(matched)) = (nodes.iter().find(|n| n.id == *follower), matched) else { continue };
            if f.metrics.vote != leader.metrics.vote {
                continue;
            }
            let snapshot = f.sm.snapshot_last_log_id();
            let applied_survives =
                persistence == StateMachinePersistence::Persistent && f.sm.applied() >= Some(*matched);
            if !f.log.is_durable(*matched) && snapshot < Some(*matched) && !applied_survives {
                return Err(SafetyViolation::AckedNotDurable {
                    leader: leader.id,
                    vote: leader.metrics.vote,
                    follower: *follower,
                    matched: *matched,
                    snapshot,
                });
            }
        }
    }
    Ok(())
}

/// Tracks every leader seen, to check election safety over a whole run.
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<u64, u64>,
    committed: BTreeMap<u64, LogId<TypeConfig>>,
}

impl ElectionSafety {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record what `m` shows: a leader of its term, and its committed id.
    ///
    /// # Errors
    /// [`SafetyViolation::TwoLeaders`] if another node led the same term;
    /// [`SafetyViolation::CommittedWentBack`] if the node's committed id decreased.
    pub fn observe(&mut self, m: &RaftMetrics<TypeConfig>) -> Result<(), SafetyViolation> {
        if m.state == ServerState::Leader {
            let leader = *self.leaders.entry(m.current_term).or_insert(m.id);
            if leader != m.id {
                return Err(SafetyViolation::TwoLeaders { term: m.current_term, a: leader, b: m.id });
            }
        }
        if let Some(prev) = self.committed.get(&m.id) {
            if m.committed < Some(*prev) {
                return Err(SafetyViolation::CommittedWentBack { node: m.id, from: *prev, to: m.committed });
            }
        }
        if let Some(c) = m.committed {
            self.committed.insert(m.id, c);
        }
        Ok(())
    }

    /// A node restarted: its committed id starts again from what it recovers.
    pub fn node_restarted(&mut self, id: u64) {
        self.committed.remove(&id);
    }

    /// The terms that had a leader.
    pub fn terms_with_leader(&self) -> BTreeSet<u64> {
        self.leaders.keys().copied().collect()
    }

    /// The leader of `term`, if one was seen.
    pub fn leader_of(&self, term: u64) -> Option<u64> {
        self.leaders.get(&term).copied()
    }
}
