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

/// Raft §5.2: a follower that stops hearing from the leader starts an election; with a
/// quorum it wins, and the old leader follows once it hears the new term.
#[tokio::test(start_paused = true)]
async fn triggered_election_moves_leadership() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let other = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let term = c.raft(leader).metrics().borrow().current_term;

    c.raft(other).trigger().elect().await.unwrap();
    for id in c.ids() {
        c.raft(id)
            .wait(Some(TIMEOUT))
            .metrics(|m| m.current_term > term && m.current_leader.is_some(), "a leader of a newer term")
            .await
            .unwrap();
    }
    let new_leader = c.wait_for_leader(&c.ids()).await;
    let m = c.raft(new_leader).metrics().borrow().clone();
    assert!(m.current_term > term, "the new leader is in a newer term");
    // The node that stood up either won, or lost to a node with a newer log; either way the
    // old leader follows now.
    let old = c.raft(leader).metrics().borrow().clone();
    assert_eq!(old.current_leader, Some(new_leader));
    c.set(new_leader, "k", "v").await;
    c.check_safety();
}
