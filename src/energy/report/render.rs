//! The report as text: JSON (the documented contract), CSV and the terminal table.

use super::Report;
use std::fmt::Write as _;

/// `{"rows": [...]}`.
pub fn to_json(r: &Report) -> String {
    // Serialised from the struct (not a `json!` map) so keys keep the documented order.
    serde_json::to_string_pretty(r).unwrap_or_default()
}

/// The CSV the CLI prints and `/api/v1/energy/report?format=csv` serves (one function for both).
/// The columns `export,generation,net` come last and only when a row has an export or generation meter: a site
/// without them gets the same CSV as before roles existed.
pub fn to_csv(r: &Report) -> String {
    let roles = r
        .rows
        .iter()
        .any(|x| x.export.is_some() || x.generation.is_some());
    let mut w = crate::tabular::Writer::new();
    let mut head = vec![
        "period",
        "group",
        "consumption",
        "unit",
        "cost",
        "baseline",
        "estimated",
        "derived",
        "after_hours",
        "peak_kw",
    ];
    if roles {
        head.extend(["export", "generation", "net"]);
    }
    w.row(head);
    let opt = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
    for row in &r.rows {
        let mut cells = vec![
            row.period.clone(),
            row.group.clone(),
            row.consumption.to_string(),
            row.unit.clone(),
            opt(row.cost),
            opt(row.baseline),
            row.estimated.to_string(),
            row.derived.to_string(),
            row.after_hours.to_string(),
            opt(row.peak_kw),
        ];
        if roles {
            cells.extend([opt(row.export), opt(row.generation), opt(row.net)]);
        }
        w.row(cells);
    }
    w.finish()
}

pub fn to_table(r: &Report) -> String {
    let cur = r.meta.currency.clone().unwrap_or_default();
    let head = [
        "period".to_string(),
        "group".into(),
        "consumption".into(),
        "unit".into(),
        format!("cost {cur}").trim().to_string(),
        "baseline".into(),
        "vs base".into(),
        "peak kW".into(),
        "after-hrs".into(),
        "flags".into(),
    ];
    let mut lines: Vec<Vec<String>> = vec![head.to_vec()];
    for row in &r.rows {
        let vs = match row.baseline {
            Some(b) if b > 0.0 => format!("{:+.0}%", (row.consumption - b) / b * 100.0),
            _ => "-".into(),
        };
        let flags = [(row.estimated, "est"), (row.derived, "derived")]
            .iter()
            .filter(|(b, _)| *b)
            .map(|(_, s)| *s)
            .collect::<Vec<_>>()
            .join(",");
        lines.push(vec![
            row.period.clone(),
            row.group.clone(),
            format!("{:.3}", row.consumption),
            row.unit.clone(),
            row.cost.map(|c| format!("{c:.2}")).unwrap_or("-".into()),
            row.baseline
                .map(|c| format!("{c:.3}"))
                .unwrap_or("-".into()),
            vs,
            row.peak_kw.map(|c| format!("{c:.2}")).unwrap_or("-".into()),
            format!("{:.3}", row.after_hours),
            flags,
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|k| {
            lines
                .iter()
                .map(|l| l[k].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for (li, l) in lines.iter().enumerate() {
        for (k, cell) in l.iter().enumerate() {
            let right = (2..=8).contains(&k) && k != 3;
            if right {
                let _ = write!(s, "{:>w$}  ", cell, w = widths[k]);
            } else {
                let _ = write!(s, "{:<w$}  ", cell, w = widths[k]);
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        if li == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            s.push_str(&"-".repeat(total));
            s.push('\n');
        }
    }
    for (unit, (cons, cost, est)) in &r.meta.totals {
        let _ = writeln!(
            s,
            "total: {cons:.3} {unit}{}{}",
            cost.map(|c| format!(", cost {c:.2} {cur}"))
                .unwrap_or_default(),
            if *est > 0.0 {
                format!(", {:.1}% estimated", est * 100.0)
            } else {
                String::new()
            }
        );
    }
    for (unit, (export, generation)) in &r.meta.side_totals {
        let cons = r.meta.totals.get(unit).map(|t| t.0).unwrap_or(0.0);
        let _ = writeln!(
            s,
            "export: {export:.3} {unit}, generation: {generation:.3} {unit}, net consumption: {:.3} {unit}",
            cons - export
        );
    }
    s
}
