//! A builder for Engines in a known state, and small constructors for expected values.
//!
//! The builder writes the state directly instead of replaying inputs, so each test feeds
//! exactly one input to the Engine and everything it sees before is spelled out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::{Candidate, Engine, EngineConfig, Leader, LogIOId, MembershipState, ServerState};
use crate::raft::AppendEntriesRequest;
use crate::testing_types::{UTConfig, log_id};
use crate::types::{Entry, LeaderId, LogId, Membership, StoredMembership, Vote};

pub(super) type C = UTConfig;

pub(super) const TIMEOUT_MIN: Duration = Duration::from_millis(150);
pub(super) const TIMEOUT_MAX: Duration = Duration::from_millis(300);

/// The id of the entry at `index` proposed by `node` as the leader of `term`.
///
/// `testing_types::log_id` covers logs written by node 1; this one is for the other leaders.
pub(super) fn log_id_by(node: u64, term: u64, index: u64) -> LogId<C> {
    LogId::new(LeaderId::new(term, node), index)
}

/// One voter set of `ids`, no learners.
pub(super) fn voters(ids: &[u64]) -> Membership<C> {
    Membership::new_voters(ids.iter().map(|id| (*id, ())).collect()).unwrap()
}

/// One voter set of `ids`, plus the non-voting `learners`.
pub(super) fn voters_and_learners(ids: &[u64], learners: &[u64]) -> Membership<C> {
    let nodes = ids.iter().chain(learners).map(|id| (*id, ())).collect();
    Membership::new(vec![ids.iter().copied().collect()], nodes).unwrap()
}

/// A joint configuration of `old` and `new` (Raft §6).
pub(super) fn joint(old: &[u64], new: &[u64]) -> Membership<C> {
    let set = |ids: &[u64]| ids.iter().copied().collect::<BTreeSet<u64>>();
    let nodes: BTreeMap<u64, ()> = old.iter().chain(new).map(|id| (*id, ())).collect();
    Membership::new(vec![set(old), set(new)], nodes).unwrap()
}

/// The log I/O numbered `seq`, decided under `vote`, leaving the log ending at `last`.
pub(super) fn io(seq: u64, vote: Vote<C>, last: Option<LogId<C>>) -> LogIOId<C> {
    LogIOId { seq, vote, last_log_id: last }
}

/// An application entry carrying `data`.
pub(super) fn normal(log_id: LogId<C>, data: &str) -> Entry<C> {
    Entry::new_normal(log_id, data.to_string())
}

/// An AppendEntries of `vote` with `entries` after `prev`, the leader committed nothing.
pub(super) fn req(vote: Vote<C>, prev: Option<LogId<C>>, entries: Vec<Entry<C>>) -> AppendEntriesRequest<C> {
    AppendEntriesRequest { vote, prev_log_id: prev, entries, leader_commit: None }
}

/// Node 2, following node 1 of term 2 among voters 1, 2, 3, with log `[T1.0, T1.1, T2.2]`
/// committed up to `committed`.
pub(super) fn follower(committed: LogId<C>) -> EngineBuilder {
    EngineBuilder::node(2)
        .vote(Vote::new_committed(2, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2)])
        .committed(committed)
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
}

/// Assert that the election deadline is one randomized election timeout after `from`.
#[track_caller]
pub(super) fn assert_deadline_after(engine: &Engine<C>, from: Instant) {
    let deadline = engine.election_deadline().expect("an election deadline is set");
    assert!(
        deadline >= from + TIMEOUT_MIN && deadline < from + TIMEOUT_MAX,
        "deadline is {:?} after `from`, outside [{TIMEOUT_MIN:?}, {TIMEOUT_MAX:?})",
        deadline.saturating_duration_since(from),
    );
}

/// The role the built Engine plays.
enum Role {
    /// Follower or learner, as the membership says.
    Follower,
    Candidate {
        granted: Vec<u64>,
    },
    Leader {
        first_io_seq: u64,
        flushed: Option<LogId<C>>,
        progress: Vec<(u64, Option<LogId<C>>)>,
    },
}

/// Builds an [`Engine`] of node `id` in the state its methods describe.
///
/// Defaults: no vote, empty log, empty membership, nothing committed, no I/O in flight, no
/// election deadline. `io.accepted` and `io.flushed` start as loaded from storage: seq 0 with
/// the final vote and last log id, unless set.
pub(super) struct EngineBuilder {
    id: u64,
    vote: Vote<C>,
    log: Vec<LogId<C>>,
    committed: Option<LogId<C>>,
    applied: Option<Option<LogId<C>>>,
    membership: MembershipState<C>,
    accepted: Option<LogIOId<C>>,
    flushed: Option<LogIOId<C>>,
    deadline: Option<Instant>,
    role: Role,
}

impl EngineBuilder {
    pub(super) fn node(id: u64) -> Self {
        Self {
            id,
            vote: Vote::default(),
            log: Vec::new(),
            committed: None,
            applied: None,
            membership: MembershipState::default(),
            accepted: None,
            flushed: None,
            deadline: None,
            role: Role::Follower,
        }
    }

    pub(super) fn vote(mut self, vote: Vote<C>) -> Self {
        self.vote = vote;
        self
    }

    /// The log holds exactly these ids, in order.
    pub(super) fn log(mut self, ids: impl IntoIterator<Item = LogId<C>>) -> Self {
        self.log = ids.into_iter().collect();
        self
    }

    /// Committed up to `log_id`; also applied up to it unless [`applied`](Self::applied) says.
    pub(super) fn committed(mut self, log_id: LogId<C>) -> Self {
        self.committed = Some(log_id);
        self
    }

    /// Applied (and submitted for applying) up to `log_id`.
    pub(super) fn applied(mut self, log_id: Option<LogId<C>>) -> Self {
        self.applied = Some(log_id);
        self
    }

    /// A committed membership carried by the entry `log_id`.
    pub(super) fn membership(mut self, log_id: LogId<C>, membership: Membership<C>) -> Self {
        let stored = StoredMembership::new(Some(log_id), membership);
        self.membership = MembershipState::new(stored.clone(), stored);
        self
    }

    /// A membership in the log at `log_id`, effective but not committed.
    pub(super) fn uncommitted_membership(mut self, log_id: LogId<C>, membership: Membership<C>) -> Self {
        self.membership.append(log_id, membership);
        self
    }

    pub(super) fn accepted(mut self, io: LogIOId<C>) -> Self {
        self.accepted = Some(io);
        self
    }

    pub(super) fn flushed(mut self, io: LogIOId<C>) -> Self {
        self.flushed = Some(io);
        self
    }

    pub(super) fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// A candidate for its vote that holds the grants of `granted` (itself included or not).
    pub(super) fn candidate(mut self, granted: &[u64]) -> Self {
        self.role = Role::Candidate { granted: granted.to_vec() };
        self
    }

    /// The leader of its (elected) vote, whose first log I/O of the term is `first_io_seq`.
    /// Every other member's progress starts unknown; see [`progress`](Self::progress).
    pub(super) fn leader(mut self, first_io_seq: u64) -> Self {
        self.role = Role::Leader { first_io_seq, flushed: None, progress: Vec::new() };
        self
    }

    /// The leader's own log is durable up to `log_id` (as far as it counts for commit).
    pub(super) fn leader_flushed(mut self, log_id: LogId<C>) -> Self {
        if let Role::Leader { flushed, .. } = &mut self.role {
            *flushed = Some(log_id);
        }
        self
    }

    /// The leader knows `target` matches its log up to `matched`.
    pub(super) fn progress(mut self, target: u64, matched: LogId<C>) -> Self {
        if let Role::Leader { progress, .. } = &mut self.role {
            progress.push((target, Some(matched)));
        }
        self
    }

    pub(super) fn build(self) -> Engine<C> {
        let config = EngineConfig {
            id: self.id,
            election_timeout_min: TIMEOUT_MIN,
            election_timeout_max: TIMEOUT_MAX,
            seed: 0x5eed,
            // Snapshots have tests of their own; here they would only add commands.
            snapshot_policy: crate::config::SnapshotPolicy::Never,
            log_to_keep: 0,
            // The paper's rules; pre-vote and check-quorum have tests of their own.
            pre_vote: false,
            check_quorum: false,
            lease: TIMEOUT_MIN,
        };
        let mut engine = Engine::new(config, Default::default());
        let state = &mut engine.state;
        state.vote = self.vote;
        for log_id in self.log {
            state.log_ids.append(log_id);
        }
        state.committed = self.committed;
        state.applied = self.applied.unwrap_or(self.committed);
        state.apply_submitted = state.applied;
        state.membership = self.membership;
        let loaded = io(0, self.vote, state.last_log_id());
        state.io.accepted = self.accepted.unwrap_or(loaded);
        state.io.flushed = self.flushed.unwrap_or(loaded);
        let is_voter = state.membership.effective().is_voter(&self.id);
        state.server_state = if is_voter { ServerState::Follower } else { ServerState::Learner };
        state.leader_id = self.vote.leader_id().map(|l| l.node_id);
        engine.election_deadline = self.deadline;

        match self.role {
            Role::Follower => {}
            Role::Candidate { granted } => {
                engine.state.server_state = ServerState::Candidate;
                engine.candidate = Some(Candidate {
                    vote: self.vote,
                    granted: granted.into_iter().collect(),
                    pre_vote: false,
                    force: false,
                });
            }
            Role::Leader { first_io_seq, flushed, progress } => {
                assert!(self.vote.committed && self.vote.node_id == Some(self.id), "a leader holds its elected vote");
                let mut leader = Leader::new(self.vote, first_io_seq, Instant::now());
                leader.flushed = flushed;
                for id in engine.state.membership.effective().nodes().keys().filter(|id| **id != self.id) {
                    leader.progress.insert(*id, None);
                }
                leader.progress.extend(progress);
                engine.state.server_state = ServerState::Leader;
                engine.leader = Some(leader);
            }
        }
        engine
    }
}
