//! Node liveness: one beat per node pair and interval stands in for every quiesced group's
//! heartbeats (see the [module docs](super)).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info};

use super::GroupId;
use crate::RaftTypeConfig;
use crate::types::QuiesceMark;

/// A node's beat: "I am alive, I am still who I was, these leaderships of mine ended, and
/// these groups' leaders should wake".
///
/// `incarnation` is drawn anew each time a host starts: a peer that sees it change wakes every
/// group it holds quiesced under this node. `released` lists the groups whose leadership on
/// this node ended (with its term) while some follower could still be quiesced under it: the
/// group was removed or stopped there, or its leader stepped down. A peer wakes exactly those
/// groups. Each release rides on the beats for a while (twelve suspicion timeouts), so a lost
/// beat loses none; a peer that misses them all has suspected this node meanwhile. `wake`
/// asks the leaders of some groups, quiesced, to heartbeat again (see [`WakeRequest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct NodeBeat<C: RaftTypeConfig> {
    /// The node that sends it.
    pub from: C::NodeId,
    /// Drawn anew at every start of the sending host.
    pub incarnation: u64,
    /// Groups whose leadership on the sending node ended recently, each with that
    /// leadership's term.
    pub released: Vec<(GroupId, u64)>,
    /// Groups whose leader, if quiesced, should heartbeat again: asked recently by followers
    /// on the sending node.
    #[serde(default)]
    pub wake: Vec<WakeRequest>,
}

/// A follower's request, riding on its host's beats, that its group's quiesced leader
/// heartbeat again.
///
/// A quiesced follower that a member's vote request wakes (the member does not hear the
/// leader: a link between two nodes is cut, say) stops counting the beats of its leader's node
/// as contact, and nothing else would wake the leader: a leader quiesces without members
/// whose node its host does not hear. Its stickiness would lapse an election timeout later and
/// the cut-off member would win the next election, deposing a healthy leader, which, quiesced,
/// runs no check-quorum and would not even step down. With heartbeats the follower keeps
/// hearing the leader and refuses such votes for as long as the leader lives; so the follower
/// asks, and the leader of `group` at `term` on any peer that gets the request wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakeRequest {
    /// The group whose leader should wake.
    pub group: GroupId,
    /// The term of the leadership to wake: a leader of another term ignores the request.
    pub term: u64,
    /// Numbers the sending host's requests (from 1 at each start): each is acted on once,
    /// although it rides on several beats.
    pub seq: u64,
}

/// For how many `suspect_after`s a release or a wake request rides on the beats.
const RIDE_FOR: u32 = 12;

/// What a beat asks of this host's groups ([`Liveness::heard`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Heard {
    /// Groups whose leadership on the peer ended: followers quiesced under it wake.
    pub(crate) released: Vec<GroupId>,
    /// Groups, with a term, whose leader at that term, if quiesced, wakes.
    pub(crate) wake: Vec<(GroupId, u64)>,
}

/// What this node knows of one peer.
struct Peer {
    last_heard: Option<Instant>,
    /// The peer's incarnation in its last beat.
    incarnation: Option<u64>,
    suspected: bool,
    /// Bumped whenever every group quiesced under this peer must wake: it became suspected,
    /// or restarted.
    epoch: watch::Sender<u64>,
    /// Per group this host runs, the latest term of a leadership of the peer's that ended
    /// while followers could be quiesced under it.
    ///
    /// Bounded by the groups this host runs: releases of other groups are not remembered (a
    /// peer naming endless group ids would grow it without bound), and a removed group's are
    /// forgotten ([`Liveness::forget_group`]). Forgetting them is safe: an entry guards a
    /// follower here against quiescing under a leadership that ended ([`Liveness::subscribe`])
    /// and wakes it if it did, and a group not running here is quiesced under nothing. One
    /// created later that still gets a marked heartbeat the ended leadership sent before it
    /// ended quiesces under a node that no longer leads it, until a vote request or a message
    /// of a newer leader wakes it, as either does once a member misses the leader: a delay,
    /// never a safety matter (quiescence changes only when a follower campaigns).
    released: HashMap<GroupId, u64>,
    /// Per group this host runs, the number of the peer's latest wake request acted on
    /// ([`WakeRequest::seq`]); bounded as `released` is, and forgotten when the peer restarts
    /// (its numbers start again).
    woken: HashMap<GroupId, u64>,
    /// Bumped whenever the peer is heard again after being suspected, or, while suspected,
    /// this host's beats start getting through to it: replication streams to it that a
    /// quiesced leader left waiting retry.
    returned: watch::Sender<u64>,
    /// Bumped whenever the peer restarted (a new incarnation in its beat): its groups know no
    /// leader, and quiesced streams to it send it their marked heartbeat again. Not on a mere
    /// return after suspicion: beats that flap would cost every quiesced group an RPC per flap.
    restarted: watch::Sender<u64>,
    /// Whether this host's last beat to the peer got through (was handed to a connection to
    /// the peer's host). A new node, or one whose storage was lost, hosts groups that know no
    /// members yet and beats nobody: it is never heard until a leader reaches it.
    reached: bool,
    /// Whether `returned` was bumped for a beat that got through since the peer was last
    /// suspected: once per suspicion, even if no beat failed in between (a node that restarts
    /// between two beats, or whose connection takes beats though its process died, is
    /// reached all along).
    reached_while_suspected: bool,
}

impl Peer {
    fn new() -> Self {
        Self {
            last_heard: None,
            incarnation: None,
            suspected: true,
            epoch: watch::channel(0).0,
            released: HashMap::new(),
            woken: HashMap::new(),
            returned: watch::channel(0).0,
            restarted: watch::channel(0).0,
            reached: false,
            reached_while_suspected: false,
        }
    }

    fn bump(&self) {
        signal(&self.epoch);
    }
}

/// Change `tx`'s value, waking its receivers: these watches carry events, not values.
fn signal(tx: &watch::Sender<u64>) {
    tx.send_modify(|n| *n = n.wrapping_add(1));
}

/// A host's view of its peers' liveness and its own identity, shared by its groups' Raft tasks.
pub(crate) struct Liveness<C: RaftTypeConfig> {
    me: C::NodeId,
    incarnation: u64,
    suspect_after: Duration,
    peers: Mutex<BTreeMap<C::NodeId, Peer>>,
    /// This host's released leaderships still announced in its beats: group, term, when.
    releasing: Mutex<Vec<(GroupId, u64, Instant)>>,
    /// This host's followers' wake requests still sent in its beats, with when each was made,
    /// and the number of the last one made.
    waking: Mutex<(Vec<(WakeRequest, Instant)>, u64)>,
    /// The nodes this host's groups talk to, with their addresses: where beats go.
    targets: Mutex<BTreeMap<C::NodeId, C::Node>>,
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
            suspect_after,
            peers: Mutex::new(BTreeMap::new()),
            releasing: Mutex::new(Vec::new()),
            waking: Mutex::new((Vec::new(), 0)),
            targets: Mutex::new(BTreeMap::new()),
            epoch: Instant::now(),
        }
    }

    /// This host's identity, as a quiesced leader's marked heartbeat carries it.
    pub(crate) fn mark(&self) -> QuiesceMark {
        QuiesceMark { incarnation: self.incarnation }
    }

    /// This node's beat at `now`, with the releases and wake requests of the last few
    /// suspicion timeouts.
    pub(crate) fn beat(&self, now: Instant) -> NodeBeat<C> {
        let window = self.suspect_after * RIDE_FOR;
        let mut releasing = lock(&self.releasing);
        releasing.retain(|(_, _, at)| now <= *at + window);
        let released = releasing.iter().map(|(group, term, _)| (*group, *term)).collect();
        drop(releasing);
        let mut waking = lock(&self.waking);
        waking.0.retain(|(_, at)| now <= *at + window);
        let wake = waking.0.iter().map(|(w, _)| *w).collect();
        NodeBeat { from: self.me, incarnation: self.incarnation, released, wake }
    }

    /// A follower of `group` here, quiesced under the leadership of `term`, was woken by a
    /// member's vote request while this host still hears the leader's node: this host's beats
    /// ask that leader to heartbeat again (see [`WakeRequest`]).
    pub(crate) fn ask_leader_to_wake(&self, group: GroupId, term: u64, now: Instant) {
        debug!(group, term, "a member campaigns under a quiesced leader that is heard: asking it to wake");
        let mut waking = lock(&self.waking);
        waking.1 += 1;
        let seq = waking.1;
        waking.0.push((WakeRequest { group, term, seq }, now));
    }

    /// This host's leadership of `group` at `term` ended while some follower could be
    /// quiesced under it: its beats tell the peers, which wake the group.
    pub(crate) fn release(&self, group: GroupId, term: u64, now: Instant) {
        info!(group, term, "a leadership that quiesced its followers ended; telling the peers");
        lock(&self.releasing).push((group, term, now));
    }

    /// A beat arrived at `now`. Returns what it asks of the groups for which `runs` says this
    /// host runs them (only theirs is remembered, see [`Peer::released`]): the groups it
    /// released anew, whose followers wake, and the wake requests not acted on yet, whose
    /// leaders wake.
    pub(crate) fn heard(&self, beat: &NodeBeat<C>, now: Instant, runs: impl Fn(GroupId) -> bool) -> Heard {
        let mut heard = Heard::default();
        if beat.from == self.me {
            return heard;
        }
        let mut peers = lock(&self.peers);
        let peer = peers.entry(beat.from).or_insert_with(Peer::new);
        let restarted = peer.incarnation.is_some_and(|i| i != beat.incarnation);
        if restarted {
            info!(node = %beat.from, "a peer restarted; waking the groups quiesced under it");
            peer.released.clear();
            peer.woken.clear();
            peer.bump();
            signal(&peer.restarted);
        }
        if peer.suspected {
            debug!(node = %beat.from, "peer heard from again");
            signal(&peer.returned);
        }
        peer.incarnation = Some(beat.incarnation);
        peer.last_heard = Some(peer.last_heard.map_or(now, |t| t.max(now)));
        peer.suspected = false;
        peer.reached_while_suspected = false;
        for (group, term) in beat.released.iter().filter(|(group, _)| runs(*group)) {
            let known = peer.released.entry(*group).or_insert(0);
            if *term > *known {
                *known = *term;
                heard.released.push(*group);
            }
        }
        for w in beat.wake.iter().filter(|w| runs(w.group)) {
            let known = peer.woken.entry(w.group).or_insert(0);
            if w.seq > *known {
                *known = w.seq;
                heard.wake.push((w.group, w.term));
            }
        }
        heard
    }

    /// This host no longer runs `group`: forget what peers released of it.
    pub(crate) fn forget_group(&self, group: GroupId) {
        for peer in lock(&self.peers).values_mut() {
            peer.released.remove(&group);
            peer.woken.remove(&group);
        }
    }

    /// Suspect every peer not heard from for `suspect_after` (plus `lag`, how late this host's
    /// own timer has lately been: an overloaded process delays beats it receives as much as
    /// beats it sends, and must not take its own lateness for its peers' death) before `now`,
    /// waking the groups quiesced under it.
    ///
    /// Releases and wake requests ride on the beats for `RIDE_FOR × suspect_after`, so a host
    /// late by less than `(RIDE_FOR - 1) × suspect_after` that misses every beat carrying one
    /// suspects the sender meanwhile (which wakes what a lost release would have). A host later
    /// than that may miss a release. The lateness is not capped: a cap (of 2, then of 10
    /// `suspect_after`s) made a host of 10,000 groups, restarting under load, suspect live
    /// peers and storm (multi-bench: no settling after a restart in 3 runs of 3).
    pub(crate) fn sweep(&self, now: Instant, lag: Duration) {
        let bound = self.suspect_after + lag;
        let mut peers = lock(&self.peers);
        for (id, peer) in peers.iter_mut() {
            // Silent for *more* than the bound: under a paused clock many events share one
            // instant, and a beat of this very instant must keep the peer live.
            let silent = peer.last_heard.is_none_or(|t| now > t + bound);
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

    /// This host's beat to `node` got through (`ok`) or not. The first that gets through to a
    /// node this host does not hear restarts the replication streams waiting for it (see
    /// [`is_reached`](Self::is_reached)); a dead node costs nothing, since its beats fail.
    pub(crate) fn reached(&self, node: &C::NodeId, ok: bool) {
        let mut peers = lock(&self.peers);
        let peer = peers.entry(*node).or_insert_with(Peer::new);
        if ok && peer.suspected && (!peer.reached || !peer.reached_while_suspected) {
            debug!(%node, "a peer not heard from is reached: retrying the streams waiting for it");
            signal(&peer.returned);
            peer.reached_while_suspected = true;
        }
        peer.reached = ok;
    }

    /// Whether this host's last beat to `node` got through: a quiesced leader keeps retrying a
    /// follower it reaches though it does not hear it (a node whose groups know no members yet
    /// beats nobody until a leader catches it up).
    pub(crate) fn is_reached(&self, node: &C::NodeId) -> bool {
        lock(&self.peers).get(node).is_some_and(|p| p.reached)
    }

    /// Whether `node` is heard from (beats arrive, not suspected).
    pub(crate) fn is_live(&self, node: &C::NodeId) -> bool {
        lock(&self.peers).get(node).is_some_and(|p| !p.suspected)
    }

    /// Whether `node` released its leadership of `group` at `term` or later.
    pub(crate) fn released(&self, node: &C::NodeId, group: GroupId, term: u64) -> bool {
        lock(&self.peers).get(node).and_then(|p| p.released.get(&group)).is_some_and(|t| *t >= term)
    }

    /// A receiver that changes when every group quiesced under `node` must wake, or `None` if
    /// `group` must not stay quiesced under it at `term`: `node` is suspected, its host is no
    /// longer the one that quiesced the group (`mark`: it restarted before the group got the
    /// mark), or it released that leadership already. Checked and subscribed at once, so no
    /// change between the two is missed.
    pub(crate) fn subscribe(
        &self,
        node: &C::NodeId,
        mark: Option<QuiesceMark>,
        group: GroupId,
        term: u64,
    ) -> Option<watch::Receiver<u64>> {
        let mut peers = lock(&self.peers);
        let peer = peers.entry(*node).or_insert_with(Peer::new);
        if peer.incarnation.is_none()
            && let Some(m) = mark
        {
            // This host never heard `node` (it has just started): the marked heartbeat that
            // just came from there counts as its first beat. Without it, a restarted node's
            // groups could not quiesce until the first beat, and would campaign meanwhile. A
            // stale one is safe: a later beat of another incarnation, or none within
            // `suspect_after`, wakes the group.
            debug!(%node, "first heard through a marked heartbeat");
            peer.incarnation = Some(m.incarnation);
            peer.last_heard = Some(Instant::now());
            if peer.suspected {
                // Heard at last: streams of this host waiting for the node retry, as on a beat.
                signal(&peer.returned);
            }
            peer.suspected = false;
        }
        let same_host = mark.is_some_and(|m| peer.incarnation == Some(m.incarnation));
        let released = peer.released.get(&group).is_some_and(|t| *t >= term);
        (!peer.suspected && same_host && !released).then(|| peer.epoch.subscribe())
    }

    /// The instant this host's groups align their heartbeats to.
    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// A receiver that changes whenever `node` is heard again after being suspected, or is
    /// reached while suspected.
    pub(crate) fn subscribe_return(&self, node: &C::NodeId) -> watch::Receiver<u64> {
        lock(&self.peers).entry(*node).or_insert_with(Peer::new).returned.subscribe()
    }

    /// A receiver that changes whenever `node` restarted (a new incarnation in its beat).
    pub(crate) fn subscribe_restart(&self, node: &C::NodeId) -> watch::Receiver<u64> {
        lock(&self.peers).entry(*node).or_insert_with(Peer::new).restarted.subscribe()
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

    fn beat(from: u64, incarnation: u64, released: &[(GroupId, u64)]) -> NodeBeat<UTConfig> {
        NodeBeat { from, incarnation, released: released.to_vec(), wake: Vec::new() }
    }

    fn runs_all(_: GroupId) -> bool {
        true
    }

    fn mark(incarnation: u64) -> Option<QuiesceMark> {
        Some(QuiesceMark { incarnation })
    }

    /// Found in review: a marked heartbeat that arrives after its leader gave the leadership up
    /// (released it, or its host restarted) must not quiesce its follower, or nothing would
    /// ever wake it: the signal it should have seen came before it subscribed.
    #[test]
    fn a_group_quiesces_only_under_the_host_and_leadership_that_marked_it() {
        let liveness = Liveness::<UTConfig>::new(1, 1, Duration::from_millis(100));
        let now = Instant::now();
        assert!(liveness.subscribe(&2, None, 5, 3).is_none(), "never heard, no mark: suspected");

        liveness.heard(&beat(2, 7, &[]), now, runs_all);
        assert!(liveness.subscribe(&2, mark(7), 5, 3).is_some());
        assert!(liveness.subscribe(&2, None, 5, 3).is_none(), "no mark, no quiescence");

        // Group 5's leadership of term 3 ends on node 2: only group 5 is woken.
        assert_eq!(liveness.heard(&beat(2, 7, &[(5, 3)]), now, runs_all).released, vec![5]);
        assert_eq!(
            liveness.heard(&beat(2, 7, &[(5, 3)]), now, runs_all).released,
            Vec::<GroupId>::new(),
            "announced again: no news"
        );
        assert!(liveness.subscribe(&2, mark(7), 5, 3).is_none(), "a released leadership does not quiesce");
        assert!(liveness.subscribe(&2, mark(7), 5, 4).is_some(), "a later leadership does");
        assert!(liveness.subscribe(&2, mark(7), 6, 3).is_some(), "other groups are unaffected");

        // Node 2 restarts: every group quiesced under it wakes; old marks no longer count.
        let rx = liveness.subscribe(&2, mark(7), 6, 3).expect("live");
        liveness.heard(&beat(2, 8, &[]), now, runs_all);
        assert!(rx.has_changed().unwrap_or(true));
        assert!(liveness.subscribe(&2, mark(7), 6, 3).is_none());
        assert!(liveness.subscribe(&2, mark(8), 6, 3).is_some());
    }

    /// A host that has just started hears a leader's marked heartbeat before that leader's
    /// node's first beat: the heartbeat counts as the first beat, so the group quiesces instead
    /// of campaigning. Whatever the mark got wrong, the next beat or its absence corrects.
    #[test]
    fn a_marked_heartbeat_from_a_node_never_heard_counts_as_its_first_beat() {
        let liveness = Liveness::<UTConfig>::new(1, 1, Duration::from_millis(100));
        let t = Instant::now();
        let rx = liveness.subscribe(&2, mark(7), 5, 3).expect("adopted");
        assert!(liveness.is_live(&2));
        assert!(liveness.last_heard(&2).is_some());

        // The mark was stale: node 2 runs another incarnation. Its first beat wakes the group.
        liveness.heard(&beat(2, 8, &[]), t, runs_all);
        assert!(rx.has_changed().unwrap_or(false), "another incarnation wakes the group");
        assert!(liveness.subscribe(&2, mark(7), 5, 3).is_none(), "and the old mark no longer counts");

        // A node already heard is not re-learned from a mark: only its beats say who it is.
        assert!(liveness.subscribe(&2, mark(9), 5, 3).is_none());

        // No beat at all: suspected after the bound, which wakes the group.
        let other = Liveness::<UTConfig>::new(1, 1, Duration::from_millis(100));
        let rx = other.subscribe(&3, mark(4), 1, 1).expect("adopted");
        other.sweep(Instant::now() + Duration::from_millis(101), Duration::ZERO);
        assert!(rx.has_changed().unwrap_or(false), "silence wakes the group");
    }

    /// Found in review: a node first heard through a marked heartbeat (adopted) must release
    /// the streams of this host waiting for it, as its first beat would have.
    #[test]
    fn adopting_a_node_from_its_marked_heartbeat_releases_the_streams_waiting_for_it() {
        let liveness = Liveness::<UTConfig>::new(1, 1, Duration::from_millis(100));
        let mut rx = liveness.subscribe_return(&2);
        rx.mark_unchanged();

        assert!(liveness.subscribe(&2, mark(7), 5, 3).is_some());
        liveness.heard(&beat(2, 7, &[]), Instant::now(), runs_all);

        assert!(liveness.is_live(&2));
        assert!(rx.has_changed().unwrap_or(false), "node 2 is live, and the waiting stream was told");
    }

    #[test]
    fn releases_ride_on_the_beats_for_a_while_then_stop() {
        let liveness = Liveness::<UTConfig>::new(1, 1, Duration::from_millis(100));
        let t = Instant::now();
        liveness.release(9, 2, t);
        assert_eq!(liveness.beat(t + Duration::from_millis(1200)).released, vec![(9, 2)]);
        assert_eq!(liveness.beat(t + Duration::from_millis(1201)).released, vec![]);
    }

    #[test]
    fn a_peer_is_suspected_only_when_silent_for_longer_than_the_bound() {
        let liveness = Liveness::<UTConfig>::new(1, 1, Duration::from_millis(100));
        let t = Instant::now();
        liveness.heard(&beat(2, 7, &[]), t, runs_all);
        let rx = liveness.subscribe(&2, mark(7), 1, 1).expect("live");

        // Under a paused clock many events share one instant: exactly the bound is not silence.
        liveness.sweep(t + Duration::from_millis(100), Duration::ZERO);
        assert!(liveness.is_live(&2));
        assert!(!rx.has_changed().unwrap_or(true));

        liveness.sweep(t + Duration::from_millis(101), Duration::ZERO);
        assert!(!liveness.is_live(&2));
        assert!(rx.has_changed().unwrap_or(false), "suspicion wakes the groups quiesced under it");
    }

    /// An authenticated peer can name any number of group ids in its beats: only the groups
    /// this host runs are remembered, and a removed group's releases are forgotten.
    #[test]
    fn releases_are_remembered_only_for_the_groups_this_host_runs() {
        let liveness = Liveness::<UTConfig>::new(1, 1, Duration::from_millis(100));
        let now = Instant::now();
        let runs = |group: GroupId| group < 4;
        let endless: Vec<(GroupId, u64)> = (0..100_000).map(|g| (g, 3)).collect();

        let woken = liveness.heard(&beat(2, 7, &endless), now, runs).released;

        assert_eq!(woken, vec![0, 1, 2, 3], "only groups run here wake");
        assert_eq!(lock(&liveness.peers)[&2].released.len(), 4);
        assert!(liveness.subscribe(&2, mark(7), 2, 3).is_none(), "a released leadership does not quiesce");
        assert!(liveness.subscribe(&2, mark(7), 4, 3).is_some(), "not run here: not remembered");

        // Group 2 is removed, then created again: what was released of it before is forgotten;
        // released again (the peer still announces it), it wakes again.
        liveness.forget_group(2);
        assert_eq!(lock(&liveness.peers)[&2].released.len(), 3);
        assert!(!liveness.released(&2, 2, 3));
        assert_eq!(liveness.heard(&beat(2, 7, &[(2, 3), (3, 3)]), now, runs).released, vec![2]);
    }

    /// A node whose groups know no members yet beats nobody: the first beat of this host that
    /// gets through to it must restart the streams waiting for it; failing beats (a dead node)
    /// restart nothing.
    #[test]
    fn a_peer_reached_but_not_heard_restarts_the_streams_waiting_for_it() {
        let liveness = Liveness::<UTConfig>::new(1, 1, Duration::from_millis(100));
        let mut rx = liveness.subscribe_return(&4);
        rx.mark_unchanged();

        liveness.reached(&4, false);
        assert!(!rx.has_changed().unwrap_or(true), "a failing beat restarts nothing");
        assert!(!liveness.is_reached(&4));

        liveness.reached(&4, true);
        assert!(rx.has_changed().unwrap_or(false));
        assert!(liveness.is_reached(&4) && !liveness.is_live(&4));
        rx.mark_unchanged();
        liveness.reached(&4, true);
        assert!(!rx.has_changed().unwrap_or(true), "once per change, not per beat");

        // Heard: reaching it is no news.
        liveness.heard(&beat(4, 9, &[]), Instant::now(), runs_all);
        rx.mark_unchanged();
        liveness.reached(&4, false);
        liveness.reached(&4, true);
        assert!(!rx.has_changed().unwrap_or(true));
    }

    /// A node that restarts between two beats of this host (or whose connection keeps taking
    /// beats after its process died) is reached all along: once it is suspected, the next beat
    /// that gets through must restart the streams waiting for it all the same, once per
    /// suspicion. Found by a cluster test: a node back with an empty disk was never caught up.
    #[test]
    fn a_peer_suspected_while_reached_restarts_the_streams_waiting_for_it_once() {
        let liveness = Liveness::<UTConfig>::new(1, 1, Duration::from_millis(100));
        let t0 = Instant::now();
        liveness.heard(&beat(4, 9, &[]), t0, runs_all);
        liveness.reached(&4, true);
        let mut rx = liveness.subscribe_return(&4);
        rx.mark_unchanged();

        liveness.sweep(t0 + Duration::from_millis(150), Duration::ZERO);
        assert!(!liveness.is_live(&4));
        liveness.reached(&4, true);
        assert!(rx.has_changed().unwrap_or(false), "reached while suspected, though never unreached");
        rx.mark_unchanged();
        liveness.reached(&4, true);
        assert!(!rx.has_changed().unwrap_or(true), "once per suspicion, not per beat");

        // Heard again, then suspected again: a new suspicion, signalled again.
        liveness.heard(&beat(4, 9, &[]), t0 + Duration::from_millis(200), runs_all);
        rx.mark_unchanged();
        liveness.sweep(t0 + Duration::from_millis(400), Duration::ZERO);
        liveness.reached(&4, true);
        assert!(rx.has_changed().unwrap_or(false));
    }

    /// A follower's wake request rides on its host's beats for twelve suspicion timeouts; the
    /// leader's host acts on each request once (by its number), only for groups it runs, and
    /// again after the requester restarts (its numbers start again).
    #[test]
    fn wake_requests_ride_on_the_beats_and_are_acted_on_once_each() {
        let t = Instant::now();
        let follower = Liveness::<UTConfig>::new(2, 7, Duration::from_millis(100));
        follower.ask_leader_to_wake(5, 3, t);
        let beat = follower.beat(t + Duration::from_millis(25));
        assert_eq!(beat.wake, vec![WakeRequest { group: 5, term: 3, seq: 1 }]);
        assert_eq!(follower.beat(t + Duration::from_millis(1200)).wake.len(), 1, "still riding");
        assert!(follower.beat(t + Duration::from_millis(1201)).wake.is_empty(), "then dropped");

        let leader = Liveness::<UTConfig>::new(1, 9, Duration::from_millis(100));
        let runs = |group: GroupId| group != 6;
        assert_eq!(leader.heard(&beat, t, runs).wake, vec![(5, 3)]);
        assert!(leader.heard(&beat, t, runs).wake.is_empty(), "the same request again: acted on already");
        follower.ask_leader_to_wake(5, 3, t);
        follower.ask_leader_to_wake(6, 3, t);
        let again = follower.beat(t + Duration::from_millis(50));
        assert_eq!(leader.heard(&again, t, runs).wake, vec![(5, 3)], "a new request for 5; 6 is not run here");

        let restarted = Liveness::<UTConfig>::new(2, 8, Duration::from_millis(100));
        restarted.ask_leader_to_wake(5, 3, t);
        let first = restarted.beat(t);
        assert_eq!(first.wake[0].seq, 1);
        assert_eq!(leader.heard(&first, t, runs).wake, vec![(5, 3)], "numbers start again after a restart");
    }

    /// Found in review: with its own timer late by more than the time releases ride on the
    /// beats, a host could miss every beat carrying a release without suspecting the sender,
    /// and its followers stayed quiesced under an ended leadership. Releases now ride for
    /// twelve suspicion timeouts (were four), so a host late by up to ten of them suspects a
    /// peer it missed for that long before the releases stop.
    #[test]
    fn a_late_host_suspects_a_peer_silent_for_the_release_window() {
        let t = Instant::now();
        let suspect_after = Duration::from_millis(100);
        let liveness = Liveness::<UTConfig>::new(1, 7, suspect_after);
        liveness.heard(&beat(2, 8, &[]), t, runs_all);
        let lag = suspect_after * 10;
        liveness.sweep(t + suspect_after * 11, lag);
        assert!(liveness.is_live(&2), "within the bound");
        let suspected_at = t + suspect_after * 11 + Duration::from_millis(1);
        liveness.sweep(suspected_at, lag);
        assert!(!liveness.is_live(&2), "silent for longer than the bound");
        let follower_of_a_release = Liveness::<UTConfig>::new(2, 8, suspect_after);
        follower_of_a_release.release(4, 1, t);
        assert!(!follower_of_a_release.beat(suspected_at).released.is_empty(), "the release still rode then");
    }
}
