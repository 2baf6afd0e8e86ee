//! `pullthrough doctor`: check a configuration end to end, the way the daemon will use it,
//! and say what to fix. One line per check (`ok`, `skip` or `FAIL`, what was checked, and
//! for a failure what to do); the command fails if any check failed.
//!
//! The checks use the daemon's own code paths: the upstream client (with its auth: the
//! 401 challenge, the token endpoint, Basic or ECR credentials), the ECR token source, the
//! shared tier's probe. Only the peers' `/healthz` is asked with a plain client.

use super::location::{Location, Resolved};
use super::stdout::outln;
use pullthrough::config::{AuthConfig, Config, UpstreamConfig};
use pullthrough::upstream::UpstreamError;
use std::path::Path;
use std::time::Duration;

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    /// Not applicable to this configuration (e.g. upstreams in offline mode).
    Skip,
    Fail,
}

struct Check {
    status: Status,
    what: String,
    detail: String,
    /// What to do about a failure.
    fix: Option<String>,
}

impl Check {
    fn ok(what: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { status: Status::Ok, what: what.into(), detail: detail.into(), fix: None }
    }
    fn skip(what: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { status: Status::Skip, what: what.into(), detail: detail.into(), fix: None }
    }
    fn fail(what: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check { status: Status::Fail, what: what.into(), detail: detail.into(), fix: Some(fix.into()) }
    }

    fn line(&self) -> String {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Skip => "skip",
            Status::Fail => "FAIL",
        };
        match &self.fix {
            Some(fix) => format!("{tag}  {}: {}; fix: {fix}", self.what, self.detail),
            None => format!("{tag}  {}: {}", self.what, self.detail),
        }
    }
}

/// Run every check, printing each as it completes; `Ok(false)` if any failed.
pub fn run(loc: &Location) -> anyhow::Result<bool> {
    let mut failed = 0;
    let mut total = 0;
    let mut report = |c: Check| {
        total += 1;
        if c.status == Status::Fail {
            failed += 1;
        }
        outln!("{}", c.line());
    };
    let resolved = match loc.resolve() {
        Ok(r) => {
            report(Check::ok(
                "config",
                format!("{} is valid ({} upstreams)", loc.config.describe(), r.config.upstreams.len()),
            ));
            r
        }
        Err(e) => {
            report(Check::fail(
                "config",
                super::error_text(&e),
                "correct the file (`pullthrough check-config --config FILE` says the same)",
            ));
            outln!("doctor: the configuration is unusable; nothing else was checked");
            return Ok(false);
        }
    };
    loc.announce("doctor", "checking", &resolved);
    for c in cache_checks(&resolved) {
        report(c);
    }
    let rt = super::runtime()?;
    for c in rt.block_on(network_checks(&resolved.config)) {
        report(c);
    }
    if failed == 0 {
        outln!("doctor: all {total} checks passed");
    } else {
        outln!("doctor: {failed} of {total} checks failed");
    }
    Ok(failed == 0)
}

/// The cache directory: takes writes (or can be created), and the space it has. Blocking;
/// run before the runtime starts.
fn cache_checks(r: &Resolved) -> Vec<Check> {
    let dir = &r.cache_dir;
    let what = format!("cache directory {}", dir.display());
    let fix_dir = "make it a directory the user running pullthrough can write, or choose another with \
                   --cache-dir or [cache] dir";
    let mut out = Vec::new();
    let existing = if dir.is_dir() {
        match probe_write(dir) {
            Ok(()) => out.push(Check::ok(&what, "exists and takes writes")),
            Err(e) => out.push(Check::fail(&what, format!("cannot write to it: {e}"), fix_dir)),
        }
        dir.clone()
    } else if dir.exists() {
        out.push(Check::fail(&what, "exists but is not a directory", fix_dir));
        return out;
    } else {
        // The nearest existing ancestor is where `create_dir_all` would start.
        let Some(ancestor) = dir.ancestors().skip(1).find(|a| a.exists()).map(Path::to_path_buf) else {
            out.push(Check::fail(&what, "does not exist, and no parent directory does", fix_dir));
            return out;
        };
        if !ancestor.is_dir() {
            out.push(Check::fail(
                &what,
                format!("cannot be created: {} is not a directory", ancestor.display()),
                fix_dir,
            ));
            return out;
        }
        match probe_write(&ancestor) {
            Ok(()) => out.push(Check::ok(
                &what,
                format!("does not exist yet; it will be created in {} (which takes writes)", ancestor.display()),
            )),
            Err(e) => out.push(Check::fail(
                &what,
                format!("does not exist, and {} cannot be written to create it: {e}", ancestor.display()),
                fix_dir,
            )),
        }
        ancestor
    };
    out.push(space_check(&existing, &r.config));
    out
}

/// Create, fsync and remove a file in `dir`.
fn probe_write(dir: &Path) -> std::io::Result<()> {
    let p = dir.join(format!(".pullthrough-doctor-{}", std::process::id()));
    let f = std::fs::File::options().write(true).create_new(true).open(&p)?;
    let synced = f.sync_all();
    let removed = std::fs::remove_file(&p);
    synced.and(removed)
}

fn space_check(dir: &Path, cfg: &Config) -> Check {
    let what = format!("free space at {}", dir.display());
    let space = match pullthrough::store::fs_space(dir) {
        Ok(s) => s,
        Err(e) => return Check::fail(what, format!("cannot read the filesystem's size: {e}"), "check the mount"),
    };
    let keep = cfg.cache.min_free.bytes_of(space.size);
    let budget = match &cfg.cache.max_size {
        Some(m) => format!(", max_size {}", super::human_bytes(m.0)),
        None => String::new(),
    };
    let detail = format!(
        "{} available of {} (min_free keeps {} free{budget})",
        super::human_bytes(space.available),
        super::human_bytes(space.size),
        super::human_bytes(keep)
    );
    if space.available <= keep {
        Check::fail(
            what,
            format!("{detail}: nothing new can be cached"),
            "free space on that filesystem, lower [cache] min_free, or choose another directory",
        )
    } else {
        Check::ok(what, detail)
    }
}

/// Upstreams (and their ECR tokens), the shared tier and the cluster's peers, checked at
/// the same time; the results in that order.
async fn network_checks(cfg: &Config) -> Vec<Check> {
    let upstreams = futures_util::future::join_all(cfg.upstreams.iter().map(|u| upstream_checks(u, cfg)));
    let (upstreams, shared, peers) = tokio::join!(upstreams, shared_check(cfg), peer_checks(cfg));
    let mut out: Vec<Check> = upstreams.into_iter().flatten().collect();
    out.extend(shared);
    out.extend(peers);
    out
}

async fn upstream_checks(u: &UpstreamConfig, cfg: &Config) -> Vec<Check> {
    let settings = pullthrough::settings::upstream_settings(u);
    // The proxy this upstream's connections go through, named in the check and its fix.
    let via = u.url.parse().ok().and_then(|url| settings.egress.proxy_for(&url));
    let what = match &via {
        Some(p) => format!("upstream {} ({} via the egress proxy {p})", u.host, u.url),
        None => format!("upstream {} ({})", u.host, u.url),
    };
    if cfg.server.offline {
        return vec![Check::skip(what, "not contacted: [server] offline = true")];
    }
    let mut out = Vec::new();
    if let pullthrough::upstream::AuthSettings::Ecr(e) = &settings.auth {
        out.push(ecr_check(u, e, &settings.egress).await);
    }
    let tls = match pullthrough::upstream::tls_config_for(&settings) {
        Ok(t) => t,
        Err(e) => {
            out.push(Check::fail(what, super::error_text(&e), "fix ca_file of this upstream"));
            return out;
        }
    };
    let registry = pullthrough::upstream::Registry::new(&settings, &tls, false);
    // Connect, the token fetch and the request each have their own timeouts; this bounds
    // the whole exchange.
    let limit = u.connect_timeout + u.read_timeout * 2;
    let how = match &u.auth {
        AuthConfig::Anonymous => "anonymously".to_string(),
        AuthConfig::Basic { username, .. } => format!("as {username}"),
        AuthConfig::Ecr(_) => "with an ECR token".to_string(),
        AuthConfig::DockerConfig { .. } => "with docker config credentials".to_string(),
        AuthConfig::CredentialHelper { helper, .. } => format!("with credentials from docker-credential-{helper}"),
    };
    out.push(match tokio::time::timeout(limit, registry.ping()).await {
        Ok(Ok(status)) => Check::ok(what, format!("GET /v2/ answered {status} {how}")),
        Ok(Err(e)) => {
            let fix = upstream_fix(&e, u, via.as_deref());
            Check::fail(what, format!("{e} (asked {how})"), fix)
        }
        Err(_) => Check::fail(what, format!("no answer within {limit:?}"), upstream_fix_unreachable(u, via.as_deref())),
    });
    out
}

fn upstream_fix_unreachable(u: &UpstreamConfig, via: Option<&str>) -> String {
    match via {
        Some(p) => format!(
            "check that the egress proxy {p} is up, accepts this machine (and its credentials), and reaches url = \
             {:?}; or bypass it (NO_PROXY, or proxy = \"none\" for this upstream)",
            u.url
        ),
        None => format!("check url = {:?} and that this machine reaches it (DNS, firewall, HTTP proxy)", u.url),
    }
}

/// What an operator should change for an upstream error (`via`: the egress proxy in use).
fn upstream_fix(e: &UpstreamError, u: &UpstreamConfig, via: Option<&str>) -> String {
    match e {
        UpstreamError::Connect { .. } | UpstreamError::Timeout { .. } | UpstreamError::Transfer { .. } => {
            upstream_fix_unreachable(u, via)
        }
        UpstreamError::Denied { .. } => {
            "check [upstream.auth] of this upstream: the registry refused its credentials (or wants some)".into()
        }
        UpstreamError::Token { .. } => {
            "the registry's token endpoint failed: check the credentials in [upstream.auth] and that this \
             machine reaches the token service"
                .into()
        }
        UpstreamError::Realm { .. } => {
            "the registry names a token endpoint pullthrough will not use: see the message (an http realm on \
             another host needs allow_http_realm_credentials = true)"
                .into()
        }
        UpstreamError::TooManyRequests { .. } => "the registry is rate limiting this address: wait, or log in".into(),
        UpstreamError::Redirect { .. } | UpstreamError::BadResponse { .. } | UpstreamError::Status { .. } => {
            format!("{:?} does not answer as an OCI registry: check url (it should answer /v2/)", u.url)
        }
        UpstreamError::NotFound { .. } => {
            format!("{:?} answered 404 for /v2/: it is not a registry's base URL; check url", u.url)
        }
        UpstreamError::Offline { .. } => "[server] offline = true: upstreams are not contacted".into(),
    }
}

async fn ecr_check(
    u: &UpstreamConfig,
    e: &pullthrough::upstream::EcrSettings,
    egress: &pullthrough::egress::Egress,
) -> Check {
    let what = format!("ECR token for {}", u.host);
    let tokens = pullthrough::upstream::EcrTokens::new(&u.host, e.clone(), u.auth_cooldown, egress.clone());
    let fix = "give this machine AWS credentials (environment, profile, web identity, instance role) allowed \
               ecr:GetAuthorizationToken, and check region and endpoint_url";
    match tokio::time::timeout(Duration::from_secs(30), tokens.credentials()).await {
        Ok(Ok(_)) => Check::ok(what, format!("GetAuthorizationToken answered (region {})", e.region)),
        Ok(Err(err)) => Check::fail(what, err.to_string(), fix),
        Err(_) => Check::fail(what, "GetAuthorizationToken did not answer within 30s", fix),
    }
}

async fn shared_check(cfg: &Config) -> Option<Check> {
    let s = cfg.shared.s3.as_ref()?;
    // As `build_pull_through` builds it.
    let tier = pullthrough::shared::SharedTier::new(pullthrough::shared_settings(s));
    let what = format!("shared tier {}", tier.describe());
    let fix = "check [shared.s3] bucket, region and endpoint_url, and that this machine's AWS credentials may \
               put, get and delete objects in the bucket";
    let limit = s.timeout * 4;
    Some(match tokio::time::timeout(limit, tier.probe()).await {
        Ok(Ok(())) => Check::ok(what, "a probe object was written, read back and deleted"),
        Ok(Err(e)) => Check::fail(what, super::error_text(&anyhow::Error::new(e)), fix),
        Err(_) => Check::fail(what, format!("no answer within {limit:?}"), fix),
    })
}

/// Each peer other than this node answers `/healthz`; `peers_dns` resolves.
async fn peer_checks(cfg: &Config) -> Vec<Check> {
    let Some(c) = &cfg.cluster else { return Vec::new() };
    let me = c.advertise.trim_end_matches('/');
    let mut peers: Vec<String> =
        c.peers.iter().map(|p| p.trim_end_matches('/').to_string()).filter(|p| p != me).collect();
    let mut out = Vec::new();
    if let Some(name) = &c.peers_dns {
        let what = format!("cluster peers_dns {name}");
        let scheme = me.split("://").next().unwrap_or("http");
        match tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host(name.as_str())).await {
            Ok(Ok(addrs)) => {
                let found: Vec<String> = addrs.map(|a| format!("{scheme}://{a}")).collect();
                out.push(Check::ok(&what, format!("resolves to {} addresses", found.len())));
                peers.extend(found.into_iter().filter(|p| p != me));
            }
            Ok(Err(e)) => out.push(Check::fail(
                &what,
                format!("does not resolve: {e}"),
                "check the headless Service's name and namespace (host:port)",
            )),
            Err(_) => out.push(Check::fail(&what, "no DNS answer within 10s", "check DNS on this machine")),
        }
    }
    peers.sort();
    peers.dedup();
    if peers.is_empty() && c.peers_dns.is_none() {
        out.push(Check::ok("cluster peers", "no peer other than this node is listed"));
    }
    let client = PeerProbe::new(c.timeout);
    let results = futures_util::future::join_all(peers.iter().map(|p| client.healthz(p))).await;
    for (p, r) in peers.iter().zip(results) {
        let what = format!("cluster peer {p}");
        out.push(match r {
            Ok(status) if status.is_success() => Check::ok(what, format!("/healthz answered {status}")),
            Ok(status) => Check::fail(
                what,
                format!("/healthz answered {status}"),
                "is pullthrough what listens there? check [cluster] peers",
            ),
            Err(e) => Check::fail(
                what,
                e,
                "check that the peer runs and that this node reaches its client port (network policy, firewall)",
            ),
        });
    }
    out
}

type ProbeClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

/// A plain client for the peers' `/healthz`, trusting the system roots.
struct PeerProbe {
    client: ProbeClient,
    timeout: Duration,
}

impl PeerProbe {
    fn new(timeout: Duration) -> PeerProbe {
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(pullthrough::upstream::tls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        PeerProbe { client, timeout }
    }

    async fn healthz(&self, peer: &str) -> Result<http::StatusCode, String> {
        let url: http::Uri = format!("{peer}/healthz").parse().map_err(|e| format!("not a URL: {e}"))?;
        let req = http::Request::get(url)
            .header(http::header::USER_AGENT, pullthrough::USER_AGENT)
            .body(http_body_util::Empty::new())
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp.status()),
            Ok(Err(e)) => Err(format!("no answer: {}", pullthrough::upstream::error_chain(&e))),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}
