//! Every profile fixture (tests/fixtures/profiles/*.json: captured payloads and register dumps from the sources
//! each profile names) through the real daemon and real servers: register dumps served by pymodbus, payloads
//! published through mosquitto, and the stored values read back from influxd. One device per fixture case.

use crate::modbus::ModbusServer;
use crate::support::*;
use caretaker::catalog::profile::load_dirs;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

struct Case {
    profile: String,
    category: String,
    device: String,
    expect: BTreeMap<String, f64>,
    problems: Vec<String>,
    /// MQTT: (topic suffix, payload); Modbus: the unit id serving the dump.
    mqtt: Option<(String, Vec<u8>)>,
    unit: Option<u8>,
}

fn fixtures() -> (Vec<Case>, Value) {
    let (profiles, errs) = load_dirs(&[repo().join("device_profiles")]);
    assert!(errs.is_empty(), "{errs:?}");
    let mut cases = Vec::new();
    let mut units = serde_json::Map::new();
    let mut next_unit = 1u8;
    for (name, p) in &profiles {
        let path = repo().join(format!("tests/fixtures/profiles/{name}.json"));
        let fx: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (i, c) in fx["cases"].as_array().unwrap().iter().enumerate() {
            // BACnet fixtures (present values by object) are replayed by the unit test in cli/profiles.rs; BACnet
            // end to end through a real stack is tests/it/bacnet.rs.
            if c.get("bacnet").is_some() {
                continue;
            }
            let expect = c["expect"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
                .collect();
            let problems = c
                .get("problems")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            let mut case = Case {
                profile: name.clone(),
                category: p.category.as_str().to_string(),
                device: format!("{name}-{i}"),
                expect,
                problems,
                mqtt: None,
                unit: None,
            };
            if let Some(payload) = c.get("mqtt") {
                let topic = c["topic"].as_str().unwrap_or("state").replace('/', "_");
                case.mqtt = Some((topic, payload.to_string().into_bytes()));
            }
            if let Some(regs) = c.get("registers") {
                // The dump's words, served as they are ("raw"): pymodbus does not encode anything here.
                let mut values = Vec::new();
                for (table, blocks) in regs.as_object().unwrap() {
                    let t = match table.as_str() {
                        "input" => "ir",
                        "holding" => "hr",
                        "discrete" => "di",
                        "coil" => "co",
                        other => panic!("table {other}"),
                    };
                    for (start, words) in blocks.as_object().unwrap() {
                        let start: u64 = start.parse().unwrap();
                        if t == "di" || t == "co" {
                            values.push(json!({"table": t, "address": start, "value": words[0]}));
                        } else {
                            values.push(json!({"table": t, "address": start, "type": "raw", "value": words}));
                        }
                    }
                }
                units.insert(next_unit.to_string(), json!({"values": values}));
                case.unit = Some(next_unit);
                next_unit += 1;
            }
            cases.push(case);
        }
    }
    (cases, Value::Object(units))
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-5 * want.abs().max(1.0)
}

/// The issue's checks (EM24 on RS-485, multi-channel Tasmota, Shelly events/rpc and Pro 3EM counters, one unit
/// per quantity, the Itron alarm value) for every shipped profile at once, end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_profile_fixture_through_the_daemon_into_influxdb() {
    let (cases, units) = fixtures();
    assert!(cases.iter().any(|c| c.unit.is_some()) && cases.iter().any(|c| c.mqtt.is_some()));
    let meter = ModbusServer::tcp(units);
    let broker = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("caretaker").await;
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let mut cfg = format!(
        r#"[site]
name = "fixtures"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[mqtt]
url = "{mqtt}"
client_id = "caretaker-fixtures-{http_port}"
[[mqtt.subscriptions]]
topic = "probe/{{device}}"
profile = "generic-room-sensor"
[influxdb]
url = "{influx}"
api = "v1"
database = "caretaker"
flush_interval = "100ms"
[http]
listen = "127.0.0.1:{http_port}"
"#,
        state = dir.path().join("state").display(),
        profiles = repo().join("device_profiles").display(),
        mqtt = broker.url(),
        influx = influx.url(),
    );
    let mqtt_profiles: std::collections::BTreeSet<&str> = cases
        .iter()
        .filter(|c| c.mqtt.is_some())
        .map(|c| c.profile.as_str())
        .collect();
    for p in &mqtt_profiles {
        let _ = write!(
            cfg,
            "[[mqtt.subscriptions]]\ntopic = \"fx/{p}/{{device}}/{{channel}}\"\nprofile = \"{p}\"\n"
        );
    }
    for c in cases.iter().filter(|c| c.unit.is_some()) {
        let _ = write!(
            cfg,
            "[[devices]]\nid = \"{}\"\nprofile = \"{}\"\nmodbus = {{ url = \"{}\", unit = {}, poll = \"500ms\", timeout = \"2s\" }}\n",
            c.device,
            c.profile,
            meter.url(),
            c.unit.unwrap()
        );
    }
    let cfg = write_config(dir.path(), &cfg);
    let daemon = Daemon::start(&cfg, http_port);
    let publisher = Publisher::connect(broker.port, &format!("fixtures-pub-{http_port}"));
    wait_receiving(&publisher, &daemon, "probe/p", r#"{"temperature": 1}"#).await;
    for c in &cases {
        if let Some((topic, payload)) = &c.mqtt {
            publisher
                .publish(
                    &format!("fx/{}/{}/{topic}", c.profile, c.device),
                    payload.clone(),
                )
                .await;
        }
    }

    // Poll until every expected field is stored (or time is up), then compare.
    let end = Instant::now() + Duration::from_secs(60);
    let mut failures;
    loop {
        failures = Vec::new();
        for c in &cases {
            let (cols, rows) = influx
                .select(
                    "caretaker",
                    &format!(
                        "SELECT last(*) FROM \"{}\" WHERE device = '{}'",
                        c.category, c.device
                    ),
                )
                .await;
            let row = rows.first().cloned().unwrap_or_default();
            let field = |name: &str| {
                cols.iter()
                    .position(|col| col == &format!("last_{name}"))
                    .and_then(|i| row.get(i))
                    .and_then(|v| match v {
                        Value::Bool(b) => Some(f64::from(u8::from(*b))),
                        other => other.as_f64(),
                    })
            };
            for (k, want) in &c.expect {
                match field(k) {
                    Some(got) if close(got, *want) => {}
                    Some(got) => {
                        failures.push(format!("{}: {k} = {got}, expected {want}", c.device))
                    }
                    None => {
                        failures.push(format!("{}: {k} not stored (expected {want})", c.device))
                    }
                }
            }
            for k in &c.problems {
                if let Some(got) = field(k) {
                    failures.push(format!(
                        "{}: {k} = {got} stored, but it is a bad value",
                        c.device
                    ));
                }
            }
        }
        if failures.is_empty() || Instant::now() > end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.join("\n"),
        daemon.log_text()
    );
    // Shelly's events/rpc notifications about other components are skipped, not counted as malformed.
    assert_eq!(
        daemon
            .metric(r#"caretaker_readings_dropped_total{stage="mqtt",reason="malformed_payload"}"#)
            .await,
        0.0
    );
    // Ids are all good: the modbus devices answered.
    assert!(
        daemon
            .metric(r#"caretaker_modbus_requests_total{device="carlo-gavazzi-em24-rs485-0"}"#)
            .await
            > 0.0
    );
}
