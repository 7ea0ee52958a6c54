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
//! | `GET /admin/metrics` | the node's Raft metrics |
//! | `GET /admin/dump` | the whole local map and its last applied log id |
//!
//! Any node accepts any request: one that needs the leader and is not it forwards the request
//! to the leader's HTTP address (one hop) and relays the answer.
//!
//! # What a status tells the client
//!
//! Every answer is JSON. For writes, the status says whether the write happened:
//!
//! | status | outcome |
//! |---|---|
//! | 200 | applied (for a compare-and-set: swapped) |
//! | 409 `cas_mismatch` | a compare-and-set applied and did not swap: nothing changed |
//! | other 4xx | rejected before it was proposed: it did not happen |
//! | 503 | not proposed (no leader known, forwarding could not connect) or discarded by a new leader: it did not happen |
//! | 504, 500 | proposed or possibly proposed, outcome unknown: it may still apply |
//!
//! The body of an error carries `"outcome": "not_applied"` or `"unknown"` saying the same.

mod admin;
mod error;
mod forward;
mod kv;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};

pub use error::ApiError;

use crate::Raft;
use crate::store::StateMachineStore;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    /// This node.
    pub raft: Raft,
    /// This node's state machine, for reads.
    pub state_machine: StateMachineStore,
    /// For forwarding to the leader.
    pub client: reqwest::Client,
    /// How long a write or a read waits for Raft before answering 504.
    pub request_timeout: Duration,
}

impl AppState {
    /// The state of a node's HTTP API.
    pub fn new(raft: Raft, state_machine: StateMachineStore, request_timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(request_timeout + Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_default();
        Self { raft, state_machine, client, request_timeout }
    }
}

/// The router of a node's HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/kv/{key}", put(kv::put).get(kv::get).delete(kv::delete))
        .route("/kv/{key}/cas", post(kv::cas))
        .route("/admin/init", post(admin::init))
        .route("/admin/add-learner", post(admin::add_learner))
        .route("/admin/change-membership", post(admin::change_membership))
        .route("/admin/transfer-leader", post(admin::transfer_leader))
        .route("/admin/metrics", get(admin::metrics))
        .route("/admin/dump", get(admin::dump))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
