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
use crate::tabular::{self, Dialect, Rejected};
use anyhow::bail;
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
    /// Lines of the file that were not imported, with the reason (the good lines were).
    pub rejected: Vec<Rejected>,
    /// The separator and decimal mark the file was read with.
    pub dialect: Dialect,
}

/// Parses one timestamp cell (every form [`crate::tabular::parse_time`] reads) into Unix seconds.
pub fn parse_time(s: &str, tz: &TimeZone) -> Option<f64> {
    tabular::parse_time(s, tz).map(|t| t.as_nanosecond() as f64 / 1e9)
}

/// What a meter CSV held: the good readings (sorted by time) and every line that was not one.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub readings: Vec<(f64, f64)>,
    pub rejected: Vec<Rejected>,
    pub dialect: Dialect,
}

/// Header names the time and value columns are found under when `--columns` does not map them.
const TIME_NAMES: &[&str] = &[
    "timestamp",
    "time",
    "datetime",
    "date",
    "zeitstempel",
    "zeit",
    "datum",
    "horodatage",
];
const VALUE_NAMES: &[&str] = &[
    "value",
    "reading",
    "counter",
    "meter",
    "wert",
    "zählerstand",
    "zaehlerstand",
    "stand",
    "valeur",
];

/// Parses a whole meter CSV into `(seconds, value)`. An error only when no reading at all could be read (it lists
/// the rejected lines); otherwise the good readings and every rejected line with its reason.
pub fn parse_csv(
    file: &Path,
    text: &str,
    opts: &tabular::Options,
    tz: &TimeZone,
) -> anyhow::Result<Parsed> {
    let sheet = tabular::read(text, opts);
    let mut rejected = sheet.rejected.clone();
    let mut records = sheet.records.iter().peekable();
    // A header: mapped columns, or a first line whose first cell is not a time.
    let (mut ct, mut cv) = (0, 1);
    if let Some(first) = records.peek() {
        let is_header = !opts.columns.is_empty() || tabular::parse_time(first.get(0), tz).is_none();
        if is_header {
            let two = first.fields.len() == 2 && opts.columns.is_empty();
            let find = |name, aliases| tabular::find_column(first, opts, name, aliases);
            match (find("timestamp", TIME_NAMES), find("value", VALUE_NAMES)) {
                (Ok(t), Ok(v)) => (ct, cv) = (t, v),
                _ if two => {}
                (Err(e), _) | (_, Err(e)) => {
                    bail!("{}:{}: {e}", file.display(), first.line)
                }
            }
            records.next();
        }
    }
    let mut readings = Vec::new();
    for r in records {
        let (t, v) = (r.get(ct), r.get(cv));
        match (parse_time(t, tz), sheet.number(v)) {
            (Some(t), Some(v)) => readings.push((t, v)),
            (None, _) => rejected.push(Rejected {
                line: r.line,
                reason: format!(
                    "`{t}` is not a timestamp (RFC 3339, Unix seconds, `YYYY-MM-DD HH:MM` or `DD.MM.YYYY HH:MM`)"
                ),
            }),
            (_, None) => rejected.push(Rejected {
                line: r.line,
                reason: format!(
                    "`{v}` is not a number (decimal mark `{}`; --decimal changes it)",
                    sheet.dialect.decimal as char
                ),
            }),
        }
    }
    rejected.sort_by_key(|r| r.line);
    if readings.is_empty() {
        let list: Vec<String> = rejected
            .iter()
            .map(|r| format!("{}:{}: {}", file.display(), r.line, r.reason))
            .collect();
        bail!(
            "{}{}: no readings ({}; expected lines of `timestamp,value`)\nnothing was imported",
            if list.is_empty() {
                String::new()
            } else {
                list.join("\n") + "\n"
            },
            file.display(),
            sheet.dialect
        );
    }
    readings.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(Parsed {
        readings,
        rejected,
        dialect: sheet.dialect,
    })
}

/// Imports readings of one meter point into the store.
#[allow(clippy::too_many_arguments)] // each is a distinct input of one import; a struct would only rename them
pub fn import(
    store: &mut Store,
    catalog: &Catalog,
    tz: &TimeZone,
    csv: &Path,
    opts: &tabular::Options,
    roles: &[super::config::MeterRole],
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
        let text = tabular::read_file(csv).map_err(anyhow::Error::msg)?;
        let parsed = parse_csv(csv, &text, opts, tz)?;
        let readings = &parsed.readings;
        let mut hours: std::collections::BTreeMap<i64, (f64, u32)> = Default::default();
        for &(t, v) in readings {
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
            rejected: parsed.rejected.clone(),
            dialect: parsed.dialect,
        });
    }
    // The meter points the live stage uses, or reports would add two views of one meter.
    let found = super::meter_role(dev, pi, roles);
    let role = match (found, super::meter_point(dev)) {
        (Some(r), _) => r,
        (None, Some((_, mp))) => bail!(
            "`{device}/{point}` is not one of the device's meter points: Caretaker meters `{device}/{}` (its first \
             energy or volume counter, else its total power){}; import that point, or give this one a role under \
             [[energy.meters]]",
            mp.name,
            if dev.profile.point_index("energy_export").is_some() {
                " and `energy_export`"
            } else {
                ""
            }
        ),
        (None, None) => super::Role::of_category(dev.profile.category),
    };
    let Some(spec) = super::meter_spec(pdef) else {
        bail!(
            "point `{device}/{point}` is in {}: only energy or volume counters (Wh, kWh, MWh, GJ, m3, l), \
             power (W, kW, MW) and outdoor temperatures (degree days) can be imported",
            pdef.unit
        );
    };
    let (unit, _, power) = super::base_unit(pdef.unit).expect("meter_spec checked it");
    let text = tabular::read_file(csv).map_err(anyhow::Error::msg)?;
    let parsed = parse_csv(csv, &text, opts, tz)?;
    let readings = &parsed.readings;
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
    store.set_role(id, role)?;
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
        rejected: parsed.rejected,
        dialect: parsed.dialect,
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

    fn parse(text: &str) -> anyhow::Result<Parsed> {
        parse_csv(
            Path::new("m.csv"),
            text,
            &tabular::Options::default(),
            &TimeZone::UTC,
        )
    }

    #[test]
    fn bad_lines_are_all_named_and_good_ones_kept() {
        let p = parse(
            "timestamp,value\n2026-01-05 10:00,1.0\n2026-13-05 10:15,2.0\n2026-01-05 10:30,x\n2026-01-05 10:45,3\n",
        )
        .unwrap();
        assert_eq!(p.readings.len(), 2);
        assert_eq!(p.rejected.len(), 2);
        assert_eq!(p.rejected[0].line, 3);
        assert_eq!(p.rejected[1].line, 4);
        assert!(
            p.rejected[1].reason.starts_with("`x` is not a number"),
            "{:?}",
            p.rejected
        );
        let ok = parse("t;v\n2026-01-05 10:15;2\n2026-01-05 10:00;1\n").unwrap();
        assert_eq!(ok.readings[0].1, 1.0, "sorted by time");
        let e = parse("timestamp,value\nx,y\n").unwrap_err().to_string();
        assert!(
            e.contains("m.csv:2:") && e.contains("nothing was imported"),
            "{e}"
        );
    }

    #[test]
    fn german_export_reads_whole() {
        let p = parse(
            "\u{feff}Zeitstempel;Zählerstand\n05.01.2026 10:00;12345,6\n05.01.2026 10:15;12.346,0\n",
        )
        .unwrap();
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        assert_eq!(
            p.readings,
            vec![(1_767_607_200.0, 12345.6), (1_767_608_100.0, 12346.0)]
        );
        // The line, no header: it was rejected before and nothing was imported.
        let p = parse("2026-01-05 10:00;12345,6\n").unwrap();
        assert_eq!(p.readings, vec![(1_767_607_200.0, 12345.6)]);
    }

    #[test]
    fn mapped_columns_pick_the_right_cells() {
        let mut opts = tabular::Options::default();
        opts.parse_columns(&["time=Ablesezeit,value=Zählerstand".into()])
            .unwrap();
        let p = parse_csv(
            Path::new("m.csv"),
            "Zähler;Zählerstand;Ablesezeit\nA1;\"100,5\";05.01.2026 10:00\n",
            &opts,
            &TimeZone::UTC,
        )
        .unwrap();
        assert_eq!(p.readings, vec![(1_767_607_200.0, 100.5)]);
        let e = parse_csv(Path::new("m.csv"), "a;b\n1;2\n", &opts, &TimeZone::UTC)
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.csv:1: --columns timestamp=Ablesezeit"), "{e}");
    }
}
