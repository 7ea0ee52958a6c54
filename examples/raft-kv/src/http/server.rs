//! Serving the HTTP API: connections, their limits and timeouts, and shutdown.
//!
//! `axum::serve` has no header-read or idle timeout and no connection limit, so this module
//! runs hyper's HTTP/1 connection itself (its service hands plain puts to `super::fast` and
//! every other request to the axum router) and adds what a server facing unknown clients
//! needs:
//!
//! | limit | what happens |
//! |---|---|
//! | [`HttpLimits::header_timeout`] | a connection that has not sent a whole request head this long after it opened or after its last answer (partial headers, a head trickled in byte by byte, or idle keep-alive) is closed: hyper's `header_read_timeout` starts one clock when it begins to read a head and does not restart it as bytes arrive |
//! | [`HttpLimits::write_timeout`] | a connection that takes none of an answer's bytes this long (a client that never reads; or one reading so slowly that the socket never has room for more) is closed (`WriteDeadline`) |
//! | [`HttpLimits::body_timeout`] | a request whose body has not arrived whole this long after its head is answered 408 `body_timeout`, however the bytes trickle in (see `super::body_deadline`, in [`super::router`]) |
//! | [`HttpLimits::max_connections`] | past it, new connections wait in the listen backlog until one closes |
//! | [`HttpLimits::max_connections_per_ip`] | a new connection from an address that already holds this many is answered 503 `too_many_connections` (plain HTTP; over HTTPS it is closed) and closed at once, without taking a permit for longer than that (see `super::per_ip`) |
//! | [`HttpLimits::max_relays`] | a request this node would relay to the leader while this many relays are under way is answered 503 `relay_busy` instead (not relayed, so not applied) |
//! | [`HttpLimits::shutdown_timeout`] | on shutdown, connections finish their requests within it, then are dropped |
//! | lingering close | a connection whose client still sends when it ends (a body answered 413 before it was read) is drained, for at most 2 s and 16 MiB, before it is closed, so that the kernel does not reset it before the client read the answer (see `super::linger`) |
//!
//! With [`TlsSetup`], every connection is TLS first (its handshake bounded by
//! [`HttpLimits::header_timeout`]); a client certificate that rustls verified against the admin
//! client CA marks the connection's requests with [`AdminCertificate`].
//!
//! hyper answers requests it cannot parse (a bad request line 400, a URI over 64 KiB 414,
//! headers too large 431) itself, with an empty body and no hook to change it; `JsonErrorIo`
//! gives those answers a JSON body like every other answer.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::http::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::linger::{Kept, linger};
use super::per_ip::ConnectionsPerIp;
use super::{AdminCertificate, App, TlsSetup, fast};

/// The limits of a node's HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long a connection may take to send a request head, counted from when it opened or
    /// got its last answer: both the header-read and the idle keep-alive timeout.
    pub header_timeout: Duration,
    /// How long a request body may take to arrive whole, counted from its request's head.
    pub body_timeout: Duration,
    /// How long a connection may take none of an answer's bytes before it is closed.
    pub write_timeout: Duration,
    /// The most connections served at once.
    pub max_connections: usize,
    /// The most connections served at once for one client IP address.
    pub max_connections_per_ip: usize,
    /// The most requests this node relays to the leader at once; more are answered 503
    /// `relay_busy` (not relayed). Kept below the leader's [`Self::max_connections_per_ip`],
    /// so that a follower's relays never meet that cap (see `super::forward`).
    pub max_relays: usize,
    /// How long shutdown waits for requests in progress.
    pub shutdown_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_connections_per_ip: 512,
            max_relays: 256,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// Serve `app` on `listener` (over TLS with `tls`) until `shutdown` resolves, then let
/// connections finish their requests for at most `limits.shutdown_timeout` and drop the rest.
/// Plain puts go to `super::fast`, every other request to the router.
pub async fn serve(
    listener: TcpListener,
    app: App,
    limits: HttpLimits,
    tls: Option<TlsSetup>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_ip = ConnectionsPerIp::new(limits.max_connections_per_ip);
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = Arc::new(app);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = accept(&listener, &permits) => accepted,
        };
        let Some((stream, peer, permit)) = accepted else { continue };
        let Some(counted) = per_ip.open(peer.ip()) else {
            refuse(stream, peer, tls.is_some());
            continue;
        };
        let (builder, app, mut stop_rx, tls) = (builder.clone(), app.clone(), stop_rx.clone(), tls.clone());
        connections.spawn(async move {
            let _permit = (permit, counted);
            let kept = Kept::of(&stream);
            let Some((stream, certified)) = secure(stream, tls.as_ref(), limits.header_timeout).await else { return };
            let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                let app = app.clone();
                async move {
                    if let Some(key) = fast::key(&req) {
                        let key = key.to_string();
                        return Ok(fast::put(&app.state, req, key, app.body_timeout).await);
                    }
                    if certified {
                        req.extensions_mut().insert(AdminCertificate);
                    }
                    app.router.clone().oneshot(req).await
                }
            });
            let io = TokioIo::new(JsonErrorIo::new(WriteDeadline::new(stream, limits.write_timeout)));
            let conn = builder.serve_connection(io, service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => log_end(r),
                _ = stopped(&mut stop_rx) => {
                    conn.as_mut().graceful_shutdown();
                    log_end(conn.await);
                }
            }
            // Still holding its permit: a client that sends on after the end is drained first.
            if let Some(kept) = kept {
                linger(kept).await;
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = connections.len();
    if tokio::time::timeout(limits.shutdown_timeout, async { while connections.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            open,
            left = connections.len(),
            timeout = ?limits.shutdown_timeout,
            "HTTP connections still busy at the shutdown deadline; dropping them"
        );
        connections.shutdown().await;
    }
}

/// The next connection, once a permit is free. `None` when accepting failed (logged).
///
/// Cancel safe: a permit taken is released if the accept is cancelled, and `accept` is.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> Option<(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    let permit = permits.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, peer)) => {
            let _ = stream.set_nodelay(true);
            Some((stream, peer, permit))
        }
        Err(e) => {
            // E.g. out of file descriptors: back off instead of spinning.
            tracing::warn!(error = %e, "accepting an HTTP connection failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Close a connection from `peer`, whose address already holds its cap of connections. Over
/// plain HTTP it is first answered 503 `too_many_connections` (not applied), if the answer fits
/// in the socket's buffer at once: nothing here waits for the client. A client that had
/// already sent a request may see the connection reset instead (its request unread); nothing
/// was done either way.
fn refuse(stream: TcpStream, peer: SocketAddr, tls: bool) {
    tracing::debug!(%peer, "refused an HTTP connection: its address holds its cap of connections");
    if !tls {
        let _ = stream.try_write(too_many_connections().as_bytes());
    }
}

/// The whole HTTP answer to a connection past its address's cap.
fn too_many_connections() -> String {
    let body = serde_json::json!({
        "ok": false,
        "error": "too_many_connections",
        "message": "this client address holds its cap of open connections; close one and retry",
        "outcome": "not_applied",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A connection's byte stream: TLS over `tcp` with `tls` (and whether the client presented a
/// certificate of the admin client CA), `tcp` itself otherwise. `None` if the TLS handshake
/// fails or takes longer than `timeout`.
async fn secure(tcp: TcpStream, tls: Option<&TlsSetup>, timeout: Duration) -> Option<(Box<dyn Stream>, bool)> {
    let Some(tls) = tls else { return Some((Box::new(tcp), false)) };
    match tokio::time::timeout(timeout, tls.acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let certified = tls.client_certificates && stream.get_ref().1.peer_certificates().is_some();
            Some((Box::new(stream), certified))
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "an HTTPS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// An HTTP connection's byte stream: TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Resolves once the server is told to stop. Cancel safe.
async fn stopped(stop_rx: &mut watch::Receiver<bool>) {
    // Err: the server is gone, which is a stop too.
    let _ = stop_rx.wait_for(|stop| *stop).await.map(|_| ());
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended");
    }
}

/// A stream whose writes fail once it has taken no byte for `timeout`: a client that sends
/// requests and never reads the answers would otherwise hold its connection (and the answer
/// it did not read, however large) for good; hyper's header timeout does not run while it
/// waits to write (found in review).
pub(crate) struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Armed when a write could not go on, reset when one does.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether `stalled` runs (a fired or disarmed timer is kept, to be reset).
    armed: bool,
}

impl<S> WriteDeadline<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        Self { inner, timeout, stalled: None, armed: false }
    }

    /// What a write's `poll` gave, with the deadline applied: progress disarms it; a write
    /// that cannot go on arms it (if it is not running) and fails once it has run out.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.armed = false;
            return polled;
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::debug!(timeout = ?self.timeout, "closing an HTTP connection whose client reads no answer");
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client took no bytes in time")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

/// A TCP stream that rewrites hyper's own error answers (a 4xx head with `content-length: 0`,
/// which no handler of this API sends: every answer of ours has a JSON body) into the same
/// answer with a JSON body. hyper closes the connection after such an answer, so adding a body
/// cannot confuse a next request.
pub(crate) struct JsonErrorIo<S> {
    inner: S,
    /// Bytes accepted from hyper and not yet written to `inner`.
    pending: Vec<u8>,
    written: usize,
}

impl<S> JsonErrorIo<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, pending: Vec::new(), written: 0 }
    }
}

/// If `buf` is exactly a response head of hyper's error answers, the same answer with a JSON
/// body.
fn with_json_body(buf: &[u8]) -> Option<Vec<u8>> {
    // Every answer passes here: a 4xx head is rare, so that is looked at first.
    if !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let head = std::str::from_utf8(buf).ok()?;
    let rest = head.strip_prefix("HTTP/1.1 ")?;
    if !head.ends_with("\r\n\r\n") || head.matches("\r\n\r\n").count() != 1 {
        return None;
    }
    let status: u16 = rest.get(..3)?.parse().ok()?;
    if !(400..500).contains(&status) {
        return None;
    }
    let lower = head.to_ascii_lowercase();
    let at = lower.find("\r\ncontent-length: 0\r\n")?;
    let (code, message) = match status {
        400 => ("bad_request", "the request could not be parsed as HTTP/1.1"),
        414 => ("uri_too_long", "the request URI is too long"),
        431 => ("headers_too_large", "the request headers are too large"),
        _ => ("bad_request", "the request was refused by the HTTP layer"),
    };
    let body =
        serde_json::json!({ "ok": false, "error": code, "message": message, "outcome": "not_applied" }).to_string();
    let mut out = String::with_capacity(head.len() + body.len() + 64);
    out.push_str(&head[..at]);
    out.push_str(&format!("\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len()));
    out.push_str(&head[at + "\r\ncontent-length: 0\r\n".len()..]);
    out.push_str(&body);
    Some(out.into_bytes())
}

impl<S: AsyncWrite + Unpin> JsonErrorIo<S> {
    /// Write out what is pending.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrorIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrorIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        match with_json_body(buf) {
            Some(rewritten) => {
                self.pending = rewritten;
                // Accepted whole; the rest is written by the next write, flush or shutdown.
                let _ = self.poll_drain(cx)?;
                Poll::Ready(Ok(buf.len()))
            }
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::with_json_body;

    #[test]
    fn hyper_error_heads_get_a_json_body() {
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(with_json_body(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "uri_too_long");
    }

    #[test]
    fn other_writes_pass_unchanged() {
        assert!(with_json_body(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(with_json_body(b"HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\n\r\n").is_none());
        assert!(with_json_body(b"{\"ok\":false}").is_none());
    }
}
