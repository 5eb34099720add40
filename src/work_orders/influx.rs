//! The `work_orders` InfluxDB measurement: one point per work-order change (opened, updated, acknowledged,
//! resolved), so dashboards can chart work orders beside the readings behind them.
//!
//! When `[influxdb]` is configured the store registers an outbox target named [`TARGET`]. Every change then gets
//! an outbox row for it in the same SQLite transaction as the change, whoever made it (the rules, or a person
//! through `caretaker work-orders ack|resolve` while the daemon runs). The store thread turns pending rows into
//! line protocol, pushes them into the same queue as readings (the spool: durable, retried like readings) and
//! only then marks them delivered. A crash in between pushes the same points again: same series and timestamp,
//! so InfluxDB keeps one.
//!
//! ```text
//! work_orders,site=S,rule=R,device=D,point=P,severity=major,team=hvac,event=opened,status=open id=1i,count=1i,value=19.4,peak=19.4,open=1i <ns>
//! ```
//! A fleet member (ARCHITECTURE.md, "Fleet layout") adds `gateway=G` after `site`. Tags with no value (`point` of device-level rules, `team` when the rule names none) are left out. The
//! timestamp is the change's time in ms (reading time for rules, wall clock for people) plus the history row id
//! modulo 10^6 in the sub-millisecond digits, so two changes in the same millisecond stay two points.

use super::store::OutboxRow;
use crate::line_protocol::Line;
use serde_json::Value;

/// Outbox target name of the measurement.
pub const TARGET: &str = "influxdb";
pub const MEASUREMENT: &str = "work_orders";
/// Tag keys, in the order written.
/// `gateway` is there only in a fleet (`[site] gateway_id` recorded in the store): `id` is per gateway.
pub const TAGS: &[&str] = &[
    "site", "gateway", "rule", "device", "point", "severity", "team", "event", "status",
];
/// Field keys: `id`, `count`, `open` are integers (`open` 1 until resolved, then 0); `value` (last value) and
/// `peak` are floats, left out when the work order has none (offline rules).
pub const FIELDS: &[&str] = &["id", "count", "value", "peak", "open"];

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("")
}

/// Appends the line of one outbox row (its JSON payload) to `out`; `false` when the payload is not one.
pub fn encode_row(row: &OutboxRow, out: &mut Vec<u8>) -> bool {
    let Ok(p) = serde_json::from_str::<Value>(&row.payload) else {
        return false;
    };
    let wo = &p["work_order"];
    let Some(at) = s(&p, "at").parse::<jiff::Timestamp>().ok() else {
        return false;
    };
    let Some(id) = wo.get("id").and_then(|v| v.as_i64()) else {
        return false;
    };
    let history: i64 = row
        .idempotency_key
        .rsplit(':')
        .next()
        .and_then(|h| h.parse().ok())
        .unwrap_or(0);
    let status = s(wo, "status");
    let tags = [
        ("site", s(&p, "site")),
        ("gateway", s(&p, "gateway")),
        ("rule", s(wo, "rule")),
        ("device", s(wo, "device")),
        ("point", s(wo, "point")),
        ("severity", s(wo, "severity")),
        ("team", s(wo, "team")),
        ("event", s(&p, "event")),
        ("status", status),
    ];
    let mut line = Line::new(out, MEASUREMENT);
    for (k, v) in tags {
        line.tag(k, v); // left out when empty
    }
    let count = wo.get("count").and_then(|v| v.as_i64()).unwrap_or(0);
    line.field_i64("id", id).field_i64("count", count);
    for (k, j) in [("value", "last_value"), ("peak", "peak_value")] {
        if let Some(x) = wo.get(j).and_then(|v| v.as_f64()).filter(|x| x.is_finite()) {
            line.field_f64(k, x);
        }
    }
    line.field_i64("open", i64::from(status != "resolved"));
    let ns = at.as_millisecond() as i128 * 1_000_000 + (history.rem_euclid(1_000_000)) as i128;
    line.end(ns);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::alarm::{AlarmEvent, AlarmKind, Resolve, Severity};
    use crate::work_orders::Store;

    fn ev(kind: AlarmKind, at_ms: i64, value: f64) -> AlarmEvent {
        AlarmEvent {
            kind,
            rule: "too warm".into(),
            device: "ahu-3".into(),
            point: "supply_air_temp".into(),
            severity: Severity::Major,
            title: "t".into(),
            team: Some("hvac".into()),
            procedure: None,
            resolve: Resolve::Auto,
            due_within_ms: None,
            unit: "degC".into(),
            value,
            peak: value,
            at_ms,
            evidence: vec![],
        }
    }

    #[test]
    fn every_change_becomes_one_line_with_the_documented_tags_and_fields() {
        let mut st = Store::in_memory("north campus").unwrap();
        st.set_targets(&[(TARGET.into(), "influxdb".into())])
            .unwrap();
        let t0 = 1_767_250_800_000;
        st.apply(&ev(AlarmKind::Raised, t0, 19.4)).unwrap();
        st.apply(&ev(AlarmKind::Repeated, t0 + 60_000, 19.9))
            .unwrap();
        st.acknowledge(1, "ana", None, t0 + 90_000).unwrap();
        st.apply(&ev(AlarmKind::Cleared, t0 + 120_000, 16.0))
            .unwrap();
        let rows = st.pending(TARGET, 100).unwrap();
        assert_eq!(rows.len(), 4);
        let mut out = Vec::new();
        for r in &rows {
            assert!(encode_row(r, &mut out));
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "work_orders,site=north\\ campus,rule=too\\ warm,device=ahu-3,point=supply_air_temp,severity=major,\
                 team=hvac,event=opened,status=open id=1i,count=1i,value=19.4,peak=19.4,open=1i {}",
                t0 as i128 * 1_000_000 + 1
            )
        );
        assert!(
            lines[1]
                .contains("event=updated,status=open id=1i,count=2i,value=19.9,peak=19.9,open=1i")
        );
        assert!(lines[2].contains("event=acknowledged,status=acknowledged "));
        assert!(
            lines[3].contains("event=resolved,status=resolved "),
            "{}",
            lines[3]
        );
        assert!(lines[3].ends_with(&format!(
            ",open=0i {}",
            (t0 + 120_000) as i128 * 1_000_000 + 4
        )));
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        st.mark_all_delivered(&ids, t0).unwrap();
        assert!(st.pending(TARGET, 100).unwrap().is_empty());
        // Every tag and field written is a documented one.
        for l in &lines {
            let l = l.replace("\\ ", "_");
            let (series, rest) = l.split_once(' ').unwrap();
            let fields = rest.split_once(' ').unwrap().0;
            for kv in series.split(',').skip(1) {
                assert!(TAGS.contains(&kv.split('=').next().unwrap()), "{kv}");
            }
            for kv in fields.split(',') {
                assert!(FIELDS.contains(&kv.split('=').next().unwrap()), "{kv}");
            }
        }
    }

    /// Pins the exact bytes of every line (tags left out when empty, escaping, integer and float fields).
    #[test]
    fn lines_keep_their_exact_bytes() {
        let mut st = Store::in_memory("north campus").unwrap();
        st.set_targets(&[(TARGET.into(), "influxdb".into())])
            .unwrap();
        let t0 = 1_767_250_800_000;
        let mut a = ev(AlarmKind::Raised, t0, 20.0);
        a.rule = "warm, a=b".into();
        a.team = None;
        st.apply(&a).unwrap();
        let mut off = ev(AlarmKind::Raised, t0 + 5, f64::NAN);
        off.rule = "offline".into();
        off.point = String::new();
        off.peak = f64::NAN;
        st.apply(&off).unwrap();
        st.apply(&ev(AlarmKind::Raised, t0 + 7, 1e-7)).unwrap();
        st.resolve(2, "ana", Some("fixed"), t0 + 9_000).unwrap();
        let mut out = Vec::new();
        for r in &st.pending(TARGET, 100).unwrap() {
            assert!(encode_row(r, &mut out));
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "work_orders,site=north\\ campus,rule=warm\\,\\ a\\=b,device=ahu-3,point=supply_air_temp,severity=major,event=opened,status=open id=1i,count=1i,value=20.0,peak=20.0,open=1i 1767250800000000001\n\
             work_orders,site=north\\ campus,rule=offline,device=ahu-3,severity=major,team=hvac,event=opened,status=open id=2i,count=1i,open=1i 1767250800005000002\n\
             work_orders,site=north\\ campus,rule=too\\ warm,device=ahu-3,point=supply_air_temp,severity=major,team=hvac,event=opened,status=open id=3i,count=1i,value=1e-7,peak=1e-7,open=1i 1767250800007000003\n\
             work_orders,site=north\\ campus,rule=offline,device=ahu-3,severity=major,team=hvac,event=resolved,status=resolved id=2i,count=1i,open=0i 1767250809000000004\n"
        );
    }
}
