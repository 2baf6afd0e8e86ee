//! Client access control at the edge: who is asking (anonymous, a Basic user checked against
//! a bcrypt hash, or a Bearer token checked against its sha256) and whether they may pull a
//! repository or digest. Deny-listed repositories and digests are refused to everyone.
//!
//! A request without credentials that credentials could allow is answered 401 with a Basic
//! challenge, never 403: containerd sends credentials only after a challenge, and skopeo and
//! podman decide from `/v2/` whether to send them at all. 403 is for an identified user
//! outside their rules, and for the deny-list.
//!
//! bcrypt is deliberately slow, so a verified (user, password) pair is remembered (as a
//! hash, never the password) for a few minutes, and verification runs off the async
//! threads.

use super::error::ApiError;
use crate::oci::{Digest, RepoName, Sha256Hasher};
use crate::pattern::Pattern;
use base64::Engine as _;
use http::{header, HeaderMap};
use std::sync::Arc;
use std::time::Duration;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    User(Arc<str>),
    /// Another node of the cluster, asking with the cluster token for a client it checked.
    Peer,
}

/// Who may pull what, from `[access]` (validated by `config`, mapped by `crate::settings`).
#[derive(Debug, Clone, Default)]
pub struct AccessSettings {
    /// Whether clients without credentials may pull.
    pub anonymous: bool,
    /// What anonymous clients may pull: globs over `registry/repository`.
    pub anonymous_allow: Vec<Pattern>,
    /// Refused to everyone with 403 DENIED: repositories (globs) and digests.
    pub deny_repos: Vec<Pattern>,
    pub deny_digests: Vec<Digest>,
    pub users: Vec<UserSettings>,
}

/// One user and how they prove who they are.
#[derive(Debug, Clone)]
pub struct UserSettings {
    pub name: String,
    /// bcrypt hash of their Basic password.
    pub password_bcrypt: Option<String>,
    /// Hex sha256 of their bearer token.
    pub token_sha256: Option<String>,
    /// Hex sha256 of their client certificate (DER).
    pub cert_sha256: Option<String>,
    /// What they may pull: globs over `registry/repository`.
    pub allow: Vec<Pattern>,
}

struct User {
    name: Arc<str>,
    password_bcrypt: Option<String>,
    token_sha256: Option<String>,
    cert_sha256: Option<String>,
    allow: Vec<Pattern>,
}

pub struct Access {
    anonymous: bool,
    anonymous_allow: Vec<Pattern>,
    deny_repos: Vec<Pattern>,
    deny_digests: Vec<Digest>,
    users: Vec<User>,
    /// Some user logs in with a password: anonymous requests are challenged rather than
    /// refused.
    challenge_anonymous: bool,
    /// sha256(user ":" password) of recently verified Basic credentials.
    verified: moka::sync::Cache<Digest, ()>,
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::unauthorized(msg)
}

impl Access {
    pub fn new(cfg: &AccessSettings) -> Access {
        Access {
            anonymous: cfg.anonymous,
            anonymous_allow: cfg.anonymous_allow.clone(),
            deny_repos: cfg.deny_repos.clone(),
            deny_digests: cfg.deny_digests.clone(),
            users: cfg
                .users
                .iter()
                .map(|u| User {
                    name: u.name.as_str().into(),
                    password_bcrypt: u.password_bcrypt.clone(),
                    token_sha256: u.token_sha256.as_ref().map(|t| t.to_ascii_lowercase()),
                    cert_sha256: u.cert_sha256.as_ref().map(|t| t.to_ascii_lowercase()),
                    allow: u.allow.clone(),
                })
                .collect(),
            challenge_anonymous: cfg.users.iter().any(|u| u.password_bcrypt.is_some()),
            verified: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(300)).build(),
        }
    }

    /// Identify the caller: by a verified client certificate (mTLS) if its fingerprint
    /// names a user, else from `Authorization`. Wrong credentials are a 401, never a silent
    /// fall back to anonymous.
    pub async fn identify(
        self: &Arc<Self>,
        headers: &HeaderMap,
        cert: Option<&super::tls::ClientCert>,
    ) -> Result<Identity, ApiError> {
        if let Some(c) = cert {
            if let Some(u) = self.users.iter().find(|u| u.cert_sha256.as_deref() == Some(c.0.as_str())) {
                return Ok(Identity::User(u.name.clone()));
            }
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Identity::Anonymous) };
        let value = value.to_str().map_err(|_| unauthorized("malformed Authorization header"))?;
        let (scheme, rest) = value.split_once(' ').ok_or_else(|| unauthorized("malformed Authorization header"))?;
        if scheme.eq_ignore_ascii_case("bearer") {
            let mut h = Sha256Hasher::new();
            h.update(rest.trim().as_bytes());
            let hex = h.finish().hex().to_string();
            return self
                .users
                .iter()
                .find(|u| u.token_sha256.as_deref() == Some(hex.as_str()))
                .map(|u| Identity::User(u.name.clone()))
                .ok_or_else(|| unauthorized("unknown bearer token"));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(unauthorized("unsupported authorization scheme; use Basic or Bearer"));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
        let (name, password) = decoded.split_once(':').ok_or_else(|| unauthorized("malformed Basic credentials"))?;
        if name.is_empty() && password.is_empty() {
            // containers/image (skopeo, podman) answers a Basic challenge this way when it
            // has no credentials: it means anonymous.
            return Ok(Identity::Anonymous);
        }
        let user = self
            .users
            .iter()
            .find(|u| &*u.name == name && u.password_bcrypt.is_some())
            .ok_or_else(|| unauthorized("unknown user or wrong password"))?;
        let key = {
            let mut h = Sha256Hasher::new();
            h.update(decoded.as_bytes());
            h.finish()
        };
        if self.verified.contains_key(&key) {
            return Ok(Identity::User(user.name.clone()));
        }
        let hash = user.password_bcrypt.clone().unwrap_or_default();
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if !ok {
            return Err(unauthorized("unknown user or wrong password"));
        }
        self.verified.insert(key, ());
        Ok(Identity::User(user.name.clone()))
    }

    /// Whether the caller may reach the API at all (`/v2/`). Anonymous callers are
    /// challenged whenever users log in with passwords, even if anonymous pulls are allowed:
    /// skopeo and podman send their credentials only to a registry whose `/v2/` asked.
    pub fn check_base(&self, who: &Identity) -> Result<(), ApiError> {
        match who {
            Identity::Anonymous if !self.anonymous => Err(unauthorized("authentication required")),
            Identity::Anonymous if self.challenge_anonymous => {
                Err(unauthorized("log in to pull more than anonymous clients may"))
            }
            _ => Ok(()),
        }
    }

    /// Whether the caller may pull from `registry/name`.
    pub fn check_repo(&self, who: &Identity, registry: &str, name: &RepoName) -> Result<(), ApiError> {
        let full = format!("{registry}/{name}");
        if self.deny_repos.iter().any(|p| p.matches(&full)) {
            return Err(ApiError::denied(format!("{full} is on this proxy's deny-list")));
        }
        let allow = match who {
            // The asking node checked its client against the same rules.
            Identity::Peer => return Ok(()),
            Identity::Anonymous if !self.anonymous => return Err(unauthorized("authentication required")),
            Identity::Anonymous => &self.anonymous_allow,
            Identity::User(n) => match self.users.iter().find(|u| u.name == *n) {
                Some(u) => &u.allow,
                None => return Err(unauthorized("unknown user")),
            },
        };
        if allow.iter().any(|p| p.matches(&full)) {
            Ok(())
        } else if *who == Identity::Anonymous && self.challenge_anonymous {
            Err(unauthorized(&format!("authentication required to pull {full}")))
        } else {
            Err(ApiError::denied(format!("not allowed to pull {full}")))
        }
    }

    /// Whether a digest is deny-listed.
    pub fn check_digest(&self, d: &Digest) -> Result<(), ApiError> {
        if self.deny_digests.contains(d) {
            return Err(ApiError::denied(format!("{d} is on this proxy's deny-list")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn globs(g: &[&str]) -> Vec<Pattern> {
        g.iter().map(|p| Pattern::new(p)).collect()
    }

    /// A user who logs in with a (bcrypt) password.
    fn password_user(name: &str, allow: &[&str]) -> UserSettings {
        UserSettings {
            name: name.into(),
            password_bcrypt: Some("x".into()),
            token_sha256: None,
            cert_sha256: None,
            allow: globs(allow),
        }
    }

    fn access(s: AccessSettings) -> Arc<Access> {
        Arc::new(Access::new(&s))
    }

    fn status(r: Result<(), ApiError>) -> Option<(u16, bool)> {
        r.err().map(|e| (e.status.as_u16(), e.into_response().headers().contains_key(header::WWW_AUTHENTICATE)))
    }

    #[test]
    fn anonymous_requests_credentials_could_allow_are_challenged() {
        let a = access(AccessSettings {
            anonymous: true,
            anonymous_allow: globs(&["r.test/public/*"]),
            deny_repos: globs(&["r.test/public/evil"]),
            users: vec![password_user("alice", &["r.test/team/*"])],
            ..Default::default()
        });
        let name = |n: &str| n.parse::<RepoName>().unwrap();
        let anon = Identity::Anonymous;
        let alice = Identity::User("alice".into());
        assert_eq!(status(a.check_repo(&anon, "r.test", &name("public/app"))), None);
        assert_eq!(status(a.check_repo(&anon, "r.test", &name("team/app"))), Some((401, true)));
        assert_eq!(status(a.check_base(&anon)), Some((401, true)));
        assert_eq!(status(a.check_base(&alice)), None);
        assert_eq!(status(a.check_repo(&alice, "r.test", &name("team/app"))), None);
        // An identified user outside their rules, and the deny-list: refused, no challenge.
        assert_eq!(status(a.check_repo(&alice, "r.test", &name("other/app"))), Some((403, false)));
        assert_eq!(status(a.check_repo(&anon, "r.test", &name("public/evil"))), Some((403, false)));

        // Digests on the deny-list, of either algorithm.
        let d256: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let d512: Digest = format!("sha512:{}", "b".repeat(128)).parse().unwrap();
        let a = access(AccessSettings { deny_digests: vec![d256.clone(), d512.clone()], ..Default::default() });
        assert_eq!(status(a.check_digest(&d256)), Some((403, false)));
        assert_eq!(status(a.check_digest(&d512)), Some((403, false)));
        assert_eq!(status(a.check_digest(&Digest::of_bytes(b"ok"))), None);

        // Without password users, credentials cannot help: 403, and /v2/ is open.
        let a = access(AccessSettings {
            anonymous: true,
            anonymous_allow: globs(&["r.test/public/*"]),
            ..Default::default()
        });
        assert_eq!(status(a.check_repo(&anon, "r.test", &name("team/app"))), Some((403, false)));
        assert_eq!(status(a.check_base(&anon)), None);
    }

    #[tokio::test]
    async fn empty_basic_credentials_are_anonymous() {
        let a = access(AccessSettings {
            anonymous: true,
            users: vec![password_user("alice", &["*"])],
            ..Default::default()
        });
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic Og==".parse().unwrap());
        assert_eq!(a.identify(&h, None).await.unwrap(), Identity::Anonymous);
        h.insert(header::AUTHORIZATION, "Basic OnB3".parse().unwrap()); // ":pw"
        assert_eq!(a.identify(&h, None).await.unwrap_err().status, StatusCode::UNAUTHORIZED);
    }
}
