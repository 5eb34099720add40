//! `caretaker energy report|import`: the command-line side of the energy module.

use crate::energy::config::EnergyConfig;
use crate::energy::report::{self, By};
use crate::energy::store::{self, Store};
use anyhow::{Context, bail};
use jiff::tz::TimeZone;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

pub use crate::energy::report::Format;

/// The arguments of `caretaker energy report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Site config (TOML): the store under its [state] dir, its tariffs, calendar and virtual meters.
    #[arg(
        long,
        short,
        conflicts_with = "state",
        required_unless_present = "state"
    )]
    pub config: Option<PathBuf>,
    /// A state dir holding energy.sqlite, without a config (no cost: tariffs live in the config).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// First day (site time zone), e.g. 2026-01-01. Default: 30 days before --to.
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, included (site time zone). Default: yesterday.
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long, value_enum, default_value_t = By::Day)]
    pub by: By,
    /// device, category, or a location tag (building, floor, ...).
    #[arg(long, default_value = "device")]
    pub group: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Only these devices or virtual meters (repeat the option for several).
    #[arg(long = "device")]
    pub devices: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// The arguments of `caretaker energy import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Site config (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// CSV of `timestamp,value` (the counter as the meter shows it).
    #[arg(long)]
    pub csv: PathBuf,
    /// Device id (declared under [[devices]]).
    #[arg(long)]
    pub device: String,
    /// The meter point's name in the device's profile (e.g. energy_total).
    #[arg(long)]
    pub point: String,
    /// Header names of the time and value columns, e.g. `time=Zeitstempel,value=Zählerstand` (default: columns
    /// named timestamp/time/date and value/reading/..., else the first two).
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// Field separator: `,`, `;` or `tab` (default: detected from the file).
    #[arg(long)]
    pub delimiter: Option<String>,
    /// Decimal mark: `.` or `,` (default: detected from the file).
    #[arg(long)]
    pub decimal: Option<String>,
}

/// The CSV options of `--columns`, `--delimiter`, `--decimal`.
pub fn csv_options(
    columns: &[String],
    delimiter: Option<&str>,
    decimal: Option<&str>,
) -> anyhow::Result<(crate::tabular::Options, Vec<String>)> {
    let mut o = crate::tabular::Options {
        delimiter: delimiter
            .map(crate::tabular::Options::parse_delimiter)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        decimal: decimal
            .map(crate::tabular::Options::parse_decimal)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        columns: Vec::new(),
    };
    let plain = o.parse_columns(columns).map_err(anyhow::Error::msg)?;
    Ok((o, plain))
}

fn load(config: &Path) -> anyhow::Result<crate::app::Loaded> {
    crate::app::load(config).map_err(|errs| {
        let list: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!(
            "{}\n{} error(s) in {}",
            list.join("\n"),
            errs.len(),
            config.display()
        )
    })
}

pub fn run_report(a: ReportArgs) -> anyhow::Result<i32> {
    let (store, cfg, tz, site) = match (&a.config, &a.state) {
        (Some(c), _) => {
            let l = load(c)?;
            let tz = l.config.timezone();
            let (store, _, _) = Store::open_existing(&store::path_in(&l.config.state_dir))?;
            let energy = l.config.energy.clone().unwrap_or_default();
            (store, energy, tz, l.config.site.name.clone())
        }
        (None, Some(dir)) => {
            let (store, tz, site) = Store::open_existing(&store::path_in(dir))?;
            let tz = TimeZone::get(&tz).unwrap_or_else(|_| TimeZone::system());
            (store, EnergyConfig::default(), tz, site)
        }
        (None, None) => bail!("give --config FILE or --state DIR"),
    };
    let tty = std::io::stderr().is_terminal();
    let mut last = 0;
    let mut progress = |k: usize, n: usize| {
        let pct = k * 100 / n.max(1);
        if tty && n >= 20 && pct / 10 != last / 10 {
            last = pct;
            eprint!("\rreading meters: {k}/{n}");
            if k == n {
                eprintln!();
            }
        }
    };
    let req = report::Request {
        from: a.from.clone(),
        to: a.to.clone(),
        by: a.by,
        group: a.group.clone(),
        format: a.format,
        devices: a.devices.clone(),
    };
    let out = report::produce(&store, &cfg, &tz, &site, &req, Some(&mut progress)).map_err(
        |e| match e {
            report::ProduceError::Bad { message, .. } => anyhow::anyhow!(message),
            report::ProduceError::Failed(e) => e,
        },
    )?;
    let text = out.text;
    match &a.output {
        Some(p) => {
            std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?;
            eprintln!("wrote {} ({} rows)", p.display(), out.rows);
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            if !text.ends_with('\n') {
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(0)
}

pub fn run_import(a: ImportArgs) -> anyhow::Result<i32> {
    let (opts, plain) = csv_options(&a.columns, a.delimiter.as_deref(), a.decimal.as_deref())?;
    if let Some(p) = plain.first() {
        bail!("--columns `{p}`: expected time=HEADER or value=HEADER");
    }
    let l = load(&a.config)?;
    let tz = l.config.timezone();
    let energy = l.config.energy.clone().unwrap_or_default();
    let mut store = Store::open(
        &store::path_in(&l.config.state_dir),
        energy.period,
        tz.iana_name().unwrap_or("UTC"),
        &l.config.site.name,
    )?;
    let s = crate::energy::import::import(
        &mut store,
        &l.catalog,
        &tz,
        &a.csv,
        &opts,
        &energy.meters,
        &a.device,
        &a.point,
        |msg| eprintln!("{msg}"),
    )?;
    for r in &s.rejected {
        eprintln!("{}:{}: {}", a.csv.display(), r.line, r.reason);
    }
    let code = if s.rejected.is_empty() {
        0
    } else {
        eprintln!(
            "{} line(s) of {} rejected ({}); the other {} readings were imported",
            s.rejected.len(),
            a.csv.display(),
            s.dialect,
            s.readings
        );
        2
    };
    let fmt = |t: Option<jiff::Timestamp>| {
        t.map(|t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%d %H:%M %Z")
                .to_string()
        })
        .unwrap_or_default()
    };
    if s.temperature {
        println!(
            "imported {} readings of {}/{} ({} .. {}): {} hourly means, mean {:.1} degC (degree days)",
            s.readings,
            a.device,
            a.point,
            fmt(s.first),
            fmt(s.last),
            s.slots,
            s.consumption
        );
        return Ok(code);
    }
    println!(
        "imported {} readings of {}/{} ({} .. {}): {:.3} {} in {} intervals",
        s.readings,
        a.device,
        a.point,
        fmt(s.first),
        fmt(s.last),
        s.consumption,
        s.unit,
        s.slots
    );
    let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
    for e in &s.events {
        *kinds.entry(e.kind()).or_default() += 1;
    }
    for (k, n) in kinds {
        println!("  {n} {k}{}", if n == 1 { "" } else { "s" });
    }
    Ok(code)
}
