//! RaftCore's side of quiescence (the protocol is in `engine/quiesce.rs`): the host's node
//! liveness in, the leader's idle check, and waking a follower whose leader's node is suspected.

use std::sync::Arc;

use tokio::sync::watch;

use crate::core::RaftCore;
use crate::multi::Liveness;
use crate::storage::RaftLogStorage;
use crate::{RaftNetworkFactory, RaftTypeConfig};

/// A group's link to its host: the host's view of node liveness, and the wake-up signal of
/// the node this follower is quiesced under.
pub(crate) struct HostLink<C: RaftTypeConfig> {
    pub(crate) liveness: Arc<Liveness<C>>,
    /// Whether the group quiesces when idle.
    pub(crate) quiesce: bool,
    /// The leader node this follower is quiesced under, and the signal that it must wake.
    watching: Option<(C::NodeId, watch::Receiver<u64>)>,
}

impl<C: RaftTypeConfig> HostLink<C> {
    pub(crate) fn new(liveness: Arc<Liveness<C>>, quiesce: bool) -> Self {
        Self { liveness, quiesce, watching: None }
    }
}

/// Resolves when the follower must wake from quiescence; never while it is not quiesced.
///
/// # Cancel safety
/// Cancel safe: it only waits on a watch.
pub(crate) async fn wake_signal<C: RaftTypeConfig>(link: &mut Option<HostLink<C>>) {
    match link.as_mut().and_then(|l| l.watching.as_mut()) {
        Some((_, rx)) => {
            // A closed channel (the host is gone) is a reason to wake as good as any.
            let _ = rx.changed().await;
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
        let under = self.engine.quiesced_under();
        if under == link.watching.as_ref().map(|(id, _)| *id) {
            return;
        }
        link.watching = None;
        let Some(leader) = under else { return };
        match link.liveness.subscribe(&leader) {
            Some(rx) => link.watching = Some((leader, rx)),
            None => {
                let last_heard = link.liveness.last_heard(&leader);
                self.engine.wake_follower(self.clock.now(), last_heard);
            }
        }
    }

    /// The host says the node this follower is quiesced under must be heard from again.
    pub(crate) fn wake_quiesced_follower(&mut self) {
        let Some(link) = self.host.as_mut() else { return };
        let Some((leader, _)) = link.watching.take() else { return };
        let last_heard = link.liveness.last_heard(&leader);
        self.engine.wake_follower(self.clock.now(), last_heard);
    }

    /// Before a quiesced follower answers a vote request: its leader's node being heard counts
    /// as contact with the leader (stickiness).
    pub(crate) fn feed_leader_liveness(&mut self) {
        let (Some(link), Some(leader)) = (self.host.as_ref(), self.engine.quiesced_under()) else { return };
        self.engine.on_leader_node_heard(link.liveness.last_heard(&leader));
    }

    /// After the leader's timer: quiesce if nothing waits on this node and the group is idle.
    /// Members whose node the host does not hear from need not be caught up.
    pub(crate) fn maybe_quiesce(&mut self) {
        let Some(link) = self.host.as_ref() else { return };
        let busy = !self.responders.is_empty()
            || !self.pending_reads.is_empty()
            || !self.pending_transfers.is_empty()
            || self.membership_waiter.is_some()
            || !self.write_rx.is_empty()
            || self.receiving.is_some();
        if busy || self.engine.leader.is_none() {
            return;
        }
        let liveness = link.liveness.clone();
        self.engine.leader_try_quiesce(|id| liveness.is_live(id));
    }

    /// This node gave up a leadership whose followers may be quiesced: have the host's next
    /// beat wake them.
    pub(crate) fn release_quiesced_leadership(&self) {
        if let Some(link) = &self.host {
            link.liveness.release_leadership();
        }
    }
}
