//! Prefetch: filling the cache with whole images ahead of need — manifests, the chosen
//! platforms' children of an index, configs and layers — through the same verified fills
//! that serve clients. Used by `pullthrough prefetch` and the config's `[[prefetch]]` list.

use crate::core::answers::Manifest;
use crate::core::blob::BlobBody;
use crate::core::error::{CoreError, NotCached};
use crate::core::fill::{self, FillState};
use crate::core::progress::{Event, Progress, Silent};
use crate::core::pull::PullThrough;
use crate::oci::media::{self, AcceptList};
use crate::oci::{manifest, referrers, Digest, ImageRef, Reference};
use crate::upstream::Route;
use futures_util::StreamExt;
use serde::Serialize;
use std::collections::HashMap;
use tokio::sync::watch;

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
        let up = self
            .upstreams()
            .by_host(&image.host)
            .ok_or_else(|| CoreError::UnknownRegistry { host: image.host.to_string() })?;
        Ok(Route { upstream: up.clone(), name: up.normalize(image.name.clone()) })
    }

    /// Fetch an image into the cache; `concurrency` blobs at a time.
    pub async fn prefetch(
        &self,
        image: &ImageRef,
        platforms: &Platforms,
        concurrency: usize,
    ) -> Result<PrefetchReport, CoreError> {
        self.prefetch_with(image, platforms, concurrency, &Silent).await
    }

    /// [`prefetch`](Self::prefetch), reporting to `progress` the bytes the image will fetch
    /// (`Sized`, once its manifests are read) and the bytes as they arrive. The caller, who
    /// loops over the images, reports their start and end.
    pub async fn prefetch_with(
        &self,
        image: &ImageRef,
        platforms: &Platforms,
        concurrency: usize,
        progress: &dyn Progress,
    ) -> Result<PrefetchReport, CoreError> {
        let route = self.route_image(image)?;
        let (top, manifests) = self.image_manifests(&route, image, platforms).await?;
        let is_index = top.media_type == media::OCI_INDEX || top.media_type == media::DOCKER_LIST;
        let blobs = blobs_of(&manifests);
        // An estimate for the bar: the daemon may fill some of these meanwhile.
        let store = &self.store();
        progress
            .event(Event::Sized { bytes: blobs.iter().filter(|(d, _)| !store.is_indexed(d)).map(|(_, n)| n).sum() });
        let count = blobs.len();
        let results: Vec<Result<u64, CoreError>> =
            futures_util::stream::iter(blobs)
                .map(|(d, _)| {
                    let route = route.clone();
                    async move {
                        super::patience::within_budget(&route, &d, || self.ensure_blob(&route, &d, progress)).await
                    }
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

    /// The top-level manifest of an image and the image manifests to fetch: the top one
    /// itself, or the wanted platforms' children of an index.
    async fn image_manifests(
        &self,
        route: &Route,
        image: &ImageRef,
        platforms: &Platforms,
    ) -> Result<(Manifest, Vec<Manifest>), CoreError> {
        let any = AcceptList::default();
        let top = self.manifest_within_budget(route, &image.reference, &any).await?;
        if top.media_type != media::OCI_INDEX && top.media_type != media::DOCKER_LIST {
            return Ok((top.clone(), vec![top]));
        }
        let mut manifests = Vec::new();
        for (child, platform) in manifest::index_children(&top.bytes) {
            if platforms.wants(platform.as_deref()) {
                manifests.push(self.manifest_within_budget(route, &Reference::Digest(child), &any).await?);
            }
        }
        if manifests.is_empty() {
            return Err(CoreError::ManifestUnknown(format!("{image}: no manifest for the requested platforms")));
        }
        Ok((top, manifests))
    }

    /// Make sure a blob is cached; the bytes fetched for it now.
    async fn ensure_blob(&self, route: &Route, digest: &Digest, progress: &dyn Progress) -> Result<u64, CoreError> {
        let blob = self.blob(route, digest).await?;
        if blob.hit {
            return Ok(0);
        }
        match blob.body {
            BlobBody::Cached(mut fill) => {
                let n = follow_fill(&mut fill, progress).await?;
                // Prefetch is about the cache: wait for the commit too.
                match crate::core::fill::settle(&mut fill, |p| p.committed.is_some()).await?.committed {
                    Some(true) => Ok(n),
                    _ => Err(CoreError::NotCached { digest: digest.clone(), why: NotCached::CommitFailed }),
                }
            }
            BlobBody::Uncached { .. } => Err(CoreError::NotCached { digest: digest.clone(), why: NotCached::NoRoom }),
        }
    }

    /// Fetch the referrers of `subject` (the manifest `image` resolved to) into the cache:
    /// every manifest the upstream lists for it (signatures, SBOMs, attestations), with their
    /// blobs, as images of the same repository, so `export` carries them and an offline site
    /// serves them; and cosign's `sha256-<hex>.sig`/`.att`/`.sbom` tags where they exist.
    /// `prefetch --with-referrers`.
    pub async fn prefetch_referrers(
        &self,
        image: &ImageRef,
        subject: &Digest,
        concurrency: usize,
    ) -> Result<Vec<PrefetchReport>, CoreError> {
        let route = self.route_image(image)?;
        let answer = self.referrers(&route, subject, None).await?;
        let mut reports = Vec::new();
        for r in answer.referrers.as_slice() {
            // A referrer under an algorithm this proxy does not fetch is listed, not fetched.
            let Ok(d) = r.digest.parse::<Digest>() else { continue };
            let referrer = ImageRef { reference: Reference::Digest(d), ..image.clone() };
            reports.push(self.prefetch(&referrer, &Platforms::All, concurrency).await?);
        }
        // cosign's tags, where it keeps signatures and attestations without a `subject`.
        for tag in referrers::cosign_tags(subject) {
            let attached = ImageRef { reference: Reference::Tag(tag), ..image.clone() };
            match self.prefetch(&attached, &Platforms::All, concurrency).await {
                Ok(rep) => reports.push(rep),
                Err(CoreError::ManifestUnknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(reports)
    }
}

/// Wait until a fill is verified, reporting its bytes as they land on disk; the bytes
/// written. The fill publishes its progress anyway (for the clients following it): this
/// reads it, so reporting adds nothing to the fill's own path.
async fn follow_fill(fill: &mut watch::Receiver<fill::Progress>, progress: &dyn Progress) -> Result<u64, CoreError> {
    let mut reported = 0;
    loop {
        let (written, state) = {
            let p = fill.borrow_and_update();
            (p.written, p.state.clone())
        };
        progress.bytes(written.saturating_sub(reported));
        reported = reported.max(written);
        match state {
            FillState::Failed(e) => return Err(CoreError::from_fill(&e)),
            FillState::Verified => return Ok(written),
            FillState::Connecting | FillState::Streaming => {}
        }
        if fill.changed().await.is_err() {
            return Err(CoreError::FillEnded);
        }
    }
}

/// The blobs (configs, layers) of image manifests, each once, with the sizes their
/// descriptors declare (0 where a descriptor has none: only the progress estimate uses it).
fn blobs_of(manifests: &[Manifest]) -> Vec<(Digest, u64)> {
    #[derive(serde::Deserialize)]
    struct Desc {
        digest: String,
        #[serde(default)]
        size: u64,
    }
    #[derive(serde::Deserialize)]
    struct Doc {
        config: Option<Desc>,
        #[serde(default)]
        layers: Vec<Desc>,
    }
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    for m in manifests {
        if let Ok(doc) = serde_json::from_slice::<Doc>(&m.bytes) {
            for d in doc.config.into_iter().chain(doc.layers) {
                if let Ok(digest) = d.digest.parse() {
                    sizes.insert(digest, d.size);
                }
            }
        }
    }
    let mut blobs: Vec<(Digest, u64)> = manifests
        .iter()
        .flat_map(|m| manifest::references(&m.bytes))
        .map(|d| {
            let n = sizes.get(&d).copied().unwrap_or(0);
            (d, n)
        })
        .collect();
    blobs.sort();
    blobs.dedup();
    blobs
}
