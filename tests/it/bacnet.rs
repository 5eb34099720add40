//! BACnet/IP against a BACnet stack nobody here wrote: bacpypes3 (PyPI, pinned in tests/fixtures/requirements.txt)
//! serving simulated devices on free loopback UDP ports (`tests/fixtures/bacnet_device.py`). The pollers run
//! in-process where a test looks at every batch (quality, COV, ReadProperty fallback); the end-to-end test runs
//! the real daemon into a real influxd; discovery runs the real `caretaker bacnet discover`.

use crate::support::{self, Daemon, Influxd, free_port, write_config};
use caretaker::catalog::{Profile, profile};
use caretaker::pipeline::Batch;
use caretaker::reading::Quality;
use caretaker::sources::bacnet::{DevicePoll, Poller, client, config};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A free UDP port on 127.0.0.1.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A bacpypes3 device process.
struct Device {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Device {
    fn start(name: &str, instance: u32, objects: Value, extra: &[&str]) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let objects_file = dir.path().join("objects.json");
        std::fs::write(&objects_file, objects.to_string()).unwrap();
        let out = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let err = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(support::venv_python())
            .arg(support::repo().join("tests/fixtures/bacnet_device.py"))
            .args(["--name", name, "--instance", &instance.to_string()])
            .args(["--address", &format!("127.0.0.1/32:{port}")])
            .arg("--objects")
            .arg(&objects_file)
            .arg("--control")
            .arg(dir.path().join("control.txt"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the test venv's python with bacpypes3: run scripts/test.sh --deps-only");
        let d = Device {
            child: Some(child),
            port,
            dir,
        };
        let end = Instant::now() + Duration::from_secs(20);
        while !d.read("stdout.log").contains("ready") {
            assert!(
                Instant::now() < end,
                "bacpypes3 device did not start:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn read(&self, f: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default()
    }
    fn log(&self) -> String {
        format!("{}{}", self.read("stdout.log"), self.read("stderr.log"))
    }
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Changes a property in the running device (`analog-input:1 presentValue 30`).
    fn set(&self, line: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("control.txt"))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ahu_objects() -> Value {
    json!([
        {"type": "analog-input", "instance": 1, "name": "Supply Air Temp", "value": 21.5, "units": "degreesCelsius"},
        {"type": "analog-input", "instance": 2, "name": "Return Air Temp", "value": 19.25, "units": "degreesCelsius"},
        {"type": "analog-output", "instance": 3, "name": "Cooling Valve", "value": 40.0, "units": "percent"},
        {"type": "binary-output", "instance": 4, "name": "Supply Fan Cmd", "value": 1},
        {"type": "multi-state-value", "instance": 5, "name": "Occupancy Mode", "value": 2, "states": 4},
    ])
}

const PROFILE: &str = r#"schema: 1
name: test-bacnet-ahu
category: hvac
sources: ["tests/it/bacnet.rs"]
points:
  - { name: supply_temp, unit: degC, kind: gauge, bacnet: { object: "analog-input:1" } }
  - { name: return_temp, unit: degC, kind: gauge, bacnet: { object: "analog-input:2", property: present-value } }
  - { name: cooling_valve, unit: percent, kind: gauge, bacnet: { object: "analog-output:3" } }
  - { name: fan_cmd, unit: bool, kind: gauge, bacnet: { object: "binary-output:4" } }
  - { name: mode, unit: none, kind: gauge, bacnet: { object: "multi-state-value:5" } }
  - { name: missing, unit: degC, kind: gauge, bacnet: { object: "analog-input:99" } }
"#;

fn parse(yaml: &str) -> Arc<Profile> {
    Arc::new(
        profile::parse_profile(&PathBuf::from("/t/test-bacnet-ahu.yaml"), yaml)
            .unwrap_or_else(|e| panic!("{e:?}")),
    )
}

/// A poller on its own endpoint, in-process: its batches come out of the returned receiver.
async fn poller(
    dev: &Device,
    instance: u32,
    profile: Arc<Profile>,
    poll: &str,
    cov: bool,
) -> (
    mpsc::Receiver<Batch>,
    Arc<caretaker::sources::bacnet::poll::PollStats>,
    CancellationToken,
) {
    let raw: config::RawBacnetDevice = toml::from_str(&format!(
        "address = \"{}\"\ndevice_instance = {instance}\npoll = \"{poll}\"\ncov = {cov}\noffline_after = 2",
        dev.address()
    ))
    .unwrap();
    let settings = config::validate_device(&raw).unwrap();
    let stop = CancellationToken::new();
    let socket = client::Endpoint::bind("127.0.0.1:0").await.unwrap();
    let (ep, _) = client::Endpoint::start(socket, Duration::from_millis(500), 1, stop.clone());
    let online = profile
        .point_index("online")
        .map(|i| caretaker::catalog::PointId(i as u32));
    let p = Poller::new(DevicePoll {
        id: "ahu".into(),
        profile,
        first_point: 0,
        online_point: online,
        settings,
        process_id: 7,
    });
    let stats = p.stats();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(p.run(ep, tx, stop.clone()));
    (rx, stats, stop)
}

/// Receives batches until one has a reading for `point` that `ok` accepts; returns that reading.
async fn wait_for(
    rx: &mut mpsc::Receiver<Batch>,
    point: usize,
    timeout: Duration,
    ok: impl Fn(&caretaker::reading::Reading) -> bool,
) -> Option<caretaker::reading::Reading> {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let b = tokio::time::timeout_at(end, rx.recv()).await.ok()??;
        if let Some(r) = b
            .readings
            .iter()
            .find(|r| r.point.0 as usize == point && ok(r))
        {
            return Some(*r);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_status_flags_and_the_unknown_object() {
    let dev = Device::start("ahu-5", 1205, ahu_objects(), &[]);
    let profile = parse(PROFILE);
    // One poll: two device-object reads, then one ReadPropertyMultiple for all six objects.
    let (mut rx, stats, stop) = poller(&dev, 1205, profile.clone(), "1h", false).await;
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("no batch from the poller")
        .unwrap();
    assert_eq!(stats.requests.load(std::sync::atomic::Ordering::Relaxed), 3);
    stop.cancel();
    let (mut rx, stats, stop) = poller(&dev, 1205, profile.clone(), "300ms", false).await;
    let b = tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("no batch from the poller")
        .unwrap();
    let value = |name: &str| {
        let i = profile.point_index(name).unwrap();
        b.readings.iter().find(|r| r.point.0 as usize == i).copied()
    };
    assert_eq!(
        value("supply_temp").unwrap().value,
        21.5,
        "{:?}",
        b.readings
    );
    assert_eq!(value("return_temp").unwrap().value, 19.25);
    assert_eq!(value("cooling_valve").unwrap().value, 40.0);
    assert_eq!(value("fan_cmd").unwrap().value, 1.0);
    assert_eq!(value("mode").unwrap().value, 2.0);
    assert_eq!(value("supply_temp").unwrap().quality, Quality::Good);
    // The unknown object is a bad reading of its own point; the others are good in the same batch.
    let missing = value("missing").unwrap();
    assert_eq!(missing.quality, Quality::Bad);
    assert!(
        stats
            .point_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert_eq!(value("online").unwrap().value, 1.0);

    // Status flags become quality (bacpypes3 derives them: out-of-service from outOfService, fault from
    // reliability, in-alarm from eventState): out-of-service is uncertain, fault is bad, in-alarm stays good;
    // and changed values arrive.
    let sat = profile.point_index("supply_temp").unwrap();
    dev.set("analog-input:1 outOfService true");
    dev.set("analog-input:1 presentValue 23.5");
    let r = wait_for(&mut rx, sat, Duration::from_secs(10), |r| r.value == 23.5)
        .await
        .unwrap_or_else(|| panic!("the changed value never arrived\n{}", dev.log()));
    assert_eq!(r.quality, Quality::Uncertain);
    dev.set("analog-input:1 outOfService false");
    dev.set("analog-input:1 eventState offnormal");
    dev.set("analog-input:1 presentValue 24.5");
    let r = wait_for(&mut rx, sat, Duration::from_secs(10), |r| r.value == 24.5)
        .await
        .expect("in alarm");
    assert_eq!(r.quality, Quality::Good);
    dev.set("analog-input:1 reliability unreliableOther");
    wait_for(&mut rx, sat, Duration::from_secs(10), |r| {
        r.quality == Quality::Bad
    })
    .await
    .expect("a fault flag makes the reading bad");
    // Stopped device: offline after two silent polls.
    let mut dev = dev;
    dev.stop();
    let online = profile.point_index("online").unwrap();
    wait_for(&mut rx, online, Duration::from_secs(20), |r| r.value == 0.0)
        .await
        .expect("a silent device goes offline");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_rpm_is_read_with_read_property() {
    let dev = Device::start("old-vav", 2001, ahu_objects(), &["--no-rpm"]);
    let profile = parse(PROFILE);
    let (mut rx, stats, stop) = poller(&dev, 2001, profile.clone(), "300ms", false).await;
    let rat = profile.point_index("return_temp").unwrap();
    let r = wait_for(&mut rx, rat, Duration::from_secs(15), |r| {
        r.quality == Quality::Good
    })
    .await
    .unwrap_or_else(|| panic!("no reading without RPM\n{}", dev.log()));
    assert_eq!(r.value, 19.25);
    dev.set("analog-input:2 presentValue 18");
    wait_for(&mut rx, rat, Duration::from_secs(10), |r| r.value == 18.0)
        .await
        .expect("changed value over ReadProperty");
    // Two device reads, one refused RPM, then ReadProperty per property (6 values + 3 status flags... per poll).
    assert!(stats.requests.load(std::sync::atomic::Ordering::Relaxed) > 10);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cov_changes_arrive_without_polling() {
    let dev = Device::start("ahu-6", 1206, ahu_objects(), &[]);
    let profile = parse(PROFILE);
    let (mut rx, stats, stop) = poller(&dev, 1206, profile.clone(), "1h", true).await;
    let sat = profile.point_index("supply_temp").unwrap();
    wait_for(&mut rx, sat, Duration::from_secs(15), |r| r.value == 21.5)
        .await
        .unwrap_or_else(|| panic!("first poll\n{}", dev.log()));
    // Let the subscriptions settle, then count requests: a change must come without any further request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = stats.requests.load(std::sync::atomic::Ordering::Relaxed);
    dev.set("analog-input:1 presentValue 27.5");
    let r = wait_for(&mut rx, sat, Duration::from_secs(10), |r| r.value == 27.5)
        .await
        .unwrap_or_else(|| panic!("no COV notification\n{}", dev.log()));
    assert_eq!(r.quality, Quality::Good);
    assert_eq!(
        stats.requests.load(std::sync::atomic::Ordering::Relaxed),
        before,
        "polled instead"
    );
    assert!(
        stats
            .cov_notifications
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    // A binary object's change too.
    let fan = profile.point_index("fan_cmd").unwrap();
    dev.set("binary-output:4 presentValue 0");
    wait_for(&mut rx, fan, Duration::from_secs(10), |r| r.value == 0.0)
        .await
        .expect("binary COV");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bacnet_end_to_end_into_influxdb() {
    let ahu = Device::start("ahu-5", 1205, ahu_objects(), &[]);
    let mut vav = Device::start("vav-2", 1301, ahu_objects(), &[]);
    let influx = Influxd::start();
    influx.create_db("caretaker").await;
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(profiles.join("test-bacnet-ahu.yaml"), PROFILE).unwrap();
    let http_port = free_port();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"
[site]
name = "campus"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[influxdb]
url = "{influx}"
api = "v1"
database = "caretaker"
flush_interval = "100ms"
[http]
listen = "127.0.0.1:{http_port}"
[bacnet]
bind = "127.0.0.1:0"
timeout = "300ms"
retries = 1
[[devices]]
id = "ahu-5"
profile = "test-bacnet-ahu"
location = {{ building = "main", floor = "roof" }}
bacnet = {{ address = "{ahu}", device_instance = 1205, poll = "500ms", cov = true }}
[[devices]]
id = "vav-2"
profile = "test-bacnet-ahu"
bacnet = {{ address = "{vav}", device_instance = 1301, poll = "500ms", offline_after = 2 }}
"#,
            state = dir.path().join("state").display(),
            profiles = profiles.display(),
            influx = influx.url(),
            ahu = ahu.address(),
            vav = vav.address(),
        ),
    );
    let (code, out, err) = support::caretaker(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("bacnet: bind 127.0.0.1:0, 2 device(s)"),
        "{out}"
    );
    assert!(out.contains("ahu-5 (device 1205 at 127.0.0.1:"), "{out}");
    assert!(
        out.contains(
            "1 ReadPropertyMultiple request(s) per poll (12 with one ReadProperty per property)"
        ),
        "{out}"
    );

    let daemon = Daemon::start(&cfg, http_port);
    let q = |dev: &str| {
        format!(
            "SELECT last(supply_temp), last(return_temp), last(fan_cmd), last(mode), last(online) FROM hvac WHERE device = '{dev}'"
        )
    };
    let mut row = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    for dev in ["ahu-5", "vav-2"] {
        let mut ok = false;
        while !ok && Instant::now() < end {
            let (_, rows) = influx.select("caretaker", &q(dev)).await;
            row = rows.first().cloned().unwrap_or_default();
            ok = row.len() == 6 && row.iter().all(|v| !v.is_null());
            if !ok {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        assert!(
            ok,
            "no {dev} readings in InfluxDB: {row:?}\n{}",
            daemon.log_text()
        );
    }
    assert_eq!(row[1].as_f64(), Some(21.5));
    assert_eq!(row[2].as_f64(), Some(19.25));
    assert_eq!(row[3], json!(true), "fan_cmd");
    assert_eq!(row[4].as_f64(), Some(2.0));
    assert_eq!(row[5], json!(true), "online");
    let (_, tags) = influx
        .select("caretaker", "SHOW TAG VALUES FROM hvac WITH KEY = floor")
        .await;
    assert_eq!(tags[0][1], "roof");
    // The unknown object: a clear per-point error, logged once, counted; no `missing` field ever written.
    let log = daemon.log_text();
    assert!(
        log.contains("BACnet point is bad")
            && log.contains("analog-input:99")
            && log.contains("unknown-object"),
        "{log}"
    );
    assert!(
        daemon
            .metric("caretaker_bacnet_point_errors_total{device=\"ahu-5\",point=\"missing\"}")
            .await
            >= 1.0
    );
    let (_, rows) = influx
        .select("caretaker", "SELECT count(missing) FROM hvac")
        .await;
    assert!(rows.is_empty(), "{rows:?}");

    // One device stops: it goes offline (online = false in InfluxDB, listed in /health); the other keeps flowing.
    vav.stop();
    let end = Instant::now() + Duration::from_secs(20);
    let mut last = Value::Null;
    while last != json!(false) && Instant::now() < end {
        let (_, rows) = influx
            .select(
                "caretaker",
                "SELECT last(online) FROM hvac WHERE device = 'vav-2'",
            )
            .await;
        last = rows.first().map(|r| r[1].clone()).unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, json!(false), "vav-2 offline\n{}", daemon.log_text());
    let health = support::health(http_port).await;
    assert_eq!(
        health["bacnet"],
        json!({"devices": 2, "offline": ["vav-2"]}),
        "{health}"
    );
    assert_eq!(
        daemon
            .metric("caretaker_device_online{device=\"vav-2\"}")
            .await,
        0.0
    );
    ahu.set("analog-input:1 presentValue 24.75");
    let end = Instant::now() + Duration::from_secs(15);
    let mut v = Value::Null;
    while v != json!(24.75) && Instant::now() < end {
        let (_, rows) = influx
            .select(
                "caretaker",
                "SELECT last(supply_temp) FROM hvac WHERE device = 'ahu-5'",
            )
            .await;
        v = rows.first().map(|r| r[1].clone()).unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        v,
        json!(24.75),
        "a changed value in the live device arrives\n{}",
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_lists_objects_and_writes_a_profile_that_loads() {
    // Forty objects and a 128-byte max APDU announced by the client: the object list only comes whole in segments.
    let mut objects: Vec<Value> = ahu_objects().as_array().unwrap().clone();
    for i in 10..45 {
        objects.push(json!({"type": "analog-value", "instance": i, "name": format!("Zone {i} Setpoint"), "value": 21.0, "units": "degreesCelsius"}));
    }
    let dev = Device::start("ahu-7", 1207, Value::Array(objects), &[]);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("profiles");
    let run = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .env("CARETAKER_LOG", "caretaker=debug")
        .args([
            "bacnet",
            "discover",
            "--bind",
            "127.0.0.1:0",
            "--target",
            &dev.address(),
            "--wait",
            "1s",
            "--max-apdu",
            "128",
            "--profile-out",
            out_dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let (code, out, err) = (
        run.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&run.stdout).to_string(),
        String::from_utf8_lossy(&run.stderr).to_string(),
    );
    assert_eq!(code, 0, "{out}{err}\n{}", dev.log());
    // bacpypes3 sent the object list in segments (over 200 bytes, 128 accepted), reassembled here.
    assert!(err.contains("segmented answer reassembled"), "{err}");
    assert!(out.contains("device 1207 at 127.0.0.1:"), "{out}");
    assert!(out.contains("analog-input:1"), "{out}");
    assert!(out.contains("Supply Air Temp"), "{out}");
    assert!(out.contains("21.5 degC (degrees-celsius)"), "{out}");
    assert!(out.contains("analog-value:44"), "{out}");
    // The whole object list came in one (segmented) answer, not element by element.
    assert!(!out.contains("element by element"), "{out}");
    let files: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let p = profile::parse_profile(&files[0], &text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let sat = &p.points[p.point_index("supply_air_temp").unwrap()];
    assert_eq!(sat.unit, caretaker::catalog::Unit::DegC);
    assert_eq!(
        sat.bacnet.as_ref().unwrap().object.to_string(),
        "analog-input:1"
    );
    assert!(p.point_index("zone_44_setpoint").is_some());
    assert!(p.point_index("online").is_some());
}
