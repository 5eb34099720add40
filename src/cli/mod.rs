//! The command line: `caretaker run|check|detect|simulate|demo ...`. Each command maps to one library call; `main` only maps the
//! result to an exit code.

pub mod backtest;
mod check;
pub mod detect;
pub mod energy;
pub mod profiles;
mod simulate;
pub mod work_orders;

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
        /// Instead of running live: step the site offline and write its readings as `backtest` CSV to FILE,
        /// and the scripted faults active at each sample to FILE's `.truth.csv` sibling (or `--truth`).
        #[arg(long, value_name = "FILE")]
        export_csv: Option<PathBuf>,
        /// With --export-csv: where the truth labels go.
        #[arg(long, value_name = "FILE")]
        truth: Option<PathBuf>,
        /// With --export-csv: only devices of this model (e.g. `vav_ahu`).
        #[arg(long)]
        model: Option<String>,
        /// With --export-csv: simulated time to export (default 24h).
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        span: String,
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
        /// Which score to write: `event` (high where something unusual starts, then quiet) or `level` (the
        /// sustained anomaly level, high on every unusual row).
        #[arg(long, default_value = "event")]
        output_score: String,
        /// Judge these columns of a multi-column CSV together (header `timestamp,a,b,c,...`) with the equipment
        /// model the daemon's `equipment_anomaly` uses: one score per row.
        #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
        columns: Vec<String>,
    },
    /// Work orders in the local store: list, ack, resolve, show, stats.
    #[command(name = "work-orders", subcommand)]
    WorkOrders(work_orders::WorkOrdersCommand),
    /// Replay history through the rules and print the work orders they would have opened.
    Backtest(backtest::BacktestArgs),
    /// The device profile library: list, show NAME, docs (the docs/devices.md table).
    #[command(subcommand)]
    Profiles(profiles::ProfilesCommand),
    /// Energy reports and backfill from the local store.
    Energy {
        #[command(subcommand)]
        command: EnergyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnergyCommand {
    /// Consumption, cost, baseline and peaks per period and group (table, csv, json or a self-contained html).
    Report(energy::ReportArgs),
    /// Load a meter's historic CSV export (`timestamp,value`) into the store.
    Import(energy::ImportArgs),
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

/// The multi-threaded runtime the long-running commands (run, simulate, demo) block on.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// `--for DURATION` of simulate and demo.
fn parse_for(run_for: Option<String>) -> anyhow::Result<Option<std::time::Duration>> {
    run_for
        .map(|d| crate::util::parse_duration(&d))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--for: {e}"))
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
            runtime()?.block_on(crate::app::run(&config))?;
            Ok(0)
        }
        Command::Check { config } => Ok(check::run(&config)),
        Command::Simulate {
            site,
            speed,
            mqtt,
            modbus_host,
            start,
            run_for,
            export_csv,
            truth,
            model,
            span,
        } => match export_csv {
            Some(out) => simulate::export(site, start, out, truth, model, &span),
            None => runtime()?.block_on(simulate::run(
                site,
                speed,
                mqtt,
                modbus_host,
                start,
                run_for,
            )),
        },
        Command::Demo {
            speed,
            run_for,
            state,
            site,
            profiles,
            rules,
            broker_port,
        } => {
            let run_for = parse_for(run_for)?;
            runtime()?.block_on(crate::demo::run(crate::demo::DemoOptions {
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
            output_score,
            columns,
        } => detect::detect(&input, &output, &detector, &set, &output_score, &columns),
        Command::WorkOrders(cmd) => work_orders::run(cmd),
        Command::Backtest(args) => backtest::run(args),
        Command::Profiles(cmd) => profiles::run(cmd),
        Command::Energy { command } => match command {
            EnergyCommand::Report(a) => energy::run_report(a),
            EnergyCommand::Import(a) => energy::run_import(a),
        },
    }
}
