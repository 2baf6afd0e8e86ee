//! A manifest by tag: the tag's record (memory, disk, or the shared tier when newer), the
//! manifest it points to, and revalidation upstream once the record is past its TTL (or
//! serving it stale when the upstream cannot answer, or its rate-limit budget is kept back).

use super::{Manifests, TagKey, TurnKey};
use crate::core::answers::Manifest;
use crate::core::blob::source::{count, Lookup, Tier};
use crate::core::error::CoreError;
use crate::oci::{Reference, Tag};
use crate::shared::SharedTag;
use crate::store::TagRecord;
use crate::upstream::{Route, Standing, UpstreamError};
use http::Method;
use hyper::body::Incoming;
use std::time::SystemTime;

impl Manifests {
    /// A tag's manifest. Concurrent requests for one tag take turns: the first asks
    /// upstream, the others then find its fresh record, so a burst of nodes resolving the
    /// same tag makes one upstream request, not one each (Docker Hub counts them).
    pub(super) async fn by_tag(&self, route: &Route, tag: &Tag) -> Result<Manifest, CoreError> {
        // The common case: a fresh answer and its manifest in memory. No IO, no turn.
        if let Some(rec) = self.memory.tag(route.upstream.host(), &route.name, tag) {
            if self.tag_fresh(route, tag, &rec) {
                if let Some(m) = self.memory.manifest(&rec.digest) {
                    self.store.touch(&rec.digest);
                    return Ok(m);
                }
            }
        }
        // Past its TTL but within stale-while-revalidate: at once, refreshed in the background.
        // Both futures are large (tiers, upstream, records): boxed, so a debug build's worker
        // stack does not overflow on them.
        if let Some(m) = Box::pin(self.stale_while_revalidate(route, tag)).await? {
            return Ok(m);
        }
        Box::pin(self.refresh_tag(route, tag)).await
    }

    /// Resolve a tag in its turn (see `by_tag`): revalidated upstream unless fresh.
    pub(super) async fn refresh_tag(&self, route: &Route, tag: &Tag) -> Result<Manifest, CoreError> {
        self.turns.in_turn(TurnKey::Tag(TagKey::of(route, tag)), self.by_tag_in_turn(route, tag)).await
    }

    /// How long a tag answer of this route's upstream is trusted.
    pub(crate) fn tag_ttl(&self, route: &Route) -> std::time::Duration {
        self.policies.tag_ttl(route.upstream.host())
    }

    /// Whether a tag's record may be trusted without asking the upstream: it is immutable
    /// by configuration, or younger than the upstream's `tag_ttl`.
    pub(super) fn tag_fresh(&self, route: &Route, tag: &Tag, rec: &TagRecord) -> bool {
        let host = route.upstream.host();
        self.policies.immutable(host, &route.name, tag.as_str())
            || SystemTime::now().duration_since(rec.checked_at).unwrap_or_default() < self.tag_ttl(route)
    }

    async fn by_tag_in_turn(&self, route: &Route, tag: &Tag) -> Result<Manifest, CoreError> {
        let fresh = |rec: &TagRecord| self.tag_fresh(route, tag, rec);
        let (record, from_shared) = self.known_record(route, tag).await?;
        let mut cached = None;
        if let Some(rec) = &record {
            cached = self.tiered_manifest(&rec.digest).await?;
            if let Some(m) = &cached {
                if fresh(rec) {
                    if from_shared {
                        self.put_local_tag(route, tag, rec.clone()).await?;
                    }
                    return Ok(m.clone());
                }
            }
        }
        match cached {
            Some(m) => self.revalidate(route, tag, m).await,
            None => {
                let resp = self.upstream_tag(route, tag, Method::GET).await?;
                self.fetched_tag(route, tag, resp).await
            }
        }
    }

    /// The tag's record as this node knows it, and whether it came from the shared tier:
    /// another node may have asked the upstream more recently, and its answer counts for
    /// the whole cluster within the TTL (and stands in for ours when the upstream is down).
    async fn known_record(&self, route: &Route, tag: &Tag) -> Result<(Option<TagRecord>, bool), CoreError> {
        let host = route.upstream.host();
        let fresh = |rec: &TagRecord| self.tag_fresh(route, tag, rec);
        // A fresh answer from memory stands for the record on disk; a stale one does not
        // (another process may have written a newer record): read it again.
        let record = match self.memory.tag(host, &route.name, tag) {
            Some(rec) if fresh(&rec) => Some(TagRecord::clone(&rec)),
            _ => {
                let rec = self.store.get_tag_async(host, &route.name, tag).await?;
                if let Some(r) = &rec {
                    self.memory.put_tag(host, &route.name, tag, r.clone());
                }
                rec
            }
        };
        if !record.as_ref().is_some_and(fresh) {
            if let Some(rec) = self.shared_tag(route, tag, record.as_ref()).await {
                return Ok((Some(rec), true));
            }
        }
        Ok((record, false))
    }

    /// A cached tag past its TTL: a HEAD tells whether the tag still points where it did.
    async fn revalidate(&self, route: &Route, tag: &Tag, m: Manifest) -> Result<Manifest, CoreError> {
        let budget = route.upstream.registry.budget();
        match self.upstream_tag(route, tag, Method::HEAD).await {
            Ok(resp) if super::header_digest(resp.headers()).as_ref() == Some(&m.digest) => {
                self.record_tag(route, tag, &m).await?;
                return Ok(m);
            }
            // Moved, while the rate-limit budget is held or spent: the new manifest only if
            // it costs nothing (cached already), else the cached answer. Below the reserve
            // (`Low`) the new manifest is fetched: that is what the reserve is kept for.
            Ok(resp) if matches!(budget.standing(), Standing::Held { .. }) => {
                if let Some(new) = super::header_digest(resp.headers()) {
                    if let Some(n) = self.tiered_manifest(&new).await? {
                        self.record_tag(route, tag, &n).await?;
                        return Ok(n);
                    }
                }
                return Ok(serve_stale_for_budget(route, tag, m, budget.standing()));
            }
            Ok(_) => {} // moved, or no digest header: fetch it
            Err(CoreError::Upstream(e)) if e.is_unavailable() => return Ok(serve_stale(route, tag, m, &e)),
            Err(e) => return Err(e),
        }
        let reference = Reference::Tag(tag.clone());
        match route.upstream.registry.moved_manifest(&route.name, &reference).await {
            Ok(resp) => self.fetched_tag(route, tag, resp).await,
            Err(e) if e.is_unavailable() => Ok(serve_stale(route, tag, m, &e)),
            Err(e) => Err(CoreError::from_upstream(e, CoreError::ManifestUnknown(format!("{}:{tag}", route.name)))),
        }
    }

    /// Ask the route's upstream for a tag; any answer but "not found" stays
    /// `CoreError::Upstream` (so the caller can serve stale when it is unavailable).
    async fn upstream_tag(
        &self,
        route: &Route,
        tag: &Tag,
        method: Method,
    ) -> Result<http::Response<Incoming>, CoreError> {
        let reference = Reference::Tag(tag.clone());
        let unknown = || CoreError::ManifestUnknown(format!("{}:{tag}", route.name));
        route
            .upstream
            .registry
            .manifest(&route.name, &reference, method)
            .await
            .map_err(|e| CoreError::from_upstream(e, unknown()))
    }

    async fn fetched_tag(
        &self,
        route: &Route,
        tag: &Tag,
        resp: http::Response<Incoming>,
    ) -> Result<Manifest, CoreError> {
        let m = self.read_manifest(route, resp, None).await?;
        self.store_manifest(&m).await?;
        self.share_manifest(&m);
        self.record_tag(route, tag, &m).await?;
        Ok(m)
    }

    /// Record that the upstream confirmed `tag` → `m` just now, locally and in the shared tier.
    async fn record_tag(&self, route: &Route, tag: &Tag, m: &Manifest) -> Result<(), CoreError> {
        let rec =
            TagRecord { digest: m.digest.clone(), media_type: m.media_type.clone(), checked_at: SystemTime::now() };
        if let Some(s) = &self.shared {
            s.put_tag(route.upstream.host(), &route.name, tag, SharedTag::from(rec.clone()));
        }
        self.put_local_tag(route, tag, rec).await
    }

    async fn put_local_tag(&self, route: &Route, tag: &Tag, rec: TagRecord) -> Result<(), CoreError> {
        self.store.put_tag_async(route.upstream.host(), &route.name, tag, rec.clone()).await?;
        self.memory.put_tag(route.upstream.host(), &route.name, tag, rec);
        Ok(())
    }

    /// The shared tier's record of a tag, when it is newer than `local`'s.
    async fn shared_tag(&self, route: &Route, tag: &Tag, local: Option<&TagRecord>) -> Option<TagRecord> {
        let shared = self.shared.as_ref()?;
        match shared.tag(route.upstream.host(), &route.name, tag).await {
            Ok(Some(t)) if local.is_none_or(|l| t.checked_at > l.checked_at) => {
                count(Tier::Shared, "tag", Lookup::Hit);
                Some(TagRecord::from(t))
            }
            Ok(_) => {
                count(Tier::Shared, "tag", Lookup::Miss);
                None
            }
            Err(e) => {
                count(Tier::Shared, "tag", Lookup::Error);
                tracing::debug!(repo = %route.name, %tag, error = %e, "shared tier tag read failed");
                None
            }
        }
    }
}

impl From<SharedTag> for TagRecord {
    fn from(t: SharedTag) -> TagRecord {
        TagRecord { digest: t.digest, media_type: t.media_type, checked_at: t.checked_at }
    }
}

impl From<TagRecord> for SharedTag {
    fn from(r: TagRecord) -> SharedTag {
        SharedTag { digest: r.digest, media_type: r.media_type, checked_at: r.checked_at }
    }
}

fn serve_stale(route: &Route, tag: &Tag, m: Manifest, e: &UpstreamError) -> Manifest {
    if let UpstreamError::TooManyRequests { retry_after, .. } = e {
        tracing::warn!(upstream = %route.upstream.host(), repo = %route.name, %tag, digest = %m.digest,
            retry_after_s = retry_after.map(|d| d.as_secs()), "upstream rate limit: serving the cached digest for this tag without revalidating it (stale)");
    } else {
        tracing::warn!(upstream = %route.upstream.host(), repo = %route.name, %tag, digest = %m.digest, error = %e,
            "upstream unavailable; serving the cached digest for this tag (stale)");
    }
    crate::metrics::METRICS.stale_serves.with_label_values(&[route.upstream.host()]).inc();
    m
}

/// A tag that moved upstream, answered with its cached digest because fetching the new
/// manifest would spend rate-limit budget kept back (see `upstream::budget`).
fn serve_stale_for_budget(route: &Route, tag: &Tag, m: Manifest, standing: Standing) -> Manifest {
    tracing::warn!(upstream = %route.upstream.host(), repo = %route.name, %tag, digest = %m.digest, ?standing,
        "the tag moved upstream, but its rate-limit budget is held: serving the cached digest (stale) until it recovers");
    crate::metrics::METRICS.stale_serves.with_label_values(&[route.upstream.host()]).inc();
    m
}
