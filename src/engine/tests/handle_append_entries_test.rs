//! `Engine::handle_append_entries`: whom a node follows, and the log matching check
//! (Raft §5.1, §5.2, §5.3).

use std::time::Duration;

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{EngineBuilder, assert_deadline_after, follower, io, log_id_by, normal, req, voters};
use crate::engine::{Command, ServerState};
use crate::testing_types::log_id;
use crate::types::AppendEntriesResponse;
use crate::types::{Entry, Vote};

#[test]
fn request_with_a_stale_or_unelected_vote_is_refused() {
    let cases = [("older term", Vote::new_committed(1, 1)), ("not elected", Vote::new(3, 3))];
    for (name, vote) in cases {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(60);
        let mut engine = follower(log_id(1, 1)).deadline(deadline).build();
        let state_before = engine.state.clone();

        let got =
            engine.handle_append_entries(now, req(vote, Some(log_id(2, 2)), vec![Entry::new_blank(log_id(3, 3))]));

        // Raft §5.1: a request with a stale term is rejected; the leader learns our vote.
        assert_eq!(got, (AppendEntriesResponse::HigherVote(Vote::new_committed(2, 1)), None), "{name}");
        assert_eq!(engine.take_commands(), vec![], "{name}");
        assert_eq!(engine.state, state_before, "{name}");
        assert_eq!(engine.election_deadline(), Some(deadline), "{name}: a stale leader is no sign of life");
    }
}

#[test]
fn missing_prev_log_id_is_a_conflict_with_the_last_log_id_as_hint() {
    // Raft §5.3: reply false if the log does not contain an entry at prevLogIndex whose term
    // matches prevLogTerm. The cases: beyond the log, and same index from another leader.
    let cases = [log_id(2, 5), log_id_by(3, 2, 2)];
    for prev in cases {
        let now = Instant::now();
        let mut engine = follower(log_id(1, 1)).build();

        let got = engine.handle_append_entries(now, req(Vote::new_committed(2, 1), Some(prev), vec![]));

        let conflict = AppendEntriesResponse::Conflict { prev_log_id: Some(prev), last_log_id: Some(log_id(2, 2)) };
        assert_eq!(got, (conflict, None), "prev {prev}");
        assert_eq!(engine.take_commands(), vec![], "prev {prev}");
        assert_eq!(engine.state.last_log_id(), Some(log_id(2, 2)));
        // The leader is legitimate even though our logs differ.
        assert_deadline_after(&engine, now);
    }
}

#[test]
fn new_leader_is_followed_and_its_entries_appended() {
    let now = Instant::now();
    let mut engine = follower(log_id(1, 1)).build();
    let leader = Vote::new_committed(3, 3);
    let entries = vec![Entry::new_blank(log_id_by(3, 3, 3)), normal(log_id_by(3, 3, 4), "x")];

    let got = engine.handle_append_entries(now, req(leader, Some(log_id(2, 2)), entries.clone()));

    let appended = io(1, leader, Some(log_id_by(3, 3, 4)));
    assert_eq!(got, (AppendEntriesResponse::Success { matched: Some(log_id_by(3, 3, 4)) }, Some(appended)));
    assert_eq!(
        engine.take_commands(),
        vec![Command::SaveVote { vote: leader }, Command::AppendEntries { io: appended, entries }]
    );
    assert_eq!(engine.state.vote, leader);
    assert_eq!(engine.state.leader_id, Some(3));
    assert_eq!(engine.state.server_state, ServerState::Follower);
    assert_eq!(engine.state.last_log_id(), Some(log_id_by(3, 3, 4)));
    assert_eq!(engine.state.io.accepted, appended);
    assert_deadline_after(&engine, now);
}

#[test]
fn candidate_or_leader_gives_way_to_the_leader_of_a_term_at_least_as_new() {
    // Raft §5.2: a candidate that hears from a leader of its term returns to follower.
    // Raft §5.1: a leader that hears from a newer term steps down.
    let candidate = EngineBuilder::node(2).vote(Vote::new(3, 2)).candidate(&[2]);
    let leader = EngineBuilder::node(2).vote(Vote::new_committed(2, 2)).leader(0);
    let cases = [("candidate", candidate, vec![]), ("leader", leader, vec![Command::CloseReplicationStreams])];
    for (name, builder, mut expected) in cases {
        let now = Instant::now();
        let mut engine = builder.log([log_id(1, 0), log_id(1, 1)]).membership(log_id(1, 0), voters(&[1, 2, 3])).build();
        let new_leader = Vote::new_committed(3, 1);

        let got = engine.handle_append_entries(now, req(new_leader, Some(log_id(1, 1)), vec![]));

        let accepted = engine.state.io.accepted;
        assert_eq!(got, (AppendEntriesResponse::Success { matched: Some(log_id(1, 1)) }, Some(accepted)), "{name}");
        expected.push(Command::SaveVote { vote: new_leader });
        assert_eq!(engine.take_commands(), expected, "{name}");
        assert!(engine.leader.is_none() && engine.candidate.is_none(), "{name}");
        assert_eq!(engine.state.server_state, ServerState::Follower, "{name}");
        assert_eq!(engine.state.leader_id, Some(1), "{name}");
        assert_deadline_after(&engine, now);
    }
}

#[test]
fn new_member_takes_the_log_from_the_start_and_becomes_a_voter_by_its_membership() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(2).build();
    let leader = Vote::new_committed(1, 1);
    let membership = voters(&[1, 2, 3]);
    let entries = vec![Entry::new_membership(log_id(1, 0), membership.clone()), normal(log_id(1, 1), "x")];
    let mut request = req(leader, None, entries.clone());
    request.leader_commit = Some(log_id(1, 0));

    let got = engine.handle_append_entries(now, request);

    let appended = io(1, leader, Some(log_id(1, 1)));
    assert_eq!(got, (AppendEntriesResponse::Success { matched: Some(log_id(1, 1)) }, Some(appended)));
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::SaveVote { vote: leader },
            Command::AppendEntries { io: appended, entries },
            Command::Apply { first: 0, last: log_id(1, 0) },
            Command::SaveCommitted { committed: log_id(1, 0) },
        ]
    );
    // Raft §6: the membership counts once appended; here it is also committed.
    assert_eq!(engine.state.server_state, ServerState::Follower);
    assert_eq!(engine.state.membership.effective(), &membership);
    assert_eq!(engine.state.membership.committed.log_id, Some(log_id(1, 0)));
    assert_eq!(engine.state.committed, Some(log_id(1, 0)));
    assert_deadline_after(&engine, now);
}
