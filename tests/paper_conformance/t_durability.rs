//! Commitment only after a quorum's durable append (Raft §5.3, §5.4; storage docs: "a leader
//! counts its own log only once flushed", "a follower answers Success only after flushing").

use std::time::Duration;

use crate::cluster::{Cluster, config};
use crate::types::Req;

/// Followers whose disks do not acknowledge: the leader must not commit, however long it waits.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn no_commit_until_a_follower_flushes() {
    let mut c = Cluster::new(3, config(), 2, false).await;
    c.init(&[1, 2, 3]).await;
    let l = c.leader().await;
    let f: Vec<u64> = (1..=3).filter(|i| *i != l).collect();
    c.write(l, "a", "1").await.expect("first write");
    let before = c.metrics(l).committed;

    for id in &f {
        c.log(*id).hold_flush(true);
    }
    let raft = c.raft(l);
    let w = tokio::spawn(async move { raft.client_write(Req::set("b", "2")).await });
    // Let a long time pass (virtual): the followers hold the entry, but not durably. The
    // election timeout is shorter than this: a follower that does not answer makes the
    // leader step down (storage docs), which is allowed; committing is not.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = c.metrics(l);
    assert_eq!(m.committed, before, "the leader committed an entry no follower made durable");
    assert!(!w.is_finished(), "the write returned before a quorum made it durable");
    for id in &f {
        let mm = c.metrics(*id);
        assert!(mm.last_log_index > before.map(|b| b.index), "follower {id} has the entry (not durable)");
        assert_eq!(m.replication.as_ref().unwrap()[id], before, "leader counts follower {id}'s non-durable entry");
    }
    // One follower's disk acknowledges: leader + it = quorum.
    c.log(f[0]).hold_flush(false);
    let r = w.await.unwrap();
    let r = r.expect("the write commits once a quorum holds it durably");
    c.acked.lock().unwrap().push(r.log_id);
    // The durable logs of a quorum hold it.
    let holders = (1..=3).filter(|id| c.log(*id).durable_ids().contains(&r.log_id)).count();
    assert!(holders >= 2, "only {holders} durable copies of a committed entry");
    c.log(f[1]).hold_flush(false);
    c.check();
    c.shutdown().await;
}

/// The leader's own flush counts only once done: with the leader's disk and one follower's
/// held, one durable copy out of three must not commit.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn leader_counts_itself_only_once_flushed() {
    let mut cfg = config();
    // Keep the leader from stepping down for its stalled disk during the test.
    cfg.max_log_io_stall = Duration::from_secs(30);
    cfg.election_timeout_min = Duration::from_millis(1500);
    cfg.election_timeout_max = Duration::from_millis(3000);
    cfg.heartbeat_interval = Duration::from_millis(100);
    let mut c = Cluster::new(3, cfg, 3, false).await;
    c.init(&[1, 2, 3]).await;
    let l = c.leader().await;
    let f: Vec<u64> = (1..=3).filter(|i| *i != l).collect();
    let first = c.write(l, "a", "1").await.expect("write");
    c.all_applied(first.log_id.index, Duration::from_secs(5)).await;

    c.log(l).hold_flush(true);
    c.log(f[0]).hold_flush(true);
    let raft = c.raft(l);
    let w = tokio::spawn(async move { raft.client_write(Req::set("b", "2")).await });
    c.raft(f[1])
        .wait(Some(Duration::from_secs(5)))
        .log_index_at_least(Some(first.log_id.index + 1), "f1 has the entry")
        .await
        .unwrap();
    // f[1] made it durable (its flush is not held); let its answer arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = c.metrics(l);
    assert_eq!(m.committed, Some(first.log_id), "committed with one durable copy: {m}");
    assert!(!w.is_finished());

    c.log(l).hold_flush(false);
    let r = w.await.unwrap().expect("leader + one follower durable = quorum");
    c.acked.lock().unwrap().push(r.log_id);
    c.log(f[0]).hold_flush(false);
    c.check();
    c.shutdown().await;
}

/// A crash loses what was not flushed; what was committed survives on a quorum, and a write
/// that was never durable on a quorum was never acknowledged.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn crash_of_every_node_keeps_committed_entries() {
    let mut c = Cluster::new(3, config(), 4, false).await;
    c.init(&[1, 2, 3]).await;
    let l = c.leader().await;
    let mut last = 0;
    for i in 0..10 {
        last = c.write(l, &format!("k{i}"), "v").await.expect("write").log_id.index;
    }
    let f: Vec<u64> = (1..=3).filter(|i| *i != l).collect();
    for id in &f {
        c.log(*id).hold_flush(true);
    }
    let raft = c.raft(l);
    let w = tokio::spawn(async move { raft.client_write(Req::set("lost", "x")).await });
    c.raft(f[0])
        .wait(Some(Duration::from_secs(5)))
        .log_index_at_least(Some(last + 1), "follower has it, not durable")
        .await
        .unwrap();
    // Every node crashes at once.
    for id in 1..=3 {
        c.crash(id).await;
    }
    let res = w.await.unwrap();
    assert!(res.is_err(), "a write durable on one node only was acknowledged: {res:?}");
    for id in 1..=3 {
        c.restart(id).await;
    }
    let l2 = c.leader().await;
    let r = c.write(l2, "after", "y").await.expect("write after restart");
    c.all_applied(r.log_id.index, Duration::from_secs(10)).await;
    for id in 1..=3 {
        let sm = c.sm(id);
        for i in 0..10 {
            assert_eq!(sm.get(&format!("k{i}")).as_deref(), Some("v"), "node {id} lost committed k{i}");
        }
    }
    c.check();
    c.shutdown().await;
}
