//! The multi-group nemesis: node-level faults that hit every group of a node at once, as a
//! machine or a link fails, and group-level faults on one group at a time.
//!
//! Node-level: `kill -9` of a whole host (every group restarts from its storage, losing what
//! was not durable), a node cut off, a link cut one way, a partition, a link's requests or
//! answers held. Group-level: a forced election (`trigger().elect()`, maybe on the leader), a
//! leadership transfer, a snapshot. Between faults the nemesis pauses long enough for idle
//! groups to quiesce, so that every fault also meets quiesced groups.
//!
//! It also runs the groups' lifecycle schedule ([`GroupLife`]): groups created and removed
//! while the run goes on, each event when it is due, or early while a crashed host is down.

use std::collections::BTreeSet;
use std::time::Duration;

use quorate::Raft;
use quorate::multi::GroupId;
use quorate::testing::TypeConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{CrashLoss, lock};
use crate::group_life::{CreatedDrivers, GroupLife};
use crate::groups::World;
use crate::nemesis::{Injector, run_schedule};

/// The answer delays drawn: from the election timeout to `rpc_timeout` (150 ms and 500 ms).
const ANSWER_DELAY_MS: std::ops::Range<u64> = 150..500;

/// The pause between two faults: long enough, often, for idle groups to quiesce.
const GAP_MS: std::ops::Range<u64> = 100..1200;

/// One fault of the multi-group nemesis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostFault {
    /// Every link to and from the node cut.
    Isolate(u64),
    /// Messages from the first node to the second cut.
    Block(u64, u64),
    /// Every link between these nodes and the others cut, both ways.
    Partition(BTreeSet<u64>),
    /// Messages on the link (requests and beats) arrive `ms` late.
    Delay {
        from: u64,
        to: u64,
        ms: u64,
    },
    /// Answers to requests on the link reach the sender `ms` late.
    AnswerDelay {
        from: u64,
        to: u64,
        ms: u64,
    },
    /// The whole host killed, every group losing what `loss` says, and restarted `down_ms`
    /// later.
    Crash {
        node: u64,
        loss: CrashLoss,
        down_ms: u64,
    },
    /// `trigger().elect()` on the node's replica of the group.
    Elect {
        group: GroupId,
        node: u64,
    },
    /// The group's leader asked to hand leadership to `to`.
    Transfer {
        group: GroupId,
        from: u64,
        to: u64,
    },
    /// The node's replica of the group builds a snapshot.
    Snapshot {
        group: GroupId,
        node: u64,
    },
    /// The group created on every running host and initialized; the nodes `down` then start
    /// it when they restart.
    CreateGroup {
        group: GroupId,
        down: Vec<u64>,
    },
    /// The group removed from every running host: ended. The nodes `down` then missed it;
    /// with `stragglers` they start it again from their logs when they restart.
    RemoveGroup {
        group: GroupId,
        down: Vec<u64>,
        stragglers: bool,
    },
    Heal,
}

impl HostFault {
    /// The fault's kind, for the report and `SIM_EXCLUDE_FAULTS`.
    pub fn kind(&self) -> &'static str {
        match self {
            HostFault::Isolate(_) => "isolate",
            HostFault::Block(..) => "block",
            HostFault::Partition(_) => "partition",
            HostFault::Delay { .. } => "delay",
            HostFault::AnswerDelay { .. } => "answer-delay",
            HostFault::Crash { .. } => "crash-host",
            HostFault::Elect { .. } => "elect",
            HostFault::Transfer { .. } => "transfer",
            HostFault::Snapshot { .. } => "snapshot",
            HostFault::CreateGroup { .. } => "create-group",
            HostFault::RemoveGroup { .. } => "remove-group",
            HostFault::Heal => "heal",
        }
    }
}

/// The multi-group nemesis's state between faults.
struct HostNemesis {
    world: World,
    rng: StdRng,
    excluded: Vec<String>,
    life: GroupLife,
}

/// What the nemesis hands back when the run ends.
pub struct NemesisEnd {
    /// The world, to heal and check.
    pub world: World,
    /// Every fault injected and lifecycle event run, in order.
    pub faults: Vec<(u64, HostFault)>,
    /// The client drivers and checkers of the groups created at run time.
    pub created_drivers: CreatedDrivers,
    pub created_checkers: Vec<JoinHandle<()>>,
}

/// The lifecycle schedule's random stream, apart from the faults'.
const LIFE_STREAM: u64 = 0x6c69_6665;

/// Inject faults and run the lifecycle schedule until `until`, leaving out the kinds in
/// `excluded`.
pub async fn run_host_nemesis(world: World, seed: u64, until: Instant, excluded: Vec<String>) -> NemesisEnd {
    let life = GroupLife::new(seed ^ LIFE_STREAM, until, &excluded);
    let mut n = HostNemesis { world, rng: StdRng::seed_from_u64(seed), excluded, life };
    let mut faults = run_schedule(&mut n, until, GAP_MS).await;
    // Both lists are in time order; merged, a fault and an event of the same millisecond
    // are listed fault first, whichever ran first.
    faults.append(&mut n.life.log);
    faults.sort_by_key(|(at, _)| *at);
    NemesisEnd {
        world: n.world,
        faults,
        created_drivers: std::mem::take(&mut n.life.drivers),
        created_checkers: std::mem::take(&mut n.life.checkers),
    }
}

impl HostNemesis {
    fn random_node(&mut self) -> u64 {
        self.world.ids[self.rng.random_range(0..self.world.ids.len())]
    }

    fn random_group(&mut self) -> GroupId {
        self.rng.random_range(0..self.world.groups.len() as GroupId)
    }

    fn raft_of(&self, group: GroupId, node: u64) -> Option<Raft<TypeConfig>> {
        lock(&self.world.groups[group as usize]).nodes.get(&node).and_then(|n| n.raft.clone())
    }

    fn known_leader(&self, group: GroupId) -> Option<u64> {
        lock(&self.world.groups[group as usize]).known_leader()
    }

    /// Draw a fault; `Heal` (nothing) if the draw does not fit.
    fn draw(&mut self) -> HostFault {
        let (a, b) = (self.random_node(), self.random_node());
        let group = self.random_group();
        match self.rng.random_range(0..12) {
            0 => HostFault::Isolate(a),
            1 if a != b => HostFault::Block(a, b),
            2 => {
                let side: BTreeSet<u64> =
                    self.world.ids.iter().copied().filter(|_| self.rng.random_bool(0.4)).collect();
                if side.is_empty() || side.len() == self.world.ids.len() {
                    return HostFault::Heal;
                }
                HostFault::Partition(side)
            }
            3 if a != b => HostFault::Delay { from: a, to: b, ms: self.rng.random_range(1..200) },
            4 if a != b => HostFault::AnswerDelay { from: a, to: b, ms: self.rng.random_range(ANSWER_DELAY_MS) },
            5 | 6 => {
                let keep_per_mille = if self.rng.random_bool(0.5) { 0 } else { self.rng.random_range(0..=1000) };
                let down_ms = self.rng.random_range(20..1500);
                HostFault::Crash { node: a, loss: CrashLoss { keep_per_mille }, down_ms }
            }
            7 | 8 => {
                let node = match self.known_leader(group) {
                    Some(l) if self.rng.random_bool(0.3) => l,
                    _ => a,
                };
                HostFault::Elect { group, node }
            }
            9 => match self.known_leader(group) {
                Some(from) if from != a => HostFault::Transfer { group, from, to: a },
                _ => HostFault::Heal,
            },
            10 => HostFault::Snapshot { group, node: a },
            _ => HostFault::Heal,
        }
    }

    async fn apply(&mut self, fault: &HostFault) {
        let router = self.world.router.clone();
        match fault {
            HostFault::Isolate(a) => router.isolate(*a),
            HostFault::Block(a, b) => router.block(*a, *b),
            HostFault::Partition(side) => {
                for a in side {
                    for b in self.world.ids.iter().filter(|b| !side.contains(b)) {
                        router.block(*a, *b);
                        router.block(*b, *a);
                    }
                }
            }
            HostFault::Delay { from, to, ms } => router.set_delay(*from, *to, Duration::from_millis(*ms)),
            HostFault::AnswerDelay { from, to, ms } => {
                router.set_answer_delay(*from, *to, Duration::from_millis(*ms));
            }
            HostFault::Crash { node, loss, down_ms } => {
                self.world.crash_host(*node, *loss).await;
                // Halfway down, maybe a group is created or removed that the node will miss.
                let half = Duration::from_millis(*down_ms / 2);
                tokio::time::sleep(half).await;
                let millis = self.millis();
                self.life.maybe_run_early(&mut self.world, millis).await;
                tokio::time::sleep(Duration::from_millis(*down_ms) - half).await;
                self.world.start_host(*node).await;
            }
            HostFault::Elect { group, node } => {
                if let Some(r) = self.raft_of(*group, *node) {
                    let _ = r.trigger().elect().await;
                }
            }
            HostFault::Transfer { group, from, to } => {
                if let Some(r) = self.raft_of(*group, *from) {
                    let to = *to;
                    tokio::spawn(async move {
                        let _ = r.trigger().transfer_leader(to).await;
                    });
                }
            }
            HostFault::Snapshot { group, node } => {
                if let Some(r) = self.raft_of(*group, *node) {
                    let _ = r.trigger().snapshot().await;
                }
            }
            // Run by the lifecycle schedule, never drawn here.
            HostFault::CreateGroup { .. } | HostFault::RemoveGroup { .. } | HostFault::Heal => {}
        }
    }
}

impl Injector for HostNemesis {
    type Fault = HostFault;

    fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    fn millis(&self) -> u64 {
        self.world.groups.first().map_or(0, |c| lock(c).clock.millis())
    }

    async fn next_fault(&mut self) -> HostFault {
        let millis = self.millis();
        self.life.run_due(&mut self.world, millis).await;
        let fault = self.draw();
        if self.excluded.iter().any(|k| k == fault.kind()) {
            return HostFault::Heal;
        }
        self.apply(&fault).await;
        fault
    }

    async fn heal(&mut self) {
        self.world.heal_network();
    }
}
