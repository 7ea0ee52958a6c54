//! Durable storage of one node, under one data directory locked by one process at a time:
//!
//! ```text
//! <data-dir>/log/              the Raft log and vote: quorate's FileLogStore (feature file-store)
//! <data-dir>/snapshot.bin      the latest snapshot of the key-value map: StateMachineStore
//! ```
//!
//! The log is the library's; raft-kv writes only its state machine ([`StateMachineStore`]):
//! the map in memory, restored at start from the snapshot file plus replay of the log after it.

mod error;
mod fs_util;
mod state_machine;

pub use error::StoreError;
pub use state_machine::{KvSnapshotBuilder, StateMachineStore};

/// The log store of a raft-kv node.
pub type LogStore = quorate::file_store::FileLogStore<crate::TypeConfig>;
