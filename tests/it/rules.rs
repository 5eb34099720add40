//! Rules to work orders, end to end: readings published to a real mosquitto open a work order in `caretaker
//! run`'s SQLite store and one signed webhook delivery to a real HTTP receiver (an axum server in this test:
//! the peer under the test's control, not a stand-in for Caretaker); repeats update it; a daemon restart changes
//! nothing; clearing resolves it; a receiver that is down then up gets each delivery exactly once. Then
//! `caretaker backtest` on the same readings must open the same work orders.

use crate::support::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "s3cret-for-tests";
const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, ms

/// One webhook call as received.
#[derive(Debug, Clone)]
struct Call {
    key: String,
    event: String,
    body: serde_json::Value,
    signature_ok: bool,
}

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Call>>>);

impl Received {
    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }
    fn events(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.event).collect()
    }
}

async fn hook(State(rx): State<Received>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let expected = format!(
        "sha256={}",
        caretaker::work_orders::deliver::sign(SECRET.as_bytes(), &body)
    );
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    rx.0.lock().unwrap().push(Call {
        key: h("idempotency-key"),
        event: v["event"].as_str().unwrap_or("").to_string(),
        signature_ok: h("x-caretaker-signature") == expected,
        body: v,
    });
    StatusCode::OK
}

/// A webhook receiver that can go down and come back on the same port.
struct Receiver {
    port: u16,
    rx: Received,
    stop: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Receiver {
    async fn start(port: u16, rx: Received) -> Receiver {
        let mut r = Receiver {
            port,
            rx,
            stop: None,
        };
        r.up().await;
        r
    }

    async fn up(&mut self) {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind(([127, 0, 0, 1], self.port).into()).unwrap();
        let listener = sock.listen(64).unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(self.rx.clone());
        let token = CancellationToken::new();
        let t = token.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { t.cancelled().await })
                .await;
        });
        self.stop = Some((token, task));
    }

    async fn down(&mut self) {
        if let Some((t, task)) = self.stop.take() {
            t.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

fn site_config(dir: &Path, mqtt_port: u16, http_port: u16, hook_port: u16) -> std::path::PathBuf {
    let rules = dir.join("rules");
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
      title: "Room {device} in {building} at {value} degC"
      team: hvac
      due_within: 4h
      procedure: "1. Check the radiator valve."
"#,
    )
    .unwrap();
    std::fs::write(dir.join("hook.secret"), format!("{SECRET}\n")).unwrap();
    write_config(
        dir,
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
url = "mqtt://127.0.0.1:{mqtt_port}"
client_id = "caretaker-rules-{http_port}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[http]
listen = "127.0.0.1:{http_port}"
[work_orders]
update_every = "1m"
flap_window = "1m"
[[work_orders.targets]]
kind = "webhook"
name = "hook"
url = "http://127.0.0.1:{hook_port}/hook"
secret_file = "hook.secret"
timeout = "2s"
max_retry_backoff = "1s"
[[work_orders.targets]]
kind = "mqtt"
name = "bus"
url = "mqtt://127.0.0.1:{mqtt_port}"
topic = "caretaker/test/work-orders"
client_id = "caretaker-wo-{http_port}"
timeout = "2s"
max_retry_backoff = "1s"
"#,
            state = dir.join("state").display(),
            profiles = repo().join("device_profiles").display(),
        ),
    )
}

fn list(state: &Path) -> Vec<serde_json::Value> {
    let (code, out, err) = caretaker(&[
        "work-orders",
        "list",
        "--state",
        state.to_str().unwrap(),
        "--format",
        "json",
    ]);
    if code != 0 {
        return Vec::new(); // the daemon has not created the store yet
    }
    serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .unwrap_or_else(|e| panic!("{e}: {out}{err}"))
}

/// Collects the JSON messages published on a topic.
async fn subscribe(port: u16, topic: &str) -> Arc<Mutex<Vec<serde_json::Value>>> {
    let mut o = rumqttc::MqttOptions::new("rules-test-subscriber", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 100);
    client
        .subscribe(topic, rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let (g, subscribed) = (
        got.clone(),
        Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let s = subscribed.clone();
    tokio::spawn(async move {
        let _client = client; // keep the connection's request channel open
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    g.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&p.payload).unwrap_or_default());
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    s.store(true, std::sync::atomic::Ordering::Relaxed)
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    assert!(
        wait_until(Duration::from_secs(10), || async {
            subscribed.load(std::sync::atomic::Ordering::Relaxed)
        })
        .await
    );
    got
}

async fn wait_subscribed(p: &Publisher, d: &Daemon) {
    wait_receiving(
        p,
        d,
        "campus/probe/probe/telemetry",
        r#"{"temperature": 1}"#,
    )
    .await;
}

/// The readings of the scenario: (seconds after T0, temperature).
const SERIES: &[&[(i64, f64)]] = &[
    // A breach held for 2 s opens the work order at +3 s.
    &[(0, 31.0), (3, 32.0)],
    // Repeats a minute apart (update_every) update it.
    &[(70, 33.0), (140, 34.0)],
    // After the restart: still breaching, nothing new.
    &[(150, 34.5)],
    // Cleared: resolved (delivered while the receiver is down, then up).
    &[(200, 20.0)],
];

async fn publish(p: &Publisher, part: &[(i64, f64)]) {
    for (t, v) in part {
        p.publish(
            "campus/b1/room-1/telemetry",
            format!(r#"{{"ts": {}, "temperature": {v}}}"#, T0 + t * 1000),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_opens_one_work_order_delivered_exactly_once_through_restart_and_receiver_outage()
{
    let mosq = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (http, hook_port) = (free_port(), free_port());
    let rx = Received::default();
    let mut receiver = Receiver::start(hook_port, rx.clone()).await;
    let bus = subscribe(mosq.port, "caretaker/test/work-orders").await;
    let cfg = site_config(dir.path(), mosq.port, http, hook_port);
    let mut daemon = Daemon::start(&cfg, http);
    let publisher = Publisher::connect(mosq.port, "rules-publisher");
    wait_subscribed(&publisher, &daemon).await;

    // 1. A breach opens exactly one work order and one webhook delivery.
    publish(&publisher, SERIES[0]).await;
    assert!(
        wait_until(Duration::from_secs(20), || async { !rx.calls().is_empty() }).await,
        "no webhook delivery:\n{}",
        daemon.log_text()
    );
    let wos = list(&state);
    assert_eq!(wos.len(), 1, "{wos:?}");
    let wo = &wos[0];
    assert_eq!(wo["status"], "open");
    assert_eq!(wo["rule"], "room-too-hot");
    assert_eq!(wo["device"], "room-1");
    assert_eq!(wo["point"], "temperature");
    assert_eq!(wo["severity"], "major");
    assert_eq!(wo["opened_at"], "2026-01-01T00:00:03Z");
    assert_eq!(wo["title"], "Room room-1 in b1 at 32 degC");
    let calls = rx.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].event, "opened");
    assert!(calls[0].signature_ok, "HMAC signature does not verify");
    assert_eq!(calls[0].body["idempotency_key"], calls[0].key.as_str());
    assert_eq!(calls[0].body["work_order"]["id"], wo["id"]);
    assert_eq!(calls[0].body["work_order"]["status"], "open");

    // 2. Repeats update the same work order.
    publish(&publisher, SERIES[1]).await;
    assert!(
        wait_until(Duration::from_secs(20), || async { rx.calls().len() >= 3 }).await,
        "{:?}\n{}",
        rx.events(),
        daemon.log_text()
    );
    let wos = list(&state);
    assert_eq!(wos.len(), 1, "{wos:?}");
    assert_eq!(wos[0]["count"], 3);
    assert_eq!(wos[0]["last_value"], 34.0);
    assert_eq!(rx.events(), ["opened", "updated", "updated"]);

    // 3. A restart in the middle changes nothing: the still-breaching reading opens nothing and sends nothing.
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "{}", daemon.log_text());
    drop(daemon);
    let daemon = Daemon::start(&cfg, http);
    // Wait until the restarted daemon has read something (its own counter starts at 0 again).
    wait_subscribed(&publisher, &daemon).await;
    let received_before = daemon
        .metric(r#"caretaker_readings_received_total{source="mqtt"}"#)
        .await;
    publish(&publisher, SERIES[2]).await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            daemon
                .metric(r#"caretaker_readings_received_total{source="mqtt"}"#)
                .await
                >= received_before + 1.0
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let wos = list(&state);
    assert_eq!(wos.len(), 1, "a restart must not open a duplicate: {wos:?}");
    assert_eq!(wos[0]["count"], 3);
    assert_eq!(rx.calls().len(), 3, "{:?}", rx.events());

    // 4. The receiver goes down; clearing resolves the work order in the store, its delivery waits.
    receiver.down().await;
    publish(&publisher, SERIES[3]).await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            list(&state)
                .first()
                .is_some_and(|w| w["status"] == "resolved")
        })
        .await,
        "clear did not resolve:\n{}",
        daemon.log_text()
    );
    let id = wos[0]["id"].to_string();
    let show = |id: &str| {
        let (code, out, err) = caretaker(&[
            "work-orders",
            "show",
            id,
            "--state",
            state.to_str().unwrap(),
            "--format",
            "json",
        ]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(20), || async {
            show(&id)["deliveries"].as_array().unwrap().iter().any(|d| {
                d["event"] == "resolved"
                    && d["delivered_at"].is_null()
                    && d["attempts"].as_i64().unwrap() >= 2
            })
        })
        .await,
        "the resolved event was not retried while the receiver was down: {}",
        show(&id)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rx.calls().len(), 3);
    assert_eq!(
        daemon
            .metric(r#"caretaker_work_order_outbox_pending{target="hook"}"#)
            .await,
        1.0,
        "the waiting delivery shows in /metrics"
    );

    // 5. The receiver comes back: the resolution arrives, and every delivery exactly once.
    receiver.up().await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            rx.events().last().map(String::as_str) == Some("resolved")
        })
        .await,
        "{:?}\n{}",
        rx.events(),
        daemon.log_text()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls = rx.calls();
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for c in &calls {
        *per_key.entry(c.key.as_str()).or_default() += 1;
        assert!(c.signature_ok);
    }
    assert!(
        per_key.values().all(|n| *n == 1),
        "duplicate deliveries: {per_key:?}"
    );
    assert_eq!(rx.events(), ["opened", "updated", "updated", "resolved"]);
    let last = &calls.last().unwrap().body["work_order"];
    assert_eq!(last["status"], "resolved");
    assert_eq!(last["resolved_by"], "rule:room-too-hot");
    let shown = show(&id);
    let actions: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["opened", "still active", "still active", "resolved"]
    );
    assert_eq!(
        shown["history"][0]["evidence"].as_array().unwrap().len(),
        2,
        "{shown}"
    );
    assert!(
        shown["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| !d["delivered_at"].is_null())
    );

    // 6. A person's acknowledgement of a new episode goes out too (`ack` on the store while the daemon runs).
    publish(&publisher, &[(300, 35.0), (303, 35.0)]).await;
    assert!(
        wait_until(Duration::from_secs(20), || async {
            list(&state).len() == 2
        })
        .await,
        "{:?}",
        list(&state)
    );
    let new_id = list(&state)[1]["id"].to_string();
    let (code, out, err) = caretaker(&[
        "work-orders",
        "ack",
        &new_id,
        "--state",
        state.to_str().unwrap(),
        "--by",
        "alice",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        wait_until(Duration::from_secs(20), || async {
            rx.events().last().map(String::as_str) == Some("acknowledged")
        })
        .await,
        "{:?}",
        rx.events()
    );
    let (code, out, _) = caretaker(&[
        "work-orders",
        "list",
        "--state",
        state.to_str().unwrap(),
        "--status",
        "acknowledged",
        "--format",
        "csv",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.lines()
            .nth(1)
            .unwrap()
            .contains(",acknowledged,major,room-too-hot,room-1,temperature,"),
        "{out}"
    );
    let (code, out, _) = caretaker(&[
        "work-orders",
        "stats",
        "--state",
        state.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["teams"][0]["team"], "hvac");
    assert_eq!(stats["teams"][0]["total"], 2);
    assert_eq!(stats["teams"][0]["resolved"], 1);

    // The MQTT target got the same events, with the same idempotency keys.
    let webhook_keys: Vec<String> = rx.calls().into_iter().map(|c| c.key).collect();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            bus.lock().unwrap().len() >= webhook_keys.len()
        })
        .await,
        "{:?}",
        bus.lock().unwrap()
    );
    let bus_keys: Vec<String> = bus
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["idempotency_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bus_keys, webhook_keys);

    // 7. Backtest on the same readings opens the same work orders at the same times.
    let csv = dir.path().join("history.csv");
    let mut text = String::from("timestamp,device,point,value,profile\n");
    for part in SERIES
        .iter()
        .copied()
        .chain([&[(300, 35.0), (303, 35.0)][..]])
    {
        for (t, v) in part {
            text.push_str(&format!(
                "{},room-1,temperature,{v},generic-room-sensor\n",
                T0 + t * 1000
            ));
        }
    }
    std::fs::write(&csv, text).unwrap();
    let (code, out, err) = caretaker(&[
        "backtest",
        "--config",
        cfg.to_str().unwrap(),
        "--input",
        csv.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("work order(s) would have been opened"),
        "{err}"
    );
    let back: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let live = list(&state);
    let key = |w: &serde_json::Value| {
        (
            w["rule"].clone(),
            w["device"].clone(),
            w["point"].clone(),
            w["severity"].clone(),
            w["opened_at"].clone(),
            w["count"].clone(),
            w["peak_value"].clone(),
        )
    };
    assert_eq!(back.len(), live.len(), "backtest {back:?}\nlive {live:?}");
    for (b, l) in back.iter().zip(&live) {
        assert_eq!(key(b), key(l));
    }
    // The live run's people acknowledged one; the engine resolved the other at the same reading time.
    assert_eq!(back[0]["resolved_at"], live[0]["resolved_at"]);
    assert_eq!(back[0]["resolved_at"], "2026-01-01T00:03:20Z");
}

#[test]
fn check_reports_rule_errors_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = site_config(dir.path(), 1883, 9464, 8080);
    std::fs::write(
        dir.path().join("rules/bad.yaml"),
        "schema: 1\nrules:\n  - name: bad\n    applies_to: { profile: generic-room-sensor }\n    point: temprature\n    when: { above: 30 }\n    severity: major\n  - name: bad-unit\n    applies_to: { profile: generic-room-sensor }\n    point: co2\n    unit: degC\n    when: { above: 30 }\n    severity: major\n",
    )
    .unwrap();
    let (code, out, err) = caretaker(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains("bad.yaml:5:")
            && err.contains("unknown point `temprature` (did you mean `temperature`?)"),
        "{err}"
    );
    assert!(
        err.contains("bad.yaml:11:") && err.contains("wrong unit"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("rules/bad.yaml")).unwrap();
    let (code, out, err) = caretaker(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rules: 1 in 1 folder(s)"), "{out}");
    assert!(out.contains("work-order targets: hook, bus"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtest_reads_history_back_from_influxdb() {
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = site_config(dir.path(), 1883, 9464, 8080);
    // Declared devices are the ones whose series a backtest from InfluxDB maps to points.
    let text = std::fs::read_to_string(&cfg).unwrap()
        + &format!(
            "[influxdb]\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"ct\"\n[[devices]]\nid = \"room-9\"\nprofile = \"generic-room-sensor\"\nlocation = {{ building = \"b2\" }}\n",
            influx.url()
        );
    std::fs::write(&cfg, text).unwrap();
    // The series as the daemon writes them: measurement = category, field = point, tags site/device/profile/...
    let mut lines = String::new();
    for (t, v) in [(0, 22.0), (60, 31.0), (63, 31.5), (120, 24.0)] {
        lines.push_str(&format!(
            "environment,building=b2,device=room-9,profile=generic-room-sensor,site=test\\ campus temperature={v},humidity=40 {}\n",
            (T0 + t * 1000) * 1_000_000
        ));
    }
    let resp = http_client()
        .post(format!("{}/write?db=ct", influx.url()))
        .body(lines)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204, "{:?}", resp.text().await);
    let (code, out, err) = caretaker(&[
        "backtest",
        "--config",
        cfg.to_str().unwrap(),
        "--from-influx",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-02T00:00:00Z",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let wos: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(wos.len(), 1, "{wos:?}\n{err}");
    assert_eq!(wos[0]["device"], "room-9");
    assert_eq!(wos[0]["opened_at"], "2026-01-01T00:01:03Z");
    assert_eq!(wos[0]["resolved_at"], "2026-01-01T00:02:00Z");
    assert_eq!(wos[0]["title"], "Room room-9 in b2 at 31.5 degC");
}
