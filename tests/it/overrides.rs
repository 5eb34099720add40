//! Per-device overrides in the site config, through real mosquitto, influxd and `caretaker run`: a point's
//! `scale` (a CT ratio) multiplies what is stored, a disabled point is never stored; `caretaker check` names
//! the key of an override that refers to a point the device's profile does not have.

use crate::support::*;
use std::time::Duration;

fn site(
    dir: &std::path::Path,
    mqtt: u16,
    influx: &str,
    http: u16,
    device_extra: &str,
) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            r#"[site]
name = "test campus"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"
client_id = "caretaker-overrides-{http}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[influxdb]
url = "{influx}"
api = "v1"
database = "ct"
[http]
listen = "127.0.0.1:{http}"
[[devices]]
id = "room-1"
profile = "generic-room-sensor"
location = {{ building = "b1" }}
asset_id = "AHU-0042"
{device_extra}
"#,
            state = dir.join("state").display(),
            profiles = repo().join("device_profiles").display(),
        ),
    )
}

#[test]
fn check_names_the_key_of_an_override_for_a_point_the_profile_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = site(
        dir.path(),
        1,
        "http://127.0.0.1:1",
        free_port(),
        "scale = { temprature = 2.0, humidity = 0.0 }\ndisabled_points = [\"co2\", \"pm25\"]",
    );
    let (code, out, err) = caretaker(&["check", "--config", cfg.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    let text = format!("{out}{err}");
    for want in [
        "devices[0].scale.temprature",
        "no point `temprature` (did you mean `temperature`?)",
        "devices[0].scale.humidity",
        "devices[0].disabled_points[1]",
        "no point `pm25`",
    ] {
        assert!(text.contains(want), "`{want}` missing:\n{text}");
    }
    assert!(!text.contains("disabled_points[0]"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaled_point_is_stored_scaled_and_a_disabled_point_is_not_stored() {
    let mosq = Mosquitto::start();
    let influx = Influxd::start();
    influx.create_db("ct").await;
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let cfg = site(
        dir.path(),
        mosq.port,
        &influx.url(),
        http,
        "scale = { temperature = 2.0 }\ndisabled_points = [\"co2\"]",
    );
    let (code, out, err) = caretaker(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let daemon = Daemon::start(&cfg, http);
    let publisher = Publisher::connect(mosq.port, "overrides-publisher");
    wait_receiving(
        &publisher,
        &daemon,
        "campus/b1/room-1/telemetry",
        r#"{"temperature": 10.5, "humidity": 40, "co2": 600}"#,
    )
    .await;
    let q = "SELECT * FROM /.*/ WHERE device = 'room-1'";
    assert!(
        wait_until(Duration::from_secs(30), || async {
            !influx.select("ct", q).await.1.is_empty()
        })
        .await,
        "nothing stored:\n{}",
        daemon.log_text()
    );
    let (cols, rows) = influx.select("ct", q).await;
    let col = |n: &str| cols.iter().position(|c| c == n);
    let t = col("temperature").expect("temperature stored");
    assert_eq!(rows[0][t].as_f64(), Some(21.0), "{cols:?} {rows:?}");
    let h = col("humidity").expect("humidity stored");
    assert_eq!(rows[0][h].as_f64(), Some(40.0), "{cols:?} {rows:?}");
    // co2 is disabled: never a value (the column is absent, or empty in every row).
    if let Some(c) = col("co2") {
        assert!(rows.iter().all(|r| r[c].is_null()), "{cols:?} {rows:?}");
    }
}
