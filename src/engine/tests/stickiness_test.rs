//! Leader stickiness (dissertation §9.6, with check-quorum §6.2): a voter that heard from a
//! leader within the minimum election timeout refuses votes and pre-votes, so a node that
//! merely lost contact cannot depose a healthy leader.

use std::time::Duration;

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{C, EngineBuilder, TIMEOUT_MIN, assert_deadline_after, req, voters};
use crate::engine::{Command, ServerState};
use crate::testing_types::log_id;
use crate::types::{AppendEntriesResponse, VoteRequest, VoteResponse};
use crate::types::{LogId, Vote};

fn last() -> Option<LogId<C>> {
    Some(log_id(2, 2))
}

fn leader_vote() -> Vote<C> {
    Vote::new_committed(2, 1)
}

/// Node 2, following node 1 of term 2 among voters 1, 2, 3, check-quorum on.
fn follower() -> EngineBuilder {
    EngineBuilder::node(2)
        .vote(leader_vote())
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2)])
        .committed(log_id(2, 2))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .check_quorum(true)
}

/// Node 3's request for term 3, with a log as up-to-date as ours.
fn vote_req(pre_vote: bool, force: bool) -> VoteRequest<C> {
    VoteRequest { vote: Vote::new(3, 3), last_log_id: last(), pre_vote, force }
}

#[test]
fn accepted_leader_message_records_the_contact() {
    let now = Instant::now();
    let mut engine = follower().build();

    let got = engine.handle_append_entries(now, req(leader_vote(), last(), vec![]));

    assert_eq!(got.0, AppendEntriesResponse::Success { matched: last() });
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.last_leader_contact, Some(now));
    assert_deadline_after(&engine, now);
}

#[test]
fn refused_leader_message_is_no_contact() {
    let now = Instant::now();
    let mut engine = follower().build();

    let got = engine.handle_append_entries(now, req(Vote::new_committed(1, 3), last(), vec![]));

    // Raft §5.1: a deposed leader is no sign of a live leader either.
    assert_eq!(got, (AppendEntriesResponse::HigherVote(leader_vote()), None));
    assert_eq!(engine.last_leader_contact, None);
}

struct Case {
    name: &'static str,
    /// How long before the request the leader was last heard from.
    since_contact: Duration,
    pre_vote: bool,
    force: bool,
    granted: bool,
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let c = |name, since_contact, pre_vote, force, granted| Case { name, since_contact, pre_vote, force, granted };
    let just_before = TIMEOUT_MIN - Duration::from_nanos(1);
    vec![
        c("vote, leader just heard", Duration::ZERO, false, false, false),
        c("vote, leader heard just within the timeout", just_before, false, false, false),
        c("pre-vote, leader just heard", Duration::ZERO, true, false, false),
        c("pre-vote, leader heard just within the timeout", just_before, true, false, false),
        // A transfer or an operator asks the voters to ignore the leader they know.
        c("forced vote, leader just heard", Duration::ZERO, false, true, true),
        c("forced pre-vote, leader just heard", Duration::ZERO, true, true, true),
        // Dissertation §9.6: once a minimum election timeout passed without the leader, the
        // voter lets an election go ahead.
        c("vote, leader silent for the minimum timeout", TIMEOUT_MIN, false, false, true),
        c("pre-vote, leader silent for the minimum timeout", TIMEOUT_MIN, true, false, true),
        c("vote, leader silent for longer", 2 * TIMEOUT_MIN, false, false, true),
    ]
}

#[test]
fn voter_that_heard_from_a_leader_recently_refuses_unforced_requests() {
    for case in cases() {
        let contact = Instant::now();
        let now = contact + case.since_contact;
        let deadline = now + Duration::from_secs(60);
        let mut engine = follower().last_leader_contact(contact).deadline(deadline).build();
        let state_before = engine.state.clone();
        let request = vote_req(case.pre_vote, case.force);

        let resp = engine.handle_vote_req(now, &request);

        let name = case.name;
        let real_grant = case.granted && !case.pre_vote;
        let resp_vote = if case.granted { request.vote } else { leader_vote() };
        let expected = VoteResponse {
            vote: resp_vote,
            vote_granted: case.granted,
            last_log_id: last(),
            pre_vote: case.pre_vote,
            committed: state_before.committed,
        };
        assert_eq!(resp, expected, "{name}");
        let expected_commands = if real_grant { vec![Command::SaveVote { vote: request.vote }] } else { vec![] };
        assert_eq!(engine.take_commands(), expected_commands, "{name}");
        if real_grant {
            assert_eq!(engine.state.vote, request.vote, "{name}");
            assert_eq!(engine.state.leader_id, None, "{name}");
            assert_deadline_after(&engine, now);
        } else {
            assert_eq!(engine.state, state_before, "{name}: refusing changes nothing");
            assert_eq!(engine.election_deadline(), Some(deadline), "{name}");
        }
    }
}

#[test]
fn without_check_quorum_a_recent_leader_does_not_hold_back_a_vote() {
    let now = Instant::now();
    let mut engine = follower().check_quorum(false).last_leader_contact(now).build();

    let resp = engine.handle_vote_req(now, &vote_req(false, false));

    // Raft §5.2 as in the paper: stickiness comes with check-quorum.
    assert_eq!(VoteResponse { committed: None, ..resp }, VoteResponse::new(Vote::new(3, 3), true, last()));
    assert_eq!(engine.take_commands(), vec![Command::SaveVote { vote: Vote::new(3, 3) }]);
}

/// Node 1, leader of term 2 among voters 1, 2, 3, check-quorum on.
fn leader() -> EngineBuilder {
    EngineBuilder::node(1)
        .vote(leader_vote())
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2)])
        .committed(log_id(2, 2))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .check_quorum(true)
        .leader(1)
}

#[test]
fn leader_refuses_unforced_votes_and_pre_votes() {
    for pre_vote in [false, true] {
        let now = Instant::now();
        let mut engine = leader().build();
        let state_before = engine.state.clone();

        let resp = engine.handle_vote_req(now, &vote_req(pre_vote, false));

        // Dissertation §9.6: the leader itself is the surest sign that a leader is alive.
        let expected = VoteResponse {
            vote: leader_vote(),
            vote_granted: false,
            last_log_id: last(),
            pre_vote,
            committed: state_before.committed,
        };
        assert_eq!(resp, expected, "pre_vote {pre_vote}");
        assert_eq!(engine.take_commands(), vec![], "pre_vote {pre_vote}");
        assert_eq!(engine.state, state_before, "pre_vote {pre_vote}");
        assert!(engine.leader.is_some(), "pre_vote {pre_vote}");
    }
}

#[test]
fn leader_grants_a_forced_vote_and_steps_down() {
    let now = Instant::now();
    let mut engine = leader().build();

    let resp = engine.handle_vote_req(now, &vote_req(false, true));

    assert_eq!(VoteResponse { committed: None, ..resp }, VoteResponse::new(Vote::new(3, 3), true, last()));
    assert_eq!(
        engine.take_commands(),
        vec![Command::CloseReplicationStreams, Command::SaveVote { vote: Vote::new(3, 3) }]
    );
    assert!(engine.leader.is_none());
    assert_eq!(engine.state.server_state, ServerState::Follower);
    assert_deadline_after(&engine, now);
}

/// A voter that restarts keeps the promise its answers to a leader made before it stopped:
/// for `election_timeout_min` after startup it refuses votes, as if it had just heard from a
/// leader. Otherwise a voter that answered a leader's heartbeat, crashed and came back at once
/// could elect another leader inside that leader's lease (a stale lease read).
#[test]
fn a_restarted_voter_refuses_votes_for_one_minimum_election_timeout() {
    let now = Instant::now();
    let cases = [
        ("right after startup", now, false),
        ("just before the promise ends", now + TIMEOUT_MIN - Duration::from_nanos(1), false),
        ("once it ends", now + TIMEOUT_MIN, true),
    ];
    for (name, at, granted) in cases {
        let mut engine = follower().build();
        engine.startup(now);
        engine.take_commands();

        let resp = engine.handle_vote_req(at, &vote_req(true, false));

        assert_eq!(resp.vote_granted, granted, "{name}");
    }
}

#[test]
fn a_node_that_never_saw_a_term_makes_no_promise_at_startup() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(2).check_quorum(true).build();

    engine.startup(now);

    assert_eq!(engine.last_leader_contact, None);
}

/// Issue #15, finding 2: an operator's `trigger().elect()` on a follower campaigns as its
/// election timer would, so voters that follow a live leader refuse it and the leader's lease
/// stays sound. Only a leader standing again campaigns forced.
#[test]
fn an_operators_election_on_a_follower_is_not_forced() {
    let now = Instant::now();
    let mut engine = follower().pre_vote(true).build();

    engine.trigger_elect(now);

    let cmds = engine.take_commands();
    let Some(Command::SendVote { req }) = cmds.back() else { panic!("a vote request: {cmds:?}") };
    assert!(req.pre_vote && !req.force, "{req:?}");
}

#[test]
fn an_operators_election_on_the_leader_is_forced() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(1)
        .vote(leader_vote())
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2)])
        .committed(log_id(2, 2))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .check_quorum(true)
        .pre_vote(true)
        .leader(1)
        .build();

    engine.trigger_elect(now);

    let cmds = engine.take_commands();
    assert!(engine.leader.is_none(), "it stood down");
    let Some(Command::SendVote { req }) = cmds.back() else { panic!("a vote request: {cmds:?}") };
    assert!(!req.pre_vote && req.force && req.vote == Vote::new(3, 1), "{req:?}");
}

/// Found in review: the candidate counts its own vote, so an operator's election on a follower
/// that has just heard from the leader would win with one other voter whose stickiness ran
/// out — inside the leader's lease, which counts on this follower's answer. It refuses, as it
/// would refuse anyone else's request.
#[test]
fn an_operators_election_on_a_follower_that_heard_from_a_live_leader_is_refused() {
    let now = Instant::now();
    let mut engine = follower().pre_vote(true).last_leader_contact(now - Duration::from_millis(5)).build();
    let state_before = engine.state.clone();

    engine.trigger_elect(now);

    assert_eq!(engine.take_commands(), vec![]);
    assert!(engine.candidate.is_none());
    assert_eq!(engine.state, state_before);

    // Once its promise ran out, it stands.
    engine.trigger_elect(now - Duration::from_millis(5) + TIMEOUT_MIN);
    assert!(engine.candidate.is_some());
}
