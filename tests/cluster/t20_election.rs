//! Elections in a three-node cluster.

use std::collections::BTreeSet;

use quorate::ServerState;

use crate::fixture::{TIMEOUT, TestCluster, init_tracing};

/// Raft §5.2: one leader is elected and every node learns it.
#[tokio::test(start_paused = true)]
async fn three_nodes_elect_one_leader() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;

    let metrics: Vec<_> = c.ids().iter().map(|id| c.raft(*id).metrics().borrow().clone()).collect();
    let leaders: Vec<_> = metrics.iter().filter(|m| m.state == ServerState::Leader).collect();
    assert_eq!(leaders.len(), 1, "exactly one leader: {metrics:?}");
    assert_eq!(leaders[0].id, leader);
    let terms: BTreeSet<_> = metrics.iter().map(|m| m.current_term).collect();
    assert_eq!(terms.len(), 1, "all nodes are in the leader's term: {metrics:?}");
    for m in &metrics {
        assert_eq!(m.current_leader, Some(leader));
        if m.id != leader {
            assert_eq!(m.state, ServerState::Follower);
        }
    }
}

/// `trigger().elect()` on a follower campaigns as if its election timer fired: voters that
/// follow a healthy leader refuse it (leader stickiness, dissertation §9.6), so it cannot
/// depose that leader — nor break the lease the leader may be serving reads under.
#[tokio::test(start_paused = true)]
async fn triggered_election_on_a_follower_leaves_a_healthy_leader_in_place() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let other = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let term = c.raft(leader).metrics().borrow().current_term;

    c.raft(other).trigger().elect().await.unwrap();
    // Writes keep committing under the same leader, well past an election timeout.
    for i in 0..20 {
        c.set(leader, "k", &format!("v{i}")).await;
        tokio::time::sleep(c.config.election_timeout_max / 4).await;
    }

    for id in c.ids() {
        let m = c.raft(id).metrics().borrow().clone();
        assert_eq!((m.current_term, m.current_leader), (term, Some(leader)), "node {id}");
    }
    c.check_safety();
}

/// `trigger().elect()` on the leader stands it down and campaigns in a newer term at once;
/// the cluster ends with a leader of that term that commits.
#[tokio::test(start_paused = true)]
async fn triggered_election_on_the_leader_moves_to_a_newer_term() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let term = c.raft(leader).metrics().borrow().current_term;

    c.raft(leader).trigger().elect().await.unwrap();
    for id in c.ids() {
        c.raft(id)
            .wait(Some(TIMEOUT))
            .metrics(|m| m.current_term > term && m.current_leader.is_some(), "a leader of a newer term")
            .await
            .unwrap();
    }
    let new_leader = c.wait_for_leader(&c.ids()).await;
    c.set(new_leader, "k", "v").await;
    c.check_safety();
}

/// Raft §5.2: once the leader is gone and its followers' stickiness has run out, a follower
/// told to stand wins.
#[tokio::test(start_paused = true)]
async fn triggered_election_on_a_follower_wins_once_the_leader_is_gone() {
    init_tracing();
    let mut c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let term = c.raft(leader).metrics().borrow().current_term;
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
    c.stop_node(leader).await;
    tokio::time::sleep(c.config.election_timeout_min).await;

    c.raft(others[0]).trigger().elect().await.unwrap();

    let new_leader = c.wait_for_leader(&others).await;
    assert!(c.raft(new_leader).metrics().borrow().current_term > term);
    c.set(new_leader, "k", "v").await;
}
