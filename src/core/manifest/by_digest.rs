//! A manifest by digest, through the tiers in their order (`tiers`): memory and the local
//! disk, the shared tier, the peer that owns it, the upstream. Each tier's bytes are
//! verified against the digest before they are stored or served.

use super::{Manifests, TurnKey};
use crate::cluster::Fetch;
use crate::core::answers::Manifest;
use crate::core::blob::source::{count, read_small, Lookup, Tier, Via};
use crate::core::error::CoreError;
use crate::core::tiers;
use crate::oci::media;
use crate::oci::{Digest, Reference};
use crate::upstream::Route;
use bytes::Bytes;
use http::Method;

impl Manifests {
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
            media_type: media::manifest_type(media_type.as_deref(), &bytes),
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
    pub(super) async fn tiered_manifest(&self, digest: &Digest) -> Result<Option<Manifest>, CoreError> {
        match self.cached_manifest(digest).await? {
            Some(m) => Ok(Some(m)),
            None => self.shared_manifest(digest).await,
        }
    }

    pub(super) async fn by_digest_anywhere(
        &self,
        route: &Route,
        digest: &Digest,
        via: Via,
    ) -> Result<Manifest, CoreError> {
        if let Some(m) = self.cached_manifest(digest).await? {
            return Ok(m);
        }
        self.turns
            .in_turn(TurnKey::Digest(digest.clone()), async {
                // From the local disk again: the request before ours in line may have fetched it.
                for tier in tiers::order(via) {
                    if let Some(m) = self.ask_tier(tier, route, digest).await? {
                        return Ok(m);
                    }
                }
                Err(CoreError::ManifestUnknown(digest.to_string()))
            })
            .await
    }

    async fn ask_tier(&self, tier: Tier, route: &Route, digest: &Digest) -> Result<Option<Manifest>, CoreError> {
        match tier {
            Tier::Local => self.cached_manifest(digest).await,
            Tier::Shared => self.shared_manifest(digest).await,
            Tier::Peer => self.peer_manifest(route, digest).await,
            Tier::Upstream => self.upstream_manifest(route, digest).await.map(Some),
        }
    }

    /// A manifest by digest from the shared tier (verified, then stored locally).
    async fn shared_manifest(&self, digest: &Digest) -> Result<Option<Manifest>, CoreError> {
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
            tiers::bad_bytes(Tier::Shared, "manifest", digest);
            shared.remove_corrupt(digest).await;
            return Ok(None);
        }
        count(Tier::Shared, "manifest", Lookup::Hit);
        let media_type = media::manifest_type(content_type.as_deref(), &bytes);
        let m = Manifest { digest: digest.clone(), media_type, bytes, cached: true };
        self.store_manifest(&m).await?;
        Ok(Some(m))
    }

    /// A manifest by digest from the peer that owns it (which fills it once for the whole
    /// cluster), verified here; `None` when no peer serves it.
    async fn peer_manifest(&self, route: &Route, digest: &Digest) -> Result<Option<Manifest>, CoreError> {
        let Some(cluster) = &self.cluster else { return Ok(None) };
        for peer in cluster.ask_order(digest) {
            let Ok(resp) =
                cluster.fetch_from(&peer, Fetch::Manifest, route.upstream.host(), &route.name, digest, None).await
            else {
                continue;
            };
            let Ok(bytes) = read_small(resp.body, media::MAX_MANIFEST_BYTES, cluster.idle_timeout).await else {
                cluster.failed(&peer);
                continue;
            };
            if !digest.verifies(&bytes) {
                tiers::bad_bytes(Tier::Peer, "manifest", digest);
                tracing::warn!(%peer, %digest, "ignoring that peer for a while");
                cluster.failed(&peer);
                continue;
            }
            count(Tier::Peer, "manifest", Lookup::Hit);
            let media_type = media::manifest_type(resp.content_type.as_deref(), &bytes);
            // `cached`: like content from the shared tier, it was not fetched from this route's
            // upstream just now, so the route's upstream must vouch for it (see `vouch`).
            let m = Manifest { digest: digest.clone(), media_type, bytes, cached: true };
            self.store_manifest(&m).await?;
            return Ok(Some(m));
        }
        Ok(None)
    }

    /// A manifest by digest from the route's upstream: verified, stored, shared.
    async fn upstream_manifest(&self, route: &Route, digest: &Digest) -> Result<Manifest, CoreError> {
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
    }

    /// Write a manifest fetched from the upstream back to the shared tier (background).
    pub(super) fn share_manifest(&self, m: &Manifest) {
        if let Some(s) = &self.shared {
            s.upload_manifest(&m.digest, &m.media_type, m.bytes.clone());
        }
    }

    /// Store a verified manifest on disk, and keep it in memory.
    pub(super) async fn store_manifest(&self, m: &Manifest) -> Result<(), CoreError> {
        self.store.put_manifest_async(&m.digest, &m.media_type, m.bytes.clone()).await?;
        self.memory.put_manifest(m);
        Ok(())
    }
}
