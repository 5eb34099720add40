//! `caretaker check`: validates the config, profiles and rules; a summary of the site when all is well,
//! every error with file:line otherwise.

/// `caretaker check --format json`: one JSON document on stdout for a site's CI, exit code as for text (0
/// valid, 1 not). `diagnostics` lists every problem as `{file, line, column, key, message, severity}` (line,
/// column and key `null` where not known); severity is `error` (the config is refused), `warning` (a rule
/// no profile can meet) or `note`.
pub fn run_json(config: &std::path::Path) -> i32 {
    let diag = |d: &crate::diag::Diagnostic, severity: &str| {
        serde_json::json!({
            "file": d.file.display().to_string(),
            "line": d.line,
            "column": d.column,
            "key": (!d.key.is_empty()).then_some(d.key.as_str()),
            "message": d.message,
            "severity": severity,
        })
    };
    let (code, doc) = match crate::app::load(config) {
        Ok(l) => {
            let mut notes = Vec::new();
            for p in l.catalog.profiles.values().filter(|p| p.sources.is_empty()) {
                let d = crate::diag::Diagnostic::new(
                    &p.file,
                    None,
                    "sources",
                    format!(
                        "profile {} has no `sources:` (where its map or payload comes from)",
                        p.name
                    ),
                );
                notes.push(diag(&d, "note"));
            }
            for r in l.rules.dormant(&l.catalog.profiles) {
                let d = crate::diag::Diagnostic::new(
                    &r.file,
                    Some(r.line),
                    r.name.clone(),
                    format!(
                        "dormant: no profile of this site has point `{}` for its applies_to",
                        r.point.as_deref().unwrap_or("-")
                    ),
                );
                notes.push(diag(&d, "warning"));
            }
            let doc = serde_json::json!({
                "ok": true,
                "config": config.display().to_string(),
                "errors": 0,
                "diagnostics": notes,
                "summary": {
                    "site": l.config.site.name,
                    "profiles": l.catalog.profiles.len(),
                    "devices": l.catalog.devices().count(),
                    "points": l.catalog.point_count(),
                    "rules": l.rules.len(),
                },
            });
            (0, doc)
        }
        Err(errs) => {
            let doc = serde_json::json!({
                "ok": false,
                "config": config.display().to_string(),
                "errors": errs.len(),
                "diagnostics": errs.iter().map(|d| diag(d, "error")).collect::<Vec<_>>(),
            });
            (1, doc)
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
    );
    code
}

/// `caretaker check`: exit 0 and a summary when valid, 1 and every error otherwise.
pub fn run(config: &std::path::Path) -> i32 {
    match crate::app::load(config) {
        Ok(l) => {
            let c = &l.config;
            println!("{}: ok", config.display());
            println!("site: {}", c.site.name);
            println!(
                "profiles: {} ({})",
                l.catalog.profiles.len(),
                l.catalog
                    .profiles
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for p in l.catalog.profiles.values().filter(|p| p.sources.is_empty()) {
                println!(
                    "  note: profile {} ({}) has no `sources:` (where its map or payload comes from; see docs/profiles.md)",
                    p.name,
                    p.file.display()
                );
            }
            println!(
                "devices: {} declared, {} points",
                l.catalog.device_count(),
                l.catalog.point_count()
            );
            for (_, d) in l.catalog.devices() {
                println!(
                    "  {} ({}, {} points)",
                    d.id,
                    d.profile.name,
                    d.profile.points.len()
                );
            }
            match &c.mqtt {
                Some(m) => {
                    println!("subscriptions: {}", m.subscriptions.len());
                    for s in &m.subscriptions {
                        let points = l
                            .catalog
                            .profiles
                            .get(&s.profile)
                            .map(|p| p.points.len())
                            .unwrap_or(0);
                        println!(
                            "  {} -> {} ({} points per device)",
                            s.topic.text, s.profile, points
                        );
                    }
                }
                None => println!("subscriptions: 0 (no [mqtt])"),
            }
            print_modbus(&l);
            print_bacnet(&l);
            match &c.influxdb {
                Some(i) => {
                    println!(
                        "influxdb: {} ({})",
                        i.url,
                        match i.api {
                            crate::sinks::influx::config::InfluxApi::V1 { .. } => "v1",
                            _ => "v2",
                        }
                    );
                    print_batch_cap(i);
                }
                None => println!("influxdb: not configured"),
            }
            println!(
                "rules: {} in {} folder(s)",
                l.rules.len(),
                c.rule_dirs.len()
            );
            for r in l.rules.dormant(&l.catalog.profiles) {
                println!(
                    "  dormant: {} ({}:{}): no profile of this site has point `{}` for its applies_to",
                    r.name,
                    r.file.display(),
                    r.line,
                    r.point.as_deref().unwrap_or("-")
                );
            }
            println!(
                "work-order targets: {}",
                if c.work_orders.targets.is_empty() {
                    "none (the local store holds them)".to_string()
                } else {
                    c.work_orders
                        .targets
                        .iter()
                        .map(|t| t.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            if let Some(e) = &c.energy {
                let meters = l
                    .catalog
                    .devices()
                    .filter(|(_, d)| crate::energy::meter_point(d).is_some())
                    .count();
                println!(
                    "energy: {} min intervals, {meters} declared meter(s), {} tariff(s), {} virtual meter(s)",
                    e.period / 60,
                    e.tariffs.len(),
                    e.virtual_meters.len()
                );
                for v in &e.virtual_meters {
                    for (_, t) in &v.terms {
                        if l.catalog.device_by_id(t).is_none() {
                            println!(
                                "  note: virtual meter `{}` uses `{t}`, not declared under [[devices]] \
                                 (fine if it arrives over MQTT)",
                                v.name
                            );
                        }
                    }
                }
            }
            println!("state: {}", c.state_dir.display());
            0
        }
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s) in {}", errs.len(), config.display());
            1
        }
    }
}

/// A `note:` when `batch_size` lines would not fit in one batch of the spool (a quarter of `spool_max_bytes`, so
/// that `drop_oldest` always has something to drop): writes then carry fewer lines than configured. Not an error:
/// the spool cuts the batches itself.
fn print_batch_cap(i: &crate::sinks::influx::config::InfluxConfig) {
    use crate::sinks::influx::config::TYPICAL_LINE_BYTES;
    let cap = crate::sinks::influx::spool::max_batch_bytes(i.spool_max_bytes);
    let wanted = i.batch_size as u64 * TYPICAL_LINE_BYTES;
    if wanted > cap {
        println!(
            "  note: batches are cut to {cap} bytes (a quarter of spool_max_bytes = {}, about {} lines); \
             batch_size = {} lines is about {wanted} bytes at ~{TYPICAL_LINE_BYTES} bytes a line, so writes \
             carry fewer lines (see docs/spool.md, \"Batch cap\")",
            i.spool_max_bytes,
            cap / TYPICAL_LINE_BYTES,
            i.batch_size,
        );
    }
}

/// The Modbus part of `caretaker check`: links, their devices, and requests per full poll cycle (optimal plan
/// versus one request per point).
fn print_modbus(l: &crate::app::Loaded) {
    let links = {
        let cat = &l.catalog;
        crate::sources::modbus::build(&crate::app::modbus_devices(&l.config), cat)
    };
    let devices: usize = links.iter().map(|k| k.device_count()).sum();
    println!("modbus: {} link(s), {devices} device(s)", links.len());
    for link in &links {
        println!("  {}", link.addr);
        for (id, m, profile) in link.devices() {
            let (best, naive, _) = crate::sources::modbus::requests_per_cycle(profile);
            let mut every = crate::util::format_duration(m.poll);
            for (point, d) in &m.point_polls {
                every.push_str(&format!(
                    ", {point} every {}",
                    crate::util::format_duration(*d)
                ));
            }
            println!(
                "    {id} (unit {}, {}, every {every}): {best} request(s) per cycle ({naive} with one per point)",
                m.unit, profile.name,
            );
        }
    }
}

/// The BACnet part of `caretaker check`: the endpoint and, per device, requests per full poll with
/// ReadPropertyMultiple at a 1476-byte max APDU versus one ReadProperty per property (the real batches follow the
/// device's own max APDU, read at start).
fn print_bacnet(l: &crate::app::Loaded) {
    let Some(b) = &l.config.bacnet else {
        return;
    };
    let pollers = crate::sources::bacnet::build(&crate::app::bacnet_devices(&l.config), &l.catalog);
    let bbmd = b
        .bbmd
        .as_ref()
        .map(|(h, p)| format!(", foreign device of BBMD {h}:{p}"))
        .unwrap_or_default();
    println!("bacnet: bind {}{bbmd}, {} device(s)", b.bind, pollers.len());
    for d in &pollers {
        let s = &d.settings;
        let (rpm, single) =
            crate::sources::bacnet::poll::requests_per_poll(&d.profile, 1476, false);
        println!(
            "    {} (device {} at {}:{}, {}, every {}{}): {rpm} ReadPropertyMultiple request(s) per poll ({single} with one ReadProperty per property)",
            d.id,
            s.device_instance,
            s.address.0,
            s.address.1,
            d.profile.name,
            crate::util::format_duration(s.poll),
            if s.cov { ", COV" } else { "" },
        );
    }
}
