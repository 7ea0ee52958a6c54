//! Durable storage of one node: the Raft log and vote ([`LogStore`]) and the key-value state
//! machine ([`StateMachineStore`]), both under one data directory.
//!
//! ```text
//! <data-dir>/log/seg-0000000001.log   log segments: crc-framed records, oldest first
//! <data-dir>/snapshot.bin             the latest snapshot: meta (JSON line) + map (JSON)
//! ```
//!
//! # Durability
//!
//! quorate's storage contract (see `quorate::storage`) says what must be on disk when. This
//! store keeps it as follows:
//!
//! | operation | how |
//! |---|---|
//! | `save_vote` | a record in the log stream; returns after the fsync that covers it |
//! | `append` | records queued to the writer thread; the callback fires after their fsync |
//! | `truncate`, `purge`, `save_committed` | records queued in order; made durable by the next fsync |
//! | state machine `apply` | in memory only; a snapshot file (written atomically) plus replay of the log after it restores it |
//!
//! One writer thread owns the files and drains every queued operation into one `write` and one
//! `fdatasync` (group commit), then fires the callbacks in order. Since the file is one
//! ordered stream, a fsync that covers an append covers every operation queued before it.

mod fs_util;
mod log_store;
mod record;
mod state_machine;
mod writer;

pub use log_store::{LogReader, LogStore};
pub use state_machine::{KvSnapshotBuilder, StateMachineStore};
