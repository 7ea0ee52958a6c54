//! The model's state: three nodes (each an Engine, its storage and what its RaftCore holds),
//! the network, the clock, what is left of each budget, and the ghost state properties need.
//!
//! This file also holds what RaftCore does around the Engine: executing its Commands
//! (`run_commands`), parking AppendEntries answers until their I/O is flushed, and restarting
//! a node from its durable state with the real `load_state`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;

use super::net::{Msg, Net, Payload};
use super::properties::{Ghost, Violation};
use super::reads::{self, PendingRead};
use super::storage::{C, LogOp, LogView, ModelLogStore, ModelSnapshot, ModelStateMachine};
use super::{Bounds, Mutant, Tick, instant, ticks_since_base};
use crate::config::SnapshotPolicy;
use crate::core::load_state;
use crate::engine::{Command, Engine, EngineConfig};
use crate::types::{Entry, LeaderId, LogId, Membership};

/// One node: its Engine, its storage, and what its RaftCore holds between inputs.
///
/// States share what a step did not change: nodes, stores and state machines sit behind
/// `Arc`s and are copied on write ([`World::node_mut`], [`Node::store_mut`],
/// [`Node::sm_mut`]).
#[derive(Clone)]
pub(super) struct Node {
    pub(super) engine: Engine<C>,
    pub(super) store: Arc<ModelLogStore>,
    pub(super) sm: Arc<ModelStateMachine>,
    /// AppendEntries answers waiting for the log I/O `seq` to be flushed, in seq order.
    pub(super) parked: Vec<(u64, Msg)>,
    /// Reads waiting for a quorum to confirm this node leads.
    pub(super) reads: Vec<PendingRead>,
    /// `Apply` batches handed to the state machine and not yet applied (unless applying is
    /// eager, then this stays empty).
    pub(super) apply_queue: VecDeque<(u64, LogId<C>)>,
    /// A received snapshot waiting for its `InstallSnapshot` command; empty between steps.
    pub(super) installing: Option<ModelSnapshot>,
    /// The Engine asked for a snapshot to be built.
    pub(super) build_requested: bool,
    /// The node's fingerprint, 0 until computed; [`World::node_mut`] clears it.
    fingerprint: FingerprintCache,
}

/// A cached fingerprint; a copy starts empty, as it is made to be changed.
#[derive(Default)]
struct FingerprintCache(AtomicU64);

impl Clone for FingerprintCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Node {
    pub(super) fn id(&self) -> u64 {
        self.engine.id()
    }

    pub(super) fn store_mut(&mut self) -> &mut ModelLogStore {
        Arc::make_mut(&mut self.store)
    }

    pub(super) fn sm_mut(&mut self) -> &mut ModelStateMachine {
        Arc::make_mut(&mut self.sm)
    }

    /// Everything about the node that can change what happens next (see
    /// [`World::fingerprint`]).
    fn fingerprint(&self) -> u64 {
        let cached = self.fingerprint.0.load(Ordering::Relaxed);
        if cached != 0 {
            return cached;
        }
        let e = &self.engine;
        let fp = hash_rendering(|s| {
            let _ = write!(
                s,
                "{:?}{:?}{:?}{:?}{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
                e.state,
                e.leader,
                e.candidate,
                e.election_deadline.map(ticks_since_base),
                e.last_leader_contact.map(ticks_since_base),
                self.store,
                self.sm,
                self.parked,
                self.reads,
                self.apply_queue,
                self.build_requested,
            );
        })
        .max(1);
        self.fingerprint.0.store(fp, Ordering::Relaxed);
        fp
    }

    /// Whether `log_id` survives a crash of this node: in its durable log or its state machine.
    pub(super) fn durably_holds(&self, log_id: LogId<C>) -> bool {
        self.store.durable.holds(log_id) || self.sm.applied.get(log_id.index as usize) == Some(&log_id)
    }
}

/// What is left of each budget the bounds set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct Budget {
    pub(super) ticks: u8,
    pub(super) writes: u8,
    pub(super) reads: u8,
    pub(super) crashes: u8,
    pub(super) dups: u8,
    pub(super) drops: u8,
    pub(super) changes: u8,
    pub(super) snapshots: u8,
    pub(super) transfers: u8,
    pub(super) elects: u8,
    pub(super) orphans: u8,
}

/// The whole model state.
#[derive(Clone)]
pub(super) struct World {
    /// Node `i + 1` is at index `i`; change one through [`World::node_mut`].
    pub(super) nodes: Vec<Arc<Node>>,
    pub(super) net: Net,
    pub(super) clock: Tick,
    pub(super) budget: Budget,
    /// Shared between states until a step changes it.
    pub(super) ghost: Arc<Ghost>,
}

/// The Engine's settings in the model. `election_timeout_min` is `bounds.election_ticks`
/// ticks; the maximum is one nanosecond more, so the randomized part of the timeout is always
/// zero (the Engine's random number then changes nothing) and every deadline is a whole tick:
/// the model itself chooses when, at or after its deadline, a node times out.
fn engine_config(id: u64, bounds: &Bounds) -> EngineConfig<C> {
    let min = super::TICK * bounds.election_ticks;
    EngineConfig {
        id,
        election_timeout_min: min,
        election_timeout_max: min + std::time::Duration::from_nanos(1),
        seed: 0,
        snapshot_policy: SnapshotPolicy::Never,
        log_to_keep: 0,
        pre_vote: bounds.pre_vote,
        check_quorum: bounds.check_quorum,
        // `Config`'s default drift bound, 20ms of 150ms.
        lease: min - super::TICK * 2 / 5,
        quiesce: false,
        rank_salt: 0,
    }
}

/// The membership every node is initialized with: voters 1, 2, 3.
pub(super) fn initial_membership() -> Membership<C> {
    Membership::new_voters((1..=3).map(|id| (id, ())).collect()).expect("three voters")
}

impl World {
    /// Three nodes, each initialized with the same first membership entry, durable; nobody has
    /// voted; the clock is at the election deadline every node set at startup.
    pub(super) fn new(bounds: &Bounds) -> Result<Self, Violation> {
        let first = LogId::new(LeaderId::new(0, 0), 0);
        let mut nodes = Vec::new();
        for id in 1..=3 {
            let mut log = LogView::default();
            log.entries.insert(0, Entry::new_membership(first, initial_membership()));
            let store = ModelLogStore { submitted: log.clone(), durable: log, ..Default::default() };
            let config = engine_config(id, bounds);
            nodes.push(Arc::new(Node {
                engine: Engine::new(config, Default::default()),
                store: Arc::new(store),
                sm: Arc::default(),
                parked: Vec::new(),
                reads: Vec::new(),
                apply_queue: VecDeque::new(),
                installing: None,
                build_requested: false,
                fingerprint: FingerprintCache::default(),
            }));
        }
        let mut world = World {
            nodes,
            net: Net::default(),
            clock: 0,
            budget: Budget {
                ticks: bounds.ticks,
                writes: bounds.writes,
                reads: bounds.reads,
                crashes: bounds.crashes,
                dups: bounds.dups,
                drops: bounds.drops,
                changes: bounds.changes,
                snapshots: bounds.snapshots,
                transfers: bounds.transfers,
                elects: bounds.elects,
                orphans: bounds.orphans,
            },
            ghost: Arc::default(),
        };
        for n in 0..3 {
            world.start(n, bounds)?;
        }
        world.clock = bounds.election_ticks;
        Ok(world)
    }

    pub(super) fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// Node at index `n`, to change: copied first if another state shares it.
    pub(super) fn node_mut(&mut self, n: usize) -> &mut Node {
        let node = Arc::make_mut(&mut self.nodes[n]);
        node.fingerprint = FingerprintCache::default();
        node
    }

    /// Start node `n` from its durable state, as `Raft::new` does: `load_state`, then
    /// `Engine::startup`.
    pub(super) fn start(&mut self, n: usize, b: &Bounds) -> Result<(), Violation> {
        let now = self.clock;
        let node = self.node_mut(n);
        let id = node.id();
        let mut store = ModelLogStore::clone(&node.store);
        let mut sm = ModelStateMachine::clone(&node.sm);
        let loaded =
            load_state::<C, _, _>(id, &mut store, &mut sm).now_or_never().expect("the model's storage never waits");
        node.store = Arc::new(store);
        node.sm = Arc::new(sm);
        let state = loaded.map_err(|e| Violation::new("restart", format!("n{id} cannot start: {e}")))?;
        node.engine = Engine::new(node.engine.config.clone(), state);
        node.engine.startup(instant(now));
        if b.mutant == Some(Mutant::ElectSoleVoterAtRestart) && node.engine.leader.is_none() {
            let voters = node.engine.state.membership.effective().voter_ids();
            if voters.len() == 1 && voters.contains(&id) {
                node.engine.elect_forced(instant(now));
            }
        }
        self.run_commands(n, b)
    }

    /// Crash node `n` and start it again from what its storage kept.
    pub(super) fn crash_restart(&mut self, n: usize, b: &Bounds) -> Result<(), Violation> {
        let node = self.node_mut(n);
        node.store_mut().crash();
        if b.mutant == Some(Mutant::VoteNotDurable) {
            node.store_mut().vote = None;
        }
        node.parked.clear();
        node.reads.clear();
        node.apply_queue.clear();
        node.installing = None;
        node.build_requested = false;
        self.start(n, b)
    }

    /// Put `msg` in flight; a full network loses it.
    pub(super) fn send(&mut self, msg: Msg, max_net: usize) {
        if self.net.len() < max_net {
            self.net.push(msg);
        }
    }

    /// After an input to node `n`: execute the Engine's commands in order, as RaftCore's
    /// `run_commands` does, feed back what the state machine applied, then release the
    /// AppendEntries answers whose I/O is flushed and confirm the reads a quorum confirmed.
    pub(super) fn run_commands(&mut self, n: usize, b: &Bounds) -> Result<(), Violation> {
        loop {
            let mut applied = Vec::new();
            while let Some(cmd) = self.node_mut(n).engine.output.pop_front() {
                self.run_command(n, cmd, b, &mut applied)?;
            }
            if applied.is_empty() {
                break;
            }
            // The state machine's notifications arrive after this batch of commands.
            for last in applied {
                self.node_mut(n).engine.on_applied(last);
            }
        }
        let node = self.node_mut(n);
        let flushed = node.engine.state.io.flushed.seq;
        let (released, parked): (Vec<_>, Vec<_>) = node.parked.drain(..).partition(|(seq, _)| *seq <= flushed);
        node.parked = parked;
        for (_, msg) in released {
            self.send(msg, usize::MAX);
        }
        let now = self.clock;
        let node = self.node_mut(n);
        let confirmed = reads::check_pending(&node.engine, &mut node.reads, now);
        for read in confirmed {
            Arc::make_mut(&mut self.ghost).read_confirmed(read)?;
        }
        Ok(())
    }

    fn run_command(
        &mut self,
        n: usize,
        cmd: Command<C>,
        b: &Bounds,
        applied: &mut Vec<LogId<C>>,
    ) -> Result<(), Violation> {
        let id = self.nodes[n].id();
        if let Command::TruncateLog { since, .. } = &cmd {
            let node = &self.nodes[n];
            if node.engine.truncated_entries_are_dead(*since) {
                let removed: Vec<LogId<C>> =
                    node.store.submitted.entries.range(since.index..).map(|(_, e)| e.log_id).collect();
                Arc::make_mut(&mut self.ghost).removed_dead(removed);
            }
        }
        let storage = |e: String| Violation::new("storage contract", format!("n{id}'s log store refused: {e}"));
        let node = self.node_mut(n);
        match cmd {
            Command::SaveVote { vote } => node.store_mut().vote = Some(vote),
            Command::AppendEntries { io, entries } => {
                node.store_mut().submit(LogOp::Append { io, entries }).map_err(storage)?;
            }
            Command::TruncateLog { since, .. } => {
                node.store_mut().submit(LogOp::Truncate { since }).map_err(storage)?
            }
            Command::PurgeLog { upto } => node.store_mut().submit(LogOp::Purge { upto }).map_err(storage)?,
            Command::SaveCommitted { committed } => node.store_mut().committed = Some(committed),
            Command::SendVote { req } => {
                let voters = node.engine.state.membership.effective().voter_ids();
                for to in voters.into_iter().filter(|to| *to != id) {
                    self.send(Msg { from: id, to, payload: Payload::Vote(req.clone()) }, usize::MAX);
                }
            }
            // Replication streams are the model's `Replicate` actions, driven by the leader's
            // progress table; there is nothing to start or stop.
            // Streams are the model's send actions; they read the round from the Engine.
            Command::UpdateReplicationStreams { .. }
            | Command::CloseReplicationStreams
            | Command::BroadcastHeartbeat { .. }
            // The model runs without quiescence.
            | Command::SetQuiesced { .. }
            | Command::ReleaseQuiesced { .. } => {}
            Command::Apply { first, last } => {
                if b.eager_apply {
                    let log = Arc::clone(&node.store);
                    let upto = past_commit(last, &log.submitted, b);
                    node.sm_mut().apply(first, upto, &log.submitted).map_err(|e| apply_error(id, e))?;
                    applied.push(last);
                } else {
                    node.apply_queue.push_back((first, last));
                }
            }
            Command::BuildSnapshot => node.build_requested = true,
            Command::SendTransferLeader { to, req } => {
                self.send(Msg { from: id, to, payload: Payload::TransferLeader(req) }, usize::MAX);
            }
            Command::InstallSnapshot { meta } => {
                // The state machine installs after every batch queued before it.
                while let Some((first, last)) = node.apply_queue.pop_front() {
                    let log = Arc::clone(&node.store);
                    node.sm_mut().apply(first, last, &log.submitted).map_err(|e| apply_error(id, e))?;
                    applied.push(last);
                }
                let Some(snapshot) = node.installing.take().filter(|s| s.meta == meta) else {
                    return Err(Violation::new("storage contract", format!("n{id}: no received snapshot for {meta}")));
                };
                node.sm_mut().install(snapshot);
            }
        }
        Ok(())
    }

    /// The state machine of node `n` applies its oldest queued batch.
    pub(super) fn apply_one(&mut self, n: usize, b: &Bounds) -> Result<bool, Violation> {
        if self.nodes[n].apply_queue.is_empty() {
            return Ok(false);
        }
        let node = self.node_mut(n);
        let Some((first, last)) = node.apply_queue.pop_front() else { return Ok(false) };
        let id = node.id();
        let log = Arc::clone(&node.store);
        let applied = past_commit(last, &log.submitted, b);
        node.sm_mut().apply(first, applied, &log.submitted).map_err(|e| apply_error(id, e))?;
        node.engine.on_applied(last);
        self.run_commands(n, b)?;
        Ok(true)
    }

    /// A 64-bit fingerprint of everything that can change what happens next or what a
    /// property says: two states with the same fingerprint are explored once.
    ///
    /// It hashes the text renderings (`Debug`) of the Engine's state, its leader and candidate
    /// state and its timers, so a field added to them is hashed without changing this.
    /// Left out: the Engine's config (fixed) and random number (unused: see
    /// `engine_config`), and its output queue (always empty between steps).
    pub(super) fn fingerprint(&self) -> u64 {
        hash_rendering(|s| {
            let _ = write!(s, "{}|{:?}|{:?}|{:?}", self.clock, self.budget, self.ghost, self.net);
            for node in &self.nodes {
                let _ = write!(s, "|{:x}", node.fingerprint());
            }
        })
    }

    /// The state for traces: the clock, then a line per node (and per leader), then the network.
    pub(super) fn summary(&self) -> String {
        self.summary_lines().join("\n")
    }

    /// [`summary`](Self::summary), line by line.
    pub(super) fn summary_lines(&self) -> Vec<String> {
        let mut lines = vec![format!("    clock={} budget={:?}", self.clock, self.budget)];
        for node in &self.nodes {
            let e = &node.engine;
            let st = &e.state;
            let log: Vec<String> = (0..=st.last_log_id().map_or(0, |l| l.index))
                .filter_map(|i| st.log_ids.get(i).map(|l| l.to_string()))
                .collect();
            lines.push(format!(
                "    n{} {:?} vote={} log=[{}] committed={:?} applied={:?} durable_last={:?} pending_io={} parked={} \
                 deadline={:?} members={}",
                node.id(),
                st.server_state,
                st.vote,
                log.join(" "),
                st.committed,
                node.sm.last_applied(),
                node.store.durable.last_log_id(),
                node.store.pending.len(),
                node.parked.len(),
                e.election_deadline.map(ticks_since_base),
                st.membership.effective,
            ));
            if let Some(l) = &e.leader {
                let acked: Vec<String> = l
                    .acked
                    .iter()
                    .map(|(id, a)| format!("n{id}@{:.2}r{}", ticks_since_base(a.sent_at), a.round))
                    .collect();
                lines.push(format!(
                    "    n{} leads: progress={:?} acked=[{}] since={:.2} blank={:?} transfer={:?}",
                    node.id(),
                    l.progress,
                    acked.join(" "),
                    ticks_since_base(l.since),
                    l.blank_log_id,
                    l.transfer.as_ref().map(|t| (t.to, t.sent)),
                ));
            }
        }
        lines.push(format!("    net={:?}", self.net));
        lines
    }
}

/// Where the state machine stops applying a batch that ends at `last`: there, unless the
/// [`Mutant::ApplyPastCommit`] makes it go one entry further.
fn past_commit(last: LogId<C>, log: &LogView, b: &Bounds) -> LogId<C> {
    match (b.mutant, log.entries.get(&(last.index + 1))) {
        (Some(Mutant::ApplyPastCommit), Some(next)) => next.log_id,
        _ => last,
    }
}

fn apply_error(id: u64, e: String) -> Violation {
    Violation::new("state machine", format!("n{id}: {e}"))
}

/// The hash of what `render` writes, rendered into a buffer reused across calls.
fn hash_rendering(render: impl FnOnce(&mut String)) -> u64 {
    thread_local! {
        static BUFFER: RefCell<String> = const { RefCell::new(String::new()) };
    }
    BUFFER.with(|b| {
        // A render that itself fingerprints (a node inside a world) gets a buffer of its own.
        let Ok(mut buf) = b.try_borrow_mut() else {
            let mut own = String::new();
            render(&mut own);
            return hash_bytes(own.as_bytes());
        };
        buf.clear();
        render(&mut buf);
        hash_bytes(buf.as_bytes())
    })
}

/// A fast 64-bit hash with good spread (multiply-fold mixing, as in wyhash): fingerprints
/// need speed and few collisions, not resistance to chosen input.
fn hash_bytes(bytes: &[u8]) -> u64 {
    const P0: u64 = 0xa076_1d64_78bd_642f;
    const P1: u64 = 0xe703_7ed1_a0b4_28db;
    fn mix(a: u64, b: u64) -> u64 {
        let r = u128::from(a) * u128::from(b);
        (r as u64) ^ ((r >> 64) as u64)
    }
    let mut h = P0 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = mix(h ^ v ^ P0, P1);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = mix(h ^ u64::from_le_bytes(tail) ^ P1, P0);
    mix(h, P1)
}
