//! The deployment kit in `deploy/`: the Grafana dashboards query names Caretaker really writes, the sample and
//! compose configs pass `caretaker check`, and the systemd unit, Dockerfile and compose file hold what the
//! operator guide promises.

use crate::support::*;
use caretaker::catalog::Profiles;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Measurements Caretaker writes that are not a profile category: energy rollups and work-order events
/// (`work_orders` queries are checked against the tags and fields of a point the code writes, see
/// `work_orders_schema`).
const EXTRA_MEASUREMENTS: &[&str] = &["energy", "work_orders"];
/// Tags on every series (plus location tags, see `location_tags`).
const SERIES_TAGS: &[&str] = &["site", "device", "profile"];
/// Columns of a Flux record that are not tags.
const FLUX_COLUMNS: &[&str] = &[
    "_measurement",
    "_field",
    "_value",
    "_time",
    "_start",
    "_stop",
];

/// Tag and field keys of the `work_orders` measurement, read from lines the code writes for a real change
/// (a work order with a team, a point and a value, so every optional key is present).
fn work_orders_schema() -> (BTreeSet<String>, BTreeSet<String>) {
    use caretaker::rules::alarm::{AlarmEvent, AlarmKind, Resolve, Severity};
    use caretaker::work_orders::Store;
    use caretaker::work_orders::influx::{TARGET, encode_row};
    let mut st = Store::in_memory("site").unwrap();
    st.set_targets(&[(TARGET.into(), "influxdb".into())])
        .unwrap();
    let ev = |kind| AlarmEvent {
        kind,
        rule: "r".into(),
        device: "d".into(),
        point: "p".into(),
        severity: Severity::Major,
        title: "t".into(),
        team: Some("hvac".into()),
        procedure: None,
        resolve: Resolve::Auto,
        due_within_ms: None,
        unit: "degC".into(),
        value: 1.0,
        peak: 1.0,
        at_ms: 1_767_225_600_000,
        evidence: vec![],
    };
    st.apply(&ev(AlarmKind::Raised)).unwrap();
    st.apply(&ev(AlarmKind::Cleared)).unwrap();
    let (mut tags, mut fields) = (BTreeSet::new(), BTreeSet::new());
    let mut body = Vec::new();
    for row in st.pending(TARGET, 10).unwrap() {
        assert!(encode_row(&row, &mut body));
    }
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    for line in text.lines() {
        let mut parts = line.split(' ');
        let series = parts.next().unwrap();
        let (measurement, tag_part) = series.split_once(',').unwrap();
        assert_eq!(measurement, "work_orders");
        tags.extend(
            tag_part
                .split(',')
                .map(|kv| kv.split('=').next().unwrap().to_string()),
        );
        fields.extend(
            parts
                .next()
                .unwrap()
                .split(',')
                .map(|kv| kv.split('=').next().unwrap().to_string()),
        );
    }
    (tags, fields)
}

/// Every `"..."` inside the `columns: [...]` lists of a Flux query (group, keep, pivot, sort).
fn column_lists(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("columns: [") {
        let rest = &text[i + "columns: [".len()..];
        let list = &rest[..rest.find(']').unwrap_or(rest.len())];
        out.extend(
            list.split(',')
                .map(|c| c.trim().trim_matches('"').to_string()),
        );
    }
    out.retain(|c| !c.is_empty());
    out
}

/// Checks a query of the `work_orders` measurement against the keys the code writes.
fn check_work_orders_query(q: &str, schema: &(BTreeSet<String>, BTreeSet<String>)) -> Vec<String> {
    let (tags, fields) = schema;
    let mut errs = Vec::new();
    for f in quoted_after(q, "r._field == \"") {
        if !fields.contains(&f) {
            errs.push(format!(
                "work_orders field `{f}` is not written (fields: {fields:?})"
            ));
        }
    }
    for c in columns(q) {
        if !FLUX_COLUMNS.contains(&c.as_str()) && !tags.contains(&c) {
            errs.push(format!(
                "work_orders tag `{c}` is not written (tags: {tags:?})"
            ));
        }
    }
    // After a pivot, fields are columns too.
    let pivoted = q.contains("pivot(");
    for c in column_lists(q) {
        let known = FLUX_COLUMNS.contains(&c.as_str())
            || tags.contains(&c)
            || (pivoted && fields.contains(&c));
        if !known {
            errs.push(format!(
                "work_orders column `{c}` is neither a tag written nor a pivoted field"
            ));
        }
    }
    errs
}

fn profiles() -> Profiles {
    let (p, errs) = caretaker::catalog::profile::load_dirs(&[repo().join("device_profiles")]);
    assert!(errs.is_empty(), "{errs:?}");
    p
}

/// Every `"..."` that follows `needle` in `text`.
fn quoted_after(text: &str, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(needle) {
        rest = &rest[i + needle.len()..];
        if let Some(end) = rest.find('"') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// Record columns a Flux query reads as `r.name`.
fn columns(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("r.") {
        if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'.') {
            continue;
        }
        let name: String = text[i + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Location tags the shipped configs can produce: topic captures other than `{device}` and device locations.
fn location_tags() -> BTreeSet<String> {
    let mut tags = BTreeSet::new();
    for f in ["deploy/caretaker.toml", "deploy/compose/caretaker.toml"] {
        let text = std::fs::read_to_string(repo().join(f)).unwrap();
        let v: toml::Table = text.parse().unwrap();
        if let Some(subs) = v
            .get("mqtt")
            .and_then(|m| m.get("subscriptions"))
            .and_then(|s| s.as_array())
        {
            for s in subs {
                let topic = s["topic"].as_str().unwrap();
                for level in topic.split('/') {
                    if let Some(n) = level.strip_prefix('{').and_then(|l| l.strip_suffix('}')) {
                        tags.insert(n.to_string());
                    }
                }
            }
        }
        if let Some(devs) = v.get("devices").and_then(|d| d.as_array()) {
            for d in devs {
                if let Some(loc) = d.get("location").and_then(|l| l.as_table()) {
                    tags.extend(loc.keys().cloned());
                }
            }
        }
    }
    tags.remove("device");
    tags
}

/// Checks one Flux query against the profiles; returns what is wrong with it.
fn check_query(
    q: &str,
    fields_by_measurement: &BTreeMap<String, BTreeSet<String>>,
    tags: &BTreeSet<String>,
    bool_fields: &BTreeSet<String>,
) -> Vec<String> {
    let mut errs = Vec::new();
    let measurements = quoted_after(q, "r._measurement == \"");
    let fields = quoted_after(q, "r._field == \"");
    let extra = measurements
        .iter()
        .any(|m| EXTRA_MEASUREMENTS.contains(&m.as_str()));
    for m in &measurements {
        if !fields_by_measurement.contains_key(m) && !EXTRA_MEASUREMENTS.contains(&m.as_str()) {
            errs.push(format!(
                "measurement `{m}` is neither a profile category nor one of {EXTRA_MEASUREMENTS:?}"
            ));
        }
    }
    if !fields.is_empty() && measurements.is_empty() {
        errs.push("filters fields without naming a measurement".into());
    }
    if !extra {
        for f in &fields {
            let known = measurements.iter().any(|m| {
                fields_by_measurement
                    .get(m)
                    .is_some_and(|fs| fs.contains(f))
            });
            if !known {
                errs.push(format!(
                    "field `{f}` is not a point of any profile with category {measurements:?}"
                ));
            }
            // Bool points are InfluxDB booleans: mean/max/sum fail on them unless converted.
            if bool_fields.contains(f) && q.contains("aggregateWindow") && !q.contains("toFloat()")
            {
                errs.push(format!(
                    "field `{f}` is a boolean: convert with toFloat() before aggregating"
                ));
            }
        }
        for c in columns(q) {
            if !FLUX_COLUMNS.contains(&c.as_str())
                && !SERIES_TAGS.contains(&c.as_str())
                && !tags.contains(&c)
            {
                errs.push(format!("tag `{c}` is never written by Caretaker"));
            }
        }
    }
    errs
}

fn bool_fields(profiles: &Profiles) -> BTreeSet<String> {
    profiles
        .values()
        .flat_map(|p| p.points.iter())
        .filter(|p| p.unit == caretaker::catalog::Unit::Bool)
        .map(|p| p.name.clone())
        .collect()
}

fn fields_by_measurement(profiles: &Profiles) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in profiles.values() {
        m.entry(p.category.as_str().to_string())
            .or_default()
            .extend(p.points.iter().map(|pt| pt.name.clone()));
    }
    m
}

#[test]
fn dashboards_query_only_measurements_fields_and_tags_caretaker_writes() {
    let profiles = profiles();
    let fbm = fields_by_measurement(&profiles);
    let bools = bool_fields(&profiles);
    let tags = location_tags();
    assert!(tags.contains("building"), "{tags:?}");
    let wo_schema = work_orders_schema();
    let dir = repo().join("deploy/grafana/dashboards");
    let datasource_yaml = std::fs::read_to_string(
        repo().join("deploy/grafana/provisioning/datasources/influxdb.yaml"),
    )
    .unwrap();
    let ds: serde_json::Value = serde_saphyr::from_str(&datasource_yaml).unwrap();
    let ds_uid = ds["datasources"][0]["uid"].as_str().unwrap().to_string();
    assert_eq!(ds["datasources"][0]["jsonData"]["version"], "Flux");

    let mut titles = BTreeSet::new();
    let mut uids = BTreeSet::new();
    let mut queries = 0;
    let mut problems = Vec::new();
    let mut measurements_seen = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let d: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()));
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_string()),
            "duplicate uid"
        );
        titles.insert(d["title"].as_str().unwrap().to_string());
        let panels = d["panels"].as_array().unwrap();
        assert!(!panels.is_empty(), "{}", path.display());
        for p in panels {
            let title = p["title"].as_str().unwrap();
            assert_eq!(p["datasource"]["uid"], ds_uid.as_str(), "{title}");
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{title}: no query");
            for t in targets {
                let q = t["query"].as_str().unwrap();
                queries += 1;
                measurements_seen.extend(quoted_after(q, "r._measurement == \""));
                let mut errs = check_query(q, &fbm, &tags, &bools);
                if quoted_after(q, "r._measurement == \"")
                    .iter()
                    .any(|m| m == "work_orders")
                {
                    errs.extend(check_work_orders_query(q, &wo_schema));
                }
                for e in errs {
                    problems.push(format!(
                        "{} / {title}: {e}",
                        path.file_name().unwrap().to_string_lossy()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for want in ["overview", "energy", "work orders", "gateway health"] {
        assert!(
            titles.iter().any(|t| t.to_lowercase().contains(want)),
            "no `{want}` dashboard in {titles:?}"
        );
    }
    assert!(queries >= 15, "{queries}");
    for m in [
        "environment",
        "electricity",
        "water",
        "hvac",
        "lighting",
        "energy",
        "work_orders",
    ] {
        assert!(measurements_seen.contains(m), "{m} not charted");
    }
}

#[test]
fn the_dashboard_checker_catches_wrong_names() {
    let profiles = profiles();
    let fbm = fields_by_measurement(&profiles);
    let bools = bool_fields(&profiles);
    let tags = location_tags();
    let check = |q: &str| check_query(q, &fbm, &tags, &bools);
    let ok = r#"filter(fn: (r) => r._measurement == "environment" and r._field == "temperature" and r.building == "a")"#;
    assert!(check(ok).is_empty());
    assert!(check(&ok.replace("temperature", "temprature"))[0].contains("temprature"));
    assert!(!check(&ok.replace("environment", "hvacc")).is_empty());
    assert!(!check(&ok.replace("temperature", "water_leak")).is_empty());
    assert!(check(&ok.replace("r.building", "r.bulding"))[0].contains("bulding"));
    let occupancy = ok.replace("temperature", "occupancy");
    assert!(check(&occupancy).is_empty());
    let averaged = format!("{occupancy} |> aggregateWindow(every: 1m, fn: mean)");
    assert!(check(&averaged)[0].contains("boolean"));
    assert!(
        check(&averaged.replace("|> aggregateWindow", "|> toFloat() |> aggregateWindow"))
            .is_empty()
    );
    let schema = work_orders_schema();
    for k in [
        "site", "rule", "device", "point", "severity", "team", "event", "status",
    ] {
        assert!(schema.0.contains(k), "tag {k} not written: {schema:?}");
    }
    for k in ["id", "count", "value", "peak", "open"] {
        assert!(schema.1.contains(k), "field {k} not written: {schema:?}");
    }
    let wo = r#"filter(fn: (r) => r._measurement == "work_orders" and r._field == "open" and r.event == "opened") |> group(columns: ["severity"])"#;
    assert!(check_work_orders_query(wo, &schema).is_empty());
    assert!(
        check_work_orders_query(&wo.replace("\"open\"", "\"opened\""), &schema)[0]
            .contains("opened")
    );
    assert!(check_work_orders_query(&wo.replace("r.event", "r.evnt"), &schema)[0].contains("evnt"));
    assert!(
        check_work_orders_query(&wo.replace("\"severity\"]", "\"id\"]"), &schema)[0]
            .contains("`id`")
    );
    let pivoted = format!(
        "{} |> pivot(rowKey: [\"_time\"], columnKey: [\"_field\"], valueColumn: \"_value\")",
        wo.replace("\"severity\"]", "\"id\"]")
    );
    assert!(check_work_orders_query(&pivoted, &schema).is_empty());
}

fn check(config: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(["check", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_sample_config_documents_every_key_and_passes_check() {
    let path = repo().join("deploy/caretaker.toml");
    let (code, out) = check(&path, &[]);
    assert_eq!(code, 0, "{out}");
    // Every key set in the sample comes with a comment line above it (the "one line of why").
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with('[') {
            continue;
        }
        let key = l.split('=').next().unwrap().trim();
        // The first keys of a table entry (`[[mqtt.subscriptions]]`, `[[devices]]`) are explained above the table.
        let explained = (0..i)
            .rev()
            .take_while(|j| !lines[*j].trim().is_empty())
            .any(|j| {
                lines[j].trim_start().starts_with('#') || lines[j].trim_start().starts_with("[[")
            });
        assert!(
            explained,
            "deploy/caretaker.toml:{}: `{key}` has no comment",
            i + 1
        );
    }
}

#[test]
fn the_compose_config_passes_check_with_the_image_paths() {
    // Inside the image the profiles and rules live in /usr/share/caretaker; point them at the repository.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("deploy/compose/caretaker.toml")).unwrap();
    assert!(text.contains("/usr/share/caretaker/device_profiles"));
    let text = text
        .replace(
            "/usr/share/caretaker/device_profiles",
            &repo().join("device_profiles").display().to_string(),
        )
        .replace(
            "/usr/share/caretaker/rules",
            &repo().join("rules").display().to_string(),
        )
        .replace(
            "/var/lib/caretaker",
            &dir.path().join("state").display().to_string(),
        );
    let cfg = write_config(dir.path(), &text);
    let (code, out) = check(&cfg, &[("CARETAKER_INFLUXDB__TOKEN", "t0ken")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("influxdb: http://influxdb:8086 (v2)"), "{out}");
    // Without the token (no .env) the operator is told which key is missing.
    let (code, out) = check(&cfg, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("influxdb.token"), "{out}");
}

#[test]
fn the_systemd_unit_is_hardened() {
    let text = std::fs::read_to_string(repo().join("deploy/systemd/caretaker.service")).unwrap();
    let keys: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let has = |k: &str, v: &str| keys.iter().any(|(a, b)| a == k && b == v);
    for (k, v) in [
        ("User", "caretaker"),
        ("StateDirectory", "caretaker"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("SupplementaryGroups", "dialout"),
        ("Restart", "on-failure"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("Environment", "CARETAKER_STATE__DIR=/var/lib/caretaker"),
        // The watchdog (READY=1, then WATCHDOG=1 while every task is healthy): tests/it/watchdog.rs.
        ("Type", "notify"),
        ("WatchdogSec", "30s"),
        // `systemctl reload caretaker` is SIGHUP: tests/it/reload.rs.
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Documentation", "file:///usr/share/doc/caretaker/README.md"),
    ] {
        assert!(has(k, v), "caretaker.service lacks {k}={v}");
    }
    assert!(keys.iter().any(|(k, v)| k == "ExecStart"
        && v.contains("caretaker run --config /etc/caretaker/caretaker.toml")));
    // systemd's own parser, where the machine has it (the binary path is swapped for one that exists).
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("caretaker.service");
        std::fs::write(&unit, text.replace("/usr/local/bin/caretaker", "/bin/true")).unwrap();
        let out = Command::new("/usr/bin/systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("caretaker.service:"),
            "systemd-analyze verify: {err}"
        );
    }
}

#[test]
fn the_compose_file_wires_the_stack_and_its_files_exist() {
    let text = std::fs::read_to_string(repo().join("deploy/compose.yaml")).unwrap();
    let c: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let services = c["services"].as_object().unwrap();
    for s in ["mosquitto", "influxdb", "grafana", "caretaker", "simulator"] {
        assert!(services.contains_key(s), "no service {s}");
    }
    assert!(
        c["services"]["mosquitto"]["image"]
            .as_str()
            .unwrap()
            .starts_with("eclipse-mosquitto:")
    );
    assert!(
        c["services"]["influxdb"]["image"]
            .as_str()
            .unwrap()
            .starts_with("influxdb:2")
    );
    assert_eq!(c["services"]["simulator"]["profiles"][0], "simulator");
    assert!(
        services["caretaker"].get("profiles").is_none(),
        "caretaker must start by default"
    );
    // Bind mounts name files of this repository.
    for (name, s) in services {
        for v in s["volumes"].as_array().into_iter().flatten() {
            let v = v.as_str().unwrap();
            if let Some(src) = v.split(':').next().filter(|s| s.starts_with("./")) {
                assert!(
                    repo().join("deploy").join(src).exists(),
                    "{name}: {src} does not exist"
                );
            }
        }
    }
    // The InfluxDB org and bucket match the compose config Caretaker writes with.
    let env = &c["services"]["influxdb"]["environment"];
    let cfg: toml::Table = std::fs::read_to_string(repo().join("deploy/compose/caretaker.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        env["DOCKER_INFLUXDB_INIT_ORG"],
        cfg["influxdb"]["org"].as_str().unwrap()
    );
    assert_eq!(
        env["DOCKER_INFLUXDB_INIT_BUCKET"],
        cfg["influxdb"]["bucket"].as_str().unwrap()
    );
    // The simulator's site file is shipped in the image.
    let docker = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    assert!(docker.matches("\nFROM ").count() + usize::from(docker.starts_with("FROM ")) >= 2);
    for line in docker
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(repo().join(src).exists(), "Dockerfile copies missing {src}");
        }
    }
}

#[test]
fn the_commands_in_the_kit_are_ones_the_cli_accepts() {
    use clap::Parser;
    let parse = |args: Vec<String>, origin: &str| {
        let mut argv = vec!["caretaker".to_string()];
        argv.extend(args);
        if let Err(e) = caretaker::cli::Cli::try_parse_from(&argv) {
            panic!("{origin}: `{}` is rejected: {e}", argv.join(" "));
        }
    };
    // compose: the simulator's command.
    let text = std::fs::read_to_string(repo().join("deploy/compose.yaml")).unwrap();
    let c: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let cmd: Vec<String> = c["services"]["simulator"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(cmd[0], "simulate");
    parse(cmd, "compose.yaml simulator");
    // systemd: ExecStart and ExecStartPre.
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/caretaker.service")).unwrap();
    for l in unit.lines().filter(|l| l.starts_with("ExecStart")) {
        let v = l.split_once('=').unwrap().1;
        let args: Vec<String> = v.split_whitespace().skip(1).map(String::from).collect();
        parse(args, l);
    }
    // Dockerfile: the default command.
    let docker = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let cmd_line = docker.lines().find(|l| l.starts_with("CMD ")).unwrap();
    let args: Vec<String> = serde_json::from_str(&cmd_line[4..]).unwrap();
    parse(args, "Dockerfile CMD");
}
