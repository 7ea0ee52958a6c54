//! Relaying a request to the leader's HTTP API, one hop.
//!
//! The follower sends the request as it came (method, path, body) with a header that stops
//! the leader from relaying it again, and answers with the leader's status and body. An admin
//! request keeps its `Authorization`; one that this node let in on a client certificate gets
//! this node's admin token instead (every node has the same), or, if it has none, is answered
//! 503 `not_leader` with the leader's address.
//!
//! A node relays at most [`super::HttpLimits::max_relays`] requests at once and answers 503
//! `relay_busy` to one more, unsent. Each relay holds a connection to the leader from this
//! node's address, and the leader caps the connections of one address: relays past that cap
//! would be refused there, and a refusal lost to a reset would read here as 504 (outcome
//! unknown) for a request that never ran.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use quorate::ForwardToLeader;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{ApiError, AppState};
use crate::service::KvService;
use crate::telemetry::names;
use crate::{KvNode, TypeConfig};

/// Set on a forwarded request: the receiver does not forward it again, so a request makes at
/// most one hop even while leadership moves.
pub(crate) const FORWARDED_HEADER: &str = "x-raft-kv-forwarded-by";

/// A request as received, kept so that it can be forwarded as it is.
pub(crate) struct Incoming {
    method: Method,
    uri: Uri,
    body: Bytes,
    forwarded: bool,
    authorization: Option<HeaderValue>,
}

impl Incoming {
    pub(crate) fn new(method: Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Self {
        let authorization = headers.get(header::AUTHORIZATION).cloned();
        Self { method, uri: uri.clone(), body, forwarded: headers.contains_key(FORWARDED_HEADER), authorization }
    }

    /// What authorizes the relayed request at the leader: the client's own header, or, for an
    /// admin request (one this node let in on a certificate), this node's token. Never the
    /// token on a key-value request (found in review: every write through a follower carried
    /// it, in clear text without HTTPS).
    fn authorization(&self, state: &AppState) -> Option<HeaderValue> {
        let admin = self.uri.path().starts_with("/admin/");
        self.authorization.clone().or_else(|| {
            admin
                .then(|| state.admin.token().and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()))
                .flatten()
        })
    }
}

/// What a key-value handler keeps of a request's head to relay it, should this node not lead:
/// the method, the URI and the two headers a relay looks at. (Extracting the whole
/// `HeaderMap` copied every header of every request, relayed or not.)
pub(crate) struct RelayHead {
    method: Method,
    uri: Uri,
    forwarded: bool,
    authorization: Option<HeaderValue>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RelayHead {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            forwarded: parts.headers.contains_key(FORWARDED_HEADER),
            authorization: parts.headers.get(header::AUTHORIZATION).cloned(),
        })
    }
}

impl RelayHead {
    /// The request to relay: this head and `body`.
    pub(crate) fn with_body(self, body: Bytes) -> Incoming {
        Incoming {
            method: self.method,
            uri: self.uri,
            body,
            forwarded: self.forwarded,
            authorization: self.authorization,
        }
    }
}

/// The path and query of `uri` as the relay sends them: as they came, but for a raw `\` in
/// the path, sent as `%5C`. The relay's URL parser (WHATWG, as reqwest's `url` follows it)
/// reads a `\` in an `http` path as `/`, so `/kv/a\b` would reach the leader as `/kv/a/b`;
/// `%5C` decodes to the same key. (Dot segments it resolves too: `kv::key_of` refuses those
/// keys.)
fn relayable(uri: &Uri) -> String {
    let path = uri.path().replace('\\', "%5C");
    match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

/// The body as bytes, or the JSON error for a body that could not be read: 413 for one over
/// the limit, 408 for one that did not arrive whole in time (see [`super::body_deadline`]),
/// 400 otherwise.
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if super::body_deadline::exceeded(&r) {
            return ApiError::rejected(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the request body did not arrive whole in time",
            );
        }
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "bad_body" };
        ApiError::rejected(status, code, r.body_text())
    })
}

/// The body parsed as JSON `T`, or a 400 that says what is wrong with it.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The leader's address, from the error or from the membership of the group this node knows.
fn leader_node(service: &KvService, f: &ForwardToLeader<TypeConfig>) -> Option<(u64, KvNode)> {
    let id = f.leader_id?;
    if let Some(node) = &f.leader_node {
        return Some((id, node.clone()));
    }
    let metrics = service.raft.metrics();
    let m = metrics.borrow();
    m.membership_config.membership.get_node(&id).map(|n| (id, n.clone()))
}

/// Log and count a request this node had to relay to `leader`, by how the relay ended (see
/// [`crate::telemetry`]).
fn count_relay(state: &AppState, leader: Option<u64>, outcome: &'static str) {
    tracing::debug!(leader, outcome, "relayed to the leader");
    metrics::counter!(names::RELAYED_REQUESTS_TOTAL, "node_id" => state.groups.node_id().to_string(), "outcome" => outcome)
        .increment(1);
}

/// Relay `req` to the leader named by `f` (of `service`'s group) and return its answer; or 503
/// if there is no leader to relay to (the request did not happen). The leader finds the group
/// again from the request (its key, or its `?group=`).
pub(crate) async fn to_leader(
    state: &AppState,
    service: &KvService,
    req: &Incoming,
    f: &ForwardToLeader<TypeConfig>,
) -> Response {
    let Some((leader_id, node)) = leader_node(service, f) else {
        count_relay(state, None, "no_leader");
        return ApiError::rejected(StatusCode::SERVICE_UNAVAILABLE, "no_leader", "no leader is known; retry")
            .into_response();
    };
    if req.forwarded || leader_id == service.raft.id() {
        count_relay(state, Some(leader_id), "not_leader");
        return ApiError::rejected(StatusCode::SERVICE_UNAVAILABLE, "not_leader", "this node is not the leader; retry")
            .with(json!({ "leader_id": leader_id, "leader_http_addr": node.http_addr }))
            .into_response();
    }
    // The relay runs in a task of its own that holds the permit until its exchange with the
    // leader is over: a client that gives up does not end it early (found in review: a permit
    // freed when the client went away, while the leader, paused, still held the connection,
    // let more relays in than the leader's cap of connections per address admits).
    let Ok(permit) = state.relays.clone().try_acquire_owned() else {
        count_relay(state, Some(leader_id), "relay_busy");
        return ApiError::rejected(
            StatusCode::SERVICE_UNAVAILABLE,
            "relay_busy",
            "this node is relaying as many requests as it may at once; retry, or ask the leader",
        )
        .with(json!({ "leader_id": leader_id, "leader_http_addr": node.http_addr }))
        .into_response();
    };
    let url = format!("{}://{}{}", state.scheme, node.http_addr, relayable(&req.uri));
    let mut relayed = state
        .client
        .request(req.method.clone(), url)
        .header(FORWARDED_HEADER, service.raft.id().to_string())
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(auth) = req.authorization(state) {
        relayed = relayed.header(header::AUTHORIZATION, auth);
    }
    let relayed = relayed.body(req.body.clone());
    let exchange = tokio::spawn(async move {
        let _permit = permit;
        let resp = relayed.send().await?;
        let status = resp.status();
        Ok::<_, reqwest::Error>((status, resp.bytes().await?))
    });
    match exchange.await {
        Ok(Ok((status, body))) => {
            count_relay(state, Some(leader_id), "answered");
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        // Not connected: nothing was sent, so the request certainly did not happen.
        Ok(Err(e)) if e.is_connect() => {
            count_relay(state, Some(leader_id), "leader_unreachable");
            ApiError::rejected(StatusCode::SERVICE_UNAVAILABLE, "leader_unreachable", e)
                .with(json!({ "leader_id": leader_id }))
                .into_response()
        }
        Ok(Err(e)) => {
            count_relay(state, Some(leader_id), "forward_failed");
            forward_failed(leader_id, e)
        }
        // The relay's task panicked or the runtime is stopping: it may have been sent.
        Err(e) => {
            count_relay(state, Some(leader_id), "forward_failed");
            forward_failed(leader_id, e)
        }
    }
}

/// Sent to the leader, no answer: it may have happened.
fn forward_failed(leader_id: u64, e: impl std::fmt::Display) -> Response {
    ApiError::unknown(StatusCode::GATEWAY_TIMEOUT, "forward_failed", e)
        .with(json!({ "leader_id": leader_id }))
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::Uri;

    use super::relayable;

    /// The path the relay's URL parser makes of a relayed request: one segment after `/kv/`
    /// for every key `kv::key_of` accepts, and a changed path for `..`, which it refuses.
    #[test]
    fn a_relayed_key_keeps_its_one_path_segment() {
        let relayed_path = |raw: &str| {
            let uri: Uri = raw.parse().unwrap();
            reqwest::Url::parse(&format!("http://leader:1{}", relayable(&uri))).unwrap().path().to_string()
        };
        for raw in ["/kv/a\\b", "/kv/\\", "/kv/a%2Fb", "/kv/%5C", "/kv/...", "/kv/a|b^[c]", "/kv/{\"x\"}"] {
            let path = relayed_path(raw);
            let key = path.strip_prefix("/kv/").unwrap_or_else(|| panic!("{raw} relayed as {path}"));
            assert!(!key.is_empty() && !key.contains('/'), "{raw} relayed as {path}");
        }
        assert_eq!(relayed_path("/kv/b?x=1"), "/kv/b");
        for dots in ["/kv/..", "/kv/.", "/kv/%2e%2E", "/kv/.%2e", "/kv/%2e"] {
            assert!(relayed_path(dots) != dots, "{dots}: why key_of refuses dot keys");
        }
    }
}
