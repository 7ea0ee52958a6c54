//! The leader's knowledge that it still leads: `on_heartbeat_acked`, `check_quorum_acked_at`,
//! `lease_valid` and check-quorum in `leader_on_timeout` (Raft §6.4; dissertation §6.2,
//! §6.4.1). Reads have their own file, `read_test.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{
    C, EngineBuilder, LEASE, TIMEOUT_MAX, assert_deadline_after, joint, lease_leader, voters, voters_and_learners,
};
use crate::engine::{Ack, Command, ServerState};
use crate::testing_types::log_id;
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

fn acked_of(engine: &crate::engine::Engine<C>) -> BTreeMap<u64, Instant> {
    engine.leader.as_ref().expect("a leader").acked.iter().map(|(id, a)| (*id, a.sent_at)).collect()
}

fn ack(sent_at: Instant) -> Ack {
    Ack { sent_at, round: 0, marked: false }
}

#[test]
fn ack_keeps_the_latest_send_time_per_target() {
    let t = Instant::now();
    // (already acked by node 2, the send time node 2 now acknowledges, node 2's ack after)
    let cases = [(None, t, t), (Some(t + ms(10)), t + ms(20), t + ms(20)), (Some(t + ms(10)), t + ms(5), t + ms(10))];
    for (before, sent_at, after) in cases {
        let mut builder = leader(voters(&[1, 2, 3]), t).acked(3, t + ms(1));
        if let Some(b) = before {
            builder = builder.acked(2, b);
        }
        let mut engine = builder.build();

        engine.on_heartbeat_acked(2, elected(), ack(sent_at));

        // Replies can arrive out of order: a late reply to an older request says less.
        assert_eq!(engine.take_commands(), vec![]);
        assert_eq!(acked_of(&engine), [(2, after), (3, t + ms(1))].into(), "{before:?} then {sent_at:?}");
    }
}

#[test]
fn ack_of_another_leadership_is_ignored() {
    let t = Instant::now();
    for vote in [Vote::new_committed(1, 1), Vote::new_committed(3, 2)] {
        let mut engine = leader(voters(&[1, 2, 3]), t).build();

        engine.on_heartbeat_acked(2, vote, ack(t + ms(10)));

        assert_eq!(engine.take_commands(), vec![], "{vote}");
        assert_eq!(acked_of(&engine), BTreeMap::new(), "{vote}");
    }
}

#[test]
fn ack_reaching_a_follower_is_ignored() {
    let t = Instant::now();
    let mut engine =
        EngineBuilder::node(1).vote(elected()).log([log_id(1, 0)]).membership(log_id(1, 0), voters(&[1, 2, 3])).build();
    let state_before = engine.state.clone();

    engine.on_heartbeat_acked(2, elected(), ack(t));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state, state_before);
    assert!(engine.leader.is_none());
}

#[test]
fn check_quorum_acked_at_is_the_latest_time_a_majority_followed() {
    // The leader counts as `now`; a member that never answered counts as the election time.
    let since = Instant::now();
    let now = since + ms(500);
    #[rustfmt::skip]
    let cases = [
        ("nobody answered", voters(&[1, 2, 3]), vec![], since),
        ("one follower is a majority with the leader", voters(&[1, 2, 3]), vec![(2, 10)], since + ms(10)),
        ("the later of two", voters(&[1, 2, 3]), vec![(2, 10), (3, 30)], since + ms(30)),
        ("third latest of five", voters(&[1, 2, 3, 4, 5]), vec![(2, 10), (3, 40), (4, 30), (5, 20)], since + ms(30)),
        ("sole voter", voters(&[1]), vec![], now),
        ("learners do not count", voters_and_learners(&[1, 2, 3], &[4]), vec![(4, 50)], since),
        // Raft §6: a majority of each config; old {1,2,3} gives +10, new {3,4,5} gives +20.
        ("joint: the earlier of the two configs", joint(&[1, 2, 3], &[3, 4, 5]), vec![(2, 10), (4, 30), (5, 20)], since + ms(10)),
    ];
    for (name, membership, acks, expected) in cases {
        let mut builder = leader(membership, since);
        for (target, after) in acks {
            builder = builder.acked(target, since + ms(after));
        }
        let engine = builder.build();

        assert_eq!(engine.check_quorum_acked_at(now), Some(expected), "{name}");
    }
}

#[test]
fn follower_has_no_quorum_ack_and_no_lease() {
    let now = Instant::now();
    let engine = EngineBuilder::node(2)
        .vote(elected())
        .log([log_id(1, 0), log_id(2, 1)])
        .committed(log_id(2, 1))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .check_quorum(true)
        .last_leader_contact(now)
        .build();

    assert_eq!(engine.check_quorum_acked_at(now), None);
    assert!(!engine.lease_valid(now));
}

#[test]
fn lease_holds_until_the_lease_duration_after_the_quorum_ack() {
    // Dissertation §6.4.1: no other leader can be elected within the lease after a quorum
    // acknowledged this one, so it may serve reads without asking.
    let since = Instant::now();
    let acked = since + ms(100);
    let cases = [
        ("right after the ack", acked, true),
        ("just before the lease ends", acked + LEASE - Duration::from_nanos(1), true),
        ("when the lease ends", acked + LEASE, false),
        ("long after", acked + 10 * LEASE, false),
    ];
    for (name, now, valid) in cases {
        let engine = leader(voters(&[1, 2, 3]), since).acked(2, acked).build();

        assert_eq!(engine.lease_valid(now), valid, "{name}");
    }
}

#[test]
fn no_lease_without_check_quorum() {
    let since = Instant::now();
    let engine = leader(voters(&[1, 2, 3]), since).acked(2, since).check_quorum(false).build();

    // Without stickiness a voter may elect another leader at once: no time is safe.
    assert!(!engine.lease_valid(since));
}

#[test]
fn leader_unacknowledged_within_the_max_election_timeout_steps_down() {
    // Dissertation §6.2: a leader that cannot reach a quorum for an election timeout steps
    // down, so clients find the leader that the majority side may have elected.
    let since = Instant::now();
    let cases = [
        ("acked once, then silence", Some(since + ms(10)), since + ms(10) + TIMEOUT_MAX),
        ("never acked: the grace ends", None, since + TIMEOUT_MAX),
    ];
    for (name, acked, now) in cases {
        let mut builder = leader(voters(&[1, 2, 3]), since).deadline(now);
        if let Some(a) = acked {
            builder = builder.acked(2, a);
        }
        let mut engine = builder.build();

        engine.leader_on_timeout(now);

        assert_eq!(engine.take_commands(), vec![Command::CloseReplicationStreams], "{name}");
        assert!(engine.leader.is_none(), "{name}");
        assert_eq!(engine.state.server_state, ServerState::Follower, "{name}");
        assert_eq!(engine.state.leader_id, None, "{name}");
        assert_eq!(engine.state.vote, elected(), "{name}: stepping down raises no term");
        // As a follower it campaigns if nobody else takes over.
        assert_deadline_after(&engine, now);
    }
}

#[test]
fn leader_acknowledged_in_time_rearms_its_check_at_ack_plus_timeout() {
    let since = Instant::now();
    let cases = [
        ("acked by a majority", Some(since + ms(10)), since + ms(10) + TIMEOUT_MAX - Duration::from_nanos(1)),
        ("new leader within its grace", None, since + TIMEOUT_MAX - Duration::from_nanos(1)),
    ];
    for (name, acked, now) in cases {
        let mut builder = leader(voters(&[1, 2, 3]), since).deadline(now);
        if let Some(a) = acked {
            builder = builder.acked(2, a);
        }
        let mut engine = builder.build();
        let state_before = engine.state.clone();

        engine.leader_on_timeout(now);

        assert_eq!(engine.take_commands(), vec![], "{name}");
        assert_eq!(engine.state, state_before, "{name}");
        assert!(engine.leader.is_some(), "{name}");
        let quorum_acked = acked.unwrap_or(since);
        assert_eq!(engine.election_deadline(), Some(quorum_acked + TIMEOUT_MAX), "{name}");
    }
}

#[test]
fn leader_check_runs_at_its_deadline_through_handle_timeout() {
    let since = Instant::now();
    let deadline = since + TIMEOUT_MAX;
    let mut engine = leader(voters(&[1, 2, 3]), since).deadline(deadline).build();

    engine.handle_timeout(deadline);

    assert_eq!(engine.take_commands(), vec![Command::CloseReplicationStreams]);
    assert!(engine.leader.is_none());
    assert_deadline_after(&engine, deadline);
}

#[test]
fn leader_acked_by_a_minority_only_steps_down() {
    let since = Instant::now();
    let now = since + ms(100) + TIMEOUT_MAX;
    // Node 2 answered recently, but of five voters the leader needs two others.
    let mut engine = leader(voters(&[1, 2, 3, 4, 5]), since).acked(2, since + ms(100)).deadline(now).build();

    engine.leader_on_timeout(now);

    assert_eq!(engine.take_commands(), vec![Command::CloseReplicationStreams]);
    assert!(engine.leader.is_none());
}

/// Acknowledgements are kept only for nodes the leader replicates to: a removed node's entry is
/// dropped with its stream, and a late answer from a node that is not a target is ignored.
#[test]
fn acks_are_kept_only_for_replication_targets() {
    let t = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3]), t).acked(2, t + ms(1)).acked(3, t + ms(2)).build();

    engine.on_heartbeat_acked(9, elected(), ack(t + ms(3)));
    assert_eq!(acked_of(&engine), [(2, t + ms(1)), (3, t + ms(2))].into(), "node 9 is no target");

    // Node 3 is gone from every config; recomputing the streams forgets it.
    let two = crate::types::StoredMembership::new(Some(log_id(1, 0)), voters(&[1, 2]));
    engine.state.membership = crate::engine::MembershipState::new(two.clone(), two);
    engine.update_replication_streams();
    assert_eq!(acked_of(&engine), [(2, t + ms(1))].into());
}

/// Issue #15, finding 1: check-quorum's grace counts members that never answered as having
/// acknowledged a new leader at its election. The lease must not: granting a vote does not make
/// a voter sticky, so the voters that elected this leader may elect another one at once
/// (dissertation §6.4.1 relies on acknowledged heartbeats, not on votes).
#[test]
fn a_new_leader_has_no_lease_until_a_quorum_really_answers_it() {
    let since = Instant::now();
    let engine = leader(voters(&[1, 2, 3]), since).build();
    assert!(engine.check_quorum_acked_at(since + ms(1)).is_some(), "check-quorum's grace holds");
    assert!(!engine.lease_valid(since + ms(1)), "no member answered: no lease");

    // One of two followers answering makes a quorum with the leader.
    let engine = leader(voters(&[1, 2, 3]), since).acked(3, since + ms(2)).build();
    assert!(engine.lease_valid(since + ms(3)));

    // Of five voters, the leader and one answer are not a quorum, whatever the grace says.
    let engine = leader(voters(&[1, 2, 3, 4, 5]), since).acked(3, since + ms(2)).build();
    assert!(!engine.lease_valid(since + ms(3)));
}

/// Issue #15, finding 1 (second aggravation): until its blank entry commits, a new leader may
/// not know what is committed (Raft §8), so it holds no lease however many answered it.
#[test]
fn no_lease_before_the_leaders_blank_entry_commits() {
    let since = Instant::now();
    let engine = EngineBuilder::node(1)
        .vote(Vote::new_committed(3, 1))
        .log([log_id(1, 0), log_id(1, 1), log_id(3, 2)])
        .committed(log_id(1, 1))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .check_quorum(true)
        .leader(1)
        .leader_since(since)
        .blank(log_id(3, 2))
        .acked(2, since + ms(1))
        .acked(3, since + ms(1))
        .build();

    assert!(!engine.lease_valid(since + ms(2)));
}

/// Issue #15, finding 2: once the leader told a transfer target to campaign, that target's
/// forced vote requests pass over stickiness, so the lease ends at that moment, for good.
#[test]
fn telling_a_transfer_target_to_campaign_ends_the_lease() {
    let since = Instant::now();
    let now = since + ms(10);
    let mut engine = leader(voters(&[1, 2, 3]), since)
        .acked(2, since + ms(5))
        .acked(3, since + ms(5))
        .progress(2, log_id(2, 2))
        .build();
    assert!(engine.lease_valid(now));

    engine.transfer_leader(now, 2).unwrap();

    assert!(matches!(engine.take_commands().back(), Some(Command::SendTransferLeader { to: 2, .. })));
    assert!(!engine.lease_valid(now), "the target may be elected any moment now");
    engine.on_heartbeat_acked(2, elected(), ack(now));
    engine.on_heartbeat_acked(3, elected(), ack(now));
    assert!(!engine.lease_valid(now + ms(1)), "fresh answers do not bring the lease back");
}

/// A transfer that has not told its target to campaign yet leaves the lease as it is: the
/// target is still bound by stickiness like every other voter.
#[test]
fn a_transfer_still_catching_its_target_up_keeps_the_lease() {
    let since = Instant::now();
    let now = since + ms(10);
    let mut engine = leader(voters(&[1, 2, 3]), since).acked(2, since + ms(5)).progress(2, log_id(2, 1)).build();

    engine.transfer_leader(now, 2).unwrap();

    assert_eq!(engine.take_commands(), vec![]);
    assert!(engine.lease_valid(now));
}

#[test]
fn a_revoked_lease_stays_revoked() {
    let since = Instant::now();
    let engine = leader(voters(&[1, 2, 3]), since).acked(2, since + ms(5)).lease_revoked().build();

    assert!(!engine.lease_valid(since + ms(6)));
}
