//! `caretaker backtest`: replays history through the site's rules with the same engine and the same work-order
//! store logic (in memory) as the daemon, and prints the work orders that would have been opened, so a rule can
//! be tuned before it pages anyone.
//!
//! Input CSV: a header naming the columns `timestamp,device,point,value` (any order; an optional `profile`
//! column adds devices the site config does not declare). `timestamp` is RFC 3339 or an integer Unix time
//! (seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude). Rows need not be sorted.
//! `--from-influx` reads the same readings back from the site's InfluxDB instead: InfluxQL over the v1 API, or
//! Flux over `/api/v2/query` with `[influxdb] api = "v2"` (annotated CSV, parsed with the `csv` crate).

use super::work_orders::{Format, print_list};
use crate::catalog::Catalog;
use crate::reading::Reading;
use crate::rules::engine::{Engine, Options};
use crate::rules::stage::to_event;
use crate::tabular;
use crate::work_orders::store::Store;
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// Site config (TOML): profiles, devices, rules.
    #[arg(long, short)]
    pub config: PathBuf,
    /// History CSV (`timestamp,device,point,value`).
    #[arg(
        long,
        conflicts_with = "from_influx",
        required_unless_present = "from_influx"
    )]
    pub input: Option<PathBuf>,
    /// Read history from the site's InfluxDB (v1: InfluxQL; v2: Flux) between --from and --to.
    #[arg(long, requires_all = ["from", "to"])]
    pub from_influx: bool,
    /// Start (RFC 3339) for --from-influx.
    #[arg(long)]
    pub from: Option<String>,
    /// End (RFC 3339, exclusive) for --from-influx.
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Header names of the CSV's columns, e.g. `timestamp=Zeit,device=Gerät,point=Punkt,value=Wert`.
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// CSV field separator: `,`, `;` or `tab` (default: detected).
    #[arg(long)]
    pub delimiter: Option<String>,
    /// CSV decimal mark: `.` or `,` (default: detected).
    #[arg(long)]
    pub decimal: Option<String>,
}

/// Parses a timestamp: RFC 3339, or integer Unix time in s/ms/us/ns by magnitude. Returns nanoseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        let a = n.unsigned_abs();
        return Ok(if a >= 100_000_000_000_000_000 {
            n
        } else if a >= 100_000_000_000_000 {
            n * 1_000
        } else if a >= 100_000_000_000 {
            n * 1_000_000
        } else {
            n * 1_000_000_000
        });
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_nanosecond() as i64)
        .map_err(|e| format!("`{s}` is neither RFC 3339 nor a Unix time: {e}"))
}

/// One history row, before it is mapped to a point.
#[derive(Debug, Clone)]
pub struct Row {
    pub at: i64,
    pub device: String,
    pub point: String,
    pub value: f64,
    pub profile: Option<String>,
    pub line: u64,
}

/// Reads a history CSV with the default options (detected separator and decimal mark, civil times in UTC).
pub fn read_csv(path: &Path) -> Result<Vec<Row>, Vec<String>> {
    read_csv_with(path, &tabular::Options::default(), &jiff::tz::TimeZone::UTC)
        .map(|(rows, _)| rows)
}

/// Reads a history CSV: the good rows, and every rejected line as `file:line: reason`. An error (naming the
/// file) only when nothing can be read: no file, no header, a header without the four columns.
pub fn read_csv_with(
    path: &Path,
    opts: &tabular::Options,
    tz: &jiff::tz::TimeZone,
) -> Result<(Vec<Row>, Vec<String>), Vec<String>> {
    let text = tabular::read_file(path).map_err(|e| vec![e])?;
    let sheet = tabular::read(&text, opts);
    let at = |line: u64, e: &str| format!("{}:{line}: {e}", path.display());
    let mut errs: Vec<(u64, String)> = sheet
        .rejected
        .iter()
        .map(|r| (r.line, at(r.line, &r.reason)))
        .collect();
    let Some(header) = sheet.records.first() else {
        return Err(vec![format!("{}: empty file", path.display())]);
    };
    let col = |n: &str, aliases: &[&str]| tabular::find_column(header, opts, n, aliases);
    let (ct, cd, cp, cv) = match (
        col("timestamp", &["timestamp", "time"]),
        col("device", &["device"]),
        col("point", &["point"]),
        col("value", &["value"]),
    ) {
        (Ok(t), Ok(d), Ok(p), Ok(v)) => (t, d, p, v),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            return Err(vec![at(
                header.line,
                &format!("the header must name the columns timestamp,device,point,value: {e}"),
            )]);
        }
    };
    let cprof = col("profile", &["profile"]).ok();
    let mut rows = Vec::new();
    for r in &sheet.records[1..] {
        let t = r.get(ct);
        let time = parse_time(t).or_else(|e| {
            tabular::parse_time(t, tz)
                .map(|ts| ts.as_nanosecond() as i64)
                .ok_or(e)
        });
        let v = r.get(cv);
        let value = sheet.number(v).ok_or_else(|| {
            format!(
                "value `{v}` is not a number (decimal mark `{}`)",
                sheet.dialect.decimal as char
            )
        });
        match (time, value) {
            (Ok(t), Ok(value)) => rows.push(Row {
                at: t,
                device: r.get(cd).to_string(),
                point: r.get(cp).to_string(),
                value,
                profile: cprof
                    .map(|c| r.get(c).to_string())
                    .filter(|s| !s.is_empty()),
                line: r.line,
            }),
            (Err(e), _) | (_, Err(e)) => errs.push((r.line, at(r.line, &e))),
        }
    }
    errs.sort_by_key(|e| e.0);
    let errs: Vec<String> = errs.into_iter().map(|e| e.1).collect();
    if rows.is_empty() && !errs.is_empty() {
        return Err(errs);
    }
    Ok((rows, errs))
}

/// Maps rows to readings, adding undeclared devices that name a profile. Errors name the line.
pub fn to_readings(
    catalog: &mut Catalog,
    rows: &[Row],
    source: &str,
) -> Result<Vec<Reading>, Vec<String>> {
    let mut out = Vec::with_capacity(rows.len());
    let mut errs = Vec::new();
    for r in rows {
        let dev = match (catalog.device_by_id(&r.device), &r.profile) {
            (Some((i, _)), _) => Some(i),
            (None, Some(p)) => match catalog.add_device(&r.device, p, BTreeMap::new(), false) {
                Ok(i) => Some(i),
                Err(e) => {
                    errs.push(format!("{source}:{}: device `{}`: {e}", r.line, r.device));
                    None
                }
            },
            (None, None) => {
                errs.push(format!(
                    "{source}:{}: unknown device `{}` (declare it in the site config or add a `profile` column)",
                    r.line, r.device
                ));
                None
            }
        };
        if let Some(d) = dev {
            match catalog.device(d).point_id(&r.point) {
                Some(p) => out.push(Reading::good(p, r.value, r.at)),
                None => errs.push(format!(
                    "{source}:{}: device `{}` (profile `{}`) has no point `{}`",
                    r.line,
                    r.device,
                    catalog.device(d).profile.name,
                    r.point
                )),
            }
        }
        if errs.len() >= 20 {
            break;
        }
    }
    if errs.is_empty() { Ok(out) } else { Err(errs) }
}

/// Replays readings (any order) through the rules; returns the store holding the work orders they opened.
pub fn replay(
    loaded: &crate::app::Loaded,
    catalog: &Catalog,
    mut readings: Vec<Reading>,
    progress: bool,
) -> anyhow::Result<Store> {
    readings.sort_by_key(|r| r.at);
    let wo = &loaded.config.work_orders;
    let mut engine = Engine::new(
        loaded.rules.clone(),
        Options {
            repeat_every_ns: wo.update_every.as_nanos() as i64,
        },
    );
    let mut store = Store::in_memory(&loaded.config.site.name)?;
    store.set_flap_window(wo.flap_window);
    let site = &loaded.config.site.name;
    let mut out = Vec::new();
    let total = readings.len();
    let started = Instant::now();
    let mut last_report = Instant::now();
    // The daemon ticks every second of wall time; on history, tick as data time passes.
    const TICK_NS: i64 = 1_000_000_000;
    let mut next_tick = readings.first().map(|r| r.at).unwrap_or(0);
    for (i, r) in readings.iter().enumerate() {
        while r.at >= next_tick {
            engine.tick(catalog, next_tick, &mut out);
            // Through long gaps, a tick a minute keeps replays of months quick.
            next_tick += if r.at - next_tick > 3600 * TICK_NS {
                60 * TICK_NS
            } else {
                TICK_NS
            };
        }
        engine.evaluate(catalog, r, &mut out);
        for t in out.drain(..) {
            store.apply(&to_event(&loaded.rules, catalog, site, &t))?;
        }
        if progress && last_report.elapsed().as_secs_f64() >= 1.0 {
            last_report = Instant::now();
            eprintln!(
                "backtest: {}/{} readings ({:.0}%), at {}",
                i + 1,
                total,
                (i + 1) as f64 * 100.0 / total.max(1) as f64,
                crate::work_orders::rfc3339_ms(r.at / 1_000_000)
            );
        }
    }
    // The last moment's expression rules.
    engine.flush(&mut out);
    for t in out.drain(..) {
        store.apply(&to_event(&loaded.rules, catalog, site, &t))?;
    }
    if progress {
        eprintln!(
            "backtest: {total} readings through {} rules in {:.2}s",
            loaded.rules.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(store)
}

/// Reads readings back from InfluxDB (v1 API): every field of every series with a `device` tag.
async fn from_influx(
    cfg: &crate::sinks::influx::config::InfluxConfig,
    from: &str,
    to: &str,
) -> anyhow::Result<Vec<Row>> {
    use crate::sinks::influx::config::InfluxApi;
    use crate::sinks::influx::query;
    let (f, t) = (
        parse_time(from).map_err(anyhow::Error::msg)?,
        parse_time(to).map_err(anyhow::Error::msg)?,
    );
    let points = match &cfg.api {
        InfluxApi::V1 {
            database,
            username,
            password,
            ..
        } => {
            let target = query::V1Target {
                url: &cfg.url,
                database,
                username: username.as_deref(),
                password: password.as_deref(),
                tls: Some(&cfg.tls),
            };
            query::points_by_device(&target, f, t).await?
        }
        // Flux over /api/v2/query (InfluxDB 2.x; 3.x has no Flux: use api = "v1" there for InfluxQL).
        InfluxApi::V2 { org, bucket, token } => {
            let target = query::V2Target {
                url: &cfg.url,
                org,
                bucket,
                token,
                tls: Some(&cfg.tls),
            };
            query::points_by_device_v2(&target, f, t).await?
        }
    };
    Ok(points
        .into_iter()
        .map(|p| Row {
            at: p.at,
            device: p.device,
            point: p.point,
            value: p.value,
            profile: None,
            line: 0,
        })
        .collect())
}

/// Runs `caretaker backtest`; returns the exit code.
pub fn run(a: BacktestArgs) -> anyhow::Result<i32> {
    let loaded = match crate::app::load(&a.config) {
        Ok(l) => l,
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s) in {}", errs.len(), a.config.display());
            return Ok(1);
        }
    };
    let (opts, plain) =
        super::energy::csv_options(&a.columns, a.delimiter.as_deref(), a.decimal.as_deref())?;
    if let Some(p) = plain.first() {
        anyhow::bail!(
            "--columns `{p}`: expected NAME=HEADER (timestamp, device, point, value, profile)"
        );
    }
    let (rows, source) = match &a.input {
        Some(p) => match read_csv_with(p, &opts, &loaded.config.timezone()) {
            Ok((r, rejected)) => {
                for e in &rejected {
                    eprintln!("rejected: {e}");
                }
                if !rejected.is_empty() {
                    eprintln!(
                        "backtest: {} line(s) rejected, replaying the other {} rows",
                        rejected.len(),
                        r.len()
                    );
                }
                (r, p.display().to_string())
            }
            Err(es) => {
                for e in es {
                    eprintln!("error: {e}");
                }
                return Ok(1);
            }
        },
        None => {
            let Some(influx) = &loaded.config.influxdb else {
                anyhow::bail!(
                    "--from-influx needs an [influxdb] section in {}",
                    a.config.display()
                );
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let rows = rt.block_on(from_influx(
                influx,
                a.from.as_deref().unwrap_or(""),
                a.to.as_deref().unwrap_or(""),
            ))?;
            // Series of undeclared devices carry no profile: only declared devices' readings map.
            let rows: Vec<Row> = rows
                .into_iter()
                .filter(|r| {
                    loaded
                        .catalog
                        .device_by_id(&r.device)
                        .is_some_and(|(_, d)| d.profile.point_index(&r.point).is_some())
                })
                .collect();
            (rows, "influxdb".to_string())
        }
    };
    let mut catalog = loaded.catalog.clone();
    let readings = match to_readings(&mut catalog, &rows, &source) {
        Ok(r) => r,
        Err(es) => {
            for e in es {
                eprintln!("error: {e}");
            }
            return Ok(1);
        }
    };
    let store = replay(&loaded, &catalog, readings, true)?;
    let list = store.list(None)?;
    eprintln!(
        "backtest: {} work order(s) would have been opened",
        list.len()
    );
    print_list(&list, a.format);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_every_form() {
        let ns = 1_767_225_600_000_000_000i64;
        assert_eq!(parse_time("2026-01-01T00:00:00Z").unwrap(), ns);
        assert_eq!(parse_time("1767225600").unwrap(), ns);
        assert_eq!(parse_time("1767225600000").unwrap(), ns);
        assert_eq!(parse_time("1767225600000000").unwrap(), ns);
        assert_eq!(parse_time("1767225600000000000").unwrap(), ns);
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn csv_errors_name_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.csv");
        std::fs::write(
            &p,
            "device,timestamp,point,value\nahu-1,2026-01-01T00:00:00Z,t,1.5\nahu-1,soon,t,2\n",
        )
        .unwrap();
        let (rows, e) = read_csv_with(&p, &Default::default(), &jiff::tz::TimeZone::UTC).unwrap();
        assert_eq!(rows.len(), 1, "the good row is kept");
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("h.csv:3:"), "{e:?}");
        std::fs::write(&p, "time,device\n").unwrap();
        assert!(read_csv(&p).unwrap_err()[0].contains("header"));
    }

    #[test]
    fn european_history_with_mapped_columns() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.csv");
        std::fs::write(
            &p,
            "\u{feff}Zeit;Gerät;Punkt;Wert\n01.01.2026 01:00;\"ahu-1; Halle\";t;21,5\n",
        )
        .unwrap();
        let mut opts = tabular::Options::default();
        opts.parse_columns(&["time=Zeit,device=Gerät,point=Punkt,value=Wert".into()])
            .unwrap();
        let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let (rows, e) = read_csv_with(&p, &opts, &tz).unwrap();
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(rows[0].at, 1_767_225_600_000_000_000);
        assert_eq!(rows[0].device, "ahu-1; Halle");
        assert_eq!(rows[0].value, 21.5);
        assert_eq!(rows[0].line, 2);
    }
}
