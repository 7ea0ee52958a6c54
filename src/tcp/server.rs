//! The server side: [`TcpServer`] accepts connections, checks who is calling, and hands each
//! request to the local [`Raft`].

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use super::config::TcpConfig;
use super::error::TcpError;
use super::io::{Io, ReadError, read_frame, read_preamble, write_frames};
use super::log_limit::RateLimit;
use super::message::{Hello, Reply, Rpc, ToClient, ToServer};
use super::wire::{FrameDecoder, decode, encode_frame};
use crate::{AppendEntriesRequest, Raft, RaftTypeConfig};

/// The listening side of a node's transport.
///
/// Bind it before starting the node (so that a port in use fails at once, and peers that
/// connect while the node recovers its log wait in the backlog), then [`serve`](Self::serve)
/// the node once it is built.
pub struct TcpServer {
    listener: TcpListener,
    config: TcpConfig,
}

impl fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpServer").field("local_addr", &self.listener.local_addr().ok()).finish_non_exhaustive()
    }
}

/// Stops a running [`TcpServer`] when [`shutdown`](Self::shutdown) is called or when it is
/// dropped: the listener closes and every connection it accepted is dropped.
#[derive(Debug)]
pub struct ServerHandle {
    task: tokio::task::JoinHandle<()>,
    local_addr: SocketAddr,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop serving: close the listener and every connection.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpServer {
    /// Bind `addr`.
    ///
    /// # Errors
    /// [`TcpError::Io`] if the address cannot be bound.
    pub async fn bind(addr: SocketAddr, config: TcpConfig) -> Result<Self, TcpError> {
        let listener =
            TcpListener::bind(addr).await.map_err(|source| TcpError::Io { addr: addr.to_string(), source })?;
        Ok(Self { listener, config })
    }

    /// A server on a listener the application bound itself.
    pub fn from_listener(listener: TcpListener, config: TcpConfig) -> Self {
        Self { listener, config }
    }

    /// The address it is bound to.
    ///
    /// # Errors
    /// If the OS cannot say.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve `raft`'s peers, in a task of its own, until the returned handle is shut down or
    /// dropped.
    ///
    /// # Errors
    /// With TLS, [`TcpError::Tls`] if this node's certificate does not name it (see
    /// [`TlsConfig::check_identity`](super::TlsConfig::check_identity)).
    pub fn serve<C: RaftTypeConfig>(self, raft: Raft<C>) -> Result<ServerHandle, TcpError> {
        let local_addr =
            self.listener.local_addr().map_err(|source| TcpError::Io { addr: "the listener".into(), source })?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.config.tls {
            tls.check_identity(&self.config.cluster_id, raft.id())
                .map_err(|e| TcpError::Tls { addr: local_addr.to_string(), reason: e.to_string() })?;
        }
        tracing::info!(
            node = %raft.id(), addr = %local_addr, cluster_id = %self.config.cluster_id, tls = self.config.is_tls(),
            "serving Raft RPCs"
        );
        let task = tokio::spawn(accept_loop(self.listener, Arc::new(self.config), raft));
        Ok(ServerHandle { task, local_addr })
    }
}

/// What a server logs about peers it refuses, at most once a second each.
struct Refusals {
    handshake: RateLimit,
    protocol: RateLimit,
}

async fn accept_loop<C: RaftTypeConfig>(listener: TcpListener, config: Arc<TcpConfig>, raft: Raft<C>) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let refusals = Arc::new(Refusals {
        handshake: RateLimit::new(Duration::from_secs(1)),
        protocol: RateLimit::new(Duration::from_secs(1)),
    });
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a Raft connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (config, raft, refusals) = (config.clone(), raft.clone(), refusals.clone());
        connections.spawn(async move {
            let _permit = permit;
            serve_connection(tcp, peer, &config, raft, &refusals).await;
        });
    }
}

/// Shake hands, then serve the connection until it ends.
async fn serve_connection<C: RaftTypeConfig>(
    tcp: TcpStream,
    peer: SocketAddr,
    config: &TcpConfig,
    raft: Raft<C>,
    refusals: &Refusals,
) {
    let mut decoder = FrameDecoder::new(config.max_frame_bytes);
    let shaken = tokio::time::timeout(config.handshake_timeout, handshake(tcp, config, &raft, &mut decoder)).await;
    let (io, from) = match shaken {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(refused)) => {
            if let Some(suppressed) = refusals.handshake.allow() {
                tracing::warn!(%peer, reason = %refused, suppressed, "refused a connection");
            }
            return;
        }
        Err(_) => {
            if let Some(suppressed) = refusals.handshake.allow() {
                tracing::warn!(%peer, timeout = ?config.handshake_timeout, suppressed, "refused a connection: no handshake in time");
            }
            return;
        }
    };
    tracing::info!(%peer, node = %from, "accepted a Raft connection");
    let reason = serve_calls(io, decoder, config, raft).await;
    match reason {
        Ended::Closed => tracing::debug!(%peer, node = %from, "Raft connection closed"),
        Ended::Idle => tracing::debug!(%peer, node = %from, "closed an idle Raft connection"),
        Ended::Io(e) => tracing::debug!(%peer, node = %from, error = %e, "Raft connection failed"),
        Ended::Protocol(e) => {
            if let Some(suppressed) = refusals.protocol.allow() {
                tracing::warn!(%peer, node = %from, error = %e, suppressed, "a peer broke the protocol; closed its connection");
            }
        }
    }
}

/// Why a connection was refused at the handshake.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// TLS (if configured), the preamble and the hello. On success, the connection and the node it
/// speaks for; a hello this node refuses is answered with the reason before the close.
async fn handshake<C: RaftTypeConfig>(
    tcp: TcpStream,
    config: &TcpConfig,
    raft: &Raft<C>,
    decoder: &mut FrameDecoder,
) -> Result<(Box<dyn Io>, C::NodeId), Refused> {
    let (mut io, peer_cert) = secure(tcp, config).await?;
    read_preamble(&mut io, decoder).await.map_err(|e| Refused(format!("preamble: {e}")))?;
    let frame = read_frame(&mut io, decoder).await.map_err(|e| Refused(format!("hello: {e}")))?;
    let hello = match decode::<ToServer<C>>(&frame) {
        Ok(ToServer::Hello(hello)) => hello,
        Ok(_) => return Err(Refused("the first message is not a hello".into())),
        Err(e) => return Err(Refused(format!("hello: {e}"))),
    };
    match check_hello(&hello, config, raft.id(), peer_cert.as_ref()) {
        Ok(()) => {
            let welcome = ToClient::<C>::Welcome { cluster_id: config.cluster_id.clone(), node_id: raft.id() };
            send_now(&mut io, &welcome, config).await.map_err(|e| Refused(format!("welcome: {e}")))?;
            Ok((io, hello.from))
        }
        Err(reason) => {
            // Tell the caller why: its operator reads it in the caller's errors.
            let _ = send_now(&mut io, &ToClient::<C>::Refused { reason: reason.clone() }, config).await;
            Err(Refused(format!("node {} of cluster {:?}: {reason}", hello.from, hello.cluster_id)))
        }
    }
}

/// Whether this node serves the caller of `hello`.
fn check_hello<C: RaftTypeConfig>(
    hello: &Hello<C>,
    config: &TcpConfig,
    me: C::NodeId,
    peer_cert: Option<&PeerCert>,
) -> Result<(), String> {
    if hello.cluster_id != config.cluster_id {
        return Err(format!(
            "cluster id mismatch: this node is in cluster {:?}, the caller in {:?}",
            config.cluster_id, hello.cluster_id
        ));
    }
    if hello.to != me {
        return Err(format!("this is node {me}, not node {}: the caller's address book is wrong", hello.to));
    }
    #[cfg(feature = "tls")]
    if config.tls.is_some() {
        let Some(cert) = peer_cert else {
            return Err("no client certificate".into());
        };
        super::tls::names_node(cert, &super::tls::node_name(&config.cluster_id, hello.from))
            .map_err(|e| format!("the caller says it is node {}, but {e}", hello.from))?;
    }
    #[cfg(not(feature = "tls"))]
    let _ = peer_cert;
    Ok(())
}

#[cfg(feature = "tls")]
type PeerCert = rustls_pki_types::CertificateDer<'static>;
#[cfg(not(feature = "tls"))]
type PeerCert = ();

/// TLS over `tcp` if configured, and the client's certificate.
async fn secure(tcp: TcpStream, config: &TcpConfig) -> Result<(Box<dyn Io>, Option<PeerCert>), Refused> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        let stream = tls.acceptor().accept(tcp).await.map_err(|e| Refused(format!("TLS handshake: {e}")))?;
        let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned());
        return Ok((Box::new(stream), cert));
    }
    let _ = config;
    Ok((Box::new(tcp), None))
}

async fn send_now<C: RaftTypeConfig>(
    io: &mut Box<dyn Io>,
    msg: &ToClient<C>,
    config: &TcpConfig,
) -> Result<(), String> {
    let frame = encode_frame(msg, config.max_frame_bytes).map_err(|e| e.to_string())?;
    io.write_all(&frame).await.map_err(|e| e.to_string())?;
    io.flush().await.map_err(|e| e.to_string())
}

/// Why a connection's service ended.
enum Ended {
    Closed,
    Idle,
    Io(String),
    Protocol(String),
}

/// Serve calls and replication streams until the connection ends.
async fn serve_calls<C: RaftTypeConfig>(
    io: Box<dyn Io>,
    mut decoder: FrameDecoder,
    config: &TcpConfig,
    raft: Raft<C>,
) -> Ended {
    let (mut rd, wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Bytes>(config.send_queue.max(1));
    let mut writer = tokio::spawn(async move { write_frames(wr, &mut rx).await });
    let mut service = Service {
        raft,
        tx,
        max_frame_bytes: config.max_frame_bytes,
        calls: Arc::new(Semaphore::new(config.max_calls_per_connection.max(1))),
        max_calls: config.max_calls_per_connection.max(1),
        streams: HashMap::new(),
        highest_stream: 0,
        tasks: JoinSet::new(),
    };
    let ended = loop {
        let frame = tokio::select! {
            read = next_frame(&mut rd, &mut decoder, config.idle_timeout) => read,
            written = &mut writer => {
                break match written {
                    Ok(Err(e)) => Ended::Io(format!("writing failed: {e}")),
                    _ => Ended::Closed,
                };
            }
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) if service.is_busy() => continue,
            Ok(None) => break Ended::Idle,
            Err(ReadError::Eof) => break Ended::Closed,
            Err(ReadError::Io(e)) => break Ended::Io(e.to_string()),
            Err(ReadError::Frame(e)) => break Ended::Protocol(e.to_string()),
        };
        let msg = match decode::<ToServer<C>>(&frame) {
            Ok(msg) => msg,
            Err(e) => break Ended::Protocol(e.to_string()),
        };
        if let Err(e) = service.handle(msg).await {
            break Ended::Protocol(e);
        }
    };
    writer.abort();
    service.tasks.abort_all();
    ended
}

/// The next frame, or `None` if none arrived within `idle`. Cancel safe, as [`read_frame`].
async fn next_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    decoder: &mut FrameDecoder,
    idle: Duration,
) -> Result<Option<Bytes>, ReadError> {
    match tokio::time::timeout(idle, read_frame(rd, decoder)).await {
        Ok(frame) => frame.map(Some),
        Err(_) => Ok(None),
    }
}

/// The calls and streams of one connection.
struct Service<C: RaftTypeConfig> {
    raft: Raft<C>,
    tx: mpsc::Sender<Bytes>,
    max_frame_bytes: usize,
    calls: Arc<Semaphore>,
    max_calls: usize,
    /// Open streams: where their requests go.
    streams: HashMap<u64, mpsc::Sender<AppendEntriesRequest<C>>>,
    /// Stream ids only grow: a request for a lower id not in `streams` is for an ended stream.
    highest_stream: u64,
    tasks: JoinSet<()>,
}

/// Requests a stream buffers before the reader waits for the node to take them.
const STREAM_QUEUE: usize = 64;

impl<C: RaftTypeConfig> Service<C> {
    fn is_busy(&self) -> bool {
        !self.streams.is_empty() || self.calls.available_permits() < self.max_calls
    }

    /// Handle one message of the client. An error is a protocol violation: the connection
    /// closes.
    async fn handle(&mut self, msg: ToServer<C>) -> Result<(), String> {
        while self.tasks.try_join_next().is_some() {}
        match msg {
            ToServer::Hello(_) => return Err("a second hello".into()),
            ToServer::Call { id, rpc } => {
                // Waits while the connection has its most calls running: reads stop, and TCP
                // pushes back on the client.
                let permit = self.calls.clone().acquire_owned().await.map_err(|_| "closed".to_string())?;
                let (raft, tx, max) = (self.raft.clone(), self.tx.clone(), self.max_frame_bytes);
                self.tasks.spawn(execute(raft, id, rpc, tx, max, permit));
            }
            ToServer::Append { stream, req } => {
                if let Some(requests) = self.streams.get(&stream) {
                    // Waits while the node has the stream's window full (back-pressure).
                    if requests.send(req).await.is_err() {
                        // The node ended the stream (after an error answer): drop the rest.
                        self.streams.remove(&stream);
                    }
                } else if stream > self.highest_stream {
                    self.highest_stream = stream;
                    let (requests, rx) = mpsc::channel(STREAM_QUEUE);
                    let _ = requests.try_send(req);
                    self.streams.insert(stream, requests);
                    let (raft, tx, max) = (self.raft.clone(), self.tx.clone(), self.max_frame_bytes);
                    self.tasks.spawn(run_stream(raft, stream, rx, tx, max));
                }
            }
            ToServer::EndStream { stream } => {
                self.streams.remove(&stream);
            }
        }
        Ok(())
    }
}

/// Execute one call and queue its answer.
async fn execute<C: RaftTypeConfig>(
    raft: Raft<C>,
    id: u64,
    rpc: Rpc<C>,
    tx: mpsc::Sender<Bytes>,
    max_frame_bytes: usize,
    _permit: OwnedSemaphorePermit,
) {
    let reply = match rpc {
        Rpc::Vote(r) => Reply::Vote(raft.vote(r).await),
        Rpc::AppendEntries(r) => Reply::AppendEntries(raft.append_entries(r).await),
        Rpc::InstallSnapshot(r) => Reply::InstallSnapshot(raft.install_snapshot(r).await),
        Rpc::TransferLeader(r) => Reply::TransferLeader(raft.handle_transfer_leader(r).await),
    };
    queue(&tx, &ToClient::Reply { id, reply }, max_frame_bytes).await;
}

/// Feed one stream's requests to [`Raft::stream_append`] and queue its answers, in order.
async fn run_stream<C: RaftTypeConfig>(
    raft: Raft<C>,
    stream: u64,
    requests: mpsc::Receiver<AppendEntriesRequest<C>>,
    tx: mpsc::Sender<Bytes>,
    max_frame_bytes: usize,
) {
    let input = futures_util::stream::unfold(requests, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let mut answers = std::pin::pin!(raft.stream_append(input));
    while let Some(resp) = answers.next().await {
        if !queue(&tx, &ToClient::Appended { stream, resp }, max_frame_bytes).await {
            return;
        }
    }
    queue(&tx, &ToClient::<C>::StreamEnded { stream }, max_frame_bytes).await;
}

/// Queue `msg` for the writer; `false` if the connection is gone.
async fn queue<C: RaftTypeConfig>(tx: &mpsc::Sender<Bytes>, msg: &ToClient<C>, max_frame_bytes: usize) -> bool {
    match encode_frame(msg, max_frame_bytes) {
        Ok(frame) => tx.send(frame).await.is_ok(),
        Err(e) => {
            // Only an answer over the frame limit can fail here: the client's call times out.
            tracing::warn!(error = %e, "cannot send an answer");
            true
        }
    }
}
