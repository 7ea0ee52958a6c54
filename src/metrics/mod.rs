//! [`RaftMetrics`]: a node's state, published on a watch channel, and [`Wait`] to await
//! conditions on it.
//!
//! With the feature `metrics`, [`export`] publishes them as gauges and counters through the
//! `metrics` facade (and so to Prometheus), under the names its docs list.

#[cfg(feature = "metrics")]
pub mod export;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::RaftTypeConfig;
use crate::core::Stalls;
use crate::engine::{Engine, ServerState};
use crate::error::WaitError;
use crate::types::{DisplayOption, LogId, StoredMembership, Vote};

/// A snapshot of a node's state. Published on a watch channel every time it changes; get the
/// receiver with [`Raft::metrics`](crate::Raft::metrics).
///
/// It serializes (with serde) into a report for operators: every `*_since` instant is written
/// as how long ago it was, in milliseconds, at the moment of serializing, under a name ending
/// in `_for_ms` (`log_io_stalled_for_ms`: the log store has been stuck for that long), and
/// `last_quorum_acked` as `quorum_acked_ms_ago`. Instants have no meaning outside the process,
/// so the report has no `Deserialize`.
#[derive(serde::Serialize)]
#[serde(bound = "")]
pub struct RaftMetrics<C: RaftTypeConfig> {
    /// This node.
    pub id: C::NodeId,
    /// The role it plays now.
    pub state: ServerState,
    /// The current term.
    pub current_term: u64,
    /// The node's vote.
    pub vote: Vote<C>,
    /// The index of the last log entry.
    pub last_log_index: Option<u64>,
    /// The last log entry's id.
    pub last_log_id: Option<LogId<C>>,
    /// The last entry this node knows committed. Not durable unless the log store keeps it
    /// (`RaftLogStorage::save_committed`): after a restart it may start lower, even at `None`,
    /// until the leader tells it again; it never says more than what is committed.
    pub committed: Option<LogId<C>>,
    /// The last entry the state machine applied.
    pub last_applied: Option<LogId<C>>,
    /// The last purged entry.
    pub purged: Option<LogId<C>>,
    /// The last entry covered by the latest snapshot, built or installed.
    pub snapshot: Option<LogId<C>>,
    /// The leader this node knows of (itself, if leader).
    pub current_leader: Option<C::NodeId>,
    /// The effective membership: the last one in the log.
    pub membership_config: Arc<StoredMembership<C>>,
    /// The last committed membership.
    pub committed_membership: Arc<StoredMembership<C>>,
    /// On a leader: every other member's matched log id — the last entry that member
    /// reported durable in its log and matching the leader's (a follower answers an append
    /// only once it is flushed), which is what the leader counts toward commitment.
    pub replication: Option<BTreeMap<C::NodeId, Option<LogId<C>>>>,
    /// On a leader: the latest time a quorum is known to have followed it, as check-quorum
    /// counts it (members that have not answered a new leader yet count from its election, or
    /// from its wake after quiescence). `now - last_quorum_acked` is how stale its leadership
    /// knowledge is. `None` on a quiesced leader (it checks no quorum while its group is idle)
    /// and on a leader that is a quorum by itself.
    #[serde(rename = "quorum_acked_ms_ago", serialize_with = "ago_ms::option")]
    pub last_quorum_acked: Option<Instant>,
    /// On a leader: per other member, how many entries of the leader's log it lacks
    /// (`last_log_index + 1 - (matched index + 1)`).
    pub replication_lag: Option<BTreeMap<C::NodeId, u64>>,
    /// Elections this node started since it started (real ones, each in a new term; pre-vote
    /// rounds not counted).
    pub elections_started: u64,
    /// How many times this node learned of a leader other than the last one it knew, since
    /// it started (the first one included). A count that keeps rising means leadership flaps.
    pub leader_changes: u64,
    /// Whether the group is quiesced here: a leader that sends no heartbeats, or a follower
    /// that runs no election timer, because nothing happens in the group (only in a
    /// [`GroupHost`](crate::multi::GroupHost); see [`multi`](crate::multi)).
    pub quiesced: bool,
    /// Since when the log store has flushed nothing while log writes wait.
    #[serde(rename = "log_io_stalled_for_ms", serialize_with = "ago_ms::option")]
    pub log_io_stalled_since: Option<Instant>,
    /// Whether this node stopped leading or campaigning because its log store stalled.
    pub log_io_stalled: bool,
    /// On a leader: since when `committed` has not advanced while it has newer entries.
    #[serde(rename = "commit_stalled_for_ms", serialize_with = "ago_ms::option")]
    pub commit_stalled_since: Option<Instant>,
    /// Since when the state machine has applied nothing while committed entries wait.
    #[serde(rename = "apply_stalled_for_ms", serialize_with = "ago_ms::option")]
    pub apply_stalled_since: Option<Instant>,
    /// On a leader: per target, since when its matched log id has not advanced while the
    /// leader has newer entries. Targets that are caught up or moving are absent.
    #[serde(rename = "replication_stalled_for_ms", serialize_with = "ago_ms::map")]
    pub replication_stalled_since: BTreeMap<C::NodeId, Instant>,
    /// Queue lengths and what is in flight.
    pub queues: Queues<C>,
}

/// Queue lengths and in-flight replication of a node.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
#[serde(bound = "")]
pub struct Queues<C: RaftTypeConfig> {
    /// Client writes queued for the Raft task, not yet proposed.
    pub write_queue: u64,
    /// Client writes proposed by this leader and not yet answered.
    pub pending_writes: u64,
    /// Linearizable reads waiting for a quorum to confirm the leader.
    pub pending_reads: u64,
    /// On a leader: per target, requests and bytes sent and not yet acknowledged.
    pub in_flight: BTreeMap<C::NodeId, (u64, u64)>,
}

impl<C: RaftTypeConfig> Default for Queues<C> {
    fn default() -> Self {
        Self { write_queue: 0, pending_writes: 0, pending_reads: 0, in_flight: BTreeMap::new() }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for Queues<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queues")
            .field("write_queue", &self.write_queue)
            .field("pending_writes", &self.pending_writes)
            .field("pending_reads", &self.pending_reads)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl<C: RaftTypeConfig> RaftMetrics<C> {
    /// The metrics of a node that has not loaded its state yet.
    #[cfg(test)]
    pub(crate) fn new_initial(id: C::NodeId) -> Self {
        Self {
            id,
            state: ServerState::Learner,
            current_term: 0,
            vote: Vote::default(),
            last_log_index: None,
            last_log_id: None,
            committed: None,
            last_applied: None,
            purged: None,
            snapshot: None,
            current_leader: None,
            membership_config: Arc::new(StoredMembership::default()),
            committed_membership: Arc::new(StoredMembership::default()),
            replication: None,
            last_quorum_acked: None,
            replication_lag: None,
            elections_started: 0,
            leader_changes: 0,
            quiesced: false,
            log_io_stalled_since: None,
            log_io_stalled: false,
            commit_stalled_since: None,
            apply_stalled_since: None,
            replication_stalled_since: BTreeMap::new(),
            queues: Queues::default(),
        }
    }

    pub(crate) fn from_engine(
        engine: &Engine<C>,
        now: Instant,
        stalls: Stalls<C>,
        queues: Queues<C>,
        leader_changes: u64,
    ) -> Self {
        let st = &engine.state;
        let next_index = st.last_log_id().map_or(0, |l| l.index + 1);
        let lag = |matched: &Option<LogId<C>>| next_index.saturating_sub(matched.map_or(0, |m| m.index + 1));
        Self {
            id: engine.id(),
            state: st.server_state,
            current_term: st.vote.term,
            vote: st.vote,
            last_log_index: st.last_log_id().map(|l| l.index),
            last_log_id: st.last_log_id(),
            committed: st.committed,
            last_applied: st.applied,
            purged: st.log_ids.purged(),
            snapshot: st.snapshot_last,
            current_leader: st.leader_id,
            membership_config: st.membership.effective.clone(),
            committed_membership: st.membership.committed.clone(),
            replication: engine.leader.as_ref().map(|l| l.progress.iter().map(|(id, m)| (*id, *m)).collect()),
            // A leader that is a quorum by itself has nothing to report here (and would report
            // a new `now` every time); nor has a quiesced one, which hears nothing and checks
            // no quorum (its age would grow for as long as the group is idle, and look like a
            // leader about to step down).
            last_quorum_acked: engine
                .check_quorum_acked_at(now)
                .filter(|_| !engine.leader_quiesced() && !st.membership.effective().is_quorum([engine.id()].iter())),
            replication_lag: engine.leader.as_ref().map(|l| l.progress.iter().map(|(id, m)| (*id, lag(m))).collect()),
            elections_started: engine.elections_started,
            leader_changes,
            quiesced: engine.leader_quiesced() || engine.quiesced_under().is_some(),
            log_io_stalled_since: stalls.log_io,
            log_io_stalled: st.io_stalled,
            commit_stalled_since: stalls.commit,
            apply_stalled_since: stalls.apply,
            replication_stalled_since: stalls.replication,
            queues,
        }
    }
}

impl<C: RaftTypeConfig> Clone for RaftMetrics<C> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            state: self.state,
            current_term: self.current_term,
            vote: self.vote,
            last_log_index: self.last_log_index,
            last_log_id: self.last_log_id,
            committed: self.committed,
            last_applied: self.last_applied,
            purged: self.purged,
            snapshot: self.snapshot,
            current_leader: self.current_leader,
            membership_config: self.membership_config.clone(),
            committed_membership: self.committed_membership.clone(),
            replication: self.replication.clone(),
            last_quorum_acked: self.last_quorum_acked,
            replication_lag: self.replication_lag.clone(),
            elections_started: self.elections_started,
            leader_changes: self.leader_changes,
            quiesced: self.quiesced,
            log_io_stalled_since: self.log_io_stalled_since,
            log_io_stalled: self.log_io_stalled,
            commit_stalled_since: self.commit_stalled_since,
            apply_stalled_since: self.apply_stalled_since,
            replication_stalled_since: self.replication_stalled_since.clone(),
            queues: self.queues.clone(),
        }
    }
}

impl<C: RaftTypeConfig> PartialEq for RaftMetrics<C> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.state == other.state
            && self.vote == other.vote
            && self.last_log_id == other.last_log_id
            && self.committed == other.committed
            && self.last_applied == other.last_applied
            && self.purged == other.purged
            && self.snapshot == other.snapshot
            && self.current_leader == other.current_leader
            && self.membership_config == other.membership_config
            && self.committed_membership == other.committed_membership
            && self.replication == other.replication
            && self.last_quorum_acked == other.last_quorum_acked
            && self.replication_lag == other.replication_lag
            && self.elections_started == other.elections_started
            && self.leader_changes == other.leader_changes
            && self.quiesced == other.quiesced
            && self.log_io_stalled_since == other.log_io_stalled_since
            && self.log_io_stalled == other.log_io_stalled
            && self.commit_stalled_since == other.commit_stalled_since
            && self.apply_stalled_since == other.apply_stalled_since
            && self.replication_stalled_since == other.replication_stalled_since
            && self.queues == other.queues
    }
}

impl<C: RaftTypeConfig> fmt::Debug for RaftMetrics<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<C: RaftTypeConfig> fmt::Display for RaftMetrics<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "N{} {:?} vote={} last={} committed={} applied={} leader={} membership={}",
            self.id,
            self.state,
            self.vote,
            DisplayOption(&self.last_log_id),
            DisplayOption(&self.committed),
            DisplayOption(&self.last_applied),
            DisplayOption(&self.current_leader),
            self.membership_config
        )
    }
}

/// Serializing instants as their age in milliseconds, read when serializing.
mod ago_ms {
    use std::collections::BTreeMap;

    use serde::Serializer;
    use tokio::time::Instant;

    fn age(t: Instant) -> u64 {
        u64::try_from(Instant::now().saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn option<S: Serializer>(t: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_some(&age(*t)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn map<K: serde::Serialize, S: Serializer>(m: &BTreeMap<K, Instant>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, t)| (k, age(*t))))
    }
}

/// Waits for a condition on a node's metrics, with a timeout. Built by
/// [`Raft::wait`](crate::Raft::wait).
///
/// Every method returns the metrics that satisfied the condition, or
/// [`WaitError::Timeout`] naming the condition.
pub struct Wait<C: RaftTypeConfig> {
    pub(crate) timeout: Duration,
    pub(crate) rx: watch::Receiver<RaftMetrics<C>>,
}

impl<C: RaftTypeConfig> Wait<C> {
    /// Wait until `cond` holds; `msg` describes it for the timeout error.
    ///
    /// # Errors
    /// [`WaitError::Timeout`] if it does not hold within the timeout; [`WaitError::Stopped`]
    /// if the node stops first.
    pub async fn metrics(
        &self,
        cond: impl Fn(&RaftMetrics<C>) -> bool,
        msg: impl fmt::Display,
    ) -> Result<RaftMetrics<C>, WaitError> {
        let mut rx = self.rx.clone();
        let waiting = async {
            loop {
                {
                    let m = rx.borrow_and_update();
                    if cond(&m) {
                        return Ok(m.clone());
                    }
                    if m.state == ServerState::Shutdown {
                        return Err(WaitError::Stopped);
                    }
                }
                if rx.changed().await.is_err() {
                    return Err(WaitError::Stopped);
                }
            }
        };
        match tokio::time::timeout(self.timeout, waiting).await {
            Ok(r) => r,
            Err(_) => {
                let latest = self.rx.borrow().clone();
                Err(WaitError::Timeout { timeout: self.timeout, waiting_for: format!("{msg}; latest: {latest}") })
            }
        }
    }

    /// Wait until the node is in `state`.
    ///
    /// # Errors
    /// See [`metrics`](Self::metrics).
    pub async fn state(&self, state: ServerState, msg: impl fmt::Display) -> Result<RaftMetrics<C>, WaitError> {
        self.metrics(|m| m.state == state, format!("state {state:?}: {msg}")).await
    }

    /// Wait until the node knows `leader` as the current leader.
    ///
    /// # Errors
    /// See [`metrics`](Self::metrics).
    pub async fn current_leader(&self, leader: C::NodeId, msg: impl fmt::Display) -> Result<RaftMetrics<C>, WaitError> {
        self.metrics(|m| m.current_leader == Some(leader), format!("leader {leader}: {msg}")).await
    }

    /// Wait until the node has applied at least up to `index`.
    ///
    /// # Errors
    /// See [`metrics`](Self::metrics).
    pub async fn applied_index_at_least(
        &self,
        index: Option<u64>,
        msg: impl fmt::Display,
    ) -> Result<RaftMetrics<C>, WaitError> {
        self.metrics(
            |m| m.last_applied.map(|l| l.index) >= index,
            format!("applied >= {}: {msg}", DisplayOption(&index)),
        )
        .await
    }

    /// Wait until the node's log reaches at least `index`.
    ///
    /// # Errors
    /// See [`metrics`](Self::metrics).
    pub async fn log_index_at_least(
        &self,
        index: Option<u64>,
        msg: impl fmt::Display,
    ) -> Result<RaftMetrics<C>, WaitError> {
        self.metrics(|m| m.last_log_index >= index, format!("last log >= {}: {msg}", DisplayOption(&index))).await
    }
}
