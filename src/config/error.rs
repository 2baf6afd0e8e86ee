//! Why a configuration was refused: typed, and every message names the key it is about
//! (`upstream[0].url`, `cluster.token_env`) and says what to do.

use super::credentials::CredentialError;
use crate::oci::WrittenImageError;
use std::path::PathBuf;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Not TOML, or not this schema (an unknown key, a wrong type): toml's message names the key.
    #[error("{origin}: {source}")]
    Parse { origin: String, source: toml::de::Error },
    /// Parsed, but a value breaks a rule, or a credential it points at cannot be read.
    #[error("{origin}: {source}")]
    Invalid { origin: String, source: Invalid },
}

/// One refused key and why.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct Invalid {
    /// Where in the file, as a user would write it: `upstream[0].auth.region`.
    pub key: String,
    #[source]
    pub problem: Problem,
}

impl Invalid {
    /// A value that breaks a rule; `message` states the rule and a valid example.
    pub fn rule(key: impl Into<String>, message: impl Into<String>) -> Invalid {
        Invalid { key: key.into(), problem: Problem::Rule(message.into()) }
    }
}

/// What is wrong with a key's value.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// A value outside what the key accepts (the message says what it accepts).
    #[error("{0}")]
    Rule(String),
    /// A pinned or prefetched image that is not written as an image (which upstream it
    /// names is checked by `settings::check_images`: routing is the upstream layer's).
    #[error(transparent)]
    Image(#[from] WrittenImageError),
    /// A credential the key points at: an unset environment variable, an unreadable file.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
}
