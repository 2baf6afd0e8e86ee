//! The TOML configuration: its shape, the embedded default, and validation.
//!
//! Parsing is strict (`deny_unknown_fields`) so a typo is an error that names the key rather
//! than a silently ignored setting. Secrets are resolved here, once, at load time, so a
//! missing environment variable or file stops the daemon at start instead of at first pull.

use crate::core::lifecycle::LifecyclePolicy;
use crate::pattern::Pattern;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The configuration compiled into the binary (`config/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// Who may pull what: users, anonymous access, a deny-list.
    #[serde(default)]
    pub access: AccessConfig,
    /// Images the daemon keeps cached: fetched at start and every `cache.prefetch_interval`.
    #[serde(default, rename = "prefetch")]
    pub prefetch: Vec<PrefetchConfig>,
    /// A second cache tier shared by every node: an S3-compatible bucket.
    #[serde(default)]
    pub shared: SharedConfig,
    /// Cluster-wide single flight: each digest's owner among the peers fills it once.
    pub cluster: Option<ClusterConfig>,
}

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

/// `[shared]`: the tier behind every node's disk cache. Absent: none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedConfig {
    pub s3: Option<S3Config>,
}

/// `[shared.s3]`: an S3-compatible bucket (AWS S3, Ceph RGW, MinIO, Garage). Credentials
/// come from the AWS default chain (environment, profile, web identity / IRSA, instance role).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix for every object ("cache/"); a trailing `/` is added when missing.
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// Garage, MinIO, Ceph RGW, a VPC endpoint; default: AWS's endpoint for the region.
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most non-AWS engines need.
    #[serde(default)]
    pub path_style: bool,
    /// Time to a read's response headers and between its body chunks; past it, the
    /// upstream is asked instead.
    #[serde(default = "default_s3_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Background uploads at once.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
}

fn default_s3_region() -> String {
    "us-east-1".into()
}

fn default_s3_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_upload_concurrency() -> usize {
    4
}

/// Client access control (ECR's IAM, seen from the proxy). With no users, every client may
/// pull (keep the listener on loopback, or behind a network policy).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Whether clients without credentials may pull. Default: true with no users, else false.
    pub anonymous: Option<bool>,
    /// What anonymous clients may pull (globs over `registry/repository`). Default: all.
    #[serde(default = "allow_all")]
    pub anonymous_allow: Vec<Pattern>,
    /// Refused to everyone with 403 DENIED: `registry/repository` globs or digests (sha256, sha512).
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default, rename = "user")]
    pub users: Vec<UserConfig>,
    /// Connections one client address may hold open at once.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
}

impl Default for AccessConfig {
    fn default() -> Self {
        toml::from_str("").expect("access defaults")
    }
}

fn allow_all() -> Vec<Pattern> {
    vec![Pattern::new("*")]
}

fn default_max_connections_per_client() -> usize {
    512
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// bcrypt hash, as `htpasswd -B` writes it: Basic auth with this user's password.
    pub password_bcrypt: Option<String>,
    /// Hex sha256 of a bearer token the user presents as `Authorization: Bearer <token>`.
    pub token_sha256: Option<String>,
    /// Hex sha256 of the DER client certificate that identifies this user over mTLS
    /// (`openssl x509 -in c.pem -outform DER | sha256sum`).
    pub cert_sha256: Option<String>,
    /// What the user may pull: globs over `registry/repository`. Default: all.
    #[serde(default = "allow_all")]
    pub allow: Vec<Pattern>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefetchConfig {
    /// `registry/repo:tag` or `registry/repo@sha256:…`, the registry a configured upstream.
    pub image: String,
    /// Platforms of a multi-platform image to fetch (`linux/amd64`, `linux/arm64/v8`);
    /// empty: all of them.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Never evict or expire it.
    #[serde(default)]
    pub pin: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
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
        a => a.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("{a:?} is not an address like \"127.0.0.1:5001\" (or \"off\")"))
        }),
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Where blobs, manifests and tag records live. See `default_cache_dir`.
    pub dir: Option<PathBuf>,
    /// Budget for cached content; eviction keeps the total under it. Unset: no size cap
    /// (only `min_free` applies).
    pub max_size: Option<ByteSize>,
    /// Free space to leave on the cache's filesystem: bytes (`"10GiB"`) or a share (`"10%"`).
    #[serde(default = "default_min_free")]
    pub min_free: SpaceAmount,
    /// Eviction starts above this share of `max_size`...
    #[serde(default = "default_high_watermark")]
    pub high_watermark: f64,
    /// ...and stops below this one.
    #[serde(default = "default_low_watermark")]
    pub low_watermark: f64,
    /// How often the budget and free space are checked (fills also trigger a check).
    #[serde(default = "default_housekeeping_interval", deserialize_with = "duration")]
    pub housekeeping_interval: Duration,
    /// How often lifecycle policies are applied.
    #[serde(default = "default_lifecycle_interval", deserialize_with = "duration")]
    pub lifecycle_interval: Duration,
    /// How often `[[prefetch]]` images are fetched again (keeping their tags fresh).
    #[serde(default = "default_prefetch_interval", deserialize_with = "duration")]
    pub prefetch_interval: Duration,
    /// Upstream blob fetches running at once; more wait their turn.
    #[serde(default = "default_max_concurrent_fills")]
    pub max_concurrent_fills: usize,
    /// Images never evicted or expired: `host/repo:tag` or `host/repo@sha256:…`.
    #[serde(default)]
    pub pins: Vec<String>,
    /// Memory for verified manifests (by digest) and fresh tag answers, so that hot
    /// manifest requests do no file IO; `0` turns it off.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        toml::from_str("").expect("cache defaults")
    }
}

fn default_min_free() -> SpaceAmount {
    SpaceAmount::Percent(10.0)
}
fn default_high_watermark() -> f64 {
    0.95
}
fn default_low_watermark() -> f64 {
    0.85
}
fn default_housekeeping_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_max_concurrent_fills() -> usize {
    64
}
fn default_prefetch_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_lifecycle_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_memory() -> ByteSize {
    ByteSize(64 << 20)
}

/// A size in bytes, written `"50GiB"`, `"500MB"`, `"1048576"` (or a bare integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a size like \"50GiB\" or \"500MB\""))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            "t" | "tb" => 1000u64.pow(4),
            "tib" => 1 << 40,
            u => return Err(format!("{s:?}: unknown unit {u:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)")),
        };
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::Integer(i) if i >= 0 => Ok(ByteSize(i as u64)),
            toml::Value::String(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!("{other} is not a size like \"50GiB\""))),
        }
    }
}

/// Free space: an absolute amount or a share of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpaceAmount {
    Bytes(u64),
    Percent(f64),
}

impl SpaceAmount {
    /// The amount in bytes on a filesystem of `fs_size` bytes.
    pub fn bytes_of(self, fs_size: u64) -> u64 {
        match self {
            SpaceAmount::Bytes(b) => b,
            SpaceAmount::Percent(p) => (fs_size as f64 * p / 100.0) as u64,
        }
    }
}

impl<'de> Deserialize<'de> for SpaceAmount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) if s.trim().ends_with('%') => {
                let p: f64 = s
                    .trim()
                    .trim_end_matches('%')
                    .trim()
                    .parse()
                    .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a percentage like \"10%\"")))?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(serde::de::Error::custom(format!("{s:?} must be between 0% and 100%")));
                }
                Ok(SpaceAmount::Percent(p))
            }
            toml::Value::String(s) => {
                ByteSize::parse(&s).map(|b| SpaceAmount::Bytes(b.0)).map_err(serde::de::Error::custom)
            }
            toml::Value::Integer(i) if i >= 0 => Ok(SpaceAmount::Bytes(i as u64)),
            other => Err(serde::de::Error::custom(format!("{other} is not a size (\"10GiB\") or a share (\"10%\")"))),
        }
    }
}

impl CacheConfig {
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(default_cache_dir)
    }
}

/// A cache directory a non-root user can write: the XDG cache dir, else `./pullthrough-cache`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("pullthrough");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("pullthrough");
    }
    PathBuf::from("pullthrough-cache")
}

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
    /// Per-repository settings; the first entry whose `match` fits a repository applies.
    #[serde(default, rename = "repository")]
    pub repositories: Vec<RepositoryRule>,
}

impl UpstreamConfig {
    /// The settings for repository `name` (as the upstream knows it), if any entry matches.
    pub fn rule_for(&self, name: &str) -> Option<&RepositoryRule> {
        self.repositories.iter().find(|r| r.pattern.matches(name))
    }
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
    /// An ECR lifecycle policy: its JSON text, or the same fields as a TOML table.
    pub lifecycle_policy: Option<LifecyclePolicy>,
}

fn default_tag_ttl() -> Duration {
    Duration::from_secs(60)
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

/// A secret string. Its `Debug` and `Display` never show the value, so it cannot leak into
/// logs or error messages by accident.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

fn option_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration like \"60s\", \"5m\" or \"1h\": {e}")))
}

/// Check `[cluster]` and read its token from the environment.
fn validate_cluster(c: &mut ClusterConfig) -> Result<(), (String, String)> {
    let url_ok = |u: &str| {
        u.parse::<http::Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() && matches!(u.path(), "" | "/")
        })
    };
    if !url_ok(&c.advertise) {
        return Err((
            "cluster.advertise".into(),
            format!(
                "{:?} is not a base URL like \"http://10.0.0.7:5000\" (how the other nodes reach this one)",
                c.advertise
            ),
        ));
    }
    if let Some((i, p)) = c.peers.iter().enumerate().find(|(_, p)| !url_ok(p)) {
        return Err((format!("cluster.peers[{i}]"), format!("{p:?} is not a base URL like \"http://10.0.0.8:5000\"")));
    }
    if let Some(d) = &c.peers_dns {
        if d.rsplit_once(':').is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err()) {
            return Err((
                "cluster.peers_dns".into(),
                format!("{d:?} is not host:port, e.g. \"pullthrough-peers.kube-system.svc.cluster.local:5000\""),
            ));
        }
    }
    if c.peers.is_empty() && c.peers_dns.is_none() {
        return Err(("cluster.peers".into(), "give the peers: a static `peers` list or `peers_dns`".into()));
    }
    let token = std::env::var(&c.token_env).unwrap_or_default();
    if token.len() < 16 {
        return Err((
            "cluster.token_env".into(),
            format!(
                "set the environment variable {} to the cluster's shared secret (16 characters or more; the same on every node)",
                c.token_env
            ),
        ));
    }
    c.token = Some(Secret::new(token));
    Ok(())
}

/// Check `[shared.s3]` and normalise its prefix to "" or "something/".
fn validate_s3(s3: &mut S3Config) -> Result<(), (String, String)> {
    if s3.bucket.is_empty() || s3.bucket.contains('/') {
        return Err(("shared.s3.bucket".into(), "give the bucket's name (no slashes), e.g. \"pullthrough\"".into()));
    }
    let prefix = s3.prefix.trim_matches('/');
    if prefix.split('/').any(|c| c == "." || c == "..") || prefix.contains("//") {
        return Err((
            "shared.s3.prefix".into(),
            "a key prefix like \"cache/\", without \".\" or \"..\" components".into(),
        ));
    }
    s3.prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    if let Some(u) = &s3.endpoint_url {
        let ok = u
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !ok {
            return Err((
                "shared.s3.endpoint_url".into(),
                format!("{u:?} is not an http(s) URL like \"http://127.0.0.1:3900\""),
            ));
        }
    }
    if s3.upload_concurrency == 0 || s3.timeout.is_zero() {
        return Err((
            "shared.s3.upload_concurrency".into(),
            "upload_concurrency and timeout must be greater than zero".into(),
        ));
    }
    Ok(())
}

/// Why a configuration was refused; the message names the key and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {key}: {message}")]
    Invalid { origin: String, key: String, message: String },
}

impl Config {
    /// Load and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// The embedded default.
    pub fn embedded() -> Config {
        Config::parse(DEFAULT_TOML, "embedded default config").expect("the embedded default config is valid")
    }

    /// Parse and validate TOML text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin.to_string(), message: e.to_string() })?;
        cfg.validate().map_err(|(key, message)| ConfigError::Invalid { origin: origin.to_string(), key, message })?;
        Ok(cfg)
    }

    fn validate(&mut self) -> Result<(), (String, String)> {
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(("server.tls_cert".into(), "set both tls_cert and tls_key, or neither".into()));
        }
        if self.server.tls_client_ca.is_some() && self.server.tls_cert.is_none() {
            return Err((
                "server.tls_client_ca".into(),
                "client certificates need TLS: set tls_cert and tls_key".into(),
            ));
        }
        if self.server.idle_timeout < Duration::from_secs(1) {
            return Err(("server.idle_timeout".into(), "must be at least 1s (e.g. \"30s\")".into()));
        }
        let c = &self.cache;
        if !(0.0 < c.low_watermark && c.low_watermark < c.high_watermark && c.high_watermark <= 1.0) {
            return Err((
                "cache.low_watermark".into(),
                "watermarks must satisfy 0 < low_watermark < high_watermark <= 1 (e.g. 0.85 and 0.95)".into(),
            ));
        }
        if c.housekeeping_interval.is_zero() || c.lifecycle_interval.is_zero() {
            return Err(("cache.housekeeping_interval".into(), "intervals must be greater than zero".into()));
        }
        if let Some(s3) = &mut self.shared.s3 {
            validate_s3(s3)?;
        }
        if let Some(c) = &mut self.cluster {
            validate_cluster(c)?;
        }
        if self.upstreams.is_empty() {
            return Err((
                "upstream".into(),
                "no [[upstream]] is configured; add at least one with `host` and `url`".into(),
            ));
        }
        // Pins and prefetch entries name images on configured upstreams.
        let image_refs = self.cache.pins.iter().enumerate().map(|(i, p)| (format!("cache.pins[{i}]"), p));
        let prefetch_refs = self.prefetch.iter().enumerate().map(|(i, p)| (format!("prefetch[{i}].image"), &p.image));
        for (key, text) in image_refs.chain(prefetch_refs) {
            let r: crate::oci::ImageRef =
                text.parse().map_err(|e: crate::oci::ImageRefError| (key.clone(), e.to_string()))?;
            if !self.upstreams.iter().any(|u| u.host == r.host) {
                return Err((
                    key,
                    format!("{text:?} names registry {:?}, which is not a configured upstream host", r.host),
                ));
            }
        }
        for (i, u) in self.access.users.iter().enumerate() {
            let key = format!("access.user[{i}]");
            if u.password_bcrypt.is_none() && u.token_sha256.is_none() && u.cert_sha256.is_none() {
                return Err((key, "give password_bcrypt (htpasswd -B), token_sha256 or cert_sha256".into()));
            }
            if let Some(c) = &u.cert_sha256 {
                if c.len() != 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err((key, "cert_sha256 must be 64 hex characters".into()));
                }
            }
            if let Some(h) = &u.password_bcrypt {
                if !(h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$")) {
                    return Err((key, "password_bcrypt must be a bcrypt hash ($2b$…), e.g. from htpasswd -nB".into()));
                }
            }
            if let Some(t) = &u.token_sha256 {
                if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err((key, "token_sha256 must be 64 hex characters (sha256sum of the token)".into()));
                }
            }
        }
        for (i, d) in self.access.deny.iter().enumerate() {
            if d.contains(':') && !d.contains('/') && d.parse::<crate::oci::Digest>().is_err() {
                return Err((
                    format!("access.deny[{i}]"),
                    format!("{d:?} is neither a registry/repository glob nor a sha256 or sha512 digest"),
                ));
            }
        }
        if self.access.max_connections_per_client == 0 {
            return Err(("access.max_connections_per_client".into(), "must be at least 1".into()));
        }
        let mut defaults = 0;
        for i in 0..self.upstreams.len() {
            let key = |k: &str| format!("upstream[{i}].{k}");
            let u = &self.upstreams[i];
            if !valid_host(&u.host) {
                return Err((
                    key("host"),
                    format!(
                        "{:?} is not a registry host name (lowercase name with an optional :port, e.g. \"docker.io\")",
                        u.host
                    ),
                ));
            }
            if u.url.is_empty() {
                self.upstreams[i].url = format!("https://{}", self.upstreams[i].host);
            }
            let u = &self.upstreams[i];
            validate_url(&u.url).map_err(|m| (key("url"), m))?;
            if let Some(p) = &u.prefix {
                if p.contains('/') || p.parse::<crate::oci::RepoName>().is_err() {
                    return Err((
                        key("prefix"),
                        format!(
                            "{p:?} must be one repository-name component (lowercase letters, digits, '.', '_', '-')"
                        ),
                    ));
                }
            }
            for (j, other) in self.upstreams[..i].iter().enumerate() {
                if other.host == u.host {
                    return Err((key("host"), format!("{:?} is already used by upstream[{j}]", u.host)));
                }
                for mine in std::iter::once(&u.host).chain(u.prefix.iter()) {
                    if Some(mine) == other.prefix.as_ref() || (u.prefix.as_ref() == Some(mine) && *mine == other.host) {
                        return Err((key("prefix"), format!("{mine:?} is already used by upstream[{j}]")));
                    }
                }
            }
            if u.default {
                defaults += 1;
                if defaults > 1 {
                    return Err((key("default"), "only one upstream can be the default".into()));
                }
            }
            if u.read_timeout.is_zero() || u.connect_timeout.is_zero() {
                return Err((key("read_timeout"), "timeouts must be greater than zero".into()));
            }
            if u.auth_cooldown < Duration::from_secs(1) {
                return Err((key("auth_cooldown"), "must be at least 1s".into()));
            }
            let host = u.host.clone();
            match &mut self.upstreams[i].auth {
                AuthConfig::Ecr(e) => {
                    let parsed = crate::upstream::parse_ecr_host(&host);
                    if e.region.is_empty() {
                        match &parsed {
                            Some((_, region)) => e.region = region.clone(),
                            None => {
                                return Err((
                                    key("auth.region"),
                                    format!("{host:?} is not an ECR host name (<account>.dkr.ecr.<region>.amazonaws.com): set region"),
                                ))
                            }
                        }
                    }
                    if e.registry_id.is_none() {
                        e.registry_id = parsed.map(|(id, _)| id);
                    }
                    if let Some(url) = &e.endpoint_url {
                        validate_endpoint(url).map_err(|m| (key("auth.endpoint_url"), m))?;
                    }
                }
                AuthConfig::DockerConfig { path, registry } => {
                    self.upstreams[i].auth =
                        match docker_config_credentials(path.as_deref(), registry.as_deref(), &host)
                            .map_err(|m| (key("auth"), m))?
                        {
                            DockerCredentials::Basic(username, password) => AuthConfig::Basic {
                                username,
                                password: Some(password),
                                password_env: None,
                                password_file: None,
                            },
                            DockerCredentials::Helper { helper, server } => {
                                AuthConfig::CredentialHelper { helper, server: Some(server) }
                            }
                        };
                }
                AuthConfig::CredentialHelper { helper, server } => {
                    if !valid_helper_name(helper) {
                        return Err((
                            key("auth.helper"),
                            format!("{helper:?} is not a credential helper name (as in docker-credential-<name>)"),
                        ));
                    }
                    if server.is_none() {
                        *server = Some(docker_auths_keys(&host)[0].clone());
                    }
                }
                _ => {}
            }
            let u = &self.upstreams[i];
            if let AuthConfig::Basic { password, password_env, password_file, username } = &u.auth {
                let resolved = resolve_password(password, password_env, password_file).map_err(|m| (key("auth"), m))?;
                if password.is_some() {
                    tracing::warn!(upstream = %u.host, "a password is written inline in the config; prefer password_env or password_file");
                }
                let username = username.clone();
                self.upstreams[i].auth =
                    AuthConfig::Basic { username, password: Some(resolved), password_env: None, password_file: None };
            }
        }
        Ok(())
    }
}

fn resolve_password(inline: &Option<Secret>, env: &Option<String>, file: &Option<PathBuf>) -> Result<Secret, String> {
    match (inline, env, file) {
        (Some(p), None, None) => Ok(p.clone()),
        (None, Some(var), None) => std::env::var(var)
            .map(Secret)
            .map_err(|_| format!("password_env names {var:?}, but that environment variable is not set")),
        (None, None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|e| format!("password_file {}: {e}", path.display())),
        (None, None, None) => Err("kind = \"basic\" needs one of password, password_env or password_file".into()),
        _ => Err("give only one of password, password_env or password_file".into()),
    }
}

fn validate_endpoint(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!("{url:?} must be an http(s) URL"));
    }
    Ok(())
}

/// What a Docker `config.json` says about a registry's credentials.
enum DockerCredentials {
    Basic(String, Secret),
    /// Ask `docker-credential-<helper>` for `server`.
    Helper {
        helper: String,
        server: String,
    },
}

/// The `auths` (and `credHelpers`) keys Docker uses for `host`, preferred first.
fn docker_auths_keys(host: &str) -> Vec<String> {
    if host == "docker.io" {
        vec!["https://index.docker.io/v1/".into(), "index.docker.io".into(), "docker.io".into()]
    } else {
        vec![host.to_string(), format!("https://{host}")]
    }
}

/// `docker-credential-<name>`: a name that cannot turn into a path or an option.
fn valid_helper_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Credentials for `host` from a Docker `config.json`: its `credHelpers` entry, else its
/// `credsStore`, else its `auths` entry.
fn docker_config_credentials(
    path: Option<&Path>,
    registry: Option<&str>,
    host: &str,
) -> Result<DockerCredentials, String> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => match (std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME")) {
            (Some(d), _) => PathBuf::from(d).join("config.json"),
            (None, Some(h)) => PathBuf::from(h).join(".docker").join("config.json"),
            _ => return Err("no path given and neither DOCKER_CONFIG nor HOME is set".into()),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    #[derive(Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    #[derive(Deserialize)]
    struct DockerConfig {
        #[serde(default)]
        auths: std::collections::HashMap<String, Entry>,
        #[serde(default, rename = "credHelpers")]
        cred_helpers: std::collections::HashMap<String, String>,
        #[serde(default, rename = "credsStore")]
        creds_store: Option<String>,
    }
    let cfg: DockerConfig =
        serde_json::from_str(&text).map_err(|e| format!("{} is not a Docker config.json: {e}", path.display()))?;
    let wanted: Vec<String> = match registry {
        Some(r) => vec![r.to_string()],
        None => docker_auths_keys(host),
    };
    let helper = wanted.iter().find_map(|k| cfg.cred_helpers.get(k).map(|h| (k, h.clone()))).or_else(|| {
        let store = cfg.creds_store.clone().filter(|s| !s.is_empty())?;
        Some((wanted.iter().find(|k| cfg.auths.contains_key(*k)).unwrap_or(&wanted[0]), store))
    });
    if let Some((server, helper)) = helper {
        if !valid_helper_name(&helper) {
            return Err(format!("{}: {helper:?} is not a credential helper name", path.display()));
        }
        return Ok(DockerCredentials::Helper { helper, server: server.clone() });
    }
    let entry = wanted
        .iter()
        .find_map(|k| cfg.auths.get(k))
        .ok_or_else(|| format!("{} has no auths entry for {}", path.display(), wanted.join(" or ")))?;
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(DockerCredentials::Basic(u.clone(), Secret(p.clone())));
    }
    let raw = entry.auth.as_deref().ok_or_else(|| format!("the auths entry in {} has no auth", path.display()))?;
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| format!("the auth in {} is not base64 of user:password", path.display()))?;
    let (u, p) = decoded
        .split_once(':')
        .ok_or_else(|| format!("the auth in {} is not base64 of user:password", path.display()))?;
    Ok(DockerCredentials::Basic(u.to_string(), Secret(p.to_string())))
}

/// `name[:port]` with lowercase DNS characters (or an IPv4 address).
fn valid_host(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    name_ok && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

fn validate_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("{url:?} must start with https:// (or http:// for a plain-HTTP registry)")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("{url:?} must be the registry's base URL, without a path or query"));
    }
    if url.contains('@') {
        return Err("credentials do not belong in the URL; use [upstream.auth]".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded();
        let hosts: Vec<_> = c.upstreams.iter().map(|u| u.host.as_str()).collect();
        assert_eq!(hosts, ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "public.ecr.aws"]);
        assert_eq!(c.upstreams.iter().filter(|u| u.default).count(), 1);
    }

    #[test]
    fn errors_name_the_key() {
        let up = "[[upstream]]\nhost = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n";
        assert!(err("").contains("upstream"));
        assert!(err(&format!("{up}tag_ttl = \"soon\"")).contains("tag_ttl"));
        assert!(err(&format!("{up}colour = 1")).contains("colour"));
        assert!(err("[[upstream]]\nhost = \"Docker.IO\"\nurl = \"https://x\"").contains("upstream[0].host"));
        assert!(err("[[upstream]]\nhost = \"x.io\"\nurl = \"ftp://x\"").contains("upstream[0].url"));
        assert!(err(&format!("{up}{up}")).contains("upstream[1].host"));
        assert!(err(&format!("{up}prefix = \"a/b\"")).contains("upstream[0].prefix"));
        assert!(err(&format!("{up}[upstream.auth]\nkind = \"basic\"\nusername = \"u\"")).contains("password"));
        assert!(err(&format!(
            "{up}[upstream.auth]\nkind = \"basic\"\nusername = \"u\"\npassword_env = \"PT_SURELY_UNSET_VAR\""
        ))
        .contains("PT_SURELY_UNSET_VAR"));
        assert!(err("[server]\nlisten = \"nowhere\"\n").contains("listen"));
    }

    #[test]
    fn access_pins_and_prefetch_are_validated() {
        let up = "[[upstream]]\nhost = \"r.io\"\nurl = \"http://127.0.0.1:1\"\n";
        assert!(err(&format!("[access]\n[[access.user]]\nname = \"a\"\n{up}")).contains("access.user[0]"));
        assert!(err(&format!("[access]\n[[access.user]]\nname = \"a\"\npassword_bcrypt = \"plain\"\n{up}"))
            .contains("bcrypt"));
        assert!(err(&format!("[access]\n[[access.user]]\nname = \"a\"\ntoken_sha256 = \"xyz\"\n{up}"))
            .contains("token_sha256"));
        assert!(err(&format!("[access]\ndeny = [\"md5:abc\"]\n{up}")).contains("access.deny[0]"));
        assert!(err(&format!("[access]\nmax_connections_per_client = 0\n{up}")).contains("max_connections_per_client"));
        assert!(err(&format!("[cache]\npins = [\"other.io/x:1\"]\n{up}")).contains("cache.pins[0]"));
        assert!(err(&format!("{up}[[prefetch]]\nimage = \"nope\"\n")).contains("prefetch[0].image"));
        assert!(Config::parse(
            &format!(
                "[cache]\npins = [\"r.io/x:1\"]\n{up}[[prefetch]]\nimage = \"r.io/y@sha256:{}\"\n",
                "0".repeat(64)
            ),
            "t"
        )
        .is_ok());
    }

    #[test]
    fn ecr_and_docker_config_auth() {
        let c = Config::parse(
            "[[upstream]]\nhost = \"123456789012.dkr.ecr.eu-west-1.amazonaws.com\"\n[upstream.auth]\nkind = \"ecr\"\n",
            "t",
        )
        .unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.url, "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        match &u.auth {
            AuthConfig::Ecr(e) => {
                assert_eq!(e.region, "eu-west-1");
                assert_eq!(e.registry_id.as_deref(), Some("123456789012"));
            }
            other => panic!("{other:?}"),
        }
        assert!(Config::parse("[[upstream]]\nhost = \"r.io\"\n[upstream.auth]\nkind = \"ecr\"\n", "t")
            .unwrap_err()
            .to_string()
            .contains("auth.region"));

        let dir = std::env::temp_dir().join(format!("pt-dc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config.json");
        // "bob:s3cret"
        std::fs::write(&f, r#"{"auths":{"ghcr.io":{"auth":"Ym9iOnMzY3JldA=="}}}"#).unwrap();
        let c = Config::parse(
            &format!(
                "[[upstream]]\nhost = \"ghcr.io\"\n[upstream.auth]\nkind = \"docker-config\"\npath = \"{}\"\n",
                f.display()
            ),
            "t",
        )
        .unwrap();
        match &c.upstreams[0].auth {
            AuthConfig::Basic { username, password: Some(p), .. } => {
                assert_eq!((username.as_str(), p.expose()), ("bob", "s3cret"))
            }
            other => panic!("{other:?}"),
        }
        let e = Config::parse(
            &format!(
                "[[upstream]]\nhost = \"quay.io\"\n[upstream.auth]\nkind = \"docker-config\"\npath = \"{}\"\n",
                f.display()
            ),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no auths entry for quay.io"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn docker_config_credential_helpers_pick_as_docker_does() {
        let dir = std::env::temp_dir().join(format!("pt-dch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config.json");
        std::fs::write(
            &f,
            r#"{"credHelpers":{"ghcr.io":"gh"},"credsStore":"desktop","auths":{"https://index.docker.io/v1/":{}}}"#,
        )
        .unwrap();
        let helper_of = |host: &str| {
            let c = Config::parse(
                &format!(
                    "[[upstream]]\nhost = \"{host}\"\n[upstream.auth]\nkind = \"docker-config\"\npath = \"{}\"\n",
                    f.display()
                ),
                "t",
            )
            .unwrap();
            match &c.upstreams[0].auth {
                AuthConfig::CredentialHelper { helper, server } => (helper.clone(), server.clone().unwrap()),
                other => panic!("{other:?}"),
            }
        };
        // credHelpers for its registry, credsStore (asked for the auths key) otherwise.
        assert_eq!(helper_of("ghcr.io"), ("gh".to_string(), "ghcr.io".to_string()));
        assert_eq!(helper_of("docker.io"), ("desktop".to_string(), "https://index.docker.io/v1/".to_string()));
        assert_eq!(helper_of("quay.io"), ("desktop".to_string(), "quay.io".to_string()));
        std::fs::remove_dir_all(dir).unwrap();
        let e = Config::parse(
            "[[upstream]]\nhost = \"r.io\"\n[upstream.auth]\nkind = \"credential-helper\"\nhelper = \"../x\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("auth.helper"), "{e}");
    }

    #[test]
    fn secrets_are_resolved_and_redacted() {
        let dir = std::env::temp_dir().join(format!("pt-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "hunter2\n").unwrap();
        let c = Config::parse(
            &format!(
                "[[upstream]]\nhost = \"r.io\"\nurl = \"http://127.0.0.1:1\"\n[upstream.auth]\nkind = \"basic\"\nusername = \"u\"\npassword_file = \"{}\"",
                f.display()
            ),
            "t",
        )
        .unwrap();
        match &c.upstreams[0].auth {
            AuthConfig::Basic { password: Some(p), .. } => assert_eq!(p.expose(), "hunter2"),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{c:?}").contains("hunter2"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
