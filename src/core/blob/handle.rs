//! The blob entry points of the service: a blob from disk, or by joining (or starting) its
//! fill; its size without a transfer; an uncached relay when the cache has no room.
//!
//! http gets one handle, `Blob` (as pingora-cache's hit handler: read the body, or seek): its
//! size, the wait for the size when the source did not announce it, and the stream of the
//! whole blob or of a range. The fill's progress channel and the followers stay inside
//! `core::blob`.

use super::fill::{self, FillError, FillState, Progress};
use super::follow;
use super::relay::Relay;
use super::source::{SourceBody, Via};
use crate::core::error::CoreError;
use crate::core::vouch::Content;
use crate::core::PullThrough;
use crate::oci::Digest;
use crate::upstream::Route;
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use http::{header, Method};
use std::io;
use tokio::sync::watch;

/// A blob ready to stream: a committed file, a fill to follow, or an uncached relay.
pub struct Blob {
    body: BlobBody,
    digest: Digest,
    /// The blob's size, when known before the transfer ends.
    size: Option<u64>,
    /// Served from a committed file (no upstream involved).
    hit: bool,
}

enum BlobBody {
    /// From the cache: a committed file, or one being filled (follow its progress).
    Cached(watch::Receiver<Progress>),
    /// Straight from upstream, verified but not cached (the cache has no room).
    Uncached(Relay),
}

impl Blob {
    /// A committed blob: `len` bytes in `file`.
    pub(super) fn committed(file: std::fs::File, len: u64, digest: &Digest) -> Blob {
        Blob { body: BlobBody::Cached(fill::complete(file, len)), digest: digest.clone(), size: Some(len), hit: true }
    }

    /// A fill in flight, followed through `progress`; `size` as its source announced it.
    pub(super) fn following(progress: watch::Receiver<Progress>, size: Option<u64>, digest: &Digest) -> Blob {
        Blob { body: BlobBody::Cached(progress), digest: digest.clone(), size, hit: false }
    }

    /// The blob's size, when known before the transfer ends.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// Served from a committed file.
    pub fn hit(&self) -> bool {
        self.hit
    }

    /// Whether a range of it can be read: not from an uncached relay (it cannot seek).
    pub fn seekable(&self) -> bool {
        matches!(self.body, BlobBody::Cached(_))
    }

    /// The blob's size: as announced, else once the fill is complete and verified (or, for
    /// an uncached relay that did not announce one, unknown: an error).
    pub async fn total(&mut self) -> Result<u64, CoreError> {
        if let Some(s) = self.size {
            return Ok(s);
        }
        let BlobBody::Cached(progress) = &mut self.body else { return Err(CoreError::FillEnded) };
        let p = fill::settle(progress, |p| matches!(p.state, FillState::Verified | FillState::Failed(_))).await?;
        match &p.state {
            FillState::Failed(e) => Err(CoreError::from_fill(e)),
            _ => Ok(p.written),
        }
    }

    /// The fill's progress, for the core's own waits on a commit (prefetch, repair); `None`
    /// for an uncached relay.
    pub(in crate::core) fn into_progress(self) -> Option<watch::Receiver<Progress>> {
        match self.body {
            BlobBody::Cached(progress) => Some(progress),
            BlobBody::Uncached(_) => None,
        }
    }

    /// Bytes `start..end` (a range of a seekable blob; the whole blob from a relay, as HTTP
    /// allows for a range it cannot serve).
    pub fn range(self, start: u64, end: u64) -> BoxStream<'static, io::Result<Bytes>> {
        match self.body {
            BlobBody::Cached(progress) => follow::stream(progress, start, Some(end)).boxed(),
            BlobBody::Uncached(relay) => relay.stream().boxed(),
        }
    }

    /// The whole blob, verified as it is read when `pull` verifies cache hits on read.
    pub fn whole(self, pull: &PullThrough) -> BoxStream<'static, io::Result<Bytes>> {
        match self.body {
            BlobBody::Cached(progress) => pull.whole_blob(progress, &self.digest, self.hit, self.size),
            BlobBody::Uncached(relay) => relay.stream().boxed(),
        }
    }
}

impl PullThrough {
    /// Resume fills whose source breaks off as `policy` says (see `resume`). Before the
    /// service is shared.
    pub fn with_resume(mut self, policy: super::ResumePolicy) -> PullThrough {
        if let Some(fills) = std::sync::Arc::get_mut(self.fills_mut()) {
            fills.set_resume(policy);
        }
        self
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
        if let Some((f, len)) = self.store().open_blob_async(digest).await? {
            return Ok(Blob::committed(f, len, digest));
        }
        let (mut rx, started) = self.fills().join_or_start(self.store(), route, digest, via);
        if !started {
            tracing::debug!(%digest, "joined a fill in progress");
        }
        let p = fill::settle(&mut rx, |p| !matches!(p.state, FillState::Connecting)).await?;
        match &p.state {
            FillState::Failed(e) if matches!(**e, FillError::NoSpace { .. }) => self.relay(route, digest).await,
            FillState::Failed(e) => Err(CoreError::from_fill(e)),
            _ => Ok(Blob::following(rx, p.total, digest)),
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
        Ok(Blob { size: relay.size(), body: BlobBody::Uncached(relay), digest: digest.clone(), hit: false })
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
