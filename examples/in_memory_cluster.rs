//! A three-node cluster in one process, on the `testing` kit's in-memory storage and network.
//!
//! Run it with `cargo run --example in_memory_cluster --features testing`. It starts three
//! nodes, initializes the cluster, writes through the leader, stops the leader, and writes
//! again through the node elected next — printing what happens.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use quorate::testing::{MemLogStore, MemStateMachine, Request, Router, TypeConfig};
use quorate::{BasicNode, Config, Raft};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Arc::new(Config::default().validate()?);
    let router = Router::new();
    let mut nodes: BTreeMap<u64, (Raft<TypeConfig>, MemStateMachine)> = BTreeMap::new();
    for id in 1..=3u64 {
        let sm = MemStateMachine::new();
        let raft = Raft::new(id, config.clone(), router.factory(id), MemLogStore::new(), sm.clone()).await?;
        router.add_node(id, raft.clone());
        nodes.insert(id, (raft, sm));
    }

    let members = (1..=3u64).map(|id| (id, BasicNode::new(format!("node-{id}")))).collect();
    nodes[&1].0.initialize(members).await?;
    let leader = wait_for_leader(&nodes[&1].0).await?;
    println!("node {leader} was elected leader");

    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
        let resp = nodes[&leader].0.client_write(Request::Set { key: k.into(), value: v.into() }).await?;
        println!("set {k}={v} committed at {}", resp.log_id);
    }

    println!("stopping the leader, node {leader}");
    let (old, _) = nodes.remove(&leader).ok_or("leader is a node")?;
    old.shutdown().await?;
    router.remove_node(leader);

    let any = nodes.values().next().ok_or("two nodes remain")?.0.clone();
    let new_leader = wait_for_leader_other_than(&any, leader).await?;
    println!("node {new_leader} took over");
    let resp = nodes[&new_leader].0.client_write(Request::Set { key: "d".into(), value: "4".into() }).await?;
    println!("set d=4 committed at {}", resp.log_id);

    for (id, (raft, sm)) in &nodes {
        raft.wait(Some(Duration::from_secs(5)))
            .applied_index_at_least(Some(resp.log_id.index), "applied the last write")
            .await?;
        println!("node {id} holds {:?}", sm.data());
    }
    for (raft, _) in nodes.values() {
        raft.shutdown().await?;
    }
    Ok(())
}

async fn wait_for_leader(raft: &Raft<TypeConfig>) -> Result<u64, Box<dyn std::error::Error>> {
    let m = raft.wait(Some(Duration::from_secs(5))).metrics(|m| m.current_leader.is_some(), "a leader").await?;
    m.current_leader.ok_or_else(|| "no leader".into())
}

async fn wait_for_leader_other_than(raft: &Raft<TypeConfig>, old: u64) -> Result<u64, Box<dyn std::error::Error>> {
    let m = raft
        .wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.current_leader.is_some_and(|l| l != old), "a new leader")
        .await?;
    m.current_leader.ok_or_else(|| "no leader".into())
}
