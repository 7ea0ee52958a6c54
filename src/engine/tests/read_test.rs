//! Linearizable reads on the leader: `leader_read` and `read_status` (Raft §8; dissertation
//! §6.4, §6.4.1).

use std::time::Duration;

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{C, EngineBuilder, lease_leader, voters};
use crate::engine::{Ack, Command, Engine, ReadStart, ReadStatus, ReadTicket};
use crate::testing_types::log_id;
use crate::types::ReadPolicy;
use crate::types::{Membership, Vote};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn elected() -> Vote<C> {
    Vote::new_committed(2, 1)
}

fn leader(membership: Membership<C>, since: Instant) -> EngineBuilder {
    lease_leader(membership, since)
}

/// Start a read that must wait, checking the broadcast it asks for.
#[track_caller]
fn start_waiting(engine: &mut Engine<C>, now: Instant, policy: ReadPolicy) -> ReadTicket<C> {
    let ReadStart::Wait(ticket) = engine.leader_read(now, policy) else { panic!("the read should wait") };
    assert_eq!(engine.take_commands(), vec![Command::BroadcastHeartbeat { round: engine.heartbeat_round }]);
    ticket
}

fn ack(sent_at: Instant, round: u64) -> Ack {
    Ack { sent_at, round, marked: false }
}

#[test]
fn a_read_waits_for_a_quorum_to_answer_a_request_of_its_round() {
    let t = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3, 4, 5]), t).build();
    engine.heartbeat_round = 6;

    let ticket = start_waiting(&mut engine, t + ms(1), ReadPolicy::ReadIndex);

    assert_eq!(engine.heartbeat_round, 7, "every waiting read takes a new round");
    assert_eq!(engine.read_status(&ticket), ReadStatus::Waiting);
    engine.on_heartbeat_acked(2, elected(), ack(t + ms(2), 7));
    assert_eq!(engine.read_status(&ticket), ReadStatus::Waiting, "two of five");
    engine.on_heartbeat_acked(3, elected(), ack(t + ms(2), 8));
    assert_eq!(engine.read_status(&ticket), ReadStatus::Confirmed(Some(log_id(2, 2))), "a later round counts too");
}

/// Issue #15, finding 3b: an answer to a request sent at the very instant the read arrived —
/// the same instant under tokio's paused clock, or on a coarse clock — but before it, in an
/// earlier round, proves nothing about the time after the read arrived.
#[test]
fn an_answer_to_a_request_of_an_earlier_round_does_not_confirm_a_read_even_at_the_same_instant() {
    let t = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3]), t).build();

    let ticket = start_waiting(&mut engine, t, ReadPolicy::ReadIndex);
    engine.on_heartbeat_acked(2, elected(), ack(t, 0));
    engine.on_heartbeat_acked(3, elected(), ack(t + ms(5), 0));

    assert_eq!(engine.read_status(&ticket), ReadStatus::Waiting);
}

/// A read belongs to the leadership it arrived under: a node that stood again and won a later
/// term may have missed entries another leader committed in between.
#[test]
fn a_read_of_an_earlier_leadership_fails() {
    let t = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3]), t).build();
    let ticket = start_waiting(&mut engine, t, ReadPolicy::ReadIndex);

    // Node 1 leads again, in term 4.
    let mut later = EngineBuilder::node(1)
        .vote(Vote::new_committed(4, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2), log_id(4, 3)])
        .committed(log_id(4, 3))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .leader(1)
        .blank(log_id(4, 3))
        .acked_in_round(2, t + ms(1), 9)
        .build();
    later.heartbeat_round = 9;
    assert_eq!(later.read_status(&ticket), ReadStatus::Failed);

    engine.step_down_from_leader();
    assert_eq!(engine.read_status(&ticket), ReadStatus::Failed);
}

#[test]
fn a_read_waits_for_its_log_id_to_commit() {
    // Raft §8: a new leader does not know what is committed until an entry of its term is;
    // reads wait for its blank entry, and then for whatever is committed when they arrive.
    let t = Instant::now();
    let elected_t3 = Vote::new_committed(3, 1);
    let log = [log_id(1, 0), log_id(1, 1), log_id(3, 2), log_id(3, 3)];
    let cases = [
        ("blank not yet committed", log_id(1, 1), log_id(3, 2)),
        ("blank committed", log_id(3, 2), log_id(3, 2)),
        ("committed beyond the blank", log_id(3, 3), log_id(3, 3)),
    ];
    for (name, committed, expected) in cases {
        let mut engine = EngineBuilder::node(1)
            .vote(elected_t3)
            .log(log)
            .committed(committed)
            .membership(log_id(1, 0), voters(&[1, 2, 3]))
            .leader(1)
            .blank(log_id(3, 2))
            .build();
        let ticket = start_waiting(&mut engine, t, ReadPolicy::ReadIndex);
        engine.on_heartbeat_acked(2, elected_t3, ack(t, engine.heartbeat_round));

        let status = engine.read_status(&ticket);

        if Some(expected) <= Some(committed) {
            assert_eq!(status, ReadStatus::Confirmed(Some(expected)), "{name}");
        } else {
            assert_eq!(status, ReadStatus::Waiting, "{name}");
            engine.state.committed = Some(log_id(3, 2));
            assert_eq!(engine.read_status(&ticket), ReadStatus::Confirmed(Some(expected)), "{name}: once committed");
        }
    }
}

#[test]
fn reads_of_one_batch_share_one_broadcast() {
    let t = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3]), t).build();

    let first = engine.leader_read(t, ReadPolicy::ReadIndex);
    let second = engine.leader_read(t, ReadPolicy::ReadIndex);

    assert!(matches!((first, second), (ReadStart::Wait(_), ReadStart::Wait(_))));
    assert_eq!(engine.take_commands(), vec![Command::BroadcastHeartbeat { round: 2 }]);
}

#[test]
fn a_lease_read_is_answered_at_once_only_under_a_valid_lease() {
    let t = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3]), t).acked(2, t + ms(1)).build();

    assert_eq!(engine.leader_read(t + ms(2), ReadPolicy::LeaseRead), ReadStart::Ready(Some(log_id(2, 2))));
    assert_eq!(engine.take_commands(), vec![]);
    // ReadIndex always asks the quorum.
    start_waiting(&mut engine, t + ms(2), ReadPolicy::ReadIndex);

    // A new leader whose followers never answered has no lease (issue #15, finding 1): the
    // lease read falls back to a quorum round.
    let mut engine = leader(voters(&[1, 2, 3]), t).build();
    start_waiting(&mut engine, t + ms(2), ReadPolicy::LeaseRead);
}

#[test]
fn a_follower_starts_no_read() {
    let now = Instant::now();
    let mut engine = EngineBuilder::node(2)
        .vote(elected())
        .log([log_id(1, 0), log_id(2, 1)])
        .committed(log_id(2, 1))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .build();

    // Raft §8: only the leader knows what is committed; a follower must ask it.
    assert_eq!(engine.leader_read(now, ReadPolicy::ReadIndex), ReadStart::NotLeader);
    assert_eq!(engine.take_commands(), vec![]);
}
