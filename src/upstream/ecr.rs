//! Amazon ECR credentials: `GetAuthorizationToken` through aws-sdk-ecr with the default AWS
//! credential chain (environment, shared profile, web identity/IRSA, container and instance
//! metadata), decoded to the `AWS:<password>` Basic credentials ECR registries take.
//!
//! A background task keeps the token fresh: at half its remaining lifetime (capped by
//! `refresh_every`), with jitter, and with exponential backoff after a failure, during
//! which the old token is used while it is still valid. A request waits for a fetch only
//! when no valid token exists at all. An `expiresAt` already in the past (emulators do
//! this) means "refresh soon", never a tight loop.
//!
//! Every token carries a generation, so that a refusal can say which token was refused: a
//! forced refresh ([`EcrTokens::force_refresh`]) happens only if the refused token is still
//! the current one, so concurrent refusals share one `GetAuthorizationToken` call. Whether
//! to force one at all (the cooldown after a refreshed token is refused too) is decided by
//! the caller, `auth`.

use super::cooldown::{jitter, Cooldown};
use super::error::UpstreamError;
use super::settings::EcrSettings;
use crate::secret::Secret;
use base64::Engine as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::OnceCell;

/// How long a token whose `expiresAt` is already past is trusted before a 401 says
/// otherwise; it is refreshed long before that.
const UNKNOWN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How soon to refresh a token whose `expiresAt` made no sense.
const REFRESH_SOON: Duration = Duration::from_secs(300);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct Token {
    username: String,
    password: Secret,
    valid_until: SystemTime,
    refresh_at: SystemTime,
    generation: u64,
}

/// Basic credentials for the registry, and which token they came from.
pub struct EcrCredentials {
    pub username: String,
    pub password: Secret,
    pub generation: u64,
}

/// What a forced refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Another caller (or the background task) replaced the refused token already.
    Shared,
    /// This call fetched a new token.
    Fetched,
}

pub struct EcrTokens {
    host: String,
    cfg: EcrSettings,
    /// The upstream's egress: ECR's API goes through the same proxy as its registry.
    egress: crate::egress::Egress,
    client: OnceCell<aws_sdk_ecr::Client>,
    current: Mutex<Option<Token>>,
    /// One fetch at a time; concurrent callers wait for it and reuse its result.
    fetching: tokio::sync::Mutex<()>,
    /// After a failed `GetAuthorizationToken`, requests do not call it again until this
    /// ends (a denied IAM role must not turn every pull into an API call); the background
    /// refresher keeps its own schedule.
    failing: Cooldown,
}

impl EcrTokens {
    pub fn new(host: &str, cfg: EcrSettings, cooldown: Duration, egress: crate::egress::Egress) -> EcrTokens {
        EcrTokens {
            host: host.to_string(),
            cfg,
            egress,
            client: OnceCell::new(),
            current: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            failing: Cooldown::new(cooldown),
        }
    }

    async fn client(&self) -> &aws_sdk_ecr::Client {
        self.client
            .get_or_init(|| async {
                // Few SDK-level retries and a bounded call: the refresher has its own backoff,
                // and a request waiting for a first token must not hang.
                let timeouts = aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(20))
                    .build();
                let loader =
                    crate::aws::loader(&self.cfg.region, self.cfg.endpoint_url.as_deref(), 2, timeouts, &self.egress);
                aws_sdk_ecr::Client::new(&loader.load().await)
            })
            .await
    }

    /// Basic credentials for the registry: the current token if it is valid, else a fresh
    /// one (the only case in which a request waits for ECR).
    pub async fn credentials(&self) -> Result<EcrCredentials, UpstreamError> {
        let t = match self.valid() {
            Some(t) => t,
            None => {
                self.ready()?;
                let _guard = self.fetching.lock().await;
                match self.valid() {
                    Some(t) => t,
                    None => {
                        // Waiters behind a fetch that failed do not repeat it.
                        self.ready()?;
                        self.fetch().await?
                    }
                }
            }
        };
        Ok(EcrCredentials { username: t.username, password: t.password, generation: t.generation })
    }

    /// Fail fast while the cooldown after a failed call runs.
    fn ready(&self) -> Result<(), UpstreamError> {
        let Some(r) = self.failing.running() else { return Ok(()) };
        crate::metrics::METRICS.token_refreshes_suppressed.with_label_values(&[&self.host]).inc();
        Err(UpstreamError::Token {
            host: self.host.clone(),
            message: format!(
                "not calling GetAuthorizationToken again for {}s after a failure (the failure: {})",
                r.left.as_secs().max(1),
                r.reason
            ),
        })
    }

    /// The generation of the current token, if there is one.
    pub fn generation(&self) -> Option<u64> {
        self.current.lock().expect("ecr token lock").as_ref().map(|t| t.generation)
    }

    fn valid(&self) -> Option<Token> {
        self.current.lock().expect("ecr token lock").clone().filter(|t| t.valid_until > SystemTime::now())
    }

    /// Replace the token of generation `refused` now, after the registry refused it:
    /// single-flight, so callers refused with the same token share one fetch, and a caller
    /// whose token was already replaced fetches nothing.
    pub async fn force_refresh(&self, refused: u64) -> Result<Refresh, UpstreamError> {
        let _guard = self.fetching.lock().await;
        if self.valid().is_some_and(|t| t.generation != refused) {
            return Ok(Refresh::Shared);
        }
        self.ready()?;
        crate::metrics::METRICS.token_forced_refreshes.with_label_values(&[&self.host]).inc();
        self.fetch().await.map(|_| Refresh::Fetched)
    }

    async fn fetch(&self) -> Result<Token, UpstreamError> {
        let err = |message: String| UpstreamError::Token { host: self.host.clone(), message };
        let mut req = self.client().await.get_authorization_token();
        if let Some(id) = &self.cfg.registry_id {
            #[allow(deprecated)] // registryIds is deprecated upstream but still how to pick a registry
            {
                req = req.registry_ids(id.clone());
            }
        }
        let refreshes = &crate::metrics::METRICS.token_refreshes;
        let out = req.send().await.map_err(|e| {
            refreshes.with_label_values(&[&self.host, "ecr", "error"]).inc();
            self.failing.trip(super::error_chain(&e));
            tracing::warn!(upstream = %self.host, error = %super::error_chain(&e), "ECR GetAuthorizationToken failed");
            err(format!("ECR GetAuthorizationToken failed: {}", super::error_chain(&e)))
        })?;
        let data = out.authorization_data().first().ok_or_else(|| err("ECR returned no authorization data".into()))?;
        let encoded = data.authorization_token().ok_or_else(|| err("ECR returned no token".into()))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| err("ECR token is not base64 text".into()))?;
        let (username, password) =
            decoded.split_once(':').ok_or_else(|| err("ECR token is not of the form user:password".into()))?;
        let now = SystemTime::now();
        // Only `fetch` makes tokens, under `fetching`: generations increase.
        let generation = self.generation().map_or(0, |g| g + 1);
        let expires = data.expires_at().and_then(|t| SystemTime::try_from(*t).ok());
        let (valid_until, base_refresh) = match expires {
            Some(e) if e > now + Duration::from_secs(60) => (e, e.duration_since(now).unwrap_or_default() / 2),
            _ => {
                tracing::warn!(upstream = %self.host, "ECR token has no usable expiresAt (already past?); using it and refreshing soon");
                (now + UNKNOWN_LIFETIME, REFRESH_SOON)
            }
        };
        let mut refresh = base_refresh;
        if let Some(cap) = self.cfg.refresh_every {
            refresh = refresh.min(cap);
        }
        // Up to 10% earlier, so many nodes do not refresh in lockstep.
        let refresh = refresh.mul_f64(1.0 - 0.1 * jitter()).max(Duration::from_millis(200));
        let token = Token {
            username: username.to_string(),
            password: Secret::new(password),
            valid_until,
            refresh_at: now + refresh,
            generation,
        };
        *self.current.lock().expect("ecr token lock") = Some(token.clone());
        refreshes.with_label_values(&[&self.host, "ecr", "ok"]).inc();
        self.failing.reset();
        tracing::info!(upstream = %self.host, refresh_in = ?refresh, "ECR token refreshed");
        Ok(token)
    }

    /// Keep the token fresh until the process ends.
    pub fn spawn_refresher(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut backoff = MIN_BACKOFF;
            loop {
                let wait = match me.current.lock().expect("ecr token lock").as_ref() {
                    None => Duration::ZERO,
                    Some(t) => t.refresh_at.duration_since(SystemTime::now()).unwrap_or_default(),
                };
                tokio::time::sleep(wait).await;
                let result = {
                    let _guard = me.fetching.lock().await;
                    me.fetch().await
                };
                match result {
                    Ok(_) => backoff = MIN_BACKOFF,
                    Err(e) => {
                        let still_valid = me.valid().is_some();
                        tracing::warn!(upstream = %me.host, error = %e, retry_in = ?backoff, still_valid, "ECR token refresh failed; keeping the current token while it is valid");
                        tokio::time::sleep(backoff.mul_f64(1.0 + 0.2 * jitter())).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        // Retry at once on the next turn of the loop.
                        if let Some(t) = me.current.lock().expect("ecr token lock").as_mut() {
                            t.refresh_at = SystemTime::now();
                        }
                    }
                }
            }
        });
    }
}
