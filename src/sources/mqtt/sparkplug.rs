//! Sparkplug B (Eclipse Tahu, `spBv1.0`) on the MQTT source's connection: `[[mqtt.sparkplug]] group, profile`.
//!
//! Topics are `spBv1.0/<group>/<type>/<edge node>[/<device>]`. Device ids: a Sparkplug device becomes the
//! Caretaker device `<edge node>/<device>`; the edge node's own metrics (NBIRTH/NDATA) the device `<edge node>`
//! (created only when it has a metric to store). Metric names map to the group's profile points by point name,
//! or by an `mqtt: { json: "/<metric name>" }` binding. Metrics no point maps are taken as they come: at the
//! device's first BIRTH each numeric or Boolean one becomes a point of that device (named from the metric in
//! snake case, typed by its BIRTH datatype, in the canonical unit of its BIRTH `engUnit` property), after the
//! profile's points. A BIRTH's `engUnit` on a mapped metric converts its values into the profile's unit.
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
//! reader skips everything else (datasets, templates, other properties) without allocating for it.

use super::config::SparkplugGroup;
use super::decode::{DecodeError, PointProblem};
use crate::catalog::profile::MqttValue;
use crate::catalog::units::{self, Kind, Unit};
use crate::catalog::{PointDef, PointId, Profile, SharedCatalog};
use crate::reading::Reading;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;

/// Topic namespace of Sparkplug B.
pub const NAMESPACE: &str = "spBv1.0";
/// Least time between two rebirth requests to one node.
const REBIRTH_EVERY: Duration = Duration::from_secs(5);
/// Most aliases kept per node (a peer cannot grow memory without end).
const MAX_ALIASES: usize = 100_000;
/// Most points of its own a device gets for metrics no profile point maps.
pub const MAX_TAKEN: usize = 1_000;

/// Sparkplug datatypes (Tahu `DataType`).
pub mod datatype {
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const FLOAT: u32 = 9;
    pub const DOUBLE: u32 = 10;
    pub const BOOLEAN: u32 = 11;
    pub const STRING: u32 = 12;
    pub const TEXT: u32 = 14;
}

/// One decoded metric (only the fields Caretaker uses). Its text fields borrow the payload: decoding allocates
/// nothing per metric unless a text is not UTF-8.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metric<'a> {
    pub name: Option<Cow<'a, str>>,
    pub alias: Option<u64>,
    pub timestamp: Option<u64>,
    pub datatype: Option<u32>,
    pub is_null: bool,
    pub int_value: Option<u32>,
    pub long_value: Option<u64>,
    pub float_value: Option<f32>,
    pub double_value: Option<f64>,
    pub boolean_value: Option<bool>,
    pub string_value: Option<Cow<'a, str>>,
    /// The `engUnit` (or `engUnits`) string property of the metric's PropertySet (BIRTHs carry it).
    pub eng_unit: Option<Cow<'a, str>>,
}

/// A decoded Payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Payload<'a> {
    pub timestamp: Option<u64>,
    pub seq: Option<u64>,
    pub metrics: Vec<Metric<'a>>,
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

fn decode_metric(buf: &[u8]) -> Result<Metric<'_>, String> {
    let mut r = Reader { buf, pos: 0 };
    let mut m = Metric::default();
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => {
                expect(wire, 2, "Metric.name")?;
                m.name = Some(String::from_utf8_lossy(r.bytes()?));
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
                m.string_value = Some(String::from_utf8_lossy(r.bytes()?));
            }
            9 => {
                expect(wire, 2, "Metric.properties")?;
                m.eng_unit = eng_unit(r.bytes()?)?;
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(m)
}

/// The `engUnit`/`engUnits` value of a PropertySet (Tahu: `keys` = 1, `values` = 2, PropertyValue
/// `string_value` = 8); None when absent or not a string.
fn eng_unit(buf: &[u8]) -> Result<Option<Cow<'_, str>>, String> {
    let mut r = Reader { buf, pos: 0 };
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut values: Vec<Option<Cow<'_, str>>> = Vec::new();
    while let Some((field, wire)) = r.key()? {
        match field {
            1 => {
                expect(wire, 2, "PropertySet.keys")?;
                keys.push(r.bytes()?);
            }
            2 => {
                expect(wire, 2, "PropertySet.values")?;
                let mut v = Reader {
                    buf: r.bytes()?,
                    pos: 0,
                };
                let mut text = None;
                while let Some((f, w)) = v.key()? {
                    if f == 8 {
                        expect(w, 2, "PropertyValue.string_value")?;
                        text = Some(String::from_utf8_lossy(v.bytes()?));
                    } else {
                        v.skip(w)?;
                    }
                }
                values.push(text);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(keys
        .iter()
        .position(|k| *k == b"engUnit" || *k == b"engUnits")
        .and_then(|i| values.into_iter().nth(i).flatten()))
}

/// Decodes a Sparkplug B Payload (Tahu `sparkplug_b.proto`).
pub fn decode_payload(buf: &[u8]) -> Result<Payload<'_>, String> {
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
fn value(m: &Metric<'_>, dt: u32) -> Option<Result<f64, String>> {
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

/// What a BIRTH registered for one metric of a node or of one of its devices.
#[derive(Debug, Clone)]
struct Registered {
    /// The device key of the BIRTH ("" for the node itself) and the metric's name.
    device: Box<str>,
    name: Box<str>,
    datatype: u32,
    /// The `engUnit` property as sent, and the unit it names when we know it.
    unit_text: Option<Box<str>>,
    unit: Option<Unit>,
    /// The metric's point in its device's profile, found once the device is in the catalog (`Some(None)`: no
    /// point maps it). A device's points are fixed while this source runs (a reload that changes an MQTT
    /// device restarts the source), so DATA finds its point without scanning the profile.
    point: Option<Option<u32>>,
}

/// Marks an alias slot no BIRTH filled.
const NO_ALIAS: u32 = u32::MAX;

/// Alias → index of its [`Registered`] metric. Edge nodes number aliases 0, 1, 2, ...: those are a `Vec` indexed
/// by alias, as long as the alias stays under a bound proportional to the metrics registered (so a peer's alias of
/// 10^12 costs no memory); the others go to a map.
#[derive(Default)]
struct Aliases {
    dense: Vec<u32>,
    sparse: HashMap<u64, u32>,
}

impl Aliases {
    fn get(&self, alias: u64) -> Option<u32> {
        match usize::try_from(alias).ok().and_then(|a| self.dense.get(a)) {
            Some(&i) if i != NO_ALIAS => Some(i),
            _ => self.sparse.get(&alias).copied(),
        }
    }

    fn insert(&mut self, alias: u64, index: u32, registered: usize) {
        let bound = 2 * registered + 1024;
        match usize::try_from(alias) {
            Ok(a) if a < bound => {
                if a >= self.dense.len() {
                    self.dense.resize(a + 1, NO_ALIAS);
                }
                self.dense[a] = index;
                self.sparse.remove(&alias);
            }
            _ if self.sparse.len() < MAX_ALIASES => {
                self.sparse.insert(alias, index);
            }
            _ => {}
        }
    }

    fn clear(&mut self) {
        self.dense.clear();
        self.sparse.clear();
    }
}

/// A device of a node that is in the catalog: what DATA needs to turn metrics into readings.
struct Known {
    first_point: u32,
    profile: Arc<Profile>,
    /// How many of its points the group's library profile has (the rest are metrics taken as they came).
    base_len: usize,
}

#[derive(Default)]
struct NodeState {
    born: bool,
    seq: Option<u8>,
    /// What BIRTHs registered, across the node and its devices; found by alias (aliases are unique per node) or
    /// by device key and name.
    registered: Vec<Registered>,
    aliases: Aliases,
    by_name: HashMap<String, HashMap<String, u32>>,
    /// The node's devices already in the catalog, by device key ("" for the node).
    known: HashMap<String, Known>,
    /// Caretaker device ids of this node that a BIRTH put online.
    devices: BTreeSet<String>,
    rebirth_sent: Option<Instant>,
}

impl NodeState {
    /// The registration of metric `name` of device `dev`, if a BIRTH made one.
    fn lookup(&self, dev: &str, name: &str) -> Option<u32> {
        self.by_name.get(dev)?.get(name).copied()
    }

    /// Registers (or registers again) a BIRTH metric of device `dev`; None past [`MAX_ALIASES`] metrics.
    fn register(&mut self, dev: &str, name: &str, m: &Metric<'_>) -> Option<u32> {
        let entry = Registered {
            device: dev.into(),
            name: name.into(),
            datatype: m.datatype.unwrap_or(0),
            unit: m.eng_unit.as_deref().and_then(units::from_engineering),
            unit_text: m.eng_unit.as_deref().map(Into::into),
            point: None,
        };
        let index = match self.lookup(dev, name) {
            Some(i) => {
                self.registered[i as usize] = entry;
                i
            }
            None if self.registered.len() < MAX_ALIASES => {
                let i = self.registered.len() as u32;
                self.registered.push(entry);
                self.by_name
                    .entry(dev.to_string())
                    .or_default()
                    .insert(name.to_string(), i);
                i
            }
            None => return None,
        };
        if let Some(a) = m.alias {
            self.aliases.insert(a, index, self.registered.len());
        }
        Some(index)
    }

    /// A rebirth request for `reason`, unless one went to this node less than [`REBIRTH_EVERY`] ago.
    fn rebirth(&mut self, group: &str, node: &str, reason: Option<String>) -> Option<Rebirth> {
        let reason = reason?;
        let now = Instant::now();
        if self
            .rebirth_sent
            .is_some_and(|t| now.duration_since(t) < REBIRTH_EVERY)
        {
            return None;
        }
        self.rebirth_sent = Some(now);
        info!(%group, %node, reason = %reason, "asking the Sparkplug node to rebirth");
        Some(Rebirth {
            topic: format!("{NAMESPACE}/{group}/NCMD/{node}"),
            payload: rebirth_payload(crate::util::now_ns().max(0) as u64 / 1_000_000),
            reason,
        })
    }
}

/// A rebirth request to publish (QoS 0, not retained).
#[derive(Debug, Clone, PartialEq)]
pub struct Rebirth {
    pub topic: String,
    pub payload: Vec<u8>,
    pub reason: String,
}

/// A Sparkplug topic, split: `spBv1.0/<group>/<kind>/<node>[/<device>]`.
struct Topic<'t> {
    group: &'t str,
    kind: &'t str,
    node: &'t str,
    device: Option<&'t str>,
}

impl<'t> Topic<'t> {
    fn parse(topic: &'t str) -> Result<Topic<'t>, DecodeError> {
        let mut levels = [""; 5];
        let mut n = 0;
        for level in topic.split('/') {
            if n == levels.len() {
                return Err(bad_topic(topic));
            }
            levels[n] = level;
            n += 1;
        }
        let ok = n >= 4
            && levels[0] == NAMESPACE
            && !levels[3].is_empty()
            && (n == 4 || !levels[4].is_empty());
        if !ok {
            return Err(bad_topic(topic));
        }
        Ok(Topic {
            group: levels[1],
            kind: levels[2],
            node: levels[3],
            device: (n == 5).then_some(levels[4]),
        })
    }
    /// The Caretaker device: `<node>/<device>`, or `<node>` for the node's own metrics.
    fn device_id(&self) -> String {
        match self.device {
            Some(d) => format!("{}/{d}", self.node),
            None => self.node.to_string(),
        }
    }
}

fn bad_topic(topic: &str) -> DecodeError {
    DecodeError::Malformed {
        device: topic.chars().take(200).collect(),
        message: "not a Sparkplug B topic (spBv1.0/<group>/<type>/<edge node>[/<device>])".into(),
    }
}

/// One metric of a message with its BIRTH facts resolved (by index: nothing is copied out of the node's state).
struct Resolved<'p> {
    metric: &'p Metric<'p>,
    /// Its registration by a BIRTH of the message's device, if any (datatype, unit, point).
    reg: Option<u32>,
    /// The registration that holds its name when the message does not (sent by alias).
    name_reg: Option<u32>,
    /// The metric's own datatype if it has one, else its BIRTH's.
    datatype: u32,
    unit: Option<Unit>,
}

impl Resolved<'_> {
    fn name<'s>(&'s self, registered: &'s [Registered]) -> &'s str {
        match (
            self.name_reg.and_then(|i| registered.get(i as usize)),
            &self.metric.name,
        ) {
            (Some(r), _) => &r.name,
            (None, Some(n)) => n,
            (None, None) => "",
        }
    }

    fn seen<'s>(&'s self, registered: &'s [Registered]) -> Seen<'s> {
        Seen {
            name: self.name(registered),
            datatype: self.datatype,
            unit: self.unit,
            unit_text: self
                .reg
                .and_then(|i| registered.get(i as usize))
                .and_then(|r| r.unit_text.as_deref()),
        }
    }
}

/// A metric of a message as the device-creating path needs it.
struct Seen<'s> {
    name: &'s str,
    datatype: u32,
    unit: Option<Unit>,
    unit_text: Option<&'s str>,
}

/// Whether a metric no profile point maps is taken as a point of its own: numeric and Boolean datatypes
/// (Int8..UInt64, Float, Double, Boolean), not the Sparkplug control metrics or `bdSeq`.
fn takeable(name: &str, datatype: u32) -> bool {
    (datatype::INT8..=datatype::BOOLEAN).contains(&datatype)
        && name != "bdSeq"
        && !name.starts_with("Node Control/")
        && !name.starts_with("Device Control/")
}

/// The point name of a metric taken as it comes: its name in snake case (`Inputs/Return Temp` →
/// `inputs_return_temp`); None when nothing of it is left.
pub fn point_name(metric: &str) -> Option<String> {
    let mut out = String::with_capacity(metric.len());
    let mut gap = false;
    for c in metric.chars() {
        if c.is_ascii_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The point a metric maps to: a profile point of the same name or bound to `/<metric name>`, else (for a
/// device with points of its own, after the library profile's `base` ones) the point named after the metric.
fn point_of(profile: &Profile, base: usize, name: &str) -> Option<usize> {
    profile
        .points
        .iter()
        .position(|pt| {
            pt.name == name
                || matches!(&pt.mqtt, Some(b) if matches!(&b.source, MqttValue::Json(ptr) if ptr.strip_prefix('/') == Some(name)))
        })
        .or_else(|| {
            let own = point_name(name)?;
            let extra = profile.points.get(base..)?;
            extra.iter().position(|pt| pt.name == own).map(|i| base + i)
        })
}

/// A point for a metric taken as it comes: named from the metric, a gauge in the canonical unit of its BIRTH
/// engineering unit (Boolean: bool; no or unknown unit: none), converted from the unit the metric is sent in.
fn taken_point(name: String, r: &Seen<'_>) -> PointDef {
    let wire = if r.datatype == datatype::BOOLEAN {
        Unit::Bool
    } else {
        r.unit.unwrap_or(Unit::None)
    };
    let unit = wire.canonical();
    let (scale, offset) = units::unit_conversion(wire, unit).unwrap_or((1.0, 0.0));
    let mut description = format!(
        "Sparkplug metric `{}` ({}), taken as it came",
        r.name,
        datatype_name(r.datatype)
    );
    if let (Some(t), None) = (r.unit_text, r.unit) {
        description.push_str(&format!(
            "; engineering unit `{t}` is not one Caretaker knows"
        ));
    }
    PointDef {
        name,
        unit,
        wire_unit: wire,
        kind: Kind::Gauge,
        description: Some(description),
        scale,
        offset,
        valid_range: None,
        invalid_raw: Vec::new(),
        mqtt: None,
        modbus: None,
        bacnet: None,
        brick: None,
        line: 0,
    }
}

fn datatype_name(dt: u32) -> &'static str {
    match dt {
        1 => "Int8",
        2 => "Int16",
        3 => "Int32",
        4 => "Int64",
        5 => "UInt8",
        6 => "UInt16",
        7 => "UInt32",
        8 => "UInt64",
        9 => "Float",
        10 => "Double",
        11 => "Boolean",
        _ => "other",
    }
}

/// Sparkplug state of the source: the nodes seen in each group, what their BIRTHs registered, their sequence
/// numbers and their devices already in the catalog.
pub struct Sparkplug {
    groups: Vec<SparkplugGroup>,
    catalog: SharedCatalog,
    /// Per group (in the order of `groups`): edge node name → its state.
    nodes: Vec<HashMap<String, NodeState>>,
}

impl Sparkplug {
    pub fn new(groups: Vec<SparkplugGroup>, catalog: SharedCatalog) -> Sparkplug {
        let nodes = groups.iter().map(|_| HashMap::new()).collect();
        Sparkplug {
            groups,
            catalog,
            nodes,
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

    /// Decodes one Sparkplug message into readings; may return a rebirth request to publish. The steps: the
    /// topic, the payload, deaths, the node's sequence, each metric's registration (BIRTHs make them; DATA finds
    /// them by alias), the device (created at its BIRTH, with points of its own for metrics no profile point
    /// maps), the values. DATA of a device already in the catalog takes its point ids from the node's state and
    /// each metric's point from its registration: no lock, no profile scan, no allocation per metric.
    pub fn handle(
        &mut self,
        topic: &str,
        payload: &[u8],
        received_ns: i64,
        out: &mut Vec<Reading>,
        problems: &mut Vec<PointProblem>,
    ) -> Result<Option<Rebirth>, DecodeError> {
        let t = Topic::parse(topic)?;
        let Some(gi) = self.groups.iter().position(|g| g.group == t.group) else {
            return Err(DecodeError::UnknownTopic);
        };
        // Our own NCMD/DCMD and the host's STATE are not data.
        if matches!(t.kind, "NCMD" | "DCMD" | "STATE") {
            return Ok(None);
        }
        let p = decode_payload(payload).map_err(|e| DecodeError::Malformed {
            device: t.device_id(),
            message: format!("Sparkplug B payload: {e}"),
        })?;
        let at_payload = ms_to_ns(p.timestamp).unwrap_or(received_ns);
        match t.kind {
            "NDEATH" => {
                self.node_death(gi, t.node, received_ns, out);
                return Ok(None);
            }
            "NBIRTH" | "DBIRTH" | "NDATA" | "DDATA" | "DDEATH" => {}
            _ => return Err(bad_topic(topic)),
        }
        let (group, catalog) = (&self.groups[gi], &self.catalog);
        let nodes = &mut self.nodes[gi];
        if !nodes.contains_key(t.node) {
            nodes.insert(t.node.to_string(), NodeState::default());
        }
        let Some(node) = nodes.get_mut(t.node) else {
            return Ok(None);
        };
        let mut rebirth_reason = node.step_sequence(t.kind, p.seq);
        if t.kind == "DDEATH" {
            let device_id = t.device_id();
            node.devices.remove(&device_id);
            online(catalog, &device_id, false, at_payload, out);
            return Ok(node.rebirth(&group.group, t.node, rebirth_reason));
        }
        let birth = t.kind.ends_with("BIRTH");
        let dev_key = t.device.unwrap_or_default();
        let resolved = resolve(node, dev_key, &p.metrics, birth, &mut rebirth_reason);
        if t.kind == "DBIRTH" {
            node.devices.insert(t.device_id());
        }
        if birth || !node.known.contains_key(dev_key) {
            let device_id = t.device_id();
            let base = group_profile(catalog, group, &device_id)?;
            let seen: Vec<Seen<'_>> = resolved.iter().map(|r| r.seen(&node.registered)).collect();
            // A device is created by its BIRTH (a node's only when it has a metric to take), or by data that maps.
            let born_with_data =
                t.device.is_some() || seen.iter().any(|s| takeable(s.name, s.datatype));
            let maps = seen
                .iter()
                .any(|s| point_of(&base, base.points.len(), s.name).is_some());
            let create = (birth && born_with_data) || maps;
            match device_for(catalog, &device_id, &base, &seen, create, birth, problems)? {
                Some((first_point, profile)) => {
                    let known = Known {
                        first_point,
                        profile,
                        base_len: base.points.len(),
                    };
                    node.known.insert(dev_key.to_string(), known);
                }
                None => return Ok(node.rebirth(&group.group, t.node, rebirth_reason)),
            }
        }
        let NodeState {
            known, registered, ..
        } = &mut *node;
        if let Some(dev) = known.get(dev_key) {
            for r in &resolved {
                let point = match r.reg.and_then(|i| registered.get_mut(i as usize)) {
                    Some(reg) => *reg.point.get_or_insert_with(|| {
                        point_of(&dev.profile, dev.base_len, &reg.name).map(|i| i as u32)
                    }),
                    None => {
                        point_of(&dev.profile, dev.base_len, r.name(registered)).map(|i| i as u32)
                    }
                };
                let Some((i, pt)) =
                    point.and_then(|i| Some((i, dev.profile.points.get(i as usize)?)))
                else {
                    continue;
                };
                let at = ms_to_ns(r.metric.timestamp).unwrap_or(at_payload);
                match point_value(pt, r) {
                    Ok(None) => {}
                    Ok(Some(v)) => out.push(Reading::good(PointId(dev.first_point + i), v, at)),
                    Err((reason, message)) => problems.push(PointProblem {
                        device: t.device_id(),
                        point: pt.name.clone(),
                        reason,
                        message: format!("metric `{}`: {message}", r.name(registered)),
                    }),
                }
            }
        }
        if birth {
            online(catalog, &t.device_id(), true, at_payload, out);
        }
        Ok(node.rebirth(&group.group, t.node, rebirth_reason))
    }

    /// NDEATH: the node is dead until its next NBIRTH; it and every device it had born go offline.
    fn node_death(&mut self, group: usize, node: &str, at: i64, out: &mut Vec<Reading>) {
        let devices: Vec<String> = self.nodes[group]
            .get_mut(node)
            .map(|n| {
                n.born = false;
                n.seq = None;
                std::mem::take(&mut n.devices).into_iter().collect()
            })
            .unwrap_or_default();
        info!(
            group = %self.groups[group].group,
            node = %node,
            devices = devices.len(),
            "Sparkplug node died: its devices go offline"
        );
        for d in devices
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(node))
        {
            online(&self.catalog, d, false, at, out);
        }
    }
}

impl NodeState {
    /// The node's sequence number: NBIRTH sets it (and forgets the old BIRTH's registrations and aliases); every
    /// later message steps it by one (mod 256). Returns why a rebirth is needed: data from a node never seen
    /// born, or a gap.
    fn step_sequence(&mut self, kind: &str, seq: Option<u64>) -> Option<String> {
        let seq = seq.map(|s| (s & 0xff) as u8);
        if kind == "NBIRTH" {
            self.born = true;
            self.seq = seq;
            self.registered.clear();
            self.aliases.clear();
            self.by_name.clear();
            self.rebirth_sent = None;
            return None;
        }
        if !self.born {
            return Some(format!("{kind} from a node not seen born"));
        }
        let mut reason = None;
        if let (Some(last), Some(s)) = (self.seq, seq) {
            if s != last.wrapping_add(1) {
                reason = Some(format!("sequence gap: {s} after {last}"));
            }
        }
        if seq.is_some() {
            self.seq = seq;
        }
        reason
    }
}

/// Each metric's registration (found by alias for DATA), datatype and unit; a BIRTH registers them. An alias
/// nobody registered is skipped and asks for a rebirth.
fn resolve<'p>(
    node: &mut NodeState,
    dev: &str,
    metrics: &'p [Metric<'p>],
    birth: bool,
    rebirth_reason: &mut Option<String>,
) -> Vec<Resolved<'p>> {
    let mut resolved = Vec::with_capacity(metrics.len());
    for m in metrics {
        let (reg, name_reg) = match (&m.name, m.alias) {
            (Some(n), _) if birth => (node.register(dev, n, m), None),
            (Some(n), _) => (node.lookup(dev, n), None),
            (None, Some(a)) => match node.aliases.get(a).and_then(|i| {
                let by = node.registered.get(i as usize)?;
                Some((i, by))
            }) {
                // The common case: DATA by alias of the device that registered it.
                Some((i, by)) if !birth && *by.device == *dev => (Some(i), Some(i)),
                // Another device's alias, or a BIRTH by alias only: by the name the alias stands for.
                Some((i, by)) => {
                    let name = by.name.clone();
                    let reg = if birth {
                        node.register(dev, &name, m)
                    } else {
                        node.lookup(dev, &name)
                    };
                    (reg, Some(i))
                }
                None => {
                    rebirth_reason.get_or_insert_with(|| format!("unknown alias {a}"));
                    continue;
                }
            },
            (None, None) => continue,
        };
        let (datatype, unit) = reg
            .and_then(|i| node.registered.get(i as usize))
            .map_or((0, None), |r| (r.datatype, r.unit));
        resolved.push(Resolved {
            metric: m,
            reg,
            name_reg,
            datatype: m.datatype.unwrap_or(datatype),
            unit,
        });
    }
    resolved
}

/// The group's library profile.
fn group_profile(
    catalog: &SharedCatalog,
    g: &SparkplugGroup,
    device: &str,
) -> Result<Arc<Profile>, DecodeError> {
    let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
    cat.profiles
        .get(&g.profile)
        .cloned()
        .ok_or_else(|| DecodeError::Device {
            device: device.to_string(),
            message: format!("profile `{}` is not loaded", g.profile),
        })
}

/// The device's first point id and profile. A device not in the catalog yet is added when `create`: with the
/// library profile plus a point for each metric of its BIRTH that no profile point maps (numeric and
/// Boolean ones; at most [`MAX_TAKEN`]). A BIRTH announcing a metric the existing device has no point for
/// reports it (`new_metric`): a device's points are fixed once it is in the catalog.
fn device_for(
    catalog: &SharedCatalog,
    id: &str,
    base: &Arc<Profile>,
    seen: &[Seen<'_>],
    create: bool,
    birth: bool,
    problems: &mut Vec<PointProblem>,
) -> Result<Option<(u32, Arc<Profile>)>, DecodeError> {
    let unmapped = |profile: &Profile| -> Vec<&Seen<'_>> {
        seen.iter()
            .filter(|r| takeable(r.name, r.datatype))
            .filter(|r| point_of(profile, base.points.len(), r.name).is_none())
            .collect()
    };
    {
        let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, d)) = cat.device_by_id(id) {
            if birth {
                for r in unmapped(&d.profile) {
                    problems.push(PointProblem {
                        device: id.to_string(),
                        point: point_name(r.name).unwrap_or_default(),
                        reason: "new_metric",
                        message: format!(
                            "metric `{}` was not in the device's first BIRTH; its points are fixed until Caretaker restarts",
                            r.name
                        ),
                    });
                }
            }
            return Ok(Some((d.first_point, d.profile.clone())));
        }
    }
    if !create {
        return Ok(None);
    }
    let mut extra: Vec<PointDef> = Vec::new();
    for r in unmapped(base) {
        let Some(name) = point_name(r.name) else {
            continue;
        };
        let clash = base.points.iter().chain(&extra).any(|p| p.name == name);
        if clash || extra.len() >= MAX_TAKEN {
            problems.push(PointProblem {
                device: id.to_string(),
                point: name,
                reason: "unmapped_metric",
                message: format!(
                    "metric `{}` not taken: {}",
                    r.name,
                    if clash {
                        "its point name is taken by another point"
                    } else {
                        "the device has too many metrics no profile maps"
                    }
                ),
            });
            continue;
        }
        extra.push(taken_point(name, r));
    }
    let mut cat = catalog.write().unwrap_or_else(|e| e.into_inner());
    let added = if extra.is_empty() {
        cat.add_device(id, &base.name, Default::default(), false)
    } else {
        let mut own = (**base).clone();
        own.points.extend(extra);
        cat.add_device_with_profile(id, Arc::new(own), Default::default(), false)
    };
    let idx = added.map_err(|e| DecodeError::Device {
        device: id.to_string(),
        message: e.to_string(),
    })?;
    let d = cat.device(idx);
    info!(
        device = %id,
        profile = %base.name,
        points_of_its_own = d.profile.points.len() - base.points.len(),
        "new Sparkplug device"
    );
    Ok(Some((d.first_point, d.profile.clone())))
}

/// An `online` reading (1 or 0) for a device whose profile has that point; nothing for unknown devices.
fn online(catalog: &SharedCatalog, id: &str, online: bool, at: i64, out: &mut Vec<Reading>) {
    let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
    if let Some((_, d)) = cat.device_by_id(id) {
        if let Some(p) = d.point_id(crate::catalog::profile::ONLINE_POINT) {
            out.push(Reading::good(p, if online { 1.0 } else { 0.0 }, at));
        }
    }
}

/// Unix ms (a Sparkplug timestamp) to ns.
fn ms_to_ns(ms: Option<u64>) -> Option<i64> {
    ms.and_then(|t| i64::try_from(t).ok())
        .and_then(|t| t.checked_mul(1_000_000))
}

/// A metric's value at its point: by its datatype, a string through the point's `map`, from the BIRTH's
/// engineering unit into the unit the profile wrote when they differ (same dimension; otherwise the profile
/// wins), then the point's scale, offset and range. `Ok(None)` for a null metric.
fn point_value(pt: &PointDef, r: &Resolved<'_>) -> Result<Option<f64>, (&'static str, String)> {
    let m = r.metric;
    let raw = match value(m, r.datatype) {
        None => return Ok(None),
        Some(Ok(v)) => v,
        Some(Err(e)) => match (&m.string_value, &pt.mqtt) {
            (Some(s), Some(b)) if b.map.contains_key(s.trim()) => b.map[s.trim()],
            _ => return Err(("bad_value", e)),
        },
    };
    let raw = match r.unit {
        Some(u) if u != pt.wire_unit => match units::unit_conversion(u, pt.wire_unit) {
            Some((f, o)) => raw * f + o,
            None => raw,
        },
        _ => raw,
    };
    pt.convert(raw).map(Some).map_err(|v| {
        (
            "out_of_range",
            format!("value {v} outside the point's range"),
        )
    })
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

    /// A metric with an `engUnit` property.
    fn metric_with_unit(name: &str, alias: u64, dt: u32, v: f64, unit: &str) -> Vec<u8> {
        let mut m = metric(Some(name), Some(alias), dt, v);
        let mut value = vec![0x08, 12, 0x42]; // type String, string_value
        put_varint(&mut value, unit.len() as u64);
        value.extend_from_slice(unit.as_bytes());
        let mut set = vec![0x0a, 7];
        set.extend_from_slice(b"engUnit");
        set.push(0x12);
        put_varint(&mut set, value.len() as u64);
        set.extend_from_slice(&value);
        m.push(0x4a); // field 9, properties
        put_varint(&mut m, set.len() as u64);
        m.extend_from_slice(&set);
        m
    }

    fn string_metric(name: &str, alias: u64, v: &str) -> Vec<u8> {
        let mut m = vec![0x0a];
        put_varint(&mut m, name.len() as u64);
        m.extend_from_slice(name.as_bytes());
        m.push(0x10);
        put_varint(&mut m, alias);
        m.extend_from_slice(&[0x20, datatype::STRING as u8, 0x7a]);
        put_varint(&mut m, v.len() as u64);
        m.extend_from_slice(v.as_bytes());
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
        sp.nodes[0].get_mut("n1").unwrap().rebirth_sent = None;
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

    /// Issue 16: metrics no profile point maps become points of the device at its first BIRTH, typed by their
    /// datatype and in the canonical unit of their `engUnit`; a mapped metric's `engUnit` converts into the
    /// profile's unit; strings and control metrics are not taken; a metric first seen in a later BIRTH is reported.
    #[test]
    fn unmapped_metrics_are_taken_with_their_birth_units() {
        let mut sp = sparkplug();
        run(&mut sp, "spBv1.0/g/NBIRTH/n1", &payload(0, &[]));
        let (mut r, _) = run(
            &mut sp,
            "spBv1.0/g/DBIRTH/n1/d1",
            &payload(
                1,
                &[
                    metric_with_unit("Supply Temp", 5, datatype::DOUBLE, 68.0, "°F"),
                    metric_with_unit("Return Water/Flow", 6, datatype::DOUBLE, 2.0, "l/s"),
                    metric_with_unit("Meter Energy", 7, datatype::FLOAT, 1500.0, "Wh"),
                    metric(Some("Pump Starts"), Some(8), datatype::INT32, 3.0),
                    metric_with_unit("Odd", 9, datatype::DOUBLE, 1.0, "furlongs"),
                    metric(Some("Alarm"), Some(10), datatype::BOOLEAN, 0.0),
                    string_metric("Mode", 11, "auto"),
                    metric(
                        Some("Device Control/Reboot"),
                        Some(12),
                        datatype::BOOLEAN,
                        0.0,
                    ),
                ],
            ),
        );
        r.sort_by(|a, b| a.0.cmp(&b.0));
        let want = [
            ("n1/d1/alarm", 0.0),
            ("n1/d1/meter_energy", 1.5),
            ("n1/d1/odd", 1.0),
            ("n1/d1/online", 1.0),
            ("n1/d1/pump_starts", 3.0),
            ("n1/d1/return_water_flow", 7.2),
            ("n1/d1/temp", 20.0),
        ];
        assert_eq!(r.len(), want.len(), "{r:?}");
        for ((name, v), (wn, wv)) in r.iter().zip(want) {
            assert_eq!(name, wn);
            assert!((v - wv).abs() < 1e-9, "{name}: {v} != {wv}");
        }
        {
            let cat = sp.catalog.read().unwrap();
            let (_, d) = cat.device_by_id("n1/d1").unwrap();
            assert_eq!(
                d.profile.name, "ahu",
                "the library profile's name: its rules apply"
            );
            let unit = |p: &str| d.profile.points[d.profile.point_index(p).unwrap()].unit;
            assert_eq!(unit("return_water_flow"), Unit::M3PerH);
            assert_eq!(unit("meter_energy"), Unit::KWh);
            assert_eq!(unit("pump_starts"), Unit::None);
            assert_eq!(unit("alarm"), Unit::Bool);
            assert_eq!(unit("odd"), Unit::None);
            assert!(
                d.profile.point_index("mode").is_none(),
                "strings are not taken"
            );
            assert!(d.profile.point_index("device_control_reboot").is_none());
        }
        // DDATA by alias reaches the taken points, converted.
        let (r, rb) = run(
            &mut sp,
            "spBv1.0/g/DDATA/n1/d1",
            &payload(2, &[metric(None, Some(6), datatype::DOUBLE, 1.0)]),
        );
        assert!(rb.is_none());
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, "n1/d1/return_water_flow");
        assert!((r[0].1 - 3.6).abs() < 1e-9, "{r:?}");
        // A rebirth announcing a new metric: the device keeps its points, the new metric is reported.
        let (mut out, mut problems) = (vec![], vec![]);
        sp.handle(
            "spBv1.0/g/DBIRTH/n1/d1",
            &payload(
                3,
                &[metric(Some("Brand New"), Some(20), datatype::DOUBLE, 1.0)],
            ),
            5,
            &mut out,
            &mut problems,
        )
        .unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].reason, "new_metric");
        assert_eq!(problems[0].point, "brand_new");
    }

    /// Aliases far apart go to the map, small ones to the Vec; DATA by name (no alias) finds the registration too.
    #[test]
    fn sparse_and_dense_aliases_and_data_by_name() {
        let mut sp = sparkplug();
        run(&mut sp, "spBv1.0/g/NBIRTH/n1", &payload(0, &[]));
        let big = 1_000_000_000_000;
        run(
            &mut sp,
            "spBv1.0/g/DBIRTH/n1/d1",
            &payload(
                1,
                &[
                    metric(Some("Supply Temp"), Some(big), datatype::DOUBLE, 14.5),
                    metric(Some("Fan"), Some(3), datatype::BOOLEAN, 1.0),
                ],
            ),
        );
        {
            let a = &sp.nodes[0]["n1"].aliases;
            assert_eq!(a.sparse.len(), 1);
            assert_eq!(a.dense.len(), 4);
        }
        let (r, rb) = run(
            &mut sp,
            "spBv1.0/g/DDATA/n1/d1",
            &payload(
                2,
                &[
                    metric(None, Some(big), datatype::DOUBLE, 15.5),
                    metric(Some("Supply Temp"), None, datatype::DOUBLE, 16.5),
                    metric(None, Some(3), datatype::BOOLEAN, 0.0),
                ],
            ),
        );
        assert!(rb.is_none());
        assert_eq!(
            r,
            [
                ("n1/d1/temp".to_string(), 15.5),
                ("n1/d1/temp".to_string(), 16.5),
                ("n1/d1/fan".to_string(), 0.0)
            ]
        );
    }

    #[test]
    fn point_names_from_metric_names() {
        assert_eq!(
            point_name("Inputs/Return Temp").as_deref(),
            Some("inputs_return_temp")
        );
        assert_eq!(
            point_name("  Fan--Speed (%) ").as_deref(),
            Some("fan_speed")
        );
        assert_eq!(point_name("/// "), None);
    }

    #[test]
    fn rebirth_payload_decodes_as_a_boolean_metric() {
        let bytes = rebirth_payload(1_700_000_000_000);
        let p = decode_payload(&bytes).unwrap();
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
