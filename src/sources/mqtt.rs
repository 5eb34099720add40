//! The MQTT source: subscribes to the site's topic templates, maps each message through its device profile
//! into readings, and acknowledges the message to the broker only after the pipeline queued its readings.
//!
//! Delivery: QoS 1 with a persistent session (clean_session = false, a stable client id) and manual acks, so a
//! message is redelivered by the broker if Caretaker dies or disconnects before queueing it. The event loop is
//! owned by one task that never blocks on slow work; it reconnects with capped, jittered backoff (rumqttc
//! itself retries at once, in a spin) and resubscribes on every ConnAck.
//!
//! Bad input never stops the flow: a malformed payload, an unknown topic or an out-of-range value is counted in
//! `caretaker_readings_dropped_total{stage="mqtt",reason}`, logged (rate-limited) with the topic, device and
//! point, and acknowledged so the broker does not redeliver it forever.

use crate::catalog::profile::{MqttValue, TimestampFormat};
use crate::catalog::{Catalog, Profile, SharedCatalog};
use crate::config::{MqttConfig, Subscription};
use crate::pipeline::{Ack, Batch};
use crate::reading::Reading;
use crate::telemetry::Health;
use crate::util::{Backoff, RateLimiter};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter, Transport};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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
            MqttValue::Json(ptr) => match doc.as_ref().and_then(|d| d.pointer(ptr)) {
                None | Some(Value::Null) => continue, // not every message carries every point
                Some(v) => value_of(v, &binding.map),
            },
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
                message: match p.valid_range {
                    Some((lo, hi)) => format!("value {v} outside valid_range [{lo}, {hi}]"),
                    None => format!("value {v} is not finite"),
                },
            }),
        }
    }
    if out.len() == start && problems.is_empty() {
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
            } * scale as f64;
            if !f.is_finite() || f.abs() >= 9.2e18 {
                return None;
            }
            f as i64
        }
    };
    (ns > 0).then_some(ns)
}

/// Builds the rumqttc options from the config.
fn options(cfg: &MqttConfig) -> anyhow::Result<MqttOptions> {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive);
    o.set_clean_session(false);
    o.set_manual_acks(true);
    o.set_max_packet_size(cfg.max_packet_size, cfg.max_packet_size);
    o.set_request_channel_capacity(4096);
    if let (Some(u), p) = (&cfg.username, &cfg.password) {
        o.set_credentials(u.clone(), p.clone().unwrap_or_default());
    }
    if let Some(tls) = &cfg.tls {
        let c = crate::tls::client_config(
            tls.ca_file.as_deref(),
            tls.cert_file.as_deref(),
            tls.key_file.as_deref(),
        )?;
        o.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(c),
        ));
    }
    Ok(o)
}

/// The running source.
pub struct MqttSource {
    pub config: MqttConfig,
    pub catalog: SharedCatalog,
    pub tx: mpsc::Sender<Batch>,
    pub health: Arc<Health>,
}

impl MqttSource {
    /// Runs until `stop`. After `stop` it keeps the connection up to `grace` so acknowledgements of messages
    /// already in the pipeline reach the broker, but accepts no new message (the broker keeps those for the next
    /// session).
    pub async fn run(
        self,
        stop: CancellationToken,
        grace: CancellationToken,
    ) -> anyhow::Result<()> {
        let opts = options(&self.config)?;
        let (client, mut eventloop) = AsyncClient::new(opts, 4096);
        self.health.mqtt_configured.store(true, Ordering::Relaxed);
        let filters: Vec<SubscribeFilter> = {
            let mut seen = std::collections::BTreeSet::new();
            self.config
                .subscriptions
                .iter()
                .map(|s| s.topic.filter())
                .filter(|f| seen.insert(f.clone()))
                .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce))
                .collect()
        };
        let mut decoder = Decoder::new(self.config.subscriptions.clone(), self.catalog.clone());
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            self.config.reconnect_max_backoff,
        );
        let limiter = RateLimiter::new(Duration::from_secs(10));
        let endpoint = format!("{}:{}", self.config.host, self.config.port);
        let mut accepting = true;
        let mut readings = Vec::new();
        let mut problems = Vec::new();
        loop {
            let event = tokio::select! {
                e = eventloop.poll() => e,
                _ = stop.cancelled(), if accepting => {
                    accepting = false;
                    debug!("MQTT source stopping: no new messages accepted");
                    continue;
                }
                _ = grace.cancelled() => break,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    info!(broker = %endpoint, session_present = ack.session_present, "connected to MQTT broker");
                    self.health.mqtt_connected.store(true, Ordering::Relaxed);
                    backoff.reset();
                    // Resubscribe on every ConnAck: a broker that lost its state (restart without persistence)
                    // would otherwise leave us connected and deaf.
                    if let Err(e) = client.try_subscribe_many(filters.clone()) {
                        warn!(error = %e, "cannot queue MQTT subscribe");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    for (code, f) in s.return_codes.iter().zip(&filters) {
                        if matches!(code, rumqttc::SubscribeReasonCode::Failure) {
                            warn!(filter = %f.path, "broker refused the subscription (check its ACL)");
                            metrics::counter!("caretaker_errors_total", "stage" => "mqtt")
                                .increment(1);
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if !accepting {
                        continue; // not acked: the broker redelivers it to the next session
                    }
                    let now = crate::util::now_ns();
                    self.health
                        .mqtt_last_message_ms
                        .store(now / 1_000_000, Ordering::Relaxed);
                    readings.clear();
                    problems.clear();
                    let result =
                        decoder.decode(&p.topic, &p.payload, now, &mut readings, &mut problems);
                    for pr in problems.drain(..) {
                        metrics::counter!("caretaker_readings_dropped_total", "stage" => "mqtt", "reason" => pr.reason).increment(1);
                        if let Some(suppressed) =
                            limiter.check(&format!("{}/{}/{}", pr.device, pr.point, pr.reason))
                        {
                            warn!(topic = %p.topic, device = %pr.device, point = %pr.point, reason = pr.reason, suppressed, "{}", pr.message);
                        }
                    }
                    if let Err(e) = result {
                        metrics::counter!("caretaker_readings_dropped_total", "stage" => "mqtt", "reason" => e.reason()).increment(1);
                        metrics::counter!("caretaker_errors_total", "stage" => "mqtt").increment(1);
                        if let Some(suppressed) =
                            limiter.check(&format!("{}:{}", e.reason(), p.topic))
                        {
                            warn!(topic = %p.topic, reason = e.reason(), suppressed, "MQTT message dropped: {e}");
                        }
                        if let Err(e) = client.try_ack(&p) {
                            debug!(error = %e, "ack not queued");
                        }
                        continue;
                    }
                    metrics::counter!("caretaker_readings_received_total", "source" => "mqtt")
                        .increment(readings.len() as u64);
                    let c = client.clone();
                    let batch = Batch {
                        readings: std::mem::take(&mut readings),
                        ack: Some(Ack::new(move || {
                            if c.try_ack(&p).is_err() {
                                // The request channel is full; ack from a task rather than lose it.
                                let c = c.clone();
                                tokio::spawn(async move {
                                    let _ = c.ack(&p).await;
                                });
                            }
                        })),
                    };
                    if self.tx.send(batch).await.is_err() {
                        break; // pipeline gone: shutting down
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let was_connected = self.health.mqtt_connected.swap(false, Ordering::Relaxed);
                    metrics::counter!("caretaker_errors_total", "stage" => "mqtt").increment(1);
                    let wait = backoff.next_delay();
                    if was_connected || limiter.check("mqtt-connection").is_some() {
                        warn!(broker = %endpoint, error = %e, retry_in = ?wait, "MQTT connection lost; reconnecting");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = grace.cancelled() => break,
                    }
                }
            }
        }
        self.health.mqtt_connected.store(false, Ordering::Relaxed);
        let _ = client.try_disconnect();
        // Give the disconnect a moment to go out.
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
        Ok(())
    }
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
    use super::*;
    use crate::catalog::profile::parse_profile;
    use crate::config::TopicTemplate;
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
