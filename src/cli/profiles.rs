//! `caretaker profiles list|show|docs`: the device profile library, from the profile files themselves.
//!
//! `list` is a table (or JSON) of every profile: name, manufacturer, model, protocol, points, first source.
//! `show NAME` prints one profile's points with their units, ranges and registers or JSON pointers. `docs`
//! writes the Markdown table of `docs/devices.md`; a unit test fails when that file is out of date.

use crate::catalog::modbus_binding::{DataType, ModbusBinding};
use crate::catalog::profile::{self, MqttValue, PointDef, Profile};
use clap::{Subcommand, ValueEnum};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Every profile: name, manufacturer, model, protocol, points, source.
    List {
        /// Profile folders (repeatable; default `device_profiles`).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One profile's points: units, ranges, registers or JSON pointers, and its sources.
    Show {
        name: String,
        /// Profile folders (repeatable; default `device_profiles`).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
    /// Write the profile table of docs/devices.md (to stdout, or into the file given).
    Docs {
        /// Profile folders (repeatable; default `device_profiles`).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// File to write (e.g. docs/devices.md); default: stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// Runs a `profiles` subcommand; returns the exit code.
pub fn run(cmd: ProfilesCommand) -> anyhow::Result<i32> {
    match cmd {
        ProfilesCommand::List { dirs, format } => {
            let profiles = load(dirs)?;
            match format {
                Format::Table => print!("{}", table(&profiles)),
                Format::Json => println!("{}", serde_json::to_string_pretty(&json(&profiles))?),
            }
            Ok(0)
        }
        ProfilesCommand::Show { name, dirs } => {
            let profiles = load(dirs)?;
            match profiles.iter().find(|p| p.name == name) {
                Some(p) => {
                    print!("{}", show(p));
                    Ok(0)
                }
                None => {
                    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
                    let hint = crate::util::did_you_mean(&name, names.iter().copied())
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    eprintln!(
                        "no profile `{name}`{hint}; `caretaker profiles list` shows them all"
                    );
                    Ok(1)
                }
            }
        }
        ProfilesCommand::Docs { dirs, output } => {
            let text = docs_page(&load(dirs)?);
            match output {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(0)
        }
    }
}

/// Loads the profiles of the folders (default `device_profiles`); any problem in any file is an error.
fn load(mut dirs: Vec<PathBuf>) -> anyhow::Result<Vec<Profile>> {
    if dirs.is_empty() {
        dirs.push(PathBuf::from("device_profiles"));
    }
    let (profiles, errs) = profile::load_dirs(&dirs);
    if !errs.is_empty() {
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        anyhow::bail!("{}", text.join("\n"));
    }
    Ok(profiles.values().map(|p| (**p).clone()).collect())
}

/// `modbus`, `mqtt`, `modbus+mqtt`, `bacnet` or `bacnet+mqtt`.
fn protocol(p: &Profile) -> &'static str {
    if p.has_bacnet() {
        return if p.has_mqtt() {
            "bacnet+mqtt"
        } else {
            "bacnet"
        };
    }
    match (p.has_modbus(), p.has_mqtt()) {
        (true, true) => "modbus+mqtt",
        (true, false) => "modbus",
        _ => "mqtt",
    }
}

/// Points the device itself provides (not the synthetic `online`).
fn device_points(p: &Profile) -> usize {
    p.points
        .iter()
        .filter(|d| d.mqtt.is_some() || d.modbus.is_some() || d.bacnet.is_some())
        .count()
}

fn first_source(p: &Profile) -> &str {
    p.sources.first().map(String::as_str).unwrap_or("-")
}

fn table(profiles: &[Profile]) -> String {
    let rows: Vec<[String; 6]> = profiles
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.manufacturer.clone().unwrap_or_default(),
                p.model.clone().unwrap_or_default(),
                protocol(p).to_string(),
                device_points(p).to_string(),
                first_source(p).to_string(),
            ]
        })
        .collect();
    let head = [
        "NAME",
        "MANUFACTURER",
        "MODEL",
        "PROTOCOL",
        "POINTS",
        "SOURCE",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count().min(48));
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let c: String = c
                .chars()
                .take(if i == 5 { usize::MAX } else { 48 })
                .collect();
            if i == 5 {
                l.push_str(&c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = width[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &head);
    for r in &rows {
        line(&mut out, &r.each_ref().map(String::as_str));
    }
    out
}

fn json(profiles: &[Profile]) -> serde_json::Value {
    serde_json::Value::Array(
        profiles
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "manufacturer": p.manufacturer,
                    "model": p.model,
                    "category": p.category.as_str(),
                    "protocol": protocol(p),
                    "points": device_points(p),
                    "sources": p.sources,
                })
            })
            .collect(),
    )
}

/// Where a point is read from, in one line.
fn binding(d: &PointDef) -> String {
    if let Some(m) = &d.modbus {
        return modbus_text(m);
    }
    if let Some(b) = &d.bacnet {
        return format!("bacnet: {} {}", b.object, b.property_name());
    }
    match &d.mqtt {
        Some(b) => match &b.source {
            MqttValue::Raw => "mqtt: whole payload".into(),
            MqttValue::Json(_) => {
                let ptrs: Vec<&str> = b.pointers().collect();
                let mut s = format!("mqtt: {}", ptrs.join(" | "));
                if b.array_sum {
                    s.push_str(" (arrays summed)");
                }
                s
            }
        },
        None => "set by Caretaker".into(),
    }
}

fn modbus_text(m: &ModbusBinding) -> String {
    let mut s = format!(
        "modbus: {} {} (0x{:04X}) {}",
        m.table.as_str(),
        m.address,
        m.address,
        format!("{:?}", m.data_type).to_lowercase()
    );
    if m.width() > 1 && !matches!(m.data_type, DataType::String) {
        let _ = write!(s, " {}", format!("{:?}", m.order).to_uppercase());
    }
    if let Some(b) = m.bit {
        let _ = write!(s, " bit {b}");
    }
    s
}

fn show(p: &Profile) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} ({})", p.name, p.file.display());
    let _ = writeln!(
        out,
        "  {} {} — {}, {}",
        p.manufacturer.as_deref().unwrap_or("-"),
        p.model.as_deref().unwrap_or("-"),
        p.category,
        protocol(p)
    );
    if p.sources.is_empty() {
        let _ = writeln!(out, "  sources: none given");
    }
    for s in &p.sources {
        let _ = writeln!(out, "  source: {s}");
    }
    let _ = writeln!(out, "  points ({}):", p.points.len());
    for d in &p.points {
        let unit = if d.wire_unit == d.unit {
            d.unit.to_string()
        } else {
            format!("{} ({} on the wire)", d.unit, d.wire_unit)
        };
        let range = d
            .valid_range
            .map(|(lo, hi)| format!(" range [{lo}, {hi}]"))
            .unwrap_or_default();
        let scale = if d.scale != 1.0 || d.offset != 0.0 {
            format!(
                " ×{}{}",
                d.scale,
                if d.offset != 0.0 {
                    format!(" + {}", d.offset)
                } else {
                    String::new()
                }
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "    {:<24} {:<22} {:<8} {}{scale}{range}",
            d.name,
            unit,
            d.kind.as_str(),
            binding(d)
        );
    }
    out
}

/// The generated part of docs/devices.md.
pub fn docs_page(profiles: &[Profile]) -> String {
    let mut out = String::from(
        "# Device profiles\n\n\
         <!-- Generated by `caretaker profiles docs --output docs/devices.md` from device_profiles/; a test fails \
         when this file is out of date. -->\n\n\
         Every profile in `device_profiles/`, with where its register map or payload comes from. \
         `caretaker profiles show NAME` prints a profile's points, units, ranges and registers or JSON pointers; \
         each profile has a fixture in `tests/fixtures/profiles/` (a captured payload or a register dump with the \
         values it must give) that `cargo test` replays. How the sources were checked, the units rule and how to \
         add a profile: [profiles.md](profiles.md).\n\n\
         | profile | manufacturer | model | protocol | points | sources |\n|---|---|---|---|---|---|\n",
    );
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    for p in profiles {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} |",
            p.name,
            cell(p.manufacturer.as_deref().unwrap_or("")),
            cell(p.model.as_deref().unwrap_or("")),
            protocol(p),
            device_points(p),
            cell(&p.sources.join("; "))
        );
    }
    let generic = profiles
        .iter()
        .filter(|p| p.manufacturer.as_deref() == Some("generic"))
        .count();
    let _ = writeln!(
        out,
        "\n{} profiles: {} from published maps or payloads, {generic} generic templates (no vendor map; adapt them to \
         your device's map).",
        profiles.len(),
        profiles.len() - generic
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::modbus_binding::Table;
    use serde_json::Value;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn library() -> Vec<Profile> {
        load(vec![repo().join("device_profiles")]).unwrap()
    }

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= 1e-6 * want.abs().max(1.0)
    }

    /// Replays one fixture case through a profile: the points read and their values, the points with problems.
    fn replay(p: &Profile, case: &Value) -> (BTreeMap<String, f64>, BTreeSet<String>, Vec<i64>) {
        let mut got = BTreeMap::new();
        let mut bad = BTreeSet::new();
        let mut times = Vec::new();
        if let Some(payload) = case.get("mqtt") {
            let bytes = match payload {
                Value::String(s) => s.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            };
            let (mut out, mut problems) = (Vec::new(), Vec::new());
            let received = 7;
            crate::sources::mqtt::decode_payload(
                p,
                0,
                "dev",
                &bytes,
                received,
                &mut out,
                &mut problems,
            )
            .unwrap_or_else(|e| panic!("{}: {}: {e}", p.name, case["name"]));
            for r in out {
                got.insert(p.points[r.point.0 as usize].name.clone(), r.value);
                times.push(r.at);
            }
            bad.extend(problems.into_iter().map(|pr| pr.point));
        }
        if let Some(objects) = case.get("bacnet") {
            // Present values by object (`"analog-input:1": 21.5`), as a ReadPropertyMultiple answer carries them.
            for d in &p.points {
                let Some(b) = &d.bacnet else { continue };
                let Some(v) = objects.get(b.object.to_string()).and_then(Value::as_f64) else {
                    continue;
                };
                match d.convert(v) {
                    Ok(v) => {
                        got.insert(d.name.clone(), v);
                    }
                    Err(_) => {
                        bad.insert(d.name.clone());
                    }
                }
            }
        }
        if let Some(regs) = case.get("registers") {
            // Word at (table, address) from the dump's blocks.
            let mut words: BTreeMap<(Table, u16), u16> = BTreeMap::new();
            for (table, blocks) in regs.as_object().unwrap() {
                let t = Table::parse(table).unwrap_or_else(|| panic!("table {table}"));
                for (start, ws) in blocks.as_object().unwrap() {
                    let start: u16 = start.parse().unwrap();
                    for (i, w) in ws.as_array().unwrap().iter().enumerate() {
                        words.insert((t, start + i as u16), w.as_u64().unwrap() as u16);
                    }
                }
            }
            for d in &p.points {
                let Some(m) = &d.modbus else { continue };
                let ws: Option<Vec<u16>> = (0..m.width())
                    .map(|i| words.get(&(m.table, m.address + i)).copied())
                    .collect();
                let Some(ws) = ws else { continue };
                let raw = if m.table.is_bits() {
                    Ok(crate::sources::modbus::decode::decode_bit(ws[0] != 0))
                } else {
                    crate::sources::modbus::decode::decode_registers(m, &ws)
                        .map_err(|e| e.to_string())
                };
                match raw.map(|r| d.convert(r)) {
                    Ok(Ok(v)) => {
                        got.insert(d.name.clone(), v);
                    }
                    _ => {
                        bad.insert(d.name.clone());
                    }
                }
            }
        }
        (got, bad, times)
    }

    fn fixture(name: &str) -> Option<Value> {
        let path = repo()
            .join("tests/fixtures/profiles")
            .join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).ok()?;
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    /// Every shipped profile names its sources and has a fixture; every fixture case gives exactly the values it
    /// expects (in the stored units), and only the problems it lists.
    #[test]
    fn every_profile_replays_its_fixture() {
        let profiles = library();
        assert!(profiles.len() >= 12, "{}", profiles.len());
        let mut failures = Vec::new();
        for p in &profiles {
            if p.sources.is_empty() {
                failures.push(format!("{}: no `sources:`", p.name));
            }
            let Some(fx) = fixture(&p.name) else {
                failures.push(format!(
                    "{}: no tests/fixtures/profiles/{}.json",
                    p.name, p.name
                ));
                continue;
            };
            assert!(
                fx["source"].as_str().is_some_and(|s| !s.is_empty()),
                "{}: fixture source",
                p.name
            );
            let cases = fx["cases"].as_array().unwrap();
            assert!(!cases.is_empty(), "{}", p.name);
            for case in cases {
                let label = format!("{} / {}", p.name, case["name"].as_str().unwrap_or("?"));
                let (got, bad, times) = replay(p, case);
                let want: BTreeMap<String, f64> = case["expect"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
                    .collect();
                for (k, w) in &want {
                    match got.get(k) {
                        Some(g) if close(*g, *w) => {}
                        Some(g) => failures.push(format!("{label}: {k} = {g}, expected {w}")),
                        None => failures.push(format!("{label}: {k} not read (expected {w})")),
                    }
                }
                for k in got.keys().filter(|k| !want.contains_key(*k)) {
                    failures.push(format!("{label}: {k} = {} read but not in expect", got[k]));
                }
                let want_bad: BTreeSet<String> = case
                    .get("problems")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                if bad != want_bad {
                    failures.push(format!("{label}: problems {bad:?}, expected {want_bad:?}"));
                }
                if let Some(ms) = case.get("time_ms").and_then(Value::as_i64) {
                    if times.iter().any(|t| *t != ms * 1_000_000) {
                        failures.push(format!(
                            "{label}: reading times {times:?}, expected {ms} ms"
                        ));
                    }
                }
            }
        }
        let names: BTreeSet<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        for e in std::fs::read_dir(repo().join("tests/fixtures/profiles")).unwrap() {
            let path = e.unwrap().path();
            if path.extension().is_some_and(|x| x == "json") {
                let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
                if !names.contains(stem.as_str()) {
                    failures.push(format!("fixture {stem}.json names no profile"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn docs_devices_md_is_up_to_date() {
        let want = docs_page(&library());
        let path = repo().join("docs/devices.md");
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/devices.md is out of date with device_profiles/: run `cargo run -- profiles docs --output docs/devices.md`"
        );
    }

    #[test]
    fn list_and_show_name_the_points_units_and_registers() {
        let profiles = library();
        let t = table(&profiles);
        assert!(t.starts_with("NAME"), "{t}");
        assert!(t.contains("carlo-gavazzi-em24-rs485"), "{t}");
        let j = json(&profiles);
        let em24 = j
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "carlo-gavazzi-em24-rs485")
            .unwrap();
        assert_eq!(em24["protocol"], "modbus");
        assert!(em24["sources"].as_array().unwrap().len() >= 2);
        let p = profiles
            .iter()
            .find(|p| p.name == "carlo-gavazzi-em24-rs485")
            .unwrap();
        let s = show(p);
        assert!(s.contains("energy_import"), "{s}");
        assert!(s.contains("input 62 (0x003E) i32 CDAB"), "{s}");
        let shelly = profiles
            .iter()
            .find(|p| p.name == "shelly-plus-pm")
            .unwrap();
        let s = show(shelly);
        assert!(s.contains("kWh (Wh on the wire)"), "{s}");
        assert!(
            s.contains("/aenergy/total | /params/switch:0/aenergy/total"),
            "{s}"
        );
        let _ = Path::new("");
    }
}
