//! Failover: kill one node while every group is quiesced, and time how long each group it
//! led takes to have a new leader on a surviving node.

use std::time::{Duration, Instant};

use quorate::ServerState;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::cluster::{MultiCluster, NODES};

/// One kill.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FailoverRound {
    /// The node killed.
    pub victim: u64,
    /// Groups it led when it was killed.
    pub orphans: u64,
    /// Per orphan that re-elected, milliseconds from the kill until a surviving node knew a
    /// new leader (any node but the victim), sorted.
    pub reelect_ms: Vec<f64>,
    /// Orphans with no new leader known within the limit.
    pub unresolved: u64,
    /// How long the killed host's `shutdown` took (it stops its groups one by one, on the
    /// same runtime as the survivors, while they elect).
    pub shutdown_secs: f64,
}

/// Kill `victim` (see [`MultiCluster::kill`]) and watch, on `watchers`, every group it led
/// until a surviving node knows a new leader, for at most `limit` each.
///
/// # Panics
/// If `victim` is not running.
pub async fn kill_and_watch(
    cluster: &mut MultiCluster,
    watchers: &Handle,
    victim: u64,
    limit: Duration,
) -> FailoverRound {
    let orphans: Vec<u64> = (0..cluster.groups())
        .filter(|g| cluster.raft(victim, *g).metrics().borrow().state == ServerState::Leader)
        .collect();
    let survivors: Vec<u64> = NODES.iter().copied().filter(|id| *id != victim).collect();
    let receivers: Vec<Vec<_>> =
        orphans.iter().map(|g| survivors.iter().map(|id| cluster.raft(*id, *g).metrics()).collect()).collect();

    let t0 = Instant::now();
    let host = cluster.kill(victim);
    let tasks: Vec<_> =
        receivers.into_iter().map(|rxs| watchers.spawn(new_leader_known(rxs, victim, t0, limit))).collect();
    let shutdown = tokio::spawn(async move {
        let t = Instant::now();
        let _ = host.shutdown().await;
        t.elapsed().as_secs_f64()
    });

    let mut round = FailoverRound { victim, orphans: orphans.len() as u64, ..Default::default() };
    for task in tasks {
        match task.await {
            Ok(Some(elapsed)) => round.reelect_ms.push(elapsed.as_secs_f64() * 1e3),
            _ => round.unresolved += 1,
        }
    }
    round.reelect_ms.sort_by(f64::total_cmp);
    round.shutdown_secs = shutdown.await.unwrap_or(f64::NAN);
    round
}

/// Wait until any of `rxs` (one group's metrics on the surviving nodes) names a leader other
/// than `victim`; the time since `t0`, or `None` after `limit`.
async fn new_leader_known(
    mut rxs: Vec<watch::Receiver<quorate::RaftMetrics<quorate::testing::TypeConfig>>>,
    victim: u64,
    t0: Instant,
    limit: Duration,
) -> Option<Duration> {
    let known = |rx: &mut watch::Receiver<quorate::RaftMetrics<_>>| {
        rx.borrow_and_update().current_leader.is_some_and(|l| l != victim)
    };
    let watch = async {
        loop {
            if rxs.iter_mut().any(known) {
                return t0.elapsed();
            }
            let changes = rxs.iter_mut().map(|rx| Box::pin(rx.changed()));
            let (changed, _, _) = futures_util::future::select_all(changes).await;
            if changed.is_err() {
                // A survivor's group stopped: nothing more will change there.
                return Duration::MAX;
            }
        }
    };
    match tokio::time::timeout(limit, watch).await {
        Ok(d) if d != Duration::MAX => Some(d),
        _ => None,
    }
}
