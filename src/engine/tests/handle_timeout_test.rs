//! `Engine::handle_timeout`: the election timer (Raft §5.2).

use std::time::Duration;

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{EngineBuilder, assert_deadline_after, joint, voters, voters_and_learners};
use crate::engine::{Command, ServerState};
use crate::testing_types::log_id;
use crate::types::Vote;
use crate::types::VoteRequest;

/// Node 2 over voters 1, 2, 3 with log `[T1.0, T2.1]` and its election timer at `deadline`.
fn voter(vote: Vote<crate::testing_types::UTConfig>, deadline: Instant) -> EngineBuilder {
    EngineBuilder::node(2)
        .vote(vote)
        .log([log_id(1, 0), log_id(2, 1)])
        .committed(log_id(1, 0))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .deadline(deadline)
}

#[test]
fn nothing_happens_before_the_deadline() {
    let now = Instant::now();
    let deadline = now + Duration::from_millis(200);
    let mut engine = voter(Vote::new_committed(2, 1), deadline).build();
    let state_before = engine.state.clone();

    engine.handle_timeout(deadline - Duration::from_millis(1));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state, state_before);
    assert_eq!(engine.election_deadline(), Some(deadline));
}

#[test]
fn follower_that_hears_from_no_leader_campaigns_at_the_deadline() {
    let now = Instant::now();
    let deadline = now + Duration::from_millis(200);
    let mut engine = voter(Vote::new_committed(2, 1), deadline).build();

    engine.handle_timeout(deadline);

    // Raft §5.2: if a follower receives no communication over the election timeout, it
    // begins an election.
    let candidate = Vote::new(3, 2);
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::SaveVote { vote: candidate },
            Command::SendVote { req: VoteRequest::new(candidate, Some(log_id(2, 1))) },
        ]
    );
    assert_eq!(engine.state.server_state, ServerState::Candidate);
    assert_eq!(engine.state.leader_id, None);
    assert_deadline_after(&engine, deadline);
}

#[test]
fn candidate_whose_election_times_out_starts_another_in_the_next_term() {
    let now = Instant::now();
    let deadline = now + Duration::from_millis(200);
    let mut engine = voter(Vote::new(3, 2), deadline).candidate(&[2, 3]).build();
    let late = deadline + Duration::from_millis(7);

    engine.handle_timeout(late);

    // Raft §5.2: a split vote ends with a timeout and a new election in a new term.
    let candidate = Vote::new(4, 2);
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::SaveVote { vote: candidate },
            Command::SendVote { req: VoteRequest::new(candidate, Some(log_id(2, 1))) },
        ]
    );
    let c = engine.candidate.as_ref().expect("a candidate");
    assert_eq!((c.vote, c.granted.clone()), (candidate, [2].into()));
    assert_deadline_after(&engine, late);
}

#[test]
fn learner_never_campaigns_and_disarms_its_timer() {
    let now = Instant::now();
    let deadline = now + Duration::from_millis(200);
    let mut engine = EngineBuilder::node(3)
        .vote(Vote::new_committed(2, 1))
        .log([log_id(1, 0)])
        .membership(log_id(1, 0), voters_and_learners(&[1, 2], &[3]))
        .deadline(deadline)
        .build();

    engine.handle_timeout(deadline);

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.vote, Vote::new_committed(2, 1));
    assert_eq!(engine.state.server_state, ServerState::Learner);
    assert_eq!(engine.election_deadline(), None);
}

/// Found in review (dissertation §4.2.2): node 1, the old leader of a move ({1} -> joint ->
/// {2}), holds the final config {2} that node 2 never received, with the joint config the last
/// one it knows committed. Node 2 needs its vote and cannot get it (node 1's log is longer), so
/// node 1 keeps its timer and campaigns, asking the voters of its effective config. Its own
/// vote does not count there: node 2 must grant it.
#[test]
fn a_voter_of_the_committed_config_campaigns_while_a_later_config_is_uncommitted() {
    let now = Instant::now();
    let deadline = now + Duration::from_millis(200);
    let mut engine = EngineBuilder::node(1)
        .vote(Vote::new_committed(1, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(1, 2)])
        .membership(log_id(1, 1), joint(&[1], &[2]))
        .uncommitted_membership(log_id(1, 2), voters_and_learners(&[2], &[1]))
        .deadline(deadline)
        .build();

    engine.handle_timeout(deadline);

    let candidate = Vote::new(2, 1);
    let cmds = engine.take_commands();
    assert!(
        cmds.iter().any(|c| matches!(c, Command::SendVote { req } if req.vote == candidate && !req.pre_vote)),
        "{cmds:?}"
    );
    assert_eq!(engine.state.server_state, ServerState::Candidate);
    assert!(engine.leader.is_none(), "its own vote is no quorum of {{2}}");

    // Once the config that removes it is known committed, it is a learner and never campaigns.
    let mut removed = EngineBuilder::node(1)
        .vote(Vote::new_committed(1, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(1, 2)])
        .membership(log_id(1, 2), voters_and_learners(&[2], &[1]))
        .deadline(deadline)
        .build();
    removed.handle_timeout(deadline);
    assert_eq!(removed.take_commands(), vec![]);
    assert_eq!(removed.state.server_state, ServerState::Learner);
    assert_eq!(removed.election_deadline(), None);
}

#[test]
fn leader_has_no_timer_to_fire() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(1)
        .vote(Vote::new_committed(2, 1))
        .log([log_id(1, 0), log_id(2, 1)])
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .leader(0)
        .build();

    engine.handle_timeout(now + Duration::from_secs(3600));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.server_state, ServerState::Leader);
    assert!(engine.leader.is_some());
}
