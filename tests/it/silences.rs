//! Maintenance windows end to end with real mosquitto and influxd and `caretaker run`: `caretaker silence`
//! (another process, on the same store file) holds back the work order of a breach on the silenced device,
//! while the same breach on another device opens one; the held-back alarm is listed by `silence list` and
//! `GET /api/v1/silences`; removing the silence while the alarm is still active opens its work order then.
//! A `[[silences]]` window in the site config is loaded at start and listed too.

use crate::support::*;
use crate::work_order_site::WorkOrderSite;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silenced_device_opens_no_work_order_until_the_silence_ends_while_the_alarm_holds() {
    let mosq = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let site = WorkOrderSite::new(
        &mosq,
        "silence",
        "1s",
        r#"    work_order:
      title: "Room {device} too hot"
"#,
    );
    let token = "silence-test-viewer-token-0123456789";
    std::fs::write(site.dir.path().join("viewer.token"), token).unwrap();
    let http = site.http;
    let st = site.state.to_str().unwrap().to_string();
    // Made before the daemon runs (the store file is created by the command).
    let (code, out, err) = caretaker(&[
        "silence",
        "--state",
        &st,
        "--device",
        "room-1",
        "--for",
        "4h",
        "--reason",
        "filter change",
        "--by",
        "alice",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("silence #1: room-1 from "), "{out}");
    let (code, _, err) = caretaker(&["silence", "--state", &st, "--device", "room-1"]);
    assert_ne!(code, 0);
    assert!(err.contains("--for, --reason"), "{err}");

    let run = site
        .start(&format!(
            r#"[[http.tokens]]
name = "desk"
role = "viewer"
token_file = "viewer.token"
[influxdb]
url = "{influx}"
api = "v1"
database = "ct"
[[silences]]
device = "room-9"
start = "2026-01-01T00:00:00Z"
end = "2099-01-01T00:00:00Z"
reason = "refurbishment"
"#,
            influx = influx.url(),
        ))
        .await;
    let daemon = &run.daemon;
    for device in ["room-1", "room-2"] {
        run.breach(device, 2_000).await;
    }
    let list = |args: &[&str]| {
        let mut a = vec!["work-orders", "list", "--state", &st, "--format", "json"];
        a.extend(args);
        let (code, out, err) = caretaker(&a);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
    };
    // room-2 opens a work order; room-1 is recorded as silenced instead.
    let silences = || {
        let (code, out, err) = caretaker(&["silence", "list", "--state", &st, "--format", "json"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(30), || async {
            !list(&[]).is_empty() && !silences()["silenced"].as_array().unwrap().is_empty()
        })
        .await,
        "expected one work order and one silenced alarm: {:?} {}\n{}",
        list(&[]),
        silences(),
        daemon.log_text()
    );
    let wos = list(&[]);
    assert_eq!(wos.len(), 1, "{wos:?}");
    assert_eq!(wos[0]["device"], "room-2");
    let s = silences();
    let held = &s["silenced"][0];
    assert_eq!(held["device"], "room-1", "{s}");
    assert_eq!(held["silence"], 1, "{s}");
    assert_eq!(held["work_order"], serde_json::Value::Null, "{s}");
    let listed: Vec<_> = s["silences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["device"].as_str().unwrap().to_string(),
                x["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(listed.contains(&("room-1".into(), "cli".into())), "{s}");
    assert!(listed.contains(&("room-9".into(), "config".into())), "{s}");
    assert_eq!(s["silences"][1]["created_by"], "alice", "{s}");
    // The API lists the same.
    let api: serde_json::Value = serde_json::from_str(
        &http_client()
            .get(format!("http://127.0.0.1:{http}/api/v1/silences"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(api["silenced"][0]["device"], "room-1", "{api}");
    assert_eq!(api["silences"].as_array().map(Vec::len), Some(2), "{api}");

    // The alarm still holds; ending the silence opens its work order.
    let (code, out, err) = caretaker(&["silence", "remove", "--state", &st, "1", "--by", "alice"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        wait_until(Duration::from_secs(20), || async { list(&[]).len() == 2 }).await,
        "no work order after the silence ended:\n{}",
        daemon.log_text()
    );
    let opened = list(&[])
        .into_iter()
        .find(|w| w["device"] == "room-1")
        .unwrap();
    assert_eq!(opened["status"], "open");
    assert_eq!(silences()["silenced"][0]["work_order"], opened["id"]);
    let (code, _, err) = caretaker(&["silence", "remove", "--state", &st, "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("removed already"), "{err}");
}
