//! Every request in a span, timed into `raft_kv_http_request_duration_seconds`; and
//! `GET /metrics`, where those and quorate's metrics are scraped.

use std::collections::HashMap;
use std::sync::Mutex;
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
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let relayed_by = req.headers().get(FORWARDED_HEADER).and_then(|v| v.to_str().ok());
    let span = tracing::debug_span!("http", method, route = %route, relayed_by);
    let resp = match declared_too_large(&req) {
        Some(refused) => refused,
        None => next.run(req).instrument(span.clone()).await,
    };
    answered(&state, &span, (method, route), started, &resp);
    resp
}

/// Log and time an answer given to a request of `method` to `route`, started at `started`
/// and run in `span`.
pub(crate) fn answered(
    state: &AppState,
    span: &tracing::Span,
    (method, route): (&'static str, &str),
    started: Instant,
    resp: &Response,
) {
    let status = resp.status();
    let elapsed = started.elapsed();
    tracing::debug!(parent: span, status = status.as_u16(), elapsed = ?elapsed, "answered");
    state.timers.histogram(method, route, status).record(elapsed.as_secs_f64());
}

/// The request-duration histograms of a node, one per method, route template and status,
/// each registered once: `metrics::histogram!` with labels allocates its key and looks it up
/// in the recorder on every call, a few allocations per request on the write path.
pub(crate) struct Timers {
    node_id: String,
    /// By route template, then by method and status: a handful of each (the routes are the
    /// router's templates, the methods a fixed set, the statuses the API's), so the scan is short
    /// and the map bounded.
    by_route: Mutex<HashMap<Box<str>, Vec<Timer>>>,
}

/// A method, a status and their histogram.
type Timer = (&'static str, StatusCode, metrics::Histogram);

impl Timers {
    pub(crate) fn new(node_id: u64) -> Self {
        Self { node_id: node_id.to_string(), by_route: Mutex::new(HashMap::new()) }
    }

    /// The histogram of requests of `method` to `route` answered `status`.
    fn histogram(&self, method: &'static str, route: &str, status: StatusCode) -> metrics::Histogram {
        // A panic while the lock was held leaves the map as it was: still usable.
        let mut by_route = self.by_route.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entries = match by_route.get_mut(route) {
            Some(entries) => entries,
            None => by_route.entry(route.into()).or_default(),
        };
        if let Some((_, _, h)) = entries.iter().find(|(m, s, _)| *m == method && *s == status) {
            return h.clone();
        }
        let h = metrics::histogram!(
            names::HTTP_REQUEST_DURATION_SECONDS,
            "node_id" => self.node_id.clone(),
            "method" => method,
            "route" => route.to_string(),
            "status" => status.as_str().to_string(),
        );
        entries.push((method, status, h.clone()));
        h
    }
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
