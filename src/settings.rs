//! The edge's one mapping from the configuration schema (`config`) into each layer's own
//! settings: the layers below never import `config`, so a schema change stops here.

use crate::config::{self, AccessConfig, AuthConfig, CacheConfig, ClusterConfig, UpstreamConfig};
use crate::{cluster, core, events, oci, shared, store, upstream};

/// The store's budget from `[cache]`.
pub fn store_budget(c: &CacheConfig) -> store::SpaceBudget {
    store::SpaceBudget {
        max_size: c.max_size.map(|b| b.0),
        min_free: match c.min_free {
            config::SpaceAmount::Bytes(b) => store::MinFree::Bytes(b),
            config::SpaceAmount::Percent(p) => store::MinFree::Percent(p),
        },
        high_watermark: c.high_watermark,
        low_watermark: c.low_watermark,
    }
}

/// One upstream client's settings from its `[[upstream]]` (credentials already loaded).
pub fn upstream_settings(u: &UpstreamConfig) -> upstream::UpstreamSettings {
    upstream::UpstreamSettings {
        host: u.host.clone(),
        url: u.url.clone(),
        prefix: u.prefix.clone(),
        default: u.default,
        connect_timeout: u.connect_timeout,
        read_timeout: u.read_timeout,
        auth: auth_settings(&u.host, &u.auth),
        auth_cooldown: u.auth_cooldown,
        allow_http_realm_credentials: u.allow_http_realm_credentials,
        ca_file: u.ca_file.clone(),
        insecure_skip_verify: u.insecure_skip_verify,
        rate_limit: upstream::BudgetSettings { reserve: u.rate_limit_reserve },
        max_rate: (u.max_rate.0 > 0).then_some(u.max_rate.0),
        egress: egress(u),
    }
}

/// How an upstream's connections leave the site: its `proxy` (`"none"`: direct), else the
/// environment's proxy variables.
fn egress(u: &UpstreamConfig) -> crate::egress::Egress {
    use crate::egress::{Egress, Proxy};
    match u.proxy.as_deref() {
        None => Egress::Environment,
        Some(config::PROXY_NONE) => Egress::Direct,
        Some(url) => match url.parse() {
            Ok(url) => Egress::Via(Proxy { url, password: u.proxy_password.clone() }),
            // Validation parsed it; should it no longer parse, no proxy rather than a panic.
            Err(_) => Egress::Direct,
        },
    }
}

/// The client's credentials. A loaded configuration has its passwords read and its Docker
/// `config.json` resolved into one of the other kinds; should one slip through unresolved,
/// the upstream is asked anonymously (and refuses, visibly) rather than the daemon panicking.
fn auth_settings(host: &str, a: &AuthConfig) -> upstream::AuthSettings {
    match a {
        AuthConfig::Anonymous => upstream::AuthSettings::Anonymous,
        AuthConfig::Basic { username, password: Some(password), .. } => {
            upstream::AuthSettings::Basic { username: username.clone(), password: password.clone() }
        }
        AuthConfig::Ecr(e) => upstream::AuthSettings::Ecr(upstream::EcrSettings {
            region: e.region.clone(),
            registry_id: e.registry_id.clone(),
            endpoint_url: e.endpoint_url.clone(),
            refresh_every: e.refresh_every,
        }),
        AuthConfig::CredentialHelper { helper, server } => upstream::AuthSettings::CredentialHelper {
            helper: helper.clone(),
            server: server.clone().unwrap_or_else(|| host.to_string()),
        },
        AuthConfig::Basic { password: None, .. } | AuthConfig::DockerConfig { .. } => {
            tracing::error!(upstream = %host, "credentials were not loaded; asking anonymously");
            upstream::AuthSettings::Anonymous
        }
    }
}

/// Core's tag policy (TTL, immutable tags, lifecycle policies) from every `[[upstream]]`.
pub fn tag_policies(upstreams: &[UpstreamConfig]) -> core::TagPolicies {
    core::TagPolicies::new(upstreams.iter().map(|u| {
        let repositories = u
            .repositories
            .iter()
            .map(|r| core::RepositoryPolicy {
                pattern: r.pattern.clone(),
                immutable_tags: r.immutable_tags.clone(),
                stale_while_revalidate: r.stale_while_revalidate,
                lifecycle: r.lifecycle_policy.as_ref().map(|p| p.0.clone()),
            })
            .collect();
        (
            u.host.clone(),
            core::TagPolicy { tag_ttl: u.tag_ttl, stale_while_revalidate: u.stale_while_revalidate, repositories },
        )
    }))
}

/// The cluster's settings from `[cluster]` (its token loaded from the environment).
pub fn cluster_settings(c: &ClusterConfig) -> cluster::ClusterSettings {
    cluster::ClusterSettings {
        advertise: c.advertise.clone(),
        peers: c.peers.clone(),
        peers_dns: c.peers_dns.clone(),
        token: c.token.as_ref().map(|t| t.expose().to_string()).unwrap_or_default(),
        header_timeout: c.timeout,
        idle_timeout: std::time::Duration::from_secs(60),
        max_peer_streams: c.max_peer_streams,
        peer_upload_rate: c.peer_upload_rate.map(|r| r.0).filter(|r| *r > 0),
        ca_file: c.ca_file.clone(),
    }
}

/// The `[[prefetch]]` images the daemon keeps cached, routed, each with the platforms it
/// wants.
pub fn prefetch_list(cfg: &config::Config) -> Result<Vec<(oci::ImageRef, core::Platforms)>, ConfigImageError> {
    cfg.prefetch
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let image = config_image(&cfg.upstreams, format!("prefetch[{i}].image"), &p.image)?;
            let platforms =
                if p.platforms.is_empty() { core::Platforms::All } else { core::Platforms::Only(p.platforms.clone()) };
            Ok((image, platforms))
        })
        .collect()
}

/// The pinned images, routed: `[cache] pins` and the `[[prefetch]]` entries with `pin = true`.
pub fn pins(cfg: &config::Config) -> Result<Vec<oci::ImageRef>, ConfigImageError> {
    let pins = cfg.cache.pins.iter().enumerate().map(|(i, p)| (format!("cache.pins[{i}]"), p));
    let prefetch =
        cfg.prefetch.iter().enumerate().filter(|(_, p)| p.pin).map(|(i, p)| (format!("prefetch[{i}].image"), &p.image));
    pins.chain(prefetch).map(|(key, text)| config_image(&cfg.upstreams, key, text)).collect()
}

/// Every image the configuration names routes to a configured upstream (`check-config`
/// and every command that loads a configuration ask this; `Config::load` checks only how
/// each is written, as routing is the upstream layer's).
pub fn check_images(cfg: &config::Config) -> Result<(), ConfigImageError> {
    pins(cfg)?;
    prefetch_list(cfg).map(drop)
}

/// An image an operator wrote (a command's argument, a pin, a `[[prefetch]]`), routed over
/// the configured upstreams by the rules a client's repository path follows: a registry
/// host, a prefix, or the default upstream (`upstream::route_written`).
pub fn route_image(upstreams: &[UpstreamConfig], text: &str) -> Result<oci::ImageRef, ImageError> {
    let written: oci::WrittenImage = text.parse()?;
    Ok(upstream::route_written(upstreams, &written)?)
}

fn config_image(upstreams: &[UpstreamConfig], key: String, text: &str) -> Result<oci::ImageRef, ConfigImageError> {
    route_image(upstreams, text).map_err(|source| ConfigImageError { key, source })
}

/// Routing reads a configured upstream as it reads a running one.
impl upstream::Routable for UpstreamConfig {
    fn host(&self) -> &str {
        &self.host
    }
    fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }
    fn is_default(&self) -> bool {
        self.default
    }
}

/// An image that names no configured upstream, or is not written as an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Written(#[from] oci::WrittenImageError),
    #[error(transparent)]
    Route(#[from] upstream::WrittenRouteError),
}

/// An image of the configuration (its key: `cache.pins[0]`) that routes to no upstream.
#[derive(Debug, thiserror::Error)]
#[error("{key}")]
pub struct ConfigImageError {
    pub key: String,
    #[source]
    pub source: ImageError,
}

/// The webhooks' settings from `[events]` (validated: URLs parse, kinds are known).
pub fn events_settings(c: &config::EventsConfig) -> events::EventsSettings {
    let webhooks = c
        .webhooks
        .iter()
        .filter_map(|w| {
            let url: ::http::Uri = w.url.parse().ok()?;
            let kinds = match &w.kinds {
                Some(k) => k.iter().filter_map(|k| k.parse().ok()).collect(),
                None => events::Kinds::all(),
            };
            let headers = w
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.parse::<::http::HeaderName>().ok()?, v.parse().ok()?)))
                .collect();
            Some(events::WebhookSettings {
                name: w.name.clone().unwrap_or_else(|| url.authority().map(|a| a.to_string()).unwrap_or_default()),
                url,
                kinds,
                mode: match w.mode {
                    config::WebhookMode::Binary => events::Mode::Binary,
                    config::WebhookMode::Structured => events::Mode::Structured,
                },
                timeout: w.timeout,
                queue: w.queue,
                max_attempts: w.attempts,
                backoff: w.backoff,
                headers,
            })
        })
        .collect();
    events::EventsSettings { source: c.source.clone(), webhooks }
}

/// The access rules from `[access]`: anonymous access defaults to "only when there are no
/// users", and the deny-list splits into digests and repository globs.
pub fn access_settings(a: &AccessConfig) -> crate::http::access::AccessSettings {
    // A digest (sha256 or sha512) parses as one; a `registry/repository` glob never does.
    let (deny_digests, deny_repos): (Vec<_>, Vec<_>) = a.deny.iter().partition(|d| d.parse::<oci::Digest>().is_ok());
    crate::http::access::AccessSettings {
        anonymous: a.anonymous.unwrap_or(a.users.is_empty()),
        anonymous_allow: a.anonymous_allow.clone(),
        deny_repos: deny_repos.into_iter().map(|p| crate::pattern::Pattern::new(p)).collect(),
        deny_digests: deny_digests.into_iter().filter_map(|d| d.parse().ok()).collect(),
        users: a
            .users
            .iter()
            .map(|u| crate::http::access::UserSettings {
                name: u.name.clone(),
                password_bcrypt: u.password_bcrypt.clone(),
                token_sha256: u.token_sha256.clone(),
                cert_sha256: u.cert_sha256.clone(),
                allow: u.allow.clone(),
            })
            .collect(),
    }
}

/// The shared tier's settings from `[shared.s3]` (for the daemon, the CLI and `doctor`).
pub fn shared_settings(s: &config::S3Config) -> shared::S3Settings {
    shared::S3Settings {
        bucket: s.bucket.clone(),
        prefix: s.prefix.clone(),
        region: s.region.clone(),
        endpoint_url: s.endpoint_url.clone(),
        path_style: s.path_style,
        timeout: s.timeout,
        upload_concurrency: s.upload_concurrency,
        egress: crate::egress::Egress::Environment,
    }
}

/// Verify on read and the background scrub, from `[cache]`.
pub fn integrity_settings(c: &config::CacheConfig) -> core::integrity::IntegritySettings {
    core::integrity::IntegritySettings {
        verify_on_read: c.verify_on_read,
        scrub_rate: core::integrity::Rate::bytes_per_second(c.scrub_rate.0),
    }
}

/// How fills resume when their source breaks off, from `[cache]`.
pub fn resume_policy(c: &config::CacheConfig) -> core::ResumePolicy {
    core::ResumePolicy {
        attempts: c.fill_resume_attempts,
        slow_floor: c.slow_source_floor.0,
        slow_window: c.slow_source_window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins and `[[prefetch]]` images route by the upstreams' rules: a registry nobody
    /// configured is named with its key (how each is written, `Config::parse` checks).
    #[test]
    fn images_the_configuration_names_route_to_a_configured_upstream() {
        let up = "[[upstream]]\nhost = \"r.io\"\nurl = \"http://127.0.0.1:1\"\n";
        let cfg = config::Config::parse(&format!("[cache]\npins = [\"other.io/x:1\"]\n{up}"), "t").unwrap();
        assert_eq!(check_images(&cfg).unwrap_err().key, "cache.pins[0]");
        let cfg = config::Config::parse(&format!("{up}[[prefetch]]\nimage = \"other.io/y:1\"\n"), "t").unwrap();
        assert_eq!(check_images(&cfg).unwrap_err().key, "prefetch[0].image");
        // A bare name goes to the default upstream, and there is none.
        let cfg = config::Config::parse(&format!("{up}[[prefetch]]\nimage = \"nope\"\n"), "t").unwrap();
        assert_eq!(check_images(&cfg).unwrap_err().key, "prefetch[0].image");
        let cfg = config::Config::parse(&format!("[cache]\npins = [\"r.io/x:1\"]\n{up}"), "t").unwrap();
        assert!(check_images(&cfg).is_ok());
    }

    #[test]
    fn access_defaults_and_the_deny_list_split() {
        let digest = format!("sha512:{}", "b".repeat(128));
        let a: AccessConfig = toml::from_str(&format!("deny = [\"r.test/evil/*\", \"{digest}\"]\n")).unwrap();
        let s = access_settings(&a);
        assert!(s.anonymous, "no users: anonymous may pull");
        assert_eq!(s.deny_digests, [digest.parse().unwrap()]);
        assert_eq!(s.deny_repos.len(), 1);
        assert!(s.deny_repos[0].matches("r.test/evil/x"));
        let a: AccessConfig = toml::from_str("[[user]]\nname = \"alice\"\ntoken_sha256 = \"00\"\n").unwrap();
        assert!(!access_settings(&a).anonymous, "with users: anonymous only when asked for");
    }
}
