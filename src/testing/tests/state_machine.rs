use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{blanks, log_id};
use crate::BasicNode;
use crate::storage::{RaftSnapshotBuilder, RaftStateMachine, SnapshotMeta};
use crate::testing::{MemStateMachine, Request, Response, TypeConfig};
use crate::types::{Entry, Membership, StoredMembership};

/// Normal entries of term 1 carrying `requests`, from index `first`.
fn normal(first: u64, requests: Vec<Request>) -> Vec<Entry<TypeConfig>> {
    (first..).zip(requests).map(|(i, r)| Entry::new_normal(log_id(1, i), r)).collect()
}

fn membership(ids: &[u64]) -> Membership<TypeConfig> {
    let nodes = ids.iter().map(|id| (*id, BasicNode::new(format!("n{id}")))).collect();
    Membership::new_voters(nodes).expect("a non-empty voter set")
}

fn some(s: &str) -> Option<String> {
    Some(s.to_string())
}

/// A state machine with a membership at 0 and `k1=a`, `k2=b` at 1 and 2.
async fn populated() -> MemStateMachine {
    let mut sm = MemStateMachine::new();
    sm.apply(vec![Entry::new_membership(log_id(1, 0), membership(&[1, 2, 3]))]).await.unwrap();
    sm.apply(normal(1, vec![Request::set("k1", "a"), Request::set("k2", "b")])).await.unwrap();
    sm
}

#[tokio::test]
async fn apply_answers_set_delete_and_compare_and_set() {
    let mut sm = MemStateMachine::new();
    let responses = sm
        .apply(normal(
            0,
            vec![
                Request::set("k", "a"),
                Request::set("k", "b"),
                Request::compare_and_set("k", Some("x"), Some("c")),
                Request::compare_and_set("k", Some("b"), Some("c")),
                Request::compare_and_set("new", None, Some("n")),
                Request::compare_and_set("new", Some("n"), None),
                Request::delete("k"),
                Request::delete("k"),
                Request::Noop,
            ],
        ))
        .await
        .unwrap();

    let failed = |value| Response { value, ok: false };
    assert_eq!(
        responses,
        vec![
            Response::ok(None),
            Response::ok(some("a")),
            failed(some("b")),
            Response::ok(some("b")),
            Response::ok(None),
            Response::ok(some("n")),
            Response::ok(some("c")),
            Response::ok(None),
            Response::ok(None),
        ]
    );
    assert!(sm.data().is_empty());
    assert_eq!(sm.applied(), Some(log_id(1, 8)));
    assert_eq!(sm.apply_count(), 9);
}

#[tokio::test]
async fn applied_state_reports_last_entry_and_membership() {
    let mut sm = MemStateMachine::new();
    assert_eq!(sm.applied_state().await.unwrap(), (None, StoredMembership::default()));

    let mut entries = blanks(1, 0..1);
    entries.push(Entry::new_membership(log_id(1, 1), membership(&[1, 2])));
    entries.push(Entry::new_blank(log_id(1, 2)));
    let responses = sm.apply(entries).await.unwrap();
    assert_eq!(responses, vec![Response::ok(None); 3]);

    let (applied, stored) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 2)));
    assert_eq!(stored, StoredMembership::new(Some(log_id(1, 1)), membership(&[1, 2])));
}

#[tokio::test]
async fn apply_out_of_order_fails_and_changes_nothing() {
    let mut sm = populated().await;
    // Applied again, and skipping an index.
    assert!(sm.apply(normal(2, vec![Request::set("k1", "x")])).await.is_err());
    assert!(sm.apply(normal(4, vec![Request::set("k1", "x")])).await.is_err());
    // A gap inside the batch: nothing of it is applied.
    let mut gap = normal(3, vec![Request::set("k1", "x")]);
    gap.extend(normal(5, vec![Request::set("k1", "y")]));
    assert!(sm.apply(gap).await.is_err());

    assert_eq!(sm.applied(), Some(log_id(1, 2)));
    assert_eq!(sm.data()["k1"], "a");
    assert_eq!(sm.apply_count(), 3);
}

#[tokio::test]
async fn snapshot_built_on_one_installs_on_another() {
    let mut source = populated().await;
    let snapshot = source.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 2)));
    assert_eq!(snapshot.meta.last_membership, StoredMembership::new(Some(log_id(1, 0)), membership(&[1, 2, 3])));
    let current = source.get_current_snapshot().await.unwrap().expect("the built snapshot is current");
    assert_eq!(current.meta, snapshot.meta);

    // Transfer it the way a follower receives it: written into a fresh buffer.
    let mut target = MemStateMachine::new();
    let mut buffer = target.begin_receiving_snapshot().await.unwrap();
    buffer.write_all(snapshot.snapshot.get_ref()).await.unwrap();
    target.install_snapshot(&snapshot.meta, buffer).await.unwrap();

    assert_eq!(target.data(), source.data());
    assert_eq!(target.applied_state().await.unwrap(), source.applied_state().await.unwrap());
    let installed = target.get_current_snapshot().await.unwrap().expect("the installed snapshot is current");
    assert_eq!(installed.meta, snapshot.meta);
    assert_eq!(installed.snapshot.into_inner(), snapshot.snapshot.into_inner());
    assert_eq!(target.apply_count(), 0, "entries covered by a snapshot are not counted");

    // The log continues after the snapshot.
    let responses = target.apply(normal(3, vec![Request::set("k1", "c")])).await.unwrap();
    assert_eq!(responses, vec![Response::ok(some("a"))]);
}

#[tokio::test]
async fn corrupt_snapshot_is_refused_and_state_is_kept() {
    let mut sm = populated().await;
    let meta = SnapshotMeta {
        last_log_id: Some(log_id(1, 9)),
        last_membership: StoredMembership::default(),
        snapshot_id: "corrupt".to_string(),
    };
    for data in [vec![1, 0, 0], vec![9, 0, 0, 0, 0, 0, 0, 0, b'k'], vec![1, 0, 0, 0, 0, 0, 0, 0, 0xff]] {
        let buffer = Box::new(std::io::Cursor::new(data));
        assert!(sm.install_snapshot(&meta, buffer).await.is_err());
    }
    assert_eq!(sm.applied(), Some(log_id(1, 2)));
    assert_eq!(sm.data().len(), 2);
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
}

#[tokio::test]
async fn reopen_keeps_state_and_fails_old_handles() {
    let mut sm = populated().await;
    let mut old_builder = sm.get_snapshot_builder().await;
    let mut reopened = sm.reopen();

    assert_eq!(reopened.applied_state().await.unwrap().0, Some(log_id(1, 2)));
    assert_eq!(reopened.data(), sm.data());
    assert!(sm.apply(normal(3, vec![Request::Noop])).await.is_err());
    assert!(sm.applied_state().await.is_err());
    assert!(old_builder.build_snapshot().await.is_err());
    reopened.apply(normal(3, vec![Request::Noop])).await.unwrap();
}

#[tokio::test]
async fn reopen_empty_from_snapshot_restarts_from_the_last_snapshot() {
    let sm = populated().await;
    // No snapshot yet: everything is lost.
    let mut fresh = sm.reopen_empty_from_snapshot();
    assert_eq!(fresh.applied_state().await.unwrap(), (None, StoredMembership::default()));
    assert!(fresh.data().is_empty());

    let mut sm = populated().await;
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    sm.apply(normal(3, vec![Request::set("k3", "c")])).await.unwrap();

    let mut restarted = sm.reopen_empty_from_snapshot();
    assert_eq!(restarted.applied(), Some(log_id(1, 2)));
    assert_eq!(restarted.data(), BTreeMap::from([("k1".into(), "a".into()), ("k2".into(), "b".into())]));
    // The entries after the snapshot are applied again.
    let responses = restarted.apply(normal(3, vec![Request::set("k3", "c")])).await.unwrap();
    assert_eq!(responses, vec![Response::ok(None)]);
}

#[tokio::test(start_paused = true)]
async fn apply_delay_slows_every_apply_call() {
    let mut sm = MemStateMachine::new();
    sm.set_apply_delay(Duration::from_millis(30));
    let start = Instant::now();
    sm.apply(blanks(1, 0..2)).await.unwrap();
    sm.apply(blanks(1, 2..3)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(60));
}
