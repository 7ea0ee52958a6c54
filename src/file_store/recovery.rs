//! Recovery's file-level rules, for both log formats: find the segments, check each file
//! header, walk the frames, cut a torn tail of the newest segment only, refuse anything else
//! with the file and offset, and make what was read durable before it is trusted.
//!
//! What a record means is left to the caller's `replay` function: this file knows frames,
//! not records. The rules are described for users in the [module docs](super#recovery).

use std::path::PathBuf;

use super::disk::Disk;
use super::error::FileStoreError;
use super::frame::{self, Format, SEGMENT_HEADER, Segment};

/// Read every segment on `disk`, oldest first, and hand each record's payload to `replay`,
/// with the segments read so far (the last one is the segment the record is in). A torn tail
/// of the newest segment is cut off; anything else wrong, including an `Err` of `replay`, is
/// [`FileStoreError::Corrupt`] naming the file and offset.
///
/// The segments are not yet synced: call [`make_durable`] once the caller's own checks pass.
pub(crate) fn replay_segments<H: Default>(
    disk: &dyn Disk,
    format: &Format,
    mut replay: impl FnMut(&[u8], &mut Vec<Segment<H>>) -> Result<(), String>,
) -> Result<Vec<Segment<H>>, FileStoreError> {
    let names = disk.list().map_err(|e| FileStoreError::io(disk.path(""), e))?;
    let mut seqs: Vec<u64> = names.iter().filter_map(|n| frame::segment_seq(n)).collect();
    seqs.sort_unstable();
    if let Some(w) = seqs.windows(2).find(|w| w[0] + 1 != w[1]) {
        let missing = disk.path(&frame::segment_name(w[0] + 1));
        return Err(FileStoreError::corrupt(missing, 0, "this segment is missing: the log has a gap"));
    }
    let mut segments = Vec::with_capacity(seqs.len());
    for (i, &seq) in seqs.iter().enumerate() {
        let is_newest = i + 1 == seqs.len();
        segments.push(Segment::new(seq));
        if !replay_segment(disk, format, is_newest, &mut segments, &mut replay)? {
            segments.pop();
        }
    }
    Ok(segments)
}

/// Replay the records of the last of `segments`. Returns `false` for a newest segment that
/// was torn before its file header was complete (it held nothing, and is deleted).
fn replay_segment<H>(
    disk: &dyn Disk,
    format: &Format,
    is_newest: bool,
    segments: &mut Vec<Segment<H>>,
    replay: &mut impl FnMut(&[u8], &mut Vec<Segment<H>>) -> Result<(), String>,
) -> Result<bool, FileStoreError> {
    let Some(name) = segments.last().map(|s| s.name.clone()) else { return Ok(false) };
    let path = disk.path(&name);
    let data = disk.read(&name).map_err(|e| FileStoreError::io(&path, e))?;
    let header = format.segment_header();
    if data.len() < SEGMENT_HEADER {
        if is_newest && header.starts_with(&data) {
            tracing::warn!(path = %path.display(), len = data.len(), "deleting a segment torn before its header was written");
            disk.remove(&name).map_err(|e| FileStoreError::io(&path, e))?;
            return Ok(false);
        }
        let problem = format!("shorter than a segment header: not {}", format.what);
        return Err(FileStoreError::corrupt(&path, 0, problem));
    }
    if data[..8] != format.magic {
        let problem = format!("unknown format: not {} (bad magic number)", format.what);
        return Err(FileStoreError::corrupt(&path, 0, problem));
    }
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if version != format.version {
        let problem = format!("log format version {version}; this build reads version {}", format.version);
        return Err(FileStoreError::corrupt(&path, 8, problem));
    }
    let mut pos = SEGMENT_HEADER;
    while pos < data.len() {
        let Some((payload, frame_len)) = frame::read_frame(&data[pos..]) else {
            if is_newest && !frame::valid_frame_after(&data, pos) {
                tracing::warn!(path = %path.display(), at = pos, len = data.len(), "cutting a torn log tail");
                disk.set_len(&name, pos as u64).map_err(|e| FileStoreError::io(&path, e))?;
                break;
            }
            let problem = "bad frame (length or checksum) before the end of the log: corruption";
            return Err(FileStoreError::corrupt(&path, pos as u64, problem));
        };
        // The crc matched, so a record that does not decode or does not fit is not a torn
        // write: `replay` refuses it, and so does recovery.
        replay(payload, segments).map_err(|problem| FileStoreError::corrupt(&path, pos as u64, problem))?;
        pos += frame_len;
    }
    Ok(true)
}

/// Where to point an error about the log as a whole (e.g. where it starts): the oldest
/// segment's first record, or the directory when there is no segment.
pub(crate) fn oldest<H>(disk: &dyn Disk, segments: &[Segment<H>]) -> (PathBuf, u64) {
    match segments.first() {
        Some(s) => (disk.path(&s.name), SEGMENT_HEADER as u64),
        None => (disk.path(""), 0),
    }
}

/// Sync every recovered segment and the directory. What the page cache holds after a crash of
/// the process may never have reached the disk: it must be durable before anything is
/// acknowledged on the strength of it.
pub(crate) fn make_durable<H>(disk: &dyn Disk, segments: &[Segment<H>]) -> Result<(), FileStoreError> {
    for segment in segments {
        disk.sync_file(&segment.name).map_err(|e| FileStoreError::io(disk.path(&segment.name), e))?;
    }
    disk.sync_dir().map_err(|e| FileStoreError::io(disk.path(""), e))
}
