//! `caretaker check` and `--version`: what a facilities engineer sees when a file is right or wrong.

use crate::support::*;
use std::process::Command;

fn check(config: &std::path::Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn the_documented_sample_config_is_valid() {
    let (code, out, err) = check(&repo().join("deploy/caretaker.toml"), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("site: north-campus"), "{out}");
    assert!(out.contains("subscriptions: 3"), "{out}");
    assert!(out.contains("devices: 1 declared"), "{out}");
}

#[test]
fn environment_overrides_config_keys() {
    let (code, out, err) = check(
        &repo().join("deploy/caretaker.toml"),
        &[("CARETAKER_SITE__NAME", "south-campus")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("site: south-campus"), "{out}");
    let (code, _, err) = check(
        &repo().join("deploy/caretaker.toml"),
        &[("CARETAKER_INFLUXDB__URL", "ftp://x")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("influxdb.url"), "{err}");
    let (code, _, err) = check(
        &repo().join("deploy/caretaker.toml"),
        &[("CARETAKER_MQTT__KEEP_ALIVE", "10")],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("mqtt.keep_alive") && err.contains("missing unit"),
        "{err}"
    );
}

#[test]
fn a_spool_too_small_for_batch_size_gets_a_note_on_the_batch_cap() {
    let sample = repo().join("deploy/caretaker.toml");
    let (code, out, err) = check(&sample, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("note: batches are cut"),
        "1 GiB holds 5000-line batches:\n{out}"
    );
    // 64 KiB: a quarter is 16 KiB, about 126 lines of ~130 bytes, far below 5000 lines.
    let (code, out, err) = check(&sample, &[("CARETAKER_INFLUXDB__SPOOL_MAX_BYTES", "65536")]);
    assert_eq!(
        code, 0,
        "a small spool is valid, the batches are cut: {err}"
    );
    assert!(
        out.contains("note: batches are cut to 16384 bytes (a quarter of spool_max_bytes = 65536, about 126 lines); batch_size = 5000 lines"),
        "{out}"
    );
}

#[test]
fn a_profile_typo_is_reported_with_file_line_and_key_and_every_error_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("device_profiles");
    std::fs::create_dir(&profiles).unwrap();
    let good =
        std::fs::read_to_string(repo().join("device_profiles/generic-room-sensor.yaml")).unwrap();
    let line_of = |needle: &str| good.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let humidity_line = line_of("name: humidity");
    let co2_line = line_of("name: co2");
    let bad = good.replace("unit: percent", "unit: percnt").replace(
        "name: co2, unit: ppm, kind: gauge",
        "name: co2, unit: ppm, kind: gage",
    );
    std::fs::write(profiles.join("generic-room-sensor.yaml"), bad).unwrap();
    std::fs::write(profiles.join("other.yml"), "schema: 1\n").unwrap();
    let cfg = write_config(
        dir.path(),
        "[site]\nname = \"x\"\n[state]\ndir = \"st\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\nkeep_alvie = \"30s\"\n[[mqtt.subscriptions]]\ntopic = \"a/{device}\"\nprofile = \"generic-room-sensor\"\n",
    );
    let (code, out, err) = check(&cfg, &[]);
    assert_eq!(code, 1, "{out}");
    let file = profiles.join("generic-room-sensor.yaml");
    assert!(
        err.contains(&format!("{}:{humidity_line}:", file.display())),
        "{err}"
    );
    assert!(
        err.contains("points[1].unit: unknown unit `percnt` (did you mean `percent`?)"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}:{co2_line}:", file.display())) && err.contains("points[2].kind"),
        "{err}"
    );
    assert!(
        err.contains("site.toml:7: mqtt.keep_alvie: unknown key"),
        "{err}"
    );
    assert!(err.contains("other.yml") && err.contains(".yaml"), "{err}");
    assert!(err.contains("4 error(s)"), "{err}");
}

#[test]
fn unknown_profile_in_a_subscription_gets_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[site]\nname = \"x\"\n[state]\ndir = \"st\"\n[profiles]\ndirs = [\"{}\"]\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[[mqtt.subscriptions]]\ntopic = \"a/{{device}}\"\nprofile = \"tasmota-energy-plg\"\n[[devices]]\nid = \"m1\"\nprofile = \"nope\"\n",
            repo().join("device_profiles").display()
        ),
    );
    let (code, _, err) = check(&cfg, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("site.toml:11: mqtt.subscriptions[0].profile: unknown profile `tasmota-energy-plg` (did you mean `tasmota-energy-plug`?)"), "{err}");
    assert!(
        err.contains("site.toml:14: devices[0].profile: unknown profile `nope`"),
        "{err}"
    );
}

#[test]
fn version_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn every_shipped_profile_loads() {
    let (profiles, errs) =
        caretaker::catalog::profile::load_dirs(&[repo().join("device_profiles")]);
    assert!(errs.is_empty(), "{errs:?}");
    assert!(profiles.len() >= 6);
    for name in [
        "generic-room-sensor",
        "tasmota-energy-plug",
        "shelly-plus-pm",
        "zigbee2mqtt-temp-humidity",
        "zigbee2mqtt-water-leak",
    ] {
        assert!(profiles.contains_key(name), "{name}");
    }
}

/// A site file in `dir` from the documented sample, with the shipped rules copied so a test can change them.
fn sample_in(dir: &std::path::Path, device_modbus: &str, stale: &str) -> std::path::PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir(&rules).unwrap();
    let health = std::fs::read_to_string(repo().join("rules/sensor-health.yaml")).unwrap();
    assert!(health.contains("stale: 30m"));
    std::fs::write(
        rules.join("sensor-health.yaml"),
        health.replace("stale: 30m", &format!("stale: {stale}")),
    )
    .unwrap();
    let text = std::fs::read_to_string(repo().join("deploy/caretaker.toml"))
        .unwrap()
        .replace(
            r#"dirs = ["../device_profiles"]"#,
            &format!(r#"dirs = ["{}"]"#, repo().join("device_profiles").display()),
        )
        .replace(r#"dirs = ["../rules"]"#, r#"dirs = ["rules"]"#);
    let text = format!(
        "{text}\n[[devices]]\nid = \"meter-1\"\nprofile = \"eastron-sdm630\"\nmodbus = {{ url = \"tcp://127.0.0.1:5020\", unit = 1, {device_modbus} }}\n"
    );
    let p = dir.join("site.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn huge_durations_are_errors_with_file_and_line_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let ok = sample_in(dir.path(), r#"poll = "10s""#, "30m");
    let (code, out, err) = check(&ok, &[]);
    assert_eq!(code, 0, "{out}{err}");
    for (poll, stale) in [
        ("1000000000000000w", "30m"),
        ("18446744073709551616s", "30m"),
        ("30000000000000w", "30m"), // passed check, then overflowed an Instant in the Modbus link
        ("2d", "30m"),              // longer than a day
        ("10s", "1000000000000000w"),
        ("10s", "20000w"), // wrapped to a negative i64: the alarm raised and cleared every second
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = sample_in(dir.path(), &format!(r#"poll = "{poll}""#), stale);
        let (code, out, err) = check(&cfg, &[]);
        assert_eq!(code, 1, "poll {poll} stale {stale}: {out}{err}");
        assert!(err.contains("too long"), "{err}");
        if stale != "30m" {
            assert!(err.contains("sensor-health.yaml:"), "{err}");
            assert!(err.contains("stale"), "{err}");
        } else {
            assert!(err.contains("site.toml:"), "{err}");
            assert!(err.contains("poll"), "{err}");
        }
    }
    let (code, out, err) = check(
        &ok,
        &[("CARETAKER_INFLUXDB__FLUSH_INTERVAL", "1000000000000000w")],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("influxdb.flush_interval") && err.contains("too long"),
        "{err}"
    );
}

#[test]
fn check_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    // The summary is longer than one line; the reader takes nothing and closes its end first, like `| head -0`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .arg("check")
        .arg("--config")
        .arg(repo().join("deploy/caretaker.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
    assert_ne!(status.code(), Some(101), "{err}");
}

#[test]
fn a_state_dir_that_is_a_file_fails_check_not_only_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state");
    std::fs::write(&file, "not a folder").unwrap();
    let (code, out, err) = check(
        &repo().join("deploy/caretaker.toml"),
        &[("CARETAKER_STATE__DIR", file.to_str().unwrap())],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("state.dir") && err.contains("not a folder"),
        "{err}"
    );
}
