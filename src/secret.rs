//! A secret string that never shows itself in logs: a leaf every layer may use (the config
//! reads secrets, the upstream client sends them, the cluster presents its token).

use serde::Deserialize;
use std::fmt;

/// A secret string. Its `Debug` and `Display` never show the value, so it cannot leak into
/// logs or error messages by accident.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
