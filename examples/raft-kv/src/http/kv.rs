//! The key-value routes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use quorate::error::RaftError;
use quorate::{ClientWriteError, ForwardToLeader, LinearizableReadError, ReadPolicy};
use serde::Deserialize;
use serde_json::json;

use super::forward::{self, Incoming};
use super::{ApiError, AppState};
use crate::{Request, TypeConfig};

/// The parts of a request every key route takes.
type KeyPath = Result<Path<String>, PathRejection>;

fn key_of(path: KeyPath) -> Result<String, ApiError> {
    path.map(|Path(k)| k).map_err(|e| ApiError::bad_request(e.body_text()))
}

/// `PUT /kv/{key}`: the body, as UTF-8, becomes the value.
pub(crate) async fn put(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    path: KeyPath,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = (|| {
        let key = key_of(path)?;
        let body = forward::body_bytes(body)?;
        let value = String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("the value must be UTF-8"))?;
        Ok::<_, ApiError>((Request::Set { key, value }, body))
    })();
    match prepared {
        Ok((req, body)) => propose(&state, req, Incoming::new(method, &uri, &headers, body)).await,
        Err(e) => e.into_response(),
    }
}

/// `DELETE /kv/{key}`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    path: KeyPath,
) -> Response {
    match key_of(path) {
        Ok(key) => propose(&state, Request::Delete { key }, Incoming::new(method, &uri, &headers, Bytes::new())).await,
        Err(e) => e.into_response(),
    }
}

/// The body of `POST /kv/{key}/cas`. A missing field means `null`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    expected: Option<String>,
    new: Option<String>,
}

/// `POST /kv/{key}/cas`.
pub(crate) async fn cas(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    path: KeyPath,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = (|| {
        let key = key_of(path)?;
        let body = forward::body_bytes(body)?;
        let CasBody { expected, new } = forward::parse_json(&body)?;
        Ok::<_, ApiError>((Request::CompareAndSet { key, expected, new }, body))
    })();
    match prepared {
        Ok((req, body)) => propose(&state, req, Incoming::new(method, &uri, &headers, body)).await,
        Err(e) => e.into_response(),
    }
}

/// Propose a write and answer with its outcome; forward it if this node is not the leader.
async fn propose(state: &AppState, req: Request, incoming: Incoming) -> Response {
    let result = tokio::time::timeout(state.request_timeout, state.raft.client_write(req)).await;
    let result = match result {
        Ok(r) => r,
        Err(_) => {
            return ApiError::unknown(StatusCode::GATEWAY_TIMEOUT, "timeout", "the write was not committed in time")
                .into_response();
        }
    };
    match result {
        Ok(resp) if resp.data.ok => {
            Json(json!({ "ok": true, "prev": resp.data.prev, "index": resp.log_id.index })).into_response()
        }
        Ok(resp) => {
            ApiError::rejected(StatusCode::CONFLICT, "cas_mismatch", "the key does not hold the expected value")
                .with(json!({ "current": resp.data.prev, "index": resp.log_id.index }))
                .into_response()
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            forward::to_leader(state, &incoming, &f).await
        }
        Err(e) => write_error(e).into_response(),
    }
}

/// The answer for a failed write that was not forwarded.
pub(crate) fn write_error(e: RaftError<ClientWriteError<TypeConfig>>) -> ApiError {
    match e {
        RaftError::APIError(ClientWriteError::Discarded { log_id }) => ApiError::rejected(
            StatusCode::SERVICE_UNAVAILABLE,
            "discarded",
            format!("the entry {log_id} was overwritten by a new leader; retry"),
        ),
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            ApiError::rejected(StatusCode::SERVICE_UNAVAILABLE, "not_leader", "this node is not the leader; retry")
        }
        RaftError::APIError(ClientWriteError::InvalidMembership(e)) => ApiError::bad_request(e),
        RaftError::APIError(e @ ClientWriteError::MembershipChangeInProgress { .. }) => {
            ApiError::rejected(StatusCode::CONFLICT, "membership_change_in_progress", e)
        }
        RaftError::Fatal(f) => ApiError::unknown(StatusCode::INTERNAL_SERVER_ERROR, "node_stopped", f),
    }
}

/// The query of `GET /kv/{key}`.
#[derive(Deserialize)]
pub(crate) struct ReadParams {
    #[serde(default)]
    stale: bool,
}

/// `GET /kv/{key}`: linearizable unless `?stale=true`.
pub(crate) async fn get(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    path: KeyPath,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Response {
    let key = match key_of(path) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let stale = match params {
        Ok(Query(p)) => p.stale,
        Err(e) => return ApiError::bad_request(e.body_text()).into_response(),
    };
    if !stale {
        match linearizable_barrier(&state).await {
            Ok(()) => {}
            Err(ReadBarrierError::NotLeader(f)) => {
                return forward::to_leader(&state, &Incoming::new(method, &uri, &headers, Bytes::new()), &f).await;
            }
            Err(ReadBarrierError::Failed(e)) => return e.into_response(),
        }
    }
    let value = state.state_machine.get(&key);
    Json(json!({ "ok": true, "key": key, "found": value.is_some(), "value": value })).into_response()
}

/// Why a linearizable read could not be served here.
enum ReadBarrierError {
    /// Not the leader: serve it at the leader.
    NotLeader(ForwardToLeader<TypeConfig>),
    /// Anything else.
    Failed(ApiError),
}

/// Wait until reading this node's state machine is linearizable: quorate's ReadIndex confirms
/// with a quorum that this node still leads, then waits for everything committed before the
/// read to be applied here. This is the one place that decides how reads are made
/// linearizable.
async fn linearizable_barrier(state: &AppState) -> Result<(), ReadBarrierError> {
    let barrier = state.raft.ensure_linearizable(ReadPolicy::ReadIndex);
    match tokio::time::timeout(state.request_timeout, barrier).await {
        Ok(Ok(_read_log_id)) => Ok(()),
        Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => Err(ReadBarrierError::NotLeader(f)),
        Ok(Err(RaftError::Fatal(f))) => {
            Err(ReadBarrierError::Failed(ApiError::unknown(StatusCode::INTERNAL_SERVER_ERROR, "node_stopped", f)))
        }
        Err(_) => Err(ReadBarrierError::Failed(ApiError::unknown(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            "leadership could not be confirmed in time",
        ))),
    }
}
