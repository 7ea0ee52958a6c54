//! Snapshots: a state machine image and what log prefix it replaces.

use std::fmt;

use crate::RaftTypeConfig;
pub use crate::types::SnapshotMeta;

/// A snapshot: its metadata and its data.
pub struct Snapshot<C: RaftTypeConfig> {
    /// What it covers.
    pub meta: SnapshotMeta<C>,
    /// The state machine image, readable from the start.
    pub snapshot: Box<C::SnapshotData>,
}

impl<C: RaftTypeConfig> fmt::Debug for Snapshot<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot").field("meta", &self.meta).finish_non_exhaustive()
    }
}
