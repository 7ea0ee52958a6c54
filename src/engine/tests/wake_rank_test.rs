//! The election timer of followers woken from quiescence (`quiesce.rs`,
//! `reset_orphan_election_deadline`): the survivors of a dead quiesced leader time out in
//! disjoint slots of the timeout range, in an order every node of the group agrees on and that
//! changes from group to group.

use std::time::Duration;

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{C, EngineBuilder, TIMEOUT_MAX, TIMEOUT_MIN, assert_deadline_after, voters, voters_and_learners};
use crate::engine::Engine;
use crate::testing_types::log_id;
use crate::types::{AppendEntriesRequest, LogId, Membership, QuiesceMark, Vote};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn last() -> LogId<C> {
    log_id(2, 2)
}

/// Node `id` of `membership`, quiesced at `t` under node 1's term-2 leadership (check-quorum
/// and quiescence on), in the group whose order is salted with `salt`.
fn quiesced(id: u64, membership: Membership<C>, salt: u64, t: Instant) -> Engine<C> {
    let mut engine = EngineBuilder::node(id)
        .vote(Vote::new_committed(2, 1))
        .log([log_id(1, 0), log_id(1, 1), last()])
        .committed(last())
        .membership(log_id(1, 0), membership)
        .check_quorum(true)
        .pre_vote(true)
        .quiesce(true)
        .rank_salt(salt)
        .build();
    let mark = QuiesceMark { incarnation: 7 };
    let heartbeat = AppendEntriesRequest {
        vote: Vote::new_committed(2, 1),
        prev_log_id: Some(last()),
        entries: vec![],
        leader_commit: Some(last()),
        quiesce: Some(mark),
    };
    engine.handle_append_entries(t, heartbeat);
    assert_eq!(engine.quiesced_under(), Some(1));
    engine.take_commands();
    engine
}

/// Wake every one of `survivors` (of `membership`, led by node 1) at `now`, its leader's
/// node last heard at `heard`; their deadlines, each as time after `base`, in `survivors`'
/// order.
fn woken_after(
    membership: &Membership<C>,
    survivors: &[u64],
    salt: u64,
    heard: Instant,
    now: Instant,
    base: Instant,
) -> Vec<Duration> {
    survivors
        .iter()
        .map(|id| {
            let mut engine = quiesced(*id, membership.clone(), salt, heard - ms(5));
            engine.wake_follower(now, Some(heard));
            engine.election_deadline().expect("a woken voter runs its timer").saturating_duration_since(base)
        })
        .collect()
}

/// Slot `rank` of `k`: `[min + rank·span/k, min + rank·span/k + span/2k)`.
fn slot(rank: u64, k: u64) -> (Duration, Duration) {
    let span = TIMEOUT_MAX - TIMEOUT_MIN;
    let start = TIMEOUT_MIN + span * rank as u32 / k as u32;
    (start, start + span / (2 * k as u32))
}

/// The rank each deadline lies in, or a panic naming the deadline that lies in no slot.
#[track_caller]
fn ranks(deadlines: &[Duration], k: u64, case: &str) -> Vec<u64> {
    deadlines
        .iter()
        .map(|d| {
            (0..k)
                .find(|r| {
                    let (lo, hi) = slot(*r, k);
                    *d >= lo && *d < hi
                })
                .unwrap_or_else(|| panic!("{case}: deadline {d:?} after `from` lies in no slot of {k}"))
        })
        .collect()
}

#[test]
fn the_survivors_of_a_dead_leader_time_out_in_disjoint_slots_in_an_order_that_varies_by_group() {
    let t = Instant::now() + Duration::from_secs(10);
    let heard = t;
    let now = t + ms(100); // The host suspects the leader's node 100 ms after its last beat.
    for (name, membership, survivors) in
        [("three voters", voters(&[1, 2, 3]), vec![2, 3]), ("five voters", voters(&[1, 2, 3, 4, 5]), vec![2, 3, 4, 5])]
    {
        let k = survivors.len() as u64;
        let mut first = std::collections::BTreeSet::new();
        for salt in 0..32 {
            let case = format!("{name}, salt {salt}");
            let deadlines = woken_after(&membership, &survivors, salt, heard, now, heard);
            let mut ranks = ranks(&deadlines, k, &case);
            // Every survivor computed its own rank, and together they are a permutation: no two
            // share a slot, so one campaigns clearly before the next.
            let order = ranks.clone();
            ranks.sort();
            assert_eq!(ranks, (0..k).collect::<Vec<_>>(), "{case}: ranks {order:?}");
            first.insert(survivors[order.iter().position(|r| *r == 0).unwrap()]);
        }
        // Across groups, every survivor goes first in some: the host's load spreads over its peers.
        assert_eq!(first.into_iter().collect::<Vec<_>>(), survivors, "{name}");
    }
}

#[test]
fn survivors_woken_late_keep_their_order_from_the_wake() {
    let t = Instant::now() + Duration::from_secs(10);
    let heard = t;
    // Woken long after the leader's node was last heard: the slots count from now.
    let now = t + Duration::from_secs(5);
    let membership = voters(&[1, 2, 3]);
    for salt in 0..8 {
        let deadlines = woken_after(&membership, &[2, 3], salt, heard, now, now - TIMEOUT_MIN);
        let mut ranks = ranks(&deadlines, 2, &format!("salt {salt}"));
        ranks.sort();
        assert_eq!(ranks, vec![0, 1], "salt {salt}");
        // The first campaigns within half a slot of the wake, never before it.
        let first = deadlines.iter().min().copied().unwrap() - TIMEOUT_MIN;
        assert!(first < (TIMEOUT_MAX - TIMEOUT_MIN) / 4, "salt {salt}: {first:?}");
    }
}

#[test]
fn a_woken_learner_gets_an_ordinary_timeout() {
    let t = Instant::now() + Duration::from_secs(10);
    let mut engine = quiesced(4, voters_and_learners(&[1, 2, 3], &[4]), 0, t - ms(5));

    engine.wake_follower(t + ms(100), Some(t));

    assert_deadline_after(&engine, t);
}

#[test]
fn a_woken_survivor_never_times_out_before_one_election_timeout_after_the_last_contact() {
    // Stickiness and the lease rely on no voter campaigning within `min` of its last contact
    // with the leader; the slots only ever add to `min`.
    let t = Instant::now() + Duration::from_secs(10);
    for salt in 0..16 {
        for id in [2, 3] {
            let mut engine = quiesced(id, voters(&[1, 2, 3]), salt, t - ms(5));
            engine.wake_follower(t + ms(100), Some(t));
            let deadline = engine.election_deadline().unwrap();
            assert!(deadline >= t + TIMEOUT_MIN && deadline < t + TIMEOUT_MAX, "node {id}, salt {salt}");
        }
    }
}
