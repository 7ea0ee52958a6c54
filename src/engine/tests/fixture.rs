//! A builder for Engines in a known state, and small constructors for expected values.
//!
//! The builder writes the state directly instead of replaying inputs, so each test feeds
//! exactly one input to the Engine and everything it sees before is spelled out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::SnapshotPolicy;
use crate::engine::leader::Transfer;
use crate::engine::{Acked, Candidate, Engine, EngineConfig, Leader, LogIOId, MembershipState, ServerState};
use crate::testing_types::{UTConfig, log_id};
use crate::types::AppendEntriesRequest;
use crate::types::{Entry, LeaderId, LogId, Membership, StoredMembership, Vote};

pub(super) type C = UTConfig;

pub(super) const TIMEOUT_MIN: Duration = Duration::from_millis(150);
pub(super) const TIMEOUT_MAX: Duration = Duration::from_millis(300);
/// How long the leader lease lasts after a quorum acknowledged the leader.
pub(super) const LEASE: Duration = Duration::from_millis(120);

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
    AppendEntriesRequest { vote, prev_log_id: prev, entries, leader_commit: None, quiesce: None }
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

/// Node 1, leader of term 2 since `since`, check-quorum on, log `[T1.0, T1.1, T2.2]`, its blank
/// entry T2.2 committed: a leader whose lease and reads depend only on its acknowledgements.
pub(super) fn lease_leader(membership: Membership<C>, since: Instant) -> EngineBuilder {
    EngineBuilder::node(1)
        .vote(Vote::new_committed(2, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2)])
        .committed(log_id(2, 2))
        .membership(log_id(1, 0), membership)
        .check_quorum(true)
        .leader(1)
        .leader_since(since)
        .blank(log_id(2, 2))
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
        pre_vote: bool,
    },
    Leader {
        first_io_seq: u64,
        flushed: Option<LogId<C>>,
        progress: Vec<(u64, Option<LogId<C>>)>,
        extra: LeaderExtra,
    },
}

/// The leader's state that most tests leave at its default.
#[derive(Default)]
struct LeaderExtra {
    since: Option<Instant>,
    acked: Vec<(u64, Acked)>,
    lease_revoked: bool,
    blank: Option<LogId<C>>,
    transfer: Option<Transfer<C>>,
    membership_target: Option<Membership<C>>,
}

/// The Engine's settings that most tests leave at the paper's defaults.
struct Settings {
    pre_vote: bool,
    check_quorum: bool,
    snapshot_policy: SnapshotPolicy,
    log_to_keep: u64,
    quiesce: bool,
    rank_salt: u64,
}

/// Builds an [`Engine`] of node `id` in the state its methods describe.
///
/// Defaults: no vote, empty log, empty membership, nothing committed, no I/O in flight, no
/// election deadline. `io.accepted` and `io.flushed` start as loaded from storage: seq 0 with
/// the final vote and last log id, unless set; `io.appended` is `io.accepted` (as if the last
/// log operation accepted was an append). Pre-vote, check-quorum and the snapshot policy
/// are off, and no entries are kept behind a snapshot, unless set.
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
    settings: Settings,
    apply_submitted: Option<Option<LogId<C>>>,
    purged: Option<LogId<C>>,
    snapshot_last: Option<LogId<C>>,
    snapshot_building: bool,
    last_leader_contact: Option<Instant>,
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
            settings: Settings {
                pre_vote: false,
                check_quorum: false,
                snapshot_policy: SnapshotPolicy::Never,
                log_to_keep: 0,
                quiesce: false,
                rank_salt: 0,
            },
            apply_submitted: None,
            purged: None,
            snapshot_last: None,
            snapshot_building: false,
            last_leader_contact: None,
        }
    }

    /// Campaign with a pre-vote round first (dissertation §9.6).
    pub(super) fn pre_vote(mut self, on: bool) -> Self {
        self.settings.pre_vote = on;
        self
    }

    /// Quiescence of an idle group (as in a `multi` host).
    pub(super) fn quiesce(mut self, on: bool) -> Self {
        self.settings.quiesce = on;
        self
    }

    /// The salt of the order in which the survivors of a dead quiesced leader campaign (a
    /// hosted group's id; 0 unless set).
    pub(super) fn rank_salt(mut self, salt: u64) -> Self {
        self.settings.rank_salt = salt;
        self
    }

    /// Check-quorum on the leader, leader stickiness on voters (dissertation §6.2, §9.6).
    pub(super) fn check_quorum(mut self, on: bool) -> Self {
        self.settings.check_quorum = on;
        self
    }

    pub(super) fn snapshot_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.settings.snapshot_policy = policy;
        self
    }

    /// Entries kept in the log behind a built snapshot.
    pub(super) fn log_to_keep(mut self, n: u64) -> Self {
        self.settings.log_to_keep = n;
        self
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

    /// Submitted for applying up to `log_id`, which may be beyond what is applied.
    pub(super) fn apply_submitted(mut self, log_id: Option<LogId<C>>) -> Self {
        self.apply_submitted = Some(log_id);
        self
    }

    /// The log is purged up to `log_id`, which the log ids given to [`log`](Self::log) start at.
    pub(super) fn purged(mut self, log_id: LogId<C>) -> Self {
        self.purged = Some(log_id);
        self
    }

    /// The latest snapshot covers up to `log_id`.
    pub(super) fn snapshot_last(mut self, log_id: LogId<C>) -> Self {
        self.snapshot_last = Some(log_id);
        self
    }

    /// A snapshot is being built.
    pub(super) fn snapshot_building(mut self) -> Self {
        self.snapshot_building = true;
        self
    }

    /// The node last accepted a message from a leader at `at`.
    pub(super) fn last_leader_contact(mut self, at: Instant) -> Self {
        self.last_leader_contact = Some(at);
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
        self.role = Role::Candidate { granted: granted.to_vec(), pre_vote: false };
        self
    }

    /// In the pre-vote round for the next term, holding the pre-vote grants of `granted`. Its
    /// vote stays as set: a pre-vote changes no term (dissertation §9.6).
    pub(super) fn pre_vote_candidate(mut self, granted: &[u64]) -> Self {
        self.role = Role::Candidate { granted: granted.to_vec(), pre_vote: true };
        self
    }

    /// The leader of its (elected) vote, whose first log I/O of the term is `first_io_seq`.
    /// Every other member's progress starts unknown; see [`progress`](Self::progress).
    pub(super) fn leader(mut self, first_io_seq: u64) -> Self {
        self.role = Role::Leader { first_io_seq, flushed: None, progress: Vec::new(), extra: LeaderExtra::default() };
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

    /// The leader was elected at `since` (default: when built).
    pub(super) fn leader_since(mut self, since: Instant) -> Self {
        self.leader_extra().since = Some(since);
        self
    }

    /// `target` answered a request the leader sent at `sent_at`, before any read's round.
    pub(super) fn acked(self, target: u64, sent_at: Instant) -> Self {
        self.acked_in_round(target, sent_at, 0)
    }

    /// `target` answered a request the leader sent at `sent_at` in heartbeat round `round`.
    pub(super) fn acked_in_round(mut self, target: u64, sent_at: Instant, round: u64) -> Self {
        self.leader_extra().acked.push((target, Acked { sent_at, round, unmarked_sent_at: Some(sent_at) }));
        self
    }

    /// The leader told a transfer target to campaign: its lease is over.
    pub(super) fn lease_revoked(mut self) -> Self {
        self.leader_extra().lease_revoked = true;
        self
    }

    /// The blank entry the leader appended on election.
    pub(super) fn blank(mut self, log_id: LogId<C>) -> Self {
        self.leader_extra().blank = Some(log_id);
        self
    }

    /// Leadership is being handed to `to` until `deadline`; `sent` if `to` was told to campaign.
    pub(super) fn transfer(mut self, to: u64, deadline: Instant, sent: bool) -> Self {
        self.leader_extra().transfer = Some(Transfer { to, deadline, sent });
        self
    }

    /// The leader proposed the joint change heading for `target`.
    pub(super) fn membership_target(mut self, target: Membership<C>) -> Self {
        self.leader_extra().membership_target = Some(target);
        self
    }

    fn leader_extra(&mut self) -> &mut LeaderExtra {
        match &mut self.role {
            Role::Leader { extra, .. } => extra,
            _ => panic!("call .leader() before setting the leader's state"),
        }
    }

    pub(super) fn build(self) -> Engine<C> {
        let config = EngineConfig {
            id: self.id,
            election_timeout_min: TIMEOUT_MIN,
            election_timeout_max: TIMEOUT_MAX,
            seed: 0x5eed,
            // Snapshots have tests of their own; here they would only add commands.
            snapshot_policy: self.settings.snapshot_policy,
            log_to_keep: self.settings.log_to_keep,
            // The paper's rules; pre-vote and check-quorum have tests of their own.
            pre_vote: self.settings.pre_vote,
            check_quorum: self.settings.check_quorum,
            lease: LEASE,
            quiesce: self.settings.quiesce,
            rank_salt: self.settings.rank_salt,
        };
        let mut engine = Engine::new(config, Default::default());
        let state = &mut engine.state;
        state.vote = self.vote;
        for log_id in self.log {
            state.log_ids.append(log_id);
        }
        if let Some(purged) = self.purged {
            state.log_ids.purge(purged);
        }
        state.committed = self.committed;
        state.applied = self.applied.unwrap_or(self.committed);
        state.apply_submitted = self.apply_submitted.unwrap_or(state.applied);
        state.snapshot_last = self.snapshot_last;
        state.snapshot_building = self.snapshot_building;
        state.membership = self.membership;
        let loaded = io(0, self.vote, state.last_log_id());
        state.io.accepted = self.accepted.unwrap_or(loaded);
        // As if the last log operation accepted was an append.
        state.io.appended = state.io.accepted;
        state.io.flushed = self.flushed.unwrap_or(loaded);
        let is_voter = state.membership.effective().is_voter(&self.id);
        state.server_state = if is_voter { ServerState::Follower } else { ServerState::Learner };
        state.leader_id = self.vote.leader_id().map(|l| l.node_id);
        engine.election_deadline = self.deadline;
        engine.last_leader_contact = self.last_leader_contact;

        match self.role {
            Role::Follower => {}
            Role::Candidate { granted, pre_vote } => {
                engine.state.server_state = ServerState::Candidate;
                engine.state.leader_id = None;
                let vote = if pre_vote { Vote::new(self.vote.term + 1, self.id) } else { self.vote };
                engine.candidate = Some(Box::new(Candidate {
                    vote,
                    granted: granted.into_iter().collect(),
                    pre_vote,
                    force: false,
                    turn_of: None,
                }));
            }
            Role::Leader { first_io_seq, flushed, progress, extra } => {
                assert!(self.vote.committed && self.vote.node_id == Some(self.id), "a leader holds its elected vote");
                let since = extra.since.unwrap_or_else(Instant::now);
                let mut leader = Leader::new(self.vote, first_io_seq, since);
                leader.flushed = flushed;
                leader.acked.extend(extra.acked);
                leader.lease_revoked = extra.lease_revoked;
                leader.blank_log_id = extra.blank;
                leader.transfer = extra.transfer;
                leader.membership_target = extra.membership_target;
                for id in engine.state.membership.effective().nodes().keys().filter(|id| **id != self.id) {
                    leader.progress.insert(*id, None);
                }
                leader.progress.extend(progress);
                engine.state.server_state = ServerState::Leader;
                engine.leader = Some(Box::new(leader));
            }
        }
        engine
    }
}
