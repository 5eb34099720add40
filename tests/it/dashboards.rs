//! One InfluxDB story (docs/influxdb.md): the Grafana dashboards are generated from one description
//! (scripts/deploy/grafana_dashboards.py) in Flux and InfluxQL, and the committed JSON must be what the generator
//! writes; every InfluxQL panel query runs against a real InfluxDB 1.6.7 holding what `caretaker demo` wrote
//! (the simulated campus, its energy rollups and work orders), and must parse and return rows. The Flux twins
//! cannot run here: no InfluxDB 2.x/3.x is installable on these machines and VictoriaMetrics has no Flux; their
//! names are checked against the profiles by tests/it/deploy.rs. The Prometheus alert rules pass
//! `promtool check rules` (Debian `prometheus`).

use crate::support::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn committed_dashboards_are_what_the_generator_writes() {
    let out = Command::new("python3")
        .arg(repo().join("scripts/deploy/grafana_dashboards.py"))
        .arg("--check")
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool() {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo().join("deploy/prometheus/caretaker-alerts.yaml"))
        .output()
        .expect("promtool (Debian package `prometheus`; scripts/test.sh installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("SUCCESS: 7 rules found"), "{text}");
}

/// Every (dashboard file, panel title, query) of the InfluxQL dashboards.
fn influxql_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let dir = repo().join("deploy/grafana/influxql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            d["templating"]["list"][0]["datasource"]["uid"],
            "caretaker-influxql"
        );
        for p in d["panels"].as_array().unwrap() {
            assert_eq!(p["datasource"]["uid"], "caretaker-influxql");
            for t in p["targets"].as_array().unwrap() {
                out.push((
                    path.file_name().unwrap().to_string_lossy().to_string(),
                    p["title"].as_str().unwrap().to_string(),
                    t["query"].as_str().unwrap().to_string(),
                ));
            }
        }
    }
    out
}

/// Grafana's macros as Grafana expands them for a time range and the `site` variable.
/// `now() - 90d` (the open-work-orders panel's fixed look-back) is moved to `from` as well: the demo's clock is
/// in January 2026, whatever today is.
fn expand(q: &str, from: &str, to: &str, site: &str) -> String {
    q.replace(
        "$timeFilter",
        &format!("time >= '{from}' AND time < '{to}'"),
    )
    .replace("now() - 90d", &format!("'{from}'"))
    .replace("$__interval", "1m")
    .replace("$site", site)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_influxql_panel_query_returns_rows_from_data_caretaker_wrote() {
    let queries = influxql_queries();
    assert!(queries.len() >= 25, "{}", queries.len());
    let influx = Influxd::start();
    influx.create_db("caretaker").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Six simulated hours of the demo campus (from Monday 2026-01-12 00:30 Berlin): rooms, meters, AHUs, DALI
    // lighting, leak sensors, their faults and the work orders the rules open for them.
    let mut child = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(["demo", "--for", "12s", "--speed", "1800", "--state"])
        .arg(&state)
        .current_dir(repo())
        .env("CARETAKER_INFLUXDB__URL", influx.url())
        .env("CARETAKER_INFLUXDB__API", "v1")
        .env("CARETAKER_INFLUXDB__DATABASE", "caretaker")
        .env("CARETAKER_INFLUXDB__FLUSH_INTERVAL", "200ms")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("out")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(dir.path().join("out")).unwrap_or_default();
    let err = std::fs::read_to_string(dir.path().join("err")).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    let ok = wait_until(Duration::from_secs(10), || async {
        influx
            .count("caretaker", "environment", "temperature")
            .await
            > 100
    })
    .await;
    assert!(ok, "no readings in InfluxDB:\n{out}\n{err}");
    let (_, site) = influx
        .select(
            "caretaker",
            "SHOW TAG VALUES FROM \"environment\" WITH KEY = \"site\"",
        )
        .await;
    assert!(!site.is_empty(), "no site tag");
    // The simulated window.
    let (from, to) = ("2026-01-11T00:00:00Z", "2026-01-13T00:00:00Z");
    let mut problems = Vec::new();
    let mut empty = Vec::new();
    for (file, title, q) in &queries {
        let q = expand(q, from, to, ".*");
        let v = influx.query("caretaker", &q).await;
        let r = &v["results"][0];
        if let Some(e) = r.get("error").or_else(|| v.get("error")) {
            problems.push(format!("{file} / {title}: {e}\n  {q}"));
            continue;
        }
        let rows: usize = r["series"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|x| x["values"].as_array().map_or(0, |v| v.len()))
                    .sum()
            })
            .unwrap_or(0);
        if rows == 0 {
            empty.push(format!("{file} / {title}\n  {q}"));
        }
    }
    assert!(
        problems.is_empty(),
        "queries InfluxDB refused:\n{}",
        problems.join("\n")
    );
    assert!(
        empty.is_empty(),
        "queries with no rows from the demo's data:\n{}\ndemo output:\n{out}",
        empty.join("\n")
    );
}
