//! Black-box tests of `raft-kv node` processes on loopback: kill -9, restarts, snapshots,
//! and the HTTP API's answers. Every wait polls `/admin/metrics` (or retries a request) until
//! a condition holds or a timeout passes.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use raft_kv::local_cluster::LocalCluster;
use serde_json::{Value, json};

use common::{TestResult, WAIT, binary, put_until_acked, run_test, urls, write_keys};

/// Start `n` nodes with `args`, initialize through node 1 and wait for a leader.
async fn start_cluster(root: &Path, args: &[&str]) -> Result<LocalCluster, String> {
    let mut cluster = LocalCluster::new(&binary(), root, 3).map_err(|e| e.to_string())?;
    cluster.node_args(args);
    cluster.start_all().map_err(|e| e.to_string())?;
    for i in 0..3 {
        cluster.wait_metrics(i, WAIT, "the HTTP API", |_| true).await?;
    }
    cluster.init(0).await?;
    cluster.wait_leader(WAIT).await?;
    Ok(cluster)
}

/// Wait until every running node has applied at least the leader's committed index, and
/// return it.
async fn wait_all_applied(cluster: &LocalCluster) -> Result<u64, String> {
    let leader = cluster.wait_leader(WAIT).await?;
    let m = cluster.metrics(leader).await.ok_or("the leader does not answer")?;
    let target = m["committed"]["index"].as_u64().ok_or("no committed index")?;
    for i in 0..cluster.nodes.len() {
        if cluster.nodes[i].is_running() {
            cluster
                .wait_metrics(i, WAIT, "catch-up", |m| m["last_applied"]["index"].as_u64().is_some_and(|a| a >= target))
                .await?;
        }
    }
    Ok(target)
}

/// Every acknowledged pair is in every running node's local state machine (stale reads), and
/// the state machines are identical.
async fn check_acked_everywhere(cluster: &LocalCluster, acked: &BTreeMap<String, String>) -> TestResult {
    let applied = wait_all_applied(cluster).await?;
    let client = cluster.client();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if !node.is_running() {
            continue;
        }
        let url = node.url();
        let missing: Vec<String> = futures_util::stream::iter(acked.iter())
            .map(|(k, v)| {
                let url = url.clone();
                async move {
                    let body: Result<Value, reqwest::Error> =
                        async { client.get(format!("{url}/kv/{k}?stale=true")).send().await?.json().await }.await;
                    match body {
                        Ok(body) if body["value"] == json!(v) => None,
                        Ok(body) => Some(format!("{k}: {}", body["value"])),
                        Err(e) => Some(format!("{k}: {e}")),
                    }
                }
            })
            .buffer_unordered(32)
            .filter_map(std::future::ready)
            .collect()
            .await;
        if !missing.is_empty() {
            return Err(format!(
                "node {}: {} acknowledged writes missing or wrong, e.g. {:?}",
                i + 1,
                missing.len(),
                &missing[..missing.len().min(5)]
            ));
        }
    }
    // No more writes: once every node has applied the same index, the maps must be equal.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut dumps = Vec::new();
        for node in cluster.nodes.iter().filter(|n| n.is_running()) {
            let d = common::get_json(client, &format!("{}/admin/dump", node.url())).await?;
            dumps.push((node.id, d));
        }
        let (first, rest) = dumps.split_first().ok_or("no running node")?;
        if rest.iter().all(|(_, d)| d["applied_index"] == first.1["applied_index"]) {
            if let Some((id, _)) = rest.iter().find(|(_, d)| d["data"] != first.1["data"]) {
                return Err(format!("state machines of nodes {} and {id} differ at the same applied index", first.0));
            }
            if first.1["applied_index"].as_u64() < Some(applied) {
                return Err(format!("nodes went back below applied index {applied}"));
            }
            break;
        }
        if Instant::now() >= deadline {
            return Err("the nodes never applied the same index".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// 1000 concurrent writes through every node, kill -9 of the leader, more writes through the
/// survivors, restart of the killed node: nothing acknowledged is lost anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_and_restart_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let mut cluster = start_cluster(&root, &[]).await?;
        let client = cluster.client().clone();
        let mut acked = write_keys(&client, &urls(&cluster, &[0, 1, 2]), 0..1000, "a").await?;

        let leader = cluster.wait_leader(WAIT).await?;
        cluster.kill(leader);
        let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        acked.extend(write_keys(&client, &urls(&cluster, &survivors), 1000..1300, "b").await?);
        let new_leader = cluster.wait_leader(WAIT).await?;
        if new_leader == leader {
            return Err("the killed node cannot lead".into());
        }

        cluster.start(leader).map_err(|e| e.to_string())?;
        acked.extend(write_keys(&client, &urls(&cluster, &[0, 1, 2]), 1300..1400, "c").await?);
        check_acked_everywhere(&cluster, &acked).await
    })
    .await;
}

/// kill -9 of all three nodes at once, then restart: every acknowledged write is still there,
/// and the cluster takes writes again. The nodes run on one runtime thread each
/// (`--runtime-threads 1`, as compare-etcd runs them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_cluster_crash_and_restart_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let mut cluster = start_cluster(&root, &["--runtime-threads", "1"]).await?;
        let client = cluster.client().clone();
        let mut acked = write_keys(&client, &urls(&cluster, &[0, 1, 2]), 0..500, "a").await?;

        cluster.kill_all();
        cluster.start_all().map_err(|e| e.to_string())?;
        cluster.wait_leader(WAIT).await?;
        acked.extend(write_keys(&client, &urls(&cluster, &[0, 1, 2]), 500..600, "b").await?);

        // Linearizable reads through a node agree too.
        for (k, v) in acked.iter().take(50) {
            let body: Value = client
                .get(format!("{}/kv/{k}", cluster.nodes[1].url()))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            if body["value"] != json!(v) {
                return Err(format!("linearizable read of {k}: {body}"));
            }
        }
        check_acked_everywhere(&cluster, &acked).await
    })
    .await;
}

/// With frequent snapshots and no log kept behind them, a follower that was down catches up by
/// receiving a snapshot over the network; then the whole cluster restarts from snapshots plus
/// log replay. One runtime thread per node: snapshots are built, sent and installed beside
/// the writes on that thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_follower_catches_up_through_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let mut cluster =
            start_cluster(&root, &["--snapshot-every", "100", "--keep-logs", "0", "--runtime-threads", "1"]).await?;
        let client = cluster.client().clone();
        let leader = cluster.wait_leader(WAIT).await?;
        let follower = (leader + 1) % 3;
        cluster.kill(follower);
        let live: Vec<usize> = (0..3).filter(|i| *i != follower).collect();
        let mut acked = write_keys(&client, &urls(&cluster, &live), 0..600, "a").await?;
        cluster
            .wait_metrics(leader, WAIT, "a purged log", |m| m["purged"]["index"].as_u64().is_some_and(|p| p > 100))
            .await?;

        cluster.start(follower).map_err(|e| e.to_string())?;
        let target = wait_all_applied(&cluster).await?;
        let m = cluster.metrics(follower).await.ok_or("the follower does not answer")?;
        if m["snapshot"]["index"].as_u64().is_none() {
            return Err(format!("the follower caught up to {target} without a snapshot: {m}"));
        }

        cluster.kill_all();
        cluster.start_all().map_err(|e| e.to_string())?;
        acked.extend(write_keys(&client, &urls(&cluster, &[0, 1, 2]), 600..700, "b").await?);
        check_acked_everywhere(&cluster, &acked).await
    })
    .await;
}

async fn request(client: &reqwest::Client, req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
    let _ = client;
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.json().await.map_err(|e| format!("a non-JSON answer with status {status}: {e}"))?;
    Ok((status, body))
}

/// A put declaring a body of 2 MiB (over the limit), sent to `http_addr` without its body:
/// the status and JSON body of the answer.
async fn oversized_put(http_addr: &str) -> Result<(u16, Value), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(http_addr).await.map_err(|e| e.to_string())?;
    let head = format!("PUT /kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 2 << 20);
    conn.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut got))
        .await
        .map_err(|_| "no answer to an oversized put".to_string())?
        .map_err(|e| e.to_string())?;
    let got = String::from_utf8_lossy(&got);
    let status = got.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = got.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body = serde_json::from_str(body).map_err(|e| format!("a non-JSON answer ({e}): {got}"))?;
    Ok((status, body))
}

/// The API answers bad input with JSON 4xx errors, CAS semantics, forwarding of admin calls,
/// and leadership transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_answers_with_json_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let cluster = start_cluster(&root, &[]).await?;
        let c = cluster.client();
        let leader = cluster.wait_leader(WAIT).await?;
        let follower = cluster.nodes[(leader + 1) % 3].url();
        let expect = |what: &str, got: (u16, Value), status: u16| -> TestResult {
            if got.0 == status { Ok(()) } else { Err(format!("{what}: expected {status}, got {} {}", got.0, got.1)) }
        };

        let cas = format!("{follower}/kv/k/cas");
        expect("absent read", request(c, c.get(format!("{follower}/kv/k"))).await?, 200)?;
        expect("cas create", request(c, c.post(&cas).json(&json!({"expected": null, "new": "1"}))).await?, 200)?;
        let (status, body) = request(c, c.post(&cas).json(&json!({"expected": "0", "new": "2"}))).await?;
        if status != 409 || body["current"] != "1" || body["outcome"] != "not_applied" {
            return Err(format!("cas mismatch: {status} {body}"));
        }
        expect("cas delete", request(c, c.post(&cas).json(&json!({"expected": "1", "new": null}))).await?, 200)?;
        let (_, body) = request(c, c.get(format!("{follower}/kv/k"))).await?;
        if body["found"] != false {
            return Err(format!("deleted key still found: {body}"));
        }

        // A CAS without both fields is refused before it is proposed: the log does not move.
        let before = cluster.metrics(leader).await.ok_or("no leader metrics")?["last_log_index"].clone();
        expect("cas {}", request(c, c.post(&cas).json(&json!({}))).await?, 400)?;
        expect("cas without new", request(c, c.post(&cas).json(&json!({"expected": null}))).await?, 400)?;
        let after = cluster.metrics(leader).await.ok_or("no leader metrics")?["last_log_index"].clone();
        if before != after {
            return Err(format!("a refused CAS moved the log from {before} to {after}"));
        }
        expect("malformed json", request(c, c.post(&cas).body("{not json")).await?, 400)?;
        expect("unknown field", request(c, c.post(&cas).json(&json!({"expected": null, "nwe": "x"}))).await?, 400)?;
        // The server answers 413 on the head and closes the connection, draining the body
        // the client goes on sending first (`src/http/linger.rs`): without that, the kernel's
        // reset on the unread bytes could beat the answer ("error sending request", every
        // time in release builds here; more than half of the tries without it). A client of
        // its own each time, so that no pooled connection of `c` is the one closed. Five
        // tries; the head alone gets the same answer.
        for _ in 0..5 {
            let once = reqwest::Client::new();
            let big = once.put(format!("{follower}/kv/big")).body(vec![b'x'; 2 << 20]);
            expect("oversized", request(&once, big).await?, 413)?;
        }
        expect("oversized head", oversized_put(&cluster.nodes[(leader + 1) % 3].http_addr).await?, 413)?;
        expect("unknown route", request(c, c.get(format!("{follower}/nope"))).await?, 404)?;
        expect("bad method", request(c, c.post(format!("{follower}/kv/k"))).await?, 405)?;
        let f = (leader + 1) % 3;
        let voters = || cluster.admin_post(f, "/admin/change-membership");
        expect("unknown voter", request(c, voters().json(&json!({"voters": [1, 2, 42]}))).await?, 400)?;
        expect("init again", request(c, cluster.admin_post(f, "/admin/init").json(&json!({}))).await?, 400)?;
        let transfer = || cluster.admin_post(f, "/admin/transfer-leader");
        expect("transfer to a stranger", request(c, transfer().json(&json!({"to": 42}))).await?, 400)?;

        // Leadership moves to the node we ask for, through a follower.
        let to = (leader + 2) % 3;
        expect("transfer", request(c, transfer().json(&json!({"to": to + 1}))).await?, 200)?;
        let new_leader = cluster.wait_leader(WAIT).await?;
        if new_leader != to {
            return Err(format!("leadership went to node {} instead of {}", new_leader + 1, to + 1));
        }
        expect("write after transfer", request(c, c.put(format!("{follower}/kv/after")).body("x")).await?, 200)?;
        Ok(())
    })
    .await;
}

/// Send `method path` with `body` to `http_addr` as raw HTTP/1.1, the path byte for byte (an
/// HTTP client library would resolve `..` itself), and return the status and JSON body.
async fn raw_request(http_addr: &str, method: &str, path: &str, body: &str) -> Result<(u16, Value), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head =
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    let mut conn = tokio::net::TcpStream::connect(http_addr).await.map_err(|e| e.to_string())?;
    conn.write_all(format!("{head}{body}").as_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tokio::time::timeout(WAIT, conn.read_to_string(&mut answer))
        .await
        .map_err(|_| format!("{method} {path}: no answer"))?
        .map_err(|e| e.to_string())?;
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let json = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json =
        serde_json::from_str(json).map_err(|e| format!("{method} {path}: a non-JSON answer ({e}): {answer:?}"))?;
    Ok((status, json))
}

/// Found in review: a key `..` worked at the leader and not through a follower, whose relay
/// (reqwest's URL parser) resolved `/kv/..` to `/`. Keys that are empty, `.` or `..` (however
/// percent-encoded) are 400 `bad_key` at every node, never proposed; a raw `\` in a key (which
/// the parser reads as `/`) reaches the leader as the same key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_a_relay_would_rewrite_are_refused_or_kept_at_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let cluster = start_cluster(&root, &[]).await?;
        let leader = cluster.wait_leader(WAIT).await?;
        let nodes = [("leader", leader), ("follower", (leader + 1) % 3)];
        let before = cluster.metrics(leader).await.ok_or("no leader metrics")?["last_log_index"].clone();
        let dot_keys = ["/kv/.", "/kv/..", "/kv/%2e", "/kv/%2E%2e", "/kv/.%2e", "/kv/%2e."];
        for (role, i) in nodes {
            let addr = &cluster.nodes[i].http_addr;
            let mut refused: Vec<(String, String)> = Vec::new();
            for key in dot_keys {
                for method in ["PUT", "GET", "DELETE"] {
                    refused.push((method.into(), key.into()));
                }
                refused.push(("POST".into(), format!("{key}/cas")));
            }
            refused.push(("PUT".into(), "/kv/".into()));
            refused.push(("POST".into(), "/kv//cas".into()));
            for (method, path) in refused {
                let body = if path.ends_with("/cas") { r#"{"expected": null, "new": "x"}"# } else { "x" };
                let (status, answer) = raw_request(addr, &method, &path, body).await?;
                if (status, answer["error"].as_str(), answer["outcome"].as_str())
                    != (400, Some("bad_key"), Some("not_applied"))
                {
                    return Err(format!("{method} {path} at the {role}: {status} {answer}"));
                }
            }
        }
        let after = cluster.metrics(leader).await.ok_or("no leader metrics")?["last_log_index"].clone();
        if before != after {
            return Err(format!("refused keys moved the log from {before} to {after}"));
        }

        for (role, i) in nodes {
            let addr = &cluster.nodes[i].http_addr;
            for (path, key) in [("/kv/a\\b", "a\\b"), ("/kv/...", "..."), ("/kv/.a", ".a")] {
                let value = format!("{role}-{key}");
                let (status, answer) = raw_request(addr, "PUT", path, &value).await?;
                if status != 200 {
                    return Err(format!("PUT {path} at the {role}: {status} {answer}"));
                }
                let (status, answer) = raw_request(addr, "GET", path, "").await?;
                if status != 200 || answer["key"] != key || answer["value"] != value.as_str() {
                    return Err(format!("GET {path} at the {role}: {status} {answer}"));
                }
            }
        }
        Ok(())
    })
    .await;
}

/// What a compare-and-set increment attempt ended with.
enum Increment {
    Acked,
    Mismatch,
    NotApplied,
    Unknown,
}

async fn read_counter(client: &reqwest::Client, url: &str) -> Option<u64> {
    let body: Value = client.get(format!("{url}/kv/counter")).send().await.ok()?.json().await.ok()?;
    if body["ok"] != true {
        return None;
    }
    body["value"].as_str().map_or(Some(0), |v| v.parse().ok())
}

async fn try_increment(client: &reqwest::Client, url: &str) -> Increment {
    let Some(n) = read_counter(client, url).await else { return Increment::NotApplied };
    let expected = if n == 0 { Value::Null } else { json!(n.to_string()) };
    let sent = client
        .post(format!("{url}/kv/counter/cas"))
        .json(&json!({"expected": expected, "new": (n + 1).to_string()}))
        .send()
        .await;
    let Ok(resp) = sent else { return Increment::Unknown };
    match resp.status().as_u16() {
        200 => Increment::Acked,
        409 => Increment::Mismatch,
        503 | 400..=499 => Increment::NotApplied,
        _ => Increment::Unknown,
    }
}

/// Clients increment a counter with read + compare-and-set through every node while the leader
/// is killed and restarted, and later paused and resumed. Every acknowledged increment counts exactly once: the final value
/// is at least the acknowledged increments and at most those plus the ones of unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_increments_count_exactly_once_across_leader_crash_and_pause() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let mut cluster = start_cluster(&root, &[]).await?;
        let client = cluster.client().clone();
        let all = urls(&cluster, &[0, 1, 2]);

        let run_clients = |urls: Vec<String>, per_client: u64| {
            let client = client.clone();
            async move {
                let tasks: Vec<_> = (0..6)
                    .map(|c| {
                        let (client, urls) = (client.clone(), urls.clone());
                        tokio::spawn(async move {
                            let (mut acked, mut unknown, mut attempt) = (0u64, 0u64, c);
                            let deadline = Instant::now() + WAIT;
                            while acked < per_client && Instant::now() < deadline {
                                attempt += 1;
                                match try_increment(&client, &urls[attempt % urls.len()]).await {
                                    Increment::Acked => acked += 1,
                                    Increment::Unknown => unknown += 1,
                                    Increment::Mismatch => {}
                                    Increment::NotApplied => tokio::time::sleep(Duration::from_millis(20)).await,
                                }
                            }
                            (acked, unknown)
                        })
                    })
                    .collect();
                let mut total = (0, 0);
                for t in tasks {
                    let (a, u) = t.await.map_err(|e| e.to_string())?;
                    total = (total.0 + a, total.1 + u);
                }
                Ok::<_, String>(total)
            }
        };

        let (mut acked, mut unknown) = run_clients(all.clone(), 15).await?;
        let leader = cluster.wait_leader(WAIT).await?;
        cluster.kill(leader);
        let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let (a, u) = run_clients(urls(&cluster, &survivors), 10).await?;
        (acked, unknown) = (acked + a, unknown + u);
        cluster.start(leader).map_err(|e| e.to_string())?;
        let (a, u) = run_clients(all.clone(), 5).await?;
        (acked, unknown) = (acked + a, unknown + u);

        // A paused leader looks partitioned away: the others elect a new one and go on; when
        // it resumes, whatever it had in flight is either applied once or never.
        let leader = cluster.wait_leader(WAIT).await?;
        cluster.set_paused(leader, true).map_err(|e| e.to_string())?;
        let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let (a, u) = run_clients(urls(&cluster, &survivors), 5).await?;
        (acked, unknown) = (acked + a, unknown + u);
        cluster.set_paused(leader, false).map_err(|e| e.to_string())?;
        let (a, u) = run_clients(all.clone(), 5).await?;
        (acked, unknown) = (acked + a, unknown + u);

        cluster.wait_leader(WAIT).await?;
        let value = read_counter(&client, &all[0]).await.ok_or("cannot read the counter")?;
        if value < acked || value > acked + unknown {
            return Err(format!("counter is {value}: {acked} increments acknowledged, {unknown} of unknown outcome"));
        }
        if acked < 6 * 40 {
            return Err(format!("only {acked} increments acknowledged"));
        }
        Ok(())
    })
    .await;
}

/// A fourth node joins as a learner and catches up, then the voters become {2, 3, 4}: node 1
/// leaves, writes go on, and the new member holds everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_change_replaces_a_voter() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let mut cluster = LocalCluster::new(&binary(), &root, 4).map_err(|e| e.to_string())?;
        cluster.start_all().map_err(|e| e.to_string())?;
        for i in 0..4 {
            cluster.wait_metrics(i, WAIT, "the HTTP API", |_| true).await?;
        }
        cluster.init_with(0, &[0, 1, 2]).await?;
        let client = cluster.client().clone();
        let mut acked = write_keys(&client, &urls(&cluster, &[0, 1, 2]), 0..200, "a").await?;

        let n4 = &cluster.nodes[3];
        let learner = json!({ "id": 4, "raft_addr": n4.raft_addr, "http_addr": n4.http_addr });
        let (status, body) = request(&client, cluster.admin_post(1, "/admin/add-learner").json(&learner)).await?;
        if status != 200 {
            return Err(format!("add-learner: {status} {body}"));
        }
        let voters = json!({ "voters": [2, 3, 4] });
        let (status, body) = request(&client, cluster.admin_post(2, "/admin/change-membership").json(&voters)).await?;
        if status != 200 {
            return Err(format!("change-membership: {status} {body}"));
        }
        // Node 1 is no longer a member: it says so (410, not a 503 "retry" forever), for
        // writes and linearizable reads alike; then stop it and go on with the others.
        let removed = cluster.nodes[0].url();
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = request(&client, client.put(format!("{removed}/kv/x")).body("1")).await?;
            if status == 410 && body["error"] == "removed" && body["outcome"] == "not_applied" {
                break;
            }
            // It learns of its removal when the membership entry reaches it.
            if Instant::now() >= deadline {
                return Err(format!("the removed node answers {status} {body}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (status, body) = request(&client, client.get(format!("{removed}/kv/x"))).await?;
        if status != 410 || body["members"].get("4").is_none() {
            return Err(format!("linearizable read on the removed node: {status} {body}"));
        }
        cluster.kill(0);
        acked.extend(write_keys(&client, &urls(&cluster, &[1, 2, 3]), 200..300, "b").await?);
        let leader = cluster.wait_leader(WAIT).await?;
        let m = cluster.metrics(leader).await.ok_or("the leader does not answer")?;
        if m["membership_config"]["membership"]["configs"] != json!([[2, 3, 4]]) {
            return Err(format!("unexpected membership: {}", m["membership_config"]["membership"]));
        }
        check_acked_everywhere(&cluster, &acked).await
    })
    .await;
}

/// A write relayed by a follower after its relay connection was idle for longer than the
/// relay's reply timeout is answered as it happened (it used to fail at once with 504
/// `forward_failed`, outcome unknown, although it applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_relayed_after_an_idle_spell_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        // The relay waits request timeout + 1 s for the leader: 1.5 s here.
        let cluster = start_cluster(&root, &["--request-timeout-ms", "500"]).await?;
        let client = cluster.client().clone();
        let leader = cluster.wait_leader(WAIT).await?;
        let follower = cluster.nodes[(leader + 1) % 3].url();
        let (status, body) = request(&client, client.put(format!("{follower}/kv/a")).body("1")).await?;
        if status != 200 {
            return Err(format!("first relayed write: {status} {body}"));
        }
        // The scenario itself: the relay connection stays idle past its reply timeout.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (status, body) = request(&client, client.put(format!("{follower}/kv/a")).body("2")).await?;
        if status != 200 {
            return Err(format!("relayed write after an idle spell: {status} {body}"));
        }
        Ok(())
    })
    .await;
}

/// A follower relays at most `--http-max-relays` requests at once; one more is answered 503
/// `relay_busy` at once and never reaches the leader (before, relays past the leader's cap of
/// connections per address were refused by the leader, and a refusal lost to a reset came back
/// as 504, outcome unknown, for a request that never ran). The leader is paused so that the
/// first relay stays under way; the election timeout (3 s) keeps the followers from electing
/// another leader meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_past_its_relays_answers_relay_busy_and_relays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let mut cluster = start_cluster(&root, &["--http-max-relays", "1", "--election-timeout-ms", "3000"]).await?;
        let client = cluster.client().clone();
        let leader = cluster.wait_leader(WAIT).await?;
        let follower = cluster.nodes[(leader + 1) % 3].url();
        let (status, body) = request(&client, client.put(format!("{follower}/kv/warm")).body("1")).await?;
        if status != 200 {
            return Err(format!("relayed write: {status} {body}"));
        }
        cluster.set_paused(leader, true).map_err(|e| e.to_string())?;
        let put = |key: &'static str| {
            let (client, url) = (client.clone(), format!("{follower}/kv/{key}"));
            async move { request(&client, client.put(url).body("1")).await }
        };
        // Both at once: whichever takes the one relay waits for the paused leader, the other is
        // turned away at once.
        let (mut x, mut y) = (tokio::spawn(put("x")), tokio::spawn(put("y")));
        // Once one is answered (it must be the busy one), let the leader answer the other.
        let (first, first_key, second, second_key) = tokio::select! {
            r = &mut x => (r, "x", y, "y"),
            r = &mut y => (r, "y", x, "x"),
        };
        let busy = first.map_err(|e| e.to_string())??;
        cluster.set_paused(leader, false).map_err(|e| e.to_string())?;
        let done = second.await.map_err(|e| e.to_string())??;
        let (busy_key, done_key) = (first_key, second_key);
        if busy.0 != 503 || busy.1["error"] != "relay_busy" || busy.1["outcome"] != "not_applied" {
            return Err(format!("expected one 503 relay_busy (not applied); got {busy:?} and {done:?}"));
        }
        if done.0 != 200 {
            return Err(format!("the relay under way: {done:?}"));
        }
        let leader_url = cluster.nodes[leader].url();
        for (key, found) in [(done_key, true), (busy_key, false)] {
            let (status, body) = request(&client, client.get(format!("{leader_url}/kv/{key}"))).await?;
            if status != 200 || body["found"] != found {
                return Err(format!("GET {key} at the leader: {status} {body}; expected found: {found}"));
            }
        }
        Ok(())
    })
    .await;
}

/// A follower that was down while values of about 1 MiB were written (90 of them: more than
/// the transport's 64 MiB frames hold) catches up: replication's batches are bounded by the
/// bytes the entries carry, not by a count that made them hundreds of MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_lagged_behind_megabyte_values_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let mut cluster = start_cluster(&root, &[]).await?;
        let client = cluster.client().clone();
        let leader = cluster.wait_leader(WAIT).await?;
        let follower = (leader + 1) % 3;
        cluster.kill(follower);
        let value = "v".repeat(1_000_000);
        let live = urls(&cluster, &[leader]);
        let keys: Vec<u64> = (0..90).collect();
        futures_util::stream::iter(keys)
            .map(|k| {
                let (client, live, value) = (&client, &live, &value);
                async move { put_until_acked(client, live, &format!("big-{k}"), value, 0).await }
            })
            .buffer_unordered(4)
            .collect::<Vec<bool>>()
            .await
            .into_iter()
            .all(|acked| acked)
            .then_some(())
            .ok_or("a large write was never acknowledged")?;
        cluster.start(follower).map_err(|e| e.to_string())?;
        let target = cluster.metrics(leader).await.and_then(|m| m["committed"]["index"].as_u64()).ok_or("no commit")?;
        cluster
            .wait_metrics(follower, Duration::from_secs(60), "catch-up", |m| {
                m["last_applied"]["index"].as_u64().is_some_and(|a| a >= target)
            })
            .await?;
        let body: Value = client
            .get(format!("{}/kv/big-89?stale=true", cluster.nodes[follower].url()))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if body["value"].as_str().map(str::len) != Some(1_000_000) {
            return Err("the follower does not hold the last large value".into());
        }
        Ok(())
    })
    .await;
}
