//! A deposed leader holding entries nobody else has: it cannot commit them, and the new
//! leader replaces them.

use std::time::Duration;

use quorate::testing::{Request, RpcKind};
use quorate::{ClientWriteError, RaftError, ServerState};

use crate::fixture::{TIMEOUT, TestCluster, init_tracing};
use crate::t50_lagging_follower::probe_bound;

/// Raft §5.3, §5.4: a leader cut off from the majority keeps appending but cannot commit;
/// when it returns it follows the new leader, its divergent suffix is truncated, its pending
/// writes fail as `Discarded` (never applied), and the logs converge. The leader finds the
/// match point by binary search even though the follower's log is longer than the match.
#[tokio::test(start_paused = true)]
async fn deposed_leader_cannot_commit_and_its_suffix_is_replaced() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let old = c.initialize(1).await;
    c.set(old, "base", "0").await;
    let base = c.raft(old).metrics().borrow().clone();
    c.wait_applied(&c.ids(), base.last_log_index.unwrap()).await;

    // Cut the leader off and have it accept 300 writes it can never commit.
    c.router.isolate(old);
    let stale_writes: Vec<_> = (0..300)
        .map(|i| {
            let raft = c.raft(old).clone();
            tokio::spawn(async move {
                raft.client_write(Request::Set { key: format!("stale{i}"), value: "x".into() }).await
            })
        })
        .collect();
    c.raft(old)
        .wait(Some(TIMEOUT))
        .log_index_at_least(Some(base.last_log_index.unwrap() + 300), "stale writes appended")
        .await
        .unwrap();

    // The majority elects a new leader and commits 100 writes of its own.
    let rest: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();
    let new = c.wait_for_leader(&rest).await;
    for i in 0..100 {
        c.set(new, &format!("new{i}"), "y").await;
    }
    let m_old = c.raft(old).metrics().borrow().clone();
    assert_eq!(m_old.committed, base.committed, "an isolated leader commits nothing");
    assert!(stale_writes.iter().all(|h| !h.is_finished()), "no stale write was acknowledged");

    // Reconnect: the old leader steps down and takes the new leader's log.
    c.router.reset_counts();
    c.router.restore(old);
    let last = c.raft(new).metrics().borrow().last_log_index.unwrap();
    c.raft(old).wait(Some(TIMEOUT)).current_leader(new, "old leader follows").await.unwrap();
    c.wait_applied(&[old], last).await;
    assert_eq!(c.raft(old).metrics().borrow().state, ServerState::Follower);

    for h in stale_writes {
        let r = tokio::time::timeout(Duration::from_secs(5), h).await.expect("answered").expect("task");
        match r {
            Err(RaftError::APIError(ClientWriteError::Discarded { log_id })) => {
                assert!(log_id.index > base.last_log_index.unwrap());
            }
            other => panic!("a stale write must be discarded, got {other:?}"),
        }
    }
    let data = c.nodes[&old].sm.data();
    assert!(data.keys().all(|k| !k.starts_with("stale")), "no stale write was applied");
    assert_eq!(data, c.nodes[&new].sm.data());
    let old_log: Vec<_> = c.nodes[&old].log.entries().iter().map(|e| e.log_id).collect();
    let new_log: Vec<_> = c.nodes[&new].log.entries().iter().map(|e| e.log_id).collect();
    assert_eq!(old_log, new_log, "the logs converged");

    let probes = c.router.rpc_count_from_to(new, old, RpcKind::AppendEntries);
    assert!(probes <= probe_bound(last), "{probes} probes for a log of {last} entries");
    c.check_safety();
}

/// Raft §5.4.2 (the paper's Figure 8) as a client sees it: a write removed from its leader's
/// log by a newer leader whose own entry there has not committed may still commit, from
/// another node that holds it. Five nodes: leader A gets its write W only onto C; B is elected
/// by the other three and its first entry reaches A (which truncates W) but is durable nowhere
/// else; B's voters crash and lose it; C, still holding W, is elected by them and commits W.
/// A must answer W's client `OutcomeUnknown`, not `Discarded` ("will never be applied").
#[tokio::test(start_paused = true)]
async fn a_write_truncated_before_its_replacement_commits_is_unknown_and_may_apply() {
    init_tracing();
    let mut c = TestCluster::new(&[1, 2, 3, 4, 5]).await;
    let a = c.initialize(1).await;
    c.set(a, "base", "0").await;
    let base = c.raft(a).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(&c.ids(), base).await;
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != a).collect();
    let (holder, rest) = (others[0], others[1..].to_vec());

    // A reaches only C: W is appended on both, and cannot commit.
    for r in &rest {
        c.router.block(a, *r);
    }
    let raft_a = c.raft(a).clone();
    let write =
        tokio::spawn(async move { raft_a.client_write(Request::Set { key: "w".into(), value: "1".into() }).await });
    c.raft(holder).wait(Some(TIMEOUT)).log_index_at_least(Some(base + 1), "C holds W").await.unwrap();

    // C goes quiet; the other three elect B, whose first entry is durable only where it
    // reaches A (their own flushes stall).
    c.router.isolate(holder);
    for r in &rest {
        c.nodes[r].log.set_flush_stalled(true);
    }
    let b = c.wait_for_leader(&rest).await;
    let answer = tokio::time::timeout(TIMEOUT, write).await.expect("W is answered").expect("task");
    // W is answered as its entry is truncated; B's entry is appended in its place right after.
    let a_log = &c.nodes[&a].log;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while a_log.last_log_id().is_none_or(|l| l.leader_id.term == 1) {
        assert!(tokio::time::Instant::now() < deadline, "A never took B's entry");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(a_log.last_log_id().map(|l| l.index), Some(base + 1), "A took B's entry in W's place");
    match answer {
        Err(RaftError::APIError(ClientWriteError::OutcomeUnknown { log_id })) => assert_eq!(log_id.index, base + 1),
        other => panic!("W was replaced by an entry that is not committed: its outcome is unknown, got {other:?}"),
    }

    // B's two voters crash, losing B's entry; with A and B cut off, C (holding W) and they are
    // a majority, and only C can be elected by it: their logs are shorter.
    c.router.isolate(a);
    c.router.isolate(b);
    let voters: Vec<u64> = rest.iter().copied().filter(|r| *r != b).collect();
    for v in &voters {
        c.restart_node(*v).await;
        c.nodes[v].log.set_flush_stalled(false);
    }
    c.router.restore(holder);
    let mut majority = voters.clone();
    majority.push(holder);
    assert_eq!(c.wait_for_leader(&majority).await, holder);
    c.raft(holder).wait(Some(TIMEOUT)).applied_index_at_least(Some(base + 2), "C commits W").await.unwrap();
    assert_eq!(c.nodes[&holder].sm.data().get("w").map(String::as_str), Some("1"), "W was applied");

    // Everyone converges on C's log.
    c.nodes[&b].log.set_flush_stalled(false);
    c.router.restore(a);
    c.router.restore(b);
    let last = c.raft(holder).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(&c.ids(), last).await;
    c.check_safety();
}
