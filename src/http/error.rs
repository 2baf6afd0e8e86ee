//! OCI error responses: every failure a client sees is `{"errors":[{code,message}]}` with
//! the status the distribution spec gives it.

use super::Body;
use crate::core::CoreError;
use crate::oci::{DigestError, NameError};
use crate::upstream::{RouteError, UpstreamError};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    retry_after: Option<u64>,
    challenge: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None, challenge: false }
    }

    /// Ask the client for credentials (`WWW-Authenticate: Basic`).
    pub fn with_challenge(mut self) -> ApiError {
        self.challenge = true;
        self
    }

    pub fn name_invalid(e: NameError) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", format!("invalid repository name: {e}"))
    }

    pub fn digest_invalid(e: DigestError) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", e.to_string())
    }

    pub fn unsupported_method() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            "pullthrough is a read-only pull-through cache: push, delete and upload are not supported",
        )
    }

    pub fn into_response(self, head: bool) -> Response<Body> {
        let json = serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message, "detail": null }]
        });
        let body = Bytes::from(json.to_string());
        let mut resp = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len());
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            resp = resp.header(header::ALLOW, "GET, HEAD");
        }
        if self.challenge {
            resp = resp.header(header::WWW_AUTHENTICATE, "Basic realm=\"pullthrough\"");
        }
        if let Some(s) = self.retry_after {
            resp = resp.header(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp.body(if head { super::empty() } else { super::full(body) }).expect("valid error response")
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> ApiError {
        match e {
            RouteError::UnknownNamespace(_) => ApiError::new(StatusCode::FORBIDDEN, "DENIED", e.to_string()),
            RouteError::NoUpstream(_) => ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", e.to_string()),
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        let msg = e.to_string();
        match e {
            CoreError::ManifestUnknown(_) | CoreError::NotAcceptable { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", msg)
            }
            CoreError::BlobUnknown => ApiError::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", msg),
            CoreError::NameUnknown | CoreError::NameUnknownMsg(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", msg)
            }
            CoreError::Verification(_) => ApiError::new(StatusCode::BAD_GATEWAY, "UNKNOWN", msg),
            CoreError::Store(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", msg),
            CoreError::Upstream(u) => match u {
                UpstreamError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "NAME_UNKNOWN", msg),
                UpstreamError::Denied { .. } => ApiError::new(StatusCode::FORBIDDEN, "DENIED", msg),
                UpstreamError::TooManyRequests { retry_after, .. } => ApiError {
                    retry_after: retry_after.map(|d| d.as_secs().max(1)),
                    ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", msg)
                },
                UpstreamError::Timeout { .. } => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "UNAVAILABLE", msg),
                UpstreamError::Connect { .. } | UpstreamError::Offline { .. } => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", msg)
                }
                _ => ApiError::new(StatusCode::BAD_GATEWAY, "UNAVAILABLE", msg),
            },
        }
    }
}
