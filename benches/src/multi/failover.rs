//! Failover: kill one node while every group is quiesced, and time how long each group it
//! led takes to have a new leader on a surviving node.

use std::time::{Duration, Instant};

use quorate::ServerState;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::cluster::{MultiCluster, NODES};
use super::election_count::{self, ElectionCounts};

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
    /// Per orphan that re-elected, ms from the kill until a survivor's metrics first showed
    /// the group awake (its host suspected the victim and woke it), sorted.
    #[serde(default)]
    pub woke_ms: Vec<f64>,
    /// Per orphan that re-elected, ms from the kill until a survivor's metrics first showed
    /// it campaigning (pre-vote or vote), sorted. Metrics are watched, so a campaign that
    /// began and ended between two looks is seen late or not at all.
    #[serde(default)]
    pub campaign_ms: Vec<f64>,
    /// Orphans whose survivors started more than one real election between them before a
    /// leader was known: a split vote, or a candidate that lost.
    #[serde(default)]
    pub orphans_with_extra_elections: u64,
    /// Orphans in which both survivors started a real election.
    #[serde(default)]
    pub orphans_both_campaigned: u64,
    /// Orphans whose new leader's term is more than one past the victim's.
    #[serde(default)]
    pub orphans_term_skipped: u64,
    /// Every election event of the process from the kill until the last orphan re-elected
    /// (all groups, not only orphans; counted by [`super::election_count`]).
    #[serde(default)]
    pub counts: ElectionCounts,
}

impl FailoverRound {
    /// One line on this kill: its orphans, their re-election times and how many needed more
    /// than one election (the tables pool every kill of a run; a kill after a restart may
    /// differ from the first).
    pub fn summary(&self) -> String {
        let at = |p: f64| super::report::percentile(&self.reelect_ms, p);
        format!(
            "{} orphans, re-elected median {:.0} / p99 {:.0} / max {:.0} ms, {} not; woke median {:.0} ms, \
             campaigning median {:.0} ms; {} with more than one election, {} where both survivors ran; \
             {} pre-votes ({} refused by stickiness), {} elections ({} votes refused)",
            self.orphans,
            at(50.0),
            at(99.0),
            self.reelect_ms.last().copied().unwrap_or(f64::NAN),
            self.unresolved,
            super::report::percentile(&self.woke_ms, 50.0),
            super::report::percentile(&self.campaign_ms, 50.0),
            self.orphans_with_extra_elections,
            self.orphans_both_campaigned,
            self.counts.pre_votes,
            self.counts.pre_vote_sticky,
            self.counts.elections,
            self.counts.vote_refused,
        )
    }
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
    let victim_terms: Vec<u64> =
        orphans.iter().map(|g| cluster.raft(victim, *g).metrics().borrow().current_term).collect();

    let counts0 = election_count::snapshot();
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
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (task, victim_term) in tasks.into_iter().zip(victim_terms) {
        match task.await {
            Ok(Some(trace)) => {
                round.reelect_ms.push(ms(trace.leader));
                round.woke_ms.extend(trace.woke.map(ms));
                round.campaign_ms.extend(trace.campaign.map(ms));
                round.orphans_with_extra_elections += u64::from(trace.elections > 1);
                round.orphans_both_campaigned += u64::from(trace.campaigners > 1);
                round.orphans_term_skipped += u64::from(trace.leader_term > victim_term + 1);
            }
            _ => round.unresolved += 1,
        }
    }
    round.counts = election_count::snapshot().since(&counts0);
    for v in [&mut round.reelect_ms, &mut round.woke_ms, &mut round.campaign_ms] {
        v.sort_by(f64::total_cmp);
    }
    round.shutdown_secs = shutdown.await.unwrap_or(f64::NAN);
    round
}

/// What the survivors of one orphan did until one of them named a new leader.
#[derive(Debug, Clone, Copy)]
struct OrphanTrace {
    /// Since the kill, until a survivor was seen awake.
    woke: Option<Duration>,
    /// Since the kill, until a survivor was seen campaigning.
    campaign: Option<Duration>,
    /// Since the kill, until a survivor named a leader other than the victim.
    leader: Duration,
    /// Real elections the survivors started between them.
    elections: u64,
    /// Survivors that started a real election.
    campaigners: u64,
    /// The term in which the new leader was named.
    leader_term: u64,
}

/// Wait until any of `rxs` (one group's metrics on the surviving nodes) names a leader other
/// than `victim`; what happened until then, or `None` after `limit`.
async fn new_leader_known(
    mut rxs: Vec<watch::Receiver<quorate::RaftMetrics<quorate::testing::TypeConfig>>>,
    victim: u64,
    t0: Instant,
    limit: Duration,
) -> Option<OrphanTrace> {
    let elections0: Vec<u64> = rxs.iter().map(|rx| rx.borrow().elections_started).collect();
    let mut woke = None;
    let mut campaign = None;
    let watch = async {
        loop {
            let mut leader_term = None;
            for rx in rxs.iter_mut() {
                let m = rx.borrow_and_update();
                if !m.quiesced {
                    woke.get_or_insert_with(|| t0.elapsed());
                }
                if m.state == ServerState::Candidate {
                    campaign.get_or_insert_with(|| t0.elapsed());
                }
                if m.current_leader.is_some_and(|l| l != victim) {
                    leader_term = Some(m.current_term);
                }
            }
            if let Some(leader_term) = leader_term {
                let leader = t0.elapsed();
                let started: Vec<u64> =
                    rxs.iter().zip(&elections0).map(|(rx, e0)| rx.borrow().elections_started - e0).collect();
                return Some(OrphanTrace {
                    woke,
                    campaign,
                    leader,
                    elections: started.iter().sum(),
                    campaigners: started.iter().filter(|e| **e > 0).count() as u64,
                    leader_term,
                });
            }
            let changes = rxs.iter_mut().map(|rx| Box::pin(rx.changed()));
            let (changed, _, _) = futures_util::future::select_all(changes).await;
            if changed.is_err() {
                // A survivor's group stopped: nothing more will change there.
                return None;
            }
        }
    };
    tokio::time::timeout(limit, watch).await.ok().flatten()
}
