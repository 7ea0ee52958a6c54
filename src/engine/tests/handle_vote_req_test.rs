//! `Engine::handle_vote_req`: whether to grant a vote (Raft §5.2, §5.4.1).

use std::time::Duration;

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{EngineBuilder, assert_deadline_after, log_id_by, voters};
use crate::engine::{Command, ServerState};
use crate::testing_types::{UTConfig, log_id};
use crate::types::{LogId, Vote};
use crate::types::{VoteRequest, VoteResponse};

/// The last log id of the voter in the table: node 2, log `[T1.0, T1.1, T2.2, T2.3]`.
fn my_last() -> Option<LogId<UTConfig>> {
    Some(log_id(2, 3))
}

fn no_vote(term: u64) -> Vote<UTConfig> {
    Vote { term, node_id: None, committed: false }
}

struct Case {
    name: &'static str,
    my_vote: Vote<UTConfig>,
    req_vote: Vote<UTConfig>,
    req_last: Option<LogId<UTConfig>>,
    granted: bool,
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let c = |name, my_vote, req_vote, req_last, granted| Case { name, my_vote, req_vote, req_last, granted };
    vec![
        // Raft §5.2 and §5.4.1: a newer term and a log at least as up-to-date.
        c("newer term, equal log", Vote::new_committed(2, 1), Vote::new(3, 3), my_last(), true),
        c("newer term, longer log", Vote::new_committed(2, 1), Vote::new(3, 3), Some(log_id(2, 5)), true),
        // Raft §5.4.1: the later last term is more up-to-date, whatever the lengths.
        c("later last term, shorter log", Vote::new_committed(2, 1), Vote::new(4, 3), Some(log_id_by(3, 3, 1)), true),
        c("earlier last term, longer log", Vote::new_committed(2, 1), Vote::new(3, 3), Some(log_id(1, 5)), false),
        c("same last term, shorter log", Vote::new_committed(2, 1), Vote::new(3, 3), Some(log_id(2, 2)), false),
        c("empty log", Vote::new_committed(2, 1), Vote::new(3, 3), None, false),
        // Raft §5.1: a request of an older term is stale.
        c("older term", Vote::new_committed(2, 1), Vote::new(1, 3), my_last(), false),
        // Raft §5.2: at most one vote per term, first come first served.
        c("voted for another candidate", Vote::new(3, 1), Vote::new(3, 3), my_last(), false),
        c("voted for itself", Vote::new(3, 2), Vote::new(3, 3), my_last(), false),
        c("voted for this candidate", Vote::new(3, 3), Vote::new(3, 3), my_last(), true),
        c("term known, no vote cast", no_vote(3), Vote::new(3, 3), my_last(), true),
        c("term has an elected leader", Vote::new_committed(3, 1), Vote::new(3, 3), my_last(), false),
        // Only a quorum elects: a request cannot claim to be elected already.
        c("request claims to be elected", Vote::new_committed(2, 1), Vote::new_committed(3, 3), my_last(), false),
    ]
}

#[test]
fn vote_is_granted_only_to_an_up_to_date_candidate_of_an_open_term() {
    for case in cases() {
        let now = Instant::now();
        let untouched_deadline = now + Duration::from_secs(60);
        let mut engine = EngineBuilder::node(2)
            .vote(case.my_vote)
            .log([log_id(1, 0), log_id(1, 1), log_id(2, 2), log_id(2, 3)])
            .committed(log_id(1, 1))
            .membership(log_id(1, 0), voters(&[1, 2, 3]))
            .deadline(untouched_deadline)
            .build();
        let state_before = engine.state.clone();

        let resp = engine.handle_vote_req(now, &VoteRequest::new(case.req_vote, case.req_last));

        let name = case.name;
        // Raft §5.1: a refused request of a newer term still teaches its term (with no vote).
        let adopts_term = !case.granted && case.req_vote.term > case.my_vote.term;
        let vote_after = match (case.granted, adopts_term) {
            (true, _) => case.req_vote,
            (false, true) => no_vote(case.req_vote.term),
            (false, false) => case.my_vote,
        };
        let expected_resp = VoteResponse::new(vote_after, case.granted, my_last());
        assert_eq!(VoteResponse { committed: None, ..resp }, expected_resp, "{name}");
        let expected_commands =
            if vote_after != case.my_vote { vec![Command::SaveVote { vote: vote_after }] } else { vec![] };
        assert_eq!(engine.take_commands(), expected_commands, "{name}");
        assert_eq!(engine.state.vote, vote_after, "{name}");
        if case.granted {
            assert_eq!(engine.state.server_state, ServerState::Follower, "{name}");
            assert_eq!(engine.state.leader_id, None, "{name}");
            // Raft §5.2: granting a vote restarts the election timer.
            assert_deadline_after(&engine, now);
        } else if adopts_term {
            assert_eq!(engine.state.server_state, ServerState::Follower, "{name}");
            assert_eq!(engine.state.leader_id, None, "{name}");
            assert_eq!(engine.state.log_ids, state_before.log_ids, "{name}: the log is untouched");
            assert_eq!(engine.state.committed, state_before.committed, "{name}");
            // Only a granted vote restarts the timer: refusing one is no news of a leader.
            assert_eq!(engine.election_deadline(), Some(untouched_deadline), "{name}");
        } else {
            assert_eq!(engine.state, state_before, "{name}: a rejection changes nothing");
            assert_eq!(engine.election_deadline(), Some(untouched_deadline), "{name}");
        }
    }
}

/// Node 1, leader of term 2 (check-quorum off, so not sticky), log `[T1.0, T1.1, T2.2]`.
fn leader_of_term_2_builder() -> EngineBuilder {
    EngineBuilder::node(1)
        .vote(Vote::new_committed(2, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2)])
        .committed(log_id(2, 2))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .leader(1)
}

fn leader_of_term_2() -> crate::engine::Engine<UTConfig> {
    leader_of_term_2_builder().build()
}

#[test]
fn leader_steps_down_when_granting_a_vote_of_a_newer_term() {
    let now = Instant::now();
    let mut engine = leader_of_term_2();

    let req = VoteRequest::new(Vote::new(3, 3), Some(log_id(2, 2)));
    let resp = engine.handle_vote_req(now, &req);

    assert_eq!(VoteResponse { committed: None, ..resp }, VoteResponse::new(Vote::new(3, 3), true, Some(log_id(2, 2))));
    assert_eq!(
        engine.take_commands(),
        vec![Command::CloseReplicationStreams, Command::SaveVote { vote: Vote::new(3, 3) }]
    );
    assert!(engine.leader.is_none());
    assert_eq!(engine.state.server_state, ServerState::Follower);
    assert_eq!(engine.state.leader_id, None);
    assert_deadline_after(&engine, now);
}

#[test]
fn candidate_gives_up_when_granting_a_vote_of_a_newer_term() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(2)
        .vote(Vote::new(3, 2))
        .log([log_id(1, 0), log_id(1, 1)])
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .candidate(&[2])
        .deadline(now)
        .build();

    let req = VoteRequest::new(Vote::new(4, 3), Some(log_id(1, 1)));
    let resp = engine.handle_vote_req(now, &req);

    assert!(resp.vote_granted);
    assert_eq!(engine.take_commands(), vec![Command::SaveVote { vote: Vote::new(4, 3) }]);
    assert!(engine.candidate.is_none());
    assert_eq!(engine.state.server_state, ServerState::Follower);
    assert_deadline_after(&engine, now);
}

/// Raft §5.1: a leader (without check-quorum, so not sticky) that sees a vote request of a newer
/// term steps down and adopts the term, even though the candidate's log is behind and gets no
/// vote.
#[test]
fn leader_adopts_a_newer_term_from_a_refused_candidate() {
    let now = Instant::now();
    let mut engine = leader_of_term_2();

    let req = VoteRequest::new(Vote::new(5, 3), Some(log_id(1, 1)));
    let resp = engine.handle_vote_req(now, &req);

    assert_eq!(VoteResponse { committed: None, ..resp }, VoteResponse::new(no_vote(5), false, Some(log_id(2, 2))));
    assert_eq!(engine.take_commands(), vec![Command::CloseReplicationStreams, Command::SaveVote { vote: no_vote(5) }]);
    assert!(engine.leader.is_none());
    assert_eq!(engine.state.server_state, ServerState::Follower);
    // A former leader needs a timer of its own to campaign again.
    assert_deadline_after(&engine, now);
}

/// Dissertation §4.2.3: a node removed from the group (here node 4, never a voter of the
/// leader's config) that campaigns with pre-vote off must not depose the leader, even with
/// check-quorum off (found in review: only check-quorum's stickiness kept it out). The leader
/// refuses and keeps its term.
#[test]
fn a_leader_ignores_the_newer_term_of_a_candidate_outside_its_config() {
    let now = Instant::now();
    let mut engine = leader_of_term_2();

    let req = VoteRequest::new(Vote::new(9, 4), Some(log_id(2, 2)));
    let resp = engine.handle_vote_req(now, &req);

    assert!(!resp.vote_granted);
    assert_eq!(resp.vote, Vote::new_committed(2, 1));
    assert_eq!(engine.take_commands(), vec![]);
    assert!(engine.leader.is_some());
}

/// A voter whose committed entry lies beyond the candidate's log answers with its own entry at
/// the candidate's last index, committed as well: a candidate holding that entry learns it is
/// committed (how a removed node that missed the commit of its removal learns it, found in
/// review). When the candidate's log reaches the committed entry, the answer is that entry.
#[test]
fn a_vote_answer_names_a_committed_entry_within_the_candidates_log() {
    let now = Instant::now();
    let follower = || {
        EngineBuilder::node(2)
            .vote(Vote::new_committed(2, 1))
            .log([log_id(1, 0), log_id(1, 1), log_id(2, 2), log_id(2, 3)])
            .committed(log_id(2, 3))
            .membership(log_id(1, 0), voters(&[1, 2, 3]))
            .build()
    };

    let resp = follower().handle_vote_req(now, &VoteRequest::new(Vote::new(3, 3), Some(log_id(2, 2))));
    assert_eq!(resp.committed, Some(log_id(2, 2)));

    let resp = follower().handle_vote_req(now, &VoteRequest::new(Vote::new(3, 3), Some(log_id(2, 5))));
    assert_eq!(resp.committed, Some(log_id(2, 3)));

    let resp = follower().handle_vote_req(now, &VoteRequest::new(Vote::new(3, 3), None));
    assert_eq!(resp.committed, Some(log_id(2, 3)));
}

/// Found in review: with check-quorum off, a stale leader (cut off while a newer leader moved
/// the group to a config it never saw) refused a voter of that config for good, and the group,
/// needing the stale node's vote, never elected. Only a leader a quorum followed within the
/// election timeout refuses a candidate outside its config; a stale one adopts its term.
#[test]
fn a_leader_without_a_recent_quorum_hears_a_candidate_outside_its_config() {
    let now = Instant::now();
    let elected_at = now - Duration::from_secs(60);
    let mut engine = leader_of_term_2_builder().leader_since(elected_at).acked(2, elected_at).build();

    let req = VoteRequest::new(Vote::new(9, 4), Some(log_id(5, 9)));
    let resp = engine.handle_vote_req(now, &req);

    assert!(resp.vote_granted, "a stale leader grants a candidate whose log is ahead");
    assert!(engine.leader.is_none());
    assert_eq!(engine.state.vote, Vote::new(9, 4));
}

/// Found in review: a voter that purged its log past the candidate's last index answered
/// with its committed log id alone, beyond the candidate's log: a removed node learned nothing
/// once the group had snapshotted. It names its latest membership entry at or below the
/// candidate's last index instead, still known after the purge.
#[test]
fn a_voter_that_purged_past_the_candidates_log_names_its_membership_entry() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(2)
        .vote(Vote::new_committed(2, 1))
        .purged(log_id(2, 6))
        .log([log_id(2, 6), log_id(2, 7), log_id(2, 8)])
        .committed(log_id(2, 8))
        .snapshot_last(log_id(2, 6))
        .membership(log_id(2, 3), voters(&[1, 2, 3]))
        .build();

    let resp = engine.handle_vote_req(now, &VoteRequest::new(Vote::new(3, 4), Some(log_id(2, 4))));

    assert_eq!(resp.committed, Some(log_id(2, 3)));
}
