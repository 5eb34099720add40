//! Randomized property tests over the inputs a user or a peer controls (issue 13, fuzzing). Coverage-guided
//! fuzzing (`cargo afl`) was not set up: see docs/reliability.md `## Fuzzing`. Instead each target mutates real
//! files of the repository (device profiles, rule files, the documented site config) or generated payloads and
//! CSVs with a small seeded mutator, and checks that nothing panics and that every error names its file (and
//! line where the format has lines). No server is needed.
//!
//! Each target runs `CARETAKER_FUZZ_ITERS` inputs (default 300: the test command runs them all in a few seconds);
//! `CARETAKER_FUZZ_SEED` picks another sequence. A panicking input is written to `target/fuzz-findings/` and the
//! test fails naming it; found cases are kept below as regression inputs.

use crate::support::repo;
use caretaker::catalog::profile::{Profile, load_dirs, parse_profile};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn iters() -> u64 {
    std::env::var("CARETAKER_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

fn rng(target: &str) -> fastrand::Rng {
    let seed: u64 = std::env::var("CARETAKER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(13);
    fastrand::Rng::with_seed(
        seed ^ target
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)),
    )
}

/// Tokens that tend to reach odd paths: YAML/TOML/JSON syntax, anchors, huge and odd numbers, durations.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ": ",
    "- ",
    ",",
    "\"",
    "'",
    "\n",
    "\n  ",
    "#",
    "&a ",
    "*a",
    "!!str ",
    "~",
    "null",
    "true",
    "1e308",
    "-1e308",
    "inf",
    "nan",
    "-0",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "0x7f",
    "1000000000000000w",
    "0s",
    "-1s",
    "1.5.2",
    "\u{feff}",
    "é",
    "\u{0}",
    "\\",
    "/",
    "~1",
    "~2",
    "%",
    "{building}",
    "{device}",
    "+",
    "#",
    "2026-13-40T25:61:61Z",
    "1767225600000",
];

/// One random mutation of `data`.
fn mutate(rng: &mut fastrand::Rng, data: &mut Vec<u8>) {
    let n = data.len();
    match rng.u8(0..8) {
        0 if n > 0 => {
            let at = rng.usize(0..n);
            data[at] ^= 1 << rng.u8(0..8);
        }
        1 if n > 0 => {
            let at = rng.usize(0..n);
            let len = rng.usize(1..=(n - at).min(64));
            data.drain(at..at + len);
        }
        2 if n > 0 => {
            let at = rng.usize(0..n);
            let len = rng.usize(1..=(n - at).min(64));
            let chunk: Vec<u8> = data[at..at + len].to_vec();
            let to = rng.usize(0..=data.len());
            data.splice(to..to, chunk);
        }
        3 if n > 0 => data.truncate(rng.usize(0..n)),
        4 => {
            let t = TOKENS[rng.usize(0..TOKENS.len())].as_bytes();
            let to = rng.usize(0..=n);
            data.splice(to..to, t.iter().copied());
        }
        5 if n > 0 => {
            // Replace a number-ish or word-ish run by a token.
            let at = rng.usize(0..n);
            let end = (at..n)
                .find(|&i| !data[i].is_ascii_alphanumeric())
                .unwrap_or(n);
            let t = TOKENS[rng.usize(0..TOKENS.len())].as_bytes();
            data.splice(at..end, t.iter().copied());
        }
        6 => {
            let at = rng.usize(0..=n);
            let bytes: Vec<u8> = (0..rng.usize(1..8)).map(|_| rng.u8(..)).collect();
            data.splice(at..at, bytes);
        }
        _ if n > 1 => {
            // Swap two lines.
            let text = String::from_utf8_lossy(data).into_owned();
            let mut lines: Vec<&str> = text.lines().collect();
            if lines.len() > 1 {
                let (a, b) = (rng.usize(0..lines.len()), rng.usize(0..lines.len()));
                lines.swap(a, b);
                *data = lines.join("\n").into_bytes();
            }
        }
        _ => data.extend_from_slice(TOKENS[rng.usize(0..TOKENS.len())].as_bytes()),
    }
}

/// A mutant of one of `seeds`: 1 to 4 mutations.
fn mutant(rng: &mut fastrand::Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.usize(0..seeds.len())].clone();
    for _ in 0..rng.usize(1..5) {
        mutate(rng, &mut d);
    }
    d
}

/// Runs `f` on `input`; a panic is saved under target/fuzz-findings and fails the test naming the file.
fn no_panic(target: &str, input: &[u8], f: impl FnOnce(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_err() {
        let dir = repo().join("target/fuzz-findings").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("crash-{:016x}", fastrand::u64(..)));
        std::fs::write(&path, input).unwrap();
        panic!("{target}: panic on the input saved as {}", path.display());
    }
}

fn files(dir: &str, ext: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every diagnostic names the file it is about.
fn named(file: &Path, diags: &[caretaker::diag::Diagnostic]) {
    for d in diags {
        let s = d.to_string();
        assert!(
            s.contains(&file.display().to_string()),
            "error without its file: {s}"
        );
        assert!(!d.message.is_empty(), "empty error message: {s}");
    }
}

#[test]
fn fuzz_profile_loading_from_mutated_real_profiles() {
    let real = files("device_profiles", "yaml");
    let seeds: Vec<Vec<u8>> = real.iter().map(|(_, b)| b.clone()).collect();
    let mut rng = rng("profile");
    let file = Path::new("fuzz/profile.yaml");
    for _ in 0..iters() {
        let input = mutant(&mut rng, &seeds);
        no_panic("profile", &input, |b| {
            if let Err(d) = parse_profile(file, &text(b)) {
                assert!(!d.is_empty());
                named(file, &d);
            }
        });
    }
}

#[test]
fn fuzz_rule_loading_from_mutated_real_rules() {
    let (profiles, errs) = load_dirs(&[repo().join("device_profiles")]);
    assert!(errs.is_empty(), "{errs:?}");
    let devices = Default::default();
    let cx = caretaker::rules::load::Context {
        profiles: &profiles,
        devices: &devices,
        timezone: Some("Europe/Zurich"),
    };
    let seeds: Vec<Vec<u8>> = files("rules", "yaml").into_iter().map(|(_, b)| b).collect();
    let mut rng = rng("rules");
    let file = Path::new("fuzz/rules.yaml");
    for _ in 0..iters() {
        let input = mutant(&mut rng, &seeds);
        no_panic("rules", &input, |b| {
            let (_, d) = caretaker::rules::load::parse_rules(file, &text(b), &cx);
            named(file, &d);
        });
    }
}

#[test]
fn fuzz_site_config_loading_from_the_mutated_documented_config() {
    let seed = std::fs::read(repo().join("deploy/caretaker.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("site.toml");
    let mut rng = rng("site-config");
    // Each load reads a file: fewer inputs than the in-memory targets.
    for _ in 0..iters().div_ceil(3) {
        let input = mutant(&mut rng, std::slice::from_ref(&seed));
        std::fs::write(&file, &input).unwrap();
        no_panic("site-config", &input, |_| {
            if let Err(d) = caretaker::config::SiteConfig::load(&file) {
                assert!(!d.is_empty());
                named(&file, &d);
            }
        });
    }
}

/// Payloads a device might send: the fields of the repository's JSON profiles with random values and shapes.
fn payload_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"ts": 1767225600000, "temperature": 21.4, "humidity": 41.0, "co2": 612, "illuminance": 320, "occupancy": true}"#,
        r#"{"temperature": "21.4", "humidity": null, "co2": [1, 2], "occupancy": "yes"}"#,
        r#"{"ts": "2026-01-01T00:00:00Z", "volume": 1234.5, "flow": -1}"#,
        r#"{"ENERGY": {"Total": 12.5, "Power": 230, "Voltage": 231.2, "Current": 1.01}, "Time": "2026-01-01T00:00:00"}"#,
        r#"{"id": 0, "aenergy": {"total": 1000.1}, "apower": 12.0, "voltage": 230.1, "current": 0.1, "temperature": {"tC": 40}}"#,
        r#"{"a_act_power": 1, "b_act_power": 2, "c_act_power": 3, "total_act_power": 6, "total_act_energy": 100}"#,
        r#"21.5"#,
        r#"[]"#,
        r#"{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"j":1}}}}}}}}}}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

#[test]
fn fuzz_mqtt_payload_decoding_through_every_profile() {
    let (profiles, errs) = load_dirs(&[repo().join("device_profiles")]);
    assert!(errs.is_empty(), "{errs:?}");
    let all: Vec<&Profile> = profiles.values().map(|p| &**p).collect();
    assert!(!all.is_empty());
    let seeds = payload_seeds();
    let mut rng = rng("mqtt-payload");
    for _ in 0..iters() * 4 {
        let profile = all[rng.usize(0..all.len())];
        let input = mutant(&mut rng, &seeds);
        no_panic("mqtt-payload", &input, |b| {
            let (mut out, mut problems) = (Vec::new(), Vec::new());
            let r = caretaker::sources::mqtt::decode::decode_payload(
                profile,
                0,
                "fuzz-device",
                b,
                1_767_225_600_000_000_000,
                &mut out,
                &mut problems,
            );
            if let Err(e) = r {
                assert!(!e.to_string().is_empty());
            }
            for r in &out {
                assert!(
                    r.value.is_finite(),
                    "non-finite reading from {profile:?}",
                    profile = profile.name
                );
            }
        });
    }
}

fn csv_seeds() -> Vec<Vec<u8>> {
    [
        "timestamp,value\n2026-01-05T10:15:00+01:00,100.5\n2026-01-05T10:30:00Z,101\n1767225600,102.25\n2026-01-05 10:45,103\n",
        "time;value\n2026-01-05 10:15:00;\"1,5\"\n# comment\n\n2026-03-29 02:30;7\n",
        "timestamp,value\n2026-01-01T00:00:00Z,21.5\n2026-01-01T00:15:00Z,22.0\n2026-01-01T00:30:00Z,nan\n",
        "device,point,timestamp,value\nroom-1,temperature,2026-01-01T00:00:00Z,31\nroom-1,temperature,2026-01-01T00:00:03Z,32\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

#[test]
fn fuzz_every_csv_importer() {
    let seeds = csv_seeds();
    let dir = tempfile::tempdir().unwrap();
    let tz = jiff::tz::TimeZone::get("Europe/Zurich").unwrap();
    let mut rng = rng("csv");
    let file = dir.path().join("fuzz.csv");
    for i in 0..iters() * 2 {
        let input = mutant(&mut rng, &seeds);
        // `caretaker energy import`
        no_panic("csv-energy-import", &input, |b| {
            if let Err(e) =
                caretaker::energy::import::parse_csv(&file, &text(b), &Default::default(), &tz)
            {
                assert!(e.to_string().contains("fuzz.csv"), "{e}");
            }
        });
        // `caretaker detect`
        no_panic("csv-detect", &input, |b| {
            let mut out = Vec::new();
            if let Err(e) = caretaker::anomaly::csv::detect_text(
                &text(b),
                "fuzz.csv",
                &mut out,
                &Default::default(),
            ) {
                assert!(e.to_string().contains("fuzz.csv"), "{e}");
            }
        });
        // `caretaker backtest --csv` reads a file.
        if i % 4 == 0 {
            std::fs::write(&file, &input).unwrap();
            no_panic("csv-backtest", &input, |_| {
                if let Err(errs) = caretaker::cli::backtest::read_csv(&file) {
                    assert!(!errs.is_empty());
                }
            });
        }
    }
}

#[test]
fn fuzz_modbus_register_decoding_through_every_real_binding() {
    use caretaker::sources::modbus::decode::{DecodeError, decode_registers};
    let (profiles, errs) = load_dirs(&[repo().join("device_profiles")]);
    assert!(errs.is_empty(), "{errs:?}");
    let bindings: Vec<_> = profiles
        .values()
        .flat_map(|p| p.points.iter().filter_map(|d| d.modbus.clone()))
        .collect();
    assert!(bindings.len() > 10, "{} Modbus bindings", bindings.len());
    // Register values a hostile or broken server sends: edges, NaN and infinity halves, random.
    const EDGE: &[u16] = &[
        0, 1, 0x7fff, 0x8000, 0xffff, 0x7f80, 0xff80, 0x7fc0, 0xffc0, 0x7ff0, 0xfff8,
    ];
    let mut rng = rng("modbus");
    for _ in 0..iters() * 20 {
        let b = &bindings[rng.usize(0..bindings.len())];
        let width = b.width() as usize;
        let len = rng.usize(0..=width * 2);
        let regs: Vec<u16> = (0..len)
            .map(|_| {
                if rng.bool() {
                    EDGE[rng.usize(0..EDGE.len())]
                } else {
                    rng.u16(..)
                }
            })
            .collect();
        let input: Vec<u8> = regs.iter().flat_map(|r| r.to_be_bytes()).collect();
        no_panic("modbus-registers", &input, |_| {
            match decode_registers(b, &regs) {
                Ok(_) => assert!(len >= width),
                Err(e) => {
                    assert!(
                        matches!(e, DecodeError::Short { .. }) == (len < width),
                        "{e}"
                    );
                    assert!(!e.to_string().is_empty());
                }
            }
        });
    }
}
