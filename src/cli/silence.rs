//! `caretaker silence --device X [--point P] [--rule R] --for 4h --reason "..."`, `silence list`,
//! `silence remove ID`: maintenance windows in the work-order store (SQLite, shared with the running daemon,
//! which checks them on every alarm). See `work_orders::silence`.

use super::work_orders::StoreArgs;
use crate::work_orders::silence::NewSilence;
use crate::work_orders::store::{Store, path_in as store_path};
use crate::work_orders::{now_ms, rfc3339_ms};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SilenceArgs {
    #[command(subcommand)]
    pub command: Option<SilenceCommand>,
    #[command(flatten)]
    pub store: Option<StoreArgs>,
    /// The device whose alarms open no work order during the window.
    #[arg(long)]
    pub device: Option<String>,
    /// Only this point of the device.
    #[arg(long)]
    pub point: Option<String>,
    /// Only this rule.
    #[arg(long)]
    pub rule: Option<String>,
    /// How long, from `--start` (default now): `30m`, `4h`, `2d`.
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: Option<String>,
    /// When the window starts (RFC 3339 with an offset; default now).
    #[arg(long)]
    pub start: Option<String>,
    /// Why (kept with the silence and shown with every alarm it held back).
    #[arg(long)]
    pub reason: Option<String>,
    /// Who (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Silences active or to come (with `--all`, ended and removed ones too), and the alarms they held back.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// End a silence now (kept for the record). Alarms it held back that are still active open work orders.
    Remove {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        /// Who (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

/// The store named by `--config`/`--state`, created when the daemon has not made it yet.
fn open(a: &StoreArgs) -> anyhow::Result<Store> {
    let dir = match (&a.config, &a.state) {
        (Some(c), _) => match crate::config::SiteConfig::load_lenient(c) {
            (Some(cfg), _) => cfg.state_dir,
            (None, errs) => {
                for e in &errs {
                    eprintln!("error: {e}");
                }
                anyhow::bail!("cannot read {}", c.display());
            }
        },
        (None, Some(s)) => s.clone(),
        (None, None) => anyhow::bail!("give --config FILE or --state DIR"),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("state dir {}: {e}", dir.display()))?;
    Ok(Store::open(&store_path(&dir), None)?)
}

fn who(by: &Option<String>) -> String {
    by.clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".into())
}

pub fn run(a: SilenceArgs) -> anyhow::Result<i32> {
    let now = now_ms();
    match a.command {
        Some(SilenceCommand::List { store, all, format }) => {
            let s = open(&store)?;
            let silences = s.silences(all, now)?;
            let held = s.silenced(None)?;
            if format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "silences": silences.iter().map(|x| x.to_json(now)).collect::<Vec<_>>(),
                        "silenced": held.iter().map(|x| x.to_json()).collect::<Vec<_>>(),
                    }))?
                );
                return Ok(0);
            }
            if silences.is_empty() {
                println!("no silences");
            }
            for x in &silences {
                let state = if x.removed_at.is_some() {
                    "removed"
                } else if x.active_at(now) {
                    "active"
                } else if x.starts_at > now {
                    "planned"
                } else {
                    "ended"
                };
                println!(
                    "#{} {state:<7} {}{}{} {} .. {} ({}, by {}): {}",
                    x.id,
                    x.device,
                    x.point
                        .as_deref()
                        .map(|p| format!(" point={p}"))
                        .unwrap_or_default(),
                    x.rule
                        .as_deref()
                        .map(|r| format!(" rule={r}"))
                        .unwrap_or_default(),
                    rfc3339_ms(x.starts_at),
                    rfc3339_ms(x.ends_at),
                    x.source,
                    x.created_by,
                    x.reason
                );
            }
            if !held.is_empty() {
                println!("\nalarms held back:");
                for h in &held {
                    let outcome = match (h.cleared_at, h.work_order) {
                        (_, Some(w)) => format!("work order #{w} opened after the window"),
                        (Some(c), None) => format!("cleared {}", rfc3339_ms(c)),
                        (None, None) => "still active".into(),
                    };
                    println!(
                        "  silence #{} {} {} {}: {} ({}x, {} .. {}) {outcome}",
                        h.silence,
                        h.rule,
                        h.device,
                        h.point,
                        h.title,
                        h.count,
                        rfc3339_ms(h.first_at),
                        rfc3339_ms(h.last_at)
                    );
                }
            }
            Ok(0)
        }
        Some(SilenceCommand::Remove { store, id, by }) => {
            let mut s = open(&store)?;
            if s.remove_silence(id, &who(&by), now)? {
                println!("silence #{id} removed");
                Ok(0)
            } else {
                match s.silence(id)? {
                    None => eprintln!("error: no silence #{id}"),
                    Some(_) => eprintln!("error: silence #{id} was removed already"),
                }
                Ok(1)
            }
        }
        None => {
            let Some(store) = &a.store else {
                anyhow::bail!("give --config FILE or --state DIR");
            };
            let missing: Vec<&str> = [
                ("--device", a.device.is_none()),
                ("--for", a.duration.is_none()),
                ("--reason", a.reason.is_none()),
            ]
            .into_iter()
            .filter_map(|(n, m)| m.then_some(n))
            .collect();
            if !missing.is_empty() {
                anyhow::bail!("a silence needs {}", missing.join(", "));
            }
            let d = crate::util::parse_duration(a.duration.as_deref().unwrap_or_default())
                .map_err(|e| anyhow::anyhow!("--for: {e}"))?;
            if d.is_zero() {
                anyhow::bail!("--for: must be longer than 0s");
            }
            let start = match &a.start {
                None => now,
                Some(s) => s
                    .parse::<jiff::Timestamp>()
                    .map_err(|e| {
                        anyhow::anyhow!("--start `{s}`: expected RFC 3339 with an offset ({e})")
                    })?
                    .as_millisecond(),
            };
            let reason = a.reason.clone().unwrap_or_default();
            if reason.trim().is_empty() {
                anyhow::bail!("--reason: say why");
            }
            let new = NewSilence {
                device: a.device.clone().unwrap_or_default(),
                point: a.point.clone(),
                rule: a.rule.clone(),
                starts_at: start,
                ends_at: start + d.as_millis() as i64,
                reason,
                created_by: who(&a.by),
            };
            let mut s = open(store)?;
            let id = s.add_silence(&new, "cli", now)?;
            println!(
                "silence #{id}: {} from {} until {}",
                new.device,
                rfc3339_ms(new.starts_at),
                rfc3339_ms(new.ends_at)
            );
            Ok(0)
        }
    }
}
