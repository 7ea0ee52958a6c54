//! A node of many groups coming back, where that meets the other features: storage lost while
//! it was down (the leaders purged behind snapshots), a leadership transfer started while
//! its leaders resend their marked heartbeats to it, and a membership change that removes it
//! from one group while it comes back with its storage lost.
//!
//! All run on the paused clock and wait on metrics.

use std::collections::BTreeSet;
use std::time::Duration;

use quorate::multi::GroupId;
use quorate::testing::{MemLogStore, MemStateMachine, Request};
use quorate::{ChangeMembers, Config, SnapshotPolicy};

use crate::fixture::{TIMEOUT, test_config};
use crate::multi_fixture::{MultiCluster, NODES};

/// How long a test watches quiet groups for something that must not happen: many election
/// timeouts, many suspicion timeouts.
const QUIET: Duration = Duration::from_secs(5);

/// Elections started by the current incarnations of nodes 1 and 2 in every group.
fn elections_of_1_and_2(cluster: &MultiCluster) -> u64 {
    cluster.groups.iter().map(|g| cluster.elections_of(*g, &[1, 2])).sum()
}

/// Interleavings: node 3 was matched and quiesced in every group, then came back with an empty
/// disk while its leaders' logs were purged behind snapshots. Each leader's stream resends its
/// marked heartbeat to the new incarnation; the heartbeat conflicts (node 3 holds nothing), the
/// stream searches, finds no entry node 3 holds that the leader still has, and must send a
/// snapshot before the group can quiesce again. No group may elect on the way: node 3, with no
/// membership of its own, cannot campaign, and nodes 1 and 2 keep hearing their leader.
/// (Each step alone is tested elsewhere; this is the chain.)
#[tokio::test(start_paused = true)]
async fn a_node_back_with_an_empty_disk_is_brought_up_by_snapshots_and_quiesced_again() {
    let config =
        Config { snapshot_policy: SnapshotPolicy::LogsSinceLast(10), max_in_snapshot_log_to_keep: 0, ..test_config() };
    let mut cluster = MultiCluster::start_with(3, |_| 1, config).await;
    for g in cluster.groups.clone() {
        for i in 0..25 {
            cluster.write(g, &format!("k{i}")).await;
        }
        cluster
            .raft(1, g)
            .wait(Some(TIMEOUT))
            .metrics(|m| m.purged.is_some_and(|p| p.index >= 10), format!("group {g}'s leader purged"))
            .await
            .expect("purged behind a snapshot");
    }
    cluster.wait_all_quiesced().await;
    let elections = elections_of_1_and_2(&cluster);

    cluster.kill(3).await;
    let t0 = tokio::time::Instant::now();
    cluster.start_host(3, |_| (MemLogStore::new(), MemStateMachine::new())).await;
    for g in cluster.groups.clone() {
        let last = cluster.raft(1, g).metrics().borrow().last_log_index;
        cluster
            .raft(3, g)
            .wait(Some(TIMEOUT))
            .applied_index_at_least(last, format!("node 3 catches up in group {g}"))
            .await
            .expect("node 3 catches up");
    }
    // One election timeout of "reached but unheard", then the resent mark, its conflict, the
    // search and the snapshot: the conflict proves the node runs the group, so the catch-up
    // does not wait another (doubled) unheard retry.
    let took = t0.elapsed();
    let bound = 2 * cluster.config.election_timeout_max;
    assert!(took < bound, "node 3 caught up after {took:?} (bound {bound:?})");
    cluster.wait_all_quiesced().await;

    for g in cluster.groups.clone() {
        let m3 = cluster.raft(3, g).metrics().borrow().clone();
        assert!(m3.snapshot.is_some(), "group {g}: node 3 was brought up by a snapshot: {m3}");
        assert_eq!(m3.current_leader, Some(1), "group {g}");
        assert_eq!(m3.elections_started, 0, "group {g}: node 3 campaigned");
        assert_eq!(cluster.stores[&(3, g)].1.data(), cluster.stores[&(1, g)].1.data(), "group {g}");
    }
    assert_eq!(elections_of_1_and_2(&cluster), elections, "a group elected");
    cluster.check_safety();
}

/// Interleavings: node 3 restarts and, at the same instant, node 1 hands leadership of every
/// group it leads to node 2. Node 1's streams resend their marked heartbeats to node 3's new
/// incarnation while the transfer wakes the groups, brings node 2 up to date and steps node 1
/// down: a mark from the old leadership must not quiesce node 3 under node 1 after node 2
/// took over, and every group must end with one leader, node 2, followed and quiesced by all.
#[tokio::test(start_paused = true)]
async fn a_transfer_started_as_a_restarted_node_is_resent_its_marks_ends_under_the_new_leader() {
    let mut cluster = MultiCluster::start_through(4, |_| 1).await;
    cluster.write_all_and_quiesce().await;

    cluster.kill(3).await;
    cluster.restart(3).await;
    let transfers = cluster.groups.clone().into_iter().map(|g| {
        let raft = cluster.raft(1, g);
        async move { (g, raft.trigger().transfer_leader(2).await) }
    });
    for (g, result) in futures_util::future::join_all(transfers).await {
        result.unwrap_or_else(|e| panic!("group {g}: transfer to node 2 failed: {e}"));
    }
    for g in cluster.groups.clone() {
        assert_eq!(cluster.wait_for_leader(g, &NODES).await, 2, "group {g}");
    }
    cluster.wait_all_quiesced().await;
    for g in cluster.groups.clone() {
        for id in NODES {
            assert_eq!(cluster.leader_of(id, g), Some(2), "node {id} group {g}");
        }
    }
    // The groups still serve writes through their new leader, on every node.
    let groups: Vec<GroupId> = cluster.groups.clone();
    for g in groups {
        let index = cluster.write(g, "after").await;
        cluster.wait_applied(g, index).await;
    }
    cluster.check_safety();
}

/// When the change that removes node 3 from group 0 is proposed, relative to node 3's return.
#[derive(Debug, Clone, Copy)]
enum Removal {
    /// Proposed while node 3 is down, and node 3 comes back before it commits: group 0's
    /// stream may bring node 3 the old config, the new one, or both.
    AsItComesBack,
    /// Committed before node 3 comes back: node 3's group 0 never hears of the group again
    /// (nobody replicates to a removed node) and holds nothing.
    BeforeItComesBack,
}

/// Interleavings: node 3 dies and comes back with an empty disk while the leader of group 0,
/// woken by the change, removes it from group 0, and the leaders of the other groups resend
/// their marked heartbeats to it (see [`Removal`] for the two orders). Node 3's group 0 ends
/// holding nothing (removed before it came back) or the config that removes it (group 0's
/// stream reached it before the change committed): either way it is no voter and cannot
/// campaign, and nothing node 3 does may start an election among the members or keep a group
/// awake. The change commits without node 3, group 0 quiesces with nodes 1 and 2, node 3 is
/// caught up (and quiesced) in every other group, and the members of each group apply the
/// same log. (A node 3 left holding the old config, which campaigns as a non-member, is
/// `t99_multi_quiesce::a_voter_removed_while_cut_off_does_not_keep_the_group_awake`.)
async fn a_node_back_with_an_empty_disk_while_a_group_removes_it(removal: Removal) {
    const REMOVED: GroupId = 0;
    let mut cluster = MultiCluster::start_through(4, |_| 1).await;
    cluster.write_all_and_quiesce().await;
    let elections = elections_of_1_and_2(&cluster);
    let terms = |cluster: &MultiCluster| -> Vec<u64> {
        cluster.groups.iter().map(|g| cluster.raft(1, *g).metrics().borrow().current_term).collect()
    };
    let terms_before = terms(&cluster);

    cluster.kill(3).await;
    let leader = cluster.raft(1, REMOVED);
    let change =
        tokio::spawn(async move { leader.change_membership(ChangeMembers::RemoveVoters([3].into()), false).await });
    let change = async { tokio::time::timeout(TIMEOUT, change).await.expect("the change is answered").expect("task") };
    let resp = match removal {
        Removal::AsItComesBack => {
            cluster.start_host(3, |_| (MemLogStore::new(), MemStateMachine::new())).await;
            change.await
        }
        Removal::BeforeItComesBack => {
            let resp = change.await;
            cluster.start_host(3, |_| (MemLogStore::new(), MemStateMachine::new())).await;
            resp
        }
    };
    let resp = resp.unwrap_or_else(|e| panic!("{removal:?}: the change commits without node 3: {e}"));
    assert_eq!(resp.membership.voter_ids(), BTreeSet::from([1, 2]), "{removal:?}");

    // Every group ends led by node 1, quiesced on its members, node 3 caught up where it stays.
    let members = |g: GroupId| -> &'static [u64] { if g == REMOVED { &[1, 2] } else { &NODES } };
    for g in cluster.groups.clone() {
        assert_eq!(cluster.wait_for_leader(g, members(g)).await, 1, "{removal:?}: group {g}");
        let last = cluster.raft(1, g).metrics().borrow().last_log_index;
        for id in members(g) {
            cluster
                .raft(*id, g)
                .wait(Some(TIMEOUT))
                .applied_index_at_least(last, format!("{removal:?}: node {id} catches up in group {g}"))
                .await
                .expect("caught up");
        }
        cluster.wait_quiesced(g, members(g)).await;
    }

    let m3 = cluster.raft(3, REMOVED).metrics().borrow().clone();
    assert!(!m3.membership_config.membership.is_voter(&3), "{removal:?}: node 3 votes in group 0: {m3}");

    // Watch a while: nothing node 3 does may change anything.
    let between_members = || cluster.router.rpcs(1, 2) + cluster.router.rpcs(2, 1);
    let rpcs = between_members();
    tokio::time::sleep(QUIET).await;
    assert_eq!(between_members(), rpcs, "{removal:?}: something kept a group awake among the members");
    assert_eq!(elections_of_1_and_2(&cluster), elections, "{removal:?}: a member campaigned");
    assert_eq!(terms(&cluster), terms_before, "{removal:?}: a group's term rose");
    for g in cluster.groups.clone() {
        for id in members(g) {
            let m = cluster.raft(*id, g).metrics().borrow().clone();
            assert!(m.quiesced && m.current_leader == Some(1), "{removal:?}: node {id} group {g}: {m}");
        }
    }

    // The members still serve writes, and apply the same log; node 3 gets none of group 0's.
    for g in cluster.groups.clone() {
        // Through node 1, the leader: `MultiCluster::write` waits for every live node to know it.
        let written = cluster.raft(1, g).client_write(Request::set("after", "1")).await;
        let index = written.unwrap_or_else(|e| panic!("{removal:?}: group {g}: write: {e}")).log_id.index;
        for id in members(g) {
            cluster
                .raft(*id, g)
                .wait(Some(TIMEOUT))
                .applied_index_at_least(Some(index), format!("{removal:?}: node {id} group {g} applies {index}"))
                .await
                .expect("applied");
            let (data, leaders) = (cluster.stores[&(*id, g)].1.data(), cluster.stores[&(1, g)].1.data());
            assert_eq!(data, leaders, "{removal:?}: node {id} group {g}");
        }
    }
    let removed = cluster.stores[&(3, REMOVED)].1.data();
    assert_eq!(removed.get("after"), None, "{removal:?}: node 3 applied a write of group 0 after its removal");
    cluster.check_safety();
}

#[tokio::test(start_paused = true)]
async fn a_node_back_with_an_empty_disk_as_a_group_removes_it_disrupts_nothing() {
    a_node_back_with_an_empty_disk_while_a_group_removes_it(Removal::AsItComesBack).await;
}

#[tokio::test(start_paused = true)]
async fn a_node_back_with_an_empty_disk_after_a_group_removed_it_disrupts_nothing() {
    a_node_back_with_an_empty_disk_while_a_group_removes_it(Removal::BeforeItComesBack).await;
}
