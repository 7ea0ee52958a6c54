//! The HTTP API of a node, for clients and operators.
//!
//! | route | what |
//! |---|---|
//! | `PUT /kv/{key}` | set `key` to the request body |
//! | `GET /kv/{key}` | linearizable read (ReadIndex); `?stale=true` reads the local state machine |
//! | `DELETE /kv/{key}` | remove `key` |
//! | `POST /kv/{key}/cas` | `{"expected": string or null, "new": string or null}` compare-and-set |
//! | `POST /admin/init` | `{"<id>": {"raft_addr": .., "http_addr": ..}, ..}` initialize a new cluster |
//! | `POST /admin/add-learner` | `{"id": n, "raft_addr": .., "http_addr": .., "blocking": true}` |
//! | `POST /admin/change-membership` | `{"voters": [ids], "retain": false}` make exactly these the voters |
//! | `POST /admin/transfer-leader` | `{"to": id}` hand leadership to a voter |
//! | `GET /admin/metrics` | the node's Raft metrics: quorate's `RaftMetrics` serialized as JSON |
//! | `GET /admin/dump` | the whole local map and its last applied log id |
//! | `GET /metrics` | quorate's and raft-kv's metrics in Prometheus' text format (see [`crate::telemetry`]) |
//!
//! On a node of many groups (`--groups N`, see [`crate::groups`]) the key-value routes are the
//! same: each request goes to the group of its key, and to that group's leader. The
//! membership routes take `?group=<shard>` and change that group; `/admin/init` initializes
//! every group; `/admin/metrics` and `/admin/dump` summarize every group, or show one with
//! `?group=<shard>` (see `src/http/groups.rs`).
//!
//! Any node accepts any request: one that needs the leader and is not it relays the request to
//! the leader's HTTP API, one hop, and answers as the leader would have.
//!
//! The admin routes that change the cluster need authentication: see [`auth`]; the routes that
//! only report (`/admin/metrics`, `/metrics`) need none, so that a monitoring system can read
//! them without holding the token that changes the membership. With
//! `--http-tls-cert` the API is served over HTTPS only (see [`HttpTls`]).
//!
//! # What a status tells the client
//!
//! Every answer is JSON. For writes, the status says whether the write happened:
//!
//! | status | outcome |
//! |---|---|
//! | 200 | applied (for a compare-and-set: swapped) |
//! | 409 `cas_mismatch` | a compare-and-set applied and did not swap: nothing changed |
//! | 401 `unauthorized` | an admin route without the admin token or certificate: nothing happened |
//! | other 4xx | rejected before it was proposed: it did not happen |
//! | 410 `removed` | this node was removed from the cluster: it proposes nothing, ask a member |
//! | 503 | not proposed (no leader known, forwarding could not connect, overloaded) or discarded by a new leader: it did not happen |
//! | 504, 500 | proposed or possibly proposed, outcome unknown: it may still apply |
//!
//! The body of an error carries `"outcome": "not_applied"` or `"unknown"` saying the same.
//! (`GET /metrics` is the one answer that is not JSON: it is Prometheus' text format.)
//! Answers the HTTP layer gives by itself (a request it cannot parse, a body that never
//! arrives) are JSON too; see [`server`].

mod admin;
pub mod auth;
mod body_deadline;
mod error;
mod fast;
mod forward;
mod groups;
mod instrument;
mod kv;
mod linger;
mod per_ip;
pub mod server;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::util::MapRequestLayer;

pub use auth::{AdminAuth, AdminCertificate};
pub use error::ApiError;
pub use server::{HttpLimits, serve};
pub use tls::{HttpTls, TlsSetup};

use crate::groups::Groups;
use crate::service::KvService;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The longest key accepted, in bytes; a longer one is answered 414 `key_too_long`.
pub const MAX_KEY_BYTES: usize = 8 * 1024;

/// What every handler needs: a handle, cloned for every request (axum's `State` extractor and
/// each middleware take one), so one reference count and not one per field (the per-field
/// clones and drops were 2 % of a leader's CPU under write load).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The shared part of [`AppState`].
pub struct AppStateInner {
    /// This node's key-value operations (and its Raft), per group.
    pub groups: Groups,
    /// Relays requests to the leader's HTTP API.
    pub client: reqwest::Client,
    /// Relays under way, at most [`HttpLimits::max_relays`]: a relay is one connection to the
    /// leader from this node's address, and the leader caps the connections of an address.
    pub relays: Arc<tokio::sync::Semaphore>,
    /// `http` or `https`: what every node's API speaks.
    pub scheme: &'static str,
    /// Who may call the admin routes.
    pub admin: Arc<AdminAuth>,
    /// The process's metrics recorder, rendered by `GET /metrics`.
    pub prometheus: PrometheusHandle,
    /// `GET /admin/dump`s served at once: each copies the whole map (found in review: 16
    /// clients dumping a 51 MB map and never reading took 1.2 GB).
    pub dumps: Arc<tokio::sync::Semaphore>,
    /// The request-duration histograms, registered once each.
    pub(crate) timers: instrument::Timers,
}

/// How many `GET /admin/dump`s a node serves at once; more are answered 503 `busy`.
pub const CONCURRENT_DUMPS: usize = 2;

impl AppState {
    /// The answer for a request this node cannot serve because it was removed from the
    /// cluster: its latest membership (which takes effect when appended) no longer names it.
    /// A node that never had a membership (not yet initialized) is not "removed".
    ///
    /// Such a node stays up (its metrics and stale reads still answer), but never relays or
    /// proposes: it answers 410 `removed` with the members it last knew, instead of 503
    /// `not_leader` with a leader that may never talk to it again.
    ///
    /// With many groups, each group is asked on its own: a node may be removed from some.
    pub fn removed(&self, service: &KvService) -> Option<ApiError> {
        let metrics = service.raft.metrics();
        let m = metrics.borrow();
        let config = &m.membership_config;
        if config.log_id.is_none() || config.membership.get_node(&service.raft.id()).is_some() {
            return None;
        }
        let members: std::collections::BTreeMap<String, String> =
            config.membership.nodes().iter().map(|(id, n)| (id.to_string(), n.http_addr.clone())).collect();
        let message = format!("node {} was removed from the cluster; ask one of its members", service.raft.id());
        Some(
            ApiError::rejected(axum::http::StatusCode::GONE, "removed", message)
                .with(serde_json::json!({ "members": members })),
        )
    }

    /// The state of a node's HTTP API: relays go to the leader over HTTPS, trusting the CA of
    /// `https`, if it is set, at most `max_relays` at once; `GET /metrics` renders
    /// `prometheus`.
    pub fn new(
        groups: Groups,
        mut admin: AdminAuth,
        https: Option<&TlsSetup>,
        prometheus: PrometheusHandle,
        max_relays: usize,
    ) -> Self {
        let max_relays = max_relays.max(1);
        // No system proxy: a relay goes straight to the leader (a proxy's own error page would
        // reach the client as a status and a body that are not the API's; found in review).
        let mut client = reqwest::Client::builder()
            .timeout(ADMIN_TIMEOUT + Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(max_relays)
            .no_proxy();
        if let Some(tls) = https {
            client = client.use_rustls_tls().tls_built_in_root_certs(false);
            for cert in reqwest::Certificate::from_pem_bundle(&tls.ca_pem).unwrap_or_default() {
                client = client.add_root_certificate(cert);
            }
            admin.client_certificates = tls.client_certificates;
        }
        let client = client.build().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot build the relay's HTTP client; relays will fail");
            reqwest::Client::new()
        });
        let scheme = if https.is_some() { "https" } else { "http" };
        let dumps = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DUMPS));
        Self(Arc::new(AppStateInner {
            timers: instrument::Timers::new(groups.node_id()),
            groups,
            client,
            relays: Arc::new(tokio::sync::Semaphore::new(max_relays)),
            scheme,
            admin: Arc::new(admin),
            prometheus,
            dumps,
        }))
    }
}

/// Membership changes wait for a commit (and `add-learner` for the learner to catch up): allow
/// them more than a client operation.
pub(crate) const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A node's HTTP API, as [`serve`] serves it: the router, and what the puts it does not route
/// need (see `src/http/fast.rs`).
pub struct App {
    router: Router,
    state: AppState,
    body_timeout: Duration,
}

/// The HTTP API of a node of `state`, with `limits`' body timeout.
pub fn app(state: AppState, limits: &HttpLimits) -> App {
    App { router: router(state.clone(), limits), state, body_timeout: limits.body_timeout }
}

/// The router of a node's HTTP API. A request body that has not arrived whole
/// `limits.body_timeout` after its head is answered 408 `body_timeout` (see
/// `src/http/body_deadline.rs`). Every request is timed into
/// `raft_kv_http_request_duration_seconds` (see [`crate::telemetry`]).
pub fn router(state: AppState, limits: &HttpLimits) -> Router {
    let body_timeout = limits.body_timeout;
    let admin = Router::new()
        .route("/admin/init", post(admin::init))
        .route("/admin/add-learner", post(admin::add_learner))
        .route("/admin/change-membership", post(admin::change_membership))
        .route("/admin/transfer-leader", post(admin::transfer_leader))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_admin));
    Router::new()
        .route("/kv/{key}", put(kv::put).get(kv::get).delete(kv::delete))
        .route("/kv/{key}/cas", post(kv::cas))
        .route("/kv/", any(kv::empty_key))
        .route("/kv//cas", any(kv::empty_key))
        .merge(admin)
        .route("/admin/metrics", get(admin::metrics))
        .route("/admin/dump", get(admin::dump))
        .route("/metrics", get(instrument::metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), instrument::observe))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(MapRequestLayer::new(move |req| body_deadline::start(req, body_timeout)))
        .with_state(state)
}
