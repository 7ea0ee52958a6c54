//! The cluster benchmark: the same workload on quorate and on openraft.
//!
//! Each library gets the same harness: three voters in one process, an in-memory log store
//! that reports every append durable at once, a state machine that does nothing, and a network
//! that calls straight into the target node's Raft handle without serializing anything. What
//! is left to measure is the libraries themselves: their tasks, channels, batching and
//! replication pipeline.
//!
//! - [`workload`] drives one cluster with N client tasks doing sequential writes and measures
//!   throughput and latency;
//! - [`quorate_cluster`] and [`openraft_cluster`] are the per-library adapters (storage,
//!   network, type config, cluster start-up), each written against its library's public API;
//! - [`tuning`] says how each library is configured: the same settings on both, or each
//!   tuned (openraft as its own benchmark runs it, quorate as it measured best);
//! - [`report`] reduces rounds to medians and prints the markdown tables, and [`chart`] draws
//!   them;
//! - [`hang`] is the gray failure (a follower that takes requests and never answers) and
//!   [`alloc`] the counting allocator that watches the heap while it lasts.
//!
//! The binary `cluster-bench` strings them together; see `benches/README.md`.

use std::fmt;
use std::future::Future;
use std::time::Duration;

pub mod alloc;
pub mod chart;
pub mod hang;
pub mod memory;
pub mod multi;
pub mod openraft_cluster;
pub mod plan;
pub mod quorate_cluster;
pub mod report;
pub mod tuning;
pub mod workload;

pub use tuning::Settings;

/// The empty payload every client writes, and the state machine's empty answer.
///
/// A unit struct rather than `()` because openraft wants `Display` on application data and
/// quorate wants serde; both are free here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Empty;

impl quorate::PayloadSize for Empty {
    fn payload_size(&self) -> usize {
        0
    }
}

impl fmt::Display for Empty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("empty")
    }
}

/// How long each phase of one measurement may take before the bench gives up on it and
/// reports the failure instead of hanging.
#[derive(Debug, Clone, Copy)]
pub struct PhaseTimeouts {
    /// Starting three nodes, initializing the cluster and electing a leader.
    pub startup: Duration,
    /// Running the whole workload.
    pub workload: Duration,
    /// Shutting the three nodes down.
    pub shutdown: Duration,
}

/// The phase of a measurement in which something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `Raft::new` on the three nodes.
    Start,
    /// `Raft::initialize` on node 1.
    Initialize,
    /// Waiting for a leader to be elected.
    Election,
    /// The client writes.
    Workload,
    /// Checking that every acknowledged write is in the leader's log and applied on all nodes.
    Verify,
    /// `Raft::shutdown` on the three nodes.
    Shutdown,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Start => "start",
            Self::Initialize => "initialize",
            Self::Election => "election",
            Self::Workload => "workload",
            Self::Verify => "verify",
            Self::Shutdown => "shutdown",
        };
        f.write_str(name)
    }
}

/// A phase failed: it returned an error or ran out of time. `detail` is the library's own
/// error, rendered, since the two libraries' error types have nothing in common.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseError {
    /// Where it failed.
    pub phase: Phase,
    /// What the library said, or which timeout expired.
    pub detail: String,
}

impl PhaseError {
    /// A failure in `phase`, described by `detail`.
    pub fn new(phase: Phase, detail: impl fmt::Display) -> Self {
        Self { phase, detail: detail.to_string() }
    }
}

impl fmt::Display for PhaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.phase, self.detail)
    }
}

impl std::error::Error for PhaseError {}

/// Run `fut` as `phase`, failing with a [`PhaseError`] if it takes longer than `limit`.
///
/// # Errors
/// The future's own error, or a timeout error naming the phase.
pub async fn within<T>(
    phase: Phase,
    limit: Duration,
    fut: impl Future<Output = Result<T, PhaseError>>,
) -> Result<T, PhaseError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(PhaseError::new(phase, format_args!("timed out after {limit:?}"))),
    }
}

/// What a sampler sees of a running cluster, besides the heap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterProbe {
    /// Entries held by the three in-memory log stores together (the harness's share of the
    /// heap that grows with the log).
    pub log_entries: u64,
    /// The leader's last log index.
    pub leader_last_log: Option<u64>,
    /// The leader's last purged index.
    pub leader_purged: Option<u64>,
    /// The leader's queues, where the library reports them.
    pub queues: Option<LeaderQueues>,
}

/// A leader's queues as quorate's `RaftMetrics::queues` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderQueues {
    /// Client writes queued for the Raft task, not yet proposed.
    pub write_queue: u64,
    /// Client writes proposed and not yet answered.
    pub pending_writes: u64,
    /// Per target: (node id, requests in flight, bytes in flight).
    pub in_flight: Vec<(u64, u64, u64)>,
}

/// One library's three-node cluster, as the harness sees it.
///
/// `start` and `shutdown` run on the server runtime (they spawn the nodes' tasks); the
/// [`Writer`](workload::Writer) is used from the client runtime.
pub trait BenchCluster: Sized {
    /// A cheap handle that proposes writes to the leader.
    type Writer: workload::Writer;

    /// Start three voters configured by `settings`, initialize them as one cluster and wait
    /// until a leader is elected. `limit` bounds each phase.
    fn start(limit: Duration, settings: Settings) -> impl Future<Output = Result<Self, PhaseError>>;

    /// The settings a cluster started with `settings` runs with, read from the library's
    /// `Config` itself (the fields that matter here; the rest are the library's defaults).
    fn describe(settings: Settings) -> String;

    /// A writer that proposes to the current leader.
    fn writer(&self) -> Self::Writer;

    /// Make one follower (the lowest id that is not the leader) take every RPC sent to it and
    /// never answer, from now on (see [`hang::Hang`]). Returns its id.
    ///
    /// # Errors
    /// If the cluster has no follower to hang.
    fn hang_follower(&mut self) -> Result<u64, PhaseError>;

    /// A function that reads the cluster's log sizes and the leader's queues, callable from
    /// any thread while the cluster runs.
    fn prober(&self) -> Box<dyn Fn() -> ClusterProbe + Send>;

    /// Heap bytes one log entry costs in the in-memory log store, measured with the counting
    /// allocator; 0 if no store holds an entry to measure.
    fn log_entry_bytes(&self) -> f64;

    /// Check that the `writes` acknowledged since start-up are in the leader's log, and that
    /// every node but a hung one applies the leader's whole log within `limit`: a fast result
    /// from a cluster that did not replicate would be worthless.
    fn verify(&self, writes: u64, limit: Duration) -> impl Future<Output = Result<(), PhaseError>>;

    /// Stop every node and wait for their tasks to end.
    fn shutdown(self) -> impl Future<Output = Result<(), PhaseError>>;
}
