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
        }
    }

    /// This node's beat.
    pub(crate) fn beat(&self) -> NodeBeat<C> {
        NodeBeat { from: self.me, incarnation: self.incarnation, generation: self.generation.load(Ordering::Acquire) }
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
    /// `node` is suspected already (a group must not quiesce under it).
    pub(crate) fn subscribe(&self, node: &C::NodeId) -> Option<watch::Receiver<u64>> {
        let mut peers = lock(&self.peers);
        let peer = peers.entry(*node).or_insert_with(Peer::new);
        (!peer.suspected).then(|| peer.epoch.subscribe())
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
