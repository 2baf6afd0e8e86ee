//! Which upstream serves a request: by containerd's `?ns=`, by a path prefix, or the default.
//!
//! Only configured upstreams can be reached; there is no way to name an arbitrary host,
//! so the proxy can never be used as an open proxy into the network.

use super::client::Registry;
use super::settings::UpstreamSettings;
use crate::oci::RepoName;
use std::sync::Arc;

/// One configured upstream: its settings and its client.
pub struct Upstream {
    pub settings: UpstreamSettings,
    pub registry: Registry,
}

impl Upstream {
    pub fn host(&self) -> &str {
        &self.settings.host
    }

    fn is_docker_hub(&self) -> bool {
        self.settings.host == "docker.io"
    }

    /// Docker Hub's official images live under `library/`: `nginx` is `library/nginx`.
    pub fn normalize(&self, name: RepoName) -> RepoName {
        if self.is_docker_hub() && name.split_first().is_none() {
            // "library/" + a valid name is always valid, short names being the only case.
            name.with_prefix("library").unwrap_or(name)
        } else {
            name
        }
    }
}

/// A resolved request target: the upstream and the repository name as the upstream knows it.
#[derive(Clone)]
pub struct Route {
    pub upstream: Arc<Upstream>,
    pub name: RepoName,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("registry {0:?} is not configured on this proxy")]
    UnknownNamespace(String),
    #[error("no upstream serves {0:?}: add ?ns=<registry>, prefix the name with a configured registry host or prefix, or configure a default upstream")]
    NoUpstream(String),
}

pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
}

impl Upstreams {
    pub fn new(list: Vec<Upstream>) -> Upstreams {
        Upstreams { list: list.into_iter().map(Arc::new).collect() }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.list.iter()
    }

    pub fn by_host(&self, host: &str) -> Option<&Arc<Upstream>> {
        self.list.iter().find(|u| u.settings.host.eq_ignore_ascii_case(host))
    }

    /// Resolve a client's `(name, ?ns=)` to an upstream and the upstream's repository name.
    pub fn resolve(&self, ns: Option<&str>, name: &RepoName) -> Result<Route, RouteError> {
        if let Some(ns) = ns {
            let up = self.by_host(ns).ok_or_else(|| RouteError::UnknownNamespace(ns.chars().take(100).collect()))?;
            return Ok(Route { upstream: up.clone(), name: up.normalize(name.clone()) });
        }
        if let Some((first, rest)) = name.split_first() {
            if let Some(up) =
                self.list.iter().find(|u| u.settings.host == first || u.settings.prefix.as_deref() == Some(first))
            {
                return Ok(Route { upstream: up.clone(), name: up.normalize(rest) });
            }
        }
        match self.list.iter().find(|u| u.settings.default) {
            Some(up) => Ok(Route { upstream: up.clone(), name: up.normalize(name.clone()) }),
            None => Err(RouteError::NoUpstream(name.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// Upstreams as `(host, prefix, default)`, each with an anonymous client.
    fn upstreams(list: &[(&str, Option<&str>, bool)]) -> Upstreams {
        let tls = crate::upstream::tls_config();
        Upstreams::new(
            list.iter()
                .map(|(host, prefix, default)| {
                    let settings = UpstreamSettings {
                        host: host.to_string(),
                        url: format!("https://{host}"),
                        prefix: prefix.map(str::to_string),
                        default: *default,
                        connect_timeout: std::time::Duration::from_secs(1),
                        read_timeout: std::time::Duration::from_secs(1),
                        auth: Default::default(),
                        auth_cooldown: std::time::Duration::from_secs(1),
                        allow_http_realm_credentials: false,
                        ca_file: None,
                        insecure_skip_verify: false,
                        rate_limit: Default::default(),
                        max_rate: None,
                        egress: crate::egress::Egress::Direct,
                    };
                    Upstream { registry: Registry::new(&settings, &tls, false), settings }
                })
                .collect(),
        )
    }

    fn route(u: &Upstreams, ns: Option<&str>, name: &str) -> Result<(String, String), RouteError> {
        u.resolve(ns, &name.parse().unwrap()).map(|r| (r.upstream.host().to_string(), r.name.to_string()))
    }

    #[test]
    fn routes_by_ns_prefix_and_default() {
        // As the embedded default configures them.
        let u = upstreams(&[
            ("docker.io", Some("docker-hub"), true),
            ("ghcr.io", None, false),
            ("quay.io", None, false),
            ("registry.k8s.io", None, false),
            ("public.ecr.aws", Some("ecr-public"), false),
        ]);
        let r = |ns, n| route(&u, ns, n).unwrap();
        assert_eq!(r(Some("docker.io"), "nginx"), ("docker.io".into(), "library/nginx".into()));
        assert_eq!(r(Some("ghcr.io"), "org/app"), ("ghcr.io".into(), "org/app".into()));
        assert_eq!(r(Some("GHCR.IO"), "org/app"), ("ghcr.io".into(), "org/app".into()));
        assert_eq!(r(None, "docker.io/library/nginx"), ("docker.io".into(), "library/nginx".into()));
        assert_eq!(r(None, "docker-hub/nginx"), ("docker.io".into(), "library/nginx".into()));
        assert_eq!(r(None, "quay.io/org/team/app"), ("quay.io".into(), "org/team/app".into()));
        assert_eq!(r(None, "nginx"), ("docker.io".into(), "library/nginx".into()));
        assert_eq!(r(None, "someone/app"), ("docker.io".into(), "someone/app".into()));
        // A prefix alone names no repository: it is an ordinary name on the default upstream.
        assert_eq!(r(None, "ghcr.io"), ("docker.io".into(), "library/ghcr.io".into()));
        assert_eq!(
            route(&u, Some("evil.example.com"), "x"),
            Err(RouteError::UnknownNamespace("evil.example.com".into()))
        );
    }

    #[test]
    fn no_default_means_no_route() {
        let u = upstreams(&[("r.io", None, false)]);
        assert!(matches!(route(&u, None, "x/y"), Err(RouteError::NoUpstream(_))));
        assert_eq!(route(&u, None, "r.io/x").unwrap(), ("r.io".into(), "x".into()));
    }
}
