//! The election timer of followers woken from quiescence (`quiesce.rs`,
//! `reset_orphan_election_deadline`): the survivors of a dead quiesced leader time out in
//! disjoint slots of the timeout range, in an order every node of the group agrees on and that
//! changes from group to group.

use std::time::Duration;

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{C, EngineBuilder, TIMEOUT_MAX, TIMEOUT_MIN, assert_deadline_after, voters, voters_and_learners};
use crate::engine::{Command, Engine};
use crate::testing_types::log_id;
use crate::types::{AppendEntriesRequest, LogId, Membership, QuiesceMark, Vote, VoteRequest};

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

/// The vote request `engine` just sent, if any.
fn sent_vote(engine: &mut Engine<C>) -> Option<VoteRequest<C>> {
    engine.take_commands().into_iter().find_map(|c| match c {
        Command::SendVote { req } => Some(req),
        _ => None,
    })
}

/// Nodes 2 and 3 of three voters, quiesced under node 1 in the group salted `salt` and woken
/// when its node is suspected; and the indexes of the one whose turn comes first and of the
/// other.
fn woken_survivors(salt: u64, t: Instant) -> (Vec<Engine<C>>, usize, usize) {
    let mut nodes: Vec<Engine<C>> =
        [2, 3].iter().map(|id| quiesced(*id, voters(&[1, 2, 3]), salt, t - ms(5))).collect();
    for node in &mut nodes {
        node.wake_follower(t + ms(100), Some(t));
    }
    let first = if nodes[0].survivor_turn(1, 2).unwrap().0 == 0 { 0 } else { 1 };
    (nodes, first, 1 - first)
}

/// The first in turn, its pre-vote granted, runs the real election, the other survivor votes
/// for it, and it leads: one election in all.
#[track_caller]
fn the_first_wins_in_one_election(nodes: &mut [Engine<C>], first: usize, second: usize, at: Instant, salt: u64) {
    let vote = sent_vote(&mut nodes[first]).expect("the first's real election");
    assert!(!vote.pre_vote, "salt {salt}");
    let answer = nodes[second].handle_vote_req(at, &vote);
    assert!(answer.vote_granted, "salt {salt}");
    nodes[first].handle_vote_resp(at, second as u64 + 2, &answer);
    assert!(nodes[first].leader.is_some(), "salt {salt}: the first in turn leads");
    assert_eq!(nodes.iter().map(|n| n.elections_started).sum::<u64>(), 1, "salt {salt}: one election");
}

/// Under load both survivors' timers fire before either's pre-vote is answered. Each used to
/// grant the other's pre-vote, both then started real elections in the same term and split
/// the vote (a whole election timeout more). The survivor whose turn comes first refuses the
/// later one's pre-vote while its own runs; the later one grants it; one real election.
#[test]
fn survivors_that_campaign_together_elect_the_first_in_turn_in_one_election() {
    let t = Instant::now() + Duration::from_secs(10);
    for salt in 0..8 {
        let (mut nodes, first, second) = woken_survivors(salt, t);
        let late = t + TIMEOUT_MAX + ms(50);
        for node in &mut nodes {
            node.handle_timeout(late);
        }
        let reqs: Vec<VoteRequest<C>> = nodes.iter_mut().map(|n| sent_vote(n).expect("a pre-vote")).collect();
        assert!(reqs.iter().all(|r| r.pre_vote && r.vote.term == 3), "salt {salt}: {reqs:?}");

        // Each gets the other's pre-vote.
        let to_second = nodes[second].handle_vote_req(late, &reqs[first]);
        let to_first = nodes[first].handle_vote_req(late, &reqs[second]);
        assert!(to_second.vote_granted, "salt {salt}: the later survivor grants the first its pre-vote");
        assert!(!to_first.vote_granted, "salt {salt}: the first refuses the later one's pre-vote");
        nodes[second].handle_vote_resp(late, first as u64 + 2, &to_first);
        nodes[first].handle_vote_resp(late, second as u64 + 2, &to_second);

        // Only the first runs a real election, and the later survivor votes for it.
        assert!(sent_vote(&mut nodes[second]).is_none(), "salt {salt}: no election of the later one");
        the_first_wins_in_one_election(&mut nodes, first, second, late, salt);
    }
}

/// The turn gives way to the log: a later survivor whose log is longer is granted its pre-vote
/// (the first could never win against it); and the turn holds for the first campaign after the
/// wake only.
#[test]
fn the_turn_yields_to_a_longer_log_and_to_later_campaigns() {
    let t = Instant::now() + Duration::from_secs(10);
    let late = t + TIMEOUT_MAX + ms(50);
    let (mut first, later) = {
        let a = quiesced(2, voters(&[1, 2, 3]), 0, t - ms(5));
        if a.survivor_turn(1, 2).unwrap().0 == 0 { (a, 3) } else { (quiesced(3, voters(&[1, 2, 3]), 0, t - ms(5)), 2) }
    };
    first.wake_follower(t + ms(100), Some(t));
    first.handle_timeout(late);
    let mine = sent_vote(&mut first).expect("a pre-vote");
    assert!(mine.pre_vote);

    let longer =
        VoteRequest { vote: Vote::new(3, later), last_log_id: Some(log_id(2, 3)), pre_vote: true, force: false };
    assert!(first.handle_vote_req(late, &longer).vote_granted, "a longer log is granted");
    let same = VoteRequest { vote: Vote::new(3, later), last_log_id: Some(last()), pre_vote: true, force: false };
    assert!(!first.handle_vote_req(late, &same).vote_granted, "the same log waits its turn");

    // The pre-vote fails (nobody answers); the next campaign is an ordinary one.
    let next = first.election_deadline().expect("a timer runs");
    first.handle_timeout(next);
    let again = sent_vote(&mut first).expect("a second pre-vote");
    assert!(again.pre_vote && again.vote.term == 3);
    assert!(first.handle_vote_req(next, &same).vote_granted, "no turn in a later campaign");
}

/// The other order, as a busy host runs it: the later survivor campaigns first, the first in
/// turn (still a follower) grants its pre-vote, then campaigns too; its pre-vote reaches the
/// later one before the grant does. The later one grants it and gives way, so the grant it
/// then gets starts no election of its own: one election, won by the first in turn.
#[test]
fn a_later_survivor_gives_way_to_the_first_in_turn() {
    let t = Instant::now() + Duration::from_secs(10);
    for salt in 0..8 {
        let (mut nodes, first, second) = woken_survivors(salt, t);
        let late = t + TIMEOUT_MAX + ms(50);

        nodes[second].handle_timeout(late);
        let later_req = sent_vote(&mut nodes[second]).expect("the later one's pre-vote");
        let grant_to_later = nodes[first].handle_vote_req(late, &later_req);
        assert!(grant_to_later.vote_granted, "salt {salt}: a follower grants it");
        nodes[first].handle_timeout(late);
        let first_req = sent_vote(&mut nodes[first]).expect("the first one's pre-vote");
        assert!(first_req.pre_vote, "salt {salt}");

        let grant_to_first = nodes[second].handle_vote_req(late, &first_req);
        assert!(grant_to_first.vote_granted, "salt {salt}: the later one grants the first in turn");
        assert!(nodes[second].candidate.is_none(), "salt {salt}: and gives way");
        nodes[second].handle_vote_resp(late, first as u64 + 2, &grant_to_later);
        assert!(sent_vote(&mut nodes[second]).is_none(), "salt {salt}: no election of the later one");

        nodes[first].handle_vote_resp(late, second as u64 + 2, &grant_to_first);
        the_first_wins_in_one_election(&mut nodes, first, second, late, salt);
    }
}

/// With four survivors (five voters), the first in turn's pre-vote is granted by the others
/// while they have not campaigned yet; each then puts its own timer off, so that none wins a
/// pre-vote of its own (from the remaining followers) before the first's real vote request
/// reaches it, which would split the vote. Once per wake: a second such pre-vote moves nothing.
#[test]
fn survivors_not_yet_campaigning_put_their_timers_off_for_the_first_in_turn() {
    let t = Instant::now() + Duration::from_secs(10);
    let membership = voters(&[1, 2, 3, 4, 5]);
    let now = t + ms(100);
    for salt in 0..8 {
        let mut nodes: Vec<Engine<C>> =
            [2, 3, 4, 5].iter().map(|id| quiesced(*id, membership.clone(), salt, t - ms(5))).collect();
        for node in &mut nodes {
            node.wake_follower(now, Some(t));
        }
        let first = nodes.iter().position(|n| n.survivor_turn(1, n.config.id).unwrap().0 == 0).unwrap();
        let at = nodes[first].election_deadline().unwrap();
        nodes[first].handle_timeout(at);
        let req = sent_vote(&mut nodes[first]).expect("the first's pre-vote");
        for (i, node) in nodes.iter_mut().enumerate().filter(|(i, _)| *i != first) {
            let before = node.election_deadline().unwrap();
            assert!(node.handle_vote_req(at, &req).vote_granted, "salt {salt}, node {i}");
            let after = node.election_deadline().unwrap();
            assert!(after >= at + TIMEOUT_MIN && after >= before, "salt {salt}, node {i}: {before:?} -> {after:?}");
            // Once: the next grant leaves the timer where it is.
            assert!(node.handle_vote_req(at + ms(1), &req).vote_granted);
            assert_eq!(node.election_deadline().unwrap(), after, "salt {salt}, node {i}");
        }
    }
}

/// Found by review of the measurements: a survivor whose turn pre-vote was refused (its peer
/// still heard the dead leader's node, a beat later than it did) kept refusing the later
/// survivor's pre-vote for the rest of its round, so neither won and both went on to ordinary
/// timeouts. A refused turn pre-vote stops holding others back.
#[test]
fn a_refused_turn_pre_vote_no_longer_holds_back_the_next_survivor() {
    let t = Instant::now() + Duration::from_secs(10);
    let late = t + TIMEOUT_MAX + ms(50);
    let mut first = quiesced(2, voters(&[1, 2, 3]), 0, t - ms(5));
    let later = if first.survivor_turn(1, 2).unwrap().0 == 0 {
        3
    } else {
        first = quiesced(3, voters(&[1, 2, 3]), 0, t - ms(5));
        2
    };
    first.wake_follower(t + ms(100), Some(t));
    first.handle_timeout(late);
    let mine = sent_vote(&mut first).expect("a pre-vote");
    assert!(mine.pre_vote);
    let theirs = VoteRequest { vote: Vote::new(3, later), last_log_id: Some(last()), pre_vote: true, force: false };
    assert!(!first.handle_vote_req(late, &theirs).vote_granted, "held back while the turn pre-vote may win");

    // The later survivor refuses the first's pre-vote: it is sticky.
    let refusal = crate::types::VoteResponse {
        vote: Vote::new_committed(2, 1),
        vote_granted: false,
        last_log_id: Some(last()),
        pre_vote: true,
        committed: None,
    };
    first.handle_vote_resp(late, later, &refusal);
    assert!(first.handle_vote_req(late, &theirs).vote_granted, "no longer held back");
}
