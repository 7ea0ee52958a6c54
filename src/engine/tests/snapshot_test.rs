//! Snapshots and log compaction (Raft §7): `trigger_snapshot`, the `LogsSinceLast` policy in
//! `on_applied`, purging in `on_snapshot_built` and `purge_log`, and `install_snapshot`.

use pretty_assertions::assert_eq;

use super::fixture::{C, EngineBuilder, io, log_id_by, voters};
use crate::config::SnapshotPolicy;
use crate::engine::Command;
use crate::storage::SnapshotMeta;
use crate::testing_types::log_id;
use crate::types::{AppendEntriesResponse, LogId, Membership, StoredMembership, Vote};

/// `[T1.0, T1.1, T2.2, ..., T2.last]`.
fn log_upto(last: u64) -> Vec<LogId<C>> {
    (0..=last).map(|i| if i < 2 { log_id(1, i) } else { log_id(2, i) }).collect()
}

/// Node 2 among voters 1, 2, 3 with the log `[T1.0, T1.1, T2.2, ..., T2.9]`, all committed and
/// submitted for applying.
fn node() -> EngineBuilder {
    EngineBuilder::node(2)
        .vote(Vote::new_committed(2, 1))
        .log(log_upto(9))
        .committed(log_id(2, 9))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
}

#[test]
fn trigger_builds_a_snapshot_unless_one_is_being_built() {
    for building in [false, true] {
        let mut builder = node();
        if building {
            builder = builder.snapshot_building();
        }
        let mut engine = builder.build();

        engine.trigger_snapshot();

        // One build at a time: a second would only repeat the first's work.
        let expected = if building { vec![] } else { vec![Command::BuildSnapshot] };
        assert_eq!(engine.take_commands(), expected, "building {building}");
        assert!(engine.state.snapshot_building, "building {building}");
    }
}

#[test]
fn applying_enough_entries_since_the_last_snapshot_builds_one() {
    struct Case {
        name: &'static str,
        policy: SnapshotPolicy,
        snapshot_last: Option<LogId<C>>,
        building: bool,
        applied_now: LogId<C>,
        builds: bool,
    }
    let every_3 = SnapshotPolicy::LogsSinceLast(3);
    let every_5 = SnapshotPolicy::LogsSinceLast(5);
    let c = |name, policy, snapshot_last, building, applied_now, builds| Case {
        name,
        policy,
        snapshot_last,
        building,
        applied_now,
        builds,
    };
    // Applied up to T2.2 before each case.
    let cases = [
        c("two since the snapshot", every_3, Some(log_id(1, 1)), false, log_id(2, 3), false),
        c("three since the snapshot", every_3, Some(log_id(1, 1)), false, log_id(2, 4), true),
        c("more than three since the snapshot", every_3, Some(log_id(1, 1)), false, log_id(2, 7), true),
        c("four entries and no snapshot yet", every_5, None, false, log_id(2, 3), false),
        c("five entries and no snapshot yet", every_5, None, false, log_id(2, 4), true),
        c("a build is running", every_3, Some(log_id(1, 1)), true, log_id(2, 7), false),
        c("policy never", SnapshotPolicy::Never, None, false, log_id(2, 9), false),
    ];
    for case in cases {
        let mut builder =
            node().snapshot_policy(case.policy).applied(Some(log_id(2, 2))).apply_submitted(Some(log_id(2, 9)));
        if let Some(s) = case.snapshot_last {
            builder = builder.snapshot_last(s);
        }
        if case.building {
            builder = builder.snapshot_building();
        }
        let mut engine = builder.build();

        engine.on_applied(case.applied_now);

        let name = case.name;
        let expected = if case.builds { vec![Command::BuildSnapshot] } else { vec![] };
        assert_eq!(engine.take_commands(), expected, "{name}");
        assert_eq!(engine.state.applied, Some(case.applied_now.max(log_id(2, 2))), "{name}");
        assert_eq!(engine.state.snapshot_building, case.builds || case.building, "{name}");
    }
}

#[test]
fn entries_reapplied_below_the_last_snapshot_do_not_build_one() {
    // A state machine that keeps no state restarts empty and re-applies the log, while the
    // snapshot it built before the restart is still stored and the log was never purged.
    let mut engine = node()
        .snapshot_policy(SnapshotPolicy::LogsSinceLast(3))
        .snapshot_last(log_id(2, 6))
        .applied(None)
        .apply_submitted(Some(log_id(2, 4)))
        .build();

    engine.on_applied(log_id(2, 4));

    // Nothing was applied since the snapshot: there is nothing new to compact.
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.applied, Some(log_id(2, 4)));
    assert!(!engine.state.snapshot_building);
}

#[test]
fn built_snapshot_purges_the_log_behind_it_keeping_log_to_keep_entries() {
    struct Case {
        name: &'static str,
        log_to_keep: u64,
        applied: LogId<C>,
        snapshot_last: Option<LogId<C>>,
        built: LogId<C>,
        purged: Option<LogId<C>>,
    }
    let c = |name, log_to_keep, applied, snapshot_last, built, purged| Case {
        name,
        log_to_keep,
        applied,
        snapshot_last,
        built,
        purged,
    };
    let cases = [
        // Raft §7: the snapshot replaces the log up to its last entry; a few entries stay so
        // that followers slightly behind get entries instead of the whole snapshot.
        c("keeps three", 3, log_id(2, 9), None, log_id(2, 8), Some(log_id(2, 5))),
        c("keeps none", 0, log_id(2, 9), None, log_id(2, 8), Some(log_id(2, 8))),
        c("keeps more than the snapshot covers", 20, log_id(2, 9), None, log_id(2, 8), None),
        // The state machine may have built past the applied entries reported so far.
        c("never past what is applied", 0, log_id(2, 6), None, log_id(2, 8), Some(log_id(2, 6))),
        c("an earlier purge went further", 3, log_id(2, 9), Some(log_id(2, 7)), log_id(2, 8), None),
    ];
    for case in cases {
        let mut builder = node()
            .log_to_keep(case.log_to_keep)
            .applied(Some(case.applied))
            .apply_submitted(Some(log_id(2, 9)))
            .snapshot_building();
        if let Some(s) = case.snapshot_last {
            builder = builder.snapshot_last(s).purged(s);
        }
        let mut engine = builder.build();
        let purged_before = engine.state.log_ids.purged();

        engine.on_snapshot_built(Some(case.built));

        let name = case.name;
        let expected = case.purged.map_or(vec![], |upto| vec![Command::PurgeLog { upto }]);
        assert_eq!(engine.take_commands(), expected, "{name}");
        assert_eq!(engine.state.log_ids.purged(), case.purged.or(purged_before), "{name}");
        assert_eq!(engine.state.snapshot_last, Some(case.built), "{name}");
        assert!(!engine.state.snapshot_building, "{name}");
        assert_eq!(engine.state.last_log_id(), Some(log_id(2, 9)), "{name}");
    }
}

#[test]
fn built_snapshot_older_than_the_last_one_changes_nothing_but_ends_the_build() {
    let mut engine = node().snapshot_last(log_id(2, 8)).snapshot_building().build();

    engine.on_snapshot_built(Some(log_id(2, 6)));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.snapshot_last, Some(log_id(2, 8)));
    assert_eq!(engine.state.log_ids.purged(), None);
    assert!(!engine.state.snapshot_building);
}

#[test]
fn purge_never_goes_past_the_snapshot_or_what_is_applied() {
    struct Case {
        name: &'static str,
        snapshot_last: Option<LogId<C>>,
        applied: LogId<C>,
        purged: Option<LogId<C>>,
        upto: u64,
        expected: Option<LogId<C>>,
    }
    let c = |name, snapshot_last, applied, purged, upto, expected| Case {
        name,
        snapshot_last,
        applied,
        purged,
        upto,
        expected,
    };
    let snap = Some(log_id(2, 6));
    let cases = [
        c("within the snapshot", snap, log_id(2, 9), None, 4, Some(log_id(2, 4))),
        c("the first entry", snap, log_id(2, 9), None, 0, Some(log_id(1, 0))),
        // Raft §7: entries a follower may still need are served from the snapshot instead.
        c("capped at the snapshot", snap, log_id(2, 9), None, 8, Some(log_id(2, 6))),
        c("far beyond the log", snap, log_id(2, 9), None, 100, Some(log_id(2, 6))),
        c("capped at what is applied", Some(log_id(2, 8)), log_id(2, 5), None, 7, Some(log_id(2, 5))),
        c("no snapshot", None, log_id(2, 9), None, 4, None),
        c("already purged there", snap, log_id(2, 9), Some(log_id(2, 5)), 5, None),
        c("already purged further", snap, log_id(2, 9), Some(log_id(2, 5)), 3, None),
    ];
    for case in cases {
        let mut builder = node().applied(Some(case.applied)).apply_submitted(Some(log_id(2, 9)));
        if let Some(s) = case.snapshot_last {
            builder = builder.snapshot_last(s);
        }
        if let Some(p) = case.purged {
            builder = builder.purged(p);
        }
        let mut engine = builder.build();

        engine.purge_log(case.upto);

        let name = case.name;
        let expected = case.expected.map_or(vec![], |upto| vec![Command::PurgeLog { upto }]);
        assert_eq!(engine.take_commands(), expected, "{name}");
        assert_eq!(engine.state.log_ids.purged(), case.expected.or(case.purged), "{name}");
        assert_eq!(engine.state.last_log_id(), Some(log_id(2, 9)), "{name}");
    }
}

fn leader_3() -> Vote<C> {
    Vote::new_committed(3, 3)
}

fn meta(last: Option<LogId<C>>, membership_at: LogId<C>, membership: Membership<C>) -> SnapshotMeta<C> {
    SnapshotMeta {
        last_log_id: last,
        last_membership: StoredMembership::new(Some(membership_at), membership),
        snapshot_id: "s1".to_string(),
    }
}

/// Node 2 following node 3 of term 3, holding `log`, committed (and applied) up to `committed`.
fn receiver(log: Vec<LogId<C>>, committed: LogId<C>) -> EngineBuilder {
    EngineBuilder::node(2).vote(leader_3()).log(log).committed(committed).membership(log_id(1, 0), voters(&[1, 2, 3]))
}

#[test]
fn snapshot_covering_nothing_new_is_ignored() {
    let cases = [("up to what is committed", Some(log_id(2, 5))), ("older", Some(log_id(2, 3))), ("empty", None)];
    for (name, last) in cases {
        let mut engine = receiver(log_upto(7), log_id(2, 5)).build();
        let state_before = engine.state.clone();

        let installed = engine.install_snapshot(meta(last, log_id(1, 0), voters(&[1, 2, 3, 4])));

        // Installing would take the state machine back to an older state.
        assert!(!installed, "{name}");
        assert_eq!(engine.take_commands(), vec![], "{name}");
        assert_eq!(engine.state, state_before, "{name}");
    }
}

#[test]
fn snapshot_whose_last_entry_is_in_the_log_keeps_the_entries_after_it() {
    let mut engine = receiver(log_upto(6), log_id(1, 1)).build();
    let io_before = engine.state.io.clone();
    let snapshot = meta(Some(log_id(2, 4)), log_id(2, 3), voters(&[1, 2, 3, 4]));

    assert!(engine.install_snapshot(snapshot.clone()));

    // Raft §7: if the log holds the snapshot's last entry, the entries after it are retained.
    assert_eq!(
        engine.take_commands(),
        vec![Command::InstallSnapshot { meta: snapshot.clone() }, Command::PurgeLog { upto: log_id(2, 4) }]
    );
    assert_eq!(engine.state.committed, Some(log_id(2, 4)));
    assert_eq!(engine.state.apply_submitted, Some(log_id(2, 4)));
    assert_eq!(engine.state.applied, Some(log_id(2, 4)));
    assert_eq!(engine.state.snapshot_last, Some(log_id(2, 4)));
    assert_eq!(engine.state.log_ids.purged(), Some(log_id(2, 4)));
    assert_eq!(engine.state.last_log_id(), Some(log_id(2, 6)));
    assert_eq!(engine.state.io, io_before, "no log write");
    assert_eq!(*engine.state.membership.committed, snapshot.last_membership);
    assert_eq!(*engine.state.membership.effective, snapshot.last_membership);
}

#[test]
fn snapshot_keeps_a_newer_membership_of_the_log_effective() {
    let newer = voters(&[1, 2, 3, 4, 5]);
    let mut engine = receiver(log_upto(6), log_id(1, 1)).uncommitted_membership(log_id(2, 5), newer.clone()).build();
    let snapshot = meta(Some(log_id(2, 4)), log_id(2, 3), voters(&[1, 2, 3, 4]));

    assert!(engine.install_snapshot(snapshot.clone()));

    // Raft §6: a node uses the latest configuration in its log; the snapshot's is committed.
    assert_eq!(*engine.state.membership.committed, snapshot.last_membership);
    assert_eq!(*engine.state.membership.effective, StoredMembership::new(Some(log_id(2, 5)), newer));
}

/// Raft §7 with log matching: an entry that differs from the snapshot's at its last index, and
/// everything after it, conflicts and is truncated; entries before it may be inside the
/// snapshot and are only purged (their writes' outcome is unknown, not "discarded").
#[test]
fn snapshot_not_matching_the_log_truncates_only_from_its_last_index() {
    let snapshot_last = log_id_by(3, 3, 5);
    // (case, log, the truncation expected: `since` and the last log id after it)
    let cases = [
        ("log shorter than the snapshot", (0..=3).map(|i| log_id(1, i)).collect::<Vec<_>>(), None),
        (
            "log conflicting at the snapshot's last index",
            (0..=7).map(|i| log_id(1, i)).collect(),
            Some((log_id(1, 5), log_id(1, 4))),
        ),
    ];
    for (name, log, truncation) in cases {
        // The uncommitted entries carried a membership that the snapshot's replaces.
        let mut engine = receiver(log, log_id(1, 1)).uncommitted_membership(log_id(1, 2), voters(&[1, 2])).build();
        let accepted_before = engine.state.io.accepted;
        let snapshot = meta(Some(snapshot_last), log_id_by(3, 3, 4), voters(&[1, 2, 3, 4]));

        assert!(engine.install_snapshot(snapshot.clone()), "{name}");

        let mut expected = Vec::new();
        let accepted = match truncation {
            Some((since, last)) => {
                let io = io(1, leader_3(), Some(last));
                expected.push(Command::TruncateLog { io, since });
                io
            }
            None => accepted_before,
        };
        expected.push(Command::InstallSnapshot { meta: snapshot.clone() });
        expected.push(Command::PurgeLog { upto: snapshot_last });
        assert_eq!(engine.take_commands(), expected, "{name}");
        assert_eq!(engine.state.io.accepted, accepted, "{name}");
        assert_eq!(engine.state.last_log_id(), Some(snapshot_last), "{name}");
        assert_eq!(engine.state.log_ids.purged(), Some(snapshot_last), "{name}");
        assert_eq!(engine.state.log_ids.get(6), None, "{name}");
        assert_eq!(engine.state.committed, Some(snapshot_last), "{name}");
        assert_eq!(engine.state.apply_submitted, Some(snapshot_last), "{name}");
        assert_eq!(engine.state.applied, Some(snapshot_last), "{name}");
        assert_eq!(engine.state.snapshot_last, Some(snapshot_last), "{name}");
        assert_eq!(*engine.state.membership.committed, snapshot.last_membership, "{name}");
        assert_eq!(*engine.state.membership.effective, snapshot.last_membership, "{name}");
    }
}

/// Issue #15, finding 6 (confirmed): a snapshot's membership is committed, but so is the
/// second-to-last membership entry of the log (a leader appends one only once the one before
/// is committed). When the log after the snapshot holds two membership entries, the older one
/// stays the committed one; if the newer one is then truncated, the node falls back to the
/// older entry, not to the snapshot's config, and counts votes and quorums in the right one.
#[test]
fn snapshot_keeps_a_committed_membership_of_the_log_after_it() {
    let (m1, m2) = (voters(&[1, 2, 3, 4]), voters(&[1, 2, 3, 4, 5]));
    let mut engine = receiver(log_upto(9), log_id(1, 1))
        .uncommitted_membership(log_id(2, 6), m1.clone())
        .uncommitted_membership(log_id(2, 8), m2.clone())
        .build();
    let snapshot = meta(Some(log_id(2, 4)), log_id(1, 0), voters(&[1, 2, 3]));

    assert!(engine.install_snapshot(snapshot));
    engine.take_commands();

    assert_eq!(*engine.state.membership.committed, StoredMembership::new(Some(log_id(2, 6)), m1.clone()));
    assert_eq!(*engine.state.membership.effective, StoredMembership::new(Some(log_id(2, 8)), m2));

    // Leader 3 replaces the entries from index 8 on.
    let new_entry = crate::types::Entry::new_blank(crate::engine::tests::fixture::log_id_by(3, 3, 8));
    let request = crate::engine::tests::fixture::req(leader_3(), Some(log_id(2, 7)), vec![new_entry]);
    engine.handle_append_entries(tokio::time::Instant::now(), request);

    assert_eq!(*engine.state.membership.effective, StoredMembership::new(Some(log_id(2, 6)), m1));
}

/// Found by the extended simulator (seed 100081): after a snapshot install that truncated the
/// log, no append follows until the leader sends entries, and a truncation reports no flush of
/// its own. The leader's next probe must not wait for that truncation to be "flushed" — else
/// its answer is parked until an append that only the answer would bring: the follower is lost.
/// A probe waits for the last append only (nothing past the probe's `prev` is acknowledged).
#[test]
fn a_probe_after_a_truncating_snapshot_install_waits_for_no_truncation() {
    let snapshot_last = log_id_by(3, 3, 5);
    let mut engine = receiver((0..=7).map(|i| log_id(1, i)).collect(), log_id(1, 1)).build();
    let appended_before = engine.state.io.appended;
    assert!(engine.install_snapshot(meta(Some(snapshot_last), log_id_by(3, 3, 4), voters(&[1, 2, 3]))));
    engine.take_commands();
    assert!(engine.state.io.accepted.seq > engine.state.io.flushed.seq, "the truncation is not flushed");

    let (resp, wait_for) = engine.handle_append_entries(
        tokio::time::Instant::now(),
        crate::engine::tests::fixture::req(leader_3(), Some(snapshot_last), vec![]),
    );

    assert_eq!(resp, AppendEntriesResponse::Success { matched: Some(snapshot_last) });
    assert_eq!(wait_for, Some(appended_before));
    assert!(wait_for.is_some_and(|io| io.seq <= engine.state.io.flushed.seq), "answered at once");
}
