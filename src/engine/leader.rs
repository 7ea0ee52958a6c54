//! The leader: appending client entries, tracking followers' progress, committing.

use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::RaftTypeConfig;
use crate::engine::TargetMap;
use crate::engine::{Acked, Command, Engine, LogIOId, ReplicationTarget};
use crate::types::{DisplayOption, Entry, EntryPayload, LogId, Membership, Vote};

/// What a replication stream learned about its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplicationResult<C: RaftTypeConfig> {
    /// The target's log matches the leader's up to this id, durably. It only goes back when
    /// the target turned out not to hold what it acknowledged.
    Matched(Option<LogId<C>>),
    /// The target has seen a greater vote.
    HigherVote(Vote<C>),
}

/// Leader-only state: exists exactly while this node is the elected leader of `vote`.
///
/// Invariant: every matched log id is in the leader's log (a leader never truncates its log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leader<C: RaftTypeConfig> {
    /// The elected vote this leadership is for.
    pub(crate) vote: Vote<C>,
    /// The seq of this term's first log I/O: only flushes from there on count as the leader's
    /// own progress, since earlier ones may report entries a later truncation removed.
    first_io_seq: u64,
    /// The leader's own durable log, as far as it counts for commit.
    pub(crate) flushed: Option<LogId<C>>,
    /// The matched log id of every other member, voter or learner.
    pub(crate) progress: TargetMap<C::NodeId, Option<LogId<C>>>,
    /// The membership a joint change proposed by this leader is heading for.
    pub(crate) membership_target: Option<Membership<C>>,
    /// When this node became leader: for check-quorum (only), members that have not answered
    /// yet count as having acknowledged it then, which gives a new leader one election
    /// timeout of grace.
    pub(crate) since: Instant,
    /// For every other member, what the latest request it answered proves: it still followed
    /// this leader when that request was sent, in that heartbeat round.
    pub(crate) acked: TargetMap<C::NodeId, Acked>,
    /// Set for good once this leader told another node to campaign (TimeoutNow): that node's
    /// vote requests pass over the stickiness the lease relies on.
    pub(crate) lease_revoked: bool,
    /// The blank entry this leader appended on election; reads wait until it is committed.
    pub(crate) blank_log_id: Option<LogId<C>>,
    /// A leadership transfer in progress: the target, when it gives up, and whether the
    /// target was told to campaign.
    pub(crate) transfer: Option<Transfer<C>>,
    /// Whether the group is quiesced: no heartbeats, no check-quorum (see `quiesce.rs`).
    pub(crate) quiesced: bool,
    /// Whether some follower may still be quiesced under this leader: set when it quiesces,
    /// cleared once every member answered a request sent after it woke. A leadership that ends
    /// while it is set must tell the followers' hosts (see `quiesce.rs`).
    pub(crate) followers_may_be_quiesced: bool,
}

/// A leadership transfer in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transfer<C: RaftTypeConfig> {
    pub(crate) to: C::NodeId,
    pub(crate) deadline: Instant,
    pub(crate) sent: bool,
}

impl<C: RaftTypeConfig> Leader<C> {
    pub(crate) fn new(vote: Vote<C>, first_io_seq: u64, since: Instant) -> Self {
        Self {
            vote,
            first_io_seq,
            flushed: None,
            progress: TargetMap::new(),
            membership_target: None,
            since,
            acked: TargetMap::new(),
            lease_revoked: false,
            blank_log_id: None,
            transfer: None,
            quiesced: false,
            followers_may_be_quiesced: false,
        }
    }
}

impl<C: RaftTypeConfig> Engine<C> {
    /// Append client payloads to the leader's log; returns the id of the first new entry,
    /// or `None` if this node is not the leader (nothing is appended then).
    ///
    /// Pushes one `AppendEntries` command for the whole batch, and an
    /// `UpdateReplicationStreams` if a membership entry changed the set of targets.
    pub(crate) fn leader_append_entries(
        &mut self,
        payloads: impl IntoIterator<Item = EntryPayload<C>>,
    ) -> Option<LogId<C>> {
        // Every input that can reach here on a quiesced leader wakes it first (`propose`,
        // `change_membership`); commits and elections only happen to a leader that is awake.
        debug_assert!(!self.leader_quiesced(), "appending on a quiesced leader");
        let leader_id = self.leader.as_ref()?.vote.leader_id()?;
        let mut next_index = self.state.last_log_id().map_or(0, |l| l.index + 1);
        let first = LogId::new(leader_id, next_index);
        let mut membership_changed = false;
        let entries: Vec<Entry<C>> = payloads
            .into_iter()
            .map(|payload| {
                let log_id = LogId::new(leader_id, next_index);
                next_index += 1;
                self.state.log_ids.append(log_id);
                if let EntryPayload::Membership(m) = &payload {
                    self.state.membership.append(log_id, m.clone());
                    membership_changed = true;
                }
                Entry { log_id, payload }
            })
            .collect();
        if entries.is_empty() {
            return None;
        }
        let io = self.next_append_io();
        self.output.push_back(Command::AppendEntries { io, entries });
        if membership_changed {
            self.end_transfer_to_a_non_voter();
            self.update_replication_streams();
            // The new config may count a quorum differently (e.g. a voter was removed).
            self.leader_commit();
        }
        Some(first)
    }

    /// Client payloads arrived at `now`: wake the group if it is quiesced and append them
    /// (see [`leader_append_entries`](Self::leader_append_entries)).
    pub(crate) fn propose(
        &mut self,
        now: Instant,
        payloads: impl IntoIterator<Item = EntryPayload<C>>,
    ) -> Option<LogId<C>> {
        self.leader_wake(now);
        self.leader_append_entries(payloads)
    }

    /// The log store reports `io` durable.
    pub(crate) fn on_log_flushed(&mut self, io: LogIOId<C>) {
        if io.seq <= self.state.io.flushed.seq {
            return;
        }
        debug_assert!(io.seq <= self.state.io.accepted.seq, "flushed {io} beyond accepted");
        self.state.io.flushed = io;
        self.state.io_stalled = false;
        let Some(leader) = self.leader.as_mut() else { return };
        if io.seq >= leader.first_io_seq && io.last_log_id > leader.flushed {
            leader.flushed = io.last_log_id;
            self.leader_commit();
        }
    }

    /// A replication stream of the leadership `vote` reports on `target` at `now`.
    pub(crate) fn on_replication_progress(
        &mut self,
        now: Instant,
        target: C::NodeId,
        vote: Vote<C>,
        result: ReplicationResult<C>,
    ) {
        match result {
            ReplicationResult::HigherVote(v) => {
                // A node the leader's config no longer holds (its departing stream runs on for
                // a while so it learns it was removed) has no say in this group: a newer term
                // it reached campaigning on its own (pre-vote off) must not depose a leader the
                // members still follow (dissertation §4.2.3). Only a leader a quorum followed
                // within the election timeout (see `leader_known_current`); a newer leader
                // among the members shows itself in their answers.
                if self.state.membership.effective().get_node(&target).is_none() && self.leader_known_current(now) {
                    info!(%target, vote = %v, "a removed node has a newer term; the leader stays");
                    return;
                }
                self.see_greater_vote(now, v)
            }
            ReplicationResult::Matched(matched) => {
                let Some(leader) = self.leader.as_mut() else { return };
                if leader.vote != vote {
                    return;
                }
                if matched > self.state.log_ids.last() {
                    warn!(%target, matched = %DisplayOption(&matched), "target claims entries the leader does not have");
                    return;
                }
                let Some(progress) = leader.progress.get_mut(&target) else { return };
                if matched < *progress {
                    // The follower lost entries it had acknowledged as durable (its store broke
                    // its contract): count on it only for what it holds now. What was already
                    // committed stays committed; the stream searches its log again.
                    warn!(%target, was = %DisplayOption(progress), now = %DisplayOption(&matched), "a follower's match point went back");
                    *progress = matched;
                } else if matched > *progress {
                    *progress = matched;
                    self.leader_commit();
                    self.maybe_send_timeout_now();
                }
            }
        }
    }

    /// Commit the greatest log id held by a quorum, if the leader proposed it (Raft §5.4.2:
    /// entries of earlier terms commit only by committing one of the leader's own).
    fn leader_commit(&mut self) {
        let Some(leader) = self.leader.as_ref() else { return };
        let me = self.config.id;
        let quorum_matched = self
            .state
            .membership
            .effective()
            .quorum_value(|id| if *id == me { leader.flushed } else { leader.progress.get(id).copied().flatten() });
        let Some(Some(matched)) = quorum_matched else { return };
        if Some(matched.leader_id) != leader.vote.leader_id() {
            return;
        }
        if Some(matched) > self.state.committed {
            debug!(id = %me, committed = %matched, "leader commits");
        }
        let blank = leader.blank_log_id;
        let committed_before = self.state.committed;
        self.commit(matched);
        // A new leader may inherit a joint config it already knows committed, which no commit
        // of a membership entry will move on. It finishes that change once its own first entry
        // commits, as it would make any change only after an entry of its term committed.
        if blank.is_some_and(|b| committed_before < Some(b) && Some(b) <= self.state.committed) {
            self.leader_advance_membership();
        }
    }

    /// Make the replication streams match the membership: one per other member of the
    /// effective or the committed config, so nodes being removed keep receiving the log until
    /// the config that removes them commits.
    pub(crate) fn update_replication_streams(&mut self) {
        let me = self.config.id;
        let Some(leader) = self.leader.as_mut() else { return };
        let ms = &self.state.membership;
        let mut nodes = ms.committed.membership.nodes().clone();
        nodes.extend(ms.effective().nodes().iter().map(|(k, v)| (*k, v.clone())));
        nodes.remove(&me);
        leader.progress.retain(|id, _| nodes.contains_key(id));
        // A removed node's acknowledgements count for nothing; forget them with it.
        leader.acked.retain(|id, _| nodes.contains_key(id));
        for id in nodes.keys() {
            leader.progress.get_or_insert(*id, None);
        }
        let targets = nodes.into_iter().map(|(id, node)| ReplicationTarget { id, node }).collect();
        self.output.push_back(Command::UpdateReplicationStreams { vote: leader.vote, targets });
    }
}
