//! Frames and segment files: the layer that both log formats ([`FileLogStore`]'s and
//! [`SharedLog`]'s) share.
//!
//! A segment file is a 12-byte file header (a magic number naming the format, and its
//! version) followed by crc-framed records; what a record's payload holds is the format's
//! business. The [module docs](super#on-disk-format) describe the framing for users.
//!
//! [`FileLogStore`]: super::FileLogStore
//! [`SharedLog`]: super::SharedLog

use std::io;

use serde::Serialize;

/// Bytes of a frame header: length and crc.
pub(crate) const FRAME_HEADER: usize = 8;

/// The largest record payload recovery accepts: a length field above it is damage (or a
/// torn write), never a reason to allocate.
pub(crate) const MAX_RECORD_BYTES: usize = u32::MAX as usize;

/// Bytes of the segment file header: magic and version.
pub(crate) const SEGMENT_HEADER: usize = 12;

/// One on-disk format: what its segment files start with. Two formats never read each other's
/// segments: their magic numbers differ.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Format {
    /// The first bytes of every segment file.
    pub(crate) magic: [u8; 8],
    /// The version of the format this build writes and reads.
    pub(crate) version: u32,
    /// What a segment of this format is, for error messages ("a quorate log segment").
    pub(crate) what: &'static str,
}

impl Format {
    /// The file header of a new segment.
    pub(crate) fn segment_header(&self) -> [u8; SEGMENT_HEADER] {
        let mut h = [0; SEGMENT_HEADER];
        h[..8].copy_from_slice(&self.magic);
        h[8..].copy_from_slice(&self.version.to_le_bytes());
        h
    }
}

/// Append the frame of `record` (its postcard encoding) to `buf`.
pub(crate) fn encode<T: Serialize + ?Sized>(record: &T, buf: &mut Vec<u8>) -> io::Result<()> {
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

/// Whether a valid frame starts anywhere in `data` after the bad one at `bad`: then the bad
/// frame is not a torn tail but damage in the middle of the log.
pub(crate) fn valid_frame_after(data: &[u8], bad: usize) -> bool {
    (bad + 1..data.len().saturating_sub(FRAME_HEADER)).any(|at| read_frame(&data[at..]).is_some())
}

/// A segment file that exists on disk, with what the format tracks of its content (`held`,
/// e.g. the greatest entry index it holds) to decide when it may be deleted.
#[derive(Debug, Clone)]
pub(crate) struct Segment<H> {
    pub(crate) seq: u64,
    pub(crate) name: String,
    pub(crate) held: H,
}

impl<H: Default> Segment<H> {
    pub(crate) fn new(seq: u64) -> Self {
        Self { seq, name: segment_name(seq), held: H::default() }
    }
}

pub(crate) fn segment_name(seq: u64) -> String {
    format!("seg-{seq:010}.log")
}

pub(crate) fn segment_seq(name: &str) -> Option<u64> {
    name.strip_prefix("seg-")?.strip_suffix(".log")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_reads_back_and_any_damage_to_it_is_refused() {
        let mut buf = Vec::new();
        encode(&(7u64, "seven"), &mut buf).unwrap();
        let (payload, len) = read_frame(&buf).unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(postcard::from_bytes::<(u64, String)>(payload).unwrap(), (7, "seven".to_string()));

        assert!(read_frame(&buf[..buf.len() - 1]).is_none(), "cut short");
        let mut flipped = buf.clone();
        flipped[FRAME_HEADER] ^= 1;
        assert!(read_frame(&flipped).is_none(), "crc mismatch");
        assert!(read_frame(&[0; 16]).is_none(), "zeros are not a frame");
        let mut huge = buf.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_frame(&huge).is_none(), "a length past the data");
        assert!(valid_frame_after(&[&[9u8; 3][..], &buf].concat(), 0));
    }

    #[test]
    fn segment_names_sort_and_parse_back() {
        assert_eq!(segment_name(42), "seg-0000000042.log");
        assert_eq!(segment_seq(&segment_name(42)), Some(42));
        assert_eq!(segment_seq("seg-x.log"), None);
        assert!(segment_name(9) < segment_name(10));
    }
}
