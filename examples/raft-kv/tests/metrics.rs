//! What a monitoring system sees: `GET /metrics` of `raft-kv node` processes on loopback,
//! scraped while they take writes, and the Grafana dashboard and Prometheus alerts checked
//! against the names the nodes really emit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use raft_kv::local_cluster::LocalCluster;

const WAIT: Duration = Duration::from_secs(30);

type TestResult = Result<(), String>;

/// The `raft-kv` binary under test: this build's, or `RAFT_KV_BIN`.
fn binary() -> std::path::PathBuf {
    std::env::var_os("RAFT_KV_BIN").map_or_else(|| env!("CARGO_BIN_EXE_raft-kv").into(), Into::into)
}

/// Start 3 nodes, initialize through node 1, wait for a leader; its index.
async fn start_cluster(root: &Path) -> Result<(LocalCluster, usize), String> {
    let mut cluster = LocalCluster::new(&binary(), root, 3).map_err(|e| e.to_string())?;
    cluster.start_all().map_err(|e| e.to_string())?;
    for i in 0..3 {
        cluster.wait_metrics(i, WAIT, "the HTTP API", |_| true).await?;
    }
    cluster.init(0).await?;
    let leader = cluster.wait_leader(WAIT).await?;
    Ok((cluster, leader))
}

/// Run a test body; on failure print the tail of every node's log before panicking. The
/// cluster's processes are killed when it is dropped, test failed or not.
async fn run_test<F: Future<Output = TestResult>>(root: &Path, body: F) {
    if let Err(e) = body.await {
        for i in 1..=3 {
            let log = std::fs::read_to_string(root.join(format!("node{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("---- node{i}.log (last lines) ----");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        panic!("{e}");
    }
}

/// A series' labels: sorted `(key, value)` pairs.
type Labels = Vec<(String, String)>;

/// One scrape: every sample, by metric name and its labels.
#[derive(Debug, Default)]
struct Scrape(BTreeMap<String, BTreeMap<Labels, f64>>);

impl Scrape {
    /// Parse Prometheus' text format. Every line that is not a comment must be a sample.
    fn parse(text: &str) -> Result<Self, String> {
        let mut samples: BTreeMap<String, BTreeMap<Labels, f64>> = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (name, labels, value) = parse_sample(line).ok_or_else(|| format!("not a sample: {line:?}"))?;
            samples.entry(name).or_default().insert(labels, value);
        }
        Ok(Self(samples))
    }

    fn names(&self) -> BTreeSet<String> {
        self.0.keys().cloned().collect()
    }

    /// The sample of `name` whose labels include every pair of `with`; the sum if several do.
    fn value(&self, name: &str, with: &[(&str, &str)]) -> Option<f64> {
        let series = self.0.get(name)?;
        let matching: Vec<f64> = series
            .iter()
            .filter(|(labels, _)| with.iter().all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v)))
            .map(|(_, v)| *v)
            .collect();
        if matching.is_empty() { None } else { Some(matching.iter().sum()) }
    }
}

/// `name{k="v",...} value` or `name value`, with `\"`, `\\` and `\n` escapes in label values.
fn parse_sample(line: &str) -> Option<(String, Labels, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    rest = &inner[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => value.push(match chars.next()?.1 {
                                'n' => '\n',
                                c => c,
                            }),
                            c => value.push(c),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                c => key.push(c),
            }
        }
    }
    labels.sort();
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

async fn scrape(cluster: &LocalCluster, i: usize) -> Result<Scrape, String> {
    let url = format!("{}/metrics", cluster.nodes[i].url());
    let resp = cluster.client().get(url).send().await.map_err(|e| format!("node {}: {e}", i + 1))?;
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if !resp.status().is_success() || !content_type.starts_with("text/plain") {
        return Err(format!("node {}: /metrics answered {} ({content_type})", i + 1, resp.status()));
    }
    Scrape::parse(&resp.text().await.map_err(|e| e.to_string())?)
}

/// Poll node `i`'s `/metrics` until `cond` holds, for at most `WAIT`.
async fn wait_scrape(
    cluster: &LocalCluster,
    i: usize,
    what: &str,
    cond: impl Fn(&Scrape) -> bool,
) -> Result<Scrape, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = scrape(cluster, i).await?;
        if cond(&s) {
            return Ok(s);
        }
        if Instant::now() >= deadline {
            return Err(format!("node {}: /metrics never showed {what}", i + 1));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writers that PUT through `urls` (round robin) until `stop` or `max` writes, counting
/// acknowledged writes per target.
fn start_load(
    client: reqwest::Client,
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    max: u64,
) -> (Vec<tokio::task::JoinHandle<()>>, Arc<Vec<AtomicU64>>) {
    let sent = Arc::new(AtomicU64::new(0));
    let acked: Arc<Vec<AtomicU64>> = Arc::new(urls.iter().map(|_| AtomicU64::new(0)).collect());
    let writers = (0..8)
        .map(|w| {
            let (client, urls, stop, sent, acked) =
                (client.clone(), urls.clone(), stop.clone(), sent.clone(), acked.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    if n >= max {
                        break;
                    }
                    let target = (n as usize + w) % urls.len();
                    let put = client.put(format!("{}/kv/load-{n}", urls[target])).body("v").send().await;
                    if put.is_ok_and(|r| r.status().is_success()) {
                        acked[target].fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    (writers, acked)
}

const PUT_OK: [(&str, &str); 3] = [("route", "/kv/{key}"), ("method", "PUT"), ("status", "200")];

/// While writes flow through the leader and a follower, the leader's committed index and
/// request count rise from one scrape to the next; afterwards every node's fsync and batch
/// histograms, request histograms and the follower's relay counter have counted them, and
/// the Raft gauges agree with `/admin/metrics`.
#[tokio::test]
async fn prometheus_metrics_move_under_a_write_load() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let (cluster, leader) = start_cluster(&root).await?;
        let follower = (leader + 1) % 3;
        let leader_id = cluster.nodes[leader].id.to_string();
        let before: Vec<Scrape> = {
            let mut v = Vec::new();
            for i in 0..3 {
                v.push(scrape(&cluster, i).await?);
            }
            v
        };
        let leader_state = [("node_id", leader_id.as_str()), ("state", "leader")];
        if before[leader].value("quorate_server_state", &leader_state) != Some(1.0) {
            // The first publish may not have happened yet: wait for it.
            wait_scrape(&cluster, leader, "the leader's role", |s| {
                s.value("quorate_server_state", &leader_state) == Some(1.0)
            })
            .await?;
        }

        // Scrape the leader during the load until two scrapes in a row show more commits and
        // more requests than the one before; the load stops then (or after 20,000 writes).
        let stop = Arc::new(AtomicBool::new(false));
        let urls = vec![cluster.nodes[leader].url(), cluster.nodes[follower].url()];
        let (writers, acked) = start_load(cluster.client().clone(), urls, stop.clone(), 20_000);
        let mut seen: Vec<(f64, f64)> = Vec::new();
        let deadline = Instant::now() + WAIT;
        let mut moved = 0;
        while moved < 2 {
            if Instant::now() >= deadline || writers.iter().all(|w| w.is_finished()) {
                stop.store(true, Ordering::Relaxed);
                return Err(format!("the leader's metrics did not move during the load: {seen:?}"));
            }
            let s = scrape(&cluster, leader).await?;
            let committed = s.value("quorate_committed_index", &[("node_id", &leader_id)]).unwrap_or(-1.0);
            let requests = s.value("raft_kv_http_request_duration_seconds_count", &PUT_OK).unwrap_or(0.0);
            if seen.last().is_some_and(|(c, r)| committed > *c && requests > *r) {
                moved += 1;
            }
            seen.push((committed, requests));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.map_err(|e| e.to_string())?;
        }
        let through_leader = acked[0].load(Ordering::Relaxed) as f64;
        let through_follower = acked[1].load(Ordering::Relaxed) as f64;
        if through_follower < 1.0 {
            return Err("no write through the follower was acknowledged".into());
        }

        // Once every node reports the leader's commit index as applied, everything is in.
        let m = cluster.metrics(leader).await.ok_or("the leader does not answer")?;
        let committed = m["committed"]["index"].as_u64().ok_or("no committed index")? as f64;
        let mut after = Vec::new();
        for i in 0..3 {
            let id = cluster.nodes[i].id.to_string();
            after.push(
                wait_scrape(&cluster, i, "the writes applied", |s| {
                    s.value("quorate_applied_index", &[("node_id", &id)]) >= Some(committed)
                })
                .await?,
            );
        }

        let rose = |i: usize, name: &str, with: &[(&str, &str)], by: f64| -> TestResult {
            let b = before[i].value(name, with).unwrap_or(0.0);
            let a = after[i].value(name, with).unwrap_or(0.0);
            if a - b < by {
                return Err(format!("node {}: {name}{with:?} went from {b} to {a}, expected a rise of {by}", i + 1));
            }
            Ok(())
        };
        let writes = through_leader + through_follower;
        for (i, scraped) in after.iter().enumerate() {
            // Histograms got samples: at least one fsync, and every entry in some batch.
            rose(i, "quorate_file_store_fsync_duration_seconds_count", &[], 1.0)?;
            rose(i, "quorate_file_store_batch_entries_sum", &[], writes)?;
            rose(i, "quorate_file_store_batch_bytes_sum", &[], writes)?;
            rose(i, "quorate_applied_index", &[], writes)?;
            let buckets = scraped.value("quorate_file_store_fsync_duration_seconds_bucket", &[("le", "+Inf")]);
            if buckets != scraped.value("quorate_file_store_fsync_duration_seconds_count", &[]) {
                return Err(format!("node {}: the +Inf bucket is not the count", i + 1));
            }
        }
        // Every write was answered by the leader's API, directly or relayed.
        rose(leader, "raft_kv_http_request_duration_seconds_count", &PUT_OK, writes)?;
        rose(follower, "raft_kv_http_request_duration_seconds_count", &PUT_OK, through_follower)?;
        rose(follower, "raft_kv_relayed_requests_total", &[("outcome", "answered")], through_follower)?;
        rose(leader, "quorate_committed_index", &[], writes)?;

        // The leader reports each follower, caught up; every node follows it.
        let s = &after[leader];
        for i in (0..3).filter(|i| *i != leader) {
            let target = cluster.nodes[i].id.to_string();
            let t = [("node_id", leader_id.as_str()), ("target", target.as_str())];
            if s.value("quorate_replication_matched_index", &t).is_none() {
                return Err(format!("the leader reports no matched index for node {target}"));
            }
        }
        for (i, s) in after.iter().enumerate() {
            if s.value("quorate_leader", &[("leader", &leader_id)]) != Some(1.0) {
                return Err(format!("node {} does not report following node {leader_id}", i + 1));
            }
            if s.value("quorate_term", &[]) != Some(m["current_term"].as_f64().unwrap_or(-1.0)) {
                return Err(format!("node {}: its term is not the leader's", i + 1));
            }
        }
        Ok(())
    })
    .await;
}

/// The metric names a PromQL expression reads: identifiers that are not functions,
/// aggregations, keywords or label names, outside label matchers, ranges and strings.
fn promql_metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    const KEYWORDS: [&str; 8] = ["and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"];
    // May stand before `by (..)` / `without (..)` instead of their parenthesis.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| -> Result<usize, String> {
        let mut j = from + 1;
        while j < chars.len() && chars[j] != close {
            if chars[j] == '"' {
                j += 1;
                while j < chars.len() && chars[j] != '"' {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
            }
            j += 1;
        }
        if j >= chars.len() { Err(format!("unclosed {close:?} in {expr}")) } else { Ok(j + 1) }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = skip_to(i, '}')?;
        } else if c == '[' {
            i = skip_to(i, ']')?;
        } else if c == '"' {
            i = skip_to(i, '"')?;
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next] == ' ' {
                next += 1;
            }
            if LABEL_LISTS.contains(&word.as_str()) {
                if next < chars.len() && chars[next] == '(' {
                    i = skip_to(next, ')')?;
                }
            } else {
                let called = next < chars.len() && chars[next] == '(';
                let keyword = KEYWORDS.contains(&word.as_str()) || AGGREGATIONS.contains(&word.as_str());
                if !called && !keyword {
                    names.insert(word);
                }
            }
        } else {
            i += 1;
        }
    }
    Ok(names)
}

/// Every query of the dashboard (panels, template variables) and every alert rule, by title.
fn monitoring_queries() -> Result<Vec<(String, String)>, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join("grafana/raft-kv.json")).map_err(|e| e.to_string())?;
    let dashboard: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("raft-kv.json: {e}"))?;
    let mut queries = Vec::new();
    let panels = dashboard["panels"].as_array().ok_or("no panels")?;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().ok_or_else(|| format!("{}: a target without expr", panel["title"]))?;
            queries.push((panel["title"].as_str().unwrap_or("?").to_string(), expr.to_string()));
        }
    }
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(query) = var["query"]["query"].as_str() {
            // label_values(metric, label): the metric is what must exist.
            let metric = query
                .strip_prefix("label_values(")
                .and_then(|q| q.split(',').next())
                .ok_or_else(|| format!("variable {}: not label_values(metric, label)", var["name"]))?;
            queries.push((format!("variable {}", var["name"]), metric.trim().to_string()));
        }
    }
    let alerts = std::fs::read_to_string(dir.join("prometheus/alerts.yml")).map_err(|e| e.to_string())?;
    let mut alert = String::new();
    for line in alerts.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert:") {
            alert = name.trim().to_string();
        } else if let Some(expr) = line.strip_prefix("expr:") {
            queries.push((format!("alert {alert}"), expr.trim().to_string()));
        }
    }
    Ok(queries)
}

/// Every metric name the dashboard's panels and the alert rules query is one that the nodes
/// emit: scraped from a running cluster after writes through the leader and a follower (so
/// that the leader's per-follower series, the histograms and the relay counter exist).
#[tokio::test]
async fn the_dashboard_and_alerts_query_only_metrics_the_nodes_emit() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let queries = monitoring_queries()?;
        if queries.len() < 20 {
            return Err(format!("only {} queries found in the dashboard and alerts", queries.len()));
        }
        let (cluster, leader) = start_cluster(&root).await?;
        let follower = (leader + 1) % 3;
        for (i, key) in [(leader, "a"), (follower, "b")] {
            let url = format!("{}/kv/{key}", cluster.nodes[i].url());
            let resp = cluster.client().put(url).body("v").send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("PUT through node {} answered {}", i + 1, resp.status()));
            }
        }
        let leader_id = cluster.nodes[leader].id.to_string();
        // Prometheus adds `up` to every target it scrapes.
        let mut emitted = BTreeSet::from(["up".to_string()]);
        for i in 0..3 {
            // The leader publishes its follower series within a second of the writes.
            let s = wait_scrape(&cluster, i, "the series of a busy node", |s| {
                i != leader || s.value("quorate_replication_lag_entries", &[("node_id", &leader_id)]).is_some()
            })
            .await?;
            emitted.extend(s.names());
        }
        let mut missing = Vec::new();
        for (title, expr) in &queries {
            let names = promql_metric_names(expr)?;
            if names.is_empty() {
                missing.push(format!("{title}: no metric in {expr}"));
            }
            for name in names.difference(&emitted) {
                missing.push(format!("{title}: {name}"));
            }
        }
        if !missing.is_empty() {
            return Err(format!("queried but not emitted:\n{}\nemitted: {emitted:?}", missing.join("\n")));
        }
        Ok(())
    })
    .await;
}

/// A node of many groups started with `--metrics-per-group` publishes quorate's series of each
/// group, labelled by its group id: every node reports every group's term, and the node that
/// leads a group (by `/admin/metrics`) reports `leader` under that group's label, and per-follower
/// series for it. No `quorate_term` series lacks a `group` (one per node would be ambiguous).
#[tokio::test]
async fn a_node_of_many_groups_publishes_each_groups_series_when_asked() {
    const GROUPS: u32 = 4;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run_test(&root, async {
        let mut cluster = LocalCluster::new(&binary(), &root, 3).map_err(|e| e.to_string())?;
        cluster.node_args(&["--groups", &GROUPS.to_string(), "--metrics-per-group"]);
        cluster.bootstrap_on_start();
        cluster.start_all().map_err(|e| e.to_string())?;
        let leaders = cluster.wait_group_leaders(GROUPS as usize, WAIT).await?;
        let groups: Vec<String> =
            (0..GROUPS).map(|shard| raft_kv::groups::group_id(shard, GROUPS).to_string()).collect();
        for i in 0..3 {
            let id = cluster.nodes[i].id;
            let node_id = id.to_string();
            let s = wait_scrape(&cluster, i, "every group's series", |s| {
                groups.iter().zip(&leaders).all(|(group, leader)| {
                    let node = [("node_id", node_id.as_str()), ("group", group.as_str())];
                    let state = if *leader == id { "leader" } else { "follower" };
                    let role = [node[0], node[1], ("state", state)];
                    let lag = s.value("quorate_replication_lag_entries", &node);
                    s.value("quorate_term", &node) >= Some(1.0)
                        && s.value("quorate_server_state", &role) == Some(1.0)
                        && (*leader != id || lag.is_some())
                })
            })
            .await?;
            let term = s.0.get("quorate_term").ok_or("no quorate_term")?;
            if term.len() != groups.len() || term.keys().any(|labels| !labels.iter().any(|(k, _)| k == "group")) {
                return Err(format!("node {id}: quorate_term should be one series per group: {term:?}"));
            }
        }
        Ok(())
    })
    .await;
}

/// The name extractor itself, on the shapes the dashboard uses.
#[test]
fn promql_names_are_found_outside_matchers_functions_and_label_lists() {
    let names = |e: &str| promql_metric_names(e).unwrap().into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (node_id, le) (rate(a_bucket{x=~"5..",route="/kv/{key}"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(names("b{n=\"1\"} and on (node_id) c == 1 or vector(0)"), ["b", "c"]);
    assert_eq!(names("count(d == 0) unless e offset 5m"), ["d", "e"]);
    assert_eq!(names("sum without (x) (g) / max by(y) (h)"), ["g", "h"]);
    assert!(promql_metric_names("f{").is_err());
}

/// The text format parser, on the exporter's shapes.
#[test]
fn prometheus_text_is_parsed_with_its_escapes() {
    let s = Scrape::parse(
        "# HELP x help\n# TYPE x gauge\nx{a=\"1\",b=\"/kv/{key}\"} 2.5\ny 3\nz_bucket{le=\"+Inf\",q=\"a\\\"b\"} 4\n",
    )
    .unwrap();
    assert_eq!(s.value("x", &[("b", "/kv/{key}")]), Some(2.5));
    assert_eq!(s.value("y", &[]), Some(3.0));
    assert_eq!(s.value("z_bucket", &[("q", "a\"b")]), Some(4.0));
    assert!(Scrape::parse("garbage{\n").is_err());
}
