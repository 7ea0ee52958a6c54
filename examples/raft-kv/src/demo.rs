//! The `raft-kv demo` command: a 3-node cluster on loopback, as three child processes of this
//! binary, driven over HTTP while it says what it does.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::local_cluster::LocalCluster;
use crate::node::BoxError;

const WAIT: Duration = Duration::from_secs(20);

/// The whole demo ends within this, successful or not, so CI (which runs it) never hangs on it.
const DEADLINE: Duration = Duration::from_secs(90);

/// Print one request's answer; an answer with another status than `expected` ends the demo
/// with an error, so a demo that misbehaves fails (CI runs it).
async fn show(what: &str, resp: reqwest::Response, expected: u16) -> Result<Value, BoxError> {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await?;
    println!("  {what:<44} -> {status} {body}");
    if status != expected {
        return Err(format!("{what}: expected status {expected}, got {status} {body}").into());
    }
    Ok(body)
}

/// Run the demo with node processes started from `binary`, data under `root`. It stops every
/// node it started and returns within 90 s.
///
/// # Errors
/// If a node cannot be started, the cluster does not behave, or the demo runs out of time.
pub async fn run(binary: &Path, root: &Path) -> Result<(), BoxError> {
    match tokio::time::timeout(DEADLINE, run_steps(binary, root)).await {
        Ok(result) => result,
        Err(_) => Err(format!("the demo did not finish within {DEADLINE:?}").into()),
    }
}

/// The demo's steps. Dropping it (at the deadline) kills the nodes: `LocalCluster` does on drop.
async fn run_steps(binary: &Path, root: &Path) -> Result<(), BoxError> {
    let mut cluster = LocalCluster::new(binary, root, 3)?;
    println!("starting 3 nodes under {}", root.display());
    cluster.start_all()?;
    for i in 0..3 {
        let node = &cluster.nodes[i];
        println!("  node {}: raft {} http {}", node.id, node.raft_addr, node.http_addr);
        cluster.wait_metrics(i, WAIT, "the HTTP API", |_| true).await?;
    }
    cluster.init(0).await?;
    let leader = cluster.wait_leader(WAIT).await?;
    println!("initialized; node {} leads", leader + 1);

    let c = cluster.client().clone();
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let url = |i: usize| urls[i].clone();
    let follower = (leader + 1) % 3;
    println!("writes through follower node {} are forwarded to the leader:", follower + 1);
    for (k, v) in [("alpha", "1"), ("beta", "2"), ("gamma", "3")] {
        show(&format!("PUT /kv/{k} = {v}"), c.put(format!("{}/kv/{k}", url(follower))).body(v).send().await?, 200)
            .await?;
    }
    println!("linearizable reads from every node:");
    for i in 0..3 {
        show(&format!("node {}: GET /kv/beta", i + 1), c.get(format!("{}/kv/beta", url(i))).send().await?, 200).await?;
    }
    println!("compare-and-set:");
    let cas = |expected: Value, new: Value| json!({ "expected": expected, "new": new });
    show(
        "CAS alpha 1 -> 10",
        c.post(format!("{}/kv/alpha/cas", url(0))).json(&cas(json!("1"), json!("10"))).send().await?,
        200,
    )
    .await?;
    show(
        "CAS alpha 1 -> 11 (stale expectation)",
        c.post(format!("{}/kv/alpha/cas", url(1))).json(&cas(json!("1"), json!("11"))).send().await?,
        409,
    )
    .await?;
    show("DELETE /kv/gamma", c.delete(format!("{}/kv/gamma", url(2))).send().await?, 200).await?;
    show("GET /kv/gamma", c.get(format!("{}/kv/gamma", url(2))).send().await?, 200).await?;

    println!("kill -9 the leader, node {}:", leader + 1);
    cluster.kill(leader);
    let new_leader = cluster.wait_leader(WAIT).await?;
    println!("  node {} leads now", new_leader + 1);
    show("PUT /kv/delta = 4", c.put(format!("{}/kv/delta", url(new_leader))).body("4").send().await?, 200).await?;
    println!("restart node {} from its data directory:", leader + 1);
    cluster.start(leader)?;
    let target = cluster.metrics(new_leader).await.and_then(|m| m["committed"]["index"].as_u64()).unwrap_or(0);
    cluster.wait_metrics(leader, WAIT, "catch-up", |m| m["last_applied"]["index"].as_u64() >= Some(target)).await?;
    show(
        &format!("node {}: GET /kv/delta?stale=true", leader + 1),
        c.get(format!("{}/kv/delta?stale=true", url(leader))).send().await?,
        200,
    )
    .await?;
    show(
        &format!("node {}: GET /admin/dump", leader + 1),
        c.get(format!("{}/admin/dump", url(leader))).send().await?,
        200,
    )
    .await?;

    println!("stopping the nodes");
    cluster.kill_all();
    Ok(())
}
