//! Energy: meter readings → interval consumption → rollups, groups, cost, baselines and reports.
//!
//! - [`counter`]: readings of one meter point → consumption per settlement slot (the meter edge cases live here).
//! - [`store`]: the local SQLite store (`[state] dir/energy.sqlite`): one row per meter and UTC day holding its
//!   slots, plus each meter's converter state so a restart continues where it stopped.
//! - [`config`]: the `[energy]` section: settlement period, calendar, tariffs, virtual meters.
//! - [`report`]: rollups by hour/day/week/month in the site's time zone, grouped by device, category or a
//!   location tag, with cost, baseline and after-hours consumption; table, CSV, JSON and HTML output
//!   ([`report::html`]).
//! - [`stage`]: the pipeline stage that runs the converters on live readings.
//! - [`import`]: `caretaker energy import` (a meter's historic CSV export).
//!
//! Units: energy is reported in kWh, volumes (water, gas) in m3, whatever unit the meter point uses.

pub mod config;
pub mod counter;
pub mod import;
pub mod report;
pub mod stage;
pub mod store;

use crate::catalog::units::unit_conversion;
use crate::catalog::{Category, Device, Kind, PointDef, Unit};
use counter::{MeterKind, MeterSpec};

/// The store's base unit for a point unit, and the multiplier into it, for meterable units: energy into kWh,
/// volumes into m3, power in kW (integrated into kWh). The multiplier comes from [`unit_conversion`].
pub fn base_unit(unit: Unit) -> Option<(&'static str, f64, bool)> {
    // (base unit, multiplier, is power)
    let (base, per, power) = match unit.dimension() {
        "energy" => (Unit::KWh, Unit::KWh, false),
        "volume" => (Unit::M3, Unit::M3, false),
        "power" => (Unit::KWh, Unit::KW, true),
        _ => return None,
    };
    let (factor, _) = unit_conversion(unit, per)?;
    Some((base.as_str(), factor, power))
}

/// What a meter point measures, as Home Assistant's energy dashboard sorts them: grid import (the default for
/// electricity), grid export, generation (PV), gas, water, thermal (heat or cooling). Import, gas, water and
/// thermal are consumption; export and generation are reported beside it (`export`, `generation`, `net` =
/// consumption − export), never added to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Import,
    Export,
    Generation,
    Gas,
    Water,
    Thermal,
}

impl Role {
    pub const NAMES: &'static [&'static str] = &[
        "import",
        "export",
        "generation",
        "pv",
        "gas",
        "water",
        "thermal",
    ];

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "import" | "consumption" | "grid_import" => Role::Import,
            "export" | "grid_export" | "return" => Role::Export,
            "generation" | "pv" | "solar" | "production" => Role::Generation,
            "gas" => Role::Gas,
            "water" => Role::Water,
            "thermal" | "heat" | "cooling" => Role::Thermal,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Import => "import",
            Role::Export => "export",
            Role::Generation => "generation",
            Role::Gas => "gas",
            Role::Water => "water",
            Role::Thermal => "thermal",
        }
    }

    /// Counted as the device's consumption (the report's `consumption`, cost, baseline).
    pub fn is_consumption(self) -> bool {
        !matches!(self, Role::Export | Role::Generation)
    }

    /// The role of a device's default meter point, from its category.
    pub fn of_category(category: Category) -> Role {
        match category {
            Category::Gas => Role::Gas,
            Category::Water => Role::Water,
            Category::Heat => Role::Thermal,
            _ => Role::Import,
        }
    }
}

/// The role of point `index` of `device` as a meter, if it is one: a `[[energy.meters]]` entry; else the device's
/// default meter point ([`meter_point`], its role from the category); else a counter named `energy_export` on a
/// device that meters (the export register of a bidirectional meter: SDM630, EM24, iEM3000, ...).
pub fn meter_role(device: &Device, index: usize, roles: &[config::MeterRole]) -> Option<Role> {
    let p = device.profile.points.get(index)?;
    if let Some(r) = roles
        .iter()
        .find(|r| r.device == device.id && r.point == p.name)
    {
        return meter_spec(p).map(|_| r.role);
    }
    let main = meter_point(device)?;
    if main.0 == index {
        return Some(Role::of_category(device.profile.category));
    }
    (p.name == "energy_export"
        && p.kind == Kind::Counter
        && p.unit.dimension() == "energy"
        && device.profile.category == Category::Electricity)
        .then_some(Role::Export)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::profile::{load_dirs, parse_profile};

    #[test]
    fn each_device_gets_one_meter_point_in_base_units() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("device_profiles");
        let (profiles, _) = load_dirs(&[dir]);
        let mut cat = crate::catalog::Catalog::new("t", profiles);
        let pick = |cat: &mut crate::catalog::Catalog, profile: &str| {
            let idx = cat
                .add_device(profile, profile, Default::default(), true)
                .unwrap();
            let d = cat.device(idx);
            meter_point(d).map(|(_, p)| (p.name.clone(), meter_spec(p).unwrap()))
        };
        let (name, spec) = pick(&mut cat, "tasmota-energy-plug").unwrap();
        assert_eq!(name, "energy_total");
        assert_eq!(spec.kind, MeterKind::Counter { wrap: None });
        let (name, spec) = pick(&mut cat, "shelly-plus-pm").unwrap();
        // Wh on the wire, stored in kWh (the canonical energy unit): no factor left for the energy module.
        assert_eq!(
            (name.as_str(), spec.to_base),
            ("energy_total", 1.0),
            "Wh → kWh at load"
        );
        let (name, spec) = pick(&mut cat, "shelly-pro-3em").unwrap();
        assert_eq!(
            name, "energy_import",
            "the emdata:0 counter, not an integral of power"
        );
        assert_eq!(spec.kind, MeterKind::Counter { wrap: None });
        let (name, spec) = pick(&mut cat, "schneider-iem3000").unwrap();
        assert_eq!(name, "energy_total");
        assert_eq!(spec.kind, MeterKind::Counter { wrap: None });
        assert!(pick(&mut cat, "generic-room-sensor").is_none());
    }

    #[test]
    fn meterable_units_and_their_multipliers() {
        // The table base_unit computes from catalog::units, written out: no other unit is a meter.
        let want = |u: Unit| -> Option<(&'static str, f64, bool)> {
            Some(match u {
                Unit::Wh => ("kWh", 0.001, false),
                Unit::KWh => ("kWh", 1.0, false),
                Unit::MWh => ("kWh", 1000.0, false),
                Unit::GJ => ("kWh", 1_000_000.0 / 3600.0, false),
                Unit::M3 => ("m3", 1.0, false),
                Unit::L => ("m3", 0.001, false),
                Unit::W => ("kWh", 0.001, true),
                Unit::KW => ("kWh", 1.0, true),
                Unit::MW => ("kWh", 1000.0, true),
                // US customary (factors in catalog::units, NIST SP 811).
                Unit::Gal => ("m3", 3.785_411_784 / 1e3, false),
                Unit::Ft3 => ("m3", 28.316_846_592 / 1e3, false),
                Unit::Ccf => ("m3", 2_831.684_659_2 / 1e3, false),
                Unit::Therm => ("kWh", 1.054_804e8 / 3600.0 / 1e3, false),
                Unit::Btu => ("kWh", 1_055.055_852_62 / 3600.0 / 1e3, false),
                Unit::KBtu => ("kWh", 1_055_055.852_62 / 3600.0 / 1e3, false),
                Unit::MMBtu => ("kWh", 1_055_055_852.62 / 3600.0 / 1e3, false),
                Unit::BtuPerH => ("kWh", 1_055.055_852_62 / 3600.0 / 1e3, true),
                Unit::KBtuPerH => ("kWh", 1_055_055.852_62 / 3600.0 / 1e3, true),
                Unit::TonRefrigeration => ("kWh", 12_000.0 * 1_055.055_852_62 / 3600.0 / 1e3, true),
                _ => return None,
            })
        };
        for u in Unit::ALL.iter().map(|w| Unit::parse(w).unwrap()) {
            assert_eq!(base_unit(u), want(u), "{u}");
        }
    }

    #[test]
    fn modbus_registers_wrap_at_their_width() {
        let p = parse_profile(
            std::path::Path::new("m.yaml"),
            r#"schema: 1
name: m
category: electricity
points:
  - { name: energy, unit: kWh, kind: counter, scale: 0.1, modbus: { table: holding, address: 0, type: u16 } }
  - { name: water, unit: l, kind: counter, modbus: { table: input, address: 2, type: u32 } }
"#,
        )
        .unwrap();
        let s = meter_spec(&p.points[0]).unwrap();
        assert_eq!(s.kind, MeterKind::Counter { wrap: Some(6553.6) });
        let s = meter_spec(&p.points[1]).unwrap();
        assert_eq!(
            s.kind,
            // litres on the wire, stored in m3: the register wraps at 2^32 l.
            MeterKind::Counter {
                wrap: Some(4_294_967_296.0 * 0.001)
            }
        );
        assert_eq!(
            s.to_base, 1.0,
            "litres → m3 at load: the energy module gets m3"
        );
        assert_eq!(p.points[1].wire_unit, Unit::L);
        assert_eq!(base_unit(p.points[1].unit).unwrap().0, "m3");
    }
}
