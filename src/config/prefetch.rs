//! `[[prefetch]]`: images the daemon keeps cached.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefetchConfig {
    /// `registry/repo:tag` or `registry/repo@sha256:…`, the registry a configured upstream.
    pub image: String,
    /// Platforms of a multi-platform image to fetch (`linux/amd64`, `linux/arm64/v8`);
    /// empty: all of them.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Never evict or expire it.
    #[serde(default)]
    pub pin: bool,
}
