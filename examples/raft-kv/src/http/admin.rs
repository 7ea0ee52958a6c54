//! The admin routes: cluster setup, membership, leadership, metrics.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use quorate::error::RaftError;
use quorate::{ChangeMembers, ClientWriteError, InitializeError, TransferLeaderError};
use serde::Deserialize;
use serde_json::json;

use super::forward::{self, Incoming};
use super::kv::membership_error;
use super::{ADMIN_TIMEOUT, ApiError, AppState};
use crate::KvNode;

fn read_json<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<(T, Bytes), ApiError> {
    let body = forward::body_bytes(body)?;
    let parsed = forward::parse_json(&body)?;
    Ok((parsed, body))
}

fn admin_timeout() -> ApiError {
    ApiError::unknown(StatusCode::GATEWAY_TIMEOUT, "timeout", "the change did not complete in time; it may still")
}

/// `POST /admin/init`: `{"1": {"raft_addr": .., "http_addr": ..}, ...}`.
pub(crate) async fn init(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let members: BTreeMap<u64, KvNode> = match read_json(body) {
        Ok((m, _)) => m,
        Err(e) => return e.into_response(),
    };
    if members.is_empty() {
        return ApiError::bad_request("the membership must name at least one node").into_response();
    }
    match state.service.raft.initialize(members).await {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(RaftError::APIError(e @ InitializeError::NotAllowed { .. })) => {
            ApiError::rejected(StatusCode::CONFLICT, "already_initialized", e).into_response()
        }
        Err(RaftError::APIError(e)) => ApiError::bad_request(e).into_response(),
        Err(RaftError::Fatal(f)) => {
            ApiError::unknown(StatusCode::INTERNAL_SERVER_ERROR, "node_stopped", f).into_response()
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddLearner {
    id: u64,
    raft_addr: String,
    http_addr: String,
    #[serde(default = "yes")]
    blocking: bool,
}

fn yes() -> bool {
    true
}

/// `POST /admin/add-learner`: `{"id": 4, "raft_addr": .., "http_addr": .., "blocking": true}`.
pub(crate) async fn add_learner(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (req, body): (AddLearner, _) = match read_json(body) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let node = KvNode { raft_addr: req.raft_addr, http_addr: req.http_addr };
    let change = state.service.raft.add_learner(req.id, node, req.blocking);
    membership_answer(&state, change, Incoming::new(method, &uri, &headers, body)).await
}

/// Wait for a membership change (bounded) and answer it: the new membership, a relay to the
/// leader if this node is not it, or the error's status.
async fn membership_answer(
    state: &AppState,
    change: impl std::future::Future<
        Output = Result<
            quorate::ChangeMembershipResponse<crate::TypeConfig>,
            RaftError<ClientWriteError<crate::TypeConfig>>,
        >,
    >,
    incoming: Incoming,
) -> Response {
    if let Some(e) = state.removed() {
        return e.into_response();
    }
    match tokio::time::timeout(ADMIN_TIMEOUT, change).await {
        Err(_) => admin_timeout().into_response(),
        Ok(Ok(resp)) => {
            Json(json!({ "ok": true, "membership": resp.membership, "log_id": resp.log_id })).into_response()
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            forward::to_leader(state, &incoming, &f).await
        }
        Ok(Err(e)) => membership_error(e).into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeMembership {
    voters: BTreeSet<u64>,
    #[serde(default)]
    retain: bool,
}

/// `POST /admin/change-membership`: `{"voters": [1, 2, 3], "retain": false}` makes exactly these
/// members the voters; each must already be a member (add it as a learner first).
pub(crate) async fn change_membership(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (req, body): (ChangeMembership, _) = match read_json(body) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let change = state.service.raft.change_membership(ChangeMembers::ReplaceAllVoters(req.voters), req.retain);
    membership_answer(&state, change, Incoming::new(method, &uri, &headers, body)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferLeader {
    to: u64,
}

/// `POST /admin/transfer-leader`: `{"to": 2}`.
pub(crate) async fn transfer_leader(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (req, body): (TransferLeader, _) = match read_json(body) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let trigger = state.service.raft.trigger();
    match tokio::time::timeout(ADMIN_TIMEOUT, trigger.transfer_leader(req.to)).await {
        Err(_) => admin_timeout().into_response(),
        Ok(Ok(())) => Json(json!({ "ok": true, "to": req.to })).into_response(),
        Ok(Err(RaftError::APIError(TransferLeaderError::ForwardToLeader(f)))) => {
            forward::to_leader(&state, &Incoming::new(method, &uri, &headers, body), &f).await
        }
        Ok(Err(RaftError::APIError(e @ TransferLeaderError::NotAVoter(_)))) => ApiError::bad_request(e).into_response(),
        // Nothing was started: a 4xx, as for every request that certainly did not happen.
        Ok(Err(RaftError::APIError(e @ TransferLeaderError::InProgress(_)))) => {
            ApiError::rejected(StatusCode::CONFLICT, "transfer_in_progress", e).into_response()
        }
        Ok(Err(RaftError::APIError(e @ TransferLeaderError::Timeout(_)))) => {
            ApiError::unknown(StatusCode::GATEWAY_TIMEOUT, "timeout", e).into_response()
        }
        Ok(Err(RaftError::Fatal(f))) => {
            ApiError::unknown(StatusCode::INTERNAL_SERVER_ERROR, "node_stopped", f).into_response()
        }
    }
}

/// `GET /admin/metrics`: quorate's `RaftMetrics` as they serialize (instants as ages in ms,
/// `*_for_ms`), nothing added: the leader's HTTP address is
/// `membership_config.membership.nodes[current_leader].http_addr`.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let m = state.service.raft.metrics().borrow().clone();
    Json(m).into_response()
}

/// `GET /admin/dump`: the local map, for comparing state machines.
pub(crate) async fn dump(State(state): State<AppState>) -> Response {
    let (data, last_applied) = state.service.state_machine.dump();
    Json(json!({ "ok": true, "applied_index": last_applied.map(|l| l.index), "data": data })).into_response()
}
