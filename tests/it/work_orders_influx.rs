//! The `work_orders` measurement end to end: mosquitto → the daemon's rules → the work-order store → the spool →
//! real InfluxDB 1.6.7. A breach opens a work order and writes an `opened` point; a person's acknowledgement
//! through the CLI and the clear (resolved) follow as points of their own.

use crate::support::*;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, ms

/// Rows of `work_orders` with `event = 'EVENT'`, each as column → value.
async fn points(influx: &Influxd, event: &str) -> Vec<BTreeMap<String, serde_json::Value>> {
    let (cols, rows) = influx
        .select(
            "ct",
            &format!("SELECT * FROM work_orders WHERE \"event\" = '{event}'"),
        )
        .await;
    rows.into_iter()
        .map(|r| cols.iter().cloned().zip(r).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_order_changes_become_work_orders_points_in_influxdb() {
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let mosq = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let http = free_port();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("room.yaml"),
        r#"schema: 1
rules:
  - name: room-too-hot
    applies_to: { profile: generic-room-sensor }
    point: temperature
    unit: degC
    when: { above: 30, for: 2s }
    clear: { below: 25 }
    severity: major
    work_order:
      title: "Room {device} at {value} degC"
      team: hvac
"#,
    )
    .unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"[site]
name = "test campus"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[rules]
dirs = ["rules"]
[mqtt]
url = "{mqtt}"
client_id = "caretaker-woi-{http}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[influxdb]
url = "{influx}"
api = "v1"
database = "ct"
flush_interval = "200ms"
max_retry_backoff = "1s"
[http]
listen = "127.0.0.1:{http}"
"#,
            state = state.display(),
            profiles = repo().join("device_profiles").display(),
            mqtt = mosq.url(),
            influx = influx.url(),
        ),
    );
    let daemon = Daemon::start(&cfg, http);
    let publisher = Publisher::connect(mosq.port, "woi-publisher");
    let subscribed = wait_until(Duration::from_secs(20), || async {
        publisher
            .publish("campus/probe/probe/telemetry", r#"{"temperature": 1}"#)
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        daemon
            .metric(r#"caretaker_readings_received_total{source="mqtt"}"#)
            .await
            >= 1.0
    })
    .await;
    assert!(
        subscribed,
        "daemon never received a message:\n{}",
        daemon.log_text()
    );
    let publish = |t: i64, v: f64| {
        let p = &publisher;
        async move {
            p.publish(
                "campus/b1/room-1/telemetry",
                format!(r#"{{"ts": {}, "temperature": {v}}}"#, T0 + t * 1000),
            )
            .await
        }
    };

    // 1. A breach held for 2 s opens work order 1: one `opened` point with the alarm's tags.
    publish(0, 31.0).await;
    publish(3, 32.0).await;
    let ok = wait_until(Duration::from_secs(15), || async {
        !points(&influx, "opened").await.is_empty()
    })
    .await;
    assert!(ok, "no opened point:\n{}", daemon.log_text());
    let opened = points(&influx, "opened").await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    let p = &opened[0];
    for (k, v) in [
        ("site", "test campus"),
        ("rule", "room-too-hot"),
        ("device", "room-1"),
        ("point", "temperature"),
        ("severity", "major"),
        ("team", "hvac"),
        ("status", "open"),
    ] {
        assert_eq!(p[k], v, "{k} in {p:?}");
    }
    assert_eq!(p["id"], 1);
    assert_eq!(p["count"], 1);
    assert_eq!(p["open"], 1);
    assert_eq!(p["value"], 32.0);
    // At the reading time that opened it (ms), plus the history row in the sub-millisecond digits.
    assert_eq!(p["time"].as_i64().unwrap() / 1_000_000, T0 + 3000);

    // 2. A person acknowledges it with the CLI while the daemon runs: an `acknowledged` point.
    let out = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(["work-orders", "ack", "1", "--by", "ana", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ok = wait_until(Duration::from_secs(10), || async {
        !points(&influx, "acknowledged").await.is_empty()
    })
    .await;
    assert!(ok, "no acknowledged point:\n{}", daemon.log_text());
    let acked = points(&influx, "acknowledged").await;
    assert_eq!(acked[0]["status"], "acknowledged");
    assert_eq!(acked[0]["open"], 1);

    // 3. The clear resolves it: a `resolved` point, open = 0, at the clearing reading's time.
    publish(10, 20.0).await;
    let ok = wait_until(Duration::from_secs(15), || async {
        !points(&influx, "resolved").await.is_empty()
    })
    .await;
    assert!(ok, "no resolved point:\n{}", daemon.log_text());
    let resolved = points(&influx, "resolved").await;
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    let r = &resolved[0];
    assert_eq!(r["status"], "resolved");
    assert_eq!(r["rule"], "room-too-hot");
    assert_eq!(r["device"], "room-1");
    assert_eq!(r["id"], 1);
    assert_eq!(r["open"], 0);
    assert_eq!(r["time"].as_i64().unwrap() / 1_000_000, T0 + 10_000);
    // One point per change, nothing else: opened, acknowledged, resolved.
    assert_eq!(influx.count("ct", "work_orders", "id").await, 3);
}
