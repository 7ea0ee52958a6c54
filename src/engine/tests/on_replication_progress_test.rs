//! `Engine::on_replication_progress`: a follower's matched log id, counted toward commit
//! (Raft §5.3, §5.4.2, §6), or the news that a newer term exists (§5.1).

use pretty_assertions::assert_eq;
use tokio::time::Instant;

use super::fixture::{C, EngineBuilder, assert_deadline_after, joint, voters, voters_and_learners};
use crate::engine::{Command, Engine, ReplicationResult};
use crate::testing_types::log_id;
use crate::types::{LogId, Membership, Vote};

fn elected() -> Vote<C> {
    Vote::new_committed(2, 1)
}

/// Node 1, leader of term 2 with `[T1.0, T1.1, T2.2, T2.3, T2.4]` durable, committed T1.1.
fn leader(membership: Membership<C>, progress: &[(u64, LogId<C>)]) -> Engine<C> {
    let mut builder = EngineBuilder::node(1)
        .vote(elected())
        .log([log_id(1, 0), log_id(1, 1), log_id(2, 2), log_id(2, 3), log_id(2, 4)])
        .committed(log_id(1, 1))
        .membership(log_id(1, 0), membership)
        .leader(0)
        .leader_flushed(log_id(2, 4));
    for (target, matched) in progress {
        builder = builder.progress(*target, *matched);
    }
    builder.build()
}

fn matched(log_id: LogId<C>) -> ReplicationResult<C> {
    ReplicationResult::Matched(Some(log_id))
}

fn commit_commands(first: u64, last: LogId<C>) -> Vec<Command<C>> {
    vec![Command::Apply { first, last }, Command::SaveCommitted { committed: last }]
}

fn progress_of(engine: &Engine<C>, target: u64) -> Option<LogId<C>> {
    *engine.leader.as_ref().expect("a leader").progress.get(&target).expect("a target")
}

#[test]
fn entry_held_by_a_majority_commits() {
    let now = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3]), &[]);

    engine.on_replication_progress(now, 2, elected(), matched(log_id(2, 3)));

    // Raft §5.3: an entry is committed once the leader has replicated it on a majority.
    assert_eq!(engine.take_commands(), commit_commands(2, log_id(2, 3)));
    assert_eq!(engine.state.committed, Some(log_id(2, 3)));
    assert_eq!(engine.state.apply_submitted, Some(log_id(2, 3)));
    assert_eq!(progress_of(&engine, 2), Some(log_id(2, 3)));
}

#[test]
fn entry_held_by_a_minority_does_not_commit() {
    let now = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3, 4, 5]), &[]);

    engine.on_replication_progress(now, 2, elected(), matched(log_id(2, 4)));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.committed, Some(log_id(1, 1)));
    assert_eq!(progress_of(&engine, 2), Some(log_id(2, 4)));
}

#[test]
fn joint_config_commits_what_a_majority_of_each_config_holds() {
    // Raft §6: in joint consensus, agreement needs majorities of old AND new.
    // Each case: the followers already known to hold T2.4, then one report.
    #[rustfmt::skip]
    type Id = LogId<C>;
    let cases: [(&[u64], u64, Id, Option<Id>); 3] = [
        // old {1,2} hold T2.4; of new, only {4}.
        (&[2], 4, log_id(2, 4), None),
        // old {1,2} hold T2.4; new {4,5} hold T2.3.
        (&[2, 4], 5, log_id(2, 3), Some(log_id(2, 3))),
        // old {1,3} hold T2.2; new {4,5} hold T2.4.
        (&[4, 5], 3, log_id(2, 2), Some(log_id(2, 2))),
    ];
    for (holders, target, reported, committed) in cases {
        let now = Instant::now();
        let progress: Vec<_> = holders.iter().map(|id| (*id, log_id(2, 4))).collect();
        let mut engine = leader(joint(&[1, 2, 3], &[3, 4, 5]), &progress);

        engine.on_replication_progress(now, target, elected(), matched(reported));

        let expected = committed.map_or(vec![], |c| commit_commands(2, c));
        assert_eq!(engine.take_commands(), expected, "{holders:?} + {target}: {reported}");
        assert_eq!(engine.state.committed, committed.or(Some(log_id(1, 1))));
    }
}

#[test]
fn entries_of_earlier_terms_do_not_commit_by_counting_replicas() {
    let now = Instant::now();
    let elected = Vote::new_committed(3, 1);
    let mut engine = EngineBuilder::node(1)
        .vote(elected)
        .log([log_id(1, 0), log_id(1, 1), log_id(1, 2), log_id(3, 3)])
        .committed(log_id(1, 0))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .leader(0)
        .leader_flushed(log_id(3, 3))
        .build();

    engine.on_replication_progress(now, 2, elected, matched(log_id(1, 2)));

    // Raft §5.4.2: T1.2 is on a majority, but only an entry of the leader's own term commits
    // by counting replicas (Figure 8).
    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(engine.state.committed, Some(log_id(1, 0)));
    assert_eq!(progress_of(&engine, 2), Some(log_id(1, 2)));
}

#[test]
fn entries_of_earlier_terms_commit_with_an_entry_of_the_current_term() {
    let now = Instant::now();
    let elected = Vote::new_committed(3, 1);
    let mut engine = EngineBuilder::node(1)
        .vote(elected)
        .log([log_id(1, 0), log_id(1, 1), log_id(1, 2), log_id(3, 3)])
        .committed(log_id(1, 0))
        .membership(log_id(1, 0), voters(&[1, 2, 3]))
        .leader(0)
        .leader_flushed(log_id(3, 3))
        .progress(2, log_id(1, 2))
        .build();

    engine.on_replication_progress(now, 2, elected, matched(log_id(3, 3)));

    // Raft §5.4.2: committing T3.3 commits every entry before it (Log Matching).
    assert_eq!(engine.take_commands(), commit_commands(1, log_id(3, 3)));
    assert_eq!(engine.state.committed, Some(log_id(3, 3)));
}

#[test]
fn learner_progress_does_not_count_toward_commit() {
    let now = Instant::now();
    let mut engine = leader(voters_and_learners(&[1, 2, 3], &[4]), &[]);

    engine.on_replication_progress(now, 4, elected(), matched(log_id(2, 4)));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(progress_of(&engine, 4), Some(log_id(2, 4)));
}

#[test]
fn report_of_an_earlier_leadership_is_ignored() {
    let now = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3]), &[]);

    engine.on_replication_progress(now, 2, Vote::new_committed(1, 1), matched(log_id(2, 4)));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(progress_of(&engine, 2), None);
}

#[test]
fn implausible_reports_are_ignored() {
    let cases = [("beyond the leader's log", 2, log_id(2, 9)), ("not a member", 9, log_id(2, 4))];
    for (name, target, reported) in cases {
        let now = Instant::now();
        let mut engine = leader(voters(&[1, 2, 3]), &[(3, log_id(2, 3))]);
        let progress_before = engine.leader.as_ref().unwrap().progress.clone();

        engine.on_replication_progress(now, target, elected(), matched(reported));

        assert_eq!(engine.take_commands(), vec![], "{name}");
        assert_eq!(engine.leader.as_ref().unwrap().progress, progress_before, "{name}");
        assert_eq!(engine.state.committed, Some(log_id(1, 1)), "{name}");
    }
}

#[test]
fn commits_decided_before_a_drain_merge_into_one_apply() {
    let now = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3, 4, 5]), &[(2, log_id(2, 4))]);

    engine.on_replication_progress(now, 3, elected(), matched(log_id(2, 3)));
    engine.on_replication_progress(now, 4, elected(), matched(log_id(2, 4)));

    assert_eq!(engine.take_commands(), commit_commands(2, log_id(2, 4)));
    assert_eq!(engine.state.committed, Some(log_id(2, 4)));
}

#[test]
fn higher_vote_makes_the_leader_step_down_and_restart_its_election_timer() {
    let now = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3]), &[]);

    engine.on_replication_progress(now, 2, elected(), ReplicationResult::HigherVote(Vote::new(3, 2)));

    // Raft §5.1: a leader that discovers a newer term reverts to follower. Raft §5.2: as a
    // follower it must campaign if no leader of that term shows up.
    let term_3 = Vote { term: 3, node_id: None, committed: false };
    assert_eq!(engine.take_commands(), vec![Command::CloseReplicationStreams, Command::SaveVote { vote: term_3 }]);
    assert!(engine.leader.is_none());
    assert_eq!(engine.state.vote, term_3);
    assert_eq!(engine.state.leader_id, None);
    assert_eq!(engine.state.committed, Some(log_id(1, 1)));
    assert_deadline_after(&engine, now);
}

/// A removed node's stream runs on for a while (so the node learns it was removed); a newer
/// term that node reached on its own does not depose the leader the members follow, while the
/// same answer from a learner still does.
#[test]
fn a_higher_vote_from_a_removed_node_does_not_depose_the_leader() {
    let now = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3]), &[]);

    engine.on_replication_progress(now, 4, elected(), ReplicationResult::HigherVote(Vote::new(3, 4)));

    assert_eq!(engine.take_commands(), vec![]);
    assert!(engine.leader.is_some());
    assert_eq!(engine.state.vote, elected());

    let mut engine = leader(voters_and_learners(&[1, 2, 3], &[4]), &[]);
    engine.on_replication_progress(now, 4, elected(), ReplicationResult::HigherVote(Vote::new(3, 4)));
    assert!(engine.leader.is_none(), "a learner's newer term deposes the leader");
}

/// A follower that turns out not to hold what it acknowledged (its store lost durable entries,
/// or a snapshot it was sent was never installed) is counted only for what it holds now; what
/// was committed stays committed.
#[test]
fn a_lower_match_point_lowers_progress_and_uncommits_nothing() {
    let now = Instant::now();
    let mut engine = leader(voters(&[1, 2, 3]), &[(3, log_id(2, 3))]);

    engine.on_replication_progress(now, 3, elected(), matched(log_id(1, 1)));

    assert_eq!(engine.take_commands(), vec![]);
    assert_eq!(progress_of(&engine, 3), Some(log_id(1, 1)));
    assert_eq!(engine.state.committed, Some(log_id(1, 1)));
}
