//! Cluster-wide single flight: each digest has one owner among the live peers (rendezvous
//! hashing over the peer set), and a node that misses a blob or a manifest by digest asks
//! the owner for it instead of the upstream. The owner runs the one fill (its disk, the
//! shared tier, the upstream) and streams while it fills, exactly as it does for its own
//! clients; the asking node streams the bytes on to its clients and into its own cache,
//! verifying them like any fill (a peer is never trusted).
//!
//! This module is a *source*, like `store`, `shared` and `upstream`: it knows the peer set
//! and how to ask a peer, and never decides what to serve. Rules that keep it safe:
//! - a request to a peer carries the cluster token (`x-pullthrough-peer`), and a request that
//!   carries a valid token is never forwarded again, so there are no loops;
//! - requests without the token never reach the peer path of the receiving node's HTTP
//!   layer; the token is a secret (never logged, never in metrics);
//! - an owner that is unreachable, refuses, or is slow to send headers is skipped for a short
//!   back-off, and the next peer in rendezvous order is asked, then the upstream;
//! - peers that disagree for a moment about membership cost at most an extra upstream fetch,
//!   never a wrong byte (every byte is verified by the asking node).
//!
//! Membership is a static list or the addresses behind a DNS name (a Kubernetes headless
//! Service), re-resolved every few seconds: no gossip, nothing home-made beyond the hash.

mod client;
mod error;
mod members;
mod rendezvous;

pub use client::PeerResponse;
pub use error::PeerError;
pub use members::Peer;
pub use rendezvous::order;

use crate::oci::{Digest, RepoName};
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
}

impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("advertise", &self.advertise)
            .field("peers", &self.peers)
            .field("peers_dns", &self.peers_dns)
            .field("token", &"<redacted>")
            .finish()
    }
}

pub struct Cluster {
    me: Peer,
    token: String,
    members: members::Members,
    client: client::PeerClient,
    pub idle_timeout: Duration,
}

impl Cluster {
    pub fn new(s: ClusterSettings) -> Arc<Cluster> {
        Arc::new(Cluster {
            me: Peer::new(&s.advertise),
            members: members::Members::new(&s.peers, s.peers_dns.clone(), &s.advertise),
            client: client::PeerClient::new(s.header_timeout),
            token: s.token,
            idle_timeout: s.idle_timeout,
        })
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
    /// was: to upstream `host`, repository `name`.
    pub async fn fetch(
        &self,
        peer: &Peer,
        what: Fetch,
        host: &str,
        name: &RepoName,
        digest: &Digest,
    ) -> Result<PeerResponse, PeerError> {
        self.fetch_from(peer, what, host, name, digest, None).await
    }

    /// `fetch`, from byte `from` on when given (a fill resuming at the byte it received).
    pub async fn fetch_from(
        &self,
        peer: &Peer,
        what: Fetch,
        host: &str,
        name: &RepoName,
        digest: &Digest,
        from: Option<u64>,
    ) -> Result<PeerResponse, PeerError> {
        let m = &crate::metrics::METRICS;
        let r = self.client.get_from(peer, what, host, name, digest, &self.token, from).await;
        match &r {
            Ok(_) => m.peer_requests.with_label_values(&["made", "ok"]).inc(),
            Err(PeerError::NotFound { .. }) => m.peer_requests.with_label_values(&["made", "not_found"]).inc(),
            Err(e) => {
                m.peer_requests.with_label_values(&["made", "failed_over"]).inc();
                tracing::warn!(peer = %peer, error = %e, "peer did not serve; asking the next one");
                self.members.back_off(peer);
            }
        }
        r
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

/// What to ask a peer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    Blob,
    Manifest,
}
