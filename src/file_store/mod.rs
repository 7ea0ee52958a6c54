//! A durable log store to link instead of writing one: [`FileLogStore`] keeps the Raft log and
//! vote of one node in a directory of segment files, and implements [`RaftLogStorage`](crate::RaftLogStorage) and
//! [`RaftLogReader`](crate::RaftLogReader) for any [`RaftTypeConfig`](crate::RaftTypeConfig). Feature `file-store`.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use quorate::file_store::FileLogStore;
//!
//! quorate::declare_raft_types!(pub MyTypes: D = String);
//!
//! let log: FileLogStore<MyTypes> = FileLogStore::open("/var/lib/my-app/log".as_ref())?;
//! // Raft::new(id, config, network, log, my_state_machine).await?
//! # Ok(())
//! # }
//! ```
//!
//! The application still writes its state machine (and its snapshots): the store holds the
//! log only.
//!
//! A node that runs many Raft groups opens one [`SharedLog`] instead, and takes each group's
//! store from it ([`GroupLogStore`]); see [many groups, one log](#many-groups-one-log).
//!
//! # Durability
//!
//! quorate's [storage contract](crate::storage) says what must be on disk when. This store
//! keeps it as follows:
//!
//! | operation | visible to readers | durable |
//! |---|---|---|
//! | `save_vote` | on return | on return: it returns after the `fdatasync` that covers it |
//! | `append` | on return | when its callback fires, after the `fdatasync` that covers it |
//! | `truncate` | on return | with the next `fdatasync` (the next append's or vote's) |
//! | `purge`, `save_committed` | on return | with the next `fdatasync` |
//!
//! One writer thread owns the files. It takes every operation queued, writes them in one
//! `write` and makes them durable with one `fdatasync` (group commit: the number of syncs
//! follows the disk's speed, not the number of writers), then fires the callbacks in order.
//! The log is one ordered stream, so an `fdatasync` that covers an append covers every
//! operation queued before it: that is what the contract asks of a callback.
//!
//! Every entry not yet purged is also held in memory, where readers read it: readers never
//! wait for the disk. The snapshot policy bounds how many entries that is.
//!
//! # Files
//!
//! ```text
//! <dir>/seg-0000000001.log   the oldest segment kept
//! <dir>/seg-0000000002.log   ...
//! <dir>/seg-0000000007.log   the newest segment: the only one written to
//! ```
//!
//! Each start opens a new segment after the recovered ones, and the writer starts another when
//! the current one reaches [`FileStoreOptions::segment_bytes`]. A segment is deleted once every
//! entry it ever held is purged and that purge is durable. Nothing else lives in the
//! directory, and the store locks it ([`DataDirLock`]) while it is open: a second process on
//! the same directory gets [`FileStoreError::Locked`].
//!
//! # On-disk format
//!
//! A segment starts with a 12-byte file header: the magic number `QRTLOG\0\0` and the format
//! version (1, u32 little-endian). Records follow, each framed as
//!
//! ```text
//! [len: u32 LE][crc32(payload): u32 LE][payload: len bytes]
//! ```
//!
//! where the payload is one record encoded with [postcard](https://docs.rs/postcard): a header
//! (vote, committed and purged ids as of the segment's creation), an entry, a truncate (index),
//! a purge (log id), a vote, or a committed id. The first record of every segment is a header,
//! so replaying the segments left after older ones were deleted rebuilds the same state.
//!
//! Why postcard: it is a serde format, so the application's entry type needs nothing beyond the
//! `Serialize`/`Deserialize` quorate already requires; it is compact (varint integers, no field
//! names: a small entry costs a few bytes more than its payload); its wire format is
//! specified and stable since 1.0; and it is maintained. A change of the application's entry
//! type that serde cannot read back is the application's to manage, as with any serde format.
//!
//! # Many groups, one log
//!
//! A node that hosts many Raft groups (Multi-Raft) with one `FileLogStore` each would run one
//! writer thread and one stream of `fdatasync`s per group: ten thousand groups, ten thousand
//! syncs where one would do. A [`SharedLog`] is one directory, one writer thread and one stream
//! of segments for every group of the node; [`SharedLog::group`] hands out a
//! [`GroupLogStore`] per group, which implements the storage traits exactly as `FileLogStore`
//! does (the durability table above holds per group). The appends of all groups queued while
//! the writer syncs form its next batch: one `write` and one `fdatasync` for all of them, and
//! each append's callback fires after the sync that covers it. Since every group's records
//! are in one ordered stream, that sync covers every earlier operation of the group too.
//!
//! Each group has its own vote, committed id, entries, truncations and purges, so it snapshots
//! and purges on its own schedule. The price of one stream is in deleting it: a segment holds
//! records of many groups and is deleted only once, **for every group** it holds entries of,
//! those entries are durably purged (or the group was removed with
//! [`SharedLog::remove_group`]). A group that never purges (no snapshot policy, or a group that
//! stopped taking snapshots) keeps every segment written since its oldest unpurged entry, with
//! every other group's records in them: disk use is bounded by the slowest group's snapshot
//! policy, not by each group's own. That is inherent to one shared stream; what the log keeps
//! small is the rest: a new segment restates per group only its vote, committed and purged
//! ids (a few bytes each), not its entries, and in memory a group holds its unpurged entries
//! plus a few hundred bytes (measured by `tests/file_store/shared_memory.rs`).
//!
//! # The shared log format
//!
//! A shared segment has the same framing with its own magic number, `QRTSHRD\0`, and version
//! (1), so neither store reads the other's files (opening one on the other's directory is
//! refused as [`FileStoreError::Corrupt`], at offset 0). Its records are those of a
//! `FileLogStore` with the group id in front, and one more:
//!
//! ```text
//! Log(group: varint, record)   record: header | entry | truncate | purge | vote | committed
//! Removed(group: varint)       every earlier record of the group is void
//! ```
//!
//! A segment starts with one `Log(group, header)` record per group that has a vote, committed
//! or purged id, so that replay from the oldest segment kept rebuilds every group. Replay
//! applies each record to its group's log, and a `Removed` drops the group (a later record of
//! the same id starts it again, empty). The writer keeps, per segment and per group, the
//! greatest entry index written: that is what "every entry it holds is purged" is checked
//! against.
//!
//! # Recovery
//!
//! Opening replays every segment, oldest first, and refuses to guess:
//!
//! - Only the newest segment can have a torn tail (the writer appends to it alone). A bad frame
//!   there (cut short, zero-length, failing its crc) is a torn write when no valid frame
//!   follows it: it is cut off, and a warning names the file and offset.
//! - Anything else stops the open with [`FileStoreError::Corrupt`], naming the file and the
//!   offset: an unknown magic or version, a bad frame in an older segment or followed by valid
//!   frames (damage in the middle of the log), a record that passes its crc but does not
//!   decode, a missing segment, a gap between entries. Nothing is deleted or cut then.
//! - What was read is then synced (files and directory) before the store is used: after a
//!   crash of the process, records written but never synced are in the page cache only, and a
//!   node must not acknowledge them to a leader (or start a new segment after them) until they
//!   are durable.
//!
//! A [`SharedLog`] recovers by the same rules, per group: a gap in a group's entries, or a
//! group whose entries do not start after its purged id, is [`FileStoreError::Corrupt`] too.
//!
//! No content of a file can make the store panic or allocate more than the file holds: a
//! length field is checked against the bytes that follow it.
//!
//! # Errors
//!
//! Opening fails with a [`FileStoreError`] naming the file. After it is open, an I/O error of
//! the writer thread fails that operation's callback (or `save_vote`), and every later one:
//! the files are then in an unknown state, and quorate stops the node
//! ([`Fatal`](crate::Fatal)) rather than act on them. Restarting the process recovers from
//! what is on disk.
//!
//! # Observing it
//!
//! [`FileStoreOptions::on_sync`] takes a [`SyncObserver`], called on the writer thread after
//! every group commit with a [`SyncedBatch`]: the entries and bytes it wrote and how long its
//! `fdatasync` took. That is what to plot as fsync latency and batch size; the store records
//! nothing by itself. With the `metrics` feature,
//! `quorate::metrics::export::file_store_observer` records both as histograms.
//!
//! # Performance
//!
//! Measured against redb 4 (a maintained embedded B-tree store) behind the same group-commit
//! writer thread, entries of about 120 bytes, on this project's 2-core machine with its shared
//! disk (`cargo run --release -p raft-kv-storage-bench`; entries made durable per second, median
//! of 5 runs, each run alternating the two stores):
//!
#![doc = include_str!("bench_figures.md")]
//!
//! Where an `fdatasync` per append dominates (serial) or appends carry many entries (batched,
//! the shape of a leader draining its clients' writes, and of a follower's AppendEntries) the
//! two are equal within the noise. redb is ahead with many single-entry appends in flight (4
//! runs of 5); we have not found out why (one candidate: every `fdatasync` of a growing segment
//! also commits its new size, which preallocating segments would avoid). The file log stays
//! because it is level on the shapes Raft produces and because what it buys is not speed: its
//! recovery rules are its own and written above (cut only a torn tail, refuse anything else
//! with the file and offset), a purge is deleting files, and it puts no second storage engine,
//! with recovery rules of its own, under a log that only appends, reads recent entries from
//! memory, and drops its head.

mod disk;
mod error;
mod frame;
mod handle;
mod lock;
mod log_store;
mod mem_log;
mod observer;
mod record;
mod recovery;
mod shared;
mod shared_format;
mod writer;

pub use disk::{Disk, DiskFile, FsDisk};
pub use error::FileStoreError;
pub use lock::DataDirLock;
pub use log_store::{FileLogStore, FileStoreOptions};
pub use mem_log::FileLogReader;
pub use observer::{SyncObserver, SyncedBatch};
pub use shared::{GroupLogStore, SharedLog};
