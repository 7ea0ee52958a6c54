//! The on-disk format of the log: segment files of crc-framed records, and recovery.
//!
//! A segment starts with a 12-byte file header, [`SEGMENT_MAGIC`] then the format version
//! ([`SEGMENT_VERSION`], u32 LE), followed by frames `[len: u32 LE][crc32(payload): u32
//! LE][payload]`, where the payload is a postcard-encoded [`Record`]. The first record of every
//! segment is a [`Record::Header`] holding the vote, committed and purged ids as of its
//! creation, so the segments before it can be deleted once every entry they hold is purged:
//! replaying the remaining segments, oldest first, rebuilds the same state.
//!
//! # Recovery refuses to guess
//!
//! Only the newest segment can have a torn tail (the writer appends to it alone). A bad frame
//! there (cut short, zero-length, failing its crc) is a torn write when no valid frame follows
//! it: it is cut off. Anything else stops the node with an error naming the file and offset:
//! an unknown magic or version, a bad frame in an older segment or followed by valid frames
//! (corruption in the middle of the log), a record that passes its crc but does not decode, a
//! missing segment, a gap between entries.
//!
//! Recovered segments are then synced (file contents and the directory): after a crash of the
//! process, records written but never synced are in the page cache only, and must not be
//! acknowledged (or followed by a new segment) until a sync makes them durable.

use std::collections::VecDeque;
use std::io;

use quorate::{Entry, LogId, Vote};
use serde::{Deserialize, Serialize};

use super::disk::Disk;
use super::error::StoreError;
use crate::TypeConfig;

type C = TypeConfig;

/// Bytes of a frame header: length and crc.
const FRAME_HEADER: usize = 8;

/// The state a segment header carries: what the log knows besides its entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) vote: Option<Vote<C>>,
    pub(crate) committed: Option<LogId<C>>,
    pub(crate) purged: Option<LogId<C>>,
}

/// One record, as written. Variant order is the format: never reorder.
#[derive(Serialize)]
pub(crate) enum RecordRef<'a> {
    Header(&'a Header),
    Entry(&'a Entry<C>),
    /// Every entry with index `>=` this is deleted.
    Truncate(u64),
    /// Every entry with index `<=` this id's index is deleted.
    Purge(LogId<C>),
    Vote(Vote<C>),
    Committed(Option<LogId<C>>),
}

/// One record, as read back. Mirrors [`RecordRef`].
#[derive(Deserialize)]
enum Record {
    Header(Header),
    Entry(Entry<C>),
    Truncate(u64),
    Purge(LogId<C>),
    Vote(Vote<C>),
    Committed(Option<LogId<C>>),
}

/// Append the frame of `record` to `buf`.
pub(crate) fn encode(record: &RecordRef<'_>, buf: &mut Vec<u8>) -> io::Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER]);
    let mut taken = std::mem::take(buf);
    taken = postcard::to_extend(record, taken).map_err(io::Error::other)?;
    *buf = taken;
    let payload = &buf[start + FRAME_HEADER..];
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("a log record over 4 GiB"))?;
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The first bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"RKVLOG\0\0";

/// The version of the segment format this build writes and reads.
pub(crate) const SEGMENT_VERSION: u32 = 1;

/// Bytes of the segment file header: magic and version.
pub(crate) const SEGMENT_HEADER: usize = 12;

/// The file header of a new segment.
pub(crate) fn segment_header() -> [u8; SEGMENT_HEADER] {
    let mut h = [0; SEGMENT_HEADER];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h
}

/// A segment file that exists on disk.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) seq: u64,
    pub(crate) name: String,
    /// The greatest entry index ever written to it; the segment may be deleted once this is
    /// purged (and so are all older segments').
    pub(crate) max_index: Option<u64>,
}

/// The log as rebuilt from disk.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    pub(crate) header: Header,
    pub(crate) entries: VecDeque<Entry<C>>,
    pub(crate) segments: Vec<Segment>,
}

impl Recovered {
    /// Replay one record; an error says what is wrong with it.
    fn apply(&mut self, record: Record, segment: &mut Segment) -> Result<(), String> {
        match record {
            Record::Header(h) => self.header = h,
            Record::Entry(e) => {
                let index = e.log_id.index;
                self.truncate(index);
                // With no entry before it, an entry may start past the purged id: the entries
                // between were in deleted segments, and a purge record later in the stream
                // covers them (segments are deleted only once that purge is durable).
                if let Some(last) = self.entries.back().map(|l| l.log_id.index)
                    && last + 1 != index
                {
                    return Err(format!("log gap: entry {} after index {last}", e.log_id));
                }
                segment.max_index = segment.max_index.max(Some(index));
                self.entries.push_back(e);
            }
            Record::Truncate(since) => self.truncate(since),
            Record::Purge(upto) => {
                while self.entries.front().is_some_and(|e| e.log_id.index <= upto.index) {
                    self.entries.pop_front();
                }
                if self.header.purged.map(|p| p.index) < Some(upto.index) {
                    self.header.purged = Some(upto);
                }
            }
            Record::Vote(v) => self.header.vote = Some(v),
            Record::Committed(c) => self.header.committed = c,
        }
        Ok(())
    }

    fn truncate(&mut self, since: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= since) {
            self.entries.pop_back();
        }
    }
}

pub(crate) fn segment_name(seq: u64) -> String {
    format!("seg-{seq:010}.log")
}

fn segment_seq(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()
}

/// Read every segment on `disk`, oldest first, cutting a torn tail of the newest one, then
/// make what was read durable. See the [module docs](self) for what is refused.
pub(crate) fn recover(disk: &dyn Disk) -> Result<Recovered, StoreError> {
    let mut seqs: Vec<u64> =
        disk.list().map_err(|e| StoreError::io(disk.path(""), e))?.iter().filter_map(|n| segment_seq(n)).collect();
    seqs.sort_unstable();
    if let Some(w) = seqs.windows(2).find(|w| w[0] + 1 != w[1]) {
        let missing = disk.path(&segment_name(w[0] + 1));
        return Err(StoreError::corrupt(missing, 0, "this segment is missing: the log has a gap"));
    }

    let mut recovered = Recovered::default();
    for (i, &seq) in seqs.iter().enumerate() {
        let is_newest = i + 1 == seqs.len();
        let mut segment = Segment { seq, name: segment_name(seq), max_index: None };
        if replay_segment(disk, &mut segment, is_newest, &mut recovered)? {
            recovered.segments.push(segment);
        }
    }
    if let (Some(first), Some(purged)) = (recovered.entries.front(), recovered.header.purged)
        && first.log_id.index != purged.index + 1
    {
        let oldest = recovered.segments.first().map_or_else(|| disk.path(""), |s| disk.path(&s.name));
        let problem = format!("the log starts at {} but is purged up to {purged}", first.log_id);
        return Err(StoreError::corrupt(oldest, SEGMENT_HEADER as u64, problem));
    }
    // What the page cache holds after a crash of the process may never have reached the disk:
    // make it durable before anything is acknowledged on the strength of it.
    for segment in &recovered.segments {
        disk.sync_file(&segment.name).map_err(|e| StoreError::io(disk.path(&segment.name), e))?;
    }
    disk.sync_dir().map_err(|e| StoreError::io(disk.path(""), e))?;
    Ok(recovered)
}

/// Replay the records of one segment into `recovered`. Returns `false` for a newest segment
/// that was torn before its file header was complete (it held nothing, and is deleted).
fn replay_segment(
    disk: &dyn Disk,
    segment: &mut Segment,
    is_newest: bool,
    recovered: &mut Recovered,
) -> Result<bool, StoreError> {
    let path = disk.path(&segment.name);
    let data = disk.read(&segment.name).map_err(|e| StoreError::io(&path, e))?;
    let header = segment_header();
    if data.len() < SEGMENT_HEADER {
        if is_newest && header.starts_with(&data) {
            tracing::warn!(path = %path.display(), len = data.len(), "deleting a segment torn before its header was written");
            disk.remove(&segment.name).map_err(|e| StoreError::io(&path, e))?;
            return Ok(false);
        }
        return Err(StoreError::corrupt(&path, 0, "shorter than a segment header: not a raft-kv log segment"));
    }
    if data[..8] != SEGMENT_MAGIC {
        return Err(StoreError::corrupt(&path, 0, "unknown format: not a raft-kv log segment (bad magic number)"));
    }
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if version != SEGMENT_VERSION {
        let problem = format!("log format version {version}; this build reads version {SEGMENT_VERSION}");
        return Err(StoreError::corrupt(&path, 8, problem));
    }
    let mut pos = SEGMENT_HEADER;
    while pos < data.len() {
        let Some((payload, frame_len)) = read_frame(&data[pos..]) else {
            if is_newest && !valid_frame_after(&data, pos) {
                tracing::warn!(path = %path.display(), at = pos, len = data.len(), "cutting a torn log tail");
                disk.set_len(&segment.name, pos as u64).map_err(|e| StoreError::io(&path, e))?;
                break;
            }
            let problem = "bad frame (length or checksum) before the end of the log: corruption";
            return Err(StoreError::corrupt(&path, pos as u64, problem));
        };
        // The crc matched, so a record that does not decode is not a torn write.
        let record: Record = postcard::from_bytes(payload)
            .map_err(|e| StoreError::corrupt(&path, pos as u64, format!("undecodable record: {e}")))?;
        recovered.apply(record, segment).map_err(|problem| StoreError::corrupt(&path, pos as u64, problem))?;
        pos += frame_len;
    }
    Ok(true)
}

/// Whether a valid frame starts anywhere in `data` after the bad one at `bad`: then the bad
/// frame is not a torn tail but damage in the middle of the log.
fn valid_frame_after(data: &[u8], bad: usize) -> bool {
    (bad + 1..data.len().saturating_sub(FRAME_HEADER)).any(|at| read_frame(&data[at..]).is_some())
}

/// The payload of the frame at the start of `data` and the frame's length, or `None` if the
/// frame is incomplete, empty (records never are: zeros are not a frame) or its crc does not
/// match.
fn read_frame(data: &[u8]) -> Option<(&[u8], usize)> {
    let header = data.get(..FRAME_HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    if len == 0 {
        return None;
    }
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = data.get(FRAME_HEADER..FRAME_HEADER.checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some((payload, FRAME_HEADER + len))
}
