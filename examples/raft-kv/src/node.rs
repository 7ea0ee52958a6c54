//! Running one node: open its storage, start Raft, serve RPCs and HTTP until told to stop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quorate::error::RaftError;
use quorate::{Config, InitializeError, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;

use crate::http::{self, AppState};
use crate::network::{self, NetworkFactory};
use crate::service::KvService;
use crate::store::{LogStore, StateMachineStore};
use crate::{KvNode, Raft};

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
    /// Raft tunables.
    pub config: Config,
    /// How long an HTTP request waits for Raft before answering 504.
    pub request_timeout: Duration,
}

/// The Raft config raft-kv runs with: timeouts with room for a busy two-core machine and real
/// fsyncs, a snapshot every 10,000 entries.
pub fn default_config() -> Config {
    Config {
        cluster_name: "raft-kv".to_string(),
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
        ..Config::default()
    }
}

/// A boxed error for the binary's top level.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Run a node until SIGINT or SIGTERM, then shut Raft down.
///
/// # Errors
/// If the storage cannot be opened, a listener cannot be bound, or Raft fails to start.
pub async fn run(opts: NodeOptions) -> Result<(), BoxError> {
    let log_store = LogStore::open(&opts.data_dir.join("log"))?;
    let state_machine = StateMachineStore::open(&opts.data_dir)?;
    let raft =
        Raft::new(opts.id, Arc::new(opts.config.clone()), NetworkFactory, log_store, state_machine.clone()).await?;
    let service = KvService { raft: raft.clone(), state_machine, timeout: opts.request_timeout };

    let raft_listener = TcpListener::bind(opts.raft_listen.as_ref().unwrap_or(&opts.raft_addr)).await?;
    tokio::spawn(network::serve(raft_listener, service.clone()));
    let http_listener = TcpListener::bind(opts.http_listen.as_ref().unwrap_or(&opts.http_addr)).await?;
    tracing::info!(id = opts.id, raft_addr = %opts.raft_addr, http_addr = %opts.http_addr, "node started");

    if opts.bootstrap {
        bootstrap(&raft, &opts).await?;
    }

    let app = http::router(AppState::new(service));
    axum::serve(http_listener, app).with_graceful_shutdown(shutdown_signal(raft.clone())).await?;
    tracing::info!("shutting down");
    // The fatal error, if Raft stopped on one: the process then exits non-zero, so that a
    // supervisor sees the node is gone instead of an HTTP API answering 500 forever.
    raft.shutdown().await?;
    Ok(())
}

async fn bootstrap(raft: &Raft, opts: &NodeOptions) -> Result<(), BoxError> {
    let mut members = opts.peers.clone();
    members.insert(opts.id, KvNode { raft_addr: opts.raft_addr.clone(), http_addr: opts.http_addr.clone() });
    match raft.initialize(members).await {
        Ok(()) => tracing::info!("initialized a new cluster"),
        Err(RaftError::APIError(InitializeError::NotAllowed { .. })) => {
            tracing::info!("not bootstrapping: this node already has state");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Resolves on SIGINT, SIGTERM, or when Raft has stopped by itself (a fatal storage error).
async fn shutdown_signal(raft: Raft) {
    let mut metrics = raft.metrics();
    let raft_stopped = async move {
        let _ = metrics.wait_for(|m| m.state == ServerState::Shutdown).await;
        tracing::error!("raft stopped; shutting the node down");
    };
    tokio::select! {
        _ = raft_stopped => {}
        _ = os_signal() => {}
    }
}

async fn os_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
