//! How requests to one upstream are authorised: anonymous, Basic, or Bearer tokens obtained
//! from the registry's token endpoint (anonymously or with Basic credentials).
//!
//! The scheme is learned from the registry's first 401 challenge and remembered, so later
//! requests carry the right `Authorization` up front instead of paying a 401 round trip each.
//! Tokens are cached per scope until shortly before they expire; concurrent requests for
//! the same scope share one token fetch.

use super::challenge::Challenge;
use super::error::UpstreamError;
use crate::config::Secret;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Empty, Limited};
use moka::future::Cache;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector<super::guard::GuardedResolver>>,
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
        realm: http::Uri,
        service: Option<String>,
    },
}

#[derive(Clone)]
struct Token {
    value: Secret,
    ttl: Duration,
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
    Ecr(Arc<super::ecr::EcrTokens>),
}

pub struct Auth {
    host: String,
    credentials: Credentials,
    scheme: RwLock<Scheme>,
    tokens: Cache<String, Token>,
    client: HttpClient,
    timeout: Duration,
}

impl Auth {
    pub fn new(host: String, credentials: Credentials, client: HttpClient, timeout: Duration) -> Auth {
        // ECR registries take Basic credentials directly: skip the first 401.
        let scheme = match credentials {
            Credentials::Ecr(_) => Scheme::Basic,
            _ => Scheme::Unknown,
        };
        Auth {
            host,
            credentials,
            scheme: RwLock::new(scheme),
            tokens: Cache::builder().max_capacity(10_000).expire_after(TokenExpiry).build(),
            client,
            timeout,
        }
    }

    pub fn ecr(&self) -> Option<&Arc<super::ecr::EcrTokens>> {
        match &self.credentials {
            Credentials::Ecr(e) => Some(e),
            _ => None,
        }
    }

    async fn basic_value(&self) -> Result<Option<HeaderValue>, UpstreamError> {
        let (user, pass) = match &self.credentials {
            Credentials::None => return Ok(None),
            Credentials::Static(u, p) => (u.clone(), p.clone()),
            Credentials::Ecr(e) => e.credentials().await?,
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
        Ok(Some(v))
    }

    /// The `Authorization` value for a request needing `scope` (e.g. `repository:x:pull`),
    /// fetching a token first when the registry is known to use Bearer.
    pub async fn authorization(&self, scope: &str) -> Result<Option<HeaderValue>, UpstreamError> {
        let scheme = self.scheme.read().expect("auth scheme lock").clone();
        match scheme {
            Scheme::Unknown => Ok(None),
            Scheme::Basic => self.basic_value().await,
            Scheme::Bearer { realm, service } => {
                let token = self
                    .tokens
                    .try_get_with(scope.to_string(), async {
                        let t = self.fetch_token(realm, service, scope).await;
                        let result = if t.is_ok() { "ok" } else { "error" };
                        crate::metrics::METRICS
                            .token_refreshes
                            .with_label_values(&[&self.host, "bearer", result])
                            .inc();
                        t
                    })
                    .await
                    .map_err(|e: Arc<UpstreamError>| UpstreamError::Token {
                        host: self.host.clone(),
                        message: e.to_string(),
                    })?;
                let mut v = HeaderValue::from_str(&format!("Bearer {}", token.value.expose())).map_err(|_| {
                    UpstreamError::Token { host: self.host.clone(), message: "token has invalid characters".into() }
                })?;
                v.set_sensitive(true);
                Ok(Some(v))
            }
        }
    }

    /// Learn from a 401: remember the scheme and drop the token that was refused. Returns
    /// whether a retry can be expected to do better.
    pub async fn on_unauthorized(&self, challenges: &[Challenge], scope: &str) -> bool {
        self.tokens.invalidate(scope).await;
        if let Credentials::Ecr(e) = &self.credentials {
            // The registry refused a token we believed valid: replace it, once.
            tracing::warn!(upstream = %self.host, "registry refused the ECR token; forcing a refresh");
            return e.force_refresh().await.is_ok();
        }
        let bearer = challenges.iter().find(|c| c.scheme == "bearer");
        let basic = challenges.iter().any(|c| c.scheme == "basic");
        let new = if let Some(c) = bearer {
            match c.param("realm").and_then(|r| r.parse::<http::Uri>().ok()) {
                Some(realm) if matches!(realm.scheme_str(), Some("http" | "https")) => {
                    Scheme::Bearer { realm, service: c.param("service").map(str::to_string) }
                }
                _ => return false,
            }
        } else if basic && !matches!(self.credentials, Credentials::None) {
            Scheme::Basic
        } else {
            return false;
        };
        *self.scheme.write().expect("auth scheme lock") = new;
        true
    }

    async fn fetch_token(
        &self,
        realm: http::Uri,
        service: Option<String>,
        scope: &str,
    ) -> Result<Token, UpstreamError> {
        let err = |message: String| UpstreamError::Token { host: self.host.clone(), message };
        let mut query = String::new();
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        if let Some(s) = &service {
            query.push_str(&format!("service={}&", enc(s)));
        }
        query.push_str(&format!("scope={}", enc(scope)));
        let sep = if realm.query().is_some() { '&' } else { '?' };
        let url = format!("{realm}{sep}{query}");
        let mut req = Request::get(&url).header(header::USER_AGENT, crate::USER_AGENT);
        if let Some(v) = self.basic_value().await? {
            req = req.header(header::AUTHORIZATION, v);
        }
        let req = req.body(Empty::new()).map_err(|e| err(format!("bad realm URL: {e}")))?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| err(format!("no answer within {:?}", self.timeout)))?
            .map_err(|e| err(format!("request failed: {e}")))?;
        let status = resp.status();
        let body = tokio::time::timeout(self.timeout, Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE).collect())
            .await
            .map_err(|_| err("token body timed out".into()))?
            .map_err(|e| err(format!("reading token: {e}")))?
            .to_bytes();
        if !status.is_success() {
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
        Ok(Token { value: Secret::new(value), ttl: ttl.max(Duration::from_secs(1)) })
    }
}
