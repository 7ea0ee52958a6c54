//! What an operator reads: the metrics serialize into a report with ages instead of instants,
//! per-follower lag and stall times, and counters of elections and leader changes.

use std::time::Duration;

use crate::fixture::{TestCluster, init_tracing};

/// A leader whose follower stopped answering reports it: the follower's lag and how long its
/// replication has been stuck, in milliseconds, next to the counters.
#[tokio::test(start_paused = true)]
async fn metrics_serialize_into_an_operators_report() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.set(leader, "k", "v0").await;

    c.router.set_hang(follower, true);
    for i in 1..=5 {
        c.set(leader, "k", &format!("v{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let metrics = c.raft(leader).metrics().borrow().clone();

    let report = serde_json::to_value(&metrics).expect("metrics serialize");
    let key = follower.to_string();
    assert_eq!(report["state"], "Leader");
    assert!(report["elections_started"].as_u64() >= Some(1), "{report}");
    assert!(report["leader_changes"].as_u64() >= Some(1), "{report}");
    assert!(report["replication_lag"][&key].as_u64() >= Some(5), "{report}");
    let stuck = report["replication_stalled_for_ms"][&key].as_u64().expect("the hung follower's stall");
    assert!((500..=60_000).contains(&stuck), "stuck for {stuck} ms: {report}");
    assert!(report["log_io_stalled_for_ms"].is_null(), "{report}");
    assert!(report["quorum_acked_ms_ago"].as_u64().is_some(), "{report}");
    assert!(report["queues"]["in_flight"].is_object(), "{report}");
    c.router.set_hang(follower, false);
}

/// `wait_stopped` returns when a node stops by itself (here: its log store fails, a fatal
/// error), not only on `shutdown`, and the metrics say so by then: raft-kv shuts its process
/// down on it.
#[tokio::test(start_paused = true)]
async fn wait_stopped_returns_when_a_node_stops_on_a_fatal_error() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    c.set(leader, "k", "v0").await;
    let raft = c.raft(leader).clone();
    let stopped = tokio::spawn({
        let raft = raft.clone();
        async move { raft.wait_stopped().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stopped.is_finished(), "the node is still running");

    // A crash-and-restart of the store's other handles: every storage call of the running
    // node fails from now on.
    let _restarted = c.nodes[&leader].log.reopen();
    let _ = raft.client_write(quorate::testing::Request::set("k", "v1")).await;
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("wait_stopped returns after the fatal error")
        .expect("the waiter did not panic");
    assert_eq!(raft.metrics().borrow().state, quorate::ServerState::Shutdown);
}

/// `Raft::new` returns with the metrics of the state it loaded: read before the node's task
/// has run at all, they show its term, vote, log, membership and applied id, not a blank node
/// (found by a conformance suite written from the docs, which read term 0 after a restart).
#[tokio::test(start_paused = true)]
async fn metrics_show_the_loaded_state_as_soon_as_new_returns() {
    init_tracing();
    let mut c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let written = c.set(leader, "k", "v").await;
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.wait_applied(&[follower], written.log_id.index).await;
    let before = c.raft(follower).metrics().borrow().clone();

    // No await between `Raft::new` returning and this read: the node's task has not run.
    c.restart_node(follower).await;
    let after = c.raft(follower).metrics().borrow().clone();
    assert_eq!(after.current_term, before.current_term);
    assert_eq!(after.vote, before.vote);
    assert_eq!(after.last_log_id, before.last_log_id);
    assert_eq!(after.membership_config.log_id, before.membership_config.log_id);
    assert_eq!(after.state, quorate::ServerState::Follower);
}
