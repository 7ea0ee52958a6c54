//! [`SyncObserver`]: a hook that sees every group commit of the writer thread, for metrics.
//!
//! The store itself records nothing: an application that wants fsync latency and batch sizes
//! (a histogram in its monitoring system, a log line) passes an observer in
//! [`FileStoreOptions::on_sync`](super::FileStoreOptions::on_sync). With quorate's `metrics`
//! feature, `quorate::metrics::export::file_store_observer` is one that records histograms
//! through the `metrics` facade.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What one group commit of a [`FileLogStore`](super::FileLogStore) wrote and how long its
/// `fdatasync` took. Handed to the [`SyncObserver`] after the sync, for batches that needed one
/// (an append or a vote) and whose write and sync succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SyncedBatch {
    /// Log entries the batch appended (0 for a batch of a vote alone).
    pub entries: u64,
    /// Bytes written to the segment file by the batch: framed entries and every other record.
    pub bytes: u64,
    /// How long the `fdatasync` that made the batch durable took: the disk's latency as the
    /// node's writes see it (the batch's callbacks fire right after it).
    pub sync: Duration,
}

/// A function called with every [`SyncedBatch`], on the store's writer thread.
///
/// It runs between two group commits, so it must be quick and must not block: record into a
/// histogram, bump a counter. A slow observer delays every write that queues meanwhile.
#[derive(Clone)]
pub struct SyncObserver(Arc<dyn Fn(&SyncedBatch) + Send + Sync>);

impl SyncObserver {
    /// An observer that calls `f` with every synced batch.
    pub fn new(f: impl Fn(&SyncedBatch) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub(crate) fn observe(&self, batch: &SyncedBatch) {
        (self.0)(batch)
    }
}

impl fmt::Debug for SyncObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncObserver")
    }
}
