//! What the demo watches while it runs: a pipeline stage that counts readings and follows energy counters, and
//! the one-line live status on the terminal.

use crate::catalog::{Catalog, DeviceIdx, Kind, Unit};
use crate::pipeline::Stage;
use crate::reading::Reading;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What the demo's stage has seen.
#[derive(Debug, Default)]
pub struct Observed {
    pub readings: u64,
    pub by_category: BTreeMap<&'static str, u64>,
    /// Simulated time of each device's last reading.
    pub last_seen: BTreeMap<DeviceIdx, (String, i64)>,
    /// Energy counters: point → (first value of the current day, last value, day, unit factor to kWh).
    pub counters: BTreeMap<u32, (f64, f64, i32, f64)>,
    /// Water counters (m3), same layout.
    pub water: BTreeMap<u32, (f64, f64, i32, f64)>,
}

impl Observed {
    pub fn today(m: &BTreeMap<u32, (f64, f64, i32, f64)>, day: i32) -> f64 {
        m.values()
            .filter(|c| c.2 == day)
            .map(|c| (c.1 - c.0).max(0.0) * c.3)
            .sum::<f64>()
            + 0.0 // no "-0.0" on an empty day
    }
}

/// A pipeline stage that counts readings per device and category and follows energy counters through the day.
pub struct DemoStage {
    pub seen: Arc<Mutex<Observed>>,
    pub tz: jiff::tz::TimeZone,
}

pub fn day_of(at_ns: i64, tz: &jiff::tz::TimeZone) -> i32 {
    jiff::Timestamp::from_nanosecond(at_ns as i128)
        .map(|t| {
            let d = t.to_zoned_datetime(tz.clone()).date();
            d.year() as i32 * 400 + d.day_of_year() as i32
        })
        .unwrap_or(0)
}

impl Stage for DemoStage {
    fn name(&self) -> &'static str {
        "demo"
    }
    fn process(&mut self, catalog: &Catalog, readings: &[Reading]) {
        let mut o = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        o.readings += readings.len() as u64;
        for r in readings {
            let (idx, d, p) = catalog.point(r.point);
            *o.by_category
                .entry(d.profile.category.as_str())
                .or_default() += 1;
            // A Modbus device's `online = 0` reading says it did not answer: not a sign of life.
            if p.name == "online" && r.value < 0.5 {
                continue;
            }
            let e = o.last_seen.entry(idx).or_insert_with(|| (d.id.clone(), 0));
            e.1 = e.1.max(r.at);
            if p.kind != Kind::Counter {
                continue;
            }
            let to_kwh = match p.unit {
                Unit::Wh => Some(0.001),
                Unit::KWh => Some(1.0),
                Unit::MWh => Some(1000.0),
                _ => None,
            };
            let to_m3 = match p.unit {
                Unit::M3 => Some(1.0),
                Unit::L => Some(0.001),
                _ => None,
            };
            let (map, factor) = match (to_kwh, to_m3) {
                (Some(f), _) if d.profile.category == crate::catalog::Category::Electricity => {
                    (&mut o.counters, f)
                }
                (_, Some(f)) => (&mut o.water, f),
                _ => continue,
            };
            let day = day_of(r.at, &self.tz);
            let c = map
                .entry(r.point.0)
                .or_insert((r.value, r.value, day, factor));
            if c.2 != day {
                // A new day starts from the counter's last value of the previous one.
                *c = (c.1, r.value, day, factor);
            } else {
                c.1 = r.value;
            }
        }
    }
}
