//! Snapshots and log compaction: when to build one, what to purge, installing a leader's.

use tracing::{debug, info};

use crate::RaftTypeConfig;
use crate::config::SnapshotPolicy;
use crate::engine::{Command, Engine};
use crate::types::SnapshotMeta;
use crate::types::{DisplayOption, LogId};

impl<C: RaftTypeConfig> Engine<C> {
    /// Build a snapshot now, unless one is being built.
    pub(crate) fn trigger_snapshot(&mut self) {
        if !self.state.snapshot_building {
            self.state.snapshot_building = true;
            self.output.push_back(Command::BuildSnapshot);
        }
    }

    /// After `applied` advanced: build a snapshot if the policy asks for one.
    pub(crate) fn maybe_build_snapshot(&mut self) {
        let SnapshotPolicy::LogsSinceLast(n) = self.config.snapshot_policy else { return };
        // `applied` can be behind the snapshot: a state machine that keeps no state re-applies
        // the log after a restart while its snapshot is still stored.
        let since_last = self
            .state
            .applied
            .map_or(0, |l| l.index + 1)
            .saturating_sub(self.state.snapshot_last.map_or(0, |l| l.index + 1));
        if since_last >= n {
            self.trigger_snapshot();
        }
    }

    /// A snapshot covering up to `last` was built; purge the log behind it, keeping
    /// `max_in_snapshot_log_to_keep` entries for followers slightly behind.
    pub(crate) fn on_snapshot_built(&mut self, last: Option<LogId<C>>) {
        self.state.snapshot_building = false;
        if last <= self.state.snapshot_last {
            return;
        }
        info!(id = %self.config.id, last = %DisplayOption(&last), "snapshot built");
        self.state.snapshot_last = last;
        if let Some(upto) = last.and_then(|l| l.index.checked_sub(self.config.log_to_keep)) {
            self.purge_log(upto);
        }
    }

    /// Purge the log up to `upto`, but never past the last snapshot (a follower that needs
    /// purged entries gets the snapshot instead) nor past what is applied.
    pub(crate) fn purge_log(&mut self, upto: u64) {
        let limit = self.state.snapshot_last.min(self.state.applied);
        let Some(limit) = limit else { return };
        let upto = upto.min(limit.index);
        if self.state.log_ids.purged().is_some_and(|p| p.index >= upto) {
            return;
        }
        let Some(log_id) = self.state.log_ids.get(upto) else { return };
        debug!(id = %self.config.id, upto = %log_id, "purge log");
        self.state.log_ids.purge(log_id);
        self.output.push_back(Command::PurgeLog { upto: log_id });
    }

    /// A whole snapshot arrived from the leader. Returns whether it is installed: a snapshot
    /// that covers nothing new (up to what is committed) is ignored, so a node never goes back
    /// to an older state.
    ///
    /// Installing replaces the state machine, discards the log it covers and, unless the log
    /// holds the snapshot's last entry, every entry after what was committed (they conflict or
    /// cannot be trusted).
    pub(crate) fn install_snapshot(&mut self, meta: SnapshotMeta<C>) -> bool {
        let Some(last) = meta.last_log_id else { return false };
        if Some(last) <= self.state.committed {
            debug!(id = %self.config.id, snapshot = %meta, "ignore a snapshot that covers nothing new");
            return false;
        }
        info!(id = %self.config.id, snapshot = %meta, "install snapshot");
        // If the log holds a different entry at the snapshot's last index, that entry and all
        // after it conflict with the leader's log (log matching): truncate them. Entries before
        // it are replaced by the purge below; they may or may not be in the snapshot.
        if let Some(since) = self.state.log_ids.get(last.index).filter(|l| *l != last) {
            self.state.log_ids.truncate(since.index);
            self.state.membership.truncate(since.index);
            let io = self.next_io();
            self.output.push_back(Command::TruncateLog { io, since });
        }
        self.output.push_back(Command::InstallSnapshot { meta: meta.clone() });
        self.state.committed = Some(last);
        self.state.apply_submitted = Some(last);
        self.state.applied = Some(last);
        self.state.snapshot_last = Some(last);
        self.state.membership.install_snapshot(last, meta.last_membership);
        self.state.log_ids.purge(last);
        self.output.push_back(Command::PurgeLog { upto: last });
        true
    }
}
