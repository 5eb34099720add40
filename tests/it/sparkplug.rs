//! Sparkplug B end to end: a real edge node written by others (npm `sparkplug-client` 3.2.4, Eclipse Tahu's JS
//! client, run by `tests/fixtures/sparkplug/edge_node.js`) publishes NBIRTH, DBIRTH and DDATA (by alias) to a
//! real mosquitto; `caretaker run` decodes them into a real influxd; a sequence gap makes Caretaker ask for a
//! rebirth (NCMD) and the node answers it; metrics the profile does not map are taken with their BIRTH datatype
//! and engineering unit; killing the node (its MQTT will is its NDEATH) takes the device offline
//! and the `offline` rule opens a work order.

use crate::support::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Installs the fixture's npm package once (node/npm from Debian's `nodejs`/`npm`; scripts/test.sh does it too).
fn fixture_dir() -> PathBuf {
    let dir = repo().join("tests/fixtures/sparkplug");
    if !dir.join("node_modules/sparkplug-client").exists() {
        let ok = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--fetch-retries=0"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .status()
            .expect("npm: run scripts/test.sh to install node and npm");
        assert!(ok.success(), "npm install of sparkplug-client failed");
    }
    dir
}

struct EdgeNode {
    child: Child,
    log: PathBuf,
}

impl EdgeNode {
    fn start(port: u16, dir: &std::path::Path) -> EdgeNode {
        let fixture = fixture_dir();
        let log = dir.join("edge_node.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("node")
            .arg(fixture.join("edge_node.js"))
            .args([&port.to_string(), "plant1", "edge1", "ahu1"])
            .current_dir(&fixture)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("node: run scripts/test.sh to install nodejs");
        EdgeNode { child, log }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn signal(&self, sig: &str) {
        assert!(
            Command::new("kill")
                .args([sig, &self.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    }
}

impl Drop for EdgeNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PROFILE: &str = r#"schema: 1
name: sparkplug-ahu
category: hvac
points:
  - { name: supply_temp, unit: degC, kind: gauge, mqtt: { json: "/Supply Temp" } }
  - { name: fan_running, unit: bool, kind: gauge, mqtt: { json: "/Fan Running" } }
  - { name: delta, unit: none, kind: gauge, mqtt: { json: "/Delta" } }
  - { name: online, unit: bool, kind: gauge, mqtt: { json: "/online" } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparkplug_edge_node_births_reports_by_alias_rebirths_and_dies() {
    let mosq = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("sparkplug-ahu.yaml"), PROFILE).unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("ahu.yaml"),
        r#"schema: 1
rules:
  - name: ahu-offline
    applies_to: { profile: sparkplug-ahu }
    when: { offline: true, for: 1s }
    severity: major
    work_order:
      title: "AHU {device} offline"
      team: hvac
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
client_id = "caretaker-sp-{http}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.sparkplug]]
group = "plant1"
profile = "sparkplug-ahu"
[influxdb]
url = "{influx}"
api = "v1"
database = "ct"
batch_size = 1000
flush_interval = "200ms"
max_retry_backoff = "1s"
[http]
listen = "127.0.0.1:{http}"
"#,
            state = dir.path().join("state").display(),
            profiles = profiles.display(),
            mqtt = mosq.port,
            influx = influx.url(),
        ),
    );
    let daemon = Daemon::start(&cfg, http);
    let node = EdgeNode::start(mosq.port, dir.path());
    let q = "SELECT last(supply_temp), last(fan_running), last(delta), last(online) FROM hvac WHERE device = 'edge1/ahu1'";
    // Values from the DBIRTH and from DDATA by alias (14.25 + tick % 4, never 14.25 for long; Delta -3 or -4).
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let row = loop {
        let (_, rows) = influx.select("ct", q).await;
        let row = rows.first().cloned().unwrap_or_default();
        if row.len() == 5 && row.iter().skip(1).all(|v| !v.is_null()) {
            break row;
        }
        assert!(
            std::time::Instant::now() < end,
            "no Sparkplug values in influxd: {row:?}\nnode:\n{}\ncaretaker:\n{}",
            node.log(),
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let temp = row[1].as_f64().unwrap();
    assert!(
        [14.25, 15.25, 16.25, 17.25].contains(&temp),
        "supply_temp {temp}"
    );
    assert_eq!(
        row[2],
        serde_json::json!(true),
        "fan_running from the DBIRTH (a bool field)"
    );
    let delta = row[3].as_f64().unwrap();
    assert!(delta == -3.0 || delta == -4.0, "delta {delta} (Int32 sign)");
    assert_eq!(row[4], serde_json::json!(true), "online after DBIRTH");
    // Metrics the profile does not map are taken as they come (issue 16): named from the metric, in the
    // canonical unit of their BIRTH engUnit (l/s → m3/h: 1.5 or 2.5 l/s → 5.4 or 9 m3/h; temperatures stay as
    // sent, like a profile's: 68 °F stays 68 degF), and
    // DDATA by alias reach them; the node's own Int64 `Uptime` makes the node a device with an `uptime` point.
    let q = "SELECT last(return_temp), max(not_in_profile) FROM hvac WHERE device = 'edge1/ahu1'";
    let ok = wait_until(Duration::from_secs(15), || async {
        let (_, rows) = influx.select("ct", q).await;
        rows.first()
            .and_then(|r| r.get(2))
            .and_then(|v| v.as_f64())
            .is_some_and(|v| (v - 9.0).abs() < 1e-9)
    })
    .await;
    let (_, rows) = influx.select("ct", q).await;
    assert!(
        ok,
        "unmapped metrics not taken with their units: {rows:?}\ncaretaker:\n{}",
        daemon.log_text()
    );
    assert_eq!(
        rows[0][1].as_f64(),
        Some(68.0),
        "Return Temp (°F, kept): {rows:?}"
    );
    let (_, rows) = influx
        .select("ct", "SELECT last(uptime) FROM hvac WHERE device = 'edge1'")
        .await;
    assert!(
        rows.first()
            .and_then(|r| r.get(1))
            .is_some_and(|v| v.is_number()),
        "node metric Uptime not taken: {rows:?}"
    );
    // DDATA carry aliases only: values other than the BIRTH's prove alias resolution.
    let ok = wait_until(Duration::from_secs(10), || async {
        let (_, rows) = influx
            .select(
                "ct",
                "SELECT count(supply_temp) FROM hvac WHERE device = 'edge1/ahu1' AND supply_temp > 14.5",
            )
            .await;
        rows.first()
            .and_then(|r| r.get(1))
            .and_then(|v| v.as_f64())
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(ok, "no DDATA value decoded by alias");
    // A lost message (sequence gap): Caretaker asks for a rebirth and the node answers it.
    let rebirths = node.log().matches("REBIRTH").count();
    node.signal("-USR1");
    let ok = wait_until(Duration::from_secs(15), || async {
        node.log().matches("REBIRTH").count() > rebirths
    })
    .await;
    assert!(
        ok,
        "no rebirth after a sequence gap\nnode:\n{}\ncaretaker:\n{}",
        node.log(),
        daemon.log_text()
    );
    // Killed: mosquitto publishes the node's will (NDEATH); the device goes offline.
    node.signal("-KILL");
    let ok = wait_until(Duration::from_secs(20), || async {
        let (_, rows) = influx
            .select(
                "ct",
                "SELECT last(online) FROM hvac WHERE device = 'edge1/ahu1'",
            )
            .await;
        rows.first().and_then(|r| r.get(1)) == Some(&serde_json::json!(false))
    })
    .await;
    assert!(
        ok,
        "device not offline after the node died: {:?}\ncaretaker:\n{}",
        influx
            .select("ct", "SELECT online FROM hvac WHERE device = 'edge1/ahu1'")
            .await,
        daemon.log_text()
    );
    // The same offline rule as a Modbus meter's opens a work order for the Sparkplug device.
    let q = "SELECT * FROM work_orders WHERE \"event\" = 'opened' AND rule = 'ahu-offline'";
    let ok = wait_until(Duration::from_secs(20), || async {
        let (cols, rows) = influx.select("ct", q).await;
        let dev = cols.iter().position(|c| c == "device");
        rows.iter()
            .any(|r| dev.and_then(|i| r.get(i)) == Some(&serde_json::json!("edge1/ahu1")))
    })
    .await;
    assert!(
        ok,
        "no offline work order: {:?}\ncaretaker:\n{}",
        influx.select("ct", "SELECT * FROM work_orders").await,
        daemon.log_text()
    );
    drop(node);
}
