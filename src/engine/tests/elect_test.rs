//! `Engine::elect`: becoming a candidate of the next term (Raft §5.2).

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{EngineBuilder, assert_deadline_after, io, log_id_by, voters, voters_and_learners};
use crate::engine::{Command, ServerState};
use crate::testing_types::log_id;
use crate::types::VoteRequest;
use crate::types::{Entry, Vote};

#[test]
fn follower_increments_term_votes_for_itself_and_requests_votes() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(2)
        .vote(Vote::new_committed(1, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(1, 2)])
        .committed(log_id(1, 1))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .build();

    engine.elect(now);

    // Raft §5.2: increment currentTerm, vote for self, send RequestVote with the last log id
    // for the up-to-date check of §5.4.1.
    let candidate = Vote::new(2, 2);
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::SaveVote { vote: candidate },
            Command::SendVote { req: VoteRequest::new(candidate, Some(log_id(1, 2))) },
        ]
    );
    assert_eq!(engine.state.vote, candidate);
    assert_eq!(engine.state.server_state, ServerState::Candidate);
    assert_eq!(engine.state.leader_id, None);
    let c = engine.candidate.as_ref().expect("a candidate");
    assert_eq!((c.vote, c.granted.clone()), (candidate, [2].into()));
    // Raft §5.2: the election timer restarts, so a split vote ends in a new election.
    assert_deadline_after(&engine, now);
}

#[test]
fn leader_stops_replication_before_campaigning_again() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(1)
        .vote(Vote::new_committed(2, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2)])
        .committed(log_id(2, 2))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .leader(1)
        .build();

    engine.elect(now);

    let candidate = Vote::new(3, 1);
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::CloseReplicationStreams,
            Command::SaveVote { vote: candidate },
            Command::SendVote { req: VoteRequest::new(candidate, Some(log_id(2, 2))) },
        ]
    );
    assert!(engine.leader.is_none());
    assert_eq!(engine.state.server_state, ServerState::Candidate);
    assert_eq!(engine.state.leader_id, None);
    assert_deadline_after(&engine, now);
}

#[test]
fn candidate_starts_over_in_the_next_term_with_only_its_own_grant() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(2)
        .vote(Vote::new(3, 2))
        .log([log_id(1, 0), log_id(1, 1)])
        .membership(log_id(1, 0), voters(&[1, 2, 3, 4, 5]))
        .candidate(&[2, 4])
        .build();

    engine.elect(now);

    let candidate = Vote::new(4, 2);
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::SaveVote { vote: candidate },
            Command::SendVote { req: VoteRequest::new(candidate, Some(log_id(1, 1))) },
        ]
    );
    let c = engine.candidate.as_ref().expect("a candidate");
    assert_eq!((c.vote, c.granted.clone()), (candidate, [2].into()), "grants of term 3 do not carry over");
}

#[test]
fn learner_does_not_campaign() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(3)
        .vote(Vote::new_committed(1, 1))
        .log([log_id(1, 0)])
        .membership(log_id(1, 0), voters_and_learners(&[1, 2], &[3]))
        .build();

    engine.elect(now);

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.vote, Vote::new_committed(1, 1));
    assert_eq!(engine.state.server_state, ServerState::Learner);
    assert!(engine.candidate.is_none());
    assert_eq!(engine.election_deadline(), None);
}

#[test]
fn sole_voter_wins_without_asking_anyone_and_appends_a_blank_entry() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(2)
        .vote(Vote::new_committed(4, 1))
        .log([log_id(1, 0), log_id(4, 1)])
        .committed(log_id(4, 1))
        .membership(log_id(1, 0), voters(&[2]))
        .build();

    engine.elect(now);

    // Raft §5.4.2 and §8: a new leader commits an entry of its own term to learn what is
    // committed; the blank entry is that entry.
    let elected = Vote::new_committed(5, 2);
    let blank = log_id_by(2, 5, 2);
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::SaveVote { vote: elected },
            Command::UpdateReplicationStreams { vote: elected, targets: vec![] },
            Command::AppendEntries { io: io(1, elected, Some(blank)), entries: vec![Entry::new_blank(blank)] },
        ]
    );
    assert_eq!(engine.state.server_state, ServerState::Leader);
    assert_eq!(engine.state.leader_id, Some(2));
    assert_eq!(engine.election_deadline(), None);
    assert!(engine.candidate.is_none());
}
