//! Crash points: crash a node between two storage calls of one batch.
//!
//! A node's crash switch (shared by its log store and state machine) is armed to freeze the
//! node right after its n-th next mutating storage call; once it froze, the node is crashed
//! there (its stores reopened, losing what the storage contract lets a crash lose) and
//! restarted. `crash_after_install` sets up a snapshot install first: the node is cut off
//! until the leader has snapshotted and purged past it, so that it must take a snapshot (and,
//! if it led before, truncate the tail it wrote alone), and freezes right after installing.

use std::time::Duration;

use quorate::testing::{CrashPoint, StorageCall};
use rand::Rng;
use tokio::time::timeout;

use crate::cluster::{CrashLoss, crash_node, lock, start_node};
use crate::nemesis::{Fault, Nemesis};

/// How long a crash point may take to be reached before the node is crashed anyway.
const REACH_POINT: Duration = Duration::from_millis(1500);
/// How long an isolated node may take to receive and install the leader's snapshot.
const REACH_INSTALL: Duration = Duration::from_secs(3);

/// The kinds of call a crash point may count from; `None` (any call) most often.
const COUNT_FROM: [Option<StorageCall>; 8] = [
    None,
    None,
    None,
    Some(StorageCall::SaveVote),
    Some(StorageCall::Truncate),
    Some(StorageCall::Append),
    Some(StorageCall::Apply),
    Some(StorageCall::Purge),
];

/// Freeze a node (often the leader) at a random crash point, crash it there and restart it.
pub async fn crash_at_point(n: &mut Nemesis) -> Fault {
    let node = n.leader_or_random(0.5);
    let point =
        CrashPoint { from: COUNT_FROM[n.rng.random_range(0..COUNT_FROM.len())], calls: n.rng.random_range(1..=8) };
    let loss = n.crash_loss();
    let switch = lock(&n.c).nodes[&node].crash.clone();
    switch.arm(point);
    let tripped = timeout(REACH_POINT, switch.wait_tripped()).await.ok();
    switch.disarm();
    crash_node(&n.c, node, loss).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    start_node(&n.c, node).await;
    Fault::CrashPoint { node, point, loss, tripped }
}

/// Make a node install a snapshot, crash it right after (or a few calls after) the install,
/// and restart it.
pub async fn crash_after_install(n: &mut Nemesis) -> Fault {
    let node = n.leader_or_random(0.5);
    let calls = n.rng.random_range(1..=3);
    let loss = n.crash_loss();
    let cut_off = Duration::from_millis(n.rng.random_range(300..1500));

    // Cut off, the node falls behind while the others elect a leader and write on.
    lock(&n.c).router.isolate(node);
    tokio::time::sleep(cut_off).await;
    let leader = {
        let g = lock(&n.c);
        g.running()
            .iter()
            .filter(|(id, _)| *id != node)
            .filter_map(|(_, r)| r.metrics().borrow().current_leader)
            .find(|l| *l != node && g.nodes.get(l).is_some_and(|x| x.raft.is_some()))
    };
    if let Some(raft) = leader.and_then(|l| n.raft_of(l)) {
        // Snapshot what is applied and purge the log behind it, so the node needs the snapshot.
        let before = raft.metrics().borrow().snapshot;
        if raft.trigger().snapshot().await.is_ok() {
            let built = raft.wait(Some(Duration::from_millis(500))).metrics(|m| m.snapshot > before, "snapshot").await;
            if let Ok(m) = built {
                if let Some(s) = m.snapshot {
                    let _ = raft.trigger().purge_log(s.index).await;
                }
            }
        }
    }

    let switch = lock(&n.c).nodes[&node].crash.clone();
    switch.arm(CrashPoint { from: Some(StorageCall::InstallSnapshot), calls });
    lock(&n.c).router.restore(node);
    let tripped = timeout(REACH_INSTALL, switch.wait_tripped()).await.ok();
    switch.disarm();
    if tripped.is_some() {
        crash_node(&n.c, node, loss).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        start_node(&n.c, node).await;
    }
    Fault::InstallCrash { node, calls, loss, tripped }
}

/// Stall a node's disk (often a follower's) for a while, then crash it: whatever it appended
/// and acknowledged nothing of, and every committed index it heard of meanwhile, is lost.
pub async fn stall_then_crash(n: &mut Nemesis) -> Fault {
    let node = n.leader_or_random(0.2);
    let ms = n.rng.random_range(200..2000);
    let loss = CrashLoss { keep_per_mille: 0 };
    let log = lock(&n.c).nodes[&node].log.clone();
    log.set_flush_stalled(true);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    crash_node(&n.c, node, loss).await;
    log.set_flush_stalled(false);
    tokio::time::sleep(Duration::from_millis(50)).await;
    start_node(&n.c, node).await;
    Fault::StallCrash { node, ms, loss }
}
