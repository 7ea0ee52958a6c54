//! Many groups per node (`quorate::multi`): groups elect and commit independently, idle groups
//! quiesce and stay silent, anything that needs a group wakes it, and the groups of a dead or
//! cut-off node re-elect, on the in-memory `HostRouter`.

use std::collections::BTreeMap;
use std::time::Duration;

use quorate::ReadPolicy;
use quorate::multi::{GroupId, HostConfig};
use quorate::testing::Request;
use tokio::time::Instant;

use crate::fixture::TIMEOUT;
use crate::multi_fixture::{MultiCluster, NODES};

#[tokio::test(start_paused = true)]
async fn every_group_elects_and_commits_on_its_own() {
    let cluster = MultiCluster::start(12).await;

    for g in cluster.groups.clone() {
        let index = cluster.write(g, "k").await;
        cluster.wait_applied(g, index).await;
    }

    // Leadership is spread: group g was initialized through node g % 3 + 1.
    for g in cluster.groups.clone() {
        assert_eq!(cluster.leader_of(1, g), Some(g % 3 + 1), "group {g}");
    }
    cluster.check_safety();
}

/// Idle groups stop talking: after quiescing, ten seconds pass with beats only, no RPC of
/// any group, no election.
#[tokio::test(start_paused = true)]
async fn idle_groups_quiesce_and_stay_silent() {
    let cluster = MultiCluster::start(12).await;
    cluster.write_all_and_quiesce().await;
    let rpcs = cluster.router.total_rpcs();
    let beats = cluster.router.beats(1, 2);
    let elections = cluster.elections();

    tokio::time::sleep(Duration::from_secs(10)).await;

    assert_eq!(cluster.router.total_rpcs(), rpcs, "a quiesced group sent an RPC");
    assert_eq!(cluster.elections(), elections, "a quiesced group campaigned");
    // One beat per pair and interval stands in for every group.
    let sent = cluster.router.beats(1, 2) - beats;
    let expected = (10_000 / HostConfig::default().beat_interval.as_millis()) as u64;
    assert!(sent.abs_diff(expected) <= expected / 20, "{sent} beats from 1 to 2 in 10 s, not about {expected}");
    for g in cluster.groups.clone() {
        assert_eq!(cluster.leader_of(2, g), Some(g % 3 + 1), "group {g} kept its leader");
    }
}

#[tokio::test(start_paused = true)]
async fn a_write_wakes_its_group_alone_and_it_quiesces_again() {
    let cluster = MultiCluster::start(6).await;
    cluster.write_all_and_quiesce().await;

    let index = cluster.write(4, "woken").await;
    cluster.wait_applied(4, index).await;

    for id in NODES {
        for g in cluster.groups.clone().into_iter().filter(|g| *g != 4) {
            assert!(
                cluster.raft(id, g).metrics().borrow().quiesced,
                "node {id} group {g} woke for another group's write"
            );
        }
    }
    cluster.wait_all_quiesced().await;
    cluster.check_safety();
}

/// A group goes quiet again soon after its last write: within two heartbeat intervals, with
/// at most three RPCs per follower (the commit, one heartbeat, the marked heartbeat), not after
/// heartbeating until check-quorum's timer. A write to a cold group is what a node of many
/// groups mostly serves, so what it costs after the write counts as much as the write.
#[tokio::test(start_paused = true)]
async fn a_written_group_quiesces_again_within_two_heartbeats() {
    let cluster = MultiCluster::start(3).await;
    cluster.write_all_and_quiesce().await;
    let heartbeat = cluster.config.heartbeat_interval;

    for round in 0..3 {
        let rpcs = cluster.router.total_rpcs();
        let t0 = Instant::now();
        cluster.write(1, "again").await;
        cluster.wait_all_quiesced().await;
        let (took, sent) = (t0.elapsed(), cluster.router.total_rpcs() - rpcs);
        assert!(took <= 2 * heartbeat, "round {round}: quiesced again {took:?} after the write");
        // Two followers: the append and at most three more each.
        assert!(sent <= 2 * 4, "round {round}: {sent} RPCs for one write and quiescing again");
    }
    cluster.check_safety();
}

#[tokio::test(start_paused = true)]
async fn reads_on_a_quiesced_group_are_confirmed_and_see_the_last_write() {
    let cluster = MultiCluster::start(3).await;
    let index = cluster.write(1, "k").await;
    cluster.wait_all_quiesced().await;
    let leader = cluster.leader_of(1, 1).expect("a leader");
    tokio::time::sleep(Duration::from_secs(1)).await;

    for policy in [ReadPolicy::ReadIndex, ReadPolicy::LeaseRead] {
        let read = cluster.raft(leader, 1).ensure_linearizable(policy).await.expect("a confirmed read");
        assert!(read.is_some_and(|l| l.index >= index), "{policy:?}: {read:?}");
    }
}

/// The re-election bound: every group the dead node led has a new leader within two election
/// timeouts of the kill (a protocol-timing property, on the paused clock: no speed measured).
#[tokio::test(start_paused = true)]
async fn killing_a_node_re_elects_every_group_it_led_within_two_election_timeouts() {
    let mut cluster = MultiCluster::start(12).await;
    cluster.write_all_and_quiesce().await;
    let orphans: Vec<GroupId> =
        cluster.groups.iter().copied().filter(|g| cluster.leader_of(2, *g) == Some(1)).collect();
    assert_eq!(orphans.len(), 4);
    let elections = cluster.elections();

    let killed_at = Instant::now();
    cluster.kill(1).await;

    let bound = 2 * cluster.config.election_timeout_max;
    for g in &orphans {
        cluster
            .raft(2, *g)
            .wait(Some(bound))
            .metrics(|m| m.current_leader.is_some_and(|l| l != 1), format!("group {g} re-elects"))
            .await
            .unwrap_or_else(|e| panic!("group {g} has no new leader {bound:?} after the kill: {e}"));
    }
    let took = killed_at.elapsed();
    assert!(took <= bound, "{took:?}");
    // Groups with a live leader kept it, and no group elected more than once or twice.
    for g in cluster.groups.clone().into_iter().filter(|g| !orphans.contains(g)) {
        assert_eq!(cluster.leader_of(2, g), Some(g % 3 + 1), "group {g} lost a live leader");
    }
    assert!(cluster.elections() - elections <= 2 * orphans.len() as u64, "too many elections");
    for g in cluster.groups.clone() {
        let index = cluster.write(g, "after").await;
        cluster.wait_applied(g, index).await;
    }
    cluster.check_safety();
}

/// The survivors of a dead leader take turns (`wake_follower`'s slots): with the messages
/// between them slow, two survivors that time out close together would both win the pre-vote
/// and split the real vote, costing the group another election timeout. In turns, the first
/// one's pre-vote and vote reach the second before it would campaign, so every orphan elects
/// in one election, within one election timeout (plus the messages' delay) of its leader's
/// last beat, and each survivor goes first in some of the groups.
#[tokio::test(start_paused = true)]
async fn the_orphans_of_a_dead_node_elect_in_one_election_without_a_split_vote() {
    let mut cluster = MultiCluster::start(90).await;
    cluster.write_all_and_quiesce().await;
    let orphans: Vec<GroupId> =
        cluster.groups.iter().copied().filter(|g| cluster.leader_of(2, *g) == Some(1)).collect();
    assert_eq!(orphans.len(), 30);
    let terms: BTreeMap<GroupId, u64> =
        orphans.iter().map(|g| (*g, cluster.raft(2, *g).metrics().borrow().current_term)).collect();
    let elections: BTreeMap<GroupId, u64> = orphans.iter().map(|g| (*g, cluster.elections_of(*g, &[2, 3]))).collect();
    // Each way between the survivors, a request and an answer take 30 ms: a split vote
    // happens when their timers run out less than that apart.
    let delay = Duration::from_millis(30);
    for (from, to) in [(2, 3), (3, 2)] {
        cluster.router.set_delay(from, to, delay);
        cluster.router.set_answer_delay(from, to, delay);
    }

    let killed_at = Instant::now();
    cluster.kill(1).await;

    // The leader's node was last heard at most one beat before the kill; the first survivor
    // campaigns within the first half of its slot of the timeout, and a pre-vote, its answer,
    // the vote and the new leader's first message each take `delay`.
    let bound = cluster.config.election_timeout_max + 4 * delay;
    let mut leaders = BTreeMap::new();
    for g in &orphans {
        let m = cluster
            .raft(2, *g)
            .wait(Some(TIMEOUT))
            .metrics(|m| m.current_leader.is_some_and(|l| l != 1), format!("group {g} re-elects"))
            .await
            .unwrap_or_else(|e| panic!("group {g} has no new leader: {e}"));
        *leaders.entry(m.current_leader).or_insert(0) += 1;
    }
    let took = killed_at.elapsed();
    let split: Vec<GroupId> =
        orphans.iter().copied().filter(|g| cluster.elections_of(*g, &[2, 3]) - elections[g] != 1).collect();
    assert_eq!(split, Vec::<GroupId>::new(), "orphans that needed more than one election");
    for g in &orphans {
        assert_eq!(cluster.raft(2, *g).metrics().borrow().current_term, terms[g] + 1, "group {g}");
    }
    assert!(took <= bound, "the last orphan elected {took:?} after the kill, beyond {bound:?}");
    // Both survivors lead some of the orphans: the load of campaigning is shared.
    assert_eq!(leaders.len(), 2, "{leaders:?}");
    for (from, to) in [(2, 3), (3, 2)] {
        cluster.router.set_delay(from, to, Duration::ZERO);
        cluster.router.set_answer_delay(from, to, Duration::ZERO);
    }
    for g in cluster.groups.clone() {
        let index = cluster.write(g, "after").await;
        cluster.wait_applied(g, index).await;
    }
    cluster.check_safety();
}

/// A node cut off (beats and RPCs alike) loses the groups it led; back, it follows the new
/// leaders, and every group quiesces again.
#[tokio::test(start_paused = true)]
async fn a_cut_off_node_loses_its_groups_and_rejoins_them() {
    let cluster = MultiCluster::start(6).await;
    cluster.write_all_and_quiesce().await;

    cluster.router.isolate(1);
    for g in cluster.groups.clone() {
        cluster.wait_for_leader(g, &[2, 3]).await;
        let leader = cluster.leader_of(2, g).expect("a leader");
        cluster.raft(leader, g).client_write(Request::set("k", "cut")).await.expect("write without node 1");
    }
    // The new leaders quiesce without node 1, which is not heard: nothing of theirs will reach
    // it until something wakes them.
    for id in [2, 3] {
        for g in cluster.groups.clone() {
            cluster
                .raft(id, g)
                .wait(Some(TIMEOUT))
                .metrics(|m| m.quiesced, "quiesced without node 1")
                .await
                .expect("quiesced");
        }
    }
    cluster.router.restore(1);

    for g in cluster.groups.clone() {
        // Node 1 may still believe it leads a group it led quiesced when it was cut off: its
        // host hears the others again, wakes it, and it learns of the newer term.
        cluster
            .raft(1, g)
            .wait(Some(TIMEOUT))
            .metrics(|m| m.current_leader.is_some_and(|l| l != 1), format!("node 1 follows group {g}'s new leader"))
            .await
            .expect("the stale leader steps down");
        let leader = cluster.wait_for_leader(g, &NODES).await;
        assert_ne!(leader, 1, "group {g}: the stale node took over");
        let index = cluster.write(g, "back").await;
        cluster.wait_applied(g, index).await;
    }
    cluster.wait_all_quiesced().await;
    cluster.check_safety();
}

/// Removing a group on the node that leads it: its followers hold it quiesced under a node
/// that is alive; the host's next beat says the leadership is gone, and they elect.
#[tokio::test(start_paused = true)]
async fn removing_a_quiesced_groups_leader_wakes_its_followers() {
    let cluster = MultiCluster::start(3).await;
    cluster.write_all_and_quiesce().await;
    let g = 0;
    assert_eq!(cluster.leader_of(2, g), Some(1));

    cluster.hosts[&1].remove_group(g).await.expect("removed");

    cluster
        .raft(2, g)
        .wait(Some(TIMEOUT))
        .metrics(|m| m.current_leader.is_some_and(|l| l != 1), "the followers elect")
        .await
        .expect("a new leader");
    let leader = cluster.leader_of(2, g).expect("a leader");
    cluster.raft(leader, g).client_write(Request::set("k", "after")).await.expect("write");
}

/// A follower node dies; its leaders quiesce without it. Restarted, its groups campaign, which
/// wakes their leaders, and it catches up on what it missed.
#[tokio::test(start_paused = true)]
async fn a_restarted_follower_node_catches_up_on_every_group() {
    let mut cluster = MultiCluster::start(6).await;
    cluster.kill(3).await;
    let mut written = BTreeMap::new();
    for g in cluster.groups.clone() {
        written.insert(g, cluster.write(g, "while 3 was down").await);
    }
    // Groups led by node 3 elected anew; all quiesce without node 3.
    cluster.wait_all_quiesced().await;

    cluster.restart(3).await;

    for (g, index) in written {
        cluster.wait_applied(g, index).await;
    }
    cluster.wait_all_quiesced().await;
    cluster.check_safety();
}

/// Found in review: beats went only to the nodes a host's groups sent requests to, so a node
/// that only followed beat nobody and looked dead to its leaders, which then quiesced without
/// waiting for it. Every member's host now hears every other's beats.
#[tokio::test(start_paused = true)]
async fn a_node_that_only_follows_is_heard_by_its_leaders() {
    let cluster = MultiCluster::start_through(4, |_| 1).await;
    for g in cluster.groups.clone() {
        assert_eq!(cluster.leader_of(2, g), Some(1), "node 1 leads every group");
        cluster.write(g, "k").await;
    }
    cluster.wait_all_quiesced().await;

    for id in [2, 3] {
        assert!(cluster.hosts[&1].is_live(&id), "node 1 does not hear node {id}");
    }
}

/// A follower node that restarts (at once, or after it was suspected dead) knows no leader in
/// any group: unless a leader reaches it first, each of its groups campaigns after its election
/// timeout and every campaign wakes the group everywhere, which is how a node of thousands of
/// groups set off an election storm. The leaders' hosts see the new incarnation in its first
/// beat and send it the marked heartbeat again: every group follows and quiesces well within
/// the election timeout, with one RPC per group and no campaign.
#[tokio::test(start_paused = true)]
async fn a_restarted_follower_node_is_quiesced_again_by_its_leaders_before_it_would_campaign() {
    let mut cluster = MultiCluster::start_through(6, |_| 1).await;
    cluster.write_all_and_quiesce().await;
    let groups = cluster.groups.len() as u64;

    for down in [Duration::ZERO, Duration::from_secs(1)] {
        let (rpcs, elections) = (cluster.router.total_rpcs(), cluster.elections());
        cluster.kill(3).await;
        tokio::time::sleep(down).await;
        let t0 = Instant::now();
        cluster.restart(3).await;
        cluster.wait_all_quiesced().await;
        let took = t0.elapsed();
        let sent = cluster.router.total_rpcs() - rpcs;
        assert!(took < cluster.config.election_timeout_min, "down {down:?}: quiesced again after {took:?}");
        assert!(sent <= groups, "down {down:?}: {sent} RPCs to quiesce {groups} groups again");
        assert_eq!(cluster.elections(), elections, "down {down:?}: a group campaigned");
        for g in cluster.groups.clone() {
            assert_eq!(cluster.leader_of(3, g), Some(1), "down {down:?}: group {g}");
        }
    }
    cluster.check_safety();
}

/// A restarted node can hear a leader's marked heartbeat before that leader's node's first
/// beat: the heartbeat counts as the first beat there, so the group quiesces at once rather
/// than waiting awake (and campaigning) for a beat that the leader's node may send late.
#[tokio::test(start_paused = true)]
async fn a_restarted_node_quiesces_on_a_marked_heartbeat_before_the_leaders_first_beat() {
    let mut cluster = MultiCluster::start_through(3, |_| 1).await;
    cluster.write_all_and_quiesce().await;
    let elections = cluster.elections();

    cluster.kill(3).await;
    cluster.router.block_beats(1, 3);
    cluster.restart(3).await;
    for g in cluster.groups.clone() {
        cluster
            .raft(3, g)
            .wait(Some(TIMEOUT))
            .metrics(|m| m.quiesced && m.current_leader == Some(1), format!("node 3 group {g} quiesces under 1"))
            .await
            .expect("quiesced under the leader");
    }
    // Node 1's beats stay cut for longer than suspicion: node 3 suspects it and wakes the
    // groups, which hear their leader again once the beats are back.
    tokio::time::sleep(3 * HostConfig::default().suspect_after).await;
    cluster.router.unblock_beats(1, 3);
    cluster.wait_all_quiesced().await;
    for g in cluster.groups.clone() {
        assert_eq!(cluster.leader_of(3, g), Some(1), "group {g}");
    }
    assert_eq!(cluster.elections(), elections, "a group campaigned");
    cluster.check_safety();
}
