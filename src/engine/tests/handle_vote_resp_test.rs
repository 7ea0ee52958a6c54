//! `Engine::handle_vote_resp`: counting grants, winning, and yielding to a greater vote.

use std::time::Duration;

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{C, EngineBuilder, assert_deadline_after, io, joint, voters, voters_and_learners};
use crate::engine::{Command, Engine, ReplicationTarget, ServerState};
use crate::testing_types::log_id;
use crate::types::VoteResponse;
use crate::types::{Entry, Membership, Vote};

/// Node 1, candidate of term 2 holding the grants of `granted`, log `[T1.0, T1.1]`.
fn candidate(membership: Membership<C>, granted: &[u64]) -> EngineBuilder {
    EngineBuilder::node(1)
        .vote(Vote::new(2, 1))
        .log([log_id(1, 0), log_id(1, 1)])
        .committed(log_id(1, 0))
        .membership(log_id(1, 0), membership)
        .candidate(granted)
}

fn grant(vote: Vote<C>) -> VoteResponse<C> {
    VoteResponse::new(vote, true, Some(log_id(1, 1)))
}

fn reject(vote: Vote<C>) -> VoteResponse<C> {
    VoteResponse::new(vote, false, Some(log_id(1, 1)))
}

/// What node 1 does on winning term 2: elected vote, streams to `targets`, a blank entry.
fn leader_commands(targets: &[u64]) -> Vec<Command<C>> {
    let elected = Vote::new_committed(2, 1);
    let targets = targets.iter().map(|id| ReplicationTarget { id: *id, node: () }).collect();
    vec![
        Command::SaveVote { vote: elected },
        Command::UpdateReplicationStreams { vote: elected, targets },
        Command::AppendEntries {
            io: io(1, elected, Some(log_id(2, 2))),
            entries: vec![Entry::new_blank(log_id(2, 2))],
        },
    ]
}

#[test]
fn candidate_with_a_quorum_of_grants_becomes_leader() {
    let now = Instant::now();
    let mut engine = candidate(voters(&[1, 2, 3]), &[1]).build();

    engine.handle_vote_resp(now, 2, &grant(Vote::new(2, 1)));

    // Raft §5.2: a candidate that wins a majority becomes leader.
    assert_eq!(engine.take_commands(), leader_commands(&[2, 3]));
    assert_eq!(engine.state.server_state, ServerState::Leader);
    assert_eq!(engine.state.vote, Vote::new_committed(2, 1));
    assert_eq!(engine.state.leader_id, Some(1));
    assert_eq!(engine.election_deadline(), None);
    assert!(engine.candidate.is_none());
    let leader = engine.leader.as_ref().expect("a leader");
    assert_eq!(leader.progress, [(2, None), (3, None)].into(), "nothing is known of the followers yet");
    assert_eq!(leader.flushed, None);
}

#[test]
fn candidate_without_a_quorum_keeps_waiting() {
    let now = Instant::now();
    let mut engine = candidate(voters(&[1, 2, 3, 4, 5]), &[1]).build();

    engine.handle_vote_resp(now, 2, &grant(Vote::new(2, 1)));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.server_state, ServerState::Candidate);
    assert_eq!(engine.candidate.as_ref().map(|c| c.granted.clone()), Some([1, 2].into()));
}

#[test]
fn grant_from_a_learner_does_not_count() {
    let now = Instant::now();
    let mut engine = candidate(voters_and_learners(&[1, 2, 3], &[4]), &[1]).build();

    engine.handle_vote_resp(now, 4, &grant(Vote::new(2, 1)));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.server_state, ServerState::Candidate);
}

#[test]
fn grant_for_an_earlier_election_is_ignored() {
    let now = Instant::now();
    let mut engine = candidate(voters(&[1, 2, 3]), &[1]).build();

    engine.handle_vote_resp(now, 2, &grant(Vote::new(1, 1)));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.candidate.as_ref().map(|c| c.granted.clone()), Some([1].into()));
}

#[test]
fn joint_election_needs_a_majority_of_each_config() {
    // Raft §6: during joint consensus an election needs a majority of old AND new.
    let cases: [(&[u64], u64, bool); 4] = [
        (&[1, 2], 4, false), // old {1,2} majority; new {4} is not
        (&[1, 4], 5, false), // new {4,5} majority; old {1} is not
        (&[1, 2, 4], 5, true),
        (&[1, 4], 3, true), // node 3 votes in both
    ];
    for (granted, from, wins) in cases {
        let now = Instant::now();
        let mut engine = candidate(joint(&[1, 2, 3], &[3, 4, 5]), granted).build();

        engine.handle_vote_resp(now, from, &grant(Vote::new(2, 1)));

        let expected = if wins { leader_commands(&[2, 3, 4, 5]) } else { vec![] };
        assert_eq!(engine.take_commands(), expected, "granted {granted:?} + {from}");
        assert_eq!(engine.leader.is_some(), wins, "granted {granted:?} + {from}");
    }
}

#[test]
fn rejection_with_a_newer_term_turns_candidate_into_follower() {
    let now = Instant::now();
    let deadline = now + Duration::from_millis(100);
    let mut engine = candidate(voters(&[1, 2, 3]), &[1]).deadline(deadline).build();

    engine.handle_vote_resp(now, 3, &reject(Vote::new(3, 3)));

    // Raft §5.1: adopt the newer term and become follower; the vote of that term is not cast.
    let term_3 = Vote { term: 3, node_id: None, committed: false };
    assert_eq!(engine.take_commands(), vec![Command::SaveVote { vote: term_3 }]);
    assert_eq!(engine.state.vote, term_3);
    assert_eq!(engine.state.server_state, ServerState::Follower);
    assert_eq!(engine.state.leader_id, None);
    assert!(engine.candidate.is_none());
    assert_eq!(engine.election_deadline(), Some(deadline), "the running timer stays");
}

#[test]
fn rejection_by_the_elected_leader_of_the_term_makes_candidate_follow_it() {
    let now = Instant::now();
    let mut engine = candidate(voters(&[1, 2, 3]), &[1]).build();

    engine.handle_vote_resp(now, 3, &reject(Vote::new_committed(2, 3)));

    // Raft §5.2: a candidate that learns of the leader of its term returns to follower.
    assert_eq!(engine.take_commands(), vec![Command::SaveVote { vote: Vote::new_committed(2, 3) }]);
    assert_eq!(engine.state.server_state, ServerState::Follower);
    assert_eq!(engine.state.leader_id, Some(3));
    assert!(engine.candidate.is_none());
}

#[test]
fn rejection_without_a_greater_vote_is_ignored() {
    let now = Instant::now();
    let mut engine = candidate(voters(&[1, 2, 3]), &[1]).build();

    // Node 3 is in an older term but holds a more up-to-date log (Raft §5.4.1).
    let resp = VoteResponse::new(Vote::new_committed(1, 1), false, Some(log_id(1, 5)));
    engine.handle_vote_resp(now, 3, &resp);

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.vote, Vote::new(2, 1));
    assert_eq!(engine.state.server_state, ServerState::Candidate);
}

#[test]
fn rejection_carrying_another_candidates_vote_of_our_term_casts_no_vote() {
    let now = Instant::now();
    let no_vote = Vote { term: 3, node_id: None, committed: false };
    let mut engine = EngineBuilder::node(1)
        .vote(no_vote)
        .log([log_id(1, 0)])
        .committed(log_id(1, 0))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .build();

    engine.handle_vote_resp(now, 3, &reject(Vote::new(3, 5)));

    // Raft §5.2: node 3 voting for node 5 in term 3 is node 3's choice; node 1 has cast no
    // vote in term 3 and may still grant one.
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.vote, no_vote);
}

/// Node 1, elected leader of term 2 over voters 1, 2, 3, with no election timer.
fn leader() -> Engine<C> {
    EngineBuilder::node(1)
        .vote(Vote::new_committed(2, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2)])
        .committed(log_id(1, 0))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .leader(1)
        .build()
}

#[test]
fn late_grant_after_winning_is_ignored() {
    let now = Instant::now();
    let mut engine = leader();

    engine.handle_vote_resp(now, 3, &grant(Vote::new(2, 1)));

    assert_eq!(engine.take_commands(), vec![]);
    assert!(engine.leader.is_some());
}

#[test]
fn leader_stepping_down_on_a_late_rejection_restarts_its_election_timer() {
    let now = Instant::now();
    let mut engine = leader();
    assert_eq!(engine.election_deadline(), None);

    engine.handle_vote_resp(now, 3, &reject(Vote::new(3, 3)));

    let term_3 = Vote { term: 3, node_id: None, committed: false };
    assert_eq!(engine.take_commands(), vec![Command::CloseReplicationStreams, Command::SaveVote { vote: term_3 }]);
    assert!(engine.leader.is_none());
    assert_eq!(engine.state.server_state, ServerState::Follower);
    assert_eq!(engine.state.leader_id, None);
    // Raft §5.2: a follower that hears from no leader must campaign. Without a timer the
    // former leader would wait forever if the newer term never produces a leader.
    assert_deadline_after(&engine, now);
}

/// Found in review: node 4 holds the config {1,2,3} that removed it, not knowing it committed,
/// and campaigns as a voter of the joint config it knows committed. A voter refuses it and
/// answers with its committed entry, which node 4's log holds: node 4 learns the removal
/// committed and stops campaigning for good. An entry it does not hold teaches it nothing.
#[test]
fn a_voters_committed_entry_that_the_log_holds_is_committed_here_too() {
    let now = Instant::now();
    let removed = || {
        EngineBuilder::node(4)
            .vote(Vote::new(2, 4))
            .log([log_id(1, 0), log_id(1, 1), log_id(1, 2)])
            .committed(log_id(1, 1))
            .membership(log_id(1, 1), joint(&[1, 2, 3, 4], &[1, 2, 3]))
            .uncommitted_membership(log_id(1, 2), voters(&[1, 2, 3]))
            .candidate(&[])
            .deadline(now + Duration::from_millis(200))
            .build()
    };
    let refusal = |committed| VoteResponse { committed: Some(committed), ..reject(Vote::new_committed(1, 1)) };

    let mut engine = removed();
    engine.handle_vote_resp(now, 1, &refusal(log_id(2, 2)));
    assert_eq!(engine.state.committed, Some(log_id(1, 1)), "an entry not in this log proves nothing");
    assert_eq!(engine.state.server_state, ServerState::Candidate);

    engine.handle_vote_resp(now, 1, &refusal(log_id(1, 2)));
    assert_eq!(engine.state.committed, Some(log_id(1, 2)));
    assert_eq!(engine.state.membership.committed.membership, voters(&[1, 2, 3]));
    assert_eq!(engine.state.server_state, ServerState::Learner);
    assert!(engine.candidate.is_none());
    assert_eq!(engine.election_deadline(), None, "it never campaigns again");
}
