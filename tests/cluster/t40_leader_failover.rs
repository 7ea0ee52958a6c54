//! Losing the leader: a new one takes over and writes continue.

use quorate::ServerState;
use tokio::time::Instant;

use crate::fixture::{TestCluster, init_tracing};

/// Raft §5.2: when the leader stops, a follower times out and a new leader is elected within
/// two maximum election timeouts; acknowledged writes survive (§5.4 leader completeness).
#[tokio::test(start_paused = true)]
async fn new_leader_after_leader_shutdown() {
    init_tracing();
    let mut c = TestCluster::new(&[1, 2, 3]).await;
    let old = c.initialize(1).await;
    for i in 0..20 {
        c.set(old, &format!("k{i}"), "before").await;
    }

    let stopped_at = Instant::now();
    c.stop_node(old).await;
    let rest = c.ids();
    let new = c.wait_for_leader(&rest).await;
    let took = stopped_at.elapsed();
    assert_ne!(new, old);
    assert!(
        took <= 2 * c.config.election_timeout_max,
        "new leader after {took:?}, more than 2 x {:?}",
        c.config.election_timeout_max
    );
    assert_eq!(c.raft(new).metrics().borrow().state, ServerState::Leader);

    // Everything acknowledged before is still there, and new writes commit.
    for i in 0..20 {
        c.set(new, &format!("k{i}"), "after").await;
    }
    let last = c.raft(new).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(&rest, last).await;
    for id in &rest {
        let data = c.nodes[id].sm.data();
        assert_eq!(data.len(), 20);
        assert!(data.values().all(|v| v == "after"));
    }
    c.check_safety();
}
