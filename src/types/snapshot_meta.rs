//! [`SnapshotMeta`]: what a snapshot covers. It travels in
//! [`InstallSnapshotRequest`](crate::InstallSnapshotRequest), so it is a protocol type.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::RaftTypeConfig;
use crate::types::{DisplayOption, LogId, StoredMembership};

/// What a snapshot covers.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SnapshotMeta<C: RaftTypeConfig> {
    /// The last entry the snapshot includes; `None` for a snapshot of the empty state.
    pub last_log_id: Option<LogId<C>>,
    /// The last membership the snapshot includes.
    pub last_membership: StoredMembership<C>,
    /// An id unique to this snapshot, so a receiver can tell chunks of different snapshots
    /// apart: unique across nodes too, and naming one sequence of bytes (see
    /// [`RaftSnapshotBuilder::build_snapshot`](crate::storage::RaftSnapshotBuilder::build_snapshot)).
    pub snapshot_id: String,
}

impl<C: RaftTypeConfig> Clone for SnapshotMeta<C> {
    fn clone(&self) -> Self {
        Self {
            last_log_id: self.last_log_id,
            last_membership: self.last_membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        }
    }
}
impl<C: RaftTypeConfig> PartialEq for SnapshotMeta<C> {
    fn eq(&self, other: &Self) -> bool {
        self.last_log_id == other.last_log_id
            && self.last_membership == other.last_membership
            && self.snapshot_id == other.snapshot_id
    }
}
impl<C: RaftTypeConfig> Eq for SnapshotMeta<C> {}
impl<C: RaftTypeConfig> fmt::Debug for SnapshotMeta<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
impl<C: RaftTypeConfig> fmt::Display for SnapshotMeta<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "snapshot {} upto {} membership {}",
            self.snapshot_id,
            DisplayOption(&self.last_log_id),
            self.last_membership
        )
    }
}
