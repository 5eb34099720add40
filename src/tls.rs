//! TLS set-up shared by the MQTT client and the HTTP client: rustls with the ring provider (aws-lc-rs costs a
//! minute of C build on a 2-core gateway and brings nothing we need).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The TLS files of one outbound connection (`ca_file`, `cert_file`, `key_file`), paths resolved against the
/// config file's folder. Empty: the system's roots and no client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Checks the files of the section `section` (e.g. `influxdb`, `work_orders.targets[0]`): each one readable,
    /// the CA and client certificate parseable, `cert_file` and `key_file` together. Errors as (key, message).
    pub fn check(&self, section: &str) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (key, p) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(p) = p {
                if let Err(e) = std::fs::metadata(p) {
                    errs.push((
                        format!("{section}.{key}"),
                        format!("cannot read {}: {e}", p.display()),
                    ));
                }
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            errs.push((
                format!("{section}.cert_file"),
                "a client certificate needs both cert_file and key_file".into(),
            ));
        }
        if errs.is_empty() && !self.is_empty() {
            if let Err(e) = self.client_config() {
                errs.push((format!("{section}.ca_file"), e.to_string()));
            }
        }
        errs
    }

    /// The rustls client config for these files.
    pub fn client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        client_config(
            self.ca_file.as_deref(),
            self.cert_file.as_deref(),
            self.key_file.as_deref(),
        )
    }

    /// A reqwest client builder that trusts `ca_file` (only it) and presents the client certificate; with no
    /// files, reqwest's defaults (the system's roots).
    pub fn http_client_builder(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        install_default_provider();
        let b = reqwest::Client::builder();
        if self.is_empty() {
            return Ok(b);
        }
        let config = self.client_config()?;
        Ok(b.use_preconfigured_tls((*config).clone()))
    }
}

/// An error with every cause on one line ("error sending request ...: ...: invalid peer certificate:
/// UnknownIssuer"): reqwest's and rumqttc's own `Display` stop at the outermost layer and hide the TLS reason.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

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
