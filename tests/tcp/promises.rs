//! The four promises of the network contract (`quorate::network`), one test each, against a
//! follower served over TCP, with the transport's client playing the leader.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use quorate::tcp::{TcpConfig, TcpNetworkFactory};
use quorate::testing::Request;
use quorate::{
    AppendEntriesRequest, AppendEntriesResponse, Entry, LeaderId, LogId, RPCError, RPCOption, RaftNetwork,
    RaftNetworkFactory, Vote,
};
use tokio::sync::mpsc;

use crate::fixture::{C, CountingProxy, Node, WAIT};

const CLUSTER: &str = "promises";

fn log_id(index: u64) -> LogId<C> {
    LogId::new(LeaderId::new(1, 1), index)
}

/// Request `k` (from 0) of a run of requests of `per` entries each, the log starting at index
/// 0: it follows request `k - 1`.
fn request(k: u64, per: u64) -> AppendEntriesRequest<C> {
    let first = k * per;
    let prev_log_id = (first > 0).then(|| log_id(first - 1));
    let entries = (first..first + per)
        .map(|i| Entry::new_normal(log_id(i), Request::set(format!("k{i}"), format!("v{i}"))))
        .collect();
    AppendEntriesRequest { vote: Vote::new_committed(1, 1), prev_log_id, entries, leader_commit: None, quiesce: None }
}

/// A follower (node 2) and the client of a leader (node 1) that reaches it.
async fn follower_and_leader() -> (Node, TcpNetworkFactory<C>) {
    let follower = Node::start(2, TcpConfig::new(CLUSTER)).await;
    (follower, TcpNetworkFactory::new(1, TcpConfig::new(CLUSTER)))
}

fn option() -> RPCOption {
    RPCOption::new(WAIT)
}

type Input = Pin<Box<dyn Stream<Item = AppendEntriesRequest<C>> + Send>>;

/// An input stream the test feeds by hand.
fn hand_fed() -> (mpsc::UnboundedSender<AppendEntriesRequest<C>>, Input) {
    let (tx, rx) = mpsc::unbounded_channel();
    let input = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    (tx, Box::pin(input))
}

fn matched(resp: &AppendEntriesResponse<C>) -> Option<LogId<C>> {
    match resp {
        AppendEntriesResponse::Success { matched } => *matched,
        other => panic!("expected a success, got {other:?}"),
    }
}

/// Promise 1: a request is delivered whole. Every acknowledged request's entries are all in
/// the follower's log, exactly as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promise_1_every_acknowledged_request_arrives_whole() {
    let (mut follower, mut leader) = follower_and_leader().await;
    let mut client = leader.new_client(2, &follower.basic()).await;
    let sent: Vec<_> = (0..20).map(|k| request(k, 5)).collect();
    let expected: Vec<Entry<C>> = sent.iter().flat_map(|r| r.entries.clone()).collect();
    let responses: Vec<_> =
        client.stream_append(futures_util::stream::iter(sent), option()).await.unwrap().collect().await;
    let last = responses.last().and_then(|r| r.as_ref().ok()).and_then(matched);
    assert_eq!(last, Some(log_id(99)), "the last request is acknowledged");
    let logged = follower.log.entries();
    assert_eq!(format!("{logged:?}"), format!("{expected:?}"), "the follower holds every entry, whole");
    follower.stop().await;
}

/// Promise 2: requests arrive in order, at most once. Each request follows the one before
/// (its `prev_log_id` is the last entry of the previous one), so one delivered out of order
/// would be answered with a conflict; one delivered twice would be answered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promise_2_requests_arrive_in_order_and_once() {
    let (mut follower, mut leader) = follower_and_leader().await;
    let mut client = leader.new_client(2, &follower.basic()).await;
    let sent: Vec<_> = (0..200).map(|k| request(k, 1)).collect();
    let responses: Vec<_> =
        client.stream_append(futures_util::stream::iter(sent), option()).await.unwrap().collect().await;
    assert!(responses.len() <= 200, "{} answers to 200 requests: some request was delivered twice", responses.len());
    let mut previous = None;
    for r in responses {
        let m = matched(&r.expect("no error"));
        assert!(m > previous, "answers go forward: {m:?} after {previous:?}");
        previous = m;
    }
    assert_eq!(previous, Some(log_id(199)));
    follower.stop().await;
}

/// Promise 3: answers come back in request order, each the follower's own answer to one
/// request: a request that does not match the follower's log gets its own conflict, in its
/// place, between the successes of its neighbours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promise_3_answers_come_in_request_order_each_its_own() {
    let (mut follower, mut leader) = follower_and_leader().await;
    let mut client = leader.new_client(2, &follower.basic()).await;
    let mut stray = request(50, 1); // its prev_log_id, index 49, is not in the follower's log
    stray.entries.clear();
    let sent = vec![request(0, 1), request(1, 1), stray, request(2, 1)];
    let responses: Vec<_> = client
        .stream_append(futures_util::stream::iter(sent), option())
        .await
        .unwrap()
        .map(|r| r.expect("no error"))
        .collect()
        .await;
    let shown: Vec<String> = responses.iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(responses.len(), 4, "{shown:?}");
    assert_eq!(matched(&responses[0]), Some(log_id(0)));
    assert_eq!(matched(&responses[1]), Some(log_id(1)));
    assert!(
        matches!(responses[2], AppendEntriesResponse::Conflict { prev_log_id, .. } if prev_log_id == Some(log_id(49))),
        "{shown:?}"
    );
    assert_eq!(matched(&responses[3]), Some(log_id(2)));
    follower.stop().await;
}

/// Promise 4: an error ends the stream. When the follower goes away mid-stream, the answer
/// stream yields one error and then ends; it does not reconnect and resend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promise_4_an_error_ends_the_stream() {
    let (mut follower, mut leader) = follower_and_leader().await;
    let mut client = leader.new_client(2, &follower.basic()).await;
    let (feed, input) = hand_fed();
    let mut answers = client.stream_append(input, option()).await.unwrap();
    feed.send(request(0, 1)).unwrap();
    assert_eq!(matched(&answers.next().await.unwrap().unwrap()), Some(log_id(0)));

    follower.stop().await; // the server closes its connections
    feed.send(request(1, 1)).unwrap();
    let failed = tokio::time::timeout(WAIT, answers.next()).await.expect("an answer in time");
    assert!(matches!(failed, Some(Err(RPCError::Network(_) | RPCError::Unreachable(_)))), "{failed:?}");
    // The stream let go of its input when it ended: nothing more can be sent on it.
    assert!(feed.send(request(2, 1)).is_err(), "the ended stream still holds its input");
    let after = tokio::time::timeout(WAIT, answers.next()).await.expect("the stream ends in time");
    assert!(after.is_none(), "the stream ended after its error: {after:?}");
}

/// Calls and a stream from two clients of one factory to the same follower (one shared
/// connection) all get their own answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_streams_to_one_peer_get_their_own_answers() {
    let (mut follower, mut leader) = follower_and_leader().await;
    let mut a = leader.new_client(2, &follower.basic()).await;
    let mut b = leader.new_client(2, &follower.basic()).await;
    let first = a.append_entries(request(0, 1), option()).await.unwrap();
    assert_eq!(matched(&first), Some(log_id(0)));
    let answers: Vec<_> =
        b.stream_append(futures_util::stream::iter(vec![request(1, 1)]), option()).await.unwrap().collect().await;
    assert_eq!(matched(answers[0].as_ref().unwrap()), Some(log_id(1)));
    let vote = a.vote(quorate::VoteRequest::new(Vote::new(2, 1), Some(log_id(1))), option()).await.unwrap();
    assert_eq!(vote.last_log_id, Some(log_id(1)), "the follower's own answer");
    follower.stop().await;
}

/// One connection per peer: every call and stream of every client a node's factory hands out
/// for one target travels on one connection, opened once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_to_a_peer_shares_one_connection() {
    let (mut follower, mut leader) = follower_and_leader().await;
    let proxy = CountingProxy::start(follower.addr.clone()).await;
    let through_proxy = quorate::BasicNode::new(&proxy.addr);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(leader.new_client(2, &through_proxy).await);
    }
    let mut next = 0;
    for round in 0..3 {
        for client in &mut clients {
            let answers: Vec<_> = client
                .stream_append(futures_util::stream::iter(vec![request(next, 1), request(next + 1, 1)]), option())
                .await
                .unwrap()
                .collect()
                .await;
            next += 2;
            assert_eq!(answers.len(), 2, "round {round}");
            let _ = client.vote(quorate::VoteRequest::new(Vote::new(1, 1), None), option()).await.unwrap();
        }
    }
    assert_eq!(proxy.accepted(), 1, "connections opened to one peer");
    follower.stop().await;
}

/// A group has one leader, and a leader one stream to a follower: a second stream on the
/// connection replaces the first, whose later requests no longer reach the node (a stale
/// request of a stream its leader gave up on, handled after the new stream's, could undo what
/// those did: found in review).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stream_replaces_the_open_one() {
    let (mut follower, mut leader) = follower_and_leader().await;
    let mut old_client = leader.new_client(2, &follower.basic()).await;
    let mut new_client = leader.new_client(2, &follower.basic()).await;
    let (old_feed, old_input) = hand_fed();
    let mut old = old_client.stream_append(old_input, option()).await.unwrap();
    old_feed.send(request(0, 1)).unwrap();
    assert_eq!(matched(&old.next().await.unwrap().unwrap()), Some(log_id(0)));

    let (new_feed, new_input) = hand_fed();
    let mut new = new_client.stream_append(new_input, option()).await.unwrap();
    let mut heartbeat = request(1, 1);
    heartbeat.entries.clear();
    new_feed.send(heartbeat.clone()).unwrap();
    assert_eq!(matched(&new.next().await.unwrap().unwrap()), Some(log_id(0)));
    // The old stream's next request is dropped: no answer comes (watched for a while, as the
    // answer of a request handled comes at once), and its entry is not in the log.
    old_feed.send(request(1, 1)).unwrap();
    let answered = tokio::time::timeout(std::time::Duration::from_millis(500), old.next()).await;
    assert!(!matches!(answered, Ok(Some(Ok(_)))), "the replaced stream's request was handled: {answered:?}");
    new_feed.send(heartbeat).unwrap();
    assert_eq!(matched(&new.next().await.unwrap().unwrap()), Some(log_id(0)));
    let logged: Vec<u64> = follower.log.entries().iter().map(|e| e.log_id.index).collect();
    assert_eq!(logged, vec![0], "the replaced stream's request reached the node");
    follower.stop().await;
}

/// A proxy whose forwarding can be frozen: once frozen it moves no more bytes either way and
/// closes nothing, as a path that partitions (or a peer that loses power) looks to the node on
/// the other end: no FIN, no RST, just silence.
struct FreezingProxy {
    addr: String,
    freeze: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezingProxy {
    async fn start(upstream: String) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (freeze, frozen) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream.clone()).await else { continue };
                let (client_rd, client_wr) = client.into_split();
                let (server_rd, server_wr) = server.into_split();
                for (mut rd, mut wr) in [
                    (
                        Box::new(client_rd) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(server_wr) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(server_rd), Box::new(client_wr)),
                ] {
                    let mut frozen = frozen.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            tokio::select! {
                                _ = async { let _ = frozen.wait_for(|f| *f).await; } => {
                                    // Hold both halves open, and move nothing, for good.
                                    std::future::pending::<()>().await;
                                }
                                n = rd.read(&mut buf) => match n {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => if wr.write_all(&buf[..n]).await.is_err() { return },
                                },
                            }
                        }
                    });
                }
            }
        });
        Self { addr, freeze, task }
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Found in review (fixed; the test failed before): a connection whose peer went silent (a
/// partition that outlasts the peer's FIN retries, a peer that lost power) while one of its
/// replication streams was open is never closed: the server counts an open stream as busy,
/// so its idle timeout never applies, and it sends nothing on a stream that gets no requests,
/// so no write error ever tells it either. Each such connection keeps one of
/// `max_connections` (and its tasks and buffers) for good; once they are all kept, the server
/// accepts no connection from anyone. A leader sends a request on an open stream every
/// heartbeat interval (a quiesced one closes its streams), so a stream with no request for
/// `idle_timeout` is one whose peer is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_peer_vanished_with_a_stream_open_is_closed() {
    let mut tcp = TcpConfig::new(CLUSTER).with_idle_timeout(std::time::Duration::from_millis(300));
    tcp.max_connections = 1;
    let mut follower = Node::start(2, tcp.clone()).await;
    let proxy = FreezingProxy::start(follower.addr.clone()).await;

    // The leader (node 1) reaches the follower through the proxy; its stream is answered.
    let mut leader = TcpNetworkFactory::<C>::new(1, tcp.clone());
    let mut client = leader.new_client(2, &quorate::BasicNode::new(&proxy.addr)).await;
    let (feed, input) = hand_fed();
    let mut answers = client.stream_append(input, option()).await.unwrap();
    feed.send(request(0, 1)).unwrap();
    assert_eq!(matched(&answers.next().await.unwrap().unwrap()), Some(log_id(0)));

    // The path goes silent for many idle timeouts; the leader's side gives up on it.
    let _ = proxy.freeze.send(true);
    drop(answers);
    drop(client);
    drop(leader);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    // Another node calls the follower directly: the vanished peer's connection must have
    // been closed by now, or this one is never accepted.
    let mut other = TcpNetworkFactory::<C>::new(3, tcp).new_client(2, &follower.basic()).await;
    let req = quorate::VoteRequest::new(Vote::new(5, 3), Some(log_id(0)));
    let answered = other.vote(req, RPCOption::new(std::time::Duration::from_secs(3))).await;
    assert!(answered.is_ok(), "the server accepts no connection: {answered:?}");
    follower.stop().await;
}
