//! A node of many groups (`raft-kv node --groups N`, N > 1): one [`GroupHost`] runs the N
//! groups, one [`SharedLog`] holds all of their logs, and one [`TcpHostNetwork`] (served by
//! [`TcpServer::serve_host`] on the Raft port) carries all of their messages.
//!
//! What the groups share, per node: the Raft port and one connection per peer node (every
//! group's calls, replication streams and the host's liveness beats), the log's writer thread,
//! segment files and `fdatasync`s (appends of many groups in one batch share one sync), the
//! data directory's lock, the HTTP API. What each group has of its own: its Raft (membership,
//! leader, term, log positions, snapshot schedule) and its state machine, in
//! `<data-dir>/group-<shard>/`. Idle groups quiesce: they send no heartbeats while the host's
//! beats say their leader's node is alive.

use std::collections::BTreeMap;
use std::sync::Arc;

use quorate::error::RaftError;
use quorate::file_store::{FileStoreOptions, SharedLog};
use quorate::metrics::export;
use quorate::multi::{GroupHost, HostConfig};
use quorate::tcp::{TcpConfig, TcpHostNetwork, TcpServer};
use quorate::{Config, InitializeError};

use crate::groups::{self, Groups};
use crate::node::{NodeError, NodeOptions, Rafts, Started, initial_members};
use crate::service::KvService;
use crate::store::{StateMachineStore, StoreError};
use crate::{KvNode, TypeConfig, telemetry};

/// The group host of a raft-kv node.
pub type KvHost = GroupHost<TypeConfig, TcpHostNetwork<TypeConfig>>;

/// The host's liveness settings for groups that run `config`: quorate's defaults (a beat every
/// 50 ms, a peer suspected after 100 ms of silence) unless the election timeout is too short
/// for them: a peer must be suspected, and its groups woken, before their elections are due.
pub fn host_config(config: &Config) -> HostConfig {
    let defaults = HostConfig::default();
    let suspect_after = defaults.suspect_after.min(config.election_timeout_min / 2);
    let beat_interval = defaults.beat_interval.min(suspect_after / 2);
    HostConfig { beat_interval, suspect_after, ..defaults }
}

/// Open the shared log, start the host and its `opts.groups` groups (shard `s`: group id
/// [`groups::group_id`], state machine in [`groups::shard_dir`]), and serve the Raft port.
///
/// # Errors
/// The shared log cannot be opened or recovered, a snapshot file does not decode, or a group
/// does not start.
pub(crate) async fn start(opts: &NodeOptions, tcp: TcpConfig, raft_server: TcpServer) -> Result<Started, NodeError> {
    let count = opts.groups;
    let log_options = FileStoreOptions::default().on_sync(export::file_store_observer(opts.id));
    let log = SharedLog::open_with(&groups::shared_log_dir(&opts.data_dir), log_options).map_err(StoreError::from)?;
    let host = GroupHost::new(opts.id, host_config(&opts.config), TcpHostNetwork::new(opts.id, tcp))?;
    let config = Arc::new(opts.config.clone());
    let mut services = Vec::with_capacity(count as usize);
    for shard in 0..count {
        let group = groups::group_id(shard, count);
        let state_machine = StateMachineStore::open(&groups::shard_dir(&opts.data_dir, shard))?;
        let log_store = log.group(group).map_err(StoreError::from)?;
        let raft = host.create_group(group, config.clone(), log_store, state_machine.clone()).await?;
        if opts.metrics_per_group {
            tokio::spawn(export::publish_group(raft.metrics(), telemetry::PUBLISH_EVERY, group));
        }
        services.push(KvService { raft, state_machine, timeout: opts.request_timeout });
    }
    let groups = Groups::new(services);
    // Counts over the groups always; each group's own series only if asked (`--metrics-per-group`),
    // since they cost some 26 series per group (see `telemetry`).
    tokio::spawn(telemetry::publish_groups(groups.clone(), telemetry::PUBLISH_EVERY));
    let serving = raft_server.serve_host(host.clone())?;
    Ok(Started { groups, rafts: Rafts::Host { host, log }, _serving: serving })
}

/// `--bootstrap` on a node of many groups: initialize this node's share of the groups now, and
/// the others later if nobody did.
///
/// Shard `s` belongs to the `s mod n`-th of the `n` initial members in id order. The node that
/// initializes a group campaigns for it at once, so each member most likely leads its own
/// share: the leaders start spread over the nodes instead of all on one. A member that never
/// starts would leave its share uninitialized forever, so after two maximum election timeouts
/// this node also initializes every group of which it still knows no membership: a group
/// initialized on several nodes with the same members is one group (see
/// `quorate::Raft::initialize`).
///
/// # Errors
/// The members are not a valid membership, or a group's Raft stopped.
pub(crate) async fn bootstrap(groups: &Groups, opts: &NodeOptions) -> Result<(), NodeError> {
    let members = initial_members(opts);
    let n = members.len();
    let mine = members.keys().position(|id| *id == opts.id).unwrap_or(0);
    let mut initialized = 0u32;
    for (_, service) in groups.iter().filter(|(shard, _)| *shard as usize % n == mine) {
        initialized += u32::from(initialize(service, &members).await?);
    }
    tracing::info!(initialized, "initialized this node's share of the groups");
    let (groups, delay) = (groups.clone(), 2 * opts.config.election_timeout_max);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut orphans = 0u32;
        for (shard, service) in groups.iter().filter(|(shard, _)| *shard as usize % n != mine) {
            if service.raft.metrics().borrow().membership_config.log_id.is_some() {
                continue;
            }
            match initialize(service, &members).await {
                Ok(done) => orphans += u32::from(done),
                Err(e) => tracing::warn!(group = shard, error = %e, "cannot initialize a group"),
            }
        }
        if orphans > 0 {
            tracing::warn!(groups = orphans, "initialized groups whose first member had not");
        }
    });
    Ok(())
}

/// Initialize one group; `false` if it already had state.
async fn initialize(service: &KvService, members: &BTreeMap<u64, KvNode>) -> Result<bool, NodeError> {
    match service.raft.initialize(members.clone()).await {
        Ok(()) => Ok(true),
        Err(RaftError::APIError(InitializeError::NotAllowed { .. })) => Ok(false),
        Err(RaftError::APIError(e)) => Err(NodeError::Bootstrap(e.to_string())),
        Err(RaftError::Fatal(f)) => Err(NodeError::Raft(f)),
    }
}
