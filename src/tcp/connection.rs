//! [`Connection`]: the client side of one connection to a peer, shared by every call and
//! replication stream to that peer (of every group, for a group host) and by the beats.
//!
//! Two tasks own the socket: a writer that sends the frames callers queue (a bounded queue:
//! callers wait when it is full), and a reader that routes each answer to its caller, a call's
//! by its id, a stream's by its stream id. When either fails the connection is closed: every
//! waiting call and open stream gets the reason, and the next call opens a new connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::config::TcpConfig;
use super::error::TcpError;
use super::io::{Io, ReadError, read_frame, write_frames};
use super::message::{Hello, Reply, Rpc, ToClient, ToServer};
use super::wire::{FrameDecoder, PREAMBLE, decode, encode_frame};
use crate::error::RaftError;
use crate::multi::{GroupId, NodeBeat};
use crate::{AppendEntriesRequest, AppendEntriesResponse, RaftTypeConfig};

/// What a replication stream receives.
pub(crate) enum StreamEvent<C: RaftTypeConfig> {
    /// The follower's next answer.
    Appended(Result<AppendEntriesResponse<C>, RaftError>),
    /// The stream is over, and why.
    Ended(String),
    /// The server has nothing to serve the stream (a group it does not run), and why.
    NotServed(String),
}

/// What a call receives: the server's reply, or why nothing there serves it.
type Answer<C> = Result<Reply<C>, String>;

/// What the reader routes answers to.
struct Routes<C: RaftTypeConfig> {
    /// Why the connection is closed; `None` while it is open.
    closed: Option<String>,
    calls: HashMap<u64, oneshot::Sender<Answer<C>>>,
    streams: HashMap<u64, mpsc::UnboundedSender<StreamEvent<C>>>,
}

/// One open connection to a peer.
pub(crate) struct Connection<C: RaftTypeConfig> {
    pub(crate) addr: String,
    max_frame_bytes: usize,
    tx: mpsc::Sender<Bytes>,
    routes: Mutex<Routes<C>>,
    /// The next call or stream id: one sequence for both, so that an id names one of them
    /// (a [`ToClient::NotServed`] answer names either).
    next_id: AtomicU64,
    opened: Instant,
    /// Microseconds after `opened` at which the last frame arrived.
    last_received_us: AtomicU64,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl<C: RaftTypeConfig> Connection<C> {
    fn routes(&self) -> MutexGuard<'_, Routes<C>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn closed_error(&self, reason: String) -> TcpError {
        TcpError::Closed { addr: self.addr.clone(), reason }
    }

    /// Whether it is closed (then it is replaced on the next call).
    pub(crate) fn is_closed(&self) -> bool {
        self.routes().closed.is_some()
    }

    /// Microseconds since it opened: compare with [`last_received_us`](Self::last_received_us).
    pub(crate) fn now_us(&self) -> u64 {
        self.opened.elapsed().as_micros() as u64
    }

    /// When the last frame arrived, in [`now_us`](Self::now_us) terms.
    pub(crate) fn last_received_us(&self) -> u64 {
        self.last_received_us.load(Ordering::Relaxed)
    }

    /// Close it: every waiting call and open stream ends with `reason`. Idempotent.
    pub(crate) fn close(&self, reason: &str) {
        let (calls, streams) = {
            let mut routes = self.routes();
            if routes.closed.is_some() {
                return;
            }
            routes.closed = Some(reason.to_string());
            (std::mem::take(&mut routes.calls), std::mem::take(&mut routes.streams))
        };
        tracing::debug!(addr = %self.addr, reason, "closing a connection");
        drop(calls);
        for (_, tx) in streams {
            let _ = tx.send(StreamEvent::Ended(reason.to_string()));
        }
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            task.abort();
        }
    }

    fn why_closed(&self) -> String {
        self.routes().closed.clone().unwrap_or_else(|| "the connection ended".into())
    }

    /// Queue `frame`; waits while the send queue is full.
    async fn send(&self, frame: Bytes) -> Result<(), TcpError> {
        self.tx.send(frame).await.map_err(|_| self.closed_error(self.why_closed()))
    }

    fn encode(&self, msg: &ToServer<C>) -> Result<Bytes, TcpError> {
        encode_frame(msg, self.max_frame_bytes).map_err(|source| TcpError::Frame { addr: self.addr.clone(), source })
    }

    /// Send `rpc` to `group` (the node's single Raft if `None`) and wait for its answer (no
    /// timeout: the caller sets one). Cancel safe: a cancelled call forgets its answer, and the
    /// connection stays usable.
    ///
    /// # Errors
    /// [`TcpError::NotServed`] if the server has no such group; the others if the connection
    /// fails.
    pub(crate) async fn call(
        &self,
        group: Option<GroupId>,
        rpc: Rpc<C>,
        within: std::time::Duration,
    ) -> Result<Reply<C>, TcpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = self.encode(&ToServer::call(group, id, within, rpc))?;
        let (tx, rx) = oneshot::channel();
        {
            let mut routes = self.routes();
            if let Some(reason) = &routes.closed {
                return Err(self.closed_error(reason.clone()));
            }
            routes.calls.insert(id, tx);
        }
        let _forget = Forget { conn: self, id };
        self.send(frame).await?;
        match rx.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(reason)) => Err(TcpError::NotServed { addr: self.addr.clone(), reason }),
            Err(_) => Err(self.closed_error(self.why_closed())),
        }
    }

    /// Queue this node's `beat` (unanswered). Waits while the send queue is full.
    pub(crate) async fn send_beat(&self, beat: NodeBeat<C>) -> Result<(), TcpError> {
        let frame = self.encode(&ToServer::Beat(beat))?;
        self.send(frame).await
    }

    /// Open a replication stream: its id and where its answers arrive.
    pub(crate) fn open_stream(&self) -> Result<(u64, mpsc::UnboundedReceiver<StreamEvent<C>>), TcpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut routes = self.routes();
        if let Some(reason) = &routes.closed {
            return Err(self.closed_error(reason.clone()));
        }
        routes.streams.insert(id, tx);
        Ok((id, rx))
    }

    /// Send the next request of stream `stream`, to `group` (as [`call`](Self::call)). Waits
    /// while the send queue is full.
    pub(crate) async fn send_append(
        &self,
        group: Option<GroupId>,
        stream: u64,
        req: AppendEntriesRequest<C>,
    ) -> Result<(), TcpError> {
        let frame = self.encode(&ToServer::append(group, stream, req))?;
        self.send(frame).await
    }

    /// Stop routing answers of `stream` and tell the server it is over (without waiting).
    pub(crate) fn end_stream(&self, stream: u64) {
        if self.routes().streams.remove(&stream).is_none() && self.is_closed() {
            return;
        }
        self.send_detached(&ToServer::EndStream { stream });
    }

    /// Queue `msg` without waiting: now if the send queue has room, else from a task of its
    /// own. For messages sent from `Drop`.
    fn send_detached(&self, msg: &ToServer<C>) {
        let Ok(frame) = encode_frame(msg, self.max_frame_bytes) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(frame)) = self.tx.try_send(frame) {
            // Outside a runtime (a stream dropped as the process ends) there is no one to tell.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let tx = self.tx.clone();
                runtime.spawn(async move {
                    let _ = tx.send(frame).await;
                });
            }
        }
    }

    /// Route one frame from the server.
    fn on_frame(&self, msg: ToClient<C>) -> Result<(), String> {
        self.last_received_us.store(self.now_us(), Ordering::Relaxed);
        let mut routes = self.routes();
        match msg {
            ToClient::Reply { id, reply } => {
                // No route: the call was cancelled (timed out); its answer is dropped.
                if let Some(tx) = routes.calls.remove(&id) {
                    let _ = tx.send(Ok(reply));
                }
            }
            ToClient::Appended { stream, resp } => {
                if let Some(tx) = routes.streams.get(&stream) {
                    let _ = tx.send(StreamEvent::Appended(resp));
                }
            }
            ToClient::StreamEnded { stream } => {
                if let Some(tx) = routes.streams.remove(&stream) {
                    let _ = tx.send(StreamEvent::Ended("the follower ended the stream".into()));
                }
            }
            ToClient::NotServed { id, reason } => {
                // Calls and streams share one id sequence: `id` names at most one of them.
                if let Some(tx) = routes.calls.remove(&id) {
                    let _ = tx.send(Err(reason));
                } else if let Some(tx) = routes.streams.remove(&id) {
                    let _ = tx.send(StreamEvent::NotServed(reason));
                }
            }
            ToClient::Welcome { .. } | ToClient::Refused { .. } => {
                return Err("a handshake answer after the handshake".into());
            }
        }
        Ok(())
    }
}

/// Removes a call's route when the call ends or is cancelled.
struct Forget<'a, C: RaftTypeConfig> {
    conn: &'a Connection<C>,
    id: u64,
}

impl<C: RaftTypeConfig> Drop for Forget<'_, C> {
    fn drop(&mut self) {
        let unanswered = self.conn.routes().calls.remove(&self.id).is_some();
        if unanswered && !self.conn.is_closed() {
            // Given up on (a timeout, a dropped future): the server frees the call's slot. (A
            // call whose frame never left is unknown there, and the cancel ignored.)
            self.conn.send_detached(&ToServer::Cancel { id: self.id });
        }
    }
}

fn io_error(addr: &str, source: std::io::Error) -> TcpError {
    TcpError::Io { addr: addr.to_string(), source }
}

/// What a connection closed at the hello, unanswered, may mean: a node that refuses a caller
/// for cause says why first.
const CLOSED_AT_HELLO: &str = "a node of an older quorate transport protocol version closes unanswered \
    (see its log), as does a server that is not quorate's, or a node with too many handshakes at once \
    (max_pending_handshakes)";

/// Connect to node `to` at `addr` as node `from`, shake hands, and start the connection's
/// tasks. No timeout: the caller sets one (dropping it mid-way leaves nothing behind).
pub(crate) async fn connect<C: RaftTypeConfig>(
    config: &TcpConfig,
    from: C::NodeId,
    to: C::NodeId,
    addr: &str,
) -> Result<Arc<Connection<C>>, TcpError> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| io_error(addr, e))?;
    tcp.set_nodelay(true).map_err(|e| io_error(addr, e))?;
    let io: Box<dyn Io> = secure(config, to, addr, tcp).await?;
    let (mut rd, mut wr) = tokio::io::split(io);

    let hello = ToServer::Hello(Hello::<C> { cluster_id: config.cluster_id.clone(), from, to });
    let frame = encode_frame(&hello, config.max_frame_bytes)
        .map_err(|source| TcpError::Frame { addr: addr.to_string(), source })?;
    wr.write_all(&PREAMBLE).await.map_err(|e| io_error(addr, e))?;
    wr.write_all(&frame).await.map_err(|e| io_error(addr, e))?;
    wr.flush().await.map_err(|e| io_error(addr, e))?;

    let mut decoder = FrameDecoder::new(config.max_frame_bytes);
    let answer = match read_frame(&mut rd, &mut decoder).await {
        Ok(frame) => decode::<ToClient<C>>(&frame).map_err(|source| TcpError::Frame { addr: addr.into(), source })?,
        Err(ReadError::Frame(source)) => return Err(TcpError::Frame { addr: addr.into(), source }),
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            return Err(TcpError::Refused {
                addr: addr.into(),
                reason: format!("{e} at the hello; {CLOSED_AT_HELLO}"),
            });
        }
        Err(ReadError::Io(e)) => return Err(io_error(addr, e)),
        Err(ReadError::Eof) => {
            return Err(TcpError::Refused {
                addr: addr.into(),
                reason: format!("it closed the connection at the hello; {CLOSED_AT_HELLO}"),
            });
        }
    };
    match answer {
        ToClient::Welcome { cluster_id, node_id } if cluster_id == config.cluster_id && node_id == to => {}
        ToClient::Welcome { cluster_id, node_id } => {
            return Err(TcpError::WrongPeer {
                addr: addr.into(),
                expected: format!("node {to} of cluster {:?}", config.cluster_id),
                got: format!("node {node_id} of cluster {cluster_id:?}"),
            });
        }
        ToClient::Refused { reason } => return Err(TcpError::Refused { addr: addr.into(), reason }),
        _ => {
            return Err(TcpError::Refused {
                addr: addr.into(),
                reason: "it answered the hello with another message".into(),
            });
        }
    }

    let (tx, mut rx) = mpsc::channel(config.send_queue.max(1));
    let conn = Arc::new(Connection {
        addr: addr.to_string(),
        max_frame_bytes: config.max_frame_bytes,
        tx,
        routes: Mutex::new(Routes { closed: None, calls: HashMap::new(), streams: HashMap::new() }),
        next_id: AtomicU64::new(1),
        opened: Instant::now(),
        last_received_us: AtomicU64::new(0),
        tasks: Mutex::new(Vec::new()),
    });
    let writer = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let reason = match write_frames(wr, &mut rx).await {
                Ok(()) => "no more callers".to_string(),
                Err(e) => format!("writing failed: {e}"),
            };
            conn.close(&reason);
        })
    };
    let reader = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let reason = loop {
                let frame = match read_frame(&mut rd, &mut decoder).await {
                    Ok(frame) => frame,
                    Err(e) => break format!("reading failed: {e}"),
                };
                let routed = decode::<ToClient<C>>(&frame).map_err(|e| e.to_string()).and_then(|m| conn.on_frame(m));
                if let Err(e) = routed {
                    tracing::warn!(addr = %conn.addr, error = %e, "a peer sent an invalid answer; closing the connection");
                    break e;
                }
            };
            conn.close(&reason);
        })
    };
    conn.tasks.lock().unwrap_or_else(|e| e.into_inner()).extend([writer.abort_handle(), reader.abort_handle()]);
    if writer.is_finished() || reader.is_finished() {
        conn.close("the connection ended at once");
    }
    Ok(conn)
}

/// The connection's byte stream: TLS over `tcp` if configured, checking that the server is
/// node `to` of this cluster; `tcp` itself otherwise.
#[allow(unused_variables)]
async fn secure(
    config: &TcpConfig,
    to: impl std::fmt::Display,
    addr: &str,
    tcp: tokio::net::TcpStream,
) -> Result<Box<dyn Io>, TcpError> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        let name = super::tls::server_name(&config.cluster_id, to)
            .map_err(|reason| TcpError::Tls { addr: addr.into(), reason })?;
        let stream = tls
            .connector()
            .connect(name, tcp)
            .await
            .map_err(|e| TcpError::Tls { addr: addr.into(), reason: e.to_string() })?;
        return Ok(Box::new(stream));
    }
    Ok(Box::new(tcp))
}
