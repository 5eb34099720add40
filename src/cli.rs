//! The command line: `caretaker run|check ...`. Each command maps to one library call; `main` only maps the
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
        Command::Energy { command } => match command {
            EnergyCommand::Report(a) => crate::energy::cli::run_report(a),
            EnergyCommand::Import(a) => crate::energy::cli::run_import(a),
        },
    }
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
