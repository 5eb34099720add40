//! Building a report: which meters the query selects, one pass over the store reading each meter's slots into a
//! dense array for the fold, and the virtual meters summed from the terms kept on the way.

use super::baseline::degree_days;
use super::clock::Clock;
use super::fold::{Fold, Meter};
use super::{Group, Query, Report};
use crate::energy::config::{EnergyConfig, VirtualMeter};
use crate::energy::store::{PRESENT, SeriesInfo, Store};
use anyhow::bail;
use jiff::tz::TimeZone;
use std::collections::{HashMap, HashSet};

/// A virtual meter's term: the summed slots of every series of that device, and its unit and category.
struct Term {
    vals: Vec<f64>,
    flags: Vec<u8>,
    unit: String,
    category: String,
}

/// Builds a report from the store.
pub fn build(
    store: &Store,
    cfg: &EnergyConfig,
    tz: &TimeZone,
    q: &Query,
    mut progress: Option<&mut dyn FnMut(usize, usize)>,
) -> anyhow::Result<Report> {
    let period = store.period;
    let clock = Clock::new(q, tz, period, cfg.baseline_weeks, cfg)?;
    let series = selected_series(store, q)?;
    // Virtual meters whose terms we must keep.
    let virtuals: Vec<&VirtualMeter> = cfg
        .virtual_meters
        .iter()
        .filter(|v| q.devices.as_ref().is_none_or(|d| d.contains(&v.name)))
        .filter(|_| q.group == Group::Device)
        .collect();
    let all_series = if virtuals.is_empty() {
        series.clone()
    } else {
        store.series()?
    };
    check_terms(&virtuals, &all_series)?;
    let needed: HashSet<&str> = virtuals
        .iter()
        .flat_map(|v| v.terms.iter().map(|(_, t)| t.as_str()))
        .collect();

    let hdd = match &cfg.degree_days {
        Some(dd) => degree_days(store, &clock, dd.base)?,
        None => Vec::new(),
    };
    let mut f = Fold::new(&clock, cfg, q, hdd);
    let mut keep: HashMap<String, Term> = HashMap::new();
    let mut vals = vec![f64::NAN; clock.n];
    let mut flags = vec![0u8; clock.n];
    let total = all_series.len();
    // A virtual meter's term is its device's consumption: export/generation series only for devices that have
    // nothing else (a PV inverter metered as generation).
    let consumes: HashSet<&str> = all_series
        .iter()
        .filter(|s| s.role.is_consumption())
        .map(|s| s.device.as_str())
        .collect();
    for (k, s) in all_series.iter().enumerate() {
        if let Some(p) = progress.as_deref_mut() {
            p(k + 1, total);
        }
        let selected = series.iter().any(|x| x.id == s.id);
        if !selected && !needed.contains(s.device.as_str()) {
            continue;
        }
        read_slots(store, &clock, s.id, &mut vals, &mut flags)?;
        if selected {
            let m = Meter {
                device: &s.device,
                unit: &s.unit,
                category: &s.category,
                location: Some(&s.location),
                vals: &vals,
                flags: &flags,
                real: true,
            };
            if s.role.is_consumption() {
                f.meter(&m);
            } else {
                f.side(&m, s.role);
            }
        }
        if needed.contains(s.device.as_str())
            && (s.role.is_consumption() || !consumes.contains(s.device.as_str()))
        {
            keep_term(&mut keep, s, &vals, &flags);
        }
    }
    for v in &virtuals {
        fold_virtual(&mut f, v, &keep, clock.n)?;
    }
    let mut rep = f.finish();
    rep.meta.timezone = tz.iana_name().unwrap_or("").to_string();
    rep.meta.from = Some(q.from);
    rep.meta.to = Some(q.to);
    rep.meta.meters = series.len();
    let (a, b) = (
        ((clock.s0 + clock.r0 as i64) * period) as f64,
        ((clock.s0 + clock.n as i64) * period) as f64,
    );
    for (device, kind, n) in store.event_counts(a, b)? {
        if series.iter().any(|s| s.device == device) {
            rep.meta.events.entry(device).or_default().insert(kind, n);
        }
    }
    Ok(rep)
}

/// The store's series the query asks for; grouping by a location tag no meter has is an error.
fn selected_series(store: &Store, q: &Query) -> anyhow::Result<Vec<SeriesInfo>> {
    let series: Vec<SeriesInfo> = store
        .series()?
        .into_iter()
        .filter(|s| q.devices.as_ref().is_none_or(|d| d.contains(&s.device)))
        .collect();
    if let Group::Tag(t) = &q.group {
        let mut tags: Vec<&str> = series
            .iter()
            .flat_map(|s| s.location.keys().map(String::as_str))
            .collect();
        tags.sort();
        tags.dedup();
        if !series.is_empty() && !tags.contains(&t.as_str()) {
            let hint = crate::util::did_you_mean(t, tags.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            bail!(
                "no meter has a location tag `{t}`{hint}; group by device, category{}",
                tags.iter().map(|t| format!(", {t}")).collect::<String>()
            );
        }
    }
    Ok(series)
}

/// Every term of a virtual meter must be a meter in the store.
fn check_terms(virtuals: &[&VirtualMeter], all_series: &[SeriesInfo]) -> anyhow::Result<()> {
    for v in virtuals {
        for (_, t) in &v.terms {
            if !all_series.iter().any(|s| &s.device == t) {
                let hint =
                    crate::util::did_you_mean(t, all_series.iter().map(|s| s.device.as_str()))
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                bail!(
                    "virtual meter `{}`: no meter `{t}` in the energy store{hint}",
                    v.name
                );
            }
        }
    }
    Ok(())
}

/// Reads one series' slots over the clock's array (look-back included) into `vals` and `flags`: NaN and 0 where
/// the store holds nothing.
fn read_slots(
    store: &Store,
    clock: &Clock,
    id: i64,
    vals: &mut [f64],
    flags: &mut [u8],
) -> anyhow::Result<()> {
    let spd = store.slots_per_day() as i64;
    vals.fill(f64::NAN);
    flags.fill(0);
    let (d0, d1) = (
        clock.s0.div_euclid(spd),
        (clock.s0 + clock.n as i64).div_euclid(spd) + 1,
    );
    store.for_each_day(id, d0, d1, |d, v, fl| {
        let base = d * spd - clock.s0;
        for i in 0..v.len() {
            let j = base + i as i64;
            if j >= 0 && (j as usize) < clock.n && fl[i] & PRESENT != 0 {
                vals[j as usize] = v[i];
                flags[j as usize] = fl[i];
            }
        }
    })?;
    Ok(())
}

/// Adds a series' slots to its device's term (a device may have several series).
fn keep_term(keep: &mut HashMap<String, Term>, s: &SeriesInfo, vals: &[f64], flags: &[u8]) {
    let n = vals.len();
    let e = keep.entry(s.device.clone()).or_insert_with(|| Term {
        vals: vec![f64::NAN; n],
        flags: vec![0; n],
        unit: s.unit.clone(),
        category: s.category.clone(),
    });
    for i in 0..n {
        if flags[i] & PRESENT != 0 {
            e.vals[i] = if e.vals[i].is_nan() {
                vals[i]
            } else {
                e.vals[i] + vals[i]
            };
            e.flags[i] |= flags[i];
        }
    }
}

/// Sums a virtual meter's terms slot by slot and folds it in; its terms must share one unit.
fn fold_virtual(
    f: &mut Fold,
    v: &VirtualMeter,
    keep: &HashMap<String, Term>,
    n: usize,
) -> anyhow::Result<()> {
    let (unit, category) = {
        let first = &keep[&v.terms[0].1];
        (first.unit.clone(), first.category.clone())
    };
    for (_, t) in &v.terms {
        if keep[t].unit != unit {
            bail!(
                "virtual meter `{}` mixes units: `{}` is in {unit}, `{t}` in {}",
                v.name,
                v.terms[0].1,
                keep[t].unit
            );
        }
    }
    let mut vv = vec![f64::NAN; n];
    let mut vf = vec![0u8; n];
    for i in 0..n {
        // A slot is known only when every term is.
        if v.terms.iter().all(|(_, t)| keep[t].flags[i] & PRESENT != 0) {
            vv[i] = v.terms.iter().map(|(s, t)| s * keep[t].vals[i]).sum();
            vf[i] = v
                .terms
                .iter()
                .fold(PRESENT, |a, (_, t)| a | keep[t].flags[i]);
        }
    }
    f.meter(&Meter {
        device: &v.name,
        unit: &unit,
        category: &category,
        location: None,
        vals: &vv,
        flags: &vf,
        real: false,
    });
    Ok(())
}
