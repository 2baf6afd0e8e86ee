//! TLS for the client listener: rustls with HTTP/2 and HTTP/1.1 by ALPN, and a certificate
//! that is reloaded from its files on SIGHUP or when they change, without a restart.

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// The current certificate, swapped in place on reload.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    loaded_mtimes: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("cannot read TLS certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("TLS certificate {} is not valid PEM: {e}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "TLS certificate file {} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read TLS private key {}: {e}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow::anyhow!("unsupported TLS private key: {e}"))?;
    Ok(CertifiedKey::new(certs, signing))
}

impl ReloadingCert {
    pub fn new(cert: &Path, key: &Path) -> anyhow::Result<Arc<ReloadingCert>> {
        let ck = load(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(ck)),
            loaded_mtimes: RwLock::new((mtime(cert), mtime(key))),
        }))
    }

    /// Load the files again; on failure keep serving the old certificate.
    pub fn reload(&self) {
        match load(&self.cert, &self.key) {
            Ok(ck) => {
                *self.current.write().expect("cert lock") = Arc::new(ck);
                *self.loaded_mtimes.write().expect("cert lock") = (mtime(&self.cert), mtime(&self.key));
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "TLS certificate reload failed; keeping the current one"),
        }
    }

    fn changed(&self) -> bool {
        *self.loaded_mtimes.read().expect("cert lock") != (mtime(&self.cert), mtime(&self.key))
    }

    /// Reload on SIGHUP, and when the files' mtimes change (checked every few seconds).
    pub fn spawn_watcher(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let sighup = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = sighup => me.reload(),
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {
                        if me.changed() {
                            me.reload();
                        }
                    }
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("cert lock").clone())
    }
}

/// A rustls server config over `cert`, offering h2 and http/1.1; with `client_ca`, client
/// certificates signed by it are verified (and required if `required`).
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_ca: Option<&Path>,
    required: bool,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| anyhow::anyhow!("cannot read tls_client_ca {}: {e}", ca.display()))?
            {
                roots.add(c.map_err(|e| anyhow::anyhow!("tls_client_ca {}: {e}", ca.display()))?)?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if required { v } else { v.allow_unauthenticated() };
            builder.with_client_cert_verifier(v.build()?)
        }
    };
    let mut cfg = builder.with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A verified client certificate's sha256 (hex), attached to each request of its
/// connection.
#[derive(Clone, Debug)]
pub struct ClientCert(pub String);
