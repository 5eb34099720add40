//! From a model's quantities to what a real device sends: a JSON payload laid out by a profile's `mqtt:`
//! bindings, or Modbus registers laid out by its `modbus:` bindings. Generic over profiles: nothing here knows a
//! device model, so a new profile works as soon as a model produces quantities with its point names.
//!
//! The inverse of decoding: engineering value → `(value - offset) / scale` → the binding's type and word order.
//! Word orders follow the vendor vocabulary of `catalog::modbus_binding::WordOrder`: the value's big-endian bytes
//! are `ABCD..`; `CDAB` reverses the order of 16-bit words, `BADC` swaps the bytes inside each word, `DCBA` is the
//! whole value little-endian.

use super::model::Model;
use crate::catalog::modbus_binding::{DataType, ModbusBinding, WordOrder};
use crate::catalog::profile::{MqttValue, TimestampFormat};
use crate::catalog::{PointDef, Profile, Unit};
use serde_json::{Map, Value};

/// A point's current value in the point's own unit, or `None` when the model has no such quantity.
pub fn point_value(model: &Model, p: &PointDef) -> Option<f64> {
    let (v, unit) = model.value(&p.name)?;
    if p.unit == Unit::Bool || unit == Unit::Bool || p.unit == Unit::Count {
        return Some(v);
    }
    unit.convert_to(v, p.unit)
}

/// The raw (pre-scale) value a device would report for an engineering value.
pub fn to_raw(p: &PointDef, v: f64) -> f64 {
    let scale = if p.scale == 0.0 { 1.0 } else { p.scale };
    (v - p.offset) / scale
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn json_value(p: &PointDef, v: f64) -> Value {
    let map = p.mqtt.as_ref().map(|m| &m.map);
    if let Some(map) = map.filter(|m| !m.is_empty()) {
        if let Some((k, _)) = map
            .iter()
            .min_by(|a, b| (a.1 - v).abs().total_cmp(&(b.1 - v).abs()))
        {
            return Value::String(k.clone());
        }
    }
    if p.unit == Unit::Bool {
        return Value::Bool(v != 0.0);
    }
    let raw = round3(to_raw(p, v));
    if raw.fract() == 0.0 && raw.abs() < 1e15 {
        Value::from(raw as i64)
    } else {
        serde_json::Number::from_f64(raw)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// Sets `value` at an RFC 6901 pointer, creating objects on the way.
fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, part) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let obj = cur.as_object_mut().expect("made an object above");
        if i + 1 == parts.len() {
            obj.insert(part.clone(), value);
            return;
        }
        cur = obj.entry(part.clone()).or_insert(Value::Object(Map::new()));
    }
}

/// The MQTT payload a device with this profile would publish now; `at_ns` fills the profile's timestamp field.
/// `None` when the model produces none of the profile's MQTT points.
pub fn mqtt_payload(profile: &Profile, model: &Model, at_ns: i64) -> Option<Vec<u8>> {
    let mut root = Value::Object(Map::new());
    let mut any = false;
    for p in &profile.points {
        let Some(b) = &p.mqtt else { continue };
        let Some(v) = point_value(model, p) else {
            continue;
        };
        let jv = json_value(p, v);
        match &b.source {
            MqttValue::Raw => {
                let text = match jv {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                return Some(text.into_bytes());
            }
            MqttValue::Json(ptr) => {
                set_pointer(&mut root, ptr, jv);
                any = true;
            }
        }
    }
    if !any {
        return None;
    }
    if let Some(ts) = &profile.timestamp {
        let v = match ts.format {
            TimestampFormat::EpochS => Value::from(at_ns / 1_000_000_000),
            TimestampFormat::EpochMs => Value::from(at_ns / 1_000_000),
            TimestampFormat::EpochUs => Value::from(at_ns / 1_000),
            TimestampFormat::EpochNs => Value::from(at_ns),
            TimestampFormat::Rfc3339 => Value::String(
                jiff::Timestamp::from_nanosecond(at_ns as i128)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            ),
        };
        set_pointer(&mut root, &ts.json, v);
    }
    Some(serde_json::to_vec(&root).expect("JSON values serialize"))
}

/// Registers for a register-table binding (big-endian `ABCD` first, then reordered). Booleans in a register
/// (`bit`) are handled by the caller, which ORs bits of several points into one register.
pub fn registers(b: &ModbusBinding, raw: f64, text: &str) -> Vec<u16> {
    let be: Vec<u8> = match b.data_type {
        DataType::Bool => vec![0, u8::from(raw != 0.0)],
        DataType::U16 => (raw.round().clamp(0.0, u16::MAX as f64) as u16)
            .to_be_bytes()
            .to_vec(),
        DataType::I16 => (raw.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16)
            .to_be_bytes()
            .to_vec(),
        DataType::U32 => (raw.round().clamp(0.0, u32::MAX as f64) as u32)
            .to_be_bytes()
            .to_vec(),
        DataType::I32 => (raw.round().clamp(i32::MIN as f64, i32::MAX as f64) as i32)
            .to_be_bytes()
            .to_vec(),
        DataType::U64 => (raw.round().max(0.0) as u64).to_be_bytes().to_vec(),
        DataType::I64 => (raw.round() as i64).to_be_bytes().to_vec(),
        DataType::F32 => (raw as f32).to_be_bytes().to_vec(),
        DataType::F64 => raw.to_be_bytes().to_vec(),
        DataType::String => {
            let mut bytes: Vec<u8> = text.bytes().take(b.length as usize).collect();
            bytes.resize(b.data_type.registers(b.length) as usize * 2, 0);
            bytes
        }
    };
    let words: Vec<[u8; 2]> = be.chunks(2).map(|c| [c[0], c[1]]).collect();
    let ordered: Vec<[u8; 2]> = match (b.order, b.data_type) {
        // Text is a byte sequence; word order does not apply.
        (_, DataType::String) | (WordOrder::Abcd, _) => words,
        (WordOrder::Cdab, _) => words.into_iter().rev().collect(),
        (WordOrder::Badc, _) => words.into_iter().map(|[a, b]| [b, a]).collect(),
        (WordOrder::Dcba, _) => words.into_iter().rev().map(|[a, b]| [b, a]).collect(),
    };
    ordered.into_iter().map(u16::from_be_bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::modbus_binding::Table;

    fn binding(t: DataType, o: WordOrder) -> ModbusBinding {
        ModbusBinding {
            table: Table::Holding,
            address: 0,
            data_type: t,
            order: o,
            bit: None,
            length: 0,
        }
    }

    #[test]
    fn word_orders_match_the_vendor_vocabulary() {
        // 0x11223344 as ABCD / CDAB / BADC / DCBA, as vendor register maps print them.
        let r = |o| registers(&binding(DataType::U32, o), 0x1122_3344 as f64, "");
        assert_eq!(r(WordOrder::Abcd), vec![0x1122, 0x3344]);
        assert_eq!(r(WordOrder::Cdab), vec![0x3344, 0x1122]);
        assert_eq!(r(WordOrder::Badc), vec![0x2211, 0x4433]);
        assert_eq!(r(WordOrder::Dcba), vec![0x4433, 0x2211]);
        // IEEE 754 230.5f32 = 0x43668000.
        assert_eq!(
            registers(&binding(DataType::F32, WordOrder::Abcd), 230.5, ""),
            vec![0x4366, 0x8000]
        );
        assert_eq!(
            registers(&binding(DataType::I16, WordOrder::Abcd), -2.0, ""),
            vec![0xFFFE]
        );
        let f64_words = registers(&binding(DataType::F64, WordOrder::Cdab), 1.0, "");
        assert_eq!(f64_words, vec![0, 0, 0, 0x3FF0]);
    }

    #[test]
    fn strings_fill_their_registers_with_ascii() {
        let mut b = binding(DataType::String, WordOrder::Abcd);
        b.length = 5;
        assert_eq!(registers(&b, 0.0, "SIM-1x"), vec![0x5349, 0x4D2D, 0x3100]);
    }

    #[test]
    fn payloads_follow_the_profiles_json_layout_scale_and_timestamp() {
        let (profiles, errs) =
            crate::catalog::profile::load_dirs(&[
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("device_profiles")
            ]);
        assert!(errs.is_empty());
        let mut m = Model::new(super::super::site::ModelKind::Room, 1.0, 1);
        let env = super::super::model::Env {
            hour: 10.0,
            weekday: 2,
            outdoor: 5.0,
            dt: 60.0,
        };
        m.step(&env, &Default::default());
        let room = &profiles["generic-room-sensor"];
        let v: Value =
            serde_json::from_slice(&mqtt_payload(room, &m, 1_767_225_600_123_000_000).unwrap())
                .unwrap();
        assert_eq!(v["ts"], 1_767_225_600_123i64);
        assert!(v["temperature"].as_f64().unwrap() > 15.0);
        assert!(v["occupancy"].is_boolean());
        // zigbee2mqtt pressure is hPa on the wire (scale 100 to Pa).
        let z = &profiles["zigbee2mqtt-temp-humidity"];
        let v: Value = serde_json::from_slice(&mqtt_payload(z, &m, 0).unwrap()).unwrap();
        assert_eq!(v["pressure"], 1013);
        let mut plug = Model::new(super::super::site::ModelKind::Plug, 1.0, 1);
        plug.step(&env, &Default::default());
        let t = &profiles["tasmota-energy-plug"];
        let v: Value = serde_json::from_slice(&mqtt_payload(t, &plug, 0).unwrap()).unwrap();
        assert!(v["ENERGY"]["Total"].as_f64().unwrap() > 0.0, "{v}");
        // Shelly counts Wh where the model counts kWh.
        let s = &profiles["shelly-plus-pm"];
        let w: Value = serde_json::from_slice(&mqtt_payload(s, &plug, 0).unwrap()).unwrap();
        let ratio =
            w["aenergy"]["total"].as_f64().unwrap() / v["ENERGY"]["Total"].as_f64().unwrap();
        assert!((ratio - 1000.0).abs() < 1.0, "{ratio}");
    }
}
