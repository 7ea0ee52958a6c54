//! Running one node: bind its listeners, lock and open its storage, start Raft, serve RPCs and
//! HTTP until told to stop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quorate::error::RaftError;
use quorate::file_store::SharedLog;
use quorate::file_store::{DataDirLock, FileStoreOptions};
use quorate::metrics::export;
use quorate::multi::HostError;
use quorate::tcp::{ServerHandle, TcpConfig, TcpError, TcpNetworkFactory, TcpServer, TlsConfig, TlsConfigError};
use quorate::{Config, Fatal, InitializeError, SnapshotPolicy};
use tokio::net::TcpListener;

use crate::groups::{self, Groups};
use crate::http::{self, AdminAuth, AppState, HttpLimits, HttpTls};
use crate::service::KvService;
use crate::store::{LogStore, StateMachineStore, StoreError};
use crate::{KvNode, Raft, TypeConfig};
use crate::{host, telemetry};

/// The PEM files of a node's TLS identity on the Raft port: the cluster's CA, and this node's
/// certificate (which must name `node-<id>.<cluster-id>`) and key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The cluster's CA certificate(s).
    pub ca: PathBuf,
    /// This node's certificate chain.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// This node's id.
    pub id: u64,
    /// Where this node listens for Raft RPCs; also what it tells other nodes.
    pub raft_addr: String,
    /// Where this node serves its HTTP API; also what it tells other nodes.
    pub http_addr: String,
    /// Where to bind the Raft listener, if not `raft_addr` (e.g. `0.0.0.0:7001` behind NAT).
    pub raft_listen: Option<String>,
    /// Where to bind the HTTP listener, if not `http_addr`.
    pub http_listen: Option<String>,
    /// Where its log and snapshots live.
    pub data_dir: PathBuf,
    /// Other members of the initial cluster, for `bootstrap`.
    pub peers: BTreeMap<u64, KvNode>,
    /// Initialize a new cluster of this node and `peers` if this node has no state yet.
    pub bootstrap: bool,
    /// How many Raft groups the keys are partitioned over (see [`crate::groups`]); 1 runs
    /// one Raft exactly as raft-kv did before groups. Fixed for the life of a data directory.
    pub groups: u32,
    /// On a node of many groups, also publish quorate's series (`quorate_*`) of every group,
    /// labelled by `group`: some 26 series per group (see [`crate::telemetry`]). A node of one
    /// group always publishes them.
    pub metrics_per_group: bool,
    /// Raft tunables.
    pub config: Config,
    /// The cluster's id: nodes refuse peers of another cluster.
    pub cluster_id: String,
    /// Mutual TLS on the Raft port; plain TCP (for trusted networks only) if `None`.
    pub raft_tls: Option<TlsFiles>,
    /// HTTPS for clients; plain HTTP if `None`.
    pub http_tls: Option<HttpTls>,
    /// Who may call the admin routes.
    pub admin: AdminAuth,
    /// How long an HTTP request waits for Raft before answering 504.
    pub request_timeout: Duration,
    /// Timeouts and limits of the HTTP server.
    pub http_limits: HttpLimits,
}

/// Why a node could not start or stopped with an error. Each says what it was about: the
/// address, the file, the option.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// An option is not usable.
    #[error("invalid option: {0}")]
    Invalid(String),
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        /// `Raft RPCs` or `HTTP`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory is locked, or cannot be read back as written.
    #[error("data directory: {0}")]
    Store(#[from] StoreError),
    /// A TLS file or setting is not usable.
    #[error("TLS: {0}")]
    Tls(#[from] TlsConfigError),
    /// The Raft transport could not start.
    #[error("Raft transport: {0}")]
    Transport(#[from] TcpError),
    /// Raft failed to start or stopped on a fatal error.
    #[error("raft: {0}")]
    Raft(#[from] Fatal),
    /// A group of a node of many groups failed to start or stopped on a fatal error.
    #[error("group host: {0}")]
    Host(#[from] HostError),
    /// `--bootstrap` failed.
    #[error("cannot bootstrap the cluster: {0}")]
    Bootstrap(String),
}

/// The Raft config raft-kv runs with: timeouts with room for a busy two-core machine and real
/// fsyncs, a snapshot every 10,000 entries, AppendEntries of at most 4 MiB of entries (well
/// within the transport's 64 MiB frames, with values of at most 1 MiB).
pub fn default_config() -> Config {
    Config {
        cluster_name: "raft-kv".to_string(),
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
        max_payload_bytes: 4 * 1024 * 1024,
        ..Config::default()
    }
}

/// A boxed error for the binary's top level.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Parse a `host:port` address to bind: an IP address and a port, so that the node binds
/// exactly what it was given (a host name could resolve to several addresses).
///
/// # Errors
/// [`NodeError::Invalid`] naming `flag` and the value.
pub fn listen_addr(flag: &str, value: &str) -> Result<SocketAddr, NodeError> {
    let addr: SocketAddr = value.parse().map_err(|_| {
        NodeError::Invalid(format!("{flag} {value:?} is not IP:PORT (give --raft-listen/--http-listen to bind an IP)"))
    })?;
    if addr.port() == 0 {
        return Err(NodeError::Invalid(format!("{flag} {value:?}: port 0 is not a port other nodes can reach")));
    }
    Ok(addr)
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { what, addr, source })
}

/// The frames of the Raft transport must hold the largest message a node sends.
fn check_frame_room(config: &Config, tcp: &TcpConfig) -> Result<(), NodeError> {
    // One AppendEntries holds at most max_payload_bytes of entries, or one entry alone; an
    // entry holds at most one HTTP body plus its key.
    let largest = config.max_payload_bytes.max(2 * http::MAX_BODY_BYTES as u64).max(config.snapshot_max_chunk_size);
    if largest + 64 * 1024 > tcp.max_frame_bytes as u64 {
        return Err(NodeError::Invalid(format!(
            "max_payload_bytes / snapshot chunks of {largest} bytes do not fit the transport's {} byte frames",
            tcp.max_frame_bytes
        )));
    }
    Ok(())
}

/// The transport's settings: the cluster id, and mutual TLS if configured.
fn transport_config(opts: &NodeOptions) -> Result<TcpConfig, NodeError> {
    let tcp = TcpConfig::new(opts.cluster_id.clone());
    let Some(files) = &opts.raft_tls else {
        tracing::warn!(
            "the Raft port is plain TCP: anyone who can reach it can vote and append; use --tls-* off a trusted network"
        );
        return Ok(tcp);
    };
    let tls = TlsConfig::from_pem_files(&files.ca, &files.cert, &files.key)?;
    tls.check_identity(&opts.cluster_id, opts.id)?;
    Ok(tcp.with_tls(tls))
}

/// Run a node until SIGINT or SIGTERM, then shut Raft down.
///
/// Order: read the TLS files, bind both listeners (so a port in use fails at once, and peers
/// and clients that connect during recovery wait in the backlog instead of being refused),
/// lock the data directory, check that it was made with `opts.groups` groups (see
/// [`groups::check_layout`]), recover the storage, start Raft (one, or a group host of many
/// groups: see [`crate::host`]), then serve.
///
/// # Errors
/// [`NodeError`]: an option, a listener, the data directory, Raft.
pub async fn run(opts: NodeOptions) -> Result<(), NodeError> {
    // Before anything can answer: a SIGTERM sent as soon as the node answers must find the
    // handler, not the default action (exit at once, nothing flushed or shut down).
    let signals = OsSignals::register();
    let tcp = transport_config(&opts)?;
    check_frame_room(&opts.config, &tcp)?;
    let https = opts.http_tls.as_ref().map(http::TlsSetup::load).transpose()?;
    let raft_listen = listen_addr("--raft-listen", opts.raft_listen.as_ref().unwrap_or(&opts.raft_addr))?;
    let http_listen = listen_addr("--http-listen", opts.http_listen.as_ref().unwrap_or(&opts.http_addr))?;
    let raft_listener = bind("Raft RPCs", raft_listen).await?;
    let http_listener = bind("HTTP", http_listen).await?;

    // The recorder first: the log store's observer and the node's publisher register their
    // series with it.
    let prometheus = telemetry::install().map_err(|e| NodeError::Invalid(format!("cannot record metrics: {e}")))?;
    let _lock = DataDirLock::acquire(&opts.data_dir).map_err(StoreError::from)?;
    groups::check_layout(&opts.data_dir, opts.groups)?;
    groups::check_identity(&opts.data_dir, opts.id, &opts.cluster_id)?;
    let raft_server = TcpServer::from_listener(raft_listener, tcp.clone());
    let node = if opts.groups == 1 {
        start_single(&opts, tcp, raft_server).await?
    } else {
        host::start(&opts, tcp, raft_server).await?
    };
    tracing::info!(
        id = opts.id,
        groups = opts.groups,
        raft_addr = %opts.raft_addr,
        http_addr = %opts.http_addr,
        "node started"
    );

    if opts.bootstrap {
        match &node.rafts {
            Rafts::Single(raft) => bootstrap(raft, &opts).await?,
            Rafts::Host { .. } => host::bootstrap(&node.groups, &opts).await?,
        }
    }

    let state =
        AppState::new(node.groups.clone(), opts.admin.clone(), https.as_ref(), prometheus, opts.http_limits.max_relays);
    let app = http::app(state, &opts.http_limits);
    http::serve(http_listener, app, opts.http_limits, https, shutdown_signal(node.groups.clone(), signals)).await;
    tracing::info!("shutting down");
    node.shutdown().await
}

/// A node's Raft side once started: what the HTTP API serves, and what to stop.
pub(crate) struct Started {
    /// Every group's key-value service.
    pub(crate) groups: Groups,
    /// The Raft (or the group host) to shut down.
    pub(crate) rafts: Rafts,
    /// Serves the Raft port until dropped.
    pub(crate) _serving: ServerHandle,
}

/// What runs a node's groups.
pub(crate) enum Rafts {
    /// One group: raft-kv's layout before `--groups`.
    Single(Raft),
    /// Many groups on one host, their logs in one shared log.
    Host {
        /// The groups.
        host: host::KvHost,
        /// Their logs: dropped after the groups have stopped.
        log: SharedLog<TypeConfig>,
    },
}

impl Started {
    /// Stop the groups, and return the fatal error of one that had stopped on one: the process
    /// then exits non-zero, so that a supervisor sees the node is gone instead of an HTTP API
    /// answering 500 forever.
    async fn shutdown(self) -> Result<(), NodeError> {
        match self.rafts {
            Rafts::Single(raft) => raft.shutdown().await?,
            Rafts::Host { host, log } => {
                let stopped = host.shutdown().await;
                // The writer thread stops after what the groups queued is written.
                drop(log);
                stopped?;
            }
        }
        Ok(())
    }
}

/// One group, as raft-kv ran before `--groups`: a `FileLogStore` in `<data-dir>/log`, the
/// snapshot in `<data-dir>`, a single-Raft TCP server.
async fn start_single(opts: &NodeOptions, tcp: TcpConfig, raft_server: TcpServer) -> Result<Started, NodeError> {
    let log_options = FileStoreOptions::default().on_sync(export::file_store_observer(opts.id));
    let log_store = LogStore::open_with(&opts.data_dir.join("log"), log_options).map_err(StoreError::from)?;
    let state_machine = StateMachineStore::open(&opts.data_dir)?;
    let network = TcpNetworkFactory::new(opts.id, tcp);
    let raft = Raft::new(opts.id, Arc::new(opts.config.clone()), network, log_store, state_machine.clone()).await?;
    let service = KvService { raft: raft.clone(), state_machine, timeout: opts.request_timeout };
    // Ends by itself when Raft stops.
    tokio::spawn(export::publish(raft.metrics(), telemetry::PUBLISH_EVERY));
    let serving = raft_server.serve(raft.clone())?;
    Ok(Started { groups: Groups::new(vec![service]), rafts: Rafts::Single(raft), _serving: serving })
}

/// The members of the cluster `--bootstrap` initializes: this node and its `--peer`s.
pub(crate) fn initial_members(opts: &NodeOptions) -> BTreeMap<u64, KvNode> {
    let mut members = opts.peers.clone();
    members.insert(opts.id, KvNode { raft_addr: opts.raft_addr.clone(), http_addr: opts.http_addr.clone() });
    members
}

async fn bootstrap(raft: &Raft, opts: &NodeOptions) -> Result<(), NodeError> {
    match raft.initialize(initial_members(opts)).await {
        Ok(()) => tracing::info!("initialized a new cluster"),
        Err(RaftError::APIError(InitializeError::NotAllowed { .. })) => {
            tracing::info!("not bootstrapping: this node already has state");
        }
        Err(RaftError::APIError(e)) => return Err(NodeError::Bootstrap(e.to_string())),
        Err(RaftError::Fatal(f)) => return Err(NodeError::Raft(f)),
    }
    Ok(())
}

/// Resolves on SIGINT, SIGTERM, or when a group's Raft has stopped by itself (a fatal storage
/// error: with a shared log, every group's store fails with it).
async fn shutdown_signal(groups: Groups, signals: OsSignals) {
    let stops = groups.iter().map(|(shard, service)| {
        let raft = service.raft.clone();
        Box::pin(async move {
            raft.wait_stopped().await;
            shard
        })
    });
    let stops: Vec<_> = stops.collect();
    let raft_stopped = async move {
        let (shard, _, _) = futures_util::future::select_all(stops).await;
        tracing::error!(group = shard, "raft stopped; shutting the node down");
    };
    tokio::select! {
        _ = raft_stopped => {}
        _ = signals.recv() => {}
    }
}

/// SIGTERM and SIGINT, caught from the moment this is made (a tokio signal stream registers
/// its handler when created and keeps a signal that arrives before it is awaited).
struct OsSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl OsSignals {
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate())
                .inspect_err(|e| tracing::warn!(error = %e, "cannot catch SIGTERM"))
                .ok();
            let int =
                signal(SignalKind::interrupt()).inspect_err(|e| tracing::warn!(error = %e, "cannot catch SIGINT")).ok();
            Self { term, int }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves at the first signal (one that came before this was awaited included).
    async fn recv(self) {
        #[cfg(unix)]
        {
            let (mut term, mut int) = (self.term, self.int);
            tokio::select! {
                _ = next_signal(&mut term) => {}
                _ = next_signal(&mut int) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The next delivery of `signal`; never, if it could not be caught.
#[cfg(unix)]
async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
