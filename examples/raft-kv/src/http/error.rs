//! [`ApiError`]: every failure of the HTTP API as a status and a JSON body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Whether a failed request may still take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It certainly did not happen.
    NotApplied,
    /// It may have happened, or may still.
    Unknown,
}

/// A failed request: a status, a short machine-readable code, a message, and what the client
/// may assume about the outcome.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short code, e.g. `no_leader`.
    pub code: &'static str,
    /// A human-readable explanation.
    pub message: String,
    /// Whether the request may still take effect.
    pub outcome: Outcome,
    /// More fields for the body, e.g. the leader's id.
    pub extra: Option<Value>,
}

impl ApiError {
    /// A request rejected before it was proposed.
    pub fn rejected(status: StatusCode, code: &'static str, message: impl ToString) -> Self {
        Self { status, code, message: message.to_string(), outcome: Outcome::NotApplied, extra: None }
    }

    /// A request whose outcome is unknown.
    pub fn unknown(status: StatusCode, code: &'static str, message: impl ToString) -> Self {
        Self { status, code, message: message.to_string(), outcome: Outcome::Unknown, extra: None }
    }

    /// Add fields to the body.
    pub fn with(mut self, extra: Value) -> Self {
        self.extra = Some(extra);
        self
    }

    /// 400 for a body that is not what the route expects.
    pub fn bad_request(message: impl ToString) -> Self {
        Self::rejected(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let outcome = match self.outcome {
            Outcome::NotApplied => "not_applied",
            Outcome::Unknown => "unknown",
        };
        let mut body = json!({ "ok": false, "error": self.code, "message": self.message, "outcome": outcome });
        if let (Some(Value::Object(extra)), Value::Object(map)) = (self.extra, &mut body) {
            map.extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}

/// Unknown routes.
pub(crate) async fn not_found() -> ApiError {
    ApiError::rejected(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Known routes with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::rejected(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not accept this method")
}
