//! Fleet layout (issue 15): two `caretaker run` daemons on one real mosquitto and one real influxd.
//!
//! - Partitioned (`[mqtt.partition] building = [...]`, each gateway owns two of four buildings, and both share
//!   the topics through `shared_group` too): 20,000 messages (40,000 readings) land exactly once, counted in
//!   influxd AND as the sum of both daemons' received and written counters (influxd overwrites an identical
//!   point, so only the counters catch a duplicate); a rule firing on a device of one gateway opens exactly one
//!   work order across both, tagged with that gateway.
//! - Shared only (`shared_group = "caretaker"`, no partition): mosquitto splits the same messages between the
//!   two members (each gets a share, MQTT 3.1.1 clients included) and every reading is still written once. No
//!   work-order assertion there: round-robin splits a device's state between members (ARCHITECTURE.md).

use crate::support::*;
use std::path::Path;
use std::time::Duration;

const BASE_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const BUILDINGS: usize = 4;
const DEVICES_PER_BUILDING: usize = 5;
const PER_DEVICE: usize = 1000; // 4 × 5 × 1000 = 20,000 messages, 2 readings each
const MESSAGES: usize = BUILDINGS * DEVICES_PER_BUILDING * PER_DEVICE;

struct Member {
    daemon: Daemon,
    gateway: &'static str,
}

fn member(dir: &Path, gateway: &'static str, mqtt_port: u16, influx: &str, fleet: &str) -> Member {
    let dir = dir.join(gateway);
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    // Only dev-0-0 (building b0) ever goes above 40 degC.
    std::fs::write(
        rules.join("room.yaml"),
        r#"schema: 1
rules:
  - name: fleet-too-warm
    applies_to: { profile: generic-room-sensor }
    point: temperature
    unit: degC
    when: { above: 40 }
    clear: { below: 30 }
    severity: major
    work_order:
      title: "Room {device} too warm"
      team: hvac
"#,
    )
    .unwrap();
    let http = free_port();
    let cfg = write_config(
        &dir,
        &format!(
            r#"[site]
name = "fleet campus"
gateway_id = "{gateway}"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[rules]
dirs = ["rules"]
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
{fleet}
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[influxdb]
url = "{influx}"
api = "v1"
database = "ct"
batch_size = 5000
flush_interval = "200ms"
max_retry_backoff = "1s"
[http]
listen = "127.0.0.1:{http}"
[pipeline]
shutdown_timeout = "10s"
"#,
            state = dir.join("state").display(),
            profiles = repo().join("device_profiles").display(),
        ),
    );
    Member {
        daemon: Daemon::start(&cfg, http),
        gateway,
    }
}

async fn received(m: &Member) -> u64 {
    m.daemon
        .metric(r#"caretaker_readings_received_total{source="mqtt"}"#)
        .await as u64
}

async fn written(m: &Member) -> u64 {
    m.daemon.metric("caretaker_readings_written_total").await as u64
}

/// Publishes probes (device `probe-<b>` in building `b`) until every member received at least one reading, so
/// the real messages are not sent before both subscriptions exist; then waits until each member wrote all it
/// received, and returns each member's (received, written) as the baseline.
async fn settle_with_probes(
    p: &Publisher,
    members: &[&Member],
    buildings: &[usize],
) -> Vec<(u64, u64)> {
    let ok = wait_until(Duration::from_secs(40), || async {
        for b in buildings {
            p.publish(
                &format!("campus/b{b}/probe-{b}/telemetry"),
                r#"{"temperature": 1}"#,
            )
            .await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut all = true;
        for m in members {
            all &= received(m).await >= 1;
        }
        all
    })
    .await;
    assert!(
        ok,
        "a member never received a probe:\n{}",
        members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.gateway, m.daemon.log_text()))
            .collect::<String>()
    );
    let mut base = Vec::new();
    for m in members {
        let ok = wait_until(Duration::from_secs(20), || async {
            let r = received(m).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            r == received(m).await && written(m).await >= r
        })
        .await;
        assert!(ok, "{} did not settle:\n{}", m.gateway, m.daemon.log_text());
        base.push((received(m).await, written(m).await));
    }
    base
}

fn device(b: usize, d: usize) -> String {
    format!("dev-{b}-{d}")
}

/// 20,000 messages, round-robin over the 20 devices; dev-0-0 crosses 40 degC once (its rule fires, the next
/// message clears it: one work order).
async fn publish_all(p: &Publisher) {
    for i in 0..PER_DEVICE {
        for b in 0..BUILDINGS {
            for d in 0..DEVICES_PER_BUILDING {
                let hot = b == 0 && d == 0 && i == PER_DEVICE / 2;
                let t = if hot {
                    45.0
                } else {
                    20.0 + (i % 50) as f64 / 10.0
                };
                let payload = format!(
                    r#"{{"ts": {}, "temperature": {t}, "humidity": {}}}"#,
                    BASE_MS + i as i64 * 1000,
                    30 + (i + d) % 50
                );
                p.publish(&format!("campus/b{b}/{}/telemetry", device(b, d)), payload)
                    .await;
            }
        }
    }
}

async fn wait_all_in_influx(influx: &Influxd, members: &[&Member]) -> u64 {
    let q = "SELECT count(temperature) FROM environment WHERE device =~ /^dev-/";
    let ok = wait_until(Duration::from_secs(240), || async {
        let (_, rows) = influx.select("ct", q).await;
        rows.first().and_then(|r| r[1].as_u64()).unwrap_or(0) >= MESSAGES as u64
    })
    .await;
    let (_, rows) = influx.select("ct", q).await;
    let n = rows.first().and_then(|r| r[1].as_u64()).unwrap_or(0);
    assert!(
        ok,
        "influxd has {n} of {MESSAGES} temperature points\n{}",
        members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.gateway, m.daemon.log_text()))
            .collect::<String>()
    );
    n
}

/// Waits until each member's counters stop moving and returns (received, written) deltas since `base`.
async fn counters(members: &[&Member], base: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for (m, b) in members.iter().zip(base) {
        let mut last = (0, 0);
        let end = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let now = (received(m).await, written(m).await);
            let still = now == last && now.1 >= now.0;
            last = now;
            if still || std::time::Instant::now() > end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        out.push((last.0 - b.0, last.1 - b.1));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_partitioned_gateways_write_every_reading_once_and_one_work_order() {
    let mosq = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let dir = tempfile::tempdir().unwrap();
    // Partitioned by building, and a shared subscription on top (the combination a campus would run: each
    // gateway owns its buildings; `$share` lets a standby with the same partition take over).
    let a = member(
        dir.path(),
        "gw-a",
        mosq.port,
        &influx.url(),
        "shared_group = \"caretaker\"\n[mqtt.partition]\nbuilding = [\"b0\", \"b1\"]",
    );
    let b = member(
        dir.path(),
        "gw-b",
        mosq.port,
        &influx.url(),
        "[mqtt.partition]\nbuilding = [\"b2\", \"b3\"]",
    );
    let members = [&a, &b];
    let publisher = Publisher::connect(mosq.port, "fleet-publisher-1");
    let base = settle_with_probes(&publisher, &members, &[0, 2]).await;
    publish_all(&publisher).await;
    let n = wait_all_in_influx(&influx, &members).await;
    assert_eq!(n, MESSAGES as u64, "one point per (series, timestamp)");
    let c = counters(&members, &base).await;
    eprintln!("partitioned: (received, written) per gateway a, b: {c:?}");
    // Each gateway received exactly its half (its buildings' 10 devices), nothing of the other's.
    let half = (MESSAGES as u64 / 2) * 2;
    assert_eq!(
        (c[0].0, c[1].0),
        (half, half),
        "received readings per gateway (a, b): each its two buildings, exactly once"
    );
    let (_, rows) = influx
        .select(
            "ct",
            "SELECT count(temperature) FROM environment WHERE device =~ /^dev-/ GROUP BY building",
        )
        .await;
    assert_eq!(rows.len(), BUILDINGS, "{rows:?}");
    // One work order across both gateways, opened by the owner of dev-0-0 (building b0: gw-a).
    let q = "SELECT count(id) FROM work_orders WHERE \"event\" = 'opened' AND rule = 'fleet-too-warm' GROUP BY gateway, device";
    let ok = wait_until(Duration::from_secs(20), || async {
        !influx.select("ct", q).await.1.is_empty()
    })
    .await;
    assert!(ok, "no work order in influxd:\n{}", a.daemon.log_text());
    let wo = influx.query("ct", q).await;
    let series = wo["results"][0]["series"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        series.len(),
        1,
        "one (gateway, device) with a work order: {wo}"
    );
    assert_eq!(series[0]["tags"]["gateway"], "gw-a", "{wo}");
    assert_eq!(series[0]["tags"]["device"], "dev-0-0", "{wo}");
    assert_eq!(series[0]["values"][0][1], 1, "opened once: {wo}");
    // Written = received per gateway (work-order points are not counted as readings): no reading written twice.
    for (m, (r, w)) in members.iter().zip(&c) {
        assert_eq!(w, r, "{}: written {w}, received {r}", m.gateway);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_splits_messages_between_members_and_writes_each_once() {
    let mosq = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let dir = tempfile::tempdir().unwrap();
    let shared = "shared_group = \"caretaker\"";
    let a = member(dir.path(), "gw-a", mosq.port, &influx.url(), shared);
    let b = member(dir.path(), "gw-b", mosq.port, &influx.url(), shared);
    let members = [&a, &b];
    let publisher = Publisher::connect(mosq.port, "fleet-publisher-2");
    let base = settle_with_probes(&publisher, &members, &[0]).await;
    publish_all(&publisher).await;
    let n = wait_all_in_influx(&influx, &members).await;
    assert_eq!(n, MESSAGES as u64, "one point per (series, timestamp)");
    let c = counters(&members, &base).await;
    eprintln!("shared: (received, written) per member a, b: {c:?}");
    assert_eq!(
        c[0].0 + c[1].0,
        MESSAGES as u64 * 2,
        "received by a + b: every reading exactly once across the group ({c:?})"
    );
    assert!(
        c[0].0 > 0 && c[1].0 > 0,
        "mosquitto gave both members a share: {c:?}"
    );
    assert_eq!(
        (c[0].1, c[1].1),
        (c[0].0, c[1].0),
        "written = received per member: no reading written twice ({c:?})"
    );
}
