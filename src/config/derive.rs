//! Values a valid configuration leaves to be derived from other keys: an upstream's URL from
//! its host, an ECR upstream's region and registry id from its host name, a credential
//! helper's server from the host, the S3 key prefix in one spelling. No I/O.

use super::credentials::docker_auths_keys;
use super::ecr_host::parse_ecr_host;
use super::{AuthConfig, Config};

impl Config {
    /// Fill in what validation allowed to be left out.
    pub(super) fn derive_defaults(&mut self) {
        if let Some(s3) = &mut self.shared.s3 {
            let prefix = s3.prefix.trim_matches('/');
            s3.prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        }
        for u in &mut self.upstreams {
            if u.url.is_empty() {
                u.url = format!("https://{}", u.host);
            }
            match &mut u.auth {
                AuthConfig::Ecr(e) => {
                    let parsed = parse_ecr_host(&u.host);
                    if e.region.is_empty() {
                        // Validation made sure the host names it when `region` is not set.
                        e.region = parsed.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
                    }
                    if e.registry_id.is_none() {
                        e.registry_id = parsed.map(|(id, _)| id);
                    }
                }
                AuthConfig::CredentialHelper { server, .. } if server.is_none() => {
                    *server = docker_auths_keys(&u.host).into_iter().next();
                }
                _ => {}
            }
        }
    }
}
