//! Anomaly and forecast rules open work orders end to end: three days of room readings (timestamps in the
//! payload) published to a real mosquitto reach `caretaker run`; the anomaly detector learns the daily cycle,
//! a sudden jump opens exactly one `anomaly` work order (none before it), and a steady humidity rise opens a
//! `forecast` work order long before the limit is reached.

use crate::support::*;
use std::process::Command;
use std::time::Duration;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, ms
const STEP_MS: i64 = 300_000; // a reading every 5 minutes
const DAYS: i64 = 3;
const JUMP_AT: i64 = DAYS * 288; // index of the first anomalous reading

fn temperature(i: i64) -> f64 {
    let day = (i as f64) / 288.0 * std::f64::consts::TAU;
    // Deterministic noise, so the test is repeatable.
    let noise = (((i * 7919) % 101) as f64 / 100.0 - 0.5) * 0.3;
    let normal = 21.0 + 2.0 * day.sin() + noise;
    if i >= JUMP_AT { normal + 12.0 } else { normal }
}

fn humidity(i: i64) -> f64 {
    // Rises 10 %RH a day: from 30 to 60 over three days, heading for 90 within the next week.
    30.0 + 10.0 * i as f64 / 288.0 + (((i * 31) % 7) as f64 - 3.0) * 0.1
}

fn list(state: &std::path::Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(["work-orders", "list", "--state"])
        .arg(state)
        .args(["--format", "json"])
        .output()
        .unwrap();
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomaly_and_forecast_rules_open_work_orders() {
    let mosq = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let http = free_port();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/predictive.yaml"),
        r#"schema: 1
rules:
  - name: room-temperature-unusual
    applies_to: { profile: generic-room-sensor }
    point: temperature
    when: { anomaly: { score_above: 0.9, for: 15m } }
    severity: minor
    work_order: { title: "Room {device}: temperature {value} unusual", team: hvac }
  - name: humidity-heading-for-limit
    applies_to: { profile: generic-room-sensor }
    point: humidity
    when: { forecast: { above: 90, within: 7d } }
    severity: warning
    work_order: { title: "Room {device}: humidity will pass 90 %RH within a week", team: hvac }
"#,
    )
    .unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"[site]
name = "signals"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[rules]
dirs = ["rules"]
[mqtt]
url = "mqtt://127.0.0.1:{port}"
client_id = "caretaker-signals-{http}"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[http]
listen = "127.0.0.1:{http}"
"#,
            state = state.display(),
            profiles = repo().join("device_profiles").display(),
            port = mosq.port,
        ),
    );
    let daemon = Daemon::start(&cfg, http);
    let publisher = Publisher::connect(mosq.port, "signals-publisher");
    wait_receiving(
        &publisher,
        &daemon,
        "campus/probe/probe/telemetry",
        r#"{"humidity": 50}"#,
    )
    .await;

    let end = JUMP_AT + 12; // an hour of the anomaly
    for i in 0..end {
        publisher
            .publish(
                "campus/b1/room-1/telemetry",
                format!(
                    r#"{{"ts": {}, "temperature": {:.3}, "humidity": {:.3}}}"#,
                    T0 + i * STEP_MS,
                    temperature(i),
                    humidity(i)
                ),
            )
            .await;
    }
    let expected = 2.0 * end as f64;
    let got = wait_until(Duration::from_secs(60), || async {
        daemon
            .metric(r#"caretaker_readings_received_total{source="mqtt"}"#)
            .await
            >= expected
    })
    .await;
    assert!(got, "not every reading arrived:\n{}", daemon.log_text());

    let mut orders = Vec::new();
    wait_until(Duration::from_secs(20), || {
        orders = list(&state);
        let n = orders.len();
        async move { n >= 2 }
    })
    .await;
    let by_rule = |r: &str| -> Vec<serde_json::Value> {
        orders.iter().filter(|o| o["rule"] == r).cloned().collect()
    };
    let anomaly = by_rule("room-temperature-unusual");
    assert_eq!(
        anomaly.len(),
        1,
        "one anomaly work order: {orders:#?}\n{}",
        daemon.log_text()
    );
    assert_eq!(anomaly[0]["device"], "room-1");
    assert_eq!(anomaly[0]["point"], "temperature");
    let jump = jiff::Timestamp::from_millisecond(T0 + JUMP_AT * STEP_MS).unwrap();
    let opened: jiff::Timestamp = anomaly[0]["opened_at"].as_str().unwrap().parse().unwrap();
    assert!(
        opened >= jump && opened <= jump + jiff::SignedDuration::from_mins(60),
        "the anomaly work order opened at {opened}, the jump was at {jump}"
    );
    let forecast = by_rule("humidity-heading-for-limit");
    assert_eq!(forecast.len(), 1, "one forecast work order: {orders:#?}");
    assert_eq!(forecast[0]["point"], "humidity");
    assert_eq!(
        orders.len(),
        2,
        "no other work orders (false positives): {orders:#?}"
    );
}

/// `[energy] baseline_refresh` is checked like the other `[energy]` keys: file, line, key, what is wrong.
#[test]
fn check_names_a_bad_baseline_refresh_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        r#"[site]
name = "x"
[state]
dir = "state"
[energy]
period = "15m"
baseline_refresh = "often"
"#,
    );
    let o = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("site.toml:7: energy.baseline_refresh: invalid duration `often`"),
        "{err}"
    );
}

/// A daemon restart in the middle of a trend does not relearn it: the trend is saved under `[state].dir`
/// when the daemon stops and restored at start-up, so the forecast work order opens ~10 hours of readings after
/// the restart (too few for a fresh trend, which needs 12 hourly buckets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forecast_work_order_opens_after_a_daemon_restart_mid_trend() {
    let mosq = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/predictive.yaml"),
        r#"schema: 1
rules:
  - name: humidity-heading-for-limit
    applies_to: { profile: generic-room-sensor }
    point: humidity
    when: { forecast: { above: 90, within: 2d } }
    severity: warning
"#,
    )
    .unwrap();
    let config = |http: u16| {
        write_config(
            dir.path(),
            &format!(
                r#"[site]
name = "signals-restart"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[rules]
dirs = ["rules"]
[mqtt]
url = "mqtt://127.0.0.1:{port}"
client_id = "caretaker-signals-restart"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[http]
listen = "127.0.0.1:{http}"
"#,
                state = state.display(),
                profiles = repo().join("device_profiles").display(),
                port = mosq.port,
            ),
        )
    };
    let publisher = Publisher::connect(mosq.port, "signals-restart-publisher");
    // Publishes readings `from..to` of room-1's humidity and waits until the daemon received them.
    async fn run_part(daemon: &Daemon, publisher: &Publisher, from: i64, to: i64) {
        wait_receiving(
            publisher,
            daemon,
            "campus/probe/probe/telemetry",
            r#"{"temperature": 20}"#,
        )
        .await;
        let base = daemon
            .metric(r#"caretaker_readings_received_total{source="mqtt"}"#)
            .await;
        for i in from..to {
            publisher
                .publish(
                    "campus/b1/room-1/telemetry",
                    format!(
                        r#"{{"ts": {}, "humidity": {:.3}}}"#,
                        T0 + i * STEP_MS,
                        humidity(i)
                    ),
                )
                .await;
        }
        let got = wait_until(Duration::from_secs(60), || async {
            daemon
                .metric(r#"caretaker_readings_received_total{source="mqtt"}"#)
                .await
                >= base + (to - from) as f64
        })
        .await;
        assert!(got, "not every reading arrived:\n{}", daemon.log_text());
    }

    let restart = 288 * 15 / 4; // day 3.75: the 2-day forecast is ~87.5, below the limit
    let end = 288 * 42 / 10; // day 4.2
    let http = free_port();
    let mut daemon = Daemon::start(&config(http), http);
    run_part(&daemon, &publisher, 0, restart).await;
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "{}", daemon.log_text());
    assert!(
        list(&state).is_empty(),
        "nothing opened before the restart: {:#?}",
        list(&state)
    );
    assert!(
        state.join("anomaly/signals.json").exists(),
        "the trend was saved at shutdown:\n{}",
        daemon.log_text()
    );

    let http = free_port();
    let daemon = Daemon::start(&config(http), http);
    run_part(&daemon, &publisher, restart, end).await;
    let mut orders = Vec::new();
    wait_until(Duration::from_secs(20), || {
        orders = list(&state);
        let n = orders.len();
        async move { n >= 1 }
    })
    .await;
    assert_eq!(orders.len(), 1, "{orders:#?}\n{}", daemon.log_text());
    assert_eq!(orders[0]["rule"], "humidity-heading-for-limit");
    assert_eq!(orders[0]["device"], "room-1");
    let opened: jiff::Timestamp = orders[0]["opened_at"].as_str().unwrap().parse().unwrap();
    let restarted = jiff::Timestamp::from_millisecond(T0 + restart * STEP_MS).unwrap();
    assert!(
        opened > restarted,
        "opened at {opened}, after the restart at {restarted}"
    );
}
