//! Energy: meter readings → interval consumption → rollups, groups, cost, baselines and reports.
//!
//! - [`counter`]: readings of one meter point → consumption per settlement slot (the meter edge cases live here).
//! - [`store`]: the local SQLite store (`[state] dir/energy.sqlite`): one row per meter and UTC day holding its
//!   slots, plus each meter's converter state so a restart continues where it stopped.
//! - [`config`]: the `[energy]` section: settlement period, calendar, tariffs, virtual meters.
//! - [`report`]: rollups by hour/day/week/month in the site's time zone, grouped by device, category or a
//!   location tag, with cost, baseline and after-hours consumption; table, CSV, JSON and HTML output.
//! - [`stage`]: the pipeline stage that runs the converters on live readings.
//! - [`import`]: `caretaker energy import` (a meter's historic CSV export).
//!
//! Units: energy is reported in kWh, volumes (water, gas) in m3, whatever unit the meter point uses.

pub mod cli;
pub mod config;
pub mod counter;
pub mod html;
pub mod import;
pub mod report;
pub mod stage;
pub mod store;

use crate::catalog::{Device, Kind, PointDef, Unit};
use counter::{MeterKind, MeterSpec};

/// The store's base unit for a point unit, and the multiplier into it, for meterable units.
pub fn base_unit(unit: Unit) -> Option<(&'static str, f64, bool)> {
    // (base unit, multiplier, is power)
    Some(match unit {
        Unit::Wh => ("kWh", 0.001, false),
        Unit::KWh => ("kWh", 1.0, false),
        Unit::MWh => ("kWh", 1000.0, false),
        Unit::GJ => ("kWh", 1_000_000.0 / 3600.0, false),
        Unit::M3 => ("m3", 1.0, false),
        Unit::L => ("m3", 0.001, false),
        Unit::W => ("kWh", 0.001, true),
        Unit::KW => ("kWh", 1.0, true),
        Unit::MW => ("kWh", 1000.0, true),
        _ => return None,
    })
}

/// The point of a device that measures its consumption, if any: the first counter of energy or volume; else a
/// power point (`power_total`, then `power`, then the only power point). One meter point per device keeps the
/// grouping unambiguous (a three-phase meter's per-phase powers are not added to its total).
pub fn meter_point(device: &Device) -> Option<(usize, &PointDef)> {
    let pts = &device.profile.points;
    if let Some(i) = pts
        .iter()
        .position(|p| p.kind == Kind::Counter && matches!(base_unit(p.unit), Some((_, _, false))))
    {
        return Some((i, &pts[i]));
    }
    let power: Vec<usize> = (0..pts.len())
        .filter(|&i| {
            matches!(base_unit(pts[i].unit), Some((_, _, true))) && pts[i].kind == Kind::Gauge
        })
        .collect();
    for name in ["power_total", "power"] {
        if let Some(&i) = power.iter().find(|&&i| pts[i].name == name) {
            return Some((i, &pts[i]));
        }
    }
    if power.len() == 1 {
        return Some((power[0], &pts[power[0]]));
    }
    None
}

/// How the converter treats a point: counter (with the register's wrap value when it is an unsigned Modbus
/// integer) or power.
pub fn meter_spec(point: &PointDef) -> Option<MeterSpec> {
    let (_, to_base, power) = base_unit(point.unit)?;
    if power {
        return Some(MeterSpec {
            kind: MeterKind::Power,
            to_base,
        });
    }
    use crate::catalog::modbus_binding::DataType;
    let wrap = point.modbus.as_ref().and_then(|m| {
        let bits = match m.data_type {
            DataType::U16 => 16,
            DataType::U32 => 32,
            DataType::U64 => 64,
            _ => return None,
        };
        Some(2f64.powi(bits) * point.scale.abs())
    });
    Some(MeterSpec {
        kind: MeterKind::Counter { wrap },
        to_base,
    })
}

/// Relative deviation of a device's consumption on a local day from its baseline (`0.3` = 30 % above), for the
/// rules engine's `energy: { above_baseline_by: 30%, for: 3d }`. `None` when the store has no baseline for it
/// (too little history) or no data that day.
pub fn baseline_deviation(
    store: &store::Store,
    settings: &config::EnergyConfig,
    tz: &jiff::tz::TimeZone,
    device: &str,
    day: jiff::civil::Date,
) -> anyhow::Result<Option<f64>> {
    Ok(
        daily_deviations(store, settings, tz, device, day, day.tomorrow()?)?
            .first()
            .and_then(|d| d.1),
    )
}

/// [`baseline_deviation`] for every local day in `[from, to)` in one pass over the store (a rule's `for: 3d`
/// asks for the last three days at once).
pub fn daily_deviations(
    store: &store::Store,
    settings: &config::EnergyConfig,
    tz: &jiff::tz::TimeZone,
    device: &str,
    from: jiff::civil::Date,
    to: jiff::civil::Date,
) -> anyhow::Result<Vec<(jiff::civil::Date, Option<f64>)>> {
    let q = report::Query {
        from,
        to,
        by: report::By::Day,
        group: report::Group::Device,
        devices: Some(vec![device.to_string()]),
    };
    let rep = report::build(store, settings, tz, &q, None)?;
    let mut out = Vec::new();
    let mut d = from;
    while d < to {
        let label = d.to_string();
        let dev = rep
            .rows
            .iter()
            .filter(|r| r.group == device && r.period == label)
            .find_map(|r| {
                let b = r.baseline?;
                (b > 0.0).then(|| (r.consumption - b) / b)
            });
        out.push((d, dev));
        d = d.tomorrow()?;
    }
    Ok(out)
}
