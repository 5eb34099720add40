//! The `[influxdb]` section: where readings go (v1 or v2 API), batching, retries and the spool's budget.

use super::spool::WhenFull;
use crate::diag::Collector;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Deserialize)]
pub struct RawInflux {
    url: String,
    #[serde(default)]
    api: Option<String>,
    #[serde(default)]
    org: Option<String>,
    #[serde(default)]
    bucket: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    retention_policy: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    flush_interval: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    gzip: Option<bool>,
    #[serde(default)]
    max_retry_backoff: Option<String>,
    #[serde(default)]
    queue_max_bytes: Option<u64>,
    #[serde(default)]
    spool_max_bytes: Option<u64>,
    #[serde(default)]
    when_full: Option<String>,
    #[serde(default)]
    fsync_interval: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum InfluxApi {
    V1 {
        database: String,
        retention_policy: Option<String>,
        username: Option<String>,
        password: Option<String>,
    },
    V2 {
        org: String,
        bucket: String,
        token: String,
    },
}

#[derive(Debug, Clone)]
pub struct InfluxConfig {
    pub url: String,
    pub api: InfluxApi,
    /// Lines per write request.
    pub batch_size: usize,
    /// Longest a line waits for its batch to fill.
    pub flush_interval: Duration,
    pub timeout: Duration,
    pub gzip: bool,
    pub max_retry_backoff: Duration,
    /// Bytes of encoded lines held in memory while InfluxDB is slow or down; sources block beyond it.
    /// Used only when the spool cannot be opened.
    pub queue_max_bytes: u64,
    /// `ca_file` (trusted instead of the system's roots) and the optional client certificate for https.
    pub tls: crate::tls::TlsFiles,
    /// Disk budget of the spool (`<[state] dir>/spool`).
    pub spool_max_bytes: u64,
    /// What a full spool does.
    pub when_full: WhenFull,
    /// How often spooled data is flushed to disk (0 = before every acknowledgement).
    pub fsync_interval: Duration,
}

/// Default spool budget: a day of a mid-size site (5,000 points read every 30 s = 14.4 million readings a day,
/// at about 70 bytes of line protocol each, is about 1 GB). See docs/spool.md.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

/// Bytes of a typical line of line protocol: two fields with the usual tags (site, building, device, profile),
/// about 65 bytes a reading as measured in docs/spool.md. For estimates only (`caretaker check`).
pub const TYPICAL_LINE_BYTES: u64 = 130;

/// Smallest spool budget accepted (16 segments of 4 KiB).
pub const MIN_SPOOL_MAX_BYTES: u64 = 64 << 10;

/// Validates `[influxdb]`.
pub fn validate(cx: &mut Collector<'_>, i: &RawInflux) -> InfluxConfig {
    if !(i.url.starts_with("http://") || i.url.starts_with("https://")) {
        cx.err(
            "influxdb.url",
            format!("`{}`: use http://host:port or https://host:port", i.url),
        );
    }
    let api = match i.api.as_deref().unwrap_or("v2") {
        "v2" => {
            let token = cx.secret("influxdb.token", &i.token, &i.token_file);
            if token.is_none() && i.token_file.is_none() {
                cx.err(
                    "influxdb.token_file",
                    "the v2 API needs a token: set token_file, or CARETAKER_INFLUXDB__TOKEN",
                );
            }
            for (k, v) in [("influxdb.org", &i.org), ("influxdb.bucket", &i.bucket)] {
                if v.is_none() {
                    cx.err(k, "required for api = \"v2\"");
                }
            }
            for (k, v) in [
                ("influxdb.database", i.database.is_some()),
                ("influxdb.retention_policy", i.retention_policy.is_some()),
            ] {
                if v {
                    cx.err(k, "belongs to api = \"v1\"; the v2 API uses org and bucket");
                }
            }
            InfluxApi::V2 {
                org: i.org.clone().unwrap_or_default(),
                bucket: i.bucket.clone().unwrap_or_default(),
                token: token.unwrap_or_default(),
            }
        }
        "v1" => {
            if i.database.is_none() {
                cx.err("influxdb.database", "required for api = \"v1\"");
            }
            for (k, v) in [
                ("influxdb.org", i.org.is_some()),
                ("influxdb.bucket", i.bucket.is_some()),
                ("influxdb.token_file", i.token_file.is_some()),
            ] {
                if v {
                    cx.err(
                        k,
                        "belongs to api = \"v2\"; the v1 API uses database and retention_policy",
                    );
                }
            }
            let password = cx.secret("influxdb.password", &i.password, &i.password_file);
            InfluxApi::V1 {
                database: i.database.clone().unwrap_or_default(),
                retention_policy: i.retention_policy.clone(),
                username: i.username.clone(),
                password,
            }
        }
        other => {
            cx.err(
                "influxdb.api",
                format!("unknown api `{other}`; expected \"v1\" or \"v2\""),
            );
            InfluxApi::V1 {
                database: String::new(),
                retention_policy: None,
                username: None,
                password: None,
            }
        }
    };
    let batch_size = i.batch_size.unwrap_or(5000);
    if batch_size == 0 {
        cx.err("influxdb.batch_size", "must be at least 1");
    }
    let tls = crate::tls::TlsFiles {
        ca_file: i.ca_file.as_ref().map(|p| cx.path(p)),
        cert_file: i.cert_file.as_ref().map(|p| cx.path(p)),
        key_file: i.key_file.as_ref().map(|p| cx.path(p)),
    };
    let tls_errs = tls.check("influxdb");
    cx.report(tls_errs);
    if !tls.is_empty() && i.url.starts_with("http://") {
        cx.err(
            "influxdb.ca_file",
            "ca_file/cert_file/key_file need an https:// url",
        );
    }
    InfluxConfig {
        tls,
        url: i.url.trim_end_matches('/').to_string(),
        api,
        batch_size: batch_size.max(1),
        flush_interval: cx.duration(
            "influxdb.flush_interval",
            &i.flush_interval,
            Duration::from_secs(1),
        ),
        timeout: cx.duration("influxdb.timeout", &i.timeout, Duration::from_secs(10)),
        gzip: i.gzip.unwrap_or(true),
        max_retry_backoff: cx.duration(
            "influxdb.max_retry_backoff",
            &i.max_retry_backoff,
            Duration::from_secs(30),
        ),
        queue_max_bytes: i.queue_max_bytes.unwrap_or(64 * 1024 * 1024),
        spool_max_bytes: match i.spool_max_bytes {
            None => DEFAULT_SPOOL_MAX_BYTES,
            Some(n) if n < MIN_SPOOL_MAX_BYTES => {
                cx.err(
                    "influxdb.spool_max_bytes",
                    format!("{n} is too small; at least {MIN_SPOOL_MAX_BYTES} (64 KiB)"),
                );
                MIN_SPOOL_MAX_BYTES
            }
            Some(n) => n,
        },
        when_full: match i.when_full.as_deref() {
            None => WhenFull::Block,
            Some(s) => WhenFull::parse(s).unwrap_or_else(|e| {
                cx.err("influxdb.when_full", e);
                WhenFull::Block
            }),
        },
        fsync_interval: cx.duration(
            "influxdb.fsync_interval",
            &i.fsync_interval,
            Duration::from_secs(1),
        ),
    }
}
