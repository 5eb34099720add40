//! Service integration: journald logging with priorities, the default config path, `check --format json`,
//! `/metrics` (build info, process metrics, counters). The build without the demo: scripts/test.sh.

use crate::support::*;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A valid site's first lines (6 of them): site, state dir, the shipped profiles.
fn base(name: &str, state: &std::path::Path) -> String {
    format!(
        "[site]\nname = \"{name}\"\n[state]\ndir = \"{}\"\n[profiles]\ndirs = [\"{}\"]\n",
        state.display(),
        repo().join("device_profiles").display()
    )
}

/// Parses one datagram of journald's native protocol into (field, value) pairs: `KEY=value\n`, or
/// `KEY\n<u64 LE length><bytes>\n` for values with a newline.
fn parse_entry(mut b: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let nl = b
            .iter()
            .position(|&c| c == b'\n')
            .expect("field ends with a newline");
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into(),
                String::from_utf8_lossy(&line[eq + 1..]).into(),
            ));
            b = &b[nl + 1..];
        } else {
            let key = String::from_utf8_lossy(line).to_string();
            let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let v = &b[nl + 9..nl + 9 + len];
            assert_eq!(
                b[nl + 9 + len],
                b'\n',
                "binary field not newline-terminated"
            );
            out.push((key, String::from_utf8_lossy(v).into()));
            b = &b[nl + 10 + len..];
        }
    }
    out
}

fn field<'a>(e: &'a [(String, String)], k: &str) -> Option<&'a str> {
    e.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
}

/// Runs `caretaker ARGS` with stderr into a file; with `journal`, JOURNAL_STREAM names that file (as systemd
/// names the stream it connects stderr to) and CARETAKER_JOURNAL_SOCKET points at the test's socket.
fn run_logged(
    args: &[&str],
    dir: &std::path::Path,
    socket: &std::path::Path,
    journal: bool,
) -> (std::process::Child, std::path::PathBuf) {
    let log = dir.join(format!("stderr-{}.log", free_port()));
    let f = std::fs::File::create(&log).unwrap();
    let m = f.metadata().unwrap();
    let stream = if journal {
        format!("{}:{}", m.dev(), m.ino())
    } else {
        "1:1".to_string()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(args)
        .env("JOURNAL_STREAM", stream)
        .env("CARETAKER_JOURNAL_SOCKET", socket)
        .env_remove("CARETAKER_LOG_FORMAT")
        .env_remove("CARETAKER_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .unwrap();
    (child, log)
}

#[test]
fn under_systemd_logs_go_to_the_journal_with_priorities() {
    // No journald runs here: a Unix datagram socket of the test's own stands in for /run/systemd/journal/socket
    // (an in-process fake), receiving exactly the datagrams journald would.
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("journal.socket");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // A config with an error: `caretaker run` logs it (error) and exits.
    let bad = dir.path().join("bad.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &bad,
        base("s", &state) + "[pipeline]\nchannel_capacity = 0\n",
    )
    .unwrap();
    let (mut child, log) = run_logged(
        &["run", "--config", bad.to_str().unwrap()],
        dir.path(),
        &sock_path,
        true,
    );
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let mut buf = vec![0u8; 65536];
    let n = sock.recv(&mut buf).expect("no journal entry arrived");
    let e = parse_entry(&buf[..n]);
    assert_eq!(field(&e, "PRIORITY"), Some("3"), "{e:?}");
    assert_eq!(field(&e, "SYSLOG_IDENTIFIER"), Some("caretaker"));
    let msg = field(&e, "MESSAGE").unwrap();
    assert!(
        msg.contains("pipeline.channel_capacity") && msg.contains("bad.toml:8"),
        "{msg}"
    );
    assert!(
        field(&e, "TARGET").is_some_and(|t| t.starts_with("caretaker")),
        "{e:?}"
    );
    // The log line went to the journal, not to stderr as text.
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!stderr.contains(" ERROR "), "{stderr}");

    // A valid site: the start is info (6), with its fields as journal fields too; a warning is 4.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, base("journal site", &state)).unwrap();
    let (mut child, _) = run_logged(
        &["run", "--config", good.to_str().unwrap()],
        dir.path(),
        &sock_path,
        true,
    );
    let mut entries = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        let e = parse_entry(&buf[..n]);
        let starting = field(&e, "MESSAGE").is_some_and(|m| m.starts_with("caretaker starting"));
        entries.push(e);
        if starting {
            break;
        }
    }
    let start = entries.last().expect("no entries");
    assert!(
        field(start, "MESSAGE").is_some_and(|m| m.starts_with("caretaker starting")),
        "{entries:?}"
    );
    assert_eq!(field(start, "PRIORITY"), Some("6"));
    assert_eq!(field(start, "SITE"), Some("journal site"), "{start:?}");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert_eq!(child.wait().unwrap().code(), Some(0));

    // JOURNAL_STREAM inherited by a process whose stderr is elsewhere (systemd's own rule): text on stderr.
    let (mut child, log) = run_logged(
        &["run", "--config", bad.to_str().unwrap()],
        dir.path(),
        &sock_path,
        false,
    );
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        stderr.contains("ERROR") && stderr.contains("pipeline.channel_capacity"),
        "{stderr}"
    );
}

#[test]
fn rust_log_works_and_caretaker_log_wins() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        base("s", &dir.path().join("st")) + "[pipeline]\nchannel_capacity = 0\n",
    )
    .unwrap();
    let run = |env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_caretaker"))
            .args(["run", "--config", bad.to_str().unwrap()])
            .env_remove("CARETAKER_LOG")
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // The load errors are logged at error level: `off` hides them, whichever variable says so.
    assert!(run(&[]).contains("ERROR"));
    assert!(!run(&[("RUST_LOG", "off")]).contains("ERROR"));
    assert!(!run(&[("CARETAKER_LOG", "off"), ("RUST_LOG", "info")]).contains("ERROR"));
    assert!(run(&[("CARETAKER_LOG", "info"), ("RUST_LOG", "off")]).contains("ERROR"));
}

#[test]
fn the_config_defaults_to_caretaker_config_and_else_names_both_places() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("site.toml");
    std::fs::write(&cfg, base("from env", &dir.path().join("st"))).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .arg("check")
        .env("CARETAKER_CONFIG", &cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("site: from env"), "{stdout}");
    if !std::path::Path::new("/etc/caretaker/caretaker.toml").exists() {
        let out = Command::new(env!("CARGO_BIN_EXE_caretaker"))
            .arg("check")
            .env_remove("CARETAKER_CONFIG")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("CARETAKER_CONFIG") && err.contains("/etc/caretaker/caretaker.toml"),
            "{err}"
        );
    }
}

#[test]
fn check_format_json_lists_every_error_with_file_line_column_key_and_severity() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("site.toml");
    let st = dir.path().join("st");
    std::fs::write(
        &cfg,
        base("s", &st) + "[pipeline]\nchannel_capacity = 0\nshutdown_timeout = \"10\"\n",
    )
    .unwrap();
    let (code, out, _) = caretaker(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["ok"], false);
    let d = v["diagnostics"].as_array().unwrap();
    assert_eq!(v["errors"], d.len());
    let cap = d
        .iter()
        .find(|x| x["key"] == "pipeline.channel_capacity")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(cap["file"], cfg.to_str().unwrap());
    assert_eq!(cap["line"], 8, "{cap}");
    assert_eq!(cap["severity"], "error");
    assert!(
        cap["message"].as_str().unwrap().contains("at least 1"),
        "{cap}"
    );
    assert!(cap.get("column").is_some(), "{cap}");
    assert!(
        d.iter().any(|x| x["key"] == "pipeline.shutdown_timeout"),
        "{out}"
    );

    // A YAML error in a rule file: line and column from the parser.
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/r.yaml"),
        "schema: 1\nrules:\n  - name: [unclosed\n",
    )
    .unwrap();
    std::fs::write(&cfg, base("s", &st) + "[rules]\ndirs = [\"rules\"]\n").unwrap();
    let (code, out, _) = caretaker(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let e = &v["diagnostics"][0];
    assert!(e["file"].as_str().unwrap().ends_with("r.yaml"), "{e}");
    assert!(e["line"].as_u64().is_some(), "{e}");

    // A valid site: ok, exit 0, a summary.
    std::fs::remove_file(dir.path().join("rules/r.yaml")).unwrap();
    let (code, out, _) = caretaker(&[
        "check",
        "--config",
        cfg.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["errors"], 0);
    assert_eq!(v["summary"]["site"], "s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_build_info_process_metrics_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let cfg = write_config(
        dir.path(),
        &(base("m", &dir.path().join("state"))
            + &format!("[http]\nlisten = \"127.0.0.1:{http}\"\n")),
    );
    let mut d = Daemon::start(&cfg, http);
    let text = http_client()
        .get(format!("http://127.0.0.1:{http}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let build = text
        .lines()
        .find(|l| l.starts_with("caretaker_build_info{"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(build.ends_with(" 1"), "{build}");
    assert!(
        build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(build.contains("features=\"demo\""), "{build}");
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let pid = d.child.as_ref().unwrap().id();
    // The daemon's own figures, checked against what the kernel says about that process.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    let rss = value("process_resident_memory_bytes");
    assert!(
        rss > 0.5 * rss_kb * 1024.0 && rss < 2.0 * rss_kb * 1024.0,
        "{rss} vs {rss_kb} kB"
    );
    assert!(value("process_virtual_memory_bytes") >= rss);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64;
    assert!((value("process_open_fds") - fds).abs() <= 10.0, "{fds}");
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value("process_start_time_seconds");
    assert!(
        start <= now + 1.0 && start > now - 600.0,
        "{start} vs {now}"
    );
    assert!(
        text.contains("# TYPE process_cpu_seconds_total counter"),
        "{text}"
    );
    // Counters, with the reload ones registered at zero.
    assert!(
        text.contains("# TYPE caretaker_readings_written_total counter"),
        "{text}"
    );
    assert!(
        text.contains("caretaker_config_reloads_total{result=\"error\"} 0"),
        "{text}"
    );
    assert_eq!(d.terminate().0, Some(0));
}
