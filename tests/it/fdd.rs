//! Guideline 36 fault detection end to end: two VAV air handlers (the simulator's model: one healthy, one losing
//! duct static pressure) publish 100 minutes of history as JSON to a real mosquitto; `caretaker run` with the
//! shipped `rules/g36-ahu.yaml` and the generic-vav-ahu profile (points found by Brick role) writes the points to
//! a real InfluxDB 1.6.7 and must open the FC1 work order for the faulty unit, naming its operating state and
//! evidence, and nothing for the healthy one.

use crate::support::*;
use caretaker::demo::simulate::vav::{VavAhu, VavFaults};
use std::time::Duration;

const BASE_MS: i64 = 1_768_291_200_000; // 2026-01-13T08:00:00Z, a Tuesday

fn payload(a: &VavAhu, ts: i64) -> String {
    let keys = [
        ("sat", "supply_air_temp"),
        ("mat", "mixed_air_temp"),
        ("rat", "return_air_temp"),
        ("oat", "outdoor_air_temp"),
        ("sat_sp", "supply_air_setpoint"),
        ("dsp", "duct_static_pressure"),
        ("dsp_sp", "duct_static_setpoint"),
        ("fan", "supply_fan_speed"),
        ("hc", "heating_valve"),
        ("cc", "cooling_valve"),
        ("oad", "oa_damper"),
        ("oad_min", "oa_damper_min"),
        ("sa_flow", "supply_airflow"),
        ("oa_flow_min", "oa_flow_min_setpoint"),
    ];
    let mut s = format!("{{\"ts\": {ts}");
    for (k, name) in keys {
        s.push_str(&format!(", \"{k}\": {:.3}", a.value(name, 0.0).unwrap()));
    }
    s.push('}');
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g36_rules_open_fc1_for_the_unit_losing_static_pressure_and_nothing_for_the_healthy_one() {
    let mosq = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::copy(
        repo().join("rules/g36-ahu.yaml"),
        rules.join("g36-ahu.yaml"),
    )
    .unwrap();
    let state = dir.path().join("state");
    let http = free_port();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"[site]
name = "fdd test"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[rules]
dirs = ["rules"]
[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"
client_id = "caretaker-fdd-{http}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "bms/{{device}}/points"
profile = "generic-vav-ahu"
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
            state = state.display(),
            profiles = repo().join("device_profiles").display(),
            mqtt = mosq.port,
            influx = influx.url(),
        ),
    );
    let daemon = Daemon::start(&cfg, http);
    let publisher = Publisher::connect(mosq.port, "fdd-publisher");
    wait_receiving(&publisher, &daemon, "bms/probe/points", r#"{"sat": 1}"#).await;

    let (mut ok, mut bad) = (VavAhu::default(), VavAhu::default());
    let mut rng = fastrand::Rng::with_seed(5);
    let mut noise = move || rng.f64() * 2.0 - 1.0;
    const MINUTES: i64 = 100;
    for m in 0..MINUTES {
        // The duct leak starts 10 minutes in; 3 degC outside: the economizer state.
        let f = VavFaults {
            static_loss: m >= 10,
            ..Default::default()
        };
        ok.step(60.0, true, 1.0, 3.0, VavFaults::default(), &mut noise);
        bad.step(60.0, true, 1.0, 3.0, f, &mut noise);
        let ts = BASE_MS + m * 60_000;
        publisher
            .publish("bms/ahu-ok/points", payload(&ok, ts))
            .await;
        publisher
            .publish("bms/ahu-bad/points", payload(&bad, ts))
            .await;
    }
    // Every reading reached InfluxDB (through the spool and writer) ...
    let q = "SELECT count(duct_static_pressure) FROM hvac WHERE device = 'ahu-bad'";
    let stored = wait_until(Duration::from_secs(60), || async {
        let (_, rows) = influx.select("ct", q).await;
        rows.first().and_then(|r| r[1].as_u64()).unwrap_or(0) >= MINUTES as u64
    })
    .await;
    assert!(
        stored,
        "readings missing in InfluxDB:\n{}",
        daemon.log_text()
    );
    // ... and the rules judged them: FC1 for ahu-bad only.
    let list = || {
        let (code, out, _) = caretaker(&[
            "work-orders",
            "list",
            "--state",
            state.to_str().unwrap(),
            "--format",
            "json",
        ]);
        if code != 0 {
            return Vec::new();
        }
        serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap_or_default()
    };
    let opened = wait_until(Duration::from_secs(30), || async { !list().is_empty() }).await;
    assert!(opened, "no work order:\n{}", daemon.log_text());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let wos = list();
    assert_eq!(wos.len(), 1, "{wos:#?}");
    let w = &wos[0];
    assert_eq!(w["rule"], "g36-fc1-duct-static-low");
    assert_eq!(w["device"], "ahu-bad");
    let title = w["title"].as_str().unwrap();
    assert!(
        title.starts_with("G36 FC1 ahu-bad (economizer): duct static ")
            && title.contains("at fan 100 %"),
        "{title}"
    );
    let procedure = w["procedure"].as_str().unwrap();
    assert!(
        procedure.contains("Evidence (g36-fc1-duct-static-low): "),
        "{procedure}"
    );
    assert!(procedure.contains("state = economizer"), "{procedure}");
    // Opened 30 minutes (AlarmDelay) after the condition first held: the fan reaches full speed within minutes
    // of the leak at minute 10.
    let opened_at = w["opened_at"].as_str().unwrap();
    assert!(
        opened_at > "2026-01-13T08:40:00" && opened_at < "2026-01-13T09:00:00",
        "{opened_at}"
    );
}
