//! The systemd watchdog protocol against a real notify socket: the test binds a Unix datagram socket, starts the
//! daemon with `NOTIFY_SOCKET` and `WATCHDOG_USEC` as systemd would, and reads `READY=1`, then `WATCHDOG=1`
//! beats, then `STOPPING=1` at SIGTERM. `/health` lists the tasks the watchdog watches.

use crate::support::*;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_then_watchdog_beats_then_stopping() {
    let mosq = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let http = free_port();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"[site]
name = "watchdog campus"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[mqtt]
url = "mqtt://127.0.0.1:{port}"
client_id = "caretaker-watchdog-{http}"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[http]
listen = "127.0.0.1:{http}"
"#,
            state = dir.path().join("state").display(),
            profiles = repo().join("device_profiles").display(),
            port = mosq.port,
        ),
    );
    let log = dir.path().join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env("CARETAKER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::options().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    let mut got: Vec<String> = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 256];
    while Instant::now() < end && got.iter().filter(|m| *m == "WATCHDOG=1").count() < 3 {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        got.first().map(String::as_str),
        Some("READY=1"),
        "{got:?}\n{}",
        log_text()
    );
    assert!(
        got.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3,
        "{got:?}\n{}",
        log_text()
    );
    // /health lists the watched tasks, all healthy.
    let h = health(http).await;
    for task in ["pipeline", "mqtt"] {
        assert!(h["tasks"][task].is_object(), "{h}");
        assert!(h["tasks"][task]["ended"].is_null(), "{h}");
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let mut stopping = false;
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end && !stopping {
        if let Ok(n) = sock.recv(&mut buf) {
            stopping = &buf[..n] == b"STOPPING=1";
        }
    }
    let status = child.wait().unwrap();
    assert!(stopping, "no STOPPING=1:\n{}", log_text());
    assert_eq!(status.code(), Some(0), "{}", log_text());
}
