//! Credentials the config points at: environment variables, password files, Docker's
//! `config.json` and its credential helpers. All of the configuration's I/O is here.

use super::Secret;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub(super) fn resolve_password(
    inline: &Option<Secret>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Secret, String> {
    match (inline, env, file) {
        (Some(p), None, None) => Ok(p.clone()),
        (None, Some(var), None) => std::env::var(var)
            .map(Secret::new)
            .map_err(|_| format!("password_env names {var:?}, but that environment variable is not set")),
        (None, None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| Secret::new(s.trim_end_matches(['\n', '\r']).to_string()))
            .map_err(|e| format!("password_file {}: {e}", path.display())),
        (None, None, None) => Err("kind = \"basic\" needs one of password, password_env or password_file".into()),
        _ => Err("give only one of password, password_env or password_file".into()),
    }
}

/// What a Docker `config.json` says about a registry's credentials.
pub(super) enum DockerCredentials {
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

/// Credentials for `host` from a Docker `config.json`: its `credHelpers` entry, else its
/// `credsStore`, else its `auths` entry.
pub(super) fn docker_config_credentials(
    path: Option<&Path>,
    registry: Option<&str>,
    host: &str,
) -> Result<DockerCredentials, String> {
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => match (std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME")) {
            (Some(d), _) => PathBuf::from(d).join("config.json"),
            (None, Some(h)) => PathBuf::from(h).join(".docker").join("config.json"),
            _ => return Err("no path given and neither DOCKER_CONFIG nor HOME is set".into()),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    #[derive(Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    #[derive(Deserialize)]
    struct DockerConfig {
        #[serde(default)]
        auths: std::collections::HashMap<String, Entry>,
        #[serde(default, rename = "credHelpers")]
        cred_helpers: std::collections::HashMap<String, String>,
        #[serde(default, rename = "credsStore")]
        creds_store: Option<String>,
    }
    let cfg: DockerConfig =
        serde_json::from_str(&text).map_err(|e| format!("{} is not a Docker config.json: {e}", path.display()))?;
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
            return Err(format!("{}: {helper:?} is not a credential helper name", path.display()));
        }
        return Ok(DockerCredentials::Helper { helper, server: server.clone() });
    }
    let entry = wanted
        .iter()
        .find_map(|k| cfg.auths.get(k))
        .ok_or_else(|| format!("{} has no auths entry for {}", path.display(), wanted.join(" or ")))?;
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(DockerCredentials::Basic(u.clone(), Secret::new(p.clone())));
    }
    let raw = entry.auth.as_deref().ok_or_else(|| format!("the auths entry in {} has no auth", path.display()))?;
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| format!("the auth in {} is not base64 of user:password", path.display()))?;
    let (u, p) = decoded
        .split_once(':')
        .ok_or_else(|| format!("the auth in {} is not base64 of user:password", path.display()))?;
    Ok(DockerCredentials::Basic(u.to_string(), Secret::new(p.to_string())))
}
