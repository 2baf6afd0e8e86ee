//! The order a fill asks the tiers for a blob, at its first byte or (resuming) at the byte
//! it received: the shared tier (when configured and answering), then the peers that own the
//! digest (for a client's fill only), else the upstream of the route. A tier that fails, is
//! slow, or answers a resumed read with the wrong range (see `range`) is skipped, never an
//! error, except the upstream: it is the last.

use super::fill::FillError;
use super::range::{self, Answer, At, Fit};
use super::resume::{Broken, Reopen};
use super::source::{content_length, count, Lookup, SourceBody, Tier, Via};
use crate::cluster::{Cluster, Fetch, Peer};
use crate::oci::Digest;
use crate::shared::SharedTier;
use crate::upstream::Route;
use futures_util::future::BoxFuture;
use http::{header, Method, StatusCode};
use std::sync::Arc;

/// The tiers a fill may read, besides the upstream.
#[derive(Clone)]
pub struct Tiers {
    pub shared: Option<Arc<SharedTier>>,
    pub cluster: Option<Arc<Cluster>>,
    pub via: Via,
}

/// One blob's sources, in tier order: what opens a fill's body, and reopens it at a byte.
pub struct TierSources {
    tiers: Tiers,
    route: Route,
    digest: Digest,
    /// The bucket broke off a read of this blob: the next resumes skip it.
    shared_broke: bool,
}

impl TierSources {
    pub fn new(tiers: Tiers, route: &Route, digest: &Digest) -> TierSources {
        TierSources { tiers, route: route.clone(), digest: digest.clone(), shared_broke: false }
    }

    /// The body from the first tier that has the blob, from byte `at.received` on.
    pub async fn open(&mut self, at: At) -> Result<SourceBody, FillError> {
        if let Some(body) = self.shared(at).await {
            return Ok(body);
        }
        if let Some(body) = self.peer(at).await {
            return Ok(body);
        }
        self.upstream(at).await
    }

    async fn shared(&self, at: At) -> Option<SourceBody> {
        let s = self.tiers.shared.as_ref().filter(|_| !self.shared_broke)?;
        match s.open_blob_from(&self.digest, at.received).await {
            Ok(Some(blob)) => {
                let answer = Answer {
                    partial: blob.content_range.is_some(),
                    len: blob.len,
                    content_range: blob.content_range.as_deref(),
                };
                let fit = self.fits(Tier::Shared, &self.digest.to_string(), at, answer)?;
                count(Tier::Shared, "blob", Lookup::Hit);
                Some(SourceBody::from_shared(blob, &self.digest, s.read_timeout(), fit))
            }
            Ok(None) => {
                count(Tier::Shared, "blob", Lookup::Miss);
                None
            }
            Err(e) => {
                count(Tier::Shared, "blob", Lookup::Error);
                tracing::debug!(digest = %self.digest, error = %e, "shared tier read failed; asking the next tier");
                None
            }
        }
    }

    async fn peer(&self, at: At) -> Option<SourceBody> {
        let (Some(c), Via::Client) = (self.tiers.cluster.as_ref(), self.tiers.via) else { return None };
        let from = (at.received > 0).then_some(at.received);
        let (host, name) = (self.route.upstream.host(), &self.route.name);
        for peer in c.ask_order(&self.digest) {
            let Ok(resp) = c.fetch_from(&peer, Fetch::Blob, host, name, &self.digest, from).await else { continue };
            let answer = Answer {
                partial: resp.status == StatusCode::PARTIAL_CONTENT,
                len: resp.len,
                content_range: resp.content_range.as_deref(),
            };
            let Some(fit) = self.fits(Tier::Peer, &peer.to_string(), at, answer) else {
                c.failed(&peer);
                continue;
            };
            count(Tier::Peer, "blob", Lookup::Hit);
            return Some(SourceBody::from_peer(resp, c.idle_timeout, fit));
        }
        None
    }

    async fn upstream(&self, at: At) -> Result<SourceBody, FillError> {
        let registry = &self.route.upstream.registry;
        let resp = match at.received {
            0 => registry.blob(&self.route.name, &self.digest, Method::GET).await?,
            from => registry.blob_from(&self.route.name, &self.digest, from).await?,
        };
        let h = resp.headers();
        let answer = Answer {
            partial: resp.status() == StatusCode::PARTIAL_CONTENT,
            len: content_length(h),
            content_range: h.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()),
        };
        let fit = range::fit(at, answer).map_err(|refused| FillError::Range {
            tier: Tier::Upstream,
            from: registry.host().to_string(),
            refused,
        })?;
        Ok(SourceBody::from_upstream(resp, registry, fit))
    }

    /// How to read a tier's answer, or `None` (counted, logged) when it does not fit.
    fn fits(&self, tier: Tier, from: &str, at: At, answer: Answer<'_>) -> Option<Fit> {
        match range::fit(at, answer) {
            Ok(fit) => Some(fit),
            Err(refused) => {
                count(tier, "blob", Lookup::Error);
                let e = FillError::Range { tier, from: from.to_string(), refused };
                let error = crate::error_text::error_chain(&e);
                tracing::warn!(digest = %self.digest, %error, "skipping a source that answered the wrong range");
                None
            }
        }
    }

    /// Skip what broke: a peer for a while (every fill), the bucket for this fill's resumes.
    fn note(&mut self, broken: &Broken) {
        match broken.tier {
            Tier::Peer => {
                if let Some(c) = &self.tiers.cluster {
                    c.failed(&Peer::new(&broken.from));
                }
            }
            Tier::Shared => self.shared_broke = true,
            Tier::Upstream | Tier::Local => {}
        }
    }
}

impl Reopen for TierSources {
    fn open_at<'a>(&'a mut self, at: At, broken: &'a Broken) -> BoxFuture<'a, Result<SourceBody, FillError>> {
        Box::pin(async move {
            self.note(broken);
            self.open(at).await
        })
    }
}
