//! Energy: a year of 15-minute meter readings for 200 meters, rolled up into the store and reported.
//!
//! `cargo bench --bench energy` runs the full size (200 meters × 365 days + 4 weeks of baseline history);
//! `cargo test --all-targets` runs it tiny, as a smoke test. Phases, each timed:
//! 1. convert: every meter's counter readings (one per 15 minutes) through the `Converter` into slots;
//!    reference: a plain loop summing the same readings' deltas (the least any conversion must do);
//! 2. store: the slots written into `energy.sqlite` (one transaction per meter);
//! 3. report: `report::build` for the year by day per device (baseline, cost, after-hours, peaks) and by month
//!    per category, plus JSON/HTML rendering; reference: reading every day row of the store and summing its
//!    values (a plain sum over the same rows). The report phase runs in a child process (this program again,
//!    with `--report-child`), as `caretaker energy report` would: its peak memory is that process's high-water
//!    mark (VmHWM), everything included.

use caretaker::energy::config::{EnergyConfig, validate};
use caretaker::energy::counter::{Converter, MeterKind, MeterSpec, Slots};
use caretaker::energy::report::{self, By, Group, Query};
use caretaker::energy::store::{self, Mode, Store};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

fn vm(key: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn cfg() -> EnergyConfig {
    let raw = toml::from_str(
        r#"
        [calendar]
        open = "07:00-19:00"
        holidays = ["2026-04-03", "2026-12-25"]
        [[tariffs]]
        name = "grid"
        category = "electricity"
        valid_from = "2025-01-01"
        valid_to = "2026-07-01"
        standing_per_day = 1.2
        demand_per_kw_month = 8.5
        rates = [{ price = 0.30, days = ["mon","tue","wed","thu","fri"], from = "07:00", to = "21:00" }, { price = 0.21 }]
        [[tariffs]]
        name = "grid-h2"
        category = "electricity"
        valid_from = "2026-07-01"
        rates = [{ price = 0.34, days = ["mon","tue","wed","thu","fri"], from = "07:00", to = "21:00" }, { price = 0.23 }]
        "#,
    )
    .unwrap();
    let (c, errs) = validate(&raw);
    assert!(errs.is_empty(), "{errs:?}");
    c
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--report-child") {
        report_child(
            std::path::Path::new(&args[i + 1]),
            args[i + 2].parse().unwrap(),
        );
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let (meters, days) = if full { (200usize, 365i64) } else { (4, 14) };
    let history = 28i64;
    let period = 900i64;
    let start = 1_767_222_000i64 - history * 86400; // 2025-12-31T23:00Z = 2026-01-01 local midnight, minus history
    let n = ((days + history) * 86400 / period) as usize;
    println!(
        "energy bench: {meters} meters × {days} days (+{history} days history), {n} readings per meter"
    );

    // Readings: office-like load (base + working hours + noise), as the counter shows it (3 decimals).
    let mut rng = fastrand::Rng::with_seed(7);
    let readings: Vec<Vec<(f64, f64)>> = (0..meters)
        .map(|m| {
            let base = 2.0 + (m % 7) as f64;
            let mut kwh = 10_000.0 * m as f64;
            (0..n)
                .map(|i| {
                    let t = start + i as i64 * period;
                    let h = ((t + 3600) / 3600) % 24;
                    let kw =
                        base + if (7..19).contains(&h) {
                            base * 2.0
                        } else {
                            0.0
                        } + rng.f64();
                    kwh += kw / 4.0;
                    (t as f64, (kwh * 1000.0).round() / 1000.0)
                })
                .collect()
        })
        .collect();

    // 1. Convert.
    let t = Instant::now();
    let mut reference = 0.0;
    for r in &readings {
        for w in r.windows(2) {
            reference += w[1].1 - w[0].1;
        }
    }
    black_box(reference);
    let ref_convert = t.elapsed();
    let t = Instant::now();
    let spec = MeterSpec {
        kind: MeterKind::Counter { wrap: None },
        to_base: 1.0,
    };
    let mut all_slots = Vec::with_capacity(meters);
    let mut total = 0.0;
    for r in &readings {
        let mut c = Converter::new(spec, period);
        let mut out = Slots::default();
        let mut ev = Vec::new();
        for &(t, v) in r {
            c.push(t, v, &mut out, &mut ev);
        }
        total += out.total();
        all_slots.push((out, c.state));
    }
    let convert = t.elapsed();
    assert!(
        (total - reference).abs() < 1e-6 * reference,
        "totals balance"
    );
    let nr = (meters * n) as f64;
    println!(
        "convert: {:.3} s ({:.1} M readings/s); reference plain delta sum {:.4} s; ratio {:.1}x",
        convert.as_secs_f64(),
        nr / convert.as_secs_f64() / 1e6,
        ref_convert.as_secs_f64(),
        convert.as_secs_f64() / ref_convert.as_secs_f64().max(1e-9)
    );
    drop(readings);

    // 2. Store.
    let dir = tempfile::tempdir().unwrap();
    let path = store::path_in(dir.path());
    let mut st = Store::open(&path, period, "Europe/Berlin", "bench").unwrap();
    let t = Instant::now();
    for (m, (slots, state)) in all_slots.iter().enumerate() {
        let loc = BTreeMap::from([("building".to_string(), format!("b{}", m % 10))]);
        let cat = if m % 10 == 9 { "heat" } else { "electricity" };
        let id = st
            .series_id(
                &format!("meter-{m:03}"),
                "energy_total",
                "kWh",
                cat,
                false,
                &loc,
            )
            .unwrap();
        st.write(&[(id, slots)], Mode::Add, &[(id, state)], &[])
            .unwrap();
    }
    let store_t = t.elapsed();
    drop(all_slots);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(path.with_extension("sqlite-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!(
        "store: {:.3} s to write {} day rows; file {:.1} MB ({:.1} MB per 100 meter-years)",
        store_t.as_secs_f64(),
        meters as i64 * (days + history),
        size as f64 / 1e6,
        size as f64 / 1e6 / (meters as f64 * (days + history) as f64 / 365.0) * 100.0
    );
    drop(st);

    // 3. Report: in a fresh process, so its memory is the report's alone (as `caretaker energy report` runs).
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--report-child")
        .arg(&path)
        .arg(days.to_string())
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "report child failed");
}

/// The report phase, run as a child process: `--report-child STORE DAYS`.
fn report_child(path: &std::path::Path, days: i64) {
    let tz = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    // 3. Report, from a freshly opened store (as the CLI does).
    let (st, _, _) = Store::open_existing(path).unwrap();
    let t = Instant::now();
    let mut plain = 0.0;
    for s in st.series().unwrap() {
        st.for_each_day(s.id, i64::MIN / 2, i64::MAX / 2, |_, v, _| {
            plain += v.iter().filter(|x| !x.is_nan()).sum::<f64>();
        })
        .unwrap();
    }
    black_box(plain);
    let ref_report = t.elapsed();
    let cfg = cfg();
    let from: jiff::civil::Date = "2026-01-01".parse().unwrap();
    let to = from.checked_add(jiff::Span::new().days(days)).unwrap();
    let rss_before = vm("VmRSS:");
    let t = Instant::now();
    let q = Query {
        from,
        to,
        by: By::Day,
        group: Group::Device,
        devices: None,
    };
    let rep = report::build(&st, &cfg, &tz, &q, None).unwrap();
    let by_day = t.elapsed();
    let json = report::to_json(&rep);
    let html = caretaker::energy::report::html::render(&rep, &q);
    let render = t.elapsed() - by_day;
    let t2 = Instant::now();
    let q2 = Query {
        by: By::Month,
        group: Group::Category,
        ..q.clone()
    };
    let rep2 = report::build(&st, &cfg, &tz, &q2, None).unwrap();
    let by_month = t2.elapsed();
    let peak = vm("VmHWM:");
    let sum: f64 = rep.rows.iter().map(|r| r.consumption).sum();
    let sum2: f64 = rep2.rows.iter().map(|r| r.consumption).sum();
    assert!(
        (sum - sum2).abs() < 1e-6 * sum,
        "both groupings add up: {sum} vs {sum2}"
    );
    assert!(
        rep.rows.iter().any(|r| r.baseline.is_some()) && rep.rows.iter().any(|r| r.cost.is_some())
    );
    println!(
        "report by day per device: {:.3} s ({} rows, json {:.1} MB, html {:.1} MB rendered in {:.3} s)",
        by_day.as_secs_f64(),
        rep.rows.len(),
        json.len() as f64 / 1e6,
        html.len() as f64 / 1e6,
        render.as_secs_f64()
    );
    println!(
        "report by month per category: {:.3} s ({} rows)",
        by_month.as_secs_f64(),
        rep2.rows.len()
    );
    println!(
        "reference plain sum over the same day rows: {:.3} s; ratio (by day report / plain sum) {:.1}x",
        ref_report.as_secs_f64(),
        by_day.as_secs_f64() / ref_report.as_secs_f64().max(1e-9)
    );
    println!(
        "peak memory of the report process: {peak:.0} MB (RSS after opening the store: {rss_before:.0} MB); targets: < 2 s, < 200 MB"
    );
}
