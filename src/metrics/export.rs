//! Publishing [`RaftMetrics`] through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`), for Prometheus or any monitoring system that has a `metrics` recorder.
//!
//! quorate only records. The application decides where the values go by installing a recorder
//! (for Prometheus, `metrics_exporter_prometheus::PrometheusBuilder::install_recorder`, whose
//! handle renders the text a scraper reads) **before** it starts publishing, and then runs
//! [`publish`] for every node it hosts ([`publish_group`] for every group of a node of many
//! groups: [below](#one-node-many-groups)). [`describe`] registers the help text of every
//! metric.
//!
#![cfg_attr(feature = "testing", doc = "```")]
#![cfg_attr(not(feature = "testing"), doc = "```ignore")]
//! use std::collections::BTreeMap;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use quorate::testing::{MemLogStore, MemStateMachine, Router};
//! use quorate::{BasicNode, Config, Raft};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // First the recorder (here none is installed: the values go nowhere), then:
//! quorate::metrics::export::describe();
//! let router = Router::new();
//! let raft = Raft::new(1, Arc::new(Config::default()), router.factory(1), MemLogStore::new(), MemStateMachine::new()).await?;
//! // Records every second; at the first tick after the node stops it records that, then ends.
//! let publishing = tokio::spawn(quorate::metrics::export::publish(raft.metrics(), Duration::from_secs(1)));
//! raft.initialize(BTreeMap::from([(1, BasicNode::new("n1"))])).await?;
//! raft.shutdown().await?;
//! publishing.await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Names
//!
//! Every name follows one convention, Prometheus' own, so an exporter needs no renaming:
//!
//! - `quorate_<what>[_<unit>]`, lowercase snake case; a unit is a base unit (`_seconds`,
//!   `_bytes`) or what is counted (`_entries`); `_index` is a position in the log, `-1` while
//!   there is none (an empty log, nothing committed yet), so that `a_index - b_index` is a
//!   number of entries;
//! - counters end in `_total` and only rise (since the node started);
//! - a flag is a gauge of 0 or 1; a role is one gauge per possible value in a label, 1 for the
//!   current one;
//! - every series has the label `node_id`: the node that reports it (its `Display`, as in the
//!   tracing field `id`); a series about one follower adds `target` (the follower, as in the
//!   replication span's field `target`);
//! - on a node of many groups, a group published by [`publish_group`] (or
//!   [`Publisher::for_group`]) adds `group` after `node_id` to every series it records: the
//!   group's [`GroupId`], as in the tracing field `group` of a hosted group's span. The table
//!   shows it as (`group`). [`publish`] records no `group` label, and the file store's
//!   histograms have none: one log store (a `SharedLog` on a node of many groups) serves the
//!   whole node.
//!
//! | name | type | labels | what | from |
//! |---|---|---|---|---|
//! | `quorate_server_state` | gauge | `node_id`, (`group`), `state` | 1 for the role the node plays (`learner`, `follower`, `candidate`, `leader`, `shutdown`), 0 for the others | `state` |
//! | `quorate_term` | gauge | `node_id`, (`group`) | the current term | `current_term` |
//! | `quorate_leader` | gauge | `node_id`, (`group`), `leader` | 1 for the leader this node knows of (itself on a leader); a leader it knew before drops to 0 | `current_leader` |
//! | `quorate_leader_known` | gauge | `node_id`, (`group`) | 1 while this node knows a leader | `current_leader` |
//! | `quorate_last_log_index` | gauge | `node_id`, (`group`) | the last entry of the log | `last_log_index` |
//! | `quorate_committed_index` | gauge | `node_id`, (`group`) | the last entry known committed | `committed` |
//! | `quorate_applied_index` | gauge | `node_id`, (`group`) | the last entry the state machine applied | `last_applied` |
//! | `quorate_purged_index` | gauge | `node_id`, (`group`) | the last purged entry | `purged` |
//! | `quorate_snapshot_index` | gauge | `node_id`, (`group`) | the last entry the latest snapshot covers | `snapshot` |
//! | `quorate_quorum_ack_age_seconds` | gauge | `node_id`, (`group`) | on a leader, how long ago a quorum last followed it (check-quorum's view); 0 elsewhere, on a one-voter cluster and on a quiesced leader | `last_quorum_acked` |
//! | `quorate_log_io_stalled_seconds` | gauge | `node_id`, (`group`) | how long the log store has flushed nothing while writes wait; 0 while it flushes | `log_io_stalled_since` |
//! | `quorate_log_io_stalled` | gauge | `node_id`, (`group`) | 1 while the node does not lead or campaign because its log store stalled | `log_io_stalled` |
//! | `quorate_commit_stalled_seconds` | gauge | `node_id`, (`group`) | on a leader, how long `committed` has not advanced while it has newer entries; 0 otherwise | `commit_stalled_since` |
//! | `quorate_apply_stalled_seconds` | gauge | `node_id`, (`group`) | how long the state machine has applied nothing while committed entries wait; 0 otherwise | `apply_stalled_since` |
//! | `quorate_write_queue_length` | gauge | `node_id`, (`group`) | client writes queued for the Raft task, not yet proposed | `queues.write_queue` |
//! | `quorate_pending_writes` | gauge | `node_id`, (`group`) | client writes proposed and not yet answered | `queues.pending_writes` |
//! | `quorate_pending_reads` | gauge | `node_id`, (`group`) | linearizable reads waiting for a quorum to confirm the leader | `queues.pending_reads` |
//! | `quorate_elections_started_total` | counter | `node_id`, (`group`) | elections this node started (pre-votes not counted) | `elections_started` |
//! | `quorate_leader_changes_total` | counter | `node_id`, (`group`) | times this node learned of a new leader | `leader_changes` |
//! | `quorate_replication_matched_index` | gauge | `node_id`, (`group`), `target` | on a leader, the last entry the follower holds durably | `replication` |
//! | `quorate_replication_lag_entries` | gauge | `node_id`, (`group`), `target` | on a leader, entries of its log the follower lacks | `replication_lag` |
//! | `quorate_replication_stalled_seconds` | gauge | `node_id`, (`group`), `target` | on a leader, how long the follower's matched entry has not advanced while it lags; 0 while it moves | `replication_stalled_since` |
//! | `quorate_replication_in_flight_requests` | gauge | `node_id`, (`group`), `target` | on a leader, AppendEntries sent to the follower and not yet answered | `queues.in_flight` |
//! | `quorate_replication_in_flight_bytes` | gauge | `node_id`, (`group`), `target` | on a leader, bytes of entries in those requests | `queues.in_flight` |
//! | `quorate_file_store_fsync_duration_seconds` | histogram | `node_id` | how long each group commit's `fdatasync` took ([`file_store_observer`]) | `SyncedBatch::sync` |
//! | `quorate_file_store_batch_entries` | histogram | `node_id` | entries per group commit | `SyncedBatch::entries` |
//! | `quorate_file_store_batch_bytes` | histogram | `node_id` | bytes written per group commit | `SyncedBatch::bytes` |
//!
//! # When values change, and series that end
//!
//! [`publish`] records every `every` (durations such as `*_stalled_seconds` grow while
//! nothing else changes, so they are recomputed each time), and records a stopped node at its
//! first tick after the stop.
//! The `target` series exist on a leader only. When a follower leaves, or the node stops
//! leading, its series are set to 0 once and then no longer recorded; likewise a `leader`
//! label that is no longer the leader. The `metrics` facade cannot delete a series: give the
//! exporter an idle timeout for gauges longer than `every` (with Prometheus,
//! `PrometheusBuilder::idle_timeout(MetricKindMask::GAUGE, ..)`), and those series disappear.
//!
//! # One node, many groups
//!
//! A node of a [`GroupHost`](crate::multi::GroupHost) runs one [`publish_group`] per group; a
//! group's task ends when the group stops (or is removed), and its series then expire like
//! any other. Each group costs the node 23 series (22, and 1 `quorate_leader` while it knows
//! a leader), and 5 more per follower of each group it leads: about 26 per group for groups
//! of three members led evenly by three nodes. 1,000 groups are some 26,000 series per node,
//! and 10,000 groups some 260,000: every scrape renders them all, and the monitoring system
//! stores them all, for every node of the cluster. The recording itself is cheap (a task and
//! a timer per group, a few dozen atomic stores per `every`); the series are what costs.
//!
//! So publish per group when a node runs tens or a few hundreds of groups, or for a while to
//! find out which group misbehaves. For thousands of groups, export aggregates over the
//! groups instead (how many the node leads, how many know no leader, the largest lag or stall
//! over them), and read one group's [`RaftMetrics`] when an aggregate says to look; a
//! [`Publisher::for_group`] that records only the groups that stall keeps these names for
//! those few.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

use ::metrics::{Counter, Gauge, Label, Unit, counter, describe_counter, describe_gauge, gauge};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::RaftMetrics;
use crate::RaftTypeConfig;
use crate::engine::ServerState;
use crate::multi::GroupId;

/// The metric names and label keys [`Publisher`] and [`file_store_observer`] record (see the
/// [module docs](super::export#names) for the convention and what each one means).
pub mod names {
    /// Label: the node that reports the series.
    pub const NODE_ID: &str = "node_id";
    /// Label: the group a series is about, on a node of many groups ([`Publisher::for_group`]).
    ///
    /// [`Publisher::for_group`]: super::Publisher::for_group
    pub const GROUP: &str = "group";
    /// Label: the follower a per-follower series is about.
    pub const TARGET: &str = "target";
    /// Label of [`LEADER`]: the leader the node knows of.
    pub const LEADER_LABEL: &str = "leader";
    /// Label of [`SERVER_STATE`]: `learner`, `follower`, `candidate`, `leader` or `shutdown`.
    pub const STATE: &str = "state";

    /// 1 for the role the node plays, 0 for the others.
    pub const SERVER_STATE: &str = "quorate_server_state";
    /// The current term.
    pub const TERM: &str = "quorate_term";
    /// 1 for the leader the node knows of.
    pub const LEADER: &str = "quorate_leader";
    /// 1 while the node knows a leader.
    pub const LEADER_KNOWN: &str = "quorate_leader_known";
    /// The last log index (-1: none).
    pub const LAST_LOG_INDEX: &str = "quorate_last_log_index";
    /// The committed index (-1: none).
    pub const COMMITTED_INDEX: &str = "quorate_committed_index";
    /// The applied index (-1: none).
    pub const APPLIED_INDEX: &str = "quorate_applied_index";
    /// The purged index (-1: none).
    pub const PURGED_INDEX: &str = "quorate_purged_index";
    /// The last index of the latest snapshot (-1: none).
    pub const SNAPSHOT_INDEX: &str = "quorate_snapshot_index";
    /// On a leader, seconds since a quorum last followed it.
    pub const QUORUM_ACK_AGE_SECONDS: &str = "quorate_quorum_ack_age_seconds";
    /// Seconds the log store has flushed nothing while writes wait.
    pub const LOG_IO_STALLED_SECONDS: &str = "quorate_log_io_stalled_seconds";
    /// 1 while the node refuses to lead or campaign because its log store stalled.
    pub const LOG_IO_STALLED: &str = "quorate_log_io_stalled";
    /// On a leader, seconds the commit index has not advanced while it has newer entries.
    pub const COMMIT_STALLED_SECONDS: &str = "quorate_commit_stalled_seconds";
    /// Seconds the state machine has applied nothing while committed entries wait.
    pub const APPLY_STALLED_SECONDS: &str = "quorate_apply_stalled_seconds";
    /// Client writes queued, not yet proposed.
    pub const WRITE_QUEUE_LENGTH: &str = "quorate_write_queue_length";
    /// Client writes proposed, not yet answered.
    pub const PENDING_WRITES: &str = "quorate_pending_writes";
    /// Linearizable reads waiting for a quorum.
    pub const PENDING_READS: &str = "quorate_pending_reads";
    /// Elections started.
    pub const ELECTIONS_STARTED_TOTAL: &str = "quorate_elections_started_total";
    /// New leaders learned of.
    pub const LEADER_CHANGES_TOTAL: &str = "quorate_leader_changes_total";
    /// On a leader, per follower: its matched index (-1: none).
    pub const REPLICATION_MATCHED_INDEX: &str = "quorate_replication_matched_index";
    /// On a leader, per follower: entries it lacks.
    pub const REPLICATION_LAG_ENTRIES: &str = "quorate_replication_lag_entries";
    /// On a leader, per follower: seconds its matched index has not advanced while it lags.
    pub const REPLICATION_STALLED_SECONDS: &str = "quorate_replication_stalled_seconds";
    /// On a leader, per follower: requests in flight.
    pub const REPLICATION_IN_FLIGHT_REQUESTS: &str = "quorate_replication_in_flight_requests";
    /// On a leader, per follower: bytes in flight.
    pub const REPLICATION_IN_FLIGHT_BYTES: &str = "quorate_replication_in_flight_bytes";
    /// Histogram: seconds per `fdatasync` of the file log store.
    pub const FILE_STORE_FSYNC_DURATION_SECONDS: &str = "quorate_file_store_fsync_duration_seconds";
    /// Histogram: entries per group commit of the file log store.
    pub const FILE_STORE_BATCH_ENTRIES: &str = "quorate_file_store_batch_entries";
    /// Histogram: bytes per group commit of the file log store.
    pub const FILE_STORE_BATCH_BYTES: &str = "quorate_file_store_batch_bytes";
}

/// Register the unit and help text of every metric with the installed recorder (an exporter
/// shows them, e.g. as Prometheus' `# HELP` lines). Call it once, after installing the
/// recorder; recording works without it.
pub fn describe() {
    use names::*;
    let gauges: &[(&'static str, Unit, &'static str)] = &[
        (SERVER_STATE, Unit::Count, "1 for the role the node plays (label state), 0 for the others"),
        (TERM, Unit::Count, "The node's current term"),
        (LEADER, Unit::Count, "1 for the leader this node knows of (label leader), 0 for one it knew before"),
        (LEADER_KNOWN, Unit::Count, "1 while this node knows a leader"),
        (LAST_LOG_INDEX, Unit::Count, "Index of the last log entry (-1: empty log)"),
        (COMMITTED_INDEX, Unit::Count, "Index of the last entry known committed (-1: none)"),
        (APPLIED_INDEX, Unit::Count, "Index of the last entry applied to the state machine (-1: none)"),
        (PURGED_INDEX, Unit::Count, "Index of the last purged entry (-1: none)"),
        (SNAPSHOT_INDEX, Unit::Count, "Index of the last entry the latest snapshot covers (-1: none)"),
        (QUORUM_ACK_AGE_SECONDS, Unit::Seconds, "On a leader, seconds since a quorum last followed it"),
        (LOG_IO_STALLED_SECONDS, Unit::Seconds, "Seconds the log store has flushed nothing while writes wait"),
        (LOG_IO_STALLED, Unit::Count, "1 while the node does not lead or campaign because its log store stalled"),
        (
            COMMIT_STALLED_SECONDS,
            Unit::Seconds,
            "On a leader, seconds the commit index has not advanced while it has newer entries",
        ),
        (
            APPLY_STALLED_SECONDS,
            Unit::Seconds,
            "Seconds the state machine has applied nothing while committed entries wait",
        ),
        (WRITE_QUEUE_LENGTH, Unit::Count, "Client writes queued for the Raft task, not yet proposed"),
        (PENDING_WRITES, Unit::Count, "Client writes proposed and not yet answered"),
        (PENDING_READS, Unit::Count, "Linearizable reads waiting for a quorum to confirm the leader"),
        (
            REPLICATION_MATCHED_INDEX,
            Unit::Count,
            "On a leader, the last entry the follower (label target) holds durably (-1: none)",
        ),
        (REPLICATION_LAG_ENTRIES, Unit::Count, "On a leader, entries of its log the follower (label target) lacks"),
        (
            REPLICATION_STALLED_SECONDS,
            Unit::Seconds,
            "On a leader, seconds the follower's (label target) matched entry has not advanced while it lags",
        ),
        (
            REPLICATION_IN_FLIGHT_REQUESTS,
            Unit::Count,
            "On a leader, AppendEntries sent to the follower (label target), not yet answered",
        ),
        (
            REPLICATION_IN_FLIGHT_BYTES,
            Unit::Bytes,
            "On a leader, bytes of entries in flight to the follower (label target)",
        ),
    ];
    for &(name, unit, help) in gauges {
        describe_gauge!(name, unit, help);
    }
    describe_counter!(ELECTIONS_STARTED_TOTAL, Unit::Count, "Elections this node started (pre-votes not counted)");
    describe_counter!(LEADER_CHANGES_TOTAL, Unit::Count, "Times this node learned of a new leader");
    #[cfg(feature = "file-store")]
    {
        use ::metrics::describe_histogram;
        describe_histogram!(
            FILE_STORE_FSYNC_DURATION_SECONDS,
            Unit::Seconds,
            "Seconds per fdatasync of a group commit"
        );
        describe_histogram!(FILE_STORE_BATCH_ENTRIES, Unit::Count, "Log entries per group commit");
        describe_histogram!(FILE_STORE_BATCH_BYTES, Unit::Bytes, "Bytes written per group commit");
    }
}

/// Record `metrics` every `every` through the recorder installed when it starts; at the first
/// tick after the node stops, record that and return. It wakes only on its timer, never on a
/// change of the metrics. Spawn it next to the node:
/// `tokio::spawn(publish(raft.metrics(), Duration::from_secs(1)))`.
///
/// `every` is how stale a scrape may be; a zero `every` is taken as one millisecond.
pub async fn publish<C: RaftTypeConfig>(metrics: watch::Receiver<RaftMetrics<C>>, every: Duration) {
    let publisher = Publisher::new(metrics.borrow().id);
    run(publisher, metrics, every).await;
}

/// [`publish`] for group `group` of a [`GroupHost`](crate::multi::GroupHost): every series
/// also has the label `group`, so that the groups of one node do not overwrite each other's.
/// Spawn one per group, next to
/// [`create_group`](crate::multi::GroupHost::create_group):
/// `tokio::spawn(publish_group(raft.metrics(), Duration::from_secs(1), group))`.
///
/// It costs a node 23 series per group, and 5 more per follower of each group it leads: read
/// [the cost of per-group series](super::export#one-node-many-groups) before running it for
/// thousands of groups.
pub async fn publish_group<C: RaftTypeConfig>(
    metrics: watch::Receiver<RaftMetrics<C>>,
    every: Duration,
    group: GroupId,
) {
    let publisher = Publisher::for_group(metrics.borrow().id, group);
    run(publisher, metrics, every).await;
}

/// The loop of [`publish`] and [`publish_group`].
async fn run<C: RaftTypeConfig>(
    mut publisher: Publisher<C>,
    mut metrics: watch::Receiver<RaftMetrics<C>>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // Only the tick: waiting on the metrics as well would wake this task on every change of
        // them, several times per write on a busy node, to record nothing until the next tick.
        tick.tick().await;
        let stopped = {
            let m = metrics.borrow_and_update();
            publisher.record(&m);
            m.state == ServerState::Shutdown
        };
        if stopped || metrics.has_changed().is_err() {
            return;
        }
    }
}

/// Records one node's [`RaftMetrics`] into the `metrics` facade, under the names of the
/// [module docs](super::export#names). [`publish`] runs one on a timer; use it directly to
/// record at moments of your own choosing.
///
/// It registers its series with the recorder installed when it is created (and when a new
/// follower or leader first appears), and reuses them: install the recorder first.
pub struct Publisher<C: RaftTypeConfig> {
    owner: Owner,
    node: NodeSeries,
    /// The leader last recorded as known, and its `quorate_leader` series.
    leader: Option<(C::NodeId, Gauge)>,
    targets: BTreeMap<C::NodeId, TargetSeries>,
}

/// The labels every series of a [`Publisher`] starts with: `node_id`, then `group` for a group
/// of a [`GroupHost`](crate::multi::GroupHost). Series with one more label (`state`, `leader`,
/// `target`) put it after these.
struct Owner(Vec<Label>);

impl Owner {
    fn labels(&self) -> Vec<Label> {
        self.0.clone()
    }

    /// The owner's labels and `key`.
    fn and(&self, key: &'static str, value: String) -> Vec<Label> {
        let mut labels = self.labels();
        labels.push(Label::new(key, value));
        labels
    }
}

/// The series of one node (of one group of it, on a node of many groups).
struct NodeSeries {
    /// `quorate_server_state`, by [`STATES`].
    state: [Gauge; 5],
    term: Gauge,
    leader_known: Gauge,
    last_log_index: Gauge,
    committed_index: Gauge,
    applied_index: Gauge,
    purged_index: Gauge,
    snapshot_index: Gauge,
    quorum_ack_age: Gauge,
    log_io_stalled_seconds: Gauge,
    log_io_stalled: Gauge,
    commit_stalled_seconds: Gauge,
    apply_stalled_seconds: Gauge,
    write_queue: Gauge,
    pending_writes: Gauge,
    pending_reads: Gauge,
    elections_started: Counter,
    leader_changes: Counter,
}

/// The series a leader keeps about one follower.
struct TargetSeries {
    matched_index: Gauge,
    lag: Gauge,
    stalled_seconds: Gauge,
    in_flight_requests: Gauge,
    in_flight_bytes: Gauge,
}

/// The values of the `state` label, in the order of [`NodeSeries::state`].
const STATES: [(ServerState, &str); 5] = [
    (ServerState::Learner, "learner"),
    (ServerState::Follower, "follower"),
    (ServerState::Candidate, "candidate"),
    (ServerState::Leader, "leader"),
    (ServerState::Shutdown, "shutdown"),
];

impl NodeSeries {
    fn register(owner: &Owner) -> Self {
        use names::*;
        let g = |name: &'static str| gauge!(name, owner.labels());
        Self {
            state: STATES.map(|(_, s)| gauge!(SERVER_STATE, owner.and(STATE, s.to_string()))),
            term: g(TERM),
            leader_known: g(LEADER_KNOWN),
            last_log_index: g(LAST_LOG_INDEX),
            committed_index: g(COMMITTED_INDEX),
            applied_index: g(APPLIED_INDEX),
            purged_index: g(PURGED_INDEX),
            snapshot_index: g(SNAPSHOT_INDEX),
            quorum_ack_age: g(QUORUM_ACK_AGE_SECONDS),
            log_io_stalled_seconds: g(LOG_IO_STALLED_SECONDS),
            log_io_stalled: g(LOG_IO_STALLED),
            commit_stalled_seconds: g(COMMIT_STALLED_SECONDS),
            apply_stalled_seconds: g(APPLY_STALLED_SECONDS),
            write_queue: g(WRITE_QUEUE_LENGTH),
            pending_writes: g(PENDING_WRITES),
            pending_reads: g(PENDING_READS),
            elections_started: counter!(ELECTIONS_STARTED_TOTAL, owner.labels()),
            leader_changes: counter!(LEADER_CHANGES_TOTAL, owner.labels()),
        }
    }
}

impl TargetSeries {
    fn register(owner: &Owner, target: &impl Display) -> Self {
        use names::*;
        let g = |name: &'static str| gauge!(name, owner.and(TARGET, target.to_string()));
        Self {
            matched_index: g(REPLICATION_MATCHED_INDEX),
            lag: g(REPLICATION_LAG_ENTRIES),
            stalled_seconds: g(REPLICATION_STALLED_SECONDS),
            in_flight_requests: g(REPLICATION_IN_FLIGHT_REQUESTS),
            in_flight_bytes: g(REPLICATION_IN_FLIGHT_BYTES),
        }
    }

    /// What a follower that is no longer replicated to reports until its series expire.
    fn zero(&self) {
        for g in
            [&self.matched_index, &self.lag, &self.stalled_seconds, &self.in_flight_requests, &self.in_flight_bytes]
        {
            g.set(0.0);
        }
    }
}

/// A log index as a gauge value: -1 for none.
fn index(i: Option<u64>) -> f64 {
    i.map_or(-1.0, |i| i as f64)
}

/// How long ago `since` was, in seconds; 0 if it is `None`.
fn seconds_since(now: Instant, since: Option<Instant>) -> f64 {
    since.map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64())
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

impl<C: RaftTypeConfig> Publisher<C> {
    /// A publisher for node `node_id`, its series registered with the current recorder.
    pub fn new(node_id: C::NodeId) -> Self {
        Self::with_owner(Owner(vec![Label::new(names::NODE_ID, node_id.to_string())]))
    }

    /// A publisher for group `group` on node `node_id` (a group of a
    /// [`GroupHost`](crate::multi::GroupHost)): its series are [`new`](Self::new)'s with the
    /// label `group` after `node_id`. One per group of the node; see
    /// [the cost](super::export#one-node-many-groups).
    pub fn for_group(node_id: C::NodeId, group: GroupId) -> Self {
        let node_id = Label::new(names::NODE_ID, node_id.to_string());
        Self::with_owner(Owner(vec![node_id, Label::new(names::GROUP, group.to_string())]))
    }

    fn with_owner(owner: Owner) -> Self {
        Self { node: NodeSeries::register(&owner), owner, leader: None, targets: BTreeMap::new() }
    }

    /// Record `m` as it is now: durations are measured from now.
    pub fn record(&mut self, m: &RaftMetrics<C>) {
        let now = Instant::now();
        let n = &self.node;
        for ((state, _), g) in STATES.iter().zip(&n.state) {
            g.set(flag(m.state == *state));
        }
        n.term.set(m.current_term as f64);
        n.leader_known.set(flag(m.current_leader.is_some()));
        n.last_log_index.set(index(m.last_log_index));
        n.committed_index.set(index(m.committed.map(|l| l.index)));
        n.applied_index.set(index(m.last_applied.map(|l| l.index)));
        n.purged_index.set(index(m.purged.map(|l| l.index)));
        n.snapshot_index.set(index(m.snapshot.map(|l| l.index)));
        n.quorum_ack_age.set(seconds_since(now, m.last_quorum_acked));
        n.log_io_stalled_seconds.set(seconds_since(now, m.log_io_stalled_since));
        n.log_io_stalled.set(flag(m.log_io_stalled));
        n.commit_stalled_seconds.set(seconds_since(now, m.commit_stalled_since));
        n.apply_stalled_seconds.set(seconds_since(now, m.apply_stalled_since));
        n.write_queue.set(m.queues.write_queue as f64);
        n.pending_writes.set(m.queues.pending_writes as f64);
        n.pending_reads.set(m.queues.pending_reads as f64);
        n.elections_started.absolute(m.elections_started);
        n.leader_changes.absolute(m.leader_changes);
        self.record_leader(m.current_leader);
        self.record_targets(m, now);
    }

    fn record_leader(&mut self, leader: Option<C::NodeId>) {
        if self.leader.as_ref().map(|(id, _)| *id) != leader {
            if let Some((_, old)) = self.leader.take() {
                old.set(0.0);
            }
            self.leader =
                leader.map(|id| (id, gauge!(names::LEADER, self.owner.and(names::LEADER_LABEL, id.to_string()))));
        }
        if let Some((_, g)) = &self.leader {
            g.set(1.0);
        }
    }

    fn record_targets(&mut self, m: &RaftMetrics<C>, now: Instant) {
        let empty = BTreeMap::new();
        let matched = m.replication.as_ref().unwrap_or(&empty);
        self.targets.retain(|target, series| {
            let keep = matched.contains_key(target);
            if !keep {
                series.zero();
            }
            keep
        });
        for (target, matched) in matched {
            let owner = &self.owner;
            let series = self.targets.entry(*target).or_insert_with(|| TargetSeries::register(owner, target));
            let lag = m.replication_lag.as_ref().and_then(|l| l.get(target)).copied().unwrap_or(0);
            let (requests, bytes) = m.queues.in_flight.get(target).copied().unwrap_or((0, 0));
            series.matched_index.set(index(matched.map(|l| l.index)));
            series.lag.set(lag as f64);
            series.stalled_seconds.set(seconds_since(now, m.replication_stalled_since.get(target).copied()));
            series.in_flight_requests.set(requests as f64);
            series.in_flight_bytes.set(bytes as f64);
        }
    }
}

/// A [`SyncObserver`](crate::file_store::SyncObserver) for
/// [`FileStoreOptions::on_sync`](crate::file_store::FileStoreOptions::on_sync) that records
/// every group commit of node `node_id`'s log store as histograms:
/// `quorate_file_store_fsync_duration_seconds`, `quorate_file_store_batch_entries` and
/// `quorate_file_store_batch_bytes`. Its series are registered with the recorder installed
/// when it is called.
///
/// Prometheus renders a histogram as buckets only if the exporter is given bucket bounds for
/// it (otherwise as a summary); fsync latencies span ~50 µs (a disk cache) to seconds.
#[cfg(feature = "file-store")]
pub fn file_store_observer(node_id: impl Display) -> crate::file_store::SyncObserver {
    use ::metrics::histogram;
    let node_id = node_id.to_string();
    let fsync = histogram!(names::FILE_STORE_FSYNC_DURATION_SECONDS, names::NODE_ID => node_id.clone());
    let entries = histogram!(names::FILE_STORE_BATCH_ENTRIES, names::NODE_ID => node_id.clone());
    let bytes = histogram!(names::FILE_STORE_BATCH_BYTES, names::NODE_ID => node_id);
    crate::file_store::SyncObserver::new(move |batch| {
        fsync.record(batch.sync.as_secs_f64());
        entries.record(batch.entries as f64);
        bytes.record(batch.bytes as f64);
    })
}

#[cfg(test)]
mod tests;
