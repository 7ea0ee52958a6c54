//! The model's actions: which are enabled in a state, and what each does.
//!
//! An action is one input to one node (as RaftCore would feed it), or a move of the
//! environment: the network reorders, duplicates or loses a message, a disk flushes, time
//! passes, a node crashes. The replication streams a leader runs are modelled by
//! [`Action::Replicate`] and [`Action::SendSnapshot`]: one request built the way
//! `ReplicationCore` builds it (see the module docs of `model`).

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::net::{Msg, Payload};
use super::properties::{self, Violation};
use super::reads;
use super::storage::{C, ModelSnapshot};
use super::world::World;
use super::{Bounds, Mutant, instant};
use crate::engine::ReplicationResult;
use crate::types::{AppendEntriesRequest, AppendEntriesResponse, ReadPolicy};
use crate::types::{EntryPayload, LogIdOptionExt, Vote};

/// One step of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// The clock advances one tick.
    Tick,
    /// The node's timer fires (at or after its deadline): `handle_timeout`.
    Timeout(u64),
    /// Message `i` of the network (in its sorted order) is delivered.
    Deliver(usize),
    /// Message `i` is delivered and a copy stays in flight.
    Duplicate(usize),
    /// Message `i` is lost.
    Drop(usize),
    /// The node's log store makes its oldest pending operation durable.
    Flush(u64),
    /// The node's state machine applies its oldest queued batch (unless applying is eager).
    Apply(u64),
    /// The leader's stream to `target` sends an AppendEntries (see [`Send`]).
    Replicate { leader: u64, target: u64, send: Send },
    /// The leader's stream sends its snapshot to a target that is behind its purged log.
    SendSnapshot { leader: u64, target: u64 },
    /// A client write arrives at the node.
    Write(u64),
    /// A client read arrives at the node.
    Read(u64, ReadPolicy),
    /// The node crashes and restarts at once.
    Crash(u64),
    /// The membership change of the bounds is asked of the node.
    ChangeMembership(u64),
    /// The node builds a snapshot now (`trigger().snapshot()`), and purges its log behind it.
    Snapshot(u64),
    /// An operator forces an election at the node (`trigger().elect()`).
    Elect(u64),
    /// The leader is asked to hand leadership to `to`.
    Transfer { leader: u64, to: u64 },
    /// Node `id` learns it woke as a survivor of voter `of` (see `Bounds::orphans`).
    Orphan { id: u64, of: u64 },
}

impl Action {
    /// The action's name without its arguments, for statistics.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Action::Tick => "Tick",
            Action::Timeout(_) => "Timeout",
            Action::Deliver(_) => "Deliver",
            Action::Duplicate(_) => "Duplicate",
            Action::Drop(_) => "Drop",
            Action::Flush(_) => "Flush",
            Action::Apply(_) => "Apply",
            Action::Replicate { .. } => "Replicate",
            Action::SendSnapshot { .. } => "SendSnapshot",
            Action::Write(_) => "Write",
            Action::Read(..) => "Read",
            Action::Crash(_) => "Crash",
            Action::ChangeMembership(_) => "ChangeMembership",
            Action::Snapshot(_) => "Snapshot",
            Action::Elect(_) => "Elect",
            Action::Transfer { .. } => "Transfer",
            Action::Orphan { .. } => "Orphan",
        }
    }
}

/// What an AppendEntries of [`Action::Replicate`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Send {
    /// From the target's matched log id, every entry after it (a heartbeat once caught up).
    All,
    /// From the target's matched log id, only the entry after it (`max_payload_entries` 1).
    One,
    /// No entries, at the leader's last log id: the first probe of a new stream.
    Probe,
}

/// Every action that may change `w`; some turn out to be no-ops when executed.
pub(super) fn enabled(w: &World, b: &Bounds) -> Vec<Action> {
    let mut actions = Vec::new();
    if w.budget.ticks > 0 {
        actions.push(Action::Tick);
    }
    for i in 0..w.net.len() {
        if w.net.same_as_previous(i) {
            continue;
        }
        actions.push(Action::Deliver(i));
        if w.budget.dups > 0 && w.net.len() < b.max_net {
            actions.push(Action::Duplicate(i));
        }
        if w.budget.drops > 0 {
            actions.push(Action::Drop(i));
        }
    }
    for node in &w.nodes {
        let id = node.id();
        let e = &node.engine;
        let can_campaign = e.state.vote.term < b.max_term;
        if e.election_deadline.is_some_and(|d| instant(w.clock) >= d) && (e.leader.is_some() || can_campaign) {
            actions.push(Action::Timeout(id));
        }
        if !node.store.pending.is_empty() {
            actions.push(Action::Flush(id));
        }
        if !node.apply_queue.is_empty() {
            actions.push(Action::Apply(id));
        }
        if w.budget.crashes > 0 {
            actions.push(Action::Crash(id));
        }
        if w.budget.snapshots > 0 && node.sm.last_applied() > e.state.snapshot_last {
            actions.push(Action::Snapshot(id));
        }
        if w.budget.elects > 0 && can_campaign {
            actions.push(Action::Elect(id));
        }
        if w.budget.orphans > 0 && e.leader.is_none() {
            for of in e.state.membership.effective().voter_ids().into_iter().filter(|of| *of != id) {
                actions.push(Action::Orphan { id, of });
            }
        }
        let Some(leader) = &e.leader else { continue };
        if w.budget.writes > 0 {
            actions.push(Action::Write(id));
        }
        if w.budget.reads > 0 {
            actions.extend(b.read_policies.iter().map(|p| Action::Read(id, *p)));
        }
        if w.budget.changes > 0 {
            actions.push(Action::ChangeMembership(id));
        }
        if w.budget.transfers > 0 {
            for to in e.state.membership.effective().voter_ids().into_iter().filter(|to| *to != id) {
                actions.push(Action::Transfer { leader: id, to });
            }
        }
        if w.net.len() < b.max_net {
            for target in leader.progress.keys().filter(|t| w.net.requests_between(id, **t) < b.max_in_flight) {
                actions.push(Action::Replicate { leader: id, target: *target, send: Send::All });
                if b.partial_appends {
                    actions.push(Action::Replicate { leader: id, target: *target, send: Send::One });
                }
                if b.probes {
                    actions.push(Action::Replicate { leader: id, target: *target, send: Send::Probe });
                }
                if node.sm.snapshot.is_some() {
                    actions.push(Action::SendSnapshot { leader: id, target: *target });
                }
            }
        }
    }
    actions
}

/// What `action` does in `w`, for traces.
pub(super) fn describe(w: &World, action: Action) -> String {
    match action {
        Action::Deliver(i) => format!("deliver {:?}", w.net.get(i)),
        Action::Duplicate(i) => format!("deliver and keep a copy of {:?}", w.net.get(i)),
        Action::Drop(i) => format!("lose {:?}", w.net.get(i)),
        a => format!("{a:?}"),
    }
}

/// The state after `action`, `Ok(None)` if it changes nothing or is not possible here, or the
/// property it breaks. A panic in the Engine is a violation too (its `debug_assert!`s).
pub(super) fn next(w: &World, action: Action, b: &Bounds) -> Result<Option<World>, Violation> {
    let mut new = w.clone();
    let outcome = catch_unwind(AssertUnwindSafe(|| execute(&mut new, action, b)));
    let crashed = match action {
        Action::Crash(id) => Some(id),
        _ => None,
    };
    match outcome {
        Ok(Ok(true)) => forget_dead_answers(&mut new),
        Ok(Ok(false)) => return Ok(None),
        Ok(Err(v)) => return Err(v),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(Violation::new("engine panicked", msg));
        }
    }
    properties::check(w, &mut new, crashed)?;
    Ok(Some(new))
}

/// Drop the answers in flight that their receiver will ignore whatever happens: delivering
/// them is a no-op now and forever, so the states with and without them are one.
///
/// - An AppendEntries or snapshot answer is read only by the stream of leadership `vote`,
///   which ends for good once its node no longer leads with that vote.
/// - A vote answer counts only for the candidate whose vote it carries, or raises the term if
///   it carries a greater vote. Once the node is past that term and is not that candidate,
///   no campaign of its future carries that vote (campaigns take a greater term).
fn forget_dead_answers(w: &mut World) {
    let nodes = &w.nodes;
    w.net.retain(|m| {
        let e = &nodes[(m.to - 1) as usize].engine;
        match &m.payload {
            Payload::AppendResp { vote, .. } | Payload::SnapshotResp { vote, .. } => {
                e.leader.as_ref().is_some_and(|l| l.vote == *vote)
            }
            Payload::VoteResp(resp) => {
                let candidate = e.candidate.as_ref().is_some_and(|c| c.vote == resp.vote);
                candidate || resp.vote.term > e.state.vote.term || resp.vote.is_gt(&e.state.vote)
            }
            _ => true,
        }
    });
}

/// Carry out `action` on `w`; `false` if it is not possible.
fn execute(w: &mut World, action: Action, b: &Bounds) -> Result<bool, Violation> {
    let now = w.clock;
    let idx = |id: u64| (id - 1) as usize;
    match action {
        Action::Tick => {
            w.clock += 1;
            w.budget.ticks -= 1;
        }
        Action::Timeout(id) => {
            w.node_mut(idx(id)).engine.handle_timeout(instant(now));
            w.run_commands(idx(id), b)?;
        }
        Action::Deliver(i) => {
            let msg = w.net.remove(i);
            return deliver(w, msg, b);
        }
        Action::Duplicate(i) => {
            w.budget.dups -= 1;
            let msg = w.net.get(i).clone();
            return deliver(w, msg, b);
        }
        Action::Drop(i) => {
            w.budget.drops -= 1;
            w.net.remove(i);
        }
        Action::Flush(id) => {
            let node = w.node_mut(idx(id));
            let io =
                node.store_mut().flush_one().map_err(|e| Violation::new("storage contract", format!("n{id}: {e}")))?;
            if let Some(io) = io {
                node.engine.on_log_flushed(io);
            }
            w.run_commands(idx(id), b)?;
        }
        Action::Apply(id) => return w.apply_one(idx(id), b),
        Action::Replicate { leader, target, send } => return replicate(w, leader, target, send, b),
        Action::SendSnapshot { leader, target } => return send_snapshot(w, leader, target, b),
        Action::Write(id) => {
            if w.node(id).engine.is_transferring() {
                return Ok(false);
            }
            let data = format!("w{}", b.writes - w.budget.writes);
            let e = &mut w.node_mut(idx(id)).engine;
            e.propose(instant(now), [EntryPayload::Normal(data)]);
            w.budget.writes -= 1;
            w.run_commands(idx(id), b)?;
        }
        Action::Read(id, policy) => {
            w.budget.reads -= 1;
            let must_see = w.ghost.latest_committed();
            let node = w.node_mut(idx(id));
            if let Some(read) = reads::on_read(&mut node.engine, &mut node.reads, policy, now, must_see) {
                std::sync::Arc::make_mut(&mut w.ghost).read_confirmed(read)?;
            }
            w.run_commands(idx(id), b)?;
        }
        Action::Crash(id) => {
            w.budget.crashes -= 1;
            w.crash_restart(idx(id), b)?;
        }
        Action::ChangeMembership(id) => {
            let e = &mut w.node_mut(idx(id)).engine;
            let Ok(target) = b.change.members().apply_to(e.state.membership.effective(), true) else {
                return Ok(false);
            };
            if !matches!(e.change_membership(instant(now), target), Ok(Some(_))) {
                return Ok(false);
            }
            w.budget.changes -= 1;
            w.run_commands(idx(id), b)?;
        }
        Action::Snapshot(id) => {
            w.budget.snapshots -= 1;
            let n = idx(id);
            w.node_mut(n).engine.trigger_snapshot();
            w.run_commands(n, b)?;
            // The build runs off the Raft task; the model lets it finish in the same step.
            let node = w.node_mut(n);
            if std::mem::take(&mut node.build_requested) {
                let built = node.sm_mut().build_snapshot(id);
                node.engine.on_snapshot_built(built.meta.last_log_id);
                w.run_commands(n, b)?;
            }
        }
        Action::Elect(id) => {
            w.budget.elects -= 1;
            w.node_mut(idx(id)).engine.trigger_elect(instant(now));
            w.run_commands(idx(id), b)?;
        }
        Action::Transfer { leader, to } => {
            if w.node_mut(idx(leader)).engine.transfer_leader(instant(now), to).is_err() {
                return Ok(false);
            }
            w.budget.transfers -= 1;
            w.run_commands(idx(leader), b)?;
        }
        Action::Orphan { id, of } => {
            if w.nodes[idx(id)].engine.orphan_of == Some(of) {
                return Ok(false);
            }
            w.budget.orphans -= 1;
            w.node_mut(idx(id)).engine.orphan_of = Some(of);
        }
    }
    Ok(true)
}

/// The leader's stream sends one AppendEntries to `target` (see [`Action::Replicate`]).
fn replicate(w: &mut World, leader: u64, target: u64, send: Send, b: &Bounds) -> Result<bool, Violation> {
    let node = w.node(leader);
    let Some(l) = &node.engine.leader else { return Ok(false) };
    let Some(matched) = l.progress.get(&target).copied() else { return Ok(false) };
    let vote = l.vote;
    let log = &node.store.submitted;
    let (prev_log_id, entries) = if send == Send::Probe {
        (log.last_log_id(), Vec::new())
    } else {
        // Entries at or below the purged id can only go as a snapshot.
        if matched.next_index() < log.purged.next_index() && matched != log.purged {
            return Ok(false);
        }
        let after = log.entries.range(matched.next_index()..).map(|(_, e)| e.clone());
        let entries: Vec<_> = if send == Send::One { after.take(1).collect() } else { after.collect() };
        if send == Send::One && entries.len() == log.entries.range(matched.next_index()..).count() {
            // The same as sending all: leave it to `Send::All`.
            return Ok(false);
        }
        (matched, entries)
    };
    let leader_commit = node.engine.state.committed;
    let now = w.clock;
    let token = reads::on_send(&mut w.node_mut((leader - 1) as usize).engine, now);
    let req = AppendEntriesRequest { vote, prev_log_id, entries, leader_commit, quiesce: None };
    let msg = Msg { from: leader, to: target, payload: Payload::Append { req, token } };
    // Sending a copy of a message in flight is a duplication, which has its own budget.
    if w.net.contains(&msg) {
        return Ok(false);
    }
    w.send(msg, b.max_net);
    Ok(true)
}

/// The leader's stream sends its snapshot to `target`, behind the leader's purged log.
fn send_snapshot(w: &mut World, leader: u64, target: u64, b: &Bounds) -> Result<bool, Violation> {
    let node = w.node(leader);
    let Some(l) = &node.engine.leader else { return Ok(false) };
    let Some(matched) = l.progress.get(&target).copied() else { return Ok(false) };
    let vote = l.vote;
    let Some(snapshot) = node.sm.snapshot.clone() else { return Ok(false) };
    let Some(purged) = node.store.submitted.purged else { return Ok(false) };
    if matched.next_index() > purged.index {
        return Ok(false);
    }
    let now = w.clock;
    let token = reads::on_send(&mut w.node_mut((leader - 1) as usize).engine, now);
    let msg = Msg { from: leader, to: target, payload: Payload::Snapshot { vote, snapshot, token } };
    if w.net.contains(&msg) {
        return Ok(false);
    }
    w.send(msg, b.max_net);
    Ok(true)
}

/// Deliver `msg` to its node, as RaftCore hands RPCs and answers to the Engine.
fn deliver(w: &mut World, msg: Msg, b: &Bounds) -> Result<bool, Violation> {
    let now = w.clock;
    let n = (msg.to - 1) as usize;
    let (from, to) = (msg.from, msg.to);
    match msg.payload {
        Payload::Vote(req) => {
            let resp = w.node_mut(n).engine.handle_vote_req(instant(now), &req);
            // The vote is durable before the answer leaves: `run_commands` saved it.
            w.run_commands(n, b)?;
            w.send(Msg { from: to, to: from, payload: Payload::VoteResp(resp) }, b.max_net);
        }
        Payload::VoteResp(resp) => {
            let e = &mut w.node_mut(n).engine;
            if resp.vote_granted && e.state.vote.term >= b.max_term && e.candidate.as_ref().is_some_and(|c| c.pre_vote)
            {
                // A won pre-vote would start an election past the term bound.
                return Ok(false);
            }
            e.handle_vote_resp(instant(now), from, &resp);
            w.run_commands(n, b)?;
        }
        Payload::Append { req, token } => {
            let vote = req.vote;
            let (resp, wait_for) = w.node_mut(n).engine.handle_append_entries(instant(now), req);
            w.run_commands(n, b)?;
            let answer = Msg { from: to, to: from, payload: Payload::AppendResp { vote, resp, token } };
            match wait_for {
                // An acknowledgement leaves only once what it acknowledges is durable.
                Some(io)
                    if io.seq > w.nodes[n].engine.state.io.flushed.seq && b.mutant != Some(Mutant::AckBeforeFlush) =>
                {
                    w.node_mut(n).parked.push((io.seq, answer));
                }
                _ => w.send(answer, b.max_net),
            }
        }
        Payload::AppendResp { vote, resp, token } => append_answered(w, n, from, vote, resp, token, b)?,
        Payload::Snapshot { vote, snapshot, token } => {
            let resp_vote = install_snapshot(w, n, vote, &snapshot, b)?;
            let payload = Payload::SnapshotResp { vote, snapshot, resp_vote, token };
            w.send(Msg { from: to, to: from, payload }, b.max_net);
        }
        Payload::SnapshotResp { vote, snapshot, resp_vote, token } => {
            snapshot_answered(w, n, from, vote, &snapshot, resp_vote, token, b)?;
        }
        Payload::TransferLeader(req) => {
            if w.nodes[n].engine.state.vote.term >= b.max_term {
                // Campaigning would pass the term bound: as if the message were lost.
                return Ok(true);
            }
            w.node_mut(n).engine.handle_transfer_leader(instant(now), &req);
            w.run_commands(n, b)?;
        }
    }
    Ok(true)
}

/// Whether node `n` still runs the replication stream of leadership `vote` to `target`: a
/// stream that ended (another leadership, a removed target) reports nothing.
fn stream_alive(w: &World, n: usize, target: u64, vote: Vote<C>) -> bool {
    w.nodes[n].engine.leader.as_ref().is_some_and(|l| l.vote == vote && l.progress.contains_key(&target))
}

/// The leader's stream to `from` got the answer to an AppendEntries, as `ReplicationCore`
/// reports it: an acknowledgement unless it is a greater vote, and the matched log id.
fn append_answered(
    w: &mut World,
    n: usize,
    from: u64,
    vote: Vote<C>,
    resp: AppendEntriesResponse<C>,
    token: reads::AckToken,
    b: &Bounds,
) -> Result<(), Violation> {
    if !stream_alive(w, n, from, vote) {
        return Ok(());
    }
    let now = w.clock;
    let e = &mut w.node_mut(n).engine;
    match resp {
        AppendEntriesResponse::HigherVote(v) if v.is_gt(&vote) => {
            e.on_replication_progress(instant(now), from, vote, ReplicationResult::HigherVote(v));
        }
        AppendEntriesResponse::HigherVote(_) => {}
        AppendEntriesResponse::Success { matched } => {
            reads::on_ack(e, from, vote, token, now);
            e.on_replication_progress(instant(now), from, vote, ReplicationResult::Matched(matched));
        }
        AppendEntriesResponse::Conflict { .. } => reads::on_ack(e, from, vote, token, now),
    }
    w.run_commands(n, b)
}

/// `RaftCore::handle_install_snapshot` for a snapshot in one chunk; returns the vote it answers.
fn install_snapshot(
    w: &mut World,
    n: usize,
    vote: Vote<C>,
    snapshot: &ModelSnapshot,
    b: &Bounds,
) -> Result<Vote<C>, Violation> {
    let now = w.clock;
    if let Err(v) = w.node_mut(n).engine.accept_leader(instant(now), vote) {
        return Ok(v);
    }
    w.run_commands(n, b)?;
    let node = w.node_mut(n);
    let resp_vote = node.engine.state.vote;
    if node.engine.install_snapshot(snapshot.meta.clone()) {
        node.installing = Some(snapshot.clone());
    }
    w.run_commands(n, b)?;
    Ok(resp_vote)
}

/// The leader's stream to `from` got the answer to its snapshot, as
/// `ReplicationCore::send_snapshot` reports it: an acknowledgement only. A snapshot sent is
/// not a snapshot installed (a follower whose committed index covers it ignores it), so the
/// match point rises only when a later probe proves it.
#[allow(clippy::too_many_arguments)]
fn snapshot_answered(
    w: &mut World,
    n: usize,
    from: u64,
    vote: Vote<C>,
    _snapshot: &ModelSnapshot,
    resp_vote: Vote<C>,
    token: reads::AckToken,
    b: &Bounds,
) -> Result<(), Violation> {
    if !stream_alive(w, n, from, vote) {
        return Ok(());
    }
    let now = w.clock;
    let e = &mut w.node_mut(n).engine;
    if resp_vote != vote {
        if resp_vote.is_gt(&vote) {
            e.on_replication_progress(instant(now), from, vote, ReplicationResult::HigherVote(resp_vote));
        }
    } else {
        reads::on_ack(e, from, vote, token, now);
    }
    w.run_commands(n, b)
}
