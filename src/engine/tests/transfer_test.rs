//! Leadership transfer (dissertation §3.10): `transfer_leader` on the leader, the
//! `SendTransferLeader` once the target caught up, the deadline in `leader_on_timeout`, and
//! `handle_transfer_leader` on the target.

use std::time::Duration;

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{C, EngineBuilder, TIMEOUT_MAX, voters, voters_and_learners};
use crate::engine::leader::Transfer;
use crate::engine::{Candidate, Command, Engine, ReplicationResult, ServerState, TransferRejected};
use crate::testing_types::log_id;
use crate::types::{LogId, Vote};
use crate::types::{TransferLeaderRequest, VoteRequest};

fn elected() -> Vote<C> {
    Vote::new_committed(2, 1)
}

/// Node 1, leader of term 2 among voters 1, 2, 3 and learner 4, its log `[T1.0, T1.1, T2.2,
/// T2.3]` committed and durable; node 3 holds all of it, node 2 up to `node_2_matched`.
fn leader(node_2_matched: LogId<C>) -> EngineBuilder {
    EngineBuilder::node(1)
        .vote(elected())
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2), log_id(2, 3)])
        .committed(log_id(2, 3))
        .membership(log_id(1, 0), voters_and_learners(&[1, 2, 3], &[4]))
        .leader(1)
        .leader_flushed(log_id(2, 3))
        .progress(2, node_2_matched)
        .progress(3, log_id(2, 3))
}

fn transfer_of(engine: &Engine<C>) -> Option<Transfer<C>> {
    engine.leader.as_ref().expect("a leader").transfer.clone()
}

fn timeout_now(to: u64) -> Command<C> {
    Command::SendTransferLeader { to, req: TransferLeaderRequest { vote: elected(), last_log_id: Some(log_id(2, 3)) } }
}

#[test]
fn follower_cannot_transfer_leadership() {
    let now = Instant::now();
    let mut engine =
        EngineBuilder::node(2).vote(elected()).log([log_id(1, 0)]).membership(log_id(1, 0), voters(&[1, 2, 3])).build();

    assert_eq!(engine.transfer_leader(now, 3), Err(TransferRejected::NotLeader));
    assert_eq!(engine.take_commands(), vec![]);
}

#[test]
fn transfer_to_a_non_voter_is_refused() {
    for to in [4, 9] {
        let now = Instant::now();
        let mut engine = leader(log_id(2, 3)).build();

        // A learner or a stranger could never win an election.
        assert_eq!(engine.transfer_leader(now, to), Err(TransferRejected::NotAVoter), "to {to}");
        assert_eq!(engine.take_commands(), vec![], "to {to}");
        assert_eq!(transfer_of(&engine), None, "to {to}");
        assert!(!engine.is_transferring(), "to {to}");
    }
}

#[test]
fn transfer_to_itself_is_a_no_op() {
    let now = Instant::now();
    let mut engine = leader(log_id(2, 3)).build();

    assert_eq!(engine.transfer_leader(now, 1), Ok(()));
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(transfer_of(&engine), None);
    assert!(!engine.is_transferring(), "writes go on");
    assert_eq!(engine.election_deadline(), None);
}

#[test]
fn transfer_to_a_lagging_voter_stops_writes_and_waits_for_it() {
    let now = Instant::now();
    let mut engine = leader(log_id(2, 2)).build();

    assert_eq!(engine.transfer_leader(now, 2), Ok(()));

    // Dissertation §3.10: the leader stops accepting requests and brings the target up to
    // date; it gives up after about an election timeout (here two maximum ones).
    let deadline = now + 2 * TIMEOUT_MAX;
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(transfer_of(&engine), Some(Transfer { to: 2, deadline, sent: false }));
    assert!(engine.is_transferring());
    assert_eq!(engine.election_deadline(), Some(deadline));
}

#[test]
fn transfer_to_a_caught_up_voter_tells_it_to_campaign_at_once() {
    let now = Instant::now();
    let mut engine = leader(log_id(2, 3)).build();

    assert_eq!(engine.transfer_leader(now, 2), Ok(()));

    assert_eq!(engine.take_commands(), vec![timeout_now(2)]);
    assert_eq!(transfer_of(&engine), Some(Transfer { to: 2, deadline: now + 2 * TIMEOUT_MAX, sent: true }));
    assert!(engine.is_transferring());
}

#[test]
fn transfer_deadline_does_not_postpone_an_earlier_check() {
    let now = Instant::now();
    let check_quorum_deadline = now + Duration::from_millis(100);
    let mut engine = leader(log_id(2, 2)).deadline(check_quorum_deadline).build();

    assert_eq!(engine.transfer_leader(now, 2), Ok(()));

    assert_eq!(engine.election_deadline(), Some(check_quorum_deadline));
}

/// Node 1 transferring to node 2 until `deadline`; node 2 matched `matched`; told if `sent`.
fn transferring(matched: LogId<C>, deadline: Instant, sent: bool) -> Engine<C> {
    leader(matched).transfer(2, deadline, sent).deadline(deadline).build()
}

#[test]
fn target_reaching_the_last_log_id_is_told_to_campaign() {
    let now = Instant::now();
    let deadline = now + 2 * TIMEOUT_MAX;
    let mut engine = transferring(log_id(2, 2), deadline, false);

    engine.on_replication_progress(now, 2, elected(), ReplicationResult::Matched(Some(log_id(2, 3))));

    // Dissertation §3.10: once the target's log matches, the leader sends it TimeoutNow.
    assert_eq!(engine.take_commands(), vec![timeout_now(2)]);
    assert_eq!(transfer_of(&engine), Some(Transfer { to: 2, deadline, sent: true }));
}

#[test]
fn target_short_of_the_last_log_id_is_not_told_yet() {
    let now = Instant::now();
    let deadline = now + 2 * TIMEOUT_MAX;
    let mut engine = transferring(log_id(1, 1), deadline, false);

    engine.on_replication_progress(now, 2, elected(), ReplicationResult::Matched(Some(log_id(2, 2))));

    // It would lose the election to any voter holding T2.3 (Raft §5.4.1).
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(transfer_of(&engine), Some(Transfer { to: 2, deadline, sent: false }));
}

#[test]
fn target_is_told_only_once() {
    let now = Instant::now();
    let deadline = now + 2 * TIMEOUT_MAX;
    // Told when it caught up with T2.2; the report of T2.3 (a reply to a retried request, say)
    // sends nothing more.
    let mut engine = transferring(log_id(2, 2), deadline, true);

    engine.on_replication_progress(now, 2, elected(), ReplicationResult::Matched(Some(log_id(2, 3))));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(transfer_of(&engine), Some(Transfer { to: 2, deadline, sent: true }));
}

#[test]
fn another_node_catching_up_does_not_trigger_the_transfer() {
    let now = Instant::now();
    let deadline = now + 2 * TIMEOUT_MAX;
    let mut engine = leader(log_id(2, 2)).progress(3, log_id(2, 2)).transfer(2, deadline, false).build();

    engine.on_replication_progress(now, 3, elected(), ReplicationResult::Matched(Some(log_id(2, 3))));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(transfer_of(&engine), Some(Transfer { to: 2, deadline, sent: false }));
}

#[test]
fn overdue_transfer_ends_and_writes_resume() {
    let now = Instant::now();
    let deadline = now + 2 * TIMEOUT_MAX;
    let mut engine = transferring(log_id(2, 3), deadline, true);

    engine.leader_on_timeout(deadline);

    // The target did not take over in time (it may have crashed): keep leading.
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(transfer_of(&engine), None);
    assert!(!engine.is_transferring());
    assert_eq!(engine.state.server_state, ServerState::Leader);
    assert_eq!(engine.election_deadline(), None, "without check-quorum a leader runs no timer");
}

#[test]
fn overdue_transfer_with_check_quorum_rearms_the_quorum_check() {
    let now = Instant::now();
    let deadline = now + 2 * TIMEOUT_MAX;
    let acked = deadline - Duration::from_millis(5);
    let mut engine =
        leader(log_id(2, 3)).check_quorum(true).acked(2, acked).transfer(2, deadline, true).deadline(deadline).build();

    engine.leader_on_timeout(deadline);

    assert_eq!(engine.take_commands(), vec![]);
    assert!(!engine.is_transferring());
    assert_eq!(engine.election_deadline(), Some(acked + TIMEOUT_MAX));
}

#[test]
fn transfer_not_yet_due_keeps_going() {
    let now = Instant::now();
    let deadline = now + 2 * TIMEOUT_MAX;
    let mut engine = transferring(log_id(2, 2), deadline, false);

    engine.leader_on_timeout(deadline - Duration::from_nanos(1));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(transfer_of(&engine), Some(Transfer { to: 2, deadline, sent: false }));
    assert_eq!(engine.election_deadline(), Some(deadline));
}

#[test]
fn is_transferring_only_on_a_leader_with_a_transfer() {
    let now = Instant::now();
    assert!(!leader(log_id(2, 3)).build().is_transferring());
    assert!(leader(log_id(2, 3)).transfer(2, now, false).build().is_transferring());
    let follower = EngineBuilder::node(2).vote(elected()).membership(log_id(1, 0), voters(&[1, 2, 3])).build();
    assert!(!follower.is_transferring());
}

/// Node 2, following node 1 of term 2 among voters 1, 2, 3, log `[T1.0, T1.1, T2.2, T2.3]`,
/// pre-vote on: a transfer must skip it.
fn target() -> EngineBuilder {
    EngineBuilder::node(2)
        .vote(elected())
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2), log_id(2, 3)])
        .committed(log_id(2, 2))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .pre_vote(true)
        .check_quorum(true)
}

#[test]
fn target_told_by_its_leader_campaigns_at_once_with_a_forced_vote() {
    let now = Instant::now();
    let mut engine = target().last_leader_contact(now).build();
    let req = TransferLeaderRequest { vote: elected(), last_log_id: Some(log_id(2, 3)) };

    assert!(engine.handle_transfer_leader(now, &req));

    // Dissertation §3.10: the target starts an election at once, as on a timeout; no pre-vote
    // (the leader asked for it, §9.6), and voters that just heard from the leader still vote.
    let candidate = Vote::new(3, 2);
    let vote_req = VoteRequest { vote: candidate, last_log_id: Some(log_id(2, 3)), pre_vote: false, force: true };
    assert_eq!(
        engine.take_commands(),
        vec![Command::SaveVote { vote: candidate }, Command::SendVote { req: vote_req }]
    );
    assert_eq!(engine.state.vote, candidate);
    assert_eq!(engine.state.server_state, ServerState::Candidate);
    assert_eq!(
        engine.candidate,
        Some(Box::new(Candidate { vote: candidate, granted: [2].into(), pre_vote: false, force: true, turn_of: None }))
    );
}

#[test]
fn target_ignores_a_transfer_it_cannot_trust_or_win() {
    #[rustfmt::skip]
    let cases: [(&str, Vote<C>, LogId<C>); 3] = [
        ("from a deposed leader", Vote::new_committed(1, 1), log_id(1, 1)),
        ("from a leader it does not follow", Vote::new_committed(3, 3), log_id(2, 3)),
        ("its log is behind the leader's", elected(), log_id(2, 4)),
    ];
    for (name, vote, leader_last) in cases {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(60);
        let mut engine = target().deadline(deadline).build();
        let state_before = engine.state.clone();

        let accepted =
            engine.handle_transfer_leader(now, &TransferLeaderRequest { vote, last_log_id: Some(leader_last) });

        assert!(!accepted, "{name}");
        assert_eq!(engine.take_commands(), vec![], "{name}");
        assert_eq!(engine.state, state_before, "{name}");
        assert!(engine.candidate.is_none(), "{name}");
        assert_eq!(engine.election_deadline(), Some(deadline), "{name}");
    }
}

#[test]
fn learner_ignores_a_transfer() {
    let now = Instant::now();
    let mut engine = target().membership(log_id(1, 0), voters_and_learners(&[1, 3], &[2])).build();

    let req = TransferLeaderRequest { vote: elected(), last_log_id: Some(log_id(2, 3)) };

    assert!(!engine.handle_transfer_leader(now, &req));
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.server_state, ServerState::Learner);
}

#[test]
fn transfer_to_another_node_is_refused_while_one_is_in_progress() {
    let now = Instant::now();
    let deadline = now + 2 * TIMEOUT_MAX;
    let mut engine = transferring(log_id(2, 3), deadline, true);

    // Node 2 may already be campaigning; telling node 3 too would only split the vote.
    assert_eq!(engine.transfer_leader(now, 3), Err(TransferRejected::InProgress(2)));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(transfer_of(&engine), Some(Transfer { to: 2, deadline, sent: true }));
}

#[test]
fn asking_again_for_the_transfer_in_progress_joins_it() {
    let now = Instant::now();
    let deadline = now + 2 * TIMEOUT_MAX;
    let mut engine = transferring(log_id(2, 3), deadline, true);

    assert_eq!(engine.transfer_leader(now + Duration::from_millis(10), 2), Ok(()));

    // Not restarted: the deadline stands and the target is not told twice.
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(transfer_of(&engine), Some(Transfer { to: 2, deadline, sent: true }));
}

/// Found in review: a membership change that removes the transfer target ended nothing; the
/// leader went on refusing writes until the deadline (and sent TimeoutNow, giving up its
/// lease, to a node that refuses it). Once a config in which the target does not vote is
/// appended, the transfer ends.
#[test]
fn a_change_that_removes_the_transfer_target_ends_the_transfer() {
    let now = Instant::now();
    let mut engine = leader(log_id(2, 2)).build();
    engine.transfer_leader(now, 2).expect("node 2 votes");
    engine.take_commands();

    let joint = engine.change_membership(now, voters(&[1, 3])).expect("a change").expect("an entry");
    assert!(transfer_of(&engine).is_some(), "node 2 still votes in the joint config");

    // The joint config commits (node 1 and node 3 hold it): the final one, without node 2.
    engine.on_log_flushed(engine.state.io.accepted);
    engine.on_replication_progress(now, 3, elected(), ReplicationResult::Matched(Some(joint)));
    assert_eq!(engine.state.membership.effective(), &voters(&[1, 3]));
    assert_eq!(transfer_of(&engine), None);
    assert!(!engine.is_transferring(), "writes are accepted again");
    assert!(!engine.take_commands().contains(&timeout_now(2)));
}
