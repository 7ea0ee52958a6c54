//! The server side: [`TcpServer`] accepts connections, checks who is calling, and hands each
//! connection to its [service](super::service), which feeds the local [`Raft`] or the groups
//! of the local [`GroupHost`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};

use super::config::TcpConfig;
use super::error::TcpError;
use super::io::{Io, ReadError, read_frame, read_preamble};
use super::message::{Hello, ToClient, ToServer};
use super::service::{Ended, Peer, Refusals, Served, serve_calls};
use super::wire::{FrameDecoder, FrameError, decode, encode_frame};
use crate::multi::{GroupHost, HostNetwork};
use crate::{Raft, RaftTypeConfig};

/// The listening side of a node's transport.
///
/// Bind it before starting the node (so that a port in use fails at once, and peers that
/// connect while the node recovers its log wait in the backlog), then [`serve`](Self::serve)
/// the node once it is built, or [`serve_host`](Self::serve_host) the node's
/// [`GroupHost`] (each server serves one of the two).
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
    accepted: Arc<AtomicU64>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many connections the server has accepted since it started: those whose handshake
    /// succeeded (refused ones are not counted), open or since closed.
    ///
    /// Each peer keeps one connection to a node, for all of its groups and its beats, and
    /// replaces it only when it fails or idles out: on a healthy network the count stays at
    /// the number of peers that ever called. A count that keeps growing says connections are
    /// failing.
    pub fn accepted_connections(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
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
    /// A peer's messages for a group (from a [`TcpHostNetwork`](super::TcpHostNetwork)) are
    /// answered with an error, which the peer reports as unreachable; its beats are dropped.
    ///
    /// # Errors
    /// With TLS, [`TcpError::Tls`] if this node's certificate does not name it (see
    /// [`TlsConfig::check_identity`](super::TlsConfig::check_identity)).
    pub fn serve<C: RaftTypeConfig>(self, raft: Raft<C>) -> Result<ServerHandle, TcpError> {
        self.start(Arc::new(raft), "serving Raft RPCs")
    }

    /// Serve the peers of every group of `host`, and their beats, in a task of its own, until
    /// the returned handle is shut down or dropped. Peers reach it with a
    /// [`TcpHostNetwork`](super::TcpHostNetwork).
    ///
    /// Each call and replication stream goes to [`host.group`](GroupHost::group) of the group
    /// it names; one for a group the host does not run (not yet created, or removed) is
    /// answered with an error the caller reports as [`RPCError::Unreachable`], and a stream
    /// for one ends at once. Each beat goes to [`host.receive_beat`](GroupHost::receive_beat)
    /// if it comes from the node that opened the connection (see the
    /// [module docs](super#many-groups)); messages for no group are answered with an error.
    /// The server holds a clone of `host` until it stops.
    ///
    /// # Errors
    /// With TLS, [`TcpError::Tls`] if this node's certificate does not name it (see
    /// [`TlsConfig::check_identity`](super::TlsConfig::check_identity)).
    ///
    /// [`RPCError::Unreachable`]: crate::RPCError::Unreachable
    pub fn serve_host<C, N>(self, host: GroupHost<C, N>) -> Result<ServerHandle, TcpError>
    where
        C: RaftTypeConfig,
        N: HostNetwork<C>,
    {
        self.start(Arc::new(host), "serving the Raft RPCs of a group host")
    }

    fn start<C: RaftTypeConfig>(self, served: Arc<dyn Served<C>>, what: &str) -> Result<ServerHandle, TcpError> {
        let local_addr =
            self.listener.local_addr().map_err(|source| TcpError::Io { addr: "the listener".into(), source })?;
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.config.tls {
            tls.check_identity(&self.config.cluster_id, served.node_id())
                .map_err(|e| TcpError::Tls { addr: local_addr.to_string(), reason: e.to_string() })?;
        }
        tracing::info!(
            node = %served.node_id(), addr = %local_addr, cluster_id = %self.config.cluster_id,
            tls = self.config.is_tls(), "{what}"
        );
        let accepted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept_loop(self.listener, Arc::new(self.config), served, accepted.clone()));
        Ok(ServerHandle { task, local_addr, accepted })
    }
}

async fn accept_loop<C: RaftTypeConfig>(
    listener: TcpListener,
    config: Arc<TcpConfig>,
    served: Arc<dyn Served<C>>,
    accepted: Arc<AtomicU64>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let refusals = Arc::new(Refusals::new());
    let pending = Arc::new(Mutex::new(Pending::default()));
    let max_pending = config.max_pending_handshakes.max(1);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
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
        // Registered before the task can look: a task that finished its handshake at once must
        // find its entry to remove it, or the entry would stay and later be evicted while its
        // connection serves. The task waits for `registered`; it is spawned outside the lock,
        // because a runtime shutting down drops the task at once, and its `Admission`'s drop
        // takes the lock (found in review: spawned under it, that drop deadlocked).
        let seq = {
            let mut waiting = lock(&pending);
            waiting.next += 1;
            waiting.next - 1
        };
        let admission = Admission { pending: pending.clone(), seq, permits: permits.clone() };
        let (conn_config, served, conn_refusals, accepted) =
            (config.clone(), served.clone(), refusals.clone(), accepted.clone());
        let (registered, is_registered) = tokio::sync::oneshot::channel::<()>();
        let task = connections.spawn(async move {
            if is_registered.await.is_err() {
                return;
            }
            serve_connection(tcp, peer, &conn_config, served, &conn_refusals, &accepted, admission).await;
        });
        let mut waiting = lock(&pending);
        waiting.handshakes.insert(seq, Handshake { source: source_key(peer.ip()), stage: Stage::Silent, task });
        let evicted = if waiting.handshakes.len() > max_pending { waiting.evict() } else { None };
        drop(waiting);
        let _ = registered.send(());
        if let Some((evicted, ip)) = evicted {
            if let Some(suppressed) = refusals.handshake.allow() {
                tracing::warn!(
                    max = max_pending, %ip, held = evicted, suppressed,
                    "dropped a connection still doing its handshake (silent ones first, then the oldest of the source holding the most): too many at once"
                );
            }
        }
    }
}

/// The connections doing their handshake, oldest first.
#[derive(Default)]
struct Pending {
    next: u64,
    handshakes: BTreeMap<u64, Handshake>,
}

/// A connection doing its handshake.
struct Handshake {
    /// Where it came from ([`source_key`]).
    source: IpAddr,
    /// How far it got.
    stage: Stage,
    task: AbortHandle,
}

/// How far a handshake got: the server drops those that got least far first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// It has sent nothing (a member sends its TLS hello, or its preamble, at once).
    Silent,
    /// It has sent something.
    Spoke,
    /// Its TLS handshake is done (with mutual TLS: it holds a certificate of the cluster's
    /// CA) and its preamble read.
    Secured,
    /// Its hello is read.
    Hello,
}

/// The source a handshake is counted against: an IPv4 address, or an IPv6 address's /64 (one
/// host may hold all of a /64, so counting its addresses one by one would count nothing).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

impl Pending {
    /// Drop one handshake, and say from where and how many that source held. Those that got
    /// least far go first (a member speaks at once, and with mutual TLS only a member gets past
    /// TLS; a stranger that connects and sends nothing, or a byte, is the cheapest flood), and
    /// among those, the oldest of the source holding the most. Not simply the oldest: a member
    /// far away, whose handshake takes a few round trips, would be the oldest whenever
    /// strangers connect faster than `max_pending_handshakes` per round trip (found in review).
    fn evict(&mut self) -> Option<(usize, IpAddr)> {
        // Never the newest: it has had no time to speak, and would be the only silent one
        // whenever the older ones all sent a byte — a member arriving then was dropped at
        // once (found in review).
        let newest = self.handshakes.last_key_value().map(|(seq, _)| *seq)?;
        let older = || self.handshakes.iter().filter(move |(seq, _)| **seq != newest);
        let least = older().map(|(_, h)| h.stage).min()?;
        // Per source: how many it holds, and its oldest (handshakes are in age order).
        let mut held: HashMap<IpAddr, (usize, u64)> = HashMap::new();
        for (seq, h) in older().filter(|(_, h)| h.stage == least) {
            held.entry(h.source).or_insert((0, *seq)).0 += 1;
        }
        // The most held; among equals, the source whose oldest handshake is oldest.
        let (source, (most, seq)) = held.into_iter().max_by_key(|(_, (n, oldest))| (*n, std::cmp::Reverse(*oldest)))?;
        let evicted = self.handshakes.remove(&seq)?;
        evicted.task.abort();
        Some((most, source))
    }
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // Nothing panics while holding it; a poisoned map is still consistent.
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a connection leaves the handshake and takes a `max_connections` slot.
struct Admission {
    pending: Arc<Mutex<Pending>>,
    seq: u64,
    permits: Arc<Semaphore>,
}

impl Admission {
    /// The handshake got to `stage`.
    fn reached(&self, stage: Stage) {
        if let Some(h) = lock(&self.pending).handshakes.get_mut(&self.seq) {
            h.stage = h.stage.max(stage);
        }
    }

    /// The handshake is over: no longer one the accept loop may evict. Whether it was still
    /// pending, not evicted (an evicted one's task is being aborted).
    fn handshake_over(&self) -> bool {
        lock(&self.pending).handshakes.remove(&self.seq).is_some()
    }
}

/// A handshake that ends any other way (its task panicked, say) leaves no entry behind: one
/// left would hold a pending slot until evicted (found in review).
impl Drop for Admission {
    fn drop(&mut self) {
        lock(&self.pending).handshakes.remove(&self.seq);
    }
}

/// The largest frame a server reads before the peer's hello is accepted.
const HELLO_MAX_FRAME_BYTES: usize = 64 * 1024;

/// Shake hands, then serve the connection until it ends.
async fn serve_connection<C: RaftTypeConfig>(
    tcp: TcpStream,
    peer: SocketAddr,
    config: &TcpConfig,
    served: Arc<dyn Served<C>>,
    refusals: &Refusals,
    accepted: &AtomicU64,
    admission: Admission,
) {
    // A stranger's frames are bounded by what a hello needs until the hello is accepted: under
    // `max_frame_bytes` a peer that had not said who it is could make the node hold that much
    // per connection (found in review; plain TCP lets anyone try).
    let mut decoder = FrameDecoder::new(HELLO_MAX_FRAME_BYTES.min(config.max_frame_bytes));
    let me = served.node_id();
    let shaken = tokio::time::timeout(config.handshake_timeout, async {
        // Its first bytes mark it as one that speaks (see `Pending::evict`).
        let mut first = [0u8; 1];
        if matches!(tcp.peek(&mut first).await, Ok(n) if n > 0) {
            admission.reached(Stage::Spoke);
        }
        handshake::<C>(tcp, config, me, &mut decoder, &admission).await
    })
    .await;
    admission.handshake_over();
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
    let _slot = match tokio::time::timeout(config.handshake_timeout, admission.permits.clone().acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            if let Some(suppressed) = refusals.handshake.allow() {
                tracing::warn!(
                    %peer, node = %from, max = config.max_connections, suppressed,
                    "dropped a connection: every connection slot stayed taken"
                );
            }
            return;
        }
    };
    decoder.set_max_frame_bytes(config.max_frame_bytes);
    accepted.fetch_add(1, Ordering::Relaxed);
    tracing::info!(%peer, node = %from, "accepted a Raft connection");
    let reason = serve_calls(io, decoder, config, served, Peer { addr: peer, node: from }, refusals).await;
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
    me: C::NodeId,
    decoder: &mut FrameDecoder,
    admission: &Admission,
) -> Result<(Box<dyn Io>, C::NodeId), Refused> {
    let (mut io, peer_cert) = secure(tcp, config).await?;
    if let Err(e) = read_preamble(&mut io, decoder).await {
        if let ReadError::Frame(version @ FrameError::Version { .. }) = &e {
            // A node of another version (a rolling upgrade): tell it which versions met, in the
            // one answer every version decodes, so that its operator reads it too.
            let reason = format!("{version}: run one transport protocol version on every node");
            let _ = send_now(&mut io, &ToClient::<C>::Refused { reason }, config).await;
            drain(&mut io).await;
        }
        return Err(Refused(format!("preamble: {e}")));
    }
    admission.reached(Stage::Secured);
    let frame = read_frame(&mut io, decoder).await.map_err(|e| Refused(format!("hello: {e}")))?;
    admission.reached(Stage::Hello);
    let hello = match decode::<ToServer<C>>(&frame) {
        Ok(ToServer::Hello(hello)) => hello,
        Ok(_) => return Err(Refused("the first message is not a hello".into())),
        Err(e) => return Err(Refused(format!("hello: {e}"))),
    };
    match check_hello(&hello, config, me, peer_cert.as_ref()) {
        // Taken off the pending handshakes before the welcome: once welcomed, a connection is
        // never dropped as a pending handshake (found in review: one evicted between the two
        // was welcomed, then aborted).
        Ok(()) if !admission.handshake_over() => {
            // Evicted: its task is being aborted, so the reason may not leave; the caller's
            // error names this cause among those of a close at the hello.
            let reason =
                "dropped while shaking hands: too many handshakes at once (max_pending_handshakes)".to_string();
            let _ = send_now(&mut io, &ToClient::<C>::Refused { reason: reason.clone() }, config).await;
            Err(Refused(reason))
        }
        Ok(()) => {
            let welcome = ToClient::<C>::Welcome { cluster_id: config.cluster_id.clone(), node_id: me };
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

/// Close our side and read what the peer still sends, briefly: closing with unread bytes
/// makes the kernel reset the connection, and the peer could lose the answer just sent.
async fn drain(io: &mut Box<dyn Io>) {
    let _ = io.shutdown().await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that ends without `handshake_over` (a panic mid-handshake) leaves no pending entry.
    #[tokio::test]
    async fn a_handshake_that_ends_without_finishing_leaves_no_pending_entry() {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let task = tokio::spawn(async {}).abort_handle();
        let source = source_key(IpAddr::from([127, 0, 0, 1]));
        lock(&pending).handshakes.insert(7, Handshake { source, stage: Stage::Spoke, task });
        let admission = Admission { pending: pending.clone(), seq: 7, permits: Arc::new(Semaphore::new(1)) };
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _admission = admission;
            panic!("test: a bug mid-handshake");
        }));
        assert!(panicked.is_err());
        assert!(lock(&pending).handshakes.is_empty(), "the entry outlived its handshake");
    }
}
