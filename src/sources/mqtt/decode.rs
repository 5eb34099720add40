//! Decoding an MQTT message: its topic names the device (through the subscription's template), its payload
//! holds the values the profile's `mqtt:` bindings point at.

use super::config::{MqttLimits, Subscription};
use super::select::JsonPlan;
use crate::catalog::profile::{MqttValue, TimestampFormat};
use crate::catalog::{Catalog, Profile, SharedCatalog};
use crate::reading::Reading;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tracing::{info, warn};

/// Why a message (or one value in it) was not turned into a reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("topic matches no subscription")]
    UnknownTopic,
    #[error("device `{device}`: {message}")]
    Device { device: String, message: String },
    #[error("device `{device}`: malformed payload: {message}")]
    Malformed { device: String, message: String },
    #[error("topic of {len} bytes is longer than [mqtt] max_topic_length = {max}")]
    TopicTooLong { len: usize, max: usize },
    #[error(
        "new device `{device}` not added: {max} devices were already created from MQTT topics ([mqtt] max_devices); messages of new devices are dropped, known devices still flow"
    )]
    TooManyDevices { device: String, max: usize },
    #[error(
        "new device `{device}` not added: its points would pass [mqtt] max_points = {max}; messages of new devices are dropped, known devices still flow"
    )]
    TooManyPoints { device: String, max: usize },
    #[error("device `{device}`: JSON payload nested deeper than [mqtt] max_json_depth = {max}")]
    TooDeep { device: String, max: usize },
    #[error(
        "device `{device}` is known at {known} but this topic places it at {seen}; its readings from here are dropped (a device id must be unique on the site: docs/reliability.md, \"Device identity\")"
    )]
    Conflict {
        device: String,
        known: String,
        seen: String,
    },
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::UnknownTopic => "unknown_topic",
            DecodeError::Device { .. } => "unknown_device",
            DecodeError::Malformed { .. } => "malformed_payload",
            DecodeError::TopicTooLong { .. } => "topic_too_long",
            DecodeError::TooManyDevices { .. } => "too_many_devices",
            DecodeError::TooManyPoints { .. } => "too_many_points",
            DecodeError::TooDeep { .. } => "too_deep",
            DecodeError::Conflict { .. } => "device_conflict",
        }
    }

    /// The key a caller rate-limits its log line by: per limit for the peer limits (a flood of new device ids
    /// logs one line every few seconds, not one per id), per topic otherwise.
    pub fn log_key(&self, topic: &str) -> String {
        match self {
            DecodeError::TopicTooLong { .. }
            | DecodeError::TooManyDevices { .. }
            | DecodeError::TooManyPoints { .. }
            | DecodeError::TooDeep { .. } => self.reason().to_string(),
            DecodeError::Conflict { device, .. } => format!("device_conflict:{device}"),
            _ => format!("{}:{topic}", self.reason()),
        }
    }
}

/// Conflicts kept for reporting; past this many pairs they are counted only.
const MAX_CONFLICT_PAIRS: usize = 1000;
/// Bytes of topic text the topic cache may hold before it starts over.
const TOPIC_CACHE_BYTES: usize = 16 << 20;

/// A problem with one point of an otherwise good message.
#[derive(Debug, Clone, PartialEq)]
pub struct PointProblem {
    pub device: String,
    pub point: String,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone)]
struct KnownTopic {
    first_point: u32,
    device: String,
    profile: Arc<Profile>,
    /// The profile's JSON plan (`None` when it reads no JSON).
    plan: Option<Arc<JsonPlan>>,
}

/// Maps (topic, payload) to readings. Pure apart from registering first-seen devices in the catalog.
pub struct Decoder {
    subscriptions: Vec<Subscription>,
    catalog: SharedCatalog,
    /// Resolved topics: a known device, or a location conflict (both settled for good).
    topics: HashMap<String, Result<Arc<KnownTopic>, DecodeError>>,
    /// JSON plans by profile (compared by pointer: a reload brings new profile values).
    plans: Vec<(Arc<Profile>, Option<Arc<JsonPlan>>)>,
    topic_bytes: usize,
    limits: MqttLimits,
    /// Devices and points this decoder created (declared devices are not counted).
    created_devices: usize,
    created_points: usize,
    /// (device, location seen) pairs already reported.
    conflicts: std::collections::HashSet<(String, String)>,
    health: Option<Arc<crate::telemetry::Health>>,
}

/// A location as `k=v,k=v` for messages.
fn location_text(loc: &BTreeMap<String, String>) -> String {
    if loc.is_empty() {
        return "(no location)".into();
    }
    loc.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Decoder {
    pub fn new(subscriptions: Vec<Subscription>, catalog: SharedCatalog) -> Self {
        Decoder {
            subscriptions,
            catalog,
            topics: HashMap::new(),
            plans: Vec::new(),
            topic_bytes: 0,
            limits: MqttLimits::default(),
            created_devices: 0,
            created_points: 0,
            conflicts: Default::default(),
            health: None,
        }
    }

    /// Applies the `[mqtt]` peer limits (the defaults otherwise).
    pub fn with_limits(mut self, limits: MqttLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Lists device conflicts in `/health`.
    pub fn with_health(mut self, health: Arc<crate::telemetry::Health>) -> Self {
        self.health = Some(health);
        self
    }

    fn remember(&mut self, topic: &str, r: Result<Arc<KnownTopic>, DecodeError>) {
        if self.topics.len() >= 100_000 || self.topic_bytes + topic.len() > TOPIC_CACHE_BYTES {
            // bounded: a topic storm must not grow memory without end
            self.topics.clear();
            self.topic_bytes = 0;
        }
        self.topic_bytes += topic.len();
        self.topics.insert(topic.to_string(), r);
    }

    /// Reports a location conflict once per (device, location seen).
    fn conflict(
        &mut self,
        topic: &str,
        device: &str,
        known: &BTreeMap<String, String>,
        seen: &BTreeMap<String, String>,
    ) -> DecodeError {
        let (known, seen) = (location_text(known), location_text(seen));
        let key = (device.to_string(), seen.clone());
        if !self.conflicts.contains(&key) {
            metrics::counter!("caretaker_device_conflicts_total").increment(1);
            warn!(device, known = %known, seen = %seen, topic,
                "device id seen at two locations: the first location wins and readings from the other are dropped; give each device a unique id");
            if self.conflicts.len() < MAX_CONFLICT_PAIRS {
                self.conflicts.insert(key);
            }
            if let Some(h) = &self.health {
                h.add_conflict(crate::telemetry::DeviceConflict {
                    device: device.to_string(),
                    known: known.clone(),
                    seen: seen.clone(),
                    topic: topic.chars().take(256).collect(),
                });
            }
        }
        DecodeError::Conflict {
            device: device.to_string(),
            known,
            seen,
        }
    }

    fn resolve(&mut self, topic: &str) -> Result<Arc<KnownTopic>, DecodeError> {
        if topic.len() > self.limits.max_topic_length {
            return Err(DecodeError::TopicTooLong {
                len: topic.len(),
                max: self.limits.max_topic_length,
            });
        }
        if let Some(k) = self.topics.get(topic) {
            return k.clone();
        }
        let (sub, caps) = self
            .subscriptions
            .iter()
            .find_map(|s| s.topic.captures(topic).map(|c| (s, c)))
            .ok_or(DecodeError::UnknownTopic)?;
        let mut device = String::new();
        let mut location = BTreeMap::new();
        for (name, value) in caps {
            if name == "device" {
                device = value.to_string();
            } else {
                location.insert(name.to_string(), value.to_string());
            }
        }
        let mut cat = self.catalog.write().unwrap_or_else(|e| e.into_inner());
        // Identity: a device id names one device on the site. Its location is fixed when it becomes known
        // (declared in the site config, or the captures of the first topic it is seen on); a topic whose
        // captures say otherwise is a conflict, reported and dropped, never stored under the wrong location.
        // Captures the known location does not have are ignored (a series key never changes).
        let existing = cat.device_by_id(&device).map(|(_, d)| d.location.clone());
        if let Some(known) = existing {
            let differs = location
                .iter()
                .any(|(k, v)| known.get(k).is_some_and(|kv| kv != v));
            if differs {
                drop(cat);
                let e = self.conflict(topic, &device, &known, &location);
                self.remember(topic, Err(e.clone()));
                return Err(e);
            }
        } else {
            let points = self.catalog_points(&cat, &sub.profile).unwrap_or_default();
            if self.created_devices >= self.limits.max_devices {
                return Err(DecodeError::TooManyDevices {
                    device,
                    max: self.limits.max_devices,
                });
            }
            if self.created_points + points > self.limits.max_points {
                return Err(DecodeError::TooManyPoints {
                    device,
                    max: self.limits.max_points,
                });
            }
        }
        let is_new = cat.device_by_id(&device).is_none();
        let idx = cat
            .add_device(&device, &sub.profile, location, false)
            .map_err(|e| DecodeError::Device {
                device: device.clone(),
                message: e.to_string(),
            })?;
        let d = cat.device(idx);
        if is_new {
            self.created_devices += 1;
            self.created_points += d.profile.points.len();
            info!(device = %device, profile = %sub.profile, topic, "new device seen on MQTT");
        }
        let profile = d.profile.clone();
        let first_point = d.first_point;
        drop(cat);
        let known = Arc::new(KnownTopic {
            first_point,
            device,
            plan: self.plan_for(&profile),
            profile,
        });
        self.remember(topic, Ok(known.clone()));
        Ok(known)
    }

    fn plan_for(&mut self, profile: &Arc<Profile>) -> Option<Arc<JsonPlan>> {
        if let Some((_, plan)) = self.plans.iter().find(|(p, _)| Arc::ptr_eq(p, profile)) {
            return plan.clone();
        }
        let plan = needs_json(profile).then(|| Arc::new(JsonPlan::new(profile)));
        if self.plans.len() >= 1024 {
            self.plans.clear(); // profiles replaced by many reloads
        }
        self.plans.push((profile.clone(), plan.clone()));
        plan
    }

    fn catalog_points(&self, cat: &Catalog, profile: &str) -> Option<usize> {
        cat.profiles.get(profile).map(|p| p.points.len())
    }

    /// Decodes one message. `received_ns` is used when the profile takes no time from the payload.
    pub fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
        received_ns: i64,
        out: &mut Vec<Reading>,
        problems: &mut Vec<PointProblem>,
    ) -> Result<(), DecodeError> {
        let known = self.resolve(topic)?;
        if known.plan.is_some() && json_deeper_than(payload, self.limits.max_json_depth) {
            return Err(DecodeError::TooDeep {
                device: known.device.clone(),
                max: self.limits.max_json_depth,
            });
        }
        decode_with(
            &known.profile,
            known.plan.as_deref(),
            known.first_point,
            &known.device,
            payload,
            received_ns,
            out,
            problems,
        )
    }

    /// Reads the catalog (for callers that need to name points).
    pub fn catalog(&self) -> &SharedCatalog {
        &self.catalog
    }
}

fn malformed(device: &str, message: impl Into<String>) -> DecodeError {
    DecodeError::Malformed {
        device: device.to_string(),
        message: message.into(),
    }
}

/// Whether a profile reads its payloads as JSON.
fn needs_json(profile: &Profile) -> bool {
    profile.timestamp.is_some()
        || profile
            .points
            .iter()
            .any(|p| matches!(p.mqtt.as_ref().map(|m| &m.source), Some(MqttValue::Json(_))))
}

/// Whether arrays and objects nest deeper than `max` (a byte scan before parsing, so a deep payload costs no
/// allocation; brackets inside strings do not count).
pub fn json_deeper_than(payload: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in payload {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Decodes a payload against a profile into readings for points `first_point..`.
pub fn decode_payload(
    profile: &Profile,
    first_point: u32,
    device: &str,
    payload: &[u8],
    received_ns: i64,
    out: &mut Vec<Reading>,
    problems: &mut Vec<PointProblem>,
) -> Result<(), DecodeError> {
    let plan = needs_json(profile).then(|| JsonPlan::new(profile));
    decode_with(
        profile,
        plan.as_ref(),
        first_point,
        device,
        payload,
        received_ns,
        out,
        problems,
    )
}

/// [`decode_payload`] with the profile's JSON plan compiled once (`None` for a profile that reads no JSON).
#[allow(clippy::too_many_arguments)]
fn decode_with(
    profile: &Profile,
    plan: Option<&JsonPlan>,
    first_point: u32,
    device: &str,
    payload: &[u8],
    received_ns: i64,
    out: &mut Vec<Reading>,
    problems: &mut Vec<PointProblem>,
) -> Result<(), DecodeError> {
    let needs_json = plan.is_some();
    let values = match plan {
        Some(plan) => match plan.extract(payload) {
            Ok(v) => v,
            Err(e) => {
                let excerpt: String =
                    String::from_utf8_lossy(&payload[..payload.len().min(80)]).into_owned();
                return Err(malformed(
                    device,
                    format!("not JSON ({e}); payload starts `{excerpt}`"),
                ));
            }
        },
        None => Vec::new(),
    };
    let ts_value = plan
        .and_then(|p| p.timestamp)
        .and_then(|s| values[s].as_ref());
    let at = match (&profile.timestamp, plan) {
        (Some(ts), Some(_)) => match ts_value {
            None | Some(Value::Null) => received_ns,
            Some(v) => parse_time(v, ts.format).ok_or_else(|| {
                malformed(
                    device,
                    format!("timestamp at `{}` is not {:?}: {v}", ts.json, ts.format),
                )
            })?,
        },
        _ => received_ns,
    };
    let raw_text = if needs_json {
        None
    } else {
        Some(String::from_utf8_lossy(payload))
    };
    let start = out.len();
    for (i, p) in profile.points.iter().enumerate() {
        let Some(binding) = &p.mqtt else { continue };
        let raw = match &binding.source {
            MqttValue::Json(_) => {
                match plan.and_then(|plan| plan.point(&values, i)) {
                    None => continue, // not every message carries every point
                    Some(v) => super::select::summed(v, binding)
                        .unwrap_or_else(|| value_of(v, &binding.map)),
                }
            }
            MqttValue::Raw => {
                let t = raw_text.as_deref().unwrap_or_default().trim();
                text_value(t, &binding.map).ok_or_else(|| {
                    format!(
                        "`{}` is not a number",
                        t.chars().take(40).collect::<String>()
                    )
                })
            }
        };
        let raw = match raw {
            Ok(v) => v,
            Err(message) => {
                problems.push(PointProblem {
                    device: device.into(),
                    point: p.name.clone(),
                    reason: "bad_value",
                    message,
                });
                continue;
            }
        };
        match p.convert(raw) {
            Ok(v) => out.push(Reading::good(
                crate::catalog::PointId(first_point + i as u32),
                v,
                at,
            )),
            Err(v) => problems.push(PointProblem {
                device: device.into(),
                point: p.name.clone(),
                reason: "out_of_range",
                message: p.rejection(v),
            }),
        }
    }
    if out.len() == start && problems.is_empty() && !profile.mqtt_ignore_unmatched {
        return Err(malformed(
            device,
            "no point of the profile found in the payload",
        ));
    }
    Ok(())
}

fn value_of(v: &Value, map: &BTreeMap<String, f64>) -> Result<f64, String> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("{n} is not representable")),
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => text_value(s, map).ok_or_else(|| {
            format!(
                "`{}` is not a number",
                s.chars().take(40).collect::<String>()
            )
        }),
        other => Err(format!("expected a number, found {}", kind_of(other))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        _ => "a value",
    }
}

/// A number from text: a mapped state (`ON` → 1), a number, or a boolean word.
fn text_value(t: &str, map: &BTreeMap<String, f64>) -> Option<f64> {
    if let Some(v) = map.get(t) {
        return Some(*v);
    }
    if let Some((_, v)) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(t)) {
        return Some(*v);
    }
    if let Ok(v) = t.parse::<f64>() {
        return Some(v);
    }
    match t.to_ascii_lowercase().as_str() {
        "true" | "on" => Some(1.0),
        "false" | "off" => Some(0.0),
        _ => None,
    }
}

fn parse_time(v: &Value, format: TimestampFormat) -> Option<i64> {
    let scale: i64 = match format {
        TimestampFormat::EpochS => 1_000_000_000,
        TimestampFormat::EpochMs => 1_000_000,
        TimestampFormat::EpochUs => 1_000,
        TimestampFormat::EpochNs => 1,
        TimestampFormat::Rfc3339 => {
            let Value::String(s) = v else { return None };
            return s
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|t| t.as_nanosecond() as i64);
        }
    };
    // Integers stay integers: 1700000000123 ms times 1e6 is not exact in f64.
    let int = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let ns = match int {
        Some(i) => i.checked_mul(scale)?,
        None => {
            let f = match v {
                Value::Number(n) => n.as_f64()?,
                Value::String(s) => s.trim().parse::<f64>().ok()?,
                _ => return None,
            };
            // Fractional epoch times (Shelly's `"ts":1698999993.71` seconds) are rounded to the microsecond:
            // an f64 cannot hold nanoseconds since 1970 exactly, and 1698999993.71 s must be ...993_710_000_000 ns.
            let (f, per) = if scale >= 1_000 {
                ((f * (scale / 1_000) as f64).round(), 1_000)
            } else {
                (f * scale as f64, 1)
            };
            if !f.is_finite() || f.abs() >= 9.2e18 / per as f64 {
                return None;
            }
            (f as i64).checked_mul(per)?
        }
    };
    (ns > 0).then_some(ns)
}

/// Decodes a message's readings for tests and benchmarks without a broker.
pub fn decode_for(
    catalog: &Catalog,
    device: &str,
    payload: &[u8],
    received_ns: i64,
) -> Result<(Vec<Reading>, Vec<PointProblem>), DecodeError> {
    let (_, d) = catalog
        .device_by_id(device)
        .ok_or_else(|| DecodeError::Device {
            device: device.into(),
            message: "not in the catalog".into(),
        })?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    decode_payload(
        &d.profile,
        d.first_point,
        device,
        payload,
        received_ns,
        &mut out,
        &mut problems,
    )?;
    Ok((out, problems))
}

#[cfg(test)]
mod tests {
    use super::super::config::TopicTemplate;
    use super::*;
    use crate::catalog::profile::parse_profile;
    use std::path::Path;

    fn catalog() -> SharedCatalog {
        let text = "schema: 1\nname: room\ncategory: environment\ntimestamp: { json: /ts, format: epoch_ms }\npoints:\n  - { name: temperature, unit: degC, kind: gauge, mqtt: { json: /temperature } }\n  - { name: humidity, unit: percent, kind: gauge, mqtt: { json: /humidity }, valid_range: [0, 100] }\n  - { name: power, unit: bool, kind: gauge, mqtt: { json: /POWER, map: { \"ON\": 1, \"OFF\": 0 } } }\n";
        let plug = "schema: 1\nname: plain\ncategory: other\npoints:\n  - { name: value, unit: W, kind: gauge, mqtt: { raw: true } }\n";
        let mut profiles = BTreeMap::new();
        profiles.insert(
            "room".into(),
            Arc::new(parse_profile(Path::new("room.yaml"), text).unwrap()),
        );
        profiles.insert(
            "plain".into(),
            Arc::new(parse_profile(Path::new("plain.yaml"), plug).unwrap()),
        );
        Catalog::new("s", profiles).shared()
    }

    fn decoder() -> Decoder {
        let subs = vec![
            Subscription {
                topic: TopicTemplate::parse("campus/{building}/{device}/telemetry").unwrap(),
                profile: "room".into(),
                index: 0,
            },
            Subscription {
                topic: TopicTemplate::parse("raw/{device}").unwrap(),
                profile: "plain".into(),
                index: 1,
            },
        ];
        Decoder::new(subs, catalog())
    }

    #[test]
    fn json_payload_with_timestamp_and_map() {
        let mut d = decoder();
        let (mut out, mut pr) = (vec![], vec![]);
        d.decode(
            "campus/b1/r1/telemetry",
            br#"{"ts": 1700000000123, "temperature": 21.5, "humidity": "45", "POWER": "ON"}"#,
            7,
            &mut out,
            &mut pr,
        )
        .unwrap();
        assert!(pr.is_empty(), "{pr:?}");
        assert_eq!(
            out.iter().map(|r| r.value).collect::<Vec<_>>(),
            vec![21.5, 45.0, 1.0]
        );
        assert!(out.iter().all(|r| r.at == 1_700_000_000_123_000_000));
        let cat = d.catalog().read().unwrap();
        let (_, dev) = cat.device_by_id("r1").unwrap();
        assert_eq!(dev.location.get("building").map(String::as_str), Some("b1"));
        assert!(dev.series.contains("building=b1"));
    }

    #[test]
    fn partial_problems_keep_the_rest() {
        let mut d = decoder();
        let (mut out, mut pr) = (vec![], vec![]);
        d.decode(
            "campus/b1/r1/telemetry",
            br#"{"temperature": 20, "humidity": 140}"#,
            7,
            &mut out,
            &mut pr,
        )
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].at, 7, "receive time when the payload has no ts");
        assert_eq!(pr.len(), 1);
        assert_eq!(pr[0].reason, "out_of_range");
        assert_eq!(pr[0].point, "humidity");
    }

    #[test]
    fn malformed_and_unknown_are_errors() {
        let mut d = decoder();
        let (mut out, mut pr) = (vec![], vec![]);
        let e = d
            .decode("campus/b1/r1/telemetry", b"{not json", 7, &mut out, &mut pr)
            .unwrap_err();
        assert_eq!(e.reason(), "malformed_payload");
        assert!(e.to_string().contains("r1"), "{e}");
        let e = d
            .decode("other/topic", b"1", 7, &mut out, &mut pr)
            .unwrap_err();
        assert_eq!(e, DecodeError::UnknownTopic);
        let e = d
            .decode(
                "campus/b1/r1/telemetry",
                br#"{"x": 1}"#,
                7,
                &mut out,
                &mut pr,
            )
            .unwrap_err();
        assert_eq!(e.reason(), "malformed_payload");
        let e = d
            .decode(
                "campus/b1/r1/telemetry",
                br#"{"ts": "yesterday", "temperature": 1}"#,
                7,
                &mut out,
                &mut pr,
            )
            .unwrap_err();
        assert!(e.to_string().contains("timestamp"), "{e}");
    }

    #[test]
    fn raw_payloads() {
        let mut d = decoder();
        let (mut out, mut pr) = (vec![], vec![]);
        d.decode("raw/p1", b" 230.5 ", 9, &mut out, &mut pr)
            .unwrap();
        assert_eq!(out[0].value, 230.5);
        out.clear();
        d.decode("raw/p1", b"banana", 9, &mut out, &mut pr).unwrap();
        assert!(out.is_empty());
        assert_eq!(pr[0].reason, "bad_value");
    }

    fn limited(limits: MqttLimits) -> Decoder {
        let subs = vec![Subscription {
            topic: TopicTemplate::parse("campus/{building}/{floor}/{device}/telemetry").unwrap(),
            profile: "room".into(),
            index: 0,
        }];
        Decoder::new(subs, catalog()).with_limits(limits)
    }

    fn one(d: &mut Decoder, topic: &str, payload: &str) -> Result<usize, DecodeError> {
        let (mut out, mut pr) = (vec![], vec![]);
        d.decode(topic, payload.as_bytes(), 7, &mut out, &mut pr)
            .map(|()| out.len())
    }

    /// Issue 13: a flood of new device ids stops at max_devices (and max_points); known devices still flow.
    #[test]
    fn new_devices_stop_at_the_limits_and_known_ones_flow() {
        let mut d = limited(MqttLimits {
            max_devices: 3,
            ..MqttLimits::default()
        });
        let t = |i: usize| format!("campus/b/1/dev-{i}/telemetry");
        for i in 0..3 {
            assert_eq!(one(&mut d, &t(i), r#"{"temperature": 1}"#), Ok(1));
        }
        for i in 3..100 {
            let e = one(&mut d, &t(i), r#"{"temperature": 1}"#).unwrap_err();
            assert_eq!(e.reason(), "too_many_devices");
            assert_eq!(
                e.log_key(&t(i)),
                "too_many_devices",
                "one log key for the flood"
            );
            assert!(e.to_string().contains("max_devices"), "{e}");
        }
        assert_eq!(one(&mut d, &t(1), r#"{"temperature": 2}"#), Ok(1));
        assert_eq!(d.catalog().read().unwrap().device_count(), 3);
        // The room profile has 3 points: a budget of 7 points takes two devices.
        let mut d = limited(MqttLimits {
            max_points: 7,
            ..MqttLimits::default()
        });
        assert!(one(&mut d, &t(0), r#"{"temperature": 1}"#).is_ok());
        assert!(one(&mut d, &t(1), r#"{"temperature": 1}"#).is_ok());
        let e = one(&mut d, &t(2), r#"{"temperature": 1}"#).unwrap_err();
        assert_eq!(e.reason(), "too_many_points");
    }

    #[test]
    fn deep_json_and_long_topics_are_refused_by_their_limits() {
        let mut d = limited(MqttLimits {
            max_json_depth: 4,
            max_topic_length: 64,
            ..MqttLimits::default()
        });
        let t = "campus/b/1/r1/telemetry";
        assert!(one(&mut d, t, r#"{"temperature": 1, "x": [[[1]]]}"#).is_ok());
        let deep = format!(
            r#"{{"temperature": {}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(one(&mut d, t, &deep).unwrap_err().reason(), "too_deep");
        // Brackets inside strings do not count.
        let text = format!(r#"{{"temperature": 1, "s": "{}\""}}"#, "[".repeat(50));
        assert!(one(&mut d, t, &text).is_ok(), "{text}");
        let long = format!("campus/b/1/{}/telemetry", "x".repeat(100));
        assert_eq!(
            one(&mut d, &long, r#"{"temperature": 1}"#)
                .unwrap_err()
                .reason(),
            "topic_too_long"
        );
        // serde_json's own recursion limit (128) is a clean error too, whatever the configured depth.
        let mut d = limited(MqttLimits {
            max_json_depth: 128,
            ..MqttLimits::default()
        });
        let deeper = format!(
            r#"{{"temperature": {}1{}}}"#,
            "[".repeat(127),
            "]".repeat(127)
        );
        assert_eq!(
            one(&mut d, t, &deeper).unwrap_err().reason(),
            "malformed_payload"
        );
        assert!(json_deeper_than(b"[[[]]]", 2));
        assert!(!json_deeper_than(b"[[[]]]", 3));
        assert!(!json_deeper_than(br#"["\"[[[[["]"#, 1));
    }

    /// Issue 13 item 7: one id at two locations is a conflict, reported once per pair, never mis-tagged.
    #[test]
    fn one_id_at_two_locations_is_a_conflict() {
        let health = crate::telemetry::Health::new();
        let mut d = limited(MqttLimits::default()).with_health(health.clone());
        let a = "campus/bldA/1/room-1/telemetry";
        let b = "campus/bldB/7/room-1/telemetry";
        assert_eq!(one(&mut d, a, r#"{"temperature": 1}"#), Ok(1));
        for _ in 0..3 {
            let e = one(&mut d, b, r#"{"temperature": 1}"#).unwrap_err();
            assert_eq!(e.reason(), "device_conflict");
            assert!(e.to_string().contains("building=bldA,floor=1"), "{e}");
            assert!(e.to_string().contains("building=bldB,floor=7"), "{e}");
        }
        assert_eq!(one(&mut d, a, r#"{"temperature": 2}"#), Ok(1));
        let conflicts = health.conflicts.lock().unwrap().clone();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].device, "room-1");
        assert_eq!(conflicts[0].topic, b);
        let cat = d.catalog().read().unwrap();
        assert_eq!(cat.device_count(), 1);
        assert!(
            cat.device_by_id("room-1")
                .unwrap()
                .1
                .series
                .contains("building=bldA")
        );
    }

    #[test]
    fn a_device_keeps_one_profile() {
        let mut d = decoder();
        let (mut out, mut pr) = (vec![], vec![]);
        d.decode("raw/x1", b"1", 9, &mut out, &mut pr).unwrap();
        let e = d
            .decode(
                "campus/b/x1/telemetry",
                br#"{"temperature": 1}"#,
                9,
                &mut out,
                &mut pr,
            )
            .unwrap_err();
        assert_eq!(e.reason(), "unknown_device");
    }
}
