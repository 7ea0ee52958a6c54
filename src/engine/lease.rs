//! The leader's knowledge that it still leads: acknowledgements from followers, check-quorum
//! and the leader lease.
//!
//! Two questions are asked of the acknowledgements, and they get different answers:
//!
//! - **Check-quorum** (dissertation §6.2): has a quorum followed this leader within the last
//!   election timeout? A new leader is given one election timeout of grace, so a member that
//!   has not answered yet counts as having followed it at election time
//!   ([`Engine::check_quorum_acked_at`]).
//! - **The lease** (dissertation §6.4.1): can another leader have been elected since a quorum
//!   last acknowledged this one? Only real acknowledgements count, and the lease ends for good
//!   once this leader asks another node to campaign ([`Engine::lease_valid`]).

use tokio::time::Instant;
use tracing::{info, warn};

use crate::RaftTypeConfig;
use crate::engine::Engine;
use crate::types::Vote;

/// What one answer of a follower proves: it followed this leader when it handled a request
/// that the leader sent at `sent_at`, during heartbeat round `round` (see
/// [`Engine::leader_read`]).
///
/// All of it comes from the request the answer is for, identified by the replication stream;
/// never from the time the answer arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) sent_at: Instant,
    pub(crate) round: u64,
    /// Whether the request was a heartbeat marked `quiesce`: handling it may have quiesced the
    /// follower, so it proves that the follower followed, not that it is awake.
    pub(crate) marked: bool,
}

/// What a leader knows from the answers of one member: the latest of each of the proofs an
/// [`Ack`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Acked {
    /// The latest send time of a request it answered.
    pub(crate) sent_at: Instant,
    /// The latest heartbeat round of a request it answered.
    pub(crate) round: u64,
    /// The latest send time of an answered request not marked `quiesce`: the member handled
    /// a request that leaves a follower awake (see [`Engine::note_followers_awake`]).
    pub(crate) unmarked_sent_at: Option<Instant>,
}

impl Acked {
    fn new(ack: Ack) -> Self {
        Self { sent_at: ack.sent_at, round: ack.round, unmarked_sent_at: (!ack.marked).then_some(ack.sent_at) }
    }

    /// Fold in a later answer. Replies can arrive out of order across probes and streams:
    /// keep the latest of each.
    pub(crate) fn add(&mut self, ack: Ack) {
        self.sent_at = self.sent_at.max(ack.sent_at);
        self.round = self.round.max(ack.round);
        if !ack.marked {
            self.unmarked_sent_at = self.unmarked_sent_at.max(Some(ack.sent_at));
        }
    }
}

impl<C: RaftTypeConfig> Engine<C> {
    /// `target` answered a request of leadership `vote`; `ack` says when and in which
    /// heartbeat round that request was sent.
    pub(crate) fn on_heartbeat_acked(&mut self, target: C::NodeId, vote: Vote<C>, ack: Ack) {
        let Some(leader) = self.leader.as_mut() else { return };
        // A late answer from a stream of another leadership, or to a node no longer replicated
        // to, says nothing about this leadership's members.
        if leader.vote != vote || !leader.progress.contains_key(&target) {
            return;
        }
        leader.acked.get_or_insert(target, Acked::new(ack)).add(ack);
        self.note_followers_awake();
    }

    /// For check-quorum: the latest time at which a quorum (of every config) is known to have
    /// followed this leader. The leader itself counts as `now`; a member that never answered
    /// counts as the start of the leadership (or the end of its quiescence), which gives a new
    /// (or woken) leader one election timeout of grace. Never use this for the lease: see [`lease_valid`](Self::lease_valid).
    pub(crate) fn check_quorum_acked_at(&self, now: Instant) -> Option<Instant> {
        let leader = self.leader.as_ref()?;
        let me = self.config.id;
        self.state.membership.effective().quorum_value(|id| {
            if *id == me { now } else { leader.acked.get(id).map_or(leader.since, |a| a.sent_at.max(leader.since)) }
        })
    }

    /// Whether this node leads and a quorum of its effective config followed it within the
    /// maximum election timeout (as check-quorum counts, whether check-quorum is on or not).
    /// Only such a leader may take its config for the group's current one: a stale leader, cut
    /// off while a newer leader moved the group to a config it never saw, has no recent quorum,
    /// and a voter of that config must be able to reach it (found in review: with
    /// check-quorum off, a stale leader refused such a voter for good, and the group, needing
    /// that stale node's vote, never elected).
    pub(crate) fn leader_known_current(&self, now: Instant) -> bool {
        self.check_quorum_acked_at(now).is_some_and(|t| now < t + self.config.election_timeout_max)
    }

    /// The latest send time of a request that a quorum (of every config) really answered; the
    /// leader counts as `now`. `None` while some quorum has not answered at all.
    fn lease_acked_at(&self, now: Instant) -> Option<Instant> {
        let leader = self.leader.as_ref()?;
        let me = self.config.id;
        self.state
            .membership
            .effective()
            .quorum_value(|id| if *id == me { Some(now) } else { leader.acked.get(id).map(|a| a.sent_at) })
            .flatten()
    }

    /// Whether the leader lease holds at `now` (dissertation §6.4.1).
    ///
    /// It holds while all of this is true:
    /// - check-quorum is on, so voters refuse (pre-)votes for `election_timeout_min` after
    ///   hearing from this leader (leader stickiness) — also after they restart;
    /// - a quorum of every config *answered* a request this leader sent less than `lease`
    ///   (`election_timeout_min - max_clock_drift`) ago: members that never answered count
    ///   for nothing, unlike in check-quorum's grace;
    /// - this leader's blank entry is committed, so it knows everything committed before it;
    /// - it has not told another node to campaign (a leadership transfer's TimeoutNow), since
    ///   that node's vote requests pass over stickiness.
    pub(crate) fn lease_valid(&self, now: Instant) -> bool {
        let Some(leader) = self.leader.as_ref() else { return false };
        if !self.config.check_quorum || leader.lease_revoked {
            return false;
        }
        if leader.blank_log_id.is_none_or(|b| Some(b) > self.state.committed) {
            return false;
        }
        self.lease_acked_at(now).is_some_and(|t| now < t + self.config.lease)
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
        match self.check_quorum_acked_at(now) {
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
