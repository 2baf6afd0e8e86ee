//! What the upstream layer is told about one registry: where it is, how long to wait, how
//! to authenticate. Built by `crate::settings` from the validated `[[upstream]]` section,
//! with its credentials already read, so nothing here parses configuration or reads files
//! for secrets.

use crate::secret::Secret;
use std::path::PathBuf;
use std::time::Duration;

/// One upstream registry.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The registry name clients use: containerd's `?ns=` value and a path prefix.
    pub host: String,
    /// Its base URL (`https://…`, or `http://…` for labs): validated, never empty.
    pub url: String,
    /// An extra path prefix that selects this upstream.
    pub prefix: Option<String>,
    /// Serves names that carry neither `?ns=` nor a known prefix.
    pub default: bool,
    pub connect_timeout: Duration,
    /// Time allowed for response headers, and between two body chunks of a transfer.
    pub read_timeout: Duration,
    pub auth: AuthSettings,
    /// How long no new credentials are asked for after a refusal (doubling, up to 10 min).
    pub auth_cooldown: Duration,
    /// Send credentials to a plain-http token endpoint on another host.
    pub allow_http_realm_credentials: bool,
    /// Extra CA certificates (PEM) trusted for this upstream.
    pub ca_file: Option<PathBuf>,
    /// Do not verify the upstream's TLS certificate (labs only).
    pub insecure_skip_verify: bool,
    /// What of the registry's rate-limit budget is kept back (`rate_limit_reserve`).
    pub rate_limit: super::BudgetSettings,
    /// The WAN budget: bytes per second all fills together may fetch (`max_rate`).
    pub max_rate: Option<u64>,
    /// How connections to the registry, its token realm and ECR's API leave the site.
    pub egress: crate::egress::Egress,
}

/// How the client authenticates, its secrets resolved.
#[derive(Debug, Clone, Default)]
pub enum AuthSettings {
    #[default]
    Anonymous,
    /// Sent as Basic, and to the token endpoint of Bearer registries.
    Basic { username: String, password: Secret },
    /// Tokens from ECR's GetAuthorizationToken, refreshed in the background.
    Ecr(EcrSettings),
    /// `docker-credential-<helper> get`, asked for `server`.
    CredentialHelper { helper: String, server: String },
}

/// Amazon ECR's token source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EcrSettings {
    pub region: String,
    /// Registry (account) id; `None`: the caller's.
    pub registry_id: Option<String>,
    /// ECR API endpoint override: VPC endpoints, FIPS, tests.
    pub endpoint_url: Option<String>,
    /// Refresh at least this often (by default at the token's half-life).
    pub refresh_every: Option<Duration>,
}
