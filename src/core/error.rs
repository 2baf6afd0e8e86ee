//! Errors of the pull-through logic, independent of HTTP; `http::error` maps each variant to
//! its OCI error response (exhaustively: a new variant needs a decision there).
//!
//! A variant that wraps a cause keeps it as its `source` and does not repeat it in its own
//! text: print the whole chain with `error_text::error_chain`.

use super::blob::fill::FillError;
use crate::oci::{Digest, RepoName};
use crate::shared::SharedError;
use crate::upstream::UpstreamError;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("blob unknown to the upstream registry")]
    BlobUnknown,
    #[error("repository unknown to the upstream registry")]
    NameUnknown,
    /// An operator-written image reference names a registry no upstream is configured for.
    #[error("registry {host:?} is not a configured upstream")]
    UnknownRegistry { host: String },
    #[error("the manifest is of type {media_type}, which the client's Accept header does not include")]
    NotAcceptable { media_type: String },
    /// A manifest's bytes do not hash to the digest asked for or announced.
    #[error("upstream sent content that failed verification")]
    ManifestMismatch(#[source] ManifestMismatch),
    /// A blob fill's bytes failed verification (`FillError::Verification`, from any tier).
    #[error("upstream sent content that failed verification")]
    FillVerification(#[source] Arc<FillError>),
    /// A blob fill failed otherwise: the cache's storage, a tier that broke off mid-stream,
    /// no room. The fill is gone; a retry starts a new one (which skips a failing tier).
    /// The error is shared by every waiter of the fill.
    #[error("blob fill failed")]
    Fill(#[source] Arc<FillError>),
    /// The fill task went away without a result.
    #[error("blob fill ended unexpectedly")]
    FillEnded,
    /// A blob was verified but not committed (or the cache had no room for it) where it had
    /// to be cached: prefetch, repair.
    #[error("{digest} could not be written to the cache: {why}")]
    NotCached { digest: Digest, why: NotCached },
    #[error(transparent)]
    Upstream(UpstreamError),
    #[error("cache storage error")]
    Store(#[from] std::io::Error),
    /// The shared tier failed an operation of its own (listing or deleting tag records).
    #[error("shared tier: cannot {what}")]
    Shared {
        what: SharedOp,
        #[source]
        source: SharedError,
    },
    /// A shared-tier operation with no `[shared.s3]` configured.
    #[error("no [shared.s3] is configured: there are no shared tag records to prune")]
    NoSharedTier,
}

/// Why a blob that had to be cached is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCached {
    /// The cache has no room for it: it would only be relayed.
    NoRoom,
    /// It was verified, but the commit failed.
    CommitFailed,
}

impl std::fmt::Display for NotCached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotCached::NoRoom => "the cache has no room for it",
            NotCached::CommitFailed => "it was verified, but the commit failed",
        })
    }
}

/// What the shared tier was asked to do when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedOp {
    ListTagRecords,
    DeleteTagRecord,
}

impl std::fmt::Display for SharedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SharedOp::ListTagRecords => "list the tag records",
            SharedOp::DeleteTagRecord => "delete a tag record",
        })
    }
}

/// A manifest whose bytes hash to `got`, not the `want`ed digest.
#[derive(Debug, thiserror::Error)]
#[error("manifest from {host} for {name} hashes to {got}, expected {want}")]
pub struct ManifestMismatch {
    pub host: String,
    pub name: RepoName,
    pub got: Digest,
    pub want: Digest,
}

impl CoreError {
    /// An upstream error, with "not found" turned into the caller's notion of unknown.
    pub fn from_upstream(e: UpstreamError, not_found: CoreError) -> CoreError {
        match e {
            UpstreamError::NotFound { .. } => not_found,
            e => CoreError::Upstream(e),
        }
    }

    /// A failed fill's error, as its waiters report it. The fill's error is shared by all
    /// its waiters: each gets the same cause.
    pub fn from_fill(e: &Arc<FillError>) -> CoreError {
        match &**e {
            FillError::Upstream(UpstreamError::NotFound { .. }) => CoreError::BlobUnknown,
            FillError::Upstream(u) => CoreError::Upstream(u.clone()),
            FillError::Verification { .. } => CoreError::FillVerification(e.clone()),
            // A shared-tier or peer body that broke off mid-stream, storage, no room: the
            // fill is gone, and the client must retry (the next fill skips the failing tier
            // or goes upstream).
            FillError::Io { .. } | FillError::NoSpace { .. } | FillError::Shared(_) | FillError::Peer(_) => {
                CoreError::Fill(e.clone())
            }
        }
    }

    /// Whether trying again may succeed: the upstream or a tier was unavailable, content
    /// was bad this time, or the cache failed; not when the upstream answered no, or the
    /// request itself cannot work.
    pub fn is_transient(&self) -> bool {
        match self {
            CoreError::Upstream(u) => u.is_unavailable(),
            CoreError::ManifestMismatch(_)
            | CoreError::FillVerification(_)
            | CoreError::Fill(_)
            | CoreError::FillEnded
            | CoreError::NotCached { .. }
            | CoreError::Store(_)
            | CoreError::Shared { .. } => true,
            CoreError::ManifestUnknown(_)
            | CoreError::BlobUnknown
            | CoreError::NameUnknown
            | CoreError::UnknownRegistry { .. }
            | CoreError::NotAcceptable { .. }
            | CoreError::NoSharedTier => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_text::error_chain;

    #[test]
    fn fill_errors_keep_their_cause() {
        let digest: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap();
        let fill = Arc::new(FillError::Io { digest, source: std::io::Error::other("disk on fire") });
        let e = CoreError::from_fill(&fill);
        assert!(matches!(e, CoreError::Fill(_)));
        let io = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<Arc<FillError>>())
            .and_then(|f| std::error::Error::source(&**f))
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(io.map(|e| e.to_string()).as_deref(), Some("disk on fire"));
        assert!(error_chain(&e).ends_with(": disk on fire"), "{}", error_chain(&e));
    }
}
