//! The credentials loader: environment variables, password files, Docker's `config.json` and
//! its credential helpers. All of the configuration's I/O is here, and it runs after
//! validation, so it only ever reads what a valid configuration points at.

use super::error::Invalid;
use super::{AuthConfig, Config, Secret};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A credential the configuration points at that cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("password_env names {var:?}, but that environment variable is not set")]
    PasswordEnvUnset { var: String },
    #[error("password_file {path}: {source}")]
    PasswordFile { path: PathBuf, source: std::io::Error },
    #[error(
        "set the environment variable {var} to the cluster's shared secret (16 characters or more; the same on every node)"
    )]
    ClusterToken { var: String },
    #[error("no path given and neither DOCKER_CONFIG nor HOME is set")]
    NoDockerConfig,
    #[error("cannot read {path}: {source}")]
    DockerConfigRead { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a Docker config.json: {source}")]
    DockerConfigParse { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {helper:?} is not a credential helper name")]
    HelperName { path: PathBuf, helper: String },
    #[error("{path} has no auths entry for {wanted}")]
    NoAuthsEntry { path: PathBuf, wanted: String },
    #[error("the auths entry in {path} has no auth")]
    NoAuth { path: PathBuf },
    #[error("the auth in {path} is not base64 of user:password")]
    BadAuth { path: PathBuf },
}

/// The cluster's shared secret, the upstreams' passwords and Docker `config.json` entries,
/// read into the (already validated) configuration.
pub(super) fn load(cfg: &mut Config) -> Result<(), Invalid> {
    if let Some(c) = &mut cfg.cluster {
        let token = std::env::var(&c.token_env).unwrap_or_default();
        if token.len() < 16 {
            let var = c.token_env.clone();
            return Err(Invalid {
                key: "cluster.token_env".into(),
                problem: CredentialError::ClusterToken { var }.into(),
            });
        }
        c.token = Some(Secret::new(token));
    }
    for (i, u) in cfg.upstreams.iter_mut().enumerate() {
        if let AuthConfig::Basic { password: Some(_), .. } = &u.auth {
            tracing::warn!(upstream = %u.host, "a password is written inline in the config; prefer password_env or password_file");
        }
        let key = format!("upstream[{i}].auth");
        u.auth = resolve(&u.host, &u.auth).map_err(|e| Invalid { key, problem: e.into() })?;
        if let Some(var) = &u.proxy_password_env {
            let key = format!("upstream[{i}].proxy_password_env");
            let password = std::env::var(var)
                .map_err(|_| Invalid { key, problem: CredentialError::PasswordEnvUnset { var: var.clone() }.into() })?;
            u.proxy_password = Some(Secret::new(password));
        }
    }
    Ok(())
}

/// `auth` with its secrets read: Basic with its password, a Docker config as what it says.
fn resolve(host: &str, auth: &AuthConfig) -> Result<AuthConfig, CredentialError> {
    Ok(match auth {
        AuthConfig::Basic { username, password, password_env, password_file } => AuthConfig::Basic {
            username: username.clone(),
            password: Some(password_of(password, password_env, password_file)?),
            password_env: None,
            password_file: None,
        },
        AuthConfig::DockerConfig { path, registry } => {
            match docker_config_credentials(path.as_deref(), registry.as_deref(), host)? {
                DockerCredentials::Basic(username, password) => {
                    AuthConfig::Basic { username, password: Some(password), password_env: None, password_file: None }
                }
                DockerCredentials::Helper { helper, server } => {
                    AuthConfig::CredentialHelper { helper, server: Some(server) }
                }
            }
        }
        other => other.clone(),
    })
}

/// The password from whichever one source validation made sure is set.
fn password_of(
    inline: &Option<Secret>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Secret, CredentialError> {
    if let Some(var) = env {
        return std::env::var(var).map(Secret::new).map_err(|_| CredentialError::PasswordEnvUnset { var: var.clone() });
    }
    if let Some(path) = file {
        return std::fs::read_to_string(path)
            .map(|s| Secret::new(s.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|source| CredentialError::PasswordFile { path: path.clone(), source });
    }
    Ok(inline.clone().unwrap_or_else(|| Secret::new("")))
}

/// What a Docker `config.json` says about a registry's credentials.
enum DockerCredentials {
    Basic(String, Secret),
    /// Ask `docker-credential-<helper>` for `server`.
    Helper {
        helper: String,
        server: String,
    },
}

/// The `auths` (and `credHelpers`) keys Docker uses for `host`, preferred first.
pub(super) fn docker_auths_keys(host: &str) -> Vec<String> {
    if host == "docker.io" {
        vec!["https://index.docker.io/v1/".into(), "index.docker.io".into(), "docker.io".into()]
    } else {
        vec![host.to_string(), format!("https://{host}")]
    }
}

/// `docker-credential-<name>`: a name that cannot turn into a path or an option.
pub(super) fn valid_helper_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Where Docker keeps its `config.json` when the config names none.
fn default_docker_config() -> Result<PathBuf, CredentialError> {
    match (std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME")) {
        (Some(d), _) => Ok(PathBuf::from(d).join("config.json")),
        (None, Some(h)) => Ok(PathBuf::from(h).join(".docker").join("config.json")),
        _ => Err(CredentialError::NoDockerConfig),
    }
}

#[derive(Deserialize)]
struct DockerConfigEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

#[derive(Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: std::collections::HashMap<String, DockerConfigEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

/// Credentials for `host` from a Docker `config.json`: its `credHelpers` entry, else its
/// `credsStore`, else its `auths` entry.
fn docker_config_credentials(
    path: Option<&Path>,
    registry: Option<&str>,
    host: &str,
) -> Result<DockerCredentials, CredentialError> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => default_docker_config()?,
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|source| CredentialError::DockerConfigRead { path: path.clone(), source })?;
    let cfg: DockerConfigFile = serde_json::from_str(&text)
        .map_err(|source| CredentialError::DockerConfigParse { path: path.clone(), source })?;
    let wanted: Vec<String> = match registry {
        Some(r) => vec![r.to_string()],
        None => docker_auths_keys(host),
    };
    let helper = wanted.iter().find_map(|k| cfg.cred_helpers.get(k).map(|h| (k, h.clone()))).or_else(|| {
        let store = cfg.creds_store.clone().filter(|s| !s.is_empty())?;
        Some((wanted.iter().find(|k| cfg.auths.contains_key(*k)).unwrap_or(&wanted[0]), store))
    });
    if let Some((server, helper)) = helper {
        if !valid_helper_name(&helper) {
            return Err(CredentialError::HelperName { path, helper });
        }
        return Ok(DockerCredentials::Helper { helper, server: server.clone() });
    }
    let Some(entry) = wanted.iter().find_map(|k| cfg.auths.get(k)) else {
        return Err(CredentialError::NoAuthsEntry { path, wanted: wanted.join(" or ") });
    };
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(DockerCredentials::Basic(u.clone(), Secret::new(p.clone())));
    }
    let Some(raw) = entry.auth.as_deref() else {
        return Err(CredentialError::NoAuth { path });
    };
    use base64::Engine as _;
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(raw.trim()).ok().and_then(|b| String::from_utf8(b).ok());
    match decoded.as_deref().and_then(|d| d.split_once(':')) {
        Some((u, p)) => Ok(DockerCredentials::Basic(u.to_string(), Secret::new(p.to_string()))),
        None => Err(CredentialError::BadAuth { path }),
    }
}
