//! pullthrough: a pull-through caching proxy for container images.
//!
//! Requests flow one way:
//! `http` (routing, parsing into typed values, OCI errors) → `core` (pull-through policy,
//! single-flight fills) → `store` (content-addressed disk cache) and `upstream` (registry
//! clients, auth, routing rules). `store` and `upstream` never call each other; nothing
//! below `http` knows about client requests.

pub mod config;
pub mod core;
pub mod http;
pub mod oci;
pub mod store;
pub mod upstream;

use std::sync::Arc;

/// Sent upstream on every request, so registry operators can tell who is calling.
pub const USER_AGENT: &str = concat!("pullthrough/", env!("CARGO_PKG_VERSION"));

/// Assemble the service from a validated configuration: open (and clean) the cache
/// directory and build a client per upstream.
pub fn build_app(cfg: &config::Config, cache_dir: &std::path::Path) -> anyhow::Result<Arc<http::App>> {
    let store = store::Store::open(cache_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot use cache directory {}: {e}; create it or choose another with --cache-dir or [cache] dir",
            cache_dir.display()
        )
    })?;
    let tls = upstream::tls_config();
    let upstreams = upstream::Upstreams::new(
        cfg.upstreams
            .iter()
            .map(|c| upstream::Upstream {
                registry: upstream::Registry::new(c, &tls),
                config: c.clone(),
            })
            .collect(),
    );
    let pull = core::PullThrough::new(Arc::new(store), upstreams);
    Ok(Arc::new(http::App { pull }))
}
