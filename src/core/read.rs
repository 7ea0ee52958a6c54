//! Linearizable reads and leadership transfers in RaftCore: requests that wait for the leader
//! to confirm it still leads, or for another node to take over.

use tokio::sync::oneshot;
use tracing::debug;

use crate::core::{RaftCore, ReadResponder};
use crate::engine::{ReadStart, ReadStatus, ReadTicket, TransferRejected};
use crate::error::{LinearizableReadError, TransferLeaderError};
use crate::raft::ReadIndex;
use crate::storage::RaftLogStorage;
use crate::types::DisplayOption;
use crate::types::ReadPolicy;
use crate::{RaftNetworkFactory, RaftTypeConfig};

/// A read waiting for the Engine to confirm it.
pub(crate) struct PendingRead<C: RaftTypeConfig> {
    ticket: ReadTicket<C>,
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
    /// Start a read: answered at once under a valid lease, else once the Engine confirms it.
    pub(crate) fn handle_get_read_log_id(&mut self, policy: ReadPolicy, tx: ReadResponder<C>) {
        match self.engine.leader_read(self.clock.now(), policy) {
            ReadStart::NotLeader => {
                let _ = tx.send(Err(LinearizableReadError::ForwardToLeader(self.forward_to_leader())));
            }
            ReadStart::Ready(read_log_id) => {
                debug!(read_log_id = %DisplayOption(&read_log_id), "read served under the leader lease");
                let _ = tx.send(Ok(ReadIndex { read_log_id, applied: self.engine.state.applied }));
            }
            ReadStart::Wait(ticket) => self.pending_reads.push(PendingRead { ticket, tx }),
        }
    }

    /// Answer the reads the Engine has confirmed; fail those whose leadership is over.
    pub(crate) fn check_pending_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        let applied = self.engine.state.applied;
        let mut i = 0;
        while i < self.pending_reads.len() {
            match self.engine.read_status(&self.pending_reads[i].ticket) {
                ReadStatus::Waiting => i += 1,
                ReadStatus::Confirmed(read_log_id) => {
                    let r = self.pending_reads.swap_remove(i);
                    debug!(read_log_id = %DisplayOption(&read_log_id), "read confirmed by a quorum");
                    let _ = r.tx.send(Ok(ReadIndex { read_log_id, applied }));
                }
                ReadStatus::Failed => {
                    let r = self.pending_reads.swap_remove(i);
                    let forward = self.forward_to_leader();
                    let _ = r.tx.send(Err(LinearizableReadError::ForwardToLeader(forward)));
                }
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
        let effective = self.engine.state.membership.effective();
        for p in self.pending_transfers.drain(..) {
            let result = if succeeded {
                Ok(())
            } else if !effective.is_voter(&p.to) {
                Err(TransferLeaderError::NotAVoter(p.to))
            } else {
                Err(TransferLeaderError::Timeout(p.to))
            };
            let _ = p.tx.send(result);
        }
    }
}
