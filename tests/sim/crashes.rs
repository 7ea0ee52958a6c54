//! Crash points: crash a node between two storage calls of one batch.
//!
//! A node's crash switch (shared by its log store and state machine) is armed to freeze the
//! node right after its n-th next mutating storage call; once it froze, the node is crashed
//! there (its stores reopened, losing what the storage contract lets a crash lose) and
//! restarted. `crash_after_install` sets up a snapshot install first: the node is cut off
//! until the leader has snapshotted and purged past it, so that it must take a snapshot (and,
//! if it led before, truncate the tail it wrote alone), and freezes right after installing.

use std::time::Duration;

use quorate::ChangeMembers;
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

/// How long the group may take to move onto one node before that node is crashed anyway.
const REACH_MOVE: Duration = Duration::from_secs(2);

/// Move the group onto one node and crash that node as soon as it holds the final config.
///
/// The leader replaces every voter with another node `to` (a group moved to a new machine, or
/// shrunk to one voter that is not the leader). From the moment the final config {`to`} is
/// appended until the leader learns it committed, the leader's lease rests on `to`'s answers
/// alone; `to`'s answers are held back a while to widen that window, or the link between the
/// two is cut as `to` crashes (a partition meeting the crash). `to` crashes once it
/// holds {`to`} and restarts as its config's only voter: it must keep the promise its answers
/// made before it takes over (review finding of cf1cf72, which no fault reached before: a
/// stale lease read on the old leader). The voters left out come back through add-voter
/// faults.
pub async fn move_then_crash(n: &mut Nemesis) -> Fault {
    let Some(from) = lock(&n.c).known_leader() else { return Fault::Heal };
    let to = n.random_node();
    let (Some(leader), Some(target)) = (n.raft_of(from), n.raft_of(to)) else { return Fault::Heal };
    if from == to {
        return Fault::Heal;
    }
    let answer_ms = n.rng.random_range(0..120);
    let cut = n.rng.random_bool(0.5);
    let down = Duration::from_millis(n.rng.random_range(5..=50));
    let loss = n.crash_loss();
    lock(&n.c).router.set_answer_delay(from, to, Duration::from_millis(answer_ms));
    let change = ChangeMembers::ReplaceAllVoters([to].into());
    tokio::spawn(async move {
        let _ = timeout(REACH_MOVE, leader.change_membership(change, true)).await;
    });
    let moved = target
        .wait(Some(REACH_MOVE))
        .metrics(
            |m| {
                let config = &m.membership_config.membership;
                !config.is_joint() && config.voter_ids() == [to].into()
            },
            "the final config holds only the target",
        )
        .await
        .is_ok();
    if cut {
        // The old leader hears nothing more from `to` until the next heal: it learns neither
        // that the final config committed nor of `to`'s new term, and leads on its lease.
        let g = lock(&n.c);
        g.router.block(from, to);
        g.router.block(to, from);
    }
    crash_node(&n.c, to, loss).await;
    tokio::time::sleep(down).await;
    start_node(&n.c, to).await;
    if moved {
        n.set_voters(&[to].into());
    }
    Fault::MoveCrash { from, to, answer_ms, cut, loss, moved }
}
