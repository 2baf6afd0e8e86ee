//! `[[upstream]]`: a registry the proxy pulls through, its timeouts, auth and repository rules.

use super::serde_util::{duration, option_duration};
use crate::lifecycle_policy::LifecyclePolicy;
use crate::pattern::Pattern;
use crate::secret::Secret;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The registry name clients use: containerd's `?ns=` value and a path prefix.
    pub host: String,
    /// Where the registry really is: `https://…` or, for labs and air-gapped sites,
    /// `http://…`. Default: `https://<host>`.
    #[serde(default)]
    pub url: String,
    /// An extra path prefix that selects this upstream (ECR pull-through-cache style).
    pub prefix: Option<String>,
    /// Serves names that carry neither `?ns=` nor a known prefix.
    #[serde(default)]
    pub default: bool,
    /// How long a tag→digest answer is trusted before it is revalidated upstream.
    #[serde(default = "default_tag_ttl", deserialize_with = "duration")]
    pub tag_ttl: Duration,
    /// After `tag_ttl`, for how long more a cached tag is answered at once and revalidated
    /// in the background (stale-while-revalidate). `"0"` (the default): off.
    #[serde(default, deserialize_with = "duration")]
    pub stale_while_revalidate: Duration,
    /// Requests of the upstream's rate-limit budget (`RateLimit-Remaining`) kept back for
    /// content the cache does not have: below it, cached tags are revalidated with HEAD only.
    #[serde(default = "default_rate_limit_reserve")]
    pub rate_limit_reserve: u64,
    /// Time allowed to establish a TCP (and TLS) connection.
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Time allowed for response headers, and between two body chunks of a transfer.
    #[serde(default = "default_read_timeout", deserialize_with = "duration")]
    pub read_timeout: Duration,
    #[serde(default)]
    pub auth: AuthConfig,
    /// After the registry refuses freshly obtained credentials, or its token endpoint fails:
    /// how long no new ones are asked for (refused requests fail at once). Doubles with each
    /// further failure, up to 10 minutes; a success resets it.
    #[serde(default = "default_auth_cooldown", deserialize_with = "duration")]
    pub auth_cooldown: Duration,
    /// Send this upstream's credentials to a token endpoint (realm) that is plain http on
    /// another host than the registry. Off: credentials go to another host only over https.
    #[serde(default)]
    pub allow_http_realm_credentials: bool,
    /// Extra CA certificates (PEM) trusted for this upstream, on top of the system's.
    pub ca_file: Option<PathBuf>,
    /// Do not verify this upstream's TLS certificate. For labs only: logged loudly.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The WAN budget: bytes per second fetched from this upstream by all fills together
    /// (`"20MiB/s"`); `"0"` (the default): no limit.
    #[serde(default)]
    pub max_rate: super::ByteRate,
    /// The egress proxy for this upstream (its registry, token realm and ECR API):
    /// `"http://[user[:password]@]host:port"`, or `"none"` to connect directly. Default: the
    /// environment's `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`.
    pub proxy: Option<String>,
    /// The environment variable holding the password of the proxy URL's user.
    pub proxy_password_env: Option<String>,
    /// The password `proxy_password_env` names, read when the configuration is loaded.
    #[serde(skip)]
    pub proxy_password: Option<Secret>,
    /// Per-repository settings; the first entry whose `match` fits a repository applies.
    #[serde(default, rename = "repository")]
    pub repositories: Vec<RepositoryRule>,
}

/// Settings for the repositories of one upstream whose names match a glob.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryRule {
    /// Glob over the upstream's repository name (`*` crosses `/`): `"library/*"`, `"*"`.
    #[serde(rename = "match")]
    pub pattern: Pattern,
    /// Tags that, once cached, are never revalidated upstream (ECR's IMMUTABLE, from the
    /// cache's side): globs like `"v*"`.
    #[serde(default)]
    pub immutable_tags: Vec<Pattern>,
    /// Overrides the upstream's `stale_while_revalidate` for these repositories.
    #[serde(default, deserialize_with = "option_duration")]
    pub stale_while_revalidate: Option<Duration>,
    /// An ECR lifecycle policy: its JSON text, or the same fields as a TOML table.
    pub lifecycle_policy: Option<LifecyclePolicy>,
}

/// The `proxy` value that bypasses every proxy, the environment's included.
pub const PROXY_NONE: &str = "none";

fn default_tag_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_rate_limit_reserve() -> u64 {
    10
}
fn default_auth_cooldown() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AuthConfig {
    #[default]
    Anonymous,
    /// Username and password, sent as Basic to registries that ask for it and to the token
    /// endpoint of registries that use Bearer tokens (Docker Hub, GHCR, Quay).
    Basic { username: String, password: Option<Secret>, password_env: Option<String>, password_file: Option<PathBuf> },
    /// Amazon ECR: tokens from GetAuthorizationToken, refreshed in the background.
    Ecr(EcrAuthConfig),
    /// Credentials from a Docker `config.json`, read at start: its `credHelpers` entry for
    /// the registry, else its `credsStore`, else its `auths` entry (as Docker does).
    #[serde(rename = "docker-config")]
    DockerConfig {
        /// Default: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
        path: Option<PathBuf>,
        /// The `auths` key to use. Default: the upstream's host (Docker Hub:
        /// `https://index.docker.io/v1/`).
        registry: Option<String>,
    },
    /// A Docker credential helper, `docker-credential-<helper> get`, run when credentials are
    /// needed and again after the registry refuses its answer (or it is 30 minutes old).
    #[serde(rename = "credential-helper")]
    CredentialHelper {
        helper: String,
        /// What the helper is asked for. Default: the upstream's host (Docker Hub:
        /// `https://index.docker.io/v1/`).
        server: Option<String>,
    },
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EcrAuthConfig {
    /// AWS region. Default: parsed from an ECR host name.
    #[serde(default)]
    pub region: String,
    /// Registry (account) id. Default: parsed from an ECR host name, else the caller's.
    pub registry_id: Option<String>,
    /// ECR API endpoint override: VPC endpoints, FIPS, tests.
    pub endpoint_url: Option<String>,
    /// Refresh at least this often (tokens live 12 h; by default refresh at half-life).
    #[serde(default, deserialize_with = "option_duration")]
    pub refresh_every: Option<Duration>,
}
