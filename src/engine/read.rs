//! Linearizable reads on the leader (Raft §8; dissertation §6.4): the log id a read must see
//! applied, confirmed by a quorum round that started after the read arrived, or by the lease.
//!
//! "After" is proven by identity, never by comparing times. Every read that waits takes a new
//! *heartbeat round* number; RaftCore publishes it to the replication streams, each request a
//! stream sends carries the latest round the stream has seen, and an answer brings back the
//! round of the very request it answers (see [`Ack`](crate::engine::Ack)). A request carrying
//! round `r` was built after round `r` was published, hence after every read of round `r` or
//! lower arrived; a quorum answering such requests shows that this leader still led then.

use tokio::time::Instant;

use crate::RaftTypeConfig;
use crate::engine::{Command, Engine};
use crate::types::ReadPolicy;
use crate::types::{LogId, Vote};

/// A read that waits for a quorum to confirm the leadership it arrived under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadTicket<C: RaftTypeConfig> {
    /// The leadership the read arrived under; it is answered only under the same one.
    vote: Vote<C>,
    /// The heartbeat round the read waits for a quorum to answer.
    round: u64,
    /// What the read must see applied: committed when the read arrived, and at least this
    /// leader's blank entry (before it commits, the leader may not know what is committed).
    read_log_id: Option<LogId<C>>,
}

/// How [`Engine::leader_read`] starts a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadStart<C: RaftTypeConfig> {
    /// Answer now: the lease holds; reading at this (committed) log id is linearizable.
    Ready(Option<LogId<C>>),
    /// Wait until [`Engine::read_status`] confirms the ticket.
    Wait(ReadTicket<C>),
    /// This node is not the leader.
    NotLeader,
}

/// Where a waiting read stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadStatus<C: RaftTypeConfig> {
    /// Confirmed: reading at this log id, once applied, is linearizable.
    Confirmed(Option<LogId<C>>),
    /// A quorum has not answered the read's round yet, or its log id is not committed yet.
    Waiting,
    /// The leadership the read arrived under is over: it can never be confirmed.
    Failed,
}

impl<C: RaftTypeConfig> Engine<C> {
    /// A linearizable read arrived at `now`.
    ///
    /// Under [`ReadPolicy::LeaseRead`] with a valid lease it is answered at once. Otherwise it
    /// takes a new heartbeat round, pushes a `BroadcastHeartbeat` so every stream sends a
    /// request of that round, and waits for [`read_status`](Self::read_status) to confirm it.
    pub(crate) fn leader_read(&mut self, now: Instant, policy: ReadPolicy) -> ReadStart<C> {
        if self.leader.is_none() {
            return ReadStart::NotLeader;
        }
        // Reads need the leader: a quiesced group wakes, so heartbeats renew the lease for the
        // reads that follow (this one may still be served by the lease that is left).
        self.leader_wake(now);
        let Some(leader) = self.leader.as_ref() else { return ReadStart::NotLeader };
        if policy == ReadPolicy::LeaseRead && self.lease_valid(now) {
            // A valid lease implies the blank entry is committed: `committed` is complete.
            return ReadStart::Ready(self.state.committed);
        }
        let ticket = ReadTicket {
            vote: leader.vote,
            round: self.heartbeat_round + 1,
            read_log_id: self.state.committed.max(leader.blank_log_id),
        };
        self.heartbeat_round = ticket.round;
        // Reads that arrive in one batch share one broadcast of the newest round.
        if let Some(Command::BroadcastHeartbeat { round }) = self.output.back_mut() {
            *round = ticket.round;
        } else {
            self.output.push_back(Command::BroadcastHeartbeat { round: ticket.round });
        }
        ReadStart::Wait(ticket)
    }

    /// Whether the read of `ticket` is confirmed: under the leadership it arrived in, a quorum
    /// (of every config) answered a request of its round or later, and its log id is
    /// committed.
    pub(crate) fn read_status(&self, ticket: &ReadTicket<C>) -> ReadStatus<C> {
        let Some(leader) = self.leader.as_ref().filter(|l| l.vote == ticket.vote) else {
            return ReadStatus::Failed;
        };
        let me = self.config.id;
        let round = self.state.membership.effective().quorum_value(|id| {
            if *id == me { self.heartbeat_round } else { leader.acked.get(id).map_or(0, |a| a.round) }
        });
        if round.is_some_and(|r| r >= ticket.round) && ticket.read_log_id <= self.state.committed {
            ReadStatus::Confirmed(ticket.read_log_id)
        } else {
            ReadStatus::Waiting
        }
    }
}
