//! Linearizable reads (Raft §8; dissertation §6.4): a read served after a write was
//! acknowledged must see it; a deposed leader must not serve stale data, by ReadIndex or by
//! lease, including across a leadership transfer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use quorate::error::LinearizableReadError;
use quorate::{RaftError, ReadPolicy};

use crate::cluster::{Cluster, config};
use crate::net::Msg;

type ReadOutcome = (Result<Option<String>, RaftError<LinearizableReadError<crate::types::C>>>, bool);

/// A read issued at `id` in a task: returns Ok(value read) or the error, and whether it
/// returned after `acked` was set.
fn spawn_read(
    c: &Cluster,
    id: u64,
    policy: ReadPolicy,
    acked: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<ReadOutcome> {
    let raft = c.raft(id);
    let sm = c.sm(id);
    tokio::spawn(async move {
        let r = raft.ensure_linearizable(policy).await;
        let after = acked.load(Ordering::SeqCst);
        (r.map(|_| sm.get("k")), after)
    })
}

fn assert_not_stale(what: &str, r: &ReadOutcome, new: &str) {
    if let (Ok(v), true) = r {
        assert_eq!(v.as_deref(), Some(new), "{what}: a read that returned after the write was acknowledged saw {v:?}");
    }
}

/// The leader is cut off; a new one is elected and acknowledges a write. Reads at the old
/// leader, issued before and after that write, must fail or see it.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn deposed_leader_serves_no_stale_read() {
    for (seed, pipelined) in [(10, false), (11, true)] {
        let mut c = Cluster::new(5, config(), seed, pipelined).await;
        c.init(&[1, 2, 3, 4, 5]).await;
        let old = c.leader().await;
        let w = c.write(old, "k", "v0").await.unwrap();
        c.all_applied(w.log_id.index, Duration::from_secs(5)).await;

        let others: Vec<u64> = (1..=5).filter(|i| *i != old).collect();
        c.net.cut(old, &others);
        let acked = Arc::new(AtomicBool::new(false));
        let mut early = Vec::new();
        for policy in [ReadPolicy::ReadIndex, ReadPolicy::LeaseRead] {
            early.push(spawn_read(&c, old, policy, acked.clone()));
        }
        let new = c.leader_among(&others, Duration::from_secs(10)).await;
        c.write(new, "k", "v1").await.expect("write at the new leader");
        acked.store(true, Ordering::SeqCst);
        let mut late = Vec::new();
        for policy in [ReadPolicy::ReadIndex, ReadPolicy::LeaseRead] {
            late.push(spawn_read(&c, old, policy, acked.clone()));
        }
        for h in early {
            let r = h.await.unwrap();
            assert_not_stale("early read at the old leader", &r, "v1");
        }
        for h in late {
            let r = h.await.unwrap();
            assert!(r.0.is_err(), "read at a deposed, partitioned leader succeeded: {:?}", r.0);
        }
        c.net.heal();
        c.check();
        c.shutdown().await;
    }
}

/// The leader tells the transfer target to campaign and is cut off at that moment. The
/// target wins by forced votes and acknowledges a write; the old leader's lease must have
/// ended when it sent the request (ReadPolicy::LeaseRead docs).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn lease_ends_when_transfer_is_sent() {
    for (seed, pipelined) in [(12, false), (13, true)] {
        let mut c = Cluster::new(3, config(), seed, pipelined).await;
        c.init(&[1, 2, 3]).await;
        let old = c.leader().await;
        let target = (1..=3).find(|i| *i != old).unwrap();
        let w = c.write(old, "k", "v0").await.unwrap();
        c.all_applied(w.log_id.index, Duration::from_secs(5)).await;
        // A lease read works now.
        c.raft(old).ensure_linearizable(ReadPolicy::LeaseRead).await.expect("lease read on a healthy leader");

        let sent = Arc::new(AtomicBool::new(false));
        let s = sent.clone();
        c.net.set_filter(Some(Arc::new(move |from, to, msg: &Msg| {
            if let Msg::Transfer(_) = msg {
                s.store(true, Ordering::SeqCst);
                return false;
            }
            s.load(Ordering::SeqCst) && (from == old || to == old)
        })));
        let raft = c.raft(old);
        let transfer = tokio::spawn(async move { raft.trigger().transfer_leader(target).await });
        let others: Vec<u64> = (1..=3).filter(|i| *i != old).collect();
        let new = c.leader_among(&others, Duration::from_secs(10)).await;
        assert!(sent.load(Ordering::SeqCst));
        let acked = Arc::new(AtomicBool::new(false));
        c.write(new, "k", "v1").await.expect("write at the new leader");
        acked.store(true, Ordering::SeqCst);
        let reads =
            [ReadPolicy::LeaseRead, ReadPolicy::ReadIndex].map(|policy| spawn_read(&c, old, policy, acked.clone()));
        for h in reads {
            let r = h.await.unwrap();
            assert!(r.0.is_err(), "the old leader served a read after handing over: {:?}", r.0);
        }
        let _ = transfer.await.unwrap();
        c.net.set_filter(None);
        c.check();
        c.shutdown().await;
    }
}

/// Reads issued at the leader while it transfers leadership, and follower reads through the
/// read index, must each see every write acknowledged before they returned.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn reads_racing_a_transfer_are_not_stale() {
    for seed in 20..24u64 {
        let pipelined = seed % 2 == 0;
        let mut c = Cluster::new(3, config(), seed, pipelined).await;
        c.net.set_chaos(Duration::from_millis(1), Duration::from_millis(3), 0.0, 0.0);
        c.init(&[1, 2, 3]).await;
        let old = c.leader().await;
        let target = (1..=3).find(|i| *i != old).unwrap();
        let w = c.write(old, "k", "v0").await.unwrap();
        c.all_applied(w.log_id.index, Duration::from_secs(5)).await;

        let acked = Arc::new(AtomicBool::new(false));
        let mut reads = Vec::new();
        let raft = c.raft(old);
        let transfer = tokio::spawn(async move { raft.trigger().transfer_leader(target).await });
        for i in 0..40u64 {
            let policy = if i % 2 == 0 { ReadPolicy::LeaseRead } else { ReadPolicy::ReadIndex };
            reads.push(spawn_read(&c, old, policy, acked.clone()));
            tokio::time::sleep(Duration::from_micros(500 * (seed % 3 + 1))).await;
            if c.metrics(target).state == quorate::ServerState::Leader && !acked.load(Ordering::SeqCst) {
                c.write(target, "k", "v1").await.expect("write at the new leader");
                acked.store(true, Ordering::SeqCst);
            }
        }
        transfer.await.unwrap().expect("transfer");
        if !acked.load(Ordering::SeqCst) {
            c.write(target, "k", "v1").await.expect("write at the new leader");
            acked.store(true, Ordering::SeqCst);
        }
        for h in reads {
            let r = h.await.unwrap();
            assert_not_stale(&format!("seed {seed}: read at the old leader"), &r, "v1");
        }
        // Follower read through the new leader's read index.
        let idx = c.raft(target).get_read_index(ReadPolicy::ReadIndex).await.expect("read index");
        c.raft(old).wait_applied(idx.read_log_id).await.unwrap();
        assert_eq!(c.sm(old).get("k").as_deref(), Some("v1"));
        c.check();
        c.shutdown().await;
    }
}

/// A write acknowledged by a leader that crashed right after: the next leader's read index
/// covers it, on the leader and through a follower read.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn new_leader_read_sees_write_acknowledged_by_old() {
    for seed in 30..33u64 {
        let mut c = Cluster::new(3, config(), seed, seed % 2 == 0).await;
        c.init(&[1, 2, 3]).await;
        let old = c.leader().await;
        let w = c.write(old, "k", "v1").await.unwrap();
        // Crash at once: the followers may not know yet that it committed.
        c.crash(old).await;
        let others: Vec<u64> = (1..=3).filter(|i| *i != old).collect();
        let new = c.leader_among(&others, Duration::from_secs(10)).await;
        let follower = others.iter().copied().find(|i| *i != new).unwrap();
        for policy in [ReadPolicy::ReadIndex, ReadPolicy::LeaseRead] {
            let idx = c.raft(new).get_read_index(policy).await.expect("read index");
            assert!(
                idx.read_log_id >= Some(w.log_id),
                "read index {:?} below acknowledged {}",
                idx.read_log_id,
                w.log_id
            );
            c.raft(new).ensure_linearizable(policy).await.expect("read");
            assert_eq!(c.sm(new).get("k").as_deref(), Some("v1"));
            c.raft(follower).wait_applied(idx.read_log_id).await.unwrap();
            assert_eq!(c.sm(follower).get("k").as_deref(), Some("v1"));
        }
        // On a follower, ensure_linearizable fails at once.
        assert!(c.raft(follower).ensure_linearizable(ReadPolicy::ReadIndex).await.is_err());
        c.restart(old).await;
        c.check();
        c.shutdown().await;
    }
}

/// The leader crashes and restarts at once, then is cut off; the others elect a new leader
/// that acknowledges a write. The restarted node must not serve a read, by lease or ReadIndex,
/// from whatever it held before the crash.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn restarted_leader_serves_no_stale_read() {
    for seed in 34..37u64 {
        let mut c = Cluster::new(3, config(), seed, seed % 2 == 0).await;
        c.init(&[1, 2, 3]).await;
        let old = c.leader().await;
        let w = c.write(old, "k", "v0").await.unwrap();
        c.all_applied(w.log_id.index, Duration::from_secs(5)).await;
        c.raft(old).ensure_linearizable(ReadPolicy::LeaseRead).await.unwrap();
        c.crash(old).await;
        c.restart(old).await;
        let acked = Arc::new(AtomicBool::new(false));
        let early =
            [ReadPolicy::LeaseRead, ReadPolicy::ReadIndex].map(|policy| spawn_read(&c, old, policy, acked.clone()));
        let others: Vec<u64> = (1..=3).filter(|i| *i != old).collect();
        c.net.cut(old, &others);
        let new = c.leader_among(&others, Duration::from_secs(10)).await;
        c.write(new, "k", "v1").await.unwrap();
        acked.store(true, Ordering::SeqCst);
        let late =
            [ReadPolicy::LeaseRead, ReadPolicy::ReadIndex].map(|policy| spawn_read(&c, old, policy, acked.clone()));
        for h in early {
            let r = h.await.unwrap();
            assert_not_stale("read at the restarted leader", &r, "v1");
        }
        for h in late {
            let r = h.await.unwrap();
            assert!(r.0.is_err(), "restarted, partitioned node served a read: {:?}", r.0);
        }
        c.net.heal();
        c.check();
        c.shutdown().await;
    }
}
