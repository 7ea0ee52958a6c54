//! Node liveness: one beat per node pair and interval stands in for every quiesced group's
//! heartbeats (see the [module docs](super)).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::RaftTypeConfig;
use crate::types::QuiesceMark;

/// A node's beat: "I am alive, and I am still who I was".
///
/// `incarnation` is drawn anew each time a host starts; `generation` grows whenever the host
/// gives up a leadership whose followers may be quiesced (a group removed or stopped while it
/// led, or stepping down while quiesced). A peer that sees either change wakes every group it
/// holds quiesced under this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct NodeBeat<C: RaftTypeConfig> {
    /// The node that sends it.
    pub from: C::NodeId,
    /// Drawn anew at every start of the sending host.
    pub incarnation: u64,
    /// Grows when the sending host gives up a leadership that may have quiesced followers.
    pub generation: u64,
}

/// What this node knows of one peer.
struct Peer {
    last_heard: Option<Instant>,
    /// The peer's `(incarnation, generation)` of its last beat.
    identity: Option<(u64, u64)>,
    suspected: bool,
    /// Bumped whenever the groups quiesced under this peer must wake: it became suspected,
    /// or restarted, or gave up a quiesced leadership.
    epoch: watch::Sender<u64>,
}

impl Peer {
    fn new() -> Self {
        Self { last_heard: None, identity: None, suspected: true, epoch: watch::channel(0).0 }
    }

    fn bump(&self) {
        self.epoch.send_modify(|e| *e = e.wrapping_add(1));
    }
}

/// A host's view of its peers' liveness and its own identity, shared by its groups' Raft tasks.
pub(crate) struct Liveness<C: RaftTypeConfig> {
    me: C::NodeId,
    incarnation: u64,
    generation: AtomicU64,
    suspect_after: Duration,
    peers: Mutex<BTreeMap<C::NodeId, Peer>>,
    /// The nodes this host's groups talk to, with their addresses: where beats go.
    targets: Mutex<BTreeMap<C::NodeId, C::Node>>,
    /// Bumped whenever a suspected peer is heard again: quiesced leaders wake, to reach the
    /// members they left behind and to learn whether they were deposed meanwhile.
    returned: watch::Sender<u64>,
    /// When the host started: its groups' heartbeats are aligned to a grid from here.
    epoch: Instant,
}

/// The peer table stays consistent under any panic (every update is a plain assignment), so
/// a poisoned lock is taken over rather than propagated.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<C: RaftTypeConfig> Liveness<C> {
    pub(crate) fn new(me: C::NodeId, incarnation: u64, suspect_after: Duration) -> Self {
        Self {
            me,
            incarnation,
            generation: AtomicU64::new(0),
            suspect_after,
            peers: Mutex::new(BTreeMap::new()),
            targets: Mutex::new(BTreeMap::new()),
            returned: watch::channel(0).0,
            epoch: Instant::now(),
        }
    }

    /// This node's beat.
    pub(crate) fn beat(&self) -> NodeBeat<C> {
        let mark = self.mark();
        NodeBeat { from: self.me, incarnation: mark.incarnation, generation: mark.generation }
    }

    /// This host's identity, as a quiesced leader's marked heartbeat carries it.
    pub(crate) fn mark(&self) -> QuiesceMark {
        QuiesceMark { incarnation: self.incarnation, generation: self.generation.load(Ordering::Acquire) }
    }

    /// This host gave up a leadership whose followers may be quiesced: its next beat tells
    /// its peers to wake the groups they hold quiesced under it.
    pub(crate) fn release_leadership(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A beat arrived at `now`.
    pub(crate) fn heard(&self, beat: &NodeBeat<C>, now: Instant) {
        if beat.from == self.me {
            return;
        }
        let mut peers = lock(&self.peers);
        let peer = peers.entry(beat.from).or_insert_with(Peer::new);
        let identity = (beat.incarnation, beat.generation);
        if peer.identity.is_some_and(|i| i != identity) {
            info!(node = %beat.from, "a peer restarted or gave up a quiesced leadership; waking its quiesced groups");
            peer.bump();
        }
        if peer.suspected {
            debug!(node = %beat.from, "peer heard from again; waking quiesced leaders");
            self.returned.send_modify(|r| *r = r.wrapping_add(1));
        }
        peer.identity = Some(identity);
        peer.last_heard = Some(peer.last_heard.map_or(now, |t| t.max(now)));
        peer.suspected = false;
    }

    /// Suspect every peer not heard from for `suspect_after` before `now`, waking the groups
    /// quiesced under it.
    pub(crate) fn sweep(&self, now: Instant) {
        let mut peers = lock(&self.peers);
        for (id, peer) in peers.iter_mut() {
            // Silent for *more* than the bound: under a paused clock many events share one
            // instant, and a beat of this very instant must keep the peer live.
            let silent = peer.last_heard.is_none_or(|t| now > t + self.suspect_after);
            if silent && !peer.suspected {
                info!(node = %id, "peer not heard from; waking the groups quiesced under it");
                peer.suspected = true;
                peer.bump();
            }
        }
    }

    /// When `node` was last heard from.
    pub(crate) fn last_heard(&self, node: &C::NodeId) -> Option<Instant> {
        lock(&self.peers).get(node).and_then(|p| p.last_heard)
    }

    /// Whether `node` is heard from (beats arrive, not suspected).
    pub(crate) fn is_live(&self, node: &C::NodeId) -> bool {
        lock(&self.peers).get(node).is_some_and(|p| !p.suspected)
    }

    /// A receiver that changes when the groups quiesced under `node` must wake, or `None` if
    /// the group must not stay quiesced under it: `node` is suspected, or its host is no longer
    /// the one that quiesced the group (`mark`: it restarted, or gave up a quiesced leadership,
    /// before the group got the mark). Checked and subscribed at once, so no change between
    /// the two is missed.
    pub(crate) fn subscribe(&self, node: &C::NodeId, mark: Option<QuiesceMark>) -> Option<watch::Receiver<u64>> {
        let mut peers = lock(&self.peers);
        let peer = peers.entry(*node).or_insert_with(Peer::new);
        let same_host = mark.is_some_and(|m| peer.identity == Some((m.incarnation, m.generation)));
        (!peer.suspected && same_host).then(|| peer.epoch.subscribe())
    }

    /// The instant this host's groups align their heartbeats to.
    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// A receiver that changes whenever a suspected peer is heard again.
    pub(crate) fn subscribe_returns(&self) -> watch::Receiver<u64> {
        self.returned.subscribe()
    }

    /// A group of this host talks to `node` at `addr`: send it beats.
    pub(crate) fn add_target(&self, node: C::NodeId, addr: &C::Node) {
        if node == self.me {
            return;
        }
        let mut targets = lock(&self.targets);
        if targets.get(&node) != Some(addr) {
            targets.insert(node, addr.clone());
        }
    }

    /// The nodes to send beats to.
    pub(crate) fn targets(&self) -> Vec<(C::NodeId, C::Node)> {
        lock(&self.targets).iter().map(|(id, n)| (*id, n.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::testing_types::UTConfig;

    fn beat(from: u64, generation: u64) -> NodeBeat<UTConfig> {
        NodeBeat { from, incarnation: 7, generation }
    }

    fn mark(generation: u64) -> Option<QuiesceMark> {
        Some(QuiesceMark { incarnation: 7, generation })
    }

    /// Found in review: a marked heartbeat that arrives after its leader's host gave the
    /// leadership up (a new generation) must not quiesce its follower, or nothing would ever
    /// wake it: the bump it should have seen happened before it subscribed.
    #[test]
    fn a_group_quiesces_only_under_the_host_identity_that_marked_it() {
        let liveness = Liveness::<UTConfig>::new(1, 1, Duration::from_millis(100));
        let now = Instant::now();
        assert!(liveness.subscribe(&2, mark(0)).is_none(), "never heard: suspected");

        liveness.heard(&beat(2, 0), now);
        assert!(liveness.subscribe(&2, mark(0)).is_some());
        assert!(liveness.subscribe(&2, None).is_none(), "no mark, no quiescence");

        let rx = liveness.subscribe(&2, mark(0)).expect("same identity");
        liveness.heard(&beat(2, 1), now);
        assert!(rx.has_changed().unwrap_or(true), "a new generation wakes the group");
        assert!(liveness.subscribe(&2, mark(0)).is_none(), "a stale mark does not quiesce");
        assert!(liveness.subscribe(&2, mark(1)).is_some());
    }

    #[test]
    fn a_peer_is_suspected_only_when_silent_for_longer_than_the_bound() {
        let liveness = Liveness::<UTConfig>::new(1, 1, Duration::from_millis(100));
        let t = Instant::now();
        liveness.heard(&beat(2, 0), t);
        let rx = liveness.subscribe(&2, mark(0)).expect("live");

        // Under a paused clock many events share one instant: exactly the bound is not silence.
        liveness.sweep(t + Duration::from_millis(100));
        assert!(liveness.is_live(&2));
        assert!(!rx.has_changed().unwrap_or(true));

        liveness.sweep(t + Duration::from_millis(101));
        assert!(!liveness.is_live(&2));
        assert!(rx.has_changed().unwrap_or(false), "suspicion wakes the groups quiesced under it");
    }
}
