//! The Modbus source: polls Modbus TCP and RTU devices declared in the site config and sends their readings to
//! the pipeline like any other source.
//!
//! - [`config`]: a device's `modbus = { url, unit, poll, ... }`, validated.
//! - [`planner`]: the least-cost set of read requests for the points due now.
//! - [`decode`]: registers and bits to values, in every word order.
//! - [`link`]: one task per link (TCP gateway or serial line), serializing its devices' requests.
//!
//! Built from the loaded site by [`build`]; `app::run_until` spawns one task per [`Link`]. Every Modbus
//! profile carries the synthetic point `online` (see `catalog::profile::ONLINE_POINT`): 1 while the device
//! answers, 0 once it has missed `offline_after` polls in a row; it is how rules see a dead device.

pub mod config;
pub mod decode;
pub mod link;
pub mod planner;

use crate::catalog::Catalog;
use crate::diag::{Diagnostic, at_key};
pub use config::{LinkAddr, ModbusDevice, RawModbusDevice};
pub use link::{DevicePoll, Link};
use std::collections::BTreeMap;

/// A `[[devices]]` entry with a `modbus` table, as the site config declared it.
#[derive(Debug, Clone, Copy)]
pub struct Declared<'a> {
    /// Position in `[[devices]]`, for diagnostics (`devices[3].modbus.unit`).
    pub index: usize,
    pub id: &'a str,
    pub profile: &'a str,
    pub modbus: &'a RawModbusDevice,
}

/// Checks what needs both the site config and the profiles: the profile has Modbus points, per-point poll
/// overrides name Modbus points, devices on one serial line agree on its settings. `file` is the site config
/// the devices come from (diagnostics name its lines).
pub fn check(
    file: &std::path::Path,
    devices: &[Declared<'_>],
    catalog: &Catalog,
) -> Vec<Diagnostic> {
    let mut errs = Vec::new();
    let mut lines: BTreeMap<String, (usize, LinkAddr)> = BTreeMap::new();
    for d in devices {
        let Ok(m) = config::validate(d.modbus) else {
            continue; // reported by the config loader
        };
        let key = |k: &str| format!("devices[{}].{k}", d.index);
        if let Some(p) = catalog.profiles.get(d.profile) {
            if !p.has_modbus() {
                errs.push(at_key(
                    file,
                    &key("profile"),
                    format!(
                        "device `{}` has a modbus table but profile `{}` has no point with a `modbus:` binding",
                        d.id, p.name
                    ),
                ));
            }
            for name in m.point_polls.keys() {
                match p.points.iter().find(|x| &x.name == name) {
                    Some(x) if x.modbus.is_some() => {}
                    Some(_) => errs.push(at_key(
                        file,
                        &key(&format!("modbus.points.{name}")),
                        format!(
                            "point `{name}` of profile `{}` is not read over Modbus",
                            p.name
                        ),
                    )),
                    None => {
                        let hint = crate::util::did_you_mean(
                            name,
                            p.points.iter().map(|x| x.name.as_str()),
                        )
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                        errs.push(at_key(
                            file,
                            &key(&format!("modbus.points.{name}")),
                            format!("profile `{}` has no point `{name}`{hint}", p.name),
                        ));
                    }
                }
            }
        }
        let mut periods: Vec<_> = m.point_polls.values().copied().collect();
        periods.push(m.poll);
        periods.sort();
        periods.dedup();
        if periods.len() > link::MAX_PERIODS {
            errs.push(at_key(
                file,
                &key("modbus.points"),
                format!(
                    "{} distinct poll periods; at most {} per device",
                    periods.len(),
                    link::MAX_PERIODS
                ),
            ));
        }
        if let LinkAddr::Rtu { .. } = &m.link {
            match lines.get(&m.link.key()) {
                Some((first, other)) if *other != m.link => errs.push(at_key(
                    file,
                    &key("modbus.baud"),
                    format!(
                        "serial line {} is also used by devices[{first}] with other settings (baud, parity, data_bits, stop_bits must match)",
                        m.link
                    ),
                )),
                Some(_) => {}
                None => {
                    lines.insert(m.link.key(), (d.index, m.link.clone()));
                }
            }
        }
    }
    errs
}

/// Describes the Modbus metrics once (names fixed in ARCHITECTURE.md plus the ones this source adds).
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "caretaker_modbus_requests_total",
        "Modbus read requests sent, by device"
    );
    describe_histogram!(
        "caretaker_modbus_request_seconds",
        "Time from sending a Modbus request to its answer or timeout"
    );
    describe_counter!(
        "caretaker_modbus_errors_total",
        "Modbus failures by device and kind (exception, link, connect)"
    );
    describe_counter!(
        "caretaker_modbus_bad_readings_total",
        "Points read as bad (exception, decode or range failure), by device and point"
    );
    describe_counter!(
        "caretaker_modbus_polls_skipped_total",
        "Scheduled polls skipped because the link was busy past their due time"
    );
    describe_gauge!(
        "caretaker_device_online",
        "1 while a polled device answers, 0 once it missed offline_after polls in a row"
    );
}

/// The links of a site, each with its devices, in config order. Devices whose config does not validate are
/// left out (`caretaker check` and `app::load` refuse such configs before this runs).
pub fn build(devices: &[Declared<'_>], catalog: &Catalog) -> Vec<Link> {
    describe_metrics();
    let mut links: Vec<(LinkAddr, Vec<DevicePoll>)> = Vec::new();
    for d in devices {
        let Ok(settings) = config::validate(d.modbus) else {
            continue;
        };
        let Some((_, dev)) = catalog.device_by_id(d.id) else {
            continue;
        };
        if !dev.profile.has_modbus() {
            continue;
        }
        let poll = DevicePoll {
            id: d.id.to_string(),
            profile: dev.profile.clone(),
            first_point: dev.first_point,
            online_point: dev.point_id(crate::catalog::profile::ONLINE_POINT),
            settings,
        };
        match links
            .iter_mut()
            .find(|(a, _)| a.key() == poll.settings.link.key())
        {
            Some((_, devs)) => devs.push(poll),
            None => links.push((poll.settings.link.clone(), vec![poll])),
        }
    }
    links
        .into_iter()
        .map(|(addr, devs)| Link::new(addr, devs))
        .collect()
}

/// Requests per full poll cycle of a device (all its points due at once), with the three planners: the
/// optimal plan, one request per point, and contiguous-only merging. For `caretaker check` and the benchmark.
pub fn requests_per_cycle(profile: &crate::catalog::Profile) -> (usize, usize, usize) {
    let items: Vec<planner::Item> = profile
        .points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let b = p.modbus.as_ref()?;
            Some(planner::Item {
                key: i as u32,
                table: b.table,
                start: b.address,
                width: b.width(),
            })
        })
        .collect();
    let limits = planner::Limits::from_quirks(&profile.modbus);
    let best = planner::plan(
        &items,
        &limits,
        &planner::CostModel::default(),
        &planner::Barriers::new(),
    );
    (
        best.len(),
        planner::naive(&items).len(),
        planner::contiguous(&items, &limits).len(),
    )
}

#[cfg(test)]
mod tests {
    use crate::catalog::profile;

    #[test]
    fn shipped_profiles_load_and_merge_requests() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("device_profiles");
        let (profiles, errs) = profile::load_dirs(&[dir]);
        assert!(errs.is_empty(), "{errs:?}");
        let sdm = &profiles["eastron-sdm630"];
        assert_eq!(sdm.points.last().unwrap().name, profile::ONLINE_POINT);
        let v = &sdm.points[sdm.point_index("voltage_l1").unwrap()];
        assert_eq!(v.modbus.as_ref().unwrap().address, 0);
        let (best, naive, contiguous) = super::requests_per_cycle(sdm);
        assert!(
            best < contiguous && contiguous < naive,
            "{best} {contiguous} {naive}"
        );
    }
}
