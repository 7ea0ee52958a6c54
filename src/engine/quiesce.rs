//! Quiescence: a group with nothing to replicate stops its heartbeats and election timers.
//!
//! A node hosting thousands of Raft groups (see `crate::multi`) cannot afford a heartbeat
//! per group per interval. A leader whose log is idle and fully replicated *quiesces*: it
//! sends every follower one last heartbeat marked `quiesce`, then sends nothing more until
//! something happens. A follower that gets that heartbeat from its leader, holding the
//! leader's whole log with all of it committed, quiesces too: it stops its election timer.
//!
//! What replaces the heartbeat is the host's **node liveness**: one beat per node pair and
//! interval for all groups (`multi::Liveness`). Leader stickiness and the election timer of a
//! quiesced follower follow its leader's *node*:
//!
//! - While the leader's node is heard from, the follower counts that as hearing from the
//!   leader (RaftCore feeds it in with [`Engine::on_leader_node_heard`] before the follower
//!   answers a vote request), so it refuses votes exactly as a follower of a heartbeating
//!   leader would: a quiesced follower never starts or helps an election against a live
//!   leader.
//! - When the host suspects the leader's node (no beat for a while, or the node restarted,
//!   or it gave up a leadership it had quiesced), RaftCore wakes the follower
//!   ([`Engine::wake_follower`]); its election timer runs from the last time the leader's
//!   node was heard, so an orphaned group elects as soon as an unquiesced one would.
//!   **Orphans** take turns: every survivor of the group woke for the same leader at about
//!   the same time, so each times out in a slot of the timeout range of its own, in an order
//!   all of them agree on (`reset_orphan_election_deadline`), and the first one's pre-vote
//!   and vote reach the others before they would campaign: no split vote.
//!
//! Anything that needs the leader wakes it: a write, a read, a transfer, a vote request from
//! a member (not from a stranger: a voter removed while cut off campaigns for good).
//! A quiesced leader keeps the lease its last answers gave it until it runs out (its followers
//! are at least as sticky as ever); no answers arrive to renew it. Any read wakes the group, so
//! that heartbeats renew the lease; a read after the lease ran out waits for a heartbeat round.
//!
//! A leadership that ends while some follower may still be quiesced under it (it quiesced, and
//! not every member answered it since it woke) has RaftCore tell the host (`ReleaseQuiesced`),
//! whose next beats name the group and the term: the followers' hosts wake that group. A
//! follower checks the host incarnation in the marked heartbeat, and the releases its host
//! heard of, when it quiesces, so a mark that arrives after such a change does not quiesce it. Any vote request of a member also wakes a quiesced follower: somebody in
//! the group is not hearing the leader, so the group must not stay silent.
//!
//! Safety does not depend on any of this: Raft's safety never depends on timers, and a
//! quiesced follower is only ever *more* sticky than one that hears heartbeats (its last
//! contact never moves back), which is the direction the lease tolerates.

use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::RaftTypeConfig;
use crate::engine::{Command, Engine};

impl<C: RaftTypeConfig> Engine<C> {
    /// The leader, with nobody waiting on it (RaftCore has no pending write, read, transfer
    /// or membership change), quiesces if its group is idle: every entry is durable here,
    /// committed, and matched by every member; no membership change or transfer is under
    /// way. Members for which `is_live` says no (the host does not hear their node) need not
    /// have matched: a group must not stay awake for a dead node. Returns whether it is
    /// quiesced.
    pub(crate) fn leader_try_quiesce(&mut self, is_live: impl Fn(&C::NodeId) -> bool) -> bool {
        if !self.config.quiesce {
            return false;
        }
        let last = self.state.last_log_id();
        let committed = self.state.committed;
        let uniform = self.state.membership.effective.log_id == self.state.membership.committed.log_id
            && !self.state.membership.effective().is_joint();
        let Some(leader) = self.leader.as_mut() else { return false };
        if leader.quiesced {
            return true;
        }
        let idle = last.is_some()
            && committed == last
            && leader.flushed == last
            && leader.blank_log_id <= committed
            && leader.transfer.is_none()
            && leader.membership_target.is_none()
            && uniform
            && !self.state.io_stalled
            && leader.progress.iter().all(|(id, m)| *m == last || !is_live(id));
        if !idle {
            return false;
        }
        let Some(last) = last else { return false };
        debug!(id = %self.config.id, %last, "quiescing: the group is idle");
        leader.quiesced = true;
        leader.followers_may_be_quiesced = true;
        // No heartbeats, no answers: check-quorum waits for the wake-up.
        self.election_deadline = None;
        self.output.push_back(Command::SetQuiesced { last: Some(last) });
        true
    }

    /// Something needs the leader: resume heartbeats and check-quorum. Members that have not
    /// answered since count as having followed it now (check-quorum's grace, as for a new
    /// leader); the lease still counts real answers only.
    pub(crate) fn leader_wake(&mut self, now: Instant) {
        let Some(leader) = self.leader.as_mut() else { return };
        if !leader.quiesced {
            return;
        }
        debug!(id = %self.config.id, "waking the quiesced group");
        leader.quiesced = false;
        leader.since = now;
        self.election_deadline = self.config.check_quorum.then(|| now + self.config.election_timeout_max);
        self.output.push_back(Command::SetQuiesced { last: None });
    }

    /// A follower asked, through its host, that the leader of `term` heartbeat again (a member
    /// campaigns that the follower would otherwise stop refusing; see
    /// [`WakeRequest`](crate::multi::WakeRequest)): wake if this node is that leader.
    pub(crate) fn leader_wake_for_follower(&mut self, now: Instant, term: u64) {
        if self.state.vote.term == term && self.leader_quiesced() {
            debug!(id = %self.config.id, term, "a follower asks this quiesced leader to heartbeat again");
            self.leader_wake(now);
        }
    }

    /// Whether this node leads a quiesced group.
    pub(crate) fn leader_quiesced(&self) -> bool {
        self.leader.as_ref().is_some_and(|l| l.quiesced)
    }

    /// Whether some follower may be quiesced under this leader: it quiesced, and since it
    /// woke, not every member answered it yet. If this leadership ends now (shutdown, step
    /// down), the followers must learn it from the host: nothing else would wake them.
    pub(crate) fn followers_may_be_quiesced(&self) -> bool {
        self.leader.as_ref().is_some_and(|l| l.quiesced || l.followers_may_be_quiesced)
    }

    /// After an acknowledgement: once every member answered a request not marked `quiesce`
    /// and sent after the leader woke, no follower is quiesced under it any more.
    ///
    /// Why that proves it: a member handles one stream's requests in order. After the wake a
    /// stream that has not yet seen it may still send a marked heartbeat (it quiesces the
    /// follower), but every request it sends once it has seen the wake is unmarked, and comes
    /// after; so a follower that handled an unmarked request sent after the wake is awake,
    /// until the leader quiesces again (which starts over). A marked answer proves nothing
    /// here, whenever it was sent. "After" is strict: a request sent at the very instant of
    /// the wake (a paused clock, or a coarse one) may have been sent before it, as the
    /// stream's last unmarked request before the marked one; such a member waits for its next
    /// answer, which costs at most a release that was not needed.
    pub(crate) fn note_followers_awake(&mut self) {
        let Some(leader) = self.leader.as_mut() else { return };
        if leader.quiesced || !leader.followers_may_be_quiesced {
            return;
        }
        let since = leader.since;
        let awake = |id: &C::NodeId| leader.acked.get(id).and_then(|a| a.unmarked_sent_at).is_some_and(|t| t > since);
        if leader.progress.keys().all(awake) {
            leader.followers_may_be_quiesced = false;
        }
    }

    /// The leader this follower quiesced under, if it is quiesced, and its host's identity
    /// then.
    pub(crate) fn quiesced_under(&self) -> Option<C::NodeId> {
        self.quiesced_under
    }

    /// The identity of the host of the leader this follower quiesced under.
    pub(crate) fn quiesced_mark(&self) -> Option<crate::types::QuiesceMark> {
        self.quiesced_mark.filter(|_| self.quiesced_under.is_some())
    }

    /// A follower handled a successful heartbeat marked `quiesce` from its leader, ending at
    /// `matched` with the leader's commit `leader_commit`: it quiesces if it holds exactly the
    /// leader's log and all of it is committed.
    pub(crate) fn follower_quiesce(
        &mut self,
        matched: Option<crate::types::LogId<C>>,
        leader_commit: Option<crate::types::LogId<C>>,
        mark: crate::types::QuiesceMark,
    ) {
        if !self.config.quiesce || self.leader.is_some() {
            return;
        }
        let Some(leader_id) = self.state.leader_id else { return };
        let whole = matched.is_some()
            && matched == self.state.last_log_id()
            && leader_commit == matched
            && self.state.committed == matched;
        if !whole {
            return;
        }
        debug!(id = %self.config.id, leader = %leader_id, "quiescing under the leader");
        self.quiesced_under = Some(leader_id);
        self.quiesced_mark = Some(mark);
        self.election_deadline = None;
    }

    /// The host last heard from this quiesced follower's leader's node at `at`: count it as
    /// contact with the leader (for stickiness). It never moves the contact back.
    pub(crate) fn on_leader_node_heard(&mut self, at: Option<Instant>) {
        if self.quiesced_under.is_some() {
            self.count_as_leader_contact(at);
        }
    }

    /// Wake a quiesced follower: its leader's node is suspected, or the group needs to be
    /// heard. `last_heard` is when the leader's node was last heard from: the election timer
    /// runs from then, and stickiness counts it as the last contact.
    pub(crate) fn wake_follower(&mut self, now: Instant, last_heard: Option<Instant>) {
        let Some(leader) = self.quiesced_under.take() else { return };
        self.count_as_leader_contact(last_heard);
        // The timer runs from the last sign of the leader (its last message or its node's last
        // beat), as it would had heartbeats stopped then.
        let from = self.last_leader_contact.map_or(now, |t| t.min(now));
        self.reset_orphan_election_deadline(now, from, leader);
    }

    /// The election timer of a follower woken from quiescence under `leader`, last heard
    /// from at `from`: one election timeout after `from`, in this node's own slot of the
    /// timeout range.
    ///
    /// Every other voter of the group woke for the same leader at about the same time, so
    /// independent random timeouts often expire together, and two survivors that both win
    /// a pre-vote split the real vote and wait a whole timeout more; a host of thousands of
    /// groups wakes them all at once, and the CPU's queue widens what "together" means. So
    /// the survivors (the voters but `leader`) take turns: ordered by id and rotated by the
    /// group's `rank_salt` (the same order on every node of the group, a different first
    /// survivor from group to group), the one ranked `r` of `k` times out in
    /// `[min + r·span/k, min + r·span/k + span/2k)`, where `span = max - min`. The first one's
    /// pre-vote and vote reach the others at least `span/2k` before they would campaign
    /// (75 ms of the default 150–300 ms for three voters' two survivors), and within its
    /// slot each group draws its own time, so the host's groups do not campaign in step. A
    /// follower woken later than `from + min` keeps the order from now: the first campaigns
    /// at once (within its slot's jitter), the next a slot later.
    ///
    /// Timing is liveness only. The deadline is never earlier than `from + min`, so this node
    /// campaigns no sooner than before, and stickiness (refusing votes for `min` after the
    /// last contact) reads the contact, not the deadline. A node that is no survivor (a
    /// learner) gets an ordinary random timeout.
    fn reset_orphan_election_deadline(&mut self, now: Instant, from: Instant, leader: C::NodeId) {
        let min = self.config.election_timeout_min;
        let Some((rank, k)) = self.survivor_turn(leader, self.config.id) else {
            self.reset_election_deadline(from);
            if self.election_deadline.is_some_and(|d| d < now) {
                self.election_deadline = Some(now);
            }
            return;
        };
        self.orphan_of = Some(leader);
        let slot = self.election_timeout_span() / k;
        let jitter = self.next_random() % (slot / 2).max(1);
        let deadline = (from + min).max(now) + Duration::from_nanos(rank * slot + jitter);
        debug!(
            id = %self.config.id, %leader, rank, survivors = k,
            after_ms = deadline.saturating_duration_since(now).as_millis() as u64,
            "waking: the quiesced group's leader must be heard from again"
        );
        self.election_deadline = Some(deadline);
    }

    /// The turn of voter `id` among the survivors of `leader` (the other voters of the
    /// effective config), and how many survivors there are; `None` if `id` is none. The same
    /// order on every node with the same config: by id, rotated by the group's `rank_salt`.
    pub(crate) fn survivor_turn(&self, leader: C::NodeId, id: C::NodeId) -> Option<(u64, u64)> {
        let survivors: Vec<C::NodeId> =
            self.state.membership.effective().voter_ids().into_iter().filter(|v| *v != leader).collect();
        let position = survivors.iter().position(|v| *v == id)?;
        let k = survivors.len() as u64;
        Some(((position as u64 + splitmix64(self.config.rank_salt) % k) % k, k))
    }

    fn count_as_leader_contact(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.last_leader_contact = self.last_leader_contact.max(Some(at));
        }
    }
}

/// SplitMix64's finalizer: spreads consecutive group ids over all of `u64`, so that their
/// order of survivors does not follow a pattern of the ids. (Replication streams draw their
/// retry jitter with it too.)
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
