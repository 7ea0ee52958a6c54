//! The state machine task: applies committed entries, answers client writes, and serves
//! snapshots (building, reading, receiving, installing).
//!
//! It reads entries through its own log reader, so RaftCore never holds entries for it, and it
//! answers each client write directly, saving a hop through RaftCore. Messages are handled in
//! order, so an install queued after applies runs after them.
//!
//! When the Raft task ends it closes this task's queue: what is queued is dropped, a batch
//! being applied stops after its current chunk, and the task ends once the snapshot it may be
//! building is done, so that `Raft::shutdown` returns only when nothing of the node touches
//! the state machine (found in review: applies went on after `shutdown` returned, beside
//! those of a node restarted in-process on the same state machine).

use tokio::sync::oneshot;
use tracing::{Instrument, debug, debug_span, error};

use crate::RaftTypeConfig;
use crate::core::{Notification, WriteResponder, queue};
use crate::error::{ClientWriteError, Fatal, StorageError};
use crate::raft::ClientWriteResponse;
use crate::storage::{RaftLogReader, RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use crate::types::LogId;

/// The most entries read from the log and applied in one call: bounds the memory of a batch.
const APPLY_CHUNK: u64 = 4096;

/// Work for the state machine task.
pub(crate) enum SmMsg<C: RaftTypeConfig> {
    /// Apply entries `first..=last.index` and answer `responders` (sorted by index) with the
    /// state machine's responses.
    Apply { first: u64, last: LogId<C>, responders: Vec<(LogId<C>, WriteResponder<C>)> },
    /// Build a snapshot in a task of its own; report `Notification::SnapshotBuilt`.
    BuildSnapshot,
    /// The current snapshot, for sending to a follower.
    GetSnapshot { tx: oneshot::Sender<Result<Option<Snapshot<C>>, StorageError>> },
    /// An empty buffer to receive a snapshot into.
    BeginReceiving { tx: oneshot::Sender<Result<Box<C::SnapshotData>, StorageError>> },
    /// Install a received snapshot. Rare, and its meta is the largest field of any message
    /// here: boxed, so that the channel's slots are the size of `Apply`.
    InstallSnapshot {
        meta: Box<SnapshotMeta<C>>,
        data: Box<C::SnapshotData>,
        tx: oneshot::Sender<Result<(), StorageError>>,
    },
}

pub(crate) struct StateMachineWorker<C: RaftTypeConfig, SM, LR> {
    pub(crate) id: C::NodeId,
    pub(crate) state_machine: SM,
    pub(crate) log_reader: LR,
    pub(crate) rx: queue::Receiver<SmMsg<C>>,
    pub(crate) notify_tx: queue::UnboundedSender<Notification<C>>,
    /// The snapshot builds under way (see the module docs); RaftCore asks for one at a time.
    pub(crate) building: Vec<tokio::task::JoinHandle<()>>,
}

impl<C, SM, LR> StateMachineWorker<C, SM, LR>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
    LR: RaftLogReader<C>,
{
    pub(crate) async fn run(mut self) {
        let span = debug_span!("state_machine", id = %self.id);
        async move {
            while let Some(msg) = self.rx.recv().await {
                // Boxed: the state machine's and log reader's futures, inline, would make the
                // task as large as the largest of them for as long as it waits for work, which
                // every idle group of a host would pay for. One allocation per batch applied.
                if let Err(f) = Box::pin(self.handle(msg)).await {
                    error!(error = %f, "state machine failed");
                    let _ = self.notify_tx.send(Notification::Fatal(Box::new(f)));
                    break;
                }
            }
            // A snapshot still being built writes to the state machine's storage: the node has
            // not stopped until it is done.
            for build in std::mem::take(&mut self.building) {
                debug!("waiting for the snapshot being built");
                let _ = build.await;
            }
            debug!("state machine task stopped");
        }
        .instrument(span)
        .await
    }

    async fn handle(&mut self, msg: SmMsg<C>) -> Result<(), Fatal> {
        match msg {
            SmMsg::Apply { first, last, responders } => self.apply(first, last, responders).await?,
            SmMsg::BuildSnapshot => {
                let mut builder = self.state_machine.get_snapshot_builder().await;
                let notify = self.notify_tx.clone();
                // The builder owns what it needs, so applying goes on while it runs.
                self.building.retain(|b| !b.is_finished());
                self.building.push(tokio::spawn(
                    async move {
                        let result = builder.build_snapshot().await.map(|s| s.meta);
                        let _ = notify.send(Notification::SnapshotBuilt { result: Box::new(result) });
                    }
                    .instrument(tracing::Span::current()),
                ));
            }
            SmMsg::GetSnapshot { tx } => {
                let _ = tx.send(self.state_machine.get_current_snapshot().await);
            }
            SmMsg::BeginReceiving { tx } => {
                let _ = tx.send(self.state_machine.begin_receiving_snapshot().await);
            }
            SmMsg::InstallSnapshot { meta, data, tx } => {
                let result = self.state_machine.install_snapshot(&meta, data).await;
                let failed = result.clone().err();
                let _ = tx.send(result);
                if let Some(e) = failed {
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        first: u64,
        last: LogId<C>,
        responders: Vec<(LogId<C>, WriteResponder<C>)>,
    ) -> Result<(), Fatal> {
        let mut responders = responders.into_iter().peekable();
        let mut start = first;
        while start <= last.index {
            let end = (start + APPLY_CHUNK).min(last.index + 1);
            let entries = self.log_reader.try_get_log_entries(start..end).await?;
            let got_all = entries.len() as u64 == end - start
                && entries.iter().zip(start..).all(|(e, i)| e.log_id.index == i)
                && (end <= last.index || entries.last().map(|e| e.log_id) == Some(last));
            if !got_all {
                return Err(Fatal::Invariant(format!(
                    "log store returned {} entries for committed range {start}..{end} (last {last})",
                    entries.len()
                )));
            }
            let log_ids: Vec<LogId<C>> = entries.iter().map(|e| e.log_id).collect();
            let results = self.state_machine.apply(entries).await?;
            if results.len() != log_ids.len() {
                return Err(Fatal::Invariant(format!(
                    "state machine returned {} responses for {} entries",
                    results.len(),
                    log_ids.len()
                )));
            }
            for (log_id, data) in log_ids.iter().zip(results) {
                // A responder below the applied range has no result to get; dropping it tells the
                // caller the node gave up on it. It cannot happen while indexes only grow.
                while responders.next_if(|(r, _)| r.index < log_id.index).is_some() {}
                if let Some((r, tx)) = responders.next_if(|(r, _)| r.index == log_id.index) {
                    let answer = if r == *log_id {
                        Ok(ClientWriteResponse { log_id: *log_id, data })
                    } else {
                        // Another leader's entry took this index: ours was discarded.
                        Err(ClientWriteError::Discarded { log_id: r })
                    };
                    let _ = tx.send(answer);
                }
            }
            start = end;
            if self.rx.is_closed() && start <= last.index {
                // The node stopped: the rest is applied by whichever node opens this state
                // machine next (it is committed, and applied resumes from `applied_state`).
                debug!(applied_to = start - 1, last = %last, "node stopped: leaving the rest of the batch");
                return Ok(());
            }
        }
        debug!(last = %last, entries = last.index + 1 - first, "applied");
        let _ = self.notify_tx.send(Notification::Applied { last });
        Ok(())
    }
}
