//! `Engine::handle_append_entries`: making the follower's log equal the leader's: skipping
//! what it holds, truncating a conflicting suffix, refusing what breaks the log (Raft §5.3).

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{C, EngineBuilder, follower, io, log_id_by, normal, req, voters};
use crate::engine::{Command, Engine};
use crate::testing_types::log_id;
use crate::types::AppendEntriesResponse;
use crate::types::{Entry, Vote};

#[test]
fn entries_already_in_the_log_are_skipped() {
    let now = Instant::now();
    let mut engine = follower(log_id(1, 1)).build();
    let vote = Vote::new_committed(2, 1);
    let entries = vec![Entry::new_blank(log_id(2, 2)), normal(log_id(2, 3), "x")];

    let got = engine.handle_append_entries(now, req(vote, Some(log_id(1, 1)), entries));

    let appended = io(1, vote, Some(log_id(2, 3)));
    assert_eq!(got, (AppendEntriesResponse::Success { matched: Some(log_id(2, 3)) }, Some(appended)));
    assert_eq!(
        engine.take_commands(),
        vec![Command::AppendEntries { io: appended, entries: vec![normal(log_id(2, 3), "x")] }]
    );
}

#[test]
fn duplicate_request_appends_nothing_and_waits_for_the_last_append() {
    let now = Instant::now();
    let vote = Vote::new_committed(2, 1);
    // T2.2 was accepted as io #4 and is not durable yet.
    let pending = io(4, vote, Some(log_id(2, 2)));
    let mut engine = follower(log_id(1, 1)).accepted(pending).build();

    let got = engine.handle_append_entries(now, req(vote, Some(log_id(1, 1)), vec![Entry::new_blank(log_id(2, 2))]));

    // A duplicate must not be acknowledged before the first copy is durable.
    assert_eq!(got, (AppendEntriesResponse::Success { matched: Some(log_id(2, 2)) }, Some(pending)));
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.io.accepted, pending);
    assert_eq!(engine.state.io.appended, pending);
}

/// Node 2 holds `[T1.0, T1.1, T2.2, T2.3]` of leader 3, who failed in term 2 before they
/// committed; `T2.3` is a membership adding node 4.
fn diverged_follower() -> Engine<C> {
    EngineBuilder::node(2)
        .vote(Vote::new_committed(2, 3))
        .log([log_id(1, 0), log_id(1, 1), log_id_by(3, 2, 2), log_id_by(3, 2, 3)])
        .committed(log_id(1, 1))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .uncommitted_membership(log_id_by(3, 2, 3), voters(&[1, 2, 3, 4]))
        .build()
}

#[test]
fn conflicting_entries_are_truncated_before_appending() {
    let now = Instant::now();
    let mut engine = diverged_follower();
    let leader = Vote::new_committed(3, 1);
    let entries = vec![Entry::new_blank(log_id(1, 1)), Entry::new_blank(log_id(3, 2))];

    let got = engine.handle_append_entries(now, req(leader, Some(log_id(1, 0)), entries));

    // Raft §5.3: an existing entry that conflicts with a new one (same index, different term)
    // is deleted with all that follow it; T1.1 matches and is kept.
    let truncated = io(1, leader, Some(log_id(1, 1)));
    let appended = io(2, leader, Some(log_id(3, 2)));
    assert_eq!(got, (AppendEntriesResponse::Success { matched: Some(log_id(3, 2)) }, Some(appended)));
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::SaveVote { vote: leader },
            Command::TruncateLog { io: truncated, since: log_id_by(3, 2, 2) },
            Command::AppendEntries { io: appended, entries: vec![Entry::new_blank(log_id(3, 2))] },
        ]
    );
    assert_eq!(engine.state.log_ids.keys(), &[log_id(1, 0), log_id(3, 2)]);
    // Raft §6: a server uses the latest configuration in its log; the removed one is gone.
    assert_eq!(engine.state.membership.effective(), &voters(&[1, 2, 3]));
    assert_eq!(engine.state.membership.effective.log_id, Some(log_id(1, 0)));
}

#[test]
fn committed_entries_are_never_truncated() {
    let now = Instant::now();
    let mut engine = follower(log_id(2, 2)).build();
    let intruder = Vote::new_committed(3, 3);

    let got = engine
        .handle_append_entries(now, req(intruder, Some(log_id(1, 1)), vec![Entry::new_blank(log_id_by(3, 3, 2))]));

    // Raft §5.4 (Leader Completeness): a legitimate leader holds every committed entry, so a
    // request that conflicts with one is refused, not obeyed.
    let conflict = AppendEntriesResponse::Conflict { prev_log_id: Some(log_id(2, 2)), last_log_id: Some(log_id(2, 2)) };
    assert_eq!(got, (conflict, None));
    assert_eq!(engine.take_commands(), vec![Command::SaveVote { vote: intruder }]);
    assert_eq!(engine.state.last_log_id(), Some(log_id(2, 2)));
    assert_eq!(engine.state.committed, Some(log_id(2, 2)));
}

#[test]
fn entries_with_a_gap_are_refused() {
    let now = Instant::now();
    let mut engine = follower(log_id(1, 1)).build();
    let vote = Vote::new_committed(2, 1);
    let entries = vec![Entry::new_blank(log_id(2, 3)), Entry::new_blank(log_id(2, 5))];

    let got = engine.handle_append_entries(now, req(vote, Some(log_id(2, 2)), entries));

    let conflict = AppendEntriesResponse::Conflict { prev_log_id: Some(log_id(2, 3)), last_log_id: Some(log_id(2, 2)) };
    assert_eq!(got, (conflict, None));
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.last_log_id(), Some(log_id(2, 2)));
}

/// Entries no leader of the request's term could hold after its prev: of a later term than
/// the leader's (a deposed leader's stream that read its log after a newer leader's entries
/// replaced it), or of a term below the entry before them. Refused whole: nothing appended,
/// acknowledged or committed (found in review: accepted, they broke Log Matching).
#[test]
fn entries_out_of_term_order_are_refused() {
    let now = Instant::now();
    let vote = Vote::new_committed(2, 1);
    let cases = [
        vec![normal(log_id(3, 3), "newer leader's")],
        vec![normal(log_id(1, 3), "below prev's term")],
        vec![normal(log_id(2, 3), "ok"), normal(log_id(1, 4), "falls back")],
    ];
    for entries in cases {
        let mut engine = follower(log_id(1, 1)).build();
        let mut request = req(vote, Some(log_id(2, 2)), entries.clone());
        request.leader_commit = Some(log_id(2, 2));

        let got = engine.handle_append_entries(now, request);

        let refused =
            AppendEntriesResponse::Conflict { prev_log_id: Some(log_id(2, 2)), last_log_id: Some(log_id(2, 2)) };
        assert_eq!(got, (refused, None), "{entries:?}");
        assert_eq!(engine.take_commands(), vec![], "{entries:?}");
        assert_eq!(engine.state.last_log_id(), Some(log_id(2, 2)));
        assert_eq!(engine.state.committed, Some(log_id(1, 1)), "nothing committed from a refused request");
    }
}
