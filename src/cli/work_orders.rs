//! `caretaker work-orders list|ack|resolve|show|stats`: people's side of the work-order store. Works on the
//! store file directly (SQLite WAL: safe while the daemon runs); acknowledgements and resolutions get outbox
//! rows for the configured targets, which the running daemon delivers.

use crate::work_orders::store::path_in as store_path;
use crate::work_orders::store::{HistoryEntry, OutboxRow, Store, TeamStats, WorkOrder};
use crate::work_orders::{now_ms, rfc3339_ms};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::path::PathBuf;

/// Where the store is.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct StoreArgs {
    /// Site config (TOML): the store is `workorders.sqlite` under its `[state] dir`.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The state folder holding `workorders.sqlite`.
    #[arg(long)]
    pub state: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Status {
    Open,
    Acknowledged,
    Resolved,
}

#[derive(Debug, Subcommand)]
pub enum WorkOrdersCommand {
    /// List work orders, oldest first.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Only work orders in this state.
        #[arg(long, value_enum)]
        status: Option<Status>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Acknowledge a work order (someone is on it).
    Ack {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[arg(long)]
        note: Option<String>,
        /// Who (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Resolve a work order.
    Resolve {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[arg(long)]
        note: Option<String>,
        /// Who (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// One work order with its history, evidence and deliveries.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        id: i64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Time to acknowledge, time to resolve, SLA breaches and ratings per team (the figures of `GET /api/v1/kpis`).
    Stats {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Only work orders opened at or after: a date (site time zone with --config, else UTC), RFC 3339 or Unix ms.
        #[arg(long)]
        from: Option<String>,
        /// Only work orders opened before (a date includes that day).
        #[arg(long)]
        to: Option<String>,
    },
}

fn open(a: &StoreArgs) -> anyhow::Result<Store> {
    Ok(open_tz(a)?.0)
}

/// The store and the site's time zone (UTC with --state).
fn open_tz(a: &StoreArgs) -> anyhow::Result<(Store, jiff::tz::TimeZone)> {
    let mut tz = jiff::tz::TimeZone::UTC;
    let dir = match (&a.config, &a.state) {
        (Some(c), _) => match crate::config::SiteConfig::load_lenient(c) {
            (Some(cfg), _) => {
                tz = cfg.timezone();
                cfg.state_dir
            }
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
    let path = store_path(&dir);
    if !path.exists() {
        anyhow::bail!(
            "no work-order store at {} (the daemon creates it when rules or targets are configured)",
            path.display()
        );
    }
    Ok((Store::open(&path, None)?, tz))
}

/// One CSV field, quoted by the `csv` crate where needed (the one CSV writer, `crate::tabular`).
fn csv_field(s: &str) -> String {
    crate::tabular::field(s)
}

fn opt_time(v: Option<i64>) -> String {
    v.map(rfc3339_ms).unwrap_or_default()
}

fn short_time(ms: i64) -> String {
    let s = rfc3339_ms(ms);
    s.get(..16).map(|x| x.replace('T', " ")).unwrap_or(s)
}

/// Prints work orders in a format (shared with `caretaker backtest`).
pub fn print_list(list: &[WorkOrder], format: Format) {
    match format {
        Format::Json => {
            let v: Vec<_> = list.iter().map(WorkOrder::to_json).collect();
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Format::Csv => {
            println!(
                "id,status,severity,rule,device,point,opened_at,acknowledged_at,resolved_at,count,last_value,peak_value,team,title"
            );
            for w in list {
                let f = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
                println!(
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    w.id,
                    w.status,
                    w.severity,
                    csv_field(&w.rule),
                    csv_field(&w.device),
                    csv_field(&w.point),
                    rfc3339_ms(w.opened_at),
                    opt_time(w.acknowledged_at),
                    opt_time(w.resolved_at),
                    w.count,
                    f(w.last_value),
                    f(w.peak_value),
                    csv_field(w.team.as_deref().unwrap_or("")),
                    csv_field(&w.title)
                );
            }
        }
        Format::Table => {
            println!(
                "{:>5}  {:<12}  {:<8}  {:<16}  {:<26}  {:<16}  {:<30}  {:>5}  TITLE",
                "ID", "STATUS", "SEVERITY", "OPENED (UTC)", "RULE", "DEVICE", "POINT", "COUNT"
            );
            for w in list {
                println!(
                    "{:>5}  {:<12}  {:<8}  {:<16}  {:<26}  {:<16}  {:<30}  {:>5}  {}",
                    w.id,
                    w.status,
                    w.severity,
                    short_time(w.opened_at),
                    w.rule,
                    w.device,
                    if w.point.is_empty() { "-" } else { &w.point },
                    w.count,
                    w.title
                );
            }
            if list.is_empty() {
                println!("(no work orders)");
            }
        }
    }
}

fn actor(by: &Option<String>) -> String {
    by.clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".into())
}

/// Runs a `work-orders` subcommand; returns the exit code.
pub fn run(cmd: WorkOrdersCommand) -> anyhow::Result<i32> {
    match cmd {
        WorkOrdersCommand::List {
            store,
            status,
            format,
        } => list(&store, status, format)?,
        WorkOrdersCommand::Ack {
            store,
            id,
            note,
            by,
        } => ack(&store, id, note.as_deref(), &by)?,
        WorkOrdersCommand::Resolve {
            store,
            id,
            note,
            by,
        } => resolve(&store, id, note.as_deref(), &by)?,
        WorkOrdersCommand::Show { store, id, format } => show(&store, id, format)?,
        WorkOrdersCommand::Stats {
            store,
            format,
            from,
            to,
        } => stats(&store, format, from.as_deref(), to.as_deref())?,
    }
    Ok(0)
}

/// `work-orders list`.
fn list(store: &StoreArgs, status: Option<Status>, format: Format) -> anyhow::Result<()> {
    let s = open(store)?;
    let status = status.map(|x| match x {
        Status::Open => "open",
        Status::Acknowledged => "acknowledged",
        Status::Resolved => "resolved",
    });
    print_list(&s.list(status)?, format);
    Ok(())
}

/// `work-orders ack`.
fn ack(store: &StoreArgs, id: i64, note: Option<&str>, by: &Option<String>) -> anyhow::Result<()> {
    let w = open(store)?.acknowledge(id, &actor(by), note, now_ms())?;
    println!(
        "work order #{} acknowledged by {}",
        w.id,
        w.acknowledged_by.unwrap_or_default()
    );
    Ok(())
}

/// `work-orders resolve`.
fn resolve(
    store: &StoreArgs,
    id: i64,
    note: Option<&str>,
    by: &Option<String>,
) -> anyhow::Result<()> {
    let w = open(store)?.resolve(id, &actor(by), note, now_ms())?;
    println!(
        "work order #{} resolved by {}",
        w.id,
        w.resolved_by.unwrap_or_default()
    );
    Ok(())
}

/// `work-orders show`: the work order, its history and its deliveries.
fn show(store: &StoreArgs, id: i64, format: Format) -> anyhow::Result<()> {
    let s = open(store)?;
    let w = s
        .get(id)?
        .ok_or(crate::work_orders::store::StoreError::NotFound(id))?;
    let hist = s.history(id)?;
    let out = s.outbox(Some(id))?;
    if format == Format::Json {
        return show_json(&w, &hist, &out);
    }
    print_work_order(&w);
    print_history(&hist);
    print_deliveries(&out);
    Ok(())
}

fn show_json(w: &WorkOrder, hist: &[HistoryEntry], out: &[OutboxRow]) -> anyhow::Result<()> {
    let h: Vec<_> = hist
        .iter()
        .map(|h| {
            json!({
                "at": rfc3339_ms(h.at), "actor": h.actor, "action": h.action, "note": h.note,
                "value": h.value,
                "evidence": h.evidence.iter().map(|(t, v)| json!({"at": rfc3339_ms(*t), "value": v})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let d: Vec<_> = out
        .iter()
        .map(|o| {
            json!({
                "target": o.target, "event": o.event, "idempotency_key": o.idempotency_key,
                "attempts": o.attempts, "delivered_at": o.delivered_at.map(rfc3339_ms),
                "last_error": o.last_error,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(
            &json!({"work_order": w.to_json(), "history": h, "deliveries": d})
        )?
    );
    Ok(())
}

fn print_work_order(w: &WorkOrder) {
    println!("work order #{}: {}", w.id, w.title);
    println!("  status:    {}", w.status);
    println!("  severity:  {}", w.severity);
    println!("  alarm:     rule {} on {} {}", w.rule, w.device, w.point);
    println!("  team:      {}", w.team.as_deref().unwrap_or("-"));
    println!("  opened:    {}", rfc3339_ms(w.opened_at));
    if let Some(d) = w.due_at {
        println!("  due:       {}", rfc3339_ms(d));
    }
    if let Some(t) = w.acknowledged_at {
        println!(
            "  acknowledged: {} by {}",
            rfc3339_ms(t),
            w.acknowledged_by.as_deref().unwrap_or("-")
        );
    }
    if let Some(t) = w.resolved_at {
        println!(
            "  resolved:  {} by {}",
            rfc3339_ms(t),
            w.resolved_by.as_deref().unwrap_or("-")
        );
    }
    println!(
        "{}",
        values_line(
            [w.first_value, w.last_value, w.peak_value],
            &w.unit,
            w.count,
            w.flaps
        )
    );
    if let Some(p) = &w.procedure {
        println!("  procedure:");
        for l in p.lines() {
            println!("    {l}");
        }
    }
}

fn print_history(hist: &[HistoryEntry]) {
    println!("history:");
    for h in hist {
        println!(
            "  {}  {:<20} {}{}{}",
            rfc3339_ms(h.at),
            h.actor,
            h.action,
            h.note
                .as_ref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default(),
            h.value.map(|v| format!(" (value {v})")).unwrap_or_default()
        );
        if !h.evidence.is_empty() {
            let e: Vec<String> = h
                .evidence
                .iter()
                .map(|(t, v)| format!("{} = {v}", short_time(*t)))
                .collect();
            println!("      evidence: {}", e.join(", "));
        }
    }
}

fn print_deliveries(out: &[OutboxRow]) {
    println!("deliveries:");
    for o in out {
        println!(
            "  {:<12} {:<13} {}  attempts {}{}",
            o.target,
            o.event,
            o.delivered_at
                .map(|t| format!("delivered {}", rfc3339_ms(t)))
                .unwrap_or_else(|| "pending".into()),
            o.attempts,
            o.last_error
                .as_ref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default()
        );
    }
}

/// `work-orders stats`: per team, and the rows not yet delivered per target (table only).
fn stats(
    store: &StoreArgs,
    format: Format,
    from: Option<&str>,
    to: Option<&str>,
) -> anyhow::Result<()> {
    let (s, tz) = open_tz(store)?;
    let bound = |v: Option<&str>, field: &str, end: bool| -> anyhow::Result<Option<i64>> {
        v.map(|x| crate::work_orders::query::parse_time(x, &tz, end))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--{field}: {e}"))
    };
    let st = s.kpis(
        bound(from, "from", false)?,
        bound(to, "to", true)?,
        now_ms(),
    )?;
    let pending = s.pending_counts()?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"teams": st, "undelivered": pending.iter().map(|(t, n)| json!({"target": t, "rows": n})).collect::<Vec<_>>()})
            )?
        ),
        Format::Csv => print_stats_csv(&st),
        Format::Table => print_stats_table(&st, &pending),
    }
    Ok(())
}

fn print_stats_csv(st: &[TeamStats]) {
    println!(
        "team,total,open,acknowledged,resolved,mean_time_to_acknowledge_s,mean_time_to_resolve_s,sla_breaches,\
         ack_median_s,ack_p90_s,resolve_median_s,resolve_p90_s,rating_mean,ratings"
    );
    for t in st {
        let f = |v: Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or_default();
        println!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            csv_field(&t.team),
            t.total,
            t.open,
            t.acknowledged,
            t.resolved,
            f(t.mean_time_to_acknowledge_s),
            f(t.mean_time_to_resolve_s),
            t.sla_breaches,
            f(t.ack_median_s),
            f(t.ack_p90_s),
            f(t.resolve_median_s),
            f(t.resolve_p90_s),
            t.rating_mean.map(|x| format!("{x:.2}")).unwrap_or_default(),
            t.ratings
        );
    }
}

fn print_stats_table(st: &[TeamStats], pending: &[(String, i64)]) {
    let h = |v: Option<f64>| {
        v.map(|s| format!("{:.1}h", s / 3600.0))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "{:<16} {:>6} {:>6} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>12} {:>8}",
        "TEAM",
        "TOTAL",
        "OPEN",
        "ACKED",
        "RESOLVED",
        "TTA p50",
        "TTA p90",
        "TTR p50",
        "TTR p90",
        "SLA BREACHES",
        "RATING"
    );
    for t in st {
        println!(
            "{:<16} {:>6} {:>6} {:>6} {:>9} {:>8} {:>8} {:>8} {:>8} {:>12} {:>8}",
            t.team,
            t.total,
            t.open,
            t.acknowledged,
            t.resolved,
            h(t.ack_median_s),
            h(t.ack_p90_s),
            h(t.resolve_median_s),
            h(t.resolve_p90_s),
            t.sla_breaches,
            t.rating_mean
                .map(|r| format!("{r:.1} ({})", t.ratings))
                .unwrap_or_else(|| "-".into())
        );
    }
    for (t, n) in pending {
        println!("undelivered to {t}: {n}");
    }
}

/// The `values:` line of `show`: each value as a number, `-` when there is none (not Rust's `Some(46.0)`).
fn values_line(
    [first, last, peak]: [Option<f64>; 3],
    unit: &str,
    count: i64,
    flaps: i64,
) -> String {
    let v = |x: Option<f64>| x.map_or_else(|| "-".to_string(), |x| x.to_string());
    format!(
        "  values:    first {}, last {}, peak {} {unit} (raised {count} times, {flaps} flaps)",
        v(first),
        v(last),
        v(peak)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_printed_as_numbers_or_a_dash() {
        assert_eq!(
            super::values_line([Some(46.0), Some(45.5), None], "degC", 3, 1),
            "  values:    first 46, last 45.5, peak - degC (raised 3 times, 1 flaps)"
        );
    }
}
