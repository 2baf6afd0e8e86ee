//! TLS for pullthrough's own outgoing connections (upstreams, cluster peers): rustls with
//! ring and the system's root certificates, loaded once.

/// The system's root certificates (honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`), loaded once.
pub fn system_roots() -> &'static rustls::RootCertStore {
    static ROOTS: std::sync::LazyLock<rustls::RootCertStore> = std::sync::LazyLock::new(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "problem loading system root certificates");
        }
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!("no system root certificates found: https upstreams and peers will fail (install ca-certificates or set SSL_CERT_FILE)");
        }
        roots
    });
    &ROOTS
}

pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS client settings with the system roots.
pub fn config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(system_roots().clone())
        .with_no_client_auth()
}

/// A `ca_file` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read ca_file {path}: {message}")]
    Read { path: std::path::PathBuf, message: String },
    #[error("ca_file {path} holds no usable certificate")]
    Empty { path: std::path::PathBuf },
}

/// TLS client settings with the system roots plus the PEM certificates in `ca` (a private
/// CA's, for an upstream or cluster peers that present a certificate it signed).
pub fn config_with_ca(ca: &std::path::Path) -> Result<rustls::ClientConfig, CaFileError> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = system_roots().clone();
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(ca)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| CaFileError::Read { path: ca.to_path_buf(), message: e.to_string() })?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(CaFileError::Empty { path: ca.to_path_buf() });
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth())
}
