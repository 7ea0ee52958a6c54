//! Elections: timeouts, vote requests and responses, becoming leader, stepping down.

use std::collections::BTreeSet;

use tokio::time::Instant;
use tracing::{debug, info};

use crate::RaftTypeConfig;
use crate::engine::{Candidate, Command, Engine, Leader, ServerState};
use crate::types::{DisplayOption, EntryPayload, LogId, Membership, Vote};
use crate::types::{VoteRequest, VoteResponse};

impl<C: RaftTypeConfig> Engine<C> {
    /// Time passed: on a follower, start an election if no leader was heard from in time; on
    /// a leader, check that a quorum still acknowledges it and end an overdue transfer.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self.election_deadline {
            Some(deadline) if now >= deadline => {}
            _ => return,
        }
        if self.leader.is_some() {
            self.leader_on_timeout(now);
            return;
        }
        if !self.may_campaign() {
            self.election_deadline = None;
            return;
        }
        if self.leader_alive(now) {
            // The timer ran from before the last contact with a leader (a woken quiesced
            // follower's runs from its leader's node's last beat): this node would refuse its
            // own campaign. Run the timer again from that contact rather than firing at once.
            self.reset_election_deadline(self.last_leader_contact.unwrap_or(now));
            return;
        }
        self.elect(now);
    }

    /// Start an election (Raft §5.2): with pre-vote enabled, first ask whether it could win.
    pub(crate) fn elect(&mut self, now: Instant) {
        if self.config.pre_vote {
            self.campaign(now, true, false);
        } else {
            self.campaign(now, false, false);
        }
    }

    /// An operator asked this node to start an election now (`trigger().elect()`).
    ///
    /// A follower campaigns as if its election timer fired: voters that heard from a live
    /// leader within `election_timeout_min` refuse it (leader stickiness), so a healthy leader
    /// — and the lease it may be serving reads under — is never deposed this way. A leader
    /// steps down and campaigns forced: it ends its own lease, and no voter that follows a
    /// newer leader can grant a vote of its (older or equal) next term.
    pub(crate) fn trigger_elect(&mut self, now: Instant) {
        if self.leader.is_some() {
            self.elect_forced(now);
        } else {
            self.elect(now);
        }
    }

    /// Start a real election at once, asking voters to vote even if they heard from a leader
    /// recently. Only for cases where no other leader's lease can be broken: a leadership
    /// transfer (its leader revoked its lease when it sent TimeoutNow), a leader standing
    /// again, and a new cluster's first election.
    pub(crate) fn elect_forced(&mut self, now: Instant) {
        self.campaign(now, false, true);
    }

    /// Become a (pre-)candidate for the next term and ask every voter.
    fn campaign(&mut self, now: Instant, pre_vote: bool, force: bool) {
        if !self.may_campaign() {
            debug!(id = %self.config.id, "not a voter; not starting an election");
            return;
        }
        if !force && self.leader.is_none() && self.leader_alive(now) {
            // This node is a voter too: having heard from a live leader, it would refuse anyone
            // else's vote request, and must refuse its own the same way (a leader's lease counts
            // on it). Its election timer never fires this early; only an operator's trigger can.
            info!(id = %self.config.id, "heard from a live leader within the election timeout; not starting an election");
            return;
        }
        if self.state.io_stalled {
            debug!(id = %self.config.id, "log store stalled; not starting an election");
            self.reset_election_deadline(now);
            return;
        }
        self.step_down_from_leader();
        self.quiesced_under = None;
        let turn_of = self.orphan_of.take();
        let vote = Vote::new(self.state.vote.term + 1, self.config.id);
        info!(id = %self.config.id, %vote, pre_vote, force, "starting election");
        if !pre_vote {
            self.save_vote(vote);
            self.elections_started += 1;
        }
        self.state.server_state = ServerState::Candidate;
        self.state.leader_id = None;
        self.candidate =
            Some(Box::new(Candidate { vote, granted: BTreeSet::from([self.config.id]), pre_vote, force, turn_of }));
        self.reset_election_deadline(now);
        if self.try_win_election(now) {
            return;
        }
        let req = VoteRequest { vote, last_log_id: self.state.last_log_id(), pre_vote, force };
        self.output.push_back(Command::SendVote { req });
    }

    /// Whether `id` votes in the effective or the committed config.
    fn is_voter_member(&self, id: &C::NodeId) -> bool {
        let ms = &self.state.membership;
        ms.effective().is_voter(id) || ms.committed.membership.is_voter(id)
    }

    /// Whether this node believes a leader is alive: it leads, or heard from a leader within
    /// the minimum election timeout. Such a node refuses (pre-)votes, so a node that merely
    /// lost contact cannot depose a healthy leader (dissertation §9.6).
    fn leader_alive(&self, now: Instant) -> bool {
        self.config.check_quorum
            && (self.leader.is_some()
                || self.last_leader_contact.is_some_and(|t| now < t + self.config.election_timeout_min))
    }

    /// Answer a candidate's vote or pre-vote request (Raft §5.2, §5.4.1; dissertation §9.6).
    ///
    /// The answer may be sent once the commands it pushed (a `SaveVote`) are executed.
    pub(crate) fn handle_vote_req(&mut self, now: Instant, req: &VoteRequest<C>) -> VoteResponse<C> {
        // Somebody is campaigning: a quiesced group must be heard from again, whatever the
        // answer (see `quiesce.rs`). A quiesced follower's stickiness already counts its
        // leader's node as heard (RaftCore fed it in before this request).
        //
        // Not for a candidate that votes in no config of the group as this node knows it: a
        // voter removed while cut off never learns of its removal (nobody replicates to it) and
        // campaigns for as long as it runs; waking for it would keep the group awake as long.
        // Nor for a learner (a voter demoted to one, that campaigns until it learns the change
        // committed; found in review: cut off from the leader only, it woke the group at every
        // timeout). Their requests are refused all the same (stickiness, and a log that lacks
        // the change), and a voter that stops hearing the leader campaigns itself, which wakes
        // the group.
        if req.vote.node_id.is_some_and(|c| self.is_voter_member(&c)) {
            self.leader_wake(now);
            self.wake_follower(now, None);
        }
        let last_log_id = self.state.last_log_id();
        // Raft §5.4.1: grant only to a candidate whose log is at least as up-to-date as ours.
        let log_ok = req.last_log_id >= last_log_id;
        // A leader that a quorum of its config followed within the election timeout refuses a
        // candidate that is no voter of that config, and does not adopt its term: a node
        // removed from the group (or never in it) that campaigns on its own, pre-vote off,
        // must not depose the leader the members follow (dissertation §4.2.3). Refusing a vote
        // is always safe. Not a leader without that recent quorum: it may be a stale one that
        // never saw the config the candidate votes in (see `leader_known_current`). This covers
        // the leader only: without check-quorum (no stickiness) its followers still adopt such
        // a candidate's term and depose it through their answers; keeping removed nodes out
        // entirely needs pre-vote or check-quorum (both on by default).
        let outsider = !req.vote.node_id.is_some_and(|c| self.state.membership.effective().is_voter(&c))
            && self.leader_known_current(now);
        let sticky = outsider || (!req.force && self.leader_alive(now));
        let turn = if req.pre_vote { self.turn(req, last_log_id) } else { None };
        let granted = log_ok
            && !sticky
            && req.vote.is_ge(&self.state.vote)
            && !req.vote.committed
            && !(turn == Some(Turn::Mine) && self.candidate.is_some());
        debug!(
            id = %self.config.id, req_vote = %req.vote, req_last = %DisplayOption(&req.last_log_id),
            pre_vote = req.pre_vote, my_vote = %self.state.vote, my_last = %DisplayOption(&last_log_id),
            log_ok, sticky, granted, "vote request"
        );
        if req.pre_vote {
            if granted && turn == Some(Turn::Theirs) {
                debug!(id = %self.config.id, candidate = %req.vote, "a survivor whose turn comes first campaigns; giving way");
                if self.candidate.take().is_some() {
                    // This node's own pre-vote gives way (else both could win their pre-votes,
                    // and split the real vote). Its timer runs again.
                    self.state.server_state = self.follower_or_learner();
                    self.reset_election_deadline(now);
                } else {
                    // Not campaigning yet: its timer must not fire before that candidate's
                    // real vote request arrives (with more survivors, two pre-votes granted
                    // by the others would split the vote). Once per wake.
                    let after = now + self.config.election_timeout_min;
                    self.election_deadline = Some(self.election_deadline.map_or(after, |d| d.max(after)));
                    self.orphan_of = None;
                }
            }
            // A pre-vote changes nothing else here; a grant echoes the request's vote so the
            // candidate can tell which round it answers.
            let vote = if granted { req.vote } else { self.state.vote };
            return VoteResponse {
                vote,
                vote_granted: granted,
                last_log_id,
                pre_vote: true,
                committed: self.committed_for(req.last_log_id),
            };
        }
        if granted || (!sticky && req.vote.term > self.state.vote.term) {
            // This node stops following the leader it may be quiesced under (a non-member's
            // request did not wake it above): its metrics and host signals must not say it
            // still does.
            self.wake_follower(now, None);
        }
        if granted {
            // The election after the wake is this one: no turn in a later one.
            self.orphan_of = None;
            if req.vote != self.state.vote {
                self.step_down_from_leader();
                self.candidate = None;
                self.save_vote(req.vote);
                self.state.server_state = self.follower_or_learner();
                self.state.leader_id = None;
            }
            // Granting a vote defers our own election, so the candidate has time to win.
            self.reset_election_deadline(now);
        } else if !sticky && req.vote.term > self.state.vote.term {
            // Raft §5.1: a newer term is adopted even when the vote is refused (here, for a log
            // that is behind), so a stale leader steps down and our next campaign outbids it.
            // A node that believes a leader is alive ignores the request entirely (§9.6).
            self.see_greater_vote(now, Vote { term: req.vote.term, node_id: None, committed: false });
        }
        VoteResponse {
            committed: self.committed_for(req.last_log_id),
            ..VoteResponse::new(self.state.vote, granted, last_log_id)
        }
    }

    /// The committed entry to tell a candidate whose last log id is `candidate_last`: this
    /// node's committed log id, or, when that lies beyond the candidate's log, this node's
    /// entry at the candidate's last index, committed as well. A node that holds the config
    /// removing it but missed the commit learns it from such an answer even after the group
    /// committed more (found in review: the committed log id alone was past its log, and it
    /// campaigned for good).
    ///
    /// If this node purged its log past that index, it names the latest membership entry it
    /// knows (committed, at or below the candidate's last index) instead: still known after a
    /// purge, and the entry a removed node needs to find in its own log (found in review:
    /// after the group snapshotted and purged, the removed node learned nothing again).
    fn committed_for(&self, candidate_last: Option<LogId<C>>) -> Option<LogId<C>> {
        let committed = self.state.committed;
        let (Some(c), Some(last)) = (committed, candidate_last) else { return committed };
        if last.index >= c.index {
            return committed;
        }
        if let Some(held) = self.state.log_ids.get(last.index) {
            return Some(held);
        }
        let ms = &self.state.membership;
        [ms.effective.log_id, ms.committed.log_id]
            .into_iter()
            .flatten()
            .filter(|m| m.index <= last.index && m.index <= c.index)
            .max()
            .or(committed)
    }

    /// Whose turn it is, if the pre-vote `req` meets this node's own pre-vote in the first
    /// campaign after both woke as survivors of a dead quiesced leader (for the same term, with
    /// the same log; see [`Self::reset_orphan_election_deadline`] for the turns).
    ///
    /// Under load the turns' head start is not enough: both survivors' timers fire before the
    /// first one's pre-vote is answered, each grants the other's pre-vote, both start real
    /// elections in the same term, and the vote splits (a whole election timeout more). So while
    /// this node's turn pre-vote runs, a survivor whose turn comes later is refused
    /// ([`Turn::Mine`]), and one whose turn comes first is granted and this node's own pre-vote
    /// gives way ([`Turn::Theirs`]). A survivor that has not campaigned yet grants as usual,
    /// and if the requester's turn comes first, puts its own timer off by
    /// `election_timeout_min` (once), so that with more survivors it does not win a pre-vote
    /// of its own before that candidate's real vote request reaches it.
    ///
    /// Liveness only, and bounded: a pre-vote refusal, a dropped pre-candidacy or a later
    /// timer changes no persistent state; a refusal applies only while this node's own pre-vote
    /// can win (the requester, with the same log and a later turn, grants it, and gives way);
    /// and only the first campaign after a wake has a turn (granting a real vote or seeing a
    /// newer term ends it too).
    fn turn(&self, req: &VoteRequest<C>, last_log_id: Option<crate::types::LogId<C>>) -> Option<Turn> {
        let requester = req.vote.node_id?;
        if req.last_log_id != last_log_id {
            return None;
        }
        let leader = match self.candidate.as_ref() {
            Some(c) if c.pre_vote && c.vote.term == req.vote.term => c.turn_of?,
            Some(_) => return None,
            // A woken survivor that has not campaigned yet.
            None if req.vote.term == self.state.vote.term + 1 => self.orphan_of?,
            None => return None,
        };
        let (mine, _) = self.survivor_turn(leader, self.config.id)?;
        let (theirs, _) = self.survivor_turn(leader, requester)?;
        Some(if mine < theirs { Turn::Mine } else { Turn::Theirs })
    }

    /// Count a vote response from `target`, received at `now`.
    pub(crate) fn handle_vote_resp(&mut self, now: Instant, target: C::NodeId, resp: &VoteResponse<C>) {
        self.learn_committed_from_voter(resp.committed);
        if resp.vote_granted {
            // A grant counts only for the election it was asked for, and a pre-vote grant
            // only for a pre-vote: it is no vote.
            if let Some(candidate) = self.candidate.as_mut() {
                if resp.vote == candidate.vote && resp.pre_vote == candidate.pre_vote {
                    candidate.granted.insert(target);
                    self.try_win_election(now);
                }
            }
        } else if resp.vote.is_gt(&self.state.vote) {
            debug!(id = %self.config.id, %target, resp_vote = %resp.vote, "vote rejected with a greater vote");
            self.see_greater_vote(now, resp.vote);
        } else if let Some(candidate) = self.candidate.as_mut().filter(|c| c.pre_vote && resp.pre_vote) {
            // A voter refused this pre-vote (it still hears the dead leader's node, say): the
            // round may not win, so it no longer holds back survivors whose turn comes later
            // (see `turn`), one of which may win where it does not.
            candidate.turn_of = None;
        }
    }

    /// A voter answered that `committed` is committed. If this node's log holds that very
    /// entry, its log matches the voter's up to there (Log Matching), so it is committed here
    /// too. Found in review: a node holding the config that removed it, whose commit never
    /// reached it (its stream ended first), counted itself a voter of the config before and
    /// campaigned for good; the voters it asks tell it the commit, and it stops. Not on a
    /// leader, which learns commits from its own quorum.
    fn learn_committed_from_voter(&mut self, committed: Option<LogId<C>>) {
        let Some(c) = committed else { return };
        if self.leader.is_some() || Some(c) <= self.state.committed || self.state.log_ids.get(c.index) != Some(c) {
            return;
        }
        debug!(id = %self.config.id, committed = %c, "a voter says this entry of our log is committed");
        self.commit(c);
        if !self.may_campaign() {
            info!(id = %self.config.id, "not a voter of the committed config; no longer campaigning");
            self.candidate = None;
            self.election_deadline = None;
            self.state.server_state = ServerState::Learner;
        }
    }

    /// Another node holds a vote greater than ours: adopt its term (Raft §5.1), and, if it is
    /// an elected leader of a term we are in, follow it. A leader that steps down here starts
    /// its election timer at `now`.
    pub(crate) fn see_greater_vote(&mut self, now: Instant, vote: Vote<C>) {
        if !vote.is_gt(&self.state.vote) {
            return;
        }
        // An elected vote names the leader to follow. An unelected one is another node's
        // choice, not ours: adopt only its term (Raft's currentTerm = T, votedFor = null).
        let adopted = if vote.committed { vote } else { Vote { term: vote.term, node_id: None, committed: false } };
        if !adopted.is_gt(&self.state.vote) {
            return;
        }
        let was_leader = self.leader.is_some();
        self.step_down_from_leader();
        self.candidate = None;
        self.orphan_of = None;
        if self.quiesced_under.take().is_some() {
            self.reset_election_deadline(now);
        }
        self.save_vote(adopted);
        self.state.server_state = self.follower_or_learner();
        self.state.leader_id = adopted.leader_id().map(|l| l.node_id);
        if was_leader {
            // A leader runs no election timer. Without one, a former leader would never
            // campaign again if the newer term never produces a leader that reaches it.
            self.reset_election_deadline(now);
        }
    }

    /// If the candidate holds a quorum of the effective membership, become leader; after a
    /// won pre-vote, start the real election.
    fn try_win_election(&mut self, now: Instant) -> bool {
        let Some(candidate) = &self.candidate else { return false };
        if !self.state.membership.effective().is_quorum(candidate.granted.iter()) {
            return false;
        }
        if candidate.pre_vote {
            let force = candidate.force;
            self.campaign(now, false, force);
            return true;
        }
        if candidate.vote != self.state.vote {
            return false;
        }
        self.become_leader(now);
        true
    }

    /// Won the election: commit the vote, start replication and append a blank entry so that
    /// entries of earlier terms commit (Raft §5.4.2) and reads can be served (§8).
    fn become_leader(&mut self, now: Instant) {
        let vote = self.state.vote.into_committed();
        info!(id = %self.config.id, %vote, last = %DisplayOption(&self.state.last_log_id()), "became leader");
        self.candidate = None;
        self.save_vote(vote);
        self.state.server_state = ServerState::Leader;
        self.state.leader_id = Some(self.config.id);
        self.leader = Some(Box::new(Leader::new(vote, self.state.io.accepted.seq + 1, now)));
        // With check-quorum the leader's timer checks that a quorum still acknowledges it.
        self.election_deadline = self.config.check_quorum.then(|| now + self.config.election_timeout_max);
        self.update_replication_streams();
        let blank = self.leader_append_entries([EntryPayload::Blank]);
        if let Some(leader) = self.leader.as_mut() {
            leader.blank_log_id = blank;
        }
    }

    /// Stop acting as leader, if this node is one. Pending client writes stay: their entries
    /// may still commit under the next leader, or be truncated, and are answered then.
    pub(crate) fn step_down_from_leader(&mut self) {
        if let Some(leader) = self.leader.take() {
            info!(id = %self.config.id, vote = %self.state.vote, "stepping down as leader");
            if leader.quiesced || leader.followers_may_be_quiesced {
                // Followers may be quiesced under this leadership: RaftCore has the host tell
                // them it is over (see `quiesce.rs`).
                self.output.push_back(Command::ReleaseQuiesced { term: leader.vote.term });
            }
            self.output.push_back(Command::CloseReplicationStreams);
            self.state.server_state = self.follower_or_learner();
            self.state.leader_id = None;
        }
    }

    /// Set up the first entry of a new cluster: a membership entry at index 0.
    ///
    /// Allowed only on a node that has never had a log or a vote. The entry's id is the same on
    /// every node (term 0, the default node id), so initializing several nodes with the same
    /// membership is harmless; initializing them with different ones is an operator error.
    ///
    /// The first election starts once the entry is durable, not before: its vote is durable at
    /// once, and a node that crashed in between came back with a vote and no log, which it
    /// could neither be initialized from again nor elect with (found in review).
    pub(crate) fn initialize(&mut self, membership: Membership<C>) {
        let log_id = crate::types::LogId::new(crate::types::LeaderId::new(0, C::NodeId::default()), 0);
        self.state.log_ids.append(log_id);
        self.state.membership.append(log_id, membership.clone());
        let io = self.next_append_io();
        let entries = vec![crate::types::Entry::new_membership(log_id, membership)];
        self.output.push_back(Command::AppendEntries { io, entries });
        self.state.server_state = self.follower_or_learner();
        self.first_election_pending = true;
    }

    /// After RaftCore handed a flush to [`on_log_flushed`](Self::on_log_flushed): once the
    /// first entry `initialize` appended is durable, start the cluster's first election,
    /// forced (the other nodes have an empty log and no leader to be sticky to) — unless the
    /// node has meanwhile adopted a vote (`save_vote` clears the flag): then a leader may
    /// already hold a lease that counts this node, and a forced request would break it.
    pub(crate) fn after_log_flushed(&mut self, now: Instant) {
        if self.first_election_pending && self.state.io.flushed.last_log_id.is_some() {
            self.first_election_pending = false;
            self.elect_forced(now);
        }
    }
}

/// Whose turn it is when two survivors' first pre-votes meet (see [`Engine::turn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// This node's: the requester is refused.
    Mine,
    /// The requester's: it is granted, and this node's own pre-vote gives way.
    Theirs,
}
