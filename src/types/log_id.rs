//! Log ids: where an entry sits in the log and which leader wrote it.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::RaftTypeConfig;

/// The leader that proposed a log entry: a term and the node elected in it.
///
/// Raft elects at most one leader per term, so the term alone decides the order; the node id is
/// kept for logs and for checking that invariant in tests.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct LeaderId<C: RaftTypeConfig> {
    /// The term in which the leader was elected.
    pub term: u64,
    /// The node elected in `term`.
    pub node_id: C::NodeId,
}

impl<C: RaftTypeConfig> LeaderId<C> {
    /// The leader `node_id` of `term`.
    pub fn new(term: u64, node_id: C::NodeId) -> Self {
        Self { term, node_id }
    }
}

impl<C: RaftTypeConfig> Clone for LeaderId<C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: RaftTypeConfig> Copy for LeaderId<C> {}
impl<C: RaftTypeConfig> PartialEq for LeaderId<C> {
    fn eq(&self, other: &Self) -> bool {
        self.term == other.term && self.node_id == other.node_id
    }
}
impl<C: RaftTypeConfig> Eq for LeaderId<C> {}
impl<C: RaftTypeConfig> std::hash::Hash for LeaderId<C> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.term.hash(state);
        self.node_id.hash(state);
    }
}
impl<C: RaftTypeConfig> PartialOrd for LeaderId<C> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<C: RaftTypeConfig> Ord for LeaderId<C> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.term, self.node_id).cmp(&(other.term, other.node_id))
    }
}
impl<C: RaftTypeConfig> fmt::Debug for LeaderId<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl<C: RaftTypeConfig> fmt::Display for LeaderId<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}-N{}", self.term, self.node_id)
    }
}

/// The id of a log entry: the leader that proposed it and its index.
///
/// Raft's log matching property rests on it: two logs that hold the same log id at an index
/// agree on every entry up to that index. Ordered by leader, then index, which for entries of
/// one log is the same as ordering by index. Displays as `T3-N1.42`.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct LogId<C: RaftTypeConfig> {
    /// The leader that proposed the entry.
    pub leader_id: LeaderId<C>,
    /// The position in the log, starting at 0.
    pub index: u64,
}

impl<C: RaftTypeConfig> LogId<C> {
    /// The entry at `index` proposed by `leader_id`.
    pub fn new(leader_id: LeaderId<C>, index: u64) -> Self {
        Self { leader_id, index }
    }

    /// The term of the leader that proposed the entry.
    pub fn term(&self) -> u64 {
        self.leader_id.term
    }
}

impl<C: RaftTypeConfig> Clone for LogId<C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: RaftTypeConfig> Copy for LogId<C> {}
impl<C: RaftTypeConfig> PartialEq for LogId<C> {
    fn eq(&self, other: &Self) -> bool {
        self.leader_id == other.leader_id && self.index == other.index
    }
}
impl<C: RaftTypeConfig> Eq for LogId<C> {}
impl<C: RaftTypeConfig> std::hash::Hash for LogId<C> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.leader_id.hash(state);
        self.index.hash(state);
    }
}
impl<C: RaftTypeConfig> PartialOrd for LogId<C> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<C: RaftTypeConfig> Ord for LogId<C> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.leader_id, self.index).cmp(&(other.leader_id, other.index))
    }
}
impl<C: RaftTypeConfig> fmt::Debug for LogId<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl<C: RaftTypeConfig> fmt::Display for LogId<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.leader_id, self.index)
    }
}

/// Extension methods on `Option<LogId>`, where `None` means "before the first entry".
pub trait LogIdOptionExt {
    /// The index of the entry, or `None` before the first entry.
    fn index(&self) -> Option<u64>;
    /// The index just past this entry: 0 for `None`.
    fn next_index(&self) -> u64;
}

impl<C: RaftTypeConfig> LogIdOptionExt for Option<LogId<C>> {
    fn index(&self) -> Option<u64> {
        self.map(|l| l.index)
    }
    fn next_index(&self) -> u64 {
        self.map_or(0, |l| l.index + 1)
    }
}

/// Displays an `Option<LogId>` as the id or `None`, for log messages.
pub struct DisplayOption<'a, T>(pub &'a Option<T>);

impl<T: fmt::Display> fmt::Display for DisplayOption<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("None"),
        }
    }
}
