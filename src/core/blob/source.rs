//! Where a fill's bytes come from, as one kind of body: the shared tier, the peer that owns
//! the digest, or the upstream (and, for verify on read, the local disk).
//! The fill pipeline reads a `SourceBody` chunk by chunk with the same per-chunk timeout,
//! hash and hold-back whichever tier produced it, so bytes from the bucket are verified
//! exactly like bytes from the upstream. A fill's body is resumable (see `resume`): when its
//! source breaks off, it reads on from the next source at the byte it delivered, so the
//! pipeline above sees one unbroken byte sequence.

use super::fill::FillError;
use super::range::{self, At, Fit};
use super::resume::{Break, Broken, Pace, Resume};
use crate::cluster::{PeerError, PeerResponse};
use crate::oci::Digest;
use crate::shared::{SharedBlob, SharedError};
use crate::upstream::{error_chain, Registry, UpstreamError};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use std::time::Duration;

/// A cache tier, as metrics and logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Local,
    Shared,
    Peer,
    Upstream,
}

/// Who asked for content: a client, or a peer node of the cluster (whose requests are never
/// forwarded to other peers again, so there are no loops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Client,
    Peer,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Local => "local",
            Tier::Shared => "shared",
            Tier::Peer => "peer",
            Tier::Upstream => "upstream",
        }
    }
}

/// A lookup's result in a tier: a metric label.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    Hit,
    Miss,
    Error,
}

/// Count a lookup of `kind` (blob, manifest, tag) in `tier`.
pub fn count(tier: Tier, kind: &str, result: Lookup) {
    let r = match result {
        Lookup::Hit => "hit",
        Lookup::Miss => "miss",
        Lookup::Error => "error",
    };
    crate::metrics::METRICS.tier_requests.with_label_values(&[tier.as_str(), kind, r]).inc();
}

type Chunks = BoxStream<'static, Result<Bytes, FillError>>;

/// A body being received from a tier.
pub struct SourceBody {
    pub tier: Tier,
    /// The size the source announced, when it did.
    pub total: Option<u64>,
    chunks: Chunks,
    /// The longest wait for the next chunk; `None` for a local body.
    idle_timeout: Option<Duration>,
    /// Names the source in timeout errors.
    from: String,
    /// Bytes handed on so far, from every source this body read.
    delivered: u64,
    /// The floor this source is held to, when it is (see `resume::Pace`).
    pace: Option<Pace>,
    /// What opens the next source when this one breaks off; `None`: a break ends the body.
    resume: Option<Box<Resume>>,
}

impl SourceBody {
    fn new(tier: Tier, total: Option<u64>, chunks: Chunks, idle_timeout: Option<Duration>, from: String) -> SourceBody {
        SourceBody { tier, total, chunks, idle_timeout, from, delivered: 0, pace: None, resume: None }
    }

    /// This body, resumed from the next source when its own breaks off (see `resume`).
    pub fn resumable(mut self, resume: Resume) -> SourceBody {
        self.pace = Pace::of(self.tier, resume.policy());
        self.resume = Some(Box::new(resume));
        self
    }

    /// The next chunk, `None` at the end; an error when the source fails or stalls for
    /// longer than its idle timeout (or delivers below the floor), and no next source could
    /// resume the body.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, FillError> {
        loop {
            let (error, why) = match self.read().await {
                Ok(Some(c)) => {
                    self.delivered += c.len() as u64;
                    return Ok(Some(c));
                }
                Ok(None) if self.total.is_none_or(|t| self.delivered >= t) => return Ok(None),
                // Ended short: the pipeline's size check fails it if nothing resumes it.
                Ok(None) => (None, Break::Truncated),
                Err((e, why)) => (Some(e), why),
            };
            let at = At { received: self.delivered, total: self.total };
            let broken = Broken { tier: self.tier, from: self.from.clone(), why };
            let next = match self.resume.as_mut() {
                Some(r) => r.next(at, &broken).await,
                None => None,
            };
            match (next, error) {
                (Some(next), _) => self.continue_with(next),
                (None, Some(e)) => return Err(e),
                (None, None) => return Ok(None),
            }
        }
    }

    /// Read on from `next`, a source answering at the byte delivered.
    fn continue_with(&mut self, next: SourceBody) {
        self.pace = self.resume.as_ref().and_then(|r| Pace::of(next.tier, r.policy()));
        self.tier = next.tier;
        self.total = self.total.or(next.total);
        self.chunks = next.chunks;
        self.idle_timeout = next.idle_timeout;
        self.from = next.from;
    }

    /// The next chunk of the current source, or how it broke off.
    async fn read(&mut self) -> Result<Option<Bytes>, (FillError, Break)> {
        loop {
            let (chunks, idle) = (&mut self.chunks, self.idle_timeout);
            let chunk = async move {
                match idle {
                    Some(idle) => tokio::time::timeout(idle, chunks.next()).await.ok(),
                    None => Some(chunks.next().await),
                }
            };
            let got = match self.pace.as_ref().map(Pace::deadline) {
                None => Some(chunk.await),
                Some(deadline) => tokio::select! {
                    got = chunk => Some(got),
                    () = tokio::time::sleep_until(deadline) => None,
                },
            };
            let Some(got) = got else {
                // A window ended: below the floor is a break; else a new window starts.
                let Some(p) = self.pace.as_mut() else { continue };
                match p.below_floor() {
                    Some(bytes) => return Err((p.slow(self.tier, &self.from, bytes), Break::Slow)),
                    None => continue,
                }
            };
            return match got {
                None => Err((self.stalled(), Break::Stalled)),
                Some(None) => Ok(None),
                Some(Some(Err(e))) => Err((e, Break::Reset)),
                Some(Some(Ok(c))) => {
                    if let Some(p) = self.pace.as_mut() {
                        p.add(c.len());
                    }
                    Ok(Some(c))
                }
            };
        }
    }

    /// The error of a source that sent nothing for its idle timeout.
    fn stalled(&self) -> FillError {
        let idle = self.idle_timeout.unwrap_or_default();
        match self.tier {
            Tier::Shared => FillError::Shared(SharedError::Timeout { key: self.from.clone(), after: idle }),
            Tier::Peer => FillError::Peer(PeerError::Transfer {
                peer: self.from.clone(),
                message: format!("no data for {idle:?}"),
            }),
            // A local body has no idle timeout (see `local`).
            Tier::Upstream | Tier::Local => {
                FillError::Upstream(UpstreamError::Timeout { host: self.from.clone(), after: idle })
            }
        }
    }

    /// A committed blob read back from the local disk (`total` bytes), for verify on read.
    /// No idle timeout: a disk read does not stall the way a network does.
    pub fn local(chunks: BoxStream<'static, std::io::Result<Bytes>>, total: u64, digest: &Digest) -> SourceBody {
        let d = digest.clone();
        let chunks = chunks.map(move |r| r.map_err(|source| FillError::Io { digest: d.clone(), source })).boxed();
        SourceBody::new(Tier::Local, Some(total), chunks, None, digest.to_string())
    }

    /// An upstream registry's blob response read from its first byte, with its read timeout
    /// between chunks.
    pub fn upstream(resp: http::Response<hyper::body::Incoming>, registry: &Registry) -> SourceBody {
        let fit = Fit { skip: 0, total: content_length(resp.headers()) };
        SourceBody::from_upstream(resp, registry, fit)
    }

    /// An upstream's answer to a read, as `fit` says to read it, with the registry's read
    /// timeout between chunks; every byte received (a skipped prefix too) is paid from the
    /// upstream's WAN budget (`max_rate`) as it is read.
    pub(super) fn from_upstream(
        resp: http::Response<hyper::body::Incoming>,
        registry: &Registry,
        fit: Fit,
    ) -> SourceBody {
        let (host, idle_timeout) = (registry.host(), registry.read_timeout);
        let h = host.to_string();
        let chunks = resp
            .into_body()
            .into_data_stream()
            .map(move |r| {
                r.map_err(|e| {
                    FillError::Upstream(UpstreamError::Transfer { host: h.clone(), message: error_chain(&e) })
                })
            })
            .boxed();
        let chunks = match registry.throttle() {
            Some(t) => t.limit(chunks, crate::upstream::throttle::Class::Live).boxed(),
            None => chunks,
        };
        let chunks = range::skip_prefix(chunks, fit.skip);
        SourceBody::new(Tier::Upstream, fit.total, chunks, Some(idle_timeout), host.to_string())
    }

    /// An upstream body made of `chunks` (then silence, if `stall`), for tests of the pipeline.
    #[cfg(test)]
    pub fn from_chunks(chunks: Vec<Bytes>, total: Option<u64>, stall: bool, idle_timeout: Duration) -> SourceBody {
        SourceBody::from_items(Tier::Upstream, chunks.into_iter().map(Ok).collect(), total, stall, idle_timeout)
    }

    /// A body from `tier` made of `items` (then silence, if `stall`), for tests of resumes.
    #[cfg(test)]
    pub fn from_items(
        tier: Tier,
        items: Vec<Result<Bytes, FillError>>,
        total: Option<u64>,
        stall: bool,
        idle_timeout: Duration,
    ) -> SourceBody {
        let items = futures_util::stream::iter(items);
        let chunks = if stall { items.chain(futures_util::stream::pending()).boxed() } else { items.boxed() };
        SourceBody::new(tier, total, chunks, Some(idle_timeout), format!("{}.test", tier.as_str()))
    }

    pub(super) fn from_shared(blob: SharedBlob, digest: &Digest, idle_timeout: Duration, fit: Fit) -> SourceBody {
        let key = digest.to_string();
        let k = key.clone();
        let chunks =
            futures_util::stream::unfold(blob.body, |mut body| async move { body.next().await.map(|r| (r, body)) })
                .map(move |r| r.map_err(|source| FillError::Shared(SharedError::Body { key: k.clone(), source })))
                .boxed();
        let chunks = range::skip_prefix(chunks, fit.skip);
        SourceBody::new(Tier::Shared, fit.total, chunks, Some(idle_timeout), key)
    }

    pub(super) fn from_peer(resp: PeerResponse, idle_timeout: Duration, fit: Fit) -> SourceBody {
        let peer = resp.peer.to_string();
        let p = peer.clone();
        let chunks = resp
            .body
            .into_data_stream()
            .map(move |r| {
                r.map_err(|e| FillError::Peer(PeerError::Transfer { peer: p.clone(), message: error_chain(&e) }))
            })
            .boxed();
        let chunks = range::skip_prefix(chunks, fit.skip);
        SourceBody::new(Tier::Peer, fit.total, chunks, Some(idle_timeout), peer)
    }

    /// The peer this body comes from, when it does.
    pub fn peer(&self) -> Option<crate::cluster::Peer> {
        (self.tier == Tier::Peer).then(|| crate::cluster::Peer::new(&self.from))
    }
}

/// Collect a small body (a manifest) of at most `limit` bytes, with `idle_timeout` between
/// chunks.
pub async fn read_small(body: hyper::body::Incoming, limit: usize, idle_timeout: Duration) -> Result<Bytes, String> {
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    loop {
        match tokio::time::timeout(idle_timeout, stream.next()).await {
            Err(_) => return Err(format!("no data for {idle_timeout:?}")),
            Ok(None) => return Ok(buf.freeze()),
            Ok(Some(Err(e))) => return Err(error_chain(&e)),
            Ok(Some(Ok(c))) => {
                if buf.len() + c.len() > limit {
                    return Err(format!("larger than {limit} bytes"));
                }
                buf.extend_from_slice(&c);
            }
        }
    }
}

pub(super) fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}
