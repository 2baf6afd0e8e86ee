//! Cluster-wide single flight: each digest has one owner among the live peers (rendezvous
//! hashing over the peer set), and a node that misses a blob or a manifest by digest asks
//! the owner for it instead of the upstream. The owner runs the one fill (its disk, the
//! shared tier, the upstream) and streams while it fills, exactly as it does for its own
//! clients; the asking node streams the bytes on to its clients and into its own cache,
//! verifying them like any fill (a peer is never trusted).
//!
//! Every receiving node is a source. No node sends one blob to more than
//! `max_peer_streams` peers at once: an owner at that limit answers a new asker with a
//! referral (`307`, `x-pullthrough-referral: <peer URL>`) naming a node that is receiving
//! the blob and has a spare stream (see `referrals`; with the default limit of 1, the tail
//! of a chain in arrival order), and records that the asker now hangs off that node. The
//! asker asks that node once, marked `referred`; a referred node serves from its fill in
//! flight or its disk, as it serves its own clients (ranges included), or refuses. A
//! refusal or failure sends the asker back to the owner marked `direct` (serve it
//! yourself), never to the upstream while the owner lives. So each node's uplink carries
//! at most `max_peer_streams` copies at once, and a chain keeps every uplink busy: the last
//! node is as fast as the first, plus a little per hop (benches/RESULTS.md).
//!
//! This module is a *source*, like `store`, `shared` and `upstream`: it knows the peer set
//! and how to ask a peer, and never decides what to serve. Rules that keep it safe:
//! - a request to a peer carries the cluster token (`x-pullthrough-peer`), and a request that
//!   carries a valid token is never forwarded again;
//! - no loops, by construction: a client's miss makes at most three peer requests per peer
//!   in line (the owner; the node it refers to; the owner again, `direct`). A referred node
//!   never refers and never starts a fill for a peer; a `direct` ask is never referred; a
//!   referral to a node outside the peer set, to the asker or to the owner is not followed.
//!   Nor can a fill wait on itself: the owner's record is a tree rooted at the owner, a
//!   node is referred only to a node already in it, and a node asking again is first
//!   removed with everything under it, so it is never placed below itself;
//! - requests without the token never reach the peer path of the receiving node's HTTP
//!   layer; the token is a secret (never logged, never in metrics, never sent to a node
//!   outside the peer set);
//! - an owner that is unreachable, refuses, or is slow to send headers is skipped for a short
//!   back-off, and the next peer in rendezvous order is asked, then the upstream;
//! - peers that disagree for a moment about membership cost at most an extra upstream fetch,
//!   never a wrong byte (every byte is verified by the asking node).
//!
//! Membership is a static list or the addresses behind a DNS name (a Kubernetes headless
//! Service), re-resolved every few seconds: no gossip, no tracker, nothing home-made beyond
//! the hash and the owner's in-memory record.

mod ask;
mod client;
mod error;
mod members;
mod referrals;
mod rendezvous;
mod streams;
mod throttle;

pub use ask::{Ask, PeerAsk, ASK_HEADER, FROM_HEADER, REFERRAL_HEADER};
pub use client::PeerResponse;
pub use error::PeerError;
pub use members::Peer;
pub use rendezvous::order;
pub use streams::StreamGuard;

use crate::oci::{Digest, RepoName};
use bytes::Bytes;
use client::{Answer, Wanted};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;

/// The header that carries the cluster token between peers.
pub const TOKEN_HEADER: &str = "x-pullthrough-peer";

/// What the cluster needs, built from `[cluster]` at the edge.
#[derive(Clone)]
pub struct ClusterSettings {
    /// How the other nodes reach this node (`http://10.0.0.7:5000`).
    pub advertise: String,
    /// A static peer list (may include `advertise`).
    pub peers: Vec<String>,
    /// `host:port` whose addresses are the peers (a headless Service), re-resolved.
    pub peers_dns: Option<String>,
    /// The shared secret peers present to each other.
    pub token: String,
    /// Time to a peer's response headers; past it the next peer is asked.
    pub header_timeout: Duration,
    /// Longest gap between body chunks from a peer.
    pub idle_timeout: Duration,
    /// The most peers this node sends one blob to at once (see `referrals`).
    pub max_peer_streams: usize,
    /// Bytes per second this node sends to peers, all streams together; `None`: no limit.
    pub peer_upload_rate: Option<u64>,
    /// A private CA the peers' https certificates are signed by.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("advertise", &self.advertise)
            .field("peers", &self.peers)
            .field("peers_dns", &self.peers_dns)
            .field("token", &"<redacted>")
            .field("max_peer_streams", &self.max_peer_streams)
            .field("peer_upload_rate", &self.peer_upload_rate)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

pub struct Cluster {
    me: Peer,
    token: String,
    members: members::Members,
    client: client::PeerClient,
    pub idle_timeout: Duration,
    max_peer_streams: usize,
    /// The blob streams this node sends to peers now.
    streams: Arc<streams::Streams>,
    /// As a digest's owner: who receives it from whom.
    referrals: referrals::Referrals,
    upload_rate: Option<Arc<throttle::UploadRate>>,
}

impl Cluster {
    pub fn new(s: ClusterSettings) -> Result<Arc<Cluster>, crate::tls_client::CaFileError> {
        let tls = match &s.ca_file {
            Some(ca) => crate::tls_client::config_with_ca(ca)?,
            None => crate::tls_client::config(),
        };
        let max_peer_streams = s.max_peer_streams.max(1);
        Ok(Arc::new(Cluster {
            me: Peer::new(&s.advertise),
            members: members::Members::new(&s.peers, s.peers_dns.clone(), &s.advertise),
            client: client::PeerClient::new(s.header_timeout, tls),
            token: s.token,
            idle_timeout: s.idle_timeout,
            max_peer_streams,
            streams: Arc::default(),
            referrals: referrals::Referrals::new(max_peer_streams),
            upload_rate: s.peer_upload_rate.map(throttle::UploadRate::new),
        }))
    }

    /// Start re-resolving `peers_dns`. Inside the runtime, once.
    pub fn start_background(self: &Arc<Self>) {
        self.members.spawn_refresh();
    }

    /// Whether a presented token is the cluster's (compared in constant time).
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let want = self.token.as_bytes();
        presented.len() == want.len() && presented.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// The peers to ask for `digest`, best first: those ranked above this node in
    /// rendezvous order, without peers in back-off. Empty when this node is the owner, or
    /// every peer above it failed: it then runs the fill itself, so a dead owner's digests
    /// are filled by the next node in line, which the others then ask.
    pub fn ask_order(&self, digest: &Digest) -> Vec<Peer> {
        let all = self.members.current();
        order(&all, digest).into_iter().take_while(|p| *p != self.me).filter(|p| !self.members.backing_off(p)).collect()
    }

    /// Ask `peer` for a blob (`GET`) or a manifest by digest, routed as the original request
    /// was: to upstream `host`, repository `name`. A blob's owner may refer this node to
    /// another node receiving the blob: that node is asked once, and if it fails or refuses,
    /// the owner again, asked to serve directly (never the upstream while the owner lives).
    /// A blob from byte `from` on when given (a fill resuming at the byte it received).
    pub async fn fetch_from(
        &self,
        peer: &Peer,
        what: Fetch,
        host: &str,
        name: &RepoName,
        digest: &Digest,
        from: Option<u64>,
    ) -> Result<PeerResponse, PeerError> {
        let w = Wanted { what, host, name, digest, from };
        let ask = (what == Fetch::Blob).then_some(Ask::Referable);
        match self.ask(peer, &w, ask).await? {
            Answer::Body(r) => Ok(r),
            Answer::Referral(to) => self.follow(peer, &w, to).await,
        }
    }

    /// One request to `peer`, counted; a peer that fails (not one that lacks the content or
    /// refuses a referred ask) is skipped for a while.
    async fn ask(&self, peer: &Peer, w: &Wanted<'_>, ask: Option<Ask>) -> Result<Answer, PeerError> {
        let m = &crate::metrics::METRICS;
        let r = self.client.get(peer, w, &self.token, ask.map(|a| (&self.me, a))).await;
        match &r {
            Ok(_) => m.peer_requests.with_label_values(&["made", "ok"]).inc(),
            Err(PeerError::NotFound { .. }) => m.peer_requests.with_label_values(&["made", "not_found"]).inc(),
            Err(e @ PeerError::Refused { .. }) => {
                m.peer_requests.with_label_values(&["made", "failed_over"]).inc();
                tracing::debug!(peer = %peer, error = %e, "referred peer refused");
            }
            Err(e) => {
                m.peer_requests.with_label_values(&["made", "failed_over"]).inc();
                tracing::warn!(peer = %peer, error = %e, "peer did not serve; asking the next one");
                self.members.back_off(peer);
            }
        }
        r
    }

    /// Follow `owner`'s referral to `to`, once: a referred node serves or refuses, never
    /// refers again. Any other outcome asks `owner` to serve directly.
    async fn follow(&self, owner: &Peer, w: &Wanted<'_>, to: Peer) -> Result<PeerResponse, PeerError> {
        let m = &crate::metrics::METRICS;
        if to == self.me || to == *owner || !self.members.current().contains(&to) {
            // Never send the token to a node outside the peer set, nor ask oneself.
            tracing::warn!(%owner, referral = %to, digest = %w.digest, "referral to a node that is not a peer; asking the owner directly");
        } else {
            match self.ask(&to, w, Some(Ask::Referred)).await {
                Ok(Answer::Body(r)) => {
                    m.peer_referrals.with_label_values(&["followed"]).inc();
                    tracing::debug!(%owner, referral = %to, digest = %w.digest, "followed a referral");
                    return Ok(r);
                }
                Ok(Answer::Referral(_)) => {
                    tracing::warn!(referral = %to, digest = %w.digest, "a referred node referred again; asking the owner directly")
                }
                Err(e) => tracing::debug!(referral = %to, error = %e, "referral failed; asking the owner directly"),
            }
        }
        m.peer_referrals.with_label_values(&["fell_back"]).inc();
        match self.ask(owner, w, Some(Ask::Direct)).await? {
            Answer::Body(r) => Ok(r),
            Answer::Referral(_) => {
                Err(PeerError::Status { peer: owner.to_string(), status: http::StatusCode::TEMPORARY_REDIRECT })
            }
        }
    }

    /// How this node answers a peer's blob request (`digest`), before it opens the blob:
    /// serve it (one of at most `max_peer_streams` streams of that blob, unless asked
    /// directly), refer the asker to a receiving node, or refuse a referred ask at the limit.
    /// A referred ask must also find the blob in flight or on disk here; the caller checks.
    pub fn admit(&self, digest: &Digest, ask: &PeerAsk) -> Admission {
        let limit = Some(self.max_peer_streams);
        let m = &crate::metrics::METRICS;
        match (ask.ask, &ask.from) {
            (Ask::Referred, _) => match self.streams.open(digest, limit) {
                Some(g) => Admission::Serve(g),
                None => Admission::Refuse("at max_peer_streams for this blob"),
            },
            (Ask::Referable, Some(from)) => {
                if let Some(g) = self.streams.open(digest, limit) {
                    self.referrals.served(digest, from);
                    return Admission::Serve(g);
                }
                if let Some(to) = self.referrals.refer(digest, from) {
                    m.peer_referrals.with_label_values(&["made"]).inc();
                    tracing::debug!(%digest, asker = %from, referral = %to, "referred a peer to a receiving node");
                    return Admission::Refer(to);
                }
                self.referrals.served(digest, from);
                Admission::Serve(self.streams.open(digest, None).expect("unbounded"))
            }
            (Ask::Direct, from) | (Ask::Referable, from @ None) => {
                if let Some(from) = from {
                    self.referrals.referral_failed(digest, from);
                }
                Admission::Serve(self.streams.open(digest, None).expect("unbounded"))
            }
        }
    }

    /// A refused referred ask, counted.
    pub fn refused(&self, digest: &Digest, why: &str) {
        crate::metrics::METRICS.peer_referrals.with_label_values(&["refused"]).inc();
        tracing::debug!(%digest, reason = why, "refused a referred peer");
    }

    /// A blob body on its way to a peer: paced by `peer_upload_rate`, its bytes counted,
    /// and one of the blob's streams until it ends (`guard`).
    pub fn sending(
        &self,
        body: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        guard: StreamGuard,
    ) -> BoxStream<'static, std::io::Result<Bytes>> {
        let paced = match &self.upload_rate {
            Some(rate) => rate.clone().limit(body).boxed(),
            None => body.boxed(),
        };
        paced
            .map(move |r| {
                let _one_of_the_streams = &guard;
                if let Ok(b) = &r {
                    crate::metrics::METRICS.peer_sent_bytes.inc_by(b.len() as u64);
                }
                r
            })
            .boxed()
    }

    /// Note that a peer broke off mid-transfer: skip it for a while.
    pub fn failed(&self, peer: &Peer) {
        self.members.back_off(peer);
    }

    /// The peer set as this node sees it, for `/readyz`.
    pub fn describe(&self) -> serde_json::Value {
        let peers: Vec<String> = self.members.current().iter().map(|p| p.to_string()).collect();
        serde_json::json!({"advertise": self.me.to_string(), "peers": peers})
    }
}

/// A serving node's answer to a peer's blob request.
pub enum Admission {
    /// Serve it; the guard counts the stream until it ends.
    Serve(StreamGuard),
    /// Ask this node instead (it is receiving the blob and has a spare stream).
    Refer(Peer),
    /// A referred ask this node cannot take.
    Refuse(&'static str),
}

/// What to ask a peer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    Blob,
    Manifest,
}
