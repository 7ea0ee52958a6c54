//! The leader's knowledge that it still leads: acknowledgements from followers, check-quorum,
//! the leader lease, and the log id a linearizable read must wait for.

use tokio::time::Instant;
use tracing::{info, warn};

use crate::RaftTypeConfig;
use crate::engine::Engine;
use crate::types::{LogId, Vote};

impl<C: RaftTypeConfig> Engine<C> {
    /// `target` answered a request of leadership `vote` that was sent at `sent_at`: it
    /// followed this leader at that time.
    pub(crate) fn on_heartbeat_acked(&mut self, target: C::NodeId, vote: Vote<C>, sent_at: Instant) {
        let Some(leader) = self.leader.as_mut() else { return };
        // A late answer from a stream of another leadership, or to a node no longer replicated
        // to, says nothing about this leadership's members.
        if leader.vote != vote || !leader.progress.contains_key(&target) {
            return;
        }
        let acked = leader.acked.entry(target).or_insert(sent_at);
        if sent_at > *acked {
            *acked = sent_at;
        }
    }

    /// The latest time at which a quorum (of every config) is known to have followed this
    /// leader. The leader itself counts as `now`; a member that never answered counts as the
    /// start of the leadership.
    pub(crate) fn quorum_acked_at(&self, now: Instant) -> Option<Instant> {
        let leader = self.leader.as_ref()?;
        let me = self.config.id;
        self.state
            .membership
            .effective()
            .quorum_value(|id| if *id == me { now } else { leader.acked.get(id).copied().unwrap_or(leader.since) })
    }

    /// Whether the leader lease holds at `now`: a quorum acknowledged this leader less than
    /// `election_timeout_min - max_clock_drift` ago, so with leader stickiness no other node
    /// can have been elected since (dissertation §6.4.1). Only with check-quorum enabled.
    pub(crate) fn lease_valid(&self, now: Instant) -> bool {
        self.config.check_quorum && self.quorum_acked_at(now).is_some_and(|t| now < t + self.config.lease)
    }

    /// The log id a linearizable read started now must see applied (Raft §8, ReadIndex): the
    /// committed id, but not before the leader committed its own blank entry, since until then
    /// it may not know the latest committed entry. `None` if not the leader.
    pub(crate) fn read_log_id(&self) -> Option<Option<LogId<C>>> {
        let leader = self.leader.as_ref()?;
        Some(self.state.committed.max(leader.blank_log_id))
    }

    /// The log store has made no progress for too long while writes wait: a leader steps
    /// down so a node with a working disk can take over, and this node does not campaign until
    /// its store flushes again.
    pub(crate) fn on_log_io_stalled(&mut self, now: Instant) {
        self.state.io_stalled = true;
        if self.leader.is_some() {
            self.step_down_from_leader();
        }
        self.reset_election_deadline(now);
    }

    /// The leader's timer fired: step down if a quorum has not acknowledged it within the
    /// maximum election timeout (check-quorum), end an overdue leadership transfer, and set
    /// the next deadline.
    pub(crate) fn leader_on_timeout(&mut self, now: Instant) {
        if let Some(leader) = self.leader.as_mut() {
            if leader.transfer.as_ref().is_some_and(|t| now >= t.deadline) {
                warn!(id = %self.config.id, "leadership transfer timed out; accepting writes again");
                leader.transfer = None;
            }
        }
        if !self.config.check_quorum {
            self.election_deadline = self.leader.as_ref().and_then(|l| l.transfer.as_ref()).map(|t| t.deadline);
            return;
        }
        let timeout = self.config.election_timeout_max;
        match self.quorum_acked_at(now) {
            Some(t) if now < t + timeout => {
                let transfer = self.leader.as_ref().and_then(|l| l.transfer.as_ref()).map(|t| t.deadline);
                self.election_deadline = Some(transfer.map_or(t + timeout, |d| d.min(t + timeout)));
            }
            _ => {
                info!(id = %self.config.id, "no quorum acknowledged this leader within the election timeout; stepping down");
                self.step_down_from_leader();
                self.reset_election_deadline(now);
            }
        }
    }
}
