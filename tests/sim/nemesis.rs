//! The nemesis: seeded random faults, each healed after a while.

use std::collections::BTreeSet;
use std::time::Duration;

use quorate::ChangeMembers;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::cluster::{Shared, crash_node, lock, start_node};

/// One fault the nemesis injects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Fault {
    Isolate(u64),
    Block(u64, u64),
    Delay(u64, u64, u64),
    Hang(u64),
    Crash { node: u64, volatile: bool },
    SlowDisk(u64, u64),
    SlowApply(u64, u64),
    StallDisk(u64),
    Snapshot(u64),
    Transfer { from: u64, to: u64 },
    RemoveVoter(u64),
    AddVoter(u64),
    Heal,
}

/// Inject random faults until `until`, healing between them; returns every fault injected.
pub async fn run_nemesis(c: Shared, seed: u64, until: Instant) -> Vec<Fault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut faults = Vec::new();
    let ids: Vec<u64> = lock(&c).nodes.keys().copied().collect();
    let mut removed: BTreeSet<u64> = BTreeSet::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        let a = ids[rng.random_range(0..ids.len())];
        let b = ids[rng.random_range(0..ids.len())];
        let fault = match rng.random_range(0..12) {
            0 => Fault::Isolate(a),
            1 if a != b => Fault::Block(a, b),
            2 if a != b => Fault::Delay(a, b, rng.random_range(1..100)),
            3 => Fault::Hang(a),
            4 | 5 => Fault::Crash { node: a, volatile: rng.random_bool(0.5) },
            6 => {
                // One draw, as before slow apply existed, so older seeds keep their schedule.
                let ms = rng.random_range(1..30);
                if a % 2 == 0 { Fault::SlowApply(a, ms.min(20)) } else { Fault::SlowDisk(a, ms) }
            }
            7 => Fault::StallDisk(a),
            8 => Fault::Snapshot(a),
            9 if a != b => Fault::Transfer { from: a, to: b },
            10 if ids.len() >= 5 && removed.is_empty() => Fault::RemoveVoter(a),
            11 if !removed.is_empty() => Fault::AddVoter(*removed.iter().next().unwrap_or(&a)),
            _ => Fault::Heal,
        };
        apply(&c, &fault, &mut removed).await;
        faults.push(fault);
        // Let the fault last a while, then heal the network and disks (not membership).
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
        heal(&c).await;
    }
    faults
}

async fn apply(c: &Shared, fault: &Fault, removed: &mut BTreeSet<u64>) {
    let raft_of = |id: u64| lock(c).nodes.get(&id).and_then(|n| n.raft.clone());
    match fault {
        Fault::Isolate(a) => lock(c).router.isolate(*a),
        Fault::Block(a, b) => lock(c).router.block(*a, *b),
        Fault::Delay(a, b, ms) => lock(c).router.set_delay(*a, *b, Duration::from_millis(*ms)),
        Fault::Hang(a) => lock(c).router.set_hang(*a, true),
        Fault::Crash { node, volatile } => {
            crash_node(c, *node, *volatile).await;
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
            if let Some(r) = raft_of(*a) {
                let _ = r.trigger().snapshot().await;
            }
        }
        Fault::Transfer { from, to } => {
            if let Some(r) = raft_of(*from) {
                let to = *to;
                tokio::spawn(async move {
                    let _ = r.trigger().transfer_leader(to).await;
                });
            }
        }
        Fault::RemoveVoter(a) | Fault::AddVoter(a) => {
            let leader = lock(c).known_leader();
            if let Some(r) = leader.and_then(raft_of) {
                let change = if matches!(fault, Fault::RemoveVoter(_)) {
                    ChangeMembers::RemoveVoters([*a].into())
                } else {
                    ChangeMembers::AddVoterIds([*a].into())
                };
                let adding = matches!(fault, Fault::AddVoter(_));
                let a = *a;
                // Bounded wait: the change may be cut short by other faults.
                let done = tokio::time::timeout(Duration::from_secs(2), r.change_membership(change, true)).await;
                if let Ok(Ok(resp)) = done {
                    if resp.membership.is_voter(&a) {
                        removed.remove(&a);
                    } else if !adding {
                        removed.insert(a);
                    }
                }
            }
        }
        Fault::Heal => {}
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
        }
        if let Some(n) = g.nodes.get(a) {
            n.log.set_flush_stalled(false);
            n.log.set_flush_delay(Duration::ZERO);
            n.sm.set_apply_delay(Duration::ZERO);
        }
    }
}
