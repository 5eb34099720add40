//! Posting line protocol to InfluxDB, v1 (`/write?db=&rp=`) or v2 (`/api/v2/write?org=&bucket=`), gzipped.
//!
//! Why not the influxdb2 crate: it pulls reqwest 0.11 and hyper 0.14 beside the current stack, OpenSSL or a
//! rustls-webpki with a published advisory, and sends raw line protocol without gzip. This writer is a thin
//! layer over reqwest 0.13 (rustls + ring), the one HTTP and TLS stack of the tree.
//!
//! Responses are sorted the way Telegraf sorts them, because each class needs a different reaction:
//! - 2xx: written.
//! - 413: the batch is too large; the caller splits it.
//! - 429, 5xx, network errors, timeouts: retry later, honouring `Retry-After`.
//! - 401, 403, 404: the site's credentials, bucket or database are wrong. Retried (with a loud error), not
//!   dropped: the data is fine and dropping it would turn an expired token into silent data loss.
//! - other 4xx (400 bad line, 422 out of retention, ...): the data itself is refused. The body says how much of
//!   it ([`Refusal::parse`]): a partial write (InfluxDB 1.x `error` and 2.x `message` `partial write: ...
//!   dropped=N`, 3.x `partial write of line protocol occurred` with line numbers) stored every line it does not name;
//!   otherwise the whole batch was refused and the writer loop takes out the lines the server quoted, or splits
//!   the batch in halves, and sends the rest again, so one bad line never takes good ones with it.

use super::config::{InfluxApi, InfluxConfig};
use flate2::write::GzEncoder;
use std::future::Future;
use std::io::Write;
use std::time::Duration;

/// How a write failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum WriteError {
    /// The server refused the data (all of it, or the lines `refusal` names); retrying it as it is cannot help.
    #[error("rejected by InfluxDB ({status}): {message}")]
    Rejected {
        status: u16,
        message: String,
        refusal: Box<Refusal>,
    },
    /// The request body is over the server's limit.
    #[error("batch too large for InfluxDB (413)")]
    TooLarge,
    /// Try again later.
    #[error("{class}: {message}")]
    Retry {
        class: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
}

impl WriteError {
    /// A short class name for the `caretaker_errors_total{stage="influx",class=...}` metric.
    pub fn class(&self) -> &'static str {
        match self {
            WriteError::Rejected { .. } => "rejected",
            WriteError::TooLarge => "too_large",
            WriteError::Retry { class, .. } => class,
        }
    }
}

/// Something that stores line protocol. Implemented over HTTP here; tests implement it in-process to inject
/// faults a real server cannot be made to produce on demand.
pub trait TimeSeriesWriter: Send + Sync + 'static {
    fn write(&self, body: &[u8]) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// The HTTP writer for both API versions.
pub struct HttpWriter {
    client: reqwest::Client,
    url: String,
    auth: Auth,
    gzip: bool,
}

enum Auth {
    Token(String),
    Basic(String, Option<String>),
    None,
}

impl HttpWriter {
    pub fn new(cfg: &InfluxConfig) -> anyhow::Result<HttpWriter> {
        crate::tls::install_default_provider();
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("caretaker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (url, auth) = match &cfg.api {
            InfluxApi::V2 { org, bucket, token } => (
                format!(
                    "{}/api/v2/write?org={}&bucket={}&precision=ns",
                    cfg.url,
                    url_encode(org),
                    url_encode(bucket)
                ),
                Auth::Token(token.clone()),
            ),
            InfluxApi::V1 {
                database,
                retention_policy,
                username,
                password,
            } => {
                let mut url = format!("{}/write?db={}&precision=ns", cfg.url, url_encode(database));
                if let Some(rp) = retention_policy {
                    url.push_str(&format!("&rp={}", url_encode(rp)));
                }
                let auth = match username {
                    Some(u) => Auth::Basic(u.clone(), password.clone()),
                    None => Auth::None,
                };
                (url, auth)
            }
        };
        Ok(HttpWriter {
            client,
            url,
            auth,
            gzip: cfg.gzip,
        })
    }

    /// The write endpoint (without credentials), for logs.
    pub fn endpoint(&self) -> &str {
        &self.url
    }
}

/// Percent-encodes a query-string or form value: every byte but the unreserved `A-Z a-z 0-9 - _ . ~` becomes
/// `%XX`. For the write URL here and the query form of [`super::query`].
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Gzips with the fastest level: on a 2-core gateway, CPU is scarcer than LAN bandwidth, and level 1 already
/// shrinks line protocol about 10x.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(body.len() / 8 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl TimeSeriesWriter for HttpWriter {
    fn write(&self, body: &[u8]) -> impl Future<Output = Result<(), WriteError>> + Send {
        let mut req = self
            .client
            .post(&self.url)
            .header("Content-Type", "text/plain; charset=utf-8");
        req = match &self.auth {
            Auth::Token(t) => req.header("Authorization", format!("Token {t}")),
            Auth::Basic(u, p) => req.basic_auth(u, p.as_ref()),
            Auth::None => req,
        };
        req = if self.gzip {
            req.header("Content-Encoding", "gzip").body(gzip(body))
        } else {
            req.body(body.to_vec())
        };
        async move {
            let resp = req.send().await.map_err(|e| WriteError::Retry {
                class: if e.is_timeout() { "timeout" } else { "network" },
                message: error_chain(&e),
                retry_after: None,
            })?;
            let status = resp.status().as_u16();
            if resp.status().is_success() {
                return Ok(());
            }
            let after = retry_after(resp.headers());
            let text = resp.text().await.unwrap_or_default();
            let message = text.trim().chars().take(500).collect::<String>();
            Err(match status {
                413 => WriteError::TooLarge,
                429 => WriteError::Retry {
                    class: "throttled",
                    message,
                    retry_after: after,
                },
                401 | 403 => WriteError::Retry {
                    class: "unauthorized",
                    message,
                    retry_after: after,
                },
                404 => WriteError::Retry {
                    class: "not_found",
                    message,
                    retry_after: after,
                },
                400..=499 => WriteError::Rejected {
                    status,
                    message,
                    refusal: Box::new(Refusal::parse(&text)),
                },
                _ => WriteError::Retry {
                    class: "server",
                    message: format!("{status}: {message}"),
                    retry_after: after,
                },
            })
        }
    }
}

/// `e: cause: cause` for errors whose Display hides the cause (reqwest's does).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// What a 4xx answer says about which lines of a batch were refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Refusal {
    /// The server stored every line it did not refuse (a partial write).
    pub partial: bool,
    /// Lines the server quoted (`unable to parse '<line>': ...`, 3.x `original_line`), as written.
    pub quoted: Vec<String>,
    /// 1-based numbers of refused lines (3.x `line_number`).
    pub line_numbers: Vec<usize>,
    /// Lines dropped after parsing (`dropped=N`: type conflicts, out of retention), not quoted.
    pub dropped: usize,
    /// `(measurement, field, type refused)` of a field type conflict, to find the dropped lines.
    pub conflict: Option<(String, String, String)>,
}

impl Refusal {
    /// Reads an error body of InfluxDB 1.x (`{"error": "..."}`), 2.x (`{"code": ..., "message": "..."}`) or
    /// 3.x (`{"error": ..., "data": [{"original_line", "line_number", ...}]}`), or plain text.
    pub fn parse(body: &str) -> Refusal {
        let mut r = Refusal::default();
        let mut texts = Vec::new();
        match serde_json::from_str::<serde_json::Value>(body) {
            Ok(v) => {
                for k in ["error", "message"] {
                    if let Some(t) = v.get(k).and_then(|t| t.as_str()) {
                        texts.push(t.to_string());
                    }
                }
                if let Some(items) = v.get("data").and_then(|d| d.as_array()) {
                    for it in items {
                        if let Some(l) = it.get("original_line").and_then(|l| l.as_str()) {
                            r.quoted.push(l.to_string());
                        }
                        if let Some(n) = it.get("line_number").and_then(|n| n.as_u64()) {
                            r.line_numbers.push(n as usize);
                        }
                    }
                }
            }
            Err(_) => texts.push(body.to_string()),
        }
        for t in &texts {
            if t.contains("partial write") {
                r.partial = true;
            }
            r.quoted.extend(unparseable_lines(t));
            if let Some(i) = t.rfind("dropped=") {
                let digits: String = t[i + "dropped=".len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(n) = digits.parse::<usize>() {
                    r.dropped = r.dropped.max(n);
                }
            }
            if r.conflict.is_none() {
                r.conflict = type_conflict(t);
            }
        }
        r
    }
}

/// The lines of `unable to parse '<line>': <reason>` messages (1.x and 2.x join several with newlines).
fn unparseable_lines(t: &str) -> Vec<String> {
    const MARK: &str = "unable to parse '";
    let mut out = Vec::new();
    let starts: Vec<usize> = t.match_indices(MARK).map(|(i, _)| i + MARK.len()).collect();
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(t.len(), |&n| n - MARK.len());
        let seg = &t[s..end];
        if let Some(q) = seg.rfind("': ") {
            out.push(seg[..q].to_string());
        }
    }
    out
}

/// `input field "F" on measurement "M" is type T` of a 1.x/2.x field type conflict.
fn type_conflict(t: &str) -> Option<(String, String, String)> {
    let rest = &t[t.find("field type conflict")?..];
    let f = rest.find("input field \"")? + "input field \"".len();
    let f_end = f + rest[f..].find('"')?;
    let m_rest = &rest[f_end..];
    let m = m_rest.find("on measurement \"")? + "on measurement \"".len();
    let m_end = m + m_rest[m..].find('"')?;
    let t_rest = &m_rest[m_end..];
    let ty = t_rest.find("is type ")? + "is type ".len();
    let ty: String = t_rest[ty..]
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    Some((m_rest[m..m_end].to_string(), rest[f..f_end].to_string(), ty))
}
