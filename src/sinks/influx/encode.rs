//! InfluxDB line protocol encoding.
//!
//! One line per (device, timestamp): `category,site=..,device=..,profile=..,building=.. point=1.5,other=2 <ns>`.
//! Series keys and field keys are escaped once when a device enters the catalog; encoding a reading is then a
//! copy of the prefix, the field key and a float (formatted by [`crate::line_protocol`]). Bad-quality and
//! non-finite readings are never written.

use crate::catalog::{Catalog, Unit};
use crate::line_protocol;
use crate::reading::{Quality, Reading};

/// What an encode call left out, so the caller can count it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub bad_quality: u64,
    pub non_finite: u64,
}

/// An append-only line-protocol buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
    pub lines: u32,
    pub readings: u32,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder::default()
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// Takes the encoded bytes out, leaving the encoder empty.
    pub fn take(&mut self) -> (Vec<u8>, u32, u32) {
        let out = (std::mem::take(&mut self.buf), self.lines, self.readings);
        self.lines = 0;
        self.readings = 0;
        out
    }

    /// Appends readings. Consecutive readings of one device with one timestamp share a line.
    pub fn encode(&mut self, catalog: &Catalog, readings: &[Reading]) -> Skipped {
        let mut skipped = Skipped::default();
        let mut current: Option<(u32, i64)> = None;
        for r in readings {
            if r.quality == Quality::Bad {
                skipped.bad_quality += 1;
                continue;
            }
            if !r.value.is_finite() {
                skipped.non_finite += 1;
                continue;
            }
            let (dev_idx, point_index) = catalog.point_index(r.point);
            let key = (dev_idx.0, r.at);
            let device = catalog.device(dev_idx);
            if current == Some(key) {
                self.buf.push(b',');
            } else {
                if let Some((_, at)) = current {
                    self.end_line(at);
                }
                self.buf.extend_from_slice(device.series.as_bytes());
                self.buf.push(b' ');
                current = Some(key);
            }
            self.buf
                .extend_from_slice(device.field_keys[point_index].as_bytes());
            self.buf.push(b'=');
            if device.profile.points[point_index].unit == Unit::Bool {
                line_protocol::push_bool(&mut self.buf, r.value != 0.0);
            } else {
                line_protocol::push_float_compact(&mut self.buf, r.value);
            }
            self.readings += 1;
        }
        if let Some((_, at)) = current {
            self.end_line(at);
        }
        skipped
    }

    fn end_line(&mut self, at: i64) {
        line_protocol::end_line(&mut self.buf, at);
        self.lines += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::profile::parse_profile;
    use crate::catalog::{Catalog, PointId};
    use crate::line_protocol::fields_in_line;
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    fn catalog() -> Catalog {
        let text = "schema: 1\nname: room\ncategory: environment\npoints:\n  - { name: temperature, unit: degC, kind: gauge, mqtt: { json: /t } }\n  - { name: occupied, unit: bool, kind: gauge, mqtt: { json: /o } }\n";
        let p = parse_profile(Path::new("room.yaml"), text).unwrap();
        let mut profiles = BTreeMap::new();
        profiles.insert("room".to_string(), Arc::new(p));
        let mut c = Catalog::new("north campus", profiles);
        let loc = BTreeMap::from([
            ("building".to_string(), "Main, East".to_string()),
            ("room".to_string(), "a=1".to_string()),
        ]);
        c.add_device("r 1", "room", loc, true).unwrap();
        c
    }

    #[test]
    fn escapes_and_groups_fields_per_timestamp() {
        let c = catalog();
        let mut e = Encoder::new();
        let rs = [
            Reading::good(PointId(0), 21.5, 1_000),
            Reading::good(PointId(1), 1.0, 1_000),
            Reading::good(PointId(0), 22.0, 2_000),
        ];
        e.encode(&c, &rs);
        let text = String::from_utf8(e.buf.clone()).unwrap();
        assert_eq!(
            text,
            "environment,building=Main\\,\\ East,device=r\\ 1,profile=room,room=a\\=1,site=north\\ campus temperature=21.5,occupied=true 1000\n\
             environment,building=Main\\,\\ East,device=r\\ 1,profile=room,room=a\\=1,site=north\\ campus temperature=22 2000\n"
        );
        assert_eq!((e.lines, e.readings), (2, 3));
        for line in text.lines() {
            assert_eq!(
                fields_in_line(line.as_bytes()),
                if line.contains("occupied") { 2 } else { 1 }
            );
        }
    }

    #[test]
    fn bad_and_non_finite_are_skipped_and_counted() {
        let c = catalog();
        let mut e = Encoder::new();
        let mut bad = Reading::good(PointId(0), 1.0, 5);
        bad.quality = Quality::Bad;
        let s = e.encode(&c, &[bad, Reading::good(PointId(0), f64::NAN, 5)]);
        assert_eq!(
            s,
            Skipped {
                bad_quality: 1,
                non_finite: 1
            }
        );
        assert!(e.is_empty());
    }

    #[test]
    fn fractional_and_large_values_keep_precision() {
        let c = catalog();
        let mut e = Encoder::new();
        e.encode(
            &c,
            &[
                Reading::good(PointId(0), 0.1 + 0.2, 1),
                Reading::good(PointId(0), 1e300, 2),
                Reading::good(PointId(0), -3.0, 3),
            ],
        );
        let text = String::from_utf8(e.buf).unwrap();
        assert!(text.contains("temperature=0.30000000000000004 1"), "{text}");
        assert!(text.contains("temperature=1e300 2"), "{text}");
        assert!(text.contains("temperature=-3 3"), "{text}");
    }

    /// Pins the exact bytes the encoder writes for every kind of value (a restructure must not change them).
    #[test]
    fn number_and_bool_forms_keep_their_exact_bytes() {
        let c = catalog();
        let mut e = Encoder::new();
        let values = [
            0.1 + 0.2,
            1e300,
            -3.0,
            -0.0,
            1e15,
            999_999_999_999_999.0,
            1e-7,
            -2.5e-300,
            123456.789,
        ];
        let rs: Vec<Reading> = values
            .iter()
            .enumerate()
            .flat_map(|(i, &v)| {
                [
                    Reading::good(PointId(0), v, i as i64 * 10),
                    Reading::good(
                        PointId(1),
                        if i % 2 == 0 { 0.0 } else { 2.0 },
                        i as i64 * 10,
                    ),
                ]
            })
            .collect();
        e.encode(&c, &rs);
        let series = "environment,building=Main\\,\\ East,device=r\\ 1,profile=room,room=a\\=1,site=north\\ campus";
        let want: String = [
            "temperature=0.30000000000000004,occupied=false 0",
            "temperature=1e300,occupied=true 10",
            "temperature=-3,occupied=false 20",
            "temperature=0,occupied=true 30",
            "temperature=1000000000000000.0,occupied=false 40",
            "temperature=999999999999999,occupied=true 50",
            "temperature=1e-7,occupied=false 60",
            "temperature=-2.5e-300,occupied=true 70",
            "temperature=123456.789,occupied=false 80",
        ]
        .iter()
        .map(|l| format!("{series} {l}\n"))
        .collect();
        assert_eq!(String::from_utf8(e.buf).unwrap(), want);
    }
}
