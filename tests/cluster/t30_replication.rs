//! Replication of many writes to every node.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use quorate::testing::Request;

use crate::fixture::{TestCluster, init_tracing};

/// 1000 writes from 10 concurrent clients commit, and every node applies all of them in the
/// same order (Raft §5.3, state machine safety).
#[tokio::test(start_paused = true)]
async fn thousand_writes_reach_every_node() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;

    let clients = (0..10).map(|client| {
        let raft = c.raft(leader).clone();
        async move {
            let mut acked = Vec::new();
            for i in 0..100 {
                let key = format!("c{client}-k{i}");
                let resp = raft
                    .client_write(Request::Set { key: key.clone(), value: i.to_string() })
                    .await
                    .expect("write commits");
                acked.push((resp.log_id, key, i.to_string()));
            }
            acked
        }
    });
    let acked: Vec<_> = join_all(clients).await.into_iter().flatten().collect();
    assert_eq!(acked.len(), 1000);

    let last = acked.iter().map(|(l, _, _)| l.index).max().unwrap();
    c.wait_applied(&c.ids(), last).await;

    let expected: BTreeMap<String, String> = acked.iter().map(|(_, k, v)| (k.clone(), v.clone())).collect();
    for id in c.ids() {
        assert_eq!(c.nodes[&id].sm.data(), expected, "node {id} holds every acknowledged write");
        assert_eq!(c.nodes[&id].log.entries().len() as u64, last + 1, "node {id} holds the whole log");
    }
    // Each write got its own log index.
    let mut indexes: Vec<_> = acked.iter().map(|(l, _, _)| l.index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(indexes.len(), 1000);
    c.check_safety();
}

/// Writes to a follower are refused with the leader's id and address, so a client can retry
/// at the right node.
#[tokio::test(start_paused = true)]
async fn follower_refuses_writes_naming_the_leader() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let err = c.raft(follower).client_write(Request::Noop).await.unwrap_err();
    match err {
        quorate::RaftError::APIError(quorate::ClientWriteError::ForwardToLeader(f)) => {
            assert_eq!(f.leader_id, Some(leader));
            assert_eq!(f.leader_node, Some(crate::fixture::node_addr(leader)));
        }
        other => panic!("expected ForwardToLeader, got {other:?}"),
    }
}
