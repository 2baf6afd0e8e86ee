//! Validation of a parsed configuration, section by section.

use super::credentials::{
    docker_auths_keys, docker_config_credentials, resolve_password, valid_helper_name, DockerCredentials,
};
use super::{AuthConfig, ClusterConfig, Config, S3Config, Secret};
use std::time::Duration;

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

impl Config {
    pub(super) fn validate(&mut self) -> Result<(), (String, String)> {
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
