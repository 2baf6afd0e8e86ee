//! `[cluster]`: the peers this node forms a cluster with, and where its shared secret comes from.

use super::serde_util::duration;
use super::size::ByteRate;
use crate::secret::Secret;
use serde::Deserialize;
use std::time::Duration;

/// `[cluster]`: the peers this node forms a cluster with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// How the other nodes reach this node's client port (`http://POD_IP:5000`).
    pub advertise: String,
    /// A static peer list (this node's `advertise` may be in it).
    #[serde(default)]
    pub peers: Vec<String>,
    /// `host:port` of a headless Service whose addresses are the peers; re-resolved.
    pub peers_dns: Option<String>,
    /// The environment variable holding the shared secret peers present to each other.
    #[serde(default = "default_cluster_token_env")]
    pub token_env: String,
    /// Time to a peer's response headers; past it the next peer (then the upstream) is asked.
    #[serde(default = "default_peer_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// The most peers this node sends one blob to at once; an owner at the limit refers
    /// new askers to a node receiving the blob. 1 (the default) makes a chain, which keeps
    /// rollout time flat as the cluster grows (README, "Cluster-wide single flight").
    #[serde(default = "default_max_peer_streams")]
    pub max_peer_streams: usize,
    /// Bytes per second this node sends to peers, all streams together (`"50MiB/s"`);
    /// unset or `"0"`: no limit.
    pub peer_upload_rate: Option<ByteRate>,
    /// A private CA (PEM) that signed the peers' https certificates.
    pub ca_file: Option<std::path::PathBuf>,
    /// Resolved from `token_env` at load time.
    #[serde(skip)]
    pub token: Option<Secret>,
}

fn default_cluster_token_env() -> String {
    "PULLTHROUGH_CLUSTER_TOKEN".into()
}

fn default_peer_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_peer_streams() -> usize {
    1
}
