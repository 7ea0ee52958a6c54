//! [`Config`]: the tunables of a Raft node, with documented defaults and [`Config::validate`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a node builds a snapshot of its state machine on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotPolicy {
    /// Build one once this many entries were applied since the last snapshot.
    LogsSinceLast(u64),
    /// Never build one on its own; only [`Trigger::snapshot`](crate::Trigger::snapshot) does.
    Never,
}

/// Why a [`Config`] is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `election_timeout_min` must be less than `election_timeout_max`.
    #[error("election_timeout_min ({min:?}) must be less than election_timeout_max ({max:?})")]
    ElectionTimeoutRange {
        /// The configured minimum.
        min: Duration,
        /// The configured maximum.
        max: Duration,
    },
    /// Heartbeats must come well within the election timeout, or followers start elections
    /// against a healthy leader.
    #[error("heartbeat_interval ({heartbeat:?}) must be less than election_timeout_min ({min:?})")]
    HeartbeatTooSlow {
        /// The configured heartbeat interval.
        heartbeat: Duration,
        /// The configured minimum election timeout.
        min: Duration,
    },
    /// The clock drift bound leaves no leader lease.
    #[error("max_clock_drift ({drift:?}) must be less than election_timeout_min ({min:?})")]
    DriftTooLarge {
        /// The configured drift bound.
        drift: Duration,
        /// The configured minimum election timeout.
        min: Duration,
    },
    /// A leader would step down for a log I/O pause shorter than an election.
    #[error("max_log_io_stall ({stall:?}) must be greater than election_timeout_max ({max:?})")]
    IoStallTooShort {
        /// The configured stall bound.
        stall: Duration,
        /// The configured maximum election timeout.
        max: Duration,
    },
    /// A count or size bound was zero.
    #[error("{0} must be greater than 0")]
    Zero(&'static str),
}

/// Runtime configuration of a Raft node.
///
/// Every field has a default suited to a LAN cluster; call [`Config::validate`] after changing
/// one (the [`Raft::new`](crate::Raft::new) constructor does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// A name for the cluster, shown in tracing spans. Default: `"quorate"`.
    pub cluster_name: String,

    /// How often a leader sends a heartbeat to an idle follower. Default: 50 ms.
    ///
    /// It is also how long a replication stream first waits after a network error or
    /// timeout before it retries (the wait doubles on each failure in a row, up to half of
    /// `election_timeout_min` or this interval, whichever is longer). Must be greater than 0
    /// (at 0 a stream to an unreachable follower would retry in a busy loop) and less than
    /// `election_timeout_min`.
    pub heartbeat_interval: Duration,

    /// The lower bound of the randomized election timeout. Default: 150 ms.
    ///
    /// A follower that hears nothing from a leader for a timeout drawn from
    /// `[election_timeout_min, election_timeout_max)` starts an election (Raft §5.2).
    pub election_timeout_min: Duration,

    /// The upper bound (exclusive) of the randomized election timeout. Default: 300 ms.
    pub election_timeout_max: Duration,

    /// The most entries in one AppendEntries request. Default: 300.
    pub max_payload_entries: u64,

    /// The most AppendEntries requests in flight to one follower in pipeline mode: sent, not
    /// yet acknowledged. Bounds the memory a slow follower costs the leader. Default: 64.
    pub max_in_flight_requests: u64,

    /// The most client writes the leader takes into one log append. Writes queued while the
    /// previous append was being handed to storage are drained together. Default: 4096.
    pub max_append_batch: u64,

    /// The most requests queued for the Raft task, per kind (client writes; RPCs; other API
    /// calls). Beyond it, [`Raft::client_write`](crate::Raft::client_write) waits for room and
    /// [`Raft::try_client_write`](crate::Raft::try_client_write) fails with `Overloaded`.
    /// Default: 4096.
    pub max_pending_requests: u64,

    /// The most client writes proposed by the leader and not yet answered (not yet committed
    /// and applied). Beyond it the leader takes no more writes from the queue, so a slow
    /// follower majority, disk or state machine slows clients down instead of growing memory.
    /// Default: 65536.
    pub max_pending_writes: u64,

    /// The most bytes of entries in one AppendEntries request, as counted by
    /// [`Entry::approx_size`](crate::Entry::approx_size) (the request's
    /// [`PayloadSize`](crate::PayloadSize)). A request exceeds it only when one entry alone
    /// does: it holds at least one entry. Default: 4 MiB.
    pub max_payload_bytes: u64,

    /// The most bytes of entries in flight to one follower (sent, not acknowledged), so a slow
    /// or hung follower costs bounded memory. Default: 64 MiB.
    pub max_in_flight_bytes: u64,

    /// How long the leader's log store may make no progress (nothing flushed while log writes
    /// wait to be flushed) before the leader steps down, so that a node with a healthy disk
    /// takes over. Default: 2 s.
    ///
    /// Must be greater than `election_timeout_max`: a shorter stall is not worth an election,
    /// which takes about that long. A leader that stepped down for a stall then does not
    /// campaign, not even when asked to by a leadership transfer or
    /// [`Trigger::elect`](crate::Trigger::elect), until its log store reports a flush again;
    /// its metrics show `log_io_stalled` meanwhile. Only a leader watches for stalls: a
    /// follower whose store stalls simply stops acknowledging entries.
    pub max_log_io_stall: Duration,

    /// Pre-vote (Raft dissertation §9.6): before raising its term, a candidate asks whether it
    /// could win, so a node that was partitioned away does not disturb the cluster when it
    /// returns. Default: on.
    pub enable_pre_vote: bool,

    /// Check-quorum and leader stickiness (dissertation §6.2, §9.6): a leader that has not
    /// heard from a quorum for `election_timeout_max` steps down, and a node that heard from a
    /// leader within `election_timeout_min` (or restarted within it) refuses votes, unless
    /// asked by a leadership transfer or a leader standing again. Default: on.
    ///
    /// Required for lease reads: with it off, [`ReadPolicy::LeaseRead`] never uses a lease and
    /// silently behaves as `ReadIndex` (a quorum round trip per read). And with it off, a
    /// leader cut off from its quorum never steps down on its own: reads and writes sent to it
    /// wait, at least until it hears of a newer term.
    ///
    /// [`ReadPolicy::LeaseRead`]: crate::ReadPolicy::LeaseRead
    pub enable_check_quorum: bool,

    /// The bound on how far any two nodes' clocks drift apart over `election_timeout_min`,
    /// subtracted from the leader lease: a lease read is served only while
    /// `election_timeout_min - max_clock_drift` has not passed since the send time of requests
    /// a quorum answered. See [`ReadPolicy::LeaseRead`](crate::ReadPolicy::LeaseRead) for every
    /// assumption a lease makes. Default: 20 ms.
    pub max_clock_drift: Duration,

    /// How long the leader, or a candidate, waits on a peer. Default: 1 s.
    ///
    /// It bounds each of these, passed to the network as [`RPCOption::timeout`] and enforced
    /// by quorate too:
    /// - a vote or pre-vote request;
    /// - a probe (an AppendEntries outside a stream);
    /// - the call that opens a pipelined stream ([`RaftNetwork::stream_append`]);
    /// - a stream's wait for answers: while requests are unanswered, the next `Success` is due
    ///   within it of the last `Success`, or of the first request sent while nothing was in
    ///   flight;
    /// - the message that ends a leadership transfer (TimeoutNow);
    /// - each snapshot chunk; for the last one, that includes the follower's
    ///   [`install_snapshot`](crate::RaftStateMachine::install_snapshot) and the applies queued
    ///   before it, since the follower answers only once the snapshot is installed.
    ///
    /// A call that runs past it counts as failed: a replication stream backs off and retries,
    /// a vote counts as not granted.
    ///
    /// [`RPCOption::timeout`]: crate::network::RPCOption::timeout
    /// [`RaftNetwork::stream_append`]: crate::RaftNetwork::stream_append
    pub rpc_timeout: Duration,

    /// When to build a snapshot. Default: after 5000 entries applied since the last one.
    pub snapshot_policy: SnapshotPolicy,

    /// How many entries to keep in the log behind the last snapshot when purging, so that a
    /// follower slightly behind still gets entries instead of a whole snapshot. Default: 1000.
    pub max_in_snapshot_log_to_keep: u64,

    /// The size of one snapshot chunk sent to a follower, in bytes. The leader holds one
    /// chunk per follower at a time, so memory does not grow with the snapshot. Default: 1 MiB.
    pub snapshot_max_chunk_size: u64,

    /// Seed of the Engine's pseudo-random election timeouts, mixed with the node id so nodes
    /// draw different timeouts. `None` (the default) uses the node id alone: a run is
    /// reproducible either way; a simulator varies the seed to explore other timings.
    pub election_seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster_name: "quorate".to_string(),
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            max_payload_entries: 300,
            max_in_flight_requests: 64,
            max_append_batch: 4096,
            max_pending_requests: 4096,
            max_pending_writes: 65536,
            max_payload_bytes: 4 * 1024 * 1024,
            max_in_flight_bytes: 64 * 1024 * 1024,
            max_log_io_stall: Duration::from_secs(2),
            rpc_timeout: Duration::from_secs(1),
            enable_pre_vote: true,
            enable_check_quorum: true,
            max_clock_drift: Duration::from_millis(20),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(5000),
            max_in_snapshot_log_to_keep: 1000,
            snapshot_max_chunk_size: 1024 * 1024,
            election_seed: None,
        }
    }
}

impl Config {
    /// Check that the values fit together.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first field that is out of range.
    pub fn validate(self) -> Result<Self, ConfigError> {
        if self.election_timeout_min >= self.election_timeout_max {
            return Err(ConfigError::ElectionTimeoutRange {
                min: self.election_timeout_min,
                max: self.election_timeout_max,
            });
        }
        if self.heartbeat_interval >= self.election_timeout_min {
            return Err(ConfigError::HeartbeatTooSlow {
                heartbeat: self.heartbeat_interval,
                min: self.election_timeout_min,
            });
        }
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::Zero("heartbeat_interval"));
        }
        if self.max_clock_drift >= self.election_timeout_min {
            return Err(ConfigError::DriftTooLarge { drift: self.max_clock_drift, min: self.election_timeout_min });
        }
        let counts = [
            ("max_payload_entries", self.max_payload_entries),
            ("max_in_flight_requests", self.max_in_flight_requests),
            ("max_append_batch", self.max_append_batch),
            ("max_pending_requests", self.max_pending_requests),
            ("max_pending_writes", self.max_pending_writes),
            ("max_payload_bytes", self.max_payload_bytes),
            ("max_in_flight_bytes", self.max_in_flight_bytes),
            ("snapshot_max_chunk_size", self.snapshot_max_chunk_size),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        if self.snapshot_policy == SnapshotPolicy::LogsSinceLast(0) {
            return Err(ConfigError::Zero("snapshot_policy"));
        }
        if self.max_log_io_stall <= self.election_timeout_max {
            return Err(ConfigError::IoStallTooShort { stall: self.max_log_io_stall, max: self.election_timeout_max });
        }
        if self.rpc_timeout.is_zero() {
            return Err(ConfigError::Zero("rpc_timeout"));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn validate_rejects_bad_values() {
        let c = Config { election_timeout_min: Duration::from_millis(300), ..Default::default() };
        assert!(matches!(c.validate(), Err(ConfigError::ElectionTimeoutRange { .. })));

        let c = Config { heartbeat_interval: Duration::from_millis(200), ..Default::default() };
        assert!(matches!(c.validate(), Err(ConfigError::HeartbeatTooSlow { .. })));

        let c = Config { max_payload_entries: 0, ..Default::default() };
        assert_eq!(c.validate(), Err(ConfigError::Zero("max_payload_entries")));

        let c = Config { rpc_timeout: Duration::ZERO, ..Default::default() };
        assert_eq!(c.validate(), Err(ConfigError::Zero("rpc_timeout")));
    }

    /// At zero, a failed replication stream's backoff is zero too, and a stream to an
    /// unreachable follower retries in a busy loop.
    #[test]
    fn validate_rejects_a_zero_heartbeat_interval() {
        let c = Config { heartbeat_interval: Duration::ZERO, ..Default::default() };
        assert_eq!(c.validate(), Err(ConfigError::Zero("heartbeat_interval")));
    }
}
