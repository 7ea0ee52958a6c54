//! Leadership transfer (dissertation §3.10): the leader stops taking writes, brings the target
//! up to date, then tells it to campaign at once.

use tokio::time::Instant;
use tracing::{debug, info};

use crate::RaftTypeConfig;
use crate::engine::leader::Transfer;
use crate::engine::{Command, Engine};
use crate::types::TransferLeaderRequest;

/// Why a leadership transfer was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TransferRejected<C: RaftTypeConfig> {
    NotLeader,
    /// The target is not a voter of the effective membership.
    NotAVoter,
    /// A transfer to this other node is in progress.
    InProgress(C::NodeId),
}

impl<C: RaftTypeConfig> Engine<C> {
    /// Start handing leadership to `to`. Until the transfer ends, client writes are refused;
    /// it ends when another leader takes over, or at the deadline (twice the maximum election
    /// timeout), after which writes are accepted again.
    ///
    /// Asking again for the transfer in progress joins it; asking for another target is refused
    /// until it ends: the first target may already have been told to campaign, and two nodes
    /// told so would only split the vote.
    pub(crate) fn transfer_leader(&mut self, now: Instant, to: C::NodeId) -> Result<(), TransferRejected<C>> {
        let Some(leader) = self.leader.as_mut() else { return Err(TransferRejected::NotLeader) };
        if !self.state.membership.effective().is_voter(&to) {
            return Err(TransferRejected::NotAVoter);
        }
        if to == self.config.id {
            return Ok(());
        }
        match &leader.transfer {
            Some(t) if t.to == to => return Ok(()),
            Some(t) => return Err(TransferRejected::InProgress(t.to)),
            None => {}
        }
        self.leader_wake(now);
        let deadline = now + 2 * self.config.election_timeout_max;
        info!(id = %self.config.id, target = %to, "transferring leadership");
        if let Some(leader) = self.leader.as_mut() {
            leader.transfer = Some(Transfer { to, deadline, sent: false });
        }
        self.election_deadline = Some(self.election_deadline.map_or(deadline, |d| d.min(deadline)));
        self.maybe_send_timeout_now();
        Ok(())
    }

    /// A config in which the transfer target does not vote was appended (the final config of
    /// a change that removes it, say): the target could not take over (it refuses TimeoutNow),
    /// so the transfer ends now, before the leader revokes its lease for it, and writes are
    /// accepted again. The caller learns that the target is no voter (found in review).
    pub(crate) fn end_transfer_to_a_non_voter(&mut self) {
        let Some(leader) = self.leader.as_mut() else { return };
        let Some(to) = leader.transfer.as_ref().map(|t| t.to) else { return };
        if !self.state.membership.effective().is_voter(&to) {
            info!(id = %self.config.id, target = %to, "the transfer target no longer votes; ending the transfer");
            leader.transfer = None;
        }
    }

    /// Whether writes are refused because leadership is being handed over.
    pub(crate) fn is_transferring(&self) -> bool {
        self.leader.as_ref().is_some_and(|l| l.transfer.is_some())
    }

    /// Once the transfer target holds the whole log, tell it to campaign.
    pub(crate) fn maybe_send_timeout_now(&mut self) {
        let last_log_id = self.state.last_log_id();
        let Some(leader) = self.leader.as_mut() else { return };
        let Some(transfer) = leader.transfer.as_mut() else { return };
        if transfer.sent || leader.progress.get(&transfer.to).copied().flatten() != last_log_id {
            return;
        }
        transfer.sent = true;
        // The target's forced vote requests pass over stickiness: from now on voters may
        // elect it at any moment, so no read may rely on the lease any more.
        leader.lease_revoked = true;
        debug!(target = %transfer.to, "transfer target caught up; telling it to campaign; the lease ends");
        let req = TransferLeaderRequest { vote: leader.vote, last_log_id };
        self.output.push_back(Command::SendTransferLeader { to: transfer.to, req });
    }

    /// The leader asks this node to campaign now. It does if the request comes from the
    /// leader it follows and its log holds everything the leader has.
    pub(crate) fn handle_transfer_leader(&mut self, now: Instant, req: &TransferLeaderRequest<C>) -> bool {
        let ok = req.vote == self.state.vote
            && self.leader.is_none()
            && self.state.last_log_id() >= req.last_log_id
            && self.state.membership.effective().is_voter(&self.config.id);
        debug!(id = %self.config.id, ok, "asked to take over leadership");
        if ok {
            self.elect_forced(now);
        }
        ok
    }
}
