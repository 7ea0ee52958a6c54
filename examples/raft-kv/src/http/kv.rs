//! The key-value routes.
//!
//! A node that believes it leads executes the operation itself; any other relays the HTTP
//! request to the leader ([`forward::to_leader`]) and answers with the leader's answer. The
//! status is chosen by [`write_response`] / [`read_response`], so an answer means the same
//! whichever node gave it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quorate::error::RaftError;
use quorate::{ClientWriteError, ForwardToLeader};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::forward::{self, Incoming, RelayHead};
use super::{ApiError, AppState};
use crate::service::{KvService, Outcome, ReadOutcome, WriteOutcome};
use crate::{Request, TypeConfig};

type KeyPath = Result<Path<String>, PathRejection>;

/// The key of a request's path, percent-decoded, or the 4xx answer for a key no node accepts.
///
/// `.` and `..` (however encoded: `%2e`, `.%2E`, ...) are refused: a relay's URL parser
/// (WHATWG, which reqwest's `url` follows) resolves such a path segment, so the relayed
/// request would name another path than the key, and the key would work at the leader and not
/// through a follower. Every other key reaches the leader as it came (see `forward::relayable`).
fn key_of(path: KeyPath) -> Result<String, ApiError> {
    let key = path.map(|Path(k)| k).map_err(|e| ApiError::bad_request(e.body_text()))?;
    if key.is_empty() || key == "." || key == ".." {
        return Err(bad_key(&key));
    }
    if key.len() > super::MAX_KEY_BYTES {
        let message = format!("a key of {} bytes; at most {} are accepted", key.len(), super::MAX_KEY_BYTES);
        return Err(ApiError::rejected(StatusCode::URI_TOO_LONG, "key_too_long", message));
    }
    Ok(key)
}

/// 400 `bad_key`: a key that is empty, `.` or `..`.
fn bad_key(key: &str) -> ApiError {
    let message = format!("the key {key:?} is not accepted: keys must not be empty, \".\" or \"..\"");
    ApiError::rejected(StatusCode::BAD_REQUEST, "bad_key", message)
}

/// `/kv/` and `/kv//cas`, any method: a request for the empty key.
pub(crate) async fn empty_key() -> ApiError {
    bad_key("")
}

/// `PUT /kv/{key}`: the body, as UTF-8, becomes the value. (Most puts do not come here but
/// to `super::fast`, which answers them as this does.)
pub(crate) async fn put(
    State(state): State<AppState>,
    head: RelayHead,
    path: KeyPath,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = (|| {
        let key = key_of(path)?;
        let body = forward::body_bytes(body)?;
        Ok::<_, ApiError>((set(key, &body)?, body))
    })();
    match prepared {
        Ok((req, body)) => write(&state, req, head.with_body(body)).await,
        Err(e) => e.into_response(),
    }
}

/// The write a `PUT /kv/{key}` of `body` asks for: 400 if the value is not UTF-8.
pub(crate) fn set(key: String, body: &Bytes) -> Result<Request, ApiError> {
    let value = String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("the value must be UTF-8"))?;
    Ok(Request::Set { key, value })
}

/// `DELETE /kv/{key}`.
pub(crate) async fn delete(State(state): State<AppState>, head: RelayHead, path: KeyPath) -> Response {
    match key_of(path) {
        Ok(key) => write(&state, Request::Delete { key }, head.with_body(Bytes::new())).await,
        Err(e) => e.into_response(),
    }
}

/// The body of `POST /kv/{key}/cas`. Both fields are required; `null` means "absent" (for
/// `expected`) or "remove the key" (for `new`). A body without them (`{}`) is a 400, never
/// proposed: a forgotten field must not turn into a compare-and-set of absent to absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CasBody {
    #[serde(default, deserialize_with = "present")]
    expected: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    new: Option<Option<String>>,
}

/// A field that is present, `null` included (`Some(None)`); serde's default for a missing one
/// is `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `POST /kv/{key}/cas`.
pub(crate) async fn cas(
    State(state): State<AppState>,
    head: RelayHead,
    path: KeyPath,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = (|| {
        let key = key_of(path)?;
        let body = forward::body_bytes(body)?;
        let CasBody { expected, new } = forward::parse_json(&body)?;
        let (Some(expected), Some(new)) = (expected, new) else {
            return Err(ApiError::bad_request(
                "a compare-and-set needs both \"expected\" and \"new\" (null for absent / remove)",
            ));
        };
        Ok::<_, ApiError>((Request::CompareAndSet { key, expected, new }, body))
    })();
    match prepared {
        Ok((req, body)) => write(&state, req, head.with_body(body)).await,
        Err(e) => e.into_response(),
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
    head: RelayHead,
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
    let (_, service) = state.groups.of_key(&key);
    if stale {
        let value = service.state_machine.get(&key);
        return read_response(&key, Outcome::Done(value));
    }
    if let Some(e) = state.removed(service) {
        return e.into_response();
    }
    if service.believes_leader() {
        return read_response(&key, service.read(&key).await);
    }
    relay(&state, service, head.with_body(Bytes::new())).await
}

/// Execute a write here if this node leads the key's group, or relay it to that group's
/// leader; answer its outcome.
pub(crate) async fn write(state: &AppState, req: Request, incoming: Incoming) -> Response {
    let (_, service) = state.groups.of_key(req.key());
    if let Some(e) = state.removed(service) {
        return e.into_response();
    }
    if service.believes_leader() {
        return write_response(service.write(req).await);
    }
    relay(state, service, incoming).await
}

/// Relay a request to the leader of `service`'s group this node knows of, and answer with the
/// leader's answer.
async fn relay(state: &AppState, service: &KvService, incoming: Incoming) -> Response {
    let leader = ForwardToLeader { leader_id: service.known_leader(), leader_node: None };
    forward::to_leader(state, service, &incoming, &leader).await
}

fn no_leader() -> ApiError {
    ApiError::rejected(StatusCode::SERVICE_UNAVAILABLE, "no_leader", "no leader is known; retry")
}

/// The answer for the parts of an outcome shared by reads and writes: anything but `Done`.
fn failure<T>(outcome: Outcome<T>) -> Result<T, ApiError> {
    match outcome {
        Outcome::Done(t) => Ok(t),
        Outcome::NotLeader(None) => Err(no_leader()),
        Outcome::NotLeader(Some(leader)) => Err(ApiError::rejected(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_leader",
            "leadership moved while the request was relayed; retry",
        )
        .with(json!({ "leader_id": leader }))),
        Outcome::Discarded(index) => Err(ApiError::rejected(
            StatusCode::SERVICE_UNAVAILABLE,
            "discarded",
            format!("the entry at index {index} was overwritten by a new leader; retry"),
        )),
        Outcome::Overloaded => Err(ApiError::rejected(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the leader is overloaded; retry later",
        )),
        Outcome::Timeout => {
            Err(ApiError::unknown(StatusCode::GATEWAY_TIMEOUT, "timeout", "not confirmed in time; it may still happen"))
        }
        Outcome::Unknown(msg) => Err(ApiError::unknown(StatusCode::INTERNAL_SERVER_ERROR, "outcome_unknown", msg)),
        Outcome::Failed(msg) => Err(ApiError::unknown(StatusCode::INTERNAL_SERVER_ERROR, "node_failed", msg)),
    }
}

/// The body of a 200 for a write: `{"index": .., "ok": true, "prev": ..}`, serialized as it
/// is (a `json!` value built a map of owned keys per answer).
#[derive(Serialize)]
struct Applied<'a> {
    index: u64,
    ok: bool,
    prev: &'a Option<String>,
}

/// The body of a 200 for a read: `{"found": .., "key": .., "ok": true, "value": ..}`.
#[derive(Serialize)]
struct Read<'a> {
    found: bool,
    key: &'a str,
    ok: bool,
    value: &'a Option<String>,
}

/// 200 for an applied write, 409 for a CAS that did not swap, the failure's status otherwise.
fn write_response(outcome: WriteOutcome) -> Response {
    match failure(outcome) {
        Ok((index, resp)) if resp.ok => Json(Applied { index, ok: true, prev: &resp.prev }).into_response(),
        Ok((index, resp)) => {
            ApiError::rejected(StatusCode::CONFLICT, "cas_mismatch", "the key does not hold the expected value")
                .with(json!({ "current": resp.prev, "index": index }))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// 200 with the value (`null` and `found: false` for an absent key), the failure's status
/// otherwise.
fn read_response(key: &str, outcome: ReadOutcome) -> Response {
    match failure(outcome) {
        Ok(value) => Json(Read { found: value.is_some(), key, ok: true, value: &value }).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The answer for a failed membership change that was not relayed.
pub(crate) fn membership_error(e: RaftError<ClientWriteError<TypeConfig>>) -> ApiError {
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
        RaftError::APIError(ClientWriteError::Overloaded) => {
            ApiError::rejected(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "the node is overloaded; retry later")
        }
        RaftError::APIError(e @ ClientWriteError::OutcomeUnknown { .. }) => {
            ApiError::unknown(StatusCode::INTERNAL_SERVER_ERROR, "outcome_unknown", e)
        }
        RaftError::Fatal(f) => ApiError::unknown(StatusCode::INTERNAL_SERVER_ERROR, "node_stopped", f),
    }
}
