//! Energy end to end: `caretaker energy import` + `caretaker energy report` on a real store (no servers), and
//! live meter readings through real mosquitto → `caretaker run` → energy.sqlite + the `energy` measurement in a
//! real InfluxDB 1.6.7.

use crate::support::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// A JSON meter with its own timestamps, so tests can publish history.
const METER_PROFILE: &str = r#"schema: 1
name: test-kwh-meter
category: electricity
timestamp: { json: /ts, format: epoch_s }
points:
  - { name: energy_total, unit: kWh, kind: counter, mqtt: { json: /kwh } }
  - { name: power, unit: W, kind: gauge, mqtt: { json: /w } }
"#;

fn profiles(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("profiles");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("test-kwh-meter.yaml"), METER_PROFILE).unwrap();
    p
}

fn caretaker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const ENERGY: &str = r#"
[energy]
period = "15m"
baseline_weeks = 4
[energy.calendar]
open = "07:00-19:00"
[[energy.tariffs]]
name = "grid"
category = "electricity"
valid_from = "2025-01-01"
currency = "EUR"
rates = [{ price = 0.30, days = ["mon","tue","wed","thu","fri"], from = "07:00", to = "21:00" }, { price = 0.20 }]
"#;

#[test]
fn check_lists_every_energy_config_error_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        r#"[site]
name = "x"
[state]
dir = "state"
[energy]
period = "20m"
reorder_windw = "1m"
[[energy.tariffs]]
name = "a"
valid_from = "2026-01-01"
rates = [{ price = 0.3, days = ["mnday"], from = "07:00", to = "21:00" }]
[[energy.tariffs]]
name = "b"
valid_from = "2026-06-01"
category = "electrcity"
rates = [{ price = 0.3 }]
[[energy.virtual_meters]]
name = "v"
expr = "a b"
"#,
    );
    let o = caretaker(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "site.toml:6: energy.period: `20m`: the settlement period must be 15m, 30m or 60m",
        "site.toml:7: energy.reorder_windw: unknown key `reorder_windw`",
        "site.toml:11: energy.tariffs[0].rates[0].days: `mnday` is not a weekday",
        "site.toml:11: energy.tariffs[0].rates: no rate covers mon 00:00",
        "site.toml:15: energy.tariffs[1].category: unknown category `electrcity` (did you mean `electricity`?)",
        "energy.tariffs[1].valid_from: tariff `b` overlaps tariff `a`",
        "site.toml:19: energy.virtual_meters[0].expr: `a b`: missing `+` or `-` before `b`",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn import_a_meter_export_then_report_json_csv_html() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"[site]
name = "north campus"
timezone = "Europe/Berlin"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[[devices]]
id = "meter-1"
profile = "test-kwh-meter"
location = {{ building = "main" }}
{ENERGY}"#,
            state = dir.path().join("state").display(),
            profiles = profiles(dir.path()).display(),
        ),
    );
    // Five weeks of a meter export at 15-minute resolution (local time, as utilities deliver it): 4 kW by day
    // (07:00-19:00), 2 kW at night, i.e. 72 kWh a day; the counter as the meter shows it, with 3 decimals.
    let mut csv = String::from("timestamp;value\n");
    let mut kwh = 48_211.5;
    let start: jiff::civil::DateTime = "2025-12-08T00:00".parse().unwrap();
    for q in 0..(35 * 96 + 1) {
        let dt = start
            .checked_add(jiff::SignedDuration::from_mins(15 * q))
            .unwrap();
        csv.push_str(&format!("{};{:.3}\n", dt.strftime("%Y-%m-%d %H:%M"), kwh));
        let h = dt.hour();
        kwh += if (7..19).contains(&h) { 1.0 } else { 0.5 };
    }
    let csv_path = dir.path().join("meter-1.csv");
    std::fs::write(&csv_path, &csv).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let args = [
        "energy",
        "import",
        "--config",
        cfg_s,
        "--csv",
        csv_path.to_str().unwrap(),
        "--device",
        "meter-1",
        "--point",
        "energy_total",
    ];
    let o = caretaker(&args);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("imported 3361 readings of meter-1/energy_total"),
        "{}",
        text(&o)
    );
    assert!(
        out.contains("2520.000 kWh"),
        "35 days × 72 kWh: {}",
        text(&o)
    );
    // Importing the same file again replaces, never doubles.
    assert!(caretaker(&args).status.success());

    let report = |extra: &[&str]| {
        let mut a = vec![
            "energy",
            "report",
            "--config",
            cfg_s,
            "--from",
            "2026-01-05",
            "--to",
            "2026-01-11",
        ];
        a.extend_from_slice(extra);
        let o = caretaker(&a);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let json: serde_json::Value =
        serde_json::from_str(&report(&["--by", "day", "--format", "json"])).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 7, "{json}");
    let monday = &rows[0];
    assert_eq!(monday["period"], "2026-01-05");
    assert_eq!(monday["group"], "meter-1");
    assert_eq!(monday["unit"], "kWh");
    assert_eq!(monday["consumption"].as_f64(), Some(72.0));
    assert_eq!(monday["estimated"], false);
    assert_eq!(
        monday["baseline"].as_f64(),
        Some(72.0),
        "4 previous weeks of the same load"
    );
    // 07:00-19:00 at 4 kW and 0.30, 19:00-21:00 at 2 kW and 0.30, the other 10 h at 2 kW and 0.20.
    let cost = 48.0 * 0.30 + 4.0 * 0.30 + 20.0 * 0.20;
    assert!(
        (monday["cost"].as_f64().unwrap() - cost).abs() < 1e-6,
        "{monday}"
    );
    assert_eq!(monday["peak_kw"].as_f64(), Some(4.0));
    let sunday = &rows[6];
    assert_eq!(sunday["period"], "2026-01-11");
    assert!(
        (sunday["cost"].as_f64().unwrap() - 72.0 * 0.20).abs() < 1e-6,
        "{sunday}"
    );
    assert_eq!(
        sunday["after_hours"].as_f64(),
        Some(72.0),
        "weekends are after-hours"
    );

    let by_building = report(&["--by", "week", "--group", "building", "--format", "csv"]);
    let mut lines = by_building.lines();
    assert_eq!(
        lines.next().unwrap(),
        "period,group,consumption,unit,cost,baseline,estimated,derived,after_hours,peak_kw"
    );
    assert!(
        lines.next().unwrap().starts_with("2026-W02,main,504,kWh,"),
        "{by_building}"
    );

    let one: serde_json::Value = serde_json::from_str(&report(&[
        "--by", "month", "--device", "meter-1", "--format", "json",
    ]))
    .unwrap();
    assert_eq!(one["rows"].as_array().unwrap().len(), 1, "{one}");
    let none: serde_json::Value =
        serde_json::from_str(&report(&["--device", "meter-9", "--format", "json"])).unwrap();
    assert!(none["rows"].as_array().unwrap().is_empty());
    let table = report(&["--by", "month"]);
    assert!(
        table.contains("2026-01") && table.contains("504.000"),
        "{table}"
    );

    let o = caretaker(&[
        "energy",
        "report",
        "--config",
        cfg_s,
        "--from",
        "2027-01-01",
        "--to",
        "2027-01-31",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(
            "no data in this range; the store holds 2025-12-08 00:00 .. 2026-01-12 00:00"
        ),
        "{}",
        text(&o)
    );

    let html_path = dir.path().join("report.html");
    let o = caretaker(&[
        "energy",
        "report",
        "--config",
        cfg_s,
        "--from",
        "2025-12-08",
        "--to",
        "2026-01-11",
        "--format",
        "html",
        "--output",
        html_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(
        html.matches("<svg xmlns").count(),
        2,
        "bar chart and heat map"
    );
    assert!(html.contains("Top after-hours consumers") && html.contains("meter-1"));
    assert!(html.contains("2,520 kWh"), "total in the cards");
    assert!(
        !html.contains("Data quality"),
        "a clean export has no meter events"
    );
    for external in ["src=", "href=", "<script", "@import", "url("] {
        assert!(!html.contains(external), "self-contained: found {external}");
    }

    // The store alone (a copy sent to an analyst): no tariffs, so no cost, but the same consumption.
    let state = dir.path().join("state");
    let o = caretaker(&[
        "energy",
        "report",
        "--state",
        state.to_str().unwrap(),
        "--from",
        "2026-01-05",
        "--to",
        "2026-01-05",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rows"][0]["consumption"].as_f64(), Some(72.0));
    assert!(v["rows"][0]["cost"].is_null());

    // A German export (BOM, `;`, decimal commas, DD.MM.YYYY, a quoted field) with one bad line: the good lines
    // are imported, the bad one is named with its line and reason, and the exit code says so (2).
    std::fs::write(
        &csv_path,
        "\u{feff}Zeitstempel;Zählerstand;Notiz\r\n01.02.2026 00:00;\"1.000,0\";\"Ablesung; manuell\"\r\n\
         01.02.2026 00:15;eins;\r\n01.02.2026 00:30;1.000,5;\r\n",
    )
    .unwrap();
    let o = caretaker(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("meter-1.csv:3: `eins` is not a number (decimal mark `,`"),
        "{err}"
    );
    assert!(err.contains("the other 2 readings were imported"), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("imported 2 readings of meter-1/energy_total"),
        "{out}"
    );
    assert!(out.contains("0.500 kWh"), "{out}");
    // Nothing good at all: nothing is written, exit 1.
    std::fs::write(
        &csv_path,
        "timestamp,value\n2026-02-01 00:00,x\n2026-02-01 00:15,one\n",
    )
    .unwrap();
    let o = caretaker(&args);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("meter-1.csv:3: `one` is not a number")
            && err.contains("nothing was imported"),
        "{err}"
    );
    let o = caretaker(&[
        "energy",
        "import",
        "--config",
        cfg_s,
        "--csv",
        csv_path.to_str().unwrap(),
        "--device",
        "meter-2",
        "--point",
        "energy_total",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("unknown device `meter-2` (did you mean `meter-1`?)"),
        "{}",
        text(&o)
    );
    let o = caretaker(&[
        "energy",
        "import",
        "--config",
        cfg_s,
        "--csv",
        csv_path.to_str().unwrap(),
        "--device",
        "meter-1",
        "--point",
        "power",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Caretaker meters `meter-1/energy_total`"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_meter_readings_reach_the_store_and_influxdb() {
    let mosq = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let state = dir.path().join("state");
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"[site]
name = "test campus"
timezone = "UTC"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[mqtt]
url = "mqtt://127.0.0.1:{port}"
client_id = "caretaker-energy-{http}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "meters/{{building}}/{{device}}"
profile = "test-kwh-meter"
[influxdb]
url = "{url}"
api = "v1"
database = "ct"
batch_size = 1000
flush_interval = "200ms"
max_retry_backoff = "1s"
[http]
listen = "127.0.0.1:{http}"
{ENERGY}"#,
            state = state.display(),
            profiles = profiles(dir.path()).display(),
            port = mosq.port,
            url = influx.url(),
        ),
    );
    let mut daemon = Daemon::start(&cfg, http);
    let publisher = Publisher::connect(mosq.port, "energy-publisher");
    // Probe until subscribed (a probe device of its own, far in the past).
    wait_receiving(
        &publisher,
        &daemon,
        "meters/x/probe",
        r#"{"ts": 1000, "kwh": 1}"#,
    )
    .await;
    // 2026-01-05 00:00 UTC onwards: a reading every 5 minutes for 2 hours at 6 kW (0.5 kWh each), with one
    // spurious zero (a meter reboot) and one 30-minute outage.
    let t0 = 1_767_571_200i64;
    let mut sent = 0;
    for i in 0..=24i64 {
        if (10..=15).contains(&i) {
            continue; // outage 00:50 .. 01:15
        }
        let kwh = if i == 5 { 0.0 } else { 1000.0 + 0.5 * i as f64 };
        publisher
            .publish(
                "meters/main/meter-1",
                format!(r#"{{"ts": {}, "kwh": {kwh}, "w": 6000}}"#, t0 + 300 * i),
            )
            .await;
        sent += 1;
    }
    let ok = wait_until(Duration::from_secs(30), || async {
        daemon
            .metric(r#"caretaker_readings_received_total{source="mqtt"}"#)
            .await
            >= (sent * 2) as f64
    })
    .await;
    assert!(ok, "{}", daemon.log_text());
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "{}", daemon.log_text());
    assert!(
        daemon.log_text().contains("glitch"),
        "the spurious zero is logged"
    );

    // The store: 12 kWh over 2 hours, the outage's slots estimated.
    let o = caretaker(&[
        "energy",
        "report",
        "--state",
        state.to_str().unwrap(),
        "--from",
        "2026-01-05",
        "--to",
        "2026-01-05",
        "--by",
        "hour",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows: Vec<_> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["group"] == "meter-1")
        .collect();
    assert_eq!(rows.len(), 2, "{v}");
    let total: f64 = rows
        .iter()
        .map(|r| r["consumption"].as_f64().unwrap())
        .sum();
    assert!((total - 12.0).abs() < 1e-9, "{v}");
    assert_eq!(
        rows[0]["estimated"], true,
        "00:45-01:15 was spread over the outage"
    );
    assert_eq!(rows[0]["period"], "2026-01-05T00:00+00:00");

    let o = caretaker(&[
        "energy",
        "report",
        "--state",
        state.to_str().unwrap(),
        "--from",
        "2026-01-05",
        "--to",
        "2026-01-05",
        "--format",
        "html",
    ]);
    let html = String::from_utf8_lossy(&o.stdout);
    let dq = html.split("Data quality").nth(1).unwrap_or_default();
    assert!(
        dq.contains(
            "<td class=\"l\">meter-1</td><td>1</td><td>0</td><td>0</td><td>1</td><td>0</td>"
        ),
        "one gap and one glitch listed: {dq}"
    );

    // InfluxDB: the `energy` measurement with the device's tags, one point per 15-minute slot.
    let q = "SELECT sum(consumption), count(consumption) FROM energy WHERE device = 'meter-1' AND building = 'main'";
    let ok = wait_until(Duration::from_secs(20), || async {
        let (_, rows) = influx.select("ct", q).await;
        rows.first().and_then(|r| r[2].as_u64()) == Some(8)
    })
    .await;
    let (_, rows) = influx.select("ct", q).await;
    assert!(ok, "energy points in InfluxDB: {rows:?}");
    assert!(
        (rows[0][1].as_f64().unwrap() - 12.0).abs() < 1e-9,
        "{rows:?}"
    );
    // Cost per interval: 2026-01-05 00:00-02:00 is a Monday night, 0.20 EUR/kWh.
    let (_, cost) = influx
        .select(
            "ct",
            "SELECT sum(cost) FROM energy WHERE device = 'meter-1'",
        )
        .await;
    assert!(
        (cost[0][1].as_f64().unwrap() - 12.0 * 0.20).abs() < 1e-9,
        "{cost:?}"
    );
    let (_, est) = influx
        .select(
            "ct",
            "SELECT count(consumption) FROM energy WHERE estimated = true",
        )
        .await;
    assert!(
        est.first().and_then(|r| r[1].as_u64()).unwrap_or(0) >= 2,
        "{est:?}"
    );
}
