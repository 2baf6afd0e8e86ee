//! Tenant isolation of the shared cache: content stored once per digest is served under an
//! (upstream, repository) only when that upstream vouched for it there.
//!
//! Vouching comes from the records first (`store::vouch`: a manifest recorded for the
//! repository that is or references the digest, or an earlier confirmation), which covers
//! the normal pull at no cost: a client fetches a manifest, which records it, then the blobs
//! it references. Anything else is asked of the upstream with a `HEAD` for that repository,
//! before any byte is served (from disk, from a fill another request started, or from the
//! shared tier): a success is remembered, a refusal is answered as the upstream answered it
//! (404 `BLOB_UNKNOWN`/`MANIFEST_UNKNOWN`, 401, 403 `DENIED`), an unreachable upstream is a
//! 503. A fill's own `GET` is not taken as vouching: the bytes may come from a fill another
//! route started, from a file committed meanwhile, or from the shared tier.

use super::error::CoreError;
use crate::oci::{Digest, Reference};
use crate::store::Store;
use crate::upstream::Route;
use http::Method;
use std::sync::Arc;

/// What the digest names, which decides the upstream endpoint asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Blob,
    Manifest,
}

/// `Ok` when `route`'s upstream vouched for `digest` in `route.name`, asking it when
/// nothing recorded says so; the upstream's refusal otherwise.
pub(super) async fn vouch(
    store: &Arc<Store>,
    route: &Route,
    digest: &Digest,
    content: Content,
) -> Result<(), CoreError> {
    let host = route.upstream.host();
    // The common case: a blob of a manifest this repository served. No IO.
    if store.vouches_known(host, &route.name, digest) {
        return Ok(());
    }
    if store.vouched_async(host, &route.name, digest).await? {
        return Ok(());
    }
    let registry = &route.upstream.registry;
    let asked = match content {
        Content::Blob => registry.blob(&route.name, digest, Method::HEAD).await,
        Content::Manifest => registry.manifest(&route.name, &Reference::Digest(digest.clone()), Method::HEAD).await,
    };
    let metric = |result: &str| {
        crate::metrics::METRICS.vouch_checks.with_label_values(&[host, result]).inc();
    };
    if let Err(e) = asked {
        metric("refused");
        tracing::info!(upstream = %host, repo = %route.name, %digest, error = %e,
                "cached content not served: the upstream did not vouch for it in this repository");
        let unknown = match content {
            Content::Blob => CoreError::BlobUnknown,
            Content::Manifest => CoreError::ManifestUnknown(digest.to_string()),
        };
        return Err(CoreError::from_upstream(e, unknown));
    }
    metric("confirmed");
    store.confirm_async(host, &route.name, digest).await?;
    Ok(())
}
