//! Decoding an MQTT message: its topic names the device (through the subscription's template), its payload
//! holds the values the profile's `mqtt:` bindings point at.

use super::config::Subscription;
use crate::catalog::profile::{MqttValue, TimestampFormat};
use crate::catalog::{Catalog, Profile, SharedCatalog};
use crate::reading::Reading;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tracing::info;

/// Why a message (or one value in it) was not turned into a reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("topic matches no subscription")]
    UnknownTopic,
    #[error("device `{device}`: {message}")]
    Device { device: String, message: String },
    #[error("device `{device}`: malformed payload: {message}")]
    Malformed { device: String, message: String },
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::UnknownTopic => "unknown_topic",
            DecodeError::Device { .. } => "unknown_device",
            DecodeError::Malformed { .. } => "malformed_payload",
        }
    }
}

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
}

/// Maps (topic, payload) to readings. Pure apart from registering first-seen devices in the catalog.
pub struct Decoder {
    subscriptions: Vec<Subscription>,
    catalog: SharedCatalog,
    topics: HashMap<String, KnownTopic>,
}

impl Decoder {
    pub fn new(subscriptions: Vec<Subscription>, catalog: SharedCatalog) -> Self {
        Decoder {
            subscriptions,
            catalog,
            topics: HashMap::new(),
        }
    }

    fn resolve(&mut self, topic: &str) -> Result<KnownTopic, DecodeError> {
        if let Some(k) = self.topics.get(topic) {
            return Ok(k.clone());
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
        // A declared device keeps its declared location; captures fill in what it does not say.
        if let Some((_, d)) = cat.device_by_id(&device) {
            for (k, v) in &d.location {
                location.insert(k.clone(), v.clone());
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
            info!(device = %device, profile = %sub.profile, topic, "new device seen on MQTT");
        }
        let known = KnownTopic {
            first_point: d.first_point,
            device,
            profile: d.profile.clone(),
        };
        if self.topics.len() > 100_000 {
            self.topics.clear(); // bounded: a topic storm must not grow memory without end
        }
        self.topics.insert(topic.to_string(), known.clone());
        Ok(known)
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
        decode_payload(
            &known.profile,
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
    let needs_json = profile.timestamp.is_some()
        || profile
            .points
            .iter()
            .any(|p| matches!(p.mqtt.as_ref().map(|m| &m.source), Some(MqttValue::Json(_))));
    let doc: Option<Value> = if needs_json {
        match serde_json::from_slice(payload) {
            Ok(v) => Some(v),
            Err(e) => {
                let excerpt: String =
                    String::from_utf8_lossy(&payload[..payload.len().min(80)]).into_owned();
                return Err(malformed(
                    device,
                    format!("not JSON ({e}); payload starts `{excerpt}`"),
                ));
            }
        }
    } else {
        None
    };
    let at = match (&profile.timestamp, &doc) {
        (Some(ts), Some(doc)) => match doc.pointer(&ts.json) {
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
                match doc.as_ref().and_then(|d| super::select::lookup(d, binding)) {
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
