//! Linearizable reads, pre-vote, check-quorum and leadership transfer.

use std::time::Duration;

use maplit::btreeset;
use quorate::testing::Request;
use quorate::{LinearizableReadError, RaftError, ReadPolicy, ServerState, TransferLeaderError};
use tokio::time::Instant;

use crate::fixture::{TIMEOUT, TestCluster, init_tracing};

/// Raft §8: a read on the leader sees every write acknowledged before it started.
#[tokio::test(start_paused = true)]
async fn leader_read_sees_acknowledged_writes() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let last = c.set(leader, "k", "v").await.log_id;
    for policy in [ReadPolicy::ReadIndex, ReadPolicy::LeaseRead] {
        let read_at = c.raft(leader).ensure_linearizable(policy).await.unwrap();
        assert!(read_at >= Some(last), "{policy:?} reads at {read_at:?}, before the write at {last}");
        assert_eq!(c.nodes[&leader].sm.data().get("k").map(String::as_str), Some("v"));
    }
}

/// Follower reads: the leader gives the read index, the follower waits for it and reads its
/// own state machine, which then holds every write acknowledged before the read started.
#[tokio::test(start_paused = true)]
async fn follower_read_sees_acknowledged_writes() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    // Slow the follower's link so it lags behind what the leader acknowledges.
    c.router.set_delay(leader, follower, Duration::from_millis(30));
    for i in 0..20 {
        c.set(leader, &format!("k{i}"), &i.to_string()).await;
    }
    let index = c.raft(leader).get_read_index(ReadPolicy::ReadIndex).await.unwrap();
    c.raft(follower).wait_applied(index.read_log_id).await.unwrap();
    let data = c.nodes[&follower].sm.data();
    for i in 0..20 {
        assert_eq!(data.get(&format!("k{i}")), Some(&i.to_string()), "the follower read misses k{i}");
    }
}

/// A leader cut off in a minority never answers a linearizable read with possibly stale data:
/// it waits, then fails once check-quorum makes it step down.
#[tokio::test(start_paused = true)]
async fn isolated_leader_cannot_serve_a_linearizable_read() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let old = c.initialize(1).await;
    c.set(old, "k", "old").await;
    c.router.isolate(old);
    // Let the lease run out, so no read can be served from it either.
    tokio::time::sleep(c.config.election_timeout_min).await;

    let raft = c.raft(old).clone();
    let read = tokio::spawn(async move { raft.ensure_linearizable(ReadPolicy::LeaseRead).await });
    let rest: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();
    let new = c.wait_for_leader(&rest).await;
    c.set(new, "k", "new").await;

    let r = tokio::time::timeout(TIMEOUT, read).await.expect("the read ends").unwrap();
    assert!(
        matches!(r, Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_)))),
        "a deposed leader must not serve the read: {r:?}"
    );
}

/// Check-quorum: a leader that hears from no quorum steps down within the election timeout.
#[tokio::test(start_paused = true)]
async fn check_quorum_steps_down_an_isolated_leader() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    c.router.isolate(leader);
    let isolated_at = Instant::now();
    c.raft(leader).wait(Some(TIMEOUT)).state(ServerState::Follower, "stepped down").await.unwrap();
    let took = isolated_at.elapsed();
    assert!(
        took <= c.config.election_timeout_max + c.config.heartbeat_interval,
        "stepped down after {took:?}, beyond the election timeout"
    );
}

/// Pre-vote: a follower cut off for a long time campaigns in vain but does not raise its
/// term, so when it returns the leader and the term stay as they were.
#[tokio::test(start_paused = true)]
async fn rejoining_node_does_not_disturb_the_leader() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let other = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let term = c.raft(leader).metrics().borrow().current_term;

    c.router.isolate(other);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(c.raft(other).metrics().borrow().current_term, term, "pre-vote kept the term");
    c.router.restore(other);
    c.set(leader, "k", "v").await;
    let last = c.raft(leader).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(&[other], last).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    for id in c.ids() {
        let m = c.raft(id).metrics().borrow().clone();
        assert_eq!((m.current_term, m.current_leader), (term, Some(leader)), "node {id} was disturbed: {m}");
    }
}

/// Leader stickiness: a node that lost contact and starts a forced-free election cannot win
/// votes from nodes that still hear the leader.
#[tokio::test(start_paused = true)]
async fn one_way_partitioned_follower_cannot_depose_the_leader() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let other = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let term = c.raft(leader).metrics().borrow().current_term;
    // The follower no longer hears the leader, but can still reach everyone.
    c.router.block(leader, other);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = c.raft(leader).metrics().borrow().clone();
    assert_eq!((m.state, m.current_term), (ServerState::Leader, term), "the leader stays: {m}");
    c.set(leader, "k", "v").await;
}

/// Leadership transfer: the chosen node takes over and writes continue there.
#[tokio::test(start_paused = true)]
async fn transfer_leadership_to_a_chosen_node() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    for i in 0..50 {
        c.set(leader, &format!("k{i}"), "v").await;
    }
    let to = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.raft(leader).trigger().transfer_leader(to).await.unwrap();
    let new = c.wait_for_leader(&c.ids()).await;
    assert_eq!(new, to);
    c.set(to, "after", "transfer").await;
    let last = c.raft(to).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(&c.ids(), last).await;
    assert_eq!(c.nodes[&leader].sm.data().len(), 51);
    c.check_safety();
}

/// A transfer to a node that cannot take over times out cleanly and the leader goes on.
#[tokio::test(start_paused = true)]
async fn transfer_to_an_unreachable_node_times_out() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let to = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.router.isolate(to);
    let r = c.raft(leader).trigger().transfer_leader(to).await;
    assert!(matches!(r, Err(RaftError::APIError(TransferLeaderError::Timeout(t))) if t == to), "got {r:?}");
    assert_eq!(c.raft(leader).metrics().borrow().state, ServerState::Leader);
    c.raft(leader).client_write(Request::Noop).await.expect("writes are accepted again");
}

/// Found in review (a stale lease read where a crash meets a membership change): a leader that
/// moves its group to another node ({1} -> joint -> {2}) holds, once the final config {2} is
/// appended and until it learns that config committed, a lease counted on node 2's answers
/// alone. Node 2, restarted in that window with {2} durable, is its config's only voter; it
/// used to elect itself at once, ignoring the promise its answers made, and node 1 then served
/// a lease read that missed a write node 2 had acknowledged. Now a sole voter whose vote names
/// another node keeps that promise like any voter.
#[tokio::test(start_paused = true)]
async fn a_node_the_group_moved_to_restarted_in_the_old_leaders_lease_does_not_break_it() {
    init_tracing();
    let mut c = TestCluster::new(&[1]).await;
    c.initialize(1).await;
    c.set(1, "k", "old").await;
    // The final config {2} is on node 2 (and in effect on node 1) 50 ms before node 1 learns
    // that it is committed.
    c.start_moving_group(1, 2).await;
    c.raft(2)
        .wait(Some(TIMEOUT))
        .metrics(
            |m| {
                let config = &m.membership_config.membership;
                !config.is_joint() && config.voter_ids() == btreeset! {2}
            },
            "node 2 holds the final config {2}",
        )
        .await
        .unwrap();
    assert_eq!(c.raft(1).metrics().borrow().state, ServerState::Leader, "node 1 still leads");

    // Node 2 crashes and restarts, cut off from node 1; it becomes leader and a write to it
    // is acknowledged.
    c.router.block(1, 2);
    c.router.block(2, 1);
    c.restart_node(2).await;
    c.raft(2).wait(Some(TIMEOUT)).state(ServerState::Leader, "node 2 leads alone").await.unwrap();
    c.set(2, "k", "new").await;

    // A lease read on node 1 that starts after that write was acknowledged.
    let read = c.raft(1).ensure_linearizable(ReadPolicy::LeaseRead).await;
    let seen = c.nodes[&1].sm.data().get("k").cloned();
    assert!(
        read.is_err() || seen.as_deref() == Some("new"),
        "stale lease read on node 1: {read:?} saw k = {seen:?} after node 2 acknowledged k = new"
    );
}
