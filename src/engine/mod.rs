//! The Engine: Raft's protocol logic as a deterministic state machine.
//!
//! ```text
//!              inputs (method calls)                     outputs (Commands)
//!  RaftCore ──► initialize / elect / handle_timeout ─┐
//!  RPCs     ──► handle_vote_req / handle_append_entries ─► Engine ──► output: VecDeque<Command>
//!  replies  ──► handle_vote_resp / on_replication_progress   │        SaveVote, AppendEntries,
//!  storage  ──► on_log_flushed / on_applied          ───────┘        TruncateLog, SendVote, Apply,
//!  clients  ──► leader_append_entries                                 Update/CloseReplicationStreams
//! ```
//!
//! The Engine never awaits, never reads a clock (time comes in as `now`), never allocates a
//! channel and never touches storage or the network. Everything it wants done is pushed as a
//! [`Command`] to `output`, which RaftCore drains and executes in order. That makes every Raft
//! rule here a plain function of state and input, tested table-driven in `tests/` beside it.
//!
//! # Call order
//!
//! 1. Build it with [`Engine::new`] from the state loaded from storage, then call
//!    [`Engine::startup`] once.
//! 2. Feed inputs one at a time. After **each** input, the caller MUST drain `output` and
//!    execute the commands in order before it sends the answer of that input (e.g. a vote
//!    response) and before it feeds the next input. Answers that wait on I/O say so: they come
//!    with the [`LogIOId`] that must be flushed first.
//! 3. Ask [`Engine::election_deadline`] when to call [`Engine::handle_timeout`] next.
//!
//! Getters borrow `state`; handlers live in one file per concern: `election.rs` (timeouts,
//! votes, becoming leader), `leader.rs` (appending and committing), `follower.rs` (accepting
//! a leader's entries).

mod command;
mod election;
mod follower;
mod leader;
mod lease;
mod log_id_list;
mod membership_change;
mod quiesce;
mod read;
mod snapshot;
mod state;
mod target_map;
mod transfer;

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

pub(crate) use command::{Command, ReplicationTarget};
pub(crate) use follower::first_out_of_term_order;
pub(crate) use leader::{Leader, ReplicationResult};
pub(crate) use lease::{Ack, Acked};
pub(crate) use log_id_list::LogIdList;
pub(crate) use membership_change::ChangeRejected;
pub(crate) use quiesce::splitmix64;
pub(crate) use read::{ReadStart, ReadStatus, ReadTicket};
pub use state::LogIOId;
pub use state::ServerState;
pub(crate) use state::{IOState, MembershipState, RaftState};
pub(crate) use target_map::TargetMap;
use tokio::time::Instant;
pub(crate) use transfer::TransferRejected;

use crate::RaftTypeConfig;
use crate::types::LogId;

/// The Engine's fixed settings.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig<C: RaftTypeConfig> {
    pub(crate) id: C::NodeId,
    pub(crate) election_timeout_min: Duration,
    pub(crate) election_timeout_max: Duration,
    pub(crate) seed: u64,
    pub(crate) snapshot_policy: crate::config::SnapshotPolicy,
    /// Entries kept in the log behind a snapshot when purging.
    pub(crate) log_to_keep: u64,
    pub(crate) pre_vote: bool,
    pub(crate) check_quorum: bool,
    /// How long after a quorum acknowledged the leader its lease lasts.
    pub(crate) lease: Duration,
    /// Whether an idle group quiesces (see `quiesce.rs`); only a host with node liveness
    /// turns it on.
    pub(crate) quiesce: bool,
    /// Mixed into the order in which the surviving voters of a dead quiesced leader campaign
    /// (`quiesce.rs`, "Orphans"): the same on every node of a group, so that they agree on the
    /// order (a hosted group's id), and different across groups, so that each node of a host
    /// goes first in its share of the groups. 0 for a group of its own.
    pub(crate) rank_salt: u64,
}

/// A candidate's election in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate<C: RaftTypeConfig> {
    pub(crate) vote: crate::types::Vote<C>,
    pub(crate) granted: std::collections::BTreeSet<C::NodeId>,
    /// Whether this is the pre-vote round: grants are "I would vote", not votes.
    pub(crate) pre_vote: bool,
    /// Whether voters are asked to ignore a leader they heard from recently.
    pub(crate) force: bool,
    /// The dead leader whose survivors take turns, if this is the first campaign of a follower
    /// woken from quiescence under it (see `Engine::reset_orphan_election_deadline`): while
    /// this pre-vote runs, survivors whose turn comes later are refused theirs.
    pub(crate) turn_of: Option<C::NodeId>,
}

/// The pure Raft protocol core of one node. See the [module docs](self) for the call order.
#[cfg_attr(test, derive(Clone))] // The model checker forks Engines.
pub(crate) struct Engine<C: RaftTypeConfig> {
    pub(crate) config: EngineConfig<C>,
    pub(crate) state: RaftState<C>,
    /// `Some` exactly while this node is the leader (`state.server_state == Leader`). Boxed:
    /// most nodes of a group follow, and should not carry a leader's state inline.
    pub(crate) leader: Option<Box<Leader<C>>>,
    /// `Some` exactly while this node is a candidate. Boxed, as `leader` is: a node campaigns
    /// rarely, and every idle group would carry a candidate's state inline.
    pub(crate) candidate: Option<Box<Candidate<C>>>,
    /// When to start an election if no leader is heard from; `None` while leading.
    pub(crate) election_deadline: Option<Instant>,
    /// xorshift state for randomized election timeouts: deterministic given the seed.
    rng: u64,
    /// When this node last accepted a message from a leader, or started: until
    /// `election_timeout_min` after it, this voter refuses (pre-)votes (leader stickiness).
    pub(crate) last_leader_contact: Option<Instant>,
    /// The latest heartbeat round a read asked for; it only grows (see `read.rs`).
    pub(crate) heartbeat_round: u64,
    /// Real elections this node started (each in a new term), for the metrics.
    pub(crate) elections_started: u64,
    /// The leader this follower quiesced under: while set, it runs no election timer and
    /// counts its leader's node being heard as contact with the leader (see `quiesce.rs`).
    pub(crate) quiesced_under: Option<C::NodeId>,
    /// The dead leader this follower woke as a survivor of, until it campaigns or hears a
    /// leader: its first campaign takes its turn among the survivors (see `quiesce.rs`).
    pub(crate) orphan_of: Option<C::NodeId>,
    /// The identity of the leader's host when it quiesced this follower.
    pub(crate) quiesced_mark: Option<crate::types::QuiesceMark>,
    /// `initialize` appended the first entry: the first election starts once it is durable
    /// (see [`after_log_flushed`](Self::after_log_flushed)).
    pub(crate) first_election_pending: bool,
    /// Commands for RaftCore, in execution order.
    pub(crate) output: VecDeque<Command<C>>,
}

impl<C: RaftTypeConfig> Engine<C> {
    pub(crate) fn new(config: EngineConfig<C>, state: RaftState<C>) -> Self {
        let rng = config.seed | 1;
        Self {
            config,
            state,
            leader: None,
            candidate: None,
            election_deadline: None,
            rng,
            last_leader_contact: None,
            heartbeat_round: 0,
            elections_started: 0,
            quiesced_under: None,
            orphan_of: None,
            quiesced_mark: None,
            first_election_pending: false,
            output: VecDeque::new(),
        }
    }

    /// Decide the initial role and, if there is committed work left unapplied, apply it.
    pub(crate) fn startup(&mut self, now: Instant) {
        self.state.server_state = self.follower_or_learner();
        let voters = self.state.membership.effective().voter_ids();
        // A node that is the only voter of its config takes over at once, unless its vote names
        // another node. Such a vote means it followed (or voted for) another leader, whose
        // lease may still count on its answers: a leader that moves its group to this node
        // ({B} -> joint -> {A}) holds a lease on A's answers alone from the moment the final
        // config is appended, until it learns that config committed; A, restarted in that
        // window with {A} durable, must not elect itself inside that lease (found in review: a
        // stale lease read on B after a write A acknowledged). A vote naming this node was
        // cast in a campaign that honoured stickiness (or was forced by a transfer, whose
        // leader gave up its lease), so no other leader's lease counts on it.
        let sole_voter = voters.len() == 1
            && voters.contains(&self.config.id)
            && self.state.vote.node_id.is_none_or(|n| n == self.config.id);
        // Before it stopped, this node may have answered a leader that now counts on it for
        // its lease: keep the promise those answers made, as if it heard from a leader now. A
        // node that never saw a term has answered nobody, and a sole voter (as above) answered
        // no other leader.
        if self.state.vote.term > 0 && !sole_voter {
            self.last_leader_contact = Some(now);
        }
        let committed = self.state.committed;
        if committed > self.state.apply_submitted {
            if let Some(last) = committed {
                self.output
                    .push_back(Command::Apply { first: self.state.apply_submitted.map_or(0, |l| l.index + 1), last });
                self.state.apply_submitted = committed;
            }
        }
        if self.state.log_ids.purged().map(|p| p.index) > self.state.snapshot_last.map(|s| s.index) {
            // The log was purged past the last snapshot at startup (the state machine was ahead
            // of it): the entries in between exist nowhere on this node, so a follower needing
            // them could be caught up by no snapshot it has. Build one that covers them.
            self.trigger_snapshot();
        }
        if sole_voter {
            // A single-voter cluster needs nobody's permission: take over at once.
            self.elect(now);
        } else {
            self.reset_election_deadline(now);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if ever.
    pub(crate) fn election_deadline(&self) -> Option<Instant> {
        self.election_deadline
    }

    /// Take every command decided so far, in execution order.
    #[allow(dead_code)] // Used by the Engine tests; RaftCore pops commands one at a time.
    pub(crate) fn take_commands(&mut self) -> VecDeque<Command<C>> {
        std::mem::take(&mut self.output)
    }

    /// This node's id.
    pub(crate) fn id(&self) -> C::NodeId {
        self.config.id
    }

    /// The state machine applied up to `log_id`.
    pub(crate) fn on_applied(&mut self, log_id: LogId<C>) {
        debug_assert!(Some(log_id) <= self.state.apply_submitted, "applied beyond what was submitted");
        if Some(log_id) > self.state.applied {
            self.state.applied = Some(log_id);
            self.maybe_build_snapshot();
        }
    }

    /// `Follower` if this node may campaign (see [`may_campaign`](Self::may_campaign)),
    /// `Learner` otherwise.
    pub(crate) fn follower_or_learner(&self) -> ServerState {
        if self.may_campaign() { ServerState::Follower } else { ServerState::Learner }
    }

    /// Whether this node may campaign, and so keeps an election timer: it votes in its
    /// effective config, or in the committed one while its log holds a later config not known
    /// committed yet.
    ///
    /// A node that a change removes may still be needed for a quorum until the config that
    /// removes it commits (dissertation §4.2.2). Found in review: leader 1 of a move ({1} ->
    /// joint -> {2}) appends the final config {2}, which node 2 never receives, and then steps
    /// down (check-quorum, cut off) or restarts; node 2, holding the joint config, needs node
    /// 1's vote, which node 1 refuses (its log is longer). Node 1 must campaign itself, and
    /// counts votes in its effective config as every candidate does: elected by node 2, it
    /// commits {2} and steps down, leaving node 2 to lead.
    pub(crate) fn may_campaign(&self) -> bool {
        let ms = &self.state.membership;
        ms.effective().is_voter(&self.config.id)
            || (ms.effective.log_id != ms.committed.log_id && ms.committed.membership.is_voter(&self.config.id))
    }

    fn reset_election_deadline(&mut self, now: Instant) {
        let min = self.config.election_timeout_min;
        let span = self.election_timeout_span();
        self.election_deadline = Some(now + min + Duration::from_nanos(self.next_random() % span));
    }

    /// `election_timeout_max - election_timeout_min` in nanoseconds, at least 1.
    fn election_timeout_span(&self) -> u64 {
        let min = self.config.election_timeout_min;
        self.config.election_timeout_max.saturating_sub(min).as_nanos().clamp(1, u64::MAX as u128) as u64
    }

    /// The next number of the seeded generator.
    fn next_random(&mut self) -> u64 {
        // xorshift64: cheap, deterministic, good enough to spread timeouts apart.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Advance `committed` to `committed` if it is newer, and apply the newly committed entries.
    fn commit(&mut self, committed: LogId<C>) {
        if Some(committed) <= self.state.committed {
            return;
        }
        debug_assert!(Some(committed) <= self.state.last_log_id(), "committed beyond the log");
        self.state.committed = Some(committed);
        let membership_before = self.state.membership.committed.log_id;
        self.state.membership.commit(self.state.committed);
        let membership_committed = self.state.membership.committed.log_id != membership_before;
        if membership_committed {
            tracing::info!(id = %self.config.id, membership = %self.state.membership.committed, "membership committed");
        }
        if membership_committed && self.leader.is_some() {
            // Nodes the committed config dropped get no more log; a joint config moves on.
            self.update_replication_streams();
            self.leader_advance_membership();
            // Appending the final config counts the quorum again under it, which may have
            // committed further and already submitted everything up to there for applying.
            if self.state.apply_submitted >= Some(committed) {
                return;
            }
        }
        let first = self.state.apply_submitted.map_or(0, |l| l.index + 1);
        self.state.apply_submitted = Some(committed);
        // Several inputs handled before the queue is drained merge into one Apply, so the
        // state machine gets one batch instead of many.
        let len = self.output.len();
        if len >= 2 {
            if let (Some(Command::Apply { .. }), Some(Command::SaveCommitted { .. })) =
                (self.output.get(len - 2), self.output.get(len - 1))
            {
                if let Some(Command::Apply { last, .. }) = self.output.get_mut(len - 2) {
                    *last = committed;
                }
                if let Some(Command::SaveCommitted { committed: c }) = self.output.get_mut(len - 1) {
                    *c = committed;
                }
                return;
            }
        }
        self.output.push_back(Command::Apply { first, last: committed });
        self.output.push_back(Command::SaveCommitted { committed });
    }

    /// The id of an append about to be pushed: the next log I/O, which is also `appended`.
    fn next_append_io(&mut self) -> LogIOId<C> {
        let io = self.next_io();
        self.state.io.appended = io;
        io
    }

    /// The next log I/O id, advancing `accepted`.
    fn next_io(&mut self) -> LogIOId<C> {
        let io = LogIOId {
            seq: self.state.io.accepted.seq + 1,
            vote: self.state.vote,
            last_log_id: self.state.last_log_id(),
        };
        self.state.io.accepted = io;
        io
    }

    /// Adopt `vote`, persisting it, if it differs from the current one.
    fn save_vote(&mut self, vote: crate::types::Vote<C>) {
        if vote != self.state.vote {
            debug_assert!(vote.is_ge(&self.state.vote), "a vote never goes back: {} -> {vote}", self.state.vote);
            self.state.vote = vote;
            // A node with a vote has joined a term (it voted, followed a leader or campaigns):
            // the cluster's forced first election is no longer its to start (found in review:
            // a node initialized while a leader ran followed it, then, once its first entry was
            // durable, forced an election that sticky voters granted inside the leader's lease).
            self.first_election_pending = false;
            // Two saves in a row (voted, then elected at once): the later one supersedes the
            // earlier, and nothing between them depended on it, so one write does.
            if let Some(Command::SaveVote { vote: queued }) = self.output.back_mut() {
                *queued = vote;
            } else {
                self.output.push_back(Command::SaveVote { vote });
            }
        }
    }
}
