//! Reading and writing frames on a connection's halves.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::wire::{FrameDecoder, FrameError};

/// A connection's byte stream: plain TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Why reading a frame stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed the connection between frames.
    Eof,
    /// The peer closed the connection in the middle of a frame, or reading failed.
    Io(std::io::Error),
    /// The bytes are not frames of this protocol.
    Frame(FrameError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Eof => f.write_str("closed by the peer"),
            Self::Io(e) => write!(f, "{e}"),
            Self::Frame(e) => write!(f, "{e}"),
        }
    }
}

/// Read until `decoder` holds a whole frame and return it. Cancel safe: bytes read stay in
/// `decoder`, so a cancelled read loses nothing.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    decoder: &mut FrameDecoder,
) -> Result<Bytes, ReadError> {
    loop {
        if let Some(frame) = decoder.next_frame().map_err(ReadError::Frame)? {
            return Ok(frame);
        }
        let empty = decoder.buffer_mut().is_empty();
        match rd.read_buf(decoder.buffer_mut()).await {
            Ok(0) if empty => return Err(ReadError::Eof),
            Ok(0) => return Err(ReadError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// Read until `decoder` holds the preamble and take it. Cancel safe, as [`read_frame`].
pub(crate) async fn read_preamble<R: AsyncRead + Unpin>(
    rd: &mut R,
    decoder: &mut FrameDecoder,
) -> Result<(), ReadError> {
    loop {
        if decoder.take_preamble().map_err(ReadError::Frame)? {
            return Ok(());
        }
        match rd.read_buf(decoder.buffer_mut()).await {
            Ok(0) => return Err(ReadError::Eof),
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

/// Write frames as they come from `rx` until it closes or writing fails, flushing whenever the
/// queue is empty: frames queued together leave in one flush.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(
    wr: W,
    rx: &mut tokio::sync::mpsc::Receiver<Bytes>,
) -> std::io::Result<()> {
    // Small frames (heartbeats, answers) queued together go out in one write, and in one TLS
    // record.
    let mut wr = tokio::io::BufWriter::with_capacity(64 * 1024, wr);
    while let Some(frame) = rx.recv().await {
        wr.write_all(&frame).await?;
        while let Ok(frame) = rx.try_recv() {
            wr.write_all(&frame).await?;
        }
        wr.flush().await?;
    }
    let _ = wr.shutdown().await;
    Ok(())
}
