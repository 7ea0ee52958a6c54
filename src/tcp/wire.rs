//! The bytes on a connection: a preamble, then length-prefixed frames of postcard-encoded
//! messages.
//!
//! ```text
//! client → server: PREAMBLE (8 bytes), then frames
//! frame:           [len: u32 LE][body: len bytes]      len <= max_frame_bytes
//! ```
//!
//! [`FrameDecoder`] is the one decoder of this format, sans I/O: the connection tasks feed it
//! the bytes they read, the fuzz target (`tests/fuzz/` in the repository) feeds it arbitrary bytes.
//! It checks a frame's length against the limit **before** it reserves room for the frame, so
//! a peer cannot make a node allocate more than the limit, whatever it sends.

use bytes::{Buf, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::message::{ToClient, ToServer};
use crate::RaftTypeConfig;

/// What a client writes first on a new connection: `QRAFT`, a zero byte, and the protocol
/// version (u16 LE). A server closes a connection that starts otherwise without answering:
/// it is not a quorate node (or one that speaks another version of this protocol).
pub const PREAMBLE: [u8; 8] = [b'Q', b'R', b'A', b'F', b'T', 0, PROTOCOL_VERSION as u8, 0];

/// The version of this protocol; it is in [`PREAMBLE`]. 3: calls carry the caller's wait,
/// and a client cancels the calls it gives up on.
pub const PROTOCOL_VERSION: u16 = 3;

/// Where the version is in [`PREAMBLE`].
const VERSION_AT: usize = 6;

/// Bytes of a frame's length prefix.
pub const FRAME_HEADER: usize = 4;

/// Why bytes could not be read as frames and messages. Every one ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame's length prefix is over the limit. Nothing was allocated for it.
    #[error("a frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// What the length prefix says.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The connection did not start with [`PREAMBLE`].
    #[error("not a quorate connection (bad preamble)")]
    BadPreamble,
    /// The connection is quorate's, of another protocol version: the nodes run quorate
    /// versions whose transports cannot talk (upgrade them all).
    #[error("the peer speaks quorate transport protocol {theirs}, this node {ours}")]
    Version {
        /// The peer's protocol version.
        theirs: u16,
        /// This node's ([`PROTOCOL_VERSION`]).
        ours: u16,
    },
    /// A frame is not a valid encoding of the message expected.
    #[error("undecodable message: {0}")]
    Undecodable(String),
}

/// The least room a decoder makes for the rest of a frame at a time.
const MIN_RESERVE: usize = 64 * 1024;

/// Splits a byte stream into frames, checking each length prefix against a limit before it
/// buffers the frame.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
    buf: BytesMut,
}

impl FrameDecoder {
    /// A decoder that refuses frames over `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes, buf: BytesMut::with_capacity(8 * 1024) }
    }

    /// Refuse frames over `max_frame_bytes` from now on: a server reads a peer's hello under a
    /// small limit and raises it once the peer is accepted.
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// The buffer that reads append to (e.g. with `AsyncReadExt::read_buf`).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Append `bytes` to what is buffered.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame's body, `None` if more bytes are needed.
    ///
    /// When a frame's header is complete and its body is not, it reserves room for more of the
    /// body (only after checking the length against the limit): at most as much again as is
    /// buffered, so that the buffer grows with what the peer really sends, not with the length
    /// it claims (a peer that announces a frame of the limit and sends a few bytes costs a few
    /// bytes, not the limit).
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] for a length over the limit.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(header) = self.buf.get(..FRAME_HEADER) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge { len, max: self.max_frame_bytes });
        }
        let whole = FRAME_HEADER + len;
        if self.buf.len() < whole {
            let missing = whole - self.buf.len();
            self.buf.reserve(missing.min(self.buf.len().max(MIN_RESERVE)));
            return Ok(None);
        }
        self.buf.advance(FRAME_HEADER);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Take the connection's preamble off the front, once [`PREAMBLE`]'s length is buffered.
    /// `Ok(false)` if more bytes are needed.
    ///
    /// # Errors
    /// [`FrameError::BadPreamble`] if the bytes are not the preamble.
    pub fn take_preamble(&mut self) -> Result<bool, FrameError> {
        let n = self.buf.len().min(PREAMBLE.len());
        if self.buf[..n] != PREAMBLE[..n] {
            // The magic (the first six bytes) and then another version: say so.
            if n > VERSION_AT && self.buf[..VERSION_AT] == PREAMBLE[..VERSION_AT] {
                return Err(FrameError::Version { theirs: u16::from(self.buf[VERSION_AT]), ours: PROTOCOL_VERSION });
            }
            return Err(FrameError::BadPreamble);
        }
        if n < PREAMBLE.len() {
            return Ok(false);
        }
        self.buf.advance(PREAMBLE.len());
        Ok(true)
    }
}

/// A frame holding `msg`: its length prefix and body.
///
/// # Errors
/// [`FrameError::TooLarge`] if the body is over `max_frame_bytes` (nothing is sent then, and
/// the connection stays usable); [`FrameError::Undecodable`] if serde cannot encode it.
pub(crate) fn encode_frame<T: Serialize>(msg: &T, max_frame_bytes: usize) -> Result<Bytes, FrameError> {
    let mut buf = vec![0u8; FRAME_HEADER];
    buf = postcard::to_extend(msg, buf).map_err(|e| FrameError::Undecodable(e.to_string()))?;
    let len = buf.len() - FRAME_HEADER;
    let prefix = match u32::try_from(len) {
        Ok(prefix) if len <= max_frame_bytes => prefix,
        _ => return Err(FrameError::TooLarge { len, max: max_frame_bytes }),
    };
    buf[..FRAME_HEADER].copy_from_slice(&prefix.to_le_bytes());
    Ok(Bytes::from(buf))
}

pub(crate) fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(frame).map_err(|e| FrameError::Undecodable(e.to_string()))
}

/// Decode `bytes` as a server reads what a client sends: the preamble, then frames of
/// messages, until the bytes run out or something is refused. Returns how many messages
/// decoded.
///
/// It is the server's own decoding path, without a socket: for fuzzing and tests. It must
/// never panic, and never allocate more than `max_frame_bytes` beyond the input.
///
/// # Errors
/// The [`FrameError`] that would close the connection.
pub fn decode_inbound<C: RaftTypeConfig>(bytes: &[u8], max_frame_bytes: usize) -> Result<usize, FrameError> {
    let mut decoder = FrameDecoder::new(max_frame_bytes);
    decoder.extend(bytes);
    if !decoder.take_preamble()? {
        return Ok(0);
    }
    let mut count = 0;
    while let Some(frame) = decoder.next_frame()? {
        let _msg: ToServer<C> = decode(&frame)?;
        count += 1;
    }
    Ok(count)
}

/// As [`decode_inbound`], for what a server sends a client (no preamble).
///
/// # Errors
/// The [`FrameError`] that would close the connection.
pub fn decode_outbound<C: RaftTypeConfig>(bytes: &[u8], max_frame_bytes: usize) -> Result<usize, FrameError> {
    let mut decoder = FrameDecoder::new(max_frame_bytes);
    decoder.extend(bytes);
    let mut count = 0;
    while let Some(frame) = decoder.next_frame()? {
        let _msg: ToClient<C> = decode(&frame)?;
        count += 1;
    }
    Ok(count)
}
