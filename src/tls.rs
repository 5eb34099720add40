//! TLS set-up shared by the MQTT client and the HTTP client: rustls with the ring provider (aws-lc-rs costs a
//! minute of C build on a 2-core gateway and brings nothing we need).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client config trusting `ca_file` (or the system roots when absent), with an optional client certificate.
pub fn client_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    install_default_provider();
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(ca) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
                .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
            if certs.is_empty() {
                anyhow::bail!("{}: no PEM certificate found", ca.display());
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match (cert_file, key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
