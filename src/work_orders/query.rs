//! What the HTTP API asks of the work-order store beyond the alarm life cycle: the schema migration that adds
//! requests and feedback, filtered pages with a cursor, repair requests raised by people, satisfaction
//! feedback, KPIs per team, and the change feed (history rows) the live events follow.
//!
//! Schema additions (migrated in place on open, rows never lost): columns `source` (`rule` | `request`),
//! `building` and `details` on `work_orders`; tables `requests` (the requester's secret key hash and contact,
//! which never leave the store) and `feedback` (one rating per work order). The unique "one open work order per
//! alarm" index becomes partial on `source = 'rule'`, so two people may report faults on the same device.

use super::store::{Store, StoreError, TeamStats, WorkOrder, enqueue, get, history};
use rusqlite::{OptionalExtension, params, params_from_iter, types::Value as Sql};
use std::collections::BTreeMap;

/// Filters of `GET /api/v1/work-orders`. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Any of these statuses.
    pub status: Vec<String>,
    pub team: Option<String>,
    pub severity: Vec<String>,
    pub device: Option<String>,
    /// A building: requests naming it, and work orders of these devices (the building's, from the catalog).
    pub building: Option<(String, Vec<String>)>,
    /// Only work orders changed at or after this time (Unix ms).
    pub since: Option<i64>,
    pub source: Option<String>,
    /// Page size (1..=1000).
    pub limit: usize,
    /// Only ids below this one (the cursor of the previous page).
    pub before_id: Option<i64>,
}

/// A repair request raised by a person, with its routing already decided.
#[derive(Debug, Clone, Default)]
pub struct NewRequest {
    pub title: String,
    pub description: String,
    pub device: Option<String>,
    pub building: Option<String>,
    pub category: Option<String>,
    pub severity: String,
    pub team: Option<String>,
    pub procedure: Option<String>,
    pub due_at: Option<i64>,
    /// What targets and the console see (description, category, location, requester name), JSON.
    pub details: String,
    pub requester_name: Option<String>,
    pub requester_contact: Option<String>,
    /// SHA-256 (hex) of the requester's secret status key.
    pub key_hash: String,
}

/// The requester's limited view of their request.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicRequest {
    pub work_order: WorkOrder,
    pub rating: Option<i64>,
}

/// A time bound (`--from`/`--to` of `work-orders stats`, `from`/`to`/`since` of the API): RFC 3339
/// (`2026-01-05T08:00:00Z`), Unix milliseconds, or a date in `tz` (the start of that day; with `end_of_day`,
/// the start of the next, so `to=2026-01-31` includes the 31st).
pub fn parse_time(s: &str, tz: &jiff::tz::TimeZone, end_of_day: bool) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        let d = if end_of_day {
            d.tomorrow().map_err(|e| e.to_string())?
        } else {
            d
        };
        return tz
            .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))
            .map(|t| t.as_millisecond())
            .map_err(|e| e.to_string());
    }
    Err(format!(
        "`{s}` is not a time: use 2026-01-05, 2026-01-05T08:00:00Z or Unix milliseconds"
    ))
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the smallest value with at least p of the values at or below it.
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

impl Store {
    /// One page of work orders, newest first, and the cursor of the next page (`None`: this was the last).
    pub fn page(&self, f: &Filter) -> rusqlite::Result<(Vec<WorkOrder>, Option<i64>)> {
        let mut sql = String::from("SELECT ");
        sql.push_str(super::store::COLUMNS);
        sql.push_str(" FROM work_orders WHERE 1 = 1");
        let mut args: Vec<Sql> = Vec::new();
        let any_of = |sql: &mut String, col: &str, vals: &[String], args: &mut Vec<Sql>| {
            if vals.is_empty() {
                return;
            }
            sql.push_str(&format!(" AND {col} IN ("));
            for (i, v) in vals.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                args.push(Sql::Text(v.clone()));
            }
            sql.push(')');
        };
        any_of(&mut sql, "status", &f.status, &mut args);
        any_of(&mut sql, "severity", &f.severity, &mut args);
        if let Some(t) = &f.team {
            sql.push_str(" AND team = ?");
            args.push(Sql::Text(t.clone()));
        }
        if let Some(d) = &f.device {
            sql.push_str(" AND device = ?");
            args.push(Sql::Text(d.clone()));
        }
        if let Some(s) = &f.source {
            sql.push_str(" AND source = ?");
            args.push(Sql::Text(s.clone()));
        }
        if let Some((b, devices)) = &f.building {
            sql.push_str(" AND (building = ? OR (building IS NULL AND device IN (SELECT value FROM json_each(?))))");
            args.push(Sql::Text(b.clone()));
            args.push(Sql::Text(
                serde_json::to_string(devices).unwrap_or_else(|_| "[]".into()),
            ));
        }
        if let Some(s) = f.since {
            sql.push_str(" AND updated_at >= ?");
            args.push(Sql::Integer(s));
        }
        if let Some(c) = f.before_id {
            sql.push_str(" AND id < ?");
            args.push(Sql::Integer(c));
        }
        let limit = f.limit.clamp(1, 1000);
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        args.push(Sql::Integer(limit as i64 + 1));
        let mut st = self.conn.prepare(&sql)?;
        let mut rows: Vec<WorkOrder> = st
            .query_map(params_from_iter(args), super::store::row_to_wo)?
            .collect::<rusqlite::Result<_>>()?;
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|w| w.id)
        } else {
            None
        };
        Ok((rows, next))
    }

    /// Opens a work order for a person's repair request: work order, history, request row and outbox rows for
    /// every target, in one transaction.
    pub fn create_request(
        &mut self,
        r: &NewRequest,
        actor: &str,
        now: i64,
    ) -> Result<WorkOrder, StoreError> {
        let site = self.origin();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO work_orders (rule, device, point, severity, status, title, team, procedure, resolve, unit, \
             opened_at, updated_at, due_at, count, source, building, details) \
             VALUES ('request', ?1, '', ?2, 'open', ?3, ?4, ?5, 'manual', '', ?6, ?6, ?7, 1, 'request', ?8, ?9)",
            params![
                r.device.as_deref().unwrap_or(""),
                r.severity,
                r.title,
                r.team,
                r.procedure,
                now,
                r.due_at,
                r.building,
                r.details,
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO requests (work_order, key_hash, requester_name, requester_contact, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, r.key_hash, r.requester_name, r.requester_contact, now],
        )?;
        let h = history(
            &tx,
            id,
            now,
            actor,
            "requested",
            Some(&r.description),
            None,
            "[]",
        )?;
        enqueue(&tx, &site, id, "opened", h, now)?;
        let wo = get(&tx, id)?.ok_or(StoreError::NotFound(id))?;
        tx.commit()?;
        Ok(wo)
    }

    /// The requester's view of a request, when `key_hash` is its key's. `None` for a wrong key or no request
    /// (the caller cannot tell which).
    pub fn public_request(
        &self,
        id: i64,
        key_hash: &str,
    ) -> rusqlite::Result<Option<PublicRequest>> {
        let stored: Option<String> = self
            .conn
            .query_row(
                "SELECT key_hash FROM requests WHERE work_order = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        // Both are hex digests of the same length; compare in constant time anyway.
        if !ring_eq(stored.as_bytes(), key_hash.as_bytes()) {
            return Ok(None);
        }
        let Some(work_order) = get(&self.conn, id)? else {
            return Ok(None);
        };
        Ok(Some(PublicRequest {
            work_order,
            rating: self.rating(id)?,
        }))
    }

    /// The rating a work order got, if any.
    pub fn rating(&self, id: i64) -> rusqlite::Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT rating FROM feedback WHERE work_order = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
    }

    /// Records satisfaction feedback on a resolved work order (once), with a history row.
    pub fn feedback(
        &mut self,
        id: i64,
        rating: i64,
        comment: Option<&str>,
        actor: &str,
        now: i64,
    ) -> Result<WorkOrder, StoreError> {
        let tx = self.conn.transaction()?;
        let wo = get(&tx, id)?.ok_or(StoreError::NotFound(id))?;
        if wo.status != "resolved" {
            return Err(StoreError::State {
                id,
                status: wo.status,
                what: "feedback is taken after resolution",
            });
        }
        let done: Option<i64> = tx
            .query_row(
                "SELECT rating FROM feedback WHERE work_order = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_some() {
            return Err(StoreError::State {
                id,
                status: "rated".into(),
                what: "feedback was already given",
            });
        }
        tx.execute(
            "INSERT INTO feedback (work_order, at, rating, comment, actor) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, now, rating, comment, actor],
        )?;
        let note = match comment {
            Some(c) if !c.is_empty() => format!("rating {rating}/5: {c}"),
            _ => format!("rating {rating}/5"),
        };
        history(&tx, id, now, actor, "feedback", Some(&note), None, "[]")?;
        tx.execute(
            "UPDATE work_orders SET updated_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        let wo = get(&tx, id)?.ok_or(StoreError::NotFound(id))?;
        tx.commit()?;
        Ok(wo)
    }

    /// KPIs per team over the work orders opened in `[from_ms, to_ms)` (open-ended without bounds).
    pub fn kpis(
        &self,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
        now_ms: i64,
    ) -> rusqlite::Result<Vec<TeamStats>> {
        let mut st = self.conn.prepare(
            "SELECT coalesce(w.team, '-'), w.status, w.opened_at, w.acknowledged_at, w.resolved_at, w.due_at, f.rating \
             FROM work_orders w LEFT JOIN feedback f ON f.work_order = w.id \
             WHERE (?1 IS NULL OR w.opened_at >= ?1) AND (?2 IS NULL OR w.opened_at < ?2) ORDER BY w.id",
        )?;
        #[derive(Default)]
        struct Acc {
            opened: i64,
            open: i64,
            resolved: i64,
            ack: Vec<f64>,
            res: Vec<f64>,
            breaches: i64,
            ratings: Vec<f64>,
        }
        let mut teams: BTreeMap<String, Acc> = BTreeMap::new();
        let mut rows = st.query(params![from_ms, to_ms])?;
        while let Some(r) = rows.next()? {
            let team: String = r.get(0)?;
            let status: String = r.get(1)?;
            let opened: i64 = r.get(2)?;
            let acked: Option<i64> = r.get(3)?;
            let resolved: Option<i64> = r.get(4)?;
            let due: Option<i64> = r.get(5)?;
            let rating: Option<i64> = r.get(6)?;
            let a = teams.entry(team).or_default();
            a.opened += 1;
            a.open += (status == "open") as i64;
            if let Some(t) = acked {
                a.ack.push((t - opened) as f64 / 1000.0);
            }
            if status == "resolved" {
                a.resolved += 1;
                if let Some(t) = resolved {
                    a.res.push((t - opened) as f64 / 1000.0);
                }
            }
            if let Some(d) = due {
                let end = if status == "resolved" {
                    resolved.unwrap_or(now_ms)
                } else {
                    now_ms
                };
                a.breaches += (end > d) as i64;
            }
            if let Some(x) = rating {
                a.ratings.push(x as f64);
            }
        }
        Ok(teams
            .into_iter()
            .map(|(team, mut a)| {
                a.ack.sort_by(f64::total_cmp);
                a.res.sort_by(f64::total_cmp);
                TeamStats {
                    team,
                    opened: a.opened,
                    total: a.opened,
                    open: a.open,
                    acknowledged: a.ack.len() as i64,
                    resolved: a.resolved,
                    mean_time_to_acknowledge_s: mean(&a.ack),
                    mean_time_to_resolve_s: mean(&a.res),
                    ack_median_s: percentile(&a.ack, 0.5),
                    ack_p90_s: percentile(&a.ack, 0.9),
                    resolve_median_s: percentile(&a.res, 0.5),
                    resolve_p90_s: percentile(&a.res, 0.9),
                    sla_breaches: a.breaches,
                    rating_mean: mean(&a.ratings),
                    ratings: a.ratings.len() as i64,
                }
            })
            .collect())
    }

    /// Work orders not resolved: (device, building, team, severity, due_at) of each, for counts.
    pub fn open_summary(&self) -> rusqlite::Result<Vec<OpenRow>> {
        let mut st = self.conn.prepare(
            "SELECT device, building, coalesce(team, '-'), severity, due_at FROM work_orders WHERE status != 'resolved'",
        )?;
        let rows = st.query_map([], |r| {
            Ok(OpenRow {
                device: r.get(0)?,
                building: r.get(1)?,
                team: r.get(2)?,
                severity: r.get(3)?,
                due_at: r.get(4)?,
            })
        })?;
        rows.collect()
    }

    /// The newest history row id (the change feed's position).
    pub fn last_change(&self) -> rusqlite::Result<i64> {
        self.conn
            .query_row("SELECT coalesce(max(id), 0) FROM history", [], |r| r.get(0))
    }

    /// Work orders with a history row after `after` (oldest change first), and the new position.
    pub fn changed_since(&self, after: i64) -> rusqlite::Result<(Vec<WorkOrder>, i64)> {
        let mut st = self.conn.prepare(
            "SELECT work_order, max(id) FROM history WHERE id > ?1 GROUP BY work_order ORDER BY max(id) LIMIT 500",
        )?;
        let ids: Vec<(i64, i64)> = st
            .query_map(params![after], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut pos = after;
        let mut out = Vec::new();
        for (wo, h) in ids {
            pos = pos.max(h);
            if let Some(w) = get(&self.conn, wo)? {
                out.push(w);
            }
        }
        Ok((out, pos))
    }
}

/// One work order not resolved, for the overview's counts.
#[derive(Debug, Clone)]
pub struct OpenRow {
    pub device: String,
    pub building: Option<String>,
    pub team: String,
    pub severity: String,
    pub due_at: Option<i64>,
}

fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::alarm::{AlarmEvent, AlarmKind, Resolve, Severity};
    use rusqlite::Connection;

    fn ev(device: &str, team: &str, at_ms: i64) -> AlarmEvent {
        AlarmEvent {
            kind: AlarmKind::Raised,
            rule: "too-warm".into(),
            device: device.into(),
            point: "t".into(),
            severity: Severity::Major,
            title: format!("{device} too warm"),
            team: Some(team.into()),
            procedure: None,
            resolve: Resolve::Manual,
            due_within_ms: Some(3_600_000),
            unit: "degC".into(),
            value: 30.0,
            peak: 30.0,
            at_ms,
            evidence: vec![],
        }
    }

    fn request(title: &str, building: &str) -> NewRequest {
        NewRequest {
            title: title.into(),
            description: "tap drips".into(),
            building: Some(building.into()),
            severity: "minor".into(),
            team: Some("plumbing".into()),
            due_at: Some(8 * 3_600_000),
            details: "{}".into(),
            key_hash: "ab".repeat(32),
            ..Default::default()
        }
    }

    /// A store file written before requests existed (the old schema, with its old unique index) opens, keeps
    /// its rows and takes requests afterwards.
    #[test]
    fn an_old_store_file_is_migrated_without_losing_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wo.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE work_orders (id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT NOT NULL, device TEXT NOT NULL,
                   point TEXT NOT NULL, severity TEXT NOT NULL, status TEXT NOT NULL, title TEXT NOT NULL, team TEXT,
                   procedure TEXT, resolve TEXT NOT NULL, unit TEXT NOT NULL, opened_at INTEGER NOT NULL,
                   updated_at INTEGER NOT NULL, acknowledged_at INTEGER, acknowledged_by TEXT, resolved_at INTEGER,
                   resolved_by TEXT, cleared_at INTEGER, due_at INTEGER, count INTEGER NOT NULL,
                   flaps INTEGER NOT NULL DEFAULT 0, first_value REAL, last_value REAL, peak_value REAL);
                 CREATE UNIQUE INDEX one_open_per_alarm ON work_orders (rule, device, point) WHERE status != 'resolved';
                 INSERT INTO work_orders (rule, device, point, severity, status, title, resolve, unit, opened_at,
                   updated_at, count) VALUES ('too-warm', 'd', 't', 'major', 'open', 'old one', 'auto', 'degC', 5, 5, 1);",
            )
            .unwrap();
        }
        let mut s = Store::open(&path, Some("site")).unwrap();
        let old = s.get(1).unwrap().unwrap();
        assert_eq!(
            (old.title.as_str(), old.source.as_str()),
            ("old one", "rule")
        );
        // Two open requests on one device: the old index would have refused the second.
        let a = s
            .create_request(&request("leak", "B1"), "desk", 10)
            .unwrap();
        let b = s
            .create_request(&request("leak 2", "B1"), "desk", 11)
            .unwrap();
        assert_eq!((a.id, b.id, b.source.as_str()), (2, 3, "request"));
        drop(s);
        // Opening again is a no-op.
        let s = Store::open(&path, None).unwrap();
        assert_eq!(s.list(None).unwrap().len(), 3);
        // A rule alarm still gets one open work order per key.
        let mut s = s;
        s.apply(&ev("d", "hvac", 20)).unwrap();
        assert_eq!(s.list(None).unwrap().len(), 3, "the raise updated #1");
    }

    #[test]
    fn pages_follow_the_cursor_and_filters_combine() {
        let mut s = Store::in_memory("site").unwrap();
        for i in 0..25 {
            let team = if i % 2 == 0 { "hvac" } else { "power" };
            s.apply(&ev(&format!("dev-{i}"), team, 1000 + i)).unwrap();
        }
        s.create_request(&request("leak", "B1"), "desk", 5000)
            .unwrap();
        let mut f = Filter {
            limit: 10,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let (rows, next) = s.page(&f).unwrap();
            seen.extend(rows.iter().map(|w| w.id));
            match next {
                Some(c) => f.before_id = Some(c),
                None => break,
            }
        }
        assert_eq!(seen, (1..=26).rev().collect::<Vec<_>>());
        let f = Filter {
            team: Some("power".into()),
            limit: 100,
            ..Default::default()
        };
        assert_eq!(s.page(&f).unwrap().0.len(), 12);
        let f = Filter {
            building: Some(("B1".into(), vec!["dev-3".into(), "dev-4".into()])),
            limit: 100,
            ..Default::default()
        };
        let ids: Vec<i64> = s.page(&f).unwrap().0.iter().map(|w| w.id).collect();
        assert_eq!(ids, [26, 5, 4]);
        let f = Filter {
            status: vec!["resolved".into()],
            limit: 100,
            ..Default::default()
        };
        assert!(s.page(&f).unwrap().0.is_empty());
        let f = Filter {
            since: Some(1020),
            source: Some("rule".into()),
            limit: 100,
            ..Default::default()
        };
        assert_eq!(s.page(&f).unwrap().0.len(), 5);
    }

    #[test]
    fn kpis_have_medians_percentiles_breaches_and_ratings() {
        let mut s = Store::in_memory("site").unwrap();
        // Ten hvac work orders acked after 10, 20, ..., 100 s; resolved after twice that.
        for i in 0..10 {
            let t0 = i * 1_000_000;
            let w = s
                .apply(&ev(&format!("d{i}"), "hvac", t0))
                .unwrap()
                .work_order;
            s.acknowledge(w, "a", None, t0 + (i + 1) * 10_000).unwrap();
            s.resolve(w, "a", None, t0 + (i + 1) * 20_000).unwrap();
        }
        s.feedback(1, 5, Some("quick"), "req", 10_000_000).unwrap();
        s.feedback(2, 2, None, "req", 10_000_000).unwrap();
        assert!(matches!(
            s.feedback(2, 4, None, "req", 10_000_001),
            Err(StoreError::State { .. })
        ));
        // One power work order still open, long past due.
        s.apply(&ev("p", "power", 0)).unwrap();
        assert!(matches!(
            s.feedback(11, 4, None, "req", 1),
            Err(StoreError::State { .. })
        ));
        let k = s.kpis(None, None, 100_000_000).unwrap();
        let hvac = &k[0];
        assert_eq!(hvac.team, "hvac");
        assert_eq!(
            (hvac.opened, hvac.acknowledged, hvac.resolved),
            (10, 10, 10)
        );
        assert_eq!(hvac.ack_median_s, Some(50.0));
        assert_eq!(hvac.ack_p90_s, Some(90.0));
        assert_eq!(hvac.resolve_median_s, Some(100.0));
        assert_eq!(hvac.resolve_p90_s, Some(180.0));
        assert_eq!(hvac.mean_time_to_acknowledge_s, Some(55.0));
        assert_eq!((hvac.ratings, hvac.rating_mean), (2, Some(3.5)));
        assert_eq!(hvac.sla_breaches, 0);
        let power = &k[1];
        assert_eq!((power.open, power.sla_breaches, power.ratings), (1, 1, 0));
        // A range counts the work orders opened in it.
        let k = s
            .kpis(Some(5_000_000), Some(7_000_000), 100_000_000)
            .unwrap();
        assert_eq!(k[0].opened, 2);
        // The change feed sees the feedback.
        let (changed, pos) = s.changed_since(0).unwrap();
        assert_eq!(changed.len(), 11);
        assert_eq!(pos, s.last_change().unwrap());
    }

    #[test]
    fn the_requester_sees_their_request_only_with_its_key() {
        let mut s = Store::in_memory("site").unwrap();
        let w = s
            .create_request(&request("leak", "B1"), "public", 1)
            .unwrap();
        assert!(s.public_request(w.id, &"cd".repeat(32)).unwrap().is_none());
        let p = s.public_request(w.id, &"ab".repeat(32)).unwrap().unwrap();
        assert_eq!(p.work_order.title, "leak");
        assert_eq!(p.rating, None);
        assert_eq!(
            s.history(w.id).unwrap()[0].note.as_deref(),
            Some("tap drips")
        );
    }
}
