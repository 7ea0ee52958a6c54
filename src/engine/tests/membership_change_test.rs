//! Membership changes by joint consensus (Raft §6, dissertation §4.3): `change_membership`,
//! and finishing the change once the joint config commits (`leader_advance_membership`, run
//! from `on_log_flushed` and `on_replication_progress`).

use std::collections::{BTreeMap, BTreeSet};

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{C, EngineBuilder, io, joint, voters, voters_and_learners};
use crate::engine::{ChangeRejected, Command, Engine, ReplicationResult, ReplicationTarget, ServerState};
use crate::testing_types::log_id;
use crate::types::{Entry, LogId, Membership, StoredMembership, Vote};

fn elected() -> Vote<C> {
    Vote::new_committed(2, 1)
}

fn streams(vote: Vote<C>, ids: &[u64]) -> Command<C> {
    let targets = ids.iter().map(|id| ReplicationTarget { id: *id, node: () }).collect();
    Command::UpdateReplicationStreams { vote, targets }
}

fn append_membership(seq: u64, log_id: LogId<C>, membership: Membership<C>) -> Command<C> {
    let vote = Vote::new_committed(log_id.leader_id.term, 1);
    Command::AppendEntries { io: io(seq, vote, Some(log_id)), entries: vec![Entry::new_membership(log_id, membership)] }
}

fn commit_commands(first: u64, last: LogId<C>) -> Vec<Command<C>> {
    vec![Command::Apply { first, last }, Command::SaveCommitted { committed: last }]
}

/// Node 1, leader of term 2 in `membership`, its log `[T1.0, T1.1, T2.2]` committed, durable
/// and replicated to every voter.
fn leader(membership: Membership<C>) -> EngineBuilder {
    EngineBuilder::node(1)
        .vote(elected())
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2)])
        .committed(log_id(2, 2))
        .membership(log_id(1, 0), membership)
        .accepted(io(1, elected(), Some(log_id(2, 2))))
        .leader(1)
        .leader_flushed(log_id(2, 2))
        .progress(2, log_id(2, 2))
        .progress(3, log_id(2, 2))
}

#[test]
fn follower_cannot_change_membership() {
    let mut engine =
        EngineBuilder::node(2).vote(elected()).log([log_id(1, 0)]).membership(log_id(1, 0), voters(&[1, 2, 3])).build();
    let state_before = engine.state.clone();

    assert_eq!(engine.change_membership(Instant::now(), voters(&[1, 2])), Err(ChangeRejected::NotLeader));
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state, state_before);
}

#[test]
fn change_while_a_membership_entry_is_uncommitted_is_refused() {
    let mut engine = leader(voters(&[1, 2, 3]))
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2), log_id(2, 3)])
        .uncommitted_membership(log_id(2, 3), voters_and_learners(&[1, 2, 3], &[4]))
        .build();
    let state_before = engine.state.clone();

    // Dissertation §4.1: one change at a time, so the second-to-last config is committed.
    assert_eq!(
        engine.change_membership(Instant::now(), voters(&[1, 2])),
        Err(ChangeRejected::InProgress(Some(log_id(2, 3))))
    );
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state, state_before);
}

#[test]
fn change_to_the_current_membership_appends_nothing() {
    let mut engine = leader(voters(&[1, 2, 3])).build();
    let state_before = engine.state.clone();

    assert_eq!(engine.change_membership(Instant::now(), voters(&[1, 2, 3])), Ok(None));
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state, state_before);
}

#[test]
fn change_of_learners_only_is_one_entry() {
    // The voters, and so every quorum, stay the same: no joint config is needed.
    let cases = [
        ("add a learner", voters(&[1, 2, 3]), voters_and_learners(&[1, 2, 3], &[4]), [2, 3, 4]),
        // The removed learner keeps its stream until the config without it commits.
        ("remove a learner", voters_and_learners(&[1, 2, 3], &[4]), voters(&[1, 2, 3]), [2, 3, 4]),
    ];
    for (name, current, target, targets) in cases {
        let mut engine = leader(current.clone()).build();

        assert_eq!(engine.change_membership(Instant::now(), target.clone()), Ok(Some(log_id(2, 3))), "{name}");

        assert_eq!(
            engine.take_commands(),
            vec![append_membership(2, log_id(2, 3), target.clone()), streams(elected(), &targets)],
            "{name}"
        );
        assert_eq!(*engine.state.membership.effective, StoredMembership::new(Some(log_id(2, 3)), target), "{name}");
        assert_eq!(*engine.state.membership.committed, StoredMembership::new(Some(log_id(1, 0)), current), "{name}");
        assert_eq!(engine.leader.as_ref().unwrap().membership_target, None, "{name}");
        assert_eq!(engine.state.committed, Some(log_id(2, 2)), "{name}");
    }
}

#[test]
fn change_of_voters_appends_the_joint_config_first() {
    let set = |ids: &[u64]| ids.iter().copied().collect::<BTreeSet<u64>>();
    let nodes = |ids: &[u64]| ids.iter().map(|id| (*id, ())).collect::<BTreeMap<u64, ()>>();
    let cases = [
        ("replace a voter", voters(&[1, 2, 4]), joint(&[1, 2, 3], &[1, 2, 4]), vec![2, 3, 4]),
        (
            "replace voters and add a learner",
            voters_and_learners(&[2, 3, 4], &[5]),
            Membership::new(vec![set(&[1, 2, 3]), set(&[2, 3, 4])], nodes(&[1, 2, 3, 4, 5])).unwrap(),
            vec![2, 3, 4, 5],
        ),
    ];
    for (name, target, expected_joint, targets) in cases {
        let mut engine = leader(voters(&[1, 2, 3])).build();

        assert_eq!(engine.change_membership(Instant::now(), target.clone()), Ok(Some(log_id(2, 3))), "{name}");

        // Raft §6: the joint config holds both voter sets, and every node of both, so that
        // removed voters keep receiving the log until they learn they were removed.
        assert_eq!(
            engine.take_commands(),
            vec![append_membership(2, log_id(2, 3), expected_joint.clone()), streams(elected(), &targets)],
            "{name}"
        );
        assert_eq!(engine.state.membership.effective(), &expected_joint, "{name}");
        assert_eq!(engine.state.membership.committed.log_id, Some(log_id(1, 0)), "{name}");
        assert_eq!(engine.leader.as_ref().unwrap().membership_target, Some(target), "{name}");
    }
}

/// Node 1, leader of term 2, with the joint config `[{1,2,3}, {1,2,4}]` at T2.3 proposed by it
/// and uncommitted; nodes 2 and 3 hold up to T2.2.
fn leader_in_joint_change() -> EngineBuilder {
    leader(voters(&[1, 2, 3]))
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2), log_id(2, 3)])
        .uncommitted_membership(log_id(2, 3), joint(&[1, 2, 3], &[1, 2, 4]))
        .accepted(io(2, elected(), Some(log_id(2, 3))))
        .membership_target(voters(&[1, 2, 4]))
}

fn assert_final_config_appended(engine: &mut Engine<C>) {
    let target = voters(&[1, 2, 4]);
    let mut expected = vec![
        streams(elected(), &[2, 3, 4]),
        append_membership(3, log_id(2, 4), target.clone()),
        streams(elected(), &[2, 3, 4]),
    ];
    expected.extend(commit_commands(3, log_id(2, 3)));
    assert_eq!(engine.take_commands(), expected);
    assert_eq!(engine.state.committed, Some(log_id(2, 3)));
    assert_eq!(engine.state.apply_submitted, Some(log_id(2, 3)));
    assert_eq!(engine.state.membership.committed.log_id, Some(log_id(2, 3)));
    assert_eq!(*engine.state.membership.effective, StoredMembership::new(Some(log_id(2, 4)), target));
    assert_eq!(engine.state.last_log_id(), Some(log_id(2, 4)));
    let leader = engine.leader.as_ref().expect("still the leader");
    assert_eq!(leader.membership_target, None);
    // Node 3 keeps its stream until the final config, which drops it, commits.
    assert_eq!(leader.progress.keys().copied().collect::<Vec<_>>(), vec![2, 3, 4]);
}

#[test]
fn joint_config_committed_by_a_follower_ack_is_followed_by_the_final_config() {
    let now = Instant::now();
    let mut engine = leader_in_joint_change().leader_flushed(log_id(2, 3)).build();

    engine.on_replication_progress(now, 2, elected(), ReplicationResult::Matched(Some(log_id(2, 3))));

    // Raft §6: once the joint config is committed, the leader appends the new config alone.
    assert_final_config_appended(&mut engine);
}

#[test]
fn joint_config_committed_by_the_leaders_flush_is_followed_by_the_final_config() {
    let mut engine = leader_in_joint_change().progress(2, log_id(2, 3)).build();

    engine.on_log_flushed(io(2, elected(), Some(log_id(2, 3))));

    assert_final_config_appended(&mut engine);
}

#[test]
fn joint_config_commits_only_with_a_majority_of_each_voter_set() {
    // Raft §6: agreement in the joint config needs separate majorities of old AND new.
    // The change: voters {1,2,3} to {1,4,5}. Each case: followers already holding the joint
    // entry T2.3, and the follower that reports it now.
    let cases: [(&[u64], u64, bool); 5] = [
        (&[2], 3, false), // all of old, only the leader of new
        (&[4], 5, false), // all of new, only the leader of old
        (&[2, 3], 4, true),
        (&[4], 2, true),
        (&[], 3, false), // a majority of old alone
    ];
    for (holders, reporter, commits) in cases {
        let now = Instant::now();
        let mut builder = leader(voters(&[1, 2, 3]))
            .log([log_id(1, 0), log_id(1, 1), log_id(2, 2), log_id(2, 3)])
            .uncommitted_membership(log_id(2, 3), joint(&[1, 2, 3], &[1, 4, 5]))
            .accepted(io(2, elected(), Some(log_id(2, 3))))
            .membership_target(voters(&[1, 4, 5]))
            .leader_flushed(log_id(2, 3));
        for h in holders {
            builder = builder.progress(*h, log_id(2, 3));
        }
        let mut engine = builder.build();

        engine.on_replication_progress(now, reporter, elected(), ReplicationResult::Matched(Some(log_id(2, 3))));

        let name = format!("{holders:?} + {reporter}");
        let expected = if commits {
            let mut cmds = vec![
                streams(elected(), &[2, 3, 4, 5]),
                append_membership(3, log_id(2, 4), voters(&[1, 4, 5])),
                streams(elected(), &[2, 3, 4, 5]),
            ];
            cmds.extend(commit_commands(3, log_id(2, 3)));
            cmds
        } else {
            vec![]
        };
        assert_eq!(engine.take_commands(), expected, "{name}");
        let committed = if commits { log_id(2, 3) } else { log_id(2, 2) };
        assert_eq!(engine.state.committed, Some(committed), "{name}");
    }
}

#[test]
fn final_config_committing_more_at_once_applies_all_it_commits() {
    let now = Instant::now();
    // Voters {1,2,3} to {1,4,5}: the new voters already hold T2.4, the old ones lag behind.
    let mut engine = leader(voters(&[1, 2, 3]))
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2), log_id(2, 3), log_id(2, 4)])
        .uncommitted_membership(log_id(2, 3), joint(&[1, 2, 3], &[1, 4, 5]))
        .accepted(io(3, elected(), Some(log_id(2, 4))))
        .membership_target(voters(&[1, 4, 5]))
        .leader_flushed(log_id(2, 4))
        .progress(4, log_id(2, 4))
        .progress(5, log_id(2, 4))
        .build();

    engine.on_replication_progress(now, 2, elected(), ReplicationResult::Matched(Some(log_id(2, 3))));

    // Node 2 completes an old majority for the joint entry T2.3, which commits. The leader then
    // uses the final config {1,4,5} (Raft §6: the latest config in its log), under which T2.4
    // is on a majority too: everything committed is applied and recorded.
    let mut expected = vec![
        streams(elected(), &[2, 3, 4, 5]),
        append_membership(4, log_id(2, 5), voters(&[1, 4, 5])),
        streams(elected(), &[2, 3, 4, 5]),
    ];
    expected.extend(commit_commands(3, log_id(2, 4)));
    assert_eq!(engine.take_commands(), expected);
    assert_eq!(engine.state.committed, Some(log_id(2, 4)));
    assert_eq!(engine.state.apply_submitted, Some(log_id(2, 4)), "what is committed is submitted");
}

#[test]
fn leader_removed_by_the_final_config_steps_down_once_it_commits() {
    let now = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3]))
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2), log_id(2, 3), log_id(2, 4)])
        .committed(log_id(2, 3))
        .membership(log_id(2, 3), joint(&[1, 2, 3], &[2, 3, 4]))
        .uncommitted_membership(log_id(2, 4), voters(&[2, 3, 4]))
        .accepted(io(3, elected(), Some(log_id(2, 4))))
        .leader_flushed(log_id(2, 4))
        .progress(2, log_id(2, 4))
        .progress(3, log_id(2, 3))
        .build();

    engine.on_replication_progress(now, 3, elected(), ReplicationResult::Matched(Some(log_id(2, 4))));

    // Raft §6: a leader that is not part of the new config manages the cluster until the new
    // config is committed (by a majority of it, without the leader), then steps down.
    let mut expected = vec![streams(elected(), &[2, 3, 4]), Command::CloseReplicationStreams];
    expected.extend(commit_commands(4, log_id(2, 4)));
    assert_eq!(engine.take_commands(), expected);
    assert!(engine.leader.is_none());
    assert_eq!(engine.state.server_state, ServerState::Learner);
    assert_eq!(engine.state.leader_id, None);
    assert_eq!(engine.state.committed, Some(log_id(2, 4)));
    assert_eq!(engine.state.membership.committed.log_id, Some(log_id(2, 4)));
}

#[test]
fn new_leader_finishes_an_inherited_committed_joint_change_once_its_first_entry_commits() {
    let now = Instant::now();
    // The previous leader committed the joint config T2.2 and stopped before the final config
    // reached anyone. Node 1 knew T2.2 committed when it won term 3 and appended its blank T3.3.
    let elected = Vote::new_committed(3, 1);
    let mut engine = EngineBuilder::node(1)
        .vote(elected)
        .log([log_id(1, 0), log_id(2, 1), log_id(2, 2), log_id(3, 3)])
        .committed(log_id(2, 2))
        .membership(log_id(2, 2), joint(&[1, 2, 3], &[1, 2, 4]))
        .accepted(io(1, elected, Some(log_id(3, 3))))
        .leader(1)
        .blank(log_id(3, 3))
        .leader_flushed(log_id(3, 3))
        .build();

    engine.on_replication_progress(now, 2, elected, ReplicationResult::Matched(Some(log_id(3, 3))));

    // Raft §6: a committed joint config is followed by the new config alone; no commit of a
    // membership entry is left to trigger it, so the blank entry's commit does. A leader that
    // did not propose the change keeps the removed voters as learners.
    let final_config = voters_and_learners(&[1, 2, 4], &[3]);
    let mut expected = commit_commands(3, log_id(3, 3));
    expected.extend([append_membership(2, log_id(3, 4), final_config.clone()), streams(elected, &[2, 3, 4])]);
    assert_eq!(engine.take_commands(), expected);
    assert_eq!(engine.state.committed, Some(log_id(3, 3)));
    assert_eq!(engine.state.membership.committed.log_id, Some(log_id(2, 2)));
    assert_eq!(*engine.state.membership.effective, StoredMembership::new(Some(log_id(3, 4)), final_config));
    assert!(engine.leader.is_some());
}

#[test]
fn leader_whose_blank_entry_is_committed_does_not_finish_a_change_twice() {
    let now = Instant::now();
    // Node 1 already appended the final config T3.4 when its blank T3.3 committed.
    let elected = Vote::new_committed(3, 1);
    let mut engine = EngineBuilder::node(1)
        .vote(elected)
        .log([log_id(1, 0), log_id(2, 1), log_id(2, 2), log_id(3, 3), log_id(3, 4), log_id(3, 5)])
        .committed(log_id(3, 3))
        .membership(log_id(2, 2), joint(&[1, 2, 3], &[1, 2, 4]))
        .uncommitted_membership(log_id(3, 4), voters_and_learners(&[1, 2, 4], &[3]))
        .accepted(io(3, elected, Some(log_id(3, 5))))
        .leader(1)
        .blank(log_id(3, 3))
        .leader_flushed(log_id(3, 5))
        .build();

    engine.on_replication_progress(now, 2, elected, ReplicationResult::Matched(Some(log_id(3, 5))));

    // The final config commits with a majority of {1, 2, 4}; nothing more is appended.
    let mut expected = vec![streams(elected, &[2, 3, 4])];
    expected.extend(commit_commands(4, log_id(3, 5)));
    assert_eq!(engine.take_commands(), expected);
    assert_eq!(engine.state.last_log_id(), Some(log_id(3, 5)));
    assert_eq!(engine.state.membership.committed.log_id, Some(log_id(3, 4)));
}
