//! `caretaker energy import`: loads a meter's historic export (CSV `timestamp,value`, the counter as the meter
//! shows it) into the store so baselines exist from day one.
//!
//! - Timestamps: RFC 3339 with an offset (`2026-01-05T10:15:00+01:00`, `...Z`), Unix seconds, or a civil time
//!   (`2026-01-05 10:15[:00]`, `T` or space) read in the site's time zone (the earlier instant in a DST fold).
//! - A header line is skipped; `;` works as the separator too (European exports). Blank lines and `#` comments
//!   are ignored.
//! - Every bad line is reported with its number, and nothing is written unless the whole file parses.
//! - Readings are sorted by time first; the usual counter rules apply (wrap, reset, glitch, gap).
//! - The imported range replaces what the store held for that meter in it: importing a file twice is harmless.

use super::counter::{Converter, Event, Slots};
use super::store::{Mode, Store};
use crate::catalog::{Catalog, Unit};
use anyhow::{Context, bail};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::path::Path;

/// What an import did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub readings: usize,
    pub slots: usize,
    pub consumption: f64,
    pub unit: String,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
    pub events: Vec<Event>,
    /// An outdoor temperature (for degree days) rather than a meter: `consumption` is then the mean, `slots`
    /// the hours.
    pub temperature: bool,
}

/// Parses one timestamp cell.
pub fn parse_time(s: &str, tz: &TimeZone) -> Option<f64> {
    let s = s.trim().trim_matches('"');
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Some(ts.as_nanosecond() as f64 / 1e9);
    }
    if let Ok(n) = s.parse::<f64>() {
        // Unix seconds, or milliseconds when it is clearly too large for seconds.
        return Some(if n > 1e11 { n / 1000.0 } else { n });
    }
    let civil = s.replace(' ', "T");
    let dt = civil.parse::<jiff::civil::DateTime>().ok()?;
    let ts = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
    Some(ts.as_nanosecond() as f64 / 1e9)
}

/// Parses a whole CSV into `(seconds, value)`, listing every bad line.
pub fn parse_csv(file: &Path, text: &str, tz: &TimeZone) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sep = if line.contains(',') { ',' } else { ';' };
        let mut cells = line.splitn(3, sep);
        let (t, v) = (cells.next().unwrap_or(""), cells.next().unwrap_or(""));
        let value = v.trim().trim_matches('"').parse::<f64>();
        match (parse_time(t, tz), value) {
            (Some(t), Ok(v)) if v.is_finite() => out.push((t, v)),
            _ if n == 0 && out.is_empty() => {} // header
            (None, _) => errs.push(format!(
                "{}:{}: `{}` is not a timestamp (RFC 3339, Unix seconds or `YYYY-MM-DD HH:MM`)",
                file.display(),
                n + 1,
                t.trim()
            )),
            _ => errs.push(format!(
                "{}:{}: `{}` is not a number",
                file.display(),
                n + 1,
                v.trim()
            )),
        }
    }
    if !errs.is_empty() {
        let more = errs.len().saturating_sub(20);
        let mut msg = errs.into_iter().take(20).collect::<Vec<_>>().join("\n");
        if more > 0 {
            msg.push_str(&format!("\n... and {more} more bad lines"));
        }
        bail!("{msg}\nnothing was imported");
    }
    if out.is_empty() {
        bail!(
            "{}: no readings (expected lines of `timestamp,value`)",
            file.display()
        );
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(out)
}

/// Imports readings of one meter point into the store.
pub fn import(
    store: &mut Store,
    catalog: &Catalog,
    tz: &TimeZone,
    csv: &Path,
    device: &str,
    point: &str,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Summary> {
    let Some((_, dev)) = catalog.device_by_id(device) else {
        let hint = crate::util::did_you_mean(device, catalog.devices().map(|(_, d)| d.id.as_str()))
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        bail!("unknown device `{device}`{hint}: declare it under [[devices]] in the site config");
    };
    let Some(pi) = dev.profile.point_index(point) else {
        let hint =
            crate::util::did_you_mean(point, dev.profile.points.iter().map(|p| p.name.as_str()))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
        bail!(
            "device `{device}` (profile {}) has no point `{point}`{hint}",
            dev.profile.name
        );
    };
    let pdef = &dev.profile.points[pi];
    let ts = |t: f64| Timestamp::from_second(t as i64).ok();
    if pdef.unit.dimension() == "temperature" {
        // An outdoor temperature for degree days: hourly means.
        let text = std::fs::read_to_string(csv)
            .with_context(|| format!("cannot read {}", csv.display()))?;
        let readings = parse_csv(csv, &text, tz)?;
        let mut hours: std::collections::BTreeMap<i64, (f64, u32)> = Default::default();
        for &(t, v) in &readings {
            let e = hours.entry((t / 3600.0).floor() as i64).or_insert((0.0, 0));
            e.0 += pdef.unit.convert_to(v, Unit::DegC).unwrap_or(v);
            e.1 += 1;
        }
        store.write_temperature(&hours, Mode::Replace)?;
        let mean = hours.values().map(|h| h.0 / h.1 as f64).sum::<f64>() / hours.len() as f64;
        return Ok(Summary {
            readings: readings.len(),
            slots: hours.len(),
            consumption: mean,
            unit: "degC".into(),
            first: readings.first().and_then(|r| ts(r.0)),
            last: readings.last().and_then(|r| ts(r.0)),
            events: Vec::new(),
            temperature: true,
        });
    }
    // One meter point per device (what the live stage uses), or reports would add two views of one meter.
    if let Some((mi, mp)) = super::meter_point(dev) {
        if mi != pi {
            bail!(
                "`{device}/{point}` is not the device's meter point: Caretaker meters `{device}/{}` (its first \
                 energy or volume counter, else its total power); import that point",
                mp.name
            );
        }
    }
    let Some(spec) = super::meter_spec(pdef) else {
        bail!(
            "point `{device}/{point}` is in {}: only energy or volume counters (Wh, kWh, MWh, GJ, m3, l), \
             power (W, kW, MW) and outdoor temperatures (degree days) can be imported",
            pdef.unit
        );
    };
    let (unit, _, power) = super::base_unit(pdef.unit).expect("meter_spec checked it");
    let text =
        std::fs::read_to_string(csv).with_context(|| format!("cannot read {}", csv.display()))?;
    let readings = parse_csv(csv, &text, tz)?;
    progress(&format!(
        "{}: {} readings parsed",
        csv.display(),
        readings.len()
    ));
    let id = store.series_id(
        device,
        point,
        unit,
        dev.profile.category.as_str(),
        power,
        &dev.location,
    )?;
    let mut conv = Converter::new(spec, store.period);
    let mut slots = Slots::default();
    let mut events = Vec::new();
    // Progress only where it helps: files of a year or more of minute data.
    let step = if readings.len() >= 500_000 {
        readings.len() / 10
    } else {
        usize::MAX
    };
    for (k, &(t, v)) in readings.iter().enumerate() {
        conv.push(t, v, &mut slots, &mut events);
        if (k + 1) % step == 0 {
            progress(&format!("converted {}/{} readings", k + 1, readings.len()));
        }
    }
    // Keep the live converter's state when it is newer than the file; else continue from the file's end.
    let live = store.load_state(id)?;
    let newer = live
        .as_ref()
        .and_then(|s| s.last)
        .is_some_and(|l| l.t >= readings.last().map(|r| r.0).unwrap_or(0.0));
    let states = if newer {
        vec![]
    } else {
        vec![(id, &conv.state)]
    };
    let ev: Vec<(i64, &Event)> = events.iter().map(|e| (id, e)).collect();
    store.write(&[(id, &slots)], Mode::Replace, &states, &ev)?;
    Ok(Summary {
        readings: readings.len(),
        slots: slots.map.len(),
        consumption: slots.total(),
        unit: unit.to_string(),
        first: readings.first().and_then(|r| ts(r.0)),
        last: readings.last().and_then(|r| ts(r.0)),
        events,
        temperature: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_usual_form() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let want = 1_767_603_600.0; // 2026-01-05T09:00:00Z
        for s in [
            "2026-01-05T10:00:00+01:00",
            "2026-01-05T09:00:00Z",
            "1767603600",
            "1767603600000",
            "2026-01-05 10:00",
            "2026-01-05T10:00:00",
        ] {
            assert_eq!(parse_time(s, &tz), Some(want), "{s}");
        }
        assert_eq!(parse_time("yesterday", &tz), None);
    }

    #[test]
    fn bad_lines_are_all_named() {
        let tz = TimeZone::UTC;
        let e = parse_csv(
            Path::new("m.csv"),
            "timestamp,value\n2026-01-05 10:00,1.0\n2026-13-05 10:15,2.0\n2026-01-05 10:30,x\n",
            &tz,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("m.csv:3:"), "{e}");
        assert!(e.contains("m.csv:4: `x` is not a number"), "{e}");
        let ok = parse_csv(
            Path::new("m.csv"),
            "t;v\n2026-01-05 10:15;2\n2026-01-05 10:00;1\n",
            &tz,
        )
        .unwrap();
        assert_eq!(ok[0].1, 1.0, "sorted by time");
    }
}
