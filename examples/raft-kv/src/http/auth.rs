//! Who may call the admin routes: [`AdminAuth`].
//!
//! The admin routes that change the cluster (`POST /admin/init`, `/admin/add-learner`,
//! `/admin/change-membership`, `/admin/transfer-leader`) need one of:
//!
//! - `Authorization: Bearer <token>`, where the token is the content of the node's
//!   `--admin-token-file` (trimmed; the same file on every node, so that a follower can relay
//!   the request to the leader);
//! - over HTTPS, a client certificate that chains to `--admin-client-ca`.
//!
//! Without either configured, those routes answer 401 to everyone (a node must be started
//! with `--insecure-open-admin` to open them, on a network whose every host is trusted).
//! The key-value routes and the read-only `GET /admin/metrics`, `/admin/dump` and `/metrics`
//! need nothing: a monitoring system reads the two metrics routes without holding the token
//! that changes the membership.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// Set on a request that came over HTTPS with a client certificate that chains to the admin
/// client CA (rustls has verified it when the connection opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminCertificate;

/// Who may call the admin routes.
#[derive(Clone, Default)]
pub struct AdminAuth {
    /// The bearer token, if one is configured.
    token: Option<Arc<str>>,
    /// Whether a client certificate of the admin client CA is accepted.
    pub(crate) client_certificates: bool,
    /// Whether the routes are open to anyone.
    open: bool,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("client_certificates", &self.client_certificates)
            .field("open", &self.open)
            .finish()
    }
}

/// Why an admin token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// It cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is empty, or too short to be a secret.
    #[error("{}: an admin token must be at least 16 characters (it has {len})", path.display())]
    TooShort {
        /// The file.
        path: std::path::PathBuf,
        /// Its length, trimmed.
        len: usize,
    },
}

impl AdminAuth {
    /// Nobody may call the admin routes (until a token or client CA is configured).
    pub fn closed() -> Self {
        Self::default()
    }

    /// Anyone may call them: for trusted networks only.
    pub fn open() -> Self {
        Self { open: true, ..Self::default() }
    }

    /// These settings, also accepting the bearer token held in `path`.
    ///
    /// # Errors
    /// [`TokenError`] if the file cannot be read or holds fewer than 16 characters.
    pub fn with_token_file(mut self, path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Io { path: path.into(), source })?;
        let token = text.trim();
        if token.len() < 16 {
            return Err(TokenError::TooShort { path: path.into(), len: token.len() });
        }
        self.token = Some(token.into());
        Ok(self)
    }

    /// These settings with `token` as the bearer token.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The token, to relay a request authenticated by certificate to the leader.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Whether a request with `headers` (and a verified admin certificate, or not) may pass.
    fn allows(&self, headers: &HeaderMap, certificate: Option<&AdminCertificate>) -> bool {
        if self.open || (self.client_certificates && certificate.is_some()) {
            return true;
        }
        let (Some(token), Some(given)) = (&self.token, bearer(headers)) else {
            return false;
        };
        constant_time_eq(token.as_bytes(), given.as_bytes())
    }
}

/// The bearer token of an `Authorization` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Compare without an early exit, so the time taken says nothing about how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware of the admin routes that change the cluster.
pub(crate) async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.admin.allows(req.headers(), req.extensions().get::<AdminCertificate>()) {
        return next.run(req).await;
    }
    let message = if state.admin.token.is_none() && !state.admin.client_certificates {
        "the admin routes are closed on this node: start it with --admin-token-file (or --admin-client-ca)"
    } else {
        "this route needs `Authorization: Bearer <admin token>` or an admin client certificate"
    };
    let mut resp = ApiError::rejected(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::{AdminAuth, AdminCertificate};

    fn with_bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        h
    }

    #[test]
    fn only_the_right_token_or_an_admin_certificate_pass() {
        let auth = AdminAuth::closed().with_token("0123456789abcdef");
        assert!(auth.allows(&with_bearer("0123456789abcdef"), None));
        assert!(!auth.allows(&with_bearer("0123456789abcdeX"), None));
        assert!(!auth.allows(&with_bearer("0123456789abcde"), None));
        assert!(!auth.allows(&HeaderMap::new(), None));
        assert!(!auth.allows(&HeaderMap::new(), Some(&AdminCertificate)), "certificates are not configured");
        let certs = AdminAuth { client_certificates: true, ..AdminAuth::closed() };
        assert!(certs.allows(&HeaderMap::new(), Some(&AdminCertificate)));
        assert!(!AdminAuth::closed().allows(&with_bearer("anything"), None));
        assert!(AdminAuth::open().allows(&HeaderMap::new(), None));
    }
}
