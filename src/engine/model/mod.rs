//! A model checker for the Engine: every interleaving of a small cluster, explored
//! exhaustively to a bound, with Raft's safety properties checked after every step.
//!
//! The Engine is pure, so a cluster of Engines plus a model of what surrounds each (storage,
//! RaftCore, replication streams, the network, the clock) is a plain value that can be
//! forked at every choice. The search visits every state reachable within the bounds,
//! remembering each by a 64-bit fingerprint, and reports the first violation with the trace
//! that reaches it.
//!
//! # Running it
//!
//! CI runs the `bounded_*` and `catches_*` tests with the other unit tests, in about 100 s of
//! debug build on two cores (`cargo test --lib --features testing engine::model`);
//! `bounded_reads` and `bounded_snapshot` found issue #15's bugs 2, 3b and 5 before their
//! fixes (in 25 s and 66 s of debug build) and pass since; `bounded_move_to_a_sole_voter`
//! (18 s) fails with the fix of cf1cf72 reverted. A deep
//! check takes its bounds from the environment and prints, per depth level, the states
//! explored and the time, then the totals (this one: 12.7 million states, 14 minutes):
//!
//! ```text
//! MC_DEPTH=11 MC_WRITES=2 MC_CRASHES=1 MC_ELECTS=1 MC_DUPS=1 MC_TICKS=1 MC_READS=0 \
//!     cargo test --release --lib --features testing engine::model::deep -- --ignored --nocapture
//! ```
//!
//! Every field of [`Bounds`] has a variable (defaults in `Bounds::default`): `MC_START`
//! (`warm`: node 1 leads term 1 and its first entry is committed and applied everywhere;
//! `cold`: no leader yet, every timer due), `MC_DEPTH`, `MC_STATES`, `MC_FRONTIER`,
//! `MC_TERMS`, `MC_ELECTION_TICKS`, budgets `MC_WRITES`, `MC_READS`, `MC_CRASHES`,
//! `MC_DUPS`, `MC_DROPS`, `MC_TICKS`, `MC_CHANGES`, `MC_CHANGE` (which change: `remove:3`,
//! the default, or `voters:2` to make node 2 the only voter; `MC_REMOVE_VOTER=N` still means
//! `remove:N`), `MC_SNAPSHOTS`, `MC_TRANSFERS`, `MC_ELECTS`; `MC_READ_POLICIES` (`index`, `lease`, `both`); network
//! `MC_NET`, `MC_IN_FLIGHT`; flags (0 or 1) `MC_PRE_VOTE`, `MC_CHECK_QUORUM`,
//! `MC_EAGER_APPLY`, `MC_PROBES`, `MC_PARTIAL`. Narrow budgets reach deeper: each budget
//! left at 0 removes a whole kind of step. Runs that find issue #15's bugs on the code this
//! was written against (steps counted from the warm start unless cold):
//!
//! ```text
//! #1 lease with no acks:        MC_START=cold MC_PRE_VOTE=0 MC_CRASHES=0 MC_TICKS=2 MC_WRITES=0 MC_READ_POLICIES=lease MC_DEPTH=16
//! #2 lease after TimeoutNow:    MC_CRASHES=0 MC_TICKS=0 MC_WRITES=0 MC_TRANSFERS=1 MC_READ_POLICIES=lease MC_DEPTH=12
//! #3b ack at the same instant:  MC_CRASHES=0 MC_TICKS=0 MC_WRITES=0 MC_ELECTS=1 MC_READ_POLICIES=index MC_DEPTH=12
//! #5 snapshot taken as matched: MC_EAGER_APPLY=0 MC_CRASHES=0 MC_TICKS=0 MC_WRITES=1 MC_READS=0 MC_SNAPSHOTS=1 MC_DEPTH=14
//! ```
//!
//! and the stale lease read of cf1cf72 (a sole voter elected at restart inside the lease of the
//! leader that moved the group to it), found in 12 steps, 12,996 states, 3.7 s of debug build,
//! with that fix reverted; with the default change (`remove:3`) instead, the same budgets
//! and both read policies explore 80,961 states to depth 12 and find nothing:
//!
//! ```text
//! cf1cf72 sole voter at restart: MC_CHANGES=1 MC_CHANGE=voters:2 MC_CRASHES=1 MC_TICKS=0 MC_WRITES=0 MC_READ_POLICIES=lease MC_DEPTH=12
//! ```
//!
//! Three such narrow bounds are kept as tests, `targeted_*` (ignored; release, about 6 minutes
//! in all, capped by states): a new leader's lease from a cold start with clocks moving, a
//! lease while a voter crashes and restarts, and the leader commit rule with one-entry
//! appends. Planted in the Engine, the CI checks miss what they find: a restarted voter that
//! is not sticky (472,786 states), finding 1 as it was found (1,254,138), and committing an
//! older term's entry by counting (1,993,447).
//!
//! # The search (`checker.rs`)
//!
//! Breadth-first, so a violation comes with a shortest trace, while a depth level fits in
//! `MC_FRONTIER` states (a state costs a few KB: states share every node, store and state
//! machine a step did not change). Past that it goes on depth-first from each state of the
//! last level, with a visited set that records the least depth each state was explored at
//! (reached again at a lesser depth, it is explored again), so every state within the depth
//! bound is still visited, with memory for the visited set only; a trace found depth-first
//! may be longer than the shortest. Answers that their receiver will ignore whatever happens
//! (to a leadership that ended, for a vote that can no longer count) are dropped from the
//! network, which merges states that differ only by them.
//!
//! # Why a hand-written search
//!
//! `stateright` (0.31, the maintained model-checking crate for Rust; releases are sparse)
//! was judged on this Engine. Its actor model does not fit: timers fire with no clock, so a
//! lease (which holds for a *time* after a quorum answered) cannot be expressed; its storage
//! is all-or-nothing, so an append written but not flushed, the crash point most of quorate's
//! bugs live at, cannot be; and an answer cannot be held back until a flush. Its plain
//! `Model` trait would fit, but then it brings only the search loop at the price of a dozen
//! dependencies (an HTTP server for its explorer among them) and a multi-threaded search on a
//! 2-core machine shared by four builds; its BFS holds every frontier state, and its
//! properties are bare predicates, where ours say what broke.
//!
//! # What is modelled
//!
//! - **Nodes** (`world.rs`): three, each an unmodified [`Engine`](crate::engine::Engine) with
//!   check-quorum and (by default) pre-vote on, like `Config::default()`. Around it, what
//!   RaftCore does, mirrored from `src/core/`: after each input the Commands run in order
//!   (`run_commands`); `SaveVote` is durable before the answer leaves; an AppendEntries
//!   answer waits, parked, until the I/O it names is flushed; the state machine's `Applied`
//!   reaches the Engine after the batch of commands that applied it; a snapshot from a leader
//!   is installed by `accept_leader` then `install_snapshot`, as `handle_install_snapshot`
//!   does; pending reads are confirmed after every input (`reads.rs`).
//! - **Storage** (`storage.rs`), per the storage contract at its loosest: the vote is durable
//!   at once; appends, truncations and purges are visible at once and become durable in
//!   order, one per `Flush` step, so a crash keeps any prefix of them; a flushed append is
//!   reported with `on_log_flushed`. The state machine (applied entries, membership, latest
//!   snapshot) is durable at once; it applies in the step that commits (`MC_EAGER_APPLY=1`)
//!   or in a step of its own. A **crash** drops everything not durable and what RaftCore held,
//!   and restarts the node with the real `load_state` (`src/core/startup.rs`) run on the
//!   model's store, then `Engine::startup`.
//! - **Replication** (`step.rs`): RaftCore's streams are not the Engine, so the model runs a
//!   spec of what they send. While a node leads, for each target in its progress table its
//!   stream may send (at most `MC_IN_FLIGHT` requests in flight per target) an AppendEntries
//!   from the target's `matched` with every entry of its submitted log after it (a heartbeat
//!   once caught up), with only the next entry (`MC_PARTIAL`), or a probe at its last log id
//!   (`MC_PROBES`), carrying its current committed id; or, to a target behind its purged log,
//!   its latest snapshot whole. An answer other than a greater vote acknowledges the request
//!   it answers (`on_heartbeat_acked` with what the request carried), a success reports
//!   `Matched`; a snapshot's answer does not (the follower may have ignored the snapshot), so
//!   the stream probes again, as `send_snapshot` does. Answers to a stream that ended are
//!   dropped.
//! - **Network** (`net.rs`): a bag of messages; any one may be delivered next, delivered and
//!   kept (`MC_DUPS`), or lost (`MC_DROPS`). A message never delivered is a lost one too, so
//!   loss needs no budget; a full bag (`MC_NET`) loses what is sent.
//! - **Other steps**: election timeouts, client writes at the leader, forced elections
//!   (`trigger().elect()`), leadership transfers, a membership change (by joint consensus:
//!   removing voter 3 by default, or any `ReplaceAllVoters`, such as `{2}`, which moves the
//!   group to a single voter that is not the leader), a snapshot (built, and the log purged
//!   behind it), crashes, ReadIndex and LeaseRead reads.
//! - **Nodes that stop voting**: a change keeps the voters it removes as learners, and every
//!   property still counts them. The leader replicates to them, and after a final config
//!   without itself it leads on (its reads resting on the new voters' answers) until it
//!   learns that config committed, then steps down. Whether a node the change removed may
//!   still campaign is the Engine's call: the model offers it timeouts and forced elections
//!   like any node. Transfers and survivors' turns name voters of the effective config only,
//!   and vote requests go to those voters (both halves of a joint config). Election safety, the
//!   committed chain and linearizable reads are judged over all three nodes whatever their
//!   role, so a read served by a leader that is not a voter is judged like any other.
//!
//! # Time
//!
//! One global clock counts ticks of 50ms; only the `Tick` step advances it, so any number of
//! steps happen at one instant, as under tokio's paused clock. `election_timeout_min` is
//! `MC_ELECTION_TICKS` ticks with no random part, and a node's timer may fire at any step at
//! or after its deadline, which covers every randomized timeout and scheduling delay. The
//! lease is `election_timeout_min` less `Config`'s default drift bound (20ms), read on one
//! clock shared by every node. The clock is part of the state; `MC_TICKS` bounds it.
//!
//! # Properties (`properties.rs`), checked after every step
//!
//! - election safety: one leader per term, ever;
//! - log matching between every two nodes' logs;
//! - leader completeness: an entry committed in term t is in the log of every leader of a
//!   later term;
//! - the leader commit rule (Raft §5.4.2): a leader moves its committed id only to an entry of
//!   its own term (checked directly: the state it protects against, Figure 8, is three
//!   elections deep, past what a search reaches);
//! - committed entries agree: no two nodes hold different entries as committed at one index;
//! - discarded never commits: an entry a node removed from its log while
//!   `Engine::truncated_entries_are_dead` held (RaftCore answers its write `Discarded`) is
//!   never committed. (The state that would break it, a removed entry committed from another
//!   node's log as in Figure 8, is also several elections deep: with the rule planted to
//!   "always dead", the `bounded_*` checks pass and the cluster test
//!   `a_write_truncated_before_its_replacement_commits_is_unknown_and_may_apply` fails);
//! - state-machine safety: each node applies only committed entries, each once, in order,
//!   and can read every entry it is asked to apply;
//! - committed never decreases on a running node; a durable vote never goes back, nor changes
//!   candidate within a term;
//! - acknowledged means durable: a leader's `matched` for a node of its term survives that
//!   node's crash (it is in its durable log or state machine);
//! - the Engine agrees with its store (vote, log ids, purged id) after every step and every
//!   restart; the store accepts every operation asked of it; a node can always restart;
//! - the effective membership is the latest one in the node's log, or its snapshot's;
//! - every read answered is linearizable, as `reads.rs` defines it;
//! - no `debug_assert!` of the Engine fires (in debug builds).
//!
//! # What is abstracted away, and what that misses
//!
//! - The pipeline's bookkeeping of in-flight requests: each answer acknowledges exactly the
//!   request it answers. How `ReplicationCore` matches answers to requests (issue #15's 3a, a
//!   heartbeat popped with the request before it) is out of reach, and its binary search is
//!   reduced to "from matched" and "at the last log id".
//! - One clock for all nodes: the lease's drift margin is not exercised.
//! - The state machine is durable at once and applies a batch in one step; a snapshot is
//!   built in the step that asks for it; a purge becomes durable in order with the log
//!   operations around it, never later.
//! - Clients are not answered: a write's fate is judged through the committed log, a read's
//!   through its read log id; follower reads are not modelled.
//! - The membership change is one kind per run (`MC_CHANGE`), asked of a leader at most
//!   `MC_CHANGES` times; a change that would leave the config as it is is not made, so a
//!   second change needs a different kind. Learners joining and nodes leaving the cluster
//!   (`RemoveNodes`) are not modelled: all three nodes are members from the start.
//! - The bounds: depth, budgets, terms. Issue #15's 4 and 6 need about 18 and 30 steps past
//!   the warm start with two crashes, or a change and a snapshot; no search within an hour
//!   reaches them.
//!
//! # Proof that it fails
//!
//! Planted one at a time in the Engine, found in a release build with `MC_WRITES=2
//! MC_CRASHES=1 MC_ELECTS=2 MC_DUPS=1 MC_PARTIAL=1 MC_TICKS=0 MC_READS=0` (depth counted
//! from the warm start):
//!
//! | mistake | caught by | depth | states | time |
//! |---|---|---|---|---|
//! | acknowledge before flush | acknowledged means durable | 4 | 444 | 0.03 s |
//! | vote twice in a term | vote once per term | 3 | 69 | 0.003 s |
//! | truncate on a matching entry (with a duplicate) | acknowledged means durable | 6 | 55,118 | 8.5 s |
//! | apply past commit | state machine safety | 7 | 55,926 | 3.4 s |
//! | commit an older term's entry by counting | leader commit rule | 18 | 2,017,425 | 133 s |
//!
//! The last needs bounds of its own (`MC_WRITES=1 MC_ELECTS=1 MC_PARTIAL=1`, no crash or
//! duplicate; found depth-first) and two changes made for it: partial appends (while every
//! request carried the new leader's own entry, an older term's entry was never the quorum's
//! alone) and the leader commit rule as a property (what the rule prevents, Figure 8, is
//! three elections and about 20 steps deep). The `catches_*` tests plant mistakes of the
//! same kinds in the model's RaftCore and storage, where CI keeps them;
//! `catches_sole_voter_elected_at_restart` plants cf1cf72's mistake there too (a RaftCore
//! that forces a sole voter's election at restart), caught after the same 12,996 states as the
//! Engine's own code with the fix reverted.
//!
//! A deep run without reads (`MC_WRITES=2 MC_CRASHES=1 MC_ELECTS=1 MC_DUPS=1 MC_TICKS=1
//! MC_READS=0 MC_DEPTH=11`) explores 12.7 million states in 14 minutes; each level of depth
//! costs about three times the one before.

mod checker;
mod net;
mod properties;
mod reads;
mod step;
mod storage;
mod world;

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use crate::types::{ChangeMembers, ReadPolicy};
pub(crate) use checker::{Counterexample, Report};
use step::Action;
use world::World;

/// Model time: a number of ticks since the start.
pub(super) type Tick = u32;

/// The length of a tick.
pub(super) const TICK: Duration = Duration::from_millis(50);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// The instant of tick `t`.
pub(super) fn instant(t: Tick) -> Instant {
    base() + TICK * t
}

/// `i` in ticks, for traces and fingerprints.
pub(super) fn ticks_since_base(i: Instant) -> f64 {
    i.saturating_duration_since(base()).as_secs_f64() / TICK.as_secs_f64()
}

/// Where a search starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// No leader yet; every node's election timer is due.
    Cold,
    /// Node 1 leads term 1; its blank entry is committed and applied everywhere.
    Warm,
}

/// How far the search goes.
#[derive(Debug, Clone)]
pub(crate) struct Bounds {
    pub(crate) start: Start,
    /// Stop after states this many steps from the start.
    pub(crate) max_depth: usize,
    /// Stop after this many distinct states.
    pub(crate) max_states: usize,
    /// Stop before a depth level whose states would be more than this many: the states of one
    /// level are held in memory (a few KB each).
    pub(crate) max_frontier: usize,
    /// `election_timeout_min` in ticks (the lease is that less the default drift bound).
    pub(crate) election_ticks: u32,
    /// No node campaigns for a term beyond this.
    pub(crate) max_term: u64,
    pub(crate) writes: u8,
    pub(crate) reads: u8,
    pub(crate) read_policies: Vec<ReadPolicy>,
    pub(crate) crashes: u8,
    pub(crate) dups: u8,
    pub(crate) drops: u8,
    pub(crate) ticks: u8,
    /// Membership changes, each the change `change` asked of a leader (a change that would
    /// leave the config as it is is not made).
    pub(crate) changes: u8,
    pub(crate) change: Change,
    pub(crate) snapshots: u8,
    pub(crate) transfers: u8,
    pub(crate) elects: u8,
    /// Times a node is told it woke as a survivor of some voter (`Engine::orphan_of`, which a
    /// host sets when a quiesced group's leader's node dies): its first campaign then takes a
    /// turn in the pre-vote (`election.rs`, `turn`). Any voter, live or not, agreeing with the
    /// other nodes or not: safety must not depend on the turns being right.
    pub(crate) orphans: u8,
    /// Messages in flight at most.
    pub(crate) max_net: usize,
    /// AppendEntries or snapshot requests a leader's stream has in flight to one target at
    /// most; 1 is the default `stream_append`, one request at a time.
    pub(crate) max_in_flight: usize,
    pub(crate) pre_vote: bool,
    pub(crate) check_quorum: bool,
    /// Apply committed entries in the step that commits them, instead of as a step of its own.
    pub(crate) eager_apply: bool,
    /// Leaders may also send probes at their last log id.
    pub(crate) probes: bool,
    /// Leaders may also send one entry at a time (`max_payload_entries` 1).
    pub(crate) partial_appends: bool,
    /// A mistake the model makes on purpose, to show the checker catches it.
    pub(crate) mutant: Option<Mutant>,
}

/// The membership change `Action::ChangeMembership` asks of a leader, by joint consensus when
/// it changes the voters. Voters it removes stay in the cluster as learners: they keep
/// receiving the log and keep counting in every property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Remove this voter (`ChangeMembers::RemoveVoters`): 3 voters become 2.
    RemoveVoter(u64),
    /// Make exactly these the voters (`ChangeMembers::ReplaceAllVoters`). From the warm start,
    /// `{2}` moves the group from leader 1 to a single voter that is not the leader.
    ReplaceVoters(BTreeSet<u64>),
}

impl Change {
    /// The change as the Engine's API takes it.
    pub(super) fn members(&self) -> ChangeMembers<storage::C> {
        match self {
            Change::RemoveVoter(id) => ChangeMembers::RemoveVoters(BTreeSet::from([*id])),
            Change::ReplaceVoters(ids) => ChangeMembers::ReplaceAllVoters(ids.clone()),
        }
    }

    /// `MC_CHANGE`: `remove:N`, or `voters:N[,N...]`.
    fn parse(v: &str) -> Option<Self> {
        let ids = |list: &str| list.split(',').map(|id| id.trim().parse().ok()).collect::<Option<BTreeSet<u64>>>();
        match v.split_once(':')? {
            ("remove", id) => Some(Change::RemoveVoter(id.trim().parse().ok()?)),
            ("voters", list) => ids(list).filter(|s| !s.is_empty()).map(Change::ReplaceVoters),
            _ => None,
        }
    }
}

/// Mistakes of the layers around the Engine that the model can make on purpose: the tests
/// below show the checker catches each, without touching the Engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mutant {
    /// RaftCore answers an AppendEntries before the entries it acknowledges are flushed.
    AckBeforeFlush,
    /// The log store loses the vote in a crash.
    VoteNotDurable,
    /// The state machine worker applies one entry past the committed range it was given.
    ApplyPastCommit,
    /// RaftCore, restarting a node that is the only voter of its config, forces its election
    /// at once (`elect_forced`, as `initialize` does for a new cluster), on the theory that a
    /// one-voter group needs nobody's permission. It breaks the promise the node's answers
    /// made to a leader that moved the group to it: what `Engine::startup` itself did before
    /// cf1cf72.
    ElectSoleVoterAtRestart,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            start: Start::Warm,
            max_depth: 12,
            max_states: 20_000_000,
            max_frontier: 500_000,
            election_ticks: 2,
            max_term: 3,
            writes: 1,
            reads: 1,
            read_policies: vec![ReadPolicy::ReadIndex, ReadPolicy::LeaseRead],
            crashes: 1,
            dups: 0,
            drops: 0,
            ticks: 3,
            changes: 0,
            change: Change::RemoveVoter(3),
            snapshots: 0,
            transfers: 0,
            elects: 0,
            orphans: 0,
            max_net: 6,
            max_in_flight: 1,
            pre_vote: true,
            check_quorum: true,
            eager_apply: true,
            probes: false,
            partial_appends: false,
            mutant: None,
        }
    }
}

impl Bounds {
    /// The default bounds, overridden by the `MC_*` environment variables of the module docs.
    pub(crate) fn from_env() -> Self {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
                Err(_) => default,
            }
        }
        let flag = |name: &str, default: bool| var::<u8>(name, default as u8) != 0;
        let d = Self::default();
        let start = match std::env::var("MC_START").as_deref() {
            Ok("cold") => Start::Cold,
            Ok("warm") | Err(_) => Start::Warm,
            Ok(v) => panic!("MC_START={v}: use cold or warm"),
        };
        let read_policies = match std::env::var("MC_READ_POLICIES").as_deref() {
            Ok("index") => vec![ReadPolicy::ReadIndex],
            Ok("lease") => vec![ReadPolicy::LeaseRead],
            Ok("both") | Err(_) => d.read_policies.clone(),
            Ok(v) => panic!("MC_READ_POLICIES={v}: use index, lease or both"),
        };
        let change = match (std::env::var("MC_CHANGE"), std::env::var("MC_REMOVE_VOTER")) {
            (Ok(v), _) => Change::parse(&v).unwrap_or_else(|| panic!("MC_CHANGE={v}: use remove:N or voters:N[,N...]")),
            (Err(_), Ok(v)) => Change::RemoveVoter(v.parse().unwrap_or_else(|_| panic!("MC_REMOVE_VOTER={v}"))),
            (Err(_), Err(_)) => d.change.clone(),
        };
        Self {
            start,
            max_depth: var("MC_DEPTH", d.max_depth),
            max_states: var("MC_STATES", d.max_states),
            max_frontier: var("MC_FRONTIER", d.max_frontier),
            election_ticks: var("MC_ELECTION_TICKS", d.election_ticks),
            max_term: var("MC_TERMS", d.max_term),
            writes: var("MC_WRITES", d.writes),
            reads: var("MC_READS", d.reads),
            read_policies,
            crashes: var("MC_CRASHES", d.crashes),
            dups: var("MC_DUPS", d.dups),
            drops: var("MC_DROPS", d.drops),
            ticks: var("MC_TICKS", d.ticks),
            changes: var("MC_CHANGES", d.changes),
            change,
            snapshots: var("MC_SNAPSHOTS", d.snapshots),
            transfers: var("MC_TRANSFERS", d.transfers),
            elects: var("MC_ELECTS", d.elects),
            orphans: var("MC_ORPHANS", d.orphans),
            max_net: var("MC_NET", d.max_net),
            max_in_flight: var("MC_IN_FLIGHT", d.max_in_flight),
            pre_vote: flag("MC_PRE_VOTE", d.pre_vote),
            check_quorum: flag("MC_CHECK_QUORUM", d.check_quorum),
            eager_apply: flag("MC_EAGER_APPLY", d.eager_apply),
            probes: flag("MC_PROBES", d.probes),
            partial_appends: flag("MC_PARTIAL", d.partial_appends),
            mutant: None,
        }
    }
}

/// Check the Engine within `bounds`.
pub(crate) fn check(bounds: &Bounds, progress: bool) -> Result<Report, Box<Counterexample>> {
    let origin = World::new(bounds).expect("the initial state breaks no property");
    let prefix = match bounds.start {
        Start::Cold => Vec::new(),
        Start::Warm => warm_start(&origin, bounds),
    };
    checker::explore(bounds, &origin, &prefix, progress)
}

/// The steps that make node 1 the leader of term 1 with its blank entry committed, applied
/// and known committed everywhere, and nothing left in flight or unflushed.
fn warm_start(origin: &World, bounds: &Bounds) -> Vec<Action> {
    let mut steps = Vec::new();
    let mut w = origin.clone();
    let mut run = |w: &mut World, a: Action| {
        *w = step::next(w, a, bounds).expect("the warm start breaks no property").expect("a warm start step acts");
        steps.push(a);
    };
    // Flush every disk, deliver every message, until nothing is left to do.
    let settle = |w: &mut World, run: &mut dyn FnMut(&mut World, Action)| loop {
        if let Some(node) = w.nodes.iter().find(|n| !n.store.pending.is_empty()) {
            let id = node.id();
            run(w, Action::Flush(id));
        } else if w.net.len() > 0 {
            run(w, Action::Deliver(0));
        } else {
            break;
        }
    };
    run(&mut w, Action::Timeout(1));
    settle(&mut w, &mut run);
    for _ in 0..2 {
        for target in [2, 3] {
            run(&mut w, Action::Replicate { leader: 1, target, send: step::Send::All });
        }
        settle(&mut w, &mut run);
    }
    assert!(w.node(1).engine.leader.is_some(), "node 1 leads after the warm start");
    assert!(w.nodes.iter().all(|n| n.engine.state.committed.is_some_and(|c| c.index == 1)));
    steps
}

/// Run a check, print what it did, and fail with the trace if it found a violation.
fn assert_holds(name: &str, bounds: &Bounds) -> Report {
    match check(bounds, false) {
        Ok(report) => {
            println!("{name}: {report}");
            report
        }
        Err(cx) => panic!("{name}: {cx}"),
    }
}

/// Run a check that must find a violation of `property`; print how fast it did.
fn assert_finds(name: &str, bounds: &Bounds, property: &str) {
    match check(bounds, false) {
        Ok(report) => panic!("{name}: no violation found: {report}"),
        Err(cx) => {
            println!("{name}: found \"{}\" after {} steps; {}", cx.violation, cx.steps, cx.report);
            assert_eq!(cx.violation.property, property, "{cx}");
        }
    }
}

/// What CI checks: small bounds, every action kind somewhere.
fn ci(start: Start) -> Bounds {
    Bounds { start, reads: 0, writes: 0, crashes: 0, ticks: 0, max_depth: 8, pre_vote: true, ..Bounds::default() }
}

/// Elections from scratch, with pre-vote: split votes, a crash, time passing, a write.
#[test]
fn bounded_elections() {
    let bounds = Bounds { crashes: 1, ticks: 1, writes: 1, max_depth: 8, ..ci(Start::Cold) };
    assert_holds("bounded_elections", &bounds);
}

/// A leader replicating two writes while a node crashes, with entries applied as steps of
/// their own.
#[test]
fn bounded_replication_and_crash() {
    let bounds = Bounds { writes: 2, crashes: 1, eager_apply: false, max_depth: 9, ..ci(Start::Warm) };
    assert_holds("bounded_replication_and_crash", &bounds);
}

/// A joint-consensus change that removes node 3, with a crash.
#[test]
fn bounded_membership_change() {
    let bounds = Bounds { changes: 1, crashes: 1, max_depth: 12, ..ci(Start::Warm) };
    assert_holds("bounded_membership_change", &bounds);
}

/// A snapshot, the log purged behind it and sent to a follower.
#[test]
fn bounded_snapshot() {
    let bounds = Bounds { writes: 1, snapshots: 1, eager_apply: false, max_depth: 14, ..ci(Start::Warm) };
    assert_holds("bounded_snapshot", &bounds);
}

/// A snapshot, a joint-consensus change and a crash together. A node that took a snapshot
/// applies the change's first entry before its own log flushed it and crashes: at restart its
/// log is purged up to its state machine, whose membership is then the latest it holds. Deep
/// runs of these budgets with reads and a forced election (depth 10: 370,414 states; depth 12:
/// 1.43 million) found nothing. Before the effective-membership property counted the state
/// machine's membership, they stopped on a false alarm at this state, and so does this check
/// with that reverted (24,109 states, 8 s of debug build).
#[test]
fn bounded_snapshot_change_and_crash() {
    let bounds = Bounds { snapshots: 1, changes: 1, crashes: 1, max_depth: 10, ..ci(Start::Warm) };
    assert_holds("bounded_snapshot_change_and_crash", &bounds);
}

/// ReadIndex and lease reads while leadership moves by a forced election or a transfer.
#[test]
fn bounded_reads() {
    let bounds = Bounds { reads: 1, elects: 1, transfers: 1, max_depth: 10, ..ci(Start::Warm) };
    assert_holds("bounded_reads", &bounds);
}

/// Survivors' turns in the pre-vote (`Engine::turn`), set on any node for any voter, live or
/// not, while leadership moves by time, a crash and reads: turns are liveness only.
#[test]
fn bounded_pre_vote_turns() {
    let bounds = Bounds { orphans: 2, crashes: 1, ticks: 2, reads: 1, max_depth: 9, ..ci(Start::Warm) };
    assert_holds("bounded_pre_vote_turns", &bounds);
}

/// Survivors' turns where they meet a leadership transfer and a joint-consensus change (a turn
/// set on a node that a transfer then forces to campaign, or that the change removes from the
/// voters). Deeper runs of the same budgets (`MC_ORPHANS=1 MC_CHANGES=1 MC_TRANSFERS=1
/// MC_TICKS=2`, depth 12: 8.1 million states; with reads and no ticks past one, 3.7 million)
/// found nothing either.
#[test]
fn bounded_pre_vote_turns_with_a_transfer_and_a_change() {
    let bounds = Bounds { orphans: 1, changes: 1, transfers: 1, ticks: 2, max_depth: 8, ..ci(Start::Warm) };
    assert_holds("bounded_pre_vote_turns_with_a_transfer_and_a_change", &bounds);
}

/// A change that moves the group from leader 1 to a single voter that is not the leader
/// (`ReplaceVoters({2})`: {1,2,3} -> joint -> {2}, nodes 1 and 3 kept as learners), with a
/// crash and reads of both policies. From the moment leader 1 appends the final config its
/// lease rests on node 2's answers alone, until it learns that config committed; node 2,
/// restarted in that window, must keep the promise its answers made. With the fix of cf1cf72
/// reverted (`Engine::startup` electing any sole voter at once) this fails at depth 12 after
/// 12,996 states (every state of depth 11; 3.7 s of debug build, lease reads alone): node 2
/// restarts, elects itself in term 2 and commits its blank entry, then node 1 answers a lease
/// read at the joint config's index.
#[test]
fn bounded_move_to_a_sole_voter() {
    let bounds = Bounds { changes: 1, change: sole_voter_2(), crashes: 1, reads: 1, max_depth: 12, ..ci(Start::Warm) };
    assert_holds("bounded_move_to_a_sole_voter", &bounds);
}

/// The change of [`bounded_move_to_a_sole_voter`]: make node 2 the only voter.
fn sole_voter_2() -> Change {
    Change::ReplaceVoters(BTreeSet::from([2]))
}

/// Proof the checker can fail: RaftCore acknowledging before the flush is caught.
#[test]
fn catches_ack_before_flush() {
    let bounds = Bounds { writes: 1, mutant: Some(Mutant::AckBeforeFlush), max_depth: 8, ..ci(Start::Warm) };
    assert_finds("catches_ack_before_flush", &bounds, "acknowledged means durable");
}

/// Proof the checker can fail: a store that loses the vote in a crash is caught, either as a
/// second vote in a term or, where the node holds an entry of a term newer than the vote it
/// restarts with, as the node refusing to start (`core::startup`'s vote check).
#[test]
fn catches_vote_not_durable() {
    let bounds =
        Bounds { crashes: 1, elects: 1, mutant: Some(Mutant::VoteNotDurable), max_depth: 8, ..ci(Start::Warm) };
    match check(&bounds, false) {
        Ok(report) => panic!("catches_vote_not_durable: no violation found: {report}"),
        Err(cx) => {
            println!("catches_vote_not_durable: found \"{}\" after {} steps; {}", cx.violation, cx.steps, cx.report);
            let refused =
                cx.violation.property == "restart" && cx.violation.to_string().contains("older than the term");
            assert!(cx.violation.property == "vote once per term" || refused, "{cx}");
        }
    }
}

/// Proof the checker can fail: a state machine that applies past the committed range.
#[test]
fn catches_apply_past_commit() {
    let bounds = Bounds { writes: 2, mutant: Some(Mutant::ApplyPastCommit), max_depth: 8, ..ci(Start::Warm) };
    assert_finds("catches_apply_past_commit", &bounds, "state machine safety");
}

/// Proof the checker can fail: a RaftCore that forces a sole voter's election at restart (what
/// `Engine::startup` did before cf1cf72) is caught as a stale lease read.
#[test]
fn catches_sole_voter_elected_at_restart() {
    let bounds = Bounds {
        changes: 1,
        change: sole_voter_2(),
        crashes: 1,
        reads: 1,
        read_policies: vec![ReadPolicy::LeaseRead],
        mutant: Some(Mutant::ElectSoleVoterAtRestart),
        max_depth: 12,
        ..ci(Start::Warm)
    };
    assert_finds("catches_sole_voter_elected_at_restart", &bounds, "linearizable read");
}

/// Targeted checks: each narrows the budgets to one kind of path and follows it deeper than
/// the CI checks reach, capped by a number of states rather than a depth (the search stops
/// when either bound is reached). Run in release, a few minutes in all:
/// `cargo test --release --lib --features testing engine::model::targeted -- --ignored --nocapture`.
/// The mutation runner (`tests/mutations/run.py`, tool `model-targeted`) runs them.
fn targeted(max_depth: usize, max_states: usize) -> Bounds {
    Bounds { reads: 0, writes: 0, crashes: 0, ticks: 0, max_depth, max_states, ..Bounds::default() }
}

/// A new leader's lease over time: elections from scratch, clocks moving, lease reads.
#[test]
#[ignore = "targeted: run on demand, in release"]
fn targeted_lease_of_a_new_leader() {
    let bounds = Bounds {
        start: Start::Cold,
        pre_vote: false,
        ticks: 2,
        reads: 1,
        read_policies: vec![ReadPolicy::LeaseRead],
        ..targeted(16, 2_000_000)
    };
    assert_holds("targeted_lease_of_a_new_leader", &bounds);
}

/// A lease while a voter crashes and restarts and another campaigns.
#[test]
#[ignore = "targeted: run on demand, in release"]
fn targeted_lease_across_a_restart() {
    let bounds = Bounds {
        pre_vote: false,
        crashes: 1,
        ticks: 2,
        reads: 1,
        read_policies: vec![ReadPolicy::LeaseRead],
        ..targeted(16, 2_000_000)
    };
    assert_holds("targeted_lease_across_a_restart", &bounds);
}

/// The leader commit rule (Raft §5.4.2): a write, an election, appends of one entry at a time.
#[test]
#[ignore = "targeted: run on demand, in release"]
fn targeted_commit_rule() {
    let bounds = Bounds { writes: 1, elects: 1, partial_appends: true, ..targeted(18, 3_000_000) };
    assert_holds("targeted_commit_rule", &bounds);
}

/// A deep check with bounds from the environment (see the module docs).
#[test]
#[ignore = "deep: run on demand, in release"]
fn deep() {
    let bounds = Bounds::from_env();
    println!("deep check with {bounds:?}");
    match check(&bounds, true) {
        Ok(report) => println!("no violation: {report}"),
        Err(cx) => panic!("{cx}"),
    }
}
