//! Client writes in RaftCore: batching every queued write into one log append.

use tracing::warn;

use crate::core::{RaftCore, WriteMsg};
use crate::error::ClientWriteError;
use crate::storage::RaftLogStorage;
use crate::types::LogId;
use crate::{RaftNetworkFactory, RaftTypeConfig};

impl<C, N, LS> RaftCore<C, N, LS>
where
    C: RaftTypeConfig,
    N: RaftNetworkFactory<C>,
    LS: RaftLogStorage<C>,
{
    /// Propose `first` and every other write already queued (up to `max_append_batch`, and
    /// within `max_pending_writes`) as one log append.
    pub(crate) fn handle_client_writes(&mut self, first: WriteMsg<C>) {
        if self.engine.leader.is_none() || self.engine.is_transferring() {
            let forward = self.forward_to_leader();
            let _ = first.tx.send(Err(ClientWriteError::ForwardToLeader(forward.clone())));
            // Refuse everything queued too, in one go: it would meet the same answer.
            while let Ok(w) = self.write_rx.try_recv() {
                let _ = w.tx.send(Err(ClientWriteError::ForwardToLeader(forward.clone())));
            }
            return;
        }
        let room = (self.config.max_pending_writes as usize).saturating_sub(self.responders.len()).max(1);
        let max = (self.config.max_append_batch as usize).min(room);
        let mut payloads = Vec::with_capacity(max.min(self.write_rx.len() + 1));
        let mut txs = Vec::with_capacity(payloads.capacity());
        payloads.push(first.payload);
        txs.push(first.tx);
        while payloads.len() < max {
            let Ok(w) = self.write_rx.try_recv() else { break };
            payloads.push(w.payload);
            txs.push(w.tx);
        }
        let Some(first) = self.engine.propose(self.clock.now(), payloads) else {
            warn!("leader refused to append; answering with ForwardToLeader");
            for tx in txs {
                let _ = tx.send(Err(ClientWriteError::ForwardToLeader(self.forward_to_leader())));
            }
            return;
        };
        for (i, tx) in txs.into_iter().enumerate() {
            self.responders.push_back((LogId::new(first.leader_id, first.index + i as u64), tx));
        }
    }
}
