//! [`Vote`]: the persistent "who do I follow in which term" of a node.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::RaftTypeConfig;
use crate::types::LeaderId;

/// A node's vote: the term it is in, the node it voted for in that term, and whether that node
/// has been elected (a quorum granted the vote).
///
/// Raft's `currentTerm` and `votedFor` in one value. Votes are partially ordered: a node accepts
/// a vote request or a leader's message only if its vote is greater than or equal to its own.
///
/// - A higher term is greater.
/// - In one term, having voted for nobody is less than any vote.
/// - In one term, an elected (`committed`) vote is greater than an unelected one for any node:
///   it is the single leader of the term, so a candidate that lost to it must follow it.
/// - Two unelected votes for different nodes in one term are incomparable: a node that voted
///   for one candidate does not vote for another in the same term (Raft §5.2).
///
/// It must be persisted before the node acts on it (grants a vote or accepts entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Vote<C: RaftTypeConfig> {
    /// The term.
    pub term: u64,
    /// The node this node voted for in `term`, if any.
    pub node_id: Option<C::NodeId>,
    /// Whether `node_id` won the election of `term`.
    pub committed: bool,
}

impl<C: RaftTypeConfig> Default for Vote<C> {
    fn default() -> Self {
        Self { term: 0, node_id: None, committed: false }
    }
}

impl<C: RaftTypeConfig> Vote<C> {
    /// A vote for `node_id` in `term`, not yet granted by a quorum.
    pub fn new(term: u64, node_id: C::NodeId) -> Self {
        Self { term, node_id: Some(node_id), committed: false }
    }

    /// The vote of the elected leader `node_id` of `term`.
    pub fn new_committed(term: u64, node_id: C::NodeId) -> Self {
        Self { term, node_id: Some(node_id), committed: true }
    }

    /// The same vote, marked as granted by a quorum.
    pub fn into_committed(self) -> Self {
        Self { committed: true, ..self }
    }

    /// The leader this vote names, if it is elected.
    pub fn leader_id(&self) -> Option<LeaderId<C>> {
        match (self.committed, self.node_id) {
            (true, Some(node_id)) => Some(LeaderId::new(self.term, node_id)),
            _ => None,
        }
    }

    /// The leader this vote would name once elected: the node voted for, if any.
    pub fn candidate_leader_id(&self) -> Option<LeaderId<C>> {
        self.node_id.map(|n| LeaderId::new(self.term, n))
    }

    /// `self >= other` in the partial order; `false` if incomparable.
    pub fn is_ge(&self, other: &Self) -> bool {
        matches!(self.partial_cmp(other), Some(Ordering::Greater | Ordering::Equal))
    }

    /// `self > other` in the partial order; `false` if incomparable.
    pub fn is_gt(&self, other: &Self) -> bool {
        matches!(self.partial_cmp(other), Some(Ordering::Greater))
    }
}

impl<C: RaftTypeConfig> PartialOrd for Vote<C> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.term.cmp(&other.term) {
            Ordering::Equal => {}
            ord => return Some(ord),
        }
        match (self.node_id, other.node_id) {
            (None, None) => Some(Ordering::Equal),
            (None, Some(_)) => Some(Ordering::Less),
            (Some(_), None) => Some(Ordering::Greater),
            (Some(a), Some(b)) if a == b => Some(self.committed.cmp(&other.committed)),
            // Different nodes in one term: only an elected vote wins. Two elected leaders in one
            // term would break election safety; they stay incomparable, so neither gives way.
            (Some(_), Some(_)) => match (self.committed, other.committed) {
                (true, false) => Some(Ordering::Greater),
                (false, true) => Some(Ordering::Less),
                _ => None,
            },
        }
    }
}

impl<C: RaftTypeConfig> fmt::Display for Vote<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node_id {
            Some(n) => write!(f, "T{}-N{}", self.term, n)?,
            None => write!(f, "T{}-_", self.term)?,
        }
        f.write_str(if self.committed { ":elected" } else { ":voted" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing_types::UTConfig;

    type V = Vote<UTConfig>;

    #[test]
    fn vote_partial_order() {
        let none = |t| V { term: t, node_id: None, committed: false };
        // Higher term wins regardless of anything else.
        assert!(V::new(2, 1).is_gt(&V::new_committed(1, 9)));
        assert!(V::new(2, 1).is_gt(&none(1)));
        // Same term: no vote < a vote.
        assert!(V::new(1, 1).is_gt(&none(1)));
        assert_eq!(none(1).partial_cmp(&none(1)), Some(Ordering::Equal));
        // Same node: elected > voted.
        assert!(V::new_committed(1, 1).is_gt(&V::new(1, 1)));
        assert!(V::new(1, 1).is_ge(&V::new(1, 1)));
        // Different nodes, Raft §5.2: a node votes once per term.
        assert_eq!(V::new(1, 1).partial_cmp(&V::new(1, 2)), None);
        assert!(!V::new(1, 2).is_ge(&V::new(1, 1)));
        // The elected leader of a term outranks a vote for another candidate.
        assert!(V::new_committed(1, 2).is_gt(&V::new(1, 1)));
        assert!(!V::new(1, 1).is_ge(&V::new_committed(1, 2)));
        assert_eq!(V::new_committed(1, 1).partial_cmp(&V::new_committed(1, 2)), None);
    }

    #[test]
    fn vote_display() {
        assert_eq!(V::new(3, 1).to_string(), "T3-N1:voted");
        assert_eq!(V::new_committed(3, 1).to_string(), "T3-N1:elected");
        assert_eq!(V::default().to_string(), "T0-_:voted");
    }
}
