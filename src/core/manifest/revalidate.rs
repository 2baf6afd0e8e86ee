//! Stale-while-revalidate for mutable tags.
//!
//! After a tag's `tag_ttl` and within its upstream's (or repository rule's)
//! `stale_while_revalidate` window, the cached answer is given at once and the tag is
//! revalidated in the background, one refresh per tag however many requests arrive: a pod
//! never waits on a slow or rate-limited upstream for a tag it has an answer for. A refresh
//! that finds the tag moved fetches the new manifest (and, for a single-platform image, starts
//! fills of its blobs through the ordinary fill path), so the next pull is warm. Beyond the
//! window a request revalidates in the foreground as before (serving stale only when the
//! upstream fails).
//!
//! Background work needs an owned handle on the service (its [`Owner`]):
//! `PullThrough::into_shared` builds the `Arc` and gives [`Manifests`] a weak reference to
//! it. A service not built that way (the CLI's offline commands) has no background refresh
//! and revalidates in the foreground.

use super::{Manifests, TagKey};
use crate::core::answers::Manifest;
use crate::core::error::CoreError;
use crate::oci::{manifest, media, Digest, Tag};
use crate::store::TagRecord;
use crate::upstream::budget::Hold;
use crate::upstream::{Route, Standing};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::SystemTime;

/// How a background refresh ended (the `result` label of its metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refreshed {
    Unchanged,
    Moved,
    Failed,
}

impl Refreshed {
    fn as_str(self) -> &'static str {
        match self {
            Refreshed::Unchanged => "unchanged",
            Refreshed::Moved => "moved",
            Refreshed::Failed => "failed",
        }
    }
}

/// The service a background refresh runs on: its manifests, and its blob fills (to warm
/// the blobs of a tag that moved).
pub(in crate::core) trait Owner: Send + Sync + 'static {
    fn manifests(&self) -> &Manifests;
    /// Fill `digest`'s blob as a client's pull of it would.
    fn warm_blob<'a>(&'a self, route: &'a Route, digest: &'a Digest) -> BoxFuture<'a, Result<(), CoreError>>;
}

impl Manifests {
    /// A tag's cached manifest when its record is past `tag_ttl` but within the
    /// stale-while-revalidate window: returned at once, with a background refresh started.
    /// `None`: answer the usual way.
    pub(super) async fn stale_while_revalidate(&self, route: &Route, tag: &Tag) -> Result<Option<Manifest>, CoreError> {
        let up = &route.upstream;
        let window = self.policies.stale_while_revalidate(up.host(), &route.name);
        if window.is_zero() {
            return Ok(None);
        }
        let Some(owner) = self.owner.as_ref().and_then(|o| o.upgrade()) else { return Ok(None) };
        let Some(rec) = self.tag_record(route, tag).await? else { return Ok(None) };
        let age = SystemTime::now().duration_since(rec.checked_at).unwrap_or_default();
        if self.tag_fresh(route, tag, &rec) || age >= self.tag_ttl(route).saturating_add(window) {
            return Ok(None);
        }
        let Some(m) = self.cached_manifest(&rec.digest).await? else { return Ok(None) };
        tracing::debug!(upstream = %up.host(), repo = %route.name, %tag, digest = %m.digest, age_s = age.as_secs(),
            "tag past tag_ttl, within stale_while_revalidate: answered from the cache, revalidating in the background");
        // While the upstream's Retry-After runs a refresh could not ask it: the answer stands,
        // and the first request after it ends starts one.
        if !matches!(up.registry.budget().standing(), Standing::Held { hold: Hold::Told, .. }) {
            self.spawn_refresh(owner, route, tag, &m);
        }
        Ok(Some(m))
    }

    /// Revalidate `tag` in the background unless a refresh of it runs already.
    fn spawn_refresh(&self, owner: Arc<dyn Owner>, route: &Route, tag: &Tag, answered: &Manifest) {
        let Some(claim) = self.refreshes.try_claim(TagKey::of(route, tag)) else { return };
        let (route, tag, old) = (route.clone(), tag.clone(), answered.digest.clone());
        tokio::spawn(async move {
            let _claim = claim;
            let manifests = owner.manifests();
            let result = match manifests.refresh_tag(&route, &tag).await {
                // Served stale again (the upstream could not confirm it): not a revalidation.
                Ok(m) if m.digest == old => match manifests.confirmed(&route, &tag).await {
                    true => Refreshed::Unchanged,
                    false => Refreshed::Failed,
                },
                Ok(m) => {
                    tracing::info!(upstream = %route.upstream.host(), repo = %route.name, %tag, from = %old, to = %m.digest,
                        "tag moved upstream (background revalidation); the new manifest is cached");
                    warm_blobs(&*owner, &route, &m).await;
                    Refreshed::Moved
                }
                Err(e) => {
                    tracing::warn!(upstream = %route.upstream.host(), repo = %route.name, %tag, error = %e,
                        "background revalidation of a tag failed; the cached answer stands");
                    Refreshed::Failed
                }
            };
            crate::metrics::METRICS.tag_refreshes.with_label_values(&[route.upstream.host(), result.as_str()]).inc();
        });
    }

    /// Whether the upstream confirmed `tag` just now: its record is fresh.
    async fn confirmed(&self, route: &Route, tag: &Tag) -> bool {
        matches!(self.tag_record(route, tag).await, Ok(Some(rec)) if self.tag_fresh(route, tag, &rec))
    }

    /// A tag's record: from memory, else from disk (memory may be off, or have let it go).
    async fn tag_record(&self, route: &Route, tag: &Tag) -> Result<Option<TagRecord>, CoreError> {
        let host = route.upstream.host();
        match self.memory.tag(host, &route.name, tag) {
            Some(rec) => Ok(Some(TagRecord::clone(&rec))),
            None => Ok(self.store.get_tag_async(host, &route.name, tag).await?),
        }
    }
}

/// Start fills of a single-platform image's blobs, so the next pull is warm. Not for an
/// index: which platforms will be pulled is not known, and each child manifest would be
/// a counted request on a rate-limited upstream.
async fn warm_blobs(owner: &dyn Owner, route: &Route, m: &Manifest) {
    if m.media_type == media::OCI_INDEX || m.media_type == media::DOCKER_LIST {
        return;
    }
    if !matches!(route.upstream.registry.budget().standing(), Standing::Open) {
        return;
    }
    for digest in manifest::references(&m.bytes) {
        // A fill runs to its end without a reader; dropping the answer leaves it running.
        if let Err(e) = owner.warm_blob(route, &digest).await {
            tracing::debug!(repo = %route.name, %digest, error = %e, "warming a blob of a moved tag failed");
        }
    }
}
