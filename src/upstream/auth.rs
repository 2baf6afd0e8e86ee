//! How requests to one upstream are authorised: anonymous, Basic, or Bearer tokens obtained
//! from the registry's token endpoint (anonymously or with Basic credentials).
//!
//! The scheme is learned from the registry's first 401 challenge and remembered, so later
//! requests carry the right `Authorization` up front instead of paying a 401 round trip each.
//! Tokens are cached per scope until shortly before they expire; concurrent requests for
//! the same scope share one token fetch.
//!
//! Refusals are handled so that they cannot multiply calls to a credential source:
//! - every request says which credentials it carried ([`Authorization`]), so a refusal
//!   replaces them only if they are still the current ones: concurrent refusals share one
//!   forced refresh (ECR) or one token fetch (Bearer), then each retries once;
//! - credentials refused right after being obtained put the upstream (Basic, ECR) or the
//!   scope (Bearer) into a cooldown ([`Refusals`]): until it ends nothing new is asked for
//!   and a refused request fails at once with advice naming what to check;
//! - a failing token endpoint is backed off the same way ([`Cooldown`]): requests that need
//!   a new token fail fast until the back-off ends, then one fetch tries again.
//!
//! The token realm comes from the upstream, so it passes the same SSRF guard as redirects
//! ([`Reach`]), and the upstream's credentials go to a realm on another host only over
//! https, unless the operator allows plain http for this upstream.

use super::challenge::Challenge;
use super::cooldown::Cooldown;
use super::cooldown::Trip;
use super::ecr::EcrTokens;
use super::error::{Advice, CredentialSource, RealmRefusal, UpstreamError};
use super::guard::Reach;
use super::helper::HelperCredentials;
use super::refusal::{Decision, Refusals};
use super::settings::UpstreamSettings;
use crate::secret::Secret;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use moka::future::Cache;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<
        crate::egress::Connector<hyper_util::client::legacy::connect::HttpConnector<super::guard::GuardedResolver>>,
    >,
    Empty<Bytes>,
>;

/// Token responses larger than this are refused (they are small JSON documents).
const MAX_TOKEN_RESPONSE: usize = 256 * 1024;

#[derive(Clone)]
enum Scheme {
    /// No challenge seen yet: send nothing, learn from the first 401.
    Unknown,
    Basic,
    Bearer {
        realm: Uri,
        service: Option<String>,
    },
}

#[derive(Clone)]
struct Token {
    value: Secret,
    ttl: Duration,
    /// Which fetch made it, to tell a refused token from its replacement.
    id: u64,
}

struct TokenExpiry;

impl moka::Expiry<String, Token> for TokenExpiry {
    fn expire_after_create(&self, _key: &String, value: &Token, _now: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Where an upstream's credentials come from.
pub enum Credentials {
    None,
    Static(String, Secret),
    /// Amazon ECR tokens, refreshed in the background.
    Ecr(Arc<EcrTokens>),
    /// A Docker credential helper's answer, asked again after a refusal.
    Helper(Arc<HelperCredentials>),
}

/// Which credentials a request carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Used {
    Nothing,
    Static,
    Ecr { generation: u64 },
    Helper { generation: u64 },
    Bearer { token: u64 },
}

/// The `Authorization` for one request, and which credentials it came from, to be handed
/// back to [`Auth`] with the registry's answer.
#[derive(Clone)]
pub struct Authorization {
    header: Option<HeaderValue>,
    used: Used,
}

impl Authorization {
    const NONE: Authorization = Authorization { header: None, used: Used::Nothing };

    pub fn header(&self) -> Option<&HeaderValue> {
        self.header.as_ref()
    }
}

/// What to do after a 401.
pub enum Verdict {
    /// Retry once with [`Auth::authorization`]'s new answer.
    Retry,
    /// Nothing better to send: the 401 stands.
    GiveUp,
    /// Fail with this error now (a cooldown runs, or new credentials could not be had).
    Fail(UpstreamError),
}

/// Whether a 401 answered a first attempt or the retry after one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    First,
    Retry,
}

pub struct Auth {
    host: String,
    /// The registry's own host (from its URL): a realm elsewhere gets credentials only over
    /// https.
    registry_host: String,
    credentials: Credentials,
    scheme: RwLock<Scheme>,
    tokens: Cache<String, Token>,
    next_token: AtomicU64,
    /// Serialises the compare-and-invalidate of refused tokens.
    invalidating: tokio::sync::Mutex<()>,
    client: HttpClient,
    timeout: Duration,
    reach: Reach,
    allow_http_realm_credentials: bool,
    cooldown: Duration,
    /// Refusals of the upstream's Basic or ECR credentials.
    refused: Refusals,
    /// Refusals of Bearer tokens, per scope.
    refused_scopes: moka::sync::Cache<String, Arc<Refusals>>,
    /// The token endpoint failing.
    endpoint: Cooldown,
}

impl Auth {
    pub fn new(cfg: &UpstreamSettings, base: &Uri, credentials: Credentials, client: HttpClient, reach: Reach) -> Auth {
        // ECR registries take Basic credentials directly: skip the first 401.
        let scheme = match credentials {
            Credentials::Ecr(_) => Scheme::Basic,
            _ => Scheme::Unknown,
        };
        Auth {
            host: cfg.host.clone(),
            registry_host: base.host().unwrap_or("").to_ascii_lowercase(),
            credentials,
            scheme: RwLock::new(scheme),
            tokens: Cache::builder().max_capacity(10_000).expire_after(TokenExpiry).build(),
            next_token: AtomicU64::new(0),
            invalidating: tokio::sync::Mutex::new(()),
            client,
            timeout: cfg.read_timeout,
            reach,
            allow_http_realm_credentials: cfg.allow_http_realm_credentials,
            cooldown: cfg.auth_cooldown,
            refused: Refusals::new(cfg.auth_cooldown),
            // Entries outlive the longest cooldown, so doubling is remembered across them.
            refused_scopes: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(super::cooldown::MAX.max(cfg.auth_cooldown) * 2)
                .build(),
            endpoint: Cooldown::new(cfg.auth_cooldown),
        }
    }

    pub fn ecr(&self) -> Option<&Arc<EcrTokens>> {
        match &self.credentials {
            Credentials::Ecr(e) => Some(e),
            _ => None,
        }
    }

    fn suppressed(&self) {
        crate::metrics::METRICS.token_refreshes_suppressed.with_label_values(&[&self.host]).inc();
    }

    async fn basic(&self) -> Result<Authorization, UpstreamError> {
        let (user, pass, used) = match &self.credentials {
            Credentials::None => return Ok(Authorization::NONE),
            Credentials::Static(u, p) => (u.clone(), p.clone(), Used::Static),
            Credentials::Ecr(e) => {
                let c = e.credentials().await?;
                (c.username, c.password, Used::Ecr { generation: c.generation })
            }
            Credentials::Helper(h) => {
                let c = h.credentials().await?;
                (c.username, c.password, Used::Helper { generation: c.generation })
            }
        };
        let raw = format!("{user}:{}", pass.expose());
        let Ok(mut v) =
            HeaderValue::from_str(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw)))
        else {
            return Err(UpstreamError::Token {
                host: self.host.clone(),
                message: "credentials are not valid header text".into(),
            });
        };
        v.set_sensitive(true);
        Ok(Authorization { header: Some(v), used })
    }

    /// The `Authorization` for a request needing `scope` (e.g. `repository:x:pull`),
    /// fetching a token first when the registry is known to use Bearer.
    pub async fn authorization(&self, scope: &str) -> Result<Authorization, UpstreamError> {
        let scheme = self.scheme.read().expect("auth scheme lock").clone();
        match scheme {
            Scheme::Unknown => Ok(Authorization::NONE),
            Scheme::Basic => self.basic().await,
            Scheme::Bearer { realm, service } => {
                let result = self.bearer(scope, &realm, service.as_deref()).await;
                if let Err(UpstreamError::Realm { .. }) = &result {
                    // Learn again from the next 401, in case the upstream's challenge changes.
                    *self.scheme.write().expect("auth scheme lock") = Scheme::Unknown;
                }
                result
            }
        }
    }

    async fn bearer(&self, scope: &str, realm: &Uri, service: Option<&str>) -> Result<Authorization, UpstreamError> {
        let token = match self.tokens.get(scope).await {
            Some(t) => t,
            None => {
                self.endpoint_ready()?;
                self.tokens
                    .try_get_with(scope.to_string(), async {
                        // A fetch for another scope may have failed meanwhile.
                        self.endpoint_ready()?;
                        let t = self.fetch_token(realm, service, scope).await;
                        let result = if t.is_ok() { "ok" } else { "error" };
                        crate::metrics::METRICS
                            .token_refreshes
                            .with_label_values(&[&self.host, "bearer", result])
                            .inc();
                        match &t {
                            Ok(_) => self.endpoint.reset(),
                            // Only failures of the endpoint itself: a refused realm cost nothing.
                            Err(e @ UpstreamError::Token { message, .. }) => {
                                let trip = self.endpoint.trip(message.clone());
                                if trip.started {
                                    tracing::warn!(upstream = %self.host, error = %e, backoff = ?trip.left,
                                        "token endpoint failed; requests needing a new token fail at once until the back-off ends");
                                }
                            }
                            Err(_) => {}
                        }
                        t
                    })
                    .await
                    .map_err(Arc::unwrap_or_clone)?
            }
        };
        let mut v = HeaderValue::from_str(&format!("Bearer {}", token.value.expose())).map_err(|_| {
            UpstreamError::Token { host: self.host.clone(), message: "token has invalid characters".into() }
        })?;
        v.set_sensitive(true);
        Ok(Authorization { header: Some(v), used: Used::Bearer { token: token.id } })
    }

    /// Fail fast while the token endpoint is backed off.
    fn endpoint_ready(&self) -> Result<(), UpstreamError> {
        match self.endpoint.running() {
            None => Ok(()),
            Some(r) => {
                self.suppressed();
                Err(UpstreamError::Token {
                    host: self.host.clone(),
                    message: format!(
                        "backing off after a failure, next attempt in {}s (the failure: {})",
                        r.left.as_secs().max(1),
                        r.reason
                    ),
                })
            }
        }
    }

    /// A refusal that new credentials would not help: a clear error at once.
    fn cooling_down(&self, source: CredentialSource, scope: &str, trip: Trip) -> Verdict {
        self.suppressed();
        if trip.started {
            tracing::warn!(upstream = %self.host, scope, cooldown = ?trip.left,
                "the registry refused freshly obtained credentials; not asking for new ones until the cooldown ends");
        }
        Verdict::Fail(UpstreamError::Denied {
            host: self.host.clone(),
            status: StatusCode::UNAUTHORIZED,
            advice: Advice::CoolingDown { source, left: trip.left },
        })
    }

    fn scope_refusals(&self, scope: &str) -> Arc<Refusals> {
        self.refused_scopes.get_with(scope.to_string(), || Arc::new(Refusals::new(self.cooldown)))
    }

    /// Learn from a 401 to a request that carried `sent`: remember the scheme, and replace
    /// refused credentials once for all concurrent refusals, unless new ones would not help.
    pub async fn on_unauthorized(
        &self,
        challenges: &[Challenge],
        scope: &str,
        sent: &Authorization,
        attempt: Attempt,
    ) -> Verdict {
        let retried = attempt == Attempt::Retry;
        if let Credentials::Ecr(e) = &self.credentials {
            let Used::Ecr { generation } = sent.used else { return Verdict::GiveUp };
            if !retried && e.generation() != Some(generation) {
                // Replaced since (a shared forced refresh, or the background task).
                return Verdict::Retry;
            }
            return match self.refused.refused(generation, retried, generation + 1) {
                Decision::CoolingDown(trip) => self.cooling_down(CredentialSource::Ecr, scope, trip),
                Decision::Refresh => {
                    tracing::warn!(upstream = %self.host, "registry refused the ECR token; forcing a refresh");
                    match e.force_refresh(generation).await {
                        Ok(_) => Verdict::Retry,
                        Err(err) => Verdict::Fail(err),
                    }
                }
            };
        }
        let Some(learned) = self.learn(challenges) else { return Verdict::GiveUp };
        let next_token = self.next_token.load(Ordering::Relaxed);
        match sent.used {
            Used::Bearer { token } => match self.scope_refusals(scope).refused(token, retried, next_token) {
                Decision::CoolingDown(trip) => return self.cooling_down(CredentialSource::Token, scope, trip),
                Decision::Refresh => self.invalidate_refused(scope, token).await,
            },
            Used::Static => {
                if let Decision::CoolingDown(trip) = self.refused.refused(0, retried, 0) {
                    return self.cooling_down(CredentialSource::Static, scope, trip);
                }
            }
            Used::Helper { generation } => {
                if let Credentials::Helper(h) = &self.credentials {
                    match self.refused.refused(generation, retried, h.next_generation()) {
                        Decision::CoolingDown(trip) => return self.cooling_down(CredentialSource::Helper, scope, trip),
                        // The next request runs the helper again.
                        Decision::Refresh => h.refused(generation),
                    }
                }
            }
            Used::Nothing if retried => return Verdict::GiveUp,
            // The first credentials for this scheme are about to be obtained.
            Used::Nothing => match learned {
                Scheme::Bearer { .. } => self.scope_refusals(scope).learning(next_token),
                Scheme::Basic => self.refused.learning(0),
                Scheme::Unknown => {}
            },
            Used::Ecr { .. } => return Verdict::GiveUp,
        }
        *self.scheme.write().expect("auth scheme lock") = learned;
        Verdict::Retry
    }

    /// The scheme a 401's challenges ask for, if pullthrough can answer it.
    fn learn(&self, challenges: &[Challenge]) -> Option<Scheme> {
        if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = c.param("realm")?.parse::<Uri>().ok()?;
            if !matches!(realm.scheme_str(), Some("http" | "https")) || realm.host().is_none() {
                return None;
            }
            return Some(Scheme::Bearer { realm, service: c.param("service").map(str::to_string) });
        }
        let basic = challenges.iter().any(|c| c.scheme == "basic");
        (basic && !matches!(self.credentials, Credentials::None)).then_some(Scheme::Basic)
    }

    /// Drop the token for `scope` if it is still the refused one; a concurrent refusal may
    /// have replaced it already, and its replacement must stay.
    async fn invalidate_refused(&self, scope: &str, refused: u64) {
        let _turn = self.invalidating.lock().await;
        if self.tokens.get(scope).await.is_some_and(|t| t.id == refused) {
            self.tokens.invalidate(scope).await;
            crate::metrics::METRICS.token_forced_refreshes.with_label_values(&[&self.host]).inc();
        }
    }

    /// The registry accepted what `sent` carried: any cooldown for it is over.
    pub fn accepted(&self, scope: &str, sent: &Authorization) {
        match sent.used {
            Used::Nothing => {}
            Used::Static | Used::Ecr { .. } | Used::Helper { .. } => self.refused.accepted(),
            Used::Bearer { .. } => {
                if let Some(r) = self.refused_scopes.get(scope) {
                    r.accepted();
                }
            }
        }
    }

    /// Whether the upstream's credentials may go to `realm`: over https, to the registry's
    /// own host, or where the operator allowed plain http.
    fn may_send_credentials(&self, realm: &Uri) -> bool {
        realm.scheme_str() == Some("https")
            || self.allow_http_realm_credentials
            || realm.host().is_some_and(|h| h.eq_ignore_ascii_case(&self.registry_host))
    }

    async fn fetch_token(&self, realm: &Uri, service: Option<&str>, scope: &str) -> Result<Token, UpstreamError> {
        let refuse = |why: RealmRefusal| {
            let e = UpstreamError::Realm { host: self.host.clone(), realm: realm.to_string(), why };
            tracing::warn!(upstream = %self.host, error = %e, "token realm refused");
            e
        };
        // Literal addresses skip the resolver, which guards names: check them here.
        self.reach.check_url(realm).map_err(|r| refuse(RealmRefusal::Address(r)))?;
        let basic = self.basic().await?;
        let credentials = basic.header;
        if credentials.is_some() && !self.may_send_credentials(realm) {
            return Err(refuse(RealmRefusal::PlainHttpCredentials));
        }
        let err = |message: String| UpstreamError::Token { host: self.host.clone(), message };
        let mut query = String::new();
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        if let Some(s) = service {
            query.push_str(&format!("service={}&", enc(s)));
        }
        // No scope (a `/v2/` check): the token grants no repository, and asks for none.
        if !scope.is_empty() {
            query.push_str(&format!("scope={}", enc(scope)));
        }
        let sep = if realm.query().is_some() { '&' } else { '?' };
        let url = format!("{realm}{sep}{query}");
        let mut req = Request::get(&url).header(header::USER_AGENT, crate::oci::USER_AGENT);
        if let Some(v) = credentials {
            req = req.header(header::AUTHORIZATION, v);
        }
        let req = req.body(Empty::new()).map_err(|e| err(format!("bad realm URL: {e}")))?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| err(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| err(format!("request failed: {}", super::error_chain(&e))))?;
        let status = resp.status();
        let body = tokio::time::timeout(self.timeout, Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE).collect())
            .await
            .map_err(|_| err("token body timed out".into()))?
            .map_err(|e| err(format!("reading token: {e}")))?
            .to_bytes();
        if !status.is_success() {
            if let (Used::Helper { generation }, Credentials::Helper(h)) = (basic.used, &self.credentials) {
                if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                    h.refused(generation); // the next token fetch runs the helper again
                }
            }
            return Err(err(format!("answered {status}")));
        }
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let t: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| err(format!("token response is not JSON: {e}")))?;
        let value =
            t.token.or(t.access_token).filter(|s| !s.is_empty()).ok_or_else(|| err("no token in response".into()))?;
        // The spec's default lifetime is 60 s. Renew a little early so a token never expires
        // between being read from the cache and reaching the registry.
        let lifetime = t.expires_in.unwrap_or(60).max(1);
        let ttl = Duration::from_secs(lifetime - (lifetime / 10).min(30));
        Ok(Token {
            value: Secret::new(value),
            ttl: ttl.max(Duration::from_secs(1)),
            id: self.next_token.fetch_add(1, Ordering::Relaxed),
        })
    }
}
