use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{blanks, log_id};
use crate::error::RPCError;
use crate::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use crate::storage::SnapshotMeta;
use crate::testing::{MemLogStore, MemStateMachine, Router, RouterNetwork, RpcKind, TypeConfig};
use crate::types::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest};
use crate::types::{StoredMembership, Vote};
use crate::{BasicNode, Config, Raft};

const OPTION: RPCOption = RPCOption { timeout: Duration::from_secs(1) };

/// Start node `id` with empty storage and register it with `router`.
async fn start_node(router: &Router, id: u64) -> (Raft<TypeConfig>, MemLogStore) {
    let log = MemLogStore::new();
    let raft = Raft::new(id, Arc::new(Config::default()), router.factory(id), log.clone(), MemStateMachine::new())
        .await
        .expect("a node with empty storage starts");
    router.add_node(id, raft.clone());
    (raft, log)
}

async fn client(router: &Router, from: u64, to: u64) -> RouterNetwork {
    router.factory(from).new_client(to, &BasicNode::default()).await
}

fn vote_req() -> VoteRequest<TypeConfig> {
    VoteRequest::new(Vote::new(1, 1), None)
}

/// The request of the elected leader 1 of term 1 that appends a blank entry at `index`.
fn append_req(index: u64) -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: index.checked_sub(1).map(|i| log_id(1, i)),
        entries: blanks(1, index..index + 1),
        leader_commit: None,
        quiesce: None,
    }
}

fn success(index: u64) -> AppendEntriesResponse<TypeConfig> {
    AppendEntriesResponse::Success { matched: Some(log_id(1, index)) }
}

#[tokio::test]
async fn blocked_link_returns_unreachable_in_one_direction() {
    let router = Router::new();
    let (node2, _) = start_node(&router, 2).await;
    let (node3, _) = start_node(&router, 3).await;
    let mut net = client(&router, 1, 2).await;

    router.block(1, 2);
    assert!(matches!(net.vote(vote_req(), OPTION).await, Err(RPCError::Unreachable(_))));
    assert!(matches!(net.append_entries(append_req(0), OPTION).await, Err(RPCError::Unreachable(_))));
    // The reverse direction and other links still work.
    client(&router, 2, 3).await.vote(vote_req(), OPTION).await.unwrap();

    router.unblock(1, 2);
    let resp = net.vote(vote_req(), OPTION).await.unwrap();
    assert!(resp.vote_granted);
    assert_eq!(router.rpc_count_from_to(1, 2, RpcKind::Vote), 2, "blocked requests count too");
    assert_eq!(router.rpc_count(RpcKind::Vote), 3);
    assert_eq!(router.rpc_count(RpcKind::AppendEntries), 1);

    router.reset_counts();
    assert_eq!(router.rpc_count(RpcKind::Vote), 0);
    node2.shutdown().await.unwrap();
    node3.shutdown().await.unwrap();
}

#[tokio::test]
async fn isolated_node_is_cut_both_ways_until_restored() {
    let router = Router::new();
    let (node2, _) = start_node(&router, 2).await;
    let (node3, _) = start_node(&router, 3).await;

    router.isolate(2);
    assert!(matches!(client(&router, 3, 2).await.vote(vote_req(), OPTION).await, Err(RPCError::Unreachable(_))));
    assert!(matches!(client(&router, 2, 3).await.vote(vote_req(), OPTION).await, Err(RPCError::Unreachable(_))));

    router.restore(2);
    client(&router, 3, 2).await.vote(vote_req(), OPTION).await.unwrap();
    client(&router, 2, 3).await.vote(vote_req(), OPTION).await.unwrap();
    node2.shutdown().await.unwrap();
    node3.shutdown().await.unwrap();
}

#[tokio::test]
async fn unknown_node_is_unreachable_and_snapshots_are_delivered() {
    let router = Router::new();
    let mut net = client(&router, 1, 9).await;
    assert!(matches!(net.vote(vote_req(), OPTION).await, Err(RPCError::Unreachable(_))));

    let (node2, _) = start_node(&router, 2).await;
    let req = InstallSnapshotRequest {
        vote: Vote::new_committed(1, 1),
        meta: SnapshotMeta { last_log_id: None, last_membership: StoredMembership::default(), snapshot_id: "s".into() },
        offset: 0,
        data: vec![],
        done: true,
    };
    let resp = client(&router, 1, 2).await.install_snapshot(req, OPTION).await.unwrap();
    assert_eq!(resp.vote, Vote::new_committed(1, 1), "the follower adopts the leader's vote");
    assert_eq!(resp.next_offset, 0, "an empty last chunk leaves the offset at 0");
    assert_eq!(router.rpc_count(RpcKind::InstallSnapshot), 1);

    // A removed node is unreachable, as if it had crashed.
    assert!(router.remove_node(2).is_some());
    assert!(matches!(client(&router, 1, 2).await.vote(vote_req(), OPTION).await, Err(RPCError::Unreachable(_))));
    node2.shutdown().await.unwrap();
}

#[tokio::test]
async fn stream_append_delivers_every_request_in_order() {
    let router = Router::new();
    let (node2, log2) = start_node(&router, 2).await;
    let mut net = client(&router, 1, 2).await;

    let input = futures_util::stream::iter((0..5).map(append_req));
    let responses: Vec<_> = net.stream_append(input, OPTION).await.unwrap().collect().await;

    let responses: Vec<_> = responses.into_iter().map(|r| r.expect("no error on a healthy link")).collect();
    assert_eq!(responses, (0..5).map(success).collect::<Vec<_>>());
    assert_eq!(log2.entries(), blanks(1, 0..5));
    assert_eq!(router.rpc_count(RpcKind::StreamOpen), 1);
    assert_eq!(router.rpc_count(RpcKind::StreamAppendRequest), 5);
    assert_eq!(router.rpc_count(RpcKind::AppendEntries), 0, "streamed requests are not probes");
    node2.shutdown().await.unwrap();
}

#[tokio::test]
async fn stream_append_ends_with_unreachable_when_the_link_is_blocked() {
    let router = Router::new();
    let (node2, log2) = start_node(&router, 2).await;
    let mut net = client(&router, 1, 2).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let input = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }).boxed();
    let mut responses = net.stream_append(input, OPTION).await.unwrap();

    tx.send(append_req(0)).unwrap();
    assert_eq!(responses.next().await.unwrap().unwrap(), success(0));

    router.block(1, 2);
    tx.send(append_req(1)).unwrap();
    assert!(matches!(responses.next().await, Some(Err(RPCError::Unreachable(_)))));
    assert!(responses.next().await.is_none(), "an error ends the stream");
    assert_eq!(log2.entries(), blanks(1, 0..1), "the blocked request was not delivered");

    // A blocked link cannot open a stream either.
    drop(responses);
    assert!(matches!(net.stream_append(futures_util::stream::empty(), OPTION).await, Err(RPCError::Unreachable(_))));
    node2.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn delayed_link_delivers_after_the_delay_and_stays_pipelined() {
    let router = Router::new();
    let (node2, _) = start_node(&router, 2).await;
    let mut net = client(&router, 1, 2).await;
    router.set_delay(1, 2, Duration::from_millis(100));

    let start = Instant::now();
    net.vote(vote_req(), OPTION).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(100));

    // Five streamed requests take one delay, not five.
    let start = Instant::now();
    let input = futures_util::stream::iter((0..5).map(append_req));
    let responses: Vec<_> = net.stream_append(input, OPTION).await.unwrap().collect().await;
    assert_eq!(responses.len(), 5);
    assert!(responses.iter().all(|r| r.is_ok()));
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(100) && elapsed < Duration::from_millis(200), "{elapsed:?}");
    node2.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn hung_node_never_answers() {
    let router = Router::new();
    let (node2, log2) = start_node(&router, 2).await;
    let mut net = client(&router, 1, 2).await;
    router.set_hang(2, true);

    let wait = Duration::from_secs(60);
    assert!(tokio::time::timeout(wait, net.vote(vote_req(), OPTION)).await.is_err());
    let mut responses = net.stream_append(futures_util::stream::iter([append_req(0)]), OPTION).await.unwrap();
    assert!(tokio::time::timeout(wait, responses.next()).await.is_err());
    drop(responses);
    assert!(log2.entries().is_empty());

    router.set_hang(2, false);
    net.vote(vote_req(), OPTION).await.unwrap();
    node2.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn delayed_answers_reach_the_sender_late_after_the_target_acted() {
    let router = Router::new();
    let (node2, log2) = start_node(&router, 2).await;
    let mut net = client(&router, 1, 2).await;
    router.set_answer_delay(1, 2, Duration::from_millis(300));

    let start = Instant::now();
    let answer = tokio::spawn(async move {
        let resp = net.append_entries(append_req(0), OPTION).await;
        (resp, net)
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(log2.entries(), blanks(1, 0..1), "the target appended at once");
    let (resp, mut net) = answer.await.unwrap();
    assert_eq!(resp.unwrap(), success(0));
    assert_eq!(start.elapsed(), Duration::from_millis(300));

    // Streamed answers keep their order, each held for the delay, not one after another.
    let start = Instant::now();
    let input = futures_util::stream::iter((1..4).map(append_req));
    let responses: Vec<_> = net.stream_append(input, OPTION).await.unwrap().collect().await;
    assert_eq!(responses.into_iter().map(Result::unwrap).collect::<Vec<_>>(), (1..4).map(success).collect::<Vec<_>>());
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(400), "{elapsed:?}");
    node2.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn late_requests_arrive_after_their_sender_gave_up() {
    let router = Router::new();
    let (node2, log2) = start_node(&router, 2).await;
    let mut net = client(&router, 1, 2).await;
    router.set_late_delivery(1, 2, Some(Duration::from_millis(800)));

    // The sender gives up after 500 ms; the request arrives at 800 ms all the same.
    let gave_up = tokio::time::timeout(Duration::from_millis(500), net.append_entries(append_req(0), OPTION)).await;
    assert!(gave_up.is_err());
    assert!(log2.entries().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(log2.entries(), blanks(1, 0..1));

    // A stream the sender drops still delivers what it had sent.
    let (tx, rx) = mpsc::unbounded_channel();
    let input = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) }).boxed();
    router.set_delay(1, 2, Duration::from_millis(100));
    let mut responses = net.stream_append(input, OPTION).await.unwrap();
    tx.send(append_req(1)).unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(50), responses.next()).await.is_err());
    drop(responses);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(log2.entries(), blanks(1, 0..2));
    node2.shutdown().await.unwrap();
}
