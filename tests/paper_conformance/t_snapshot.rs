//! Log compaction and InstallSnapshot (Raft §7): a follower behind the leader's purged log
//! gets a snapshot; a restarted node comes back from its snapshot.

use std::time::Duration;

use quorate::error::ClientWriteError;
use quorate::{RaftError, ReadPolicy};

use crate::cluster::{Cluster, config};
use crate::types::Req;

fn snap_config() -> quorate::Config {
    let mut cfg = config();
    cfg.max_in_snapshot_log_to_keep = 0;
    cfg.snapshot_max_chunk_size = 64; // many chunks
    cfg
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn lagging_follower_gets_snapshot_and_restarts_from_it() {
    for (seed, pipelined) in [(50, false), (51, true)] {
        let mut c = Cluster::new(3, snap_config(), seed, pipelined).await;
        c.persistent_sm = false;
        c.init(&[1, 2, 3]).await;
        let l = c.leader().await;
        let f = (1..=3).find(|i| *i != l).unwrap();
        c.net.cut(f, &[1, 2, 3]);
        let mut last = None;
        for i in 0..30 {
            last = Some(c.write(l, &format!("k{i}"), &format!("v{i}")).await.unwrap().log_id);
        }
        c.raft(l).trigger().snapshot().await.unwrap();
        c.raft(l)
            .wait(Some(Duration::from_secs(5)))
            .metrics(|m| m.snapshot >= last && m.purged >= last, "snapshot built and log purged")
            .await
            .unwrap();
        c.net.heal();
        c.raft(f)
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(last.map(|l| l.index), "follower catches up")
            .await
            .unwrap();
        assert!(c.sm(f).installs() >= 1, "the follower caught up without a snapshot");
        assert_eq!(c.sm(f).kv(), c.sm(l).kv());
        let after = c.write(l, "after", "1").await.unwrap();
        // Crash the follower; its state machine comes back empty, with its snapshot.
        c.crash(f).await;
        c.restart(f).await;
        c.raft(f)
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(after.log_id.index), "restarted follower catches up")
            .await
            .unwrap();
        assert_eq!(c.sm(f).kv(), c.sm(l).kv());
        // And the leader, from its own snapshot.
        c.crash(l).await;
        c.restart(l).await;
        let l2 = c.leader().await;
        c.raft(l2).ensure_linearizable(ReadPolicy::ReadIndex).await.unwrap();
        assert_eq!(c.sm(l2).get("k29").as_deref(), Some("v29"));
        c.check();
        c.shutdown().await;
    }
}

/// A partitioned leader's uncommitted writes are replaced by a snapshot of the new leader's
/// log: they end `Discarded` (never applied) or `OutcomeUnknown`; no Discarded write is ever
/// applied, anywhere.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn snapshot_replaces_uncommitted_tail_and_writes_say_so() {
    for (seed, snapshot) in [(52, false), (53, true)] {
        let mut c = Cluster::new(5, snap_config(), seed, seed % 2 == 0).await;
        c.init(&[1, 2, 3, 4, 5]).await;
        let old = c.leader().await;
        let w = c.write(old, "base", "1").await.unwrap();
        c.all_applied(w.log_id.index, Duration::from_secs(5)).await;
        let others: Vec<u64> = (1..=5).filter(|i| *i != old).collect();
        c.net.cut(old, &others);
        let mut pending = Vec::new();
        for i in 0..5 {
            let raft = c.raft(old);
            pending.push((i, tokio::spawn(async move { raft.client_write(Req::set(format!("lost{i}"), "x")).await })));
        }
        let new = c.leader_among(&others, Duration::from_secs(10)).await;
        let mut last = None;
        for i in 0..20 {
            last = Some(c.write(new, &format!("n{i}"), "y").await.unwrap().log_id);
        }
        if snapshot {
            c.raft(new).trigger().snapshot().await.unwrap();
            c.raft(new).wait(Some(Duration::from_secs(5))).metrics(|m| m.purged >= last, "purged").await.unwrap();
        }
        c.net.heal();
        c.raft(old)
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(last.map(|l| l.index), "old leader catches up")
            .await
            .unwrap();
        let mut discarded = Vec::new();
        for (i, h) in pending {
            match h.await.unwrap() {
                Ok(r) => panic!("seed {seed}: a write of a partitioned leader committed: {r:?}"),
                Err(RaftError::APIError(ClientWriteError::Discarded { .. })) => discarded.push(i),
                Err(RaftError::APIError(ClientWriteError::OutcomeUnknown { .. })) => {}
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => discarded.push(i),
                Err(e) => panic!("seed {seed}: unexpected outcome of a pending write: {e:?}"),
            }
        }
        if !snapshot {
            assert_eq!(discarded.len(), 5, "without a snapshot every truncated write is Discarded");
        }
        let fin = c.write(new, "fin", "1").await.unwrap();
        c.all_applied(fin.log_id.index, Duration::from_secs(10)).await;
        for i in discarded {
            for id in 1..=5 {
                assert_eq!(c.sm(id).get(&format!("lost{i}")), None, "node {id} applied discarded write {i}");
            }
        }
        c.check();
        c.shutdown().await;
    }
}
