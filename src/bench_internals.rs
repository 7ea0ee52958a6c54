//! Hooks for quorate's own micro-benchmarks: the Engine's hot paths, driven without RaftCore.
//!
//! **Unstable, not for users.** This module exists only with the `bench-internals` feature, is
//! hidden from the docs, and may change or vanish in any release. It lets the benchmark crate
//! (`benches/benches/engine.rs`) time the pure protocol core on the three paths every client
//! write takes:
//!
//! - [`LeaderBench::append`]: a leader assigns log ids to a batch of client payloads
//!   (`Engine::leader_append_entries`);
//! - [`LeaderBench::ack`]: a follower's replication response arrives, the leader updates its
//!   matched index, recomputes the quorum-acknowledged index and commits
//!   (`Engine::on_replication_progress`);
//! - [`FollowerBench::append`]: a follower checks a leader's AppendEntries (vote, log
//!   matching, conflicts) and appends its entries (`Engine::handle_append_entries`).
//!
//! Each call feeds one input to a real Engine and then drains its command queue, as RaftCore
//! does after every input; the commands are dropped instead of executed (no storage, no
//! network). Engines are put into their state through the same inputs a running node sees
//! (initialize, vote, flush, progress), not by writing fields, so they stay valid as the Engine
//! changes. Time is fixed at construction: none of these paths reads it for anything but
//! bookkeeping.

use std::collections::BTreeMap;

use tokio::time::Instant;

use crate::engine::{Engine, EngineConfig, RaftState, ReplicationResult};
use crate::types::{AppendEntriesRequest, AppendEntriesResponse, VoteResponse};
use crate::types::{Entry, LeaderId, LogId, Membership, Vote};
use crate::{Config, SnapshotPolicy};

crate::declare_raft_types!(
    /// The types of the benchmarked Engines: `u64` payloads and node ids, no node addresses.
    pub BenchTypes:
        D = u64,
        R = (),
        Node = (),
);

type C = BenchTypes;

/// The three voters every benchmarked cluster has; node 1 leads.
const VOTERS: [u64; 3] = [1, 2, 3];
const LEADER: u64 = 1;

/// The Engine settings of a node with quorate's default [`Config`], except that snapshots are
/// off (they would add a command now and then that is not the path being measured).
fn engine_config(id: u64) -> EngineConfig<C> {
    let config = Config::default();
    EngineConfig {
        id,
        election_timeout_min: config.election_timeout_min,
        election_timeout_max: config.election_timeout_max,
        seed: id,
        snapshot_policy: SnapshotPolicy::Never,
        log_to_keep: config.max_in_snapshot_log_to_keep,
        pre_vote: config.enable_pre_vote,
        check_quorum: config.enable_check_quorum,
        lease: config.election_timeout_min.saturating_sub(config.max_clock_drift),
        quiesce: false,
        rank_salt: 0,
    }
}

fn voters() -> Membership<C> {
    let nodes: BTreeMap<u64, ()> = VOTERS.iter().map(|id| (*id, ())).collect();
    // Three distinct voters always form a valid membership.
    Membership::new_voters(nodes).unwrap_or_else(|e| unreachable!("three voters: {e}"))
}

/// Drop every command the Engine decided; return how many there were.
fn drain(engine: &mut Engine<C>) -> usize {
    let n = engine.output.len();
    engine.output.clear();
    n
}

/// Node 1, elected leader of a three-voter cluster, its blank entry committed.
///
/// Built as a real node gets there: `initialize` (which campaigns at once), a vote from
/// node 2, its own log flushed, node 2 acknowledging the blank entry.
pub struct LeaderBench {
    engine: Engine<C>,
    vote: Vote<C>,
    now: Instant,
}

impl Default for LeaderBench {
    fn default() -> Self {
        Self::new()
    }
}

impl LeaderBench {
    /// A fresh leader with a log of two entries (membership, blank), both committed.
    pub fn new() -> Self {
        let now = Instant::now();
        let mut engine = Engine::new(engine_config(LEADER), RaftState::default());
        engine.initialize(voters());
        // The first election starts once the first entry is durable.
        let first = engine.state.io.accepted;
        engine.on_log_flushed(first);
        engine.after_log_flushed(now);
        let candidate = engine.state.vote;
        let grant = VoteResponse::new(candidate, true, None);
        engine.handle_vote_resp(now, 2, &grant);
        let vote = engine.leader.as_ref().map(|l| l.vote).unwrap_or_else(|| unreachable!("node 1 won the election"));
        drain(&mut engine);
        let mut bench = Self { engine, vote, now };
        bench.flush();
        let last = bench.last_index();
        bench.ack(2, last);
        bench
    }

    /// The index of the leader's last log entry.
    pub fn last_index(&self) -> u64 {
        self.engine.state.last_log_id().map_or(0, |l| l.index)
    }

    /// The index of the last committed entry.
    pub fn committed_index(&self) -> Option<u64> {
        self.engine.state.committed.map(|l| l.index)
    }

    /// **Hot path: leader append.** Append one entry per payload (one client write each) and
    /// drain the commands (one `AppendEntries` carrying the whole batch). Returns the index of
    /// the first new entry.
    pub fn append(&mut self, payloads: Vec<u64>) -> Option<u64> {
        let first = self.engine.leader_append_entries(payloads.into_iter().map(crate::EntryPayload::Normal));
        drain(&mut self.engine);
        first.map(|l| l.index)
    }

    /// The log store reports everything appended so far durable (setup for [`ack`](Self::ack):
    /// the leader's own flushed log is one vote of the quorum). Returns the commands drained.
    pub fn flush(&mut self) -> usize {
        let accepted = self.engine.state.io.accepted;
        self.engine.on_log_flushed(accepted);
        drain(&mut self.engine)
    }

    /// **Hot path: quorum commit.** Follower `target` (2 or 3) reports its log matches the
    /// leader's up to `upto`: the leader updates its progress, computes the index a quorum
    /// holds and commits up to it, queueing an `Apply`. Returns the committed index.
    pub fn ack(&mut self, target: u64, upto: u64) -> Option<u64> {
        let matched = self.engine.state.log_ids.get(upto);
        self.engine.on_replication_progress(self.now, target, self.vote, ReplicationResult::Matched(matched));
        drain(&mut self.engine);
        self.committed_index()
    }
}

/// A leader's AppendEntries for [`FollowerBench::append`], built outside the measured call.
pub struct AppendRequest(AppendEntriesRequest<C>);

impl AppendRequest {
    /// How many entries it carries.
    pub fn len(&self) -> usize {
        self.0.entries.len()
    }

    /// Whether it carries no entries (a heartbeat).
    pub fn is_empty(&self) -> bool {
        self.0.entries.is_empty()
    }
}

/// Node 2, following leader node 1 (term 1) of a three-voter cluster.
pub struct FollowerBench {
    engine: Engine<C>,
    vote: Vote<C>,
    now: Instant,
    /// The last index the requests built so far reach; the next request continues from here.
    planned: u64,
}

impl Default for FollowerBench {
    fn default() -> Self {
        Self::new()
    }
}

impl FollowerBench {
    /// A follower whose log holds the leader's first two entries (membership, blank).
    pub fn new() -> Self {
        let now = Instant::now();
        let mut engine = Engine::new(engine_config(2), RaftState::default());
        let vote = Vote::new_committed(1, LEADER);
        let membership = Entry::new_membership(LogId::new(LeaderId::new(0, 0), 0), voters());
        let blank = Entry::new_blank(LogId::new(LeaderId::new(1, LEADER), 1));
        let req = AppendEntriesRequest {
            vote,
            prev_log_id: None,
            entries: vec![membership, blank],
            leader_commit: None,
            quiesce: None,
        };
        let (resp, _io) = engine.handle_append_entries(now, req);
        debug_assert!(matches!(resp, AppendEntriesResponse::Success { .. }));
        drain(&mut engine);
        Self { engine, vote, now, planned: 1 }
    }

    /// The next AppendEntries of the leader: `n` new entries, preceded by `overlap` entries
    /// the follower already holds (a resent request: each is checked and skipped), with the
    /// leader's commit at the end of the previous request. Requests must be appended in the
    /// order they are built.
    pub fn request(&mut self, n: u64, overlap: u64) -> AppendRequest {
        let leader = LeaderId::new(1, LEADER);
        let start = (self.planned + 1).saturating_sub(overlap).max(2);
        let prev = LogId::new(leader, start - 1);
        let end = self.planned + n;
        let entries = (start..=end).map(|i| Entry::new_normal(LogId::new(leader, i), i)).collect();
        let leader_commit = Some(LogId::new(leader, self.planned));
        self.planned = end;
        AppendRequest(AppendEntriesRequest {
            vote: self.vote,
            prev_log_id: Some(prev),
            entries,
            leader_commit,
            quiesce: None,
        })
    }

    /// **Hot path: follower append.** Check the leader's vote and `prev_log_id`, skip entries
    /// already held, check the rest for conflicts, append them, follow the leader's commit, and
    /// drain the commands (`AppendEntries`, `Apply`, `SaveCommitted`). Returns the matched index
    /// of the response, `None` if the request was refused.
    pub fn append(&mut self, req: AppendRequest) -> Option<u64> {
        let (resp, _flush_before_reply) = self.engine.handle_append_entries(self.now, req.0);
        drain(&mut self.engine);
        match resp {
            AppendEntriesResponse::Success { matched } => matched.map(|l| l.index),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FollowerBench, LeaderBench};

    #[test]
    fn a_leader_appends_and_commits_on_one_ack() {
        let mut leader = LeaderBench::new();
        assert_eq!((leader.last_index(), leader.committed_index()), (1, Some(1)));
        assert_eq!(leader.append(vec![7; 64]), Some(2));
        assert_eq!(leader.last_index(), 65);
        leader.flush();
        // Raft §5.3/§5.4.2: leader + one follower is a quorum of three.
        assert_eq!(leader.ack(2, 40), Some(40));
        assert_eq!(leader.ack(3, 65), Some(65));
    }

    #[test]
    fn a_follower_appends_consecutive_and_overlapping_requests() {
        let mut follower = FollowerBench::new();
        let first = follower.request(64, 0);
        assert_eq!(first.len(), 64);
        assert_eq!(follower.append(first), Some(65));
        let resent = follower.request(64, 32);
        assert_eq!(resent.len(), 96);
        assert_eq!(follower.append(resent), Some(129));
    }
}
