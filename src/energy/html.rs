//! The HTML report: one self-contained file (inline CSS and SVG, no scripts, no external assets) an energy
//! manager can e-mail: totals and cost, daily consumption against baseline (bars), a load-profile heat map
//! (hour of day by day), monthly demand peaks, the top after-hours consumers, and the report rows.
//!
//! Charts are hand-written SVG: a few hundred lines here are cheaper than a plotting crate in a 2-core build.

use super::report::{Query, Report};
use std::fmt::Write as _;

/// Escapes text for HTML/SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        // Thousands separators for readability.
        let s = format!("{:.0}", x.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{}{}", if x < 0.0 { "-" } else { "" }, out)
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

const CSS: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2330;max-width:1100px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.sub{color:#5b6577;margin-bottom:16px}.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #dde2ea;border-radius:8px;padding:10px 14px;min-width:160px}.card b{display:block;font-size:20px}
.card span{color:#5b6577;font-size:12px}table{border-collapse:collapse;font-size:13px}
td,th{padding:3px 10px;border-bottom:1px solid #eef1f5;text-align:right}td:first-child,th:first-child,td.l,th.l{text-align:left}
th{background:#f5f7fa}svg text{font-family:system-ui,sans-serif;font-size:11px;fill:#5b6577}.note{color:#5b6577;font-size:12px}";

/// Renders the report as one HTML document.
pub fn render(r: &Report, q: &Query) -> String {
    let m = &r.meta;
    let cur = m.currency.clone().unwrap_or_default();
    let mut h = String::with_capacity(64 * 1024);
    let to_incl = q.to.yesterday().unwrap_or(q.to);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Energy report {} {} – {}</title><style>{CSS}</style></head><body>",
        esc(&m.site),
        q.from,
        to_incl
    );
    let _ = write!(
        h,
        "<h1>Energy report: {}</h1><div class=\"sub\">{} to {} ({}), {} meters, by {:?}, grouped by {}</div>",
        esc(&m.site),
        q.from,
        to_incl,
        esc(&m.timezone),
        m.meters,
        q.by,
        esc(q.group.name())
    );
    h.push_str("<div class=\"cards\">");
    for (unit, (cons, cost, est)) in &m.totals {
        let _ = write!(
            h,
            "<div class=\"card\"><span>consumption</span><b>{} {}</b><span>{}</span></div>",
            num(*cons),
            esc(unit),
            if *est > 0.0 {
                format!("{:.1}% estimated (gaps)", est * 100.0)
            } else {
                "all measured".into()
            }
        );
        if let Some(c) = cost {
            let _ = write!(
                h,
                "<div class=\"card\"><span>cost ({})</span><b>{} {}</b><span>{}</span></div>",
                esc(unit),
                num(*c),
                esc(&cur),
                if unit == "kWh" && m.demand_charges > 0.0 {
                    format!(
                        "incl. demand charges {} {}",
                        num(m.demand_charges),
                        esc(&cur)
                    )
                } else {
                    "energy + standing charges".into()
                }
            );
        }
    }
    let base: f64 = m.days.iter().filter_map(|d| d.2).sum();
    let with_base: f64 = m.days.iter().filter(|d| d.2.is_some()).map(|d| d.1).sum();
    if base > 0.0 {
        let _ = write!(
            h,
            "<div class=\"card\"><span>vs baseline (days with one)</span><b>{:+.1}%</b><span>{} vs {} kWh</span></div>",
            (with_base - base) / base * 100.0,
            num(with_base),
            num(base)
        );
    }
    let ah: f64 = m
        .after_hours
        .iter()
        .filter(|a| a.unit == "kWh")
        .map(|a| a.after_hours)
        .sum();
    let tot: f64 = m
        .after_hours
        .iter()
        .filter(|a| a.unit == "kWh")
        .map(|a| a.total)
        .sum();
    if tot > 0.0 {
        let _ = write!(
            h,
            "<div class=\"card\"><span>after hours</span><b>{:.0}%</b><span>{} kWh nights, weekends, holidays</span></div>",
            ah / tot * 100.0,
            num(ah)
        );
    }
    h.push_str("</div>");

    h.push_str("<h2>Daily electricity against baseline</h2>");
    h.push_str(&daily_chart(&m.days));
    h.push_str("<h2>Load profile (kWh per hour of day, by day)</h2>");
    h.push_str(&heat_map(&m.days, &m.heat));
    if !m.peaks.is_empty() {
        h.push_str("<h2>Demand peaks (largest interval average power, whole site)</h2><table><tr><th>month</th><th>peak kW</th><th class=\"l\">when</th></tr>");
        for (month, kw, when) in &m.peaks {
            let _ = write!(
                h,
                "<tr><td>{month}</td><td>{kw:.1}</td><td class=\"l\">{when}</td></tr>"
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Top after-hours consumers</h2>");
    h.push_str(&after_hours(r));
    if !m.events.is_empty() {
        h.push_str("<h2>Data quality (meter events)</h2><table><tr><th class=\"l\">meter</th><th>gaps</th><th>resets</th><th>wraps</th><th>glitches</th><th>late</th></tr>");
        for (dev, kinds) in &m.events {
            let k = |n: &str| kinds.get(n).copied().unwrap_or(0);
            let _ = write!(
                h,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(dev),
                k("gap"),
                k("reset"),
                k("wrap"),
                k("glitch"),
                k("late")
            );
        }
        h.push_str("</table><p class=\"note\">Gaps are spread over the missing intervals (estimated); resets count the new reading as consumption since the restart; glitches are dropped; late readings arrived after the reorder window.</p>");
    }
    h.push_str("<h2>Report rows</h2>");
    if r.rows.len() > 1000 {
        let _ = write!(
            h,
            "<p class=\"note\">{} rows: too many to list here; use <code>--format csv</code> for the detail.</p>",
            r.rows.len()
        );
    } else {
        let _ = write!(
            h,
            "<table><tr><th>period</th><th class=\"l\">group</th><th>consumption</th><th class=\"l\">unit</th><th>cost {}</th><th>baseline</th><th>peak kW</th><th>after hours</th><th class=\"l\">flags</th></tr>",
            esc(&cur)
        );
        for row in &r.rows {
            let o = |x: Option<f64>| x.map(num).unwrap_or_else(|| "–".into());
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                esc(&row.period),
                esc(&row.group),
                num(row.consumption),
                esc(&row.unit),
                o(row.cost),
                o(row.baseline),
                o(row.peak_kw),
                num(row.after_hours),
                [(row.estimated, "estimated"), (row.derived, "derived")]
                    .iter()
                    .filter(|x| x.0)
                    .map(|x| x.1)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<p class=\"note\">Estimated: consumption spread over a gap in the readings. Derived: integrated from power readings. Baseline: median of the same hour of the week over the previous weeks. Generated by Caretaker.</p></body></html>\n");
    h
}

fn daily_chart(days: &[(jiff::civil::Date, f64, Option<f64>)]) -> String {
    if days.iter().all(|d| d.1 == 0.0) {
        return "<p class=\"note\">No electricity data in this range.</p>".into();
    }
    let (w, hgt, left, bottom) = (1000.0, 260.0, 56.0, 28.0);
    let n = days.len().max(1) as f64;
    let top = days
        .iter()
        .map(|d| d.1.max(d.2.unwrap_or(0.0)))
        .fold(0.0, f64::max);
    let step = nice_step(top / 4.0);
    let max = (top / step).ceil().max(1.0) * step;
    let plot_w = w - left - 8.0;
    let plot_h = hgt - bottom - 8.0;
    let bw = plot_w / n;
    let y = |v: f64| 8.0 + plot_h - v / max * plot_h;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hgt}\" viewBox=\"0 0 {w} {hgt}\" role=\"img\" aria-label=\"daily consumption against baseline\">"
    );
    let ticks = (max / step).round() as usize;
    for k in 0..=ticks {
        let v = step * k as f64;
        let _ = write!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eef1f5\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - 8.0,
            left - 4.0,
            y(v) + 4.0,
            if step >= 1.0 && v < 1000.0 {
                format!("{v:.0}")
            } else {
                num(v)
            },
            y = y(v)
        );
    }
    for (i, (d, v, b)) in days.iter().enumerate() {
        let x = left + i as f64 * bw;
        let over = b.is_some_and(|b| b > 0.0 && *v > b * 1.1);
        let color = if over { "#d9534f" } else { "#3b7dd8" };
        let _ = write!(
            s,
            "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"{color}\"><title>{d}: {} kWh{}</title></rect>",
            x + bw * 0.1,
            y(*v),
            (bw * 0.8).max(0.5),
            (plot_h + 8.0 - y(*v)).max(0.0),
            num(*v),
            b.map(|b| format!(" (baseline {})", num(b)))
                .unwrap_or_default()
        );
        if let Some(b) = b {
            let _ = write!(
                s,
                "<line x1=\"{:.2}\" x2=\"{:.2}\" y1=\"{y:.2}\" y2=\"{y:.2}\" stroke=\"#1d2330\" stroke-width=\"2\"/>",
                x,
                x + bw,
                y = y(*b)
            );
        }
        let every = (n / 12.0).ceil().max(1.0) as usize;
        if i % every == 0 && x < w - 50.0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{}\">{}</text>",
                x,
                hgt - 10.0,
                d.strftime("%b %d")
            );
        }
    }
    s.push_str("</svg><div class=\"note\">Bars: daily kWh (red: more than 10% above baseline). Black marks: baseline.</div>");
    s
}

fn heat_map(days: &[(jiff::civil::Date, f64, Option<f64>)], heat: &[[f64; 24]]) -> String {
    let max = heat.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
    if max <= 0.0 {
        return "<p class=\"note\">No electricity data in this range.</p>".into();
    }
    let left = 40.0;
    let n = heat.len().max(1) as f64;
    let cw = ((1000.0 - left) / n).clamp(1.5, 30.0);
    let ch = 9.0;
    let top = 8.0;
    let w = left + cw * n + 8.0;
    let hgt = top + 24.0 * ch + 30.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{hgt}\" viewBox=\"0 0 {w:.0} {hgt}\" role=\"img\" aria-label=\"load profile heat map\">"
    );
    for hr in (0..24).step_by(3) {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{hr:02}:00</text>",
            left - 4.0,
            top + hr as f64 * ch + ch
        );
    }
    for (i, row) in heat.iter().enumerate() {
        let x = left + i as f64 * cw;
        for (hr, v) in row.iter().enumerate() {
            // White → amber → dark red.
            let t = (v / max).clamp(0.0, 1.0);
            let (r, g, b) = if t < 0.5 {
                let u = t * 2.0;
                (255.0, 255.0 - u * 80.0, 255.0 - u * 200.0)
            } else {
                let u = (t - 0.5) * 2.0;
                (255.0 - u * 90.0, 175.0 - u * 150.0, 55.0 - u * 30.0)
            };
            let _ = write!(
                s,
                "<rect x=\"{x:.2}\" y=\"{:.1}\" width=\"{:.2}\" height=\"{ch}\" fill=\"rgb({:.0},{:.0},{:.0})\"><title>{} {hr:02}:00 {} kWh</title></rect>",
                top + hr as f64 * ch,
                cw + 0.05,
                r,
                g,
                b,
                days.get(i).map(|d| d.0.to_string()).unwrap_or_default(),
                num(*v)
            );
        }
        let every = (n / 12.0).ceil().max(1.0) as usize;
        if i % every == 0 && x < w - 50.0 {
            let _ = write!(
                s,
                "<text x=\"{x:.1}\" y=\"{}\">{}</text>",
                hgt - 8.0,
                days.get(i)
                    .map(|d| d.0.strftime("%b %d").to_string())
                    .unwrap_or_default()
            );
        }
    }
    let _ = write!(
        s,
        "</svg><div class=\"note\">White: no consumption; dark red: {} kWh in an hour (the range's highest).</div>",
        num(max)
    );
    s
}

/// A round step (1, 2, 2.5 or 5 × 10^k) near `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn after_hours(r: &Report) -> String {
    let top: Vec<_> = r
        .meta
        .after_hours
        .iter()
        .filter(|a| a.after_hours > 0.0)
        .take(10)
        .collect();
    if top.is_empty() {
        return "<p class=\"note\">No after-hours consumption.</p>".into();
    }
    let max = top.iter().map(|a| a.after_hours).fold(0.0, f64::max);
    let mut s = String::from(
        "<table><tr><th class=\"l\">meter</th><th>after hours</th><th class=\"l\">unit</th><th>share of its total</th><th>base load kW</th><th class=\"l\"></th></tr>",
    );
    for a in top {
        let _ = write!(
            s,
            "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td>{:.0}%</td><td>{}</td><td class=\"l\"><svg width=\"200\" height=\"10\"><rect width=\"{:.1}\" height=\"10\" fill=\"#e39b2d\"/></svg></td></tr>",
            esc(&a.device),
            num(a.after_hours),
            esc(&a.unit),
            if a.total > 0.0 {
                a.after_hours / a.total * 100.0
            } else {
                0.0
            },
            a.base_load_kw.map(num).unwrap_or_else(|| "–".into()),
            a.after_hours / max * 200.0
        );
    }
    s.push_str("</table>");
    s
}
