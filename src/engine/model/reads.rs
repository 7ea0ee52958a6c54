//! Linearizable reads: everything the model knows about them, behind one small interface,
//! so that a change of the read API means changing this file only.
//!
//! Today's API (`src/engine/lease.rs`, `src/core/read.rs`):
//!
//! - a replication stream remembers when it sent each request and, when the request is
//!   answered, calls `Engine::on_heartbeat_acked(target, vote, sent_at)`: the [`AckToken`] a
//!   request carries out and its answer carries back is that send time;
//! - a read arriving at the leader at `now` takes `read_log_id()`; under `LeaseRead` it is
//!   answered at once if `lease_valid(now)`, otherwise it waits as a pending read with
//!   `since = now`;
//! - after every input RaftCore confirms each pending read with
//!   `quorum_acked_at(now) >= since && read_log_id <= committed`, and fails them all once the
//!   node is no longer leader.
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
use crate::engine::Engine;
use crate::raft::ReadPolicy;
use crate::types::{LogId, Vote};

/// What a replication request carries out and its answer carries back, so the leader knows
/// which of its requests an answer proves a follower followed it after. Today: the send time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct AckToken {
    sent_at: Tick,
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sent@{}", self.sent_at)
    }
}

/// The leader's stream sends a request at `now`.
pub(super) fn on_send(_engine: &mut Engine<C>, now: Tick) -> AckToken {
    AckToken { sent_at: now }
}

/// The stream of leadership `vote` got `target`'s answer (anything but a greater vote) to the
/// request that carried `token`.
pub(super) fn on_ack(engine: &mut Engine<C>, target: u64, vote: Vote<C>, token: AckToken, _now: Tick) {
    engine.on_heartbeat_acked(target, vote, instant(token.sent_at));
}

/// A read RaftCore holds until a quorum confirms its leader.
#[derive(Clone, Debug)]
pub(super) struct PendingRead {
    since: Tick,
    read_log_id: Option<LogId<C>>,
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
/// read if it is answered at once; queues it in `pending` if it waits.
pub(super) fn on_read(
    engine: &Engine<C>,
    pending: &mut Vec<PendingRead>,
    policy: ReadPolicy,
    now: Tick,
    must_see: Option<LogId<C>>,
) -> Option<ConfirmedRead> {
    // Not the leader: the client is told to go elsewhere.
    let read_log_id = engine.read_log_id()?;
    if policy == ReadPolicy::LeaseRead && engine.lease_valid(instant(now)) {
        return Some(ConfirmedRead { node: engine.id(), read_log_id, must_see });
    }
    pending.push(PendingRead { since: now, read_log_id, must_see });
    None
}

/// After an input to `engine`'s node: the pending reads now confirmed, removed from `pending`.
pub(super) fn check_pending(engine: &Engine<C>, pending: &mut Vec<PendingRead>, now: Tick) -> Vec<ConfirmedRead> {
    if pending.is_empty() {
        return Vec::new();
    }
    if engine.leader.is_none() {
        pending.clear();
        return Vec::new();
    }
    let Some(acked) = engine.quorum_acked_at(instant(now)) else { return Vec::new() };
    let committed = engine.state.committed;
    let mut confirmed = Vec::new();
    pending.retain(|r| {
        if acked >= instant(r.since) && r.read_log_id <= committed {
            confirmed.push(ConfirmedRead { node: engine.id(), read_log_id: r.read_log_id, must_see: r.must_see });
            false
        } else {
            true
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
