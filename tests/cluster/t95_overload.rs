//! Overload and gray failure: bounded queues, hung peers, stalled disks, slow state machines.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use quorate::testing::Request;
use quorate::{ClientWriteError, Config, Raft, RaftError, ServerState};
use tokio::time::Instant;

use crate::fixture::{TIMEOUT, TestCluster, init_tracing, test_config};

/// The largest values of some metrics seen while a test runs.
#[derive(Default)]
struct Peaks {
    in_flight_requests: AtomicU64,
    in_flight_bytes: AtomicU64,
    pending_writes: AtomicU64,
}

/// Record the peaks of `raft`'s metrics until the returned handle is aborted.
fn watch_peaks(raft: &Raft<quorate::testing::TypeConfig>) -> (Arc<Peaks>, tokio::task::JoinHandle<()>) {
    let peaks = Arc::new(Peaks::default());
    let mut rx = raft.metrics();
    let p = peaks.clone();
    let h = tokio::spawn(async move {
        loop {
            {
                let m = rx.borrow_and_update();
                for (reqs, bytes) in m.queues.in_flight.values() {
                    p.in_flight_requests.fetch_max(*reqs, Ordering::Relaxed);
                    p.in_flight_bytes.fetch_max(*bytes, Ordering::Relaxed);
                }
                p.pending_writes.fetch_max(m.queues.pending_writes, Ordering::Relaxed);
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    (peaks, h)
}

/// Write `n` keys from `clients` concurrent clients through `raft`; return how many succeeded.
async fn concurrent_writes(raft: &Raft<quorate::testing::TypeConfig>, clients: usize, n: usize) -> usize {
    let per_client = n / clients;
    let tasks = (0..clients).map(|c| {
        let raft = raft.clone();
        async move {
            let mut ok = 0;
            for i in 0..per_client {
                if raft.client_write(Request::Set { key: format!("c{c}-{i}"), value: "v".into() }).await.is_ok() {
                    ok += 1;
                }
            }
            ok
        }
    });
    join_all(tasks).await.into_iter().sum()
}

/// A follower that accepts requests and never answers costs the leader bounded memory, and
/// writes keep committing through the other follower.
#[tokio::test(start_paused = true)]
async fn hung_follower_costs_bounded_memory() {
    init_tracing();
    let config = Config { max_in_flight_requests: 8, max_payload_entries: 64, ..test_config() };
    let c = TestCluster::with_config(&[1, 2, 3], config.clone()).await;
    let leader = c.initialize(1).await;
    let hung = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.router.set_hang(hung, true);
    let (peaks, watcher) = watch_peaks(c.raft(leader));

    let ok = concurrent_writes(c.raft(leader), 10, 10_000).await;
    assert_eq!(ok, 10_000, "every write commits through the healthy follower");
    watcher.abort();
    let reqs = peaks.in_flight_requests.load(Ordering::Relaxed);
    assert!(reqs > 0, "the gauges saw traffic");
    assert!(
        reqs <= config.max_in_flight_requests,
        "{reqs} requests in flight, bound {}",
        config.max_in_flight_requests
    );
    let m = c.raft(leader).metrics().borrow().clone();
    assert!(m.replication_stalled_since.contains_key(&hung), "the hung target shows as stalled: {m:?}");
    // Once the stream to the hung follower timed out, only its one probe at a time counts as
    // in flight, not the abandoned stream's requests.
    c.raft(leader)
        .wait(Some(TIMEOUT))
        .metrics(|m| m.queues.in_flight.get(&hung).is_some_and(|(reqs, _)| *reqs <= 1), "abandoned stream uncounted")
        .await
        .expect("the in-flight gauge of the hung follower drops to its probe");
    assert!(
        !m.replication_stalled_since.contains_key(&c.ids().into_iter().find(|i| *i != leader && *i != hung).unwrap())
    );
}

/// A leader whose log store stops flushing steps down within the configured bound; a healthy
/// node leads, writes continue there, and nothing acknowledged is lost.
#[tokio::test(start_paused = true)]
async fn leader_with_a_stalled_disk_is_replaced() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let old = c.initialize(1).await;
    c.set(old, "before", "1").await;

    c.nodes[&old].log.set_flush_stalled(true);
    let stalled_at = Instant::now();
    // Writes still commit through the followers for a while; keep one going.
    let raft = c.raft(old).clone();
    let during =
        tokio::spawn(async move { raft.client_write(Request::Set { key: "during".into(), value: "1".into() }).await });
    c.raft(old)
        .wait(Some(TIMEOUT))
        .metrics(|m| m.state != ServerState::Leader, "stalled leader steps down")
        .await
        .unwrap();
    let took = stalled_at.elapsed();
    assert!(took <= c.config.max_log_io_stall + c.config.heartbeat_interval, "stepped down after {took:?}");
    assert!(c.raft(old).metrics().borrow().log_io_stalled);

    let rest: Vec<u64> = c.ids().into_iter().filter(|id| *id != old).collect();
    let new = c.wait_for_leader(&rest).await;
    c.set(new, "after", "1").await;
    let during = during.await.unwrap();

    c.nodes[&old].log.set_flush_stalled(false);
    let last = c.raft(new).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(&c.ids(), last).await;
    for id in c.ids() {
        let data = c.nodes[&id].sm.data();
        assert!(data.contains_key("before") && data.contains_key("after"), "node {id}: {data:?}");
        if during.is_ok() {
            assert!(data.contains_key("during"), "an acknowledged write is on node {id}");
        }
    }
    c.check_safety();
}

/// Ten times more concurrent writes than the bounds: each gets its result or `Overloaded`,
/// the queues stay bounded, and no write is lost or applied twice.
#[tokio::test(start_paused = true)]
async fn overload_is_refused_not_queued_without_bound() {
    init_tracing();
    let config = Config { max_pending_requests: 64, max_pending_writes: 64, ..test_config() };
    let c = TestCluster::with_config(&[1, 2, 3], config).await;
    let leader = c.initialize(1).await;
    // A slow disk on the leader makes writes pile up.
    for id in c.ids() {
        c.nodes[&id].log.set_flush_delay(Duration::from_millis(5));
    }
    let (peaks, watcher) = watch_peaks(c.raft(leader));
    let writes = (0..640).map(|i| {
        let raft = c.raft(leader).clone();
        async move { (i, raft.try_client_write(Request::Set { key: format!("k{i}"), value: i.to_string() }).await) }
    });
    let results = join_all(writes).await;
    watcher.abort();

    let mut ok = Vec::new();
    let mut overloaded = 0;
    for (i, r) in results {
        match r {
            Ok(_) => ok.push(i),
            Err(RaftError::APIError(ClientWriteError::Overloaded)) => overloaded += 1,
            Err(e) => panic!("write {i}: unexpected {e:?}"),
        }
    }
    assert!(overloaded > 0, "some writes were refused");
    assert!(!ok.is_empty(), "some writes went through");
    assert!(peaks.pending_writes.load(Ordering::Relaxed) <= 64);

    let last = c.raft(leader).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(&c.ids(), last).await;
    let data = c.nodes[&leader].sm.data();
    assert_eq!(data.len(), ok.len(), "exactly the acknowledged writes were applied");
    for i in ok {
        assert_eq!(data.get(&format!("k{i}")), Some(&i.to_string()));
    }
    c.check_safety();
}

/// A slow state machine slows clients down instead of failing them, and the writes waiting
/// for it stay within the bound.
#[tokio::test(start_paused = true)]
async fn slow_state_machine_slows_clients_within_the_bound() {
    init_tracing();
    let config = Config { max_pending_writes: 100, ..test_config() };
    let c = TestCluster::with_config(&[1, 2, 3], config).await;
    let leader = c.initialize(1).await;
    c.nodes[&leader].sm.set_apply_delay(Duration::from_millis(10));
    let (peaks, watcher) = watch_peaks(c.raft(leader));
    // Four times more concurrent clients than the bound.
    let ok = concurrent_writes(c.raft(leader), 400, 2000).await;
    watcher.abort();
    assert_eq!(ok, 2000, "clients are slowed, not failed");
    assert!(peaks.pending_writes.load(Ordering::Relaxed) <= 100, "pending writes stay within the bound");
    c.check_safety();
}
