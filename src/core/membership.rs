//! Membership change requests in RaftCore: validating them, proposing them through the
//! Engine, and answering the caller when the change is complete.

use tracing::warn;

use crate::core::{MembershipResponder, RaftCore};
use crate::engine::ChangeRejected;
use crate::error::ClientWriteError;
use crate::raft::ChangeMembershipResponse;
use crate::storage::RaftLogStorage;
use crate::types::{ChangeMembers, LogId};
use crate::{RaftNetworkFactory, RaftTypeConfig};

impl<C, N, LS> RaftCore<C, N, LS>
where
    C: RaftTypeConfig,
    N: RaftNetworkFactory<C>,
    LS: RaftLogStorage<C>,
{
    pub(crate) fn handle_change_membership(
        &mut self,
        changes: ChangeMembers<C>,
        retain: bool,
        tx: MembershipResponder<C>,
    ) {
        if self.membership_waiter.is_some() {
            let log_id = self.engine.state.membership.effective.log_id;
            let _ = tx.send(Err(ClientWriteError::MembershipChangeInProgress { log_id }));
            return;
        }
        let target = match changes.apply_to(self.engine.state.membership.effective(), retain) {
            Ok(t) => t,
            Err(e) => {
                let _ = tx.send(Err(ClientWriteError::InvalidMembership(e)));
                return;
            }
        };
        match self.engine.change_membership(self.clock.now(), target) {
            Err(ChangeRejected::NotLeader) => {
                let _ = tx.send(Err(ClientWriteError::ForwardToLeader(self.forward_to_leader())));
            }
            Err(ChangeRejected::InProgress(log_id)) => {
                let _ = tx.send(Err(ClientWriteError::MembershipChangeInProgress { log_id }));
            }
            Ok(None) => {
                let ms = &self.engine.state.membership.committed;
                let _ = tx.send(Ok(ChangeMembershipResponse { log_id: ms.log_id, membership: ms.membership.clone() }));
            }
            Ok(Some(log_id)) => self.membership_waiter = Some((log_id, tx)),
        }
    }

    /// Answer the membership change caller once a single (non-joint) config at or after its
    /// first entry is committed, on whichever leader finished it.
    pub(crate) fn check_membership_waiter(&mut self) {
        let Some((first, _)) = &self.membership_waiter else { return };
        let committed = &self.engine.state.membership.committed;
        if committed.membership.is_joint() || committed.log_id < Some(*first) {
            return;
        }
        if let Some((_, tx)) = self.membership_waiter.take() {
            let _ = tx.send(Ok(ChangeMembershipResponse {
                log_id: committed.log_id,
                membership: committed.membership.clone(),
            }));
        }
    }

    /// A node that the committed membership no longer holds gets no more of the log: the
    /// writes it proposed as leader and has not answered may still commit under the next
    /// leader, or not, and it will never learn which. Answer them now with `OutcomeUnknown`
    /// instead of never.
    pub(crate) fn fail_writes_of_a_removed_node(&mut self) {
        if self.responders.is_empty() || self.engine.leader.is_some() {
            return;
        }
        let me = self.engine.id();
        let committed = &self.engine.state.membership.committed;
        if committed.log_id.is_none() || committed.membership.nodes().contains_key(&me) {
            return;
        }
        warn!(id = %me, pending = self.responders.len(), "removed from the cluster: pending writes' outcome is unknown");
        for (log_id, tx) in self.responders.drain(..) {
            let _ = tx.send(Err(ClientWriteError::OutcomeUnknown { log_id }));
        }
    }

    /// Entries from `since` on were truncated: a change whose first entry went with them is
    /// `Discarded` if it can never commit, `OutcomeUnknown` if another node may still commit
    /// it (see [`Self::fail_truncated_writes`]).
    pub(crate) fn fail_truncated_membership_change(&mut self, since: LogId<C>) {
        if self.membership_waiter.as_ref().is_some_and(|(first, _)| first.index >= since.index) {
            let dead = self.engine.truncated_entries_are_dead(since);
            if let Some((log_id, tx)) = self.membership_waiter.take() {
                let _ = tx.send(Err(super::commands::truncated_answer(dead, log_id)));
            }
        }
    }
}
