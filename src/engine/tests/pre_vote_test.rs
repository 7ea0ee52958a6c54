//! Pre-vote (dissertation §9.6): `Engine::elect` asks first whether it could win, voters answer
//! `handle_vote_req` without changing state, and `handle_vote_resp` keeps pre-vote grants and
//! votes apart.

use std::time::Duration;

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{C, EngineBuilder, assert_deadline_after, io, log_id_by, voters};
use crate::engine::{Candidate, Command, ServerState};
use crate::testing_types::log_id;
use crate::types::{Entry, LogId, Vote};
use crate::types::{VoteRequest, VoteResponse};

/// The last log id of every node in these tests: the log is `[T1.0, T1.1, T2.2]`.
fn last() -> Option<LogId<C>> {
    Some(log_id(2, 2))
}

/// Node 2 among voters 1, 2, 3 (or `voter_ids`), following node 1 of term 2, pre-vote on.
fn voter(voter_ids: &[u64]) -> EngineBuilder {
    EngineBuilder::node(2)
        .vote(Vote::new_committed(2, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2)])
        .committed(log_id(2, 2))
        .membership(log_id(1, 0), voters(voter_ids))
        .pre_vote(true)
}

fn pre_vote_req(vote: Vote<C>, last_log_id: Option<LogId<C>>) -> VoteRequest<C> {
    VoteRequest { vote, last_log_id, pre_vote: true, force: false }
}

fn pre_vote_resp(vote: Vote<C>, granted: bool) -> VoteResponse<C> {
    // The responder's committed entry, as `voter` builds it.
    VoteResponse { vote, vote_granted: granted, last_log_id: last(), pre_vote: true, committed: last() }
}

fn candidate_of(vote: Vote<C>, granted: &[u64], pre_vote: bool) -> Box<Candidate<C>> {
    Box::new(Candidate { vote, granted: granted.iter().copied().collect(), pre_vote, force: false, turn_of: None })
}

#[test]
fn pre_vote_round_asks_for_the_next_term_without_voting_or_raising_the_term() {
    let now = Instant::now();
    let mut engine = voter(&[1, 2, 3]).build();
    let state_before = engine.state.clone();

    engine.elect(now);

    // Dissertation §9.6: a pre-candidate asks whether it would win the next term; nothing is
    // persisted, so a partitioned node that keeps failing never raises its term.
    let proposed = Vote::new(3, 2);
    assert_eq!(engine.take_commands(), vec![Command::SendVote { req: pre_vote_req(proposed, last()) }]);
    assert_eq!(engine.state.vote, Vote::new_committed(2, 1), "no SaveVote, same term");
    assert_eq!(engine.state.io, state_before.io);
    assert_eq!(engine.state.server_state, ServerState::Candidate);
    assert_eq!(engine.state.leader_id, None);
    assert_eq!(engine.candidate, Some(candidate_of(proposed, &[2], true)));
    assert_deadline_after(&engine, now);
}

#[test]
fn failed_pre_vote_rounds_never_raise_the_term() {
    let now = Instant::now();
    let deadline = now + Duration::from_millis(200);
    let mut engine = voter(&[1, 2, 3]).pre_vote_candidate(&[2, 3]).deadline(deadline).build();

    engine.handle_timeout(deadline);

    // Dissertation §9.6: the next round proposes the same term again; the grants of the
    // timed-out round do not carry over.
    let proposed = Vote::new(3, 2);
    assert_eq!(engine.take_commands(), vec![Command::SendVote { req: pre_vote_req(proposed, last()) }]);
    assert_eq!(engine.state.vote, Vote::new_committed(2, 1));
    assert_eq!(engine.candidate, Some(candidate_of(proposed, &[2], true)));
    assert_deadline_after(&engine, deadline);
}

#[test]
fn sole_voter_passes_its_own_pre_vote_and_takes_over() {
    let now = Instant::now();
    let mut engine = voter(&[2]).build();

    engine.elect(now);

    // Its own grant is a quorum of both rounds: the real vote and the election are saved as one.
    let elected = Vote::new_committed(3, 2);
    let blank = log_id_by(2, 3, 3);
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::SaveVote { vote: elected },
            Command::UpdateReplicationStreams { vote: elected, targets: vec![] },
            Command::AppendEntries { io: io(1, elected, Some(blank)), entries: vec![Entry::new_blank(blank)] },
        ]
    );
    assert_eq!(engine.state.vote, elected);
    assert_eq!(engine.state.server_state, ServerState::Leader);
    assert!(engine.candidate.is_none());
}

#[test]
fn pre_vote_answer_changes_nothing_and_a_grant_echoes_the_request() {
    // Dissertation §9.6: a voter grants a pre-vote on the same terms as a vote (§5.2, §5.4.1),
    // but does not record it, adopt the term, or restart its timer.
    #[rustfmt::skip]
    let cases = [
        ("newer term, equal log", Vote::new(3, 3), last(), true),
        ("much newer term, longer log", Vote::new(9, 3), Some(log_id(2, 7)), true),
        ("stale log", Vote::new(3, 3), Some(log_id(1, 5)), false),
        ("same term as the elected leader", Vote::new(2, 3), last(), false),
        ("older term", Vote::new(1, 3), last(), false),
        ("claims to be elected", Vote::new_committed(3, 3), last(), false),
    ];
    for (name, req_vote, req_last, granted) in cases {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(60);
        let mut engine = voter(&[1, 2, 3]).deadline(deadline).build();
        let state_before = engine.state.clone();

        let resp = engine.handle_vote_req(now, &pre_vote_req(req_vote, req_last));

        // A grant carries the request's vote, so the pre-candidate can match it to its round.
        let resp_vote = if granted { req_vote } else { Vote::new_committed(2, 1) };
        assert_eq!(resp, pre_vote_resp(resp_vote, granted), "{name}");
        assert_eq!(engine.take_commands(), vec![], "{name}");
        assert_eq!(engine.state, state_before, "{name}");
        assert_eq!(engine.election_deadline(), Some(deadline), "{name}");
    }
}

#[test]
fn voter_that_already_voted_in_the_term_refuses_a_pre_vote_for_another() {
    let now = Instant::now();
    let mut engine = voter(&[1, 2, 3]).vote(Vote::new(3, 1)).build();
    let state_before = engine.state.clone();

    let resp = engine.handle_vote_req(now, &pre_vote_req(Vote::new(3, 3), last()));

    // Raft §5.2: it could not grant that vote, so it does not pretend it would.
    assert_eq!(resp, pre_vote_resp(Vote::new(3, 1), false));
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state, state_before);
}

#[test]
fn quorum_of_pre_vote_grants_starts_the_real_election() {
    let now = Instant::now();
    let mut engine = voter(&[1, 2, 3]).pre_vote_candidate(&[2]).build();

    engine.handle_vote_resp(now, 3, &pre_vote_resp(Vote::new(3, 2), true));

    // Dissertation §9.6: only once a majority would vote does the candidate raise its term and
    // run a real election (Raft §5.2): vote for itself and ask again.
    let candidate = Vote::new(3, 2);
    assert_eq!(
        engine.take_commands(),
        vec![Command::SaveVote { vote: candidate }, Command::SendVote { req: VoteRequest::new(candidate, last()) }]
    );
    assert_eq!(engine.state.vote, candidate);
    assert_eq!(engine.state.server_state, ServerState::Candidate);
    assert_eq!(engine.candidate, Some(candidate_of(candidate, &[2], false)), "pre-vote grants are no votes");
    assert_deadline_after(&engine, now);
}

#[test]
fn pre_vote_grant_without_a_quorum_is_counted_and_waits() {
    let now = Instant::now();
    let mut engine = voter(&[1, 2, 3, 4, 5]).pre_vote_candidate(&[2]).build();

    engine.handle_vote_resp(now, 3, &pre_vote_resp(Vote::new(3, 2), true));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.vote, Vote::new_committed(2, 1));
    assert_eq!(engine.candidate, Some(candidate_of(Vote::new(3, 2), &[2, 3], true)));
}

#[test]
fn pre_vote_grant_never_counts_as_a_vote() {
    let now = Instant::now();
    // The real round of term 3: the same vote value as the pre-vote round that led to it.
    let candidate = Vote::new(3, 2);
    let mut engine = voter(&[1, 2, 3]).vote(candidate).candidate(&[2]).build();

    engine.handle_vote_resp(now, 3, &pre_vote_resp(candidate, true));

    // A late pre-vote grant said "I would vote", not "I voted": counting it could elect two
    // leaders in term 3 (Raft §5.2, one vote per term).
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.vote, candidate);
    assert_eq!(engine.candidate, Some(candidate_of(candidate, &[2], false)));
    assert!(engine.leader.is_none());
}

#[test]
fn vote_grant_never_counts_in_a_pre_vote_round() {
    let now = Instant::now();
    let mut engine = voter(&[1, 2, 3]).pre_vote_candidate(&[2]).build();

    engine.handle_vote_resp(now, 3, &VoteResponse::new(Vote::new(3, 2), true, last()));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.vote, Vote::new_committed(2, 1));
    assert_eq!(engine.candidate, Some(candidate_of(Vote::new(3, 2), &[2], true)));
}

#[test]
fn rejected_pre_vote_with_a_newer_term_adopts_the_term() {
    let now = Instant::now();
    let mut engine = voter(&[1, 2, 3]).pre_vote_candidate(&[2]).build();

    engine.handle_vote_resp(now, 3, &pre_vote_resp(Vote::new(4, 3), false));

    // Raft §5.1: any reply of a newer term makes the node adopt it and follow; the vote node 3
    // cast in term 4 is not ours.
    let term_4 = Vote { term: 4, node_id: None, committed: false };
    assert_eq!(engine.take_commands(), vec![Command::SaveVote { vote: term_4 }]);
    assert_eq!(engine.state.vote, term_4);
    assert_eq!(engine.state.server_state, ServerState::Follower);
    assert_eq!(engine.state.leader_id, None);
    assert!(engine.candidate.is_none());
}

#[test]
fn rejected_pre_vote_of_no_newer_term_changes_nothing() {
    let now = Instant::now();
    let mut engine = voter(&[1, 2, 3]).pre_vote_candidate(&[2]).build();
    let state_before = engine.state.clone();

    // Node 3 still follows the leader of term 2.
    engine.handle_vote_resp(now, 3, &pre_vote_resp(Vote::new_committed(2, 1), false));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state, state_before);
    assert_eq!(engine.candidate, Some(candidate_of(Vote::new(3, 2), &[2], true)));
}
