//! `Engine::on_log_flushed`: log I/O became durable; a leader's own log counts for commit
//! only once it is durable.

use pretty_assertions::assert_eq;

use super::fixture::{C, EngineBuilder, io, voters};
use crate::engine::{Command, LogIOId};
use crate::testing_types::log_id;
use crate::types::{Membership, Vote};

fn elected() -> Vote<C> {
    Vote::new_committed(2, 1)
}

/// The io that made the log end at `T2.index`: the blank T2.2 is io #1.
fn io_to(index: u64) -> LogIOId<C> {
    io(index - 1, elected(), Some(log_id(2, index)))
}

/// Node 1, leader of term 2 with log `[T1.0, T1.1, T2.2, T2.3, T2.4]` accepted and nothing of
/// this term durable yet.
fn leader(membership: Membership<C>) -> EngineBuilder {
    EngineBuilder::node(1)
        .vote(elected())
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2), log_id(2, 3), log_id(2, 4)])
        .committed(log_id(1, 1))
        .membership(log_id(1, 0), membership)
        .accepted(io_to(4))
        .flushed(io(0, Vote::new_committed(1, 1), Some(log_id(1, 1))))
        .leader(1)
}

#[test]
fn leader_counts_only_its_flushed_log_toward_commit() {
    let mut engine = leader(voters(&[1, 2, 3])).progress(2, log_id(2, 4)).build();

    engine.on_log_flushed(io_to(3));

    // Raft §5.3: an entry commits once a majority stores it durably; the leader's copy of T2.4
    // is accepted but not durable, so only T2.3 has a majority (nodes 1 and 2).
    assert_eq!(
        engine.take_commands(),
        vec![Command::Apply { first: 2, last: log_id(2, 3) }, Command::SaveCommitted { committed: log_id(2, 3) }]
    );
    assert_eq!(engine.state.committed, Some(log_id(2, 3)));
    assert_eq!(engine.state.apply_submitted, Some(log_id(2, 3)));
    assert_eq!(engine.state.io.flushed, io_to(3));
    assert_eq!(engine.leader.as_ref().unwrap().flushed, Some(log_id(2, 3)));
}

#[test]
fn leader_flush_without_a_quorum_commits_nothing() {
    let mut engine = leader(voters(&[1, 2, 3])).build();

    engine.on_log_flushed(io_to(4));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.committed, Some(log_id(1, 1)));
    assert_eq!(engine.state.io.flushed, io_to(4));
    assert_eq!(engine.leader.as_ref().unwrap().flushed, Some(log_id(2, 4)));
}

#[test]
fn sole_voter_commits_on_its_own_flush() {
    let mut engine = leader(voters(&[1])).build();

    engine.on_log_flushed(io_to(4));

    assert_eq!(
        engine.take_commands(),
        vec![Command::Apply { first: 2, last: log_id(2, 4) }, Command::SaveCommitted { committed: log_id(2, 4) }]
    );
    assert_eq!(engine.state.committed, Some(log_id(2, 4)));
}

#[test]
fn flush_of_an_io_decided_before_the_term_does_not_count_for_the_leader() {
    // Node 1 truncated its log as a follower (io #2), then won term 3 and appended its blank
    // entry as io #3. The flush of io #2 arrives only now.
    let elected = Vote::new_committed(3, 1);
    let mut engine = EngineBuilder::node(1)
        .vote(elected)
        .log([log_id(1, 0), log_id(1, 1), log_id(1, 2), log_id(3, 3)])
        .committed(log_id(1, 1))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .accepted(io(3, elected, Some(log_id(3, 3))))
        .flushed(io(1, Vote::new_committed(2, 3), None))
        .leader(3)
        .build();
    let truncated = io(2, Vote::new_committed(2, 3), Some(log_id(1, 2)));

    engine.on_log_flushed(truncated);

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.io.flushed, truncated);
    assert_eq!(engine.leader.as_ref().unwrap().flushed, None, "only this term's I/O speaks for the leader");
}

#[test]
fn stale_flush_notification_is_ignored() {
    let mut engine = leader(voters(&[1])).flushed(io_to(4)).leader_flushed(log_id(2, 4)).build();
    let state_before = engine.state.clone();

    engine.on_log_flushed(io_to(3));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state, state_before);
    assert_eq!(engine.leader.as_ref().unwrap().flushed, Some(log_id(2, 4)));
}

#[test]
fn follower_flush_only_records_durability() {
    let vote = Vote::new_committed(2, 1);
    let mut engine = EngineBuilder::node(2)
        .vote(vote)
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2)])
        .committed(log_id(1, 1))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .accepted(io(2, vote, Some(log_id(2, 2))))
        .flushed(io(0, vote, Some(log_id(1, 1))))
        .build();

    engine.on_log_flushed(io(1, vote, Some(log_id(2, 2))));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.io.flushed, io(1, vote, Some(log_id(2, 2))));
    assert_eq!(engine.state.io.accepted, io(2, vote, Some(log_id(2, 2))));
    assert_eq!(engine.state.committed, Some(log_id(1, 1)));
}
