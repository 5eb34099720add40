//! Sparkplug B (Eclipse Tahu, `spBv1.0`) on the MQTT source's connection: `[[mqtt.sparkplug]] group, profile`.
//!
//! Topics are `spBv1.0/<group>/<type>/<edge node>[/<device>]`. Device ids: a Sparkplug device becomes the
//! Caretaker device `<edge node>/<device>`; the edge node's own metrics (NBIRTH/NDATA) the device `<edge node>`
//! (created only when one of its metrics maps to a point). Metric names map to the group's profile points by
//! point name, or by an `mqtt: { json: "/<metric name>" }` binding; metrics no point maps are skipped (counted).
//!
//! - NBIRTH/DBIRTH register each metric's name, alias and datatype; NDATA/DDATA may carry aliases only.
//! - An alias nobody registered, data from a node never seen born, or a sequence gap (`seq` is 0..=255 per node,
//!   one step per message) asks the node for a rebirth: NCMD `Node Control/Rebirth` = true (at most one request
//!   every few seconds per node).
//! - DBIRTH sets the device's `online` point to 1 (when the profile has one: declare
//!   `- { name: online, unit: bool, kind: gauge, mqtt: { json: "/online" } }`), DDEATH to 0, and NDEATH (the
//!   node's MQTT will) to 0 for every device of that node: the same `online` point and offline rules as Modbus.
//!
//! The payload is decoded by a small hand-written protobuf reader (this file) rather than `prost`: there is no
//! `protoc` on these machines, the two messages we need (Payload, Metric) use only 12 scalar fields, and the
//! reader skips everything else (datasets, templates, properties) without allocating for it.

use super::config::SparkplugGroup;
use super::decode::{DecodeError, PointProblem};
use crate::catalog::SharedCatalog;
use crate::catalog::profile::MqttValue;
use crate::reading::Reading;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use tracing::info;

/// Topic namespace of Sparkplug B.
pub const NAMESPACE: &str = "spBv1.0";
/// Least time between two rebirth requests to one node.
const REBIRTH_EVERY: Duration = Duration::from_secs(5);
/// Most aliases kept per node (a peer cannot grow memory without end).
const MAX_ALIASES: usize = 100_000;

/// Sparkplug datatypes (Tahu `DataType`).
pub mod datatype {
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const BOOLEAN: u32 = 11;
    pub const STRING: u32 = 12;
    pub const TEXT: u32 = 14;
}

/// One decoded metric (only the fields Caretaker uses).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metric {
    pub name: Option<String>,
    pub alias: Option<u64>,
    pub timestamp: Option<u64>,
    pub datatype: Option<u32>,
    pub is_null: bool,
    pub int_value: Option<u32>,
    pub long_value: Option<u64>,
    pub float_value: Option<f32>,
    pub double_value: Option<f64>,
    pub boolean_value: Option<bool>,
    pub string_value: Option<String>,
}

/// A decoded Payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload {
    pub timestamp: Option<u64>,
    pub seq: Option<u64>,
    pub metrics: Vec<Metric>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err("varint overflows 64 bits".into());
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("truncated field")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// Next (field number, wire type), or None at the end.
    fn key(&mut self) -> Result<Option<(u64, u8)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let k = self.varint()?;
        Ok(Some((k >> 3, (k & 7) as u8)))
    }
    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => {
                let n = self.varint()?;
                self.take(usize::try_from(n).map_err(|_| "length too large")?)
                    .map(|_| ())
            }
            5 => self.take(4).map(|_| ()),
            w => Err(format!("unsupported protobuf wire type {w}")),
        }
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "length too large")?)
    }
}

fn expect(wire: u8, want: u8, field: &str) -> Result<(), String> {
    if wire == want {
        Ok(())
    } else {
        Err(format!(
            "field {field} has wire type {wire}, expected {want}"
        ))
    }
}

fn decode_metric(buf: &[u8]) -> Result<Metric, String> {
    let mut r = Reader { buf, pos: 0 };
    let mut m = Metric::default();
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => {
                expect(wire, 2, "Metric.name")?;
                m.name = Some(String::from_utf8_lossy(r.bytes()?).into_owned());
            }
            2 => {
                expect(wire, 0, "Metric.alias")?;
                m.alias = Some(r.varint()?);
            }
            3 => {
                expect(wire, 0, "Metric.timestamp")?;
                m.timestamp = Some(r.varint()?);
            }
            4 => {
                expect(wire, 0, "Metric.datatype")?;
                m.datatype = Some(r.varint()? as u32);
            }
            7 => {
                expect(wire, 0, "Metric.is_null")?;
                m.is_null = r.varint()? != 0;
            }
            10 => {
                expect(wire, 0, "Metric.int_value")?;
                m.int_value = Some(r.varint()? as u32);
            }
            11 => {
                expect(wire, 0, "Metric.long_value")?;
                m.long_value = Some(r.varint()?);
            }
            12 => {
                expect(wire, 5, "Metric.float_value")?;
                let b = r.take(4)?;
                m.float_value = Some(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            }
            13 => {
                expect(wire, 1, "Metric.double_value")?;
                let b = r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                m.double_value = Some(f64::from_le_bytes(a));
            }
            14 => {
                expect(wire, 0, "Metric.boolean_value")?;
                m.boolean_value = Some(r.varint()? != 0);
            }
            15 => {
                expect(wire, 2, "Metric.string_value")?;
                m.string_value = Some(String::from_utf8_lossy(r.bytes()?).into_owned());
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(m)
}

/// Decodes a Sparkplug B Payload (Tahu `sparkplug_b.proto`).
pub fn decode_payload(buf: &[u8]) -> Result<Payload, String> {
    let mut r = Reader { buf, pos: 0 };
    let mut p = Payload::default();
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => {
                expect(wire, 0, "Payload.timestamp")?;
                p.timestamp = Some(r.varint()?);
            }
            2 => {
                expect(wire, 2, "Payload.metrics")?;
                p.metrics.push(decode_metric(r.bytes()?)?);
            }
            3 => {
                expect(wire, 0, "Payload.seq")?;
                p.seq = Some(r.varint()?);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(p)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The NCMD payload asking a node to publish its BIRTH certificates again.
pub fn rebirth_payload(now_ms: u64) -> Vec<u8> {
    let name = b"Node Control/Rebirth";
    let mut metric = Vec::new();
    metric.push(0x0a); // name
    put_varint(&mut metric, name.len() as u64);
    metric.extend_from_slice(name);
    metric.push(0x18); // timestamp
    put_varint(&mut metric, now_ms);
    metric.push(0x20); // datatype
    put_varint(&mut metric, u64::from(datatype::BOOLEAN));
    metric.extend_from_slice(&[0x70, 0x01]); // boolean_value = true
    let mut out = Vec::new();
    out.push(0x08); // timestamp
    put_varint(&mut out, now_ms);
    out.push(0x12); // metrics
    put_varint(&mut out, metric.len() as u64);
    out.extend_from_slice(&metric);
    out
}

/// The numeric value of a metric, by its (registered) datatype; None for null and non-numeric strings.
fn value(m: &Metric, dt: u32) -> Option<Result<f64, String>> {
    if m.is_null {
        return None;
    }
    if let Some(v) = m.int_value {
        return Some(Ok(match dt {
            datatype::INT8 => f64::from(v as u8 as i8),
            datatype::INT16 => f64::from(v as u16 as i16),
            datatype::INT32 => f64::from(v as i32),
            _ => f64::from(v),
        }));
    }
    if let Some(v) = m.long_value {
        return Some(Ok(match dt {
            datatype::INT8 => f64::from(v as u8 as i8),
            datatype::INT16 => f64::from(v as u16 as i16),
            datatype::INT32 => f64::from(v as u32 as i32),
            datatype::INT64 => v as i64 as f64,
            _ => v as f64,
        }));
    }
    if let Some(v) = m.float_value {
        return Some(Ok(f64::from(v)));
    }
    if let Some(v) = m.double_value {
        return Some(Ok(v));
    }
    if let Some(v) = m.boolean_value {
        return Some(Ok(if v { 1.0 } else { 0.0 }));
    }
    if let Some(s) = &m.string_value {
        return Some(s.trim().parse::<f64>().map_err(|_| {
            format!(
                "string `{}` is not a number",
                s.chars().take(40).collect::<String>()
            )
        }));
    }
    None
}

#[derive(Default)]
struct NodeState {
    born: bool,
    seq: Option<u8>,
    /// alias -> (metric name, datatype), across the node and its devices (aliases are unique per node).
    aliases: HashMap<u64, (String, u32)>,
    /// name -> datatype as registered by a BIRTH, per device key ("" for the node itself).
    datatypes: HashMap<(String, String), u32>,
    /// Caretaker device ids of this node that a BIRTH put online.
    devices: BTreeSet<String>,
    rebirth_sent: Option<Instant>,
}

/// A rebirth request to publish (QoS 0, not retained).
#[derive(Debug, Clone, PartialEq)]
pub struct Rebirth {
    pub topic: String,
    pub payload: Vec<u8>,
    pub reason: String,
}

/// Sparkplug state of the source: nodes seen, their aliases and sequence numbers.
pub struct Sparkplug {
    groups: Vec<SparkplugGroup>,
    catalog: SharedCatalog,
    nodes: HashMap<(String, String), NodeState>,
}

impl Sparkplug {
    pub fn new(groups: Vec<SparkplugGroup>, catalog: SharedCatalog) -> Sparkplug {
        Sparkplug {
            groups,
            catalog,
            nodes: HashMap::new(),
        }
    }

    /// Whether `topic` is one of our Sparkplug groups' topics.
    pub fn handles(&self, topic: &str) -> bool {
        let Some(rest) = topic
            .strip_prefix(NAMESPACE)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return false;
        };
        let group = rest.split('/').next().unwrap_or_default();
        self.groups.iter().any(|g| g.group == group)
    }

    /// Decodes one Sparkplug message into readings; may return a rebirth request to publish.
    pub fn handle(
        &mut self,
        topic: &str,
        payload: &[u8],
        received_ns: i64,
        out: &mut Vec<Reading>,
        problems: &mut Vec<PointProblem>,
    ) -> Result<Option<Rebirth>, DecodeError> {
        let levels: Vec<&str> = topic.split('/').collect();
        let bad_topic = || DecodeError::Malformed {
            device: topic.chars().take(200).collect(),
            message: "not a Sparkplug B topic (spBv1.0/<group>/<type>/<edge node>[/<device>])"
                .into(),
        };
        if levels.len() < 4 || levels.len() > 5 || levels[0] != NAMESPACE {
            return Err(bad_topic());
        }
        let (group, kind, node) = (levels[1], levels[2], levels[3]);
        let sp_device = levels.get(4).copied();
        if node.is_empty() || sp_device == Some("") {
            return Err(bad_topic());
        }
        let Some(g) = self.groups.iter().find(|g| g.group == group).cloned() else {
            return Err(DecodeError::UnknownTopic);
        };
        let device_id = match sp_device {
            Some(d) => format!("{node}/{d}"),
            None => node.to_string(),
        };
        let dev_key = sp_device.unwrap_or_default().to_string();
        // Our own NCMD/DCMD and the host's STATE are not data.
        if matches!(kind, "NCMD" | "DCMD" | "STATE") {
            return Ok(None);
        }
        let p = decode_payload(payload).map_err(|e| DecodeError::Malformed {
            device: device_id.clone(),
            message: format!("Sparkplug B payload: {e}"),
        })?;
        let key = (group.to_string(), node.to_string());
        let at_payload = p
            .timestamp
            .and_then(|t| i64::try_from(t).ok())
            .and_then(|t| t.checked_mul(1_000_000))
            .unwrap_or(received_ns);
        let mut rebirth_reason: Option<String> = None;
        match kind {
            "NDEATH" => {
                let devices: Vec<String> = self
                    .nodes
                    .get_mut(&key)
                    .map(|n| {
                        n.born = false;
                        n.seq = None;
                        std::mem::take(&mut n.devices).into_iter().collect()
                    })
                    .unwrap_or_default();
                info!(
                    group,
                    node,
                    devices = devices.len(),
                    "Sparkplug node died: its devices go offline"
                );
                for d in devices.iter().chain(std::iter::once(&node.to_string())) {
                    self.online(d, &g.profile, false, received_ns, out);
                }
                return Ok(None);
            }
            "NBIRTH" | "DBIRTH" | "NDATA" | "DDATA" | "DDEATH" => {}
            _ => return Err(bad_topic()),
        }
        let state = self.nodes.entry(key.clone()).or_default();
        // Sequence: NBIRTH sets it; every later message of the node steps it by one (mod 256).
        let seq = p.seq.map(|s| (s & 0xff) as u8);
        if kind == "NBIRTH" {
            state.born = true;
            state.seq = seq;
            state.aliases.clear();
            state.datatypes.clear();
            state.rebirth_sent = None;
        } else if !state.born {
            rebirth_reason = Some(format!("{kind} from a node not seen born"));
        } else {
            match (state.seq, seq) {
                (Some(last), Some(s)) if s != last.wrapping_add(1) => {
                    rebirth_reason = Some(format!("sequence gap: {s} after {last}"));
                }
                _ => {}
            }
            if seq.is_some() {
                state.seq = seq;
            }
        }
        if kind == "DDEATH" {
            state.devices.remove(&device_id);
            self.online(&device_id, &g.profile, false, at_payload, out);
            return Ok(self.rebirth(&key, rebirth_reason));
        }
        let birth = kind.ends_with("BIRTH");
        // Resolve each metric to (name, datatype).
        let mut resolved: Vec<(String, u32, &Metric)> = Vec::with_capacity(p.metrics.len());
        for m in &p.metrics {
            let name = match (&m.name, m.alias) {
                (Some(n), _) => n.clone(),
                (None, Some(a)) => match state.aliases.get(&a) {
                    Some((n, _)) => n.clone(),
                    None => {
                        rebirth_reason.get_or_insert_with(|| format!("unknown alias {a}"));
                        continue;
                    }
                },
                (None, None) => continue,
            };
            if birth {
                if let (Some(a), Some(dt)) = (m.alias, m.datatype) {
                    if state.aliases.len() < MAX_ALIASES {
                        state.aliases.insert(a, (name.clone(), dt));
                    }
                }
                if let Some(dt) = m.datatype {
                    if state.datatypes.len() < MAX_ALIASES {
                        state.datatypes.insert((dev_key.clone(), name.clone()), dt);
                    }
                }
            }
            let dt = m
                .datatype
                .or_else(|| m.alias.and_then(|a| state.aliases.get(&a).map(|x| x.1)))
                .or_else(|| {
                    state
                        .datatypes
                        .get(&(dev_key.clone(), name.clone()))
                        .copied()
                })
                .unwrap_or(0);
            resolved.push((name, dt, m));
        }
        if kind == "DBIRTH" {
            state.devices.insert(device_id.clone());
        }
        // Map to the profile's points.
        let mapped = {
            let cat = self.catalog.read().unwrap_or_else(|e| e.into_inner());
            let Some(profile) = cat.profiles.get(&g.profile).cloned() else {
                return Err(DecodeError::Device {
                    device: device_id,
                    message: format!("profile `{}` is not loaded", g.profile),
                });
            };
            drop(cat);
            let mut mapped = Vec::new();
            for (name, dt, m) in &resolved {
                let idx = profile.points.iter().position(|pt| {
                    pt.name == *name
                        || matches!(&pt.mqtt, Some(b) if matches!(&b.source, MqttValue::Json(ptr) if ptr.strip_prefix('/') == Some(name.as_str())))
                });
                let Some(i) = idx else { continue };
                let pt = &profile.points[i];
                let raw = match value(m, *dt) {
                    None => continue,
                    Some(Ok(v)) => Ok(v),
                    Some(Err(e)) => match (&m.string_value, &pt.mqtt) {
                        (Some(s), Some(b)) if b.map.contains_key(s.trim()) => Ok(b.map[s.trim()]),
                        _ => Err(e),
                    },
                };
                let at = m
                    .timestamp
                    .and_then(|t| i64::try_from(t).ok())
                    .and_then(|t| t.checked_mul(1_000_000))
                    .unwrap_or(at_payload);
                match raw.map(|v| pt.convert(v)) {
                    Ok(Ok(v)) => mapped.push((i, v, at)),
                    Ok(Err(v)) => problems.push(PointProblem {
                        device: device_id.clone(),
                        point: pt.name.clone(),
                        reason: "out_of_range",
                        message: format!("metric `{name}`: value {v} outside the point's range"),
                    }),
                    Err(message) => problems.push(PointProblem {
                        device: device_id.clone(),
                        point: pt.name.clone(),
                        reason: "bad_value",
                        message: format!("metric `{name}`: {message}"),
                    }),
                }
            }
            mapped
        };
        let is_device = sp_device.is_some();
        if !mapped.is_empty() || (is_device && birth) {
            let first = self.ensure_device(&device_id, &g.profile)?;
            for (i, v, at) in mapped {
                out.push(Reading::good(
                    crate::catalog::PointId(first + i as u32),
                    v,
                    at,
                ));
            }
            if birth {
                self.online(&device_id, &g.profile, true, at_payload, out);
            }
        }
        Ok(self.rebirth(&key, rebirth_reason))
    }

    fn rebirth(&mut self, key: &(String, String), reason: Option<String>) -> Option<Rebirth> {
        let reason = reason?;
        let state = self.nodes.get_mut(key)?;
        let now = Instant::now();
        if state
            .rebirth_sent
            .is_some_and(|t| now.duration_since(t) < REBIRTH_EVERY)
        {
            return None;
        }
        state.rebirth_sent = Some(now);
        info!(group = %key.0, node = %key.1, reason = %reason, "asking the Sparkplug node to rebirth");
        Some(Rebirth {
            topic: format!("{NAMESPACE}/{}/NCMD/{}", key.0, key.1),
            payload: rebirth_payload(crate::util::now_ns().max(0) as u64 / 1_000_000),
            reason,
        })
    }

    /// The device's first point, adding it to the catalog on first sight.
    fn ensure_device(&self, id: &str, profile: &str) -> Result<u32, DecodeError> {
        let mut cat = self.catalog.write().unwrap_or_else(|e| e.into_inner());
        let is_new = cat.device_by_id(id).is_none();
        let idx = cat
            .add_device(id, profile, Default::default(), false)
            .map_err(|e| DecodeError::Device {
                device: id.to_string(),
                message: e.to_string(),
            })?;
        if is_new {
            info!(device = %id, profile, "new Sparkplug device");
        }
        Ok(cat.device(idx).first_point)
    }

    /// An `online` reading (1 or 0) for a device whose profile has that point; nothing for unknown devices.
    fn online(&self, id: &str, _profile: &str, online: bool, at: i64, out: &mut Vec<Reading>) {
        let cat = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, d)) = cat.device_by_id(id) {
            if let Some(p) = d.point_id(crate::catalog::profile::ONLINE_POINT) {
                out.push(Reading::good(p, if online { 1.0 } else { 0.0 }, at));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::catalog::profile::parse_profile;
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    /// Encodes a metric: (name, alias, datatype, double value).
    fn metric(name: Option<&str>, alias: Option<u64>, dt: u32, v: f64) -> Vec<u8> {
        let mut m = Vec::new();
        if let Some(n) = name {
            m.push(0x0a);
            put_varint(&mut m, n.len() as u64);
            m.extend_from_slice(n.as_bytes());
        }
        if let Some(a) = alias {
            m.push(0x10);
            put_varint(&mut m, a);
        }
        m.push(0x20);
        put_varint(&mut m, u64::from(dt));
        m.push(0x69); // field 13, fixed64
        m.extend_from_slice(&v.to_le_bytes());
        m
    }

    fn payload(seq: u64, metrics: &[Vec<u8>]) -> Vec<u8> {
        let mut p = vec![0x08];
        put_varint(&mut p, 1_700_000_000_000);
        for m in metrics {
            p.push(0x12);
            put_varint(&mut p, m.len() as u64);
            p.extend_from_slice(m);
        }
        p.push(0x18);
        put_varint(&mut p, seq);
        p
    }

    fn sparkplug() -> Sparkplug {
        let text = "schema: 1\nname: ahu\ncategory: hvac\npoints:\n  - { name: temp, unit: degC, kind: gauge, mqtt: { json: \"/Supply Temp\" } }\n  - { name: online, unit: bool, kind: gauge, mqtt: { json: /online } }\n";
        let mut profiles = BTreeMap::new();
        profiles.insert(
            "ahu".into(),
            Arc::new(parse_profile(Path::new("ahu.yaml"), text).unwrap()),
        );
        let groups = vec![SparkplugGroup {
            group: "g".into(),
            profile: "ahu".into(),
            index: 0,
        }];
        Sparkplug::new(groups, Catalog::new("s", profiles).shared())
    }

    fn run(sp: &mut Sparkplug, topic: &str, p: &[u8]) -> (Vec<(String, f64)>, Option<Rebirth>) {
        let (mut out, mut pr) = (vec![], vec![]);
        let rb = sp.handle(topic, p, 5, &mut out, &mut pr).unwrap();
        let cat = sp.catalog.read().unwrap();
        let named = out
            .iter()
            .map(|r| (cat.point_name(r.point), r.value))
            .collect();
        (named, rb)
    }

    #[test]
    fn birth_alias_data_gap_and_death() {
        let mut sp = sparkplug();
        assert!(sp.handles("spBv1.0/g/DDATA/n1/d1"));
        assert!(!sp.handles("spBv1.0/other/DDATA/n1/d1"));
        // Data from a node never seen born: nothing stored, a rebirth asked for.
        let (r, rb) = run(
            &mut sp,
            "spBv1.0/g/DDATA/n1/d1",
            &payload(7, &[metric(None, Some(5), 10, 1.0)]),
        );
        assert!(r.is_empty());
        let rb = rb.expect("rebirth for an unborn node");
        assert_eq!(rb.topic, "spBv1.0/g/NCMD/n1");
        let (r, _) = run(&mut sp, "spBv1.0/g/NBIRTH/n1", &payload(0, &[]));
        assert!(r.is_empty(), "no node metric maps to a point: {r:?}");
        let (r, rb) = run(
            &mut sp,
            "spBv1.0/g/DBIRTH/n1/d1",
            &payload(1, &[metric(Some("Supply Temp"), Some(5), 10, 14.5)]),
        );
        assert_eq!(
            r,
            [
                ("n1/d1/temp".to_string(), 14.5),
                ("n1/d1/online".to_string(), 1.0)
            ]
        );
        assert!(rb.is_none());
        // By alias.
        let (r, rb) = run(
            &mut sp,
            "spBv1.0/g/DDATA/n1/d1",
            &payload(2, &[metric(None, Some(5), 10, 15.5)]),
        );
        assert_eq!(r, [("n1/d1/temp".to_string(), 15.5)]);
        assert!(rb.is_none());
        // Unknown alias: rebirth; a second one at once is not asked again (one request per node every 5 s).
        let (r, rb) = run(
            &mut sp,
            "spBv1.0/g/DDATA/n1/d1",
            &payload(3, &[metric(None, Some(99), 10, 1.0)]),
        );
        assert!(r.is_empty());
        assert_eq!(rb.unwrap().reason, "unknown alias 99");
        let (_, rb) = run(
            &mut sp,
            "spBv1.0/g/DDATA/n1/d1",
            &payload(4, &[metric(None, Some(98), 10, 1.0)]),
        );
        assert!(rb.is_none(), "rate-limited: one request per node every 5 s");
        sp.nodes
            .get_mut(&("g".into(), "n1".into()))
            .unwrap()
            .rebirth_sent = None;
        // A sequence gap (6 after 4): the data is kept, a rebirth is asked for.
        let (r, rb) = run(
            &mut sp,
            "spBv1.0/g/DDATA/n1/d1",
            &payload(6, &[metric(None, Some(5), 10, 16.5)]),
        );
        assert_eq!(r, [("n1/d1/temp".to_string(), 16.5)]);
        assert!(rb.unwrap().reason.contains("sequence gap"));
        // NDEATH: the node's devices go offline.
        let (r, _) = run(&mut sp, "spBv1.0/g/NDEATH/n1", &payload(0, &[]));
        assert_eq!(r, [("n1/d1/online".to_string(), 0.0)]);
        // Garbage is an error naming the device, not a panic.
        let (mut out, mut pr) = (vec![], vec![]);
        let e = sp
            .handle("spBv1.0/g/DDATA/n1/d1", &[0x12, 0x09], 5, &mut out, &mut pr)
            .unwrap_err();
        assert_eq!(e.reason(), "malformed_payload");
        assert!(e.to_string().contains("n1/d1"), "{e}");
    }

    #[test]
    fn rebirth_payload_decodes_as_a_boolean_metric() {
        let p = decode_payload(&rebirth_payload(1_700_000_000_000)).unwrap();
        assert_eq!(p.timestamp, Some(1_700_000_000_000));
        assert_eq!(p.metrics.len(), 1);
        assert_eq!(p.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
        assert_eq!(p.metrics[0].datatype, Some(datatype::BOOLEAN));
        assert_eq!(p.metrics[0].boolean_value, Some(true));
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for bad in [
            &[0x12, 0x05, 0x0a][..],
            &[0xff; 11][..],
            &[0x0b][..],
            &[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
        ] {
            assert!(decode_payload(bad).is_err(), "{bad:?}");
        }
        // Every prefix of a good payload decodes or errs, never panics.
        let good = rebirth_payload(42);
        for n in 0..good.len() {
            let _ = decode_payload(&good[..n]);
        }
    }

    #[test]
    fn signed_ints_keep_their_sign() {
        let m = Metric {
            int_value: Some((-5i32) as u32),
            ..Default::default()
        };
        assert_eq!(value(&m, datatype::INT32), Some(Ok(-5.0)));
        assert_eq!(value(&m, datatype::INT8), Some(Ok(-5.0)));
        let m = Metric {
            long_value: Some((-7i64) as u64),
            ..Default::default()
        };
        assert_eq!(value(&m, datatype::INT64), Some(Ok(-7.0)));
        let _ = (datatype::STRING, datatype::TEXT);
    }
}
