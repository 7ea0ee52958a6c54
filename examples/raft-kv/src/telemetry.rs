//! What a node tells a monitoring system: the Prometheus recorder behind `GET /metrics`, and
//! raft-kv's own metrics next to quorate's.
//!
//! Everything is recorded through the `metrics` facade: quorate's node metrics by
//! `quorate::metrics::export::publish` (every [`PUBLISH_EVERY`]; on a node of many groups only
//! with `--metrics-per-group`, by `publish_group`, per group), the log store's group commits
//! by `quorate::metrics::export::file_store_observer`, and raft-kv's HTTP latencies and relays
//! by the HTTP layer. One Prometheus recorder per process collects them all;
//! `GET /metrics` renders it in Prometheus' text format.
//!
//! raft-kv's own metrics follow quorate's naming convention (see `quorate::metrics::export`),
//! under the prefix `raft_kv_`:
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `raft_kv_http_request_duration_seconds` | histogram | `node_id`, `method`, `route`, `status` | time from a request's head to its answer, by route template (`/kv/{key}`; `unmatched` for unknown paths) and status code; its `_count` counts requests |
//! | `raft_kv_groups`, `raft_kv_groups_leading`, `raft_kv_groups_without_leader`, `raft_kv_groups_quiesced` | gauge | `node_id` | only on a node of many groups (`--groups N`): the groups it runs, leads, knows no leader of, and that are quiesced (see [`publish_groups`]) |
//! | `raft_kv_relayed_requests_total` | counter | `node_id`, `outcome` | requests this node had to relay to the leader: `answered` (the leader's answer was passed on, whatever its status), `leader_unreachable` (could not connect: not sent), `relay_busy` (`--http-max-relays` under way: not sent), `forward_failed` (sent, no answer), `no_leader` (none known), `not_leader` (relayed to this node, or this node is named leader but is not: not relayed again) |
//!
//! Histograms are rendered as Prometheus histograms with the buckets below (not summaries), so
//! that a dashboard can aggregate them across nodes with `histogram_quantile`. Gauges not
//! recorded for [`GAUGE_IDLE_TIMEOUT`] are dropped: the per-follower series of a node that no
//! longer leads, a leader label that is no longer the leader.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

/// The names of raft-kv's own metrics.
pub mod names {
    /// Histogram: seconds from a request's head to its answer.
    pub const HTTP_REQUEST_DURATION_SECONDS: &str = "raft_kv_http_request_duration_seconds";
    /// Counter: requests relayed (or not) to the leader, by outcome.
    pub const RELAYED_REQUESTS_TOTAL: &str = "raft_kv_relayed_requests_total";
    /// Gauge (many groups): the groups the node runs.
    pub const GROUPS: &str = "raft_kv_groups";
    /// Gauge (many groups): the groups this node leads.
    pub const GROUPS_LEADING: &str = "raft_kv_groups_leading";
    /// Gauge (many groups): the groups that know no leader here.
    pub const GROUPS_WITHOUT_LEADER: &str = "raft_kv_groups_without_leader";
    /// Gauge (many groups): the groups quiesced here.
    pub const GROUPS_QUIESCED: &str = "raft_kv_groups_quiesced";
}

/// Record counts over the groups of a node of many groups every `every`, until every group has
/// stopped: how many it runs, leads, has no leader for, and are quiesced.
///
/// These gauges, the log's group commits and the HTTP metrics are what a node of many groups
/// publishes by default. quorate's own series (`quorate_*`) are published per group, labelled
/// by `group`, only with `--metrics-per-group`: they cost about 26 series per group (23, and
/// 5 per follower of each group the node leads), some 260,000 per node at 10,000 groups.
pub async fn publish_groups(groups: crate::groups::Groups, every: Duration) {
    let node_id = groups.node_id().to_string();
    let gauge = |name: &'static str| metrics::gauge!(name, "node_id" => node_id.clone());
    let (count, leading, without_leader, quiesced) = (
        gauge(names::GROUPS),
        gauge(names::GROUPS_LEADING),
        gauge(names::GROUPS_WITHOUT_LEADER),
        gauge(names::GROUPS_QUIESCED),
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (mut led, mut orphaned, mut asleep, mut stopped) = (0u32, 0u32, 0u32, 0u32);
        for (_, service) in groups.iter() {
            let metrics = service.raft.metrics();
            let m = metrics.borrow();
            led += u32::from(m.state == quorate::ServerState::Leader);
            orphaned += u32::from(m.current_leader.is_none());
            asleep += u32::from(m.quiesced);
            stopped += u32::from(m.state == quorate::ServerState::Shutdown);
        }
        count.set(f64::from(groups.count()));
        leading.set(f64::from(led));
        without_leader.set(f64::from(orphaned));
        quiesced.set(f64::from(asleep));
        if stopped == groups.count() {
            return;
        }
    }
}

/// How often quorate's node metrics are recorded: how stale a scrape can be.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// A gauge that has not been recorded for this long is removed from `/metrics`.
pub const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bucket bounds of every `*_duration_seconds` histogram: 100 µs (a write cache) to 10 s.
pub const SECONDS_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Bucket bounds of the log store's entries per group commit.
pub const ENTRIES_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// Bucket bounds of the log store's bytes per group commit: 256 B to 16 MiB.
pub const BYTES_BUCKETS: &[f64] =
    &[256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262_144.0, 1_048_576.0, 4_194_304.0, 16_777_216.0];

/// The process's Prometheus recorder, installed as the `metrics` facade's global recorder on
/// the first call (with the help text of every metric), and its upkeep task spawned on the
/// current tokio runtime. Later calls return the same handle.
///
/// Call it before anything records (the log store, the node's publisher): series registered
/// before a recorder is installed go nowhere.
///
/// # Errors
/// If another `metrics` recorder is already installed in this process.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    use quorate::metrics::export::names as q;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(q::FILE_STORE_BATCH_ENTRIES.into()), ENTRIES_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(q::FILE_STORE_BATCH_BYTES.into()), BYTES_BUCKETS)?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
        .install_recorder()?;
    quorate::metrics::export::describe();
    metrics::describe_histogram!(
        names::HTTP_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Seconds from a request's head to its answer, by method, route template and status"
    );
    metrics::describe_counter!(
        names::RELAYED_REQUESTS_TOTAL,
        metrics::Unit::Count,
        "Requests this node had to relay to the leader, by outcome"
    );
    // Histograms keep their samples until upkeep folds them into the buckets: without it,
    // memory grows between scrapes.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(HANDLE.get_or_init(|| handle).clone())
}
