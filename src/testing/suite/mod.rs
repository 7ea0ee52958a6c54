//! A storage conformance suite: checks that a [`RaftLogStorage`] and a [`RaftStateMachine`]
//! keep the [storage contract](crate::storage) quorate relies on.
//!
//! quorate's safety rests on its storage: a vote that is not durable lets a node vote twice in
//! a term, a flush callback that fires early lets a leader count an entry that a crash then
//! loses. None of that shows up in a happy-path cluster test. The suite calls a store directly,
//! the way quorate does, and checks each rule of the contract on its own, including what
//! survives a restart.
//!
//! # Running it
//!
//! Implement [`StoreBuilder`] for your storage: it opens a fresh, empty store, reopens one as a
//! restarted process would, and makes application data for normal entries. Then run every
//! check with [`Suite::test_all`], or one check at a time with the functions of this module
//! (each is named after the rule it checks and returns the first violation it finds as a
//! [`SuiteError`]).
//!
//! ```
//! use quorate::testing::MemStoreBuilder;
//! use quorate::testing::suite::Suite;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let builder = MemStoreBuilder::persistent();
//! if let Err(e) = Suite::test_all(&builder).await {
//!     panic!("the in-memory store breaks the storage contract: {e}");
//! }
//! # }
//! ```
//!
//! The suite needs a Tokio runtime with the time driver enabled (`#[tokio::test]` has one): it
//! waits for flush callbacks with a timeout.
//!
//! # What it does not check
//!
//! The suite sees what a store reports, not what is on a disk: a store that keeps everything in
//! memory and "reopens" by handing back the same memory passes the durability checks. It is
//! the builder's [`reopen`](StoreBuilder::reopen) that decides how real the restart is; make it
//! drop every cache and read back from the medium. The responses of
//! [`apply`](RaftStateMachine::apply) are application data: the suite counts them but cannot
//! judge them.

mod error;
mod fixture;
mod log;
mod state_machine;

use std::future::Future;
use std::time::Duration;

pub use error::{SuiteError, Violation};
pub use log::{
    append_then_read_ranges, committed_save_and_read, flush_callbacks_fire_in_append_order, initial_log_state_is_empty,
    log_state_after_append, purge_all_and_beyond_last, purge_removes_entries_upto_index, reader_sees_later_changes,
    reopen_keeps_flushed_entries_and_vote, truncate_is_durable_with_next_flush, truncate_removes_entries_since_index,
    truncate_then_append_continues, vote_save_and_read, vote_survives_reopen,
};
pub use state_machine::{
    applied_state_after_apply, applied_state_survives_reopen, apply_returns_one_response_per_entry,
    initial_applied_state_is_empty, snapshot_round_trip,
};

use crate::RaftTypeConfig;
use crate::error::StorageError;
use crate::storage::{RaftLogStorage, RaftStateMachine};

/// What [`StoreBuilder::reopen`] keeps of a state machine: decides what
/// [`applied_state_survives_reopen`] expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateMachinePersistence {
    /// The state machine persists what it applies: after a reopen,
    /// [`applied_state`](RaftStateMachine::applied_state) reports what it reported before.
    Persistent,
    /// The state machine keeps its state in memory and restarts from its last snapshot: after
    /// a reopen, [`get_current_snapshot`](RaftStateMachine::get_current_snapshot) returns the
    /// last snapshot built or installed, and `applied_state` reports either that snapshot's
    /// state or the empty state (quorate then installs the snapshot itself at startup).
    Snapshot,
}

/// Opens the storage under test: a fresh, empty one, or one reopened after a simulated
/// restart.
///
/// # What an implementation must guarantee
///
/// - [`build`](Self::build) returns storage that shares nothing with earlier builds: no vote,
///   no entries, nothing applied, no snapshot. Checks build as many as they need.
/// - [`reopen`](Self::reopen) consumes storage made by `build` (or an earlier `reopen`) and
///   returns what a restarted process would open: only what the contract required to be
///   durable is guaranteed to come back. Drop caches and read back from the medium, or the
///   durability checks prove nothing.
/// - [`make_request`](Self::make_request) returns application data the state machine can
///   apply in any order and any number of times.
pub trait StoreBuilder<C: RaftTypeConfig>: Send + Sync {
    /// The log store under test.
    type LogStore: RaftLogStorage<C>;
    /// The state machine under test.
    type StateMachine: RaftStateMachine<C>;

    /// Fresh, empty storage.
    ///
    /// # Errors
    /// [`StorageError`] if the storage could not be created; the check fails with it.
    fn build(&self) -> impl Future<Output = Result<(Self::LogStore, Self::StateMachine), StorageError>> + Send;

    /// The storage reopened from what `log` and `sm` made durable, as after a crash and
    /// restart. `log` and `sm` are dropped, or unusable, afterwards.
    ///
    /// # Errors
    /// [`StorageError`] if the storage could not be reopened; the check fails with it.
    fn reopen(
        &self,
        log: Self::LogStore,
        sm: Self::StateMachine,
    ) -> impl Future<Output = Result<(Self::LogStore, Self::StateMachine), StorageError>> + Send;

    /// The application data of the normal entry at log index `index`.
    ///
    /// The suite fills normal entries with it and expects to read back the same data; it
    /// compares data by its `Debug` output (application data need not implement `PartialEq`),
    /// so return values that differ from index to index for the comparison to mean something.
    fn make_request(&self, index: u64) -> C::D;

    /// What a reopened state machine keeps; see [`StateMachinePersistence`].
    fn state_machine_persistence(&self) -> StateMachinePersistence;

    /// How long the suite waits for a flush callback before it reports the flush as lost.
    /// Ten seconds by default.
    fn flush_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// Runs every check of the suite.
#[derive(Debug, Clone, Copy, Default)]
pub struct Suite;

impl Suite {
    /// Run every check against storage from `builder`, in the order they are listed in the
    /// module, and stop at the first violation.
    ///
    /// # Errors
    /// The first [`SuiteError`]: which check failed and the rule the storage broke.
    pub async fn test_all<C, B>(builder: &B) -> Result<(), SuiteError>
    where
        C: RaftTypeConfig,
        B: StoreBuilder<C>,
    {
        // The log.
        vote_save_and_read(builder).await?;
        vote_survives_reopen(builder).await?;
        initial_log_state_is_empty(builder).await?;
        append_then_read_ranges(builder).await?;
        log_state_after_append(builder).await?;
        truncate_removes_entries_since_index(builder).await?;
        truncate_then_append_continues(builder).await?;
        purge_removes_entries_upto_index(builder).await?;
        purge_all_and_beyond_last(builder).await?;
        reader_sees_later_changes(builder).await?;
        flush_callbacks_fire_in_append_order(builder).await?;
        committed_save_and_read(builder).await?;
        reopen_keeps_flushed_entries_and_vote(builder).await?;
        truncate_is_durable_with_next_flush(builder).await?;

        // The state machine.
        initial_applied_state_is_empty(builder).await?;
        apply_returns_one_response_per_entry(builder).await?;
        applied_state_after_apply(builder).await?;
        snapshot_round_trip(builder).await?;
        applied_state_survives_reopen(builder).await?;
        Ok(())
    }
}
