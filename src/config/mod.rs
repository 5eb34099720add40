//! The site config: one TOML file (plus `CARETAKER_SECTION__KEY` environment overrides) that says where the
//! devices are, where to send data and where to keep state.
//!
//! Loading goes raw → validated, like the profiles: `config` merges the file and the environment, serde fills
//! the raw structs, `serde_ignored` collects every unknown key (so all of them are reported, not only the first),
//! and [`SiteConfig::load`] validates into domain types, resolving relative paths against the config file's
//! folder and reading secrets from their files. Every problem becomes a [`Diagnostic`] with file, line and key.

pub mod locate;

use crate::diag::Diagnostic;
use crate::util::parse_duration;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
struct RawSiteConfig {
    site: RawSite,
    state: RawState,
    #[serde(default)]
    profiles: Option<RawDirs>,
    #[serde(default)]
    rules: Option<RawDirs>,
    #[serde(default)]
    mqtt: Option<RawMqtt>,
    #[serde(default)]
    influxdb: Option<RawInflux>,
    #[serde(default)]
    http: Option<RawHttp>,
    #[serde(default)]
    pipeline: Option<RawPipeline>,
    #[serde(default)]
    devices: Vec<RawDevice>,
    #[serde(default)]
    work_orders: Option<crate::work_orders::config::RawWorkOrders>,
    energy: Option<crate::energy::config::RawEnergy>,
}

#[derive(Debug, Deserialize)]
struct RawSite {
    name: String,
    #[serde(default)]
    timezone: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawState {
    dir: PathBuf,
}

#[derive(Debug, Deserialize)]
struct RawDirs {
    #[serde(default)]
    dirs: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct RawMqtt {
    url: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    keep_alive: Option<String>,
    #[serde(default)]
    max_packet_size: Option<usize>,
    #[serde(default)]
    reconnect_max_backoff: Option<String>,
    #[serde(default)]
    subscriptions: Vec<RawSubscription>,
}

#[derive(Debug, Deserialize)]
struct RawSubscription {
    topic: String,
    profile: String,
}

#[derive(Debug, Deserialize)]
struct RawInflux {
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
}

#[derive(Debug, Deserialize)]
struct RawHttp {
    #[serde(default)]
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawPipeline {
    #[serde(default)]
    channel_capacity: Option<usize>,
    #[serde(default)]
    shutdown_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawDevice {
    id: String,
    profile: String,
    #[serde(default)]
    location: BTreeMap<String, String>,
    #[serde(default)]
    modbus: Option<RawModbusDevice>,
}

/// The `modbus = { ... }` table of a device, as written.
#[derive(Debug, Clone, Deserialize)]
pub struct RawModbusDevice {
    pub url: String,
    #[serde(default)]
    pub unit: Option<u8>,
    #[serde(default)]
    pub poll: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub baud: Option<u32>,
    #[serde(default)]
    pub parity: Option<String>,
    #[serde(default)]
    pub data_bits: Option<u8>,
    #[serde(default)]
    pub stop_bits: Option<u8>,
    /// Per-point poll periods overriding the device's (`points = { energy_total = "60s" }`).
    #[serde(default)]
    pub points: BTreeMap<String, String>,
    /// Consecutive failed polls before the device is reported offline.
    #[serde(default)]
    pub offline_after: Option<u32>,
}

/// The validated site config.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub file: PathBuf,
    pub site: Site,
    pub state_dir: PathBuf,
    pub profile_dirs: Vec<PathBuf>,
    pub rule_dirs: Vec<PathBuf>,
    pub mqtt: Option<MqttConfig>,
    pub influxdb: Option<InfluxConfig>,
    pub http: Option<HttpConfig>,
    pub pipeline: PipelineConfig,
    pub devices: Vec<DeviceConfig>,
    pub work_orders: crate::work_orders::WorkOrdersConfig,
    /// `[energy]`: interval consumption, tariffs, baselines (the energy stage runs only when present).
    pub energy: Option<crate::energy::config::EnergyConfig>,
}

#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    /// IANA zone for schedules and energy periods; the system zone when absent.
    pub timezone: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsFiles>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    pub max_packet_size: usize,
    pub reconnect_max_backoff: Duration,
    pub subscriptions: Vec<Subscription>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// One `[[mqtt.subscriptions]]`.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub topic: TopicTemplate,
    pub profile: String,
    /// Index in the file, for diagnostics.
    pub index: usize,
}

/// A topic with `{name}` captures, each standing for one topic level.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicTemplate {
    pub text: String,
    levels: Vec<Level>,
    /// `#` as the last level: matches any remaining levels.
    multi: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Level {
    Literal(String),
    Capture(String),
    Any,
}

impl TopicTemplate {
    pub fn parse(text: &str) -> Result<TopicTemplate, String> {
        if text.is_empty() {
            return Err("empty topic".into());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::new();
        let mut multi = false;
        let mut names = std::collections::HashSet::new();
        for (i, p) in parts.iter().enumerate() {
            if *p == "#" {
                if i + 1 != parts.len() {
                    return Err(format!("`{text}`: `#` is allowed only as the last level"));
                }
                multi = true;
            } else if *p == "+" {
                levels.push(Level::Any);
            } else if let Some(name) = p.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "`{text}`: capture `{{{name}}}` must be a name of letters, digits and `_`"
                    ));
                }
                if !names.insert(name.to_string()) {
                    return Err(format!("`{text}`: capture `{{{name}}}` appears twice"));
                }
                levels.push(Level::Capture(name.to_string()));
            } else if p.contains(['{', '}', '+', '#']) {
                return Err(format!(
                    "`{text}`: level `{p}` mixes text with a capture or wildcard; a capture must be a whole level"
                ));
            } else {
                levels.push(Level::Literal(p.to_string()));
            }
        }
        if !names.contains("device") {
            return Err(format!(
                "`{text}` has no `{{device}}` capture: Caretaker needs it to know which device sent a message"
            ));
        }
        Ok(TopicTemplate {
            text: text.to_string(),
            levels,
            multi,
        })
    }

    /// The MQTT subscription filter (`campus/+/+/telemetry`).
    pub fn filter(&self) -> String {
        let mut parts: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Capture(_) | Level::Any => "+",
            })
            .collect();
        if self.multi {
            parts.push("#");
        }
        parts.join("/")
    }

    /// Matches a concrete topic; returns the captures in template order.
    pub fn captures<'t>(&self, topic: &'t str) -> Option<Vec<(&str, &'t str)>> {
        let mut out = Vec::with_capacity(self.levels.len());
        let mut parts = topic.split('/');
        for level in &self.levels {
            let part = parts.next()?;
            match level {
                Level::Literal(s) if s == part => {}
                Level::Literal(_) => return None,
                Level::Capture(name) => {
                    if part.is_empty() {
                        return None;
                    }
                    out.push((name.as_str(), part));
                }
                Level::Any => {}
            }
        }
        if parts.next().is_some() && !self.multi {
            return None;
        }
        Some(out)
    }
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
    /// Disk budget of the spool (`<[state] dir>/spool`).
    pub spool_max_bytes: u64,
    /// What a full spool does.
    pub when_full: crate::sinks::influx::spool::WhenFull,
    /// How often spooled data is flushed to disk (0 = before every acknowledgement).
    pub fsync_interval: Duration,
}

/// Default spool budget: a day of a mid-size site (5,000 points read every 30 s = 14.4 million readings a day,
/// at about 70 bytes of line protocol each, is about 1 GB). See docs/spool.md.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// Smallest spool budget accepted (16 segments of 4 KiB).
pub const MIN_SPOOL_MAX_BYTES: u64 = 64 << 10;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub channel_capacity: usize,
    pub shutdown_timeout: Duration,
}

/// One `[[devices]]`.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub id: String,
    pub profile: String,
    pub location: BTreeMap<String, String>,
    pub modbus: Option<RawModbusDevice>,
    pub index: usize,
}

/// Tag keys Caretaker sets itself; location keys may not reuse them.
pub const RESERVED_TAGS: &[&str] = &["site", "device", "profile"];

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    errs: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn err(&mut self, key: &str, msg: impl Into<String>) {
        let line = locate::locate(self.text, key);
        self.errs.push(Diagnostic::new(self.file, line, key, msg));
    }
    fn duration(&mut self, key: &str, v: &Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => parse_duration(s).unwrap_or_else(|e| {
                self.err(key, e);
                default
            }),
        }
    }
    fn path(&self, p: &Path) -> PathBuf {
        resolve(self.file, p)
    }
    /// A secret given inline (usually through the environment) or in a file; the file wins.
    fn secret(
        &mut self,
        key: &str,
        inline: &Option<String>,
        file: &Option<PathBuf>,
    ) -> Option<String> {
        if let Some(f) = file {
            let path = self.path(f);
            match std::fs::read_to_string(&path) {
                Ok(s) => return Some(s.trim_end_matches(['\n', '\r']).to_string()),
                Err(e) => {
                    self.err(
                        &format!("{key}_file"),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
        inline.clone()
    }
}

/// Resolves a path from the config against the config file's folder.
pub fn resolve(config_file: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config_file.parent().unwrap_or(Path::new(".")).join(p)
    }
}

/// The environment variables that override config keys: `CARETAKER_SECTION__KEY`. Variables without `__`
/// (`CARETAKER_LOG`, a script's `CARETAKER_BIN`) are not config keys and are left alone.
fn env_overrides() -> config::Map<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("CARETAKER_") && k.contains("__"))
        .collect()
}

/// Extracts the key path from a `config` crate error message ("... for key `mqtt.url` ...").
fn key_in_message(msg: &str) -> Option<&str> {
    let start = msg.find("for key `")? + "for key `".len();
    let end = msg[start..].find('`')? + start;
    Some(&msg[start..end])
}

impl SiteConfig {
    /// Loads and validates the site config, listing every problem.
    pub fn load(file: &Path) -> Result<SiteConfig, Vec<Diagnostic>> {
        match Self::load_lenient(file) {
            (Some(c), errs) if errs.is_empty() => Ok(c),
            (_, errs) => Err(errs),
        }
    }

    /// Like [`SiteConfig::load`], but also returns the best-effort config when only validation failed, so that
    /// `caretaker check` can go on to check the profiles and rules it names and list their problems too.
    pub fn load_lenient(file: &Path) -> (Option<SiteConfig>, Vec<Diagnostic>) {
        match Self::load_inner(file) {
            Ok((c, errs)) => (Some(c), errs),
            Err(errs) => (None, errs),
        }
    }

    fn load_inner(file: &Path) -> Result<(SiteConfig, Vec<Diagnostic>), Vec<Diagnostic>> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            vec![Diagnostic::new(
                file,
                None,
                "",
                format!("cannot read config: {e}"),
            )]
        })?;
        // TOML syntax first, with the toml crate's own position (the config crate's error drops it).
        if let Err(e) = text.parse::<toml::Table>() {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() as u64 + 1);
            let msg = e.message().trim().to_string();
            return Err(vec![Diagnostic::new(
                file,
                line,
                "",
                format!("invalid TOML: {msg}"),
            )]);
        }
        let merged = config::Config::builder()
            .add_source(config::File::from(file).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("CARETAKER")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(env_overrides())),
            )
            .build()
            .map_err(|e| vec![Diagnostic::new(file, None, "", e.to_string())])?;
        let mut unknown = Vec::new();
        let raw: Result<RawSiteConfig, _> =
            serde_ignored::deserialize(merged, |path| unknown.push(path.to_string()));
        let mut cx = Ctx {
            file,
            text: &text,
            errs: Vec::new(),
        };
        for key in &unknown {
            // serde_ignored writes `?` for the inside of an Option.
            // Array indices come as `devices.0.modbus`; diagnostics (and `locate`) use `devices[0].modbus`.
            let mut parts: Vec<String> = Vec::new();
            for seg in key.split('.').filter(|s| *s != "?") {
                match (seg.parse::<usize>(), parts.last_mut()) {
                    (Ok(i), Some(prev)) => prev.push_str(&format!("[{i}]")),
                    _ => parts.push(seg.to_string()),
                }
            }
            let key = parts.join(".");
            let key = &key;
            let leaf = key.rsplit('.').next().unwrap_or(key);
            cx.err(key, format!("unknown key `{leaf}`"));
        }
        let raw = match raw {
            Ok(r) => r,
            Err(e) => {
                let msg = e.to_string();
                // The config crate writes `devices[0]modbus.unit`; diagnostics use `devices[0].modbus.unit`.
                let key = key_in_message(&msg)
                    .unwrap_or("")
                    .replace("]", "].")
                    .replace("].[", "][")
                    .replace("]..", "].")
                    .trim_end_matches('.')
                    .to_string();
                let short = msg.split(" for key `").next().unwrap_or(&msg).to_string();
                cx.err(&key, short);
                return Err(cx.errs);
            }
        };
        let cfg = Self::validate(&mut cx, raw);
        Ok((cfg, cx.errs))
    }

    fn validate(cx: &mut Ctx<'_>, raw: RawSiteConfig) -> SiteConfig {
        if raw.site.name.trim().is_empty() {
            cx.err("site.name", "must not be empty");
        }
        if let Some(tz) = &raw.site.timezone {
            if jiff::tz::TimeZone::get(tz).is_err() {
                cx.err(
                    "site.timezone",
                    format!("unknown time zone `{tz}` (use an IANA name like Europe/Berlin)"),
                );
            }
        }
        let state_dir = cx.path(&raw.state.dir);
        let profile_dirs = match &raw.profiles {
            Some(p) if !p.dirs.is_empty() => p.dirs.iter().map(|d| cx.path(d)).collect(),
            _ => vec![cx.path(Path::new("device_profiles"))],
        };
        let rule_dirs = raw
            .rules
            .as_ref()
            .map(|r| r.dirs.iter().map(|d| cx.path(d)).collect())
            .unwrap_or_default();
        let mqtt = raw.mqtt.as_ref().map(|m| Self::mqtt(cx, m, &raw.site.name));
        let influxdb = raw.influxdb.as_ref().map(|i| Self::influx(cx, i));
        let http = raw.http.as_ref().map(|h| {
            let text = h.listen.clone().unwrap_or_else(|| "127.0.0.1:9464".into());
            let listen = text.parse().unwrap_or_else(|_| {
                cx.err(
                    "http.listen",
                    format!("`{text}` is not an address:port like 127.0.0.1:9464"),
                );
                SocketAddr::from(([127, 0, 0, 1], 9464))
            });
            HttpConfig { listen }
        });
        let pipeline = {
            let p = raw.pipeline.as_ref();
            let channel_capacity = p.and_then(|p| p.channel_capacity).unwrap_or(1024);
            if channel_capacity == 0 {
                cx.err("pipeline.channel_capacity", "must be at least 1");
            }
            let shutdown_timeout = cx.duration(
                "pipeline.shutdown_timeout",
                &p.and_then(|p| p.shutdown_timeout.clone()),
                Duration::from_secs(10),
            );
            PipelineConfig {
                channel_capacity: channel_capacity.max(1),
                shutdown_timeout,
            }
        };
        let mut ids = std::collections::HashMap::new();
        let mut devices = Vec::new();
        for (i, d) in raw.devices.iter().enumerate() {
            if d.id.is_empty()
                || d.id.contains(['/', '+', '#'])
                || d.id.chars().any(char::is_whitespace)
            {
                cx.err(
                    &format!("devices[{i}].id"),
                    format!(
                        "device id `{}` must be non-empty, without spaces, `/`, `+` or `#`",
                        d.id
                    ),
                );
            }
            if let Some(prev) = ids.insert(d.id.clone(), i) {
                cx.err(
                    &format!("devices[{i}].id"),
                    format!("device `{}` is declared twice (also devices[{prev}])", d.id),
                );
            }
            for k in d.location.keys() {
                if RESERVED_TAGS.contains(&k.as_str()) {
                    cx.err(
                        &format!("devices[{i}].location.{k}"),
                        format!("`{k}` is a tag Caretaker sets itself"),
                    );
                }
            }
            if let Some(m) = &d.modbus {
                if let Err(es) = crate::sources::modbus::config::validate(m) {
                    for (k, msg) in es {
                        cx.err(&format!("devices[{i}].{k}"), msg);
                    }
                }
            }
            devices.push(DeviceConfig {
                id: d.id.clone(),
                profile: d.profile.clone(),
                location: d.location.clone(),
                modbus: d.modbus.clone(),
                index: i,
            });
        }
        let work_orders = match &raw.work_orders {
            Some(w) => {
                let (c, es) = crate::work_orders::config::validate(w, cx.file);
                for (k, m) in es {
                    cx.err(&k, m);
                }
                c
            }
            None => Default::default(),
        };
        let energy = raw.energy.as_ref().map(|e| {
            let (c, errs) = crate::energy::config::validate(e);
            for (k, m) in errs {
                cx.err(&k, m);
            }
            c
        });
        SiteConfig {
            work_orders,
            file: cx.file.to_path_buf(),
            site: Site {
                name: raw.site.name.clone(),
                timezone: raw.site.timezone.clone(),
            },
            state_dir,
            profile_dirs,
            rule_dirs,
            mqtt,
            influxdb,
            http,
            pipeline,
            devices,
            energy,
        }
    }

    fn mqtt(cx: &mut Ctx<'_>, m: &RawMqtt, site: &str) -> MqttConfig {
        let (scheme, rest) = m.url.split_once("://").unwrap_or(("", m.url.as_str()));
        let (tls, default_port) = match scheme {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" | "tls" => (true, 8883),
            _ => {
                cx.err(
                    "mqtt.url",
                    format!("`{}`: use mqtt://host:port or mqtts://host:port", m.url),
                );
                (false, 1883)
            }
        };
        let hostport = rest.trim_end_matches('/');
        let (host, port) = split_host_port(hostport, default_port).unwrap_or_else(|e| {
            cx.err("mqtt.url", format!("`{}`: {e}", m.url));
            (String::new(), default_port)
        });
        let tls = if tls || m.ca_file.is_some() {
            let f = |p: &Option<PathBuf>| p.as_ref().map(|p| cx.path(p));
            let t = TlsFiles {
                ca_file: f(&m.ca_file),
                cert_file: f(&m.cert_file),
                key_file: f(&m.key_file),
            };
            for (k, p) in [
                ("mqtt.ca_file", &t.ca_file),
                ("mqtt.cert_file", &t.cert_file),
                ("mqtt.key_file", &t.key_file),
            ] {
                if let Some(p) = p {
                    if !p.is_file() {
                        cx.err(k, format!("{} does not exist", p.display()));
                    }
                }
            }
            if t.cert_file.is_some() != t.key_file.is_some() {
                cx.err(
                    "mqtt.cert_file",
                    "client certificates need both cert_file and key_file",
                );
            }
            Some(t)
        } else {
            if m.cert_file.is_some() || m.key_file.is_some() {
                cx.err("mqtt.cert_file", "cert_file/key_file need an mqtts:// url");
            }
            None
        };
        let password = cx.secret("mqtt.password", &m.password, &m.password_file);
        if password.is_some() && m.username.is_none() {
            cx.err("mqtt.username", "a password needs a username");
        }
        let keep_alive = cx.duration("mqtt.keep_alive", &m.keep_alive, Duration::from_secs(30));
        if keep_alive < Duration::from_secs(5) {
            cx.err("mqtt.keep_alive", "must be at least 5s");
        }
        let reconnect_max_backoff = cx.duration(
            "mqtt.reconnect_max_backoff",
            &m.reconnect_max_backoff,
            Duration::from_secs(30),
        );
        let mut subscriptions = Vec::new();
        if m.subscriptions.is_empty() {
            cx.err(
                "mqtt.subscriptions",
                "no [[mqtt.subscriptions]]: nothing would be read from the broker",
            );
        }
        for (i, s) in m.subscriptions.iter().enumerate() {
            match TopicTemplate::parse(&s.topic) {
                Ok(topic) => {
                    for name in topic.capture_names() {
                        if RESERVED_TAGS.contains(&name) && name != "device" {
                            cx.err(
                                &format!("mqtt.subscriptions[{i}].topic"),
                                format!("capture `{{{name}}}` is a tag Caretaker sets itself"),
                            );
                        }
                    }
                    subscriptions.push(Subscription {
                        topic,
                        profile: s.profile.clone(),
                        index: i,
                    })
                }
                Err(e) => cx.err(&format!("mqtt.subscriptions[{i}].topic"), e),
            }
        }
        MqttConfig {
            host,
            port,
            tls,
            client_id: m
                .client_id
                .clone()
                .unwrap_or_else(|| format!("caretaker-{site}")),
            username: m.username.clone(),
            password,
            keep_alive,
            max_packet_size: m.max_packet_size.unwrap_or(256 * 1024),
            reconnect_max_backoff,
            subscriptions,
        }
    }

    fn influx(cx: &mut Ctx<'_>, i: &RawInflux) -> InfluxConfig {
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
                        cx.err(k, "belongs to api = \"v2\"; the v1 API uses database and retention_policy");
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
        InfluxConfig {
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
                None => crate::sinks::influx::spool::WhenFull::Block,
                Some(s) => crate::sinks::influx::spool::WhenFull::parse(s).unwrap_or_else(|e| {
                    cx.err("influxdb.when_full", e);
                    crate::sinks::influx::spool::WhenFull::Block
                }),
            },
            fsync_interval: cx.duration(
                "influxdb.fsync_interval",
                &i.fsync_interval,
                Duration::from_secs(1),
            ),
        }
    }

    /// The line of a key in the config file, for diagnostics raised after loading (unknown profile, ...).
    pub fn diag(&self, key: &str, msg: impl Into<String>) -> Diagnostic {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        Diagnostic::new(&self.file, locate::locate(&text, key), key, msg)
    }
}

impl TopicTemplate {
    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().filter_map(|l| match l {
            Level::Capture(n) => Some(n.as_str()),
            _ => None,
        })
    }
}

/// Splits `host:port` (or `[v6]:port`, or `host` alone).
pub fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    if s.is_empty() {
        return Err("missing host".into());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed `[`")?;
        (rest[..end].to_string(), rest[end + 1..].strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => p.parse().map_err(|_| format!("bad port `{p}`"))?,
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_templates_capture_levels() {
        let t = TopicTemplate::parse("campus/{building}/{device}/telemetry").unwrap();
        assert_eq!(t.filter(), "campus/+/+/telemetry");
        assert_eq!(
            t.captures("campus/b1/ahu-3/telemetry").unwrap(),
            vec![("building", "b1"), ("device", "ahu-3")]
        );
        assert!(t.captures("campus/b1/ahu-3/status").is_none());
        assert!(t.captures("campus/b1/ahu-3/telemetry/x").is_none());
        assert!(t.captures("campus/b1").is_none());
        let t = TopicTemplate::parse("tele/{device}/#").unwrap();
        assert_eq!(t.filter(), "tele/+/#");
        assert!(t.captures("tele/plug1/SENSOR").is_some());
        assert!(
            TopicTemplate::parse("a/{building}")
                .unwrap_err()
                .contains("{device}")
        );
        assert!(TopicTemplate::parse("a/x{device}").is_err());
        assert!(TopicTemplate::parse("a/#/{device}").is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!(split_host_port("h:1", 5).unwrap(), ("h".into(), 1));
        assert_eq!(split_host_port("h", 5).unwrap(), ("h".into(), 5));
        assert_eq!(split_host_port("[::1]:7", 5).unwrap(), ("::1".into(), 7));
        assert!(split_host_port("h:x", 5).is_err());
    }

    #[test]
    fn spool_keys_have_defaults_and_name_their_line_when_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let base = "[site]\nname = \"s\"\n[state]\ndir = \"state\"\n[influxdb]\nurl = \"http://127.0.0.1:1\"\napi = \"v1\"\ndatabase = \"x\"\n";
        let f = dir.path().join("a.toml");
        std::fs::write(&f, base).unwrap();
        let c = SiteConfig::load(&f).unwrap();
        let i = c.influxdb.unwrap();
        assert_eq!(i.spool_max_bytes, DEFAULT_SPOOL_MAX_BYTES);
        assert_eq!(i.when_full, crate::sinks::influx::spool::WhenFull::Block);
        assert_eq!(i.fsync_interval, Duration::from_secs(1));
        std::fs::write(
            &f,
            format!("{base}spool_max_bytes = 1048576\nwhen_full = \"drop_oldest\"\nfsync_interval = \"250ms\"\n"),
        )
        .unwrap();
        let i = SiteConfig::load(&f).unwrap().influxdb.unwrap();
        assert_eq!(i.spool_max_bytes, 1 << 20);
        assert_eq!(
            i.when_full,
            crate::sinks::influx::spool::WhenFull::DropOldest
        );
        assert_eq!(i.fsync_interval, Duration::from_millis(250));
        std::fs::write(
            &f,
            format!("{base}spool_max_bytes = 10\nwhen_full = \"drop_newest\"\n"),
        )
        .unwrap();
        let errs = SiteConfig::load(&f).unwrap_err();
        let keys: Vec<_> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert!(
            keys.contains(&("influxdb.spool_max_bytes", Some(9))),
            "{errs:?}"
        );
        assert!(keys.contains(&("influxdb.when_full", Some(10))), "{errs:?}");
        assert!(errs.iter().any(|e| e.message.contains("drop_oldest")));
    }
}
