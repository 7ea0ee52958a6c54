//! Cluster membership: voter configurations (one, or two during joint consensus) and learners.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::RaftTypeConfig;
use crate::types::LogId;

/// A cluster configuration: the voter sets and every node's addressing information.
///
/// Normally there is one voter set. During a joint-consensus change there are two, the old and
/// the new, and every decision (election, commit) needs a majority of *each* (Raft §6).
/// Nodes in `nodes` that are in no voter set are learners: they receive the log but never vote.
///
/// Invariants (kept by the constructors): there is at least one voter set, none is empty, and
/// every voter has an entry in `nodes`.
///
/// A clone shares the sets with the original (they are behind an `Arc`): the engine, the
/// metrics, the log and the state machine each hold the same membership, and a node that hosts
/// thousands of groups keeps one copy of each group's.
pub struct Membership<C: RaftTypeConfig> {
    inner: Arc<MembershipData<C>>,
}

/// What a [`Membership`] shares between its clones; serialized as the membership itself.
#[derive(Serialize, Deserialize)]
#[serde(bound = "", rename = "Membership")]
struct MembershipData<C: RaftTypeConfig> {
    configs: Vec<BTreeSet<C::NodeId>>,
    nodes: BTreeMap<C::NodeId, C::Node>,
}

impl<C: RaftTypeConfig> Clone for MembershipData<C> {
    fn clone(&self) -> Self {
        Self { configs: self.configs.clone(), nodes: self.nodes.clone() }
    }
}

impl<C: RaftTypeConfig> Serialize for Membership<C> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(serializer)
    }
}

impl<'de, C: RaftTypeConfig> Deserialize<'de> for Membership<C> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        MembershipData::deserialize(deserializer).map(Self::from_data)
    }
}

/// Why a [`Membership`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MembershipError {
    /// A voter set was empty, or there was no voter set.
    #[error("a membership needs at least one voter in each configuration")]
    EmptyVoters,
    /// A voter has no node information: it is not a member.
    #[error("voter {0} has no node information (it is not a member)")]
    VoterWithoutNode(String),
    /// A node that still votes cannot be removed; remove it from the voters first.
    #[error("node {0} is a voter; remove it from the voters before removing it")]
    RemoveVoter(String),
}

impl<C: RaftTypeConfig> Membership<C> {
    /// A membership of `configs` (one, or two while joint) with `nodes` for addressing.
    ///
    /// # Errors
    /// [`MembershipError`] if a voter set is empty or a voter is missing from `nodes`.
    pub fn new(
        configs: Vec<BTreeSet<C::NodeId>>,
        nodes: BTreeMap<C::NodeId, C::Node>,
    ) -> Result<Self, MembershipError> {
        if configs.is_empty() || configs.iter().any(|c| c.is_empty()) {
            return Err(MembershipError::EmptyVoters);
        }
        for id in configs.iter().flatten() {
            if !nodes.contains_key(id) {
                return Err(MembershipError::VoterWithoutNode(id.to_string()));
            }
        }
        Ok(Self::from_data(MembershipData { configs, nodes }))
    }

    fn from_data(data: MembershipData<C>) -> Self {
        Self { inner: Arc::new(data) }
    }

    /// A single-config membership whose voters are exactly `nodes`.
    ///
    /// # Errors
    /// [`MembershipError::EmptyVoters`] if `nodes` is empty.
    pub fn new_voters(nodes: BTreeMap<C::NodeId, C::Node>) -> Result<Self, MembershipError> {
        let voters = nodes.keys().copied().collect();
        Self::new(vec![voters], nodes)
    }

    /// The joint membership of `old` and `new` voters, for a change between them. Not
    /// validated: every voter must be in `nodes`.
    pub(crate) fn new_joint(
        old: BTreeSet<C::NodeId>,
        new: BTreeSet<C::NodeId>,
        nodes: BTreeMap<C::NodeId, C::Node>,
    ) -> Self {
        let configs = if old == new { vec![new] } else { vec![old, new] };
        Self::from_data(MembershipData { configs, nodes })
    }

    /// The same membership with only its last voter set: where a joint change ends.
    pub(crate) fn into_last_config(mut self) -> Self {
        if self.inner.configs.len() > 1 {
            let data = Arc::make_mut(&mut self.inner);
            data.configs.drain(..data.configs.len() - 1);
        }
        self
    }

    /// The voter sets: one normally, two during joint consensus.
    pub fn configs(&self) -> &[BTreeSet<C::NodeId>] {
        &self.inner.configs
    }

    /// Every node, voter or learner, with its addressing information.
    pub fn nodes(&self) -> &BTreeMap<C::NodeId, C::Node> {
        &self.inner.nodes
    }

    /// The addressing information of `id`, if it is a member.
    pub fn get_node(&self, id: &C::NodeId) -> Option<&C::Node> {
        self.inner.nodes.get(id)
    }

    /// Whether this is a joint configuration (two voter sets).
    pub fn is_joint(&self) -> bool {
        self.inner.configs.len() > 1
    }

    /// Every voter of every config, each once, in order.
    pub fn voter_ids(&self) -> BTreeSet<C::NodeId> {
        self.inner.configs.iter().flatten().copied().collect()
    }

    /// Whether `id` votes in any config.
    pub fn is_voter(&self, id: &C::NodeId) -> bool {
        self.inner.configs.iter().any(|c| c.contains(id))
    }

    /// Members that vote in no config.
    pub fn learner_ids(&self) -> impl Iterator<Item = C::NodeId> + '_ {
        self.inner.nodes.keys().copied().filter(|id| !self.is_voter(id))
    }

    /// Whether `granted` contains a majority of every voter set.
    pub fn is_quorum<'a>(&self, granted: impl Iterator<Item = &'a C::NodeId> + Clone) -> bool {
        self.inner.configs.iter().all(|config| {
            let n = granted.clone().filter(|id| config.contains(id)).count();
            n > config.len() / 2
        })
    }

    /// The greatest value acknowledged by a majority of every voter set.
    ///
    /// `value_of` gives each voter's value (e.g. its matched log id); in each config the value
    /// held by a majority is the `(len/2)`-th greatest, and the joint result is the least of the
    /// configs' results, since a value must be held by a majority of *each* config.
    pub fn quorum_value<V: Ord + Copy>(&self, mut value_of: impl FnMut(&C::NodeId) -> V) -> Option<V> {
        let mut result: Option<V> = None;
        let mut values: Vec<V> = Vec::new();
        for config in &self.inner.configs {
            values.clear();
            values.extend(config.iter().map(&mut value_of));
            values.sort_unstable_by(|a, b| b.cmp(a));
            let v = *values.get(config.len() / 2)?;
            result = Some(result.map_or(v, |r| r.min(v)));
        }
        result
    }
}

impl<C: RaftTypeConfig> Clone for Membership<C> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<C: RaftTypeConfig> PartialEq for Membership<C> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || self.inner.configs == other.inner.configs && self.inner.nodes == other.inner.nodes
    }
}
impl<C: RaftTypeConfig> Eq for Membership<C> {}

impl<C: RaftTypeConfig> Default for Membership<C> {
    /// The empty membership of a node that has not been initialized: no voter, no quorum.
    fn default() -> Self {
        Self::from_data(MembershipData { configs: vec![], nodes: BTreeMap::new() })
    }
}

impl<C: RaftTypeConfig> fmt::Debug for Membership<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<C: RaftTypeConfig> fmt::Display for Membership<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("voters:")?;
        for (i, c) in self.inner.configs.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{c:?}")?;
        }
        let learners: Vec<_> = self.learner_ids().collect();
        if !learners.is_empty() {
            write!(f, " learners:{learners:?}")?;
        }
        Ok(())
    }
}

/// A membership together with the id of the log entry that carried it.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct StoredMembership<C: RaftTypeConfig> {
    /// The entry that carried the membership; `None` for the empty initial membership.
    pub log_id: Option<LogId<C>>,
    /// The membership.
    pub membership: Membership<C>,
}

impl<C: RaftTypeConfig> StoredMembership<C> {
    /// `membership` carried by the entry `log_id`.
    pub fn new(log_id: Option<LogId<C>>, membership: Membership<C>) -> Self {
        Self { log_id, membership }
    }
}

impl<C: RaftTypeConfig> Default for StoredMembership<C> {
    fn default() -> Self {
        Self { log_id: None, membership: Membership::default() }
    }
}
impl<C: RaftTypeConfig> Clone for StoredMembership<C> {
    fn clone(&self) -> Self {
        Self { log_id: self.log_id, membership: self.membership.clone() }
    }
}
impl<C: RaftTypeConfig> PartialEq for StoredMembership<C> {
    fn eq(&self, other: &Self) -> bool {
        self.log_id == other.log_id && self.membership == other.membership
    }
}
impl<C: RaftTypeConfig> Eq for StoredMembership<C> {}
impl<C: RaftTypeConfig> fmt::Debug for StoredMembership<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl<C: RaftTypeConfig> fmt::Display for StoredMembership<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.log_id {
            Some(l) => write!(f, "{l}:{{{}}}", self.membership),
            None => write!(f, "None:{{{}}}", self.membership),
        }
    }
}

#[cfg(test)]
mod tests {
    use maplit::{btreemap, btreeset};

    use super::*;
    use crate::testing_types::UTConfig;

    type M = Membership<UTConfig>;

    fn nodes(ids: &[u64]) -> BTreeMap<u64, ()> {
        ids.iter().map(|i| (*i, ())).collect()
    }

    /// Clones share one copy (a host keeps each group's membership in several places), and the
    /// serialized form is the two fields, as before the sharing: logs and snapshots written
    /// earlier still load.
    #[test]
    fn clones_share_and_the_serialized_form_is_the_fields() {
        let m = M::new(vec![btreeset! {1, 2}], nodes(&[1, 2, 3])).unwrap();
        let c = m.clone();
        assert!(Arc::ptr_eq(&m.inner, &c.inner));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"configs":[[1,2]],"nodes":{"1":null,"2":null,"3":null}}"#);
        let back: M = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        // Ending a joint change leaves the shared original alone.
        let joint = M::new_joint(btreeset! {1, 2}, btreeset! {2, 3}, nodes(&[1, 2, 3]));
        let kept = joint.clone();
        assert_eq!(joint.into_last_config().configs(), &[btreeset! {2, 3}]);
        assert_eq!(kept.configs().len(), 2);
    }

    #[test]
    fn new_rejects_bad_configs() {
        assert_eq!(M::new(vec![], btreemap! {}).unwrap_err(), MembershipError::EmptyVoters);
        assert_eq!(M::new(vec![btreeset! {}], btreemap! {}).unwrap_err(), MembershipError::EmptyVoters);
        assert_eq!(
            M::new(vec![btreeset! {1, 2}], nodes(&[1])).unwrap_err(),
            MembershipError::VoterWithoutNode("2".into())
        );
    }

    #[test]
    fn quorum_of_single_config() {
        let m = M::new(vec![btreeset! {1, 2, 3}], nodes(&[1, 2, 3, 4])).unwrap();
        assert!(!m.is_quorum([1].iter()));
        assert!(m.is_quorum([1, 3].iter()));
        // A learner's grant does not count.
        assert!(!m.is_quorum([1, 4].iter()));
        assert_eq!(m.learner_ids().collect::<Vec<_>>(), vec![4]);
    }

    /// Raft §6: in joint consensus a decision needs a majority of old AND new.
    #[test]
    fn quorum_of_joint_config() {
        let m = M::new(vec![btreeset! {1, 2, 3}, btreeset! {3, 4, 5}], nodes(&[1, 2, 3, 4, 5])).unwrap();
        assert!(m.is_joint());
        assert!(!m.is_quorum([1, 2].iter()), "majority of old only");
        assert!(!m.is_quorum([4, 5].iter()), "majority of new only");
        assert!(m.is_quorum([1, 3, 4].iter()));
        assert!(m.is_quorum([2, 3, 5].iter()));
        assert!(!m.is_quorum([1, 2, 4].iter()));
    }

    #[test]
    fn quorum_value_single_and_joint() {
        let single = M::new(vec![btreeset! {1, 2, 3}], nodes(&[1, 2, 3])).unwrap();
        let matched = btreemap! {1 => 10u64, 2 => 7, 3 => 3, 4 => 1, 5 => 2};
        assert_eq!(single.quorum_value(|id| matched[id]), Some(7));

        let joint = M::new(vec![btreeset! {1, 2, 3}, btreeset! {3, 4, 5}], nodes(&[1, 2, 3, 4, 5])).unwrap();
        // old: sorted desc 10,7,3 -> 7; new: 3,2,1 -> 2; joint -> 2
        assert_eq!(joint.quorum_value(|id| matched[id]), Some(2));

        let even = M::new(vec![btreeset! {1, 2, 3, 4}], nodes(&[1, 2, 3, 4])).unwrap();
        // 10,7,3,1 -> a majority of 4 is 3 nodes -> the 3rd greatest is 3.
        assert_eq!(even.quorum_value(|id| matched[id]), Some(3));
        assert_eq!(M::default().quorum_value(|id| matched[id]), None);
    }
}
