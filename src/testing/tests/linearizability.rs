//! Hand-written histories with a known verdict.

use crate::testing::linearizability::{
    CheckResult, HistoryError, KvInput, KvOp, KvOutput, check_kv_history, check_kv_history_with_limit,
};

const CLIENT: u64 = 1;

fn get(call: u64, ret: u64, read: Option<&str>) -> KvOp {
    KvOp::returned(CLIENT, KvInput::get("k"), call, ret, KvOutput::Get(read.map(str::to_string)))
}

fn put(call: u64, ret: u64, value: &str) -> KvOp {
    KvOp::returned(CLIENT, KvInput::put("k", value), call, ret, KvOutput::Put)
}

fn delete(call: u64, ret: u64) -> KvOp {
    KvOp::returned(CLIENT, KvInput::delete("k"), call, ret, KvOutput::Delete)
}

fn cas(call: u64, ret: u64, expected: Option<&str>, new: Option<&str>, swapped: bool) -> KvOp {
    KvOp::returned(CLIENT, KvInput::compare_and_set("k", expected, new), call, ret, KvOutput::CompareAndSet(swapped))
}

fn on_key(key: &str, mut op: KvOp) -> KvOp {
    op.input = match op.input {
        KvInput::Get { .. } => KvInput::Get { key: key.into() },
        KvInput::Put { value, .. } => KvInput::Put { key: key.into(), value },
        KvInput::Delete { .. } => KvInput::Delete { key: key.into() },
        KvInput::CompareAndSet { expected, new, .. } => KvInput::CompareAndSet { key: key.into(), expected, new },
    };
    op
}

#[track_caller]
fn assert_linearizable(history: &[KvOp]) {
    assert_eq!(check_kv_history(history).unwrap(), CheckResult::Linearizable, "{history:#?}");
}

/// Assert that `history` is not linearizable; return the witness, checked to be a
/// non-linearizable part of the history on its own.
#[track_caller]
fn assert_not_linearizable(history: &[KvOp]) -> (String, Vec<KvOp>) {
    match check_kv_history(history).unwrap() {
        CheckResult::NotLinearizable { key, ops } => {
            assert!(ops.iter().all(|op| history.contains(op) && op.input.key() == key));
            assert!(
                matches!(check_kv_history(&ops).unwrap(), CheckResult::NotLinearizable { .. }),
                "the witness alone must not be linearizable: {ops:#?}"
            );
            (key, ops)
        }
        other => panic!("expected a violation, got {other:?} for {history:#?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        get(0, 1, None),
        put(2, 3, "a"),
        get(4, 5, Some("a")),
        put(6, 7, "b"),
        get(8, 9, Some("b")),
        delete(10, 11),
        get(12, 13, None),
        delete(14, 15),
    ]);
}

#[test]
fn operations_may_be_listed_in_any_order() {
    assert_linearizable(&[get(4, 5, Some("a")), put(2, 3, "a"), get(0, 1, None)]);
}

#[test]
fn overlapping_writes_take_effect_in_either_order() {
    for last in ["a", "b"] {
        assert_linearizable(&[put(0, 10, "a"), put(5, 15, "b"), get(20, 21, Some(last))]);
    }
}

#[test]
fn reads_concurrent_with_a_write_see_the_old_or_the_new_value() {
    // The write of "b" spans [2, 10]: each read inside it may see either value, as long as
    // no read sees "a" after a read that returned earlier saw "b".
    assert_linearizable(&[put(0, 1, "a"), put(2, 10, "b"), get(3, 4, Some("a")), get(5, 6, Some("b"))]);
    assert_linearizable(&[put(0, 1, "a"), put(2, 10, "b"), get(3, 9, Some("b")), get(4, 8, Some("a"))]);
}

#[test]
fn operations_that_touch_at_an_instant_are_concurrent() {
    // The read is called at the instant the write returns: either order is allowed.
    assert_linearizable(&[put(0, 5, "a"), get(5, 6, None)]);
}

#[test]
fn compare_and_set_swaps_only_on_the_expected_value() {
    assert_linearizable(&[
        cas(0, 1, Some("a"), Some("b"), false),
        cas(2, 3, None, Some("a"), true),
        cas(4, 5, Some("a"), Some("b"), true),
        cas(6, 7, Some("a"), Some("c"), false),
        get(8, 9, Some("b")),
        cas(10, 11, Some("b"), None, true),
        get(12, 13, None),
    ]);
}

#[test]
fn concurrent_compare_and_sets_one_wins() {
    assert_linearizable(&[
        put(0, 1, "a"),
        cas(2, 6, Some("a"), Some("b"), true),
        cas(3, 5, Some("a"), Some("c"), false),
        get(7, 8, Some("b")),
    ]);
}

#[test]
fn an_unknown_outcome_may_take_effect_later() {
    let write = KvOp::unknown(2, KvInput::put("k", "b"), 2);
    assert_linearizable(&[put(0, 1, "a"), write.clone(), get(3, 4, Some("a")), get(100, 101, Some("b"))]);
}

#[test]
fn an_unknown_outcome_may_never_take_effect() {
    let write = KvOp::unknown(2, KvInput::put("k", "b"), 2);
    let swap = KvOp::unknown(3, KvInput::compare_and_set("k", Some("a"), None), 3);
    let read = KvOp::unknown(4, KvInput::get("k"), 4);
    assert_linearizable(&[put(0, 1, "a"), write, swap, read, get(50, 51, Some("a")), get(100, 101, Some("a"))]);
}

#[test]
fn an_unknown_outcome_cannot_be_undone() {
    // Once a read saw the unknown write, a later read cannot miss it.
    let write = KvOp::unknown(2, KvInput::put("k", "b"), 2);
    let (_, witness) = assert_not_linearizable(&[put(0, 1, "a"), write, get(3, 4, Some("b")), get(5, 6, Some("a"))]);
    assert_eq!(witness.len(), 4);
}

#[test]
fn an_unknown_outcome_cannot_take_effect_before_its_call() {
    let write = KvOp::unknown(2, KvInput::put("k", "b"), 10);
    assert_not_linearizable(&[put(0, 1, "a"), write, get(3, 4, Some("b"))]);
}

#[test]
fn stale_read_after_a_completed_write_is_caught() {
    assert_not_linearizable(&[put(0, 1, "a"), get(2, 3, None)]);
    assert_not_linearizable(&[put(0, 1, "a"), put(2, 3, "b"), get(4, 5, Some("a"))]);
}

#[test]
fn read_of_a_value_never_written_is_caught() {
    assert_not_linearizable(&[get(0, 1, Some("z"))]);
    assert_not_linearizable(&[put(0, 10, "a"), get(1, 9, Some("z"))]);
}

#[test]
fn two_compare_and_sets_swapping_the_same_value_are_caught() {
    assert_not_linearizable(&[
        put(0, 1, "a"),
        cas(2, 6, Some("a"), Some("b"), true),
        cas(3, 5, Some("a"), Some("c"), true),
    ]);
}

#[test]
fn lost_write_is_caught() {
    // Both writes completed; the second is lost: later reads see only the first.
    assert_not_linearizable(&[put(0, 1, "a"), put(2, 3, "b"), get(4, 5, Some("a")), get(6, 7, Some("a"))]);
}

#[test]
fn reads_going_back_in_time_are_caught() {
    assert_not_linearizable(&[put(0, 1, "a"), put(2, 10, "b"), get(3, 4, Some("b")), get(5, 6, Some("a"))]);
}

#[test]
fn witness_is_the_broken_key_up_to_the_violation() {
    let mut history = Vec::new();
    for i in 0..20 {
        history.push(on_key("x", put(10 * i, 10 * i + 5, &format!("x{i}"))));
        history.push(on_key("y", put(10 * i, 10 * i + 5, &format!("y{i}"))));
    }
    // A stale read of y at time 101..102, then more history.
    history.push(on_key("y", get(101, 102, Some("y3"))));
    for i in 20..40 {
        history.push(on_key("y", put(10 * i, 10 * i + 5, &format!("y{i}"))));
    }

    let (key, witness) = assert_not_linearizable(&history);
    assert_eq!(key, "y");
    assert!(witness.iter().all(|op| op.call <= 102), "{witness:#?}");
    assert!(witness.contains(&on_key("y", get(101, 102, Some("y3")))));
    assert!(witness.windows(2).all(|w| w[0].call <= w[1].call), "sorted by call time");
}

#[test]
fn independent_keys_do_not_constrain_each_other() {
    assert_linearizable(&[
        on_key("x", put(0, 1, "a")),
        on_key("y", get(2, 3, None)),
        on_key("y", put(4, 5, "b")),
        on_key("x", get(6, 7, Some("a"))),
    ]);
}

#[test]
fn a_search_out_of_steps_is_unknown() {
    // Eight concurrent writes and a read that needs one particular write last.
    let mut history: Vec<KvOp> = (0..8).map(|i| put(0, 100, &format!("v{i}"))).collect();
    history.push(get(101, 102, Some("v0")));
    assert_eq!(check_kv_history_with_limit(&history, 5).unwrap(), CheckResult::Unknown { key: "k".into() });
    assert_eq!(check_kv_history(&history).unwrap(), CheckResult::Linearizable);
}

#[test]
fn a_violation_wins_over_a_search_out_of_steps() {
    let mut history: Vec<KvOp> = (0..20).map(|i| on_key("a", put(0, 100, &format!("v{i}")))).collect();
    history.push(on_key("b", get(0, 1, Some("never"))));
    assert!(matches!(
        check_kv_history_with_limit(&history, 5).unwrap(),
        CheckResult::NotLinearizable { key, .. } if key == "b"
    ));
}

#[test]
fn malformed_histories_are_rejected() {
    assert_eq!(
        check_kv_history(&[put(0, 1, "a"), get(5, 4, None)]),
        Err(HistoryError::ReturnBeforeCall { index: 1, call: 5, at: 4 })
    );
    let mismatched = KvOp::returned(CLIENT, KvInput::get("k"), 0, 1, KvOutput::CompareAndSet(true));
    assert!(matches!(check_kv_history(&[mismatched]), Err(HistoryError::OutputMismatch { index: 0, .. })));
}

#[test]
fn operations_display_for_witnesses() {
    assert_eq!(cas(1, 2, Some("a"), None, true).to_string(), r#"c1 [1, 2] cas(k, Some("a") -> None) -> swapped"#);
    assert_eq!(get(3, 4, None).to_string(), "c1 [3, 4] get(k) -> None");
    assert_eq!(KvOp::unknown(7, KvInput::put("k", "v"), 5).to_string(), "c7 [5, ?] put(k, v) -> ?");
}
