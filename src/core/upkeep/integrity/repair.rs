//! Repair: fetch quarantined content again, at once, from an upstream known to have it.
//!
//! The source is an (upstream, repository) that vouched for the digest (`store::vouch`: a
//! recorded image or tag references it, or the upstream confirmed it there), so a repair
//! never asks an upstream for content it did not serve. A blob comes back through the normal
//! fill (tiers first, then the upstream; streamed, hashed, committed only when it verifies);
//! a manifest, which is small, by one verified GET as a pull by digest fetches it. Manifests
//! go first: a blob is vouched for through the manifests that reference it.

use crate::core::fill::{self, FillState};
use crate::core::manifest::read_verified_manifest;
use crate::core::{BlobBody, CoreError, NotCached, PullThrough, Via};
use crate::oci::media;
use crate::oci::{Digest, Reference, RepoName};
use crate::upstream::Route;
use http::Method;
use std::io;

/// A digest fetched again, and where from.
#[derive(Debug, Clone)]
pub struct Repaired {
    pub digest: Digest,
    pub upstream: String,
    pub repository: RepoName,
}

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("no configured upstream is known to have {digest} (no repository's records reference it); it is fetched again when a client asks for it")]
    NoSource { digest: Digest },
    #[error("fetching {digest} again from {upstream} ({repository}) failed")]
    Fetch {
        digest: Digest,
        upstream: String,
        repository: RepoName,
        #[source]
        source: CoreError,
    },
    #[error("cannot look up where {digest} came from")]
    Records {
        digest: Digest,
        #[source]
        source: io::Error,
    },
}

impl PullThrough {
    /// Fetch `digest` (a `manifest`, or a blob) into the cache again from an upstream that
    /// vouched for it, trying each such repository until one serves it.
    pub async fn repair(&self, digest: &Digest, manifest: bool) -> Result<Repaired, RepairError> {
        let d = digest.clone();
        let sources = self
            .store()
            .run(move |store| {
                let mut found = Vec::new();
                for (upstream, name) in store.repositories()? {
                    if store.vouched(&upstream, &name, &d)? {
                        found.push((upstream, name));
                    }
                }
                Ok(found)
            })
            .await
            .map_err(|source| RepairError::Records { digest: digest.clone(), source })?;
        let mut last = None;
        for (upstream, name) in sources {
            // An upstream no longer configured cannot be asked.
            let Ok(route) = self.route(Some(&upstream), &name) else { continue };
            let fetched = if manifest {
                self.refetch_manifest(&route, digest).await
            } else {
                self.refetch_blob(&route, digest).await
            };
            match fetched {
                Ok(()) => {
                    crate::metrics::METRICS.corruptions_repaired.inc();
                    tracing::info!(%digest, %upstream, repository = %name, "quarantined content fetched again");
                    return Ok(Repaired { digest: digest.clone(), upstream, repository: name });
                }
                Err(source) => {
                    last = Some(RepairError::Fetch { digest: digest.clone(), upstream, repository: name, source })
                }
            }
        }
        Err(last.unwrap_or_else(|| RepairError::NoSource { digest: digest.clone() }))
    }

    /// Fill a blob through the normal fill, and wait until it is committed.
    async fn refetch_blob(&self, route: &Route, digest: &Digest) -> Result<(), CoreError> {
        let blob = self.blob_via(route, digest, Via::Client).await?;
        let BlobBody::Cached(mut progress) = blob.body else {
            return Err(CoreError::NotCached { digest: digest.clone(), why: NotCached::NoRoom });
        };
        let p =
            fill::settle(&mut progress, |p| p.committed.is_some() || matches!(p.state, FillState::Failed(_))).await?;
        match (&p.state, p.committed) {
            (FillState::Failed(e), _) => Err(CoreError::from_fill(e)),
            (_, Some(true)) => Ok(()),
            _ => Err(CoreError::NotCached { digest: digest.clone(), why: NotCached::CommitFailed }),
        }
    }

    /// Fetch a manifest by digest, verify it, and store it.
    async fn refetch_manifest(&self, route: &Route, digest: &Digest) -> Result<(), CoreError> {
        let registry = &route.upstream.registry;
        let resp = registry
            .manifest(&route.name, &Reference::Digest(digest.clone()), Method::GET)
            .await
            .map_err(|e| CoreError::from_upstream(e, CoreError::ManifestUnknown(digest.to_string())))?;
        let (content_type, body) = read_verified_manifest(route, resp, [digest]).await?;
        let media_type = media::manifest_type(content_type.as_deref(), &body);
        self.store().put_manifest_async(digest, &media_type, body).await?;
        Ok(())
    }
}
