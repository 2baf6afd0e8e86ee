//! Upstream registries: routing a request to one, and the client that talks to it.
//!
//! Nothing here knows about pullthrough's clients or its cache.

mod auth;
pub mod challenge;
mod client;
mod ecr;
mod error;
mod route;

pub use client::{error_chain, Registry};
pub use ecr::{parse_ecr_host, EcrTokens};
pub use error::UpstreamError;
pub use route::{Route, RouteError, Upstream, Upstreams};

/// TLS settings for upstream connections: the system's root certificates (honouring
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`), with the ring provider.
pub fn tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "problem loading system root certificates");
    }
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("no system root certificates found: https upstreams will fail (install ca-certificates or set SSL_CERT_FILE)");
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
