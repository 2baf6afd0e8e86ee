//! Errors of the pull-through logic, independent of HTTP; `http::error` maps them to OCI
//! error responses.

use super::fill::FillError;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("blob unknown to the upstream registry")]
    BlobUnknown,
    #[error("repository unknown to the upstream registry")]
    NameUnknown,
    #[error("{0}")]
    NameUnknownMsg(String),
    #[error("the manifest is of type {media_type}, which the client's Accept header does not include")]
    NotAcceptable { media_type: String },
    #[error("upstream sent content that failed verification: {0}")]
    Verification(String),
    #[error(transparent)]
    Upstream(UpstreamError),
    #[error("cache storage error: {0}")]
    Store(#[from] std::io::Error),
}

impl CoreError {
    /// An upstream error, with "not found" turned into the caller's notion of unknown.
    pub fn from_upstream(e: UpstreamError, not_found: CoreError) -> CoreError {
        match e {
            UpstreamError::NotFound { .. } => not_found,
            e => CoreError::Upstream(e),
        }
    }

    pub fn from_fill(e: &FillError) -> CoreError {
        match e {
            FillError::Upstream(UpstreamError::NotFound { .. }) => CoreError::BlobUnknown,
            FillError::Verification { .. } => CoreError::Verification(e.to_string()),
            // The fill's error is shared by all its waiters; each gets its own copy.
            FillError::Upstream(u) => CoreError::Upstream(u.clone()),
            // A shared-tier body that broke off mid-stream: the fill is gone, and the client
            // must retry (the next fill skips the failing tier or goes upstream).
            FillError::Io { .. } | FillError::NoSpace { .. } | FillError::Shared(_) | FillError::Peer(_) => {
                CoreError::Store(std::io::Error::other(e.to_string()))
            }
        }
    }
}
