//! Helpers shared by the multi-process tests: the binary under test, a test runner that shows
//! the nodes' logs on failure, and writes retried until acknowledged.

#![allow(dead_code)] // Each test crate uses its own subset.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use raft_kv::local_cluster::LocalCluster;

pub const WAIT: Duration = Duration::from_secs(30);

pub type TestResult = Result<(), String>;

/// The `raft-kv` binary under test: this build's, or `RAFT_KV_BIN` (to run the suite against
/// another build, e.g. to see a test fail on the code before a fix).
pub fn binary() -> std::path::PathBuf {
    std::env::var_os("RAFT_KV_BIN").map_or_else(|| env!("CARGO_BIN_EXE_raft-kv").into(), Into::into)
}

/// GET `url` and decode its JSON body (a node's `/admin/dump`, say).
pub async fn get_json(client: &reqwest::Client, url: &str) -> Result<serde_json::Value, String> {
    client.get(url).send().await.map_err(|e| e.to_string())?.json().await.map_err(|e| e.to_string())
}

/// Run a test body; on failure print the tail of every node's log before panicking.
pub async fn run_test<F: Future<Output = TestResult>>(root: &Path, body: F) {
    if let Err(e) = body.await {
        for i in 1..=3 {
            let log = std::fs::read_to_string(root.join(format!("node{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- node{i}.log (last lines) ----");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        panic!("{e}");
    }
}

/// PUT `key` = `value` through the nodes in `urls` (round robin), retrying until acknowledged
/// or `WAIT` passes. A PUT of the same value is idempotent, so retrying an unknown outcome is
/// safe. Returns whether the write was acknowledged.
pub async fn put_until_acked(client: &reqwest::Client, urls: &[String], key: &str, value: &str, start: usize) -> bool {
    let deadline = Instant::now() + WAIT;
    let mut attempt = start;
    while Instant::now() < deadline {
        let url = &urls[attempt % urls.len()];
        attempt += 1;
        match client.put(format!("{url}/kv/{key}")).body(value.to_string()).send().await {
            Ok(r) if r.status() == 200 => return true,
            // 503 (not applied), 504/500 (unknown), or a node that is down: retry elsewhere.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    false
}

/// Write `keys` concurrently through `urls`; returns the acknowledged pairs.
pub async fn write_keys(
    client: &reqwest::Client,
    urls: &[String],
    keys: impl Iterator<Item = u64>,
    tag: &str,
) -> Result<BTreeMap<String, String>, String> {
    let results: Vec<_> = futures_util::stream::iter(keys)
        .map(|k| async move {
            let (key, value) = (format!("key-{k}"), format!("{tag}-{k}"));
            let acked = put_until_acked(client, urls, &key, &value, k as usize).await;
            (key, value, acked)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut acked = BTreeMap::new();
    for (k, v, ok) in results {
        if !ok {
            return Err(format!("write of {k} was never acknowledged"));
        }
        acked.insert(k, v);
    }
    Ok(acked)
}

pub fn urls(cluster: &LocalCluster, nodes: &[usize]) -> Vec<String> {
    nodes.iter().map(|i| cluster.nodes[*i].url()).collect()
}
