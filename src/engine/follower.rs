//! Accepting a leader's AppendEntries: the vote check, the log matching check, conflict
//! truncation, append, and following the leader's commit.

use tokio::time::Instant;
use tracing::{debug, error};

use crate::RaftTypeConfig;
use crate::engine::{Command, Engine, LogIOId};
use crate::types::{AppendEntriesRequest, AppendEntriesResponse};
use crate::types::{DisplayOption, Entry, EntryPayload, LogId, Vote};

/// The first entry of `req` that no leader of `req.vote`'s term could send after
/// `req.prev_log_id`: one of a later term than the vote's, or of an earlier term than the entry
/// (or prev) before it.
fn entry_out_of_term_order<C: RaftTypeConfig>(req: &AppendEntriesRequest<C>) -> Option<LogId<C>> {
    first_out_of_term_order(req.vote.term, req.prev_log_id, req.entries.iter().map(|e| e.log_id))
}

/// The first of `ids` (following `prev`) whose term is above `term` or below the one before it.
pub(crate) fn first_out_of_term_order<C: RaftTypeConfig>(
    term: u64,
    prev: Option<LogId<C>>,
    ids: impl IntoIterator<Item = LogId<C>>,
) -> Option<LogId<C>> {
    let mut floor = prev.map_or(0, |p| p.leader_id.term);
    for id in ids {
        if id.leader_id.term > term || id.leader_id.term < floor {
            return Some(id);
        }
        floor = id.leader_id.term;
    }
    None
}

impl<C: RaftTypeConfig> Engine<C> {
    /// Whether the entries a [`Command::TruncateLog`] removed from `since` on can never commit,
    /// asked right after the input that truncated them (its commit is part of the answer).
    ///
    /// Being removed from this log does not end an entry: another node may hold it and still be
    /// elected with it (Raft §5.4.2, the paper's Figure 8: the newer leader's entry that
    /// replaced ours need not commit). Once an entry at `since.index` is committed, every
    /// removed entry is dead: a log that holds one of them also holds our old entry at
    /// `since.index` (Log Matching), which conflicts with the committed one, and every later
    /// leader holds the committed one (Leader Completeness). The model checker checks that no
    /// entry this calls dead ever commits.
    pub(crate) fn truncated_entries_are_dead(&self, since: LogId<C>) -> bool {
        self.state.committed.is_some_and(|c| c.index >= since.index)
    }

    /// Handle a leader's AppendEntries (Raft §5.3).
    ///
    /// Returns the response and, for a success, the log I/O that must be flushed before the
    /// response is sent: an acknowledged entry must be durable on this node.
    pub(crate) fn handle_append_entries(
        &mut self,
        now: Instant,
        req: AppendEntriesRequest<C>,
    ) -> (AppendEntriesResponse<C>, Option<LogIOId<C>>) {
        if let Err(vote) = self.accept_leader(now, req.vote) {
            return (AppendEntriesResponse::HigherVote(vote), None);
        }

        if !self.log_contains(req.prev_log_id) {
            debug!(id = %self.config.id, prev = %DisplayOption(&req.prev_log_id), "reject append: prev_log_id not in log");
            let resp =
                AppendEntriesResponse::Conflict { prev_log_id: req.prev_log_id, last_log_id: self.state.last_log_id() };
            return (resp, None);
        }

        if let Some(bad) = entry_out_of_term_order(&req) {
            // No leader's log holds this: a log's terms never fall, and a leader holds no entry
            // of a later term than its own. A stream of a deposed leader that read its log
            // after the new leader's entries replaced it sends one (found in review: accepted,
            // it broke Log Matching on this node). Nothing is appended or acknowledged.
            error!(id = %self.config.id, leader_vote = %req.vote, prev = %DisplayOption(&req.prev_log_id), entry = %bad, "refusing entries out of term order");
            let resp =
                AppendEntriesResponse::Conflict { prev_log_id: req.prev_log_id, last_log_id: self.state.last_log_id() };
            return (resp, None);
        }

        let matched = req.last_log_id();
        let leader_commit = req.leader_commit;
        let quiesce = req.quiesce.filter(|_| req.entries.is_empty());
        if let Err(resp) = self.append_new_entries(req.entries) {
            return (resp, None);
        }

        // Raft §5.3: committed = min(leaderCommit, last new entry). Our log equals the leader's
        // up to `matched`, so a leader commit at or below it names an entry we hold.
        let committed = match (leader_commit, matched) {
            (Some(c), Some(m)) if c.index <= m.index => Some(c),
            (Some(_), m) => m,
            (None, _) => None,
        };
        if let Some(c) = committed {
            self.commit(c);
        }
        if let Some(mark) = quiesce {
            self.follower_quiesce(matched, leader_commit, mark);
        }
        // Durable up to `matched` once the last append is: a truncation after it need not be
        // (entries past `matched` are not acknowledged).
        (AppendEntriesResponse::Success { matched }, Some(self.state.io.appended))
    }

    /// Check a leader's vote (Raft §5.1): accept it if it is elected and not less than ours,
    /// and follow that leader; otherwise return our greater vote for the reply.
    pub(crate) fn accept_leader(&mut self, now: Instant, vote: Vote<C>) -> Result<(), Vote<C>> {
        if !vote.committed || !vote.is_ge(&self.state.vote) {
            debug!(id = %self.config.id, leader_vote = %vote, my_vote = %self.state.vote, "reject a stale leader");
            return Err(self.state.vote);
        }
        if vote != self.state.vote {
            self.step_down_from_leader();
            self.save_vote(vote);
        }
        self.candidate = None;
        self.orphan_of = None;
        self.last_leader_contact = Some(now);
        // Only a heartbeat marked `quiesce` keeps (or puts) a follower quiesced: anything else
        // from the leader means the group is active again.
        self.quiesced_under = None;
        if self.leader.is_none() {
            self.state.server_state = self.follower_or_learner();
            self.state.leader_id = vote.node_id;
            self.reset_election_deadline(now);
        }
        Ok(())
    }

    /// Whether the log holds `log_id`; `None` (the empty prefix) is always held.
    fn log_contains(&self, log_id: Option<LogId<C>>) -> bool {
        let Some(log_id) = log_id else { return true };
        // Entries at or below the purged id are committed; the leader holds the same ones.
        if self.state.log_ids.purged().is_some_and(|p| log_id.index <= p.index) {
            return true;
        }
        self.state.log_ids.get(log_id.index) == Some(log_id)
    }

    /// Skip the entries the log already holds; truncate at the first conflict; append the rest.
    fn append_new_entries(&mut self, entries: Vec<Entry<C>>) -> Result<(), AppendEntriesResponse<C>> {
        let purged_next = self.state.log_ids.purged().map_or(0, |p| p.index + 1);
        let skip = entries
            .iter()
            .take_while(|e| e.log_id.index < purged_next || self.state.log_ids.get(e.log_id.index) == Some(e.log_id))
            .count();
        let mut entries = entries;
        entries.drain(..skip);
        let Some(first) = entries.first().map(|e| e.log_id) else { return Ok(()) };

        let mut expected = first.index;
        for e in &entries {
            if e.log_id.index != expected {
                error!(id = %self.config.id, at = %e.log_id, "append entries are not consecutive");
                return Err(AppendEntriesResponse::Conflict {
                    prev_log_id: Some(first),
                    last_log_id: self.state.last_log_id(),
                });
            }
            expected = expected.saturating_add(1);
        }

        if let Some(conflicting) = self.state.log_ids.get(first.index) {
            if Some(conflicting) <= self.state.committed {
                // A leader holds every committed entry (§5.4), so this request is not from a
                // legitimate leader or our state is corrupt. Refuse rather than lose data.
                error!(id = %self.config.id, %conflicting, new = %first, "refusing to truncate a committed entry");
                return Err(AppendEntriesResponse::Conflict {
                    prev_log_id: Some(conflicting),
                    last_log_id: self.state.last_log_id(),
                });
            }
            self.state.log_ids.truncate(first.index);
            self.state.membership.truncate(first.index);
            let io = self.next_io();
            debug!(id = %self.config.id, since = %conflicting, "truncate conflicting entries");
            self.output.push_back(Command::TruncateLog { io, since: conflicting });
        } else if first.index != self.state.last_log_id().map_or(0, |l| l.index + 1) {
            // The request's entries do not follow prev_log_id: a malformed request.
            error!(id = %self.config.id, first = %first, "append entries leave a gap in the log");
            return Err(AppendEntriesResponse::Conflict {
                prev_log_id: Some(first),
                last_log_id: self.state.last_log_id(),
            });
        }

        for e in &entries {
            self.state.log_ids.append(e.log_id);
            if let EntryPayload::Membership(m) = &e.payload {
                self.state.membership.append(e.log_id, m.clone());
            }
        }
        let io = self.next_append_io();
        self.output.push_back(Command::AppendEntries { io, entries });
        if self.leader.is_none() {
            self.state.server_state = self.follower_or_learner();
        }
        Ok(())
    }
}
