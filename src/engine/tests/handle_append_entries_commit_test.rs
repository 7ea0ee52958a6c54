//! `Engine::handle_append_entries`: a follower following the leader's commit (Raft §5.3).

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{C, follower, io, normal, req};
use crate::engine::Command;
use crate::testing_types::log_id;
use crate::types::AppendEntriesResponse;
use crate::types::{LogId, Vote};

fn vote() -> Vote<C> {
    Vote::new_committed(2, 1)
}

fn commit_commands(first: u64, last: LogId<C>) -> Vec<Command<C>> {
    vec![Command::Apply { first, last }, Command::SaveCommitted { committed: last }]
}

#[test]
fn commit_follows_the_leader_up_to_the_last_new_entry() {
    // Raft §5.3: if leaderCommit > commitIndex, commitIndex = min(leaderCommit, last new entry).
    let cases = [
        (None, None),
        (Some(log_id(1, 0)), None),
        (Some(log_id(1, 1)), Some(log_id(1, 1))),
        (Some(log_id(2, 4)), Some(log_id(2, 4))),
        (Some(log_id(2, 9)), Some(log_id(2, 4))),
    ];
    for (leader_commit, committed) in cases {
        let now = Instant::now();
        let mut engine = follower(log_id(1, 0)).build();
        let entries = vec![normal(log_id(2, 3), "a"), normal(log_id(2, 4), "b")];
        let mut request = req(vote(), Some(log_id(2, 2)), entries.clone());
        request.leader_commit = leader_commit;

        let got = engine.handle_append_entries(now, request);

        let appended = io(1, vote(), Some(log_id(2, 4)));
        let case = format!("leader commit {leader_commit:?}");
        assert_eq!(got, (AppendEntriesResponse::Success { matched: Some(log_id(2, 4)) }, Some(appended)), "{case}");
        let mut expected = vec![Command::AppendEntries { io: appended, entries }];
        expected.extend(committed.map_or(vec![], |c| commit_commands(1, c)));
        assert_eq!(engine.take_commands(), expected, "{case}");
        assert_eq!(engine.state.committed, committed.or(Some(log_id(1, 0))), "{case}");
    }
}

#[test]
fn probe_commits_only_up_to_its_prev_log_id() {
    let now = Instant::now();
    let mut engine = follower(log_id(1, 0)).build();
    let mut probe = req(vote(), Some(log_id(1, 1)), vec![]);
    probe.leader_commit = Some(log_id(2, 5));

    let got = engine.handle_append_entries(now, probe);

    // T2.2 is past what the leader vouched for in this request: it may still be replaced.
    let accepted = engine.state.io.accepted;
    assert_eq!(got, (AppendEntriesResponse::Success { matched: Some(log_id(1, 1)) }, Some(accepted)));
    assert_eq!(engine.take_commands(), commit_commands(1, log_id(1, 1)));
    assert_eq!(engine.state.committed, Some(log_id(1, 1)));
    assert_eq!(engine.state.apply_submitted, Some(log_id(1, 1)));
}

#[test]
fn committed_never_goes_backward() {
    let now = Instant::now();
    let mut engine = follower(log_id(2, 2)).build();
    let mut heartbeat = req(vote(), Some(log_id(2, 2)), vec![]);
    heartbeat.leader_commit = Some(log_id(1, 1));

    let got = engine.handle_append_entries(now, heartbeat);

    assert_eq!(got.0, AppendEntriesResponse::Success { matched: Some(log_id(2, 2)) });
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.committed, Some(log_id(2, 2)));
}

#[test]
fn refused_request_commits_nothing() {
    let now = Instant::now();
    let mut engine = follower(log_id(1, 0)).build();
    let mut request = req(vote(), Some(log_id(2, 7)), vec![]);
    request.leader_commit = Some(log_id(2, 2));

    let got = engine.handle_append_entries(now, request);

    let conflict = AppendEntriesResponse::Conflict { prev_log_id: Some(log_id(2, 7)), last_log_id: Some(log_id(2, 2)) };
    assert_eq!(got, (conflict, None));
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.committed, Some(log_id(1, 0)));
}
