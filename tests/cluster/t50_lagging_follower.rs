//! A follower cut off while the cluster moves on catches up when it returns.

use quorate::testing::RpcKind;

use crate::fixture::{TestCluster, init_tracing};

/// The number of probes a binary search over `n` entries may take, with slack for the first,
/// optimistic probe and a retry.
pub fn probe_bound(n: u64) -> u64 {
    2 * (64 - n.leading_zeros() as u64) + 3
}

/// Raft §5.3: a follower that missed 500 writes is brought up to date by the leader; the
/// leader finds where the logs match in O(log n) probes, then streams the rest.
#[tokio::test(start_paused = true)]
async fn isolated_follower_catches_up_with_few_probes() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let lagging = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.set(leader, "first", "1").await;
    // Read the index first: a watch borrow held across the await would block the leader's
    // next metrics publish, on this single-threaded runtime forever.
    let first = c.raft(leader).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(&c.ids(), first).await;

    c.router.isolate(lagging);
    for i in 0..500 {
        c.set(leader, &format!("k{i}"), &i.to_string()).await;
    }
    let behind = c.raft(lagging).metrics().borrow().last_log_index.unwrap();
    let last = c.raft(leader).metrics().borrow().last_log_index.unwrap();
    assert!(last >= behind + 500, "the isolated follower missed the writes");

    c.router.reset_counts();
    c.router.restore(lagging);
    c.wait_applied(&[lagging], last).await;

    let probes = c.router.rpc_count_from_to(leader, lagging, RpcKind::AppendEntries);
    assert!(probes >= 1, "the leader probed before streaming");
    assert!(probes <= probe_bound(last), "{probes} probes for a log of {last} entries");
    assert_eq!(c.nodes[&lagging].sm.data(), c.nodes[&leader].sm.data());
    c.check_safety();
}
