//! Snapshots in RaftCore: receiving a leader's snapshot chunk by chunk, and executing the
//! snapshot commands.

use std::io::SeekFrom;

use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tracing::debug;

use crate::core::{RaftCore, SmMsg, queue};
use crate::error::{ClientWriteError, ErrorSubject, ErrorVerb, Fatal, StorageError};
use crate::storage::{RaftLogStorage, SnapshotMeta};
use crate::types::{InstallSnapshotRequest, InstallSnapshotResponse};
use crate::{RaftNetworkFactory, RaftTypeConfig};

/// A snapshot being received from the leader.
pub(crate) struct SnapshotReceiver<C: RaftTypeConfig> {
    /// The leadership sending it, and what it said the snapshot is: a chunk continues this
    /// snapshot only if both are the same (see `handle_install_snapshot`).
    pub(super) vote: crate::types::Vote<C>,
    meta: SnapshotMeta<C>,
    /// Bytes received so far: the offset of the next chunk.
    offset: u64,
    data: Box<C::SnapshotData>,
}

/// Ask the state machine task something and wait for the answer.
async fn sm_call<C: RaftTypeConfig, T>(
    sm_tx: &queue::UnboundedSender<SmMsg<C>>,
    msg: impl FnOnce(oneshot::Sender<T>) -> SmMsg<C>,
) -> Result<T, Fatal> {
    let (tx, rx) = oneshot::channel();
    sm_tx.send(msg(tx)).map_err(|_| Fatal::Stopped)?;
    rx.await.map_err(|_| Fatal::Stopped)
}

fn snapshot_io_error(e: std::io::Error) -> Fatal {
    StorageError::new(ErrorSubject::Snapshot, ErrorVerb::Write, anyerror::AnyError::new(&e)).into()
}

impl<C, N, LS> RaftCore<C, N, LS>
where
    C: RaftTypeConfig,
    N: RaftNetworkFactory<C>,
    LS: RaftLogStorage<C>,
{
    /// Handle one chunk of a leader's snapshot; install the snapshot when the last arrives.
    pub(crate) async fn handle_install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<C>,
    ) -> Result<InstallSnapshotResponse<C>, Fatal> {
        if let Err(vote) = self.engine.accept_leader(self.clock.now(), req.vote) {
            return Ok(InstallSnapshotResponse { vote, next_offset: 0 });
        }
        self.run_commands().await?;
        let vote = self.engine.state.vote;

        // A transfer resumes only from the same leadership with the same snapshot, id and all
        // (found in review: matching ids alone let a new leader, whose snapshot had the same id
        // as the old leader's, continue the old one's bytes with its own, and the follower
        // installed a splice of two snapshots). Within one leadership, the bytes of a snapshot
        // must not change for a given id (`RaftSnapshotBuilder::build_snapshot`).
        let same_snapshot = self.receiving.as_ref().is_some_and(|r| r.vote == vote && r.meta == req.meta);
        if !same_snapshot {
            if req.offset != 0 {
                // A chunk of a snapshot we have nothing of: ask for the start.
                return Ok(InstallSnapshotResponse { vote, next_offset: 0 });
            }
            let data = sm_call(&self.sm_tx, |tx| SmMsg::BeginReceiving { tx }).await??;
            debug!(snapshot = %req.meta, "start receiving a snapshot");
            self.receiving = Some(Box::new(SnapshotReceiver { vote, meta: req.meta.clone(), offset: 0, data }));
        }
        let Some(recv) = self.receiving.as_mut() else { return Err(Fatal::Invariant("no snapshot receiver".into())) };
        if req.offset != recv.offset {
            // A duplicate or a resumed transfer: tell the leader where to continue.
            return Ok(InstallSnapshotResponse { vote, next_offset: recv.offset });
        }
        recv.data.write_all(&req.data).await.map_err(snapshot_io_error)?;
        recv.offset += req.data.len() as u64;
        let next_offset = recv.offset;
        if req.done {
            if let Some(mut recv) = self.receiving.take() {
                recv.data.flush().await.map_err(snapshot_io_error)?;
                recv.data.seek(SeekFrom::Start(0)).await.map_err(snapshot_io_error)?;
                if self.engine.install_snapshot(req.meta) {
                    self.installing = Some(recv.data);
                }
                self.run_commands().await?;
            }
        }
        Ok(InstallSnapshotResponse { vote, next_offset })
    }

    /// Hand the received snapshot to the state machine and wait until it is installed.
    pub(crate) async fn install_received_snapshot(&mut self, meta: SnapshotMeta<C>) -> Result<(), Fatal> {
        let Some(data) = self.installing.take() else {
            return Err(Fatal::Invariant(format!("no received data to install {meta}")));
        };
        // Writes waiting on entries the snapshot replaced cannot learn their result from it.
        self.fail_writes_covered_by_snapshot(meta.last_log_id);
        self.fail_membership_change_covered_by_snapshot(meta.last_log_id);
        sm_call(&self.sm_tx, |tx| SmMsg::InstallSnapshot { meta: Box::new(meta), data, tx }).await??;
        Ok(())
    }

    /// A membership change whose first entry the snapshot replaced cannot learn its result
    /// either. Left waiting (found in review), it waited for good, or was answered `Ok` once
    /// any later change of another leader committed, and every change meanwhile was refused as
    /// "in progress".
    fn fail_membership_change_covered_by_snapshot(&mut self, last: Option<crate::types::LogId<C>>) {
        let Some(last) = last else { return };
        if self.membership_waiter.as_ref().is_some_and(|(first, _)| first.index <= last.index) {
            if let Some((log_id, tx)) = self.membership_waiter.take() {
                debug!(%log_id, "a pending membership change was superseded by a snapshot; its outcome is unknown");
                let _ = tx.send(Err(ClientWriteError::OutcomeUnknown { log_id }));
            }
        }
    }

    fn fail_writes_covered_by_snapshot(&mut self, last: Option<crate::types::LogId<C>>) {
        let Some(last) = last else { return };
        while self.responders.front().is_some_and(|(l, _)| l.index <= last.index) {
            if let Some((log_id, tx)) = self.responders.pop_front() {
                // The entry may or may not be the one the snapshot includes at its index, and
                // nothing here can tell which.
                debug!(%log_id, "a pending write was superseded by a snapshot; its outcome is unknown");
                let _ = tx.send(Err(ClientWriteError::OutcomeUnknown { log_id }));
            }
        }
    }
}
