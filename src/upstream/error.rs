//! What can go wrong talking to an upstream registry.

use http::StatusCode;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to upstream {host}: {message}")]
    Connect { host: String, message: String },
    #[error("upstream {host} did not answer within {after:?}")]
    Timeout { host: String, after: Duration },
    #[error("upstream {host}: transfer failed: {message}")]
    Transfer { host: String, message: String },
    #[error("upstream {host} does not have it (404)")]
    NotFound { host: String },
    #[error("upstream {host} refused access ({status}); check [upstream.auth] for this registry")]
    Denied { host: String, status: StatusCode },
    #[error("upstream {host} is rate limiting (429){}", retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    TooManyRequests { host: String, retry_after: Option<Duration> },
    #[error("upstream {host} answered {status}")]
    Status { host: String, status: StatusCode },
    #[error("token endpoint for {host} failed: {message}")]
    Token { host: String, message: String },
    #[error("upstream {host} sent a bad redirect: {message}")]
    Redirect { host: String, message: String },
    #[error("upstream {host} sent an invalid response: {message}")]
    BadResponse { host: String, message: String },
    #[error("upstream {host} is not contacted: the proxy runs in offline mode ([server] offline = true)")]
    Offline { host: String },
}

impl UpstreamError {
    /// Errors that say the upstream is unreachable or broken right now (as opposed to a
    /// definite answer like 404): a cached tag may be served stale through these.
    pub fn is_unavailable(&self) -> bool {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::Timeout { .. }
            | UpstreamError::Transfer { .. }
            | UpstreamError::TooManyRequests { .. }
            | UpstreamError::Token { .. }
            | UpstreamError::BadResponse { .. }
            | UpstreamError::Offline { .. } => true,
            UpstreamError::Status { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}
