//! Upstream registries: routing a request to one, and the client that talks to it.
//!
//! Nothing here knows about pullthrough's clients or its cache.

mod auth;
pub mod budget;
pub mod challenge;
mod client;
mod cooldown;
mod ecr;
mod error;
pub mod guard;
mod helper;
mod reachability;
mod refusal;
mod route;
mod settings;
pub mod throttle;

pub use crate::error_text::error_chain;
pub use crate::tls_client::config as tls_config;
use crate::tls_client::provider;
pub use budget::{BudgetSettings, Standing};
pub use client::Registry;
pub use ecr::EcrTokens;
pub use error::UpstreamError;
pub use reachability::Reachability;
pub use route::{route_written, Routable, Route, RouteError, Upstream, Upstreams, WrittenRouteError};
pub use settings::{AuthSettings, EcrSettings, UpstreamSettings};

/// TLS settings for one upstream: system roots plus its `ca_file`, or no verification at
/// all with `insecure_skip_verify` (labs only; warned about loudly).
pub fn tls_config_for(cfg: &UpstreamSettings) -> anyhow::Result<rustls::ClientConfig> {
    if cfg.insecure_skip_verify {
        tracing::warn!(upstream = %cfg.host, "insecure_skip_verify: TLS certificates of this upstream are NOT verified; anyone on the path can impersonate it");
        let mut c = tls_config();
        c.dangerous().set_certificate_verifier(std::sync::Arc::new(insecure::AcceptAny(provider())));
        return Ok(c);
    }
    let Some(ca) = &cfg.ca_file else { return Ok(tls_config()) };
    crate::tls_client::config_with_ca(ca).map_err(|e| anyhow::anyhow!("upstream {}: {e}", cfg.host))
}

mod insecure {
    //! A certificate verifier that accepts anything, for `insecure_skip_verify` only.
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::DigitallySignedStruct;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use std::sync::Arc;

    #[derive(Debug)]
    pub struct AcceptAny(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
