//! Black-box tests of `raft-kv node --groups N` processes on loopback: keys spread over many
//! Raft groups on one group host per node, a node killed and restarted, and a data directory
//! that keeps its number of groups. Every wait polls `/admin/metrics` (or retries a request)
//! until a condition holds or a timeout passes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use raft_kv::groups::{GROUPS_FILE, shard_of};
use raft_kv::local_cluster::LocalCluster;
use serde_json::{Value, json};

use common::{TestResult, WAIT, binary, run_test, write_keys};

const GROUPS: u32 = 8;

/// Read every pair back linearizably (no `?stale`), each through the node after the last.
async fn read_back(client: &reqwest::Client, urls: &[String], acked: &BTreeMap<String, String>) -> TestResult {
    for (n, (key, value)) in acked.iter().enumerate() {
        let url = &urls[n % urls.len()];
        let deadline = Instant::now() + WAIT;
        loop {
            let resp = client.get(format!("{url}/kv/{key}")).send().await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.map_err(|e| e.to_string())?;
            if status == 200 {
                if body["value"] != json!(value) {
                    return Err(format!("{url}: {key} read {body} after {value:?} was acknowledged"));
                }
                break;
            }
            // Only "not applied" statuses (a leader moving) are worth a retry.
            if status != 503 || Instant::now() >= deadline {
                return Err(format!("{url}: read of {key}: {status} {body}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// Wait until every running node has applied, in every group, what that group's leader has
/// committed; then every acknowledged pair is in every running node's state machines, and the
/// nodes' maps are equal.
async fn check_everywhere(cluster: &LocalCluster, acked: &BTreeMap<String, String>) -> TestResult {
    let leaders = cluster.wait_group_leaders(GROUPS as usize, WAIT).await?;
    let index_of = |id: u64| cluster.nodes.iter().position(|n| n.id == id).ok_or("unknown leader");
    let mut committed = Vec::new();
    for (shard, leader) in leaders.iter().enumerate() {
        let page = cluster.group_page(index_of(*leader)?).await.ok_or("a leader does not answer")?;
        committed.push(page["groups"][shard]["committed"].as_u64().ok_or("no committed index")?);
    }
    for i in (0..cluster.nodes.len()).filter(|i| cluster.nodes[*i].is_running()) {
        cluster
            .wait_metrics(i, WAIT, "catch-up in every group", |m| {
                let lines = m["groups"].as_array();
                lines.is_some_and(|lines| {
                    lines.iter().zip(&committed).all(|(l, c)| l["applied"].as_u64().is_some_and(|a| a >= *c))
                })
            })
            .await?;
    }
    let client = cluster.client();
    let mut dumps = Vec::new();
    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        let dump = common::get_json(client, &format!("{}/admin/dump", node.url())).await?;
        for (key, value) in acked {
            if dump["data"][key] != json!(value) {
                return Err(format!(
                    "node {}: {key} is {} after {value:?} was acknowledged",
                    node.id, dump["data"][key]
                ));
            }
        }
        dumps.push((node.id, dump));
    }
    let (first, rest) = dumps.split_first().ok_or("no running node")?;
    match rest.iter().find(|(_, d)| d["data"] != first.1["data"]) {
        Some((id, _)) => Err(format!("the maps of nodes {} and {id} differ", first.0)),
        None => Ok(()),
    }
}

/// POST admin route `path` to node index `i` and return its status and JSON body.
async fn admin(cluster: &LocalCluster, i: usize, path: &str, body: Value) -> Result<(u16, Value), String> {
    let resp = cluster.admin_post(i, path).json(&body).send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.map_err(|e| e.to_string())?))
}

/// On a node of many groups a membership route needs `?group=` (400, nothing done, without
/// it), and with it changes that group only, relayed to its leader like any request; metrics
/// page through the groups or show one whole. Returns the groups' leaders after the transfer.
async fn admin_routes_name_their_group(cluster: &LocalCluster, leaders: &[u64]) -> Result<Vec<u64>, String> {
    let (status, body) = admin(cluster, 0, "/admin/transfer-leader", json!({ "to": 2 })).await?;
    if status != 400 || body["error"] != "group_required" || body["outcome"] != "not_applied" {
        return Err(format!("a transfer without ?group= answered {status} {body}"));
    }
    // Move group 0's leadership through a node that does not lead it (so the request is
    // relayed to the leader, ?group= included).
    let from = leaders[0];
    let to = if from == 3 { 2 } else { 3 };
    let via = (0..3).find(|i| cluster.nodes[*i].id != from).unwrap_or(0);
    let (status, body) = admin(cluster, via, "/admin/transfer-leader?group=0", json!({ "to": to })).await?;
    if status != 200 {
        return Err(format!("transfer of group 0 to {to} through node {}: {status} {body}", via + 1));
    }
    let deadline = Instant::now() + WAIT;
    let moved = loop {
        let now = cluster.wait_group_leaders(GROUPS as usize, WAIT).await?;
        if now[0] == to {
            break now;
        }
        if Instant::now() >= deadline {
            return Err(format!("group 0 is still led by {} after a transfer to {to}", now[0]));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client = cluster.client();
    let url = cluster.nodes[0].url();
    let page: Value = async { client.get(format!("{url}/admin/metrics?from=2&limit=3")).send().await?.json().await }
        .await
        .map_err(|e: reqwest::Error| e.to_string())?;
    let shards: Vec<u64> =
        page["groups"].as_array().into_iter().flatten().filter_map(|l| l["group"].as_u64()).collect();
    if shards != [2, 3, 4] || page["next"] != 5 || page["group_count"] != GROUPS {
        return Err(format!("a page of 3 groups from group 2: {page}"));
    }
    let one: Value = async { client.get(format!("{url}/admin/metrics?group=0")).send().await?.json().await }
        .await
        .map_err(|e: reqwest::Error| e.to_string())?;
    if one["current_leader"] != to {
        return Err(format!("group 0's own metrics: {one}"));
    }
    Ok(moved)
}

/// A 3-node cluster of 8 groups, started with `--bootstrap` (each node initializes its share,
/// so leaders start spread), whose admin routes name a group; writes to keys of every group through every node are read back
/// linearizably; a node is killed (kill -9), writes and reads go on through the others; it is
/// restarted from its data directory and catches up in every group (some through snapshots:
/// a snapshot every 20 entries, 5 kept behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_groups_serve_every_key_through_any_node_across_a_node_kill() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let mut cluster = LocalCluster::new(&binary(), &root, 3).map_err(|e| e.to_string())?;
        cluster.node_args(&["--groups", "8", "--snapshot-every", "20", "--keep-logs", "5"]);
        cluster.bootstrap_on_start();
        cluster.start_all().map_err(|e| e.to_string())?;
        let leaders = cluster.wait_group_leaders(GROUPS as usize, WAIT).await?;
        let leading: BTreeSet<u64> = leaders.iter().copied().collect();
        if leading.len() < 2 {
            return Err(format!("bootstrap should spread the leaders; they are {leaders:?}"));
        }

        let client = cluster.client().clone();
        let leaders = admin_routes_name_their_group(&cluster, &leaders).await?;
        let all: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
        let mut acked = write_keys(&client, &all, 0..240, "a").await?;
        let shards: BTreeSet<u32> = acked.keys().map(|k| shard_of(k, GROUPS)).collect();
        if shards.len() != GROUPS as usize {
            return Err(format!("the keys reached only groups {shards:?}"));
        }
        read_back(&client, &all, &acked).await?;

        // Kill the node that leads the most groups: its groups elect new leaders.
        let victim_id = (1..=3).max_by_key(|id| leaders.iter().filter(|l| *l == id).count()).unwrap_or(1);
        let victim = cluster.nodes.iter().position(|n| n.id == victim_id).ok_or("no such node")?;
        cluster.kill(victim);
        let survivors: Vec<String> = cluster.nodes.iter().filter(|n| n.is_running()).map(|n| n.url()).collect();
        acked.extend(write_keys(&client, &survivors, 240..400, "b").await?);
        let after_kill = cluster.wait_group_leaders(GROUPS as usize, WAIT).await?;
        if after_kill.contains(&victim_id) {
            return Err(format!("a group still names the killed node {victim_id} as leader: {after_kill:?}"));
        }
        read_back(&client, &survivors, &acked).await?;

        cluster.start(victim).map_err(|e| e.to_string())?;
        acked.extend(write_keys(&client, &all, 400..440, "c").await?);
        check_everywhere(&cluster, &acked).await?;
        read_back(&client, &all, &acked).await
    })
    .await;
}

/// A data directory keeps its number of groups: one made with `--groups 4` refuses
/// `--groups 2`, one made with `--groups 1` (which writes no groups file: the layout from
/// before groups) refuses `--groups 3`, each with an error that names both numbers; started
/// with its own number again, each comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_refuses_another_number_of_groups() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        for (made_with, then) in [("4", "2"), ("1", "3")] {
            let mut cluster =
                LocalCluster::new(&binary(), &root.join(format!("made-{made_with}")), 1).map_err(|e| e.to_string())?;
            cluster.node_args(&["--groups", made_with, "--bootstrap"]);
            cluster.start(0).map_err(|e| e.to_string())?;
            cluster.wait_metrics(0, WAIT, "a started node", |_| true).await?;
            let stopped = cluster.terminate(0, WAIT).await.map_err(|e| e.to_string())?;
            if !stopped.is_some_and(|s| s.success()) {
                return Err(format!("--groups {made_with}: SIGTERM did not stop the node cleanly: {stopped:?}"));
            }
            let groups_file = cluster.nodes[0].data_dir.join(GROUPS_FILE);
            if groups_file.exists() != (made_with != "1") {
                return Err(format!(
                    "--groups {made_with}: {} exists: {}",
                    groups_file.display(),
                    groups_file.exists()
                ));
            }

            cluster.node_args(&["--groups", then]);
            cluster.start(0).map_err(|e| e.to_string())?;
            let status = cluster.wait_exit(0, WAIT).await.map_err(|e| e.to_string())?;
            if status.is_none_or(|s| s.code() != Some(1)) {
                return Err(format!("--groups {then} on a --groups {made_with} directory: exit {status:?}"));
            }
            let log = cluster.log(0);
            let said = format!("--groups {made_with}, and this node was started with --groups {then}");
            if !log.contains(&said) {
                return Err(format!("the error does not say {said:?}: {log}"));
            }

            cluster.node_args(&["--groups", made_with]);
            cluster.start(0).map_err(|e| e.to_string())?;
            cluster.wait_metrics(0, WAIT, "the node back with its own --groups", |_| true).await?;
            cluster.terminate(0, WAIT).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .await;
}

/// Each group's term as node index `i` sees it.
async fn group_terms(cluster: &LocalCluster, i: usize, groups: usize) -> Result<Vec<u64>, String> {
    let page = cluster.group_page(i).await.ok_or("node 0 does not answer")?;
    let lines =
        page["groups"].as_array().filter(|l| l.len() == groups).ok_or(format!("not {groups} groups: {page}"))?;
    lines.iter().map(|l| l["term"].as_u64().ok_or(format!("no term: {l}"))).collect()
}

/// A shard left quiet for longer than the log's stall bound (`max_log_io_stall`, 2 s) keeps
/// its leader through its next writes. Found by quorate's multi-bench: the watchdog counted a
/// stall from the last time a group's Raft task had looked, which for a quiesced group was
/// before the quiet spell, so the first write after it (its fsync not done when the task next
/// looked) made the leader step down: a refused write and an election in every shard left
/// idle for 2 s. The sleep is the condition under test (time passing with nothing to do), not
/// a wait for something to happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_quiet_past_the_log_stall_bound_keeps_its_leader_through_its_next_writes() {
    const SHARDS: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let mut cluster = LocalCluster::new(&binary(), &root, 3).map_err(|e| e.to_string())?;
        cluster.node_args(&["--groups", &SHARDS.to_string()]);
        cluster.bootstrap_on_start();
        cluster.start_all().map_err(|e| e.to_string())?;
        let leaders = cluster.wait_group_leaders(SHARDS, WAIT).await?;
        let client = cluster.client().clone();
        let all: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
        let acked = write_keys(&client, &all, 0..16, "a").await?;
        let shards: BTreeSet<u32> = acked.keys().map(|k| shard_of(k, SHARDS as u32)).collect();
        if shards.len() != SHARDS {
            return Err(format!("the keys reached only groups {shards:?}"));
        }
        let terms = group_terms(&cluster, 0, SHARDS).await?;

        tokio::time::sleep(Duration::from_secs(3)).await;
        write_keys(&client, &all, 16..32, "b").await?;
        let (leaders_after, terms_after) =
            (cluster.wait_group_leaders(SHARDS, WAIT).await?, group_terms(&cluster, 0, SHARDS).await?);
        if (&leaders_after, &terms_after) != (&leaders, &terms) {
            return Err(format!(
                "leaders {leaders:?} in terms {terms:?} before the quiet spell, {leaders_after:?} in terms {terms_after:?} after its writes"
            ));
        }
        Ok(())
    })
    .await;
}
