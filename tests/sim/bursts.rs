//! Read bursts: many concurrent reads pending on a leader while leadership moves.
//!
//! A lease or a ReadIndex is only as good as what the leader knows when it answers. The
//! dangerous moment is a change of leadership while reads wait: a forced election (which
//! bypasses stickiness), a transfer (after which the old leader must stop serving from its
//! lease), or a leader cut off in the very instant the reads arrive. A burst sends reads by
//! every path, lets them reach the leader, then does one of those, in the same instant or a
//! few ms later; more reads follow in the same instant right after, in the instant a write at
//! the new leader returns, and a few ms later, all at the node that led. The reads (and the
//! write) go into the history like any client's.

use std::time::Duration;

use rand::Rng;

use quorate::testing::TypeConfig;
use quorate::{Raft, ServerState};
use tokio::time::Instant;

use crate::clients::{OpKind, ReadPath, Target, pick_any, read, write};
use crate::cluster::{Shared, lock};
use crate::nemesis::{Fault, Nemesis};

/// What happens to leadership while the burst's reads are pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BurstAction {
    /// `trigger().elect()` on this node (maybe the leader itself).
    Elect(u64),
    /// The leader transfers leadership to this node.
    Transfer(u64),
    /// The leader is cut off, and this node is made to campaign.
    IsolateAndElect(u64),
    /// The leader is cut off; the others elect a new one when their timers say so. What a
    /// lease must survive: the old leader may serve from it only until a new leader can
    /// have been elected, by every clock within the drift bound.
    Isolate,
}

/// Send a burst of reads to a node that leads (or believes it does), then move leadership.
pub async fn read_burst(n: &mut Nemesis) -> Fault {
    let leader = {
        let g = lock(&n.c);
        let declared = g.self_declared_leaders();
        if declared.is_empty() { g.known_leader() } else { Some(declared[n.rng.random_range(0..declared.len())]) }
    };
    let Some(leader) = leader else { return Fault::Heal };
    let target = {
        let g = lock(&n.c);
        g.nodes.get(&leader).and_then(|node| Some((leader, node.raft.clone()?, node.sm.clone())))
    };
    let Some(target) = target else { return Fault::Heal };

    // Reads pending when leadership moves, reads arriving in the same instant right after,
    // and reads a little later, all at the node that led.
    let before = n.rng.random_range(2..10);
    spawn_reads(n, &target, before);
    // Let the reads reach the leader's queue before leadership moves.
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
    let other = {
        let others: Vec<u64> = n.ids.iter().copied().filter(|id| *id != leader).collect();
        others[n.rng.random_range(0..others.len())]
    };
    let mut action = match n.rng.random_range(0..5) {
        0 => BurstAction::Elect(leader),
        1 => BurstAction::Elect(other),
        2 => BurstAction::Transfer(other),
        3 => BurstAction::IsolateAndElect(other),
        _ => BurstAction::Isolate,
    };
    // Leaving out forced elections or transfers leaves the leader cut off instead.
    let forced = matches!(action, BurstAction::Elect(_) | BurstAction::IsolateAndElect(_));
    if (forced && n.excludes("elect")) || (matches!(action, BurstAction::Transfer(_)) && n.excludes("transfer")) {
        action = BurstAction::Isolate;
    }
    let after_ms = if n.rng.random_bool(0.5) { 0 } else { n.rng.random_range(1..20) };
    if after_ms > 0 {
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
    }
    match action {
        BurstAction::Elect(id) => {
            if let Some(r) = n.raft_of(id) {
                let _ = r.trigger().elect().await;
            }
        }
        BurstAction::Transfer(to) => {
            if let Some(r) = n.raft_of(leader) {
                tokio::spawn(async move {
                    let _ = r.trigger().transfer_leader(to).await;
                });
            }
        }
        BurstAction::IsolateAndElect(id) => {
            lock(&n.c).router.isolate(leader);
            if let Some(r) = n.raft_of(id) {
                let _ = r.trigger().elect().await;
            }
        }
        BurstAction::Isolate => lock(&n.c).router.isolate(leader),
    }
    // Let whatever can happen within this instant happen (over instant links a forced
    // election completes in it), then read at the node that led.
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
    let right_after = n.rng.random_range(0..6);
    spawn_reads(n, &target, right_after);
    let after_write = n.rng.random_range(1..6);
    write_then_read(n, &target, after_write);
    tokio::time::sleep(Duration::from_millis(n.rng.random_range(1..30))).await;
    let later = n.rng.random_range(0..6);
    spawn_reads(n, &target, later);
    Fault::ReadBurst { leader, reads: before + right_after + after_write + later, action, after_ms }
}

/// How long a burst waits for a leader in a newer term than the one it read from: long
/// enough for an election after the leader was cut off.
const NEW_LEADER_WAIT: Duration = Duration::from_secs(1);

/// Write at the leader of the newest term and, in the instant the write returns, read at the
/// node that led before: a read that starts after a write completed must see it, which is
/// where a deposed leader's stale answer shows.
fn write_then_read(n: &mut Nemesis, old: &Target, reads: usize) {
    let key = format!("k{}", n.rng.random_range(0..3));
    let plans: Vec<(ReadPath, String, Option<Target>)> = (0..reads)
        .map(|_| {
            let path = ReadPath::random(&mut n.rng);
            (path, format!("k{}", n.rng.random_range(0..3)), pick_any(&n.c, &mut n.rng))
        })
        .collect();
    let client = n.next_burst_client;
    n.next_burst_client += 1 + reads;
    let (c, old) = (n.c.clone(), old.clone());
    n.bursts.push(tokio::spawn(async move {
        let old_term = old.1.metrics().borrow().current_term;
        let Some(newest) = wait_for_newer_leader(&c, old_term).await else { return };
        let value = format!("b{client}");
        let Some(op) = write(&c, client, key, OpKind::Put(value), &newest).await else { return };
        let completed = op.output.is_some();
        lock(&c).burst_history.push(op);
        if !completed {
            return;
        }
        let reads: Vec<_> = plans
            .into_iter()
            .zip(client + 1..)
            .map(|((path, key, follower), client)| {
                let (c, old) = (c.clone(), old.clone());
                tokio::spawn(async move { read(&c, client, key, path, old, follower).await })
            })
            .collect();
        for r in reads {
            if let Ok(Some(op)) = r.await {
                lock(&c).burst_history.push(op);
            }
        }
    }));
}

/// The running node that leads in the highest term, once that term is above `term`.
async fn wait_for_newer_leader(c: &Shared, term: u64) -> Option<Raft<TypeConfig>> {
    let deadline = Instant::now() + NEW_LEADER_WAIT;
    while Instant::now() < deadline {
        let newest = lock(c)
            .running()
            .into_iter()
            .filter(|(_, r)| r.metrics().borrow().state == ServerState::Leader)
            .max_by_key(|(_, r)| r.metrics().borrow().current_term)
            .map(|(_, r)| r);
        if let Some(r) = newest.filter(|r| r.metrics().borrow().current_term > term) {
            return Some(r);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// Spawn `count` reads of random keys by random paths at `target`; they go into the history.
fn spawn_reads(n: &mut Nemesis, target: &Target, count: usize) {
    for _ in 0..count {
        let path = ReadPath::random(&mut n.rng);
        let key = format!("k{}", n.rng.random_range(0..3));
        let follower = pick_any(&n.c, &mut n.rng);
        let (c, target) = (n.c.clone(), target.clone());
        let client = n.next_burst_client;
        n.next_burst_client += 1;
        n.bursts.push(tokio::spawn(async move {
            if let Some(op) = read(&c, client, key, path, target, follower).await {
                lock(&c).burst_history.push(op);
            }
        }));
    }
}
