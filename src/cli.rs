//! The command line: `caretaker run|check|detect|simulate|demo ...`. Each command maps to one library call; `main` only maps the
//! result to an exit code.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "caretaker",
    version,
    about = "Watches a campus's buildings: readings to InfluxDB, faults to work orders, energy to reports"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CARETAKER_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax, e.g. `info`, `caretaker=debug`).
    #[arg(long, global = true, default_value = "info", env = "CARETAKER_LOG")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// Site config (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Load and validate the config, profiles and rules; print a summary or every error.
    Check {
        /// Site config (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a simulated campus: MQTT devices publishing to a broker, Modbus TCP devices listening on ports.
    Simulate {
        /// Simulated site file (TOML; see deploy/demo/site.toml and docs/demo.md).
        #[arg(long)]
        site: PathBuf,
        /// Simulated seconds per real second (default: the site file's `speed`).
        #[arg(long)]
        speed: Option<f64>,
        /// Broker to publish to, overriding the site file's (`mqtt://host:port`).
        #[arg(long)]
        mqtt: Option<String>,
        /// Address the Modbus TCP devices listen on, overriding the site file's (`0.0.0.0` in a container).
        #[arg(long)]
        modbus_host: Option<String>,
        /// Simulated start: `now` or a local date-time like 2026-01-12T04:00:00 (default: the site file's).
        #[arg(long)]
        start: Option<String>,
        /// Stop after this long (real time), e.g. `10m`; default: until Ctrl-C.
        #[arg(long = "for", value_name = "DURATION")]
        run_for: Option<String>,
    },
    /// Show the whole job in one command: an embedded broker, the simulated campus and the daemon.
    Demo {
        /// Simulated seconds per real second (default 600: ten simulated minutes per second).
        #[arg(long)]
        speed: Option<f64>,
        /// Stop after this long (real time), e.g. `2m`; default: until Ctrl-C.
        #[arg(long = "for", value_name = "DURATION")]
        run_for: Option<String>,
        /// Keep the daemon's state (work orders, energy store) here instead of a new temp dir.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Simulated site file (default: the built-in deploy/demo/site.toml).
        #[arg(long)]
        site: Option<PathBuf>,
        /// Device profiles folder (default: the shipped device_profiles).
        #[arg(long)]
        profiles: Option<PathBuf>,
        /// Rules folder (default: the shipped rules).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Port of the embedded MQTT broker on 127.0.0.1 (default: a free one).
        #[arg(long, default_value_t = 0)]
        broker_port: u16,
    },
    /// Score a `timestamp,value` CSV with the anomaly detector; writes `timestamp,value,anomaly_score`.
    Detect {
        /// Input CSV (header `timestamp,value`).
        #[arg(long, short)]
        input: PathBuf,
        /// Output CSV (`timestamp,value,anomaly_score`, one row per input row).
        #[arg(long, short)]
        output: PathBuf,
        /// Detector: combined (what the daemon runs); single views for comparison: seasonal, novelty,
        /// season-novelty, level, change, mean; gaussian (plain rolling z-score, the reference).
        #[arg(long, default_value = "combined")]
        detector: String,
        /// Override a general detector parameter, e.g. `--set hold_gain=3` (repeatable; see docs/anomaly.md).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Work orders in the local store: list, ack, resolve, show, stats.
    #[command(name = "work-orders", subcommand)]
    WorkOrders(crate::work_orders::cli::WorkOrdersCommand),
    /// Replay history through the rules and print the work orders they would have opened.
    Backtest(crate::rules::backtest::BacktestArgs),
    /// Energy reports and backfill from the local store.
    Energy {
        #[command(subcommand)]
        command: EnergyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnergyCommand {
    /// Consumption, cost, baseline and peaks per period and group (table, csv, json or a self-contained html).
    Report(crate::energy::cli::ReportArgs),
    /// Load a meter's historic CSV export (`timestamp,value`) into the store.
    Import(crate::energy::cli::ImportArgs),
}

fn init_logging(format: LogFormat, filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // tokio-modbus and others log through `log`.
    let _ = tracing_log::LogTracer::init();
}

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    // The demo's live summary owns the terminal: only warnings interrupt it unless asked otherwise (not the
    // expected "no InfluxDB" one, nor the embedded broker's chatter about clients leaving).
    let level = match (&cli.command, cli.log_level.as_str()) {
        (Command::Demo { .. }, "info") => "warn,caretaker::app=error,rumqttd=off",
        (_, l) => l,
    };
    init_logging(cli.log_format, level);
    match cli.command {
        Command::Run { config } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(crate::app::run(&config))?;
            Ok(0)
        }
        Command::Check { config } => Ok(check(&config)),
        Command::Simulate {
            site,
            speed,
            mqtt,
            modbus_host,
            start,
            run_for,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(simulate(site, speed, mqtt, modbus_host, start, run_for))
        }
        Command::Demo {
            speed,
            run_for,
            state,
            site,
            profiles,
            rules,
            broker_port,
        } => {
            let run_for = run_for
                .map(|d| crate::util::parse_duration(&d))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--for: {e}"))?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(crate::demo::run(crate::demo::DemoOptions {
                work_orders: Some(std::sync::Arc::new(crate::demo::StoreView)),
                energy_report: Some(std::sync::Arc::new(|run: &crate::demo::DemoRun| {
                    let out = run.state.join("energy-report.html");
                    crate::energy::cli::run_report(crate::energy::cli::ReportArgs {
                        config: Some(run.config.clone()),
                        state: None,
                        from: Some(run.first_day.clone()),
                        to: Some(run.last_day.clone()),
                        by: crate::energy::report::By::Day,
                        group: "device".into(),
                        format: crate::energy::cli::Format::Html,
                        devices: Vec::new(),
                        output: Some(out.clone()),
                    })?;
                    Ok(out)
                })),
                speed,
                run_for,
                state,
                site,
                profiles,
                rules,
                broker_port,
            }))?;
            Ok(0)
        }
        Command::Detect {
            input,
            output,
            detector,
            set,
        } => detect(&input, &output, &detector, &set),
        Command::WorkOrders(cmd) => crate::work_orders::cli::run(cmd),
        Command::Backtest(args) => crate::rules::backtest::run(args),
        Command::Energy { command } => match command {
            EnergyCommand::Report(a) => crate::energy::cli::run_report(a),
            EnergyCommand::Import(a) => crate::energy::cli::run_import(a),
        },
    }
}

/// `caretaker detect`: offline scoring with the daemon's detector.
pub fn detect(
    input: &std::path::Path,
    output: &std::path::Path,
    detector: &str,
    set: &[String],
) -> anyhow::Result<i32> {
    use crate::anomaly::{Kind, Params};
    let kind = Kind::parse(detector).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown detector `{detector}` (choose one of: {})",
            Kind::NAMES.join(", ")
        )
    })?;
    let mut params = serde_json::to_value(Params::default())?;
    for kv in set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set `{kv}`: expected KEY=VALUE"))?;
        let keys: Vec<String> = params
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let slot = params.get_mut(k).ok_or_else(|| {
            anyhow::anyhow!(
                "--set `{kv}`: unknown parameter `{k}` (known: {})",
                keys.join(", ")
            )
        })?;
        *slot =
            serde_json::from_str(v).map_err(|e| anyhow::anyhow!("--set `{kv}`: bad value: {e}"))?;
    }
    let params: Params =
        serde_json::from_value(params).map_err(|e| anyhow::anyhow!("--set: {e}"))?;
    let started = std::time::Instant::now();
    let rows = crate::anomaly::csv::detect_file(input, output, kind, params)?;
    tracing::info!(
        rows,
        input = %input.display(),
        output = %output.display(),
        seconds = started.elapsed().as_secs_f64(),
        "scored"
    );
    Ok(0)
}

/// `caretaker simulate`: runs a site file until Ctrl-C or `--for`.
async fn simulate(
    site: PathBuf,
    speed: Option<f64>,
    mqtt: Option<String>,
    modbus_host: Option<String>,
    start: Option<String>,
    run_for: Option<String>,
) -> anyhow::Result<i32> {
    use crate::simulate::{self, site::SiteSpec};
    let mut spec = match SiteSpec::load(&site) {
        Ok(s) => s,
        Err(errs) => {
            for e in &errs {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s) in {}", errs.len(), site.display());
            return Ok(1);
        }
    };
    if let Some(s) = speed {
        if !(s > 0.0 && s <= 100_000.0) {
            anyhow::bail!("--speed must be above 0 and at most 100000");
        }
        spec.speed = s;
    }
    match start.as_deref() {
        None => {}
        Some("now") => spec.start = None,
        Some(s) => {
            spec.start = Some(s.parse().map_err(|e| {
                anyhow::anyhow!(
                    "--start: `{s}` is not `now` or a local date-time like 2026-01-12T04:00:00: {e}"
                )
            })?)
        }
    }
    let mqtt = match mqtt {
        None => None,
        Some(u) => {
            let rest = u
                .strip_prefix("mqtt://")
                .ok_or_else(|| anyhow::anyhow!("--mqtt: use mqtt://host:port"))?;
            let (h, p) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
            Some((
                h.to_string(),
                p.parse()
                    .map_err(|_| anyhow::anyhow!("--mqtt: bad port `{p}`"))?,
            ))
        }
    };
    let run_for = run_for
        .map(|d| crate::util::parse_duration(&d))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--for: {e}"))?;
    let (profiles, errs) = crate::catalog::profile::load_dirs(&spec.profile_dirs);
    if !errs.is_empty() {
        for e in &errs {
            eprintln!("error: {e}");
        }
        return Ok(1);
    }
    let clock = simulate::Clock {
        real_start: std::time::Instant::now(),
        start_ns: simulate::start_ns(&spec),
        speed: spec.speed,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let running = simulate::start(
        &spec,
        &profiles,
        clock,
        &simulate::Options {
            mqtt,
            modbus_host,
            ephemeral_ports: false,
            skip_unknown_profiles: false,
        },
        stop.clone(),
    )
    .await?;
    tracing::info!(
        site = %spec.name,
        speed = spec.speed,
        "simulating {}",
        simulate::summary(&running.devices)
    );
    for f in &running.faults {
        let at = jiff::Timestamp::from_nanosecond(f.from_ns as i128)
            .map(|t| t.to_zoned_datetime(spec.timezone.clone()).to_string())
            .unwrap_or_default();
        tracing::info!(device = %f.device, fault = f.kind.as_str(), starts = %at, "scripted fault");
    }
    match run_for {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = crate::app::wait_for_signal() => {}
            }
        }
        None => crate::app::wait_for_signal().await,
    }
    stop.cancel();
    let _ = running.task.await;
    let st = &running.status;
    tracing::info!(
        published = st.mqtt_published.load(std::sync::atomic::Ordering::Relaxed),
        dropped = st.mqtt_dropped.load(std::sync::atomic::Ordering::Relaxed),
        "simulation stopped"
    );
    Ok(0)
}

/// `caretaker check`: exit 0 and a summary when valid, 1 and every error otherwise.
pub fn check(config: &std::path::Path) -> i32 {
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
            match &c.influxdb {
                Some(i) => println!(
                    "influxdb: {} ({})",
                    i.url,
                    match i.api {
                        crate::config::InfluxApi::V1 { .. } => "v1",
                        _ => "v2",
                    }
                ),
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

/// The Modbus part of `caretaker check`: links, their devices, and requests per full poll cycle (optimal plan
/// versus one request per point).
fn print_modbus(l: &crate::app::Loaded) {
    let links = {
        let cat = &l.catalog;
        crate::sources::modbus::build(&l.config, cat)
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
