//! Validation of a parsed configuration, one function per section. It reads nothing but the
//! configuration and changes nothing: derived defaults are `derive`'s, secrets `credentials`'.

use super::credentials::valid_helper_name;
use super::ecr_host::parse_ecr_host;
use super::error::{Invalid, Problem};
use super::{AccessConfig, AuthConfig, CacheConfig, ClusterConfig, Config, S3Config, ServerConfig, UpstreamConfig};
use std::time::Duration;

impl Config {
    /// The first key, section by section, whose value breaks a rule.
    pub(super) fn validate(&self) -> Result<(), Invalid> {
        validate_server(&self.server)?;
        validate_cache(&self.cache)?;
        if let Some(s3) = &self.shared.s3 {
            validate_s3(s3)?;
        }
        if let Some(c) = &self.cluster {
            validate_cluster(c)?;
        }
        if self.upstreams.is_empty() {
            return Err(Invalid::rule(
                "upstream",
                "no [[upstream]] is configured; add at least one with `host` and `url`",
            ));
        }
        self.validate_images()?;
        validate_access(&self.access)?;
        validate_upstreams(&self.upstreams)?;
        self.events.validate()
    }

    /// Pins and prefetch entries are written as images. Which upstream each names is
    /// routing's decision, checked by `settings::check_images` with the upstream layer's rules.
    fn validate_images(&self) -> Result<(), Invalid> {
        let pins = self.cache.pins.iter().enumerate().map(|(i, p)| (format!("cache.pins[{i}]"), p));
        let prefetch = self.prefetch.iter().enumerate().map(|(i, p)| (format!("prefetch[{i}].image"), &p.image));
        for (key, text) in pins.chain(prefetch) {
            if let Err(e) = text.parse::<crate::oci::WrittenImage>() {
                return Err(Invalid { key, problem: Problem::Image(e) });
            }
        }
        Ok(())
    }
}

fn validate_server(s: &ServerConfig) -> Result<(), Invalid> {
    if s.tls_cert.is_some() != s.tls_key.is_some() {
        return Err(Invalid::rule("server.tls_cert", "set both tls_cert and tls_key, or neither"));
    }
    if s.tls_client_ca.is_some() && s.tls_cert.is_none() {
        return Err(Invalid::rule("server.tls_client_ca", "client certificates need TLS: set tls_cert and tls_key"));
    }
    if s.idle_timeout < Duration::from_secs(1) {
        return Err(Invalid::rule("server.idle_timeout", "must be at least 1s (e.g. \"30s\")"));
    }
    Ok(())
}

fn validate_cache(c: &CacheConfig) -> Result<(), Invalid> {
    if !(0.0 < c.low_watermark && c.low_watermark < c.high_watermark && c.high_watermark <= 1.0) {
        return Err(Invalid::rule(
            "cache.low_watermark",
            "watermarks must satisfy 0 < low_watermark < high_watermark <= 1 (e.g. 0.85 and 0.95)",
        ));
    }
    if c.housekeeping_interval.is_zero() || c.lifecycle_interval.is_zero() {
        return Err(Invalid::rule("cache.housekeeping_interval", "intervals must be greater than zero"));
    }
    Ok(())
}

/// A base URL (`http(s)://host[:port]`, no path) as peers use to reach each other.
fn is_base_url(u: &str) -> bool {
    u.parse::<http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() && matches!(u.path(), "" | "/")
    })
}

fn validate_cluster(c: &ClusterConfig) -> Result<(), Invalid> {
    if !is_base_url(&c.advertise) {
        return Err(Invalid::rule(
            "cluster.advertise",
            format!(
                "{:?} is not a base URL like \"http://10.0.0.7:5000\" (how the other nodes reach this one)",
                c.advertise
            ),
        ));
    }
    if let Some((i, p)) = c.peers.iter().enumerate().find(|(_, p)| !is_base_url(p)) {
        return Err(Invalid::rule(
            format!("cluster.peers[{i}]"),
            format!("{p:?} is not a base URL like \"http://10.0.0.8:5000\""),
        ));
    }
    if let Some(d) = &c.peers_dns {
        if d.rsplit_once(':').is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err()) {
            return Err(Invalid::rule(
                "cluster.peers_dns",
                format!("{d:?} is not host:port, e.g. \"pullthrough-peers.kube-system.svc.cluster.local:5000\""),
            ));
        }
    }
    if c.peers.is_empty() && c.peers_dns.is_none() {
        return Err(Invalid::rule("cluster.peers", "give the peers: a static `peers` list or `peers_dns`"));
    }
    if c.max_peer_streams == 0 {
        return Err(Invalid::rule("cluster.max_peer_streams", "must be at least 1 (1, the default, makes a chain)"));
    }
    Ok(())
}

fn validate_s3(s3: &S3Config) -> Result<(), Invalid> {
    if s3.bucket.is_empty() || s3.bucket.contains('/') {
        return Err(Invalid::rule("shared.s3.bucket", "give the bucket's name (no slashes), e.g. \"pullthrough\""));
    }
    let prefix = s3.prefix.trim_matches('/');
    if prefix.split('/').any(|c| c == "." || c == "..") || prefix.contains("//") {
        return Err(Invalid::rule(
            "shared.s3.prefix",
            "a key prefix like \"cache/\", without \".\" or \"..\" components",
        ));
    }
    if let Some(u) = &s3.endpoint_url {
        let ok = u
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !ok {
            return Err(Invalid::rule(
                "shared.s3.endpoint_url",
                format!("{u:?} is not an http(s) URL like \"http://127.0.0.1:3900\""),
            ));
        }
    }
    if s3.upload_concurrency == 0 || s3.timeout.is_zero() {
        return Err(Invalid::rule(
            "shared.s3.upload_concurrency",
            "upload_concurrency and timeout must be greater than zero",
        ));
    }
    Ok(())
}

fn validate_access(a: &AccessConfig) -> Result<(), Invalid> {
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    for (i, u) in a.users.iter().enumerate() {
        let key = format!("access.user[{i}]");
        if u.password_bcrypt.is_none() && u.token_sha256.is_none() && u.cert_sha256.is_none() {
            return Err(Invalid::rule(key, "give password_bcrypt (htpasswd -B), token_sha256 or cert_sha256"));
        }
        if u.cert_sha256.as_deref().is_some_and(|c| !hex64(c)) {
            return Err(Invalid::rule(key, "cert_sha256 must be 64 hex characters"));
        }
        if let Some(h) = &u.password_bcrypt {
            if !(h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$")) {
                return Err(Invalid::rule(
                    key,
                    "password_bcrypt must be a bcrypt hash ($2b$…), e.g. from htpasswd -nB",
                ));
            }
        }
        if u.token_sha256.as_deref().is_some_and(|t| !hex64(t)) {
            return Err(Invalid::rule(key, "token_sha256 must be 64 hex characters (sha256sum of the token)"));
        }
    }
    for (i, d) in a.deny.iter().enumerate() {
        if d.contains(':') && !d.contains('/') && d.parse::<crate::oci::Digest>().is_err() {
            return Err(Invalid::rule(
                format!("access.deny[{i}]"),
                format!("{d:?} is neither a registry/repository glob nor a sha256 or sha512 digest"),
            ));
        }
    }
    if a.max_connections_per_client == 0 {
        return Err(Invalid::rule("access.max_connections_per_client", "must be at least 1"));
    }
    Ok(())
}

/// Each upstream on its own, then what they must not share (hosts, prefixes, the default).
fn validate_upstreams(list: &[UpstreamConfig]) -> Result<(), Invalid> {
    let mut defaults = 0;
    for (i, u) in list.iter().enumerate() {
        let key = |k: &str| format!("upstream[{i}].{k}");
        validate_upstream(u, &key)?;
        for (j, other) in list[..i].iter().enumerate() {
            if other.host == u.host {
                return Err(Invalid::rule(key("host"), format!("{:?} is already used by upstream[{j}]", u.host)));
            }
            for mine in std::iter::once(&u.host).chain(u.prefix.iter()) {
                if Some(mine) == other.prefix.as_ref() || (u.prefix.as_ref() == Some(mine) && *mine == other.host) {
                    return Err(Invalid::rule(key("prefix"), format!("{mine:?} is already used by upstream[{j}]")));
                }
            }
        }
        if u.default {
            defaults += 1;
            if defaults > 1 {
                return Err(Invalid::rule(key("default"), "only one upstream can be the default"));
            }
        }
    }
    Ok(())
}

fn validate_upstream(u: &UpstreamConfig, key: &dyn Fn(&str) -> String) -> Result<(), Invalid> {
    if !valid_host(&u.host) {
        return Err(Invalid::rule(
            key("host"),
            format!(
                "{:?} is not a registry host name (lowercase name with an optional :port, e.g. \"docker.io\")",
                u.host
            ),
        ));
    }
    if !u.url.is_empty() {
        validate_url(&u.url).map_err(|m| Invalid::rule(key("url"), m))?;
    }
    if let Some(p) = &u.prefix {
        if p.contains('/') || p.parse::<crate::oci::RepoName>().is_err() {
            return Err(Invalid::rule(
                key("prefix"),
                format!("{p:?} must be one repository-name component (lowercase letters, digits, '.', '_', '-')"),
            ));
        }
    }
    if u.read_timeout.is_zero() || u.connect_timeout.is_zero() {
        return Err(Invalid::rule(key("read_timeout"), "timeouts must be greater than zero"));
    }
    if u.auth_cooldown < Duration::from_secs(1) {
        return Err(Invalid::rule(key("auth_cooldown"), "must be at least 1s"));
    }
    if let Some(p) = &u.proxy {
        validate_proxy(p).map_err(|m| Invalid::rule(key("proxy"), m))?;
    }
    if u.proxy_password_env.is_some() && u.proxy.as_deref().is_none_or(|p| p == super::upstream::PROXY_NONE) {
        return Err(Invalid::rule(key("proxy_password_env"), "needs a proxy = \"http://user@host:port\" to go with"));
    }
    validate_auth(&u.host, &u.auth, key)
}

/// An upstream's `proxy`: `"none"`, or an `http://` proxy (`CONNECT` is spoken in clear to
/// it; TLS to the registry runs inside the tunnel).
fn validate_proxy(p: &str) -> Result<(), String> {
    if p == super::upstream::PROXY_NONE {
        return Ok(());
    }
    let uri: http::Uri = p.parse().map_err(|e| format!("{p:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
        return Err(format!("{p:?} must be \"none\" or an http:// proxy URL with a host (http://proxy.site:3128)"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("{p:?} must be the proxy's address, without a path or query"));
    }
    Ok(())
}

fn validate_auth(host: &str, auth: &AuthConfig, key: &dyn Fn(&str) -> String) -> Result<(), Invalid> {
    match auth {
        AuthConfig::Ecr(e) => {
            if e.region.is_empty() && parse_ecr_host(host).is_none() {
                return Err(Invalid::rule(
                    key("auth.region"),
                    format!("{host:?} is not an ECR host name (<account>.dkr.ecr.<region>.amazonaws.com): set region"),
                ));
            }
            if let Some(url) = &e.endpoint_url {
                validate_endpoint(url).map_err(|m| Invalid::rule(key("auth.endpoint_url"), m))?;
            }
        }
        AuthConfig::CredentialHelper { helper, .. } if !valid_helper_name(helper) => {
            return Err(Invalid::rule(
                key("auth.helper"),
                format!("{helper:?} is not a credential helper name (as in docker-credential-<name>)"),
            ));
        }
        AuthConfig::Basic { password, password_env, password_file, .. } => {
            match [password.is_some(), password_env.is_some(), password_file.is_some()].iter().filter(|s| **s).count() {
                1 => {}
                0 => {
                    return Err(Invalid::rule(
                        key("auth"),
                        "kind = \"basic\" needs one of password, password_env or password_file",
                    ))
                }
                _ => {
                    return Err(Invalid::rule(key("auth"), "give only one of password, password_env or password_file"))
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn validate_endpoint(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!("{url:?} must be an http(s) URL"));
    }
    Ok(())
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
