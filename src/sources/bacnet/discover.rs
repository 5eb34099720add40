//! `caretaker bacnet discover`: Who-Is, then each answering device's object list with names, units and present
//! values, and a starting profile per device model. How a facilities engineer meets a new BMS.

use super::client::{Ack, Endpoint, RequestError};
use super::codec::{self, Value, prop};
use crate::catalog::bacnet_binding::{ObjectId, ObjectType};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// One object of a discovered device.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FoundObject {
    /// `analog-input:1`, or `type-N:I` for types Caretaker does not read.
    pub object: String,
    #[serde(skip)]
    pub id: Option<ObjectId>,
    pub name: String,
    pub description: Option<String>,
    /// BACnet engineering units name and Caretaker unit word (analog objects).
    pub units: Option<(String, &'static str)>,
    pub present_value: Option<f64>,
}

/// One device that answered Who-Is.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FoundDevice {
    pub address: String,
    pub device_instance: u32,
    pub max_apdu: u32,
    pub segmentation: u32,
    pub vendor_id: u32,
    pub name: String,
    pub vendor: String,
    pub model: String,
    pub objects: Vec<FoundObject>,
    /// Problems met while reading it (listed, not fatal).
    pub notes: Vec<String>,
}

async fn read(
    ep: &Endpoint,
    peer: SocketAddr,
    object: (u16, u32),
    property: u32,
    index: Option<u32>,
) -> Result<Vec<Value>, RequestError> {
    let mut body = Vec::new();
    codec::put_read_property(&mut body, object, property, index);
    match ep
        .request(peer, codec::SERVICE_READ_PROPERTY, &body)
        .await?
    {
        Ack::Complex(d) => Ok(codec::decode_read_property_ack(&d)?.1),
        Ack::Simple => Ok(Vec::new()),
    }
}

async fn read_text(
    ep: &Endpoint,
    peer: SocketAddr,
    object: (u16, u32),
    property: u32,
) -> Option<String> {
    match read(ep, peer, object, property, None).await.ok()?.first()? {
        Value::CharacterString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The object list: whole (segmented if the device can), else element by element.
async fn object_list(
    ep: &Endpoint,
    peer: SocketAddr,
    device: (u16, u32),
    notes: &mut Vec<String>,
) -> Vec<(u16, u32)> {
    let ids = |v: Vec<Value>| -> Vec<(u16, u32)> {
        v.into_iter()
            .filter_map(|x| match x {
                Value::ObjectId(t, i) => Some((t, i)),
                _ => None,
            })
            .collect()
    };
    match read(ep, peer, device, prop::OBJECT_LIST, None).await {
        Ok(v) => return ids(v),
        Err(e) => notes.push(format!(
            "object-list in one read failed ({e}); reading it element by element"
        )),
    }
    let n = match read(ep, peer, device, prop::OBJECT_LIST, Some(0)).await {
        Ok(v) => v.first().and_then(Value::as_f64).unwrap_or(0.0) as u32,
        Err(e) => {
            notes.push(format!("object-list length unreadable: {e}"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for i in 1..=n.min(10_000) {
        if let Ok(v) = read(ep, peer, device, prop::OBJECT_LIST, Some(i)).await {
            out.extend(ids(v));
        }
    }
    out
}

/// Sends Who-Is to `target`, waits `wait` for I-Am answers, then reads each device.
pub async fn discover(
    ep: &Endpoint,
    target: SocketAddr,
    wait: Duration,
) -> std::io::Result<Vec<FoundDevice>> {
    let mut rx = ep.i_am_listener();
    ep.who_is(target, None).await?;
    let mut found: BTreeMap<u32, (SocketAddr, codec::IAm)> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok((addr, i))) => {
                found.entry(i.device_instance).or_insert((addr, i));
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let mut out = Vec::new();
    for (instance, (addr, i)) in found {
        let dev = (ObjectType::Device.code(), instance);
        let mut notes = Vec::new();
        let name = read_text(ep, addr, dev, prop::OBJECT_NAME)
            .await
            .unwrap_or_default();
        let vendor = read_text(ep, addr, dev, prop::VENDOR_NAME)
            .await
            .unwrap_or_default();
        let model = read_text(ep, addr, dev, prop::MODEL_NAME)
            .await
            .unwrap_or_default();
        let mut objects = Vec::new();
        for (t, inst) in object_list(ep, addr, dev, &mut notes).await {
            let kind = ObjectType::from_code(t);
            if kind == Some(ObjectType::Device) {
                continue;
            }
            let id = kind
                .filter(|k| *k != ObjectType::Device)
                .map(|kind| ObjectId {
                    kind,
                    instance: inst,
                });
            let object = match id {
                Some(o) => o.to_string(),
                None => format!("type-{t}:{inst}"),
            };
            let name = read_text(ep, addr, (t, inst), prop::OBJECT_NAME)
                .await
                .unwrap_or_default();
            let (units, present_value, description) = if id.is_some() {
                let units = if kind.is_some_and(ObjectType::is_analog) {
                    read(ep, addr, (t, inst), prop::UNITS, None)
                        .await
                        .ok()
                        .and_then(|v| match v.first() {
                            Some(Value::Enumerated(u)) => Some(super::units::lookup(*u)),
                            _ => None,
                        })
                } else {
                    None
                };
                let pv = read(ep, addr, (t, inst), prop::PRESENT_VALUE, None)
                    .await
                    .ok()
                    .and_then(|v| v.first().and_then(Value::as_f64));
                let description = read_text(ep, addr, (t, inst), prop::DESCRIPTION)
                    .await
                    .filter(|s| !s.trim().is_empty());
                (units, pv, description)
            } else {
                (None, None, None)
            };
            objects.push(FoundObject {
                object,
                id,
                name,
                description,
                units,
                present_value,
            });
        }
        out.push(FoundDevice {
            address: addr.to_string(),
            device_instance: instance,
            max_apdu: i.max_apdu,
            segmentation: i.segmentation,
            vendor_id: i.vendor_id,
            name,
            vendor,
            model,
            objects,
            notes,
        });
    }
    Ok(out)
}

/// A point or profile name from free text: lowercase letters, digits and `_`, starting with a letter.
pub fn ident(text: &str, dash: bool) -> String {
    let mut s = String::new();
    for c in text.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with(['_', '-']) && !s.is_empty() {
            s.push(if dash { '-' } else { '_' });
        }
    }
    let s = s.trim_end_matches(['_', '-']).to_string();
    match s.chars().next() {
        Some(c) if c.is_ascii_lowercase() => s,
        Some(_) => format!("p{}{s}", if dash { '-' } else { '_' }),
        None => "point".into(),
    }
}

/// The profile file name (stem) for a device: its model, else its name, else its instance.
pub fn profile_name(d: &FoundDevice) -> String {
    let base = if !d.model.trim().is_empty() {
        format!("{} {}", d.vendor, d.model)
    } else if !d.name.trim().is_empty() {
        d.name.clone()
    } else {
        format!("bacnet device {}", d.device_instance)
    };
    ident(&base, true)
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A starting profile for a device: one point per readable object, named from its object name.
pub fn profile_yaml(d: &FoundDevice, today: &str) -> String {
    let name = profile_name(d);
    let mut y = String::new();
    y.push_str("schema: 1\n");
    y.push_str(&format!("name: {name}\n"));
    if !d.vendor.is_empty() {
        y.push_str(&format!("manufacturer: {}\n", yaml_str(&d.vendor)));
    }
    if !d.model.is_empty() {
        y.push_str(&format!("model: {}\n", yaml_str(&d.model)));
    }
    y.push_str(&format!(
        "description: {}\n",
        yaml_str(&format!(
            "Starting profile written by `caretaker bacnet discover` from device {} ({}); check units, kinds and ranges",
            d.device_instance, d.name
        ))
    ));
    y.push_str("category: hvac\n");
    y.push_str(&format!(
        "sources:\n  - {}\n",
        yaml_str(&format!(
            "caretaker bacnet discover, device {} at {}, {today}",
            d.device_instance, d.address
        ))
    ));
    y.push_str("points:\n");
    let mut used: BTreeMap<String, u32> = BTreeMap::new();
    for o in &d.objects {
        let Some(id) = o.id else { continue };
        let mut point = ident(
            if o.name.is_empty() {
                &o.object
            } else {
                &o.name
            },
            false,
        );
        if point == crate::catalog::profile::ONLINE_POINT {
            point.push_str("_point");
        }
        let n = used.entry(point.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            point = format!("{point}_{n}");
        }
        let unit = if id.kind.is_binary() {
            "bool"
        } else {
            o.units.as_ref().map(|u| u.1).unwrap_or("none")
        };
        let mut comment = String::new();
        if let Some((bacnet, word)) = &o.units {
            if *word == "none" && bacnet != "no-units" {
                comment = format!("  # BACnet units: {bacnet}");
            }
        }
        let desc = o
            .description
            .as_ref()
            .map(|d| format!(", description: {}", yaml_str(d)))
            .unwrap_or_default();
        y.push_str(&format!(
            "  - {{ name: {point}, unit: {unit}, kind: gauge{desc}, bacnet: {{ object: \"{}\" }} }}{comment}\n",
            o.object
        ));
    }
    y
}

/// The discovery result as text, one device after the other.
pub fn render(devices: &[FoundDevice]) -> String {
    let mut s = String::new();
    if devices.is_empty() {
        s.push_str("no device answered Who-Is\n");
    }
    for d in devices {
        s.push_str(&format!(
            "device {} at {}: \"{}\" vendor \"{}\" model \"{}\" (vendor id {}, max APDU {}, segmentation {})\n",
            d.device_instance,
            d.address,
            d.name,
            d.vendor,
            d.model,
            d.vendor_id,
            d.max_apdu,
            match d.segmentation {
                0 => "both",
                1 => "transmit",
                2 => "receive",
                _ => "none",
            }
        ));
        for o in &d.objects {
            let value = o
                .present_value
                .map(|v| format!("{v}"))
                .unwrap_or_else(|| "-".into());
            let units = match &o.units {
                Some((bacnet, word)) => format!(" {word} ({bacnet})"),
                None => String::new(),
            };
            s.push_str(&format!(
                "  {:<24} {:<32} {value}{units}\n",
                o.object, o.name
            ));
        }
        for n in &d.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_profiles_load() {
        let d = FoundDevice {
            address: "127.0.0.1:47808".into(),
            device_instance: 1205,
            max_apdu: 1476,
            segmentation: 0,
            vendor_id: 999,
            name: "AHU 5".into(),
            vendor: "Acme Controls".into(),
            model: "AHU-1000 v2".into(),
            objects: vec![
                FoundObject {
                    object: "analog-input:1".into(),
                    id: Some(ObjectId {
                        kind: ObjectType::AnalogInput,
                        instance: 1,
                    }),
                    name: "Supply Air Temp".into(),
                    description: Some("SAT \"quoted\"".into()),
                    units: Some(("degrees-celsius".into(), "degC")),
                    present_value: Some(21.5),
                },
                FoundObject {
                    object: "binary-output:2".into(),
                    id: Some(ObjectId {
                        kind: ObjectType::BinaryOutput,
                        instance: 2,
                    }),
                    name: "Supply Air Temp".into(),
                    description: None,
                    units: None,
                    present_value: Some(1.0),
                },
                FoundObject {
                    object: "type-17:1".into(),
                    id: None,
                    name: "Schedule".into(),
                    description: None,
                    units: None,
                    present_value: None,
                },
            ],
            notes: vec![],
        };
        assert_eq!(profile_name(&d), "acme-controls-ahu-1000-v2");
        let text = profile_yaml(&d, "2026-12-06");
        let p = crate::catalog::profile::parse_profile(
            std::path::Path::new("/x/acme-controls-ahu-1000-v2.yaml"),
            &text,
        )
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        let names: Vec<_> = p.points.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["supply_air_temp", "supply_air_temp_2", "online"]);
        assert!(render(std::slice::from_ref(&d)).contains("degC (degrees-celsius)"));
        assert_eq!(ident("3rd floor", false), "p_3rd_floor");
    }
}
