//! Linearizable reads and leadership transfers in RaftCore: requests that wait for the leader
//! to confirm it still leads, or for another node to take over.

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use crate::core::{RaftCore, ReadResponder};
use crate::engine::TransferRejected;
use crate::error::{LinearizableReadError, TransferLeaderError};
use crate::raft::{ReadIndex, ReadPolicy};
use crate::storage::RaftLogStorage;
use crate::types::LogId;
use crate::{RaftNetworkFactory, RaftTypeConfig};

/// A read waiting for a quorum to acknowledge the leader after it arrived.
pub(crate) struct PendingRead<C: RaftTypeConfig> {
    since: Instant,
    read_log_id: Option<LogId<C>>,
    tx: ReadResponder<C>,
}

/// A caller of the leadership transfer in progress.
pub(crate) struct PendingTransfer<C: RaftTypeConfig> {
    to: C::NodeId,
    tx: oneshot::Sender<Result<(), TransferLeaderError<C>>>,
}

impl<C, N, LS> RaftCore<C, N, LS>
where
    C: RaftTypeConfig,
    N: RaftNetworkFactory<C>,
    LS: RaftLogStorage<C>,
{
    /// Start a read: answer at once under a valid lease, else after the next quorum ack.
    pub(crate) fn handle_get_read_log_id(&mut self, policy: ReadPolicy, tx: ReadResponder<C>) {
        let now = self.clock.now();
        let Some(read_log_id) = self.engine.read_log_id() else {
            let _ = tx.send(Err(LinearizableReadError::ForwardToLeader(self.forward_to_leader())));
            return;
        };
        if policy == ReadPolicy::LeaseRead && self.engine.lease_valid(now) {
            let _ = tx.send(Ok(ReadIndex { read_log_id, applied: self.engine.state.applied }));
            return;
        }
        self.pending_reads.push(PendingRead { since: now, read_log_id, tx });
        // Ask every stream for a heartbeat now rather than at the next interval.
        self.watches.heartbeat.send_modify(|n| *n += 1);
    }

    /// Answer the reads a quorum has confirmed since they arrived; fail them all if this node
    /// no longer leads.
    pub(crate) fn check_pending_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        if self.engine.leader.is_none() {
            let forward = self.forward_to_leader();
            for r in self.pending_reads.drain(..) {
                let _ = r.tx.send(Err(LinearizableReadError::ForwardToLeader(forward.clone())));
            }
            return;
        }
        let Some(acked) = self.engine.quorum_acked_at(self.clock.now()) else { return };
        let applied = self.engine.state.applied;
        let committed = self.engine.state.committed;
        let mut i = 0;
        while i < self.pending_reads.len() {
            let r = &self.pending_reads[i];
            // Confirmed: a quorum followed this leader after the read arrived, and the log id
            // to read at is committed.
            if acked >= r.since && r.read_log_id <= committed {
                let r = self.pending_reads.swap_remove(i);
                debug!(read_log_id = ?r.read_log_id, "read confirmed by a quorum");
                let _ = r.tx.send(Ok(ReadIndex { read_log_id: r.read_log_id, applied }));
            } else {
                i += 1;
            }
        }
    }

    pub(crate) fn handle_transfer_leader_api(
        &mut self,
        to: C::NodeId,
        tx: oneshot::Sender<Result<(), TransferLeaderError<C>>>,
    ) {
        match self.engine.transfer_leader(self.clock.now(), to) {
            Err(TransferRejected::NotLeader) => {
                let _ = tx.send(Err(TransferLeaderError::ForwardToLeader(self.forward_to_leader())));
            }
            Err(TransferRejected::NotAVoter) => {
                let _ = tx.send(Err(TransferLeaderError::NotAVoter(to)));
            }
            Err(TransferRejected::InProgress(other)) => {
                let _ = tx.send(Err(TransferLeaderError::InProgress(other)));
            }
            Ok(()) if to == self.engine.id() => {
                let _ = tx.send(Ok(()));
            }
            // A new transfer, or the one in progress asked for again: every caller waits for it.
            Ok(()) => self.pending_transfers.push(PendingTransfer { to, tx }),
        }
    }

    /// Answer the transfer callers once this node stopped leading, or the transfer expired.
    pub(crate) fn check_pending_transfer(&mut self) {
        if self.pending_transfers.is_empty() {
            return;
        }
        let succeeded = if self.engine.leader.is_none() {
            true
        } else if !self.engine.is_transferring() {
            false
        } else {
            return;
        };
        for p in self.pending_transfers.drain(..) {
            let result = if succeeded { Ok(()) } else { Err(TransferLeaderError::Timeout(p.to)) };
            let _ = p.tx.send(result);
        }
    }
}
