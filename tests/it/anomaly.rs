//! Anomaly detection end to end: `caretaker detect` as a user runs it, and detector state that survives a
//! daemon restart (real mosquitto, the built binary, SIGTERM).

use crate::support::*;
use std::process::Command;
use std::time::Duration;

fn detect(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .arg("detect")
        .args(args)
        .output()
        .expect("run caretaker detect")
}

#[test]
fn detect_scores_every_row_in_order_and_flags_a_spike() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("series.csv");
    let output = dir.path().join("scores.csv");
    let mut text = String::from("timestamp,value\n");
    let spike = 2500;
    for i in 0..3000i64 {
        let t = 1_396_310_400 + i * 300;
        let (d, s) = (t / 86_400, t % 86_400);
        let ph = 2.0 * std::f64::consts::PI * s as f64 / 86_400.0;
        let v = 50.0
            + 20.0 * ph.sin()
            + ((i * 7919) % 13) as f64 * 0.2
            + if i == spike { 60.0 } else { 0.0 };
        // Civil date of day `d` (days since 1970-01-01), good enough for 2014.
        let (y, m, day) = civil(d);
        text += &format!(
            "{y:04}-{m:02}-{day:02} {:02}:{:02}:{:02},{v:.3}\n",
            s / 3600,
            (s / 60) % 60,
            s % 60
        );
    }
    std::fs::write(&input, &text).unwrap();
    let out = detect(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scored = std::fs::read_to_string(&output).unwrap();
    let rows: Vec<&str> = scored.lines().collect();
    assert_eq!(rows[0], "timestamp,value,anomaly_score");
    assert_eq!(rows.len(), 3001);
    let inputs: Vec<&str> = text.lines().collect();
    let mut best = (0usize, 0f64);
    for (i, (o, r)) in rows[1..].iter().zip(&inputs[1..]).enumerate() {
        assert!(o.starts_with(r), "row {i}: `{o}` does not copy `{r}`");
        let s: f64 = o.rsplit(',').next().unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&s));
        if i > 1000 && s > best.1 {
            best = (i, s);
        }
    }
    assert_eq!(
        best.0 as i64, spike,
        "the highest score after learning is the spike: {best:?}"
    );

    // Bad input: a clear error naming file and line; an unknown detector lists the known ones.
    std::fs::write(
        &input,
        "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,x1\n",
    )
    .unwrap();
    let failed = dir.path().join("failed.csv");
    let out = detect(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        failed.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("series.csv:3: bad value `x1`"), "{err}");
    assert!(
        !failed.exists(),
        "a failed run leaves no half-written output"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "no temp file left behind"
    );
    let out = detect(&[
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--detector",
        "magic",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("unknown detector `magic`")
            && err.contains("combined"),
        "{err}"
    );
}

/// `--output-score level` stays high through a sustained fault where `event` fires once; `--columns` judges
/// several columns together with the daemon's equipment model: a row whose values are each in their normal range
/// but no longer fit together scores high, and bad column names are clear errors.
#[test]
fn detect_writes_the_level_on_request_and_judges_columns_together() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("series.csv");
    let (event_out, level_out) = (dir.path().join("event.csv"), dir.path().join("level.csv"));
    let mut text = String::from("timestamp,value\n");
    let fault = 2000usize..2100;
    for i in 0..2400i64 {
        let v = 50.0
            + 10.0 * ((i % 288) as f64 / 288.0 * std::f64::consts::TAU).sin()
            + ((i * 7919) % 13) as f64 * 0.2;
        let v = if fault.contains(&(i as usize)) {
            v + 40.0
        } else {
            v
        };
        text += &format!("{},{v:.3}\n", 1_396_310_400 + i * 300);
    }
    std::fs::write(&input, &text).unwrap();
    let scores = |out: &std::path::Path, extra: &[&str]| -> Vec<f64> {
        let mut args = vec![
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = detect(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let t = std::fs::read_to_string(out).unwrap();
        assert_eq!(t.lines().next(), Some("timestamp,value,anomaly_score"));
        t.lines()
            .skip(1)
            .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
            .collect()
    };
    let event = scores(&event_out, &[]);
    let default = event.clone();
    assert_eq!(scores(&event_out, &["--output-score", "event"]), default);
    let level = scores(&level_out, &["--output-score", "level"]);
    assert_eq!((event.len(), level.len()), (2400, 2400));
    let high = |s: &[f64], t: f64| s[fault.clone()].iter().filter(|v| **v >= t).count();
    assert!(
        high(&event, 0.5) <= 3,
        "event fires once: {}",
        high(&event, 0.5)
    );
    assert!(
        high(&level, 0.5) >= 20,
        "level stays high: {}",
        high(&level, 0.5)
    );
    let quiet = level[1000..1900].iter().filter(|v| **v >= 0.9).count();
    assert!(quiet <= 9, "{quiet} normal rows with level >= 0.9");

    // Three sensors of one pump: flow, power ~ flow, pressure ~ -flow; from row 1500 power stops following
    // flow (a worn impeller), though every value stays inside its normal range.
    let multi = dir.path().join("pump.csv");
    let out = dir.path().join("pump-scores.csv");
    let mut rng = fastrand::Rng::with_seed(3);
    let mut text = String::from("timestamp,flow,power,note,pressure\n");
    for i in 0..2000i64 {
        let flow = 20.0 + 10.0 * rng.f64();
        let power = if i >= 1500 {
            9.0 - 0.2 * flow + 2.0
        } else {
            1.0 + 0.2 * flow
        } + 0.05 * rng.f64();
        let pressure = 8.0 - 0.1 * flow + 0.05 * rng.f64();
        text += &format!(
            "{},{flow:.3},{power:.3},x,{pressure:.3}\n",
            1_396_310_400 + i
        );
    }
    std::fs::write(&multi, &text).unwrap();
    let run_cols = |cols: &str, extra: &[&str]| {
        let mut args = vec![
            "--input",
            multi.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--columns",
            cols,
        ];
        args.extend_from_slice(extra);
        detect(&args)
    };
    let run = |extra: &[&str]| run_cols("flow,power,pressure", extra);
    let o = run(&["--output-score", "level"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "timestamp,flow,power,pressure,anomaly_score");
    assert_eq!(lines.len(), 2001);
    let s: Vec<f64> = lines[1..]
        .iter()
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(s[..500].iter().all(|v| *v == 0.0), "silent while training");
    let normal_high = s[500..1500].iter().filter(|v| **v >= 0.9).count();
    let fault_high = s[1500..].iter().filter(|v| **v >= 0.9).count();
    assert!(normal_high <= 5, "{normal_high} normal rows >= 0.9");
    assert!(fault_high >= 450, "{fault_high} of 500 faulty rows >= 0.9");
    // Event output: the fault fires, then stays quiet instead of flagging all 500 rows.
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = std::fs::read_to_string(&out).unwrap();
    let ev: Vec<f64> = t
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        ev[1500..1510].iter().any(|v| *v >= 0.9),
        "the fault fires at once"
    );
    assert!(ev[1500..].iter().filter(|v| **v > 0.0).count() <= 5);

    // A column that is not there, or not a number: clear errors naming the file and line.
    let o = run_cols("flow,speed", &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("pump.csv:1: --columns: no column `speed`"),
        "{err}"
    );
    let o = run_cols("flow,note", &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("pump.csv:2: bad value `x` in column `note`"),
        "{err}"
    );
    let o = run(&["--output-score", "peak"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("unknown --output-score `peak`"),
        "{err}"
    );
}

fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + if m <= 2 { 1 } else { 0 }, m, d)
}

fn site_config(mqtt_port: u16, http_port: u16, state: &std::path::Path) -> String {
    format!(
        r#"[site]
name = "anomaly test"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
client_id = "caretaker-anomaly-{http_port}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[http]
listen = "127.0.0.1:{http_port}"
[pipeline]
shutdown_timeout = "10s"
"#,
        state = state.display(),
        profiles = repo().join("device_profiles").display(),
    )
}

/// Readings of `room-1` seen by the saved detector, from the state file.
fn saved_count(state: &std::path::Path) -> u64 {
    let path = state.join("anomaly").join("detectors.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return 0;
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("state file is JSON");
    v["points"]["room-1/temperature"]["n"].as_u64().unwrap_or(0)
}

async fn publish_run(mqtt_port: u16, cfg: &std::path::Path, from: i64, n: i64) -> String {
    let http = free_port();
    let text = std::fs::read_to_string(cfg).unwrap();
    let text = regex_free_replace_http(&text, http);
    std::fs::write(cfg, text).unwrap();
    let mut daemon = Daemon::start(cfg, http);
    let publisher = Publisher::connect(mqtt_port, &format!("anomaly-pub-{http}"));
    wait_receiving(
        &publisher,
        &daemon,
        "campus/probe/probe/telemetry",
        r#"{"temperature": 1}"#,
    )
    .await;
    const BASE_MS: i64 = 1_767_225_600_000;
    for i in from..from + n {
        let payload = format!(
            r#"{{"ts": {}, "temperature": {:.2}}}"#,
            BASE_MS + i * 60_000,
            21.0 + (i % 30) as f64 * 0.05
        );
        publisher
            .publish("campus/b1/room-1/telemetry", payload)
            .await;
    }
    let ok = wait_until(Duration::from_secs(30), || async {
        daemon
            .metric(r#"caretaker_readings_received_total{source="mqtt"}"#)
            .await
            >= n as f64
    })
    .await;
    assert!(
        ok,
        "daemon did not receive {n} readings:\n{}",
        daemon.log_text()
    );
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0), "{}", daemon.log_text());
    daemon.log_text()
}

fn regex_free_replace_http(text: &str, port: u16) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("listen = ") {
                format!("listen = \"127.0.0.1:{port}\"")
            } else if l.starts_with("client_id = ") {
                format!("client_id = \"caretaker-anomaly-{port}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detector_state_survives_a_restart() {
    let mosq = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg = write_config(dir.path(), &site_config(mosq.port, free_port(), &state));

    publish_run(mosq.port, &cfg, 0, 300).await;
    assert_eq!(saved_count(&state), 300, "state saved at shutdown");

    // Second run: the detector continues from 300 instead of relearning from 0.
    let log = publish_run(mosq.port, &cfg, 300, 200).await;
    assert!(log.contains("anomaly detector state loaded"), "{log}");
    assert_eq!(
        saved_count(&state),
        500,
        "learning continued across the restart"
    );
}
