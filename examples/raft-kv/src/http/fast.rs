//! `PUT /kv/{key}` served without the router.
//!
//! Under write load nearly every request is a put. Through the router each one passes its
//! layers (the body deadline, the body limit, the timing middleware, which boxes the rest of
//! the chain), its route table and its extractors: about a tenth of a leader's CPU at 256
//! connections in a profile (`perf record --call-graph dwarf`, wrk, 3 nodes on 2 cores). The
//! server hands a put here instead when [`key`] says its answer is the router's for sure:
//! the same steps ([`super::kv::set`], [`super::kv::write`]), the same span and timing
//! ([`super::instrument::answered`]), the same body deadline
//! ([`super::body_deadline::start`]). Every other request, and every put that is not plain
//! (a query, a percent-encoded or refused key, no `Content-Length` or one over the limit),
//! goes to the router, which answers it as before.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::forward::{FORWARDED_HEADER, Incoming};
use super::{ApiError, AppState, MAX_BODY_BYTES, MAX_KEY_BYTES, body_deadline, instrument, kv};

/// The route template puts are timed under, as the router names it.
const ROUTE: &str = "/kv/{key}";

/// The key of `req` if it is a put this module answers as the router would: `PUT`, a path of
/// `/kv/` and one segment that needs no decoding (no `%`) and that the router accepts as a
/// key (not empty, `.` or `..`, at most [`MAX_KEY_BYTES`]), no query, and a declared body
/// length within [`MAX_BODY_BYTES`]. `None` sends the request to the router.
pub(crate) fn key<B>(req: &Request<B>) -> Option<&str> {
    if req.method() != Method::PUT || req.uri().query().is_some() {
        return None;
    }
    let key = req.uri().path().strip_prefix("/kv/")?;
    if key.is_empty() || key == "." || key == ".." || key.len() > MAX_KEY_BYTES || key.contains(['/', '%']) {
        return None;
    }
    let declared = req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse::<u64>().ok()?;
    (declared <= MAX_BODY_BYTES as u64).then_some(key)
}

/// Answer the put `req` of `key` (which [`key`] gave), reading its body within
/// `body_timeout` of now.
pub(crate) async fn put(
    state: &AppState,
    req: Request<hyper::body::Incoming>,
    key: String,
    body_timeout: Duration,
) -> Response {
    let started = Instant::now();
    let relayed_by = req.headers().get(FORWARDED_HEADER).and_then(|v| v.to_str().ok());
    let span = tracing::debug_span!("http", method = "PUT", route = ROUTE, relayed_by);
    let resp = async {
        let (parts, body) = body_deadline::start(req.map(Body::new), body_timeout).into_parts();
        let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
            Ok(body) => body,
            Err(e) => return unread(&e).into_response(),
        };
        let write = match kv::set(key, &body) {
            Ok(write) => write,
            Err(e) => return e.into_response(),
        };
        kv::write(state, write, Incoming::new(parts.method, &parts.uri, &parts.headers, body)).await
    }
    .instrument(span.clone())
    .await;
    instrument::answered(state, &span, ("PUT", ROUTE), started, &resp);
    resp
}

/// The answer for a body that could not be read, as the router's `Bytes` extractor gives it
/// (see `forward::body_bytes`): 408 for one that did not arrive whole in time, 400 otherwise.
/// (A body over the limit cannot happen here: its declared length was within it, and hyper
/// reads no more than that.)
fn unread(e: &axum::Error) -> ApiError {
    if body_deadline::exceeded(e) {
        return ApiError::rejected(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive whole in time",
        );
    }
    ApiError::rejected(StatusCode::BAD_REQUEST, "bad_body", format!("Failed to buffer the request body: {e}"))
}
