//! The watch channels RaftCore publishes on: metrics for the handle, and what the replication
//! streams follow.
//!
//! The four channels the streams follow exist only while this node has streams (it leads a
//! group with other members): a tokio watch channel costs a few hundred bytes, and most nodes
//! of a host's many groups are followers, which never need them. The values the streams would
//! start from (the heartbeat round, the quiesced mark) are kept here while there are none, so
//! that streams started later begin from them.

use tokio::sync::watch;

use crate::RaftTypeConfig;
use crate::metrics::RaftMetrics;
use crate::replication::IOProgress;
use crate::types::{LogId, QuiesceMark};

/// What a quiesced leader's streams carry: its last log id and its host's identity.
pub(crate) type Quiesced<C> = Option<(LogId<C>, QuiesceMark)>;

/// The channels RaftCore publishes on; the handle and the replication tasks subscribe.
pub(crate) struct Watches<C: RaftTypeConfig> {
    pub(crate) metrics: watch::Sender<RaftMetrics<C>>,
    /// Present exactly while RaftCore has replication streams.
    streams: Option<StreamWatches<C>>,
    /// The latest heartbeat round a read asked for: streams send a request when it changes and
    /// tag their requests with it (see `engine/read.rs`). Never decreases.
    heartbeat: u64,
    /// `Some((last, mark))` while the leader is quiesced (see `engine/quiesce.rs`): its last
    /// log id and its host's identity, which the marked heartbeat carries.
    quiesced: Quiesced<C>,
}

/// The channels a replication stream follows.
pub(crate) struct StreamWatches<C: RaftTypeConfig> {
    /// The leader vote and the last log id handed to the log store (readable by log readers).
    pub(crate) submitted: watch::Sender<IOProgress<C>>,
    /// The committed log id.
    pub(crate) committed: watch::Sender<Option<LogId<C>>>,
    /// Mirrors [`Watches::heartbeat`].
    pub(crate) heartbeat: watch::Sender<u64>,
    /// Mirrors [`Watches::quiesced`].
    pub(crate) quiesced: watch::Sender<Quiesced<C>>,
}

impl<C: RaftTypeConfig> Watches<C> {
    /// The watches of a node that has no streams yet.
    pub(crate) fn new(metrics: watch::Sender<RaftMetrics<C>>) -> Self {
        Self { metrics, streams: None, heartbeat: 0, quiesced: None }
    }

    /// The streams' channels, made now with these values if there are none.
    pub(crate) fn streams(&mut self, submitted: IOProgress<C>, committed: Option<LogId<C>>) -> &StreamWatches<C> {
        let (heartbeat, quiesced) = (self.heartbeat, self.quiesced);
        self.streams.get_or_insert_with(|| StreamWatches {
            submitted: watch::channel(submitted).0,
            committed: watch::channel(committed).0,
            heartbeat: watch::channel(heartbeat).0,
            quiesced: watch::channel(quiesced).0,
        })
    }

    /// Drop the streams' channels: call it when the last stream is gone. A stream still
    /// running (one just aborted) sees its channels close and stops.
    pub(crate) fn close_streams(&mut self) {
        self.streams = None;
    }

    /// Publish `submitted` and `committed` to the streams, where they changed.
    pub(crate) fn publish_progress(&self, submitted: IOProgress<C>, committed: Option<LogId<C>>) {
        let Some(streams) = &self.streams else { return };
        streams.submitted.send_if_modified(|cur| {
            let changed = *cur != submitted;
            *cur = submitted;
            changed
        });
        streams.committed.send_if_modified(|cur| {
            let changed = *cur != committed;
            *cur = committed;
            changed
        });
    }

    /// A read asked for heartbeat round `round`: tell the streams if it is newer.
    pub(crate) fn broadcast_heartbeat(&mut self, round: u64) {
        if round <= self.heartbeat {
            return;
        }
        self.heartbeat = round;
        if let Some(streams) = &self.streams {
            streams.heartbeat.send_replace(round);
        }
    }

    /// The leader quiesced (`Some`) or woke (`None`): tell the streams.
    pub(crate) fn set_quiesced(&mut self, quiesced: Quiesced<C>) {
        self.quiesced = quiesced;
        if let Some(streams) = &self.streams {
            streams.quiesced.send_replace(quiesced);
        }
    }
}
