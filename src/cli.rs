//! The command line: `caretaker run|check|detect ...`. Each command maps to one library call; `main` only maps the
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
    init_logging(cli.log_format, &cli.log_level);
    match cli.command {
        Command::Run { config } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(crate::app::run(&config))?;
            Ok(0)
        }
        Command::Check { config } => Ok(check(&config)),
        Command::Detect {
            input,
            output,
            detector,
            set,
        } => detect(&input, &output, &detector, &set),
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
