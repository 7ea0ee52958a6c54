//! What the publisher records, read back through the facade's in-memory recorder.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::Instant;

use super::{Publisher, names};
use crate::engine::ServerState;
use crate::metrics::RaftMetrics;
use crate::testing_types::{UTConfig, log_id};

/// One recorded series: name, labels (sorted), value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Gauge(f64),
    Counter(u64),
    Histogram(usize),
}

type Series = BTreeMap<(String, Vec<(String, String)>), Value>;

fn read(snapshotter: &Snapshotter) -> Series {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            let mut labels: Vec<_> = key.labels().map(|l| (l.key().to_string(), l.value().to_string())).collect();
            labels.sort();
            let value = match value {
                DebugValue::Gauge(g) => Value::Gauge(g.into_inner()),
                DebugValue::Counter(c) => Value::Counter(c),
                DebugValue::Histogram(h) => Value::Histogram(h.len()),
            };
            ((key.name().to_string(), labels), value)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    v.sort();
    v
}

fn gauge(series: &Series, name: &str, l: &[(&str, &str)]) -> Option<f64> {
    match series.get(&(name.to_string(), labels(l))) {
        Some(Value::Gauge(g)) => Some(*g),
        _ => None,
    }
}

/// The value of label `key` of a series.
fn label<'a>((_, labels): &'a (String, Vec<(String, String)>), key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// What a leader of two followers records: 22 node series, 1 `quorate_leader`, 5 per follower
/// (the module docs' count of series per group).
const LEADER_OF_TWO_SERIES: usize = 22 + 1 + 2 * 5;

/// A leader of term 3 with log 0..=10, committed 9, applied 8, and two followers: 2 is
/// stuck at 4 since 7 s ago with requests in flight, 3 is caught up.
fn leader_metrics(now: Instant) -> RaftMetrics<UTConfig> {
    let mut m = RaftMetrics::new_initial(1);
    m.state = ServerState::Leader;
    m.current_term = 3;
    m.current_leader = Some(1);
    m.last_log_index = Some(10);
    m.last_log_id = Some(log_id(3, 10));
    m.committed = Some(log_id(3, 9));
    m.last_applied = Some(log_id(3, 8));
    m.replication = Some(BTreeMap::from([(2, Some(log_id(2, 4))), (3, Some(log_id(3, 10)))]));
    m.replication_lag = Some(BTreeMap::from([(2, 6), (3, 0)]));
    m.replication_stalled_since = BTreeMap::from([(2, now - Duration::from_secs(7))]);
    m.queues.in_flight = BTreeMap::from([(2, (3, 3000)), (3, (0, 0))]);
    m.queues.pending_writes = 5;
    m.commit_stalled_since = Some(now - Duration::from_secs(2));
    m.elections_started = 2;
    m.leader_changes = 1;
    m
}

/// Every series a leader records, with its labels and value, and the names are the documented
/// ones.
#[test]
fn a_leader_records_every_metric_under_its_documented_name() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let series = metrics::with_local_recorder(&recorder, || {
        let mut publisher = Publisher::<UTConfig>::new(1);
        publisher.record(&leader_metrics(Instant::now()));
        read(&snapshotter)
    });
    let node = [(names::NODE_ID, "1")];
    for (state, value) in [("leader", 1.0), ("follower", 0.0), ("candidate", 0.0), ("learner", 0.0), ("shutdown", 0.0)]
    {
        let l = [(names::NODE_ID, "1"), (names::STATE, state)];
        assert_eq!(gauge(&series, names::SERVER_STATE, &l), Some(value), "{state}");
    }
    assert_eq!(gauge(&series, names::TERM, &node), Some(3.0));
    assert_eq!(gauge(&series, names::LEADER, &[(names::NODE_ID, "1"), (names::LEADER_LABEL, "1")]), Some(1.0));
    assert_eq!(gauge(&series, names::LEADER_KNOWN, &node), Some(1.0));
    assert_eq!(gauge(&series, names::LAST_LOG_INDEX, &node), Some(10.0));
    assert_eq!(gauge(&series, names::COMMITTED_INDEX, &node), Some(9.0));
    assert_eq!(gauge(&series, names::APPLIED_INDEX, &node), Some(8.0));
    assert_eq!(gauge(&series, names::PURGED_INDEX, &node), Some(-1.0), "none yet is -1");
    assert_eq!(gauge(&series, names::SNAPSHOT_INDEX, &node), Some(-1.0));
    assert_eq!(gauge(&series, names::PENDING_WRITES, &node), Some(5.0));
    assert_eq!(gauge(&series, names::LOG_IO_STALLED_SECONDS, &node), Some(0.0), "not stalled is 0");
    let commit_stalled = gauge(&series, names::COMMIT_STALLED_SECONDS, &node).unwrap();
    assert!((2.0..3.0).contains(&commit_stalled), "{commit_stalled}");
    assert_eq!(series.get(&(names::ELECTIONS_STARTED_TOTAL.into(), labels(&node))), Some(&Value::Counter(2)));
    assert_eq!(series.get(&(names::LEADER_CHANGES_TOTAL.into(), labels(&node))), Some(&Value::Counter(1)));

    let t2 = [(names::NODE_ID, "1"), (names::TARGET, "2")];
    let t3 = [(names::NODE_ID, "1"), (names::TARGET, "3")];
    assert_eq!(gauge(&series, names::REPLICATION_MATCHED_INDEX, &t2), Some(4.0));
    assert_eq!(gauge(&series, names::REPLICATION_LAG_ENTRIES, &t2), Some(6.0));
    assert_eq!(gauge(&series, names::REPLICATION_LAG_ENTRIES, &t3), Some(0.0));
    let stalled = gauge(&series, names::REPLICATION_STALLED_SECONDS, &t2).unwrap();
    assert!((7.0..8.0).contains(&stalled), "{stalled}");
    assert_eq!(gauge(&series, names::REPLICATION_STALLED_SECONDS, &t3), Some(0.0));
    assert_eq!(gauge(&series, names::REPLICATION_IN_FLIGHT_REQUESTS, &t2), Some(3.0));
    assert_eq!(gauge(&series, names::REPLICATION_IN_FLIGHT_BYTES, &t2), Some(3000.0));

    assert!(series.keys().all(|key| label(key, names::GROUP).is_none()), "one group's series have no group label");
    assert_eq!(series.len(), LEADER_OF_TWO_SERIES);

    let recorded: BTreeSet<&str> = series.keys().map(|(name, _)| name.as_str()).collect();
    let documented = documented_names();
    let file_store =
        [names::FILE_STORE_FSYNC_DURATION_SECONDS, names::FILE_STORE_BATCH_ENTRIES, names::FILE_STORE_BATCH_BYTES];
    let expected: BTreeSet<&str> = documented.iter().copied().filter(|n| !file_store.contains(n)).collect();
    assert_eq!(recorded, expected, "what a leader records is what the table in the module docs lists");
}

/// Two groups on one node, both leading the same followers with different values: every series
/// of each carries its `group`, so neither overwrites the other's, node, leader and per-follower
/// series alike.
#[test]
fn the_groups_of_one_node_record_distinct_series_by_group() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let series = metrics::with_local_recorder(&recorder, || {
        let now = Instant::now();
        let mut seven = Publisher::<UTConfig>::for_group(1, 7);
        seven.record(&leader_metrics(now));
        let mut eight = Publisher::<UTConfig>::for_group(1, 8);
        let mut m = leader_metrics(now);
        m.current_term = 5;
        m.replication_lag = Some(BTreeMap::from([(2, 1), (3, 0)]));
        m.queues.in_flight = BTreeMap::from([(2, (1, 100)), (3, (0, 0))]);
        eight.record(&m);
        read(&snapshotter)
    });
    assert_eq!(series.len(), 2 * LEADER_OF_TWO_SERIES, "no series is shared by the two groups");
    for group in ["7", "8"] {
        let of_group = series.keys().filter(|key| label(key, names::GROUP) == Some(group)).count();
        assert_eq!(of_group, LEADER_OF_TWO_SERIES, "group {group}");
    }

    for (group, term, lag, bytes) in [("7", 3.0, 6.0, 3000.0), ("8", 5.0, 1.0, 100.0)] {
        let node = [(names::NODE_ID, "1"), (names::GROUP, group)];
        assert_eq!(gauge(&series, names::TERM, &node), Some(term), "group {group}");
        let leader = [(names::NODE_ID, "1"), (names::GROUP, group), (names::LEADER_LABEL, "1")];
        assert_eq!(gauge(&series, names::LEADER, &leader), Some(1.0), "group {group}");
        let state = [(names::NODE_ID, "1"), (names::GROUP, group), (names::STATE, "leader")];
        assert_eq!(gauge(&series, names::SERVER_STATE, &state), Some(1.0), "group {group}");
        let counted = series.get(&(names::ELECTIONS_STARTED_TOTAL.into(), labels(&node)));
        assert_eq!(counted, Some(&Value::Counter(2)), "group {group}");
        let t2 = [(names::NODE_ID, "1"), (names::GROUP, group), (names::TARGET, "2")];
        assert_eq!(gauge(&series, names::REPLICATION_LAG_ENTRIES, &t2), Some(lag), "group {group}");
        assert_eq!(gauge(&series, names::REPLICATION_IN_FLIGHT_BYTES, &t2), Some(bytes), "group {group}");
    }
}

/// The names of the module docs' table.
fn documented_names() -> BTreeSet<&'static str> {
    include_str!("../export.rs")
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .filter_map(|l| l.split('`').next())
        .collect()
}

/// The guide's operations chapter lists the same metrics as the module docs.
#[test]
fn the_guide_lists_every_metric() {
    let guide = include_str!("../../../guide/src/operations.md");
    for name in documented_names() {
        assert!(guide.contains(&format!("| `{name}` |")), "guide/src/operations.md has no row for {name}");
    }
}

/// A follower that leaves, and a leader that is no longer the leader, drop to 0 once and are
/// then left to the exporter's idle timeout; a follower node records no per-target series.
#[test]
fn series_that_end_drop_to_zero() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let mut publisher = Publisher::<UTConfig>::new(1);
        let now = Instant::now();
        publisher.record(&leader_metrics(now));
        let _ = read(&snapshotter);

        let mut follower = RaftMetrics::new_initial(1);
        follower.state = ServerState::Follower;
        follower.current_term = 4;
        follower.current_leader = Some(3);
        publisher.record(&follower);
        let series = read(&snapshotter);
        let t2 = [(names::NODE_ID, "1"), (names::TARGET, "2")];
        assert_eq!(gauge(&series, names::REPLICATION_LAG_ENTRIES, &t2), Some(0.0));
        assert_eq!(gauge(&series, names::LEADER, &[(names::NODE_ID, "1"), (names::LEADER_LABEL, "1")]), Some(0.0));
        assert_eq!(gauge(&series, names::LEADER, &[(names::NODE_ID, "1"), (names::LEADER_LABEL, "3")]), Some(1.0));

        // The snapshot reset every value; a series no longer recorded stays at 0.
        publisher.record(&follower);
        let series = read(&snapshotter);
        assert_eq!(gauge(&series, names::REPLICATION_LAG_ENTRIES, &t2), Some(0.0));
        assert_eq!(gauge(&series, names::LEADER, &[(names::NODE_ID, "1"), (names::LEADER_LABEL, "3")]), Some(1.0));
        assert_eq!(gauge(&series, names::LEADER_KNOWN, &[(names::NODE_ID, "1")]), Some(1.0));
    });
}

/// `publish` follows a real cluster: the leader's state, commits and per-follower series
/// appear, and once the node stops it records `shutdown` (at its next tick) and returns.
#[cfg(feature = "testing")]
#[test]
fn publish_follows_a_node_until_it_stops() {
    use std::sync::Arc;

    use crate::testing::{MemLogStore, MemStateMachine, Request, Router};
    use crate::{BasicNode, Config, Raft};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    // A current-thread runtime polls every task on this thread, inside the local recorder.
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let router = Router::new();
            let mut publishing = Vec::new();
            for id in 1..=3 {
                let raft = Raft::new(
                    id,
                    Arc::new(Config::default()),
                    router.factory(id),
                    MemLogStore::new(),
                    MemStateMachine::new(),
                )
                .await
                .unwrap();
                publishing.push(tokio::spawn(super::publish(raft.metrics(), Duration::from_millis(100))));
                router.add_node(id, raft);
            }
            let node1 = router.node(1).unwrap();
            node1.initialize((1..=3).map(|id| (id, BasicNode::new(format!("n{id}")))).collect()).await.unwrap();
            let m = node1.wait(None).metrics(|m| m.current_leader.is_some(), "a leader").await.unwrap();
            let leader = router.node(m.current_leader.unwrap()).unwrap();
            for i in 0..10 {
                leader.client_write(Request::set("k", i.to_string())).await.unwrap();
            }
            let committed = leader.metrics().borrow().committed.unwrap().index;
            for id in 1..=3 {
                router.node(id).unwrap().wait(None).applied_index_at_least(Some(committed), "applied").await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;

            let series = read(&snapshotter);
            let leader_id = leader.id().to_string();
            let on_leader = [(names::NODE_ID, leader_id.as_str()), (names::STATE, "leader")];
            assert_eq!(gauge(&series, names::SERVER_STATE, &on_leader), Some(1.0));
            for id in 1..=3u64 {
                let node = id.to_string();
                let node = [(names::NODE_ID, node.as_str())];
                assert_eq!(gauge(&series, names::COMMITTED_INDEX, &node), Some(committed as f64), "node {id}");
                assert_eq!(gauge(&series, names::APPLIED_INDEX, &node), Some(committed as f64), "node {id}");
                assert!(gauge(&series, names::TERM, &node) >= Some(1.0), "node {id}");
                let knows = [(names::NODE_ID, node[0].1), (names::LEADER_LABEL, leader_id.as_str())];
                assert_eq!(gauge(&series, names::LEADER, &knows), Some(1.0), "node {id}");
                if id.to_string() != leader_id {
                    let target = [(names::NODE_ID, leader_id.as_str()), (names::TARGET, node[0].1)];
                    assert_eq!(gauge(&series, names::REPLICATION_LAG_ENTRIES, &target), Some(0.0), "target {id}");
                    assert_eq!(gauge(&series, names::REPLICATION_MATCHED_INDEX, &target), Some(committed as f64));
                }
            }

            for id in 1..=3 {
                router.node(id).unwrap().shutdown().await.unwrap();
            }
            for p in publishing {
                tokio::time::timeout(Duration::from_secs(5), p).await.expect("publish returns").unwrap();
            }
            let series = read(&snapshotter);
            for id in 1..=3u64 {
                let node = id.to_string();
                let stopped = [(names::NODE_ID, node.as_str()), (names::STATE, "shutdown")];
                assert_eq!(gauge(&series, names::SERVER_STATE, &stopped), Some(1.0), "node {id}");
            }
        })
    });
}

/// `publish_group` follows each group of a `GroupHost`: two single-member groups on one node,
/// written to unequally, report their own commits under their own `group`, and `shutdown`
/// when the host stops.
#[cfg(feature = "testing")]
#[test]
fn publish_group_follows_each_group_of_a_host() {
    use std::sync::Arc;

    use crate::multi::{GroupHost, HostConfig};
    use crate::testing::{HostRouter, MemLogStore, MemStateMachine, Request};
    use crate::{BasicNode, Config};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let router = HostRouter::new();
            let host = GroupHost::new(1, HostConfig::default(), router.network(1)).unwrap();
            router.add_host(host.clone());
            let mut publishing = Vec::new();
            for group in [0, 1] {
                let config = Arc::new(Config::default());
                let raft = host.create_group(group, config, MemLogStore::new(), MemStateMachine::new()).await.unwrap();
                publishing.push(tokio::spawn(super::publish_group(raft.metrics(), Duration::from_millis(100), group)));
                raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await.unwrap();
                raft.wait(None).current_leader(1, "a leader").await.unwrap();
            }
            let one = host.group(1).unwrap();
            for i in 0..5 {
                one.client_write(Request::set("k", i.to_string())).await.unwrap();
            }
            let mut committed = Vec::new();
            for group in [0, 1] {
                let raft = host.group(group).unwrap();
                let index = raft.metrics().borrow().committed.unwrap().index;
                raft.wait(None).applied_index_at_least(Some(index), "applied").await.unwrap();
                committed.push(index as f64);
            }
            assert!(committed[1] >= committed[0] + 5.0, "{committed:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;

            let series = read(&snapshotter);
            for (group, committed) in [("0", committed[0]), ("1", committed[1])] {
                let node = [(names::NODE_ID, "1"), (names::GROUP, group)];
                assert_eq!(gauge(&series, names::COMMITTED_INDEX, &node), Some(committed), "group {group}");
                let leader = [(names::NODE_ID, "1"), (names::GROUP, group), (names::STATE, "leader")];
                assert_eq!(gauge(&series, names::SERVER_STATE, &leader), Some(1.0), "group {group}");
            }
            assert!(series.keys().all(|key| label(key, names::GROUP).is_some()), "every series names its group");

            host.shutdown().await.unwrap();
            for p in publishing {
                tokio::time::timeout(Duration::from_secs(5), p).await.expect("publish_group returns").unwrap();
            }
            let series = read(&snapshotter);
            for group in ["0", "1"] {
                let stopped = [(names::NODE_ID, "1"), (names::GROUP, group), (names::STATE, "shutdown")];
                assert_eq!(gauge(&series, names::SERVER_STATE, &stopped), Some(1.0), "group {group}");
            }
        })
    });
}

/// The file store's observer records one sample per synced batch in each histogram.
#[cfg(all(feature = "file-store", feature = "testing"))]
#[test]
fn the_file_store_observer_records_every_synced_batch() {
    use crate::file_store::{FileLogStore, FileStoreOptions};
    use crate::storage::{IOFlushed, RaftLogStorage};
    use crate::testing::{Request, TypeConfig};
    use crate::types::{Entry, LeaderId, LogId, Vote};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let series = metrics::with_local_recorder(&recorder, || {
        let options = FileStoreOptions::default().on_sync(super::file_store_observer(7));
        runtime.block_on(async {
            let mut store = FileLogStore::<TypeConfig>::open_with(dir.path(), options).unwrap();
            store.save_vote(&Vote::new(1, 7)).await.unwrap();
            let entries: Vec<Entry<TypeConfig>> =
                (0..3).map(|i| Entry::new_normal(LogId::new(LeaderId::new(1, 7), i), Request::set("k", "v"))).collect();
            let (callback, flushed) = IOFlushed::with_receiver();
            store.append(entries, callback).await.unwrap();
            flushed.await.unwrap().unwrap();
        });
        read(&snapshotter)
    });
    let node = labels(&[(names::NODE_ID, "7")]);
    let samples = |name: &str| match series.get(&(name.to_string(), node.clone())) {
        Some(Value::Histogram(n)) => *n,
        other => panic!("{name}: {other:?}"),
    };
    // The vote's batch and the append's (they may share one).
    assert!((1..=2).contains(&samples(names::FILE_STORE_FSYNC_DURATION_SECONDS)));
    assert_eq!(samples(names::FILE_STORE_BATCH_ENTRIES), samples(names::FILE_STORE_FSYNC_DURATION_SECONDS));
    assert_eq!(samples(names::FILE_STORE_BATCH_BYTES), samples(names::FILE_STORE_FSYNC_DURATION_SECONDS));
}
