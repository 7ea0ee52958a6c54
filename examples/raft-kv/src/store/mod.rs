//! Durable storage of one node: the Raft log and vote ([`LogStore`]) and the key-value state
//! machine ([`StateMachineStore`]), both under one data directory, locked by one process at a
//! time ([`DataDirLock`]).
//!
//! ```text
//! <data-dir>/log/seg-0000000001.log   log segments: magic, version, crc-framed records
//! <data-dir>/snapshot.bin             the latest snapshot: magic, version, lengths, crc, meta, map
//! ```
//!
//! # The log format
//!
//! See [`record`](self) (private): every segment starts with a magic number and a format
//! version; recovery cuts only a torn tail of the newest segment and refuses anything else it
//! cannot read back as written, with a [`StoreError`] naming the file and offset; it syncs
//! what it recovered before the node trusts it.
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

pub mod disk;
mod error;
mod fs_util;
mod lock;
mod log_store;
mod record;
mod state_machine;
mod writer;

pub use error::StoreError;
pub use lock::DataDirLock;
pub use log_store::{LogReader, LogStore};
pub use state_machine::{KvSnapshotBuilder, StateMachineStore};
