//! [`IOFlushed`]: how a log store reports that an append is durable.

use std::fmt;
use std::io;

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::RaftTypeConfig;
use crate::engine::LogIOId;

/// Where a node takes the reports of its log store's [`IOFlushed`] callbacks.
///
/// Implemented by the node (RaftCore), which this module must not depend on: the storage
/// traits sit below the runtime that drives them.
pub(crate) trait FlushReceiver<C: RaftTypeConfig>: Send + Sync + 'static {
    /// The log I/O `io` (and every one before it) is durable, or could not be made durable.
    fn flushed(&self, io: LogIOId<C>, result: Result<(), io::Error>);
}

/// The callback handed to [`RaftLogStorage::append`](crate::RaftLogStorage::append).
///
/// Call [`io_completed`](Self::io_completed) exactly once, when the appended entries (and every
/// log operation submitted before them) are durable, or when making them durable failed.
/// Dropping it without calling it leaves the entries counted as not durable: the node will not
/// acknowledge them, which is safe but stalls replication.
///
/// It may be called from any thread, at any time after `append` received it: inside `append`
/// itself (a store that syncs before returning), from a background flusher, or from another
/// task. Calling it does not block or run the node's code; the report is queued for the node's
/// task.
///
/// **Complete callbacks in append order.** Completing one with `Ok` promises that its
/// entries and every log operation submitted before its append (earlier appends, truncations
/// and purges) are durable. Complete the callback of an append only after the callbacks of
/// every earlier append, even when one fsync covered them all (complete them one after
/// another, oldest first). The storage conformance suite checks this
/// (`flush_callbacks_fire_in_append_order`).
pub struct IOFlushed<C: RaftTypeConfig> {
    target: Target<C>,
}

enum Target<C: RaftTypeConfig> {
    Node { io: LogIOId<C>, receiver: Arc<dyn FlushReceiver<C>> },
    Channel(oneshot::Sender<Result<(), io::Error>>),
}

impl<C: RaftTypeConfig> IOFlushed<C> {
    pub(crate) fn new(io: LogIOId<C>, receiver: Arc<dyn FlushReceiver<C>>) -> Self {
        Self { target: Target::Node { io, receiver } }
    }

    /// A callback whose completion is delivered to the returned receiver. For calling a log
    /// store directly, e.g. in a storage test.
    pub fn with_receiver() -> (Self, oneshot::Receiver<Result<(), io::Error>>) {
        let (tx, rx) = oneshot::channel();
        (Self { target: Target::Channel(tx) }, rx)
    }

    /// Report that the append is durable (`Ok`) or could not be made durable (`Err`).
    pub fn io_completed(self, result: Result<(), io::Error>) {
        match self.target {
            Target::Node { io, receiver } => receiver.flushed(io, result),
            Target::Channel(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

impl<C: RaftTypeConfig> fmt::Debug for IOFlushed<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Node { io, .. } => write!(f, "IOFlushed({io})"),
            Target::Channel(_) => f.write_str("IOFlushed(channel)"),
        }
    }
}
