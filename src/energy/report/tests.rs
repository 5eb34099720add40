//! The report's tests: building rows from a fixture store (cost, baseline, peaks, groups, DST days, virtual
//! meters, degree days, settlement periods) and the JSON and CSV shapes.

use super::*;
use crate::energy::config::EnergyConfig;
use crate::energy::config::validate;
use crate::energy::counter::Slots;
use crate::energy::store::Mode;
use crate::energy::store::Store;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::collections::BTreeMap;
use std::path::Path;

/// A store with three meters, 15-minute slots, from 2025-12-01 to 2026-04-01 (UTC):
/// `main` draws 4 kW always; `pv_export` exports 1 kW 10:00-14:00 local; `water-1` 0.01 m3 per slot.
fn fixture(dir: &Path) -> (Store, TimeZone) {
    let tz = TimeZone::get("Europe/Berlin").unwrap();
    let mut st = Store::open(
        &crate::energy::store::path_in(dir),
        900,
        "Europe/Berlin",
        "test",
    )
    .unwrap();
    let loc = |b: &str| BTreeMap::from([("building".to_string(), b.to_string())]);
    let main = st
        .series_id(
            "main",
            "energy_total",
            "kWh",
            "electricity",
            false,
            &loc("A"),
        )
        .unwrap();
    let pv = st
        .series_id(
            "pv_export",
            "energy_total",
            "kWh",
            "electricity",
            false,
            &loc("A"),
        )
        .unwrap();
    let water = st
        .series_id("water-1", "volume", "m3", "water", false, &loc("B"))
        .unwrap();
    let (a, b) = (1_764_547_200 / 900, 1_775_001_600 / 900);
    let (mut sm, mut sp, mut sw) = (Slots::default(), Slots::default(), Slots::default());
    for slot in a..b {
        sm.add(slot, 1.0, 0);
        sw.add(slot, 0.01, 0);
        let h = tz
            .to_datetime(Timestamp::from_second(slot * 900).unwrap())
            .hour();
        sp.add(slot, if (10..14).contains(&h) { 0.25 } else { 0.0 }, 0);
    }
    st.write(&[(main, &sm), (pv, &sp), (water, &sw)], Mode::Add, &[], &[])
        .unwrap();
    (st, tz)
}

fn cfg() -> EnergyConfig {
    let raw = toml::from_str(
        r#"
        [[tariffs]]
        name = "t"
        category = "electricity"
        valid_from = "2026-01-01"
        currency = "EUR"
        demand_per_kw_month = 10.0
        rates = [{ price = 0.30, days = ["mon","tue","wed","thu","fri"], from = "07:00", to = "21:00" }, { price = 0.20 }]
        [[virtual_meters]]
        name = "building_total"
        expr = "main - pv_export"
        "#,
    )
    .unwrap();
    let (c, errs) = validate(&raw);
    assert!(errs.is_empty(), "{errs:?}");
    c
}

fn q(from: &str, to: &str, by: By, group: &str) -> Query {
    Query {
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
        by,
        group: Group::parse(group),
        devices: None,
    }
}

fn row<'a>(r: &'a Report, period: &str, group: &str) -> &'a Row {
    r.rows
        .iter()
        .find(|x| x.period == period && x.group == group)
        .unwrap_or_else(|| panic!("no row {period}/{group} in {:#?}", r.rows))
}

#[test]
fn day_rows_cost_baseline_peak_and_virtual_meters() {
    let dir = tempfile::tempdir().unwrap();
    let (st, tz) = fixture(dir.path());
    let r = build(
        &st,
        &cfg(),
        &tz,
        &q("2026-01-12", "2026-01-13", By::Day, "device"),
        None,
    )
    .unwrap();
    let m = row(&r, "2026-01-12", "main"); // a Monday
    assert_eq!(m.consumption, 96.0);
    assert_eq!(m.unit, "kWh");
    assert_eq!(m.baseline, Some(96.0));
    assert_eq!(m.peak_kw, Some(4.0));
    assert!(!m.estimated);
    // 14 h at 0.30 and 10 h at 0.20, 4 kWh per hour (demand charges go to month rows).
    assert!((m.cost.unwrap() - 24.8).abs() < 1e-9, "{m:?}");
    // Default calendar: open 07:00-19:00 on weekdays.
    assert_eq!(m.after_hours, 48.0);
    assert_eq!(row(&r, "2026-01-12", "building_total").consumption, 92.0);
    assert_eq!(row(&r, "2026-01-12", "water-1").unit, "m3");
    assert_eq!(
        row(&r, "2026-01-12", "water-1").cost,
        None,
        "no water tariff"
    );
    // Before the tariff's valid_from nothing is priced.
    let r = build(
        &st,
        &cfg(),
        &tz,
        &q("2025-12-31", "2026-01-01", By::Day, "device"),
        None,
    )
    .unwrap();
    assert_eq!(row(&r, "2025-12-31", "main").cost, None);
}

#[test]
fn groups_months_and_dst_days() {
    let dir = tempfile::tempdir().unwrap();
    let (st, tz) = fixture(dir.path());
    let r = build(
        &st,
        &cfg(),
        &tz,
        &q("2026-03-28", "2026-03-31", By::Day, "category"),
        None,
    )
    .unwrap();
    assert_eq!(row(&r, "2026-03-28", "electricity").consumption, 100.0);
    // Summer time starts on 2026-03-29: a 23-hour local day.
    assert_eq!(
        row(&r, "2026-03-29", "electricity").consumption,
        23.0 * 4.0 + 4.0
    );
    assert!((row(&r, "2026-03-29", "water").consumption - 0.92).abs() < 1e-9);
    let r = build(
        &st,
        &cfg(),
        &tz,
        &q("2026-01-01", "2026-03-01", By::Month, "building"),
        None,
    )
    .unwrap();
    let a = row(&r, "2026-01", "A");
    assert_eq!(a.consumption, 31.0 * 100.0);
    assert_eq!(a.peak_kw, Some(5.0), "coincident peak of main + pv_export");
    // Month rows include demand charges: each meter's monthly peak × 10 EUR/kW.
    // 3100 kWh at 0.20, plus 0.10 more on the 60 kWh of 07:00-21:00 on each of 22 weekdays.
    let energy: f64 = 3100.0 * 0.2 + 22.0 * 60.0 * 0.1;
    assert!(
        (a.cost.unwrap() - (energy + 40.0 + 10.0)).abs() < 1e-6,
        "{a:?}"
    );
    assert_eq!(row(&r, "2026-02", "B").unit, "m3");
    // Site totals count real meters once (the virtual meter's demand charge is not added again).
    let r = build(
        &st,
        &cfg(),
        &tz,
        &q("2026-01-01", "2026-02-01", By::Month, "device"),
        None,
    )
    .unwrap();
    let real: f64 = ["main", "pv_export"]
        .iter()
        .map(|g| row(&r, "2026-01", g).cost.unwrap())
        .sum();
    assert!(row(&r, "2026-01", "building_total").cost.is_some());
    assert!(
        (r.meta.totals["kWh"].1.unwrap() - real).abs() < 1e-6,
        "{:?}",
        r.meta.totals
    );
    let r = build(
        &st,
        &cfg(),
        &tz,
        &q("2026-01-05", "2026-01-19", By::Week, "device"),
        None,
    )
    .unwrap();
    assert_eq!(row(&r, "2026-W02", "main").consumption, 7.0 * 96.0);
    let r = build(
        &st,
        &cfg(),
        &tz,
        &q("2026-01-05", "2026-01-06", By::Hour, "device"),
        None,
    )
    .unwrap();
    assert_eq!(
        row(&r, "2026-01-05T10:00+01:00", "pv_export").consumption,
        1.0
    );
}

#[test]
fn baseline_needs_history_and_json_shape_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (st, tz) = fixture(dir.path());
    // 2025-12-02 has one day of history only: no baseline.
    let r = build(
        &st,
        &cfg(),
        &tz,
        &q("2025-12-02", "2025-12-03", By::Day, "device"),
        None,
    )
    .unwrap();
    assert_eq!(row(&r, "2025-12-02", "main").baseline, None);
    let v: serde_json::Value = serde_json::from_str(&to_json(&r)).unwrap();
    let first = &v["rows"][0];
    for k in [
        "period",
        "group",
        "consumption",
        "unit",
        "cost",
        "baseline",
        "estimated",
    ] {
        assert!(first.get(k).is_some(), "missing {k} in {first}");
    }
    assert_eq!(first["period"], "2025-12-02");
    assert!(first["consumption"].is_f64());
    assert!(first["estimated"].is_boolean());
    let csv = to_csv(&r);
    assert!(csv.starts_with("period,group,consumption,unit,cost,baseline,estimated"));
    assert_eq!(csv.lines().count(), r.rows.len() + 1);
}

#[test]
fn baseline_deviation_for_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (mut st, tz) = fixture(dir.path());
    // main draws 30 % more on 2026-01-13 (every slot 1.3 kWh instead of 1.0).
    let id = st
        .series()
        .unwrap()
        .iter()
        .find(|s| s.device == "main")
        .unwrap()
        .id;
    let day0 = tz
        .to_timestamp("2026-01-13T00:00".parse().unwrap())
        .unwrap()
        .as_second()
        / 900;
    let mut extra = crate::energy::counter::Slots::default();
    for s in day0..day0 + 96 {
        extra.add(s, 0.3, 0);
    }
    st.write(&[(id, &extra)], Mode::Add, &[], &[]).unwrap();
    let c = cfg();
    let d = |s: &str| s.parse::<Date>().unwrap();
    let dev =
        crate::energy::daily_deviations(&st, &c, &tz, "main", d("2026-01-12"), d("2026-01-15"))
            .unwrap();
    assert_eq!(dev[0], (d("2026-01-12"), Some(0.0)));
    assert!((dev[1].1.unwrap() - 0.3).abs() < 1e-9, "{dev:?}");
    assert_eq!(dev[2].1, Some(0.0));
    assert_eq!(
        crate::energy::baseline_deviation(&st, &c, &tz, "main", d("2025-12-02")).unwrap(),
        None,
        "no history yet"
    );
    assert_eq!(
        crate::energy::baseline_deviation(&st, &c, &tz, "nope", d("2026-01-12")).unwrap(),
        None
    );
}

#[test]
fn degree_days_normalise_the_baseline() {
    // A heating meter using 10 kWh a day plus 2 kWh per heating degree day (base 15.5 degC). Outdoor
    // temperatures alternate 5 and 10 degC by day; 2026-01-20 is a cold snap at -5 degC.
    let dir = tempfile::tempdir().unwrap();
    let tz = TimeZone::UTC;
    let mut st = Store::open(&crate::energy::store::path_in(dir.path()), 900, "UTC", "t").unwrap();
    let id = st
        .series_id("heat-1", "energy", "kWh", "heat", false, &BTreeMap::new())
        .unwrap();
    let (d0, d1) = (1_764_547_200 / 86400, 1_769_904_000 / 86400); // 2025-12-01 .. 2026-02-01
    let cold = 1_768_867_200 / 86400; // 2026-01-20
    let temp = |d: i64| {
        if d == cold {
            -5.0
        } else if d % 2 == 0 {
            5.0
        } else {
            10.0
        }
    };
    let mut slots = Slots::default();
    let mut temps = BTreeMap::new();
    for d in d0..d1 {
        let kwh = 10.0 + 2.0 * (15.5 - temp(d));
        for k in 0..96 {
            slots.add(d * 96 + k, kwh / 96.0, 0);
        }
        for h in 0..24 {
            temps.insert(d * 24 + h, (temp(d), 1u32));
        }
    }
    st.write(&[(id, &slots)], Mode::Add, &[], &[]).unwrap();
    st.write_temperature(&temps, Mode::Add).unwrap();
    let plain = EnergyConfig::default();
    let raw = toml::from_str("[degree_days]\npoint = \"weather/temperature\"\n").unwrap();
    let (dd, errs) = validate(&raw);
    assert!(errs.is_empty(), "{errs:?}");
    let qq = q("2026-01-20", "2026-01-21", By::Day, "device");
    let r0 = build(&st, &plain, &tz, &qq, None).unwrap();
    let r1 = build(&st, &dd, &tz, &qq, None).unwrap();
    let (a, b) = (
        row(&r0, "2026-01-20", "heat-1"),
        row(&r1, "2026-01-20", "heat-1"),
    );
    assert!((a.consumption - 51.0).abs() < 1e-9);
    assert!(
        (a.baseline.unwrap() - 26.0).abs() < 1e-9,
        "hour-of-week median: {a:?}"
    );
    assert!(
        (b.baseline.unwrap() - 51.0).abs() < 1e-6,
        "weather-normalised: {b:?}"
    );
    assert_eq!(b.hdd, Some(20.5));
    assert_eq!(a.hdd, None);
    assert!(!to_json(&r0).contains("hdd"));
}

#[test]
fn hourly_and_half_hourly_settlement_periods() {
    for period in [1800i64, 3600] {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(
            &crate::energy::store::path_in(dir.path()),
            period,
            "UTC",
            "t",
        )
        .unwrap();
        let id = st
            .series_id("m", "e", "kWh", "electricity", false, &BTreeMap::new())
            .unwrap();
        // 2 kW flat, and 6 kW in the 10:00 hour of 2026-01-05.
        let ten = (1_767_571_200 + 10 * 3600) / period;
        let mut s = Slots::default();
        for slot in 1_767_571_200 / period..1_767_657_600 / period {
            let kw = if slot >= ten && slot < ten + 3600 / period {
                6.0
            } else {
                2.0
            };
            s.add(slot, kw * period as f64 / 3600.0, 0);
        }
        st.write(&[(id, &s)], Mode::Add, &[], &[]).unwrap();
        let r = build(
            &st,
            &EnergyConfig::default(),
            &TimeZone::UTC,
            &q("2026-01-05", "2026-01-06", By::Day, "device"),
            None,
        )
        .unwrap();
        let m = row(&r, "2026-01-05", "m");
        assert!(
            (m.consumption - (23.0 * 2.0 + 6.0)).abs() < 1e-9,
            "{period}: {m:?}"
        );
        assert_eq!(m.peak_kw, Some(6.0), "{period}");
    }
}

#[test]
fn virtual_meter_with_unknown_term_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (st, tz) = fixture(dir.path());
    let mut c = cfg();
    c.virtual_meters[0].terms[1].1 = "pv_exprt".into();
    let e = build(
        &st,
        &c,
        &tz,
        &q("2026-01-12", "2026-01-13", By::Day, "device"),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("building_total") && e.contains("did you mean `pv_export`"),
        "{e}"
    );
}

#[test]
fn export_and_generation_roles_beside_consumption_with_net() {
    let dir = tempfile::tempdir().unwrap();
    let (mut st, tz) = fixture(dir.path());
    // `main` is a bidirectional meter: an export register beside its import, and a PV inverter in building A.
    let loc = BTreeMap::from([("building".to_string(), "A".to_string())]);
    let exp = st
        .series_id("main", "energy_export", "kWh", "electricity", false, &loc)
        .unwrap();
    st.set_role(exp, crate::energy::Role::Export).unwrap();
    let pv = st
        .series_id("pv-1", "energy_total", "kWh", "electricity", false, &loc)
        .unwrap();
    st.set_role(pv, crate::energy::Role::Generation).unwrap();
    let (a, b) = (1_768_172_400 / 900, 1_768_258_800 / 900); // 2026-01-12 local day
    let (mut se, mut sp) = (Slots::default(), Slots::default());
    for slot in a..b {
        se.add(slot, 0.125, 0); // 0.5 kW exported all day: 12 kWh
        sp.add(slot, 0.25, 0); // 1 kW generated: 24 kWh
    }
    st.write(&[(exp, &se), (pv, &sp)], Mode::Add, &[], &[])
        .unwrap();
    let r = build(
        &st,
        &cfg(),
        &tz,
        &q("2026-01-12", "2026-01-13", By::Day, "device"),
        None,
    )
    .unwrap();
    let m = row(&r, "2026-01-12", "main");
    assert_eq!(m.consumption, 96.0, "export is not added to consumption");
    assert_eq!(m.export, Some(12.0));
    assert_eq!(m.net, Some(84.0));
    assert_eq!(m.generation, None);
    assert!(
        (m.cost.unwrap() - 24.8).abs() < 1e-9,
        "export is not priced as consumption"
    );
    let p = row(&r, "2026-01-12", "pv-1");
    assert_eq!(
        (p.consumption, p.generation, p.net),
        (0.0, Some(24.0), None)
    );
    // The virtual meter `main - pv_export` still sees only main's consumption.
    assert_eq!(row(&r, "2026-01-12", "building_total").consumption, 92.0);
    // By building: one row with every role.
    let r = build(
        &st,
        &cfg(),
        &tz,
        &q("2026-01-12", "2026-01-13", By::Day, "building"),
        None,
    )
    .unwrap();
    let a = row(&r, "2026-01-12", "A");
    assert_eq!(
        a.consumption,
        96.0 + 4.0,
        "main and pv_export (a consumption meter)"
    );
    assert_eq!(
        (a.export, a.generation, a.net),
        (Some(12.0), Some(24.0), Some(88.0))
    );
    let csv = to_csv(&r);
    assert!(csv.starts_with(
        "period,group,consumption,unit,cost,baseline,estimated,derived,after_hours,peak_kw,export,generation,net\n"
    ));
    let line = csv
        .lines()
        .find(|l| l.starts_with("2026-01-12,A,"))
        .unwrap();
    assert!(line.ends_with(",12,24,88"), "{line}");
    let json = to_json(&r);
    assert!(json.contains("\"net\": 88.0"), "{json}");
    assert!(to_table(&r).contains("export: 12.000 kWh, generation: 24.000 kWh, net consumption:"));
}
