//! `Engine::leader_append_entries`: a leader assigning log ids to client payloads.

use pretty_assertions::assert_eq;

use super::fixture::{C, EngineBuilder, io, normal, voters};
use crate::engine::ReplicationResult;
use crate::engine::{Command, Engine, ReplicationTarget};
use crate::testing_types::log_id;
use crate::types::{Entry, EntryPayload, Vote};
use tokio::time::Instant;

/// Node 1, leader of term 2 over voters 1, 2, 3; its blank entry T2.2 was accepted as io #1.
fn leader() -> Engine<C> {
    EngineBuilder::node(1)
        .vote(Vote::new_committed(2, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2)])
        .committed(log_id(1, 1))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .accepted(io(1, Vote::new_committed(2, 1), Some(log_id(2, 2))))
        .leader(1)
        .progress(2, log_id(2, 2))
        .build()
}

fn data(s: &str) -> EntryPayload<C> {
    EntryPayload::Normal(s.to_string())
}

#[test]
fn payloads_get_consecutive_log_ids_of_the_leader_and_one_io() {
    let mut engine = leader();
    let flushed_before = engine.state.io.flushed;

    let first = engine.leader_append_entries([data("a"), data("b")]);

    // Raft §5.3: the leader appends the command to its log as a new entry.
    assert_eq!(first, Some(log_id(2, 3)));
    let appended = io(2, Vote::new_committed(2, 1), Some(log_id(2, 4)));
    assert_eq!(
        engine.take_commands(),
        vec![Command::AppendEntries {
            io: appended,
            entries: vec![normal(log_id(2, 3), "a"), normal(log_id(2, 4), "b")]
        }]
    );
    assert_eq!(engine.state.last_log_id(), Some(log_id(2, 4)));
    assert_eq!(engine.state.io.accepted, appended);
    // A leader that steps down answers the next leader only once this append is durable.
    assert_eq!(engine.state.io.appended, appended);
    assert_eq!(engine.state.io.flushed, flushed_before, "durable only when the store says so");
    assert_eq!(engine.state.committed, Some(log_id(1, 1)), "appending commits nothing");
}

#[test]
fn follower_appends_nothing() {
    let mut engine = EngineBuilder::node(2)
        .vote(Vote::new_committed(2, 1))
        .log([log_id(1, 0), log_id(1, 1)])
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .build();
    let state_before = engine.state.clone();

    let first = engine.leader_append_entries([data("a")]);

    assert_eq!(first, None);
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state, state_before);
}

#[test]
fn empty_batch_appends_nothing() {
    let mut engine = leader();
    let state_before = engine.state.clone();

    let first = engine.leader_append_entries([]);

    assert_eq!(first, None);
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state, state_before);
}

#[test]
fn membership_entry_takes_effect_when_appended_and_adds_a_stream() {
    let mut engine = leader();
    let grown = voters(&[1, 2, 3, 4]);

    let first = engine.leader_append_entries([EntryPayload::Membership(grown.clone())]);

    // Raft §6 (dissertation §4.1): a server uses the latest configuration in its log,
    // committed or not.
    assert_eq!(first, Some(log_id(2, 3)));
    let vote = Vote::new_committed(2, 1);
    let targets = [2, 3, 4].into_iter().map(|id| ReplicationTarget { id, node: () }).collect();
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::AppendEntries {
                io: io(2, vote, Some(log_id(2, 3))),
                entries: vec![Entry::new_membership(log_id(2, 3), grown.clone())],
            },
            Command::UpdateReplicationStreams { vote, targets },
        ]
    );
    assert_eq!(engine.state.membership.effective(), &grown);
    assert_eq!(engine.state.membership.effective.log_id, Some(log_id(2, 3)));
    assert_eq!(engine.state.membership.committed.log_id, Some(log_id(1, 0)));
    let progress = &engine.leader.as_ref().expect("a leader").progress;
    assert_eq!(progress, &[(2, Some(log_id(2, 2))), (3, None), (4, None)].into(), "known progress is kept");
}

/// A removed member keeps its stream until the config that removes it commits, so it learns
/// that it was removed instead of timing out and disturbing the cluster.
#[test]
fn membership_entry_removing_a_member_stops_its_stream_once_committed() {
    let mut engine = leader();
    let shrunk = voters(&[1, 2]);

    engine.leader_append_entries([data("a"), EntryPayload::Membership(shrunk.clone())]);

    let vote = Vote::new_committed(2, 1);
    let both = [2, 3].into_iter().map(|id| ReplicationTarget { id, node: () }).collect();
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::AppendEntries {
                io: io(2, vote, Some(log_id(2, 4))),
                entries: vec![normal(log_id(2, 3), "a"), Entry::new_membership(log_id(2, 4), shrunk)],
            },
            Command::UpdateReplicationStreams { vote, targets: both },
        ]
    );
    let progress = &engine.leader.as_ref().expect("a leader").progress;
    assert_eq!(progress, &[(2, Some(log_id(2, 2))), (3, None)].into());

    // The leader's flush and node 2's ack commit the new config (a majority of {1, 2}).
    engine.on_log_flushed(io(2, vote, Some(log_id(2, 4))));
    engine.on_replication_progress(Instant::now(), 2, vote, ReplicationResult::Matched(Some(log_id(2, 4))));
    let cmds = engine.take_commands();
    assert!(
        cmds.contains(&Command::UpdateReplicationStreams {
            vote,
            targets: vec![ReplicationTarget { id: 2, node: () }]
        }),
        "node 3's stream stops when the config without it commits: {cmds:?}"
    );
    let progress = &engine.leader.as_ref().expect("a leader").progress;
    assert_eq!(progress, &[(2, Some(log_id(2, 4)))].into());
}
