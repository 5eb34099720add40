//! `caretaker demo`: the whole job in one process with nothing else installed. An embedded MQTT broker
//! (rumqttd), the simulated campus of `deploy/demo/site.toml` and the daemon itself, sharing one simulated
//! clock, with a live summary on the terminal and a report at the end.
//!
//! The daemon is the real one (`app::run_until_with`) on a config generated from the site file: every simulated
//! device is declared, MQTT devices get subscriptions, Modbus devices get `modbus = { url = "tcp://..." }` with a
//! poll period scaled to the simulated speed. The demo watches the readings through a pipeline stage of its own.
//!
//! - [`simulate`]: the simulated campus (also `caretaker simulate` on its own).
//! - [`daemon_config`]: the daemon's config for a running simulation.
//! - [`live`]: the demo's pipeline stage and the live status line.
//! - [`report`]: the summary at the end (faults, work orders, energy).

mod broker;
pub mod daemon_config;
pub mod live;
pub mod report;
pub mod simulate;

use live::{DemoStage, Observed, day_of};
use simulate::site::SiteSpec;
use simulate::{Clock, Options, Running};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub use daemon_config::{daemon_config, find_shipped};
pub use report::{DemoRun, RaisedWorkOrder, match_faults};

/// The shipped demo site, built into the binary so `caretaker demo` works from any folder.
pub const DEMO_SITE: &str = include_str!("../../deploy/demo/site.toml");

/// What `caretaker demo` was asked for.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    pub speed: Option<f64>,
    pub run_for: Option<Duration>,
    pub state: Option<PathBuf>,
    pub site: Option<PathBuf>,
    pub profiles: Option<PathBuf>,
    pub rules: Option<PathBuf>,
    /// 0 = a free port.
    pub broker_port: u16,
}

/// What the demo runs on, resolved from the options before anything starts.
struct Setup {
    spec: SiteSpec,
    site_file: PathBuf,
    speed: f64,
    profiles_dir: PathBuf,
    rules_dir: Option<PathBuf>,
    profiles: crate::catalog::Profiles,
    state: PathBuf,
}

fn setup(opts: &DemoOptions) -> anyhow::Result<Setup> {
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
    Ok(Setup {
        spec,
        site_file,
        speed,
        profiles_dir,
        rules_dir,
        profiles,
        state,
    })
}

/// Where the demo serves the web console, and the operator token that signs in to it.
struct Console {
    port: u16,
    token: String,
    token_file: PathBuf,
}

/// Writes a secret readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    Ok(())
}

/// Runs the demo; returns when `--for` has passed or on Ctrl-C / SIGTERM.
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let s = setup(&opts)?;
    let spec = &s.spec;
    // One clock for the simulated devices and the daemon's arrival stamps.
    let start_ns = simulate::start_ns(spec);
    crate::util::set_simulated_clock(start_ns, s.speed);
    let clock = Clock {
        real_start: Instant::now(),
        start_ns,
        speed: s.speed,
    };
    let broker_port = broker::start_broker(opts.broker_port)?;
    let sim_stop = CancellationToken::new();
    let running = simulate::start(
        spec,
        &s.profiles,
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
    let config_text = daemon_config(
        spec,
        &running,
        broker_port,
        &s.state,
        &s.profiles_dir,
        s.rules_dir.as_deref(),
        s.speed,
    );
    // The web console: an operator token written into the state dir (owner-only), its URL printed in the banner.
    let (port, port_guard) = daemon_config::console_port();
    let console = Console {
        port,
        token: daemon_config::new_token(),
        token_file: s.state.join("console.token"),
    };
    write_private(&console.token_file, &console.token)?;
    let config_text = config_text + &daemon_config::http_section(console.port, &console.token_file);
    let config_file = s.state.join("caretaker-demo.toml");
    std::fs::write(&config_file, &config_text)?;
    let loaded = crate::app::load(&config_file).map_err(|errs| list_errors(&errs))?;
    let seen = Arc::new(Mutex::new(Observed::default()));
    let stage = DemoStage {
        seen: seen.clone(),
        tz: spec.timezone.clone(),
    };
    print_banner(
        &s,
        &running,
        broker_port,
        &config_file,
        &loaded,
        &opts,
        &console,
    );

    let shutdown = CancellationToken::new();
    drop(port_guard);
    let daemon = tokio::spawn(crate::app::run_until_with(
        loaded,
        shutdown.clone(),
        vec![Box::new(stage)],
    ));
    let started = Instant::now();
    let interrupted = watch(&s, &running, &clock, &seen, opts.run_for).await;
    let end_ns = clock.now_ns();
    // Devices first, then the daemon drains what they sent.
    sim_stop.cancel();
    let faults = running.faults.clone();
    let devices = running.devices.clone();
    let _ = running.task.await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), daemon).await;

    let o = seen.lock().unwrap_or_else(|e| e.into_inner());
    report::print(&report::Ended {
        spec,
        devices: &devices,
        faults: &faults,
        seen: &o,
        started,
        start_ns,
        end_ns,
        interrupted,
        state: &s.state,
        config_file: &config_file,
    });
    Ok(())
}

fn print_banner(
    s: &Setup,
    running: &Running,
    broker_port: u16,
    config_file: &Path,
    loaded: &crate::app::Loaded,
    opts: &DemoOptions,
    console: &Console,
) {
    let spec = &s.spec;
    let left_out: Vec<&str> = spec
        .devices
        .iter()
        .filter(|d| !running.devices.iter().any(|r| r.id == d.id))
        .map(|d| d.id.as_str())
        .collect();
    println!(
        "Caretaker demo: a simulated campus, an embedded MQTT broker and the daemon in one process"
    );
    println!("  site:     {} ({})", spec.name, s.site_file.display());
    println!("  devices:  {}", simulate::summary(&running.devices));
    if !left_out.is_empty() {
        println!(
            "            left out (profile not installed): {}",
            left_out.join(", ")
        );
    }
    println!(
        "  speed:    {}x ({} simulated per real second), starting {}",
        s.speed,
        fmt_duration(Duration::from_secs_f64(s.speed)),
        fmt_sim(simulate::start_ns(spec), &spec.timezone)
    );
    println!(
        "  broker:   mqtt://127.0.0.1:{broker_port}  (watch: mosquitto_sub -p {broker_port} -t '#' -v)"
    );
    println!("  state:    {}", s.state.display());
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
        s.rules_dir
            .as_ref()
            .map(|r| r.display().to_string())
            .unwrap_or_else(|| "none found".into())
    );
    println!(
        "  console:  http://127.0.0.1:{}/  (sign in with the operator token {}, also in {})",
        console.port,
        console.token,
        console.token_file.display()
    );
    match opts.run_for {
        Some(d) => println!("  runs for: {}  (Ctrl-C ends it sooner)\n", fmt_duration(d)),
        None => println!("  runs until Ctrl-C\n"),
    }
}

/// The live status line, once a second, until `--for` has passed (false) or a signal came (true). Scripted
/// faults are announced as their simulated time comes.
async fn watch(
    s: &Setup,
    running: &Running,
    clock: &Clock,
    seen: &Mutex<Observed>,
    run_for: Option<Duration>,
) -> bool {
    let tz = &s.spec.timezone;
    let deadline = run_for.map(|d| tokio::time::Instant::now() + d);
    let tty = std::io::stdout().is_terminal();
    let mut faults_announced = 0usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut last_count, mut last_at, mut rate) = (0u64, Instant::now(), 0.0);
    let mut last_plain = Instant::now() - Duration::from_secs(60);
    let interrupted = loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = crate::app::wait_for_signal() => break true,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break false,
        }
        let now = clock.now_ns();
        let open_wo = report::work_orders(&s.state)
            .iter()
            .filter(|w| w.status != "resolved")
            .count();
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
                Observed::today(&o.counters, day_of(now, tz)),
            )
        };
        let dt = last_at.elapsed().as_secs_f64();
        if dt > 0.0 {
            rate = (count - last_count) as f64 / dt;
        }
        (last_count, last_at) = (count, Instant::now());
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
                fmt_sim(f.from_ns, tz),
                f.device,
                f.kind.describe()
            );
            faults_announced += 1;
        }
        let line = format!(
            "{}  {:>6.0} readings/s  devices online {}/{}  open work orders: {open_wo}  today {:.1} kWh",
            fmt_sim(now, tz),
            rate,
            online,
            running.devices.len(),
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
    interrupted
}

fn list_errors(errs: &[crate::diag::Diagnostic]) -> anyhow::Error {
    for e in errs {
        eprintln!("error: {e}");
    }
    anyhow::anyhow!("{} error(s); the demo did not start", errs.len())
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
