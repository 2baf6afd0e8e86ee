//! pullthrough: a pull-through caching proxy for container images.
//!
//! Requests flow one way:
//! `http` (routing, parsing into typed values, OCI errors) → `core` (pull-through policy,
//! single-flight fills) → `store` (content-addressed disk cache) and `upstream` (registry
//! clients, auth, routing rules), plus `shared` (an S3-compatible bucket shared by every
//! node) and `cluster` (the peers that share single flight). The sources (`store`, `shared`,
//! `upstream`, `cluster`) never call each other; `core` composes them, reading local disk,
//! then the peers and the shared tier, then the upstream. Nothing below `http` knows about
//! client requests.
//!
//! # Layer rules
//!
//! Configuration is parsed and validated at the edge (`config`), and [`settings`] maps it
//! into each layer's own settings type (`upstream::UpstreamSettings`, `store::SpaceBudget`,
//! `core::TagPolicies`, `http::access::AccessSettings`, …): no layer imports the serde
//! schema, and nothing imports from this file (the crate root) but the binary. Leaves (`oci`, `pattern`,
//! `secret`, `error_text`, `metrics`, `aws`, `tls_client`, `egress`, `lifecycle_policy`, `events`)
//! are vocabulary and plumbing any layer may use; they import no layer.
//!
//! What each top-level module may import (`use crate::…` or a `crate::…::` path), besides
//! itself. `tests/layers.rs` reads every `src/**/*.rs` and holds the code to this table (and
//! this table to its own copy), and checks there is no import circle between modules:
//!
//! | module | may import |
//! |---|---|
//! | `settings` | `config`, `http`, `core`, `store`, `upstream`, `shared`, `cluster`, `oci`, leaves |
//! | `hosts_toml` | `config`, `oci` |
//! | `registries_conf` | `config`, `oci` |
//! | `http` | `core`, `store`, `upstream`, `shared`, `cluster`, `oci`, leaves |
//! | `core` | `store`, `upstream`, `shared`, `cluster`, `oci`, leaves |
//! | `store` | `oci`, leaves |
//! | `upstream` | `oci`, leaves |
//! | `shared` | `oci`, leaves |
//! | `cluster` | `oci`, leaves |
//! | `config` | `oci`, `pattern`, `secret`, `lifecycle_policy` |
//! | `events` | `oci`, `error_text`, `metrics`, `tls_client`, `egress` |
//! | `lifecycle_policy` | `oci`, `pattern` |
//! | `aws` | `oci`, `egress` |
//! | `egress` | `oci`, `secret` |
//! | `error_text` | `oci` |
//! | `metrics` | `oci` |
//! | `pattern` | `oci` |
//! | `secret` | `oci` |
//! | `tls_client` | `oci` |
//! | `oci` | |

// The connection task's future (TLS handshake, client-certificate identity, hyper's auto
// builder) nests deeply enough that layout computation under the fuzzing build's flags
// exceeds the default query depth.
#![recursion_limit = "256"]

pub mod aws;
pub mod cluster;
pub mod config;
pub mod core;
pub mod egress;
pub mod error_text;
pub mod events;
pub mod hosts_toml;
pub mod http;
pub mod lifecycle_policy;
pub mod metrics;
pub mod oci;
pub mod pattern;
pub mod registries_conf;
pub mod secret;
pub mod settings;
pub mod shared;
pub mod store;
pub mod tls_client;
pub mod upstream;

use std::sync::Arc;

pub use oci::USER_AGENT;
pub use settings::shared_settings;

/// Assemble the service from a validated configuration: open (and clean) the cache
/// directory and build a client per upstream.
pub fn build_app(cfg: &config::Config, cache_dir: &std::path::Path) -> anyhow::Result<Arc<http::App>> {
    // Before anything can happen that is reported (fills, eviction, outages).
    events::install(events::Events::start(settings::events_settings(&cfg.events)));
    // Every documented family is in /metrics from the first scrape, zero where it can be.
    metrics::METRICS.init_series(cfg.upstreams.iter().map(|u| u.host.as_str()));
    let pt = build_pull_through(cfg, cache_dir)?;
    Ok(Arc::new(http::App {
        // With a handle on itself, for background work (stale-while-revalidate refreshes).
        pull: pt.into_shared(),
        access: Arc::new(http::access::Access::new(&settings::access_settings(&cfg.access))),
        max_connections_per_client: cfg.access.max_connections_per_client,
        idle_timeout: cfg.server.idle_timeout,
    }))
}

/// The pull-through service alone (for the CLI's offline commands and for `build_app`).
pub fn build_pull_through(cfg: &config::Config, cache_dir: &std::path::Path) -> anyhow::Result<core::PullThrough> {
    let budget = settings::store_budget(&cfg.cache);
    let store = store::Store::open(cache_dir, budget).map_err(|e| {
        anyhow::anyhow!(
            "cannot use cache directory {}: {e}; create it or choose another with --cache-dir or [cache] dir",
            cache_dir.display()
        )
    })?;
    let mut list = Vec::new();
    for c in &cfg.upstreams {
        let s = settings::upstream_settings(c);
        let tls = upstream::tls_config_for(&s)?;
        list.push(upstream::Upstream { registry: upstream::Registry::new(&s, &tls, cfg.server.offline), settings: s });
    }
    let upstreams = upstream::Upstreams::new(list);
    let pins = settings::pins(cfg)?;
    let shared = cfg.shared.s3.as_ref().map(|s| shared::SharedTier::new(settings::shared_settings(s)));
    let cluster = match &cfg.cluster {
        Some(c) => {
            Some(cluster::Cluster::new(settings::cluster_settings(c)).map_err(|e| anyhow::anyhow!("[cluster]: {e}"))?)
        }
        None => None,
    };
    Ok(core::PullThrough::new(Arc::new(store), upstreams, pins, cfg.cache.max_concurrent_fills, shared, cluster)
        .with_memory(cfg.cache.memory.0)
        .with_integrity(settings::integrity_settings(&cfg.cache))
        .with_resume(settings::resume_policy(&cfg.cache))
        .with_tag_policies(settings::tag_policies(&cfg.upstreams)))
}
