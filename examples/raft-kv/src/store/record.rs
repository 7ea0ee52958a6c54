//! The on-disk format of the log: segment files of crc-framed records, and recovery.
//!
//! A segment is a sequence of frames `[len: u32 LE][crc32(payload): u32 LE][payload]`, where the
//! payload is a postcard-encoded [`Record`]. Every segment starts with a [`Record::Header`]
//! holding the vote, committed and purged ids as of its creation, so the segments before it can
//! be deleted once every entry they hold is purged: replaying the remaining segments, oldest
//! first, rebuilds the same state.
//!
//! Recovery reads every segment. A frame that is cut short or fails its crc in the **last**
//! segment is a torn write of a crash: the file is truncated there (nothing after it was ever
//! reported durable). The same in an older segment is corruption, and opening fails.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use quorate::{Entry, LogId, Vote};
use serde::{Deserialize, Serialize};

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

/// A segment file that exists on disk.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub(crate) seq: u64,
    pub(crate) path: PathBuf,
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
    fn apply(&mut self, record: Record, segment: &mut Segment) -> io::Result<()> {
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
                    return Err(io::Error::other(format!("log gap: entry {} after index {last}", e.log_id)));
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

pub(crate) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:010}.log"))
}

fn segment_seq(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()
}

/// Read every segment of `dir`, oldest first, truncating a torn tail of the last one.
pub(crate) fn recover(dir: &Path) -> io::Result<Recovered> {
    let mut seqs = Vec::new();
    for item in fs::read_dir(dir)? {
        let name = item?.file_name();
        if let Some(seq) = name.to_str().and_then(segment_seq) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();

    let mut recovered = Recovered::default();
    for (i, &seq) in seqs.iter().enumerate() {
        let is_last = i + 1 == seqs.len();
        let path = segment_path(dir, seq);
        let mut segment = Segment { seq, path, max_index: None };
        let data = fs::read(&segment.path)?;
        let mut pos = 0;
        while pos < data.len() {
            match read_frame(&data[pos..]) {
                Some((payload, frame_len)) => {
                    let record: Record = match postcard::from_bytes(payload) {
                        Ok(r) => r,
                        // The crc matched, so this is not a torn write: a format bug.
                        Err(e) => {
                            return Err(io::Error::other(format!(
                                "{}: undecodable record: {e}",
                                segment.path.display()
                            )));
                        }
                    };
                    recovered.apply(record, &mut segment)?;
                    pos += frame_len;
                }
                None if is_last => {
                    tracing::warn!(path = %segment.path.display(), at = pos, len = data.len(), "truncating a torn log tail");
                    let f = OpenOptions::new().write(true).open(&segment.path)?;
                    f.set_len(pos as u64)?;
                    f.sync_all()?;
                    break;
                }
                None => {
                    return Err(io::Error::other(format!(
                        "{}: corrupt record at offset {pos}",
                        segment.path.display()
                    )));
                }
            }
        }
        recovered.segments.push(segment);
    }
    if let (Some(first), Some(purged)) = (recovered.entries.front(), recovered.header.purged)
        && first.log_id.index != purged.index + 1
    {
        return Err(io::Error::other(format!("the log starts at {} but is purged up to {purged}", first.log_id)));
    }
    Ok(recovered)
}

/// The payload of the frame at the start of `data` and the frame's length, or `None` if the
/// frame is incomplete or its crc does not match.
fn read_frame(data: &[u8]) -> Option<(&[u8], usize)> {
    let header = data.get(..FRAME_HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = data.get(FRAME_HEADER..FRAME_HEADER.checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some((payload, FRAME_HEADER + len))
}
