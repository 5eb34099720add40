//! The demo's end: readings seen, the scripted faults, the work orders raised (each paired with the fault it
//! caught) and the energy of the last simulated day, plus the HTML energy report.

use super::live::{Observed, day_of};
use super::simulate::ScriptedFault;
use super::simulate::site::{DeviceSpec, SiteSpec};
use super::{fmt_duration, fmt_sim};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A work order as the demo shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RaisedWorkOrder {
    pub id: i64,
    pub rule: String,
    pub device: String,
    pub status: String,
    /// Simulated time it opened, ns.
    pub opened_at_ns: i64,
}

/// Pairs each work order with the scripted fault it caught (same device, opened after the fault began): the
/// second list holds the faults no work order caught. A work order paired with `None` is a false positive.
pub fn match_faults<'a>(
    faults: &'a [ScriptedFault],
    work_orders: &'a [RaisedWorkOrder],
) -> (
    Vec<(&'a RaisedWorkOrder, Option<&'a ScriptedFault>)>,
    Vec<&'a ScriptedFault>,
) {
    let pairs: Vec<_> = work_orders
        .iter()
        .map(|w| {
            let f = faults
                .iter()
                .filter(|f| f.device == w.device && f.from_ns <= w.opened_at_ns)
                .max_by_key(|f| f.from_ns);
            (w, f)
        })
        .collect();
    let missed = faults
        .iter()
        .filter(|f| {
            !pairs
                .iter()
                .any(|(_, m)| m.is_some_and(|m| std::ptr::eq(m, *f)))
        })
        .collect();
    (pairs, missed)
}

/// The work orders the daemon raised, from its own SQLite store under the state dir (none before the store exists).
pub fn work_orders(state_dir: &Path) -> Vec<RaisedWorkOrder> {
    let path = crate::work_orders::store::path_in(state_dir);
    if !path.exists() {
        return Vec::new();
    }
    let Ok(store) = crate::work_orders::store::Store::open(&path, None) else {
        return Vec::new();
    };
    store
        .list(None)
        .unwrap_or_default()
        .into_iter()
        .map(|w| RaisedWorkOrder {
            id: w.id,
            rule: w.rule,
            device: w.device,
            status: w.status,
            opened_at_ns: w.opened_at * 1_000_000,
        })
        .collect()
}

/// A finished demo run: where its config and state are, and the simulated days it covered.
#[derive(Debug, Clone)]
pub struct DemoRun {
    /// The daemon's generated config file.
    pub config: PathBuf,
    pub state: PathBuf,
    /// First and last simulated day, in the site's time zone (`2026-01-12`).
    pub first_day: String,
    pub last_day: String,
}

/// Everything the summary at the end needs.
pub struct Ended<'a> {
    pub spec: &'a SiteSpec,
    pub devices: &'a [DeviceSpec],
    pub faults: &'a [ScriptedFault],
    pub seen: &'a Observed,
    pub started: Instant,
    pub start_ns: i64,
    pub end_ns: i64,
    pub interrupted: bool,
    pub state: &'a Path,
    pub config_file: &'a Path,
}

/// Prints the summary: readings, scripted faults, work orders against the faults, energy, the report's path.
pub fn print(e: &Ended<'_>) {
    let tz = &e.spec.timezone;
    let o = e.seen;
    let real = e.started.elapsed();
    println!(
        "\nDemo {} after {} ({} simulated: {} to {}).",
        if e.interrupted { "stopped" } else { "finished" },
        fmt_duration(real),
        fmt_duration(Duration::from_nanos((e.end_ns - e.start_ns).max(0) as u64)),
        fmt_sim(e.start_ns, tz),
        fmt_sim(e.end_ns, tz)
    );
    println!(
        "Readings: {} ({:.0} per second) from {} of {} devices",
        o.readings,
        o.readings as f64 / real.as_secs_f64().max(0.001),
        o.last_seen.len(),
        e.devices.len()
    );
    for (cat, n) in &o.by_category {
        println!("  {cat:<12} {n}");
    }
    let silent: Vec<&str> = e
        .devices
        .iter()
        .filter(|d| !o.last_seen.values().any(|(id, _)| id == &d.id))
        .map(|d| d.id.as_str())
        .collect();
    if !silent.is_empty() {
        println!("  no readings from: {}", silent.join(", "));
    }
    print_faults_and_work_orders(e);
    let day = day_of(e.end_ns, tz);
    println!(
        "\nEnergy on the last simulated day: {:.1} kWh metered (all electricity counters), {:.2} m3 water",
        Observed::today(&o.counters, day),
        Observed::today(&o.water, day)
    );
    let date = |ns: i64| {
        jiff::Timestamp::from_nanosecond(ns as i128)
            .map(|t| t.to_zoned_datetime(tz.clone()).date().to_string())
            .unwrap_or_default()
    };
    let run = DemoRun {
        config: e.config_file.to_path_buf(),
        state: e.state.to_path_buf(),
        first_day: date(e.start_ns),
        last_day: date(e.end_ns),
    };
    match energy_report(&run) {
        Ok(path) => println!(
            "Energy report (HTML, open it in a browser): {}",
            path.display()
        ),
        Err(err) => println!("Energy report: not written: {err:#}"),
    }
    println!(
        "State (config, work orders, energy store): {}",
        e.state.display()
    );
}

fn print_faults_and_work_orders(e: &Ended<'_>) {
    let tz = &e.spec.timezone;
    let reached: Vec<ScriptedFault> = e
        .faults
        .iter()
        .filter(|f| f.from_ns <= e.end_ns)
        .cloned()
        .collect();
    println!("\nScripted faults (what the rules should catch):");
    for f in e.faults {
        let note = if f.from_ns > e.end_ns {
            " (not reached)"
        } else {
            ""
        };
        println!(
            "  {}  {:<16} {}{note}",
            fmt_sim(f.from_ns, tz),
            f.device,
            f.kind.describe()
        );
    }
    let wos = work_orders(e.state);
    let (pairs, missed) = match_faults(&reached, &wos);
    println!("\nWork orders raised: {}", wos.len());
    for (w, f) in &pairs {
        let caught = match f {
            Some(f) => format!("caught: {}", f.kind.describe()),
            None => "no scripted fault here (false positive)".into(),
        };
        println!(
            "  #{:<3} {}  {:<27} {:<16} {:<9} {caught}",
            w.id,
            fmt_sim(w.opened_at_ns, tz),
            w.rule,
            w.device,
            w.status,
        );
    }
    for f in &missed {
        println!(
            "  no work order (yet) for: {}  {} ({})",
            fmt_sim(f.from_ns, tz),
            f.device,
            f.kind.describe()
        );
    }
}

/// Writes the HTML energy report of a finished demo (by day and device over the simulated days) and returns its
/// path.
fn energy_report(run: &DemoRun) -> anyhow::Result<PathBuf> {
    use crate::energy::report::{self, By, Group, Query};
    let out = run.state.join("energy-report.html");
    // The config only (no profiles, catalog or rules): the report needs the state dir, [energy] and the zone.
    let config = crate::config::SiteConfig::load(&run.config)
        .map_err(|errs| anyhow::anyhow!("{} error(s) in {}", errs.len(), run.config.display()))?;
    let path = crate::energy::store::path_in(&config.state_dir);
    let (store, _, _) = crate::energy::store::Store::open_existing(&path)?;
    let energy = config.energy.clone().unwrap_or_default();
    let to = report::parse_day(&run.last_day, "last day")?;
    let q = Query {
        from: report::parse_day(&run.first_day, "first day")?,
        to: to.tomorrow()?,
        by: By::Day,
        group: Group::parse("device"),
        devices: None,
    };
    let mut rep = report::build(&store, &energy, &config.timezone(), &q, None)?;
    rep.meta.site = config.site.name.clone();
    std::fs::write(&out, report::html::render(&rep, &q))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    eprintln!("wrote {} ({} rows)", out.display(), rep.rows.len());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::simulate::site::FaultKind;
    use std::time::Duration;

    fn fault(device: &str, kind: FaultKind, from_ns: i64) -> ScriptedFault {
        ScriptedFault {
            device: device.into(),
            kind,
            from_ns,
            until_ns: None,
            clog_to: None,
            period: Duration::from_secs(600),
            ramp_ns: None,
        }
    }

    fn wo(id: i64, rule: &str, device: &str, at: i64) -> RaisedWorkOrder {
        RaisedWorkOrder {
            id,
            rule: rule.into(),
            device: device.into(),
            status: "open".into(),
            opened_at_ns: at,
        }
    }

    #[test]
    fn work_orders_pair_with_the_fault_they_caught_and_the_rest_stand_out() {
        let faults = vec![
            fault("leak-1", FaultKind::Leak, 100),
            fault("ahu-1", FaultKind::FilterClog, 200),
            fault("meter-2", FaultKind::Offline, 300),
        ];
        let wos = vec![
            wo(1, "water-leak-detected", "leak-1", 150),
            wo(2, "ahu-filter-clogged", "ahu-1", 900),
            // Before its device's fault began: not caught by it.
            wo(3, "meter-offline", "meter-2", 250),
            wo(4, "overnight-base-load", "meter-1", 50),
        ];
        let (pairs, missed) = match_faults(&faults, &wos);
        assert_eq!(pairs[0].1.map(|f| f.kind), Some(FaultKind::Leak));
        assert_eq!(pairs[1].1.map(|f| f.kind), Some(FaultKind::FilterClog));
        assert!(pairs[2].1.is_none() && pairs[3].1.is_none());
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].device, "meter-2");
    }
}
