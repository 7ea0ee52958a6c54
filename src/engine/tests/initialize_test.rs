//! `Engine::initialize`: the first membership entry of a new cluster, then the first election.

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{C, EngineBuilder, assert_deadline_after, io, log_id_by, req, voters};
use crate::engine::{Command, Engine, ServerState};
use crate::types::VoteRequest;
use crate::types::{Entry, Membership, Vote};

/// `initialize` with `membership` on a fresh node 1: it appends the first entry, the same on
/// every node, and nothing else; then that entry becomes durable at `now`.
fn initialize_and_flush(membership: Membership<C>, now: Instant) -> Engine<C> {
    let mut engine = EngineBuilder::node(1).build();
    engine.initialize(membership.clone());
    let first = log_id_by(0, 0, 0);
    assert_eq!(
        engine.take_commands(),
        vec![Command::AppendEntries {
            io: io(1, Vote::default(), Some(first)),
            entries: vec![Entry::new_membership(first, membership)],
        }]
    );
    engine.on_log_flushed(io(1, Vote::default(), Some(first)));
    engine.after_log_flushed(now);
    engine
}

#[test]
fn initialize_appends_membership_at_index_zero_and_campaigns() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(1).build();
    let membership = voters(&[1, 2, 3]);

    engine.initialize(membership.clone());

    // Every node initialized with this membership writes the very same entry.
    let first = log_id_by(0, 0, 0);
    assert_eq!(
        engine.take_commands(),
        vec![Command::AppendEntries {
            io: io(1, Vote::default(), Some(first)),
            entries: vec![Entry::new_membership(first, membership.clone())],
        }]
    );
    // Found in review: no vote before the entry is durable (a crash in between left a node
    // with a vote and no log, which could be neither initialized again nor elected).
    engine.after_log_flushed(now);
    assert_eq!(engine.take_commands(), vec![], "nothing durable yet");
    assert_eq!(engine.state.vote, Vote::default());

    engine.on_log_flushed(io(1, Vote::default(), Some(first)));
    engine.after_log_flushed(now);
    let candidate = Vote::new(1, 1);
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::SaveVote { vote: candidate },
            // A new cluster has no leader to protect: skip pre-vote and stickiness.
            Command::SendVote { req: VoteRequest { force: true, ..VoteRequest::new(candidate, Some(first)) } },
        ]
    );
    assert_eq!(engine.state.last_log_id(), Some(first));
    assert_eq!(engine.state.membership.effective(), &membership);
    assert_eq!(engine.state.membership.effective.log_id, Some(first));
    assert_eq!(engine.state.committed, None, "the membership entry commits like any other");
    assert_eq!(engine.state.vote, candidate);
    assert_eq!(engine.state.server_state, ServerState::Candidate);
    assert_eq!(engine.candidate.as_ref().map(|c| c.granted.clone()), Some([1].into()));
    assert_deadline_after(&engine, now);
}

#[test]
fn initialize_as_sole_voter_becomes_leader_at_once() {
    let now = Instant::now();
    let mut engine = initialize_and_flush(voters(&[1]), now);

    let elected = Vote::new_committed(1, 1);
    let blank = log_id_by(1, 1, 1);
    assert_eq!(
        engine.take_commands(),
        vec![
            Command::SaveVote { vote: elected },
            Command::UpdateReplicationStreams { vote: elected, targets: vec![] },
            Command::AppendEntries { io: io(2, elected, Some(blank)), entries: vec![Entry::new_blank(blank)] },
        ]
    );
    assert_eq!(engine.state.server_state, ServerState::Leader);
    assert_eq!(engine.state.leader_id, Some(1));
    assert_eq!(engine.state.io.accepted, io(2, elected, Some(blank)));
    assert_eq!(engine.election_deadline(), None);
}

#[test]
fn initialize_with_a_membership_without_this_node_only_appends() {
    // RaftCore refuses this request; the Engine still never campaigns as a non-voter.
    let mut engine = initialize_and_flush(voters(&[2, 3]), Instant::now());

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.server_state, ServerState::Learner);
    assert_eq!(engine.state.vote, Vote::default());
    assert!(engine.candidate.is_none());
}

/// Found in review (initialize x lease): a node initialized while a leader already runs (the
/// docs call initializing several nodes with the same membership harmless) follows that
/// leader before its own first entry is durable: it accepts the leader's entries and answers
/// them, so the leader counts it for its lease. Then its initialize's flush lands, and it
/// starts the "first election" anyway, *forced*: the voters that follow the leader pass over
/// their stickiness for it, and it is elected inside the leader's lease (a stale lease read on
/// the old leader). A node that has a vote (it followed a leader, or voted) must not start
/// the cluster's first election.
#[test]
fn initialize_then_following_a_leader_starts_no_forced_election() {
    let now = Instant::now();
    let membership = voters(&[1, 2, 3]);
    let first = log_id_by(0, 0, 0);

    // Node 2 is initialized; its first entry is not durable yet.
    let mut node2 = EngineBuilder::node(2).build();
    node2.initialize(membership.clone());
    let init_io = io(1, Vote::default(), Some(first));
    assert_eq!(
        node2.take_commands(),
        vec![Command::AppendEntries { io: init_io, entries: vec![Entry::new_membership(first, membership)] }]
    );

    // Node 1, initialized too, was elected in term 1 (by node 3) and replicates its blank entry.
    let leader = Vote::new_committed(1, 1);
    let blank = log_id_by(1, 1, 1);
    let (resp, wait) = node2.handle_append_entries(now, req(leader, Some(first), vec![Entry::new_blank(blank)]));
    assert_eq!(resp, crate::types::AppendEntriesResponse::Success { matched: Some(blank) });
    assert_eq!(node2.state.vote, leader, "node 2 follows node 1");
    node2.take_commands();

    // The initialize append becomes durable, then the leader's: node 2 answers node 1, which
    // counts node 2 for its lease from here on.
    node2.on_log_flushed(init_io);
    node2.after_log_flushed(now);
    node2.on_log_flushed(wait.unwrap());
    node2.after_log_flushed(now);

    let cmds = node2.take_commands();
    // What a forced request does: node 3, which follows node 1 and heard from it just now
    // (sticky), grants it, and node 2 is elected in term 2 inside node 1's lease.
    let sticky_voter_grants = cmds.iter().any(|c| match c {
        Command::SendVote { req: vote_req } if vote_req.force => {
            let mut node3 = EngineBuilder::node(3)
                .vote(leader)
                .log([first, blank])
                .membership(first, voters(&[1, 2, 3]))
                .last_leader_contact(now)
                .build();
            node3.handle_vote_req(now, vote_req).vote_granted
        }
        _ => false,
    });
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::SendVote { req } if req.force)),
        "a follower of a live leader started a forced election (a sticky voter grants it: \
         {sticky_voter_grants}): {cmds:?}"
    );
    assert_eq!(node2.state.vote, leader, "node 2 still follows node 1");
}
