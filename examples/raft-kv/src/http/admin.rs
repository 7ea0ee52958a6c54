//! The admin routes: cluster setup, membership, leadership, metrics.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use quorate::error::RaftError;
use quorate::{ChangeMembers, ClientWriteError, InitializeError, TransferLeaderError};
use serde::Deserialize;
use serde_json::json;

use super::forward::{self, Incoming};
use super::groups::{self, GroupQuery};
use super::kv::membership_error;
use super::{ADMIN_TIMEOUT, ApiError, AppState};
use crate::KvNode;
use crate::service::KvService;

/// The admin routes' query: `?group=` on a node of many groups.
type GroupParam = Result<Query<GroupQuery>, QueryRejection>;

fn group_query(query: GroupParam) -> Result<GroupQuery, ApiError> {
    query.map(|Query(q)| q).map_err(|e| ApiError::bad_request(e.body_text()))
}

/// The service of the group a membership route changes, or the 400 that says which to name.
fn target(state: &AppState, query: GroupParam) -> Result<&KvService, ApiError> {
    group_query(query)?.target(&state.groups)
}

fn read_json<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<(T, Bytes), ApiError> {
    let body = forward::body_bytes(body)?;
    let parsed = forward::parse_json(&body)?;
    Ok((parsed, body))
}

fn admin_timeout() -> ApiError {
    ApiError::unknown(StatusCode::GATEWAY_TIMEOUT, "timeout", "the change did not complete in time; it may still")
}

/// `POST /admin/init`: `{"1": {"raft_addr": .., "http_addr": ..}, ...}`. On a node of many
/// groups it initializes every group (through this node, which then leads them all at first)
/// and answers 200 with the groups it initialized if there was any, 409 if every group had
/// state already.
pub(crate) async fn init(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    let members: BTreeMap<u64, KvNode> = match read_json(body) {
        Ok((m, _)) => m,
        Err(e) => return e.into_response(),
    };
    if members.is_empty() {
        return ApiError::bad_request("the membership must name at least one node").into_response();
    }
    let (mut initialized, mut already) = (Vec::new(), 0u32);
    for (shard, service) in state.groups.iter() {
        match service.raft.initialize(members.clone()).await {
            Ok(()) => initialized.push(shard),
            Err(RaftError::APIError(e @ InitializeError::NotAllowed { .. })) if state.groups.is_single() => {
                return ApiError::rejected(StatusCode::CONFLICT, "already_initialized", e).into_response();
            }
            Err(RaftError::APIError(InitializeError::NotAllowed { .. })) => already += 1,
            // The same members for every group: if they are wrong, the first group says so
            // and nothing was initialized.
            Err(RaftError::APIError(e)) => return ApiError::bad_request(e).into_response(),
            Err(RaftError::Fatal(f)) => {
                return ApiError::unknown(StatusCode::INTERNAL_SERVER_ERROR, "node_stopped", f).into_response();
            }
        }
    }
    if state.groups.is_single() {
        return Json(json!({ "ok": true })).into_response();
    }
    if initialized.is_empty() {
        let message = "every group of this node already has state";
        return ApiError::rejected(StatusCode::CONFLICT, "already_initialized", message).into_response();
    }
    Json(json!({ "ok": true, "initialized": initialized, "already_initialized": already })).into_response()
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
/// On a node of many groups, `?group=<shard>` names the group.
pub(crate) async fn add_learner(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: GroupParam,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = target(&state, query).and_then(|service| Ok((service, read_json::<AddLearner>(body)?)));
    let (service, (req, body)) = match prepared {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let node = KvNode { raft_addr: req.raft_addr, http_addr: req.http_addr };
    let change = service.raft.add_learner(req.id, node, req.blocking);
    membership_answer(&state, service, change, Incoming::new(method, &uri, &headers, body)).await
}

/// Wait for a membership change (bounded) and answer it: the new membership, a relay to the
/// leader if this node is not it, or the error's status.
async fn membership_answer(
    state: &AppState,
    service: &KvService,
    change: impl std::future::Future<
        Output = Result<
            quorate::ChangeMembershipResponse<crate::TypeConfig>,
            RaftError<ClientWriteError<crate::TypeConfig>>,
        >,
    >,
    incoming: Incoming,
) -> Response {
    if let Some(e) = state.removed(service) {
        return e.into_response();
    }
    match tokio::time::timeout(ADMIN_TIMEOUT, change).await {
        Err(_) => admin_timeout().into_response(),
        Ok(Ok(resp)) => {
            Json(json!({ "ok": true, "membership": resp.membership, "log_id": resp.log_id })).into_response()
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            forward::to_leader(state, service, &incoming, &f).await
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
/// members the voters; each must already be a member (add it as a learner first). On a node of
/// many groups, `?group=<shard>` names the group.
pub(crate) async fn change_membership(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: GroupParam,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = target(&state, query).and_then(|service| Ok((service, read_json::<ChangeMembership>(body)?)));
    let (service, (req, body)) = match prepared {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let change = service.raft.change_membership(ChangeMembers::ReplaceAllVoters(req.voters), req.retain);
    membership_answer(&state, service, change, Incoming::new(method, &uri, &headers, body)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferLeader {
    to: u64,
}

/// `POST /admin/transfer-leader`: `{"to": 2}`. On a node of many groups, `?group=<shard>`
/// names the group.
pub(crate) async fn transfer_leader(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: GroupParam,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = target(&state, query).and_then(|service| Ok((service, read_json::<TransferLeader>(body)?)));
    let (service, (req, body)) = match prepared {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let trigger = service.raft.trigger();
    match tokio::time::timeout(ADMIN_TIMEOUT, trigger.transfer_leader(req.to)).await {
        Err(_) => admin_timeout().into_response(),
        Ok(Ok(())) => Json(json!({ "ok": true, "to": req.to })).into_response(),
        Ok(Err(RaftError::APIError(TransferLeaderError::ForwardToLeader(f)))) => {
            forward::to_leader(&state, service, &Incoming::new(method, &uri, &headers, body), &f).await
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
/// `membership_config.membership.nodes[current_leader].http_addr`. On a node of many groups:
/// one group's with `?group=<shard>`, else a summary of every group (see [`groups`]).
pub(crate) async fn metrics(State(state): State<AppState>, query: GroupParam) -> Response {
    let query = match group_query(query) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let service = match query.named(&state.groups) {
        Ok(Some((_, service))) => service,
        Ok(None) => match state.groups.single() {
            Some(service) => service,
            None => return Json(groups::summary(&state.groups, &query)).into_response(),
        },
        Err(e) => return e.into_response(),
    };
    let m = service.raft.metrics().borrow().clone();
    Json(m).into_response()
}

/// `GET /admin/dump`: the local map, for comparing state machines. On a node of many groups:
/// one group's with `?group=<shard>`, else the maps of every group as one, with each group's
/// applied index (`applied_index` is then a list, in shard order).
pub(crate) async fn dump(State(state): State<AppState>, query: GroupParam) -> Response {
    let Ok(permit) = state.dumps.clone().try_acquire_owned() else {
        let message = format!("{} dumps are being served; retry", super::CONCURRENT_DUMPS);
        return ApiError::rejected(StatusCode::SERVICE_UNAVAILABLE, "busy", message).into_response();
    };
    let named = group_query(query).and_then(|q| q.named(&state.groups));
    let service = match named {
        Ok(Some((_, service))) => service,
        Ok(None) => match state.groups.single() {
            Some(service) => service,
            None => {
                let state = state.clone();
                return json_holding(move || serde_json::to_vec(&groups::dump_all(&state.groups)), permit).await;
            }
        },
        Err(e) => return e.into_response(),
    };
    #[derive(serde::Serialize)]
    struct Dump<'a> {
        ok: bool,
        applied_index: Option<u64>,
        data: &'a BTreeMap<String, String>,
    }
    let state_machine = service.state_machine.clone();
    let encode = move || {
        let (data, last_applied) = state_machine.dump();
        serde_json::to_vec(&Dump { ok: true, applied_index: last_applied.map(|l| l.index), data: &data })
    };
    json_holding(encode, permit).await
}

/// A 200 answer of the JSON `encode` makes, whose body holds `held` until the client has taken
/// all but its last chunk (or the connection is gone): the body is served 64 KiB at a time,
/// and hyper asks for the next chunk only once it has room, so a dump's permit bounds the dumps
/// in memory, not only those being built. `encode` (copying a whole map and encoding it: a
/// large map takes a while) runs on a blocking thread, not on the runtime's: with
/// `--runtime-threads 1` the node's Raft, replication and HTTP share that one thread (found
/// in review).
async fn json_holding<T: Send + 'static>(
    encode: impl FnOnce() -> serde_json::Result<Vec<u8>> + Send + 'static,
    held: T,
) -> Response {
    const CHUNK: usize = 64 * 1024;
    let encoded = tokio::task::spawn_blocking(encode).await;
    let bytes = match encoded {
        Ok(Ok(bytes)) => Bytes::from(bytes),
        Ok(Err(e)) => {
            let message = format!("the answer could not be encoded: {e}");
            return ApiError::unknown(StatusCode::INTERNAL_SERVER_ERROR, "encoding", message).into_response();
        }
        Err(e) => {
            let message = format!("encoding the answer failed: {e}");
            return ApiError::unknown(StatusCode::INTERNAL_SERVER_ERROR, "encoding", message).into_response();
        }
    };
    let chunks = futures_util::stream::unfold((bytes, held), |(mut rest, held)| async move {
        if rest.is_empty() {
            return None;
        }
        let chunk = rest.split_to(rest.len().min(CHUNK));
        Some((Ok::<_, std::convert::Infallible>(chunk), (rest, held)))
    });
    ([(axum::http::header::CONTENT_TYPE, "application/json")], axum::body::Body::from_stream(chunks)).into_response()
}
