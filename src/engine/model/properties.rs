//! The properties checked after every step, and the ghost state they need: who led each
//! term, which entry is committed at each index, and the answered reads whose read log id is
//! not decided yet.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use super::reads::{self, ConfirmedRead};
use super::storage::C;
use super::world::{Node, World};
use crate::types::{EntryPayload, LogId};

/// A property that does not hold, and how.
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    pub(crate) property: &'static str,
    pub(crate) detail: String,
}

impl Violation {
    pub(super) fn new(property: &'static str, detail: impl Into<String>) -> Self {
        Self { property, detail: detail.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.property, self.detail)
    }
}

/// What the properties remember of the run so far.
#[derive(Clone, Debug, Default)]
pub(super) struct Ghost {
    /// The node elected in each term.
    leaders: BTreeMap<u64, u64>,
    /// The entry known committed at each index (some Engine held it as committed), with the
    /// term of the first node that did.
    chain: BTreeMap<u64, (LogId<C>, u64)>,
    /// Answered reads whose read log id is not yet decided.
    reads: Vec<ConfirmedRead>,
    /// Entries a node removed from its log when `Engine::truncated_entries_are_dead` said
    /// they could never commit (RaftCore answers their writes `Discarded`).
    dead: BTreeSet<LogId<C>>,
}

impl Ghost {
    /// The greatest log id any Engine has held as committed so far.
    pub(super) fn latest_committed(&self) -> Option<LogId<C>> {
        self.chain.values().next_back().map(|(l, _)| *l)
    }

    /// A node removed `removed` from its log and its Engine calls them dead.
    pub(super) fn removed_dead(&mut self, removed: impl IntoIterator<Item = LogId<C>>) {
        self.dead.extend(removed);
    }

    /// A read was answered: judge what can be judged now, keep the rest for later.
    pub(super) fn read_confirmed(&mut self, read: ConfirmedRead) -> Result<(), Violation> {
        reads::check_fresh(&read).map_err(|e| Violation::new("linearizable read", e))?;
        if read.read_log_id.is_some() {
            self.reads.push(read);
        }
        Ok(())
    }
}

/// Check every property of `new`, reached from `old` by one step; update the ghost state.
/// `crashed` is the node restarted by the step, if any.
pub(super) fn check(old: &World, new: &mut World, crashed: Option<u64>) -> Result<(), Violation> {
    election_safety(new)?;
    update_committed(new)?;
    for node in &new.nodes {
        engine_agrees_with_store(node)?;
        effective_membership(node)?;
        state_machine_safety(&new.ghost, node)?;
    }
    log_matching(new)?;
    discarded_never_commits(&new.ghost)?;
    leader_completeness(new)?;
    acked_is_durable(new)?;
    monotonic(old, new, crashed)?;
    if new.ghost.reads.is_empty() {
        return Ok(());
    }
    reads_decided(Arc::make_mut(&mut new.ghost))
}

/// Raft §5.2: at most one leader per term, ever.
fn election_safety(w: &mut World) -> Result<(), Violation> {
    for node in &w.nodes {
        let Some(leader) = &node.engine.leader else { continue };
        let term = leader.vote.term;
        let first = match w.ghost.leaders.get(&term) {
            Some(first) => *first,
            None => {
                Arc::make_mut(&mut w.ghost).leaders.insert(term, node.id());
                node.id()
            }
        };
        if first != node.id() {
            return Err(Violation::new("election safety", format!("n{first} and n{} both led term {term}", node.id())));
        }
    }
    Ok(())
}

/// Record every entry an Engine holds as committed; two different entries committed at one
/// index break state-machine safety (Raft §5.4.3) before anything applies them.
fn update_committed(w: &mut World) -> Result<(), Violation> {
    for node in &w.nodes {
        let st = &node.engine.state;
        let Some(committed) = st.committed else { continue };
        if st.log_ids.get(committed.index).is_some_and(|l| l != committed) {
            return Err(Violation::new(
                "engine state",
                format!(
                    "n{} holds {committed} as committed but its log has {:?}",
                    node.id(),
                    st.log_ids.get(committed.index)
                ),
            ));
        }
        let first = st.log_ids.purged().map_or(0, |p| p.index);
        for index in first..=committed.index {
            let Some(log_id) = st.log_ids.get(index) else { continue };
            let known = match w.ghost.chain.get(&index) {
                Some((known, _)) => *known,
                None => {
                    Arc::make_mut(&mut w.ghost).chain.insert(index, (log_id, st.vote.term));
                    log_id
                }
            };
            if known != log_id {
                return Err(Violation::new(
                    "committed entries agree",
                    format!("n{} holds {log_id} as committed, but {known} was committed at index {index}", node.id()),
                ));
            }
        }
    }
    Ok(())
}

/// No entry a node removed as dead (a write answered `Discarded`) is ever committed.
fn discarded_never_commits(g: &Ghost) -> Result<(), Violation> {
    match g.dead.iter().find(|d| g.chain.get(&d.index).is_some_and(|(l, _)| l == *d)) {
        Some(d) => Err(Violation::new("discarded never commits", format!("{d} was removed as dead, then committed"))),
        None => Ok(()),
    }
}

/// The Engine's log and vote are its store's (a crash point keeps them in agreement).
fn engine_agrees_with_store(node: &Node) -> Result<(), Violation> {
    let st = &node.engine.state;
    let id = node.id();
    if node.store.vote.unwrap_or_default() != st.vote {
        return Err(Violation::new(
            "engine agrees with store",
            format!("n{id}: Engine vote {} but the store holds {:?}", st.vote, node.store.vote),
        ));
    }
    let log = &node.store.submitted;
    let mismatch = log.last_log_id() != st.last_log_id()
        || log.purged != st.log_ids.purged()
        || log.entries.values().any(|e| st.log_ids.get(e.log_id.index) != Some(e.log_id));
    if mismatch {
        return Err(Violation::new(
            "engine agrees with store",
            format!(
                "n{id}: Engine log ends at {:?} (purged {:?}), store log is {log:?}",
                st.last_log_id(),
                st.log_ids.purged()
            ),
        ));
    }
    Ok(())
}

/// A node decides with the last membership in its log, or its snapshot's if the log after the
/// snapshot has none (Raft dissertation §4.1).
fn effective_membership(node: &Node) -> Result<(), Violation> {
    let in_log = node.store.submitted.entries.values().rev().find_map(|e| match &e.payload {
        EntryPayload::Membership(_) => Some(Some(e.log_id)),
        _ => None,
    });
    // Without one in the log, the latest held is the snapshot's, or the one the state machine
    // applied if later: a node whose state machine is ahead of its log after a crash (an
    // entry applied before its own flush) has its log purged up to the state machine at
    // startup (found by a deep run combining a snapshot, a change and a crash: the property
    // took the snapshot's older membership for the latest).
    let snapshot = node.sm.snapshot.as_ref().map(|s| s.meta.last_membership.log_id);
    let applied = Some(node.sm.membership.log_id).filter(|a| *a > snapshot.flatten());
    let expected = in_log.or(applied).or(snapshot);
    let Some(expected) = expected else { return Ok(()) };
    let effective = node.engine.state.membership.effective.log_id;
    if effective != expected {
        return Err(Violation::new(
            "effective membership",
            format!(
                "n{}: effective membership is from {effective:?}, but the latest one it holds is from {expected:?}",
                node.id()
            ),
        ));
    }
    Ok(())
}

/// Raft §5.4.3: a node applies only committed entries, each once, in order; no two nodes apply
/// different entries at one index. The state machine's list is dense from index 0, so an
/// entry applied twice or skipped was already refused by it.
fn state_machine_safety(ghost: &Ghost, node: &Node) -> Result<(), Violation> {
    for (index, log_id) in node.sm.applied.iter().enumerate() {
        match ghost.chain.get(&(index as u64)) {
            Some((committed, _)) if committed == log_id => {}
            Some((committed, _)) => {
                return Err(Violation::new(
                    "state machine safety",
                    format!("n{} applied {log_id}, but {committed} is committed at index {index}", node.id()),
                ));
            }
            None => {
                return Err(Violation::new(
                    "state machine safety",
                    format!("n{} applied {log_id}, which no node holds as committed", node.id()),
                ));
            }
        }
    }
    Ok(())
}

/// Raft §5.3: two logs with the same id at an index agree on every entry before it.
fn log_matching(w: &World) -> Result<(), Violation> {
    for (i, a) in w.nodes.iter().enumerate() {
        for b in &w.nodes[i + 1..] {
            let (la, lb) = (&a.engine.state.log_ids, &b.engine.state.log_ids);
            let end = la.last().zip(lb.last()).map_or(0, |(x, y)| x.index.min(y.index) + 1);
            let mut agreed_above = false;
            for index in (0..end).rev() {
                let (x, y) = (la.get(index), lb.get(index));
                match (x, y) {
                    (Some(x), Some(y)) if x == y => agreed_above = true,
                    (Some(x), Some(y)) if agreed_above => {
                        return Err(Violation::new(
                            "log matching",
                            format!(
                                "n{} and n{} share a later entry but differ at {index}: {x} vs {y}",
                                a.id(),
                                b.id()
                            ),
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Raft §5.4: an entry committed in term t is in the log of every leader of a term after t.
fn leader_completeness(w: &World) -> Result<(), Violation> {
    for node in &w.nodes {
        let Some(leader) = &node.engine.leader else { continue };
        let log_ids = &node.engine.state.log_ids;
        for (index, (log_id, term)) in &w.ghost.chain {
            let covered = log_ids.purged().is_some_and(|p| p.index >= *index);
            if *term < leader.vote.term && !covered && log_ids.get(*index) != Some(*log_id) {
                return Err(Violation::new(
                    "leader completeness",
                    format!(
                        "n{} leads term {} without {log_id}, committed in term {term}",
                        node.id(),
                        leader.vote.term
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// An entry counts as replicated to a follower only once the follower made it durable: the
/// leader's `matched` for a node still in its term survives that node's crash.
fn acked_is_durable(w: &World) -> Result<(), Violation> {
    for node in &w.nodes {
        let Some(leader) = &node.engine.leader else { continue };
        for (target, matched) in &leader.progress {
            let Some(matched) = matched else { continue };
            let t = w.node(*target);
            let same_term = t.store.vote.is_some_and(|v| v.term == leader.vote.term);
            if same_term && !t.durably_holds(*matched) {
                return Err(Violation::new(
                    "acknowledged means durable",
                    format!(
                        "n{} counts {matched} as matched on n{target}, whose durable log ends at {:?} (applied {:?})",
                        node.id(),
                        t.store.durable.last_log_id(),
                        t.sm.last_applied()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Committed never goes back on a running node, and a leader moves it only to an entry of its
/// own term; a vote never goes back, nor changes to another candidate within a term, even
/// across a restart.
fn monotonic(old: &World, new: &World, crashed: Option<u64>) -> Result<(), Violation> {
    for (o, n) in old.nodes.iter().zip(&new.nodes) {
        let (ov, nv) = (o.store.vote.unwrap_or_default(), n.store.vote.unwrap_or_default());
        if !nv.is_ge(&ov) {
            return Err(Violation::new(
                "vote once per term",
                format!("n{}: durable vote went from {ov} to {nv}", n.id()),
            ));
        }
        // Raft §5.4.2: a leader commits entries of earlier terms only by committing one of its own.
        if let (Some(ol), Some(nl)) = (&o.engine.leader, &n.engine.leader) {
            let committed = n.engine.state.committed;
            if ol.vote == nl.vote
                && committed > o.engine.state.committed
                && committed.map(|c| c.leader_id) != nl.vote.leader_id()
            {
                return Err(Violation::new(
                    "leader commit rule",
                    format!(
                        "n{}, leader of {}, committed {committed:?}, an entry of an earlier term, by counting",
                        n.id(),
                        nl.vote
                    ),
                ));
            }
        }
        if crashed != Some(n.id()) && n.engine.state.committed < o.engine.state.committed {
            return Err(Violation::new(
                "committed never decreases",
                format!("n{}: {:?} -> {:?}", n.id(), o.engine.state.committed, n.engine.state.committed),
            ));
        }
    }
    Ok(())
}

/// Condition (2) of `reads`: an answered read's log id is the committed entry at its index.
fn reads_decided(ghost: &mut Ghost) -> Result<(), Violation> {
    let chain = &ghost.chain;
    let mut stale = None;
    ghost.reads.retain(|r| {
        let Some(read_log_id) = r.read_log_id else { return false };
        match chain.get(&read_log_id.index) {
            None => true,
            Some((committed, _)) if *committed == read_log_id => false,
            Some((committed, _)) => {
                stale = Some(Violation::new(
                    "linearizable read",
                    format!(
                        "n{} answered a read at {read_log_id}, but {committed} was committed at that index",
                        r.node
                    ),
                ));
                false
            }
        }
    });
    stale.map_or(Ok(()), Err)
}
