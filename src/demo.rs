//! `caretaker demo`: the whole job in one process with nothing else installed. An embedded MQTT broker
//! (rumqttd), the simulated campus of `deploy/demo/site.toml` and the daemon itself, sharing one simulated
//! clock, with a live summary on the terminal and a report at the end.
//!
//! The daemon is the real one (`app::run_until_with`) on a config generated from the site file: every simulated
//! device is declared, MQTT devices get subscriptions, Modbus devices get `modbus = { url = "tcp://..." }` with a
//! poll period scaled to the simulated speed. The demo watches the readings through a pipeline stage of its own.

use crate::catalog::{Catalog, DeviceIdx, Kind, Unit};
use crate::pipeline::Stage;
use crate::reading::Reading;
use crate::simulate::site::{SiteSpec, Transport};
use crate::simulate::{self, Clock, Options};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The shipped demo site, built into the binary so `caretaker demo` works from any folder.
pub const DEMO_SITE: &str = include_str!("../deploy/demo/site.toml");

/// A work order as the demo shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RaisedWorkOrder {
    pub id: i64,
    pub rule: String,
    pub device: String,
    pub status: String,
    /// Simulated time it opened, ns.
    pub opened_at_ns: i64,
}

/// Where the demo reads work orders (the daemon's work-order store under the state dir). The demo works without
/// one: it then shows "n/a" and lists the scripted faults only.
pub trait WorkOrderView: Send + Sync {
    fn list(&self, state_dir: &Path) -> Vec<RaisedWorkOrder>;
}

/// Pairs each work order with the scripted fault it caught (same device, opened after the fault began): the
/// second list holds the faults no work order caught. A work order paired with `None` is a false positive.
pub fn match_faults<'a>(
    faults: &'a [simulate::ScriptedFault],
    work_orders: &'a [RaisedWorkOrder],
) -> (
    Vec<(&'a RaisedWorkOrder, Option<&'a simulate::ScriptedFault>)>,
    Vec<&'a simulate::ScriptedFault>,
) {
    let pairs: Vec<_> = work_orders
        .iter()
        .map(|w| {
            let f = faults
                .iter()
                .filter(|f| f.device == w.device && f.from_ns <= w.opened_at_ns)
                .max_by_key(|f| f.from_ns);
            (w, f)
        })
        .collect();
    let missed = faults
        .iter()
        .filter(|f| {
            !pairs
                .iter()
                .any(|(_, m)| m.is_some_and(|m| std::ptr::eq(m, *f)))
        })
        .collect();
    (pairs, missed)
}

/// A finished demo run, for hooks that work on its results.
#[derive(Debug, Clone)]
pub struct DemoRun {
    /// The daemon's generated config file.
    pub config: PathBuf,
    pub state: PathBuf,
    /// First and last simulated day, in the site's time zone (`2026-01-12`).
    pub first_day: String,
    pub last_day: String,
}

/// Writes the HTML energy report of a finished demo and returns its path; `None` until the energy module is
/// built in.
pub type EnergyReportFn = Arc<dyn Fn(&DemoRun) -> anyhow::Result<PathBuf> + Send + Sync>;

/// What `caretaker demo` was asked for.
#[derive(Clone)]
pub struct DemoOptions {
    /// Work orders to show (None until the rules engine is built in).
    pub work_orders: Option<Arc<dyn WorkOrderView>>,
    /// Writes the HTML energy report at the end.
    pub energy_report: Option<EnergyReportFn>,
    pub speed: Option<f64>,
    pub run_for: Option<Duration>,
    pub state: Option<PathBuf>,
    pub site: Option<PathBuf>,
    pub profiles: Option<PathBuf>,
    pub rules: Option<PathBuf>,
    /// 0 = a free port.
    pub broker_port: u16,
}

/// What the demo's stage has seen.
#[derive(Debug, Default)]
pub struct Observed {
    pub readings: u64,
    pub by_category: BTreeMap<&'static str, u64>,
    /// Simulated time of each device's last reading.
    pub last_seen: BTreeMap<DeviceIdx, (String, i64)>,
    /// Energy counters: point → (first value of the current day, last value, day, unit factor to kWh).
    counters: BTreeMap<u32, (f64, f64, i32, f64)>,
    /// Water counters (m3), same layout.
    water: BTreeMap<u32, (f64, f64, i32, f64)>,
}

impl Observed {
    fn today(m: &BTreeMap<u32, (f64, f64, i32, f64)>, day: i32) -> f64 {
        m.values()
            .filter(|c| c.2 == day)
            .map(|c| (c.1 - c.0).max(0.0) * c.3)
            .sum::<f64>()
            + 0.0 // no "-0.0" on an empty day
    }
}

/// A pipeline stage that counts readings per device and category and follows energy counters through the day.
pub struct DemoStage {
    pub seen: Arc<Mutex<Observed>>,
    pub tz: jiff::tz::TimeZone,
}

fn day_of(at_ns: i64, tz: &jiff::tz::TimeZone) -> i32 {
    jiff::Timestamp::from_nanosecond(at_ns as i128)
        .map(|t| {
            let d = t.to_zoned_datetime(tz.clone()).date();
            d.year() as i32 * 400 + d.day_of_year() as i32
        })
        .unwrap_or(0)
}

impl Stage for DemoStage {
    fn name(&self) -> &'static str {
        "demo"
    }
    fn process(&mut self, catalog: &Catalog, readings: &[Reading]) {
        let mut o = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        o.readings += readings.len() as u64;
        for r in readings {
            let (idx, d, p) = catalog.point(r.point);
            *o.by_category
                .entry(d.profile.category.as_str())
                .or_default() += 1;
            // A Modbus device's `online = 0` reading says it did not answer: not a sign of life.
            if p.name == "online" && r.value < 0.5 {
                continue;
            }
            let e = o.last_seen.entry(idx).or_insert_with(|| (d.id.clone(), 0));
            e.1 = e.1.max(r.at);
            if p.kind != Kind::Counter {
                continue;
            }
            let to_kwh = match p.unit {
                Unit::Wh => Some(0.001),
                Unit::KWh => Some(1.0),
                Unit::MWh => Some(1000.0),
                _ => None,
            };
            let to_m3 = match p.unit {
                Unit::M3 => Some(1.0),
                Unit::L => Some(0.001),
                _ => None,
            };
            let (map, factor) = match (to_kwh, to_m3) {
                (Some(f), _) if d.profile.category == crate::catalog::Category::Electricity => {
                    (&mut o.counters, f)
                }
                (_, Some(f)) => (&mut o.water, f),
                _ => continue,
            };
            let day = day_of(r.at, &self.tz);
            let c = map
                .entry(r.point.0)
                .or_insert((r.value, r.value, day, factor));
            if c.2 != day {
                // A new day starts from the counter's last value of the previous one.
                *c = (c.1, r.value, day, factor);
            } else {
                c.1 = r.value;
            }
        }
    }
}

/// Finds a shipped folder (`device_profiles`, `rules`) for a demo started anywhere: the current folder (a source
/// checkout), next to the binary's `share/caretaker`, the system's `/usr/share/caretaker`, then the source tree
/// this binary was built from.
pub fn find_shipped(name: &str) -> Option<PathBuf> {
    let mut c = vec![PathBuf::from(name)];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(prefix) = exe.parent().and_then(Path::parent) {
            c.push(prefix.join("share/caretaker").join(name));
        }
    }
    c.push(Path::new("/usr/share/caretaker").join(name));
    c.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(name));
    c.into_iter()
        .find(|p| p.is_dir())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The daemon's config for a running simulation: every device declared, MQTT subscriptions derived from the
/// devices' topics (the level naming the device becomes `{device}`), Modbus devices at their bound addresses.
pub fn daemon_config(
    spec: &SiteSpec,
    running: &simulate::Running,
    broker_port: u16,
    state: &Path,
    profiles: &Path,
    rules: Option<&Path>,
    speed: f64,
) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "[site]\nname = {}\ntimezone = {}\n\n[state]\ndir = {}\n\n[profiles]\ndirs = [{}]\n\n",
        toml_str(&spec.name),
        toml_str(&spec.timezone_name),
        toml_str(&state.display().to_string()),
        toml_str(&profiles.display().to_string())
    ));
    if let Some(r) = rules {
        t.push_str(&format!(
            "[rules]\ndirs = [{}]\n\n",
            toml_str(&r.display().to_string())
        ));
    }
    let mut subs = BTreeSet::new();
    for d in &running.devices {
        if let Transport::Mqtt { topic } = &d.transport {
            let template: Vec<&str> = topic
                .split('/')
                .map(|l| if l == d.id { "{device}" } else { l })
                .collect();
            subs.insert((template.join("/"), d.profile.clone()));
        }
    }
    if !subs.is_empty() {
        t.push_str(&format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nclient_id = \"caretaker-demo\"\nkeep_alive = \"10s\"\nreconnect_max_backoff = \"2s\"\n\n"
        ));
        for (topic, profile) in &subs {
            t.push_str(&format!(
                "[[mqtt.subscriptions]]\ntopic = {}\nprofile = {}\n\n",
                toml_str(topic),
                toml_str(profile)
            ));
        }
    }
    t.push_str("[pipeline]\nshutdown_timeout = \"3s\"\n\n[energy]\n\n");
    for d in &running.devices {
        t.push_str(&format!(
            "[[devices]]\nid = {}\nprofile = {}\n",
            toml_str(&d.id),
            toml_str(&d.profile)
        ));
        if !d.location.is_empty() {
            let loc: Vec<String> = d
                .location
                .iter()
                .map(|(k, v)| format!("{k} = {}", toml_str(v)))
                .collect();
            t.push_str(&format!("location = {{ {} }}\n", loc.join(", ")));
        }
        if let (Transport::Modbus { unit, poll, .. }, Some(addr)) =
            (&d.transport, running.modbus_addrs.get(&d.id))
        {
            // Polls run on the real clock: scale the period so the simulated interval stays what the site says.
            let real = Duration::from_secs_f64((poll.as_secs_f64() / speed).max(0.1));
            t.push_str(&format!(
                "modbus = {{ url = \"tcp://{addr}\", unit = {unit}, poll = \"{}ms\", timeout = \"500ms\" }}\n",
                real.as_millis()
            ));
        }
        t.push('\n');
    }
    t
}

#[cfg(feature = "demo")]
fn start_broker(port: u16) -> anyhow::Result<u16> {
    // Bind once here so a port in use is a clear error (rumqttd would only log it from its thread).
    let port = std::net::TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| {
            anyhow::anyhow!("embedded MQTT broker: cannot listen on 127.0.0.1:{port}: {e}")
        })?
        .local_addr()?
        .port();
    let cfg = format!(
        r#"id = 0
[router]
id = 0
max_connections = 64
max_outgoing_packet_count = 1000
max_segment_size = 16777216
max_segment_count = 8

[v4.1]
name = "demo"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 10000
    max_payload_size = 262144
    max_inflight_count = 1000
    dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&cfg)?;
    let mut broker = rumqttd::Broker::new(config);
    // rumqttd's start() blocks for the life of the broker and has no shutdown: it ends with the process.
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })?;
    // No readiness probe: rumqttd logs every probe connection as an error. The clients retry until it listens.
    Ok(port)
}

#[cfg(not(feature = "demo"))]
fn start_broker(_port: u16) -> anyhow::Result<u16> {
    anyhow::bail!(
        "this build has no embedded MQTT broker: rebuild with the `demo` feature (on by default)"
    )
}

fn fmt_sim(at_ns: i64, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_nanosecond(at_ns as i128)
        .map(|t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%a %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// Runs the demo; returns when `--for` has passed or on Ctrl-C / SIGTERM.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let (spec, site_file) = match &opts.site {
        Some(f) => (
            SiteSpec::load(f).map_err(|errs| list_errors(&errs))?,
            f.clone(),
        ),
        None => {
            let f = PathBuf::from("deploy/demo/site.toml (built in)");
            (
                SiteSpec::parse(&f, DEMO_SITE).map_err(|errs| list_errors(&errs))?,
                f,
            )
        }
    };
    let speed = opts.speed.unwrap_or(spec.speed);
    if !(speed > 0.0 && speed <= 100_000.0) {
        anyhow::bail!("--speed must be above 0 and at most 100000");
    }
    let profiles_dir = match &opts.profiles {
        Some(p) => std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
        None => find_shipped("device_profiles").ok_or_else(|| {
            anyhow::anyhow!("cannot find the shipped device_profiles folder: run from the source checkout or pass --profiles DIR")
        })?,
    };
    let rules_dir = match &opts.rules {
        Some(r) => Some(std::fs::canonicalize(r).unwrap_or_else(|_| r.clone())),
        None => find_shipped("rules"),
    };
    let (profiles, errs) = crate::catalog::profile::load_dirs(std::slice::from_ref(&profiles_dir));
    if !errs.is_empty() {
        return Err(list_errors(&errs));
    }
    let state = match &opts.state {
        Some(s) => s.clone(),
        None => std::env::temp_dir().join(format!(
            "caretaker-demo-{}-{}",
            std::process::id(),
            crate::util::now_ns() / 1_000_000_000
        )),
    };
    std::fs::create_dir_all(&state)
        .map_err(|e| anyhow::anyhow!("cannot create state dir {}: {e}", state.display()))?;
    let state = std::fs::canonicalize(&state).unwrap_or(state);

    // One clock for the simulated devices and the daemon's arrival stamps.
    let start_ns = simulate::start_ns(&spec);
    crate::util::set_simulated_clock(start_ns, speed);
    let clock = Clock {
        real_start: Instant::now(),
        start_ns,
        speed,
    };

    let broker_port = start_broker(opts.broker_port)?;
    let shutdown = CancellationToken::new();
    let sim_stop = CancellationToken::new();
    let running = simulate::start(
        &spec,
        &profiles,
        clock,
        &Options {
            mqtt: Some(("127.0.0.1".into(), broker_port)),
            modbus_host: Some("127.0.0.1".into()),
            ephemeral_ports: true,
            skip_unknown_profiles: true,
        },
        sim_stop.clone(),
    )
    .await?;
    let left_out: Vec<&str> = spec
        .devices
        .iter()
        .filter(|d| !running.devices.iter().any(|r| r.id == d.id))
        .map(|d| d.id.as_str())
        .collect();

    let config_text = daemon_config(
        &spec,
        &running,
        broker_port,
        &state,
        &profiles_dir,
        rules_dir.as_deref(),
        speed,
    );
    let config_file = state.join("caretaker-demo.toml");
    std::fs::write(&config_file, &config_text)?;
    let loaded = crate::app::load(&config_file).map_err(|errs| list_errors(&errs))?;
    let seen = Arc::new(Mutex::new(Observed::default()));
    let stage = DemoStage {
        seen: seen.clone(),
        tz: spec.timezone.clone(),
    };

    println!(
        "Caretaker demo: a simulated campus, an embedded MQTT broker and the daemon in one process"
    );
    println!("  site:     {} ({})", spec.name, site_file.display());
    println!("  devices:  {}", simulate::summary(&running.devices));
    if !left_out.is_empty() {
        println!(
            "            left out (profile not installed): {}",
            left_out.join(", ")
        );
    }
    println!(
        "  speed:    {speed}x ({} simulated per real second), starting {}",
        fmt_duration(Duration::from_secs_f64(speed)),
        fmt_sim(start_ns, &spec.timezone)
    );
    println!(
        "  broker:   mqtt://127.0.0.1:{broker_port}  (watch: mosquitto_sub -p {broker_port} -t '#' -v)"
    );
    println!("  state:    {}", state.display());
    println!(
        "  config:   {}  (InfluxDB: {})",
        config_file.display(),
        if loaded.config.influxdb.is_some() {
            "configured"
        } else {
            "not configured, set CARETAKER_INFLUXDB__URL etc. to write there"
        }
    );
    println!(
        "  rules:    {}",
        rules_dir
            .as_ref()
            .map(|r| r.display().to_string())
            .unwrap_or_else(|| "none found".into())
    );
    match opts.run_for {
        Some(d) => println!("  runs for: {}  (Ctrl-C ends it sooner)\n", fmt_duration(d)),
        None => println!("  runs until Ctrl-C\n"),
    }

    let daemon_stop = shutdown.clone();
    let daemon = tokio::spawn(crate::app::run_until_with(
        loaded,
        daemon_stop,
        vec![Box::new(stage)],
    ));

    let started = Instant::now();
    let deadline = opts.run_for.map(|d| tokio::time::Instant::now() + d);
    let tty = std::io::stdout().is_terminal();
    let total_devices = running.devices.len();
    let mut faults_announced = 0usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_count = 0u64;
    let mut last_at = Instant::now();
    let mut rate = 0.0;
    let mut last_plain = Instant::now() - Duration::from_secs(60);
    let interrupted = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::app::wait_for_signal() => break true,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break false,
        }
        let now = clock.now_ns();
        let open_wo = opts.work_orders.as_ref().map(|v| {
            v.list(&state)
                .iter()
                .filter(|w| w.status != "resolved")
                .count()
        });
        let (count, online, kwh) = {
            let o = seen.lock().unwrap_or_else(|e| e.into_inner());
            // Online = a reading within the last ten simulated minutes (devices report every one or two).
            let fresh = 600 * 1_000_000_000i64;
            let online = o
                .last_seen
                .values()
                .filter(|(_, t)| now - t < fresh)
                .count();
            (
                o.readings,
                online,
                Observed::today(&o.counters, day_of(now, &spec.timezone)),
            )
        };
        let dt = last_at.elapsed().as_secs_f64();
        if dt > 0.0 {
            rate = (count - last_count) as f64 / dt;
        }
        last_count = count;
        last_at = Instant::now();
        let mut out = std::io::stdout().lock();
        while faults_announced < running.faults.len()
            && running.faults[faults_announced].from_ns <= now
        {
            let f = &running.faults[faults_announced];
            if tty {
                let _ = write!(out, "\r\x1b[2K");
            }
            let _ = writeln!(
                out,
                "  ! {}  fault starts: {} ({})",
                fmt_sim(f.from_ns, &spec.timezone),
                f.device,
                f.kind.describe()
            );
            faults_announced += 1;
        }
        let line = format!(
            "{}  {:>6.0} readings/s  devices online {}/{}  open work orders: {}  today {:.1} kWh",
            fmt_sim(now, &spec.timezone),
            rate,
            online,
            total_devices,
            open_wo
                .map(|n| n.to_string())
                .unwrap_or_else(|| "n/a".into()),
            kwh
        );
        if tty {
            let _ = write!(out, "\r\x1b[2K{line}");
            let _ = out.flush();
        } else if last_plain.elapsed() >= Duration::from_secs(5) {
            let _ = writeln!(out, "{line}");
            last_plain = Instant::now();
        }
    };
    if tty {
        println!();
    }
    let end_ns = clock.now_ns();
    // Devices first, then the daemon drains what they sent.
    sim_stop.cancel();
    let _ = running.task.await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;

    let o = seen.lock().unwrap_or_else(|e| e.into_inner());
    let real = started.elapsed();
    println!(
        "\nDemo {} after {} ({} simulated: {} to {}).",
        if interrupted { "stopped" } else { "finished" },
        fmt_duration(real),
        fmt_duration(Duration::from_nanos((end_ns - start_ns).max(0) as u64)),
        fmt_sim(start_ns, &spec.timezone),
        fmt_sim(end_ns, &spec.timezone)
    );
    println!(
        "Readings: {} ({:.0} per second) from {} of {} devices",
        o.readings,
        o.readings as f64 / real.as_secs_f64().max(0.001),
        o.last_seen.len(),
        total_devices
    );
    for (cat, n) in &o.by_category {
        println!("  {cat:<12} {n}");
    }
    let silent: Vec<&str> = running
        .devices
        .iter()
        .filter(|d| !o.last_seen.values().any(|(id, _)| id == &d.id))
        .map(|d| d.id.as_str())
        .collect();
    if !silent.is_empty() {
        println!("  no readings from: {}", silent.join(", "));
    }
    let reached: Vec<simulate::ScriptedFault> = running
        .faults
        .iter()
        .filter(|f| f.from_ns <= end_ns)
        .cloned()
        .collect();
    println!("\nScripted faults (what the rules should catch):");
    for f in &running.faults {
        let note = if f.from_ns > end_ns {
            " (not reached)"
        } else {
            ""
        };
        println!(
            "  {}  {:<16} {}{note}",
            fmt_sim(f.from_ns, &spec.timezone),
            f.device,
            f.kind.describe()
        );
    }

    if let Some(view) = &opts.work_orders {
        let wos = view.list(&state);
        let (pairs, missed) = match_faults(&reached, &wos);
        println!("\nWork orders raised: {}", wos.len());
        for (w, f) in &pairs {
            let caught = match f {
                Some(f) => format!("caught: {}", f.kind.describe()),
                None => "no scripted fault here (false positive)".into(),
            };
            println!(
                "  #{:<3} {}  {:<27} {:<16} {:<9} {caught}",
                w.id,
                fmt_sim(w.opened_at_ns, &spec.timezone),
                w.rule,
                w.device,
                w.status,
            );
        }
        for f in &missed {
            println!(
                "  no work order (yet) for: {}  {} ({})",
                fmt_sim(f.from_ns, &spec.timezone),
                f.device,
                f.kind.describe()
            );
        }
    }
    let day = day_of(end_ns, &spec.timezone);
    println!(
        "\nEnergy on the last simulated day: {:.1} kWh metered (all electricity counters), {:.2} m3 water",
        Observed::today(&o.counters, day),
        Observed::today(&o.water, day)
    );
    if let Some(report) = &opts.energy_report {
        let date = |ns: i64| {
            jiff::Timestamp::from_nanosecond(ns as i128)
                .map(|t| {
                    t.to_zoned_datetime(spec.timezone.clone())
                        .date()
                        .to_string()
                })
                .unwrap_or_default()
        };
        let run = DemoRun {
            config: config_file.clone(),
            state: state.clone(),
            first_day: date(start_ns),
            last_day: date(end_ns),
        };
        match report(&run) {
            Ok(path) => println!(
                "Energy report (HTML, open it in a browser): {}",
                path.display()
            ),
            Err(e) => println!("Energy report: not written: {e:#}"),
        }
    }
    println!(
        "State (config, work orders, energy store): {}",
        state.display()
    );
    Ok(())
}

fn list_errors(errs: &[crate::diag::Diagnostic]) -> anyhow::Error {
    for e in errs {
        eprintln!("error: {e}");
    }
    anyhow::anyhow!("{} error(s); the demo did not start", errs.len())
}

/// The demo's view of raised work orders: the daemon's own SQLite store.
pub struct StoreView;

impl WorkOrderView for StoreView {
    fn list(&self, state_dir: &Path) -> Vec<RaisedWorkOrder> {
        let path = crate::work_orders::service::store_path(state_dir);
        if !path.exists() {
            return Vec::new();
        }
        let Ok(store) = crate::work_orders::store::Store::open(&path, None) else {
            return Vec::new();
        };
        store
            .list(None)
            .unwrap_or_default()
            .into_iter()
            .map(|w| RaisedWorkOrder {
                id: w.id,
                rule: w.rule,
                device: w.device,
                status: w.status,
                opened_at_ns: w.opened_at * 1_000_000,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::ScriptedFault;
    use crate::simulate::site::FaultKind;

    fn fault(device: &str, kind: FaultKind, from_ns: i64) -> ScriptedFault {
        ScriptedFault {
            device: device.into(),
            kind,
            from_ns,
            until_ns: None,
            clog_to: None,
            period: Duration::from_secs(600),
            ramp_ns: None,
        }
    }

    fn wo(id: i64, rule: &str, device: &str, at: i64) -> RaisedWorkOrder {
        RaisedWorkOrder {
            id,
            rule: rule.into(),
            device: device.into(),
            status: "open".into(),
            opened_at_ns: at,
        }
    }

    #[test]
    fn work_orders_pair_with_the_fault_they_caught_and_the_rest_stand_out() {
        let faults = vec![
            fault("leak-1", FaultKind::Leak, 100),
            fault("ahu-1", FaultKind::FilterClog, 200),
            fault("meter-2", FaultKind::Offline, 300),
        ];
        let wos = vec![
            wo(1, "water-leak-detected", "leak-1", 150),
            wo(2, "ahu-filter-clogged", "ahu-1", 900),
            // Before its device's fault began: not caught by it.
            wo(3, "meter-offline", "meter-2", 250),
            wo(4, "overnight-base-load", "meter-1", 50),
        ];
        let (pairs, missed) = match_faults(&faults, &wos);
        assert_eq!(pairs[0].1.map(|f| f.kind), Some(FaultKind::Leak));
        assert_eq!(pairs[1].1.map(|f| f.kind), Some(FaultKind::FilterClog));
        assert!(pairs[2].1.is_none() && pairs[3].1.is_none());
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].device, "meter-2");
    }

    #[test]
    fn the_daemon_config_declares_every_device_and_derives_subscriptions() {
        let spec = SiteSpec::parse(Path::new("site.toml"), DEMO_SITE).unwrap();
        let running_devices = spec.devices.clone();
        let mut addrs = BTreeMap::new();
        addrs.insert(
            "ahu-1".to_string(),
            "127.0.0.1:40001".parse::<std::net::SocketAddr>().unwrap(),
        );
        let running = simulate::Running {
            status: Default::default(),
            faults: vec![],
            modbus_addrs: addrs,
            devices: running_devices,
            task: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .spawn(async {}),
        };
        let text = daemon_config(
            &spec,
            &running,
            1883,
            Path::new("/tmp/st"),
            Path::new("/p"),
            None,
            600.0,
        );
        let v: toml::Table = text.parse().unwrap();
        let devices = v["devices"].as_array().unwrap();
        assert_eq!(devices.len(), spec.devices.len());
        let topics: Vec<&str> = v["mqtt"]["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["topic"].as_str().unwrap())
            .collect();
        assert!(
            topics.contains(&"campus/main/1/{device}/telemetry"),
            "{topics:?}"
        );
        assert!(topics.contains(&"zigbee2mqtt/leak/{device}"), "{topics:?}");
        let ahu = devices
            .iter()
            .find(|d| d["id"].as_str() == Some("ahu-1"))
            .unwrap();
        // 60 s simulated at 600x is polled every 100 ms of real time.
        assert_eq!(ahu["modbus"]["url"].as_str(), Some("tcp://127.0.0.1:40001"));
        assert_eq!(ahu["modbus"]["poll"].as_str(), Some("100ms"));
        assert_eq!(ahu["location"]["room"].as_str(), Some("ahu-1"));
    }
}
