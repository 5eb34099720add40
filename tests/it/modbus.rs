//! Modbus polling against a Modbus server nobody here wrote: Debian's pymodbus 3.0 (`/usr/bin/python3`), serving
//! register maps laid out by pymodbus's own payload builder (`tests/fixtures/modbus_server.py`), over TCP on free
//! ports and over RTU through a socat pty pair. The pollers run in-process (the library's `Link`) so the tests
//! can look at every batch; the end-to-end test runs the real daemon into a real influxd.

use crate::support::{self, Daemon, Influxd, free_port, write_config};
use caretaker::catalog::{Catalog, Profile, profile};
use caretaker::pipeline::Batch;
use caretaker::reading::Quality;
use caretaker::sources::modbus::RawModbusDevice;
use caretaker::sources::modbus::link::LinkStats;
use caretaker::sources::modbus::{DevicePoll, Link, config};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A pymodbus server child process (also serves the profile fixtures' register dumps, `profiles.rs`).
pub(crate) struct ModbusServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl ModbusServer {
    fn spawn(mut spec: Value, rtu: Option<&Path>) -> ModbusServer {
        let dir = tempfile::tempdir().unwrap();
        let port = if rtu.is_none() { free_port() } else { 0 };
        match rtu {
            None => spec["tcp"] = json!(port),
            Some(p) => spec["rtu"] = json!(p),
        }
        let spec_file = dir.path().join("spec.json");
        std::fs::write(&spec_file, spec.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new("/usr/bin/python3")
            .arg(support::repo().join("tests/fixtures/modbus_server.py"))
            .arg(&spec_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("python3 with pymodbus: run scripts/test.sh to install the test servers");
        let s = ModbusServer {
            child: Some(child),
            port,
            dir,
        };
        if rtu.is_none() {
            let end = Instant::now() + Duration::from_secs(15);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < end, "pymodbus did not start:\n{}", s.log());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        s
    }

    pub(crate) fn tcp(units: Value) -> ModbusServer {
        Self::spawn(json!({ "units": units }), None)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub(crate) fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .arg(sig)
                .arg(pid)
                .status()
                .unwrap()
                .success()
        );
    }
}

impl Drop for ModbusServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A socat pty pair: two linked serial devices in a temp dir.
struct PtyPair {
    child: Child,
    a: PathBuf,
    b: PathBuf,
    _dir: tempfile::TempDir,
}

impl PtyPair {
    fn start() -> PtyPair {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat: run scripts/test.sh to install the test servers");
        let end = Instant::now() + Duration::from_secs(10);
        while !(a.exists() && b.exists()) {
            assert!(Instant::now() < end, "socat made no pty pair");
            std::thread::sleep(Duration::from_millis(20));
        }
        PtyPair {
            child,
            a,
            b,
            _dir: dir,
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_profile(name: &str, yaml: &str) -> Arc<Profile> {
    let path = PathBuf::from(format!("/test/{name}.yaml"));
    Arc::new(profile::parse_profile(&path, yaml).unwrap_or_else(|e| panic!("{e:?}\n{yaml}")))
}

/// Polls devices in-process: `(id, profile, modbus table as TOML)`; returns the batches' receiver.
struct Polling {
    catalog: Catalog,
    rx: mpsc::Receiver<Batch>,
    stop: CancellationToken,
    /// Per link, in the order links were first named.
    stats: Vec<Arc<LinkStats>>,
}

impl Polling {
    fn start(devices: &[(&str, &Arc<Profile>, String)]) -> Polling {
        let mut profiles = profile::Profiles::new();
        for (_, p, _) in devices {
            profiles.insert(p.name.clone(), (*p).clone());
        }
        let mut catalog = Catalog::new("test", profiles);
        let mut links: Vec<(config::LinkAddr, Vec<DevicePoll>)> = Vec::new();
        for (id, p, table) in devices {
            let raw: RawModbusDevice = toml::from_str(table).unwrap();
            let settings = config::validate(&raw).unwrap();
            let idx = catalog
                .add_device(id, &p.name, BTreeMap::new(), true)
                .unwrap();
            let dev = catalog.device(idx);
            let poll = DevicePoll {
                id: id.to_string(),
                profile: (*p).clone(),
                first_point: dev.first_point,
                online_point: dev.point_id(profile::ONLINE_POINT),
                settings,
            };
            match links.iter_mut().find(|(a, _)| *a == poll.settings.link) {
                Some((_, v)) => v.push(poll),
                None => links.push((poll.settings.link.clone(), vec![poll])),
            }
        }
        let (tx, rx) = mpsc::channel(1024);
        let stop = CancellationToken::new();
        let mut stats = Vec::new();
        for (addr, devs) in links {
            let link = Link::new(addr, devs);
            stats.push(link.stats());
            tokio::spawn(link.run(tx.clone(), stop.clone()));
        }
        Polling {
            catalog,
            rx,
            stop,
            stats,
        }
    }

    /// Batches received within `d`, as `(device/point -> (value, quality), at)`.
    async fn collect(&mut self, d: Duration) -> Vec<(HashMap<String, (f64, Quality)>, i64)> {
        let end = tokio::time::Instant::now() + d;
        let mut out = Vec::new();
        while let Ok(Some(b)) = tokio::time::timeout_at(end, self.rx.recv()).await {
            let at = b.readings.first().map(|r| r.at).unwrap_or(0);
            let m = b
                .readings
                .iter()
                .map(|r| (self.catalog.point_name(r.point), (r.value, r.quality)))
                .collect();
            out.push((m, at));
        }
        out
    }

    /// The next batch of `device`.
    async fn next_of(&mut self, device: &str) -> HashMap<String, (f64, Quality)> {
        let prefix = format!("{device}/");
        loop {
            let b = tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no batch from {device} within 10 s"))
                .unwrap();
            if self
                .catalog
                .point_name(b.readings[0].point)
                .starts_with(&prefix)
            {
                return b
                    .readings
                    .iter()
                    .map(|r| (self.catalog.point_name(r.point), (r.value, r.quality)))
                    .collect();
            }
        }
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn good(batch: &HashMap<String, (f64, Quality)>, name: &str) -> f64 {
    match batch.get(name) {
        Some((v, Quality::Good)) => *v,
        other => panic!("{name}: {other:?} in {batch:?}"),
    }
}

/// Every type in every word order, plus bits, strings, input registers, coils, discrete inputs and
/// scale/offset, encoded by pymodbus and decoded by Caretaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_word_order_decodes_to_the_value_pymodbus_encoded() {
    let mut yaml = String::from("schema: 1\nname: all-types\ncategory: other\npoints:\n");
    let mut values = Vec::new();
    let mut expect: Vec<(String, f64)> = Vec::new();
    let mut addr = 0u32;
    let cases: [(&str, f64, u32); 6] = [
        ("u32", 4_000_000_000.0, 2),
        ("i32", -2_000_000_000.0, 2),
        ("u64", ((1u64 << 52) + 12345) as f64, 4),
        ("i64", (-(1i64 << 50) - 7) as f64, 4),
        ("f32", -123.5, 2),
        ("f64", -9_876_543_210.125, 4),
    ];
    for order in ["ABCD", "CDAB", "BADC", "DCBA"] {
        for (ty, v, width) in cases {
            let name = format!("{ty}_{}", order.to_lowercase());
            yaml += &format!(
                "  - {{ name: {name}, unit: none, kind: gauge, modbus: {{ table: holding, address: {addr}, type: {ty}, order: {order} }} }}\n"
            );
            let value = if ty.starts_with('f') {
                json!(v)
            } else {
                json!(v as i64)
            };
            values.push(
                json!({"table": "hr", "address": addr, "type": ty, "order": order, "value": value}),
            );
            expect.push((name, v));
            addr += width + 1; // a one-register gap: cheaper to read than another round trip
        }
    }
    for (name, ty, v) in [("u16", "u16", 65000.0), ("i16", "i16", -1234.0)] {
        yaml += &format!(
            "  - {{ name: {name}, unit: none, kind: gauge, modbus: {{ table: holding, address: {addr}, type: {ty} }} }}\n"
        );
        values.push(json!({"table": "hr", "address": addr, "type": ty, "value": v as i64}));
        expect.push((name.into(), v));
        addr += 1;
    }
    // Bits 0 and 5 of one register (0b10_0001 = 33), bit 1 clear.
    yaml += &format!(
        "  - {{ name: bit0, unit: bool, kind: gauge, modbus: {{ table: holding, address: {addr}, type: bool, bit: 0 }} }}\n"
    );
    yaml += &format!(
        "  - {{ name: bit1, unit: bool, kind: gauge, modbus: {{ table: holding, address: {addr}, type: bool, bit: 1 }} }}\n"
    );
    yaml += &format!(
        "  - {{ name: bit5, unit: bool, kind: gauge, modbus: {{ table: holding, address: {addr}, type: bool, bit: 5 }} }}\n"
    );
    values.push(json!({"table": "hr", "address": addr, "type": "u16", "value": 33}));
    expect.extend([
        ("bit0".into(), 1.0),
        ("bit1".into(), 0.0),
        ("bit5".into(), 1.0),
    ]);
    addr += 1;
    yaml += &format!(
        "  - {{ name: text_number, unit: none, kind: gauge, modbus: {{ table: holding, address: {addr}, type: string, length: 8 }} }}\n"
    );
    values.push(
        json!({"table": "hr", "address": addr, "type": "string", "value": "230.75\u{0}\u{0}"}),
    );
    expect.push(("text_number".into(), 230.75));
    // Input registers with scale and offset: 215 * 0.1 - 40 = -18.5.
    yaml += "  - { name: scaled, unit: degC, kind: gauge, scale: 0.1, offset: -40, modbus: { table: input, address: 7, type: u16 } }\n";
    values.push(json!({"table": "ir", "address": 7, "type": "u16", "value": 215}));
    expect.push(("scaled".into(), -18.5));
    yaml += "  - { name: coil_on, unit: bool, kind: gauge, modbus: { table: coil, address: 3 } }\n";
    yaml +=
        "  - { name: coil_off, unit: bool, kind: gauge, modbus: { table: coil, address: 4 } }\n";
    yaml += "  - { name: input_on, unit: bool, kind: gauge, modbus: { table: discrete, address: 9 } }\n";
    values.push(json!({"table": "co", "address": 3, "value": 1}));
    values.push(json!({"table": "co", "address": 4, "value": 0}));
    values.push(json!({"table": "di", "address": 9, "value": 1}));
    expect.extend([
        ("coil_on".into(), 1.0),
        ("coil_off".into(), 0.0),
        ("input_on".into(), 1.0),
    ]);
    let server = ModbusServer::tcp(json!({"5": {"values": values}}));
    let p = parse_profile("all-types", &yaml);
    let table = format!("url = \"{}\"\nunit = 5\npoll = \"300ms\"", server.url());
    let mut polling = Polling::start(&[("dev", &p, table)]);
    let b = polling.next_of("dev").await;
    for (name, v) in &expect {
        let got = good(&b, &format!("dev/{name}"));
        assert_eq!(got, *v, "{name}");
    }
    assert_eq!(good(&b, "dev/online"), 1.0);
    // And the next poll again: the schedule keeps going.
    let b = polling.next_of("dev").await;
    assert_eq!(good(&b, "dev/f32_dcba"), -123.5);
}

/// A register the device refuses (exception 2) marks that point bad; the points merged with it keep flowing,
/// and so do points beyond registers the device refuses to read as filler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_on_one_register_marks_only_that_point_bad() {
    // Sparse map: registers 2, 5 and 6 do not exist. One merged request [0, 8) would fail as a whole.
    let server = ModbusServer::tcp(json!({"1": {"sparse": true, "values": [
        {"table": "hr", "address": 0, "type": "u16", "value": 11},
        {"table": "hr", "address": 1, "type": "u16", "value": 12},
        {"table": "hr", "address": 3, "type": "u32", "value": 70000},
        {"table": "hr", "address": 7, "type": "i16", "value": -14},
    ]}}));
    let p = parse_profile(
        "sparse-dev",
        "schema: 1\nname: sparse-dev\ncategory: other\npoints:
  - { name: a, unit: none, kind: gauge, modbus: { table: holding, address: 0 } }
  - { name: b, unit: none, kind: gauge, modbus: { table: holding, address: 1 } }
  - { name: missing, unit: none, kind: gauge, modbus: { table: holding, address: 2 } }
  - { name: c, unit: none, kind: gauge, modbus: { table: holding, address: 3, type: u32 } }
  - { name: d, unit: none, kind: gauge, modbus: { table: holding, address: 7, type: i16 } }
",
    );
    let table = format!("url = \"{}\"\npoll = \"200ms\"", server.url());
    let mut polling = Polling::start(&[("m1", &p, table)]);
    let counts = |p: &Polling| {
        use std::sync::atomic::Ordering::Relaxed;
        (
            p.stats[0].requests.load(Relaxed),
            p.stats[0].exceptions.load(Relaxed),
        )
    };
    let mut at_poll = Vec::new();
    for poll in 0..5 {
        let b = polling.next_of("m1").await;
        at_poll.push(counts(&polling));
        assert_eq!(good(&b, "m1/a"), 11.0, "poll {poll}");
        assert_eq!(good(&b, "m1/b"), 12.0, "poll {poll}");
        assert_eq!(good(&b, "m1/c"), 70000.0, "poll {poll}");
        assert_eq!(good(&b, "m1/d"), -14.0, "poll {poll}");
        assert_eq!(b["m1/missing"].1, Quality::Bad, "poll {poll}");
        assert_eq!(good(&b, "m1/online"), 1.0, "an exception is an answer");
    }
    // The first poll bisects (7 requests, 4 refused) and learns; from then on each poll reads [0,2), [3,5),
    // [7,8) and the bad point alone: 4 requests, the only exception being the bad point's own.
    assert_eq!(at_poll[0], (7, 4), "{at_poll:?}");
    for w in at_poll[1..].windows(2) {
        assert_eq!((w[1].0 - w[0].0, w[1].1 - w[0].1), (4, 1), "{at_poll:?}");
    }
}

/// Three links, one of them with a second unit that never answers: stopping one server (SIGSTOP: it accepts
/// connections but answers nothing) takes that device offline while the other two keep their schedule; it comes
/// back by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_device_goes_offline_while_others_keep_their_poll_timing() {
    let unit =
        |v: i64| json!({"values": [{"table": "ir", "address": 0, "type": "i16", "value": v}]});
    let s1 = ModbusServer::tcp(json!({"1": unit(1)}));
    let s2 = ModbusServer::tcp(json!({"1": unit(2)}));
    let s3 = ModbusServer::tcp(json!({"1": unit(3)}));
    let p = parse_profile(
        "one-reg",
        "schema: 1\nname: one-reg\ncategory: other\npoints:\n  - { name: v, unit: none, kind: gauge, modbus: { table: input, address: 0, type: i16 } }\n",
    );
    let period = Duration::from_millis(300);
    let t = |url: String, unit: u8| {
        format!(
            "url = \"{url}\"\nunit = {unit}\npoll = \"300ms\"\ntimeout = \"100ms\"\noffline_after = 2"
        )
    };
    let mut polling = Polling::start(&[
        ("a", &p, t(s1.url(), 1)),
        // Same gateway as `a`, a unit id nobody answers to.
        ("ghost", &p, t(s1.url(), 9)),
        ("b", &p, t(s2.url(), 1)),
        ("c", &p, t(s3.url(), 1)),
    ]);
    let warm = polling.collect(Duration::from_millis(1000)).await;
    assert!(
        warm.iter()
            .any(|(m, _)| m.get("b/v") == Some(&(2.0, Quality::Good)))
    );
    s2.signal("-STOP");
    let window = Duration::from_millis(3000);
    let during = polling.collect(window).await;
    s2.signal("-CONT");
    let times = |dev: &str| -> Vec<i64> {
        during
            .iter()
            .filter(|(m, _)| m.contains_key(&format!("{dev}/v")))
            .map(|(_, at)| *at)
            .collect()
    };
    for dev in ["a", "c"] {
        let ts = times(dev);
        let expected = (window.as_millis() / period.as_millis()) as usize;
        assert!(
            ts.len() + 1 >= expected,
            "{dev}: {} polls in {window:?}, expected {expected}",
            ts.len()
        );
        // Anchored schedule: consecutive polls one period apart, no drift, no stall behind the dead device.
        let max_gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(
            max_gap < (period.as_nanos() * 2) as i64,
            "{dev}: a {} ms gap between polls",
            max_gap / 1_000_000
        );
        assert!(
            during
                .iter()
                .all(|(m, _)| m.get(&format!("{dev}/online")).is_none_or(|v| v.0 == 1.0))
        );
    }
    for dev in ["b", "ghost"] {
        assert!(
            during
                .iter()
                .any(|(m, _)| m.get(&format!("{dev}/online")) == Some(&(0.0, Quality::Good))),
            "{dev} never reported offline"
        );
    }
    assert!(!during.iter().any(|(m, _)| m.contains_key("ghost/v")));
    // `b` comes back by itself once its server answers again.
    let mut back = false;
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && !back {
        let b = polling.next_of("b").await;
        back = b.get("b/v") == Some(&(2.0, Quality::Good)) && b["b/online"].0 == 1.0;
    }
    assert!(back, "b did not come back online");
}

/// Modbus RTU over a socat pty pair, two devices (unit ids) on one serial line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_a_serial_line_shared_by_two_devices() {
    let pty = PtyPair::start();
    let _server = ModbusServer::spawn(
        json!({"baud": 19200, "units": {
            "3": {"values": [{"table": "hr", "address": 10, "type": "f32", "order": "CDAB", "value": 21.25},
                             {"table": "hr", "address": 12, "type": "u16", "value": 40}]},
            "4": {"values": [{"table": "hr", "address": 10, "type": "f32", "order": "CDAB", "value": -3.5},
                             {"table": "hr", "address": 12, "type": "u16", "value": 41}]}
        }}),
        Some(&pty.a),
    );
    let p = parse_profile(
        "rtu-dev",
        "schema: 1\nname: rtu-dev\ncategory: hvac\npoints:
  - { name: temp, unit: degC, kind: gauge, modbus: { table: holding, address: 10, type: f32, order: CDAB } }
  - { name: pct, unit: percent, kind: gauge, modbus: { table: holding, address: 12 } }
",
    );
    let t = |unit: u8| {
        format!(
            "url = \"rtu://{}\"\nunit = {unit}\nbaud = 19200\nparity = \"none\"\npoll = \"300ms\"\ntimeout = \"300ms\"",
            pty.b.display()
        )
    };
    let mut polling = Polling::start(&[("rtu3", &p, t(3)), ("rtu4", &p, t(4))]);
    // The server may open its end after our first requests: wait for good readings.
    let end = Instant::now() + Duration::from_secs(15);
    let mut ok = false;
    while !ok && Instant::now() < end {
        ok = polling
            .next_of("rtu3")
            .await
            .get("rtu3/temp")
            .is_some_and(|v| v.1 == Quality::Good);
    }
    assert!(ok, "no RTU reading");
    let b3 = polling.next_of("rtu3").await;
    let b4 = polling.next_of("rtu4").await;
    assert_eq!(good(&b3, "rtu3/temp"), 21.25);
    assert_eq!(good(&b3, "rtu3/pct"), 40.0);
    assert_eq!(good(&b4, "rtu4/temp"), -3.5);
    assert_eq!(good(&b4, "rtu4/pct"), 41.0);
}

/// Modbus RTU over TCP (`rtu+tcp://`), as a transparent RS-485 gateway forwards it: pymodbus serving RTU frames
/// (with CRC, no MBAP header) on a TCP port, two unit ids behind the one "gateway", one of them absent (no answer:
/// it goes offline while the other keeps reading).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_frames_over_tcp_to_two_units_behind_one_gateway() {
    let server = ModbusServer::spawn(
        json!({"framer": "rtu", "units": {
            "3": {"values": [{"table": "hr", "address": 10, "type": "f32", "order": "CDAB", "value": 18.75},
                             {"table": "hr", "address": 12, "type": "u16", "value": 57}]},
            "4": {"values": [{"table": "hr", "address": 10, "type": "f32", "order": "CDAB", "value": -7.5},
                             {"table": "hr", "address": 12, "type": "u16", "value": 58}]}
        }}),
        None,
    );
    let p = parse_profile(
        "rtu-gw-dev",
        "schema: 1\nname: rtu-gw-dev\ncategory: hvac\npoints:
  - { name: temp, unit: degC, kind: gauge, modbus: { table: holding, address: 10, type: f32, order: CDAB } }
  - { name: pct, unit: percent, kind: gauge, modbus: { table: holding, address: 12 } }
",
    );
    let t = |unit: u8| {
        format!(
            "url = \"rtu+tcp://127.0.0.1:{}\"\nunit = {unit}\npoll = \"200ms\"\ntimeout = \"300ms\"\noffline_after = 2",
            server.port
        )
    };
    let mut polling = Polling::start(&[("gw3", &p, t(3)), ("gw4", &p, t(4)), ("gw9", &p, t(9))]);
    assert_eq!(polling.stats.len(), 1, "one gateway, one link");
    let b3 = polling.next_of("gw3").await;
    let b4 = polling.next_of("gw4").await;
    assert_eq!(good(&b3, "gw3/temp"), 18.75, "{}", server.log());
    assert_eq!(good(&b3, "gw3/pct"), 57.0);
    assert_eq!(good(&b4, "gw4/temp"), -7.5);
    assert_eq!(good(&b4, "gw4/pct"), 58.0);
    // Unit 9 is not behind the gateway: no answer, so it goes offline after two polls; 3 keeps reading.
    let end = Instant::now() + Duration::from_secs(15);
    let mut offline = false;
    while !offline && Instant::now() < end {
        let b9 = polling.next_of("gw9").await;
        offline = b9.get("gw9/online").is_some_and(|v| v.0 == 0.0);
    }
    assert!(offline, "unit 9 never went offline");
    let b3 = polling.next_of("gw3").await;
    assert_eq!(good(&b3, "gw3/temp"), 18.75);
}

/// The issue's "done when": a new user adds an SDM630 at a pymodbus address and sees correct voltages and kWh
/// in InfluxDB, through the real daemon; `caretaker check` shows the link and the requests per cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdm630_end_to_end_into_influxdb() {
    let f = |addr: u32, v: f64| json!({"table": "ir", "address": addr, "type": "f32", "value": v});
    let meter = ModbusServer::tcp(json!({"1": {"values": [
        f(0x00, 230.1), f(0x02, 231.2), f(0x04, 229.8),
        f(0x06, 5.5), f(0x34, 3795.0), f(0x46, 50.0),
        f(0x48, 12345.5), f(0x4A, 7.25), f(0xC8, 399.0), f(0x156, 12352.75),
    ]}}));
    let influx = Influxd::start();
    influx.create_db("caretaker").await;
    let dir = tempfile::tempdir().unwrap();
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
[[devices]]
id = "main-meter"
profile = "eastron-sdm630"
location = {{ building = "library" }}
modbus = {{ url = "{meter}", unit = 1, poll = "500ms", timeout = "1s", points = {{ energy_import = "1s" }} }}
# Nothing listens here: it goes offline and must not disturb the meter above.
[[devices]]
id = "dead-meter"
profile = "eastron-sdm630"
modbus = {{ url = "tcp://127.0.0.1:{dead}", poll = "200ms", offline_after = 2 }}
"#,
            dead = free_port(),
            state = dir.path().join("state").display(),
            profiles = support::repo().join("device_profiles").display(),
            influx = influx.url(),
            meter = meter.url(),
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("modbus: 2 link(s), 2 device(s)"), "{text}");
    assert!(text.contains(&meter.url()), "{text}");
    assert!(text.contains("main-meter (unit 1, eastron-sdm630, every 500ms, energy_import every 1s): 4 request(s) per cycle (27 with one per point)"), "{text}");

    let daemon = Daemon::start(&cfg, http_port);
    let q = "SELECT last(voltage_l1), last(voltage_l3), last(energy_import), last(energy_total), last(online) FROM electricity WHERE device = 'main-meter'";
    let mut row = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    let mut ok = false;
    while !ok && Instant::now() < end {
        let (_, rows) = influx.select("caretaker", q).await;
        row = rows.first().cloned().unwrap_or_default();
        ok = row.len() == 6 && row.iter().all(|v| !v.is_null());
        if !ok {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        ok,
        "no SDM630 readings in InfluxDB: {row:?}\n{}",
        daemon.log_text()
    );
    let num = |i: usize| row[i].as_f64().unwrap();
    // f32 on the wire: compare at f32 precision.
    assert_eq!(num(1) as f32, 230.1f32);
    assert_eq!(num(2) as f32, 229.8f32);
    assert_eq!(num(3), 12345.5);
    assert_eq!(num(4), 12352.75);
    assert_eq!(row[5], json!(true), "online");
    let (_, tags) = influx
        .select(
            "caretaker",
            "SHOW TAG VALUES FROM electricity WITH KEY = building",
        )
        .await;
    assert_eq!(tags[0][1], "library");
    assert!(
        daemon
            .metric("caretaker_modbus_requests_total{device=\"main-meter\"}")
            .await
            > 0.0
    );
    assert_eq!(
        daemon
            .metric("caretaker_device_online{device=\"main-meter\"}")
            .await,
        1.0
    );
    let health = support::health(http_port).await;
    assert_eq!(
        health["modbus"],
        json!({"devices": 2, "offline": ["dead-meter"]}),
        "{health}"
    );
    assert_eq!(
        daemon
            .metric("caretaker_device_online{device=\"dead-meter\"}")
            .await,
        0.0
    );
    let end = Instant::now() + Duration::from_secs(10);
    let mut last = Value::Null;
    while last != json!(false) && Instant::now() < end {
        let (_, rows) = influx
            .select(
                "caretaker",
                "SELECT last(online) FROM electricity WHERE device = 'dead-meter'",
            )
            .await;
        last = rows.first().map(|r| r[1].clone()).unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, json!(false), "the offline reading reaches InfluxDB");
}

/// A gateway answering exception 0x0B (gateway target device failed to respond) for unit 7. In-process fake,
/// for fault injection: Debian's pymodbus 3.0 never sends this exception (with `ignore_missing_slaves` off it
/// still answers nothing), so no real server here can produce it.
struct GatewayFake;

impl tokio_modbus::server::Service for GatewayFake {
    type Request = tokio_modbus::SlaveRequest<'static>;
    type Response = tokio_modbus::Response;
    type Exception = tokio_modbus::ExceptionCode;
    type Future = std::future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(match (req.slave, req.request) {
            (1, tokio_modbus::Request::ReadHoldingRegisters(_, n)) => {
                Ok(tokio_modbus::Response::ReadHoldingRegisters(vec![
                    5;
                    n as usize
                ]))
            }
            (1, _) => Err(tokio_modbus::ExceptionCode::IllegalFunction),
            _ => Err(tokio_modbus::ExceptionCode::GatewayTargetDevice),
        })
    }
}

/// A gateway saying the device behind it is silent: the device goes offline without any of its registers being
/// condemned, and the gateway's other unit keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_exception_takes_the_device_offline_without_condemning_registers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio_modbus::server::tcp::Server::new(listener);
    tokio::spawn(async move {
        let on_connected = |stream, _addr| async move { Ok(Some((GatewayFake, stream))) };
        let _ = server.serve(&on_connected, |_err| {}).await;
    });
    let p = parse_profile(
        "two-reg",
        "schema: 1\nname: two-reg\ncategory: other\npoints:
  - { name: x, unit: none, kind: gauge, modbus: { table: holding, address: 0 } }
  - { name: y, unit: none, kind: gauge, modbus: { table: holding, address: 1 } }
",
    );
    let t = |unit: u8| {
        format!(
            "url = \"tcp://127.0.0.1:{port}\"\nunit = {unit}\npoll = \"150ms\"\noffline_after = 2"
        )
    };
    let mut polling = Polling::start(&[("here", &p, t(1)), ("behind", &p, t(7))]);
    let batches = polling.collect(Duration::from_millis(1200)).await;
    let behind: Vec<_> = batches
        .iter()
        .filter(|(m, _)| m.contains_key("behind/online"))
        .collect();
    assert!(behind.len() >= 4, "{batches:?}");
    assert!(
        behind.iter().all(|(m, _)| m.len() == 1),
        "no point of `behind` is reported: {behind:?}"
    );
    assert_eq!(
        behind.last().unwrap().0["behind/online"],
        (0.0, Quality::Good)
    );
    let here = batches
        .iter()
        .rev()
        .find(|(m, _)| m.contains_key("here/x"))
        .unwrap();
    assert_eq!(good(&here.0, "here/x"), 5.0);
    assert_eq!(good(&here.0, "here/y"), 5.0);
    assert_eq!(good(&here.0, "here/online"), 1.0);
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(
        polling.stats[0].link_errors.load(Relaxed),
        0,
        "an exception is not a link error"
    );
}

/// A Modbus TCP server that answers every register read with one register more than asked for.
async fn one_register_too_many_server() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut req = [0u8; 12]; // MBAP (7) + function, address, count
                while s.read_exact(&mut req).await.is_ok() {
                    let count = u16::from_be_bytes([req[10], req[11]]) + 1;
                    let mut pdu = vec![req[7], (count * 2) as u8];
                    for _ in 0..count {
                        pdu.extend_from_slice(&7u16.to_be_bytes());
                    }
                    let mut reply = req[..4].to_vec(); // transaction and protocol id
                    reply.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
                    reply.push(req[6]); // unit
                    reply.extend_from_slice(&pdu);
                    if s.write_all(&reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_more_registers_than_requested_is_an_error_not_data() {
    let port = one_register_too_many_server().await;
    let p = parse_profile(
        "long-reply",
        "schema: 1\nname: long-reply\ncategory: other\npoints:
  - { name: a, unit: none, kind: gauge, modbus: { table: holding, address: 0 } }
",
    );
    let table = format!("url = \"tcp://127.0.0.1:{port}\"\npoll = \"100ms\"");
    let mut polling = Polling::start(&[("m1", &p, table)]);
    let batches = polling.collect(Duration::from_millis(1500)).await;
    for (b, _) in &batches {
        assert!(
            !matches!(b.get("m1/a"), Some((_, Quality::Good))),
            "decoded a reply of the wrong length: {b:?}"
        );
    }
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &polling.stats[0];
    assert!(
        stats.requests.load(Relaxed) >= 2,
        "the link stopped polling"
    );
    assert!(
        stats.link_errors.load(Relaxed) >= 2,
        "the wrong-length reply was not counted as an error"
    );
}
