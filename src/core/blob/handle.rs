//! The blob entry points of the service: a blob from disk, or by joining (or starting) its
//! fill; its size without a transfer; an uncached relay when the cache has no room.

use super::fill::{self, FillError, FillState, Progress};
use super::relay::Relay;
use super::source::{SourceBody, Via};
use crate::core::error::CoreError;
use crate::core::vouch::Content;
use crate::core::PullThrough;
use crate::oci::Digest;
use crate::upstream::Route;
use http::{header, Method};
use tokio::sync::watch;

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
    Uncached(Relay),
}

impl PullThrough {
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
        if let Some((f, len)) = self.store().open_blob_async(digest).await? {
            return Ok(Blob { body: BlobBody::Cached(fill::complete(f, len)), size: Some(len), hit: true });
        }
        let (mut rx, started) = self.fills().join_or_start(self.store(), route, digest, via);
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
        let relay = Relay::new(SourceBody::upstream(resp, registry), digest.clone());
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
        if let Some((_, len)) = self.store().open_blob_async(digest).await? {
            self.vouch(route, digest, Content::Blob).await?;
            return Ok(Some(len));
        }
        let resp = route
            .upstream
            .registry
            .blob(&route.name, digest, Method::HEAD)
            .await
            .map_err(|e| CoreError::from_upstream(e, CoreError::BlobUnknown))?;
        self.store().confirm_async(route.upstream.host(), &route.name, digest).await?;
        if resp.status().is_redirection() {
            // The registry has it (it redirects to storage); the size is the storage's.
            return Ok(None);
        }
        Ok(resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()))
    }
}
