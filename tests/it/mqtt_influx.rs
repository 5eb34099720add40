//! End to end: a real MQTT client publishes to a real mosquitto, `caretaker run` maps the messages through the
//! shipped profiles, and the points land in a real InfluxDB 1.6.7 (v1 API) or VictoriaMetrics (v2 API).

use crate::support::*;
use std::time::Duration;

fn site_config(
    mqtt_port: u16,
    http_port: u16,
    state: &std::path::Path,
    influx: &str,
    extra_influx: &str,
) -> String {
    format!(
        r#"[site]
name = "test campus"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
client_id = "caretaker-test-{http_port}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[influxdb]
url = "{influx}"
batch_size = 1000
flush_interval = "200ms"
max_retry_backoff = "1s"
{extra_influx}
[http]
listen = "127.0.0.1:{http_port}"
[pipeline]
shutdown_timeout = "10s"
"#,
        state = state.display(),
        profiles = repo().join("device_profiles").display(),
    )
}

/// Publishes probe messages until the daemon has received one, so later messages are not sent before the
/// daemon's subscription exists.
async fn wait_subscribed(p: &Publisher, d: &Daemon) {
    wait_receiving(
        p,
        d,
        "campus/probe/probe/telemetry",
        r#"{"temperature": 1}"#,
    )
    .await;
}

const BASE_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn temperature(i: i64) -> f64 {
    20.0 + (i % 100) as f64 / 10.0
}

fn humidity(i: i64) -> f64 {
    30.0 + (i % 50) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_arrive_exactly_across_a_broker_restart() {
    let mut mosq = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let cfg = write_config(
        dir.path(),
        &site_config(
            mosq.port,
            http,
            &dir.path().join("state"),
            &influx.url(),
            "api = \"v1\"\ndatabase = \"ct\"",
        ),
    );
    let daemon = Daemon::start(&cfg, http);
    let publisher = Publisher::connect(mosq.port, "test-publisher-1");
    wait_subscribed(&publisher, &daemon).await;

    const DEVICES: i64 = 10;
    const PER_DEVICE: i64 = 1000;
    for i in 0..PER_DEVICE {
        for d in 0..DEVICES {
            let payload = format!(
                r#"{{"ts": {}, "temperature": {}, "humidity": {}}}"#,
                BASE_MS + i * 1000,
                temperature(i + d),
                humidity(i + d)
            );
            publisher
                .publish(&format!("campus/b{}/dev-{d}/telemetry", d % 3), payload)
                .await;
        }
        if i == PER_DEVICE / 2 {
            // Half way: restart the broker while messages are in flight both ways.
            let ok = wait_until(Duration::from_secs(30), || async {
                publisher.acked() >= (DEVICES * i) as u64 / 2
            })
            .await;
            assert!(ok, "publisher stalled before the restart");
            mosq.restart();
        }
    }
    let expected = (DEVICES * PER_DEVICE) as u64;
    let q = "SELECT count(temperature) FROM environment WHERE device != 'probe'";
    let ok = wait_until(Duration::from_secs(180), || async {
        let (_, rows) = influx.select("ct", q).await;
        rows.first().and_then(|r| r[1].as_u64()).unwrap_or(0) >= expected
    })
    .await;
    let (_, rows) = influx.select("ct", q).await;
    if !ok {
        // Where the missing ones went: never acknowledged to the publisher, never received by the daemon, or
        // received and not written.
        let (_, stored) = influx
            .select(
                "ct",
                "SELECT temperature, device FROM environment WHERE device != 'probe'",
            )
            .await;
        let have: std::collections::HashSet<(String, i64)> = stored
            .iter()
            .map(|r| {
                let ms = r[0].as_i64().unwrap_or(0) / 1_000_000;
                (
                    r[2].as_str().unwrap_or("").to_string(),
                    (ms - BASE_MS) / 1000,
                )
            })
            .collect();
        let missing: Vec<(i64, i64)> = (0..PER_DEVICE)
            .flat_map(|i| (0..DEVICES).map(move |d| (d, i)))
            .filter(|(d, i)| !have.contains(&(format!("dev-{d}"), *i)))
            .collect();
        let received = daemon
            .metric(r#"caretaker_readings_received_total{source="mqtt"}"#)
            .await;
        panic!(
            "InfluxDB has {rows:?} of {expected} points; missing (device, i) in publish order {missing:?}; \
             publisher acknowledged {} of {expected} (+ probes); daemon received {received} readings \
             (2 per message, + probes)\n--- mosquitto ---\n{}\n--- caretaker ---\n{}",
            publisher.acked(),
            std::fs::read_to_string(mosq.dir.path().join("mosquitto.log")).unwrap_or_default(),
            daemon.log_text()
        );
    }
    assert_eq!(
        rows[0][1].as_u64(),
        Some(expected),
        "exactly one point per (series, timestamp)"
    );
    let (_, rows) = influx
        .select(
            "ct",
            "SELECT count(humidity) FROM environment WHERE device != 'probe'",
        )
        .await;
    assert_eq!(rows[0][1].as_u64(), Some(expected));

    // Values, tags and timestamps are right, not only the count.
    for (d, i) in [(0i64, 0i64), (3, 499), (7, 500), (9, 999)] {
        let ts_ns = (BASE_MS + i * 1000) * 1_000_000;
        let (cols, rows) = influx
            .select("ct", &format!("SELECT temperature, humidity, building, site, profile FROM environment WHERE device = 'dev-{d}' AND time = {ts_ns}"))
            .await;
        assert_eq!(rows.len(), 1, "dev-{d} at {ts_ns}: {rows:?}");
        let row: std::collections::HashMap<_, _> =
            cols.iter().cloned().zip(rows[0].iter().cloned()).collect();
        assert_eq!(row["temperature"].as_f64(), Some(temperature(i + d)));
        assert_eq!(row["humidity"].as_f64(), Some(humidity(i + d)));
        assert_eq!(
            row["building"].as_str(),
            Some(format!("b{}", d % 3).as_str())
        );
        assert_eq!(row["site"].as_str(), Some("test campus"));
        assert_eq!(row["profile"].as_str(), Some("generic-room-sensor"));
    }
    let written = daemon.metric("caretaker_readings_written_total").await;
    assert!(written >= 2.0 * expected as f64, "written_total {written}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_counted_and_the_rest_flows() {
    let mosq = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let cfg = write_config(
        dir.path(),
        &site_config(
            mosq.port,
            http,
            &dir.path().join("state"),
            &influx.url(),
            "api = \"v1\"\ndatabase = \"ct\"",
        ),
    );
    let daemon = Daemon::start(&cfg, http);
    let p = Publisher::connect(mosq.port, "test-publisher-2");
    wait_subscribed(&p, &daemon).await;
    let topic = "campus/main/room-1/telemetry";
    let mut i = 0;
    let mut next_ts = || {
        i += 1;
        BASE_MS + i * 1000
    };
    for bad in ["{not json", "", "[1,2,3]"] {
        p.publish(topic, bad).await; // malformed: not a JSON object with any point
    }
    p.publish(topic, r#"{"colour": "red"}"#).await; // valid JSON, no point of the profile
    for _ in 0..2 {
        // humidity out of valid_range [0, 100]; temperature still good
        p.publish(
            topic,
            format!(
                r#"{{"ts": {}, "temperature": 21.0, "humidity": 150}}"#,
                next_ts()
            ),
        )
        .await;
    }
    p.publish(
        topic,
        format!(r#"{{"ts": {}, "temperature": "warm"}}"#, next_ts()),
    )
    .await; // bad value
    for _ in 0..5 {
        p.publish(
            topic,
            format!(
                r#"{{"ts": {}, "temperature": 22.5, "humidity": 40}}"#,
                next_ts()
            ),
        )
        .await;
    }
    let ok = wait_until(Duration::from_secs(60), || async {
        influx.count("ct", "environment", "humidity").await >= 5
    })
    .await;
    assert!(ok, "good messages did not arrive:\n{}", daemon.log_text());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, rows) = influx
        .select(
            "ct",
            "SELECT count(temperature) FROM environment WHERE device = 'room-1'",
        )
        .await;
    assert_eq!(
        rows[0][1].as_u64(),
        Some(7),
        "5 good + 2 with only humidity out of range"
    );
    assert_eq!(influx.count("ct", "environment", "humidity").await, 5);
    let m = |l: &'static str| daemon.metric(l);
    assert_eq!(
        m(r#"caretaker_readings_dropped_total{stage="mqtt",reason="malformed_payload"}"#).await,
        4.0
    );
    assert_eq!(
        m(r#"caretaker_readings_dropped_total{stage="mqtt",reason="out_of_range"}"#).await,
        2.0
    );
    assert_eq!(
        m(r#"caretaker_readings_dropped_total{stage="mqtt",reason="bad_value"}"#).await,
        1.0
    );
    let log = daemon.log_text();
    assert!(
        log.contains("room-1") && log.contains("humidity") && log.contains("valid_range"),
        "{log}"
    );
    let health = http_client()
        .get(format!("http://127.0.0.1:{http}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "still healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_api_writes_to_victoria_metrics_with_token() {
    let mosq = Mosquitto::start();
    let vm = Victoria::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("influx.token"), "s3cret-token\n").unwrap();
    let http = free_port();
    let extra =
        "api = \"v2\"\norg = \"campus\"\nbucket = \"facilities\"\ntoken_file = \"influx.token\"";
    let cfg = write_config(
        dir.path(),
        &site_config(mosq.port, http, &dir.path().join("state"), &vm.url(), extra),
    );
    let daemon = Daemon::start(&cfg, http);
    let p = Publisher::connect(mosq.port, "test-publisher-3");
    wait_subscribed(&p, &daemon).await;
    for i in 0..50i64 {
        p.publish(
            "campus/annex/co2-1/telemetry",
            format!(
                r#"{{"ts": {}, "temperature": {}}}"#,
                BASE_MS + i * 60_000,
                temperature(i)
            ),
        )
        .await;
    }
    let ok = wait_until(Duration::from_secs(60), || async {
        daemon.metric("caretaker_readings_written_total").await >= 51.0
    })
    .await;
    assert!(ok, "not written:\n{}", daemon.log_text());
    let selector = r#"{__name__="environment_temperature",device="co2-1"}"#;
    let ok = wait_until(Duration::from_secs(30), || async {
        let series = vm.export(selector).await;
        series
            .first()
            .map(|s| s["values"].as_array().unwrap().len())
            .unwrap_or(0)
            >= 50
    })
    .await;
    let series = vm.export(selector).await;
    assert!(ok, "VictoriaMetrics has {series:?}");
    let s = &series[0];
    assert_eq!(s["metric"]["building"], "annex");
    assert_eq!(s["metric"]["site"], "test campus");
    let values: Vec<f64> = s["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let ts: Vec<i64> = s["timestamps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    for (v, t) in values.iter().zip(&ts) {
        let i = (t - BASE_MS) / 60_000;
        assert_eq!(*v, temperature(i), "at {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_queued_readings_and_exits_zero() {
    let mosq = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    // A long flush interval keeps readings queued until shutdown forces them out.
    let text = site_config(
        mosq.port,
        http,
        &dir.path().join("state"),
        &influx.url(),
        "api = \"v1\"\ndatabase = \"ct\"",
    )
    .replace("flush_interval = \"200ms\"", "flush_interval = \"60s\"")
    .replace("batch_size = 1000", "batch_size = 100000");
    let cfg = write_config(dir.path(), &text);
    let mut daemon = Daemon::start(&cfg, http);
    let p = Publisher::connect(mosq.port, "test-publisher-4");
    wait_subscribed(&p, &daemon).await;
    for i in 0..300i64 {
        p.publish(
            "campus/main/s-1/telemetry",
            format!(
                r#"{{"ts": {}, "temperature": 20, "humidity": 50}}"#,
                BASE_MS + i
            ),
        )
        .await;
    }
    let ok = wait_until(Duration::from_secs(30), || async {
        daemon
            .metric(r#"caretaker_readings_received_total{source="mqtt"}"#)
            .await
            >= 601.0
    })
    .await;
    assert!(ok, "not received:\n{}", daemon.log_text());
    assert_eq!(
        influx.count("ct", "environment", "humidity").await,
        0,
        "still queued before shutdown"
    );
    let (code, took) = daemon.terminate();
    assert_eq!(code, Some(0), "exit code; log:\n{}", daemon.log_text());
    assert!(took < Duration::from_secs(12), "shutdown took {took:?}");
    assert_eq!(influx.count("ct", "environment", "humidity").await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_acked_counted_and_the_rest_flows() {
    let mosq = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let text = site_config(
        mosq.port,
        http,
        &dir.path().join("state"),
        &influx.url(),
        "api = \"v1\"\ndatabase = \"ct\"",
    )
    .replace(
        "reconnect_max_backoff = \"1s\"",
        "reconnect_max_backoff = \"1s\"\nmax_packet_size = 2048",
    );
    let cfg = write_config(dir.path(), &text);
    let daemon = Daemon::start(&cfg, http);
    let p = Publisher::connect(mosq.port, "test-publisher-big");
    wait_subscribed(&p, &daemon).await;
    let topic = "campus/main/room-9/telemetry";
    let good = |i: i64| {
        format!(
            r#"{{"ts": {}, "temperature": 21.0, "humidity": 40}}"#,
            BASE_MS + i * 1000
        )
    };
    p.publish(topic, good(1)).await;
    // A QoS 1 message over max_packet_size: the broker redelivers it to the persistent session until acked.
    let big = format!(
        r#"{{"ts": {}, "temperature": 1, "pad": "{}"}}"#,
        BASE_MS,
        "x".repeat(8000)
    );
    p.publish(topic, big).await;
    for i in 2..=6 {
        p.publish(topic, good(i)).await;
    }
    let ok = wait_until(Duration::from_secs(30), || async {
        influx.count("ct", "environment", "humidity").await >= 6
    })
    .await;
    assert!(
        ok,
        "messages behind the oversized one did not arrive:\n{}",
        daemon.log_text()
    );
    assert_eq!(
        daemon
            .metric(r#"caretaker_readings_dropped_total{stage="mqtt",reason="too_large"}"#)
            .await,
        1.0
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = daemon.log_text();
    assert!(
        !log.contains("reconnecting"),
        "the oversized message broke the connection:\n{log}"
    );
    assert_eq!(
        log.matches("larger than max_packet_size").count(),
        1,
        "{log}"
    );
    assert!(log.contains(topic), "{log}");
}
