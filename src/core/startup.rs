//! Loading a node's state from its storage at startup.

use tracing::{info, warn};

use crate::RaftTypeConfig;
use crate::engine::{IOState, LogIOId, LogIdList, MembershipState, RaftState};
use crate::error::{Fatal, StorageError};
use crate::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use crate::types::{DisplayOption, LogId, StoredMembership};

/// Entries read at a time while scanning the log for membership entries.
const SCAN_CHUNK: u64 = 1024;

/// Build the Engine's state from what the log store and the state machine hold.
pub(crate) async fn load_state<C, LS, SM>(id: C::NodeId, log_store: &mut LS, sm: &mut SM) -> Result<RaftState<C>, Fatal>
where
    C: RaftTypeConfig,
    LS: RaftLogStorage<C>,
    SM: RaftStateMachine<C>,
{
    let vote = log_store.read_vote().await?.unwrap_or_default();
    let mut log_state = log_store.get_log_state().await?;
    let (mut applied, mut sm_membership) = sm.applied_state().await?;
    // A state machine that keeps no state of its own comes back empty, with its snapshot: the
    // snapshot's last id is held data too (found in review).
    let snapshot = sm.get_current_snapshot().await?.and_then(|s| s.meta.last_log_id);
    check_vote_covers_the_data(&vote, &log_state, applied.max(snapshot))?;

    if applied < log_state.last_purged_log_id {
        // A state machine that does not persist its state restarts empty; the log before the
        // purged id is gone, so it must start from the last snapshot.
        let Some(snapshot) = sm.get_current_snapshot().await? else {
            return Err(Fatal::Invariant(format!(
                "the log is purged up to {} but the state machine applied only {} and has no snapshot",
                DisplayOption(&log_state.last_purged_log_id),
                DisplayOption(&applied)
            )));
        };
        info!(%id, snapshot = %snapshot.meta, "restoring the state machine from its snapshot");
        sm.install_snapshot(&snapshot.meta, snapshot.snapshot).await?;
        (applied, sm_membership) = sm.applied_state().await?;
    }
    if applied < log_state.last_purged_log_id {
        return Err(Fatal::Invariant(format!(
            "the log is purged up to {} but the state machine, restored from its snapshot, applied only {}: the \
             current snapshot is older than the purged log (a snapshot builder replaced a newer snapshot?)",
            DisplayOption(&log_state.last_purged_log_id),
            DisplayOption(&applied)
        )));
    }
    if let Some(a) = applied {
        if reconcile_log_with_applied(id, log_store, a, &log_state).await? {
            log_state = log_store.get_log_state().await?;
        }
    }
    if let (Some(purged), Some(last)) = (log_state.last_purged_log_id, log_state.last_log_id) {
        if last.index > purged.index && last.leader_id < purged.leader_id {
            // Terms never go down along a log: entries after the purged id with an older term
            // are a tail a truncation should have removed. The storage contract keeps it from
            // surviving a durable purge; a store that broke it still restarts consistent.
            warn!(%id, %purged, %last, "the log holds a stale tail after its purged id; truncating it");
            let mut reader = log_store.get_log_reader().await;
            let first_stale = log_id_at(&mut reader, purged.index + 1).await?;
            log_store.truncate(first_stale).await?;
            log_state = log_store.get_log_state().await?;
        }
    }
    let snapshot_last = snapshot;
    let saved_committed = log_store.read_committed().await?;
    let mut reader = log_store.get_log_reader().await;

    let purged = log_state.last_purged_log_id;
    let last = log_state.last_log_id.max(purged);
    let log_ids = load_log_ids(&mut reader, purged, last).await?;

    // What is committed: at least what was applied; what was recorded, if the log still has it.
    let mut committed = applied;
    if let Some(c) = saved_committed {
        if log_ids.get(c.index) == Some(c) || Some(c) <= purged {
            committed = committed.max(Some(c));
        } else {
            warn!(%id, saved = %c, "saved committed log id is not in the log; ignoring it");
        }
    }

    let membership = load_membership(&mut reader, applied.max(purged), last, sm_membership, committed).await?;
    let io = LogIOId { seq: 0, vote, last_log_id: log_ids.last() };
    info!(
        %id, %vote, purged = %DisplayOption(&purged), last = %DisplayOption(&last),
        committed = %DisplayOption(&committed), applied = %DisplayOption(&applied),
        membership = %membership.effective, "loaded state"
    );
    Ok(RaftState {
        vote,
        log_ids,
        committed,
        apply_submitted: applied,
        applied,
        membership,
        io: IOState { accepted: io, appended: io, flushed: io },
        snapshot_last,
        ..RaftState::default()
    })
}

/// Refuse to start when the durable vote is older than a term the node's own data holds.
///
/// A node saves a term's vote (durably, before it acts on it) before it appends an entry of
/// that term, installs a snapshot from that term's leader or becomes that term's leader, and
/// its vote never goes back: so the vote's term is at least the term of every entry in its log,
/// of its purged id and of what its state machine applied or its snapshot holds (`applied`
/// here: the later of the two). A vote older than any of those was
/// lost or rolled back (the log store's files deleted, replaced or restored from a backup
/// while the state machine's were not): starting would let this node vote again in terms it
/// voted in, and two leaders could be elected in one term. No store that keeps its contract
/// gets here; the operator must restore the node's storage whole, or remove the node and add
/// it back empty.
fn check_vote_covers_the_data<C: RaftTypeConfig>(
    vote: &crate::types::Vote<C>,
    log_state: &crate::storage::LogState<C>,
    applied: Option<LogId<C>>,
) -> Result<(), Fatal> {
    let held = [log_state.last_log_id, log_state.last_purged_log_id, applied];
    let newest = held.into_iter().flatten().max_by_key(LogId::term);
    match newest {
        Some(newest) if newest.term() > vote.term => Err(Fatal::Invariant(format!(
            "the saved vote {vote} is older than the term of {newest}, which this node holds (log: last {}, \
             purged {}; state machine: applied or snapshot {}): its vote was lost or rolled back (were the log store's files \
             deleted, replaced or restored apart from the state machine's?); starting could elect two leaders \
             in one term, so the node refuses to start",
            DisplayOption(&log_state.last_log_id),
            DisplayOption(&log_state.last_purged_log_id),
            DisplayOption(&applied),
        ))),
        _ => Ok(()),
    }
}

/// Make the log continue from `applied` when the state machine is ahead of it or disagrees
/// with it; returns whether the log was changed.
///
/// This is the restart state after a crash between `InstallSnapshot` and the log commands
/// around it: the installed snapshot is durable at once, while the truncation of a conflicting
/// tail and the purge up to the snapshot may become durable only with the next append's flush
/// (the storage contract allows it). The log then still holds entries the snapshot replaced,
/// possibly of an older term at indexes after the snapshot's last one: every entry at or
/// after `applied`'s index that is not `applied` itself goes, and the log is purged up to it.
async fn reconcile_log_with_applied<C, LS>(
    id: C::NodeId,
    log_store: &mut LS,
    applied: LogId<C>,
    log_state: &crate::storage::LogState<C>,
) -> Result<bool, Fatal>
where
    C: RaftTypeConfig,
    LS: RaftLogStorage<C>,
{
    if log_state.last_purged_log_id.is_some_and(|p| p.index >= applied.index) {
        return Ok(false);
    }
    let held = match log_state.last_log_id {
        Some(last) if last.index >= applied.index => {
            let mut reader = log_store.get_log_reader().await;
            Some(log_id_at(&mut reader, applied.index).await?)
        }
        _ => None,
    };
    match held {
        // The log agrees with the state machine; by log matching so does its tail.
        Some(held) if held == applied => return Ok(false),
        Some(held) => {
            warn!(
                %id, %applied, conflicting = %held, last = %DisplayOption(&log_state.last_log_id),
                "the log holds entries the installed snapshot replaced; truncating them"
            );
            log_store.truncate(held).await?;
        }
        None => warn!(
            %id, %applied, last = %DisplayOption(&log_state.last_log_id),
            "the state machine is ahead of the log; the log continues after what was applied"
        ),
    }
    log_store.purge(applied).await?;
    Ok(true)
}

/// Read the id of the entry at `index`.
async fn log_id_at<C: RaftTypeConfig>(reader: &mut impl RaftLogReader<C>, index: u64) -> Result<LogId<C>, Fatal> {
    let entries = reader.try_get_log_entries(index..index + 1).await?;
    match entries.first() {
        Some(e) if e.log_id.index == index => Ok(e.log_id),
        _ => Err(Fatal::Invariant(format!("log store reported entry {index} present but did not return it"))),
    }
}

/// Find every leader change of the log by bisection: O(leaders × log n) single-entry reads.
async fn load_log_ids<C: RaftTypeConfig>(
    reader: &mut impl RaftLogReader<C>,
    purged: Option<LogId<C>>,
    last: Option<LogId<C>>,
) -> Result<LogIdList<C>, Fatal> {
    let Some(last) = last else { return Ok(LogIdList::default()) };
    let first = match purged {
        Some(p) => p,
        None => log_id_at(reader, 0).await?,
    };
    let mut keys = vec![first];
    // Ranges [lo, hi] whose ends are known; a leader change lies inside iff their leaders differ.
    let mut ranges = vec![(first, last)];
    while let Some((lo, hi)) = ranges.pop() {
        if lo.leader_id == hi.leader_id {
            continue;
        }
        if hi.leader_id < lo.leader_id {
            return Err(StorageError::read_logs(&std::io::Error::other(format!(
                "log ids go backwards: {lo} before {hi}"
            )))
            .into());
        }
        if hi.index <= lo.index {
            // Garbage from the store (e.g. a last entry below the purged one with a greater
            // term): an error, not an index that underflows (found in review).
            return Err(StorageError::read_logs(&std::io::Error::other(format!(
                "log indexes do not grow with their terms: {lo} before {hi}"
            )))
            .into());
        }
        if hi.index == lo.index + 1 {
            keys.push(hi);
            continue;
        }
        let mid = log_id_at(reader, lo.index + (hi.index - lo.index) / 2).await?;
        // Pop order: the lower half first, so keys come out sorted.
        ranges.push((mid, hi));
        ranges.push((lo, mid));
    }
    Ok(LogIdList::new(purged, keys, Some(last)))
}

/// The committed and effective memberships: the last two membership entries after `from`,
/// falling back to the state machine's.
async fn load_membership<C: RaftTypeConfig>(
    reader: &mut impl RaftLogReader<C>,
    from: Option<LogId<C>>,
    last: Option<LogId<C>>,
    sm_membership: StoredMembership<C>,
    committed: Option<LogId<C>>,
) -> Result<MembershipState<C>, Fatal> {
    let start = from.map_or(0, |l| l.index + 1);
    let mut end = last.map_or(0, |l| l.index + 1);
    let mut found: Vec<StoredMembership<C>> = Vec::new();
    // Scan backwards: usually the last membership is near the end.
    while end > start && found.len() < 2 {
        let chunk_start = end.saturating_sub(SCAN_CHUNK).max(start);
        let entries = reader.try_get_log_entries(chunk_start..end).await?;
        for e in entries.iter().rev() {
            if let Some(m) = e.membership() {
                found.push(StoredMembership::new(Some(e.log_id), m.clone()));
                if found.len() == 2 {
                    break;
                }
            }
        }
        end = chunk_start;
    }
    let mut state = MembershipState::new(sm_membership.clone(), sm_membership);
    for m in found.into_iter().rev() {
        if let (Some(log_id), m) = (m.log_id, m.membership) {
            state.append(log_id, m);
        }
    }
    state.commit(committed);
    Ok(state)
}
