//! RaftCore's side of quiescence (the protocol is in `engine/quiesce.rs`): the host's node
//! liveness in, the leader's idle check, and waking a follower whose leader's node is suspected.

use std::sync::Arc;

use tokio::sync::watch;

use crate::core::RaftCore;
use crate::multi::{GroupId, Liveness};
use crate::storage::RaftLogStorage;
use crate::{RaftNetworkFactory, RaftTypeConfig};

/// A group's link to its host: the host's view of node liveness, and the wake-up signal of
/// the node this follower is quiesced under.
pub(crate) struct HostLink<C: RaftTypeConfig> {
    pub(crate) liveness: Arc<Liveness<C>>,
    /// This group's id in its host.
    pub(crate) group: GroupId,
    /// Whether the group quiesces when idle.
    pub(crate) quiesce: bool,
    /// The leader node this follower is quiesced under, and the signal that it must wake.
    watching: Option<(C::NodeId, watch::Receiver<u64>)>,
    /// The membership whose nodes were last registered with the host as beat targets.
    beat_targets_of: Option<Option<crate::types::LogId<C>>>,
}

impl<C: RaftTypeConfig> HostLink<C> {
    pub(crate) fn new(liveness: Arc<Liveness<C>>, group: GroupId, quiesce: bool) -> Self {
        Self { liveness, group, quiesce, watching: None, beat_targets_of: None }
    }
}

/// What the host says a quiesced group must do.
pub(crate) enum HostSignal {
    /// The node this follower is quiesced under must be heard from again.
    WakeFollower,
    /// A peer released this group's leadership ([`Notification::HostReleased`]): wake if it
    /// is the one quiesced under.
    ///
    /// [`Notification::HostReleased`]: crate::core::Notification::HostReleased
    Released,
}

/// Resolves when the host says the quiesced group must wake; never while it is not quiesced.
///
/// # Cancel safety
/// Cancel safe: it only waits on watches.
pub(crate) async fn host_signal<C: RaftTypeConfig>(link: &mut Option<HostLink<C>>) -> HostSignal {
    let Some(link) = link.as_mut() else { return std::future::pending().await };
    match link.watching.as_mut() {
        Some((_, node)) => {
            let _ = node.changed().await;
            HostSignal::WakeFollower
        }
        None => std::future::pending().await,
    }
}

impl<C, N, LS> RaftCore<C, N, LS>
where
    C: RaftTypeConfig,
    N: RaftNetworkFactory<C>,
    LS: RaftLogStorage<C>,
{
    /// Follow the Engine's quiescence: watch the node a follower quiesced under, or wake it at
    /// once if that node is suspected already.
    pub(crate) fn sync_quiescence(&mut self) {
        let Some(link) = self.host.as_mut() else { return };
        // Every member's host must hear this one's beats, whatever role this node plays: a
        // follower-only node that beat nobody would look dead to its leaders.
        let membership = &self.engine.state.membership.effective;
        if link.beat_targets_of != Some(membership.log_id) {
            for (id, node) in membership.membership.nodes() {
                link.liveness.add_target(*id, node);
            }
            link.beat_targets_of = Some(membership.log_id);
        }
        let under = self.engine.quiesced_under();
        if under == link.watching.as_ref().map(|(id, _)| *id) {
            return;
        }
        link.watching = None;
        let Some(leader) = under else { return };
        let term = self.engine.state.vote.term;
        match link.liveness.subscribe(&leader, self.engine.quiesced_mark(), link.group, term) {
            Some(rx) => link.watching = Some((leader, rx)),
            None => {
                let last_heard = link.liveness.last_heard(&leader);
                self.engine.wake_follower(self.clock.now(), last_heard);
            }
        }
    }

    /// A quiesced group hands back the capacity its queues grew to while busy: thousands of
    /// idle groups of a host would otherwise each keep their busiest moment's. Only quiesced
    /// groups do, so a busy group's loop does not allocate for it.
    pub(crate) fn release_idle_buffers(&mut self) {
        if self.engine.quiesced_under().is_none() && !self.engine.leader_quiesced() {
            return;
        }
        if self.engine.output.is_empty() {
            self.engine.output.shrink_to_fit();
        }
        if self.responders.is_empty() {
            self.responders.shrink_to_fit();
        }
        if self.parked_append_responses.is_empty() {
            self.parked_append_responses.shrink_to_fit();
        }
        if self.pending_reads.is_empty() {
            self.pending_reads.shrink_to_fit();
        }
        if self.pending_transfers.is_empty() {
            self.pending_transfers.shrink_to_fit();
        }
        // The queues free their buffers only if empty; the state machine task's is reached
        // through its sender.
        self.api_rx.release_idle_capacity();
        self.write_rx.release_idle_capacity();
        self.rpc_rx.release_idle_capacity();
        self.notify_rx.release_idle_capacity();
        self.sm_tx.release_idle_capacity();
    }

    /// Act on what the host says.
    pub(crate) fn on_host_signal(&mut self, signal: HostSignal) {
        match signal {
            HostSignal::WakeFollower => self.wake_quiesced_follower(),
            HostSignal::Released => {
                let term = self.engine.state.vote.term;
                let released = match (self.host.as_ref(), self.engine.quiesced_under()) {
                    (Some(link), Some(leader)) => link.liveness.released(&leader, link.group, term),
                    _ => false,
                };
                if released {
                    self.wake_quiesced_follower();
                }
            }
        }
    }

    /// The host says the node this follower is quiesced under must be heard from again.
    fn wake_quiesced_follower(&mut self) {
        let Some(link) = self.host.as_mut() else { return };
        let Some((leader, _)) = link.watching.take() else { return };
        let last_heard = link.liveness.last_heard(&leader);
        self.engine.wake_follower(self.clock.now(), last_heard);
    }

    /// A member's vote request woke this follower from quiescence under `leader` (of `term`).
    /// If the host still hears the leader's node, the leader is alive but does not know that a
    /// member campaigns, and this follower no longer counts its node's beats as contact: ask it,
    /// through the host's beats, to heartbeat again (see [`WakeRequest`]), as a heartbeating
    /// leader would be doing, so that this follower keeps refusing such votes while it lives.
    ///
    /// [`WakeRequest`]: crate::multi::WakeRequest
    pub(crate) fn ask_leader_to_wake(&self, leader: C::NodeId, term: u64) {
        let Some(link) = self.host.as_ref() else { return };
        if link.liveness.is_live(&leader) {
            link.liveness.ask_leader_to_wake(link.group, term, tokio::time::Instant::now());
        }
    }

    /// Before a quiesced follower answers a vote request: its leader's node being heard counts
    /// as contact with the leader (stickiness).
    pub(crate) fn feed_leader_liveness(&mut self) {
        let (Some(link), Some(leader)) = (self.host.as_ref(), self.engine.quiesced_under()) else { return };
        self.engine.on_leader_node_heard(link.liveness.last_heard(&leader));
    }

    /// When an awake leader of a group that quiesces next checks whether it is idle: one
    /// heartbeat interval after the previous check. `None` (no check) for a quiesced leader, a
    /// follower, or a group without a host.
    pub(crate) fn next_quiesce_check(&mut self) -> Option<tokio::time::Instant> {
        let awake_leader = self.host.as_ref().is_some_and(|l| l.quiesce)
            && self.engine.leader.is_some()
            && !self.engine.leader_quiesced();
        if !awake_leader {
            self.quiesce_check = None;
            return None;
        }
        let (clock, interval) = (self.clock, self.config.heartbeat_interval);
        Some(*self.quiesce_check.get_or_insert_with(|| clock.now() + interval))
    }

    /// After the leader's timer: quiesce if nothing waits on this node and the group is idle.
    /// Members whose node the host does not hear from need not be caught up.
    pub(crate) fn maybe_quiesce(&mut self) {
        let Some(link) = self.host.as_ref() else { return };
        // No snapshot being received counts: a leader receives none, and what a node received
        // before it led was dropped when its vote changed (`drop_stale_receiver`).
        let busy = !self.responders.is_empty()
            || !self.pending_reads.is_empty()
            || !self.pending_transfers.is_empty()
            || self.membership_waiter.is_some()
            || !self.write_rx.is_empty();
        if busy || self.engine.leader.is_none() {
            return;
        }
        let liveness = link.liveness.clone();
        self.engine.leader_try_quiesce(|id| liveness.is_live(id));
    }

    /// This node's leadership of `term` ended while followers may be quiesced under it: have
    /// the host's beats wake them.
    pub(crate) fn release_quiesced_leadership(&self, term: u64) {
        if let Some(link) = &self.host {
            link.liveness.release(link.group, term, tokio::time::Instant::now());
        }
    }
}
