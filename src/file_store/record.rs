//! The on-disk format of the log: segment files of crc-framed records, and recovery.
//!
//! The format is described for users in the [module docs](super#on-disk-format); this file
//! is its one implementation. Recovery's rules are there too: only a torn tail of the newest
//! segment is cut, anything else is refused with an error naming the file and offset, and
//! what was recovered is synced before it is trusted.

use std::collections::VecDeque;
use std::io;

use serde::{Deserialize, Serialize};

use super::disk::Disk;
use super::error::FileStoreError;
use crate::RaftTypeConfig;
use crate::types::{Entry, LogId, Vote};

/// Bytes of a frame header: length and crc.
pub(crate) const FRAME_HEADER: usize = 8;

/// The largest record payload recovery accepts: a length field above it is damage (or a
/// torn write), never a reason to allocate.
pub(crate) const MAX_RECORD_BYTES: usize = u32::MAX as usize;

/// The state a segment header carries: what the log knows besides its entries.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub(crate) struct Header<C: RaftTypeConfig> {
    pub(crate) vote: Option<Vote<C>>,
    pub(crate) committed: Option<LogId<C>>,
    pub(crate) purged: Option<LogId<C>>,
}

impl<C: RaftTypeConfig> Clone for Header<C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: RaftTypeConfig> Copy for Header<C> {}
impl<C: RaftTypeConfig> Default for Header<C> {
    fn default() -> Self {
        Self { vote: None, committed: None, purged: None }
    }
}

/// One record, as written. Variant order is the format: never reorder.
#[derive(Serialize)]
#[serde(bound = "")]
pub(crate) enum RecordRef<'a, C: RaftTypeConfig> {
    Header(&'a Header<C>),
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
#[serde(bound = "")]
enum Record<C: RaftTypeConfig> {
    Header(Header<C>),
    Entry(Entry<C>),
    Truncate(u64),
    Purge(LogId<C>),
    Vote(Vote<C>),
    Committed(Option<LogId<C>>),
}

/// Append the frame of `record` to `buf`.
pub(crate) fn encode<C: RaftTypeConfig>(record: &RecordRef<'_, C>, buf: &mut Vec<u8>) -> io::Result<()> {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER]);
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(record, taken).map_err(io::Error::other)?;
    let payload = &buf[start + FRAME_HEADER..];
    let len = match u32::try_from(payload.len()) {
        Ok(len) => len,
        Err(_) => {
            buf.truncate(start);
            return Err(io::Error::other("a log record over 4 GiB"));
        }
    };
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// The first bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"QRTLOG\0\0";

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
pub(crate) struct Recovered<C: RaftTypeConfig> {
    pub(crate) header: Header<C>,
    pub(crate) entries: VecDeque<Entry<C>>,
    pub(crate) segments: Vec<Segment>,
}

impl<C: RaftTypeConfig> Recovered<C> {
    /// Replay one record; an error says what is wrong with it.
    fn apply(&mut self, record: Record<C>, segment: &mut Segment) -> Result<(), String> {
        match record {
            Record::Header(h) => self.header = h,
            Record::Entry(e) => {
                let index = e.log_id.index;
                self.truncate(index);
                // With no entry before it, an entry may start past the purged id: the entries
                // between were in deleted segments, and a purge record later in the stream
                // covers them (segments are deleted only once that purge is durable).
                if let Some(last) = self.entries.back().map(|l| l.log_id.index).filter(|last| last + 1 != index) {
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
/// make what was read durable. See the [module docs](super#recovery) for what is refused.
pub(crate) fn recover<C: RaftTypeConfig>(disk: &dyn Disk) -> Result<Recovered<C>, FileStoreError> {
    let names = disk.list().map_err(|e| FileStoreError::io(disk.path(""), e))?;
    let mut seqs: Vec<u64> = names.iter().filter_map(|n| segment_seq(n)).collect();
    seqs.sort_unstable();
    if let Some(w) = seqs.windows(2).find(|w| w[0] + 1 != w[1]) {
        let missing = disk.path(&segment_name(w[0] + 1));
        return Err(FileStoreError::corrupt(missing, 0, "this segment is missing: the log has a gap"));
    }

    let mut recovered = Recovered { header: Header::default(), entries: VecDeque::new(), segments: Vec::new() };
    for (i, &seq) in seqs.iter().enumerate() {
        let is_newest = i + 1 == seqs.len();
        let mut segment = Segment { seq, name: segment_name(seq), max_index: None };
        if replay_segment(disk, &mut segment, is_newest, &mut recovered)? {
            recovered.segments.push(segment);
        }
    }
    let first = recovered.entries.front().map(|e| e.log_id);
    let purged = recovered.header.purged;
    if let Some((first, purged)) = first.zip(purged).filter(|(first, purged)| first.index != purged.index + 1) {
        let oldest = recovered.segments.first().map_or_else(|| disk.path(""), |s| disk.path(&s.name));
        let problem = format!("the log starts at {first} but is purged up to {purged}");
        return Err(FileStoreError::corrupt(oldest, SEGMENT_HEADER as u64, problem));
    }
    // What the page cache holds after a crash of the process may never have reached the disk:
    // make it durable before anything is acknowledged on the strength of it.
    for segment in &recovered.segments {
        disk.sync_file(&segment.name).map_err(|e| FileStoreError::io(disk.path(&segment.name), e))?;
    }
    disk.sync_dir().map_err(|e| FileStoreError::io(disk.path(""), e))?;
    Ok(recovered)
}

/// Replay the records of one segment into `recovered`. Returns `false` for a newest segment
/// that was torn before its file header was complete (it held nothing, and is deleted).
fn replay_segment<C: RaftTypeConfig>(
    disk: &dyn Disk,
    segment: &mut Segment,
    is_newest: bool,
    recovered: &mut Recovered<C>,
) -> Result<bool, FileStoreError> {
    let path = disk.path(&segment.name);
    let data = disk.read(&segment.name).map_err(|e| FileStoreError::io(&path, e))?;
    let header = segment_header();
    if data.len() < SEGMENT_HEADER {
        if is_newest && header.starts_with(&data) {
            tracing::warn!(path = %path.display(), len = data.len(), "deleting a segment torn before its header was written");
            disk.remove(&segment.name).map_err(|e| FileStoreError::io(&path, e))?;
            return Ok(false);
        }
        return Err(FileStoreError::corrupt(&path, 0, "shorter than a segment header: not a quorate log segment"));
    }
    if data[..8] != SEGMENT_MAGIC {
        return Err(FileStoreError::corrupt(&path, 0, "unknown format: not a quorate log segment (bad magic number)"));
    }
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if version != SEGMENT_VERSION {
        let problem = format!("log format version {version}; this build reads version {SEGMENT_VERSION}");
        return Err(FileStoreError::corrupt(&path, 8, problem));
    }
    let mut pos = SEGMENT_HEADER;
    while pos < data.len() {
        let Some((payload, frame_len)) = read_frame(&data[pos..]) else {
            if is_newest && !valid_frame_after(&data, pos) {
                tracing::warn!(path = %path.display(), at = pos, len = data.len(), "cutting a torn log tail");
                disk.set_len(&segment.name, pos as u64).map_err(|e| FileStoreError::io(&path, e))?;
                break;
            }
            let problem = "bad frame (length or checksum) before the end of the log: corruption";
            return Err(FileStoreError::corrupt(&path, pos as u64, problem));
        };
        // The crc matched, so a record that does not decode is not a torn write.
        let record: Record<C> = postcard::from_bytes(payload)
            .map_err(|e| FileStoreError::corrupt(&path, pos as u64, format!("undecodable record: {e}")))?;
        recovered.apply(record, segment).map_err(|problem| FileStoreError::corrupt(&path, pos as u64, problem))?;
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
/// match. Reads only inside `data`: a length field is checked against what is there, never
/// used to allocate.
pub(crate) fn read_frame(data: &[u8]) -> Option<(&[u8], usize)> {
    let header = data.get(..FRAME_HEADER)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len == 0 || len > MAX_RECORD_BYTES {
        return None;
    }
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let payload = data.get(FRAME_HEADER..FRAME_HEADER.checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some((payload, FRAME_HEADER + len))
}
