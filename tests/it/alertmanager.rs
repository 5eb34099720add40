//! The Alertmanager work-order target against a real Alertmanager (Debian's `prometheus-alertmanager`): a rule
//! breach through real mosquitto and `caretaker run` shows up in `GET /api/v2/alerts` with the work order's
//! labels and annotations, and the clear resolves it there.

use crate::support::*;
use crate::work_order_site::WorkOrderSite;
use std::time::Duration;

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
    let site = WorkOrderSite::new(
        &mosq,
        "am",
        "2s",
        r#"    labels: { floor: "3" }
    annotations: { runbook_url: "https://wiki.example.org/room-too-hot" }
    work_order:
      title: "Room {device} too hot"
      team: hvac
      procedure: "1. Check the radiator valve."
"#,
    );
    // The MQTT target's JSON carries the rule's labels and annotations too: one message read by mosquitto_sub,
    // subscribed before anything is published (the daemon's startup below takes longer than the subscription).
    let sub = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &mosq.port.to_string()])
        .args(["-t", "caretaker/test/am-work-orders", "-C", "1", "-W", "60"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run = site
        .start(&format!(
            r#"[[work_orders.targets]]
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
            am = am.url(),
            mqtt = mosq.port,
            http = site.http,
        ))
        .await;
    let daemon = &run.daemon;
    run.breach("room-1", 3_000).await;
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
    run.clear("room-1").await;
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
