//! Elections: timeouts, vote requests and responses, becoming leader, stepping down.

use std::collections::BTreeSet;

use tokio::time::Instant;
use tracing::{debug, info};

use crate::RaftTypeConfig;
use crate::engine::{Candidate, Command, Engine, Leader, ServerState};
use crate::raft::{VoteRequest, VoteResponse};
use crate::types::{DisplayOption, EntryPayload, Membership, Vote};

impl<C: RaftTypeConfig> Engine<C> {
    /// Time passed: start an election if the deadline is reached and this node may lead.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self.election_deadline {
            Some(deadline) if now >= deadline => {}
            _ => return,
        }
        if self.leader.is_some() || !self.state.membership.effective().is_voter(&self.config.id) {
            self.election_deadline = None;
            return;
        }
        self.elect(now);
    }

    /// Become a candidate in the next term and ask every voter for its vote (Raft §5.2).
    pub(crate) fn elect(&mut self, now: Instant) {
        if !self.state.membership.effective().is_voter(&self.config.id) {
            debug!(id = %self.config.id, "not a voter; not starting an election");
            return;
        }
        self.step_down_from_leader();
        let vote = Vote::new(self.state.vote.term + 1, self.config.id);
        info!(id = %self.config.id, %vote, "starting election");
        self.save_vote(vote);
        self.state.server_state = ServerState::Candidate;
        self.state.leader_id = None;
        self.candidate = Some(Candidate { vote, granted: BTreeSet::from([self.config.id]) });
        self.reset_election_deadline(now);
        if self.try_win_election() {
            return;
        }
        let req = VoteRequest { vote, last_log_id: self.state.last_log_id() };
        self.output.push_back(Command::SendVote { req });
    }

    /// Answer a candidate's vote request (Raft §5.2, §5.4.1).
    ///
    /// The answer may be sent once the commands it pushed (a `SaveVote`) are executed.
    pub(crate) fn handle_vote_req(&mut self, now: Instant, req: &VoteRequest<C>) -> VoteResponse<C> {
        let last_log_id = self.state.last_log_id();
        // Raft §5.4.1: grant only to a candidate whose log is at least as up-to-date as ours.
        let log_ok = req.last_log_id >= last_log_id;
        let granted = log_ok && req.vote.is_ge(&self.state.vote) && !req.vote.committed;
        if granted {
            if req.vote != self.state.vote {
                self.step_down_from_leader();
                self.candidate = None;
                self.save_vote(req.vote);
                self.state.server_state = self.follower_or_learner();
                self.state.leader_id = None;
            }
            // Granting a vote defers our own election, so the candidate has time to win.
            self.reset_election_deadline(now);
        }
        debug!(
            id = %self.config.id, req_vote = %req.vote, req_last = %DisplayOption(&req.last_log_id),
            my_vote = %self.state.vote, my_last = %DisplayOption(&last_log_id), granted, "vote request"
        );
        VoteResponse { vote: self.state.vote, vote_granted: granted, last_log_id }
    }

    /// Count a vote response from `target`, received at `now`.
    pub(crate) fn handle_vote_resp(&mut self, now: Instant, target: C::NodeId, resp: &VoteResponse<C>) {
        if resp.vote_granted {
            // A grant counts only for the election it was asked for.
            if let Some(candidate) = self.candidate.as_mut() {
                if resp.vote == candidate.vote {
                    candidate.granted.insert(target);
                    self.try_win_election();
                }
            }
        } else if resp.vote.is_gt(&self.state.vote) {
            debug!(id = %self.config.id, %target, resp_vote = %resp.vote, "vote rejected with a greater vote");
            self.see_greater_vote(now, resp.vote);
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
        self.save_vote(adopted);
        self.state.server_state = self.follower_or_learner();
        self.state.leader_id = adopted.leader_id().map(|l| l.node_id);
        if was_leader {
            // A leader runs no election timer. Without one, a former leader would never
            // campaign again if the newer term never produces a leader that reaches it.
            self.reset_election_deadline(now);
        }
    }

    /// If the candidate holds a quorum of the effective membership, become leader.
    fn try_win_election(&mut self) -> bool {
        let Some(candidate) = &self.candidate else { return false };
        if candidate.vote != self.state.vote || !self.state.membership.effective().is_quorum(candidate.granted.iter()) {
            return false;
        }
        self.become_leader();
        true
    }

    /// Won the election: commit the vote, start replication and append a blank entry so that
    /// entries of earlier terms commit (Raft §5.4.2) and reads can be served (§8).
    fn become_leader(&mut self) {
        let vote = self.state.vote.into_committed();
        info!(id = %self.config.id, %vote, last = %DisplayOption(&self.state.last_log_id()), "became leader");
        self.candidate = None;
        self.save_vote(vote);
        self.state.server_state = ServerState::Leader;
        self.state.leader_id = Some(self.config.id);
        self.election_deadline = None;
        self.leader = Some(Leader::new(vote, self.state.io.accepted.seq + 1));
        self.update_replication_streams();
        self.leader_append_entries([EntryPayload::Blank]);
    }

    /// Stop acting as leader, if this node is one. Pending client writes stay: their entries
    /// may still commit under the next leader, or be truncated, and are answered then.
    pub(crate) fn step_down_from_leader(&mut self) {
        if self.leader.take().is_some() {
            info!(id = %self.config.id, vote = %self.state.vote, "stepping down as leader");
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
    pub(crate) fn initialize(&mut self, now: Instant, membership: Membership<C>) {
        let log_id = crate::types::LogId::new(crate::types::LeaderId::new(0, C::NodeId::default()), 0);
        self.state.log_ids.append(log_id);
        self.state.membership.append(log_id, membership.clone());
        let io = self.next_io();
        let entries = vec![crate::types::Entry::new_membership(log_id, membership)];
        self.output.push_back(Command::AppendEntries { io, entries });
        self.state.server_state = self.follower_or_learner();
        // Start the election at once; the other nodes have an empty log and will vote for us.
        self.elect(now);
    }
}
