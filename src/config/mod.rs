//! The site config: one TOML file (plus `CARETAKER_SECTION__KEY` environment overrides) that says where the
//! devices are, where to send data and where to keep state.
//!
//! Loading goes raw → validated, like the profiles: `config` merges the file and the environment, serde fills
//! the raw structs, `serde_ignored` collects every unknown key (so all of them are reported, not only the first),
//! and [`SiteConfig::load`] validates into domain types, resolving relative paths against the config file's
//! folder and reading secrets from their files. Every problem becomes a [`Diagnostic`] with file, line and key.

//!
//! This module only composes: each section's raw and validated types and its validation belong to the component
//! that reads it (`sources::mqtt::config`, `sinks::influx::config`, `sources::modbus::config`,
//! `work_orders::config`, `energy::config`, `api::config` for `[http]`, `pipeline`), and all of them report into
//! one [`Collector`]. Nothing below calls back up into this module.

use crate::api::config::{HttpConfig, RawHttp};
use crate::catalog::RESERVED_TAGS;
use crate::diag::{Collector, Diagnostic};
use crate::pipeline::{PipelineConfig, RawPipeline};
use crate::sinks::influx::config::{InfluxConfig, RawInflux};
use crate::sources::modbus::config::RawModbusDevice;
use crate::sources::mqtt::config::{MqttConfig, RawMqtt};
use jiff::tz::TimeZone;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// `[[silences]]`: maintenance windows (work_orders::config).
    #[serde(default)]
    silences: Vec<crate::work_orders::config::RawSilence>,
    energy: Option<crate::energy::config::RawEnergy>,
    #[serde(default)]
    bacnet: Option<crate::sources::bacnet::RawBacnet>,
}

#[derive(Debug, Deserialize)]
struct RawSite {
    name: String,
    #[serde(default)]
    timezone: Option<String>,
    /// `[site] gateway_id`: this gateway's name within a fleet; defaults to the host name.
    #[serde(default)]
    gateway_id: Option<String>,
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
struct RawDevice {
    id: String,
    profile: String,
    #[serde(default)]
    location: BTreeMap<String, String>,
    #[serde(default)]
    modbus: Option<RawModbusDevice>,
    /// The device's id in the site's asset register / CMMS (flows into work orders and every target).
    #[serde(default)]
    asset_id: Option<String>,
    /// Per-point factor on top of the profile's (a CT ratio: `scale = { current_l1 = 40.0 }`).
    #[serde(default)]
    scale: BTreeMap<String, f64>,
    /// Points of the profile this device does not have or that must be ignored: never read, never stored.
    #[serde(default)]
    disabled_points: Vec<String>,
    #[serde(default)]
    bacnet: Option<crate::sources::bacnet::RawBacnetDevice>,
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
    pub work_orders: crate::work_orders::config::WorkOrdersConfig,
    /// `[energy]`: interval consumption, tariffs, baselines (the energy stage runs only when present).
    pub energy: Option<crate::energy::config::EnergyConfig>,
    /// `[bacnet]`: the BACnet/IP endpoint (devices with a `bacnet` table need it).
    pub bacnet: Option<crate::sources::bacnet::BacnetConfig>,
}

#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    /// IANA zone for schedules and energy periods; the system zone when absent.
    pub timezone: Option<String>,
    /// `[site] gateway_id` (default: the host name): which gateway of a fleet this is. It goes into work-order
    /// idempotency keys and references, and into the default MQTT client id when `[mqtt]` partitions or shares
    /// the topics (ARCHITECTURE.md, "Fleet layout").
    pub gateway_id: String,
}

/// The host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`), reduced to the characters a gateway id allows;
/// `gateway` when neither gives one.
pub fn default_gateway_id() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let id: String = raw
        .trim()
        .chars()
        .filter(|c| valid_gateway_char(*c))
        .take(64)
        .collect();
    if id.is_empty() { "gateway".into() } else { id }
}

fn valid_gateway_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// One `[[devices]]`.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub id: String,
    pub profile: String,
    pub location: BTreeMap<String, String>,
    pub modbus: Option<RawModbusDevice>,
    pub bacnet: Option<crate::sources::bacnet::RawBacnetDevice>,
    pub index: usize,
    /// `asset_id`: the device in the site's asset register / CMMS.
    pub asset_id: Option<String>,
    /// `scale`: point name → factor applied after the profile's conversion (checked against the profile when
    /// the catalog is built).
    pub scale: BTreeMap<String, f64>,
    /// `disabled_points`: point names (checked against the profile when the catalog is built).
    pub disabled_points: Vec<String>,
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
        let mut cx = Collector::new(file, &text);
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

    fn validate(cx: &mut Collector<'_>, raw: RawSiteConfig) -> SiteConfig {
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
        let gateway_id = match &raw.site.gateway_id {
            Some(g) if g.is_empty() || g.len() > 64 || !g.chars().all(valid_gateway_char) => {
                cx.err(
                    "site.gateway_id",
                    format!("`{g}`: use 1 to 64 letters, digits, `-`, `_` or `.` (it goes into ids and keys)"),
                );
                default_gateway_id()
            }
            Some(g) => g.clone(),
            None => default_gateway_id(),
        };
        let state_dir = cx.path(&raw.state.dir);
        // `run` creates the folder if missing; something else by that name would only fail at start-up.
        if state_dir.exists() && !state_dir.is_dir() {
            cx.err(
                "state.dir",
                format!("`{}` exists and is not a folder", state_dir.display()),
            );
        }
        let profile_dirs = match &raw.profiles {
            Some(p) if !p.dirs.is_empty() => p.dirs.iter().map(|d| cx.path(d)).collect(),
            _ => vec![cx.path(Path::new("device_profiles"))],
        };
        let rule_dirs = raw
            .rules
            .as_ref()
            .map(|r| r.dirs.iter().map(|d| cx.path(d)).collect())
            .unwrap_or_default();
        // Each section is validated by the component that owns it, into the same collector.
        let mqtt = raw
            .mqtt
            .as_ref()
            .map(|m| crate::sources::mqtt::config::validate(cx, m, &raw.site.name, &gateway_id));
        let influxdb = raw
            .influxdb
            .as_ref()
            .map(|i| crate::sinks::influx::config::validate(cx, i));
        let http = raw
            .http
            .as_ref()
            .map(|h| crate::api::config::validate(cx, h));
        let pipeline = crate::pipeline::validate(cx, raw.pipeline.as_ref());
        let devices = Self::devices(cx, &raw.devices);
        let bacnet = raw
            .bacnet
            .as_ref()
            .map(|b| crate::sources::bacnet::config::validate(cx, b));
        let mut work_orders: crate::work_orders::config::WorkOrdersConfig = match &raw.work_orders {
            Some(w) => {
                let (c, errs) = crate::work_orders::config::validate(w, cx.file);
                cx.report(errs);
                c
            }
            None => Default::default(),
        };
        let (silences, errs) = crate::work_orders::config::validate_silences(&raw.silences);
        cx.report(errs);
        work_orders.silences = silences;
        let energy = raw.energy.as_ref().map(|e| {
            let (c, errs) = crate::energy::config::validate(e);
            cx.report(errs);
            c
        });
        SiteConfig {
            work_orders,
            file: cx.file.to_path_buf(),
            site: Site {
                name: raw.site.name.clone(),
                timezone: raw.site.timezone.clone(),
                gateway_id,
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
            bacnet,
        }
    }

    /// `[[devices]]`: ids unique and usable in topics and tags, location keys not Caretaker's own tags, the
    /// `modbus` table checked by the Modbus source.
    fn devices(cx: &mut Collector<'_>, raw: &[RawDevice]) -> Vec<DeviceConfig> {
        let mut ids = std::collections::HashMap::new();
        let mut devices = Vec::new();
        for (i, d) in raw.iter().enumerate() {
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
                    cx.report(
                        es.into_iter()
                            .map(|(k, m)| (format!("devices[{i}].{k}"), m)),
                    );
                }
            }
            for (p, f) in &d.scale {
                if !f.is_finite() || *f == 0.0 {
                    cx.err(
                        &format!("devices[{i}].scale.{p}"),
                        format!("scale {f} must be a finite number other than 0"),
                    );
                }
            }
            if d.asset_id.as_deref().is_some_and(|a| a.trim().is_empty()) {
                cx.err(
                    &format!("devices[{i}].asset_id"),
                    "asset_id is empty: leave it out or name the asset",
                );
            }
            if let Some(b) = &d.bacnet {
                if d.modbus.is_some() {
                    cx.err(
                        &format!("devices[{i}].bacnet"),
                        "a device is read over Modbus or BACnet, not both",
                    );
                }
                if let Err(es) = crate::sources::bacnet::config::validate_device(b) {
                    cx.report(
                        es.into_iter()
                            .map(|(k, m)| (format!("devices[{i}].{k}"), m)),
                    );
                }
            }
            devices.push(DeviceConfig {
                id: d.id.clone(),
                profile: d.profile.clone(),
                location: d.location.clone(),
                modbus: d.modbus.clone(),
                bacnet: d.bacnet.clone(),
                index: i,
                asset_id: d.asset_id.clone(),
                scale: d.scale.clone(),
                disabled_points: d.disabled_points.clone(),
            });
        }
        devices
    }

    /// The line of a key in the config file, for diagnostics raised after loading (unknown profile, ...).
    pub fn diag(&self, key: &str, msg: impl Into<String>) -> Diagnostic {
        crate::diag::at_key(&self.file, key, msg)
    }

    /// The site's time zone (`[site] timezone`, else the system's): schedules and energy days use it.
    pub fn timezone(&self) -> TimeZone {
        self.site
            .timezone
            .as_deref()
            .and_then(|z| TimeZone::get(z).ok())
            .unwrap_or_else(TimeZone::system)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_keys_have_defaults_and_name_their_line_when_wrong() {
        use crate::sinks::influx::config::DEFAULT_SPOOL_MAX_BYTES;
        use std::time::Duration;
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
