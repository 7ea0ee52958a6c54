//! raft-kv's state machine through quorate's storage traits: what survives a restart, an
//! installed snapshot, and a snapshot file that does not decode. (The log is quorate's
//! `FileLogStore`, tested in quorate's `tests/file_store`.)

use quorate::storage::SnapshotMeta;
use quorate::{Entry, LeaderId, LogId, RaftSnapshotBuilder, RaftStateMachine};
use raft_kv::store::StateMachineStore;
use raft_kv::{Request, TypeConfig};

type C = TypeConfig;

fn log_id(term: u64, index: u64) -> LogId<C> {
    LogId::new(LeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry<C> {
    Entry::new_normal(log_id(term, index), Request::Set { key: format!("k{index}"), value: format!("t{term}") })
}

#[tokio::test]
async fn state_machine_restarts_from_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let meta: SnapshotMeta<C>;
    {
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let resp = sm.apply((1..=3).map(|i| entry(1, i)).collect()).await.unwrap();
        assert!(resp.iter().all(|r| r.ok));
        let cas = Entry::new_normal(
            log_id(1, 4),
            Request::CompareAndSet { key: "k1".into(), expected: Some("wrong".into()), new: None },
        );
        assert!(!sm.apply(vec![cas]).await.unwrap()[0].ok);
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        meta = snapshot.meta;
        assert_eq!(meta.last_log_id, Some(log_id(1, 4)));
        // Applied after the snapshot: lost on restart, re-applied by quorate from the log.
        sm.apply(vec![entry(1, 5)]).await.unwrap();
    }
    let mut sm = StateMachineStore::open(dir.path()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 4)));
    assert_eq!(sm.get("k3").as_deref(), Some("t1"));
    assert_eq!(sm.get("k5"), None);
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, meta);
}

#[tokio::test]
async fn installed_snapshot_replaces_the_state() {
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = StateMachineStore::open(leader_dir.path()).unwrap();
    leader.apply((1..=20).map(|i| entry(1, i)).collect()).await.unwrap();
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open(dir.path()).unwrap();
    sm.apply(vec![Entry::new_normal(log_id(1, 1), Request::Set { key: "stale".into(), value: "x".into() })])
        .await
        .unwrap();
    let mut buf = sm.begin_receiving_snapshot().await.unwrap();
    buf.get_mut().extend_from_slice(snapshot.snapshot.get_ref());
    sm.install_snapshot(&snapshot.meta, buf).await.unwrap();
    assert_eq!(sm.get("stale"), None);
    assert_eq!(sm.get("k20").as_deref(), Some("t1"));
    drop(sm);
    let mut sm = StateMachineStore::open(dir.path()).unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 20)));
    assert_eq!(sm.get("k20").as_deref(), Some("t1"));
}

#[tokio::test]
async fn an_undecodable_snapshot_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        sm.apply((1..=3).map(|i| entry(1, i)).collect()).await.unwrap();
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    }
    let path = dir.path().join("snapshot.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let err = match StateMachineStore::open(dir.path()) {
        Ok(_) => panic!("a corrupt snapshot file was loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("snapshot.bin") && err.contains("offset"), "{err}");

    // Nor does a file in another format (the JSON-line format of earlier versions).
    std::fs::write(&path, b"{\"last_log_id\":null}\n{}").unwrap();
    let err = match StateMachineStore::open(dir.path()) {
        Ok(_) => panic!("a snapshot file in an unknown format was loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("snapshot.bin") && err.contains("offset 0"), "{err}");
}
