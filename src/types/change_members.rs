//! [`ChangeMembers`]: a requested change of the cluster's membership.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::RaftTypeConfig;
use crate::types::{Membership, MembershipError};

/// A change to the cluster's membership, applied by
/// [`Raft::change_membership`](crate::Raft::change_membership).
///
/// Voter changes go through joint consensus: the leader first appends a configuration that
/// requires a majority of both the old and the new voter sets, then, once that commits, the
/// new voter set alone.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub enum ChangeMembers<C: RaftTypeConfig> {
    /// Make these existing members (learners) voters.
    AddVoterIds(BTreeSet<C::NodeId>),
    /// Add these nodes as voters, with their addresses (they need not be learners first,
    /// though adding them as learners and waiting for them to catch up avoids a slow commit).
    AddVoters(BTreeMap<C::NodeId, C::Node>),
    /// Stop these nodes from voting.
    RemoveVoters(BTreeSet<C::NodeId>),
    /// Make exactly these existing members the voters.
    ReplaceAllVoters(BTreeSet<C::NodeId>),
    /// Add these nodes as learners (or update their addresses).
    AddNodes(BTreeMap<C::NodeId, C::Node>),
    /// Remove these nodes entirely; a voter must be removed from the voters first.
    RemoveNodes(BTreeSet<C::NodeId>),
}

impl<C: RaftTypeConfig> ChangeMembers<C> {
    /// The membership `current` becomes after this change, once any joint phase is over.
    ///
    /// `retain`: whether voters removed by the change stay in the cluster as learners.
    ///
    /// # Errors
    /// [`MembershipError`] if the result would have no voter, or a voter without node
    /// information (an id that is not a member), or if it removes a node that still votes.
    pub fn apply_to(&self, current: &Membership<C>, retain: bool) -> Result<Membership<C>, MembershipError> {
        // The voters of the config being left: the last config of a joint membership.
        let mut voters: BTreeSet<C::NodeId> = current.configs().last().cloned().unwrap_or_default();
        let mut nodes = current.nodes().clone();
        let old_voters = voters.clone();
        match self {
            Self::AddVoterIds(ids) => voters.extend(ids.iter().copied()),
            Self::AddVoters(new) => {
                voters.extend(new.keys().copied());
                nodes.extend(new.iter().map(|(k, v)| (*k, v.clone())));
            }
            Self::RemoveVoters(ids) => voters.retain(|id| !ids.contains(id)),
            Self::ReplaceAllVoters(ids) => voters = ids.clone(),
            Self::AddNodes(new) => {
                for (id, node) in new {
                    nodes.insert(*id, node.clone());
                }
            }
            Self::RemoveNodes(ids) => {
                if let Some(id) = ids.iter().find(|id| voters.contains(id)) {
                    return Err(MembershipError::RemoveVoter(id.to_string()));
                }
                nodes.retain(|id, _| !ids.contains(id));
            }
        }
        if !retain {
            for id in old_voters.difference(&voters) {
                nodes.remove(id);
            }
        }
        Membership::new(vec![voters], nodes)
    }
}

impl<C: RaftTypeConfig> Clone for ChangeMembers<C> {
    fn clone(&self) -> Self {
        match self {
            Self::AddVoterIds(x) => Self::AddVoterIds(x.clone()),
            Self::AddVoters(x) => Self::AddVoters(x.clone()),
            Self::RemoveVoters(x) => Self::RemoveVoters(x.clone()),
            Self::ReplaceAllVoters(x) => Self::ReplaceAllVoters(x.clone()),
            Self::AddNodes(x) => Self::AddNodes(x.clone()),
            Self::RemoveNodes(x) => Self::RemoveNodes(x.clone()),
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for ChangeMembers<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AddVoterIds(x) => write!(f, "AddVoterIds({x:?})"),
            Self::AddVoters(x) => write!(f, "AddVoters({:?})", x.keys().collect::<Vec<_>>()),
            Self::RemoveVoters(x) => write!(f, "RemoveVoters({x:?})"),
            Self::ReplaceAllVoters(x) => write!(f, "ReplaceAllVoters({x:?})"),
            Self::AddNodes(x) => write!(f, "AddNodes({:?})", x.keys().collect::<Vec<_>>()),
            Self::RemoveNodes(x) => write!(f, "RemoveNodes({x:?})"),
        }
    }
}
