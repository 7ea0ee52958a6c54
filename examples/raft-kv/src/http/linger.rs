//! Closing a connection without destroying its last answer.
//!
//! The server answers some requests before reading their bodies: 413 `body_too_large` for a
//! body declared over the limit, at once, whatever the client goes on to send. hyper then
//! closes the connection. A socket closed with bytes it has not read makes the kernel send a
//! reset, and a reset can reach the client before it has read the answer: it sees "connection
//! reset" instead of the 413, and cannot tell that nothing was applied (seen in the cluster
//! test, which uploads 2 MiB). So the connection task keeps a second handle on the socket
//! ([`Kept`], a duplicate of its descriptor: the socket stays open until both are closed), and once
//! hyper is done the server [`linger`]s: if the client is still sending, it reads and
//! discards what comes, within a byte budget and a deadline, until the client closes, and
//! closes its own side only then (what web servers call a lingering close). hyper's reads
//! and writes go to the socket as before.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use tokio::net::TcpStream;

/// The most a lingering close reads: a few times the largest body accepted, so that a client
/// uploading an oversized body of that order gets to its end and reads the answer.
const LINGER_BYTES: usize = 16 * super::MAX_BODY_BYTES;

/// A second handle on a connection's socket, kept by the connection task to [`linger`] on
/// after hyper dropped its own.
pub(crate) struct Kept(OwnedFd);

impl Kept {
    /// A handle on `stream`'s socket; `None` if the descriptor could not be duplicated (out of
    /// descriptors: the connection is then served without a lingering close).
    pub(crate) fn of(stream: &TcpStream) -> Option<Self> {
        match stream.as_fd().try_clone_to_owned() {
            Ok(fd) => Some(Self(fd)),
            Err(e) => {
                tracing::debug!(error = %e, "no second handle on an HTTP connection; it will not linger");
                None
            }
        }
    }
}

/// How long a lingering close waits for the client to stop sending: enough for a client to
/// finish an oversized upload of a few MiB, short enough that a client trickling bytes (whose
/// connection ended on a timeout) holds its connection permit little longer.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// After hyper is done with `stream`: if the client is still sending, end ours (if hyper did
/// not), then read and discard until the client closes, at most [`LINGER_BYTES`] for at most
/// [`LINGER_TIME`]; then close. A client that sent nothing more (the usual end of a
/// connection) is closed at once.
pub(crate) async fn linger(kept: Kept) {
    let mut stream = std::net::TcpStream::from(kept.0);
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // Read here, not through tokio: a fresh registration is not known readable yet, so its
    // `try_read` would not even look.
    let mut buf = vec![0u8; 64 * 1024];
    match io::Read::read(&mut stream, &mut buf) {
        Ok(1..) => {}
        // The client closed, sent nothing more, or the socket failed: nothing to wait for.
        Ok(0) | Err(_) => return,
    }
    let Ok(stream) = TcpStream::from_std(stream) else { return };
    // Already done if hyper closed the connection itself; an error means the socket is gone.
    let _ = socket2::SockRef::from(&stream).shutdown(Shutdown::Write);
    let drained = tokio::time::timeout(LINGER_TIME, async {
        let mut read = 0;
        while read < LINGER_BYTES {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
        tracing::debug!(read, "a closing HTTP connection is still sending; closing it anyway");
    })
    .await;
    if drained.is_err() {
        tracing::debug!(timeout = ?LINGER_TIME, "a closing HTTP connection still sends at the deadline; closing it anyway");
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::{Kept, linger};

    /// A client still uploading when its answer is done (as after a 413 on the head) sends its
    /// whole body and then reads the answer and the end of the stream: the server drained
    /// before closing. Closing at once instead resets the connection while the client sends
    /// (the body, 12 MiB, is more than the two sockets' buffers hold).
    #[tokio::test]
    async fn a_client_still_sending_gets_its_answer_and_no_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            let sent = conn.write_all(&vec![b'x'; 12 << 20]).await;
            let mut answer = Vec::new();
            let read = conn.read_to_end(&mut answer).await;
            (sent.map_err(|e| e.to_string()), read.map(|_| answer).map_err(|e| e.to_string()))
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let kept = Kept::of(&stream).unwrap();
        let mut head = [0u8; 16];
        stream.read_exact(&mut head).await.unwrap();
        stream.write_all(b"answer").await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
        linger(kept).await;
        let (sent, read) = client.await.unwrap();
        assert_eq!(sent, Ok(()), "the client could not send its whole body");
        assert_eq!(read, Ok(b"answer".to_vec()));
    }
}
