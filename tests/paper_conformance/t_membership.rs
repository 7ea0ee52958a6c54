//! Membership changes (Raft §6, dissertation ch. 4): learners, promotion, removal of a voter
//! and of the leader, and a joint change whose leader crashes before the final configuration.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use quorate::{BasicNode, ChangeMembers, EntryPayload, ServerState};

use crate::cluster::{Cluster, config};
use crate::net::Msg;

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn learner_promote_remove_voter_remove_leader() {
    let mut c = Cluster::new(3, config(), 40, true).await;
    c.init(&[1, 2, 3]).await;
    let l = c.leader().await;
    for i in 0..10 {
        c.write(l, &format!("k{i}"), "v").await.unwrap();
    }
    // A learner catches up and does not vote.
    c.add_fresh(4).await;
    let r = c.raft(l).add_learner(4, BasicNode::new("n4"), true).await.expect("add learner");
    assert!(!r.membership.is_voter(&4));
    assert_eq!(c.metrics(4).state, ServerState::Learner);
    assert!(c.metrics(4).last_log_index >= c.metrics(l).committed.map(|x| x.index));
    // Promote.
    let r = c.raft(l).change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([4])), false).await.unwrap();
    assert_eq!(r.membership.voter_ids(), BTreeSet::from([1, 2, 3, 4]));
    assert!(!r.membership.is_joint());
    // Remove a follower.
    let gone = (1..=3).find(|i| *i != l).unwrap();
    let r = c.raft(l).change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([gone])), false).await.unwrap();
    assert!(r.membership.get_node(&gone).is_none());
    c.raft(gone)
        .wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.committed_membership.membership.get_node(&gone).is_none(), "removed node learns it")
        .await
        .expect("the removed node learns its removal");
    let term = c.metrics(l).current_term;
    // The removed node does not disturb the cluster.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.metrics(l).current_term, term, "a removed node disturbed the leader");
    assert_eq!(c.metrics(l).state, ServerState::Leader);
    let w = c.write(l, "after-remove", "1").await.unwrap();
    // Remove the leader itself: it leads until the final configuration commits, then steps down.
    let r = c.raft(l).change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([l])), false).await.unwrap();
    assert!(!r.membership.is_voter(&l));
    let rest: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|i| *i != l && *i != gone).collect();
    let l2 = c.leader_among(&rest, Duration::from_secs(10)).await;
    c.raft(l)
        .wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.state != ServerState::Leader, "stepped down")
        .await
        .unwrap();
    let w2 = c.write(l2, "after-leader-removal", "1").await.unwrap();
    assert!(w2.log_id > w.log_id);
    for id in &rest {
        c.raft(*id)
            .wait(Some(Duration::from_secs(5)))
            .applied_index_at_least(Some(w2.log_id.index), "applied")
            .await
            .unwrap();
        assert_eq!(c.sm(*id).get("after-leader-removal").as_deref(), Some("1"));
    }
    c.check();
    c.shutdown().await;
}

/// The final configuration never leaves the leader; it crashes; the next leader commits the
/// joint configuration and appends the final one itself.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn joint_change_completed_by_next_leader() {
    let mut c = Cluster::new(3, config(), 41, false).await;
    c.init(&[1, 2, 3]).await;
    let l = c.leader().await;
    // A leader just elected has not committed the initial membership yet: a change now
    // fails with MembershipChangeInProgress. Wait for the committed membership to catch up.
    c.raft(l)
        .wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.committed_membership.log_id == m.membership_config.log_id, "membership committed")
        .await
        .unwrap();
    let out = (1..=3).find(|i| *i != l).unwrap();
    c.add_fresh(4).await;
    c.raft(l).add_learner(4, BasicNode::new("n4"), true).await.unwrap();
    let new_voters: BTreeSet<u64> = [1, 2, 3, 4].into_iter().filter(|i| *i != out).collect();
    // Drop every append from the leader that carries a non-joint membership.
    c.net.set_filter(Some(Arc::new(move |from, _to, msg: &Msg| match msg {
        Msg::Append(req) => {
            from == l && req.entries.iter().any(|e| matches!(&e.payload, EntryPayload::Membership(m) if !m.is_joint()))
        }
        _ => false,
    })));
    let raft = c.raft(l);
    let nv = new_voters.clone();
    let change = tokio::spawn(async move { raft.change_membership(ChangeMembers::ReplaceAllVoters(nv), false).await });
    let joint = c
        .raft(l)
        .wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.committed_membership.membership.is_joint(), "joint committed")
        .await
        .unwrap()
        .committed_membership
        .log_id;
    c.crash(l).await;
    let _ = change.await.unwrap();
    c.net.set_filter(None);
    let rest: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|i| *i != l).collect();
    let l2 = c.leader_among(&rest, Duration::from_secs(10)).await;
    let m = c
        .raft(l2)
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.committed_membership.log_id > joint && !m.committed_membership.membership.is_joint(),
            "final configuration committed",
        )
        .await
        .unwrap();
    assert_eq!(m.committed_membership.membership.configs()[0], new_voters);
    c.write(l2, "k", "v").await.expect("write in the new configuration");
    c.restart(l).await;
    c.check();
    c.shutdown().await;
}
