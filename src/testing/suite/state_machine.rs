//! Checks of the state machine: applied state, apply responses, snapshots, and what survives a
//! restart.

use std::io::SeekFrom;

use anyerror::AnyError;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::fixture::{Check, entries, log_id, membership};
use super::{StateMachinePersistence, StoreBuilder, SuiteError};
use crate::RaftTypeConfig;
use crate::error::{ErrorSubject, ErrorVerb, StorageError};
use crate::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use crate::types::{Entry, LogId, StoredMembership};

/// What [`RaftStateMachine::applied_state`] returns.
type AppliedState<C> = (Option<LogId<C>>, StoredMembership<C>);

/// The applied state a snapshot stands for.
fn applied_of<C: RaftTypeConfig>(meta: &SnapshotMeta<C>) -> AppliedState<C> {
    (meta.last_log_id, meta.last_membership.clone())
}

/// Apply `entries` and check that the state machine answers once per entry.
async fn apply<C: RaftTypeConfig>(
    check: &Check,
    sm: &mut impl RaftStateMachine<C>,
    entries: Vec<Entry<C>>,
) -> Result<(), SuiteError> {
    let count = entries.len();
    let responses = check.call("apply", sm.apply(entries).await)?;
    check.expect_eq("apply returns one response per entry", count, responses.len())
}

/// A new state machine has applied nothing, has the empty membership and no snapshot.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn initial_applied_state_is_empty<C: RaftTypeConfig, B: StoreBuilder<C>>(
    builder: &B,
) -> Result<(), SuiteError> {
    let check = Check::new("initial_applied_state_is_empty");
    let (_log, mut sm) = check.call("build", builder.build().await)?;
    let got = check.call("applied_state", sm.applied_state().await)?;
    check.expect_eq("a new state machine has applied nothing", (None, StoredMembership::default()), got)?;
    let snapshot = check.call("get_current_snapshot", sm.get_current_snapshot().await)?;
    check.expect_eq("a new state machine has no snapshot", None, snapshot.map(|s| s.meta))
}

/// [`apply`](RaftStateMachine::apply) returns one response per entry, for batches of any
/// size and every kind of entry (blank, membership, normal).
///
/// The responses themselves are application data: the suite cannot judge their content or
/// order.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn apply_returns_one_response_per_entry<C: RaftTypeConfig, B: StoreBuilder<C>>(
    builder: &B,
) -> Result<(), SuiteError> {
    let check = Check::new("apply_returns_one_response_per_entry");
    let (_log, mut sm) = check.call("build", builder.build().await)?;
    for batch in [0..1, 1..4, 4..9, 9..10] {
        apply(&check, &mut sm, entries(builder, 1, batch)).await?;
    }
    Ok(())
}

/// After `apply`, [`applied_state`](RaftStateMachine::applied_state) reports the last entry
/// applied, of any kind, and the membership of the last membership entry applied.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn applied_state_after_apply<C: RaftTypeConfig, B: StoreBuilder<C>>(builder: &B) -> Result<(), SuiteError> {
    const RULE: &str = "applied_state reports the last entry applied and the last membership applied";
    let check = Check::new("applied_state_after_apply");
    let (_log, mut sm) = check.call("build", builder.build().await)?;

    apply(&check, &mut sm, entries(builder, 1, 0..3)).await?;
    let got = check.call("applied_state", sm.applied_state().await)?;
    check.expect_eq(RULE, (Some(log_id(1, 2)), StoredMembership::new(Some(log_id(1, 0)), membership())), got)?;

    // A second membership, then normal and blank entries after it.
    let mut batch = vec![Entry::new_membership(log_id(2, 3), membership())];
    batch.extend(entries(builder, 2, 4..8));
    apply(&check, &mut sm, batch).await?;
    let got = check.call("applied_state", sm.applied_state().await)?;
    check.expect_eq(RULE, (Some(log_id(2, 7)), StoredMembership::new(Some(log_id(2, 3)), membership())), got)
}

/// A snapshot covers the applied state; it is kept as the current snapshot; and written into
/// a fresh state machine's receiving buffer and installed, it gives that state machine the
/// same applied state, becomes its current snapshot, and the log applies on after it.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn snapshot_round_trip<C: RaftTypeConfig, B: StoreBuilder<C>>(builder: &B) -> Result<(), SuiteError> {
    let check = Check::new("snapshot_round_trip");
    let (_log, mut source) = check.call("build", builder.build().await)?;
    apply(&check, &mut source, entries(builder, 1, 0..6)).await?;
    let applied = check.call("applied_state", source.applied_state().await)?;

    let snapshot = check.call("build_snapshot", source.get_snapshot_builder().await.build_snapshot().await)?;
    check.expect_eq("a snapshot covers everything applied", applied.clone(), applied_of(&snapshot.meta))?;
    let meta = snapshot.meta.clone();
    let current = check.call("get_current_snapshot", source.get_current_snapshot().await)?;
    check.expect_eq("a built snapshot is the current snapshot", Some(&meta), current.as_ref().map(|s| &s.meta))?;

    let (_log, mut target) = check.call("build", builder.build().await)?;
    let data = read_data(&check, snapshot).await?;
    install(&check, &mut target, &meta, &data).await?;
    let got = check.call("applied_state", target.applied_state().await)?;
    check.expect_eq("an installed snapshot's state is the applied state", applied.clone(), got)?;
    let current = check.call("get_current_snapshot", target.get_current_snapshot().await)?;
    let Some(current) = current else {
        return Err(check.mismatch("an installed snapshot is the current snapshot", Some(meta), None::<()>));
    };
    check.expect_eq("an installed snapshot is the current snapshot", &meta, &current.meta)?;

    // What get_current_snapshot returns is what a leader sends: it must install too.
    let (_log, mut third) = check.call("build", builder.build().await)?;
    let data = read_data(&check, current).await?;
    install(&check, &mut third, &meta, &data).await?;
    let got = check.call("applied_state", third.applied_state().await)?;
    check.expect_eq("the current snapshot installs to the same applied state", applied, got)?;

    apply(&check, &mut target, entries(builder, 1, 6..8)).await?;
    let got = check.call("applied_state", target.applied_state().await)?;
    check.expect_eq("the log applies on after an installed snapshot", Some(log_id(1, 7)), got.0)
}

/// Applied state survives a restart as [`StoreBuilder::state_machine_persistence`] promises:
/// a [`Persistent`](StateMachinePersistence::Persistent) state machine reports everything
/// applied before; a [`Snapshot`](StateMachinePersistence::Snapshot) one keeps its last
/// snapshot and reports either its state or nothing. Either way, after quorate's startup
/// step (install the current snapshot if the state machine is behind it), the log applies on.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn applied_state_survives_reopen<C: RaftTypeConfig, B: StoreBuilder<C>>(
    builder: &B,
) -> Result<(), SuiteError> {
    let check = Check::new("applied_state_survives_reopen");
    let (log, mut sm) = check.call("build", builder.build().await)?;
    apply(&check, &mut sm, entries(builder, 1, 0..4)).await?;
    let snapshot = check.call("build_snapshot", sm.get_snapshot_builder().await.build_snapshot().await)?;
    apply(&check, &mut sm, entries(builder, 1, 4..7)).await?;
    let before = check.call("applied_state", sm.applied_state().await)?;

    let (_log, mut sm) = check.call("reopen", builder.reopen(log, sm).await)?;
    let after = check.call("applied_state", sm.applied_state().await)?;
    match builder.state_machine_persistence() {
        StateMachinePersistence::Persistent => {
            check.expect_eq("a persistent state machine keeps its applied state across a restart", before, after)?;
        }
        StateMachinePersistence::Snapshot => {
            let current = check.call("get_current_snapshot", sm.get_current_snapshot().await)?;
            let Some(current) = current else {
                return Err(check.mismatch("the last snapshot survives a restart", Some(snapshot.meta), None::<()>));
            };
            check.expect_eq("the last snapshot survives a restart", &snapshot.meta, &current.meta)?;
            let restored = applied_of(&snapshot.meta);
            if after != restored && after != (None, StoredMembership::default()) {
                return Err(check.mismatch(
                    "a state machine restarted from a snapshot reports its state or nothing",
                    restored,
                    after,
                ));
            }
            if after.0 < snapshot.meta.last_log_id {
                // What quorate does at startup when the state machine is behind its snapshot.
                let data = read_data(&check, current).await?;
                install(&check, &mut sm, &snapshot.meta, &data).await?;
            }
        }
    }

    let (applied, _) = check.call("applied_state", sm.applied_state().await)?;
    let next = applied.map_or(0, |l| l.index + 1);
    apply(&check, &mut sm, entries(builder, 1, next..9)).await?;
    let got = check.call("applied_state", sm.applied_state().await)?;
    check.expect_eq("the log applies on after a restart", Some(log_id(1, 8)), got.0)
}

/// The bytes of a snapshot's data, read from its start.
async fn read_data<C: RaftTypeConfig>(check: &Check, mut snapshot: Snapshot<C>) -> Result<Vec<u8>, SuiteError> {
    let mut data = Vec::new();
    let read = async {
        snapshot.snapshot.seek(SeekFrom::Start(0)).await?;
        snapshot.snapshot.read_to_end(&mut data).await
    };
    check.call("read snapshot data", read.await.map_err(|e| snapshot_error(ErrorVerb::Read, &e)))?;
    Ok(data)
}

/// Receive `data` as quorate does (write it into a fresh buffer, flush, rewind) and install it.
async fn install<C: RaftTypeConfig>(
    check: &Check,
    sm: &mut impl RaftStateMachine<C>,
    meta: &SnapshotMeta<C>,
    data: &[u8],
) -> Result<(), SuiteError> {
    let mut buffer = check.call("begin_receiving_snapshot", sm.begin_receiving_snapshot().await)?;
    let write = async {
        buffer.write_all(data).await?;
        buffer.flush().await?;
        buffer.seek(SeekFrom::Start(0)).await
    };
    check.call("write snapshot data", write.await.map_err(|e| snapshot_error(ErrorVerb::Write, &e)))?;
    check.call("install_snapshot", sm.install_snapshot(meta, buffer).await)
}

fn snapshot_error(verb: ErrorVerb, e: &std::io::Error) -> StorageError {
    StorageError::new(ErrorSubject::Snapshot, verb, AnyError::new(e))
}
