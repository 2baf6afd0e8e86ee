//! The registry client for one upstream: the pull requests pullthrough makes, with auth,
//! redirects, timeouts and a retry on connection failure.

use super::auth::{Attempt, Auth, Credentials, HttpClient, Verdict};
use super::budget::{Budget, Cost};
use super::challenge::parse_challenges;
use super::ecr::EcrTokens;
use super::error::{Advice, UpstreamError};
use super::guard::Reach;
use super::reachability::{Reachability, ReachabilityCell};
use super::settings::{AuthSettings, UpstreamSettings};
use crate::error_text::error_chain;
use crate::oci::{media, Digest, Reference, RepoName};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::Empty;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;

/// Redirect hops followed before giving up (registries use one, to a CDN or S3).
const MAX_REDIRECTS: usize = 5;

/// What a request asks for besides its path: the `Accept` header, and the byte a ranged
/// blob `GET` starts from.
#[derive(Clone, Copy, Default)]
struct Ask<'a> {
    accept: Option<&'a str>,
    from: Option<u64>,
}

/// A client for one upstream registry.
pub struct Registry {
    host: String,
    base: Uri,
    client: HttpClient,
    auth: Auth,
    pub read_timeout: Duration,
    /// Where connections may go (SSRF guard): checked for literal addresses in redirects and
    /// token realms, and by the resolver for names.
    reach: Reach,
    /// Never contact the upstream (air-gapped sites): every request fails as unavailable.
    offline: bool,
    /// Whether the last request reached the upstream.
    reachable: ReachabilityCell,
    /// What the registry's rate limit leaves (see `budget`).
    budget: Budget,
    /// The WAN budget its fills share (`max_rate`).
    throttle: Option<Arc<super::throttle::Throttle>>,
}

impl Registry {
    pub fn new(cfg: &UpstreamSettings, tls: &rustls::ClientConfig, offline: bool) -> Registry {
        let base: Uri = cfg.url.trim_end_matches('/').parse().expect("validated in config");
        let reach = Reach::for_host(base.host().unwrap_or(""));
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(
            super::guard::GuardedResolver::new(reach.clone()),
        );
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        let guard = reach.clone();
        let check: crate::egress::TargetCheck = Arc::new(move |u: &Uri| guard.check_url(u).map_err(|r| r.to_string()));
        let http = crate::egress::Connector::new(http, &cfg.egress, cfg.connect_timeout, check);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client: HttpClient = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build(https);
        let credentials = match &cfg.auth {
            AuthSettings::Anonymous => Credentials::None,
            AuthSettings::Basic { username, password } => Credentials::Static(username.clone(), password.clone()),
            AuthSettings::Ecr(e) => {
                Credentials::Ecr(Arc::new(EcrTokens::new(&cfg.host, e.clone(), cfg.auth_cooldown, cfg.egress.clone())))
            }
            AuthSettings::CredentialHelper { helper, server } => Credentials::Helper(Arc::new(
                super::helper::HelperCredentials::new(&cfg.host, helper, server, cfg.auth_cooldown),
            )),
        };
        Registry {
            auth: Auth::new(cfg, &base, credentials, client.clone(), reach.clone()),
            reach,
            host: cfg.host.clone(),
            base,
            client,
            read_timeout: cfg.read_timeout,
            offline,
            reachable: ReachabilityCell::new(Reachability::Unknown),
            budget: Budget::new(&cfg.host, cfg.rate_limit),
            throttle: cfg.max_rate.map(super::throttle::Throttle::new),
        }
    }

    /// The WAN budget this upstream's fills share, if `max_rate` is set.
    pub fn throttle(&self) -> Option<&Arc<super::throttle::Throttle>> {
        self.throttle.as_ref()
    }

    /// What the registry's rate limit leaves (see `budget`).
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Fail at once, without asking, when the rate-limit budget holds this request back.
    fn admit(&self, cost: Cost) -> Result<(), UpstreamError> {
        self.budget.admit(cost).map_err(|left| {
            crate::metrics::METRICS.upstream_ratelimit_held.with_label_values(&[&self.host]).inc();
            tracing::debug!(upstream = %self.host, ?cost, retry_after_s = left.as_secs(), "rate-limit budget: request not sent");
            UpstreamError::TooManyRequests { host: self.host.clone(), retry_after: Some(left) }
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn reachability(&self) -> Reachability {
        if self.offline {
            return Reachability::Offline;
        }
        self.reachable.get()
    }

    /// Record whether the last request reached the upstream (`failure`: why not).
    fn note_reachable(&self, failure: Option<&UpstreamError>) {
        let now = if failure.is_none() { Reachability::Reachable } else { Reachability::Unreachable };
        let before = self.reachable.swap(now);
        // Transitions only: down when it stops answering (or never did), up when it is back.
        let event = match (before, failure) {
            (Reachability::Reachable | Reachability::Unknown, Some(e)) => {
                crate::events::Event::new(crate::events::EventKind::UpstreamDown).cause(e)
            }
            (Reachability::Unreachable, None) => crate::events::Event::new(crate::events::EventKind::UpstreamUp),
            _ => return,
        };
        crate::events::emit(event.upstream(&self.host));
    }

    /// Start what runs for this upstream in the background (ECR token refresh). Must be
    /// called inside the runtime, once, when serving starts.
    pub fn start_background(&self) {
        if let Some(e) = self.auth.ecr() {
            e.spawn_refresher();
        }
    }

    /// `HEAD` or `GET` a manifest, asking for every manifest type.
    pub async fn manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
        method: Method,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let path = format!("/v2/{name}/manifests/{reference}");
        self.admit(if method == Method::GET { Cost::Counted } else { Cost::Uncounted })?;
        self.send(method, &path, name, Some(media::MANIFEST_ACCEPT)).await
    }

    /// `GET` the new manifest of a cached tag that moved upstream: allowed below the
    /// rate-limit reserve, which is kept for this.
    pub async fn moved_manifest(&self, name: &RepoName, tag: &Reference) -> Result<Response<Incoming>, UpstreamError> {
        let path = format!("/v2/{name}/manifests/{tag}");
        self.admit(Cost::Reserved)?;
        self.send(Method::GET, &path, name, Some(media::MANIFEST_ACCEPT)).await
    }

    /// `GET` or `HEAD` a blob, following redirects to its storage. A `HEAD` answered with a
    /// redirect is the answer (the registry has the blob): Docker Hub, GHCR and ECR redirect
    /// to storage URLs signed for `GET`, which refuse a `HEAD`.
    pub async fn blob(
        &self,
        name: &RepoName,
        digest: &Digest,
        method: Method,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let path = format!("/v2/{name}/blobs/{digest}");
        self.admit(Cost::Uncounted)?;
        self.send(method, &path, name, None).await
    }

    /// `GET` a blob from byte `from` on (`Range: bytes=<from>-`), following redirects to its
    /// storage, which receives the `Range` too (never the registry's `Authorization`). The
    /// caller checks the answer: `206` with its `Content-Range`, or a `200` of the whole blob.
    pub async fn blob_from(
        &self,
        name: &RepoName,
        digest: &Digest,
        from: u64,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let path = format!("/v2/{name}/blobs/{digest}");
        self.admit(Cost::Uncounted)?;
        let ask = Ask { accept: None, from: Some(from) };
        self.send_scoped(Method::GET, &path, &format!("repository:{name}:pull"), ask).await
    }

    /// `GET` a tag list page; `query` is the already-validated `n`/`last` query string.
    pub async fn tags(&self, name: &RepoName, query: &str) -> Result<Response<Incoming>, UpstreamError> {
        let mut path = format!("/v2/{name}/tags/list");
        if !query.is_empty() {
            path.push('?');
            path.push_str(query);
        }
        self.admit(Cost::Uncounted)?;
        self.send(Method::GET, &path, name, None).await
    }

    /// `GET /v2/`: whether the registry answers and accepts this upstream's credentials
    /// (from a Bearer registry, a token for no repository). For `pullthrough doctor`.
    pub async fn ping(&self) -> Result<StatusCode, UpstreamError> {
        self.send_scoped(Method::GET, "/v2/", "", Ask::default()).await.map(|r| r.status())
    }

    /// `GET` the referrers of `subject` (distribution-spec 1.1), unfiltered: the cache keeps
    /// every referrer and filters per request. Registries without the API answer 404.
    pub async fn referrers(&self, name: &RepoName, subject: &Digest) -> Result<Response<Incoming>, UpstreamError> {
        let path = format!("/v2/{name}/referrers/{subject}");
        self.admit(Cost::Counted)?;
        self.send(Method::GET, &path, name, Some(media::OCI_INDEX)).await
    }

    /// Collect a small response body (manifest, tag list), bounded in size and time.
    pub async fn read_body(&self, resp: Response<Incoming>, limit: usize, what: &str) -> Result<Bytes, UpstreamError> {
        use http_body_util::{BodyExt, Limited};
        let collected = tokio::time::timeout(self.read_timeout, Limited::new(resp.into_body(), limit).collect())
            .await
            .map_err(|_| UpstreamError::Timeout { host: self.host.clone(), after: self.read_timeout })?;
        collected
            .map(|c| c.to_bytes())
            .map_err(|e| UpstreamError::BadResponse { host: self.host.clone(), message: format!("{what} body: {e}") })
    }

    /// Send a request for repository `name`, authorising as the registry demands (one
    /// retry after a 401, unless `Auth` says a cooldown runs), following redirects, and
    /// mapping failures to `UpstreamError`.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        name: &RepoName,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.send_scoped(method, path_and_query, &format!("repository:{name}:pull"), Ask { accept, from: None }).await
    }

    /// `send` with the token scope given (empty: none) and the request's own headers.
    async fn send_scoped(
        &self,
        method: Method,
        path_and_query: &str,
        scope: &str,
        ask: Ask<'_>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let url = self.url(path_and_query)?;
        let mut attempt = Attempt::First;
        loop {
            let authz = self.auth.authorization(scope).await?;
            let resp = self.follow(method.clone(), url.clone(), ask, authz.header().cloned()).await?;
            self.budget.observe(resp.status(), resp.headers());
            if resp.status() != StatusCode::UNAUTHORIZED {
                self.auth.accepted(scope, &authz);
                return self.check_status(resp, &method);
            }
            let challenges: Vec<_> = resp
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_challenges)
                .collect();
            match self.auth.on_unauthorized(&challenges, scope, &authz, attempt).await {
                Verdict::Retry if attempt == Attempt::First => attempt = Attempt::Retry,
                Verdict::Retry | Verdict::GiveUp => return self.check_status(resp, &method),
                Verdict::Fail(e) => return Err(e),
            }
        }
    }

    fn check_status(&self, resp: Response<Incoming>, method: &Method) -> Result<Response<Incoming>, UpstreamError> {
        let host = self.host.clone();
        let status = resp.status();
        match status {
            s if s.is_success() => Ok(resp),
            // Only `follow` lets a redirect through: a HEAD's, which says the content exists.
            s if s.is_redirection() && method == Method::HEAD => Ok(resp),
            StatusCode::NOT_FOUND => Err(UpstreamError::NotFound { host }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(UpstreamError::Denied { host, status, advice: Advice::CheckAuth })
            }
            StatusCode::TOO_MANY_REQUESTS => {
                // The registry's own Retry-After, else how long the budget now holds.
                Err(UpstreamError::TooManyRequests {
                    host,
                    retry_after: super::budget::parse_retry_after(resp.headers(), std::time::SystemTime::now())
                        .or_else(|| self.budget.admit(Cost::Uncounted).err()),
                })
            }
            _ => Err(UpstreamError::Status { host, status }),
        }
    }

    fn url(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse().map_err(|e| UpstreamError::BadResponse {
            host: self.host.clone(),
            message: format!("cannot build request path: {e}"),
        })?);
        Uri::from_parts(parts)
            .map_err(|e| UpstreamError::BadResponse { host: self.host.clone(), message: e.to_string() })
    }

    /// One request plus its redirect chain. The registry's `Authorization` goes only to the
    /// registry's own origin: a CDN or bucket on another host never sees it.
    async fn follow(
        &self,
        method: Method,
        mut url: Uri,
        ask: Ask<'_>,
        authz: Option<HeaderValue>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        for _ in 0..=MAX_REDIRECTS {
            let same_origin = url.scheme() == self.base.scheme() && url.authority() == self.base.authority();
            let mut req = Request::builder()
                .method(method.clone())
                .uri(url.clone())
                .header(header::USER_AGENT, crate::oci::USER_AGENT);
            if let Some(a) = ask.accept {
                req = req.header(header::ACCEPT, a);
            }
            if let Some(from) = ask.from {
                req = req.header(header::RANGE, format!("bytes={from}-"));
            }
            if same_origin {
                if let Some(v) = &authz {
                    req = req.header(header::AUTHORIZATION, v.clone());
                }
            }
            let req = req
                .body(Empty::<Bytes>::new())
                .map_err(|e| UpstreamError::BadResponse { host: self.host.clone(), message: e.to_string() })?;
            let resp = self.request_with_retry(req).await?;
            // A HEAD stops at a redirect: its target may be signed for GET only.
            if !resp.status().is_redirection() || resp.status() == StatusCode::NOT_MODIFIED || method == Method::HEAD {
                return Ok(resp);
            }
            let location = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| self.redirect_error("redirect without a Location".into()))?;
            url = resolve_location(&url, location).map_err(|m| self.redirect_error(m))?;
            // Literal addresses skip the resolver: guard them here.
            self.reach
                .check_url(&url)
                .map_err(|r| self.redirect_error(format!("refusing to follow the redirect: {r}")))?;
        }
        Err(self.redirect_error(format!("more than {MAX_REDIRECTS} redirects")))
    }

    fn redirect_error(&self, message: String) -> UpstreamError {
        UpstreamError::Redirect { host: self.host.clone(), message }
    }

    /// Send, retrying once when the connection could not be made (a stale pooled
    /// connection or a momentary refusal); never after a request may have been processed.
    async fn request_with_retry(&self, req: Request<Empty<Bytes>>) -> Result<Response<Incoming>, UpstreamError> {
        let (parts, _) = req.into_parts();
        if self.offline {
            return Err(UpstreamError::Offline { host: self.host.clone() });
        }
        let m = &crate::metrics::METRICS;
        let error = |e: UpstreamError| {
            if let Some(kind) = e.failure_kind() {
                m.upstream_errors.with_label_values(&[&self.host, kind.as_str()]).inc();
                if kind.means_unreachable() {
                    self.note_reachable(Some(&e));
                }
            }
            Err(e)
        };
        let mut attempt = 0;
        loop {
            let req = Request::from_parts(parts.clone(), Empty::new());
            let started = std::time::Instant::now();
            match tokio::time::timeout(self.read_timeout, self.client.request(req)).await {
                Err(_) => return error(UpstreamError::Timeout { host: self.host.clone(), after: self.read_timeout }),
                Ok(Ok(resp)) => {
                    self.note_reachable(None);
                    m.upstream_duration.with_label_values(&[&self.host]).observe(started.elapsed().as_secs_f64());
                    m.upstream_requests
                        .with_label_values(&[&self.host, parts.method.as_str(), resp.status().as_str()])
                        .inc();
                    return Ok(resp);
                }
                Ok(Err(e)) if e.is_connect() && attempt == 0 => {
                    attempt += 1;
                    tracing::debug!(upstream = %self.host, error = %e, "connect failed, retrying once");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) if e.is_connect() => {
                    return error(UpstreamError::Connect { host: self.host.clone(), message: error_chain(&e) })
                }
                Ok(Err(e)) => {
                    return error(UpstreamError::Transfer { host: self.host.clone(), message: error_chain(&e) })
                }
            }
        }
    }
}

/// `Location` may be absolute or relative to the request URL; only http(s) targets are
/// followed.
fn resolve_location(current: &Uri, location: &str) -> Result<Uri, String> {
    let target: Uri = location.parse().map_err(|_| format!("unparseable Location {location:?}"))?;
    if target.scheme().is_some() {
        if !matches!(target.scheme_str(), Some("http" | "https")) || target.authority().is_none() {
            return Err(format!("refusing to follow redirect to {location:?}: only http(s) URLs"));
        }
        return Ok(target);
    }
    let mut parts = current.clone().into_parts();
    let pq = if location.starts_with('/') {
        location.to_string()
    } else {
        let base = current.path();
        let dir = &base[..base.rfind('/').map(|i| i + 1).unwrap_or(0)];
        format!("{dir}{location}")
    };
    parts.path_and_query = Some(pq.parse().map_err(|_| format!("unparseable Location {location:?}"))?);
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_redirect_locations() {
        let cur: Uri = "https://r.io/v2/a/blobs/sha256:x".parse().unwrap();
        assert_eq!(resolve_location(&cur, "https://cdn.io/b?sig=1").unwrap().to_string(), "https://cdn.io/b?sig=1");
        assert_eq!(resolve_location(&cur, "/other").unwrap().to_string(), "https://r.io/other");
        assert_eq!(resolve_location(&cur, "rel").unwrap().to_string(), "https://r.io/v2/a/blobs/rel");
        assert!(resolve_location(&cur, "file:///etc/passwd").is_err());
        assert!(resolve_location(&cur, "gopher://x/").is_err());
    }
}
