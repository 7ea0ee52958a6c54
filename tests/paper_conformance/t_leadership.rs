//! Leadership transfer, client write outcomes and crash-restart from storage.

use std::collections::BTreeSet;
use std::time::Duration;

use quorate::error::{ClientWriteError, TransferLeaderError};
use quorate::{Fatal, RaftError, ServerState};

use crate::cluster::{Cluster, config};
use crate::types::Req;

/// Transfer to a caught-up follower: it leads next, the old leader refuses writes naming it,
/// and nothing committed is lost.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn transfer_leader_hands_over() {
    let mut c = Cluster::new(3, config(), 60, true).await;
    c.init(&[1, 2, 3]).await;
    let old = c.leader().await;
    let to = (1..=3).find(|i| *i != old).unwrap();
    let w = c.write(old, "k", "1").await.unwrap();
    c.raft(old).trigger().transfer_leader(to).await.expect("transfer");
    let m = c.raft(to).wait(Some(Duration::from_secs(5))).state(ServerState::Leader, "target leads").await.unwrap();
    assert!(m.current_term > w.log_id.leader_id.term);
    // Right after the transfer returns, the old leader may not have heard from the new one:
    // it refuses writes, naming the new leader once it knows it.
    match c.write(old, "k", "2").await {
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            assert!(f.leader_id.is_none() || f.leader_id == Some(to), "names {:?}", f.leader_id)
        }
        other => panic!("write at the old leader: {other:?}"),
    }
    c.raft(old).wait(Some(Duration::from_secs(5))).current_leader(to, "old leader learns the new").await.unwrap();
    match c.write(old, "k", "2").await {
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            assert_eq!(f.leader_id, Some(to), "the old leader names the new one")
        }
        other => panic!("write at the old leader: {other:?}"),
    }
    c.write(to, "k", "3").await.unwrap();
    c.check();
    c.shutdown().await;
}

/// A target that never holds the whole log durably (its disk does not acknowledge): the
/// transfer times out and the leader accepts writes again.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn transfer_to_a_target_that_cannot_catch_up_times_out() {
    let mut c = Cluster::new(3, config(), 61, false).await;
    c.init(&[1, 2, 3]).await;
    let old = c.leader().await;
    let to = (1..=3).find(|i| *i != old).unwrap();
    c.write(old, "k", "1").await.unwrap();
    c.log(to).hold_flush(true);
    c.write(old, "k", "2").await.unwrap(); // the third node acknowledges it
    let r = c.raft(old).trigger().transfer_leader(to).await;
    match r {
        Err(RaftError::APIError(TransferLeaderError::Timeout(t))) => assert_eq!(t, to),
        other => panic!("transfer to a lagging target: {other:?}"),
    }
    assert_eq!(c.metrics(old).state, ServerState::Leader);
    c.write(old, "k", "3").await.expect("writes accepted again after the transfer timed out");
    c.log(to).hold_flush(false);
    // Not a voter / another target while one is in progress.
    match c.raft(old).trigger().transfer_leader(42).await {
        Err(RaftError::APIError(TransferLeaderError::NotAVoter(42))) => {}
        other => panic!("transfer to a non-member: {other:?}"),
    }
    c.check();
    c.shutdown().await;
}

/// Client write outcomes: ForwardToLeader (not proposed), Discarded (never applied) and
/// Fatal on shutdown (unknown).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn client_write_outcomes() {
    let mut c = Cluster::new(3, config(), 62, false).await;
    c.init(&[1, 2, 3]).await;
    let l = c.leader().await;
    c.write(l, "k", "0").await.unwrap();
    let f = (1..=3).find(|i| *i != l).unwrap();
    match c.write(f, "fwd", "1").await {
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(x))) => assert_eq!(x.leader_id, Some(l)),
        other => panic!("write at a follower: {other:?}"),
    }

    // Discarded: proposed by a leader cut off, replaced by the new leader's entries.
    let others: Vec<u64> = (1..=3).filter(|i| *i != l).collect();
    c.net.cut(l, &others);
    let raft = c.raft(l);
    let pending = tokio::spawn(async move { raft.client_write(Req::set("lost", "1")).await });
    let l2 = c.leader_among(&others, Duration::from_secs(10)).await;
    let w = c.write(l2, "k", "2").await.unwrap();
    c.net.heal();
    match pending.await.unwrap() {
        Err(RaftError::APIError(ClientWriteError::Discarded { log_id })) => {
            assert_eq!(log_id.index, w.log_id.index - 1, "its index now holds the new leader's blank entry");
        }
        other => panic!("write of a deposed leader: {other:?}"),
    }
    let w3 = c.write(l2, "k", "3").await.unwrap();
    c.all_applied(w3.log_id.index, Duration::from_secs(5)).await;
    for id in 1..=3 {
        assert_eq!(c.sm(id).get("lost"), None);
        assert_eq!(c.sm(id).get("fwd"), None);
    }

    // Fatal: the node stops with the write pending.
    let f2: Vec<u64> = (1..=3).filter(|i| *i != l2).collect();
    for id in &f2 {
        c.log(*id).hold_flush(true);
    }
    let raft = c.raft(l2);
    let pending = tokio::spawn(async move { raft.client_write(Req::set("unknown", "1")).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.crash(l2).await;
    match pending.await.unwrap() {
        Err(RaftError::Fatal(Fatal::Stopped)) => {}
        other => panic!("write pending at shutdown: {other:?}"),
    }
    for id in &f2 {
        c.log(*id).hold_flush(false);
    }
    c.restart(l2).await;
    c.check();
    c.shutdown().await;
}

/// Crash-restart: the vote and the log come back from storage, terms never go back, and a
/// node that voted in a term does not vote for another candidate in it after a restart.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn vote_and_log_survive_restart() {
    let mut c = Cluster::new(3, config(), 63, false).await;
    c.init(&[1, 2, 3]).await;
    let l = c.leader().await;
    let mut last = None;
    for i in 0..5 {
        last = Some(c.write(l, &format!("k{i}"), "v").await.unwrap().log_id);
    }
    let votes: Vec<_> = (1..=3).map(|id| c.log(id).vote().unwrap()).collect();
    for id in 1..=3 {
        c.crash(id).await;
    }
    for id in 1..=3 {
        assert_eq!(c.log(id).vote(), Some(votes[id as usize - 1]), "node {id}'s vote is durable");
        c.restart(id).await;
        // Right after Raft::new returns, the metrics may still be those of a node that has
        // not loaded its state (term 0, empty log): wait for the load.
        let m = c
            .raft(id)
            .wait(Some(Duration::from_secs(1)))
            .metrics(|m| m.current_term > 0, "state loaded")
            .await
            .unwrap();
        assert!(m.current_term >= votes[id as usize - 1].term);
        assert!(m.last_log_id >= last, "node {id} lost its log: {m}");
    }
    let l2 = c.leader().await;
    assert!(c.metrics(l2).current_term > votes[0].term.max(votes[1].term).max(votes[2].term));
    let w = c.write(l2, "after", "1").await.unwrap();
    c.all_applied(w.log_id.index, Duration::from_secs(5)).await;
    let terms: BTreeSet<u64> = c.rec.lock().unwrap().elected.keys().copied().collect();
    assert!(terms.len() >= 2);
    c.check();
    c.shutdown().await;
}
