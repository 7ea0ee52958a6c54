//! Groups created and removed while the multi-group run goes on.
//!
//! A seed plans one to four lifecycle events at the start, from a random stream of their own
//! (so the nemesis, the clients and the network draw what they drew before this existed, up to
//! the first event): a **creation** starts a group under a fresh id on every running host,
//! initializes it through a running node and drives client bursts on it until the run ends; a
//! **removal** checks a live group's invariants, stops its clients, and removes it from every
//! running host. Its history up to then is checked with the others'.
//!
//! The multi-group nemesis runs an event once it is due, before its next fault, and sometimes
//! early, while a host it crashed is down; and an event crashes a host itself, just before
//! it, two times in five (restarting it up to 1.5 s later). A node down at a creation starts the group when it
//! restarts, as a node added to a group would. A node down at a removal missed it, and the guide
//! (guide/src/multi.md, "A group id names one group for good") leaves to the application what
//! it does then: it says only that such a node "still has its log (and starts the old group
//! again from it)" and that ended ids must never be reused. So a removal draws which
//! application it plays: one that keeps a tombstone of ended groups and does not start them
//! again, or one that restarts the old group from its log, a straggler that campaigns alone
//! for as long as it runs. Ids are never reused, so neither must disturb any other group, which
//! the other groups' checks see.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorate::BasicNode;
use quorate::multi::{GroupId, HostError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clients::Op;
use crate::cluster::{CrashLoss, begin_start, lock, started};
use crate::groups::{CHECK_EVERY, Ended, World, drive_bursts, new_group};
use crate::groups_nemesis::HostFault;
use crate::harness::check_periodically;

/// What a lifecycle event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LifeEvent {
    Create,
    Remove,
}

impl LifeEvent {
    /// The kind its fault is reported as (and left out by `SIM_EXCLUDE_FAULTS`).
    fn kind(self) -> &'static str {
        match self {
            LifeEvent::Create => "create-group",
            LifeEvent::Remove => "remove-group",
        }
    }
}

/// The client drivers of the groups created at run time: each returns its group's operations.
pub type CreatedDrivers = Vec<(usize, JoinHandle<Vec<Op>>)>;

/// The lifecycle schedule of one run, run by the multi-group nemesis.
pub struct GroupLife {
    rng: StdRng,
    /// Events not run yet, the soonest first, each with the instant it is due.
    plan: VecDeque<(Instant, LifeEvent)>,
    /// Every event run, at the millisecond it ran, as the fault it reports.
    pub log: Vec<(u64, HostFault)>,
    pub drivers: CreatedDrivers,
    pub checkers: Vec<JoinHandle<()>>,
    until: Instant,
}

impl GroupLife {
    /// Plan one to four events between 10 % and 80 % of the run, leaving out the kinds in
    /// `excluded` (after drawing them, so the rest of the stream stays the same).
    pub fn new(seed: u64, until: Instant, excluded: &[String]) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let now = Instant::now();
        let run = until.saturating_duration_since(now);
        let mut dues: Vec<(Instant, LifeEvent)> = (0..rng.random_range(1..=4))
            .map(|_| {
                let at = run.mul_f64(rng.random_range(0.1..0.8));
                let event = if rng.random_bool(0.5) { LifeEvent::Create } else { LifeEvent::Remove };
                (now + at, event)
            })
            .collect();
        dues.sort_by_key(|(at, _)| *at);
        dues.retain(|(_, e)| !excluded.iter().any(|k| k == e.kind()));
        Self { rng, plan: dues.into(), log: Vec::new(), drivers: Vec::new(), checkers: Vec::new(), until }
    }

    /// Run every event that is due.
    pub async fn run_due(&mut self, world: &mut World, millis: u64) {
        while self.plan.front().is_some_and(|(at, _)| *at <= Instant::now()) {
            let Some((_, event)) = self.plan.pop_front() else { break };
            self.run(world, event, millis).await;
        }
    }

    /// Maybe (one time in two) run the next event now, though it is not due yet: the nemesis
    /// calls this while a host is down.
    pub async fn maybe_run_early(&mut self, world: &mut World, millis: u64) {
        if self.plan.is_empty() || !self.rng.random_bool(0.5) {
            return;
        }
        if let Some((_, event)) = self.plan.pop_front() {
            self.run(world, event, millis).await;
        }
    }

    /// Run `event`; two times in five with every host up, one host crashed just before it and
    /// restarted a while after, so that the node misses the event.
    async fn run(&mut self, world: &mut World, event: LifeEvent, millis: u64) {
        let node = world.ids[self.rng.random_range(0..world.ids.len())];
        let loss = CrashLoss { keep_per_mille: self.rng.random_range(0..=1000) };
        let down_ms = self.rng.random_range(20..1500);
        let crash = self.rng.random_bool(0.4) && world.hosts.len() == world.ids.len();
        if crash {
            world.crash_host(node, loss).await;
            self.log.push((millis, HostFault::Crash { node, loss, down_ms }));
        }
        let fault = match event {
            LifeEvent::Create => self.create(world).await,
            LifeEvent::Remove => self.remove(world).await,
        };
        self.log.push((millis, fault));
        if crash {
            tokio::time::sleep(Duration::from_millis(down_ms)).await;
            world.start_host(node).await;
        }
    }

    /// Create a group under the next unused id on every running host, initialize it and drive
    /// clients on it.
    async fn create(&mut self, world: &mut World) -> HostFault {
        let id = world.groups.len();
        let c = new_group(world.seed, id as u64, &world.ids, &mut self.rng, world.sm_persistence);
        world.groups.push(c.clone());
        for (node, host) in &world.hosts {
            let Some(start) = begin_start(&c, *node) else { continue };
            let raft = host.create_group(id as GroupId, start.config, start.log, start.sm).await;
            started(&c, *node, start.incarnation, raft);
        }
        let members: std::collections::BTreeMap<u64, BasicNode> =
            world.ids.iter().map(|id| (*id, BasicNode::new(format!("n{id}")))).collect();
        // Through the first running node from `id % n` on, so leadership spreads out.
        let n = world.ids.len();
        let first = (0..n).map(|i| world.ids[(id + i) % n]).find_map(|node| lock(&c).nodes[&node].raft.clone());
        if let Some(raft) = first {
            if let Err(e) = raft.initialize(members).await {
                lock(&c).record_violation(format!("initialize of a created group failed: {e}"));
            }
        }
        let driver_seed = self.rng.random();
        let until = self.until;
        let driver = tokio::spawn(async move {
            let counters = Arc::new(Mutex::new(vec![0usize]));
            drive_bursts(vec![c], driver_seed, until, counters).await.into_iter().flat_map(|(_, ops)| ops).collect()
        });
        self.drivers.push((id, driver));
        self.checkers.push(tokio::spawn(check_periodically(world.groups[id].clone(), until, CHECK_EVERY)));
        HostFault::CreateGroup { group: id as GroupId, down: down_nodes(world) }
    }

    /// Remove a live group (one of at least two) from every running host.
    async fn remove(&mut self, world: &mut World) -> HostFault {
        let live: Vec<usize> = (0..world.groups.len()).filter(|g| !world.ended.contains_key(g)).collect();
        if live.len() < 2 {
            return HostFault::Heal;
        }
        let group = live[self.rng.random_range(0..live.len())];
        let stragglers = self.rng.random_bool(0.5);
        let c = world.groups[group].clone();
        {
            let mut g = lock(&c);
            // Its last look while it runs: after this the removed replicas are no longer seen.
            if let Err(v) = g.check() {
                g.record_violation(v);
            }
            g.ended = true;
            // Not running from now on, so that the replicas' shutdown is not taken for a stop
            // on their own.
            for n in g.nodes.values_mut() {
                n.raft = None;
            }
        }
        for (node, host) in &world.hosts {
            match host.remove_group(group as GroupId).await {
                // A replica that could not start was recorded then.
                Ok(()) | Err(HostError::NoSuchGroup(_)) => {}
                Err(e) => lock(&c).record_violation(format!("node {node}: remove_group failed: {e}")),
            }
        }
        let down = down_nodes(world);
        world.ended.insert(group, Ended { missed_by: down.iter().copied().collect(), stragglers });
        HostFault::RemoveGroup { group: group as GroupId, down, stragglers }
    }
}

/// The nodes whose host is down now.
fn down_nodes(world: &World) -> Vec<u64> {
    let running: BTreeSet<u64> = world.hosts.keys().copied().collect();
    world.ids.iter().copied().filter(|id| !running.contains(id)).collect()
}
