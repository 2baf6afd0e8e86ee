//! `[server]`: listeners, TLS, shutdown and idle timeouts, offline mode.

use super::serde_util::{duration, listen, parse_listen};
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen", deserialize_with = "listen")]
    pub listen: SocketAddr,
    /// Where /metrics, /healthz and /readyz are served; `""` or `"off"` disables it.
    #[serde(default = "default_admin_listen", deserialize_with = "optional_addr")]
    pub admin_listen: Option<SocketAddr>,
    /// How long in-flight responses may run after SIGTERM/SIGINT before they are cut.
    #[serde(default = "default_shutdown_grace", deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// A client connection with no request in flight for this long is closed: one that never
    /// sends a byte, trickles its headers, or sits idle between keep-alive requests (HTTP/1.1
    /// and HTTP/2). Frees the per-client connection slots that silent sockets would hold.
    #[serde(default = "default_idle_timeout", deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// TLS for the client listener: PEM certificate chain and private key, reloaded on
    /// SIGHUP or when the files change.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) for client certificates (mTLS). Clients presenting one signed by
    /// these are identified by it (`access.user.cert_sha256`); others may still connect and
    /// authenticate otherwise, unless `tls_client_auth_required`.
    pub tls_client_ca: Option<PathBuf>,
    #[serde(default)]
    pub tls_client_auth_required: bool,
    /// Air-gapped: never contact upstreams; serve what is cached (tags at their last known
    /// digest) and answer the rest 503 with a message that says so.
    #[serde(default)]
    pub offline: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        toml::from_str("").expect("server defaults")
    }
}

fn default_admin_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 5001)))
}

fn optional_addr<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    match s.trim() {
        "" | "off" => Ok(None),
        a => parse_listen(a).map(Some).map_err(|e| serde::de::Error::custom(format!("{e}, or \"off\""))),
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
}

fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}
