//! Linearizable reads: everything the model knows about them, behind one small interface,
//! so that a change of the read API means changing this file only.
//!
//! The API (`src/engine/read.rs`, `src/engine/lease.rs`, `src/core/read.rs`):
//!
//! - a read arriving at the leader calls `Engine::leader_read(now, policy)`: under
//!   `LeaseRead` with a valid lease it is answered at once; otherwise it takes a new heartbeat
//!   round (the Engine pushes `BroadcastHeartbeat`) and waits with a `ReadTicket`;
//! - a replication stream tags every request with the latest round it has seen — in the
//!   model, the Engine's `heartbeat_round` when the request is sent, since RaftCore publishes
//!   a round in the same batch that creates it — and when the request is answered calls
//!   `Engine::on_heartbeat_acked(target, vote, Ack { sent_at, round, marked })`: the [`AckToken`] a
//!   request carries out and its answer carries back;
//! - after every input RaftCore asks `Engine::read_status(ticket)` for each waiting read:
//!   confirmed, waiting, or failed (its leadership is over).
//!
//! To re-point the model at another API, change [`AckToken`], [`on_send`], [`on_ack`],
//! [`on_read`] and [`check_pending`]; the rest of the model only calls these.
//!
//! # What the model checks of a read
//!
//! A read *arrives* at one step of the model's run and is *confirmed* (answered with a read
//! log id `R`) at the same or a later step. When it arrives, `must_see` is the greatest log id
//! any node's Engine then held as committed: every write a client could have seen
//! acknowledged before the read started is at or below it (a write is acknowledged only after
//! its leader committed it). The read is linearizable iff
//!
//! 1. `R.index >= must_see.index`, and
//! 2. `R` is, or becomes, the committed entry at its index.
//!
//! Together they say the state the client reads (the leader's state machine once it applied
//! `R`) holds every write acknowledged before the read started, and only committed writes.
//! (2) is checked as soon as any entry at `R`'s index is known committed; a read whose `R`
//! is still undecided when the search ends is not judged.

use std::fmt;

use super::storage::C;
use super::{Tick, instant};
use crate::engine::{Ack, Engine, ReadStart, ReadStatus, ReadTicket};
use crate::types::ReadPolicy;
use crate::types::{LogId, Vote};

/// What a replication request carries out and its answer carries back, so the leader knows
/// what an answer proves: when its request was sent, and in which heartbeat round.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct AckToken {
    sent_at: Tick,
    round: u64,
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sent@{}/r{}", self.sent_at, self.round)
    }
}

/// The leader's stream sends a request at `now`.
pub(super) fn on_send(engine: &mut Engine<C>, now: Tick) -> AckToken {
    AckToken { sent_at: now, round: engine.heartbeat_round }
}

/// The stream of leadership `vote` got `target`'s answer (anything but a greater vote) to the
/// request that carried `token`.
pub(super) fn on_ack(engine: &mut Engine<C>, target: u64, vote: Vote<C>, token: AckToken, _now: Tick) {
    engine.on_heartbeat_acked(target, vote, Ack { sent_at: instant(token.sent_at), round: token.round, marked: false });
}

/// A read RaftCore holds until the Engine confirms it.
#[derive(Clone, Debug)]
pub(super) struct PendingRead {
    ticket: ReadTicket<C>,
    must_see: Option<LogId<C>>,
}

/// A read answered to the client.
#[derive(Clone, Debug)]
pub(super) struct ConfirmedRead {
    pub(super) node: u64,
    pub(super) read_log_id: Option<LogId<C>>,
    pub(super) must_see: Option<LogId<C>>,
}

/// A client read arrives at `node` at `now`; `must_see` as in the module docs. Returns the
/// read if it is answered at once; queues it in `pending` if it waits. The caller runs the
/// Engine's commands after (a waiting read pushes `BroadcastHeartbeat`).
pub(super) fn on_read(
    engine: &mut Engine<C>,
    pending: &mut Vec<PendingRead>,
    policy: ReadPolicy,
    now: Tick,
    must_see: Option<LogId<C>>,
) -> Option<ConfirmedRead> {
    match engine.leader_read(instant(now), policy) {
        // Not the leader: the client is told to go elsewhere.
        ReadStart::NotLeader => None,
        ReadStart::Ready(read_log_id) => Some(ConfirmedRead { node: engine.id(), read_log_id, must_see }),
        ReadStart::Wait(ticket) => {
            pending.push(PendingRead { ticket, must_see });
            None
        }
    }
}

/// After an input to `engine`'s node: the pending reads now confirmed, removed from `pending`;
/// failed ones are dropped (the client is told to go elsewhere).
pub(super) fn check_pending(engine: &Engine<C>, pending: &mut Vec<PendingRead>, _now: Tick) -> Vec<ConfirmedRead> {
    let mut confirmed = Vec::new();
    pending.retain(|r| match engine.read_status(&r.ticket) {
        ReadStatus::Waiting => true,
        ReadStatus::Failed => false,
        ReadStatus::Confirmed(read_log_id) => {
            confirmed.push(ConfirmedRead { node: engine.id(), read_log_id, must_see: r.must_see });
            false
        }
    });
    confirmed
}

/// Condition (1) of the module docs, judged when the read is answered.
pub(super) fn check_fresh(read: &ConfirmedRead) -> Result<(), String> {
    let (Some(must_see), read_log_id) = (read.must_see, read.read_log_id) else { return Ok(()) };
    if read_log_id.is_none_or(|r| r.index < must_see.index) {
        return Err(format!(
            "n{} answered a read at {read_log_id:?}, but {must_see} was committed before the read arrived",
            read.node
        ));
    }
    Ok(())
}
