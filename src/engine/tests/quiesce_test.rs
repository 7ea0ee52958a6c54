//! Quiescence (`quiesce.rs`): when a leader and its followers go quiet, what wakes them, and
//! that a quiet follower is never less sticky than one that hears heartbeats.

use std::time::Duration;

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{
    C, EngineBuilder, LEASE, TIMEOUT_MAX, TIMEOUT_MIN, assert_deadline_after, joint, voters, voters_and_learners,
};
use crate::engine::Ack;
use crate::engine::{Command, Engine, ReadStart, ServerState};
use crate::testing_types::log_id;
use crate::types::{AppendEntriesRequest, EntryPayload, LogId, QuiesceMark, ReadPolicy, Vote, VoteRequest};

const MARK: QuiesceMark = QuiesceMark { incarnation: 7 };

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn last() -> LogId<C> {
    log_id(2, 2)
}

/// Node 1 leads voters 1, 2, 3 in term 2 with quiescence on: log `[T1.0, T1.1, T2.2]`, all of
/// it durable, committed and matched by both followers, who answered at `t`.
fn idle_leader(t: Instant) -> EngineBuilder {
    quiet_node(1)
        .leader(1)
        .leader_since(t)
        .leader_flushed(last())
        .blank(last())
        .progress(2, last())
        .progress(3, last())
        .acked(2, t)
        .acked(3, t)
}

fn quiesced_leader(t: Instant) -> Engine<C> {
    let mut engine = idle_leader(t).build();
    assert!(engine.leader_try_quiesce(|_| true));
    engine.take_commands();
    engine
}

/// Node 2 follows node 1 of term 2, quiescence on, holding `[T1.0, T1.1, T2.2]` committed.
fn quiet_follower() -> EngineBuilder {
    quiet_node(2)
}

/// Node `id` of voters 1, 2, 3 under node 1's term-2 leadership, quiescence and check-quorum
/// on, holding `[T1.0, T1.1, T2.2]` committed.
fn quiet_node(id: u64) -> EngineBuilder {
    EngineBuilder::node(id)
        .vote(Vote::new_committed(2, 1))
        .log([log_id(1, 0), log_id(1, 1), last()])
        .committed(last())
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .check_quorum(true)
        .quiesce(true)
}

fn quiesce_heartbeat() -> AppendEntriesRequest<C> {
    AppendEntriesRequest {
        vote: Vote::new_committed(2, 1),
        prev_log_id: Some(last()),
        entries: vec![],
        leader_commit: Some(last()),
        quiesce: Some(MARK),
    }
}

fn quiesced_follower(t: Instant) -> Engine<C> {
    let mut engine = quiet_follower().build();
    engine.handle_append_entries(t, quiesce_heartbeat());
    assert_eq!(engine.quiesced_under(), Some(1));
    engine.take_commands();
    engine
}

fn vote_req(candidate: u64) -> VoteRequest<C> {
    VoteRequest { vote: Vote::new(3, candidate), last_log_id: Some(last()), pre_vote: true, force: false }
}

#[test]
fn an_idle_fully_replicated_leader_quiesces() {
    let t = Instant::now();
    let mut engine = idle_leader(t).build();

    assert!(engine.leader_try_quiesce(|_| true));

    assert_eq!(engine.take_commands(), vec![Command::SetQuiesced { last: Some(last()) }]);
    assert!(engine.leader_quiesced());
    // No heartbeats, so no check-quorum either: nothing wakes this node on its own.
    assert_eq!(engine.election_deadline(), None);
    // Asking again changes nothing.
    assert!(engine.leader_try_quiesce(|_| true));
    assert_eq!(engine.take_commands(), vec![]);
}

#[test]
fn a_leader_with_anything_under_way_does_not_quiesce() {
    let t = Instant::now();
    let cases: Vec<(&str, EngineBuilder)> = vec![
        ("quiescence off", idle_leader(t).quiesce(false)),
        ("a follower behind", idle_leader(t).progress(3, log_id(1, 1))),
        ("an entry not committed", idle_leader(t).committed(log_id(1, 1))),
        (
            // Matched by all and durable, the blank committed, but the last entry not yet:
            // the followers cannot learn its commit from a quiet leader.
            "the last entry matched but not committed",
            idle_leader(t)
                .log([log_id(1, 0), log_id(1, 1), last(), log_id(2, 3)])
                .leader_flushed(log_id(2, 3))
                .progress(2, log_id(2, 3))
                .progress(3, log_id(2, 3)),
        ),
        ("not durable here", idle_leader(t).leader_flushed(log_id(1, 1))),
        ("blank not committed", idle_leader(t).committed(log_id(1, 1)).blank(last())),
        ("a transfer", idle_leader(t).transfer(2, t + ms(600), false)),
        ("a membership change heading somewhere", idle_leader(t).membership_target(voters(&[1, 2]))),
        ("a joint config", idle_leader(t).membership(log_id(1, 0), joint(&[1, 2, 3], &[1, 2]))),
        ("an uncommitted config", idle_leader(t).uncommitted_membership(last(), voters(&[1, 2, 3]))),
    ];
    for (name, builder) in cases {
        let mut engine = builder.build();
        let deadline = engine.election_deadline();

        assert!(!engine.leader_try_quiesce(|_| true), "{name}");

        assert_eq!(engine.take_commands(), vec![], "{name}");
        assert!(!engine.leader_quiesced(), "{name}");
        assert_eq!(engine.election_deadline(), deadline, "{name}");
    }
}

#[test]
fn a_lagging_member_whose_node_is_not_heard_does_not_keep_the_group_awake() {
    let t = Instant::now();
    for (three_live, quiesces) in [(true, false), (false, true)] {
        let mut engine = idle_leader(t).progress(3, log_id(1, 1)).build();

        let quiesced = engine.leader_try_quiesce(|id| *id != 3 || three_live);

        assert_eq!(quiesced, quiesces, "node 3 live: {three_live}");
    }
}

#[test]
fn whatever_needs_the_leader_wakes_it_with_a_fresh_check_quorum_grace() {
    let t = Instant::now();
    let now = t + Duration::from_secs(10);
    type Input = fn(&mut Engine<C>, Instant);
    let inputs: Vec<(&str, Input)> = vec![
        ("a write", |e, now| {
            e.propose(now, [EntryPayload::Blank]);
        }),
        ("a read", |e, now| {
            e.leader_read(now, ReadPolicy::ReadIndex);
        }),
        ("a membership change", |e, now| {
            let _ = e.change_membership(now, voters(&[1, 2]));
        }),
        ("a transfer", |e, now| {
            let _ = e.transfer_leader(now, 2);
        }),
        ("a vote request", |e, now| {
            e.handle_vote_req(now, &vote_req(3));
        }),
    ];
    for (name, input) in inputs {
        let mut engine = quiesced_leader(t);

        input(&mut engine, now);

        let commands = engine.take_commands();
        assert_eq!(commands.front(), Some(&Command::SetQuiesced { last: None }), "{name}: {commands:?}");
        assert!(!engine.leader_quiesced(), "{name}");
        assert_eq!(engine.state.server_state, ServerState::Leader, "{name}");
        // The followers' answers are 10 s old; the woken leader counts them from now.
        assert_eq!(engine.check_quorum_acked_at(now), Some(now), "{name}");
        engine.handle_timeout(now + TIMEOUT_MAX - ms(1));
        assert_eq!(engine.state.server_state, ServerState::Leader, "{name}: stepped down at once");
    }
}

/// Found by `a_voter_removed_while_cut_off_does_not_keep_the_group_awake` (cluster): a voter
/// removed while cut off campaigns for good, and woke its old group at every attempt.
#[test]
fn a_vote_request_from_no_member_wakes_nobody_and_is_refused() {
    let t = Instant::now();
    let now = t + Duration::from_secs(10);
    let mut leader = quiesced_leader(t);
    let mut follower = quiesced_follower(t);
    follower.on_leader_node_heard(Some(now - ms(20)));

    let to_leader = leader.handle_vote_req(now, &vote_req(4));
    let to_follower = follower.handle_vote_req(now, &vote_req(4));

    assert!(!to_leader.vote_granted && !to_follower.vote_granted);
    assert!(leader.leader_quiesced());
    assert_eq!(leader.take_commands(), vec![]);
    assert_eq!(follower.quiesced_under(), Some(1));
    assert_eq!(follower.election_deadline(), None);
}

/// Found in review: a learner (a voter demoted to one, campaigning until it learns that the
/// change committed) wakes nobody either: cut off from the leader only, it would wake the group
/// at every election timeout.
#[test]
fn a_vote_request_from_a_learner_wakes_nobody() {
    let t = Instant::now();
    let now = t + Duration::from_secs(10);
    let mut follower = quiet_node(2).membership(log_id(1, 0), voters_and_learners(&[1, 2, 3], &[4])).build();
    follower.handle_append_entries(t, quiesce_heartbeat());
    assert_eq!(follower.quiesced_under(), Some(1));
    follower.take_commands();
    follower.on_leader_node_heard(Some(now - ms(20)));

    let resp = follower.handle_vote_req(now, &vote_req(4));

    assert!(!resp.vote_granted);
    assert_eq!(follower.quiesced_under(), Some(1));
    assert_eq!(follower.election_deadline(), None);
}

/// Found in review: a quiesced follower that grants a non-member's vote (its stickiness lapsed
/// without its leader's node being suspected, e.g. under a lagging host) no longer follows
/// that leader, and must not go on saying it is quiesced under it.
#[test]
fn a_quiesced_follower_that_grants_a_vote_is_no_longer_quiesced() {
    let t = Instant::now();
    let now = t + Duration::from_secs(10);
    let mut follower = quiesced_follower(t);

    // A pre-vote changes nothing; the vote itself does.
    assert!(follower.handle_vote_req(now, &vote_req(4)).vote_granted);
    assert_eq!(follower.quiesced_under(), Some(1));
    let resp = follower.handle_vote_req(now, &VoteRequest { pre_vote: false, ..vote_req(4) });

    assert!(resp.vote_granted, "not sticky, and the candidate's log is as long");
    assert_eq!(follower.quiesced_under(), None);
    assert!(follower.election_deadline().is_some());
}

#[test]
fn a_quiesced_leader_serves_lease_reads_only_while_the_lease_it_had_lasts() {
    let t = Instant::now();
    let mut engine = quiesced_leader(t);

    // Its followers answered at `t`: the lease runs until `t + LEASE`, quiesced or not.
    assert_eq!(engine.leader_read(t + LEASE - ms(1), ReadPolicy::LeaseRead), ReadStart::Ready(Some(last())));
    // A read after it wakes the group and waits for a heartbeat round.
    let start = engine.leader_read(t + LEASE, ReadPolicy::LeaseRead);

    assert!(matches!(start, ReadStart::Wait(_)), "{start:?}");
    assert_eq!(
        engine.take_commands(),
        vec![Command::SetQuiesced { last: None }, Command::BroadcastHeartbeat { round: 1 }]
    );
}

#[test]
fn a_leader_stepping_down_while_quiesced_says_so() {
    let t = Instant::now();
    let mut engine = quiesced_leader(t);

    engine.see_greater_vote(t + ms(1), Vote::new_committed(3, 2));

    let commands = engine.take_commands();
    assert!(commands.contains(&Command::ReleaseQuiesced { term: 2 }), "{commands:?}");
    assert_eq!(engine.state.server_state, ServerState::Follower);
}

#[test]
fn a_follower_quiesces_only_on_a_marked_heartbeat_bringing_the_whole_log_committed() {
    let t = Instant::now();
    let commit_behind = AppendEntriesRequest { leader_commit: Some(log_id(1, 1)), ..quiesce_heartbeat() };
    let unmarked = AppendEntriesRequest { quiesce: None, ..quiesce_heartbeat() };
    let short = AppendEntriesRequest {
        prev_log_id: Some(log_id(1, 1)),
        leader_commit: Some(log_id(1, 1)),
        ..quiesce_heartbeat()
    };
    let cases: Vec<(&str, EngineBuilder, AppendEntriesRequest<C>, bool)> = vec![
        ("the whole log, committed", quiet_follower(), quiesce_heartbeat(), true),
        ("not marked", quiet_follower(), unmarked, false),
        ("quiescence off", quiet_follower().quiesce(false), quiesce_heartbeat(), false),
        ("the leader's commit is behind", quiet_follower().committed(log_id(1, 1)), commit_behind, false),
        // The follower holds an entry past the heartbeat: not the leader's log.
        ("the follower has more", quiet_follower(), short, false),
    ];
    for (name, builder, req, quiesces) in cases {
        let mut engine = builder.build();

        engine.handle_append_entries(t, req);

        assert_eq!(engine.quiesced_under(), quiesces.then_some(1), "{name}");
        assert_eq!(engine.quiesced_mark(), quiesces.then_some(MARK), "{name}");
        assert_eq!(engine.election_deadline().is_none(), quiesces, "{name}");
    }
}

#[test]
fn any_other_message_from_the_leader_wakes_the_follower() {
    let t = Instant::now();
    let mut engine = quiesced_follower(t);
    let now = t + Duration::from_secs(5);
    let heartbeat = AppendEntriesRequest { quiesce: None, ..quiesce_heartbeat() };

    engine.handle_append_entries(now, heartbeat);

    assert_eq!(engine.quiesced_under(), None);
    assert_deadline_after(&engine, now);
}

#[test]
fn a_quiesced_follower_refuses_votes_while_its_leaders_node_is_heard_and_wakes() {
    let t = Instant::now();
    let now = t + Duration::from_secs(10);
    for (heard, granted) in [(Some(now - ms(20)), false), (Some(now - TIMEOUT_MIN), true), (None, true)] {
        let mut engine = quiesced_follower(t);
        // RaftCore feeds the host's liveness in before the request.
        engine.on_leader_node_heard(heard);

        let resp = engine.handle_vote_req(now, &vote_req(3));

        assert_eq!(resp.vote_granted, granted, "leader's node heard {heard:?}");
        // Somebody campaigns: the group must be heard from again.
        assert_eq!(engine.quiesced_under(), None, "{heard:?}");
        assert!(engine.election_deadline().is_some(), "{heard:?}");
    }
}

#[test]
fn the_leaders_node_heard_never_moves_the_last_contact_back() {
    let t = Instant::now();
    let mut engine = quiesced_follower(t + ms(100));

    engine.on_leader_node_heard(Some(t));

    assert_eq!(engine.last_leader_contact, Some(t + ms(100)));
}

#[test]
fn a_woken_follower_campaigns_one_election_timeout_after_its_leaders_node_was_last_heard() {
    let t = Instant::now();
    // Woken shortly after the last beat: the timer runs from the beat.
    let mut engine = quiesced_follower(t);
    engine.wake_follower(t + ms(110), Some(t + ms(10)));
    assert_deadline_after(&engine, t + ms(10));
    assert_eq!(engine.last_leader_contact, Some(t + ms(10)));

    // Woken long after: campaign from now, in this node's slot (see `wake_rank_test`).
    let mut engine = quiesced_follower(t);
    let now = t + Duration::from_secs(10);
    engine.wake_follower(now, Some(t));
    let deadline = engine.election_deadline().expect("a woken follower runs its timer");
    assert!(deadline >= now && deadline < now + (TIMEOUT_MAX - TIMEOUT_MIN), "{:?} after now", deadline - now);

    // A follower that is not quiesced is not affected.
    let mut engine = quiet_follower().deadline(t + ms(200)).build();
    engine.wake_follower(now, Some(t));
    assert_eq!(engine.election_deadline(), Some(t + ms(200)));
}

/// Found by the multi-group cluster tests: a woken follower's timer ran from its leader's
/// node's last beat, earlier than the leader's last message; at the deadline the follower still
/// refused its own campaign (stickiness) and the timer, never re-armed, fired again at once,
/// forever. The timer now runs again from the last contact.
#[test]
fn a_timer_that_runs_out_while_the_leader_is_still_heard_re_arms_from_the_contact() {
    let t = Instant::now();
    let mut engine = quiet_follower().last_leader_contact(t + ms(100)).deadline(t + TIMEOUT_MIN).build();

    engine.handle_timeout(t + TIMEOUT_MIN);

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.server_state, ServerState::Follower);
    assert_deadline_after(&engine, t + ms(100));
}

/// Found in review: a leader woken by a read its lease answered, then stopped before any
/// follower heard from it, left them quiesced under a node that stayed alive, with no leader.
/// Until every member answered it after it woke, its end must be announced.
#[test]
fn a_leadership_that_ends_before_its_followers_heard_it_wake_is_announced() {
    let t = Instant::now();
    let mut engine = quiesced_leader(t);
    assert!(matches!(engine.leader_read(t + ms(1), ReadPolicy::LeaseRead), ReadStart::Ready(_)));
    engine.take_commands();
    assert!(engine.followers_may_be_quiesced(), "woken, but no follower heard it yet");

    engine.see_greater_vote(t + ms(2), Vote::new_committed(3, 2));

    assert!(engine.take_commands().contains(&Command::ReleaseQuiesced { term: 2 }));
}

#[test]
fn once_every_member_answered_the_woken_leader_its_end_is_not_announced() {
    let t = Instant::now();
    let mut engine = quiesced_leader(t);
    let woke = t + ms(1);
    engine.leader_read(woke, ReadPolicy::ReadIndex);
    let vote = Vote::new_committed(2, 1);

    let sent = woke + ms(1);
    engine.on_heartbeat_acked(2, vote, Ack { sent_at: sent, round: 1, marked: false });
    assert!(engine.followers_may_be_quiesced(), "node 3 has not answered");
    engine.on_heartbeat_acked(3, vote, Ack { sent_at: sent, round: 1, marked: false });
    assert!(!engine.followers_may_be_quiesced());
    engine.take_commands();

    engine.see_greater_vote(t + ms(2), Vote::new_committed(3, 2));
    assert!(!engine.take_commands().iter().any(|c| matches!(c, Command::ReleaseQuiesced { .. })));
}

/// A stream that has not seen the wake yet may send its follower a heartbeat marked
/// `quiesce` after it: the answer shows the follower followed, and that it may have
/// quiesced. Only an unmarked request sent after the wake shows it is awake; a leadership
/// ending before that is announced.
#[test]
fn an_answer_to_a_marked_heartbeat_sent_after_the_wake_does_not_show_the_follower_awake() {
    let t = Instant::now();
    let mut engine = quiesced_leader(t);
    let woke = t + ms(1);
    engine.leader_read(woke, ReadPolicy::ReadIndex);
    let vote = Vote::new_committed(2, 1);

    engine.on_heartbeat_acked(2, vote, Ack { sent_at: woke + ms(1), round: 1, marked: false });
    engine.on_heartbeat_acked(3, vote, Ack { sent_at: woke + ms(1), round: 1, marked: true });
    assert!(engine.followers_may_be_quiesced(), "node 3 answered only a marked heartbeat");
    engine.take_commands();

    engine.see_greater_vote(t + ms(3), Vote::new_committed(3, 2));
    assert!(engine.take_commands().contains(&Command::ReleaseQuiesced { term: 2 }));
}

/// Under a paused (or coarse) clock a request sent at the instant of the wake may have left
/// before it: the stream's last unmarked heartbeat, with a marked one after it. It does not
/// count as "after the wake"; the next answer does.
#[test]
fn an_answer_to_a_request_sent_at_the_instant_of_the_wake_does_not_show_the_follower_awake() {
    let t = Instant::now();
    let mut engine = quiesced_leader(t);
    let woke = t + ms(1);
    engine.leader_read(woke, ReadPolicy::ReadIndex);
    let vote = Vote::new_committed(2, 1);

    for target in [2, 3] {
        engine.on_heartbeat_acked(target, vote, Ack { sent_at: woke, round: 1, marked: false });
    }
    assert!(engine.followers_may_be_quiesced(), "sent at the instant of the wake: maybe before it");

    for target in [2, 3] {
        engine.on_heartbeat_acked(target, vote, Ack { sent_at: woke + ms(1), round: 1, marked: false });
    }
    assert!(!engine.followers_may_be_quiesced());
}
