//! Snapshots: a state machine image and what log prefix it replaces.

use std::fmt;

use crate::RaftTypeConfig;
pub use crate::types::SnapshotMeta;

/// A snapshot: its metadata and its data.
///
/// A snapshot that [`get_current_snapshot`] returns may be read long after the call, on a
/// replication task, while the state machine builds or installs newer snapshots: see that
/// method for what its data must keep doing.
///
/// [`get_current_snapshot`]: crate::RaftStateMachine::get_current_snapshot
pub struct Snapshot<C: RaftTypeConfig> {
    /// What it covers: `meta.last_log_id` and `meta.last_membership` describe exactly the
    /// state serialized in `snapshot` (see
    /// [`RaftSnapshotBuilder::build_snapshot`](crate::RaftSnapshotBuilder::build_snapshot)).
    pub meta: SnapshotMeta<C>,
    /// The state machine image, positioned at its start (at startup it goes as it is to
    /// [`install_snapshot`](crate::RaftStateMachine::install_snapshot)). A sender seeks it
    /// (to `SeekFrom::End(0)` for its length, to `SeekFrom::Start(offset)` for each chunk), so
    /// it must stay readable, and its bytes the same, for as long as this box lives.
    pub snapshot: Box<C::SnapshotData>,
}

impl<C: RaftTypeConfig> fmt::Debug for Snapshot<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot").field("meta", &self.meta).finish_non_exhaustive()
    }
}
