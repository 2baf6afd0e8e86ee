//! Where a fill's bytes come from, as one kind of body: the shared tier, the peer that owns
//! the digest, or the upstream (and, for verify on read, the local disk).
//! The fill pipeline reads a `SourceBody` chunk by chunk with the same per-chunk timeout,
//! hash and hold-back whichever tier produced it, so bytes from the bucket are verified
//! exactly like bytes from the upstream.

use super::fill::FillError;
use crate::cluster::{Cluster, Fetch, PeerError, PeerResponse};
use crate::oci::Digest;
use crate::shared::{SharedBlob, SharedError, SharedTier};
use crate::upstream::{error_chain, Registry, Route, UpstreamError};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use http::Method;
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

/// A body being received from a tier.
pub struct SourceBody {
    pub tier: Tier,
    /// The size the source announced, when it did.
    pub total: Option<u64>,
    chunks: BoxStream<'static, Result<Bytes, FillError>>,
    /// The longest wait for the next chunk; `None` for a local body.
    idle_timeout: Option<Duration>,
    /// Names the source in timeout errors.
    from: String,
}

impl SourceBody {
    /// The next chunk, `None` at the end; an error when the source fails or stalls for
    /// longer than its idle timeout.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, FillError> {
        let Some(idle) = self.idle_timeout else { return self.chunks.next().await.transpose() };
        match tokio::time::timeout(idle, self.chunks.next()).await {
            Err(_) => Err(match self.tier {
                Tier::Shared => FillError::Shared(SharedError::Timeout { key: self.from.clone(), after: idle }),
                Tier::Peer => FillError::Peer(PeerError::Transfer {
                    peer: self.from.clone(),
                    message: format!("no data for {idle:?}"),
                }),
                // A local body has no idle timeout (see `local`).
                Tier::Upstream | Tier::Local => {
                    FillError::Upstream(UpstreamError::Timeout { host: self.from.clone(), after: idle })
                }
            }),
            Ok(None) => Ok(None),
            Ok(Some(r)) => r.map(Some),
        }
    }

    /// A committed blob read back from the local disk (`total` bytes), for verify on read.
    /// No idle timeout: a disk read does not stall the way a network does.
    pub fn local(chunks: BoxStream<'static, std::io::Result<Bytes>>, total: u64, digest: &Digest) -> SourceBody {
        let d = digest.clone();
        let chunks = chunks.map(move |r| r.map_err(|source| FillError::Io { digest: d.clone(), source })).boxed();
        SourceBody { tier: Tier::Local, total: Some(total), chunks, idle_timeout: None, from: digest.to_string() }
    }

    /// An upstream registry's blob response, read with its read timeout between chunks.
    /// Paid from the upstream's WAN budget (`max_rate`) as it is read.
    pub fn upstream(resp: http::Response<hyper::body::Incoming>, registry: &Registry) -> SourceBody {
        let mut body = SourceBody::from_upstream(resp, registry.host(), registry.read_timeout);
        if let Some(t) = registry.throttle() {
            body.chunks = t.limit(body.chunks, crate::upstream::throttle::Class::Live).boxed();
        }
        body
    }

    fn from_upstream(resp: http::Response<hyper::body::Incoming>, host: &str, idle_timeout: Duration) -> SourceBody {
        let total = content_length(resp.headers());
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
        SourceBody { tier: Tier::Upstream, total, chunks, idle_timeout: Some(idle_timeout), from: host.to_string() }
    }

    /// An upstream body made of `chunks` (then silence, if `stall`), for tests of the pipeline.
    #[cfg(test)]
    pub fn from_chunks(chunks: Vec<Bytes>, total: Option<u64>, stall: bool, idle_timeout: Duration) -> SourceBody {
        let items = futures_util::stream::iter(chunks.into_iter().map(Ok));
        let chunks = if stall { items.chain(futures_util::stream::pending()).boxed() } else { items.boxed() };
        SourceBody {
            tier: Tier::Upstream,
            total,
            chunks,
            idle_timeout: Some(idle_timeout),
            from: "test.invalid".into(),
        }
    }

    fn from_shared(blob: SharedBlob, digest: &Digest, idle_timeout: Duration) -> SourceBody {
        let key = digest.to_string();
        let k = key.clone();
        let chunks =
            futures_util::stream::unfold(blob.body, |mut body| async move { body.next().await.map(|r| (r, body)) })
                .map(move |r| r.map_err(|source| FillError::Shared(SharedError::Body { key: k.clone(), source })))
                .boxed();
        SourceBody { tier: Tier::Shared, total: blob.len, chunks, idle_timeout: Some(idle_timeout), from: key }
    }
}

/// The tiers a fill may read, besides the upstream.
#[derive(Clone, Copy)]
pub struct Tiers<'a> {
    pub shared: Option<&'a SharedTier>,
    pub cluster: Option<&'a Cluster>,
    pub via: Via,
}

/// Open `digest` from the first tier that has it: the shared tier (when configured and
/// answering), then the peers that own the digest (for a client's fill only), else the
/// upstream of `route`. A tier that fails or is slow is skipped, never an error.
pub async fn open(tiers: Tiers<'_>, route: &Route, digest: &Digest) -> Result<SourceBody, FillError> {
    if let Some(s) = tiers.shared {
        match s.open_blob(digest).await {
            Ok(Some(blob)) => {
                count(Tier::Shared, "blob", Lookup::Hit);
                return Ok(SourceBody::from_shared(blob, digest, s.read_timeout()));
            }
            Ok(None) => count(Tier::Shared, "blob", Lookup::Miss),
            Err(e) => {
                count(Tier::Shared, "blob", Lookup::Error);
                tracing::debug!(%digest, error = %e, "shared tier read failed; fetching from the upstream");
            }
        }
    }
    if let (Some(c), Via::Client) = (tiers.cluster, tiers.via) {
        for peer in c.ask_order(digest) {
            if let Ok(resp) = c.fetch(&peer, Fetch::Blob, route.upstream.host(), &route.name, digest).await {
                count(Tier::Peer, "blob", Lookup::Hit);
                return Ok(SourceBody::from_peer(resp, c.idle_timeout));
            }
        }
    }
    let registry = &route.upstream.registry;
    let resp = registry.blob(&route.name, digest, Method::GET).await?;
    Ok(SourceBody::upstream(resp, registry))
}

impl SourceBody {
    fn from_peer(resp: PeerResponse, idle_timeout: Duration) -> SourceBody {
        let peer = resp.peer.to_string();
        let p = peer.clone();
        let chunks = resp
            .body
            .into_data_stream()
            .map(move |r| {
                r.map_err(|e| FillError::Peer(PeerError::Transfer { peer: p.clone(), message: error_chain(&e) }))
            })
            .boxed();
        SourceBody { tier: Tier::Peer, total: resp.len, chunks, idle_timeout: Some(idle_timeout), from: peer }
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

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}
