//! The nemesis: seeded random faults, each healed after a while.
//!
//! Besides cutting, delaying and freezing links, slowing and stalling disks and crashing
//! nodes, it goes for the paths a lease or a ReadIndex depends on:
//!
//! - **forced elections and transfers while reads are pending** ([`bursts`](crate::bursts)):
//!   a burst of concurrent reads, then, in the same instant or a few ms later, a forced
//!   election, a leadership transfer, or the leader cut off and another node elected;
//! - **answer delays**: answers on a link held between the election timeout and `rpc_timeout`,
//!   so the sender learns late what the target did long ago;
//! - **late delivery**: requests on a link delivered after their sender gave up on them;
//! - **crash points** ([`crashes`](crate::crashes)): a node frozen between two storage calls
//!   of one batch, then crashed there, also right after it installed a snapshot.
//!
//! Clock skew is not a fault of the nemesis: every node runs on its own clock for the whole
//! run (see `harness::ClockSkew`).

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::Duration;

use quorate::testing::{CrashPoint, StorageCall};
use quorate::{ChangeMembers, Raft};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bursts::{BurstAction, read_burst};
use crate::cluster::{CrashLoss, Shared, crash_node, lock, start_node};
use crate::crashes::{crash_after_install, crash_at_point, move_then_crash, stall_then_crash};

/// The shortest and longest answer delay: from the election timeout to `rpc_timeout` (the
/// simulation's config has 150 ms and 500 ms).
const ANSWER_DELAY_MS: std::ops::Range<u64> = 150..500;

/// The most faults in place at once before the nemesis heals them all.
const MAX_ACTIVE_FAULTS: u32 = 3;

/// One fault the nemesis injects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fault {
    Isolate(u64),
    Block(u64, u64),
    Delay(u64, u64, u64),
    Hang(u64),
    Crash {
        node: u64,
        loss: CrashLoss,
    },
    SlowDisk(u64, u64),
    SlowApply(u64, u64),
    StallDisk(u64),
    Snapshot(u64),
    Transfer {
        from: u64,
        to: u64,
    },
    RemoveVoter(u64),
    AddVoter(u64),
    /// `trigger().elect()` on a node, maybe the leader.
    Elect(u64),
    /// Answers to requests from `from` to `to` held for `ms`.
    AnswerDelay {
        from: u64,
        to: u64,
        ms: u64,
    },
    /// Requests from `from` to `to` delivered `ms` late, whether or not their sender waits.
    LateDelivery {
        from: u64,
        to: u64,
        ms: u64,
    },
    /// `reads` concurrent reads sent to `leader`, then `action` after `after_ms`.
    ReadBurst {
        leader: u64,
        reads: usize,
        action: BurstAction,
        after_ms: u64,
    },
    /// The node frozen at `point`, then crashed there (`tripped`: after which call; `None`:
    /// the point was not reached in time and the node crashed where it was).
    CrashPoint {
        node: u64,
        point: CrashPoint,
        loss: CrashLoss,
        tripped: Option<StorageCall>,
    },
    /// The node cut off until the leader snapshots and purges past it, then crashed right
    /// after it installs the snapshot (`calls` - 1 storage calls later).
    InstallCrash {
        node: u64,
        calls: u64,
        loss: CrashLoss,
        tripped: Option<StorageCall>,
    },
    /// The node's disk stops flushing for `ms` (its committed index runs ahead of its durable
    /// log), then the node crashes, losing what was not flushed.
    StallCrash {
        node: u64,
        ms: u64,
        loss: CrashLoss,
    },
    /// The leader `from` moved the group onto `to` alone (every other voter replaced), with
    /// `to`'s answers reaching it `answer_ms` late; `to` crashed once it held the final config
    /// (`moved`; else when the change did not get there in time), with the link between the
    /// two cut both ways if `cut`, and restarted.
    MoveCrash {
        from: u64,
        to: u64,
        answer_ms: u64,
        cut: bool,
        loss: CrashLoss,
        moved: bool,
    },
    Heal,
}

impl Fault {
    /// The fault's kind, for the soak report.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Isolate(_) => "isolate",
            Fault::Block(..) => "block",
            Fault::Delay(..) => "delay",
            Fault::Hang(_) => "hang",
            Fault::Crash { .. } => "crash",
            Fault::SlowDisk(..) => "slow-disk",
            Fault::SlowApply(..) => "slow-apply",
            Fault::StallDisk(_) => "stall-disk",
            Fault::Snapshot(_) => "snapshot",
            Fault::Transfer { .. } => "transfer",
            Fault::RemoveVoter(_) => "remove-voter",
            Fault::AddVoter(_) => "add-voter",
            Fault::Elect(_) => "elect",
            Fault::AnswerDelay { .. } => "answer-delay",
            Fault::LateDelivery { .. } => "late-delivery",
            Fault::ReadBurst { .. } => "read-burst",
            Fault::CrashPoint { tripped: Some(_), .. } => "crash-point",
            Fault::CrashPoint { tripped: None, .. } => "crash-point-missed",
            Fault::InstallCrash { tripped: Some(_), .. } => "crash-after-install",
            Fault::InstallCrash { tripped: None, .. } => "crash-after-install-missed",
            Fault::StallCrash { .. } => "stall-then-crash",
            Fault::MoveCrash { moved: true, .. } => "move-then-crash",
            Fault::MoveCrash { moved: false, .. } => "move-then-crash-missed",
            Fault::Heal => "heal",
        }
    }
}

/// What the nemesis keeps between faults.
pub struct Nemesis {
    pub c: Shared,
    pub rng: StdRng,
    pub ids: Vec<u64>,
    removed: BTreeSet<u64>,
    /// The reads of the bursts still running; the run waits for them.
    pub bursts: Vec<JoinHandle<()>>,
    /// Client ids of burst reads, counting up.
    pub next_burst_client: usize,
    /// Kinds of fault (as [`Fault::kind`] names them) not to inject, to find out which faults
    /// a violation needs.
    excluded: Vec<String>,
}

/// A fault and the virtual millisecond of the run it was injected at.
pub type TimedFault = (u64, Fault);

/// Inject random faults until `until`, healing between them, leaving out the kinds in
/// `excluded`; returns every fault injected.
pub async fn run_nemesis(c: Shared, seed: u64, until: Instant, excluded: Vec<String>) -> Vec<TimedFault> {
    let ids: Vec<u64> = lock(&c).nodes.keys().copied().collect();
    let mut n = Nemesis {
        c,
        rng: StdRng::seed_from_u64(seed),
        ids,
        removed: BTreeSet::new(),
        bursts: Vec::new(),
        next_burst_client: 1000,
        excluded,
    };
    let faults = run_schedule(&mut n, until, 100..600).await;
    for b in n.bursts.drain(..) {
        let _ = b.await;
    }
    faults
}

/// What [`run_schedule`] drives: a nemesis that draws and injects one fault at a time and
/// heals them all at once.
pub trait Injector {
    type Fault;
    fn rng(&mut self) -> &mut StdRng;
    /// Virtual milliseconds since the run started.
    fn millis(&self) -> u64;
    /// Draw a fault and inject it; returns it as it happened.
    fn next_fault(&mut self) -> impl std::future::Future<Output = Self::Fault>;
    /// Undo every fault that can be undone.
    fn heal(&mut self) -> impl std::future::Future<Output = ()>;
}

/// Until `until`: wait a pause drawn from `gap_ms`, inject a fault, let it last a while, then
/// heal; or leave it in place and add the next one to it (some bugs need two faults at once).
/// Returns every fault, at the millisecond it was injected.
pub async fn run_schedule<I: Injector>(n: &mut I, until: Instant, gap_ms: Range<u64>) -> Vec<(u64, I::Fault)> {
    let mut faults = Vec::new();
    let mut active = 0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(n.rng().random_range(gap_ms.clone()))).await;
        let at = n.millis();
        let fault = n.next_fault().await;
        faults.push((at, fault));
        active += 1;
        tokio::time::sleep(Duration::from_millis(n.rng().random_range(100..1500))).await;
        if active >= MAX_ACTIVE_FAULTS || n.rng().random_bool(0.6) {
            n.heal().await;
            active = 0;
        }
    }
    faults
}

impl Injector for Nemesis {
    type Fault = Fault;

    fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    fn millis(&self) -> u64 {
        lock(&self.c).clock.millis()
    }

    async fn next_fault(&mut self) -> Fault {
        Nemesis::next_fault(self).await
    }

    async fn heal(&mut self) {
        heal(&self.c).await
    }
}

impl Nemesis {
    /// The voters are now `voters`: every other node may be added back.
    pub fn set_voters(&mut self, voters: &BTreeSet<u64>) {
        self.removed = self.ids.iter().copied().filter(|id| !voters.contains(id)).collect();
    }

    pub fn excludes(&self, kind: &str) -> bool {
        self.excluded.iter().any(|k| k == kind)
    }

    pub fn random_node(&mut self) -> u64 {
        self.ids[self.rng.random_range(0..self.ids.len())]
    }

    pub fn raft_of(&self, id: u64) -> Option<Raft<quorate::testing::TypeConfig>> {
        lock(&self.c).nodes.get(&id).and_then(|n| n.raft.clone())
    }

    /// The known leader with probability `p`, else a random node.
    pub fn leader_or_random(&mut self, p: f64) -> u64 {
        let leader = lock(&self.c).known_leader();
        match leader {
            Some(l) if self.rng.random_bool(p) => l,
            _ => self.random_node(),
        }
    }

    /// What a crash loses: half the time every unflushed log write, else a random share.
    pub fn crash_loss(&mut self) -> CrashLoss {
        let keep_per_mille = if self.rng.random_bool(0.5) { 0 } else { self.rng.random_range(0..=1000) };
        CrashLoss { keep_per_mille }
    }

    /// Draw a fault and inject it; returns it as it happened.
    async fn next_fault(&mut self) -> Fault {
        let a = self.random_node();
        let b = self.random_node();
        let c = self.c.clone();
        let fault = match self.rng.random_range(0..24) {
            0 => Fault::Isolate(a),
            1 if a != b => Fault::Block(a, b),
            2 if a != b => {
                // Mostly short; sometimes up to the RPC timeout.
                let ms = if self.rng.random_bool(0.7) {
                    self.rng.random_range(1..100)
                } else {
                    self.rng.random_range(100..500)
                };
                Fault::Delay(a, b, ms)
            }
            3 => Fault::Hang(a),
            4 => Fault::Crash { node: a, loss: self.crash_loss() },
            5 => {
                let ms = self.rng.random_range(1..30);
                if a % 2 == 0 {
                    Fault::SlowApply(a, ms.min(20))
                } else if self.rng.random_bool(0.3) {
                    // Now and then an fsync that takes as long as an election timeout.
                    Fault::SlowDisk(a, ms * 7)
                } else {
                    Fault::SlowDisk(a, ms)
                }
            }
            6 => Fault::StallDisk(a),
            7 => Fault::Snapshot(a),
            8 if a != b => Fault::Transfer { from: a, to: b },
            9 if self.removed.is_empty() => Fault::RemoveVoter(a),
            10 if !self.removed.is_empty() => Fault::AddVoter(*self.removed.iter().next().unwrap_or(&a)),
            11 => Fault::Elect(self.leader_or_random(0.3)),
            12 | 13 => {
                let from = self.leader_or_random(0.6);
                let to = self.random_node();
                if from == to {
                    return Fault::Heal;
                }
                Fault::AnswerDelay { from, to, ms: self.rng.random_range(ANSWER_DELAY_MS) }
            }
            14 => {
                let from = self.leader_or_random(0.6);
                let to = self.random_node();
                if from == to {
                    return Fault::Heal;
                }
                let rpc_timeout = lock(&c).config.rpc_timeout.as_millis() as u64;
                Fault::LateDelivery { from, to, ms: self.rng.random_range(rpc_timeout..2 * rpc_timeout) }
            }
            15..=17 if !self.excludes("read-burst") => return read_burst(self).await,
            18 | 19 if !self.excludes("crash-point") => return crash_at_point(self).await,
            20 if !self.excludes("crash-after-install") => return crash_after_install(self).await,
            21 if !self.excludes("stall-then-crash") => return stall_then_crash(self).await,
            22 if !self.excludes("move-then-crash") => return move_then_crash(self).await,
            _ => Fault::Heal,
        };
        if self.excludes(fault.kind()) {
            return Fault::Heal;
        }
        self.apply(&fault).await;
        fault
    }

    async fn apply(&mut self, fault: &Fault) {
        let c = &self.c;
        match fault {
            Fault::Isolate(a) => lock(c).router.isolate(*a),
            Fault::Block(a, b) => lock(c).router.block(*a, *b),
            Fault::Delay(a, b, ms) => lock(c).router.set_delay(*a, *b, Duration::from_millis(*ms)),
            Fault::Hang(a) => lock(c).router.set_hang(*a, true),
            Fault::AnswerDelay { from, to, ms } => {
                lock(c).router.set_answer_delay(*from, *to, Duration::from_millis(*ms));
            }
            Fault::LateDelivery { from, to, ms } => {
                lock(c).router.set_late_delivery(*from, *to, Some(Duration::from_millis(*ms)));
            }
            Fault::Crash { node, loss } => {
                crash_node(c, *node, *loss).await;
                // Down for a moment, then back from its storage.
                tokio::time::sleep(Duration::from_millis(50)).await;
                start_node(c, *node).await;
            }
            Fault::SlowDisk(a, ms) => {
                if let Some(n) = lock(c).nodes.get(a) {
                    n.log.set_flush_delay(Duration::from_millis(*ms));
                }
            }
            Fault::SlowApply(a, ms) => {
                if let Some(n) = lock(c).nodes.get(a) {
                    n.sm.set_apply_delay(Duration::from_millis(*ms));
                }
            }
            Fault::StallDisk(a) => {
                if let Some(n) = lock(c).nodes.get(a) {
                    n.log.set_flush_stalled(true);
                }
            }
            Fault::Snapshot(a) => {
                if let Some(r) = self.raft_of(*a) {
                    let _ = r.trigger().snapshot().await;
                }
            }
            Fault::Transfer { from, to } => {
                if let Some(r) = self.raft_of(*from) {
                    let to = *to;
                    tokio::spawn(async move {
                        let _ = r.trigger().transfer_leader(to).await;
                    });
                }
            }
            Fault::Elect(a) => {
                if let Some(r) = self.raft_of(*a) {
                    let _ = r.trigger().elect().await;
                }
            }
            Fault::RemoveVoter(a) | Fault::AddVoter(a) => self.change_membership(fault, *a).await,
            Fault::ReadBurst { .. }
            | Fault::CrashPoint { .. }
            | Fault::InstallCrash { .. }
            | Fault::StallCrash { .. }
            | Fault::MoveCrash { .. }
            | Fault::Heal => {}
        }
    }

    async fn change_membership(&mut self, fault: &Fault, a: u64) {
        let leader = lock(&self.c).known_leader();
        let Some(r) = leader.and_then(|l| self.raft_of(l)) else { return };
        let adding = matches!(fault, Fault::AddVoter(_));
        let change =
            if adding { ChangeMembers::AddVoterIds([a].into()) } else { ChangeMembers::RemoveVoters([a].into()) };
        // Bounded wait: the change may be cut short by other faults.
        let done = tokio::time::timeout(Duration::from_secs(2), r.change_membership(change, true)).await;
        if let Ok(Ok(resp)) = done {
            if resp.membership.is_voter(&a) {
                self.removed.remove(&a);
            } else if !adding {
                self.removed.insert(a);
            }
        }
    }
}

/// Undo every network and disk fault.
pub async fn heal(c: &Shared) {
    let g = lock(c);
    let ids: Vec<u64> = g.nodes.keys().copied().collect();
    for a in &ids {
        g.router.restore(*a);
        g.router.set_hang(*a, false);
        for b in &ids {
            g.router.unblock(*a, *b);
            g.router.set_delay(*a, *b, Duration::ZERO);
            g.router.set_answer_delay(*a, *b, Duration::ZERO);
            g.router.set_late_delivery(*a, *b, None);
        }
        if let Some(n) = g.nodes.get(a) {
            n.log.set_flush_stalled(false);
            n.log.set_flush_delay(Duration::ZERO);
            n.sm.set_apply_delay(Duration::ZERO);
        }
    }
}
