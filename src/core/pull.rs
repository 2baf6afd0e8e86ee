//! The pull-through service: answers manifest, blob and tag-list requests from the cache,
//! filling it from the upstream a request was routed to.
//!
//! Policy in one place:
//! - by digest (manifest or blob): immutable; served from disk without contacting upstream.
//! - manifest by tag: trusted for the upstream's `tag_ttl`, then revalidated with a HEAD
//!   (cheap, and not counted against Docker Hub's pull limit); if upstream is unreachable
//!   or failing, the last known digest is served stale and that is logged. Within the
//!   `stale_while_revalidate` window after the TTL, the cached answer is given at once and
//!   the revalidation runs in the background (see `revalidate`). While the upstream's
//!   rate-limit budget is low or spent, a tag that moved is followed only when its new
//!   manifest is cached; the GET it would cost is kept for content the cache does not have
//!   (see `upstream::budget`).
//! - blobs: filled once per digest (see `fill`), verified before they enter the cache.

use super::error::{CoreError, ManifestMismatch};
use super::fill::{self, FillError, FillState, Fills, Progress};
use super::memory::Memory;
use super::pulls::Pulls;
use super::source::{count, Lookup, Tier, Via};
use super::vouch::Content;
use crate::cluster::{Cluster, Fetch};
use crate::oci::media::{self, AcceptList};
use crate::oci::{Digest, ImageRef, Reference, RepoName, Tag, TagsQuery};
use crate::shared::{SharedTag, SharedTier};
use crate::store::{Store, TagRecord};
use crate::upstream::{Route, RouteError, Standing, UpstreamError, Upstreams};
use bytes::Bytes;
use http::{header, HeaderMap, Method};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::watch;

/// Largest tag list accepted from upstream, all its pages together.
const MAX_TAGS_BYTES: usize = 16 * 1024 * 1024;
/// Most upstream tag list pages followed for one request.
const MAX_TAG_PAGES: usize = 256;

pub struct PullThrough {
    pub(super) store: Arc<Store>,
    pub(super) fills: Arc<Fills>,
    pub(super) upstreams: Upstreams,
    /// Images never evicted or expired.
    pub(super) pins: Vec<ImageRef>,
    /// The tier shared by every node (an S3 bucket), when configured.
    pub(super) shared: Option<Arc<SharedTier>>,
    /// The peers that share single flight with this node, when configured.
    pub(super) cluster: Option<Arc<Cluster>>,
    /// One turn at a time per manifest fetch (a tag of a repository, or a digest).
    turns: std::sync::Mutex<std::collections::HashMap<TurnKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Verified manifests and fresh tag answers, served without file IO (see `memory`).
    pub(super) memory: Memory,
    /// Image records' pull times, written in batches (see `pulls`).
    pub(super) pulls: Pulls,
    /// Verify on read, background scrub (see `integrity`).
    pub(super) integrity: super::integrity::IntegritySettings,
    /// The tags being refreshed in the background (see `revalidate`).
    pub(super) refreshes: super::revalidate::Refreshes,
    /// This service's own `Arc`, for background work (see `revalidate`); empty unless built
    /// with `into_shared`.
    pub(super) me: std::sync::Weak<PullThrough>,
    /// Each upstream's tag TTL, immutable tags and lifecycle policies (see `policy`).
    pub(super) tag_policies: super::policy::TagPolicies,
}

/// Memory for manifests and tag answers unless `with_memory` says otherwise.
const DEFAULT_MEMORY: u64 = 64 << 20;

/// What concurrent manifest requests take turns on.
#[derive(Clone, PartialEq, Eq, Hash)]
enum TurnKey {
    Tag(String, RepoName, Tag),
    Digest(Digest),
}

/// A manifest ready to serve.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
    /// Served from the cache (true) or fetched from upstream for this request (false).
    pub cached: bool,
}

/// A blob ready to stream.
pub struct Blob {
    pub body: BlobBody,
    /// The blob's size, when known before the transfer ends.
    pub size: Option<u64>,
    /// Served from a committed file (no upstream involved).
    pub hit: bool,
}

pub enum BlobBody {
    /// From the cache: a committed file, or one being filled (follow its progress).
    Cached(watch::Receiver<Progress>),
    /// Straight from upstream, verified but not cached (the cache has no room).
    Uncached(super::relay::Relay),
}

/// One page of a tag list (JSON), with the query for the next page when tags remain.
pub struct TagsPage {
    pub body: Bytes,
    pub next: Option<TagsQuery>,
}

impl PullThrough {
    pub fn new(
        store: Arc<Store>,
        upstreams: Upstreams,
        pins: Vec<ImageRef>,
        max_fills: usize,
        shared: Option<Arc<SharedTier>>,
        cluster: Option<Arc<Cluster>>,
    ) -> PullThrough {
        PullThrough {
            store,
            fills: Arc::new(Fills::new(max_fills, shared.clone(), cluster.clone())),
            upstreams,
            pins,
            shared,
            cluster,
            turns: Default::default(),
            memory: Memory::new(DEFAULT_MEMORY),
            pulls: Pulls::default(),
            integrity: Default::default(),
            tag_policies: Default::default(),
            refreshes: Default::default(),
            me: std::sync::Weak::new(),
        }
    }

    /// Use at most `bytes` of memory for manifests and tag answers (`0`: none).
    pub fn with_memory(mut self, bytes: u64) -> PullThrough {
        self.memory = Memory::new(bytes);
        self
    }

    /// Write the image records' pull times gathered in memory since the last flush (see
    /// `pulls`); the daemon does so every housekeeping tick and at shutdown. Blocking.
    pub fn flush_pulls(&self) -> usize {
        self.pulls.flush(&self.store)
    }

    /// Start background work: ECR token refresh, and a check that the shared tier takes
    /// reads and writes (a warning that says what to fix when it does not). Inside the
    /// runtime, once.
    pub fn start_background(&self) {
        for u in self.upstreams.iter() {
            u.registry.start_background();
        }
        if let Some(c) = &self.cluster {
            c.start_background();
        }
        if let Some(s) = self.shared.clone() {
            tokio::spawn(async move {
                match s.probe().await {
                    Ok(()) => tracing::info!(tier = %s.describe(), "shared tier reachable: reads and writes work"),
                    Err(e) => tracing::warn!(tier = %s.describe(), error = %e,
                        "shared tier cannot be read or written: check [shared.s3] (bucket, endpoint_url, region, path_style) and the AWS credentials (environment, profile, IRSA); pulls go to the upstream meanwhile"),
                }
            });
        }
    }

    /// The shared tier's location and state, when one is configured.
    pub fn shared_tier(&self) -> Option<(String, crate::shared::TierHealth)> {
        self.shared.as_ref().map(|s| (s.describe(), s.health()))
    }

    /// Each upstream's host and what is known about reaching it.
    pub fn upstream_reachability(&self) -> Vec<(String, crate::upstream::Reachability)> {
        self.upstreams.iter().map(|u| (u.host().to_string(), u.registry.reachability())).collect()
    }

    /// Each upstream's rate-limit budget as far as its answers told (for `/readyz`).
    pub fn upstream_budgets(&self) -> serde_json::Map<String, serde_json::Value> {
        self.upstreams.iter().map(|u| (u.host().to_string(), u.registry.budget().describe())).collect()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn fills_in_flight(&self) -> usize {
        self.fills.in_flight()
    }

    pub fn route(&self, ns: Option<&str>, name: &RepoName) -> Result<Route, RouteError> {
        self.upstreams.resolve(ns, name)
    }

    /// The cluster's peer set, when configured (for `/readyz`).
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    pub async fn manifest(
        &self,
        route: &Route,
        reference: &Reference,
        accept: &AcceptList,
    ) -> Result<Manifest, CoreError> {
        self.manifest_via(route, reference, accept, Via::Client).await
    }

    /// A manifest for a client, or for a peer node (`Via::Peer`: never asked of other peers).
    pub async fn manifest_via(
        &self,
        route: &Route,
        reference: &Reference,
        accept: &AcceptList,
        via: Via,
    ) -> Result<Manifest, CoreError> {
        let m = match reference {
            Reference::Digest(d) => self.manifest_by_digest(route, d, via).await?,
            Reference::Tag(t) => self.manifest_by_tag(route, t).await?,
        };
        if !accept.accepts(&m.media_type) {
            return Err(CoreError::NotAcceptable { media_type: m.media_type });
        }
        // The repository's image record: lifecycle policies and `ls` work from these. On
        // disk at the first pull, then batched in memory (see `pulls`).
        self.pulls.note(&self.store, route.upstream.host(), &route.name, &m.digest, &m.media_type).await?;
        Ok(m)
    }

    /// A manifest by digest from memory, else from the local disk (verified as it is read).
    pub(super) async fn cached_manifest(&self, digest: &Digest) -> Result<Option<Manifest>, CoreError> {
        if let Some(m) = self.memory.manifest(digest) {
            // Recency for eviction, as a disk hit counts it (in memory; housekeeping flushes).
            self.store.touch(digest);
            return Ok(Some(m));
        }
        let found = self.store.read_manifest_async(digest, media::MAX_MANIFEST_BYTES).await?;
        let found = found.map(|(bytes, media_type)| Manifest {
            digest: digest.clone(),
            media_type: media_type
                .or_else(|| media::sniff_manifest_type(&bytes))
                .unwrap_or_else(|| media::OCI_MANIFEST.to_string()),
            bytes: Bytes::from(bytes),
            cached: true,
        });
        if let Some(m) = &found {
            self.memory.put_manifest(m);
        }
        Ok(found)
    }

    /// A manifest by digest from the local disk, else from the shared tier (verified, then
    /// stored locally).
    async fn tiered_manifest(&self, digest: &Digest) -> Result<Option<Manifest>, CoreError> {
        if let Some(m) = self.cached_manifest(digest).await? {
            return Ok(Some(m));
        }
        let Some(shared) = &self.shared else { return Ok(None) };
        let (bytes, content_type) = match shared.read_manifest(digest, media::MAX_MANIFEST_BYTES).await {
            Ok(Some(found)) => found,
            Ok(None) => {
                count(Tier::Shared, "manifest", Lookup::Miss);
                return Ok(None);
            }
            Err(e) => {
                count(Tier::Shared, "manifest", Lookup::Error);
                tracing::debug!(%digest, error = %e, "shared tier read failed; asking the upstream");
                return Ok(None);
            }
        };
        if !digest.verifies(&bytes) {
            crate::metrics::METRICS.tier_verification_failures.with_label_values(&[Tier::Shared.as_str()]).inc();
            tracing::warn!(%digest, "manifest in the shared tier failed verification; discarding it");
            shared.remove_corrupt(digest).await;
            return Ok(None);
        }
        count(Tier::Shared, "manifest", Lookup::Hit);
        let media_type = content_type
            .filter(|t| t.starts_with("application/vnd."))
            .or_else(|| media::sniff_manifest_type(&bytes))
            .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
        let m = Manifest { digest: digest.clone(), media_type, bytes, cached: true };
        self.store_manifest(&m).await?;
        Ok(Some(m))
    }

    /// A manifest by digest; one that was not fetched from this route's upstream just now
    /// is served only once that upstream vouched for it in this repository (see `vouch`).
    async fn manifest_by_digest(&self, route: &Route, digest: &Digest, via: Via) -> Result<Manifest, CoreError> {
        let m = self.manifest_by_digest_anywhere(route, digest, via).await?;
        // A peer asking has vouched for its route already (it asks only after its own check).
        if m.cached && via == Via::Client {
            self.vouch(route, digest, Content::Manifest).await?;
        }
        Ok(m)
    }

    async fn manifest_by_digest_anywhere(
        &self,
        route: &Route,
        digest: &Digest,
        via: Via,
    ) -> Result<Manifest, CoreError> {
        if let Some(m) = self.cached_manifest(digest).await? {
            return Ok(m);
        }
        self.in_turn(TurnKey::Digest(digest.clone()), async {
            // The request before ours in line may have fetched it.
            if let Some(m) = self.tiered_manifest(digest).await? {
                return Ok(m);
            }
            if via == Via::Client {
                if let Some(m) = self.peer_manifest(route, digest).await? {
                    return Ok(m);
                }
            }
            let resp = route
                .upstream
                .registry
                .manifest(&route.name, &Reference::Digest(digest.clone()), Method::GET)
                .await
                .map_err(|e| CoreError::from_upstream(e, CoreError::ManifestUnknown(digest.to_string())))?;
            let m = self.read_manifest(route, resp, Some(digest)).await?;
            self.store_manifest(&m).await?;
            // Vouched by this upstream just now: the requests queued behind this one for the
            // same route need not ask again (the image record follows).
            self.store.remember_vouch(route.upstream.host(), &route.name, digest);
            self.share_manifest(&m);
            Ok(m)
        })
        .await
    }

    /// A manifest by digest from the peer that owns it (which fills it once for the whole
    /// cluster), verified here; `None` when no peer serves it.
    async fn peer_manifest(&self, route: &Route, digest: &Digest) -> Result<Option<Manifest>, CoreError> {
        let Some(cluster) = &self.cluster else { return Ok(None) };
        for peer in cluster.ask_order(digest) {
            let Ok(resp) = cluster.fetch(&peer, Fetch::Manifest, route.upstream.host(), &route.name, digest).await
            else {
                continue;
            };
            let read = super::source::read_small(resp.body, media::MAX_MANIFEST_BYTES, cluster.idle_timeout).await;
            let Ok(bytes) = read else {
                cluster.failed(&peer);
                continue;
            };
            if !digest.verifies(&bytes) {
                crate::metrics::METRICS.tier_verification_failures.with_label_values(&[Tier::Peer.as_str()]).inc();
                tracing::warn!(%peer, %digest, "a peer sent a manifest that failed verification; ignoring that peer for a while");
                cluster.failed(&peer);
                continue;
            }
            count(Tier::Peer, "manifest", Lookup::Hit);
            let media_type = resp
                .content_type
                .filter(|t| t.starts_with("application/vnd."))
                .or_else(|| media::sniff_manifest_type(&bytes))
                .unwrap_or_else(|| media::OCI_MANIFEST.to_string());
            // `cached`: like content from the shared tier, it was not fetched from this route's
            // upstream just now, so the route's upstream must vouch for it (see `vouch`).
            let m = Manifest { digest: digest.clone(), media_type, bytes, cached: true };
            self.store_manifest(&m).await?;
            return Ok(Some(m));
        }
        Ok(None)
    }

    /// Write a manifest fetched from the upstream back to the shared tier (background).
    fn share_manifest(&self, m: &Manifest) {
        if let Some(s) = &self.shared {
            s.upload_manifest(&m.digest, &m.media_type, m.bytes.clone());
        }
    }

    /// The shared tier's record of a tag, when it is newer than `local`'s.
    async fn shared_tag(&self, route: &Route, tag: &Tag, local: Option<&TagRecord>) -> Option<TagRecord> {
        let shared = self.shared.as_ref()?;
        match shared.tag(route.upstream.host(), &route.name, tag).await {
            Ok(Some(t)) if local.is_none_or(|l| t.checked_at > l.checked_at) => {
                count(Tier::Shared, "tag", Lookup::Hit);
                Some(TagRecord { digest: t.digest, media_type: t.media_type, checked_at: t.checked_at })
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

    /// A tag's manifest. Concurrent requests for one tag take turns: the first asks
    /// upstream, the others then find its fresh record, so a burst of nodes resolving the
    /// same tag makes one upstream request, not one each (Docker Hub counts them).
    async fn manifest_by_tag(&self, route: &Route, tag: &Tag) -> Result<Manifest, CoreError> {
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

    /// Resolve a tag in its turn (see `manifest_by_tag`): revalidated upstream unless fresh.
    pub(super) async fn refresh_tag(&self, route: &Route, tag: &Tag) -> Result<Manifest, CoreError> {
        let key = TurnKey::Tag(route.upstream.host().to_string(), route.name.clone(), tag.clone());
        self.in_turn(key, self.manifest_by_tag_locked(route, tag)).await
    }

    /// How long a tag answer of this route's upstream is trusted.
    pub(super) fn tag_ttl(&self, route: &Route) -> std::time::Duration {
        self.tag_policies.tag_ttl(route.upstream.host())
    }

    /// Whether a tag's record may be trusted without asking the upstream: it is immutable
    /// by configuration, or younger than the upstream's `tag_ttl`.
    pub(super) fn tag_fresh(&self, route: &Route, tag: &Tag, rec: &TagRecord) -> bool {
        let host = route.upstream.host();
        self.tag_policies.immutable(host, &route.name, tag.as_str())
            || SystemTime::now().duration_since(rec.checked_at).unwrap_or_default() < self.tag_ttl(route)
    }

    /// Run `work` when no other request holds `key`: the first of a burst asks upstream,
    /// the others then find its result in the cache.
    async fn in_turn<T>(&self, key: TurnKey, work: impl std::future::Future<Output = T>) -> T {
        let lock = self.turns.lock().expect("turn locks").entry(key.clone()).or_default().clone();
        let result = {
            let _turn = lock.lock().await;
            work.await
        };
        // Drop the entry once nobody else holds or waits on it.
        let mut turns = self.turns.lock().expect("turn locks");
        if Arc::strong_count(&lock) == 2 {
            turns.remove(&key);
        }
        result
    }

    async fn manifest_by_tag_locked(&self, route: &Route, tag: &Tag) -> Result<Manifest, CoreError> {
        let up = &route.upstream;
        let host = up.host().to_string();
        let fresh = |rec: &TagRecord| self.tag_fresh(route, tag, rec);
        // A fresh answer from memory stands for the record on disk; a stale one does not
        // (another process may have written a newer record): read it again.
        let mut record = match self.memory.tag(&host, &route.name, tag) {
            Some(rec) if fresh(&rec) => Some(TagRecord::clone(&rec)),
            _ => {
                let rec = self.store.get_tag(&host, &route.name, tag).await?;
                if let Some(r) = &rec {
                    self.memory.put_tag(&host, &route.name, tag, r.clone());
                }
                rec
            }
        };

        // Another node may have asked the upstream more recently: its answer counts for the
        // whole cluster within the TTL, and stands in for ours when the upstream is down.
        let mut from_shared = false;
        if !record.as_ref().is_some_and(fresh) {
            if let Some(rec) = self.shared_tag(route, tag, record.as_ref()).await {
                record = Some(rec);
                from_shared = true;
            }
        }

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

        let unknown = || CoreError::ManifestUnknown(format!("{}:{tag}", route.name));
        let reference = Reference::Tag(tag.clone());
        if let Some(m) = cached {
            // Revalidate: a HEAD tells whether the tag still points where it did.
            match up.registry.manifest(&route.name, &reference, Method::HEAD).await {
                Ok(resp) if header_digest(resp.headers()).as_ref() == Some(&m.digest) => {
                    self.record_tag(route, tag, &m).await?;
                    return Ok(m);
                }
                // Moved, while the rate-limit budget is held or spent: the new manifest only if
                // it costs nothing (cached already), else the cached answer. Below the reserve
                // (`Low`) the new manifest is fetched: that is what the reserve is kept for.
                Ok(resp) if matches!(up.registry.budget().standing(), Standing::Held { .. }) => {
                    if let Some(new) = header_digest(resp.headers()) {
                        if let Some(n) = self.tiered_manifest(&new).await? {
                            self.record_tag(route, tag, &n).await?;
                            return Ok(n);
                        }
                    }
                    return Ok(serve_stale_for_budget(route, tag, m, up.registry.budget().standing()));
                }
                Ok(_) => {} // moved, or no digest header: fetch it
                Err(e) if e.is_unavailable() => return Ok(serve_stale(route, tag, m, &e)),
                Err(e) => return Err(CoreError::from_upstream(e, unknown())),
            }
            return match up.registry.moved_manifest(&route.name, &reference).await {
                Ok(resp) => self.fetched_tag(route, tag, resp).await,
                Err(e) if e.is_unavailable() => Ok(serve_stale(route, tag, m, &e)),
                Err(e) => Err(CoreError::from_upstream(e, unknown())),
            };
        }
        let resp = up
            .registry
            .manifest(&route.name, &reference, Method::GET)
            .await
            .map_err(|e| CoreError::from_upstream(e, unknown()))?;
        self.fetched_tag(route, tag, resp).await
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
            let t = SharedTag {
                digest: rec.digest.clone(),
                media_type: rec.media_type.clone(),
                checked_at: rec.checked_at,
            };
            s.put_tag(route.upstream.host(), &route.name, tag, t);
        }
        self.put_local_tag(route, tag, rec).await
    }

    async fn put_local_tag(&self, route: &Route, tag: &Tag, rec: TagRecord) -> Result<(), CoreError> {
        self.store.put_tag(route.upstream.host(), &route.name, tag, rec.clone()).await?;
        self.memory.put_tag(route.upstream.host(), &route.name, tag, rec);
        Ok(())
    }

    /// Store a verified manifest on disk, and keep it in memory.
    async fn store_manifest(&self, m: &Manifest) -> Result<(), CoreError> {
        self.store.put_manifest_async(&m.digest, &m.media_type, m.bytes.clone()).await?;
        self.memory.put_manifest(m);
        Ok(())
    }

    /// Read and verify a manifest response: its digest must equal the one requested, and
    /// the one upstream announced in `Docker-Content-Digest`.
    async fn read_manifest(
        &self,
        route: &Route,
        resp: http::Response<Incoming>,
        expected: Option<&Digest>,
    ) -> Result<Manifest, CoreError> {
        let host = route.upstream.registry.host().to_string();
        let announced = header_digest(resp.headers());
        let (content_type, body) = read_verified_manifest(route, resp, expected.into_iter().chain(&announced)).await?;
        let digest = expected.cloned().unwrap_or_else(|| Digest::of_bytes(&body));
        let generic =
            |t: &str| t.is_empty() || t == "application/json" || t == "text/plain" || t == "application/octet-stream";
        let media_type = match content_type {
            Some(t) if !generic(&t) => t,
            _ => media::sniff_manifest_type(&body).ok_or_else(|| {
                CoreError::Upstream(UpstreamError::BadResponse {
                    host: host.clone(),
                    message: "response is not a manifest".into(),
                })
            })?,
        };
        Ok(Manifest { digest, media_type, bytes: body, cached: false })
    }

    /// A blob to stream: from disk if cached, else by joining (or starting) its fill and
    /// waiting for upstream's response headers. Either only once the route's upstream
    /// vouched for it in this repository (see `vouch`).
    pub async fn blob(&self, route: &Route, digest: &Digest) -> Result<Blob, CoreError> {
        self.blob_via(route, digest, Via::Client).await
    }

    /// A blob for a client, or for a peer node (`Via::Peer`: the asking node vouched for
    /// its route already, and the fill, if one starts, never asks other peers).
    pub async fn blob_via(&self, route: &Route, digest: &Digest, via: Via) -> Result<Blob, CoreError> {
        if via == Via::Client {
            self.vouch(route, digest, Content::Blob).await?;
        }
        if let Some((f, len)) = self.store.open_blob_async(digest).await? {
            return Ok(Blob { body: BlobBody::Cached(fill::complete(f, len)), size: Some(len), hit: true });
        }
        let (mut rx, started) = self.fills.join_or_start(&self.store, route, digest, via);
        if !started {
            tracing::debug!(%digest, "joined a fill in progress");
        }
        let p = fill::settle(&mut rx, |p| !matches!(p.state, FillState::Connecting)).await?;
        match &p.state {
            FillState::Failed(e) if matches!(**e, FillError::NoSpace { .. }) => self.relay(route, digest).await,
            FillState::Failed(e) => Err(CoreError::from_fill(e)),
            _ => Ok(Blob { size: p.total, body: BlobBody::Cached(rx), hit: false }),
        }
    }

    /// Serve a blob from upstream without caching it.
    async fn relay(&self, route: &Route, digest: &Digest) -> Result<Blob, CoreError> {
        let registry = &route.upstream.registry;
        let resp = registry
            .blob(&route.name, digest, Method::GET)
            .await
            .map_err(|e| CoreError::from_upstream(e, CoreError::BlobUnknown))?;
        let relay = super::relay::Relay::new(super::source::SourceBody::upstream(resp, registry), digest.clone());
        Ok(Blob { size: relay.size(), body: BlobBody::Uncached(relay), hit: false })
    }

    /// Wait until the blob behind `progress` is complete and verified; its final size.
    pub async fn wait_verified(&self, progress: &mut watch::Receiver<Progress>) -> Result<u64, CoreError> {
        let p = fill::settle(progress, |p| matches!(p.state, FillState::Verified | FillState::Failed(_))).await?;
        match &p.state {
            FillState::Failed(e) => Err(CoreError::from_fill(e)),
            _ => Ok(p.written),
        }
    }

    /// A blob's size without transferring it: from disk, else a HEAD upstream.
    pub async fn blob_size(&self, route: &Route, digest: &Digest) -> Result<Option<u64>, CoreError> {
        if let Some((_, len)) = self.store.open_blob_async(digest).await? {
            self.vouch(route, digest, Content::Blob).await?;
            return Ok(Some(len));
        }
        let resp = route
            .upstream
            .registry
            .blob(&route.name, digest, Method::HEAD)
            .await
            .map_err(|e| CoreError::from_upstream(e, CoreError::BlobUnknown))?;
        self.store.confirm_async(route.upstream.host(), &route.name, digest).await?;
        if resp.status().is_redirection() {
            // The registry has it (it redirects to storage); the size is the storage's.
            return Ok(None);
        }
        Ok(resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()))
    }

    /// One page of a repository's tag list (never cached: tag lists change). The upstream's
    /// whole list is read (following its own `Link` pages, if it paginates) and paged here:
    /// upstreams that ignore `n`/`last` or answer unsorted still give spec-conforming pages.
    /// `listed_as` is the repository's name as the client asked for it (with any prefix).
    pub async fn tags(&self, route: &Route, listed_as: &RepoName, query: &TagsQuery) -> Result<TagsPage, CoreError> {
        let all = self.all_tags(route).await?;
        let page = query.page(all);
        let tags: Vec<&str> = page.tags.iter().map(Tag::as_str).collect();
        let body = serde_json::json!({ "name": listed_as.as_str(), "tags": tags }).to_string();
        Ok(TagsPage { body: Bytes::from(body), next: page.next })
    }

    /// Every tag the upstream lists for a repository, in its order; at most `MAX_TAGS_BYTES`
    /// of listings over at most `MAX_TAG_PAGES` pages. Tags that break the tag grammar cannot
    /// be pulled through this proxy anyway and are left out.
    async fn all_tags(&self, route: &Route) -> Result<Vec<Tag>, CoreError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let registry = &route.upstream.registry;
        let bad = |message: String| {
            CoreError::Upstream(UpstreamError::BadResponse { host: registry.host().to_string(), message })
        };
        let (mut all, mut read, mut skipped) = (Vec::new(), 0usize, 0usize);
        let mut query = TagsQuery::default();
        for _ in 0..MAX_TAG_PAGES {
            let resp = registry
                .tags(&route.name, &query.to_query())
                .await
                .map_err(|e| CoreError::from_upstream(e, CoreError::NameUnknown))?;
            let next = resp.headers().get(header::LINK).and_then(|v| v.to_str().ok()).and_then(next_link_query);
            let budget = MAX_TAGS_BYTES
                .checked_sub(read)
                .filter(|b| *b > 0)
                .ok_or_else(|| bad(format!("the tag list is longer than {MAX_TAGS_BYTES} bytes")))?;
            let body = registry.read_body(resp, budget, "tag list").await.map_err(CoreError::Upstream)?;
            read += body.len();
            let list: TagList =
                serde_json::from_slice(&body).map_err(|e| bad(format!("tag list is not valid JSON: {e}")))?;
            for t in list.tags.unwrap_or_default() {
                match t.parse::<Tag>() {
                    Ok(t) => all.push(t),
                    Err(_) => skipped += 1,
                }
            }
            // Follow the upstream's pages while they make progress.
            match next {
                Some(n) if n.last.is_some() && n.last != query.last => query = n,
                _ => break,
            }
        }
        if skipped > 0 {
            tracing::debug!(repo = %route.name, skipped, "upstream listed tags that break the tag grammar; left out");
        }
        Ok(all)
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

pub(super) fn header_digest(h: &HeaderMap) -> Option<Digest> {
    h.get("docker-content-digest")?.to_str().ok()?.trim().parse().ok()
}

/// Read a manifest response from `route`'s upstream: its Content-Type without parameters,
/// and its body (at most `media::MAX_MANIFEST_BYTES`), verified against each of `wants`.
/// Each digest is checked with its own algorithm: an upstream may announce sha256 for a
/// manifest asked for by sha512 (Debian's docker-registry does). Which media type to
/// record is the caller's to decide.
pub(crate) async fn read_verified_manifest<'a>(
    route: &Route,
    resp: http::Response<Incoming>,
    wants: impl IntoIterator<Item = &'a Digest>,
) -> Result<(Option<String>, Bytes), CoreError> {
    let registry = &route.upstream.registry;
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
    let body = registry.read_body(resp, media::MAX_MANIFEST_BYTES, "manifest").await.map_err(CoreError::Upstream)?;
    for want in wants {
        if !want.verifies(&body) {
            let got = Digest::of_bytes_with(want.algorithm(), &body);
            return Err(CoreError::ManifestMismatch(ManifestMismatch {
                host: registry.host().to_string(),
                name: route.name.clone(),
                got,
                want: want.clone(),
            }));
        }
    }
    Ok((content_type, body))
}

/// The query string of a `Link: <…?last=x&n=y>; rel="next"` header.
fn next_link_query(link: &str) -> Option<TagsQuery> {
    let (target, params) = link.split_once('>')?;
    if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
        return None;
    }
    let target = target.trim().trim_start_matches('<');
    let (_, query) = target.split_once('?')?;
    TagsQuery::parse(query).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_next_link() {
        assert_eq!(
            next_link_query(r#"</v2/library/nginx/tags/list?last=1.2&n=2>; rel="next""#)
                .map(|q| q.to_query())
                .as_deref(),
            Some("n=2&last=1.2")
        );
        assert_eq!(next_link_query(r#"</v2/x/tags/list?n=2>; rel="prev""#), None);
        assert_eq!(next_link_query("garbage"), None);
    }
}
