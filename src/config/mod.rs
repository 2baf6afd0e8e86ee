//! The TOML configuration: its shape, the embedded default, and loading it.
//!
//! Loading runs four steps, each in its own file: parse (strict, `deny_unknown_fields`, so
//! a typo is an error that names the key rather than a silently ignored setting; one schema
//! file per section), `validate` (per section, pure: a typed [`Invalid`] naming the key),
//! `derive` (defaults computed from other keys) and `credentials` (the only I/O: environment
//! variables, password files, Docker's `config.json`), so a missing variable or file stops
//! the daemon at start instead of at first pull.
//!
//! This is the edge: the layers below never see these types. `crate::settings` maps them
//! into each layer's own settings. The schema imports only `oci` and the leaves `pattern`,
//! `secret` and `lifecycle_policy` (see the layer rules in lib.rs).

mod access;
mod cache;
mod cluster;
mod credentials;
mod derive;
mod ecr_host;
mod error;
mod events;
mod prefetch;
mod serde_util;
mod server;
mod shared;
mod size;
mod upstream;
mod validate;

pub use crate::secret::Secret;
pub use access::{AccessConfig, UserConfig};
pub use cache::{default_cache_dir, CacheConfig};
pub use cluster::ClusterConfig;
pub use credentials::CredentialError;
pub use ecr_host::parse_ecr_host;
pub use error::{ConfigError, Invalid, Problem};
pub use events::{EventsConfig, WebhookConfig, WebhookMode, EVENT_KINDS};
pub use prefetch::PrefetchConfig;
pub use serde_util::{parse_duration, parse_listen};
pub use server::ServerConfig;
pub use shared::{S3Config, SharedConfig};
pub use size::{ByteRate, ByteSize, SpaceAmount};
pub use upstream::{AuthConfig, EcrAuthConfig, RepositoryRule, UpstreamConfig, PROXY_NONE};

use serde::Deserialize;
use std::path::Path;

/// The configuration compiled into the binary (`config/default.toml`).
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// Who may pull what: users, anonymous access, a deny-list.
    #[serde(default)]
    pub access: AccessConfig,
    /// Images the daemon keeps cached: fetched at start and every `cache.prefetch_interval`.
    #[serde(default, rename = "prefetch")]
    pub prefetch: Vec<PrefetchConfig>,
    /// A second cache tier shared by every node: an S3-compatible bucket.
    #[serde(default)]
    pub shared: SharedConfig,
    /// Cluster-wide single flight: each digest's owner among the peers fills it once.
    pub cluster: Option<ClusterConfig>,
    /// CloudEvents sent to webhooks: fills, failures, eviction, expiry, outages, rate limits.
    #[serde(default)]
    pub events: EventsConfig,
}

impl Config {
    /// Load and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// The embedded default.
    pub fn embedded() -> Config {
        Config::parse(DEFAULT_TOML, "embedded default config").expect("the embedded default config is valid")
    }

    /// Parse and validate TOML text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config =
            toml::from_str(text).map_err(|source| ConfigError::Parse { origin: origin.to_string(), source })?;
        let invalid = |source| ConfigError::Invalid { origin: origin.to_string(), source };
        cfg.validate().map_err(invalid)?;
        cfg.derive_defaults();
        credentials::load(&mut cfg).map_err(invalid)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded();
        let hosts: Vec<_> = c.upstreams.iter().map(|u| u.host.as_str()).collect();
        assert_eq!(hosts, ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "public.ecr.aws"]);
        assert_eq!(c.upstreams.iter().filter(|u| u.default).count(), 1);
    }

    #[test]
    fn errors_name_the_key() {
        let up = "[[upstream]]\nhost = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n";
        assert!(err("").contains("upstream"));
        assert!(err(&format!("{up}tag_ttl = \"soon\"")).contains("tag_ttl"));
        assert!(err(&format!("{up}stale_while_revalidate = \"soon\"")).contains("stale_while_revalidate"));
        assert!(err(&format!("{up}rate_limit_reserve = -1")).contains("rate_limit_reserve"));
        assert!(err(&format!("{up}colour = 1")).contains("colour"));
        assert!(err("[[upstream]]\nhost = \"Docker.IO\"\nurl = \"https://x\"").contains("upstream[0].host"));
        assert!(err("[[upstream]]\nhost = \"x.io\"\nurl = \"ftp://x\"").contains("upstream[0].url"));
        assert!(err(&format!("{up}{up}")).contains("upstream[1].host"));
        assert!(err(&format!("{up}prefix = \"a/b\"")).contains("upstream[0].prefix"));
        assert!(err(&format!("{up}[upstream.auth]\nkind = \"basic\"\nusername = \"u\"")).contains("password"));
        assert!(err(&format!(
            "{up}[upstream.auth]\nkind = \"basic\"\nusername = \"u\"\npassword_env = \"PT_SURELY_UNSET_VAR\""
        ))
        .contains("PT_SURELY_UNSET_VAR"));
        assert!(err("[server]\nlisten = \"nowhere\"\n").contains("listen"));
    }

    #[test]
    fn access_pins_and_prefetch_are_validated() {
        let up = "[[upstream]]\nhost = \"r.io\"\nurl = \"http://127.0.0.1:1\"\n";
        assert!(err(&format!("[access]\n[[access.user]]\nname = \"a\"\n{up}")).contains("access.user[0]"));
        assert!(err(&format!("[access]\n[[access.user]]\nname = \"a\"\npassword_bcrypt = \"plain\"\n{up}"))
            .contains("bcrypt"));
        assert!(err(&format!("[access]\n[[access.user]]\nname = \"a\"\ntoken_sha256 = \"xyz\"\n{up}"))
            .contains("token_sha256"));
        assert!(err(&format!("[access]\ndeny = [\"md5:abc\"]\n{up}")).contains("access.deny[0]"));
        assert!(err(&format!("[access]\nmax_connections_per_client = 0\n{up}")).contains("max_connections_per_client"));
        assert!(Config::parse(
            &format!(
                "[cache]\npins = [\"r.io/x:1\"]\n{up}[[prefetch]]\nimage = \"r.io/y@sha256:{}\"\n",
                "0".repeat(64)
            ),
            "t"
        )
        .is_ok());
    }

    #[test]
    fn ecr_and_docker_config_auth() {
        let c = Config::parse(
            "[[upstream]]\nhost = \"123456789012.dkr.ecr.eu-west-1.amazonaws.com\"\n[upstream.auth]\nkind = \"ecr\"\n",
            "t",
        )
        .unwrap();
        let u = &c.upstreams[0];
        assert_eq!(u.url, "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com");
        match &u.auth {
            AuthConfig::Ecr(e) => {
                assert_eq!(e.region, "eu-west-1");
                assert_eq!(e.registry_id.as_deref(), Some("123456789012"));
            }
            other => panic!("{other:?}"),
        }
        assert!(Config::parse("[[upstream]]\nhost = \"r.io\"\n[upstream.auth]\nkind = \"ecr\"\n", "t")
            .unwrap_err()
            .to_string()
            .contains("auth.region"));

        let dir = std::env::temp_dir().join(format!("pt-dc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config.json");
        // "bob:s3cret"
        std::fs::write(&f, r#"{"auths":{"ghcr.io":{"auth":"Ym9iOnMzY3JldA=="}}}"#).unwrap();
        let c = Config::parse(
            &format!(
                "[[upstream]]\nhost = \"ghcr.io\"\n[upstream.auth]\nkind = \"docker-config\"\npath = \"{}\"\n",
                f.display()
            ),
            "t",
        )
        .unwrap();
        match &c.upstreams[0].auth {
            AuthConfig::Basic { username, password: Some(p), .. } => {
                assert_eq!((username.as_str(), p.expose()), ("bob", "s3cret"))
            }
            other => panic!("{other:?}"),
        }
        let e = Config::parse(
            &format!(
                "[[upstream]]\nhost = \"quay.io\"\n[upstream.auth]\nkind = \"docker-config\"\npath = \"{}\"\n",
                f.display()
            ),
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no auths entry for quay.io"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn docker_config_credential_helpers_pick_as_docker_does() {
        let dir = std::env::temp_dir().join(format!("pt-dch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config.json");
        std::fs::write(
            &f,
            r#"{"credHelpers":{"ghcr.io":"gh"},"credsStore":"desktop","auths":{"https://index.docker.io/v1/":{}}}"#,
        )
        .unwrap();
        let helper_of = |host: &str| {
            let c = Config::parse(
                &format!(
                    "[[upstream]]\nhost = \"{host}\"\n[upstream.auth]\nkind = \"docker-config\"\npath = \"{}\"\n",
                    f.display()
                ),
                "t",
            )
            .unwrap();
            match &c.upstreams[0].auth {
                AuthConfig::CredentialHelper { helper, server } => (helper.clone(), server.clone().unwrap()),
                other => panic!("{other:?}"),
            }
        };
        // credHelpers for its registry, credsStore (asked for the auths key) otherwise.
        assert_eq!(helper_of("ghcr.io"), ("gh".to_string(), "ghcr.io".to_string()));
        assert_eq!(helper_of("docker.io"), ("desktop".to_string(), "https://index.docker.io/v1/".to_string()));
        assert_eq!(helper_of("quay.io"), ("desktop".to_string(), "quay.io".to_string()));
        std::fs::remove_dir_all(dir).unwrap();
        let e = Config::parse(
            "[[upstream]]\nhost = \"r.io\"\n[upstream.auth]\nkind = \"credential-helper\"\nhelper = \"../x\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("auth.helper"), "{e}");
    }

    #[test]
    fn secrets_are_resolved_and_redacted() {
        let dir = std::env::temp_dir().join(format!("pt-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "hunter2\n").unwrap();
        let c = Config::parse(
            &format!(
                "[[upstream]]\nhost = \"r.io\"\nurl = \"http://127.0.0.1:1\"\n[upstream.auth]\nkind = \"basic\"\nusername = \"u\"\npassword_file = \"{}\"",
                f.display()
            ),
            "t",
        )
        .unwrap();
        match &c.upstreams[0].auth {
            AuthConfig::Basic { password: Some(p), .. } => assert_eq!(p.expose(), "hunter2"),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{c:?}").contains("hunter2"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn validation_reads_no_credential_and_runs_first() {
        // The cluster token's variable is unset and the upstream's URL is bad: validation,
        // which reads nothing, names the URL; the token would only be read after it.
        let text = "[cluster]\nadvertise = \"http://10.0.0.7:5000\"\npeers = [\"http://10.0.0.8:5000\"]\n\
                    token_env = \"PT_SURELY_UNSET_TOKEN\"\n[[upstream]]\nhost = \"r.io\"\nurl = \"ftp://x\"\n";
        let e = err(text);
        assert!(e.contains("upstream[0].url"), "{e}");
        // With the URL fixed, the loader reads the variable and says which one to set.
        let e = err(&text.replace("ftp://x", "http://x"));
        assert!(e.contains("cluster.token_env") && e.contains("PT_SURELY_UNSET_TOKEN"), "{e}");
    }

    #[test]
    fn a_credential_error_keeps_its_cause() {
        let text = "[[upstream]]\nhost = \"r.io\"\n[upstream.auth]\nkind = \"basic\"\nusername = \"u\"\n\
                    password_file = \"/nonexistent/pt-password\"\n";
        let e = Config::parse(text, "t").unwrap_err();
        assert!(
            matches!(
                &e,
                ConfigError::Invalid { source: Invalid { problem: Problem::Credentials(CredentialError::PasswordFile { .. }), key }, .. }
                    if key == "upstream[0].auth"
            ),
            "{e:?}"
        );
        // The I/O error itself is in the chain, for callers that inspect it.
        let mut cause: Option<&dyn std::error::Error> = Some(&e);
        let mut io = None;
        while let Some(c) = cause {
            io = io.or(c.downcast_ref::<std::io::Error>().map(|e| e.kind()));
            cause = c.source();
        }
        assert_eq!(io, Some(std::io::ErrorKind::NotFound));
    }
}
