//! Checks of the log store: the vote, appends and reads, truncate, purge, flush callbacks, and
//! what survives a restart.

use super::fixture::{Check, FlushRx, describe, entries, log_id};
use super::{StoreBuilder, SuiteError};
use crate::RaftTypeConfig;
use crate::storage::{LogState, RaftLogStorage};
use crate::types::{LogId, LogIdOptionExt, Vote};

/// The log state with `purged` and `last`.
fn state<C: RaftTypeConfig>(purged: Option<LogId<C>>, last: Option<LogId<C>>) -> LogState<C> {
    LogState { last_purged_log_id: purged, last_log_id: last }
}

/// A new store has no vote; [`save_vote`](RaftLogStorage::save_vote) then
/// [`read_vote`](RaftLogStorage::read_vote) returns the vote saved last.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn vote_save_and_read<C: RaftTypeConfig, B: StoreBuilder<C>>(builder: &B) -> Result<(), SuiteError> {
    let check = Check::new("vote_save_and_read");
    let (mut log, _sm) = check.call("build", builder.build().await)?;
    check.expect_eq("a new store has no vote", None, check.call("read_vote", log.read_vote().await)?)?;

    let node = C::NodeId::default();
    for vote in [Vote::new(1, node), Vote::new_committed(1, node), Vote::new(3, node)] {
        check.call("save_vote", log.save_vote(&vote).await)?;
        let read = check.call("read_vote", log.read_vote().await)?;
        check.expect_eq("read_vote returns the vote saved last", Some(vote), read)?;
    }
    Ok(())
}

/// A vote is durable when [`save_vote`](RaftLogStorage::save_vote) returns: a reopened store
/// reads it back.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn vote_survives_reopen<C: RaftTypeConfig, B: StoreBuilder<C>>(builder: &B) -> Result<(), SuiteError> {
    let check = Check::new("vote_survives_reopen");
    let (mut log, sm) = check.call("build", builder.build().await)?;
    let vote = Vote::new_committed(2, C::NodeId::default());
    check.call("save_vote", log.save_vote(&vote).await)?;

    let (mut log, _sm) = check.call("reopen", builder.reopen(log, sm).await)?;
    let read = check.call("read_vote", log.read_vote().await)?;
    check.expect_eq("a saved vote is durable when save_vote returns", Some(vote), read)
}

/// A new log is empty: no purged id, no last id, no entries.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn initial_log_state_is_empty<C: RaftTypeConfig, B: StoreBuilder<C>>(builder: &B) -> Result<(), SuiteError> {
    let check = Check::new("initial_log_state_is_empty");
    let (mut log, _sm) = check.call("build", builder.build().await)?;
    let got = check.call("get_log_state", log.get_log_state().await)?;
    check.expect_eq("a new log has no purged and no last log id", state(None, None), got)?;
    let read = check.read(&mut log, 0..16).await?;
    check.expect_eq("a new log has no entries", Vec::<String>::new(), read)
}

/// Appended entries are readable when `append` returns; a read returns exactly the entries of
/// the range that are present: all of a full range, part of a partial one, only those before
/// the end for a range past it, none for an empty range.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn append_then_read_ranges<C: RaftTypeConfig, B: StoreBuilder<C>>(builder: &B) -> Result<(), SuiteError> {
    let check = Check::new("append_then_read_ranges");
    let (mut log, _sm) = check.call("build", builder.build().await)?;
    let all = describe(&entries(builder, 1, 0..10));
    check.append(&mut log, entries(builder, 1, 0..6)).await?;
    check.append(&mut log, entries(builder, 1, 6..10)).await?;

    let cases: [(&'static str, std::ops::Range<u64>, &[String]); 5] = [
        ("a read of the whole log returns every entry in index order", 0..10, &all),
        ("a read of a part of the log returns that part", 2..7, &all[2..7]),
        ("a read past the last entry returns only the entries present", 6..20, &all[6..]),
        ("a read wholly past the last entry returns nothing", 10..20, &[]),
        ("an empty range returns nothing", 4..4, &[]),
    ];
    for (rule, range, expected) in cases {
        let read = check.read(&mut log, range).await?;
        check.expect_eq(rule, expected, read.as_slice())?;
    }
    Ok(())
}

/// After appends, the log state's last log id is the last entry appended.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn log_state_after_append<C: RaftTypeConfig, B: StoreBuilder<C>>(builder: &B) -> Result<(), SuiteError> {
    let check = Check::new("log_state_after_append");
    let (mut log, _sm) = check.call("build", builder.build().await)?;
    const RULE: &str = "last_log_id is the last entry appended";

    check.append(&mut log, entries(builder, 1, 0..5)).await?;
    let got = check.call("get_log_state", log.get_log_state().await)?;
    check.expect_eq(RULE, state(None, Some(log_id(1, 4))), got)?;

    check.append(&mut log, entries(builder, 2, 5..8)).await?;
    let got = check.call("get_log_state", log.get_log_state().await)?;
    check.expect_eq(RULE, state(None, Some(log_id(2, 7))), got)
}

/// [`truncate`](RaftLogStorage::truncate) deletes every entry at or after `since.index`, and
/// the last log id moves back to the entry before it; truncating everything empties the log.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn truncate_removes_entries_since_index<C: RaftTypeConfig, B: StoreBuilder<C>>(
    builder: &B,
) -> Result<(), SuiteError> {
    let check = Check::new("truncate_removes_entries_since_index");
    let (mut log, _sm) = check.call("build", builder.build().await)?;
    let all = describe(&entries(builder, 1, 0..10));
    check.append(&mut log, entries(builder, 1, 0..10)).await?;

    check.call("truncate", log.truncate(log_id(1, 6)).await)?;
    let got = check.call("get_log_state", log.get_log_state().await)?;
    check.expect_eq(
        "after a truncate, last_log_id is the entry before `since`",
        state(None, Some(log_id(1, 5))),
        got,
    )?;
    let read = check.read(&mut log, 0..10).await?;
    check.expect_eq("truncate deletes the entries at and after `since` only", &all[..6], read.as_slice())?;

    check.call("truncate", log.truncate(log_id(1, 0)).await)?;
    let got = check.call("get_log_state", log.get_log_state().await)?;
    check.expect_eq("truncating every entry of an unpurged log leaves no last log id", state(None, None), got)?;
    let read = check.read(&mut log, 0..10).await?;
    check.expect_eq("truncating at the first entry deletes every entry", Vec::<String>::new(), read)
}

/// After a truncate the log continues at the truncated index, with entries of a new leader,
/// as when a follower's divergent suffix is replaced.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn truncate_then_append_continues<C: RaftTypeConfig, B: StoreBuilder<C>>(
    builder: &B,
) -> Result<(), SuiteError> {
    let check = Check::new("truncate_then_append_continues");
    let (mut log, _sm) = check.call("build", builder.build().await)?;
    check.append(&mut log, entries(builder, 1, 0..10)).await?;
    check.call("truncate", log.truncate(log_id(1, 5)).await)?;
    check.append(&mut log, entries(builder, 2, 5..8)).await?;

    let mut expected = entries(builder, 1, 0..5);
    expected.extend(entries(builder, 2, 5..8));
    let read = check.read(&mut log, 0..10).await?;
    check.expect_eq("entries appended after a truncate replace the truncated ones", describe(&expected), read)?;
    let got = check.call("get_log_state", log.get_log_state().await)?;
    check.expect_eq("last_log_id is the last entry appended after the truncate", state(None, Some(log_id(2, 7))), got)
}

/// [`purge`](RaftLogStorage::purge) deletes every entry at or below `upto.index` and remembers
/// `upto` as the last purged id; once every entry after it is truncated, the last log id is
/// the purged one.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn purge_removes_entries_upto_index<C: RaftTypeConfig, B: StoreBuilder<C>>(
    builder: &B,
) -> Result<(), SuiteError> {
    let check = Check::new("purge_removes_entries_upto_index");
    let (mut log, _sm) = check.call("build", builder.build().await)?;
    let all = describe(&entries(builder, 1, 0..10));
    check.append(&mut log, entries(builder, 1, 0..10)).await?;

    check.call("purge", log.purge(log_id(1, 3)).await)?;
    let read = check.read(&mut log, 0..10).await?;
    check.expect_eq("purge deletes the entries at and below `upto` only", &all[4..], read.as_slice())?;
    let got = check.call("get_log_state", log.get_log_state().await)?;
    check.expect_eq(
        "purge records `upto` as last_purged_log_id",
        state(Some(log_id(1, 3)), Some(log_id(1, 9))),
        got,
    )?;

    check.call("truncate", log.truncate(log_id(1, 4)).await)?;
    let got = check.call("get_log_state", log.get_log_state().await)?;
    let expected = state(Some(log_id(1, 3)), Some(log_id(1, 3)));
    check.expect_eq("an empty log's last_log_id is its last_purged_log_id", expected, got)?;

    check.append(&mut log, entries(builder, 2, 4..6)).await?;
    let read = check.read(&mut log, 0..10).await?;
    check.expect_eq("the log continues after the purged id", describe(&entries(builder, 2, 4..6)), read)
}

/// Purging every entry, or up to an id past the last entry (as after installing a snapshot
/// that is ahead of the log), leaves an empty log whose last log id is the purged id, and
/// the log continues after it.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn purge_all_and_beyond_last<C: RaftTypeConfig, B: StoreBuilder<C>>(builder: &B) -> Result<(), SuiteError> {
    let check = Check::new("purge_all_and_beyond_last");
    const EMPTY_LAST: &str = "when every entry is purged, last_log_id is last_purged_log_id";
    const CONTINUES: &str = "the log continues after the purged id";

    let (mut log, _sm) = check.call("build", builder.build().await)?;
    check.append(&mut log, entries(builder, 1, 0..5)).await?;
    check.call("purge", log.purge(log_id(1, 4)).await)?;
    let got = check.call("get_log_state", log.get_log_state().await)?;
    check.expect_eq(EMPTY_LAST, state(Some(log_id(1, 4)), Some(log_id(1, 4))), got)?;
    let read = check.read(&mut log, 0..10).await?;
    check.expect_eq("purging up to the last entry deletes every entry", Vec::<String>::new(), read)?;
    check.append(&mut log, entries(builder, 1, 5..7)).await?;
    let read = check.read(&mut log, 0..10).await?;
    check.expect_eq(CONTINUES, describe(&entries(builder, 1, 5..7)), read)?;

    let (mut log, _sm) = check.call("build", builder.build().await)?;
    check.append(&mut log, entries(builder, 1, 0..5)).await?;
    check.call("purge", log.purge(log_id(3, 9)).await)?;
    let got = check.call("get_log_state", log.get_log_state().await)?;
    check.expect_eq(EMPTY_LAST, state(Some(log_id(3, 9)), Some(log_id(3, 9))), got)?;
    let read = check.read(&mut log, 0..16).await?;
    check.expect_eq("purging past the last entry deletes every entry", Vec::<String>::new(), read)?;
    check.append(&mut log, entries(builder, 3, 10..12)).await?;
    let read = check.read(&mut log, 0..16).await?;
    check.expect_eq(CONTINUES, describe(&entries(builder, 3, 10..12)), read)?;
    let got = check.call("get_log_state", log.get_log_state().await)?;
    check.expect_eq("last_log_id is the last entry appended", state(Some(log_id(3, 9)), Some(log_id(3, 11))), got)
}

/// A reader sees every change made through the store after the reader was created: appends,
/// truncates and purges, each once its call has returned.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn reader_sees_later_changes<C: RaftTypeConfig, B: StoreBuilder<C>>(builder: &B) -> Result<(), SuiteError> {
    let check = Check::new("reader_sees_later_changes");
    let (mut log, _sm) = check.call("build", builder.build().await)?;
    let mut reader = log.get_log_reader().await;
    let first = describe(&entries(builder, 1, 0..5));

    check.append(&mut log, entries(builder, 1, 0..5)).await?;
    let read = check.read_with(&mut reader, 0..10).await?;
    check.expect_eq("a reader sees entries appended after it was created", first.as_slice(), read.as_slice())?;

    check.call("truncate", log.truncate(log_id(1, 3)).await)?;
    let read = check.read_with(&mut reader, 0..10).await?;
    check.expect_eq("a reader sees a truncate once it returns", &first[..3], read.as_slice())?;

    check.call("purge", log.purge(log_id(1, 1)).await)?;
    let read = check.read_with(&mut reader, 0..10).await?;
    check.expect_eq("a reader sees a purge once it returns", &first[2..3], read.as_slice())?;

    check.append(&mut log, entries(builder, 2, 3..6)).await?;
    let mut expected = vec![first[2].clone()];
    expected.extend(describe(&entries(builder, 2, 3..6)));
    let read = check.read_with(&mut reader, 0..10).await?;
    check.expect_eq("a reader sees entries appended after a truncate", expected, read)
}

/// Every append's flush callback completes with `Ok`, and in append order: when a callback
/// has completed, the callbacks of every earlier append have completed too (completing one
/// promises that everything before it is durable).
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn flush_callbacks_fire_in_append_order<C: RaftTypeConfig, B: StoreBuilder<C>>(
    builder: &B,
) -> Result<(), SuiteError> {
    const APPENDS: u64 = 8;
    let check = Check::new("flush_callbacks_fire_in_append_order");
    let (mut log, _sm) = check.call("build", builder.build().await)?;

    let mut flushes = Vec::new();
    for i in 0..APPENDS {
        flushes.push(Flush { rx: check.append(&mut log, entries(builder, 1, 2 * i..2 * i + 2)).await?, done: false });
        observe_flushes(&check, &mut flushes)?;
    }

    // Wait for the last flush; every earlier one must have completed by then.
    if let Some(last) = flushes.pop().filter(|f| !f.done) {
        check.wait_flushed(last.rx, builder.flush_timeout()).await?;
    }
    observe_flushes(&check, &mut flushes)?;
    let pending: Vec<usize> = flushes.iter().enumerate().filter(|(_, f)| !f.done).map(|(i, _)| i).collect();
    check.expect_eq("when an append's flush completes, every earlier append's has completed", vec![], pending)
}

/// One append's flush callback, and whether the suite has seen it complete.
struct Flush {
    rx: FlushRx,
    done: bool,
}

/// Poll every flush not yet seen complete, and fail if one completed before an earlier one.
fn observe_flushes(check: &Check, flushes: &mut [Flush]) -> Result<(), SuiteError> {
    // Latest first: if a later flush is seen complete, an earlier one completed before it and
    // is seen complete too, even if the store completes more while we poll.
    for flush in flushes.iter_mut().rev().filter(|f| !f.done) {
        flush.done = check.is_flushed(&mut flush.rx)?;
    }
    let first_pending = flushes.iter().position(|f| !f.done).unwrap_or(flushes.len());
    if let Some(out_of_order) = flushes[first_pending..].iter().position(|f| f.done) {
        return Err(check.mismatch(
            "flush callbacks complete in append order",
            format!("append #{first_pending} completes first"),
            format!("append #{} completed before it", first_pending + out_of_order),
        ));
    }
    Ok(())
}

/// [`read_committed`](RaftLogStorage::read_committed) returns the id last saved with
/// [`save_committed`](RaftLogStorage::save_committed), or `None` throughout if the store does
/// not record it (both methods are optional).
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn committed_save_and_read<C: RaftTypeConfig, B: StoreBuilder<C>>(builder: &B) -> Result<(), SuiteError> {
    let check = Check::new("committed_save_and_read");
    let (mut log, _sm) = check.call("build", builder.build().await)?;
    check.expect_eq(
        "a new store has no committed id",
        None,
        check.call("read_committed", log.read_committed().await)?,
    )?;
    check.append(&mut log, entries(builder, 1, 0..8)).await?;

    let mut implemented = None;
    for committed in [Some(log_id(1, 3)), Some(log_id(1, 7))] {
        check.call("save_committed", log.save_committed(committed).await)?;
        let read = check.call("read_committed", log.read_committed().await)?;
        match (implemented, read) {
            (None, None) => implemented = Some(false),
            (Some(false), None) => {}
            (None | Some(true), Some(_)) => {
                check.expect_eq("read_committed returns the committed id saved last", committed, read)?;
                implemented = Some(true);
            }
            (Some(true), None) | (Some(false), Some(_)) => {
                return Err(check.mismatch(
                    "read_committed either records every save or none",
                    committed.filter(|_| implemented == Some(true)),
                    read,
                ));
            }
        }
    }
    Ok(())
}

/// After a restart, the vote and every entry whose flush was reported are back, and a purge
/// (which may be durable lazily) is either wholly there or wholly absent.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn reopen_keeps_flushed_entries_and_vote<C: RaftTypeConfig, B: StoreBuilder<C>>(
    builder: &B,
) -> Result<(), SuiteError> {
    let check = Check::new("reopen_keeps_flushed_entries_and_vote");
    let timeout = builder.flush_timeout();
    let (mut log, sm) = check.call("build", builder.build().await)?;
    let vote = Vote::new_committed(1, C::NodeId::default());
    check.call("save_vote", log.save_vote(&vote).await)?;
    check.append_flushed(&mut log, entries(builder, 1, 0..6), timeout).await?;
    check.append_flushed(&mut log, entries(builder, 1, 6..10), timeout).await?;
    check.call("purge", log.purge(log_id(1, 2)).await)?;

    let (mut log, _sm) = check.call("reopen", builder.reopen(log, sm).await)?;
    let read = check.call("read_vote", log.read_vote().await)?;
    check.expect_eq("the vote survives a restart", Some(vote), read)?;

    let got = check.call("get_log_state", log.get_log_state().await)?;
    check.expect_eq("flushed entries survive a restart: last_log_id", Some(log_id(1, 9)), got.last_log_id)?;
    let purged = got.last_purged_log_id;
    if purged.is_some() && purged != Some(log_id(1, 2)) {
        return Err(check.mismatch(
            "a lazily durable purge is lost or kept, as issued",
            Some(log_id::<C>(1, 2)),
            purged,
        ));
    }
    let read = check.read(&mut log, 0..10).await?;
    let expected = describe(&entries(builder, 1, purged.next_index()..10));
    check.expect_eq("flushed entries survive a restart", expected, read)
}

/// A truncate is durable no later than the next append's flush: after that flush and a
/// restart, the truncated entries stay gone and the new ones are there.
///
/// # Errors
/// [`SuiteError`] naming the broken rule.
pub async fn truncate_is_durable_with_next_flush<C: RaftTypeConfig, B: StoreBuilder<C>>(
    builder: &B,
) -> Result<(), SuiteError> {
    let check = Check::new("truncate_is_durable_with_next_flush");
    let timeout = builder.flush_timeout();
    let (mut log, sm) = check.call("build", builder.build().await)?;
    check.append_flushed(&mut log, entries(builder, 1, 0..10), timeout).await?;
    check.call("truncate", log.truncate(log_id(1, 5)).await)?;
    check.append_flushed(&mut log, entries(builder, 2, 5..7), timeout).await?;

    let (mut log, _sm) = check.call("reopen", builder.reopen(log, sm).await)?;
    let mut expected = entries(builder, 1, 0..5);
    expected.extend(entries(builder, 2, 5..7));
    let read = check.read(&mut log, 0..10).await?;
    check.expect_eq("a truncate is durable once a later append is flushed", describe(&expected), read)?;
    let got = check.call("get_log_state", log.get_log_state().await)?;
    check.expect_eq("last_log_id after a restart is the last flushed entry", state(None, Some(log_id(2, 6))), got)
}
