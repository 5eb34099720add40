//! Device profiles: what a model of device is (its points, units, and how to read each), loaded from
//! `device_profiles/*.yaml`.
//!
//! Loading parses each file into raw serde structs (with line numbers), then validates them into [`Profile`].
//! Every problem in every file is collected, so `caretaker check` lists them all at once. Nothing past this module
//! sees raw YAML.

use super::bacnet_binding::{BacnetBinding, RawBacnetBinding};
use super::modbus_binding::{ModbusBinding, ModbusQuirks, RawModbusBinding, RawModbusQuirks};
use super::units::{Category, Kind, Unit, parse_word};
use crate::diag::Diagnostic;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The only profile schema this build reads.
pub const SCHEMA: u32 = 1;

/// The synthetic point every profile with Modbus points gets: 1 while the device answers polls, 0 once it is
/// offline. Set by the Modbus source, never read from the device; profiles may not define it themselves.
pub const ONLINE_POINT: &str = "online";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    schema: Spanned<u32>,
    name: Spanned<String>,
    #[serde(default)]
    manufacturer: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    description: Option<String>,
    category: Spanned<String>,
    /// The equipment's Brick class (`AHU`), which rules select with `applies_to: { brick: AHU }`.
    #[serde(default)]
    brick: Option<Spanned<String>>,
    /// Where the map or payload comes from (documents, repositories and paths): a non-empty list of strings.
    #[serde(default)]
    sources: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    timestamp: Option<Spanned<RawTimestamp>>,
    #[serde(default)]
    modbus: Option<Spanned<RawModbusQuirks>>,
    #[serde(default)]
    mqtt: Option<Spanned<RawProfileMqtt>>,
    points: Vec<Spanned<RawPoint>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfileMqtt {
    /// A message carrying none of the profile's points is skipped rather than counted as malformed (Shelly's
    /// `events/rpc` carries other components' notifications too).
    #[serde(default)]
    ignore_unmatched: bool,
}

/// `json: /a` or `json: [/a, /b]` (alternatives, the first present wins).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimestamp {
    json: String,
    format: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoint {
    name: Spanned<String>,
    unit: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    /// The point's role as a Brick class (`Supply_Air_Temperature_Sensor`), which rules address with
    /// `point: { brick: ... }`.
    #[serde(default)]
    brick: Option<Spanned<String>>,
    #[serde(default)]
    scale: Option<f64>,
    #[serde(default)]
    offset: Option<f64>,
    #[serde(default)]
    valid_range: Option<Spanned<[f64; 2]>>,
    /// Raw values (before scale) the device sends to mean "no value" (Itron's alarm value 999999).
    #[serde(default)]
    invalid_raw: Option<Vec<f64>>,
    #[serde(default)]
    mqtt: Option<Spanned<RawMqttBinding>>,
    #[serde(default)]
    modbus: Option<Spanned<RawModbusBinding>>,
    #[serde(default)]
    bacnet: Option<Spanned<RawBacnetBinding>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqttBinding {
    #[serde(default)]
    json: Option<OneOrMany>,
    /// `sum`: a JSON array at the pointer (Tasmota's per-channel `"Power":[12,0]`) is stored as the sum of its
    /// numbers; without it an array is a bad value.
    #[serde(default)]
    array: Option<String>,
    #[serde(default)]
    raw: Option<bool>,
    /// Text states to numbers (`{ "ON": 1, "OFF": 0 }`) for payloads like Tasmota's `"POWER": "ON"`.
    #[serde(default)]
    map: Option<BTreeMap<String, f64>>,
}

/// How a reading's time is taken from an MQTT payload.
#[derive(Debug, Clone, PartialEq)]
pub struct TimestampSpec {
    /// RFC 6901 JSON pointer.
    pub json: String,
    pub format: TimestampFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampFormat {
    EpochS,
    EpochMs,
    EpochUs,
    EpochNs,
    Rfc3339,
}

impl TimestampFormat {
    const ALL: &'static [&'static str] =
        &["epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "rfc3339"];
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "epoch_s" => Self::EpochS,
            "epoch_ms" => Self::EpochMs,
            "epoch_us" => Self::EpochUs,
            "epoch_ns" => Self::EpochNs,
            "rfc3339" => Self::Rfc3339,
            _ => return None,
        })
    }
}

/// Where a point's value is in an MQTT payload.
#[derive(Debug, Clone, PartialEq)]
pub enum MqttValue {
    /// RFC 6901 JSON pointer into a JSON payload.
    Json(String),
    /// The whole payload is the value (`21.5`, `true`, `ON` with a map).
    Raw,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttBinding {
    pub source: MqttValue,
    /// Further JSON pointers tried in order when `source`'s is absent from a message (the same value in another
    /// envelope: Shelly's `status/switch:0` vs `events/rpc` `/params/switch:0/...`).
    pub alternatives: Vec<String>,
    /// An array at the pointer is stored as the sum of its numbers (`array: sum`).
    pub array_sum: bool,
    pub map: BTreeMap<String, f64>,
}

impl MqttBinding {
    /// Every JSON pointer of the binding, in the order they are tried (empty for a raw payload).
    pub fn pointers(&self) -> impl Iterator<Item = &str> {
        let first = match &self.source {
            MqttValue::Json(p) => Some(p.as_str()),
            MqttValue::Raw => None,
        };
        first
            .into_iter()
            .chain(self.alternatives.iter().map(String::as_str))
    }
}

/// One point of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct PointDef {
    pub name: String,
    /// The unit the value is stored and processed in: [`Unit::canonical`] of `wire_unit`.
    pub unit: Unit,
    /// The unit the profile wrote (what the device sends); `scale`, `offset` and `valid_range` below already
    /// include the conversion from it to `unit`.
    pub wire_unit: Unit,
    pub kind: Kind,
    pub description: Option<String>,
    /// The point's Brick class (validated against [`super::brick`]).
    pub brick: Option<String>,
    pub scale: f64,
    pub offset: f64,
    pub valid_range: Option<(f64, f64)>,
    /// Raw values that mean "no value" (`invalid_raw:`), rejected before scaling.
    pub invalid_raw: Vec<f64>,
    pub mqtt: Option<MqttBinding>,
    pub modbus: Option<ModbusBinding>,
    /// `bacnet: { object, property }`: read from a BACnet/IP device (`sources::bacnet`).
    pub bacnet: Option<BacnetBinding>,
    /// Line of the point in its profile file, for diagnostics that refer back to it.
    pub line: u64,
}

impl PointDef {
    /// Applies scale and offset to a raw value and checks the valid range.
    #[inline]
    pub fn convert(&self, raw: f64) -> Result<f64, f64> {
        if self.invalid_raw.contains(&raw) {
            return Err(raw);
        }
        let v = raw * self.scale + self.offset;
        if !v.is_finite() {
            return Err(v);
        }
        match self.valid_range {
            Some((lo, hi)) if v < lo || v > hi => Err(v),
            _ => Ok(v),
        }
    }
}

impl PointDef {
    /// Why [`convert`](PointDef::convert) rejected a value (the `Err` it returned).
    pub fn rejection(&self, v: f64) -> String {
        if !v.is_finite() {
            return format!("value {v} is not finite");
        }
        if self.invalid_raw.contains(&v) {
            return format!("raw value {v} means \"no value\" (invalid_raw)");
        }
        match self.valid_range {
            Some((lo, hi)) => format!("value {v} outside valid_range [{lo}, {hi}] ({})", self.unit),
            None => format!("value {v} rejected"),
        }
    }
}

/// A validated device profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub description: Option<String>,
    pub category: Category,
    /// The equipment's Brick class (`AHU`), validated against [`super::brick`].
    pub brick: Option<String>,
    /// Where its map or payload comes from; empty when the file has no `sources:` (`caretaker check` notes it).
    pub sources: Vec<String>,
    pub timestamp: Option<TimestampSpec>,
    pub modbus: ModbusQuirks,
    /// MQTT messages with none of the points are skipped, not malformed (`mqtt: { ignore_unmatched: true }`).
    pub mqtt_ignore_unmatched: bool,
    pub points: Vec<PointDef>,
    pub file: PathBuf,
}

impl Profile {
    pub fn point_index(&self, name: &str) -> Option<usize> {
        self.points.iter().position(|p| p.name == name)
    }
    /// The points whose Brick class is `class` (exactly: a rule asking for `Temperature_Sensor` does not get
    /// every temperature sensor of the unit).
    pub fn points_with_brick<'a>(&'a self, class: &'a str) -> impl Iterator<Item = usize> + 'a {
        self.points
            .iter()
            .enumerate()
            .filter(move |(_, p)| p.brick.as_deref() == Some(class))
            .map(|(i, _)| i)
    }
    /// Whether the equipment is a `class` (or a subclass of it) in Brick.
    pub fn is_brick(&self, class: &str) -> bool {
        self.brick
            .as_deref()
            .is_some_and(|b| super::brick::classes().is_a(b, class))
    }
    pub fn has_mqtt(&self) -> bool {
        self.points.iter().any(|p| p.mqtt.is_some())
    }
    pub fn has_modbus(&self) -> bool {
        self.points.iter().any(|p| p.modbus.is_some())
    }
    pub fn has_bacnet(&self) -> bool {
        self.points.iter().any(|p| p.bacnet.is_some())
    }
}

fn valid_ident(s: &str, allow_dash: bool) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (allow_dash && c == '-')
        })
}

fn line_of<T>(s: &Spanned<T>) -> Option<u64> {
    Some(s.referenced.line())
}

/// A file's diagnostics, collected so every problem is listed at once.
struct Errors<'a> {
    file: &'a Path,
    list: Vec<Diagnostic>,
}

impl Errors<'_> {
    fn push(&mut self, line: Option<u64>, key: &str, msg: String) {
        self.list.push(Diagnostic::new(self.file, line, key, msg))
    }
}

/// Parses and validates one profile file's text.
pub fn parse_profile(file: &Path, text: &str) -> Result<Profile, Vec<Diagnostic>> {
    let raw: RawProfile = match serde_saphyr::from_str(text) {
        Ok(r) => r,
        Err(e) => return Err(vec![yaml_error(file, &e)]),
    };
    let mut errs = Errors {
        file,
        list: Vec::new(),
    };
    check_schema_and_name(&raw, file, &mut errs);
    let category = parse_word(
        "category",
        &raw.category.value,
        Category::parse,
        Category::ALL,
    )
    .unwrap_or_else(|e| {
        errs.push(line_of(&raw.category), "category", e);
        Category::Other
    });
    let timestamp = raw
        .timestamp
        .as_ref()
        .and_then(|t| timestamp_spec(t, &mut errs));
    let brick = raw.brick.as_ref().map(|b| {
        if let Err(m) = super::brick::classes().check(&b.value) {
            errs.push(line_of(b), "brick", m);
        }
        b.value.clone()
    });
    let sources = match &raw.sources {
        None => Vec::new(),
        Some(s) => {
            if s.value.is_empty() || s.value.iter().any(|x| x.trim().is_empty()) {
                errs.push(
                    line_of(s),
                    "sources",
                    "sources: list where the map or payload comes from (a document, or repo and path), one non-empty string each".into(),
                );
            }
            s.value.clone()
        }
    };
    let modbus = match &raw.modbus {
        None => ModbusQuirks::default(),
        Some(q) => q.value.validate().unwrap_or_else(|es| {
            for (k, m) in es {
                errs.push(line_of(q), &k, m);
            }
            ModbusQuirks::default()
        }),
    };
    if raw.points.is_empty() {
        errs.push(None, "points", "a profile needs at least one point".into());
    }
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut points = Vec::with_capacity(raw.points.len());
    for (i, sp) in raw.points.iter().enumerate() {
        points.push(point_def(i, sp, &modbus, &mut seen, &mut errs));
    }
    if !errs.list.is_empty() {
        return Err(errs.list);
    }
    if points
        .iter()
        .any(|p| p.modbus.is_some() || p.bacnet.is_some())
        && !points.iter().any(|p| p.name == ONLINE_POINT)
    {
        points.push(PointDef {
            name: ONLINE_POINT.to_string(),
            unit: Unit::Bool,
            wire_unit: Unit::Bool,
            kind: Kind::Gauge,
            description: Some(
                "1 while the device answers polls (Modbus, BACnet), 0 once offline".into(),
            ),
            brick: None,
            scale: 1.0,
            offset: 0.0,
            valid_range: None,
            invalid_raw: Vec::new(),
            mqtt: None,
            modbus: None,
            bacnet: None,
            line: 0,
        });
    }
    Ok(Profile {
        name: raw.name.value,
        manufacturer: raw.manufacturer,
        model: raw.model,
        description: raw.description,
        category,
        brick,
        sources,
        timestamp,
        modbus,
        mqtt_ignore_unmatched: raw.mqtt.as_ref().is_some_and(|m| m.value.ignore_unmatched),
        points,
        file: file.to_path_buf(),
    })
}

/// The schema this build reads, and a profile name that is an identifier equal to the file name stem.
fn check_schema_and_name(raw: &RawProfile, file: &Path, errs: &mut Errors) {
    if raw.schema.value != SCHEMA {
        errs.push(
            line_of(&raw.schema),
            "schema",
            format!(
                "unsupported schema {}; this Caretaker reads schema {SCHEMA}",
                raw.schema.value
            ),
        );
    }
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if raw.name.value != stem {
        errs.push(
            line_of(&raw.name),
            "name",
            format!(
                "profile name `{}` must equal the file name stem `{stem}`",
                raw.name.value
            ),
        );
    }
    if !valid_ident(&raw.name.value, true) {
        errs.push(
            line_of(&raw.name),
            "name",
            "use lowercase letters, digits, `-` and `_`, starting with a letter".into(),
        );
    }
}

/// The profile's `timestamp:` (where MQTT payloads carry their time).
fn timestamp_spec(t: &Spanned<RawTimestamp>, errs: &mut Errors) -> Option<TimestampSpec> {
    if let Some(problem) = json_pointer_problem(&t.value.json) {
        errs.push(
            line_of(t),
            "timestamp.json",
            format!("`{}` is not a JSON pointer: {problem}", t.value.json),
        );
    }
    match parse_word(
        "timestamp format",
        &t.value.format,
        TimestampFormat::parse,
        TimestampFormat::ALL,
    ) {
        Ok(format) => Some(TimestampSpec {
            json: t.value.json.clone(),
            format,
        }),
        Err(e) => {
            errs.push(line_of(t), "timestamp.format", e);
            None
        }
    }
}

/// Validates point `i`. `seen`: the names so far and their lines (for duplicates); `quirks`: the profile's Modbus
/// settings its binding is read with.
fn point_def(
    i: usize,
    sp: &Spanned<RawPoint>,
    quirks: &ModbusQuirks,
    seen: &mut HashMap<String, u64>,
    errs: &mut Errors,
) -> PointDef {
    let p = &sp.value;
    let line = line_of(sp);
    let key = |k: &str| format!("points[{i}].{k}");
    let name = p.name.value.clone();
    if !valid_ident(&name, false) {
        errs.push(
            line_of(&p.name),
            &key("name"),
            format!(
                "point name `{name}`: use lowercase letters, digits and `_`, starting with a letter"
            ),
        );
    }
    if let Some(first) = seen.insert(name.clone(), line.unwrap_or(0)) {
        errs.push(
            line_of(&p.name),
            &key("name"),
            format!("duplicate point `{name}` (first defined on line {first})"),
        );
    }
    let unit = parse_word("unit", &p.unit.value, Unit::parse, Unit::ALL).unwrap_or_else(|e| {
        errs.push(line_of(&p.unit), &key("unit"), e);
        Unit::None
    });
    let kind = parse_word("kind", &p.kind.value, Kind::parse, Kind::ALL).unwrap_or_else(|e| {
        errs.push(line_of(&p.kind), &key("kind"), e);
        Kind::Gauge
    });
    let scale = p.scale.unwrap_or(1.0);
    if scale == 0.0 || !scale.is_finite() {
        errs.push(
            line,
            &key("scale"),
            "scale must be a finite, non-zero number".into(),
        );
    }
    let offset = p.offset.unwrap_or(0.0);
    let valid_range = p.valid_range.as_ref().map(|r| {
        let [lo, hi] = r.value;
        // Also rejects NaN bounds.
        if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
            errs.push(
                line_of(r),
                &key("valid_range"),
                format!("valid_range [{lo}, {hi}]: the first bound must be below the second"),
            );
        }
        (lo, hi)
    });
    let mqtt = p.mqtt.as_ref().and_then(|b| mqtt_binding(i, b, errs));
    let modbus = p
        .modbus
        .as_ref()
        .and_then(|b| modbus_binding(i, &name, b, quirks, errs));
    let bacnet = p.bacnet.as_ref().and_then(|b| match b.value.validate() {
        Ok(x) => Some(x),
        Err(es) => {
            for (k, m) in es {
                errs.push(line_of(b), &key(&k), m);
            }
            None
        }
    });
    if name == ONLINE_POINT && (p.modbus.is_some() || p.bacnet.is_some()) {
        errs.push(
            line_of(&p.name),
            &key("name"),
            format!(
                "`{ONLINE_POINT}` is reserved: Caretaker adds it to every Modbus and BACnet profile"
            ),
        );
    }
    if p.mqtt.is_none() && p.modbus.is_none() && p.bacnet.is_none() {
        errs.push(
            line,
            &key("mqtt"),
            format!("point `{name}` has no binding: add `mqtt:`, `modbus:` or `bacnet:`"),
        );
    }
    let brick = p.brick.as_ref().map(|b| {
        if let Err(m) = super::brick::classes().check(&b.value) {
            errs.push(line_of(b), &key("brick"), m);
        }
        b.value.clone()
    });
    // Store in the dimension's canonical unit: fold the conversion into scale, offset and range.
    let canonical = unit.canonical();
    let (f, o) = super::units::unit_conversion(unit, canonical).unwrap_or((1.0, 0.0));
    PointDef {
        name,
        unit: canonical,
        wire_unit: unit,
        kind,
        description: p.description.clone(),
        brick,
        scale: scale * f,
        offset: offset * f + o,
        valid_range: valid_range.map(|(lo, hi)| (lo * f + o, hi * f + o)),
        invalid_raw: p.invalid_raw.clone().unwrap_or_default(),
        mqtt,
        modbus,
        bacnet,
        line: line.unwrap_or(0),
    }
}

/// Why `ptr` is not an RFC 6901 JSON pointer, if it is not: it must be empty or start with `/`, and `~` only
/// starts the escapes `~0` (`~`) and `~1` (`/`). serde_json would silently never match `/co~2`.
fn json_pointer_problem(ptr: &str) -> Option<&'static str> {
    if !(ptr.is_empty() || ptr.starts_with('/')) {
        return Some("it must start with `/`");
    }
    let mut chars = ptr.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Some("`~` must be followed by `0` (for `~`) or `1` (for `/`)");
        }
    }
    None
}

/// Point `i`'s `mqtt:` binding: a JSON pointer or the raw payload, with an optional map of text states.
fn mqtt_binding(i: usize, b: &Spanned<RawMqttBinding>, errs: &mut Errors) -> Option<MqttBinding> {
    let key = |k: &str| format!("points[{i}].{k}");
    let map = b.value.map.clone().unwrap_or_default();
    let array_sum = match b.value.array.as_deref() {
        None => false,
        Some("sum") => true,
        Some(other) => {
            errs.push(
                line_of(b),
                &key("mqtt.array"),
                format!("unknown array mode `{other}`; expected: sum"),
            );
            false
        }
    };
    let pointers: Option<Vec<String>> = match &b.value.json {
        None => None,
        Some(OneOrMany::One(p)) => Some(vec![p.clone()]),
        Some(OneOrMany::Many(ps)) => Some(ps.clone()),
    };
    match (pointers, b.value.raw) {
        (Some(ptrs), None | Some(false)) => {
            if ptrs.is_empty() {
                errs.push(
                    line_of(b),
                    &key("mqtt.json"),
                    "an empty list: give one JSON pointer or a list of alternatives".into(),
                );
                return None;
            }
            let mut ok = true;
            for ptr in &ptrs {
                if let Some(problem) = json_pointer_problem(ptr) {
                    errs.push(
                        line_of(b),
                        &key("mqtt.json"),
                        format!("`{ptr}` is not a JSON pointer: {problem} (e.g. `/ENERGY/Power`)"),
                    );
                    ok = false;
                }
            }
            if !ok {
                return None;
            }
            let mut ptrs = ptrs.into_iter();
            Some(MqttBinding {
                source: MqttValue::Json(ptrs.next().unwrap_or_default()),
                alternatives: ptrs.collect(),
                array_sum,
                map,
            })
        }
        (None, Some(true)) => Some(MqttBinding {
            source: MqttValue::Raw,
            alternatives: Vec::new(),
            array_sum,
            map,
        }),
        (Some(_), Some(true)) => {
            errs.push(
                line_of(b),
                &key("mqtt"),
                "give either `json` or `raw: true`, not both".into(),
            );
            None
        }
        (None, _) => {
            errs.push(
                line_of(b),
                &key("mqtt"),
                "an mqtt binding needs `json: /pointer` or `raw: true`".into(),
            );
            None
        }
    }
}

/// Point `i`'s `modbus:` binding, read with the profile's address base; a register range wider than one request
/// may read is an error (the binding is kept).
fn modbus_binding(
    i: usize,
    name: &str,
    b: &Spanned<RawModbusBinding>,
    quirks: &ModbusQuirks,
    errs: &mut Errors,
) -> Option<ModbusBinding> {
    let key = |k: &str| format!("points[{i}].{k}");
    let m = match b.value.validate(quirks.address_base) {
        Ok(m) => m,
        Err(es) => {
            for (k, m) in es {
                errs.push(line_of(b), &key(&k), m);
            }
            return None;
        }
    };
    let limit = if m.table.is_bits() {
        None
    } else {
        Some(quirks.max_registers_per_request)
    };
    if let Some(limit) = limit.filter(|l| m.width() > *l) {
        errs.push(
            line_of(b),
            &key("modbus"),
            format!(
                "point `{name}` spans {} registers, more than max_registers_per_request {limit}: it could never be read in one request",
                m.width()
            ),
        );
    }
    Some(m)
}

/// Turns a YAML error into a diagnostic with its line, keeping the message to one line.
pub fn yaml_error(file: &Path, e: &serde_saphyr::Error) -> Diagnostic {
    let loc = e.location();
    let text = e.to_string();
    // serde-saphyr renders a snippet under the message; the first line is the message itself.
    let msg = text
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .to_string();
    Diagnostic::new(file, loc.map(|l| l.line()), "", msg).with_column(loc.map(|l| l.column()))
}

/// All profiles of a site, by name.
pub type Profiles = BTreeMap<String, Arc<Profile>>;

/// Loads every `*.yaml` profile under the given folders. Returns the profiles that loaded and every problem.
pub fn load_dirs(dirs: &[PathBuf]) -> (Profiles, Vec<Diagnostic>) {
    let mut profiles = Profiles::new();
    let mut errs = Vec::new();
    let (files, read_errs) = crate::diag::read_yaml_files(dirs, "profiles.dirs", "profile");
    errs.extend(read_errs);
    for (path, text) in files {
        match parse_profile(&path, &text) {
            Ok(p) => {
                if let Some(prev) = profiles.get(&p.name) {
                    errs.push(Diagnostic::new(
                        &path,
                        None,
                        "name",
                        format!(
                            "profile `{}` is also defined in {}",
                            p.name,
                            prev.file.display()
                        ),
                    ));
                } else {
                    profiles.insert(p.name.clone(), Arc::new(p));
                }
            }
            Err(es) => errs.extend(es),
        }
    }
    (profiles, errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Profile, Vec<Diagnostic>> {
        parse_profile(Path::new("/p/generic-room-sensor.yaml"), text)
    }

    const GOOD: &str = "schema: 1
name: generic-room-sensor
category: environment
timestamp: { json: /ts, format: epoch_ms }
points:
  - { name: temperature, unit: degC, kind: gauge, mqtt: { json: /temperature } }
  - { name: humidity, unit: percent, kind: gauge, mqtt: { json: /humidity }, valid_range: [0, 100] }
";

    #[test]
    fn the_documented_shape_loads() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.category, Category::Environment);
        assert_eq!(p.points.len(), 2);
        assert_eq!(p.points[1].valid_range, Some((0.0, 100.0)));
        assert_eq!(
            p.timestamp.as_ref().unwrap().format,
            TimestampFormat::EpochMs
        );
        assert_eq!(p.points[0].line, 6);
    }

    #[test]
    fn brick_classes_are_checked_with_file_line_and_hint() {
        let with = GOOD
            .replace(
                "category: environment",
                "category: environment\nbrick: Zone_Air_Temperature_Sensr",
            )
            .replace(
                "{ name: temperature,",
                "{ name: temperature, brick: Zone_Air_Temperature_Sensor,",
            );
        let errs = parse(&with).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].key.as_str(), errs[0].line), ("brick", Some(4)));
        assert!(errs[0].message.contains("did you mean"), "{errs:?}");
        let p = parse(
            &with
                .replace("Sensr", "Sensor")
                .replace("brick: Zone_Air_Temperature_Sensor\n", "brick: Space\n"),
        )
        .unwrap();
        assert_eq!(p.brick.as_deref(), Some("Space"));
        assert_eq!(
            p.points[0].brick.as_deref(),
            Some("Zone_Air_Temperature_Sensor")
        );
        assert_eq!(
            p.points_with_brick("Zone_Air_Temperature_Sensor")
                .collect::<Vec<_>>(),
            [0]
        );
        let errs = parse(&GOOD.replace("{ name: humidity,", "{ name: humidity, brick: Humidity,"))
            .unwrap_err();
        assert_eq!(
            (errs[0].key.as_str(), errs[0].line),
            ("points[1].brick", Some(7)),
            "{errs:?}"
        );
    }

    #[test]
    fn json_pointers_follow_rfc_6901() {
        for (from, to, key) in [
            ("json: /temperature", "json: /co~2", "points[0].mqtt.json"),
            ("json: /humidity", "json: /a~", "points[1].mqtt.json"),
            ("json: /ts", "json: /t~s", "timestamp.json"),
        ] {
            let errs = parse(&GOOD.replace(from, to)).unwrap_err();
            assert_eq!(errs.len(), 1, "{to}: {errs:?}");
            assert_eq!(errs[0].key, key);
            assert!(errs[0].message.contains("`~` must be followed"), "{errs:?}");
        }
        assert!(parse(&GOOD.replace("json: /temperature", "json: /a~1b~0c")).is_ok());
    }

    #[test]
    fn a_unit_typo_names_line_key_and_hint() {
        let text = GOOD.replace("unit: percent", "unit: percnt");
        let errs = parse(&text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        let e = &errs[0];
        assert_eq!(e.line, Some(7));
        assert_eq!(e.key, "points[1].unit");
        assert!(
            e.message.contains("did you mean `percent`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn every_error_is_listed() {
        let text = GOOD
            .replace("unit: percent", "unit: percnt")
            .replace(
                "kind: gauge, mqtt: { json: /temperature }",
                "kind: gage, mqtt: { json: temperature }",
            )
            .replace("category: environment", "category: enviroment");
        let errs = parse(&text).unwrap_err();
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"category"), "{keys:?}");
        assert!(keys.contains(&"points[0].kind"), "{keys:?}");
        assert!(keys.contains(&"points[0].mqtt.json"), "{keys:?}");
        assert!(keys.contains(&"points[1].unit"), "{keys:?}");
    }

    #[test]
    fn unknown_keys_and_bad_yaml_have_lines() {
        let text = GOOD.replace(
            "category: environment",
            "category: environment\ncolour: red",
        );
        let errs = parse(&text).unwrap_err();
        assert_eq!(errs[0].line, Some(4), "{errs:?}");
        assert!(errs[0].message.contains("colour"), "{errs:?}");
    }

    #[test]
    fn name_must_match_file_stem() {
        let errs = parse_profile(Path::new("/p/other.yaml"), GOOD).unwrap_err();
        assert!(errs[0].message.contains("file name stem"), "{errs:?}");
        assert_eq!(errs[0].line, Some(2));
    }

    #[test]
    fn sources_are_optional_but_never_empty() {
        assert!(parse(GOOD).unwrap().sources.is_empty());
        let with = GOOD.replace(
            "category: environment",
            "category: environment\nsources: [\"vendor manual p. 3\", \"owner/repo path/file.go\"]",
        );
        assert_eq!(parse(&with).unwrap().sources.len(), 2);
        for bad in ["sources: []", "sources: [\"\"]"] {
            let text = GOOD.replace(
                "category: environment",
                &format!("category: environment\n{bad}"),
            );
            let errs = parse(&text).unwrap_err();
            assert_eq!(errs[0].key, "sources", "{bad}: {errs:?}");
            assert_eq!(errs[0].line, Some(4), "{bad}");
        }
    }

    #[test]
    fn alternative_pointers_array_sum_and_invalid_raw() {
        let text = GOOD.replace(
            "mqtt: { json: /temperature } }",
            "mqtt: { json: [/t, /params/x:0/t], array: sum }, invalid_raw: [-999] }",
        );
        let p = parse(&text).unwrap();
        let b = p.points[0].mqtt.as_ref().unwrap();
        assert_eq!(b.pointers().collect::<Vec<_>>(), ["/t", "/params/x:0/t"]);
        assert!(b.array_sum);
        assert_eq!(p.points[0].convert(-999.0), Err(-999.0));
        assert!(p.points[0].rejection(-999.0).contains("invalid_raw"));
        for (from, to, key) in [
            ("json: /temperature", "json: []", "points[0].mqtt.json"),
            ("json: /temperature", "json: [/a, b]", "points[0].mqtt.json"),
            (
                "json: /temperature",
                "json: /a, array: first",
                "points[0].mqtt.array",
            ),
        ] {
            let errs = parse(&GOOD.replace(from, to)).unwrap_err();
            assert_eq!(errs[0].key, key, "{to}: {errs:?}");
        }
    }

    #[test]
    fn points_are_stored_in_the_canonical_unit_of_their_dimension() {
        let text = GOOD.replace("unit: degC", "unit: Wh").replace(
            "mqtt: { json: /temperature } }",
            "mqtt: { json: /e }, scale: 10, valid_range: [0, 5000] }",
        );
        let p = parse(&text).unwrap();
        let e = &p.points[0];
        assert_eq!((e.unit, e.wire_unit), (Unit::KWh, Unit::Wh));
        // 300 on the wire, ×10 Wh = 3000 Wh = 3 kWh; the range [0, 5000] Wh is [0, 5] kWh.
        assert_eq!(e.convert(300.0), Ok(3.0));
        assert_eq!(e.valid_range, Some((0.0, 5.0)));
        assert!(e.convert(600.0).is_err());
        // Temperatures stay as written (K marks differences).
        let k = parse(&GOOD.replace("unit: degC", "unit: K")).unwrap();
        assert_eq!(k.points[0].unit, Unit::Kelvin);
        assert_eq!(k.points[0].convert(5.0), Ok(5.0));
    }

    #[test]
    fn convert_applies_scale_offset_and_range() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.points[1].convert(50.0), Ok(50.0));
        assert!(p.points[1].convert(150.0).is_err());
    }
}
