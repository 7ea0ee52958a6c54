//! Executing the Engine's commands.

use tokio::time::timeout;
use tracing::{debug, warn};

use crate::core::{Notification, RaftCore, SmMsg};
use crate::engine::{Command, ReplicationTarget};
use crate::error::{ClientWriteError, Fatal, RPCError};
use crate::network::{RPCOption, RaftNetwork};
use crate::replication::ReplicationHandle;
use crate::storage::{IOFlushed, RaftLogStorage};
use crate::types::{LogId, Vote};
use crate::types::{TransferLeaderRequest, VoteRequest};
use crate::{RaftNetworkFactory, RaftTypeConfig};

impl<C, N, LS> RaftCore<C, N, LS>
where
    C: RaftTypeConfig,
    N: RaftNetworkFactory<C>,
    LS: RaftLogStorage<C>,
{
    /// Execute every queued command, in order; then answer what waited on flushed I/O.
    pub(crate) async fn run_commands(&mut self) -> Result<(), Fatal> {
        while let Some(cmd) = self.engine.output.pop_front() {
            self.run_command(cmd).await?;
        }
        self.after_commands();
        Ok(())
    }

    /// [`Self::run_commands`] for the Raft task's loop, whose future every idle group of a host
    /// keeps: the commands' future (the log store's among them) is boxed, so that it costs
    /// memory only while commands run. One allocation per round with commands.
    pub(crate) async fn run_commands_boxed(&mut self) -> Result<(), Fatal> {
        if !self.engine.output.is_empty() {
            Box::pin(self.run_commands()).await
        } else {
            self.after_commands();
            Ok(())
        }
    }

    /// What may be answered or failed once the queued commands ran.
    fn after_commands(&mut self) {
        self.release_parked_responses();
        self.check_membership_waiter();
        self.fail_writes_of_a_removed_node();
        self.check_pending_reads();
        self.check_pending_transfer();
    }

    async fn run_command(&mut self, cmd: Command<C>) -> Result<(), Fatal> {
        match cmd {
            Command::SaveVote { vote } => self.log_store.save_vote(&vote).await?,
            Command::AppendEntries { io, entries } => {
                if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                    debug!(first = %first.log_id, last = %last.log_id, "appending to the log");
                }
                let callback = IOFlushed::new(io, self.flush_receiver.clone());
                self.log_store.append(entries, callback).await?;
                self.submitted = io;
            }
            Command::TruncateLog { io, since } => {
                self.log_store.truncate(since).await?;
                self.submitted = io;
                self.fail_truncated_writes(since);
                self.fail_truncated_membership_change(since);
            }
            Command::SendVote { req } => self.send_votes(req).await,
            Command::UpdateReplicationStreams { vote, targets } => self.update_replications(vote, targets).await,
            Command::CloseReplicationStreams => {
                self.replications.clear();
                self.watches.close_streams();
            }
            Command::BroadcastHeartbeat { round } => self.watches.broadcast_heartbeat(round),
            Command::Apply { first, last } => {
                debug!(committed = %last, "committed; handing to the state machine");
                let split = self.responders.partition_point(|(log_id, _)| log_id.index <= last.index);
                let responders = self.responders.drain(..split).collect();
                if self.sm_tx.send(SmMsg::Apply { first, last, responders }).is_err() {
                    return Err(Fatal::Stopped);
                }
            }
            Command::SaveCommitted { committed } => self.log_store.save_committed(Some(committed)).await?,
            Command::BuildSnapshot => {
                if self.sm_tx.send(SmMsg::BuildSnapshot).is_err() {
                    return Err(Fatal::Stopped);
                }
            }
            Command::PurgeLog { upto } => {
                self.log_store.purge(upto).await?;
            }
            Command::InstallSnapshot { meta } => self.install_received_snapshot(meta).await?,
            Command::SendTransferLeader { to, req } => self.send_transfer_leader(to, req).await,
            Command::SetQuiesced { last } => {
                let mark = self.host.as_ref().map(|h| h.liveness.mark());
                self.watches.set_quiesced(last.zip(mark));
            }
            Command::ReleaseQuiesced { term } => {
                self.watches.set_quiesced(None);
                self.release_quiesced_leadership(term);
            }
        }
        Ok(())
    }

    /// Entries from `since` on were removed from this node's log: answer their writes,
    /// `Discarded` if they can never commit, `OutcomeUnknown` if another node may still commit
    /// them (see `Engine::truncated_entries_are_dead`). The commands of an input run before the
    /// next input is handled, so the Engine's commit is the one of the input that truncated.
    fn fail_truncated_writes(&mut self, since: LogId<C>) {
        let dead = self.engine.truncated_entries_are_dead(since);
        while self.responders.back().is_some_and(|(log_id, _)| log_id.index >= since.index) {
            if let Some((log_id, tx)) = self.responders.pop_back() {
                let _ = tx.send(Err(truncated_answer(dead, log_id)));
            }
        }
    }

    /// Answer the AppendEntries whose I/O is now durable.
    fn release_parked_responses(&mut self) {
        let flushed = self.engine.state.io.flushed.seq;
        while self.parked_append_responses.front().is_some_and(|(seq, _, _)| *seq <= flushed) {
            if let Some((_, tx, resp)) = self.parked_append_responses.pop_front() {
                let _ = tx.send(resp);
            }
        }
    }

    /// Send `req` to every other voter, each in its own task so a hung peer delays nobody.
    async fn send_votes(&mut self, req: VoteRequest<C>) {
        let me = self.engine.id();
        let membership = self.engine.state.membership.effective().clone();
        let option = RPCOption::new(self.config.rpc_timeout);
        for target in membership.voter_ids() {
            if target == me {
                continue;
            }
            let Some(node) = membership.get_node(&target) else { continue };
            let mut client = self.network.new_client(target, node).await;
            let tx = self.notify_tx.clone();
            let req = req.clone();
            tokio::spawn(async move {
                let resp = match timeout(option.timeout, client.vote(req, option)).await {
                    Ok(r) => r,
                    Err(_) => Err(RPCError::Timeout(option.timeout)),
                };
                let _ = tx.send(Notification::VoteResponse { target, resp: resp.map_err(Box::new) });
            });
        }
    }

    /// Tell `to` to campaign, in a task of its own.
    async fn send_transfer_leader(&mut self, to: C::NodeId, req: TransferLeaderRequest<C>) {
        let Some(node) = self.engine.state.membership.effective().get_node(&to).cloned() else { return };
        let mut client = self.network.new_client(to, &node).await;
        let option = RPCOption::new(self.config.rpc_timeout);
        tokio::spawn(async move {
            match timeout(option.timeout, client.transfer_leader(req, option)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(target = %to, error = %e, "telling the transfer target to campaign failed"),
                Err(_) => warn!(target = %to, "telling the transfer target to campaign timed out"),
            }
        });
    }

    /// Keep the streams of targets that remain; start the new ones; stop the removed ones.
    async fn update_replications(&mut self, vote: Vote<C>, targets: Vec<ReplicationTarget<C>>) {
        // New streams must see their own leader vote published, or they would take the
        // previous vote for a change of leadership and stop at once.
        self.publish();
        // A node that a committed config removed learns that it was removed only from a request
        // carrying the commit index: its stream runs on for an election timeout, which sends
        // it the commit (at once, or with the next heartbeat) if it is reachable. Without it,
        // a node that holds the config removing it, not known committed, is still a voter of
        // the committed config it knows, and campaigns (see `Engine::may_campaign`). Its
        // answers count for nothing: the Engine no longer replicates to it.
        let until = self.clock.now() + self.config.election_timeout_max;
        // A finished stream is dropped too: the stream of a removed node that answered with a
        // newer term ends while its leader leads on (the Engine ignores that term, see
        // `Engine::on_replication_progress`); kept, it would stand for the node if it is added
        // again, which would then never be replicated to (found in review).
        self.replications.retain(|_, h| h.vote == vote && !h.is_finished());
        for (id, h) in self.replications.iter_mut() {
            if targets.iter().any(|t| t.id == *id) {
                // A node added again before its time ran out is a target like any other.
                h.departing_until = None;
            } else if h.departing_until.is_none() {
                debug!(target = %id, "removed from the membership; its stream runs on for an election timeout");
                h.departing_until = Some(until);
            }
        }
        if targets.is_empty() && self.replications.is_empty() {
            self.watches.close_streams();
        }
        for t in targets {
            if self.replications.contains_key(&t.id) {
                continue;
            }
            debug!(target = %t.id, %vote, "start replication stream");
            let client = self.network.new_client(t.id, &t.node).await;
            let reader = self.log_store.get_log_reader().await;
            let (submitted, committed) = (self.io_progress(), self.engine.state.committed);
            let watches = self.watches.streams(submitted, committed);
            // The group's election seed (different per node and per group of a host, see
            // `Raft::start`) mixed with the target: the streams of a host's groups to one node
            // spread their retries differently.
            let jitter_seed = {
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&(self.engine.config.seed, t.id), &mut h);
                std::hash::Hasher::finish(&h)
            };
            let handle = ReplicationHandle::spawn(
                self.engine.id(),
                t.id,
                vote,
                client,
                reader,
                self.config.clone(),
                watches.submitted.subscribe(),
                watches.committed.subscribe(),
                watches.heartbeat.subscribe(),
                watches.quiesced.subscribe(),
                self.host.as_ref().map(|h| h.liveness.clone()),
                self.notify_tx.clone(),
                self.sm_tx.clone(),
                self.clock,
                jitter_seed,
            );
            if self.replications.insert(t.id, handle).is_some() {
                warn!(target = %t.id, "replaced a replication stream");
            }
        }
    }
}

/// The answer to a proposal at `log_id` that a truncation removed: `Discarded` if the removed
/// entries are `dead` (`Engine::truncated_entries_are_dead`), `OutcomeUnknown` otherwise.
pub(crate) fn truncated_answer<C: RaftTypeConfig>(dead: bool, log_id: LogId<C>) -> ClientWriteError<C> {
    if dead {
        ClientWriteError::Discarded { log_id }
    } else {
        debug!(%log_id, "a proposal was truncated before the entry replacing it committed; its outcome is unknown");
        ClientWriteError::OutcomeUnknown { log_id }
    }
}
