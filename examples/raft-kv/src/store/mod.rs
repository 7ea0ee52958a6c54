//! Durable storage of one node, under one data directory locked by one process at a time:
//!
//! ```text
//! <data-dir>/log/              the Raft log and vote: quorate's FileLogStore (feature file-store)
//! <data-dir>/snapshot.bin      the latest snapshot of the key-value map: StateMachineStore
//! ```
//!
//! A node of many groups (`--groups N`, N > 1; see [`crate::groups`]) lays it out as:
//!
//! ```text
//! <data-dir>/groups            N, written when the directory is created
//! <data-dir>/shared-log/       every group's Raft log and vote: quorate's SharedLog
//! <data-dir>/group-<s>/snapshot.bin   shard s's snapshot (s from 0 to N - 1)
//! ```
//!
//! The log is the library's; raft-kv writes only its state machine ([`StateMachineStore`]):
//! the map in memory, restored at start from the snapshot file plus replay of the log after it.

mod error;
mod fs_util;
mod state_machine;

pub use error::StoreError;
pub(crate) use fs_util::write_atomic;
pub use state_machine::{KvSnapshotBuilder, StateMachineStore};

/// The log store of a raft-kv node.
pub type LogStore = quorate::file_store::FileLogStore<crate::TypeConfig>;
