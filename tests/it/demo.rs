//! `caretaker demo` and `caretaker simulate`, run as the built binary against real servers: the demo's readings
//! flow from the simulated devices through its embedded broker (and, for the BACnet AHU, over BACnet/IP) into the
//! daemon and a real InfluxDB 1.x; the simulator publishes to a real mosquitto, answers Modbus TCP on the port its
//! site file names, and answers `caretaker bacnet discover` on its BACnet device's UDP port.

use crate::support::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let end = Instant::now() + timeout;
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        code,
        std::fs::read_to_string(out).unwrap_or_default(),
        std::fs::read_to_string(err).unwrap_or_default(),
    )
}

/// "from X of Y devices" in the demo's report.
fn devices_reporting(out: &str) -> (usize, usize) {
    let line = out
        .lines()
        .find(|l| l.starts_with("Readings: "))
        .unwrap_or_else(|| panic!("no Readings line:\n{out}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "from").unwrap();
    (words[i + 1].parse().unwrap(), words[i + 3].parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_runs_accelerated_and_its_readings_reach_influxdb_in_simulated_time() {
    let influx = Influxd::start();
    influx.create_db("caretaker").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // While it runs: the daemon's /metrics (the console's port, the operator token from the state dir) counts
    // COV notifications from the simulated BACnet AHU, so they arrive besides the polls.
    let scrape_state = state.clone();
    let cov_scrape = tokio::spawn(async move {
        let client = http_client();
        let mut last = String::new();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(token) = std::fs::read_to_string(scrape_state.join("console.token")) else {
                continue;
            };
            let Ok(config) = std::fs::read_to_string(scrape_state.join("caretaker-demo.toml"))
            else {
                continue;
            };
            let Some(listen) = config
                .lines()
                .find_map(|l| l.strip_prefix("listen = \""))
                .and_then(|l| l.strip_suffix('"'))
            else {
                continue;
            };
            let Ok(r) = client
                .get(format!("http://{listen}/metrics"))
                .bearer_auth(token.trim())
                .send()
                .await
            else {
                continue;
            };
            last = r.text().await.unwrap_or_default();
            let cov = last
                .lines()
                .filter(|l| {
                    l.starts_with("caretaker_bacnet_cov_notifications_total")
                        && l.contains("ahu-bacnet-1")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
            if cov >= 5.0 {
                // The API (the console's devices page) lists it as a BACnet device.
                let devices: serde_json::Value = match client
                    .get(format!("http://{listen}/api/v1/devices"))
                    .bearer_auth(token.trim())
                    .send()
                    .await
                {
                    Ok(r) => serde_json::from_str(&r.text().await.unwrap_or_default())
                        .unwrap_or_default(),
                    Err(_) => continue,
                };
                let protocol = devices["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|d| d["id"] == "ahu-bacnet-1")
                    .map(|d| d["protocol"].as_str().unwrap_or_default().to_string());
                return (cov, protocol, last);
            }
        }
        (0.0, None, last)
    });
    let (code, out, err) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_caretaker"))
            .args(["demo", "--for", "12s", "--speed", "600", "--state"])
            .arg(&state)
            .current_dir(repo())
            // The demo writes to InfluxDB only when one is configured: here through the environment.
            .env("CARETAKER_INFLUXDB__URL", influx.url())
            .env("CARETAKER_INFLUXDB__API", "v1")
            .env("CARETAKER_INFLUXDB__DATABASE", "caretaker")
            .env("CARETAKER_INFLUXDB__FLUSH_INTERVAL", "200ms"),
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("1 BACnet/IP)"), "{out}");
    let (cov, protocol, metrics) = cov_scrape.await.unwrap();
    assert!(
        cov >= 5.0,
        "no COV notifications from the BACnet AHU counted:\n{metrics}"
    );
    assert_eq!(protocol.as_deref(), Some("bacnet"));
    assert!(out.contains("Demo finished after"), "{out}");
    let readings: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Readings: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(readings > 1000, "{out}");
    let (seen, total) = devices_reporting(&out);
    assert!(total >= 11 && seen == total, "{out}");
    // 12 s at 600x is two simulated hours past 00:30: the leak and the stuck sensor (01:00) have begun.
    assert!(
        out.contains("fault starts: leak-basement-1 (water leak)"),
        "{out}"
    );
    assert!(
        out.contains("room-1-03        stuck temperature sensor"),
        "{out}"
    );
    assert!(!err.contains("ERROR"), "{err}");

    // In InfluxDB, in simulated time (Monday 2026-01-12 from 00:30 Berlin = 23:30 UTC the day before), with the
    // faults visible.
    let wait = wait_until(Duration::from_secs(10), || async {
        influx
            .count("caretaker", "environment", "temperature")
            .await
            > 100
    })
    .await;
    assert!(wait, "no room temperatures in InfluxDB");
    let all = influx.count("caretaker", "water", "water_leak").await;
    let (_, rows) = influx
        .select(
            "caretaker",
            "SELECT count(\"water_leak\") FROM \"water\" WHERE time >= '2026-01-11T23:30:00Z' AND time < '2026-01-12T12:00:00Z'",
        )
        .await;
    assert_eq!(
        rows[0][1].as_u64().unwrap(),
        all,
        "readings outside the simulated window"
    );
    // Booleans are stored as InfluxDB booleans.
    let leak_reports = |dev: &'static str| {
        let influx = &influx;
        async move {
            let (_, rows) = influx
                .select(
                    "caretaker",
                    &format!("SELECT count(\"water_leak\") FROM \"water\" WHERE device = '{dev}' AND \"water_leak\" = true"),
                )
                .await;
            rows.first().and_then(|r| r[1].as_u64()).unwrap_or(0)
        }
    };
    assert!(leak_reports("leak-basement-1").await > 0);
    assert_eq!(
        leak_reports("leak-kitchen-1").await,
        0,
        "a dry sensor reported a leak"
    );
    // The stuck sensor repeats one value after 01:00 Berlin (00:00 UTC); its neighbour's values move.
    let distinct = |dev: &'static str| {
        let influx = &influx;
        async move {
            let (_, rows) = influx
                .select(
                    "caretaker",
                    &format!("SELECT \"temperature\" FROM \"environment\" WHERE device = '{dev}' AND time > '2026-01-12T00:01:00Z'"),
                )
                .await;
            let mut v: Vec<String> = rows.iter().map(|r| r[1].to_string()).collect();
            let n = v.len();
            v.sort();
            v.dedup();
            (n, v.len())
        }
    };
    let (n, d) = distinct("room-1-03").await;
    assert!(
        n > 10 && d == 1,
        "stuck sensor: {n} readings, {d} distinct values"
    );
    let (n, d) = distinct("room-1-01").await;
    assert!(
        n > 10 && d > n / 2,
        "healthy sensor: {n} readings, {d} distinct values"
    );

    // The BACnet AHU's readings, read over BACnet/IP by the daemon: mixed air in degF as the profile says (the
    // model's 10-25 degC at night), the unit off at night (binary-input inactive = false), the filter clean
    // (multi-state 1), in simulated time.
    let (_, rows) = influx
        .select(
            "caretaker",
            "SELECT \"mixed_air_temp\", \"unit_on\", \"primary_filter_status\" FROM \"hvac\" WHERE device = 'ahu-bacnet-1' AND time >= '2026-01-11T23:30:00Z' AND time < '2026-01-12T12:00:00Z'",
        )
        .await;
    let full: Vec<_> = rows
        .iter()
        .filter(|r| r[1].is_number() && r[2].is_boolean() && r[3].is_number())
        .collect();
    assert!(full.len() > 10, "BACnet AHU rows in InfluxDB: {rows:?}");
    for r in &full {
        let mixed = r[1].as_f64().unwrap();
        assert!((50.0..77.0).contains(&mixed), "{r:?}");
        assert_eq!(r[2].as_bool(), Some(false), "{r:?}");
        assert_eq!(r[3].as_f64(), Some(1.0), "{r:?}");
    }

    // The generated config is a valid site config.
    let check = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(["check", "--config"])
        .arg(state.join("caretaker-demo.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

const TEST_METER: &str = r#"schema: 1
name: test-meter
category: electricity
points:
  - { name: voltage_l1, unit: V, kind: gauge, modbus: { table: input, address: 0, type: f32 } }
  - { name: energy_total, unit: kWh, kind: counter, scale: 0.01, modbus: { table: holding, address: 100, type: u32, order: CDAB } }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn simulate_publishes_per_profile_to_a_real_broker_and_serves_modbus_on_its_port() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir(&profiles).unwrap();
    std::fs::copy(
        repo().join("device_profiles/generic-room-sensor.yaml"),
        profiles.join("generic-room-sensor.yaml"),
    )
    .unwrap();
    std::fs::write(profiles.join("test-meter.yaml"), TEST_METER).unwrap();
    std::fs::copy(
        repo().join("device_profiles/generic-bacnet-ahu.yaml"),
        profiles.join("generic-bacnet-ahu.yaml"),
    )
    .unwrap();
    let port = free_port();
    // A TCP port the OS just had free: its UDP twin is almost surely free too (the BACnet device's).
    let bport = free_port();
    let site = dir.path().join("site.toml");
    std::fs::write(
        &site,
        format!(
            r#"[simulation]
start = "2026-01-13T10:00:00"
speed = 60
[mqtt]
url = "mqtt://127.0.0.1:1"
interval = "10s"
[profiles]
dirs = ["profiles"]
[[devices]]
id = "r1"
model = "room"
profile = "generic-room-sensor"
topic = "campus/b/1/r1/telemetry"
[[devices]]
id = "m1"
model = "meter"
profile = "test-meter"
modbus = {{ port = {port}, unit = 1 }}
[[devices]]
id = "m2"
model = "meter"
profile = "test-meter"
modbus = {{ port = {port}, unit = 2 }}
faults = [{{ kind = "offline" }}]
[[devices]]
id = "b1"
model = "ahu"
profile = "generic-bacnet-ahu"
bacnet = {{ port = {bport}, device_instance = 3001 }}
"#
        ),
    )
    .unwrap();

    // A subscriber on the real broker.
    let mut o = rumqttc::MqttOptions::new("sim-test-sub", "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 100);
    client
        .subscribe("campus/#", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let g = got.clone();
    let sub = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    g.lock()
                        .unwrap()
                        .push((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut child = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(["simulate", "--site"])
        .arg(&site)
        // --mqtt overrides the site's (unreachable) broker.
        .args(["--mqtt", &broker.url(), "--for", "20s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("sim.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(dir.path().join("sim.log")).unwrap_or_default();

    let ok = wait_until(Duration::from_secs(10), || async {
        got.lock().unwrap().len() >= 3
    })
    .await;
    assert!(ok, "no MQTT messages from the simulator:\n{}", log());
    {
        let msgs = got.lock().unwrap();
        let (topic, payload) = &msgs[0];
        assert_eq!(topic, "campus/b/1/r1/telemetry");
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        // Simulated time, Tuesday 10:00 Berlin: in office hours, the room is warm and CO2 is up.
        let ts = v["ts"].as_i64().unwrap();
        assert!(
            (1_768_294_800_000..1_768_294_800_000 + 3_600_000).contains(&ts),
            "{v}"
        );
        assert!(v["temperature"].as_f64().unwrap() > 18.0, "{v}");
        assert!(v["co2"].as_f64().unwrap() > 450.0, "{v}");
    }

    // Modbus TCP on the site's port: unit 1 answers with a plausible voltage and counter; unit 2 is offline.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    use tokio_modbus::prelude::*;
    let mut ctx = None;
    for _ in 0..50 {
        if let Ok(c) = tokio_modbus::client::tcp::connect_slave(addr, Slave(1)).await {
            ctx = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ctx = ctx.unwrap_or_else(|| panic!("no Modbus server on {addr}:\n{}", log()));
    let v = ctx.read_input_registers(0, 2).await.unwrap().unwrap();
    let volts = f32::from_bits(((v[0] as u32) << 16) | v[1] as u32);
    assert!((220.0..240.0).contains(&volts), "{volts}");
    let e = ctx.read_holding_registers(100, 2).await.unwrap().unwrap();
    let kwh = (((e[1] as u32) << 16) | e[0] as u32) as f64 * 0.01;
    assert!(kwh > 500.0, "{kwh}");
    ctx.set_slave(Slave(2));
    let r = tokio::time::timeout(Duration::from_millis(500), ctx.read_input_registers(0, 2)).await;
    assert!(r.is_err(), "the offline meter answered: {r:?}");

    // BACnet/IP on the site's UDP port: `caretaker bacnet discover` finds the device (Who-Is/I-Am) and lists
    // its objects with names and units, as a facilities engineer would meet it.
    let disc = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args([
            "bacnet",
            "discover",
            "--bind",
            "127.0.0.1:0",
            "--wait",
            "1s",
            "--json",
        ])
        .args(["--target", &format!("127.0.0.1:{bport}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&disc.stdout);
    assert!(
        disc.status.success(),
        "{text}\n{}\n{}",
        String::from_utf8_lossy(&disc.stderr),
        log()
    );
    let found: serde_json::Value = serde_json::from_str(&text).unwrap();
    let d = &found[0];
    assert_eq!(d["device_instance"], 3001, "{text}");
    assert_eq!(d["name"], "b1", "{text}");
    assert_eq!(d["max_apdu"], 1476, "{text}");
    assert_eq!(d["objects"].as_array().unwrap().len(), 19, "{text}");
    let mixed = d["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["object"] == "analog-input:25")
        .unwrap();
    assert_eq!(mixed["name"], "mixed_air_temp", "{text}");
    assert_eq!(mixed["units"][1], "degF", "{text}");
    // Tuesday 10:00: the AHU runs; mixed air of a 20 % outdoor-air mix in January, in degF.
    let f = mixed["present_value"].as_f64().unwrap();
    assert!((50.0..75.0).contains(&f), "{text}");

    let _ = child.kill();
    let _ = child.wait();
    sub.abort();
}

#[test]
fn a_bad_site_file_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site.toml");
    std::fs::write(
        &site,
        "[simulation]\nspeed = 60\n\n[[devices]]\nid = \"x\"\nmodel = \"roon\"\nprofile = \"generic-room-sensor\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(["simulate", "--site"])
        .arg(&site)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("site.toml:6: devices[0].model: unknown model `roon` (did you mean `room`?)"),
        "{err}"
    );
    assert!(err.contains("devices[0].id"), "{err}");
}

/// After merging rules (issue 5): the demo raises the work order each scripted fault should, and no others.
#[test]
fn the_demo_raises_one_work_order_per_scripted_fault_and_no_others() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (code, out, err) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_caretaker"))
            .args(["demo", "--for", "80s", "--state"])
            .arg(&state)
            .current_dir(repo()),
        Duration::from_secs(150),
    );
    assert_eq!(code, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let list = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(["work-orders", "list", "--format", "json", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    let wos: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    let mut got: Vec<(String, String)> = wos
        .iter()
        .map(|w| {
            (
                w["rule"].as_str().unwrap().to_string(),
                w["device"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = [
        ("ahu-fan-short-cycling", "ahu-2"),
        ("ahu-filter-clogged", "ahu-1"),
        // the VAV air handler's duct static pressure loss, caught by Guideline 36 FC1 (rules/g36-ahu.yaml)
        ("g36-fc1-duct-static-low", "ahu-3"),
        ("meter-offline", "meter-sub-2"),
        // the BACnet/IP AHU's filter switch, read over BACnet (rules/hvac.yaml)
        ("ahu-filter-status-dirty", "ahu-bacnet-1"),
        ("room-temperature-flatline", "room-1-03"),
        ("water-leak-detected", "leak-basement-1"),
        ("water-night-flow", "water-main"),
    ]
    .iter()
    .map(|(r, d)| (r.to_string(), d.to_string()))
    .collect();
    want.sort();
    assert_eq!(got, want, "{out}");
    assert!(!out.contains("false positive"), "{out}");
}
