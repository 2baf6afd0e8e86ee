//! What can go wrong talking to an upstream registry.

use http::StatusCode;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to upstream {host}: {message}")]
    Connect { host: String, message: String },
    #[error("upstream {host} did not answer within {after:?}")]
    Timeout { host: String, after: Duration },
    #[error("upstream {host}: transfer failed: {message}")]
    Transfer { host: String, message: String },
    #[error("upstream {host} does not have it (404)")]
    NotFound { host: String },
    #[error("upstream {host} refused access ({status}); {advice}")]
    Denied { host: String, status: StatusCode, advice: Advice },
    #[error("upstream {host} is rate limiting (429){}", retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    TooManyRequests { host: String, retry_after: Option<Duration> },
    #[error("upstream {host} answered {status}")]
    Status { host: String, status: StatusCode },
    #[error("token endpoint for {host} failed: {message}")]
    Token { host: String, message: String },
    /// A token realm the upstream named that pullthrough will not contact (SSRF guard), or
    /// not with the upstream's credentials.
    #[error("upstream {host} names the token endpoint {realm}, which pullthrough refuses: {why}")]
    Realm { host: String, realm: String, why: RealmRefusal },
    #[error("upstream {host} sent a bad redirect: {message}")]
    Redirect { host: String, message: String },
    #[error("upstream {host} sent an invalid response: {message}")]
    BadResponse { host: String, message: String },
    #[error("upstream {host} is not contacted: the proxy runs in offline mode ([server] offline = true)")]
    Offline { host: String },
}

/// How a request to an upstream failed without an answer: the `kind` label of
/// `pullthrough_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Connect,
    Timeout,
    /// The connection was made but broke off: the upstream was reached.
    Transfer,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Transfer => "transfer",
        }
    }

    /// Whether the failure says the upstream cannot be reached (a transfer that broke off
    /// reached it).
    pub fn means_unreachable(self) -> bool {
        match self {
            FailureKind::Connect | FailureKind::Timeout => true,
            FailureKind::Transfer => false,
        }
    }
}

impl UpstreamError {
    /// The kind of failure when no answer came at all; `None` for an answer (a status, a
    /// token endpoint's refusal, a bad redirect).
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            UpstreamError::Connect { .. } => Some(FailureKind::Connect),
            UpstreamError::Timeout { .. } => Some(FailureKind::Timeout),
            UpstreamError::Transfer { .. } => Some(FailureKind::Transfer),
            _ => None,
        }
    }

    /// Errors that say the upstream is unreachable or broken right now (as opposed to a
    /// definite answer like 404): a cached tag may be served stale through these.
    pub fn is_unavailable(&self) -> bool {
        match self {
            UpstreamError::Connect { .. }
            | UpstreamError::Timeout { .. }
            | UpstreamError::Transfer { .. }
            | UpstreamError::TooManyRequests { .. }
            | UpstreamError::Token { .. }
            | UpstreamError::Realm { .. }
            | UpstreamError::BadResponse { .. }
            | UpstreamError::Offline { .. } => true,
            UpstreamError::Status { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

/// What an operator should check when an upstream refuses access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advice {
    /// The credentials configured (or none) are not enough.
    CheckAuth,
    /// Freshly obtained credentials were refused too: none are requested until the cooldown
    /// ends, and refused requests fail at once.
    CoolingDown { source: CredentialSource, left: Duration },
}

/// Where refused credentials came from, for advice that names the right thing to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// `GetAuthorizationToken`.
    Ecr,
    /// A username and password from the config.
    Static,
    /// A Docker credential helper's answer.
    Helper,
    /// A Bearer token from the registry's token endpoint, for one repository scope.
    Token,
}

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (source, left) = match self {
            Advice::CheckAuth => return f.write_str("check [upstream.auth] for this registry"),
            Advice::CoolingDown { source, left } => (source, left.as_secs().max(1)),
        };
        match source {
            CredentialSource::Ecr => write!(
                f,
                "a freshly refreshed ECR token was refused too, so no new one is requested for {left}s: check that \
                 the AWS identity may call ecr:GetAuthorizationToken and pull from this repository, and the \
                 region and registry_id in [upstream.auth]"
            ),
            CredentialSource::Static => write!(
                f,
                "the credentials were refused again, so they are not retried for {left}s: check the username and \
                 password in [upstream.auth]"
            ),
            CredentialSource::Helper => write!(
                f,
                "the credential helper's fresh answer was refused too, so it is not run again for {left}s: check \
                 what `docker-credential-<name> get` answers for this registry (credHelpers, credsStore)"
            ),
            CredentialSource::Token => write!(
                f,
                "a freshly fetched token for this repository was refused too, so no new one is requested for \
                 {left}s: check that the repository exists and that the credentials in [upstream.auth] (or \
                 anonymous access) may pull it"
            ),
        }
    }
}

/// Why a token realm is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealmRefusal {
    /// The realm's address is out of the upstream's reach (SSRF guard).
    Address(super::guard::Refused),
    /// The realm is plain http on another host: the upstream's credentials would travel in
    /// clear to a host the operator never named.
    PlainHttpCredentials,
}

impl fmt::Display for RealmRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RealmRefusal::Address(r) => write!(f, "{r}"),
            RealmRefusal::PlainHttpCredentials => f.write_str(
                "it is plain http on another host than the registry, and the credentials for this upstream are \
                 not sent there in clear; use an https realm, or set allow_http_realm_credentials = true for \
                 this upstream",
            ),
        }
    }
}
