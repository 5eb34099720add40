//! The Alertmanager work-order target against a real Alertmanager (Debian's `prometheus-alertmanager`): a rule
//! breach through real mosquitto and `caretaker run` shows up in `GET /api/v2/alerts` with the work order's
//! labels and annotations, and the clear resolves it there.

use crate::support::*;
use std::time::Duration;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ours(alerts: &[serde_json::Value]) -> Vec<serde_json::Value> {
    alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == "room-too-hot")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_fires_an_alertmanager_alert_and_the_clear_resolves_it() {
    let mosq = Mosquitto::start();
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
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
    labels: { floor: "3" }
    annotations: { runbook_url: "https://wiki.example.org/room-too-hot" }
    work_order:
      title: "Room {device} too hot"
      team: hvac
      procedure: "1. Check the radiator valve."
"#,
    )
    .unwrap();
    let http = free_port();
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
url = "mqtt://127.0.0.1:{mqtt}"
client_id = "caretaker-am-{http}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[http]
listen = "127.0.0.1:{http}"
[[work_orders.targets]]
kind = "alertmanager"
name = "am"
url = "{am}"
resend_every = "2s"
timeout = "2s"
max_retry_backoff = "1s"
[[work_orders.targets]]
kind = "mqtt"
name = "bus"
url = "mqtt://127.0.0.1:{mqtt}"
topic = "caretaker/test/am-work-orders"
client_id = "caretaker-am-wo-{http}"
timeout = "2s"
max_retry_backoff = "1s"
"#,
            state = dir.path().join("state").display(),
            profiles = repo().join("device_profiles").display(),
            mqtt = mosq.port,
            am = am.url(),
        ),
    );
    // The MQTT target's JSON carries the rule's labels and annotations too: one message read by mosquitto_sub,
    // subscribed before anything is published (the daemon's startup below takes longer than the subscription).
    let sub = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &mosq.port.to_string()])
        .args(["-t", "caretaker/test/am-work-orders", "-C", "1", "-W", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let daemon = Daemon::start(&cfg, http);
    let publisher = Publisher::connect(mosq.port, "am-publisher");
    wait_receiving(
        &publisher,
        &daemon,
        "campus/probe/probe/telemetry",
        r#"{"temperature": 1}"#,
    )
    .await;

    let t0 = now_ms();
    for (t, v) in [(0, 31.0), (3_000, 32.0)] {
        publisher
            .publish(
                "campus/b1/room-1/telemetry",
                format!(r#"{{"ts": {}, "temperature": {v}}}"#, t0 + t),
            )
            .await;
    }
    assert!(
        wait_until(Duration::from_secs(20), || async {
            !ours(&am.alerts().await).is_empty()
        })
        .await,
        "no alert in Alertmanager:\n{}",
        daemon.log_text()
    );
    let a = ours(&am.alerts().await).remove(0);
    let labels = &a["labels"];
    assert_eq!(labels["severity"], "major", "{a}");
    assert_eq!(labels["team"], "hvac", "{a}");
    assert_eq!(labels["site"], "test campus", "{a}");
    assert_eq!(labels["device"], "room-1", "{a}");
    assert_eq!(labels["point"], "temperature", "{a}");
    assert_eq!(a["annotations"]["summary"], "Room room-1 too hot", "{a}");
    assert_eq!(
        a["annotations"]["description"], "1. Check the radiator valve.",
        "{a}"
    );
    assert_eq!(labels["floor"], "3", "{a}");
    assert_eq!(
        a["annotations"]["runbook_url"], "https://wiki.example.org/room-too-hot",
        "{a}"
    );
    assert_eq!(a["status"]["state"], "active", "{a}");
    let out = tokio::task::spawn_blocking(move || sub.wait_with_output().unwrap())
        .await
        .unwrap();
    let msg: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(msg["event"], "opened", "{msg}");
    assert_eq!(msg["labels"], serde_json::json!({"floor": "3"}), "{msg}");
    assert_eq!(
        msg["annotations"]["runbook_url"], "https://wiki.example.org/room-too-hot",
        "{msg}"
    );
    let first_ends = a["endsAt"].as_str().unwrap().to_string();
    // Resent while open (every 2 s): endsAt moves forward, so the alert does not expire.
    assert!(
        wait_until(Duration::from_secs(20), || async {
            ours(&am.alerts().await)
                .first()
                .and_then(|a| a["endsAt"].as_str().map(|e| e > first_ends.as_str()))
                .unwrap_or(false)
        })
        .await,
        "endsAt never moved past {first_ends}:\n{}",
        daemon.log_text()
    );

    // The clear resolves the work order; Alertmanager takes the alert as resolved (no longer listed).
    publisher
        .publish(
            "campus/b1/room-1/telemetry",
            format!(r#"{{"ts": {}, "temperature": 20}}"#, now_ms()),
        )
        .await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            ours(&am.alerts().await).is_empty()
        })
        .await,
        "alert still active after the clear: {:?}\n{}",
        am.alerts().await,
        daemon.log_text()
    );
}
