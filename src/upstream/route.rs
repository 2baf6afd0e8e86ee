//! Which upstream serves a request: by containerd's `?ns=`, by a path prefix, or the default.
//! Images an operator writes (`pullthrough prefetch`, `export`, `[cache] pins`,
//! `[[prefetch]]`) are routed by the same rules as a client's path ([`route_written`]), so
//! every name that pulls through the proxy also names the image on the command line.
//!
//! Only configured upstreams can be reached; there is no way to name an arbitrary host,
//! so the proxy can never be used as an open proxy into the network.

use super::client::Registry;
use super::settings::UpstreamSettings;
use crate::oci::{ImageRef, NameError, RepoName, WrittenImage};
use std::sync::Arc;

/// What routing reads of an upstream: the name clients use for it, its path prefix, and
/// whether it serves names that select no other. Implemented for the upstreams a client's
/// request is routed over and, by `settings`, for the configuration's `[[upstream]]`s, which
/// pins and `[[prefetch]]` are checked against before any client exists.
pub trait Routable {
    fn host(&self) -> &str;
    fn prefix(&self) -> Option<&str>;
    fn is_default(&self) -> bool;
}

impl Routable for UpstreamSettings {
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

impl<T: Routable> Routable for Arc<T> {
    fn host(&self) -> &str {
        (**self).host()
    }
    fn prefix(&self) -> Option<&str> {
        (**self).prefix()
    }
    fn is_default(&self) -> bool {
        (**self).is_default()
    }
}

impl Routable for Upstream {
    fn host(&self) -> &str {
        &self.settings.host
    }
    fn prefix(&self) -> Option<&str> {
        self.settings.prefix.as_deref()
    }
    fn is_default(&self) -> bool {
        self.settings.default
    }
}

/// One configured upstream: its settings and its client.
pub struct Upstream {
    pub settings: UpstreamSettings,
    pub registry: Registry,
}

impl Upstream {
    pub fn host(&self) -> &str {
        &self.settings.host
    }

    /// The repository name as this upstream knows it (see [`normalize`]).
    pub fn normalize(&self, name: RepoName) -> RepoName {
        normalize(&self.settings.host, name)
    }
}

/// Docker Hub's official images live under `library/`: `nginx` is `library/nginx`.
fn normalize(host: &str, name: RepoName) -> RepoName {
    if host == "docker.io" && name.split_first().is_none() {
        // "library/" + a valid name is always valid, short names being the only case.
        name.with_prefix("library").unwrap_or(name)
    } else {
        name
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

/// Why an image an operator wrote routes to no upstream. Each names the image as written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WrittenRouteError {
    /// The name starts with a registry host (a component with a `.` or `:`, or
    /// `localhost`, as Docker reads names) that no upstream has.
    #[error("{image}: registry {host:?} is not a configured upstream; configured: {configured}")]
    UnknownRegistry { image: String, host: String, configured: String },
    /// No configured host or prefix starts the name, and no upstream is the default.
    #[error("{image}: no upstream serves {name:?}: it starts with no configured registry host or prefix, and no upstream is the default; configured: {configured}")]
    NoDefault { image: String, name: String, configured: String },
    /// The repository part breaks the distribution grammar (uppercase, for one).
    #[error("{image}: {path:?} is not a valid repository name")]
    BadName {
        image: String,
        path: String,
        #[source]
        source: NameError,
    },
}

/// Route an image as an operator wrote it over `list`, by the rules a client's path follows
/// ([`Upstreams::resolve`] without `?ns=`): a configured registry host first (with its port,
/// if it has one, which a client's path cannot carry), else a prefix, else the default
/// upstream. A name that starts with a registry host nobody configured is refused, naming
/// it, rather than read as a repository of the default upstream. The result names the
/// upstream by its host and the repository as that upstream knows it.
pub fn route_written<U: Routable>(list: &[U], image: &WrittenImage) -> Result<ImageRef, WrittenRouteError> {
    let routed = |up: &U, name: RepoName| ImageRef {
        host: up.host().to_string(),
        name: normalize(up.host(), name),
        reference: image.reference.clone(),
    };
    let bad_name =
        |path: &str, source| WrittenRouteError::BadName { image: image.to_string(), path: path.to_string(), source };
    let first = image.path.split_once('/');
    if let Some((host, rest)) = first {
        if let Some(up) = list.iter().find(|u| u.host().eq_ignore_ascii_case(host)) {
            return Ok(routed(up, rest.parse().map_err(|e| bad_name(rest, e))?));
        }
    }
    if let Some((host, _)) = first.filter(|(h, _)| looks_like_host(h) && !list.iter().any(|u| u.prefix() == Some(h))) {
        let configured = configured(list);
        return Err(WrittenRouteError::UnknownRegistry {
            image: image.to_string(),
            host: host.to_string(),
            configured,
        });
    }
    let name: RepoName = image.path.parse().map_err(|e| bad_name(&image.path, e))?;
    match pick(list, None, &name) {
        Ok((up, name)) => Ok(routed(up, name)),
        Err(_) => Err(WrittenRouteError::NoDefault {
            image: image.to_string(),
            name: name.to_string(),
            configured: configured(list),
        }),
    }
}

/// Whether a name's first component is a registry host, as Docker reads names.
fn looks_like_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// The configured upstreams, for an error message: "docker.io (prefix docker-hub,
/// default), ghcr.io".
fn configured<U: Routable>(list: &[U]) -> String {
    let each = list.iter().map(|u| {
        let notes: Vec<String> = u
            .prefix()
            .map(|p| format!("prefix {p}"))
            .into_iter()
            .chain(u.is_default().then(|| "default".to_string()))
            .collect();
        if notes.is_empty() {
            u.host().to_string()
        } else {
            format!("{} ({})", u.host(), notes.join(", "))
        }
    });
    let all: Vec<String> = each.collect();
    if all.is_empty() {
        "none".to_string()
    } else {
        all.join(", ")
    }
}

/// The routing rules: `?ns=` names a configured host; else the name's first component is a
/// host or prefix; else the default upstream. The upstream, and the name it knows.
fn pick<'a, U: Routable>(list: &'a [U], ns: Option<&str>, name: &RepoName) -> Result<(&'a U, RepoName), RouteError> {
    if let Some(ns) = ns {
        let up = list
            .iter()
            .find(|u| u.host().eq_ignore_ascii_case(ns))
            .ok_or_else(|| RouteError::UnknownNamespace(ns.chars().take(100).collect()))?;
        return Ok((up, normalize(up.host(), name.clone())));
    }
    if let Some((first, rest)) = name.split_first() {
        if let Some(up) = list.iter().find(|u| u.host() == first || u.prefix() == Some(first)) {
            return Ok((up, normalize(up.host(), rest)));
        }
    }
    match list.iter().find(|u| u.is_default()) {
        Some(up) => Ok((up, normalize(up.host(), name.clone()))),
        None => Err(RouteError::NoUpstream(name.to_string())),
    }
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
        pick(&self.list, ns, name).map(|(up, name)| Route { upstream: up.clone(), name })
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

    fn written(u: &Upstreams, image: &str) -> Result<String, WrittenRouteError> {
        route_written(&u.list, &image.parse().unwrap()).map(|r| r.to_string())
    }

    #[test]
    fn written_images_route_as_client_paths_do() {
        let u = upstreams(&[
            ("docker.io", Some("docker-hub"), true),
            ("ghcr.io", None, false),
            ("127.0.0.1:5000", Some("lab"), false),
        ]);
        let ok = |image| written(&u, image).unwrap();
        assert_eq!(ok("docker.io/library/nginx:1"), "docker.io/library/nginx:1");
        assert_eq!(ok("Docker.IO/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(ok("docker-hub/nginx:1"), "docker.io/library/nginx:1");
        assert_eq!(ok("library/app:v2"), "docker.io/library/app:v2");
        assert_eq!(ok("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(ok("ghcr.io/org/app:v1"), "ghcr.io/org/app:v1");
        assert_eq!(ok("127.0.0.1:5000/team/app:v1"), "127.0.0.1:5000/team/app:v1");
        assert_eq!(ok("lab/team/app:v1"), "127.0.0.1:5000/team/app:v1");
        let configured = "docker.io (prefix docker-hub, default), ghcr.io, 127.0.0.1:5000 (prefix lab)";
        assert_eq!(
            written(&u, "quay.io/org/app:1"),
            Err(WrittenRouteError::UnknownRegistry {
                image: "quay.io/org/app:1".into(),
                host: "quay.io".into(),
                configured: configured.into()
            })
        );
        let e = written(&u, "localhost:5001/app").unwrap_err();
        assert!(matches!(&e, WrittenRouteError::UnknownRegistry { host, .. } if host == "localhost:5001"), "{e}");
        // Uppercase is no repository name: not lowercased, not read as a registry.
        let e = written(&u, "Library/app:v1").unwrap_err();
        assert!(matches!(&e, WrittenRouteError::BadName { path, .. } if path == "Library/app"), "{e}");
        let e = written(&u, "ghcr.io/Org/app").unwrap_err();
        assert!(matches!(&e, WrittenRouteError::BadName { path, .. } if path == "Org/app"), "{e}");
    }

    #[test]
    fn a_written_image_without_a_default_names_what_is_configured() {
        let u = upstreams(&[("lab.test", None, false)]);
        assert_eq!(
            written(&u, "library/app:2"),
            Err(WrittenRouteError::NoDefault {
                image: "library/app:2".into(),
                name: "library/app".into(),
                configured: "lab.test".into()
            })
        );
        assert_eq!(written(&u, "lab.test/x/y:1").unwrap(), "lab.test/x/y:1");
    }
}
