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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::AsyncWrite;
    use tokio::sync::mpsc;

    use super::write_frames;
    use crate::multi::NodeBeat;
    use crate::tcp::message::{Rpc, ToServer};
    use crate::tcp::wire::encode_frame;
    use crate::testing_types::{UTConfig, log_id};
    use crate::{Vote, VoteRequest};

    /// A socket that takes everything at once and records the size of every write call (each
    /// would be one `write` syscall on a TCP socket).
    #[derive(Default)]
    struct CountingSocket {
        writes: Vec<usize>,
    }

    impl AsyncWrite for CountingSocket {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            self.writes.push(buf.len());
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Twenty groups' votes and a beat, queued before the writer runs (as when many groups
    /// campaign in one tick), leave in one write.
    #[tokio::test]
    async fn frames_of_many_groups_queued_together_leave_in_one_write() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut queued = 0;
        for group in 0..20 {
            let rpc = Rpc::Vote(VoteRequest::<UTConfig>::new(Vote::new(2, 1), Some(log_id(1, group))));
            let frame =
                encode_frame(&ToServer::GroupCall { group, id: group + 1, within_ms: 1000, rpc }, 1 << 20).unwrap();
            queued += frame.len();
            tx.send(frame).await.unwrap();
        }
        let beat = NodeBeat::<UTConfig> {
            from: 1,
            incarnation: 7,
            released: vec![(3, 2)],
            wake: vec![crate::multi::WakeRequest { group: 4, term: 5, seq: 6 }],
        };
        let frame = encode_frame(&ToServer::Beat(beat), 1 << 20).unwrap();
        queued += frame.len();
        tx.send(frame).await.unwrap();
        drop(tx);

        let mut socket = CountingSocket::default();
        write_frames(&mut socket, &mut rx).await.unwrap();
        assert_eq!(socket.writes, vec![queued], "21 frames, one write");
    }

    /// A frame queued after the writer flushed leaves in a write of its own: the writer
    /// batches what is queued, it does not wait for more.
    #[tokio::test]
    async fn the_writer_does_not_hold_a_lone_frame_back() {
        let (tx, mut rx) = mpsc::channel(64);
        let mut socket = CountingSocket::default();
        let frame = bytes::Bytes::from_static(&[1, 0, 0, 0, 9]);
        tx.send(frame.clone()).await.unwrap();
        let writer = write_frames(&mut socket, &mut rx);
        let feeder = async move {
            // Runs after the writer flushed the first frame and waits on the queue again.
            tokio::task::yield_now().await;
            tx.send(frame).await.unwrap();
        };
        let (written, ()) = tokio::join!(writer, feeder);
        written.unwrap();
        assert_eq!(socket.writes, vec![5, 5]);
    }
}
