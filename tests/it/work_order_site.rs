//! The site the work-order target tests share (alertmanager.rs, email.rs, atlas.rs, silences.rs): one rule,
//! `room-too-hot` on `generic-room-sensor` rooms (above 30 °C for a while, clear below 25, severity major), a
//! site config with real mosquitto, `[http]` and the MQTT subscription, and the breach that opens its work order:
//! two readings over 30 a couple of seconds apart. Each test adds only what differs: the rest of its rule (labels,
//! annotations, work order), its config sections (targets, devices, silences, InfluxDB) and what it asserts.

use crate::support::*;
use std::path::PathBuf;

/// Unix time in ms now (the breach's readings carry it as `ts`).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A temp dir with the rule written and a free HTTP port; files the config refers to (keys, certificates) go in
/// `dir` before [`WorkOrderSite::start`].
pub struct WorkOrderSite {
    pub dir: tempfile::TempDir,
    pub http: u16,
    pub state: PathBuf,
    mqtt: u16,
    name: &'static str,
}

/// The running daemon and a publisher that saw it receive (its subscription exists).
pub struct Running {
    pub daemon: Daemon,
    pub publisher: Publisher,
}

impl WorkOrderSite {
    /// `name` makes the MQTT client ids unique; `for_` is the rule's `when.for`; `rule_rest` the rule's lines
    /// after `severity` (indented four spaces: `labels`, `annotations`, `work_order`).
    pub fn new(mosq: &Mosquitto, name: &'static str, for_: &str, rule_rest: &str) -> WorkOrderSite {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(
            rules.join("room.yaml"),
            format!(
                r#"schema: 1
rules:
  - name: room-too-hot
    applies_to: {{ profile: generic-room-sensor }}
    point: temperature
    unit: degC
    when: {{ above: 30, for: {for_} }}
    clear: {{ below: 25 }}
    severity: major
{rule_rest}"#
            ),
        )
        .unwrap();
        let state = dir.path().join("state");
        WorkOrderSite {
            dir,
            http: free_port(),
            state,
            mqtt: mosq.port,
            name,
        }
    }

    /// The site config: the shared sections, then `extra` (TOML sections after `[http]`).
    pub fn config(&self, extra: &str) -> PathBuf {
        write_config(
            self.dir.path(),
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
client_id = "caretaker-{name}-{http}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[http]
listen = "127.0.0.1:{http}"
{extra}"#,
                state = self.state.display(),
                profiles = repo().join("device_profiles").display(),
                mqtt = self.mqtt,
                name = self.name,
                http = self.http,
            ),
        )
    }

    /// Writes the config, starts `caretaker run` and a publisher, and waits until the daemon receives.
    pub async fn start(&self, extra: &str) -> Running {
        let daemon = Daemon::start(&self.config(extra), self.http);
        let publisher = Publisher::connect(self.mqtt, &format!("{}-publisher", self.name));
        wait_receiving(
            &publisher,
            &daemon,
            "campus/probe/probe/telemetry",
            r#"{"temperature": 1}"#,
        )
        .await;
        Running { daemon, publisher }
    }
}

impl Running {
    /// The breach: 31 then 32 °C in `device`'s room, `gap_ms` apart in reading time (past the rule's `for`).
    pub async fn breach(&self, device: &str, gap_ms: i64) {
        let t0 = now_ms();
        for (t, v) in [(0, 31.0), (gap_ms, 32.0)] {
            self.publish(device, t0 + t, v).await;
        }
    }

    /// The clear: 20 °C in `device`'s room now.
    pub async fn clear(&self, device: &str) {
        self.publish(device, now_ms(), 20.0).await;
    }

    async fn publish(&self, device: &str, ts: i64, v: f64) {
        self.publisher
            .publish(
                &format!("campus/b1/{device}/telemetry"),
                format!(r#"{{"ts": {ts}, "temperature": {v}}}"#),
            )
            .await;
    }
}
