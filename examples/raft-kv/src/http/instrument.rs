//! Every request in a span, timed into `raft_kv_http_request_duration_seconds`; and
//! `GET /metrics`, where those and quorate's metrics are scraped.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::AppState;
use super::forward::FORWARDED_HEADER;
use crate::telemetry::names;

/// A label value for `method` from a fixed set, whatever a client sends.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// Run the request in a `http{method route relayed_by}` span (quorate's `client_write` and
/// `read` spans nest in it; `relayed_by` is the node that relayed it here, if one did), then
/// record how long it took by method, route template and status. The route is the template
/// the router matched (`/kv/{key}`), never the path, so that the number of series stays
/// bounded.
pub(crate) async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().into());
    let relayed_by = req.headers().get(FORWARDED_HEADER).and_then(|v| v.to_str().ok());
    let span = tracing::debug_span!("http", method, route = %route, relayed_by);
    let resp = match declared_too_large(&req) {
        Some(refused) => refused,
        None => next.run(req).instrument(span.clone()).await,
    };
    let status = resp.status();
    let elapsed = started.elapsed();
    tracing::debug!(parent: &span, status = status.as_u16(), elapsed = ?elapsed, "answered");
    metrics::histogram!(
        names::HTTP_REQUEST_DURATION_SECONDS,
        "node_id" => state.groups.node_id().to_string(),
        "method" => method,
        "route" => route,
        "status" => status.as_str().to_string(),
    )
    .record(elapsed.as_secs_f64());
    resp
}

/// 413 `body_too_large` at once for a request whose `Content-Length` is over the body limit,
/// instead of after reading (or waiting for) the body (found in review: such a request with no
/// body was answered 408 after the body timeout).
fn declared_too_large(req: &Request) -> Option<Response> {
    let declared = req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok()?;
    (declared > super::MAX_BODY_BYTES as u64).then(|| {
        let message = format!("a body of {declared} bytes; at most {} are accepted", super::MAX_BODY_BYTES);
        super::ApiError::rejected(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message).into_response()
    })
}

/// `GET /metrics`: everything recorded in this process, in Prometheus' text format.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.prometheus.render())
        .into_response()
}
