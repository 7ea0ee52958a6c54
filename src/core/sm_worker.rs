//! The state machine task: applies committed entries and answers client writes.
//!
//! It reads entries through its own log reader, so RaftCore never holds entries for it, and it
//! answers each client write directly, saving a hop through RaftCore.

use tokio::sync::mpsc;
use tracing::{Instrument, debug_span, error};

use crate::RaftTypeConfig;
use crate::core::{Notification, WriteResponder};
use crate::error::{ClientWriteError, Fatal};
use crate::raft::ClientWriteResponse;
use crate::storage::{RaftLogReader, RaftStateMachine};
use crate::types::LogId;

/// The most entries read from the log and applied in one call: bounds the memory of a batch.
const APPLY_CHUNK: u64 = 4096;

/// Work for the state machine task.
pub(crate) enum SmMsg<C: RaftTypeConfig> {
    /// Apply entries `first..=last.index` and answer `responders` (sorted by index) with the
    /// state machine's responses.
    Apply { first: u64, last: LogId<C>, responders: Vec<(LogId<C>, WriteResponder<C>)> },
}

pub(crate) struct StateMachineWorker<C: RaftTypeConfig, SM, LR> {
    pub(crate) id: C::NodeId,
    pub(crate) state_machine: SM,
    pub(crate) log_reader: LR,
    pub(crate) rx: mpsc::UnboundedReceiver<SmMsg<C>>,
    pub(crate) notify_tx: mpsc::UnboundedSender<Notification<C>>,
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
                let result = match msg {
                    SmMsg::Apply { first, last, responders } => self.apply(first, last, responders).await,
                };
                if let Err(f) = result {
                    error!(error = %f, "state machine failed");
                    let _ = self.notify_tx.send(Notification::Fatal(f));
                    return;
                }
            }
        }
        .instrument(span)
        .await
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
        }
        let _ = self.notify_tx.send(Notification::Applied { last });
        Ok(())
    }
}
