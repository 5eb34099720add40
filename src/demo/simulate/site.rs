//! The simulated site file (`caretaker simulate --site FILE`, TOML): which devices exist, which physics model
//! drives each, how each speaks (an MQTT topic, a Modbus TCP port and unit, or a BACnet/IP UDP port and device
//! instance) and which faults are scripted when.
//!
//! Parsed raw → validated like the site config: every problem becomes a [`Diagnostic`] with file, line and key.
//! The format is documented in docs/demo.md; `deploy/demo/site.toml` is the shipped example.

use crate::diag::Diagnostic;
use crate::diag::locate::locate;
use crate::util::parse_duration;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    simulation: RawSimulation,
    #[serde(default)]
    weather: Option<RawWeather>,
    #[serde(default)]
    mqtt: Option<RawMqtt>,
    #[serde(default)]
    modbus: Option<RawModbus>,
    #[serde(default)]
    profiles: Option<RawDirs>,
    #[serde(default)]
    devices: Vec<RawDevice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulation {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    speed: Option<f64>,
    #[serde(default)]
    seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeather {
    #[serde(default)]
    mean: Option<f64>,
    #[serde(default)]
    swing: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    url: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModbus {
    #[serde(default)]
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirs {
    dirs: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    id: String,
    model: String,
    profile: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    modbus: Option<RawModbusDevice>,
    #[serde(default)]
    bacnet: Option<RawBacnetDevice>,
    #[serde(default)]
    location: BTreeMap<String, String>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    size: Option<f64>,
    #[serde(default)]
    faults: Vec<RawFault>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModbusDevice {
    port: u16,
    #[serde(default)]
    unit: Option<u8>,
    #[serde(default)]
    poll: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBacnetDevice {
    port: u16,
    device_instance: u32,
    #[serde(default)]
    poll: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    to: Option<f64>,
    #[serde(default)]
    period: Option<String>,
}

/// Which physics drives a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A room: temperature, humidity, CO2, light, occupancy (room sensors, Zigbee sensors).
    Room,
    /// A plug or switch with power metering (desk equipment).
    Plug,
    /// A water-leak sensor.
    Leak,
    /// A water meter: flow and volume counter.
    WaterMeter,
    /// A three-phase building energy meter.
    Meter,
    /// An air-handling unit.
    Ahu,
    /// A lighting controller for one zone.
    Lighting,
    /// A VAV air handler with economizer and coils (generic-vav-ahu): the one Guideline 36 AFDD judges.
    VavAhu,
}

impl ModelKind {
    pub const ALL: &'static [&'static str] = &[
        "room",
        "plug",
        "leak",
        "water_meter",
        "meter",
        "ahu",
        "lighting",
        "vav_ahu",
    ];
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "room" => Self::Room,
            "plug" => Self::Plug,
            "leak" => Self::Leak,
            "water_meter" => Self::WaterMeter,
            "meter" => Self::Meter,
            "ahu" => Self::Ahu,
            "lighting" => Self::Lighting,
            "vav_ahu" => Self::VavAhu,
            _ => return None,
        })
    }
}

/// A scripted fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A temperature sensor repeats its last value (room).
    Stuck,
    /// Water where it should not be: the leak sensor trips, a water meter sees flow all night.
    Leak,
    /// The device stops answering (Modbus) or publishing (MQTT).
    Offline,
    /// The filter's pressure drop climbs to `to` Pa over `duration` (AHU).
    FilterClog,
    /// The fan starts and stops every `period` while it should run steadily (AHU).
    ShortCycle,
    /// The outdoor-air damper stays fully open whatever its command (VAV AHU).
    StuckDamper,
    /// The cooling valve passes chilled water while closed (VAV AHU).
    LeakingValve,
    /// The supply-air temperature sensor fails high (VAV AHU).
    FailedSatSensor,
    /// A duct leak: the fan cannot hold the static pressure setpoint (VAV AHU).
    StaticPressureLoss,
}

impl FaultKind {
    pub const ALL: &'static [&'static str] = &[
        "stuck",
        "leak",
        "offline",
        "filter_clog",
        "short_cycle",
        "stuck_damper",
        "leaking_valve",
        "failed_sat_sensor",
        "static_pressure_loss",
    ];
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "stuck" => Self::Stuck,
            "leak" => Self::Leak,
            "offline" => Self::Offline,
            "filter_clog" => Self::FilterClog,
            "short_cycle" => Self::ShortCycle,
            "stuck_damper" => Self::StuckDamper,
            "leaking_valve" => Self::LeakingValve,
            "failed_sat_sensor" => Self::FailedSatSensor,
            "static_pressure_loss" => Self::StaticPressureLoss,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stuck => "stuck",
            Self::Leak => "leak",
            Self::Offline => "offline",
            Self::FilterClog => "filter_clog",
            Self::ShortCycle => "short_cycle",
            Self::StuckDamper => "stuck_damper",
            Self::LeakingValve => "leaking_valve",
            Self::FailedSatSensor => "failed_sat_sensor",
            Self::StaticPressureLoss => "static_pressure_loss",
        }
    }
    /// What the fault looks like, for the demo's summary.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Stuck => "stuck temperature sensor",
            Self::Leak => "water leak",
            Self::Offline => "device offline",
            Self::FilterClog => "filter clogging",
            Self::ShortCycle => "fan short-cycling",
            Self::StuckDamper => "outdoor-air damper stuck open",
            Self::LeakingValve => "cooling valve leaking",
            Self::FailedSatSensor => "supply-air sensor failed",
            Self::StaticPressureLoss => "duct static pressure loss",
        }
    }
    fn applies_to(self, m: ModelKind) -> bool {
        match self {
            Self::Stuck => m == ModelKind::Room,
            Self::Leak => matches!(m, ModelKind::Leak | ModelKind::WaterMeter),
            Self::Offline => true,
            Self::FilterClog | Self::ShortCycle => m == ModelKind::Ahu,
            Self::StuckDamper
            | Self::LeakingValve
            | Self::FailedSatSensor
            | Self::StaticPressureLoss => m == ModelKind::VavAhu,
        }
    }
}

/// When a fault starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultStart {
    /// This long after the simulation starts.
    After(Duration),
    /// At the first time the site's clock shows this local time of day.
    At(jiff::civil::Time),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub kind: FaultKind,
    pub start: FaultStart,
    /// `None`: until the simulation ends.
    pub duration: Option<Duration>,
    /// Filter clogging: the pressure drop (Pa) reached at the end of `duration`.
    pub to: Option<f64>,
    /// Short-cycling: one on/off cycle.
    pub period: Duration,
}

/// How a device speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    Mqtt {
        topic: String,
    },
    Modbus {
        port: u16,
        unit: u8,
        /// The poll period to declare in the daemon's config.
        poll: Duration,
    },
    /// A BACnet/IP device of its own on a UDP port (`simulate::bacnet`).
    Bacnet {
        port: u16,
        device_instance: u32,
        /// The poll period to declare in the daemon's config.
        poll: Duration,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    pub id: String,
    pub model: ModelKind,
    pub profile: String,
    pub transport: Transport,
    pub location: BTreeMap<String, String>,
    /// Simulated time between two MQTT messages.
    pub interval: Duration,
    /// Model scale: floor area factor for rooms, kW of base load for meters, ... (1.0 = typical).
    pub size: f64,
    pub faults: Vec<FaultSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttSpec {
    pub host: String,
    pub port: u16,
    pub client_id: String,
}

/// A validated site file.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    pub file: PathBuf,
    pub name: String,
    pub timezone: jiff::tz::TimeZone,
    pub timezone_name: String,
    /// Simulated start; `None` = now.
    pub start: Option<jiff::civil::DateTime>,
    pub speed: f64,
    pub seed: u64,
    /// Mean outdoor temperature (degC) and its day/night swing.
    pub weather: (f64, f64),
    pub mqtt: Option<MqttSpec>,
    /// Address the Modbus servers listen on.
    pub modbus_host: String,
    pub profile_dirs: Vec<PathBuf>,
    pub devices: Vec<DeviceSpec>,
}

struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
    errs: Vec<Diagnostic>,
}

impl Cx<'_> {
    fn err(&mut self, key: &str, msg: impl Into<String>) {
        let line = locate(self.text, key);
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
}

fn word<T>(
    cx: &mut Cx<'_>,
    key: &str,
    what: &str,
    text: &str,
    parse: impl Fn(&str) -> Option<T>,
    all: &'static [&'static str],
) -> Option<T> {
    match crate::catalog::units::parse_word(what, text, parse, all) {
        Ok(v) => Some(v),
        Err(e) => {
            cx.err(key, e);
            None
        }
    }
}

impl SiteSpec {
    /// Reads and validates a site file, listing every problem.
    pub fn load(file: &Path) -> Result<SiteSpec, Vec<Diagnostic>> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            vec![Diagnostic::new(
                file,
                None,
                "",
                format!("cannot read site file: {e}"),
            )]
        })?;
        Self::parse(file, &text)
    }

    /// Validates a site file's text; relative paths resolve against `file`'s folder.
    pub fn parse(file: &Path, text: &str) -> Result<SiteSpec, Vec<Diagnostic>> {
        let raw: RawSite = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() as u64 + 1);
            vec![Diagnostic::new(
                file,
                line,
                "",
                e.message().trim().to_string(),
            )]
        })?;
        let mut cx = Cx {
            file,
            text,
            errs: Vec::new(),
        };
        let sim = &raw.simulation;
        let timezone_name = sim
            .timezone
            .clone()
            .unwrap_or_else(|| "Europe/Berlin".into());
        let timezone = jiff::tz::TimeZone::get(&timezone_name).unwrap_or_else(|_| {
            cx.err(
                "simulation.timezone",
                format!(
                    "unknown time zone `{timezone_name}` (use an IANA name like Europe/Berlin)"
                ),
            );
            jiff::tz::TimeZone::UTC
        });
        let start = match sim.start.as_deref() {
            None | Some("now") => None,
            Some(s) => match s.parse::<jiff::civil::DateTime>() {
                Ok(d) => Some(d),
                Err(e) => {
                    cx.err(
                        "simulation.start",
                        format!("`{s}` is not a local date-time like 2026-01-12T21:00:00: {e}"),
                    );
                    None
                }
            },
        };
        let speed = sim.speed.unwrap_or(1.0);
        if !(speed > 0.0 && speed <= 100_000.0) {
            cx.err("simulation.speed", "must be above 0 and at most 100000");
        }
        let mqtt = raw.mqtt.as_ref().map(|m| mqtt_spec(&mut cx, m));
        let default_interval = raw
            .mqtt
            .as_ref()
            .map(|m| cx.duration("mqtt.interval", &m.interval, Duration::from_secs(60)))
            .unwrap_or(Duration::from_secs(60));
        let profile_dirs = match &raw.profiles {
            Some(p) => p
                .dirs
                .iter()
                .map(|d| crate::diag::resolve(file, d))
                .collect(),
            None => vec![crate::diag::resolve(file, Path::new("device_profiles"))],
        };
        let mut seen = Seen::default();
        let mut devices = Vec::new();
        for (i, d) in raw.devices.iter().enumerate() {
            let has_mqtt = raw.mqtt.is_some();
            if let Some(d) = device_spec(&mut cx, &mut seen, i, d, has_mqtt, default_interval) {
                devices.push(d);
            }
        }
        if raw.devices.is_empty() {
            cx.err("devices", "no [[devices]]: nothing to simulate");
        }
        let weather = raw
            .weather
            .as_ref()
            .map(|w| (w.mean.unwrap_or(5.0), w.swing.unwrap_or(4.0)))
            .unwrap_or((5.0, 4.0));
        if !cx.errs.is_empty() {
            return Err(cx.errs);
        }
        Ok(SiteSpec {
            file: file.to_path_buf(),
            name: sim
                .name
                .clone()
                .unwrap_or_else(|| "simulated-campus".into()),
            timezone,
            timezone_name,
            start,
            speed,
            seed: sim.seed.unwrap_or(1),
            weather,
            mqtt,
            modbus_host: raw
                .modbus
                .as_ref()
                .and_then(|m| m.host.clone())
                .unwrap_or_else(|| "127.0.0.1".into()),
            profile_dirs,
            devices,
        })
    }
}

/// The `[mqtt]` broker: `mqtt://host:port` (or `tcp://`), port 1883 by default.
fn mqtt_spec(cx: &mut Cx<'_>, m: &RawMqtt) -> MqttSpec {
    let rest = m
        .url
        .strip_prefix("mqtt://")
        .or_else(|| m.url.strip_prefix("tcp://"));
    let (host, port) = match rest.map(|r| r.trim_end_matches('/')) {
        Some(hp) => match hp.rsplit_once(':') {
            Some((h, p)) => match p.parse::<u16>() {
                Ok(p) => (h.to_string(), p),
                Err(_) => {
                    cx.err("mqtt.url", format!("`{}`: bad port `{p}`", m.url));
                    (h.to_string(), 1883)
                }
            },
            None => (hp.to_string(), 1883),
        },
        None => {
            cx.err(
                "mqtt.url",
                format!(
                    "`{}`: use mqtt://host:port (the simulator speaks plain MQTT)",
                    m.url
                ),
            );
            (String::new(), 1883)
        }
    };
    MqttSpec {
        host,
        port,
        client_id: m
            .client_id
            .clone()
            .unwrap_or_else(|| "caretaker-simulator".into()),
    }
}

/// What the devices so far use, for duplicates: device ids and Modbus (port, unit) endpoints, each with the
/// index of the device that has it.
#[derive(Default)]
struct Seen {
    ids: std::collections::HashMap<String, usize>,
    endpoints: std::collections::HashMap<(u16, u8), usize>,
    /// BACnet UDP ports (one device each).
    bacnet_ports: std::collections::HashMap<u16, usize>,
}

/// Validates `devices[i]`; `None` when its model or transport is unusable (the errors are in `cx`).
fn device_spec(
    cx: &mut Cx<'_>,
    seen: &mut Seen,
    i: usize,
    d: &RawDevice,
    has_mqtt: bool,
    default_interval: Duration,
) -> Option<DeviceSpec> {
    let k = |s: &str| format!("devices[{i}].{s}");
    if d.id.is_empty() || d.id.contains(['/', '+', '#', ' ']) {
        cx.err(
            &k("id"),
            format!(
                "device id `{}` must be non-empty, without spaces, `/`, `+` or `#`",
                d.id
            ),
        );
    }
    if let Some(prev) = seen.ids.insert(d.id.clone(), i) {
        cx.err(
            &k("id"),
            format!("device `{}` is declared twice (also devices[{prev}])", d.id),
        );
    }
    let model = word(
        cx,
        &k("model"),
        "model",
        &d.model,
        ModelKind::parse,
        ModelKind::ALL,
    );
    let transport = transport(cx, seen, i, d, has_mqtt);
    let interval = cx.duration(&k("interval"), &d.interval, default_interval);
    if interval.is_zero() {
        cx.err(&k("interval"), "must be above 0");
    }
    let size = d.size.unwrap_or(1.0);
    if !(size > 0.0 && size.is_finite()) {
        cx.err(&k("size"), "must be above 0");
    }
    let mut faults = Vec::new();
    for (j, f) in d.faults.iter().enumerate() {
        if let Some(f) = fault_spec(cx, i, j, f, model, &d.model) {
            faults.push(f);
        }
    }
    Some(DeviceSpec {
        id: d.id.clone(),
        model: model?,
        profile: d.profile.clone(),
        transport: transport?,
        location: d.location.clone(),
        interval,
        size,
        faults,
    })
}

/// How `devices[i]` speaks: an MQTT topic (needs an `[mqtt]` section), a Modbus port and unit, or a BACnet/IP
/// UDP port and device instance of its own.
fn transport(
    cx: &mut Cx<'_>,
    seen: &mut Seen,
    i: usize,
    d: &RawDevice,
    has_mqtt: bool,
) -> Option<Transport> {
    let k = |s: &str| format!("devices[{i}].{s}");
    let given = [d.topic.is_some(), d.modbus.is_some(), d.bacnet.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given > 1 {
        cx.err(
            &k("topic"),
            "a device speaks MQTT (`topic`), Modbus (`modbus`) or BACnet (`bacnet`): give one",
        );
        return None;
    }
    if let Some(b) = &d.bacnet {
        if let Some(prev) = seen.bacnet_ports.insert(b.port, i) {
            cx.err(
                &k("bacnet.port"),
                format!(
                    "port {} is already devices[{prev}]'s: each BACnet device has a UDP port of its own",
                    b.port
                ),
            );
        }
        if b.port == 0 {
            cx.err(&k("bacnet.port"), "port must not be 0");
        }
        if b.device_instance > crate::catalog::bacnet_binding::MAX_INSTANCE {
            cx.err(
                &k("bacnet.device_instance"),
                format!(
                    "{} out of range (0..={})",
                    b.device_instance,
                    crate::catalog::bacnet_binding::MAX_INSTANCE
                ),
            );
        }
        let poll = cx.duration(&k("bacnet.poll"), &b.poll, Duration::from_secs(30));
        return Some(Transport::Bacnet {
            port: b.port,
            device_instance: b.device_instance,
            poll,
        });
    }
    match (&d.topic, &d.modbus) {
        (Some(t), None) => {
            if !has_mqtt {
                cx.err(
                    &k("topic"),
                    "an MQTT device needs an [mqtt] section with the broker url",
                );
            }
            if t.is_empty() || t.contains(['+', '#']) {
                cx.err(
                    &k("topic"),
                    format!("`{t}` must be a concrete topic (no wildcards)"),
                );
            }
            Some(Transport::Mqtt { topic: t.clone() })
        }
        (None, Some(m)) => {
            let unit = m.unit.unwrap_or(1);
            if let Some(prev) = seen.endpoints.insert((m.port, unit), i) {
                cx.err(
                    &k("modbus.unit"),
                    format!(
                        "port {} unit {unit} is already devices[{prev}]: give each device its own unit id",
                        m.port
                    ),
                );
            }
            if m.port == 0 {
                cx.err(&k("modbus.port"), "port must not be 0");
            }
            let poll = cx.duration(&k("modbus.poll"), &m.poll, Duration::from_secs(10));
            Some(Transport::Modbus {
                port: m.port,
                unit,
                poll,
            })
        }
        (Some(_), Some(_)) => None,
        (None, None) => {
            cx.err(&k("id"), format!("device `{}` needs `topic = \"...\"` (MQTT), `modbus = {{ port = ..., unit = ... }}` or `bacnet = {{ port = ..., device_instance = ... }}`", d.id));
            None
        }
    }
}

/// Validates `devices[i].faults[j]` against the device's model (`model_name`: as written, for messages); `None`
/// when its kind is unknown.
fn fault_spec(
    cx: &mut Cx<'_>,
    i: usize,
    j: usize,
    f: &RawFault,
    model: Option<ModelKind>,
    model_name: &str,
) -> Option<FaultSpec> {
    let fk = |s: &str| format!("devices[{i}].faults[{j}].{s}");
    let kind = word(
        cx,
        &fk("kind"),
        "fault",
        &f.kind,
        FaultKind::parse,
        FaultKind::ALL,
    )?;
    if let Some(m) = model {
        if !kind.applies_to(m) {
            cx.err(
                &fk("kind"),
                format!("fault `{}` does not apply to model `{model_name}`", f.kind),
            );
        }
    }
    let start = match (&f.after, &f.at) {
        (Some(a), None) => {
            FaultStart::After(cx.duration(&fk("after"), &Some(a.clone()), Duration::ZERO))
        }
        (None, Some(at)) => match at.parse::<jiff::civil::Time>() {
            Ok(t) => FaultStart::At(t),
            Err(_) => {
                cx.err(&fk("at"), format!("`{at}` is not a local time like 02:30"));
                FaultStart::After(Duration::ZERO)
            }
        },
        (None, None) => FaultStart::After(Duration::ZERO),
        (Some(_), Some(_)) => {
            cx.err(
                &fk("at"),
                "give `after` (since the start) or `at` (time of day), not both",
            );
            FaultStart::After(Duration::ZERO)
        }
    };
    let duration = f
        .duration
        .as_ref()
        .map(|s| cx.duration(&fk("duration"), &Some(s.clone()), Duration::ZERO));
    if kind == FaultKind::FilterClog {
        if f.to.is_none() {
            cx.err(
                &fk("to"),
                "filter_clog needs `to` (the pressure drop in Pa it reaches)",
            );
        }
        if duration.is_none() {
            cx.err(
                &fk("duration"),
                "filter_clog needs `duration` (how long the clogging takes)",
            );
        }
    } else if f.to.is_some() {
        cx.err(&fk("to"), "`to` applies only to filter_clog");
    }
    let period = cx.duration(&fk("period"), &f.period, Duration::from_secs(600));
    if f.period.is_some() && kind != FaultKind::ShortCycle {
        cx.err(&fk("period"), "`period` applies only to short_cycle");
    }
    Some(FaultSpec {
        kind,
        start,
        duration,
        to: f.to,
        period,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The errors of parsing `text` as `site.toml`, and all of them as one text (a line each).
    fn parse_errors(text: &str) -> (Vec<Diagnostic>, String) {
        let errs = SiteSpec::parse(Path::new("site.toml"), text).unwrap_err();
        let all = errs
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        (errs, all)
    }

    #[test]
    fn the_shipped_demo_site_is_valid() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/demo/site.toml");
        let s = SiteSpec::load(&p).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(s.devices.len() >= 10);
        for k in [
            FaultKind::Stuck,
            FaultKind::Leak,
            FaultKind::Offline,
            FaultKind::FilterClog,
            FaultKind::ShortCycle,
        ] {
            assert!(
                s.devices
                    .iter()
                    .any(|d| d.faults.iter().any(|f| f.kind == k)),
                "no {k:?} fault scripted"
            );
        }
    }

    #[test]
    fn errors_name_the_line_and_key_and_all_are_listed() {
        let text = "[simulation]\nspeed = 60\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n\n[[devices]]\nid = \"r1\"\nmodel = \"rooom\"\nprofile = \"generic-room-sensor\"\ntopic = \"a/r1\"\n\n[[devices]]\nid = \"a1\"\nmodel = \"ahu\"\nprofile = \"generic-ahu\"\nmodbus = { port = 15020 }\nfaults = [{ kind = \"filter_clog\", after = \"1h\" }, { kind = \"stuck\" }]\n";
        let (errs, all) = parse_errors(text);
        assert!(
            all.contains(
                "site.toml:9: devices[0].model: unknown model `rooom` (did you mean `room`?)"
            ),
            "{all}"
        );
        assert!(all.contains("devices[1].faults[0].to"), "{all}");
        assert!(all.contains("devices[1].faults[0].duration"), "{all}");
        assert!(
            all.contains("devices[1].faults[1].kind: fault `stuck` does not apply to model `ahu`"),
            "{all}"
        );
        assert_eq!(errs.len(), 4, "{all}");
    }

    #[test]
    fn bacnet_devices_need_a_port_of_their_own_and_one_transport() {
        let text = "[simulation]\nspeed = 60\n\n[[devices]]\nid = \"b1\"\nmodel = \"ahu\"\nprofile = \"generic-bacnet-ahu\"\nbacnet = { port = 47820, device_instance = 3001 }\n\n[[devices]]\nid = \"b2\"\nmodel = \"ahu\"\nprofile = \"generic-bacnet-ahu\"\nbacnet = { port = 47820, device_instance = 5000000 }\n\n[[devices]]\nid = \"b3\"\nmodel = \"ahu\"\nprofile = \"generic-bacnet-ahu\"\nbacnet = { port = 47821, device_instance = 1 }\nmodbus = { port = 15020 }\n";
        let (errs, all) = parse_errors(text);
        assert!(
            all.contains("devices[1].bacnet.port: port 47820 is already devices[0]'s"),
            "{all}"
        );
        assert!(
            all.contains("devices[1].bacnet.device_instance: 5000000 out of range"),
            "{all}"
        );
        assert!(
            all.contains("devices[2].topic: a device speaks MQTT"),
            "{all}"
        );
        assert_eq!(errs.len(), 3, "{all}");
        let ok = "[simulation]\n[[devices]]\nid = \"b1\"\nmodel = \"ahu\"\nprofile = \"p\"\nbacnet = { port = 47820, device_instance = 3001, poll = \"60s\" }\n";
        let s = SiteSpec::parse(Path::new("site.toml"), ok).unwrap();
        assert_eq!(
            s.devices[0].transport,
            Transport::Bacnet {
                port: 47820,
                device_instance: 3001,
                poll: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = "[simulation]\nsped = 60\n";
        let errs = SiteSpec::parse(Path::new("s.toml"), text).unwrap_err();
        assert!(errs[0].to_string().contains("sped"), "{:?}", errs);
        assert_eq!(errs[0].line, Some(2));
    }
}
