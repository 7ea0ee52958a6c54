//! The shared log's records, its writer's bookkeeping ([`SharedJournal`]) and its recovery:
//! one stream of segments in which every record carries the group it belongs to.
//!
//! The format is described for users in the [module docs](super#the-shared-log-format). A
//! group's records are [`RecordRef`]s, the very records of a [`FileLogStore`](super::FileLogStore),
//! behind the group id; what is new is the `Removed` record and the deletion rule: a segment
//! goes once, for every group it holds entries of, those entries are purged or the group
//! removed.

use std::collections::HashMap;
use std::io;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::disk::Disk;
use super::error::FileStoreError;
use super::frame::{self, Format, Segment};
use super::mem_log::MemLog;
use super::record::{LogMeta, Record, RecordRef};
use super::recovery;
use super::writer::{Batch, Done, Journal, WriteOp, write_log_op};
use crate::RaftTypeConfig;

/// The format of [`SharedLog`](super::SharedLog)'s segments. Not [`record::FORMAT`](super::record::FORMAT):
/// neither store reads the other's files.
pub(crate) const FORMAT: Format = Format { magic: *b"QRTSHRD\0", version: 1, what: "a quorate shared log segment" };

/// Per group, the greatest entry index a segment ever held of it.
pub(crate) type Held = HashMap<u64, u64>;

/// One shared-log record, as written. Variant order is the format: never reorder.
#[derive(Serialize)]
#[serde(bound = "")]
enum SharedRecordRef<'a, C: RaftTypeConfig> {
    /// A record of the log of group `.0`.
    Log(u64, &'a RecordRef<'a, C>),
    /// Group `.0` is forgotten: its records before this one are void.
    Removed(u64),
}

/// One shared-log record, as read back. Mirrors [`SharedRecordRef`].
#[derive(Deserialize)]
#[serde(bound = "")]
enum SharedRecord<C: RaftTypeConfig> {
    Log(u64, Record<C>),
    Removed(u64),
}

/// Append the frame of `record` of group `group` to `buf`.
pub(crate) fn encode_group_record<C: RaftTypeConfig>(
    group: u64,
    record: &RecordRef<'_, C>,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    frame::encode(&SharedRecordRef::Log(group, record), buf)
}

/// An operation queued for the shared writer thread.
pub(crate) enum SharedOp<C: RaftTypeConfig> {
    /// An operation on the log of a group.
    Log(u64, WriteOp<C>),
    /// Forget a group; `done` fires after the fsync that makes it durable.
    Remove(u64, oneshot::Sender<io::Result<()>>),
}

/// The writer's view of every group: its state as written. A group is here from its first
/// operation (or recovery) until it is removed.
pub(crate) struct SharedJournal<C: RaftTypeConfig> {
    pub(crate) groups: HashMap<u64, LogMeta<C>>,
}

impl<C: RaftTypeConfig> Journal for SharedJournal<C> {
    type C = C;
    type Op = SharedOp<C>;
    type Held = Held;
    const FORMAT: Format = FORMAT;

    fn write_op(&mut self, op: SharedOp<C>, segments: &mut [Segment<Held>], batch: &mut Batch<C>) -> io::Result<()> {
        match op {
            SharedOp::Log(group, op) => {
                let meta = self.groups.entry(group).or_default();
                let Some(current) = segments.last_mut() else { return Err(io::Error::other("no segment to write to")) };
                let mut held_max = current.held.get(&group).copied();
                let written = write_log_op(op, meta, &mut held_max, batch, |r, buf| encode_group_record(group, r, buf));
                if let Some(max) = held_max {
                    current.held.insert(group, max);
                }
                written
            }
            SharedOp::Remove(group, done) => {
                // Deletion runs only after a sync, which makes this record durable first.
                self.groups.remove(&group);
                for segment in segments.iter_mut() {
                    segment.held.remove(&group);
                }
                batch.done.push(Done::Synced(done));
                frame::encode(&SharedRecordRef::<C>::Removed(group), &mut batch.buf)
            }
        }
    }

    /// One `Header` record per group that has a vote, committed id or purged id: a group
    /// costs a header only what its state costs (a few bytes per id, in varints).
    fn write_header(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut groups: Vec<_> = self.groups.iter().filter(|(_, meta)| !meta.is_empty()).collect();
        // In group order, so that the same state writes the same bytes.
        groups.sort_unstable_by_key(|(group, _)| **group);
        for (group, meta) in groups {
            encode_group_record(*group, &RecordRef::Header(meta), buf)?;
        }
        Ok(())
    }

    fn is_released(&self, held: &Held) -> bool {
        held.iter().all(|(group, max)| {
            // A group missing here was removed, and its holds were dropped with it.
            self.groups.get(group).is_none_or(|meta| meta.purged.is_some_and(|p| *max <= p.index))
        })
    }
}

/// What recovery rebuilt: every group's log, and the segments kept.
pub(crate) struct Recovered<C: RaftTypeConfig> {
    pub(crate) groups: HashMap<u64, MemLog<C>>,
    pub(crate) segments: Vec<Segment<Held>>,
}

/// Replay the shared segments on `disk` (see [recovery](super#recovery)): every group's log
/// as it was written, the records of removed groups dropped.
pub(crate) fn recover<C: RaftTypeConfig>(disk: &dyn Disk) -> Result<Recovered<C>, FileStoreError> {
    let mut groups: HashMap<u64, MemLog<C>> = HashMap::new();
    let segments = recovery::replay_segments(disk, &FORMAT, |payload, segments: &mut Vec<Segment<Held>>| {
        let record: SharedRecord<C> = postcard::from_bytes(payload).map_err(|e| format!("undecodable record: {e}"))?;
        match record {
            SharedRecord::Log(group, record) => {
                let log = groups.entry(group).or_default();
                let written = log.replay(record).map_err(|problem| format!("group {group}: {problem}"))?;
                if let (Some(index), Some(current)) = (written, segments.last_mut()) {
                    let max = current.held.entry(group).or_insert(index);
                    *max = (*max).max(index);
                }
            }
            SharedRecord::Removed(group) => {
                groups.remove(&group);
                for segment in segments.iter_mut() {
                    segment.held.remove(&group);
                }
            }
        }
        Ok(())
    })?;
    let mut ids: Vec<u64> = groups.keys().copied().collect();
    ids.sort_unstable();
    for group in ids {
        if let Some(Err(problem)) = groups.get(&group).map(MemLog::check_start) {
            let (path, offset) = recovery::oldest(disk, &segments);
            return Err(FileStoreError::corrupt(path, offset, format!("group {group}: {problem}")));
        }
    }
    recovery::make_durable(disk, &segments)?;
    Ok(Recovered { groups, segments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TypeConfig as C;
    use crate::types::{LeaderId, LogId};

    fn purged_at(index: u64) -> LogMeta<C> {
        LogMeta { purged: Some(LogId::new(LeaderId::new(1, 1), index)), ..LogMeta::default() }
    }

    /// A segment holding entries up to 10 of group 1 and up to 5 of group 2.
    fn segment() -> Segment<Held> {
        let mut s = Segment::new(1);
        s.held = HashMap::from([(1, 10), (2, 5)]);
        s
    }

    #[test]
    fn a_segment_is_released_only_when_every_group_it_holds_purged_past_it() {
        let held = segment().held;
        let cases: [(&[(u64, u64)], bool); 5] = [
            (&[], true),                 // both groups removed
            (&[(1, 10), (2, 5)], true),  // both purged exactly to what it holds
            (&[(1, 10), (2, 4)], false), // group 2 is one entry short
            (&[(1, 9)], false),          // group 1 short, group 2 removed
            (&[(1, 11), (2, 99)], true),
        ];
        for (purged, released) in cases {
            let journal =
                SharedJournal::<C> { groups: purged.iter().map(|(g, index)| (*g, purged_at(*index))).collect() };
            assert_eq!(journal.is_released(&held), released, "purged {purged:?}");
        }
    }

    #[test]
    fn removing_a_group_drops_its_holds_on_every_segment() {
        let mut journal = SharedJournal::<C> { groups: HashMap::from([(1, purged_at(10)), (2, LogMeta::default())]) };
        let mut segments = [segment(), segment()];
        let mut batch = Batch { buf: Vec::new(), done: Vec::new(), entries: 0 };
        assert!(!journal.is_released(&segments[0].held));
        let (tx, _rx) = oneshot::channel();
        journal.write_op(SharedOp::Remove(2, tx), &mut segments, &mut batch).unwrap();
        assert!(segments.iter().all(|s| journal.is_released(&s.held)));
        assert_eq!(batch.done.len(), 1, "a removal is synced");
        assert!(!journal.groups.contains_key(&2));
    }
}
