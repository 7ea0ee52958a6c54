//! The frame decoder on hostile input: what a real client sends, recorded through a proxy,
//! then mutated (bit flips, cuts, length fields), and random bytes. The decoder must refuse
//! or accept, never panic. A seeded, bounded stand-in for the coverage-guided fuzz target in
//! `fuzz/` (which CI runs too).

use std::time::Duration;

use futures_util::StreamExt;
use quorate::tcp::wire::{FrameDecoder, FrameError, PREAMBLE, decode_inbound};
use quorate::tcp::{TcpConfig, TcpNetworkFactory};
use quorate::testing::Request;
use quorate::{AppendEntriesRequest, Entry, LeaderId, LogId, RPCOption, RaftNetwork, RaftNetworkFactory, Vote};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::fixture::{C, Node};

const MAX: usize = 1024 * 1024;

/// Everything a client sent to a follower for a vote, a call and a replication stream,
/// recorded by a proxy between them.
async fn record_client_bytes() -> Vec<u8> {
    let mut follower = Node::start(2, TcpConfig::new("fuzz")).await;
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap().to_string();
    let upstream = follower.addr.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut client, _) = proxy.accept().await.unwrap();
        let mut server = TcpStream::connect(upstream).await.unwrap();
        let (mut cr, mut cw) = client.split();
        let (mut sr, mut sw) = server.split();
        let mut recorded = Vec::new();
        let to_server = async {
            let mut buf = [0u8; 4096];
            loop {
                let n = cr.read(&mut buf).await.unwrap_or(0);
                if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                recorded.extend_from_slice(&buf[..n]);
            }
        };
        let to_client = async {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        };
        tokio::select! { _ = to_server => {}, _ = to_client => {} }
        let _ = tx.send(recorded);
    });

    let mut factory = TcpNetworkFactory::<C>::new(1, TcpConfig::new("fuzz"));
    let mut client = factory.new_client(2, &quorate::BasicNode::new(&proxy_addr)).await;
    let option = RPCOption::new(Duration::from_secs(10));
    let log_id = |i| LogId::new(LeaderId::new(1, 1), i);
    let request = |i: u64| AppendEntriesRequest::<C> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: (i > 0).then(|| log_id(i - 1)),
        entries: vec![Entry::new_normal(log_id(i), Request::set(format!("k{i}"), "v"))],
        leader_commit: None,
        quiesce: None,
    };
    client.vote(quorate::VoteRequest::new(Vote::new(1, 1), None), option).await.unwrap();
    client.append_entries(request(0), option).await.unwrap();
    let answers: Vec<_> =
        client.stream_append(futures_util::stream::iter((1..5).map(request)), option).await.unwrap().collect().await;
    assert_eq!(answers.len(), 4);
    drop(client);
    drop(factory); // closes the connection: the proxy hands over what it recorded
    let recorded = rx.await.unwrap();
    follower.stop().await;
    recorded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decoder_refuses_or_accepts_mutated_and_random_input_without_panicking() {
    let genuine = record_client_bytes().await;
    assert!(genuine.starts_with(&PREAMBLE));
    // `QUORATE_FUZZ_CORPUS=tests/fuzz/corpus/frame_decoder` refreshes the fuzz target's seed.
    if let Some(dir) = std::env::var_os("QUORATE_FUZZ_CORPUS") {
        std::fs::write(std::path::Path::new(&dir).join("client-session"), &genuine).unwrap();
    }
    let whole = decode_inbound::<C>(&genuine, MAX).expect("a real client's bytes decode");
    assert!(whole >= 7, "hello, 2 calls, 4 appends (and stream ends): {whole} messages");

    let mut rng = StdRng::seed_from_u64(17);
    let mut refused = 0;
    for round in 0..20_000 {
        let mut input = genuine.clone();
        match round % 4 {
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..input.len());
                    input[at] ^= 1 << rng.random_range(0..8);
                }
            }
            1 => input.truncate(rng.random_range(0..input.len())),
            2 => {
                // A length field anywhere after the preamble set to something large.
                let at = rng.random_range(PREAMBLE.len()..input.len().saturating_sub(4));
                input[at..at + 4].copy_from_slice(&rng.random_range(MAX as u32..u32::MAX).to_le_bytes());
            }
            _ => {
                let len = rng.random_range(0..256);
                input = PREAMBLE.to_vec();
                input.extend((0..len).map(|_| rng.random::<u8>()));
            }
        }
        if decode_inbound::<C>(&input, MAX).is_err() {
            refused += 1;
        }
    }
    assert!(refused > 1000, "mutations are mostly refused: {refused}");

    let mut header = PREAMBLE.to_vec();
    header.extend_from_slice(&(MAX as u32 + 1).to_le_bytes());
    assert_eq!(decode_inbound::<C>(&header, MAX), Err(FrameError::TooLarge { len: MAX + 1, max: MAX }));
    assert_eq!(decode_inbound::<C>(b"GET / HTTP/1.1\r\n", MAX), Err(FrameError::BadPreamble));
}

/// A frame announced at the limit costs what arrived of it, not the limit: the decoder makes
/// room as the body comes (at most as much again as is buffered), so a peer must send bytes
/// to make a node hold them.
#[test]
fn an_announced_frame_costs_what_arrived_not_its_length() {
    let limit = 64 * 1024 * 1024;
    let mut decoder = FrameDecoder::new(limit);
    decoder.extend(&u32::try_from(limit).unwrap().to_le_bytes());
    decoder.extend(&[0; 100]);
    assert!(decoder.next_frame().unwrap().is_none(), "the frame is not whole");
    let room = decoder.buffer_mut().capacity();
    assert!(room < 1024 * 1024, "{room} bytes of room for 104 bytes of a frame");
    // As the body arrives the frame still decodes whole.
    let mut sent = 100;
    while sent < limit {
        let chunk = (limit - sent).min(1 << 20);
        decoder.extend(&vec![0; chunk]);
        sent += chunk;
        let _ = decoder.next_frame().unwrap();
    }
    assert!(decoder.buffer_mut().capacity() <= 3 * limit, "room grows with what arrived");
}

/// A preamble of another protocol version is told apart from one that is not quorate's at all:
/// the operator reads which versions met, not "bad preamble".
#[test]
fn a_preamble_of_another_version_says_so() {
    let mut other = PREAMBLE;
    other[6] = other[6].wrapping_sub(1);
    let mut decoder = FrameDecoder::new(1024);
    decoder.buffer_mut().extend_from_slice(&other);
    assert!(matches!(decoder.take_preamble(), Err(FrameError::Version { .. })), "{:?}", decoder.take_preamble());

    let mut decoder = FrameDecoder::new(1024);
    decoder.buffer_mut().extend_from_slice(b"GET / HTTP/1.1\r\n");
    assert_eq!(decoder.take_preamble(), Err(FrameError::BadPreamble));
}
