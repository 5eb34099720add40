//! Live reload (SIGHUP, what `systemctl reload caretaker` sends) against a real mosquitto and a real influxd
//! 1.6.7: a rule file added and a threshold changed take effect without a restart; a `for` timer pending
//! before the reload completes on its original schedule (its state is carried over, not restarted); no
//! reading published around the reload is lost (counted in InfluxDB); a config with an error is refused, the
//! error is reported (log, `/health`, metrics) and the running rules keep working.

use crate::support::*;
use std::path::Path;
use std::time::Duration;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, ms

const WARM: &str = r#"schema: 1
rules:
  - name: room-warm
    applies_to: { profile: generic-room-sensor }
    point: temperature
    when: { above: 30, for: 10s }
    severity: major
  - name: room-humid
    applies_to: { profile: generic-room-sensor }
    point: humidity
    when: { above: 90 }
    severity: minor
"#;

fn site(dir: &Path, mqtt_port: u16, http_port: u16, influx: Option<&str>) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(dir.join("rules/room.yaml"), WARM).unwrap();
    let influx = influx
        .map(|u| {
            format!(
                "[influxdb]\nurl = \"{u}\"\napi = \"v1\"\ndatabase = \"ct\"\nbatch_size = 1000\nflush_interval = \"200ms\"\nmax_retry_backoff = \"1s\"\n"
            )
        })
        .unwrap_or_default();
    write_config(
        dir,
        &format!(
            r#"[site]
name = "reload campus"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[rules]
dirs = ["rules"]
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
client_id = "caretaker-reload-{http_port}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
{influx}
[http]
listen = "127.0.0.1:{http_port}"
"#,
            state = dir.join("state").display(),
            profiles = repo().join("device_profiles").display(),
        ),
    )
}

fn sighup(d: &Daemon) {
    let pid = d.child.as_ref().expect("running").id();
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP failed");
}

/// Waits until `/health` reports `n` reloads tried (applied + refused) and returns its `config_reload`.
async fn reloaded(d: &Daemon, n: u64) -> serde_json::Value {
    let last = std::sync::Arc::new(std::sync::Mutex::new(serde_json::Value::Null));
    let ok = wait_until(Duration::from_secs(20), || {
        let last = last.clone();
        async move {
            let h = health(d.http_port).await;
            let r = h["config_reload"].clone();
            let done = r["applied"].as_u64().unwrap_or(0) + r["refused"].as_u64().unwrap_or(0) >= n;
            *last.lock().unwrap() = r;
            done
        }
    })
    .await;
    let last = last.lock().unwrap().clone();
    assert!(ok, "no reload reported: {last}\n{}", d.log_text());
    last
}

fn work_orders(state: &Path) -> Vec<serde_json::Value> {
    let (code, out, _) = caretaker(&[
        "work-orders",
        "list",
        "--state",
        state.to_str().unwrap(),
        "--format",
        "json",
    ]);
    if code != 0 {
        return Vec::new();
    }
    serde_json::from_str(&out).unwrap_or_default()
}

fn opened(state: &Path, rule: &str) -> Option<serde_json::Value> {
    work_orders(state).into_iter().find(|w| w["rule"] == rule)
}

async fn publish_room(p: &Publisher, device: &str, at_s: i64, fields: &str) {
    p.publish(
        &format!("campus/b1/{device}/telemetry"),
        format!(r#"{{"ts": {}, {fields}}}"#, T0 + at_s * 1000),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_and_changed_rules_keeps_pending_timers_and_loses_no_reading() {
    let mosq = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let http = free_port();
    let cfg = site(dir.path(), mosq.port, http, Some(&influx.url()));
    let daemon = Daemon::start(&cfg, http);
    let p = Publisher::connect(mosq.port, "reload-publisher");
    wait_receiving(
        &p,
        &daemon,
        "campus/probe/probe/telemetry",
        r#"{"temperature": 1}"#,
    )
    .await;

    // 1. room-warm's `for: 10s` starts at +0 (reading time); five readings before the reload.
    for t in 0..5 {
        publish_room(&p, "room-1", t, r#""temperature": 31, "humidity": 60"#).await;
    }
    assert!(
        wait_until(Duration::from_secs(20), || async {
            count_device(&influx, "room-1", "temperature").await >= 5
        })
        .await,
        "readings before the reload not written:\n{}",
        daemon.log_text()
    );
    assert!(opened(&state, "room-warm").is_none(), "raised too early");

    // 2. A new rule file, a changed threshold (humidity 90 -> 50), and room-warm unchanged but moved.
    std::fs::write(
        dir.path().join("rules/co2.yaml"),
        "schema: 1\nrules:\n  - name: co2-high\n    applies_to: { profile: generic-room-sensor }\n    point: co2\n    when: { above: 1000 }\n    severity: minor\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/room.yaml"),
        format!(
            "# edited for the reload test\n{}",
            WARM.replace("above: 90", "above: 50")
        ),
    )
    .unwrap();
    // Readings of another device keep arriving before, during and after the reload: none may be lost.
    let stream = {
        let client = p.client.clone();
        tokio::spawn(async move {
            for t in 0..300 {
                client
                    .publish(
                        "campus/b1/room-2/telemetry",
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        format!(r#"{{"ts": {}, "temperature": 20}}"#, T0 + t * 100),
                    )
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    sighup(&daemon);
    let r = reloaded(&daemon, 1).await;
    assert_eq!(r["last_ok"], true, "{r}\n{}", daemon.log_text());
    assert_eq!(r["applied"], 1);
    assert!(r["last_error"].is_null(), "{r}");
    assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
    stream.await.unwrap();
    assert_eq!(
        daemon
            .metric(r#"caretaker_config_reloads_total{result="ok"}"#)
            .await,
        1.0
    );

    // 3. After the reload: room-warm raises at +10 s exactly (its timer started at +0, before the reload);
    //    the changed humidity threshold and the new co2 rule fire on the first reading after it.
    for t in 5..13 {
        publish_room(
            &p,
            "room-1",
            t,
            r#""temperature": 31, "humidity": 60, "co2": 1200"#,
        )
        .await;
    }
    assert!(
        wait_until(Duration::from_secs(20), || async {
            ["room-warm", "room-humid", "co2-high"]
                .iter()
                .all(|r| opened(&state, r).is_some())
        })
        .await,
        "{:?}\n{}",
        work_orders(&state),
        daemon.log_text()
    );
    let warm = opened(&state, "room-warm").unwrap();
    assert_eq!(warm["opened_at"], "2026-01-01T00:00:10Z", "{warm}");
    assert_eq!(
        opened(&state, "room-humid").unwrap()["opened_at"],
        "2026-01-01T00:00:05Z"
    );
    assert_eq!(
        opened(&state, "co2-high").unwrap()["opened_at"],
        "2026-01-01T00:00:05Z"
    );
    assert_eq!(
        opened(&state, "room-warm").unwrap()["device"],
        "room-1",
        "{:?}",
        work_orders(&state)
    );

    // 4. Every reading arrived: 13 of room-1, 300 of room-2 (published around the reload).
    assert!(
        wait_until(Duration::from_secs(30), || async {
            count_device(&influx, "room-2", "temperature").await >= 300
                && count_device(&influx, "room-1", "temperature").await >= 13
        })
        .await,
        "room-2: {}, room-1: {}\n{}",
        count_device(&influx, "room-2", "temperature").await,
        count_device(&influx, "room-1", "temperature").await,
        daemon.log_text()
    );
    assert_eq!(count_device(&influx, "room-2", "temperature").await, 300);
    assert_eq!(count_device(&influx, "room-1", "temperature").await, 13);
    assert!(daemon.log_text().contains("configuration reloaded"));
}

async fn count_device(influx: &Influxd, device: &str, field: &str) -> u64 {
    let (_, rows) = influx
        .select(
            "ct",
            &format!("SELECT count(\"{field}\") FROM \"environment\" WHERE \"device\"='{device}'"),
        )
        .await;
    rows.first()
        .and_then(|r| r.get(1))
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_on_sighup_is_refused_and_the_running_rules_keep_working() {
    let mosq = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let http = free_port();
    let cfg = site(dir.path(), mosq.port, http, None);
    let mut daemon = Daemon::start(&cfg, http);
    let p = Publisher::connect(mosq.port, "reload-bad-publisher");
    wait_receiving(
        &p,
        &daemon,
        "campus/probe/probe/telemetry",
        r#"{"temperature": 1}"#,
    )
    .await;

    // A rule on a point no profile has, and a threshold that is not a number: both reported, nothing applied.
    std::fs::write(
        dir.path().join("rules/broken.yaml"),
        "schema: 1\nrules:\n  - name: broken\n    applies_to: { profile: generic-room-sensor }\n    point: no_such_point\n    when: { above: 1 }\n    severity: minor\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/room.yaml"),
        WARM.replace("above: 90", "above: ninety"),
    )
    .unwrap();
    sighup(&daemon);
    let r = reloaded(&daemon, 1).await;
    assert_eq!(r["last_ok"], false, "{r}");
    assert_eq!(r["refused"], 1);
    let err = r["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("broken.yaml") && err.contains("no_such_point"),
        "{err}"
    );
    assert!(err.contains("room.yaml"), "{err}");
    assert_eq!(
        daemon
            .metric(r#"caretaker_config_reloads_total{result="error"}"#)
            .await,
        1.0
    );
    assert!(daemon.metric("caretaker_config_reload_errors_total").await >= 2.0);
    assert_eq!(
        daemon
            .metric("caretaker_config_last_reload_successful")
            .await,
        0.0
    );
    let log = daemon.log_text();
    assert!(log.contains("configuration reload refused"), "{log}");
    assert!(log.contains("no_such_point"), "{log}");

    // The old rules still run: the 90 % humidity threshold (not a broken one) and room-warm's 10 s.
    for t in 0..12 {
        publish_room(&p, "room-1", t, r#""temperature": 31, "humidity": 95"#).await;
    }
    assert!(
        wait_until(Duration::from_secs(20), || async {
            opened(&state, "room-warm").is_some() && opened(&state, "room-humid").is_some()
        })
        .await,
        "{:?}\n{}",
        work_orders(&state),
        daemon.log_text()
    );
    assert_eq!(
        opened(&state, "room-warm").unwrap()["opened_at"],
        "2026-01-01T00:00:10Z"
    );
    assert!(opened(&state, "broken").is_none());

    // Fixed, then reloaded: applied, and /health says so.
    std::fs::remove_file(dir.path().join("rules/broken.yaml")).unwrap();
    std::fs::write(dir.path().join("rules/room.yaml"), WARM).unwrap();
    sighup(&daemon);
    let r = reloaded(&daemon, 2).await;
    assert_eq!(r["last_ok"], true, "{r}");
    assert!(r["last_error"].is_null());
    assert_eq!(
        daemon
            .metric("caretaker_config_last_reload_successful")
            .await,
        1.0
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "{}", daemon.log_text());
}
