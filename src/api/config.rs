//! The `[http]` section: where the one HTTP listener serves `/health`, `/metrics`, `/api/v1/*` and the console,
//! with TLS and API tokens.
//!
//! ```toml
//! [http]
//! listen = "0.0.0.0:9464"
//! tls_cert_file = "/etc/caretaker/tls.crt"   # HTTPS (rustls) when both are set
//! tls_key_file = "/etc/caretaker/tls.key"
//! metrics_public = true                       # /health and /metrics without a token
//! requests_public = false                     # POST /api/v1/requests without a token
//! device_offline_after = "15m"                # no reading for this long: the device is offline
//! [[http.tokens]]
//! name = "ops-desk"
//! role = "operator"                           # viewer | operator | admin
//! token_file = "/etc/caretaker/ops.token"
//! ```

use crate::diag::Collector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The `[http]` section, as written.
#[derive(Debug, serde::Deserialize)]
pub struct RawHttp {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    tls_key_file: Option<PathBuf>,
    #[serde(default)]
    metrics_public: Option<bool>,
    #[serde(default)]
    requests_public: Option<bool>,
    #[serde(default)]
    device_offline_after: Option<String>,
    #[serde(default)]
    tokens: Vec<RawToken>,
}

/// One `[[http.tokens]]`.
#[derive(Debug, serde::Deserialize)]
pub struct RawToken {
    name: String,
    role: String,
    token_file: PathBuf,
}

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// + acknowledge, resolve, raise requests, give feedback.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "operator" => Role::Operator,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// A configured API token. The secret never appears in `Debug` output or logs.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The shortest token accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Validated `[http]`.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The server certificate chain and key (HTTPS), loaded and checked at validation.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub metrics_public: bool,
    pub requests_public: bool,
    pub device_offline_after: Duration,
    pub tokens: Vec<Token>,
}

impl HttpConfig {
    /// A plain listener with the defaults (tests, the demo).
    pub fn plain(listen: SocketAddr) -> HttpConfig {
        HttpConfig {
            listen,
            tls: None,
            metrics_public: true,
            requests_public: false,
            device_offline_after: Duration::from_secs(15 * 60),
            tokens: Vec::new(),
        }
    }
}

/// Validates `[http]` (default listen address 127.0.0.1:9464): every problem is reported with its key.
pub fn validate(cx: &mut Collector<'_>, h: &RawHttp) -> HttpConfig {
    let text = h.listen.clone().unwrap_or_else(|| "127.0.0.1:9464".into());
    let listen = text.parse().unwrap_or_else(|_| {
        cx.err(
            "http.listen",
            format!("`{text}` is not an address:port like 127.0.0.1:9464"),
        );
        SocketAddr::from(([127, 0, 0, 1], 9464))
    });
    let tls = match (&h.tls_cert_file, &h.tls_key_file) {
        (Some(c), Some(k)) => {
            let (c, k) = (cx.path(c), cx.path(k));
            match server_tls(&c, &k) {
                Ok(t) => Some(t),
                Err((key, msg)) => {
                    cx.err(key, msg);
                    None
                }
            }
        }
        (Some(_), None) => {
            cx.err("http.tls_key_file", "required with tls_cert_file");
            None
        }
        (None, Some(_)) => {
            cx.err("http.tls_cert_file", "required with tls_key_file");
            None
        }
        (None, None) => None,
    };
    let device_offline_after = cx.duration(
        "http.device_offline_after",
        &h.device_offline_after,
        Duration::from_secs(15 * 60),
    );
    let mut tokens: Vec<Token> = Vec::new();
    for (i, t) in h.tokens.iter().enumerate() {
        let k = |s: &str| format!("http.tokens[{i}].{s}");
        if t.name.trim().is_empty() {
            cx.err(&k("name"), "must not be empty");
        }
        if let Some(prev) = tokens.iter().position(|x| x.name == t.name) {
            cx.err(
                &k("name"),
                format!(
                    "token name `{}` is used twice (also http.tokens[{prev}])",
                    t.name
                ),
            );
        }
        let Some(role) = Role::parse(&t.role) else {
            cx.err(
                &k("role"),
                format!(
                    "unknown role `{}`; expected viewer, operator or admin",
                    t.role
                ),
            );
            continue;
        };
        let path = cx.path(&t.token_file);
        let secret = match std::fs::read(&path) {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b);
                s.trim().as_bytes().to_vec()
            }
            Err(e) => {
                cx.err(
                    &k("token_file"),
                    format!("cannot read {}: {e}", path.display()),
                );
                continue;
            }
        };
        if secret.len() < MIN_TOKEN_BYTES {
            cx.err(
                &k("token_file"),
                format!(
                    "the token in {} is {} bytes: a token must be at least {MIN_TOKEN_BYTES} bytes \
                     (make one with `openssl rand -hex 24`)",
                    path.display(),
                    secret.len()
                ),
            );
            continue;
        }
        if tokens.iter().any(|x| x.secret == secret) {
            cx.err(
                &k("token_file"),
                "holds the same token as another [[http.tokens]]: each name needs its own",
            );
            continue;
        }
        tokens.push(Token {
            name: t.name.clone(),
            role,
            secret,
        });
    }
    HttpConfig {
        listen,
        tls,
        metrics_public: h.metrics_public.unwrap_or(true),
        requests_public: h.requests_public.unwrap_or(false),
        device_offline_after,
        tokens,
    }
}

/// Loads the certificate chain and key and checks they belong together (rustls with the ring provider).
fn server_tls(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, (&'static str, String)> {
    crate::tls::install_default_provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ("http.tls_cert_file", format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ("http.tls_cert_file", format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err((
            "http.tls_cert_file",
            format!("{}: no PEM certificate found", cert.display()),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ("http.tls_key_file", format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("http.tls_cert_file", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            (
                "http.tls_key_file",
                format!("{} does not go with {}: {e}", key.display(), cert.display()),
            )
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(dir: &Path, body: &str) -> (HttpConfig, Vec<(String, String)>) {
        let file = dir.join("site.toml");
        let text = format!("[http]\n{body}");
        std::fs::write(&file, &text).unwrap();
        let raw: toml::Table = toml::from_str(&text).unwrap();
        let raw: RawHttp = raw["http"].clone().try_into().unwrap();
        let mut cx = Collector::new(&file, &text);
        let c = validate(&mut cx, &raw);
        let errs = cx
            .errs
            .iter()
            .map(|e| (e.key.clone(), e.message.clone()))
            .collect();
        (c, errs)
    }

    #[test]
    fn tokens_are_checked_with_the_key_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good"), "0123456789abcdef0123\n").unwrap();
        std::fs::write(dir.path().join("weak"), "short\n").unwrap();
        let (c, errs) = check(
            dir.path(),
            r#"
[[http.tokens]]
name = "ops"
role = "operator"
token_file = "good"
[[http.tokens]]
name = "ops"
role = "viewer"
token_file = "weak"
[[http.tokens]]
name = "x"
role = "root"
token_file = "good"
[[http.tokens]]
name = "y"
role = "admin"
token_file = "missing"
"#,
        );
        assert_eq!(c.tokens.len(), 1);
        assert_eq!(c.tokens[0].secret, b"0123456789abcdef0123");
        assert!(!format!("{:?}", c.tokens[0]).contains("0123456789"));
        let keys: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            keys,
            [
                "http.tokens[1].name",
                "http.tokens[1].token_file",
                "http.tokens[2].role",
                "http.tokens[3].token_file"
            ],
            "{errs:?}"
        );
        assert!(errs[1].1.contains("at least 16 bytes"), "{errs:?}");
        assert!(c.metrics_public && !c.requests_public);
    }

    #[test]
    fn tls_files_that_do_not_load_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.pem"), "not a certificate").unwrap();
        let (c, errs) = check(
            dir.path(),
            "tls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\n",
        );
        assert!(c.tls.is_none());
        assert_eq!(errs[0].0, "http.tls_cert_file", "{errs:?}");
        let (_, errs) = check(dir.path(), "tls_cert_file = \"c.pem\"\n");
        assert_eq!(errs[0].0, "http.tls_key_file", "{errs:?}");
    }
}
