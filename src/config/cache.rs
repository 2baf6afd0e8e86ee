//! `[cache]`: where the cache lives, its budget, eviction and background intervals.

use super::serde_util::duration;
use super::size::{ByteRate, ByteSize, SpaceAmount};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Where blobs, manifests and tag records live. See `default_cache_dir`.
    pub dir: Option<PathBuf>,
    /// Budget for cached content; eviction keeps the total under it. Unset: no size cap
    /// (only `min_free` applies).
    pub max_size: Option<ByteSize>,
    /// Free space to leave on the cache's filesystem: bytes (`"10GiB"`) or a share (`"10%"`).
    #[serde(default = "default_min_free")]
    pub min_free: SpaceAmount,
    /// Eviction starts above this share of `max_size`...
    #[serde(default = "default_high_watermark")]
    pub high_watermark: f64,
    /// ...and stops below this one.
    #[serde(default = "default_low_watermark")]
    pub low_watermark: f64,
    /// How often the budget and free space are checked (fills also trigger a check).
    #[serde(default = "default_housekeeping_interval", deserialize_with = "duration")]
    pub housekeeping_interval: Duration,
    /// How often lifecycle policies are applied.
    #[serde(default = "default_lifecycle_interval", deserialize_with = "duration")]
    pub lifecycle_interval: Duration,
    /// How often `[[prefetch]]` images are fetched again (keeping their tags fresh).
    #[serde(default = "default_prefetch_interval", deserialize_with = "duration")]
    pub prefetch_interval: Duration,
    /// Upstream blob fetches running at once; more wait their turn.
    #[serde(default = "default_max_concurrent_fills")]
    pub max_concurrent_fills: usize,
    /// Images never evicted or expired: `host/repo:tag` or `host/repo@sha256:…`.
    #[serde(default)]
    pub pins: Vec<String>,
    /// Memory for verified manifests (by digest) and fresh tag answers, so that hot
    /// manifest requests do no file IO; `0` turns it off.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
    /// Hash cached blobs while they are served, holding the last chunk back until the blob
    /// verifies (whole-blob reads; see README, "Integrity").
    #[serde(default)]
    pub verify_on_read: bool,
    /// Speed of the background scrub that re-hashes every cached file (`"50MiB/s"`);
    /// `"0"`: off.
    #[serde(default)]
    pub scrub_rate: ByteRate,
    /// Times one fill may resume at the byte received when its source breaks off (a reset,
    /// a truncation, a stall, a slow source), from the next source; `0`: a break fails it.
    #[serde(default = "default_fill_resume_attempts")]
    pub fill_resume_attempts: u32,
    /// A peer or shared-tier read slower than this over `slow_source_window` counts as
    /// broken and is resumed from the next source; `"0"`: off.
    #[serde(default = "default_slow_source_floor")]
    pub slow_source_floor: ByteRate,
    #[serde(default = "default_slow_source_window", deserialize_with = "duration")]
    pub slow_source_window: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        toml::from_str("").expect("cache defaults")
    }
}

fn default_min_free() -> SpaceAmount {
    SpaceAmount::Percent(10.0)
}
fn default_high_watermark() -> f64 {
    0.95
}
fn default_low_watermark() -> f64 {
    0.85
}
fn default_housekeeping_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_max_concurrent_fills() -> usize {
    64
}
fn default_prefetch_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_lifecycle_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_fill_resume_attempts() -> u32 {
    3
}
fn default_slow_source_floor() -> ByteRate {
    ByteRate(1 << 20)
}
fn default_slow_source_window() -> Duration {
    Duration::from_secs(10)
}
fn default_memory() -> ByteSize {
    ByteSize(64 << 20)
}

impl CacheConfig {
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(default_cache_dir)
    }
}

/// A cache directory a non-root user can write: the XDG cache dir, else `./pullthrough-cache`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("pullthrough");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache").join("pullthrough");
    }
    PathBuf::from("pullthrough-cache")
}
