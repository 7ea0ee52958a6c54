//! Membership changes: learners, joint consensus, removing the leader (Raft §6).

use std::collections::BTreeSet;
use std::time::Duration;

use maplit::{btreemap, btreeset};
use quorate::testing::{MemLogStore, MemStateMachine, Request};
use quorate::{ChangeMembers, ClientWriteError, RaftError, ServerState};

use crate::fixture::{TIMEOUT, TestCluster, init_tracing, node_addr};

fn voters(c: &TestCluster, id: u64) -> BTreeSet<u64> {
    c.raft(id).metrics().borrow().committed_membership.membership.voter_ids()
}

/// Start `ids` as new, empty nodes of the cluster's router.
async fn start_empty(c: &mut TestCluster, ids: &[u64]) {
    for id in ids {
        c.start_node(*id, MemLogStore::new(), MemStateMachine::new()).await;
    }
}

/// Spawn `n` writes to `id`, returning the keys that were acknowledged.
fn spawn_writes(c: &TestCluster, id: u64, prefix: &str, n: usize) -> tokio::task::JoinHandle<Vec<String>> {
    let raft = c.raft(id).clone();
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..n {
            let key = format!("{prefix}{i}");
            if raft.client_write(Request::Set { key: key.clone(), value: "v".into() }).await.is_ok() {
                acked.push(key);
            }
        }
        acked
    })
}

/// Every acknowledged key is on every node in `ids` once they apply the leader's log.
async fn assert_all_have(c: &TestCluster, leader: u64, ids: &[u64], keys: &[String]) {
    let last = c.raft(leader).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(ids, last).await;
    for id in ids {
        let data = c.nodes[id].sm.data();
        for k in keys {
            assert!(data.contains_key(k), "node {id} lost acknowledged write {k}");
        }
    }
}

/// A one-node cluster grows to three: two learners catch up, then become voters.
#[tokio::test(start_paused = true)]
async fn grow_from_one_to_three_voters_through_learners() {
    init_tracing();
    let mut c = TestCluster::new(&[1]).await;
    c.initialize(1).await;
    for i in 0..50 {
        c.set(1, &format!("k{i}"), "v").await;
    }
    start_empty(&mut c, &[2, 3]).await;

    for id in [2, 3] {
        c.raft(1).add_learner(id, node_addr(id), true).await.expect("add learner");
        let m = c.raft(id).metrics().borrow().clone();
        assert_eq!(m.state, ServerState::Learner, "a learner never votes");
        assert!(m.last_log_index >= Some(50), "blocking add_learner returns once caught up");
    }
    assert_eq!(voters(&c, 1), btreeset! {1});

    let writes = spawn_writes(&c, 1, "during", 100);
    let resp = c.raft(1).change_membership(ChangeMembers::AddVoterIds(btreeset! {2, 3}), false).await.unwrap();
    assert_eq!(resp.membership.voter_ids(), btreeset! {1, 2, 3});
    assert!(!resp.membership.is_joint(), "the call returns once the final config commits");
    let acked = writes.await.unwrap();
    assert_eq!(acked.len(), 100, "writes commit throughout the change");

    for id in [2, 3] {
        c.raft(id).wait(Some(TIMEOUT)).state(ServerState::Follower, "promoted to voter").await.unwrap();
    }
    // The new voters now count toward quorum: with node 3 cut off, 1 and 2 still commit.
    c.router.isolate(3);
    c.set(1, "after", "growth").await;
    c.router.restore(3);
    assert_all_have(&c, 1, &[1, 2, 3], &acked).await;
    c.check_safety();
}

/// Replace every voter: {1,2,3} -> {3,4,5}. The old leader leads through the change, steps
/// down when the final config commits, and the removed nodes stay quiet.
#[tokio::test(start_paused = true)]
async fn replace_all_voters() {
    init_tracing();
    let mut c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    start_empty(&mut c, &[4, 5]).await;
    for id in [4, 5] {
        c.raft(leader).add_learner(id, node_addr(id), true).await.unwrap();
    }

    let writes = spawn_writes(&c, leader, "during", 100);
    let resp =
        c.raft(leader).change_membership(ChangeMembers::ReplaceAllVoters(btreeset! {3, 4, 5}), false).await.unwrap();
    assert_eq!(resp.membership.voter_ids(), btreeset! {3, 4, 5});
    assert_eq!(resp.membership.nodes().keys().copied().collect::<BTreeSet<_>>(), btreeset! {3, 4, 5});
    let acked = writes.await.unwrap();

    let new_leader = c.wait_for_leader(&[3, 4, 5]).await;
    for id in [1, 2] {
        if id != new_leader {
            let m = c.raft(id).metrics().borrow().clone();
            assert_ne!(m.state, ServerState::Leader, "node {id} was removed and does not lead");
        }
    }
    c.set(new_leader, "after", "replace").await;
    assert_all_have(&c, new_leader, &[3, 4, 5], &acked).await;

    // Removed nodes do not disturb the cluster: time passes, the term and leader stay.
    let term = c.raft(new_leader).metrics().borrow().current_term;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let m = c.raft(new_leader).metrics().borrow().clone();
    assert_eq!((m.current_term, m.current_leader), (term, Some(new_leader)), "the cluster stayed stable");
    let replication = m.replication.expect("leader metrics");
    assert_eq!(
        replication.keys().copied().collect::<BTreeSet<_>>(),
        btreeset! {3, 4, 5}.into_iter().filter(|i| *i != new_leader).collect()
    );
    for id in [1, 2] {
        assert_eq!(c.raft(id).metrics().borrow().state, ServerState::Learner, "removed node {id} cannot elect");
    }
    c.check_safety();
}

/// Removing the leader: it commits the change, then steps down; the rest elect a new one.
#[tokio::test(start_paused = true)]
async fn remove_the_leader() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let rest: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
    let resp = c.raft(leader).change_membership(ChangeMembers::RemoveVoters(btreeset! {leader}), true).await.unwrap();
    assert_eq!(resp.membership.voter_ids(), rest.iter().copied().collect::<BTreeSet<_>>());
    assert!(resp.membership.nodes().contains_key(&leader), "retained as a learner");

    let new_leader = c.wait_for_leader(&rest).await;
    assert_ne!(new_leader, leader);
    c.raft(leader).wait(Some(TIMEOUT)).state(ServerState::Learner, "old leader is a learner").await.unwrap();
    c.set(new_leader, "k", "v").await;
    let last = c.raft(new_leader).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(&c.ids(), last).await;
    c.check_safety();
}

/// At most one uncommitted membership change: a second one is refused, not queued.
#[tokio::test(start_paused = true)]
async fn second_change_while_one_is_in_flight_is_rejected() {
    init_tracing();
    let mut c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    start_empty(&mut c, &[4]).await;
    c.raft(leader).add_learner(4, node_addr(4), true).await.unwrap();

    // Cut the leader off so the change cannot commit.
    c.router.isolate(leader);
    let raft = c.raft(leader).clone();
    let first =
        tokio::spawn(async move { raft.change_membership(ChangeMembers::AddVoterIds(btreeset! {4}), false).await });
    c.raft(leader)
        .wait(Some(TIMEOUT))
        .metrics(|m| m.membership_config.membership.is_joint(), "joint config appended")
        .await
        .unwrap();
    let second = c.raft(leader).change_membership(ChangeMembers::RemoveVoters(btreeset! {2}), false).await;
    match second {
        Err(RaftError::APIError(ClientWriteError::MembershipChangeInProgress { log_id })) => assert!(log_id.is_some()),
        other => panic!("expected MembershipChangeInProgress, got {other:?}"),
    }
    assert!(!first.is_finished());
    first.abort();
}

/// Raft §6: during the joint phase a decision needs a majority of both configs; with one old
/// voter isolated, {1,2} of {1,2,3} and {1,2,4} of {1,2,3,4} still commit it.
#[tokio::test(start_paused = true)]
async fn change_commits_with_one_voter_isolated() {
    init_tracing();
    let mut c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    start_empty(&mut c, &[4]).await;
    c.raft(leader).add_learner(4, node_addr(4), true).await.unwrap();
    let isolated = c.ids().into_iter().find(|id| *id != leader && *id != 4).unwrap();
    c.router.isolate(isolated);

    let resp = c.raft(leader).change_membership(ChangeMembers::AddVoterIds(btreeset! {4}), false).await.unwrap();
    assert_eq!(resp.membership.voter_ids(), btreeset! {1, 2, 3, 4});
    c.set(leader, "k", "v").await;
    c.router.restore(isolated);
    let last = c.raft(leader).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(&c.ids(), last).await;
    assert_eq!(voters(&c, isolated), btreeset! {1, 2, 3, 4}, "the isolated voter learns the new config");
    c.check_safety();
}

/// The leader dies while the joint config is uncommitted; the next leader, elected under the
/// joint rules, commits it and finishes the change.
#[tokio::test(start_paused = true)]
async fn next_leader_finishes_a_change_interrupted_in_the_joint_phase() {
    init_tracing();
    let mut c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    assert_eq!(leader, 1, "node 1 initializes and wins the first election");
    start_empty(&mut c, &[4]).await;
    c.raft(1).add_learner(4, node_addr(4), true).await.unwrap();

    // Only node 2 receives the joint config: a majority of {1,2,3} but not of {1,2,3,4}.
    c.router.block(1, 3);
    c.router.block(1, 4);
    let raft = c.raft(1).clone();
    let change =
        tokio::spawn(async move { raft.change_membership(ChangeMembers::AddVoterIds(btreeset! {4}), false).await });
    c.raft(2)
        .wait(Some(TIMEOUT))
        .metrics(|m| m.membership_config.membership.is_joint(), "node 2 has the joint config")
        .await
        .unwrap();
    assert!(c.raft(1).metrics().borrow().committed_membership.membership.voter_ids() == btreeset! {1, 2, 3});

    c.stop_node(1).await;
    c.router.unblock(1, 3);
    c.router.unblock(1, 4);
    let outcome = change.await.unwrap();
    assert!(outcome.is_err(), "the stopped leader cannot report the outcome: {outcome:?}");

    let new_leader = c.wait_for_leader(&[2, 3, 4]).await;
    assert_eq!(new_leader, 2, "only node 2 has the newest log");
    let m = c
        .raft(2)
        .wait(Some(TIMEOUT))
        .metrics(
            |m| {
                !m.committed_membership.membership.is_joint()
                    && m.committed_membership.membership.voter_ids().contains(&4)
            },
            "the change is finished",
        )
        .await
        .unwrap();
    assert_eq!(m.committed_membership.membership.voter_ids(), btreeset! {1, 2, 3, 4});
    c.set(2, "k", "v").await;
    c.check_safety();
}

/// Changes that would leave the cluster broken are refused before anything is proposed.
#[tokio::test(start_paused = true)]
async fn invalid_changes_are_rejected() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let cases = [
        ChangeMembers::AddVoterIds(btreeset! {9}),
        ChangeMembers::ReplaceAllVoters(btreeset! {}),
        ChangeMembers::RemoveNodes(btreeset! {2}),
    ];
    for change in cases {
        let r = c.raft(leader).change_membership(change.clone(), false).await;
        assert!(
            matches!(r, Err(RaftError::APIError(ClientWriteError::InvalidMembership(_)))),
            "{change:?} must be refused, got {r:?}"
        );
    }
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let r = c.raft(follower).change_membership(ChangeMembers::AddNodes(btreemap! {9 => node_addr(9)}), false).await;
    assert!(matches!(r, Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))), "got {r:?}");
    assert_eq!(voters(&c, leader), btreeset! {1, 2, 3});
}

/// Found by the simulator: a leader removed from the membership steps down once the change
/// commits, and then gets no more of the log. A write it proposed after the change's final
/// entry, but that was not committed when it stepped down, may still commit under the next
/// leader or not; the removed node can never learn which. It answers `OutcomeUnknown` instead of
/// leaving the caller waiting forever.
#[tokio::test(start_paused = true)]
async fn a_removed_leader_answers_its_pending_writes_with_outcome_unknown() {
    init_tracing();
    let c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != leader).collect();
    // Every request from the leader takes a millisecond, so the steps below happen in order.
    for id in &others {
        c.router.set_delay(leader, *id, Duration::from_millis(1));
    }
    let raft = c.raft(leader).clone();
    let change =
        tokio::spawn(async move { raft.change_membership(ChangeMembers::RemoveVoters([leader].into()), false).await });
    // The final config (without the leader) is appended: from now on the leader's requests are
    // slow, so a write it proposes now is still unacknowledged when the config commits.
    c.raft(leader)
        .wait(Some(TIMEOUT))
        .metrics(
            |m| !m.membership_config.membership.is_joint() && !m.membership_config.membership.is_voter(&leader),
            "final config appended",
        )
        .await
        .expect("the change goes through");
    for id in &others {
        c.router.set_delay(leader, *id, Duration::from_millis(500));
    }
    let raft = c.raft(leader).clone();
    let write = tokio::spawn(async move { raft.client_write(Request::set("k", "late")).await });
    // Once it stepped down, the removed node hears from nobody (a new leader may still send it
    // the log for a while; here it cannot).
    c.raft(leader).wait(Some(TIMEOUT)).metrics(|m| m.state != ServerState::Leader, "stepped down").await.unwrap();
    c.router.isolate(leader);
    let write = tokio::time::timeout(TIMEOUT, write).await.expect("the write is answered").expect("task");

    assert!(
        matches!(write, Err(RaftError::APIError(ClientWriteError::OutcomeUnknown { .. }))),
        "the write is answered, with an unknown outcome: {write:?}"
    );
    change.await.expect("task").expect("the change committed");
}

/// Interleaving: node 3 dies, and the leader removes it while it comes back with an empty
/// disk. The change commits with nodes 1 and 2; whatever node 3 receives before the leader
/// stops replicating to it (nothing, or the config that removes it), it is no voter, cannot
/// campaign, and the members keep their leader and term and apply the same log.
#[tokio::test(start_paused = true)]
async fn a_node_back_with_an_empty_disk_as_it_is_removed_disrupts_nothing() {
    let mut c = TestCluster::new(&[1, 2, 3]).await;
    let leader = c.initialize(1).await;
    assert_eq!(leader, 1);
    let index = c.set(leader, "k", "before").await.log_id.index;
    c.wait_applied(&[1, 2, 3], index).await;
    let term = c.raft(leader).metrics().borrow().current_term;

    c.stop_node(3).await;
    let raft = c.raft(leader).clone();
    let change =
        tokio::spawn(async move { raft.change_membership(ChangeMembers::RemoveVoters(btreeset! {3}), false).await });
    start_empty(&mut c, &[3]).await;
    let resp = tokio::time::timeout(TIMEOUT, change).await.expect("answered").expect("task");
    let resp = resp.expect("the change commits without node 3");
    assert_eq!(resp.membership.voter_ids(), btreeset! {1, 2});

    assert_eq!(c.wait_for_leader(&[1, 2]).await, leader);
    let index = c.set(leader, "k", "after").await.log_id.index;
    c.wait_applied(&[1, 2], index).await;
    for id in [1, 2] {
        let m = c.raft(id).metrics().borrow().clone();
        assert_eq!((m.current_term, m.current_leader), (term, Some(leader)), "node {id}: {m}");
        assert_eq!(voters(&c, id), btreeset! {1, 2}, "node {id}");
        assert_eq!(c.nodes[&id].sm.data(), c.nodes[&1].sm.data(), "node {id}");
    }
    let m3 = c.raft(3).metrics().borrow().clone();
    assert!(!m3.membership_config.membership.is_voter(&3), "node 3 votes: {m3}");
    assert_eq!(m3.elections_started, 0, "node 3 campaigned: {m3}");
    let removed = c.nodes[&3].sm.data();
    assert_ne!(removed.get("k").map(String::as_str), Some("after"), "node 3 applied a write after its removal");
    c.check_safety();
}

/// Move the group from node 1 to node 2 and cut the link 1 -> 2 right after node 2 got the
/// joint config: node 1 appends the final config {2}, node 2 never receives it.
async fn move_group_and_cut_before_final(c: &mut TestCluster) {
    c.initialize(1).await;
    c.set(1, "k", "v").await;
    c.start_moving_group(1, 2).await;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !c.raft(2).metrics().borrow().membership_config.membership.is_joint() {
        assert!(tokio::time::Instant::now() < deadline, "node 2 never held the joint config");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Cut 1 -> 2 now: the joint entry's answer is already on its way, the final config is not.
    c.router.block(1, 2);
    c.raft(1)
        .wait(Some(TIMEOUT))
        .metrics(
            |m| {
                let config = &m.membership_config.membership;
                !config.is_joint() && config.voter_ids() == btreeset! {2}
            },
            "node 1 appended the final config {2}",
        )
        .await
        .unwrap();
    assert!(c.raft(2).metrics().borrow().membership_config.membership.is_joint(), "node 2 lacks the final config");
}

/// Some leader is elected, and in the end node 2 leads the group {2} and takes a write: node 1,
/// elected by node 2, commits the final config and steps down.
async fn node_2_leads_the_moved_group(c: &TestCluster) {
    let elected =
        c.raft(2).wait(Some(Duration::from_secs(60))).metrics(|m| m.current_leader.is_some(), "some leader").await;
    let (m1, m2) = (c.raft(1).metrics().borrow().clone(), c.raft(2).metrics().borrow().clone());
    assert!(
        elected.is_ok(),
        "no leader within 60 s: node 1 {:?} {} term {}, node 2 {:?} {} term {}",
        m1.state,
        m1.membership_config.membership,
        m1.current_term,
        m2.state,
        m2.membership_config.membership,
        m2.current_term
    );
    c.raft(2).wait(Some(TIMEOUT)).state(ServerState::Leader, "node 2 leads").await.unwrap();
    assert_eq!(voters(c, 2), btreeset! {2});
    c.set(2, "k", "after").await;
}

/// Found in review: a group moved from node 1 to node 2 ({1} -> joint -> {2}) whose old leader
/// /// holds the final config {2} that node 2 never received. No crash at all: node 1 steps down
/// by check-quorum while cut off, and was a learner of {2} from then on; once the link heals, node 2 needs node 1's vote (the joint config's old half
/// is {1}), which node 1 refuses (its log holds the final config), and node 1 never campaigns.
#[tokio::test(start_paused = true)]
async fn a_move_cut_after_the_final_config_is_appended_elects_a_leader_once_healed() {
    init_tracing();
    let mut c = TestCluster::new(&[1]).await;
    move_group_and_cut_before_final(&mut c).await;
    c.raft(1)
        .wait(Some(TIMEOUT))
        .metrics(|m| m.state != ServerState::Leader, "node 1 steps down (check-quorum)")
        .await
        .unwrap();
    c.router.unblock(1, 2);
    node_2_leads_the_moved_group(&c).await;
}

/// Found in review, as above, with a crash: node 1 restarts with the final config {2} durable.
#[tokio::test(start_paused = true)]
async fn a_move_whose_old_leader_restarts_with_the_final_config_elects_a_leader() {
    init_tracing();
    let mut c = TestCluster::new(&[1]).await;
    move_group_and_cut_before_final(&mut c).await;
    // Let the final config's append be flushed on node 1, then crash it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.restart_node(1).await;
    c.router.unblock(1, 2);
    node_2_leads_the_moved_group(&c).await;
}

/// Found in review: the stream that tells a removed node its removal committed runs for one
/// election timeout only. Node 4 holds the final config {1,2,3}, so it is a voter of the joint
/// config it knows committed and campaigns (`Engine::may_campaign`), but it is cut off from
/// the leader for longer than that. Nobody replicates to it again; it campaigned for good. Now
/// the voters it asks answer with their committed entry, which its log holds: it learns the
/// removal committed after one round of requests, and stops. The group commits another write
/// while node 4 is cut off, so the voters' committed entry lies beyond node 4's log (found in
/// review: answered with it alone, node 4 learned nothing and campaigned for good); they answer
/// with their entry at node 4's last index.
#[tokio::test(start_paused = true)]
async fn a_removed_node_cut_off_past_the_grace_learns_its_removal_from_the_voters_it_asks() {
    use quorate::testing::RpcKind;

    init_tracing();
    let mut c = TestCluster::new(&[1, 2, 3]).await;
    c.initialize(1).await;
    start_empty(&mut c, &[4]).await;
    c.raft(1).add_learner(4, node_addr(4), true).await.expect("add learner");
    c.raft(1).change_membership(ChangeMembers::AddVoterIds(btreeset! {4}), false).await.expect("add voter");
    c.set(1, "k", "v").await;
    let last = c.raft(1).metrics().borrow().last_log_id.unwrap().index;
    c.wait_applied(&[4], last).await;
    // Node 4's answers come back late: the request carrying the final config's commit cannot
    // be sent while the one carrying the config itself is unanswered.
    c.router.set_answer_delay(1, 4, Duration::from_millis(50));
    let raft1 = c.raft(1).clone();
    let _change =
        tokio::spawn(async move { raft1.change_membership(ChangeMembers::RemoveVoters(btreeset! {4}), false).await });
    c.raft(4)
        .wait(Some(TIMEOUT))
        .metrics(
            |m| {
                let config = &m.membership_config.membership;
                !config.is_joint() && config.voter_ids() == btreeset! {1, 2, 3}
            },
            "node 4 holds the final config",
        )
        .await
        .unwrap();
    c.router.block(1, 4);
    let m4 = c.raft(4).metrics().borrow().clone();
    assert!(m4.committed_membership.membership.is_joint(), "precondition: node 4 does not know the removal committed");
    c.set(1, "after", "the removal").await;
    assert!(
        c.raft(1).metrics().borrow().committed > m4.last_log_id,
        "precondition: the group committed past node 4's log"
    );
    // Past the time the departing stream runs on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.router.unblock(1, 4);
    c.router.set_answer_delay(1, 4, Duration::ZERO);
    let votes = || (1..=3).map(|to| c.router.rpc_count_from_to(4, to, RpcKind::Vote)).sum::<u64>();
    let before = votes();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let m4 = c.raft(4).metrics().borrow().clone();
    assert_eq!(m4.state, ServerState::Learner, "node 4 learned that it was removed: {m4}");
    assert_eq!(m4.committed_membership.membership.voter_ids(), btreeset! {1, 2, 3});
    assert!(votes() - before <= 3, "node 4 campaigned on: {} vote requests in 10 s", votes() - before);
}

/// Found in review: a removed node's stream ends when the node answers with a newer term (the
/// leader ignores that term, see `a_higher_vote_from_a_removed_node...` in the engine tests);
/// the finished stream was kept, and when the node was added again it stood for the node's
/// stream, which never sent anything: the node was never replicated to while that leader led.
#[tokio::test(start_paused = true)]
async fn a_node_added_again_after_its_stream_met_a_newer_term_is_replicated_to() {
    use quorate::RaftLogStorage;
    use quorate::testing::TypeConfig;
    use quorate::types::Vote;

    init_tracing();
    let config = quorate::Config { enable_pre_vote: false, ..crate::fixture::test_config() };
    let mut c = TestCluster::with_config(&[1, 2, 3, 4], config).await;
    c.initialize(1).await;
    c.set(1, "a", "1").await;
    let last = c.raft(1).metrics().borrow().last_log_index.unwrap();
    c.wait_applied(&[1, 2, 3, 4], last).await;
    // Node 4 comes back from a crash with a newer term, as if it had campaigned on its own.
    let n4 = c.stop_node(4).await;
    let term = c.raft(1).metrics().borrow().current_term;
    let mut log4 = n4.log.reopen();
    RaftLogStorage::<TypeConfig>::save_vote(&mut log4, &Vote::new(term + 10, 4)).await.expect("save vote");
    c.raft(1).change_membership(ChangeMembers::RemoveVoters(btreeset! {4}), false).await.expect("remove 4");
    // Back within the departing stream's time: the stream's next request meets the newer term.
    c.start_node(4, log4, n4.sm.reopen()).await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    let leader = c.wait_for_leader(&[1, 2, 3]).await;
    c.raft(leader).add_learner(4, node_addr(4), false).await.expect("add 4 again");
    c.set(leader, "b", "2").await;
    let last = c.raft(leader).metrics().borrow().last_log_index;
    c.raft(4)
        .wait(Some(TIMEOUT))
        .metrics(|m| m.last_log_index >= last, "node 4 is replicated to again")
        .await
        .unwrap_or_else(|e| panic!("{e}: node 4: {}", *c.raft(4).metrics().borrow()));
}

/// Found in review: with check-quorum off, a stale leader (node 1, cut off) that never saw the
/// group move to {1,4,5} refused the vote requests of 4 and 5 as coming from outside its config
/// {1,2,3}, and did not adopt their term. Once 2 and 3 were gone and the leader among 4 and 5
/// died, the survivor needed node 1's vote: the group never elected again. A leader refuses an
/// outsider only while a quorum of its config has followed it within the election timeout.
#[tokio::test(start_paused = true)]
async fn a_stale_leader_hears_a_voter_of_a_config_it_never_saw() {
    init_tracing();
    let config = quorate::Config { enable_check_quorum: false, ..crate::fixture::test_config() };
    let mut c = TestCluster::with_config(&[1, 2, 3], config).await;
    c.initialize(1).await;
    c.set(1, "a", "1").await;
    c.router.isolate(1);
    let leader = c.wait_for_leader(&[2, 3]).await;
    start_empty(&mut c, &[4, 5]).await;
    for id in [4, 5] {
        c.raft(leader).add_learner(id, node_addr(id), true).await.expect("add learner");
    }
    c.raft(leader)
        .change_membership(ChangeMembers::ReplaceAllVoters(btreeset! {1, 4, 5}), false)
        .await
        .expect("move to {1,4,5}");
    let leader = c.wait_for_leader(&[4, 5]).await;
    c.set(leader, "b", "2").await;
    c.stop_node(2).await;
    c.stop_node(3).await;
    c.stop_node(leader).await;
    let survivor = if leader == 4 { 5 } else { 4 };
    assert_eq!(c.raft(1).metrics().borrow().state, ServerState::Leader, "precondition: node 1 still leads term 1");
    c.router.restore(1);
    // Node 1 names itself leader until it hears the newer term, so wait on the survivor: only
    // it can be elected (node 1's log lacks the config both need).
    c.raft(survivor)
        .wait(Some(TIMEOUT))
        .state(ServerState::Leader, "the survivor is elected with node 1's vote")
        .await
        .unwrap_or_else(|e| panic!("{e}; node 1: {}", *c.raft(1).metrics().borrow()));
    c.set(survivor, "c", "3").await;
    c.raft(1)
        .wait(Some(TIMEOUT))
        .current_leader(survivor, "node 1 follows the survivor")
        .await
        .expect("node 1 follows");
}
