//! Keeping strangers out: every way in that is not a member of this cluster with its
//! certificate is refused, and the cluster serves on with nothing lost.

use std::time::Duration;

use quorate::tcp::wire::PREAMBLE;
use quorate::tcp::{TcpConfig, TcpNetworkFactory};
use quorate::testing::Request;
use quorate::{BasicNode, LeaderId, LogId, RPCError, RPCOption, RaftNetwork, RaftNetworkFactory, Vote, VoteRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::fixture::{C, Cluster, Node, Pki, WAIT};

const CLUSTER: &str = "guarded";

async fn tls_cluster(pki: &Pki) -> Cluster {
    Cluster::start(3, |id| TcpConfig::new(CLUSTER).with_tls(pki.node(CLUSTER, id))).await
}

/// A vote request as a stranger (node `from`) would send it to `node`, through a client of
/// `tcp`; the error it gets.
async fn vote_as(from: u64, tcp: TcpConfig, to: u64, node: &BasicNode) -> RPCError {
    let mut factory = TcpNetworkFactory::<C>::new(from, tcp);
    let mut client = factory.new_client(to, node).await;
    let req = VoteRequest::new(Vote::new(100, from), Some(LogId::new(LeaderId::new(99, from), 1_000_000)));
    match client.vote(req, RPCOption::new(Duration::from_secs(5))).await {
        Ok(resp) => panic!("a stranger got an answer: {resp:?}"),
        Err(e) => e,
    }
}

/// The cluster still takes writes, every node applies them, and nobody's term was moved by a
/// stranger's vote request (term 100).
async fn still_serving(cluster: &Cluster, tag: &str) {
    let leader = cluster.leader(None).await;
    let raft = &cluster.node(leader).raft;
    let resp = raft.client_write(Request::set(tag, "ok")).await.unwrap();
    for node in &cluster.nodes {
        let m = node.raft.wait(Some(WAIT)).applied_index_at_least(Some(resp.log_id.index), tag).await.unwrap();
        assert!(m.current_term < 100, "a stranger moved node {}'s term to {}", m.id, m.current_term);
        assert_eq!(node.sm.data().get(tag).map(String::as_str), Some("ok"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_the_cluster_serves_on() {
    let pki = Pki::new("cluster CA");
    let mut cluster = tls_cluster(&pki).await;
    cluster.init().await;
    let target = cluster.node(1).basic();

    // No certificate at all: a plain-TCP client.
    let e = vote_as(7, TcpConfig::new(CLUSTER), 1, &target).await;
    assert!(matches!(e, RPCError::Unreachable(_) | RPCError::Network(_)), "{e}");

    // A certificate of another CA that names the right node.
    let other = Pki::new("another CA");
    let e = vote_as(7, TcpConfig::new(CLUSTER).with_tls(other.node(CLUSTER, 7)), 1, &target).await;
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");

    // A certificate of this CA for node 2, used to claim to be node 7.
    let e = vote_as(7, TcpConfig::new(CLUSTER).with_tls(pki.node(CLUSTER, 2)), 1, &target).await;
    assert!(e.to_string().contains("does not name") && e.to_string().contains("node 7"), "{e}");

    // A certificate of this CA for node 2 of another cluster.
    let e = vote_as(2, TcpConfig::new("elsewhere").with_tls(pki.node("elsewhere", 2)), 1, &target).await;
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");

    still_serving(&cluster, "after-strangers").await;
    cluster.stop().await;
}

/// A node configured with another cluster's peers: it campaigns against them, and they refuse
/// it with a clear reason instead of joining its elections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused_with_a_clear_error() {
    let mut cluster = Cluster::start(3, |_| TcpConfig::new(CLUSTER)).await;
    cluster.init().await;
    let e = vote_as(9, TcpConfig::new("another"), 1, &cluster.node(1).basic()).await;
    assert!(e.to_string().contains("cluster id mismatch"), "{e}");
    assert!(e.to_string().contains("\"guarded\"") && e.to_string().contains("\"another\""), "{e}");

    // A whole node of the other cluster whose membership names this cluster's nodes.
    let mut intruder = Node::start(9, TcpConfig::new("another")).await;
    let mut members = cluster.members();
    members.insert(9, intruder.basic());
    intruder.raft.initialize(members).await.unwrap();
    // It campaigns (its pre-votes and votes are refused at the handshake) and never wins.
    intruder.raft.wait(Some(WAIT)).state(quorate::ServerState::Candidate, "campaigning").await.unwrap();
    still_serving(&cluster, "after-intruder").await;
    assert_eq!(intruder.raft.metrics().borrow().current_leader, None);
    let m = cluster.node(1).raft.metrics().borrow().clone();
    assert!(!m.membership_config.membership.nodes().contains_key(&9), "{:?}", m.membership_config);
    intruder.stop().await;
    cluster.stop().await;
}

/// Read until the server closes the connection; what it sent before.
async fn read_until_closed(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match tokio::time::timeout(WAIT, conn.read_to_end(&mut got)).await {
        Ok(_) => got,
        Err(_) => panic!("the server kept the connection open"),
    }
}

/// Random bytes, and frames over the bound, on the Raft port: the server closes the
/// connection, allocates nothing for the frame, and serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_and_oversized_frames_are_refused() {
    let tcp =
        || TcpConfig::new(CLUSTER).with_max_frame_bytes(1024 * 1024).with_handshake_timeout(Duration::from_millis(500));
    let mut plain = Cluster::start(3, |_| tcp()).await;
    plain.init().await;
    let addr = plain.node(1).addr.clone();

    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert!(read_until_closed(&mut conn).await.is_empty(), "no answer to what is not this protocol");

    // The right preamble, then a frame whose length is 4 GiB - 1.
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(&PREAMBLE).await.unwrap();
    conn.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    conn.write_all(&[0; 64]).await.unwrap();
    assert!(read_until_closed(&mut conn).await.is_empty());

    // The preamble and garbage that is not a hello.
    let mut conn = TcpStream::connect(&addr).await.unwrap();
    conn.write_all(&PREAMBLE).await.unwrap();
    conn.write_all(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
    assert!(read_until_closed(&mut conn).await.is_empty());

    // A connection that says nothing is closed after the handshake timeout.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    assert!(read_until_closed(&mut silent).await.is_empty());

    still_serving(&plain, "after-garbage").await;
    plain.stop().await;

    // The same on a TLS port: garbage fails the TLS handshake.
    let pki = Pki::new("cluster CA");
    let mut secure = tls_cluster(&pki).await;
    secure.init().await;
    let mut conn = TcpStream::connect(&secure.node(2).addr).await.unwrap();
    conn.write_all(&PREAMBLE).await.unwrap();
    conn.write_all(&[0x16, 3, 1, 0xff, 0xff, 1, 2, 3]).await.unwrap();
    let _ = read_until_closed(&mut conn).await;
    still_serving(&secure, "after-tls-garbage").await;
    secure.stop().await;
}

/// Before its hello is accepted, a stranger cannot announce a frame larger than a hello needs:
/// a length under `max_frame_bytes` but over the hello's bound closes the connection at once,
/// instead of the node waiting (and making room) for a frame of up to `max_frame_bytes` from
/// someone it does not know (found in review: 64 MiB per connection of plain TCP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_cannot_announce_a_large_frame_before_its_hello() {
    // A handshake timeout longer than the test waits: only the bound can close it in time.
    let tcp = || TcpConfig::new(CLUSTER).with_handshake_timeout(Duration::from_secs(3600));
    let mut plain = Cluster::start(3, |_| tcp()).await;
    plain.init().await;
    let mut conn = TcpStream::connect(&plain.node(1).addr).await.unwrap();
    conn.write_all(&PREAMBLE).await.unwrap();
    conn.write_all(&(1024u32 * 1024).to_le_bytes()).await.unwrap();
    conn.write_all(&[0; 64]).await.unwrap();
    assert!(read_until_closed(&mut conn).await.is_empty(), "closed at once, unanswered");
    still_serving(&plain, "after-large-hello").await;
    plain.stop().await;
}

/// Found in review (fixed; the test failed before): a connection took one of the server's
/// `max_connections` slots from the moment it is accepted, before its TLS handshake and hello,
/// and keeps it for up to `handshake_timeout` (5 s). A stranger with no certificate that opens
/// `max_connections` connections and sends nothing (renewing them every 5 s) holds every slot:
/// the server accepts no connection of its members, and their RPCs time out, although mutual
/// TLS is on to keep strangers out. (Eight slots here; 1024 by default, as cheap to hold.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_that_never_shake_hands_do_not_lock_members_out() {
    let pki = Pki::new("slow strangers CA");
    let mut tcp = TcpConfig::new(CLUSTER).with_tls(pki.node(CLUSTER, 2));
    tcp.max_connections = 8;
    let mut node = Node::start(2, tcp).await;
    let mut strangers = Vec::new();
    for _ in 0..8 {
        strangers.push(TcpStream::connect(&node.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_member_gets_in(&pki, &node).await;
    drop(strangers);
    node.stop().await;
}

/// More strangers than `max_pending_handshakes` at once: each new connection drops the oldest
/// one still doing its handshake, so a member, whose handshake is the newest, gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_pending_handshakes_the_oldest_stranger_is_dropped() {
    let pki = Pki::new("many strangers CA");
    // A handshake timeout longer than the test: only the bound can drop a stranger in time.
    let mut tcp =
        TcpConfig::new(CLUSTER).with_tls(pki.node(CLUSTER, 2)).with_handshake_timeout(Duration::from_secs(3600));
    tcp.max_pending_handshakes = 4;
    let mut node = Node::start(2, tcp).await;
    let mut strangers = Vec::new();
    for _ in 0..16 {
        strangers.push(TcpStream::connect(&node.addr).await.unwrap());
    }
    // The oldest twelve were dropped: the first stranger reads the end of its connection.
    let mut first = strangers.remove(0);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), first.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the oldest stranger is dropped: {read:?}");

    assert_member_gets_in(&pki, &node).await;
    drop(strangers);
    node.stop().await;
}

/// Node 1, a member with its certificate, calls node 2 (`node`) and is answered in time.
async fn assert_member_gets_in(pki: &Pki, node: &Node) {
    let member = TcpConfig::new(CLUSTER).with_tls(pki.node(CLUSTER, 1));
    let mut client = TcpNetworkFactory::<C>::new(1, member).new_client(2, &node.basic()).await;
    let req = VoteRequest::new(Vote::new(1, 1), Some(LogId::new(LeaderId::new(1, 1), 0)));
    let answered = client.vote(req, RPCOption::new(Duration::from_secs(2))).await;
    assert!(answered.is_ok(), "a member is locked out by strangers: {answered:?}");
}

/// Relay connections to `upstream`, each chunk from the client `delay` late (a member far
/// away, whose handshake takes that long per round trip); its address.
async fn slow_relay(upstream: String, delay: Duration) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                // As over a long path, the connection reaches the server with the client's
                // first bytes (they follow the TCP handshake's last packet at once); every
                // later chunk arrives `delay` after the client sent it.
                let (mut client_rd, mut client_wr) = client.into_split();
                let mut buf = vec![0u8; 64 * 1024];
                let Ok(first) = client_rd.read(&mut buf).await else { return };
                tokio::time::sleep(delay).await;
                let Ok(server) = TcpStream::connect(upstream).await else { return };
                let (mut server_rd, mut server_wr) = server.into_split();
                if server_wr.write_all(&buf[..first]).await.is_err() {
                    return;
                }
                tokio::spawn(async move {
                    while let Ok(n) = client_rd.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        if server_wr.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
            });
        }
    });
    addr
}

/// Strangers open a connection to `target` every 25 ms, the `n`th from address `source(n)`,
/// hold the last 64 and never send a byte. Abort the task to stop them.
fn flood(target: &str, source: impl Fn(u32) -> std::net::Ipv4Addr + Send + 'static) -> tokio::task::JoinHandle<()> {
    flood_saying(target, source, &[])
}

/// As [`flood`], but each stranger sends `first` at once and nothing more.
fn flood_saying(
    target: &str,
    source: impl Fn(u32) -> std::net::Ipv4Addr + Send + 'static,
    first: &'static [u8],
) -> tokio::task::JoinHandle<()> {
    let target: std::net::SocketAddr = target.parse().unwrap();
    tokio::spawn(async move {
        let mut held = std::collections::VecDeque::new();
        for n in 0.. {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((source(n), 0).into()).unwrap();
            if let Ok(mut s) = socket.connect(target).await {
                if !first.is_empty() {
                    let _ = s.write_all(first).await;
                }
                held.push_back(s);
                if held.len() > 64 {
                    held.pop_front();
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
}

/// Node 1, a member with its certificate, calls node 2 at `addr` up to three times (each
/// bounded by 2 s); the last answer.
async fn member_vote_via(pki: &Pki, addr: &str) -> Result<quorate::VoteResponse<C>, RPCError> {
    let member = TcpConfig::new(CLUSTER).with_tls(pki.node(CLUSTER, 1));
    let mut client = TcpNetworkFactory::<C>::new(1, member).new_client(2, &BasicNode::new(addr)).await;
    let mut answered = None;
    for _ in 0..3 {
        let req = VoteRequest::new(Vote::new(1, 1), Some(LogId::new(LeaderId::new(1, 1), 0)));
        let answer = client.vote(req, RPCOption::new(Duration::from_secs(2))).await;
        let ok = answer.is_ok();
        answered = Some(answer);
        if ok {
            break;
        }
    }
    answered.unwrap()
}

/// Found in review (the first bound dropped the oldest handshake, which failed this): a member
/// far away is the oldest pending handshake whenever strangers connect faster than
/// `max_pending_handshakes` per round trip of its handshake, so dropping the oldest locked it
/// out for as long as a modest flood lasted (here 40 connections a second against 4 pending and
/// a member 150 ms away). The bound now drops the oldest handshake of the address that holds
/// the most: a flood from another address (127.0.0.2 here) drops its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_strangers_does_not_evict_a_remote_members_handshakes() {
    let pki = Pki::new("flood CA");
    let mut tcp = TcpConfig::new(CLUSTER).with_tls(pki.node(CLUSTER, 2));
    tcp.max_pending_handshakes = 4;
    let mut node = Node::start(2, tcp).await;
    let far = slow_relay(node.addr.clone(), Duration::from_millis(150)).await;
    let flood = flood(&node.addr, |_| std::net::Ipv4Addr::new(127, 0, 0, 2));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let answered = member_vote_via(&pki, &far).await;
    flood.abort();
    assert!(answered.is_ok(), "a member 150 ms away is locked out by a flood of strangers: {answered:?}");
    node.stop().await;
}

/// Found in review (fails; ignored): the bound counts handshakes per source address, so a
/// member that shares its address with the flood (behind the same NAT, or on the same host,
/// as every node of these tests) is the oldest handshake of the address that holds the most
/// as soon as `max_pending_handshakes` strangers connected after it, and is dropped: the same
/// flood as above, from 127.0.0.1 instead of 127.0.0.2, locks the member out. Neither
/// `TcpConfig::max_pending_handshakes` nor the guide says that members sharing an address with
/// a flood are not protected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_a_members_own_address_does_not_evict_its_handshakes() {
    let pki = Pki::new("same address flood CA");
    let mut tcp = TcpConfig::new(CLUSTER).with_tls(pki.node(CLUSTER, 2));
    tcp.max_pending_handshakes = 4;
    let mut node = Node::start(2, tcp).await;
    // The relay connects to the node from 127.0.0.1, as the flood does.
    let far = slow_relay(node.addr.clone(), Duration::from_millis(150)).await;
    let flood = flood(&node.addr, |_| std::net::Ipv4Addr::LOCALHOST);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let answered = member_vote_via(&pki, &far).await;
    flood.abort();
    assert!(answered.is_ok(), "a member sharing its address with a flood is locked out: {answered:?}");
    node.stop().await;
}

/// Found in review (fails; ignored): a flood that draws each connection from an address of its
/// own holds one handshake per address, so the bound falls back to dropping the oldest of all,
/// and the member far away is locked out as before the per-address fix. The docs call this
/// "strangers on as many addresses as this bound", but one IPv6 host has a /64 (2^64
/// addresses) to draw from, so it costs a single stranger nothing. Simulated with 250 loopback
/// addresses, 127.0.1.x (IPv6 loopback has one address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_over_many_addresses_of_one_prefix_does_not_evict_a_remote_members_handshakes() {
    let pki = Pki::new("prefix flood CA");
    let mut tcp = TcpConfig::new(CLUSTER).with_tls(pki.node(CLUSTER, 2));
    tcp.max_pending_handshakes = 4;
    let mut node = Node::start(2, tcp).await;
    let far = slow_relay(node.addr.clone(), Duration::from_millis(150)).await;
    let flood = flood(&node.addr, |n| std::net::Ipv4Addr::new(127, 0, 1, 1 + (n % 250) as u8));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let answered = member_vote_via(&pki, &far).await;
    flood.abort();
    assert!(answered.is_ok(), "a member 150 ms away is locked out by a flood from one prefix: {answered:?}");
    node.stop().await;
}

/// Found in review (fails; ignored): "silent ones first" is told apart by one byte. The same
/// flood over many addresses as above, but each stranger sends a single byte (0x16, the first
/// byte of any TLS record) and then nothing: every stranger counts as one that spoke, each
/// source holds one, and the bound drops the oldest of all, which is the member far away
/// again. The commit says a flood "from many addresses no longer locks a far member out"; it
/// does, for the price of one byte a connection. Fix: rank pending handshakes by how far they
/// got (silent < spoke < TLS done / preamble read < hello read) and drop from the lowest rank
/// first; with TLS a stranger cannot pass the client-certificate check, so a member past TLS
/// is never dropped for strangers.
///
/// The ranking is in (`Stage`), and a member past TLS is safe; but a member far away spends a
/// round trip at "spoke", waiting for its second TLS flight, level with strangers that sent a
/// byte, and with one handshake per source the oldest of them goes: the member, still. A
/// flood that speaks, from as many sources as `max_pending_handshakes` per round trip, is
/// beyond what the bound can sort out (it is documented there); a firewall's. Kept, ignored,
/// as the measure of that limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known limit, documented on TcpConfig::max_pending_handshakes: a flood that speaks from many sources"]
async fn a_flood_that_sends_one_byte_over_many_addresses_does_not_evict_a_remote_members_handshakes() {
    let pki = Pki::new("one byte flood CA");
    let mut tcp = TcpConfig::new(CLUSTER).with_tls(pki.node(CLUSTER, 2));
    tcp.max_pending_handshakes = 4;
    let mut node = Node::start(2, tcp).await;
    let far = slow_relay(node.addr.clone(), Duration::from_millis(150)).await;
    let flood = flood_saying(&node.addr, |n| std::net::Ipv4Addr::new(127, 0, 1, 1 + (n % 250) as u8), &[0x16]);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let answered = member_vote_via(&pki, &far).await;
    flood.abort();
    assert!(answered.is_ok(), "a member 150 ms away is locked out by strangers sending one byte: {answered:?}");
    node.stop().await;
}

/// Found in review: a flood from one source whose connections each send a byte left every
/// older pending handshake past "silent", so each new connection, a member's too, was the one
/// silent handshake and dropped at once. The newest is never dropped now: the flood's own
/// source, holding the most, loses its oldest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_source_that_speaks_does_not_lock_out_a_member() {
    let pki = Pki::new("one source speaking flood CA");
    let mut tcp = TcpConfig::new(CLUSTER).with_tls(pki.node(CLUSTER, 2));
    tcp.max_pending_handshakes = 4;
    let mut node = Node::start(2, tcp).await;
    let far = slow_relay(node.addr.clone(), Duration::from_millis(150)).await;
    let flood = flood_saying(&node.addr, |_| std::net::Ipv4Addr::new(127, 0, 0, 2), &[0x16]);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let answered = member_vote_via(&pki, &far).await;
    flood.abort();
    assert!(answered.is_ok(), "a member is locked out by one source's speaking flood: {answered:?}");
    node.stop().await;
}
