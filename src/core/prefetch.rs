//! Prefetch: filling the cache with whole images ahead of need — manifests, the chosen
//! platforms' children of an index, configs and layers — through the same verified fills
//! that serve clients. Used by `pullthrough prefetch` and the config's `[[prefetch]]` list.

use super::error::CoreError;
use super::pull::{BlobBody, PullThrough};
use crate::oci::media::{self, AcceptList};
use crate::oci::{manifest, Digest, ImageRef, Reference};
use crate::upstream::Route;
use futures_util::StreamExt;
use serde::Serialize;

/// Which platforms of a multi-platform image to fetch.
#[derive(Debug, Clone)]
pub enum Platforms {
    All,
    /// `os/arch` or `os/arch/variant`; `linux/arm64` also matches `linux/arm64/v8`.
    Only(Vec<String>),
}

impl Platforms {
    fn wants(&self, platform: Option<&str>) -> bool {
        match (self, platform) {
            (Platforms::All, _) => true,
            // Entries without a platform (attestations and the like) are not images to run.
            (Platforms::Only(_), None) => false,
            (Platforms::Only(list), Some(p)) => list.iter().any(|w| p == w || p.starts_with(&format!("{w}/"))),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PrefetchReport {
    pub image: String,
    pub digest: String,
    pub manifests: usize,
    pub blobs: usize,
    /// Bytes fetched from upstream now (blobs already cached are not counted).
    pub fetched_bytes: u64,
}

impl PullThrough {
    /// The route for an operator-written image reference.
    pub fn route_image(&self, image: &ImageRef) -> Result<Route, CoreError> {
        let up = self.upstreams.by_host(&image.host).ok_or_else(|| {
            CoreError::NameUnknownMsg(format!("registry {:?} is not a configured upstream", image.host))
        })?;
        Ok(Route { upstream: up.clone(), name: up.normalize(image.name.clone()) })
    }

    /// Fetch an image into the cache; `concurrency` blobs at a time.
    pub async fn prefetch(
        &self,
        image: &ImageRef,
        platforms: &Platforms,
        concurrency: usize,
    ) -> Result<PrefetchReport, CoreError> {
        let route = self.route_image(image)?;
        let any = AcceptList::default();
        let top = self.manifest(&route, &image.reference, &any).await?;
        let mut manifests = vec![top.clone()];
        let is_index = top.media_type == media::OCI_INDEX || top.media_type == media::DOCKER_LIST;
        if is_index {
            manifests.clear();
            for (child, platform) in manifest::index_children(&top.bytes) {
                if platforms.wants(platform.as_deref()) {
                    manifests.push(self.manifest(&route, &Reference::Digest(child), &any).await?);
                }
            }
            if manifests.is_empty() {
                return Err(CoreError::ManifestUnknown(format!("{image}: no manifest for the requested platforms")));
            }
        }
        let mut blobs: Vec<Digest> = manifests.iter().flat_map(|m| manifest::references(&m.bytes)).collect();
        blobs.sort();
        blobs.dedup();
        let count = blobs.len();
        let results: Vec<Result<u64, CoreError>> = futures_util::stream::iter(blobs)
            .map(|d| {
                let route = route.clone();
                async move { self.ensure_blob(&route, &d).await }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut fetched = 0;
        for r in results {
            fetched += r?;
        }
        Ok(PrefetchReport {
            image: image.to_string(),
            digest: top.digest.to_string(),
            manifests: manifests.len() + usize::from(is_index),
            blobs: count,
            fetched_bytes: fetched,
        })
    }

    /// Make sure a blob is cached; the bytes fetched for it now.
    async fn ensure_blob(&self, route: &Route, digest: &Digest) -> Result<u64, CoreError> {
        let blob = self.blob(route, digest).await?;
        if blob.hit {
            return Ok(0);
        }
        match blob.body {
            BlobBody::Cached(mut progress) => {
                let n = self.wait_verified(&mut progress).await?;
                // Prefetch is about the cache: wait for the commit too.
                match super::fill::settle(&mut progress, |p| p.committed.is_some()).await?.committed {
                    Some(true) => Ok(n),
                    _ => Err(CoreError::Store(std::io::Error::other(format!(
                        "{digest} was verified but could not be written to the cache"
                    )))),
                }
            }
            BlobBody::Uncached { .. } => {
                Err(CoreError::Store(std::io::Error::other(format!("no room in the cache for {digest}"))))
            }
        }
    }
}
