//! `Engine::startup`: the role a node takes from its loaded state, and unfinished applying.

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{EngineBuilder, assert_deadline_after, io, voters, voters_and_learners};
use crate::engine::{Command, ServerState};
use crate::testing_types::log_id;
use crate::types::{Entry, Vote};

#[test]
fn voter_of_a_multi_voter_cluster_starts_as_follower_with_an_election_timer() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(2)
        .vote(Vote::new_committed(1, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(1, 2)])
        .committed(log_id(1, 2))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .build();

    engine.startup(now);

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.server_state, ServerState::Follower);
    assert_eq!(engine.state.vote, Vote::new_committed(1, 1));
    assert!(engine.leader.is_none() && engine.candidate.is_none());
    // Raft §5.2: a follower that hears from no leader within the timeout campaigns.
    assert_deadline_after(&engine, now);
}

#[test]
fn committed_but_unapplied_entries_are_applied_at_startup() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(2)
        .vote(Vote::new_committed(1, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(1, 2), log_id(1, 3), log_id(1, 4)])
        .committed(log_id(1, 3))
        .applied(Some(log_id(1, 1)))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .build();

    engine.startup(now);

    assert_eq!(engine.take_commands(), vec![Command::Apply { first: 2, last: log_id(1, 3) }]);
    assert_eq!(engine.state.apply_submitted, Some(log_id(1, 3)));
    assert_eq!(engine.state.applied, Some(log_id(1, 1)), "applied moves only when the state machine says so");
    assert_eq!(engine.state.committed, Some(log_id(1, 3)));
}

#[test]
fn non_voter_starts_as_learner() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(3)
        .vote(Vote::new_committed(1, 1))
        .log([log_id(1, 0), log_id(1, 1)])
        .membership(log_id(1, 0), voters_and_learners(&[1, 2], &[3]))
        .build();

    engine.startup(now);

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.server_state, ServerState::Learner);
    assert!(engine.leader.is_none() && engine.candidate.is_none());
}

#[test]
fn uninitialized_node_starts_as_learner_and_waits() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(1).build();

    engine.startup(now);

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.server_state, ServerState::Learner);
    assert_eq!(engine.state.vote, Vote::default());
    assert_eq!(engine.state.last_log_id(), None);
    // The timer is armed, but the first timeout only disarms it: a non-voter never campaigns.
    assert_deadline_after(&engine, now);
}

#[test]
fn sole_voter_elects_itself_at_startup() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(1)
        .vote(Vote::new_committed(1, 1))
        .log([log_id(1, 0), log_id(1, 1)])
        .committed(log_id(1, 1))
        .membership(log_id(1, 0), voters(&[1]))
        .build();

    engine.startup(now);

    let elected = Vote::new_committed(2, 1);
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::SaveVote { vote: elected },
            Command::UpdateReplicationStreams { vote: elected, targets: vec![] },
            Command::AppendEntries {
                io: io(1, elected, Some(log_id(2, 2))),
                entries: vec![Entry::new_blank(log_id(2, 2))],
            },
        ]
    );
    assert_eq!(engine.state.server_state, ServerState::Leader);
    assert_eq!(engine.state.vote, elected);
    assert_eq!(engine.state.leader_id, Some(1));
    assert_eq!(engine.state.last_log_id(), Some(log_id(2, 2)));
    assert_eq!(engine.election_deadline(), None, "a leader has no election timer");
    assert!(engine.candidate.is_none());
    assert_eq!(engine.leader.as_ref().map(|l| l.vote), Some(elected));
}

/// Found in review: the only voter of its config, whose vote names another node, may have
/// answered a leader that moved the group to it and still holds a lease on those answers (the
/// final config {2} is appended on leader 1, not yet known committed there). Restarted, it
/// keeps the promise like any voter, and campaigns only after its election timeout.
#[test]
fn a_sole_voter_that_followed_another_leader_keeps_its_promise_at_startup() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(2)
        .vote(Vote::new_committed(1, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(1, 2), log_id(1, 3)])
        .committed(log_id(1, 2))
        .membership(log_id(1, 3), voters(&[2]))
        .build();

    engine.startup(now);

    assert_eq!(engine.take_commands(), vec![], "no campaign at startup");
    assert_eq!(engine.state.server_state, ServerState::Follower);
    assert_eq!(engine.last_leader_contact, Some(now), "the promise its answers made");
    assert_deadline_after(&engine, now);

    // Its election timer campaigns, once the promise has run out: it still becomes leader.
    let deadline = engine.election_deadline().expect("an election timer");
    engine.handle_timeout(deadline);
    assert_eq!(engine.state.server_state, ServerState::Leader);
    assert_eq!(engine.state.vote.term, 2);
}

/// Found by the simulator (seed 1128 before the fixes): a node whose state machine was ahead of
/// its durable log restarts with the log purged up to what was applied — past its last
/// snapshot. The entries in between exist nowhere on it, so as a leader it could catch a
/// follower up neither by entries nor by its (older) snapshot. It builds a new snapshot at once.
#[test]
fn a_log_purged_past_the_last_snapshot_builds_a_snapshot_at_startup() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(2)
        .vote(Vote::new_committed(1, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(1, 2), log_id(1, 3), log_id(1, 4)])
        .purged(log_id(1, 4))
        .committed(log_id(1, 4))
        .snapshot_last(log_id(1, 2))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .build();

    engine.startup(now);

    assert_eq!(engine.take_commands(), vec![Command::BuildSnapshot]);
    assert!(engine.state.snapshot_building);
}
