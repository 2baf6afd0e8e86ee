//! `[access]`: who may pull what (users, anonymous access, a deny-list).

use crate::pattern::Pattern;
use serde::Deserialize;

/// Client access control (ECR's IAM, seen from the proxy). With no users, every client may
/// pull (keep the listener on loopback, or behind a network policy).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Whether clients without credentials may pull. Default: true with no users, else false.
    pub anonymous: Option<bool>,
    /// What anonymous clients may pull (globs over `registry/repository`). Default: all.
    #[serde(default = "allow_all")]
    pub anonymous_allow: Vec<Pattern>,
    /// Refused to everyone with 403 DENIED: `registry/repository` globs or digests (sha256, sha512).
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default, rename = "user")]
    pub users: Vec<UserConfig>,
    /// Connections one client address may hold open at once.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
}

impl Default for AccessConfig {
    fn default() -> Self {
        toml::from_str("").expect("access defaults")
    }
}

fn allow_all() -> Vec<Pattern> {
    vec![Pattern::new("*")]
}

fn default_max_connections_per_client() -> usize {
    512
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// bcrypt hash, as `htpasswd -B` writes it: Basic auth with this user's password.
    pub password_bcrypt: Option<String>,
    /// Hex sha256 of a bearer token the user presents as `Authorization: Bearer <token>`.
    pub token_sha256: Option<String>,
    /// Hex sha256 of the DER client certificate that identifies this user over mTLS
    /// (`openssl x509 -in c.pem -outform DER | sha256sum`).
    pub cert_sha256: Option<String>,
    /// What the user may pull: globs over `registry/repository`. Default: all.
    #[serde(default = "allow_all")]
    pub allow: Vec<Pattern>,
}
