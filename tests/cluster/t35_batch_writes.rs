//! `client_write_many`: many writes in one call, admitted whole or not at all, answered one by
//! one in order, each with the outcome it would have had alone.

use std::time::Duration;

use quorate::testing::Request;
use quorate::{ClientWriteError, Config, RaftError};

use crate::fixture::{TIMEOUT, TestCluster, init_tracing, test_config};

fn sets(key: &str, n: usize) -> Vec<Request> {
    (0..n).map(|i| Request::set(key, format!("v{i}"))).collect()
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_applied_in_order_and_answered_in_order() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;

    let answers = c.raft(leader).client_write_many(sets("k", 50)).await.expect("admitted");

    assert_eq!(answers.len(), 50);
    let mut previous = None;
    for (i, answer) in answers.iter().enumerate() {
        let resp = answer.as_ref().unwrap_or_else(|e| panic!("entry {i}: {e}"));
        assert!(previous.is_none_or(|p| resp.log_id.index == p + 1), "entry {i} follows the one before");
        previous = Some(resp.log_id.index);
        // The state machine answers each Set with the value it replaced: the one before it.
        let replaced = i.checked_sub(1).map(|j| format!("v{j}"));
        assert_eq!(resp.data.value, replaced, "entry {i} applied right after entry {}", i as i64 - 1);
    }
    c.wait_applied(&c.ids(), previous.expect("50 entries")).await;
    for id in c.ids() {
        assert_eq!(c.nodes[&id].sm.data()["k"], "v49");
    }
    c.check_safety();
}

/// A batch is refused whole, with nothing proposed, when the queue cannot take all of it: at
/// once for `try_client_write_many`, and for a batch larger than the whole queue.
#[tokio::test(start_paused = true)]
async fn a_batch_that_does_not_fit_is_refused_whole() {
    init_tracing();
    let config = Config { max_pending_requests: 8, max_pending_writes: 2, ..test_config() };
    let c = TestCluster::with_config(&[1, 2, 3], config).await;
    let leader = c.initialize(1).await;
    let raft = c.raft(leader).clone();

    let too_big = raft.client_write_many(sets("big", 9)).await;
    assert!(matches!(too_big, Err(RaftError::APIError(ClientWriteError::Overloaded))), "{too_big:?}");

    // Cut off, the leader commits nothing: two writes stay in progress and eight fill the queue.
    c.router.isolate(leader);
    let mut waiting = Vec::new();
    for i in 0..10 {
        let r = raft.clone();
        waiting.push(tokio::spawn(async move { r.client_write(Request::set("q", format!("{i}"))).await }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;

    let refused = raft.try_client_write_many(sets("t", 3)).await;

    assert!(matches!(refused, Err(RaftError::APIError(ClientWriteError::Overloaded))), "{refused:?}");
    c.router.restore(leader);
    for w in waiting {
        // Each of them went through or was refused; none is lost.
        let _ = w.await.expect("task");
    }
    let proposed = |e: &quorate::Entry<quorate::testing::TypeConfig>| format!("{:?}", e.payload).contains("\"t\"");
    for id in c.ids() {
        assert!(!c.nodes[&id].log.entries().iter().any(proposed), "node {id} holds an entry of the refused batch");
    }
}

/// A leader cut off in the middle of a batch: the entries it proposed are truncated by the
/// next leader and answered `Discarded`; the ones still queued when it stepped down are refused
/// with `ForwardToLeader`, never proposed.
#[tokio::test(start_paused = true)]
async fn a_leadership_change_mid_batch_discards_what_was_proposed_and_refuses_the_rest() {
    init_tracing();
    let config = Config { max_pending_writes: 4, ..test_config() };
    let c = TestCluster::with_config(&[1, 2, 3], config).await;
    let old = c.initialize(1).await;
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();
    let before = c.set(old, "k", "before").await.log_id.index;

    c.router.isolate(old);
    let raft = c.raft(old).clone();
    let batch = tokio::spawn(async move { raft.client_write_many(sets("k", 10)).await });
    // The old leader proposes the first four (its bound on writes in progress); the rest wait.
    c.raft(old)
        .wait(Some(TIMEOUT))
        .log_index_at_least(Some(before + 4), "the first part of the batch is proposed")
        .await
        .expect("proposed");
    let new = c.wait_for_leader(&others).await;
    c.set(new, "k", "after").await;
    c.router.restore(old);

    let answers = batch.await.expect("task").expect("admitted");

    let outcomes: Vec<&str> = answers
        .iter()
        .map(|a| match a {
            Err(RaftError::APIError(ClientWriteError::Discarded { .. })) => "discarded",
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => "forward",
            other => panic!("unexpected outcome {other:?}"),
        })
        .collect();
    assert_eq!(outcomes, [["discarded"; 4].as_slice(), ["forward"; 6].as_slice()].concat());
    c.wait_for_leader(&c.ids()).await;
    c.check_safety();
}
