//! OCI error responses: every failure a client sees is `{"errors":[{code,message}]}` with
//! the status the distribution spec gives it.

use super::body::Body;
use crate::core::CoreError;
use crate::error_text::error_chain;
use crate::oci::{DigestError, NameError};
use crate::upstream::{RouteError, UpstreamError};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// The error codes of the distribution spec (and the few registries add), as sent in the
/// `code` field. Call sites name a code through `ApiError`'s constructors, never as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OciCode {
    BlobUnknown,
    Denied,
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    /// Not an API path at all.
    NotFound,
    PaginationNumberInvalid,
    RangeInvalid,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unknown,
    Unsupported,
}

impl OciCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OciCode::BlobUnknown => "BLOB_UNKNOWN",
            OciCode::Denied => "DENIED",
            OciCode::DigestInvalid => "DIGEST_INVALID",
            OciCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            OciCode::NameInvalid => "NAME_INVALID",
            OciCode::NameUnknown => "NAME_UNKNOWN",
            OciCode::NotFound => "NOT_FOUND",
            OciCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            OciCode::RangeInvalid => "RANGE_INVALID",
            OciCode::TooManyRequests => "TOOMANYREQUESTS",
            OciCode::Unauthorized => "UNAUTHORIZED",
            OciCode::Unavailable => "UNAVAILABLE",
            OciCode::Unknown => "UNKNOWN",
            OciCode::Unsupported => "UNSUPPORTED",
        }
    }
}

impl std::fmt::Display for OciCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: OciCode,
    pub message: String,
    retry_after: Option<u64>,
    challenge: bool,
}

/// Named constructors: one per answer the proxy gives, so a status and its code always
/// travel together.
impl ApiError {
    fn new(status: StatusCode, code: OciCode, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None, challenge: false }
    }

    /// 401 with a Basic challenge (`WWW-Authenticate`): ask the client for credentials.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError { challenge: true, ..ApiError::new(StatusCode::UNAUTHORIZED, OciCode::Unauthorized, message) }
    }

    /// 401 without a challenge: credentials that can never work (a wrong cluster token).
    pub fn unauthorized_no_challenge(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, OciCode::Unauthorized, message)
    }

    /// 403: refused by policy (deny-list, access rules, an unknown namespace).
    pub fn denied(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, OciCode::Denied, message)
    }

    /// 404 for a path that is not part of the API.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, OciCode::NotFound, message)
    }

    /// 404 for an API the proxy does not offer (the catalog).
    pub fn not_offered(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, OciCode::Unsupported, message)
    }

    pub fn manifest_unknown(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, OciCode::ManifestUnknown, message)
    }

    pub fn blob_unknown(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, OciCode::BlobUnknown, message)
    }

    pub fn name_unknown(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, OciCode::NameUnknown, message)
    }

    pub fn name_invalid(e: NameError) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, OciCode::NameInvalid, format!("invalid repository name: {e}"))
    }

    pub fn digest_invalid(e: DigestError) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, OciCode::DigestInvalid, e.to_string())
    }

    /// 400: a `Range` header that cannot be parsed.
    pub fn range_malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, OciCode::RangeInvalid, message)
    }

    /// 416: a range outside the blob; `Content-Range: bytes */total` says its size.
    pub fn range_not_satisfiable(total: u64) -> ApiError {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            OciCode::RangeInvalid,
            format!("range is outside the blob's {total} bytes"),
        )
    }

    pub fn pagination_invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, OciCode::PaginationNumberInvalid, message)
    }

    pub fn unsupported_method() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            OciCode::Unsupported,
            "pullthrough is a read-only pull-through cache: push, delete and upload are not supported",
        )
    }

    /// 502: what the upstream (or a tier) sent cannot be served.
    pub fn bad_gateway(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, OciCode::Unknown, message)
    }

    /// 409 to a peer node referred here: this node is not receiving the blob, or is at its
    /// `max_peer_streams`; the peer asks the owner directly instead.
    pub fn peer_refused(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, OciCode::Unavailable, message)
    }

    /// 500: the proxy's own fault (the cache directory).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, OciCode::Unknown, message)
    }

    /// 502/503/504 `UNAVAILABLE`: the upstream cannot be reached or answered badly.
    pub fn unavailable(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError::new(status, OciCode::Unavailable, message)
    }

    /// 429, with `Retry-After` when the upstream said when.
    pub fn rate_limited(retry_after: Option<std::time::Duration>, message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: retry_after.map(|d| d.as_secs().max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, OciCode::TooManyRequests, message)
        }
    }

    /// The error as a response; for a HEAD the server drops the body (`body::without_body`).
    pub fn into_response(self) -> Response<Body> {
        let json = serde_json::json!({
            "errors": [{ "code": self.code.as_str(), "message": self.message, "detail": null }]
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
        resp.body(super::body::full(body)).expect("valid error response")
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> ApiError {
        match e {
            RouteError::UnknownNamespace(_) => ApiError::denied(e.to_string()),
            RouteError::NoUpstream(_) => ApiError::name_unknown(e.to_string()),
        }
    }
}

/// Every core error has its protocol answer here, named variant by variant (no catch-all):
/// a new variant must decide what clients see. The message is the whole cause chain.
impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        let msg = error_chain(&e);
        match e {
            CoreError::ManifestUnknown(_) | CoreError::NotAcceptable { .. } => ApiError::manifest_unknown(msg),
            CoreError::BlobUnknown => ApiError::blob_unknown(msg),
            CoreError::NameUnknown | CoreError::UnknownRegistry { .. } => ApiError::name_unknown(msg),
            // Bad bytes from a source: the gateway's fault, not ours; a retry may get good ones.
            CoreError::ManifestMismatch(_) | CoreError::FillVerification(_) => ApiError::bad_gateway(msg),
            CoreError::Fill(_)
            | CoreError::FillEnded
            | CoreError::NotCached { .. }
            | CoreError::Store(_)
            | CoreError::Shared { .. }
            | CoreError::NoSharedTier => ApiError::internal(msg),
            CoreError::Upstream(u) => ApiError::from_upstream(u, msg),
        }
    }
}

impl ApiError {
    fn from_upstream(u: UpstreamError, msg: String) -> ApiError {
        match u {
            UpstreamError::NotFound { .. } => ApiError::name_unknown(msg),
            UpstreamError::Denied { .. } => ApiError::denied(msg),
            UpstreamError::TooManyRequests { retry_after, .. } => ApiError::rate_limited(retry_after, msg),
            UpstreamError::Timeout { .. } => ApiError::unavailable(StatusCode::GATEWAY_TIMEOUT, msg),
            UpstreamError::Connect { .. } | UpstreamError::Offline { .. } => {
                ApiError::unavailable(StatusCode::SERVICE_UNAVAILABLE, msg)
            }
            UpstreamError::Transfer { .. }
            | UpstreamError::Status { .. }
            | UpstreamError::Token { .. }
            | UpstreamError::Realm { .. }
            | UpstreamError::Redirect { .. }
            | UpstreamError::BadResponse { .. } => ApiError::unavailable(StatusCode::BAD_GATEWAY, msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::FillError;
    use crate::core::NotCached;
    use crate::oci::Digest;
    use std::sync::Arc;
    use std::time::Duration;

    fn digest() -> Digest {
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap()
    }

    fn answer(e: CoreError) -> (u16, &'static str) {
        let a = ApiError::from(e);
        (a.status.as_u16(), a.code.as_str())
    }

    /// The protocol answers clients and tests rely on, variant by variant.
    #[test]
    fn core_errors_keep_their_protocol_answers() {
        let host = || "up.test".to_string();
        let fill = |e: FillError| Arc::new(e);
        assert_eq!(answer(CoreError::ManifestUnknown("x".into())), (404, "MANIFEST_UNKNOWN"));
        assert_eq!(answer(CoreError::NotAcceptable { media_type: "t".into() }), (404, "MANIFEST_UNKNOWN"));
        assert_eq!(answer(CoreError::BlobUnknown), (404, "BLOB_UNKNOWN"));
        assert_eq!(answer(CoreError::NameUnknown), (404, "NAME_UNKNOWN"));
        assert_eq!(answer(CoreError::UnknownRegistry { host: host() }), (404, "NAME_UNKNOWN"));
        let io = || FillError::Io { digest: digest(), source: std::io::Error::other("disk on fire") };
        assert_eq!(answer(CoreError::Fill(fill(io()))), (500, "UNKNOWN"));
        assert_eq!(answer(CoreError::FillEnded), (500, "UNKNOWN"));
        let mismatch =
            crate::core::ManifestMismatch { host: host(), name: "r".parse().unwrap(), got: digest(), want: digest() };
        assert_eq!(answer(CoreError::ManifestMismatch(mismatch)), (502, "UNKNOWN"));
        assert_eq!(answer(CoreError::NotCached { digest: digest(), why: NotCached::NoRoom }), (500, "UNKNOWN"));
        assert_eq!(answer(CoreError::Store(std::io::Error::other("x"))), (500, "UNKNOWN"));
        assert_eq!(answer(CoreError::NoSharedTier), (500, "UNKNOWN"));
        let upstream = |u: UpstreamError| answer(CoreError::Upstream(u));
        assert_eq!(upstream(UpstreamError::NotFound { host: host() }), (404, "NAME_UNKNOWN"));
        assert_eq!(
            upstream(UpstreamError::Timeout { host: host(), after: Duration::from_secs(1) }),
            (504, "UNAVAILABLE")
        );
        assert_eq!(upstream(UpstreamError::Connect { host: host(), message: "x".into() }), (503, "UNAVAILABLE"));
        assert_eq!(upstream(UpstreamError::Offline { host: host() }), (503, "UNAVAILABLE"));
        assert_eq!(upstream(UpstreamError::Transfer { host: host(), message: "x".into() }), (502, "UNAVAILABLE"));
        assert_eq!(
            upstream(UpstreamError::Status { host: host(), status: http::StatusCode::INTERNAL_SERVER_ERROR }),
            (502, "UNAVAILABLE")
        );
        let limited = ApiError::from(CoreError::Upstream(UpstreamError::TooManyRequests {
            host: host(),
            retry_after: Some(Duration::from_secs(7)),
        }))
        .into_response();
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap()), Some("7"));
    }

    /// A cause wrapped in a core error reaches the client's message: a storage failure
    /// says what failed, not only that something did.
    #[test]
    fn the_message_carries_the_whole_cause_chain() {
        let fill = Arc::new(FillError::Io { digest: digest(), source: std::io::Error::other("disk on fire") });
        let e = ApiError::from(CoreError::from_fill(&fill));
        assert!(e.message.contains("disk on fire"), "{}", e.message);
        assert!(e.message.contains(&digest().to_string()), "{}", e.message);
    }
}
