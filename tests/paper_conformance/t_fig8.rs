//! Raft §5.4.2, Figure 8: a leader must not commit an entry of an earlier term by counting its
//! replicas; it commits it only through an entry of its own term.
//!
//! Five nodes. Votes are steered with a message filter (vote requests from all but the wanted
//! candidate are dropped), and `max_payload_entries = 1` lets the network deliver the old-term
//! entry while dropping the leader's own-term entry behind it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use quorate::{LogId, ServerState};

use crate::cluster::{Cluster, config};
use crate::net::Msg;
use crate::types::{C, Req};

/// Only `candidates` may send vote requests; appends from `mute` are dropped, and appends from
/// `cap_from` that carry an entry of a term above `cap_term` are dropped.
fn steer(c: &Cluster, candidates: &[u64], mute: &[u64], cap: Option<(u64, u64)>) {
    let candidates: BTreeSet<u64> = candidates.iter().copied().collect();
    let mute: BTreeSet<u64> = mute.iter().copied().collect();
    c.net.set_filter(Some(Arc::new(move |from, _to, msg: &Msg| match msg {
        Msg::Vote(_) => !candidates.contains(&from),
        Msg::Append(req) => {
            mute.contains(&from)
                || cap.is_some_and(|(who, term)| {
                    from == who && req.entries.iter().any(|e| e.log_id.leader_id.term > term)
                })
        }
        _ => false,
    })));
}

struct Fig8 {
    c: Cluster,
    /// The old-term entry S1 wrote and S2 holds (index p).
    x: LogId<C>,
    /// S5's entry at index p, of a later term, in S5's log only.
    s5_entry: LogId<C>,
}

/// Figure 8 (a)-(c): returns with S1 leading again, (T_x, p) replicated to S1..S4 (a majority),
/// S1's own-term entry held back from everyone, and S5 down with (T5, p).
async fn setup(seed: u64) -> Fig8 {
    let mut cfg = config();
    cfg.max_payload_entries = 1;
    let mut c = Cluster::new(5, cfg, seed, false).await;
    steer(&c, &[1], &[], None);
    c.init(&[1, 2, 3, 4, 5]).await;
    assert_eq!(c.leader().await, 1);
    let a = c.write(1, "a", "1").await.expect("write a");
    c.all_applied(a.log_id.index, Duration::from_secs(5)).await;
    let p = a.log_id.index + 1;

    // (a) S1 leads; x reaches S2 only.
    c.net.partition(&[&[1, 2], &[3, 4, 5]]);
    let s1 = c.raft(1);
    tokio::spawn(async move {
        let _ = s1.client_write(Req::set("x", "old")).await;
    });
    let m2 = c.raft(2).wait(Some(Duration::from_secs(5))).log_index_at_least(Some(p), "S2 holds x").await.unwrap();
    let x = m2.last_log_id.unwrap();
    assert_eq!(x.index, p);

    // (b) S1 crashes; S5 is elected by S3, S4 and appends its own entry at p, which reaches nobody.
    c.crash(1).await;
    steer(&c, &[5], &[5], None);
    c.net.partition(&[&[2], &[3, 4, 5]]);
    assert_eq!(c.leader_among(&[5], Duration::from_secs(10)).await, 5);
    let m5 = c.raft(5).wait(Some(Duration::from_secs(5))).log_index_at_least(Some(p), "S5 appends at p").await.unwrap();
    let s5_entry = m5.last_log_id.unwrap();
    assert!(s5_entry.leader_id.term > x.leader_id.term);
    c.crash(5).await;

    // (c) S1 restarts and is elected (S2, S3, S4); it replicates x to S3 and S4, but its own
    // term's entries are dropped on the way.
    c.net.heal();
    steer(&c, &[1], &[], Some((1, x.leader_id.term)));
    c.restart(1).await;
    assert_eq!(c.leader_among(&[1], Duration::from_secs(20)).await, 1);
    c.raft(1)
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| {
                m.replication.as_ref().is_some_and(|r| {
                    [2, 3, 4].iter().all(|id| r.get(id).copied().flatten().is_some_and(|l| l.index >= p))
                })
            },
            "x replicated to S2, S3, S4",
        )
        .await
        .unwrap();
    Fig8 { c, x, s5_entry }
}

/// Figure 8 (c)-(d): x is on four of five nodes, but S1 must not count that as committed; S5
/// may then still be elected and overwrite it.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn old_term_entry_not_committed_by_counting_replicas() {
    let Fig8 { mut c, x, s5_entry } = setup(8).await;
    let p = x.index;
    // Let the leader work for a while (virtual time): it keeps retrying its own entry.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m1 = c.metrics(1);
    assert!(m1.committed.is_none_or(|l| l.index < p), "S1 committed an old-term entry by counting replicas: {m1}");
    assert!(!c.rec.lock().unwrap().applied.contains_key(&p), "someone applied index {p}");

    // (d) S1 crashes, S5 comes back and is elected by S2, S3, S4 (its last entry's term is
    // higher): it overwrites x everywhere.
    c.crash(1).await;
    steer(&c, &[5], &[], None);
    c.restart(5).await;
    assert_eq!(c.leader_among(&[5], Duration::from_secs(20)).await, 5);
    let y = c.write(5, "y", "1").await.expect("write at S5");
    c.net.set_filter(None);
    c.restart(1).await;
    c.all_applied(y.log_id.index, Duration::from_secs(10)).await;
    let applied_p = c.rec.lock().unwrap().applied[&p].0;
    assert_eq!(applied_p, s5_entry, "index {p} applied as S5's entry");
    for id in 1..=5 {
        assert_eq!(c.sm(id).get("x"), None, "node {id} applied the overwritten x");
    }
    c.check();
    c.shutdown().await;
}

/// Figure 8 (e): once S1's own-term entry reaches a majority, x is committed with it, and S5
/// can no longer be elected.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn old_term_entry_committed_through_own_term_entry() {
    let Fig8 { mut c, x, .. } = setup(9).await;
    let p = x.index;
    steer(&c, &[1], &[], None);
    let m1 = c
        .raft(1)
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.committed.is_some_and(|l| l.index > p), "S1 commits its own entry")
        .await
        .unwrap();
    assert!(m1.committed.unwrap().leader_id.term > x.leader_id.term);
    c.acked.lock().unwrap().push(x);
    c.all_applied(p, Duration::from_secs(5)).await;

    c.crash(1).await;
    steer(&c, &[5], &[], None);
    c.restart(5).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(c.metrics(5).state, ServerState::Leader, "S5 was elected without x");
    c.net.set_filter(None);
    c.restart(1).await;
    let l = c.leader().await;
    let z = c.write(l, "z", "1").await.expect("write");
    c.all_applied(z.log_id.index, Duration::from_secs(10)).await;
    for id in 1..=5 {
        assert_eq!(c.sm(id).get("x").as_deref(), Some("old"), "node {id}");
    }
    c.check();
    c.shutdown().await;
}
