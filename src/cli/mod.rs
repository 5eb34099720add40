//! The command line: `caretaker run|check|detect|simulate|demo ...`. Each command maps to one library call; `main` only maps the
//! result to an exit code.

pub mod backtest;
pub mod bacnet;
mod check;
pub mod detect;
pub mod energy;
pub mod profiles;
pub mod silence;
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
    /// Log format: text or json lines on stderr, or journal (systemd's native protocol, with priorities).
    /// Default: journal when stderr is the journal (systemd sets JOURNAL_STREAM), else text.
    #[arg(long, global = true, value_enum, env = "CARETAKER_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter (tracing EnvFilter syntax, e.g. `info`, `caretaker=debug`). Default: `$CARETAKER_LOG`, else
    /// `$RUST_LOG`, else `info` (this flag and CARETAKER_LOG win over RUST_LOG).
    #[arg(long, global = true, env = "CARETAKER_LOG")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
    /// systemd's journal (native protocol): `journalctl -p warning` filters on the levels.
    Journal,
}

/// The log filter: `--log-level` / `CARETAKER_LOG` (clap reads both), else `RUST_LOG`, else `None` (the
/// command's default).
pub fn log_filter(flag_or_caretaker_log: Option<&str>, rust_log: Option<&str>) -> Option<String> {
    flag_or_caretaker_log
        .or(rust_log)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// Site config (TOML). Default: $CARETAKER_CONFIG, else /etc/caretaker/caretaker.toml.
        #[arg(long, short, env = "CARETAKER_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Load and validate the config, profiles and rules; print a summary or every error.
    Check {
        /// Site config (TOML). Default: $CARETAKER_CONFIG, else /etc/caretaker/caretaker.toml.
        #[arg(long, short, env = "CARETAKER_CONFIG")]
        config: Option<PathBuf>,
        /// Output: text (a summary, or every error as file:line: key: message) or json (one document with
        /// every diagnostic as {file, line, column, key, message, severity}, for a config repo's CI).
        #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
        format: CheckFormat,
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
    /// Show the whole job in one command: an embedded broker, the simulated campus (MQTT, Modbus TCP and BACnet/IP
    /// devices) and the daemon.
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
        /// `timestamp=HEADER` / `value=HEADER` items map header names (e.g. `timestamp=Zeit,value=Wert`).
        #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
        columns: Vec<String>,
        /// CSV field separator: `,`, `;` or `tab` (default: detected).
        #[arg(long)]
        delimiter: Option<String>,
        /// CSV decimal mark: `.` or `,` (default: detected).
        #[arg(long)]
        decimal: Option<String>,
    },
    /// Work orders in the local store: list, ack, resolve, show, stats.
    #[command(name = "work-orders", subcommand)]
    WorkOrders(work_orders::WorkOrdersCommand),
    /// Maintenance windows: no work orders for a device (point, rule) for a while; `list`, `remove ID`.
    Silence(silence::SilenceArgs),
    /// Replay history through the rules and print the work orders they would have opened.
    Backtest(backtest::BacktestArgs),
    /// The device profile library: list, show NAME, docs (the docs/devices.md table).
    #[command(subcommand)]
    Profiles(profiles::ProfilesCommand),
    /// BACnet/IP tools: `discover` finds devices and their objects, and writes starting profiles.
    #[command(subcommand)]
    Bacnet(bacnet::BacnetCommand),
    /// Energy reports and backfill from the local store.
    Energy {
        #[command(subcommand)]
        command: EnergyCommand,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CheckFormat {
    Text,
    Json,
}

/// Where the site config is looked for when `--config` is not given (nor `CARETAKER_CONFIG`).
pub const DEFAULT_CONFIG: &str = "/etc/caretaker/caretaker.toml";

/// The site config file: `--config` (or `CARETAKER_CONFIG`, which clap reads into it), else
/// [`DEFAULT_CONFIG`] when it exists, else an error naming both ways to give one.
pub fn config_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    config_path_in(given, std::path::Path::new(DEFAULT_CONFIG))
}

fn config_path_in(given: Option<PathBuf>, default: &std::path::Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    if default.exists() {
        return Ok(default.to_path_buf());
    }
    anyhow::bail!(
        "no site config: pass --config FILE, or set CARETAKER_CONFIG=FILE, or create {}          (neither CARETAKER_CONFIG is set nor {} exists)",
        default.display(),
        default.display()
    )
}

#[derive(Debug, Subcommand)]
pub enum EnergyCommand {
    /// Consumption, cost, baseline and peaks per period and group (table, csv, json or a self-contained html).
    Report(energy::ReportArgs),
    /// Load a meter's historic CSV export (`timestamp,value`) into the store.
    Import(energy::ImportArgs),
}

fn init_logging(format: Option<LogFormat>, filter: &str) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let bad_filter = EnvFilter::try_new(filter).is_err();
    let env_filter = || EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if crate::journal::stderr_is_journal() {
        LogFormat::Journal
    } else {
        LogFormat::Text
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init().is_ok(),
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Journal => match crate::journal::JournalLayer::new() {
            Ok(j) => tracing_subscriber::registry()
                .with(env_filter())
                .with(j)
                .try_init()
                .is_ok(),
            Err(e) => {
                eprintln!(
                    "journal socket {}: {e}; logging to stderr",
                    crate::journal::socket_path().display()
                );
                builder.try_init().is_ok()
            }
        },
    };
    if bad_filter {
        tracing::warn!(filter, "the log filter does not parse: logging at info");
    }
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
    let filter = log_filter(
        cli.log_level.as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let level = match (&cli.command, filter.as_deref()) {
        (Command::Demo { .. }, None | Some("info")) => "warn,caretaker::app=error,rumqttd=off",
        (_, Some(l)) => l,
        (_, None) => "info",
    };
    init_logging(cli.log_format, level);
    match cli.command {
        Command::Run { config } => {
            let config = config_path(config)?;
            runtime()?.block_on(crate::app::run(&config))?;
            Ok(0)
        }
        Command::Check { config, format } => {
            let config = config_path(config)?;
            Ok(match format {
                CheckFormat::Text => check::run(&config),
                CheckFormat::Json => check::run_json(&config),
            })
        }
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
            if !cfg!(feature = "demo") {
                anyhow::bail!(
                    "this caretaker was built without the demo (cargo feature `demo`, left out of production \
                     builds and the container image): build it with `cargo build --release --features demo` \
                     (or `docker build --build-arg FEATURES=demo`), or run `caretaker simulate` against a \
                     broker of your own"
                );
            }
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
            delimiter,
            decimal,
        } => detect::detect(
            &input,
            &output,
            &detector,
            &set,
            &output_score,
            &columns,
            delimiter.as_deref(),
            decimal.as_deref(),
        ),
        Command::WorkOrders(cmd) => work_orders::run(cmd),
        Command::Silence(args) => silence::run(args),
        Command::Backtest(args) => backtest::run(args),
        Command::Profiles(cmd) => profiles::run(cmd),
        Command::Bacnet(cmd) => bacnet::run(cmd),
        Command::Energy { command } => match command {
            EnergyCommand::Report(a) => energy::run_report(a),
            EnergyCommand::Import(a) => energy::run_import(a),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_path_defaults_to_etc_and_says_how_to_give_one() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("caretaker.toml");
        let given = PathBuf::from("/srv/site.toml");
        assert_eq!(
            config_path_in(Some(given.clone()), &default).unwrap(),
            given
        );
        let e = config_path_in(None, &default).unwrap_err().to_string();
        assert!(
            e.contains("CARETAKER_CONFIG") && e.contains(&*default.to_string_lossy()),
            "{e}"
        );
        std::fs::write(&default, "").unwrap();
        assert_eq!(config_path_in(None, &default).unwrap(), default);
    }

    #[test]
    fn caretaker_log_and_the_flag_win_over_rust_log() {
        assert_eq!(
            log_filter(Some("debug"), Some("warn")).as_deref(),
            Some("debug")
        );
        assert_eq!(log_filter(None, Some("warn")).as_deref(), Some("warn"));
        assert_eq!(log_filter(None, Some("  ")), None);
        assert_eq!(log_filter(None, None), None);
    }
}
