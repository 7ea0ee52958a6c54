//! Membership changes on the leader: joint consensus (Raft §6, dissertation §4.3).
//!
//! A change of voters goes through two entries: the joint configuration `[old, new]`, under
//! which every decision needs a majority of both, and, once that commits, `[new]`. A change that
//! keeps the voters (adding or removing learners) is one entry. Each takes effect on a node as
//! soon as it is appended. At most one membership entry is uncommitted at a time, which is
//! what makes the second-to-last membership of any log a committed one.

use tracing::info;

use crate::RaftTypeConfig;
use crate::engine::Engine;
use crate::types::{EntryPayload, LogId, Membership};

/// Why a membership change was not proposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChangeRejected<C: RaftTypeConfig> {
    /// This node is not the leader.
    NotLeader,
    /// The membership entry at this log id is not committed yet.
    InProgress(Option<LogId<C>>),
}

impl<C: RaftTypeConfig> Engine<C> {
    /// Propose moving to `target` (a single-config membership). Returns the id of the entry
    /// appended, or `None` if the membership already is `target`.
    pub(crate) fn change_membership(
        &mut self,
        now: tokio::time::Instant,
        target: Membership<C>,
    ) -> Result<Option<LogId<C>>, ChangeRejected<C>> {
        if self.leader.is_none() {
            return Err(ChangeRejected::NotLeader);
        }
        self.leader_wake(now);
        let Some(leader) = self.leader.as_mut() else { return Err(ChangeRejected::NotLeader) };
        let ms = &self.state.membership;
        if ms.effective.log_id != ms.committed.log_id {
            return Err(ChangeRejected::InProgress(ms.effective.log_id));
        }
        let current = ms.effective();
        if *current == target {
            return Ok(None);
        }
        let current_voters = current.configs().last().cloned().unwrap_or_default();
        let target_voters = target.configs().last().cloned().unwrap_or_default();
        let entry = if current_voters == target_voters && !current.is_joint() {
            target
        } else {
            // The joint config keeps every node of both, so removed voters keep receiving the
            // log until the final config commits and learn that they were removed.
            let mut nodes = current.nodes().clone();
            nodes.extend(target.nodes().iter().map(|(k, v)| (*k, v.clone())));
            leader.membership_target = Some(target);
            Membership::new_joint(current_voters, target_voters, nodes)
        };
        info!(id = %self.config.id, membership = %entry, "propose membership change");
        Ok(self.leader_append_entries([EntryPayload::Membership(entry)]))
    }

    /// After a commit, on the leader: finish a joint change whose joint entry committed, and
    /// step down once a final config that excludes this node committed.
    pub(crate) fn leader_advance_membership(&mut self) {
        let Some(leader) = self.leader.as_mut() else { return };
        let ms = &self.state.membership;
        if ms.effective.log_id != ms.committed.log_id {
            return;
        }
        let committed = ms.committed.membership.clone();
        if committed.is_joint() {
            let last_voters = committed.configs().last().cloned().unwrap_or_default();
            // The proposer knows the exact target; a leader that took over mid-change keeps
            // every node, so removed voters stay as learners (nothing is lost; an operator can
            // remove them after).
            let target = match leader.membership_target.take() {
                Some(t) if t.configs().last() == Some(&last_voters) => t,
                _ => committed.into_last_config(),
            };
            info!(id = %self.config.id, membership = %target, "joint config committed; finishing the change");
            self.leader_append_entries([EntryPayload::Membership(target)]);
            return;
        }
        if !committed.is_voter(&self.config.id) {
            info!(id = %self.config.id, "this leader is not a voter of the committed config; stepping down");
            self.step_down_from_leader();
        }
    }
}
