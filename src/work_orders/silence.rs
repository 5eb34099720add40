//! Maintenance windows: silences in the work-order store, so `caretaker silence` (another process) and the daemon
//! share them, and the record of the alarms they held back.
//!
//! A silence matches an alarm when its device is the alarm's and its `point`/`rule`, when set, are the alarm's,
//! and the alarm's reading time is inside `[starts_at, ends_at)` (and the silence was not removed). A matching
//! alarm that would open a work order opens none: it becomes a `silenced` row (first/last time, count, last
//! value, everything needed to open the work order later). Its clear marks the row cleared. Once a second the
//! store thread looks for rows whose silence is over (ended or removed) while the alarm is still active, and
//! opens their work order then, as if the alarm had been raised at that moment; the row keeps the work order's id.
//!
//! `[[silences]]` in the site config are written into the same table at daemon start (`source = 'config'`,
//! replaced as a set each start); silences made with the CLI or the API have `source = 'cli'`/`'api'`.

use super::rfc3339_ms;
use super::store::Store;
use crate::rules::alarm::{AlarmEvent, AlarmKind, Resolve, Severity};
use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

/// One silence (maintenance window).
#[derive(Debug, Clone, PartialEq)]
pub struct Silence {
    pub id: i64,
    pub device: String,
    pub point: Option<String>,
    pub rule: Option<String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub reason: String,
    pub created_by: String,
    pub created_at: i64,
    /// `config`, `cli` or `api`.
    pub source: String,
    pub removed_at: Option<i64>,
    pub removed_by: Option<String>,
}

/// A new silence.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSilence {
    pub device: String,
    pub point: Option<String>,
    pub rule: Option<String>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub reason: String,
    pub created_by: String,
}

/// One alarm a silence held back.
#[derive(Debug, Clone, PartialEq)]
pub struct Silenced {
    pub id: i64,
    pub silence: i64,
    pub rule: String,
    pub device: String,
    pub point: String,
    pub severity: String,
    pub title: String,
    pub first_at: i64,
    pub last_at: i64,
    pub count: i64,
    pub last_value: Option<f64>,
    pub cleared_at: Option<i64>,
    /// The work order opened when the silence ended with the alarm still active.
    pub work_order: Option<i64>,
}

impl Silence {
    /// Active at `now` (Unix ms): started, not ended, not removed.
    pub fn active_at(&self, now: i64) -> bool {
        self.removed_at.is_none() && self.starts_at <= now && now < self.ends_at
    }

    /// The JSON shape of `silence list --format json` and `GET /api/v1/silences`.
    pub fn to_json(&self, now: i64) -> Value {
        json!({
            "id": self.id,
            "device": self.device,
            "point": self.point,
            "rule": self.rule,
            "starts_at": rfc3339_ms(self.starts_at),
            "ends_at": rfc3339_ms(self.ends_at),
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": rfc3339_ms(self.created_at),
            "source": self.source,
            "removed_at": self.removed_at.map(rfc3339_ms),
            "removed_by": self.removed_by,
            "active": self.active_at(now),
        })
    }
}

impl Silenced {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "silence": self.silence,
            "rule": self.rule,
            "device": self.device,
            "point": self.point,
            "severity": self.severity,
            "title": self.title,
            "first_at": rfc3339_ms(self.first_at),
            "last_at": rfc3339_ms(self.last_at),
            "count": self.count,
            "last_value": self.last_value.filter(|v| v.is_finite()),
            "cleared_at": self.cleared_at.map(rfc3339_ms),
            "work_order": self.work_order,
        })
    }
}

const SILENCE_COLUMNS: &str = "id, device, point, rule, starts_at, ends_at, reason, created_by, created_at, source, removed_at, removed_by";

fn row_to_silence(r: &rusqlite::Row<'_>) -> rusqlite::Result<Silence> {
    Ok(Silence {
        id: r.get(0)?,
        device: r.get(1)?,
        point: r.get(2)?,
        rule: r.get(3)?,
        starts_at: r.get(4)?,
        ends_at: r.get(5)?,
        reason: r.get(6)?,
        created_by: r.get(7)?,
        created_at: r.get(8)?,
        source: r.get(9)?,
        removed_at: r.get(10)?,
        removed_by: r.get(11)?,
    })
}

impl Store {
    /// Adds a silence; its id.
    pub fn add_silence(&mut self, s: &NewSilence, source: &str, now: i64) -> rusqlite::Result<i64> {
        self.conn.execute(
            "INSERT INTO silences (device, point, rule, starts_at, ends_at, reason, created_by, created_at, source) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                s.device,
                s.point,
                s.rule,
                s.starts_at,
                s.ends_at,
                s.reason,
                s.created_by,
                now,
                source
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Ends a silence now (kept, with who removed it, for the record). False when there is no such silence or
    /// it was removed already.
    pub fn remove_silence(&mut self, id: i64, by: &str, now: i64) -> rusqlite::Result<bool> {
        Ok(self.conn.execute(
            "UPDATE silences SET removed_at = ?2, removed_by = ?3 WHERE id = ?1 AND removed_at IS NULL",
            params![id, now, by],
        )? > 0)
    }

    /// Replaces the `[[silences]]` of the site config (source `config`): the old ones are removed (kept for
    /// the record) unless an identical one is among the new, which stays as it is.
    pub fn sync_config_silences(&mut self, want: &[NewSilence], now: i64) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        let have: Vec<Silence> = {
            let mut st = tx.prepare(&format!(
                "SELECT {SILENCE_COLUMNS} FROM silences WHERE source = 'config' AND removed_at IS NULL"
            ))?;
            st.query_map([], row_to_silence)?
                .collect::<rusqlite::Result<_>>()?
        };
        let same = |h: &Silence, w: &NewSilence| {
            h.device == w.device
                && h.point == w.point
                && h.rule == w.rule
                && h.starts_at == w.starts_at
                && h.ends_at == w.ends_at
                && h.reason == w.reason
        };
        for h in &have {
            if !want.iter().any(|w| same(h, w)) {
                tx.execute(
                    "UPDATE silences SET removed_at = ?2, removed_by = 'config' WHERE id = ?1",
                    params![h.id, now],
                )?;
            }
        }
        for w in want {
            if !have.iter().any(|h| same(h, w)) {
                tx.execute(
                    "INSERT INTO silences (device, point, rule, starts_at, ends_at, reason, created_by, created_at, source) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'config', ?7, 'config')",
                    params![w.device, w.point, w.rule, w.starts_at, w.ends_at, w.reason, now],
                )?;
            }
        }
        tx.commit()
    }

    /// Silences, newest first: with `all`, removed and ended ones too; else only those active or still to come.
    pub fn silences(&self, all: bool, now: i64) -> rusqlite::Result<Vec<Silence>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE ?1 OR (removed_at IS NULL AND ends_at > ?2) ORDER BY id DESC"
        ))?;
        let rows = st.query_map(params![all, now], row_to_silence)?;
        rows.collect()
    }

    pub fn silence(&self, id: i64) -> rusqlite::Result<Option<Silence>> {
        self.conn
            .query_row(
                &format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE id = ?1"),
                params![id],
                row_to_silence,
            )
            .optional()
    }

    /// Alarms silences held back, newest first; of one silence when given.
    pub fn silenced(&self, silence: Option<i64>) -> rusqlite::Result<Vec<Silenced>> {
        let mut st = self.conn.prepare(
            "SELECT id, silence, rule, device, point, severity, title, first_at, last_at, count, last_value, cleared_at, work_order \
             FROM silenced WHERE (?1 IS NULL OR silence = ?1) ORDER BY id DESC LIMIT 1000",
        )?;
        let rows = st.query_map(params![silence], |r| {
            Ok(Silenced {
                id: r.get(0)?,
                silence: r.get(1)?,
                rule: r.get(2)?,
                device: r.get(3)?,
                point: r.get(4)?,
                severity: r.get(5)?,
                title: r.get(6)?,
                first_at: r.get(7)?,
                last_at: r.get(8)?,
                count: r.get(9)?,
                last_value: r.get(10)?,
                cleared_at: r.get(11)?,
                work_order: r.get(12)?,
            })
        })?;
        rows.collect()
    }

    /// Opens the work orders of held-back alarms still active whose silence is over (ended by `now` or removed):
    /// each as the alarm raised at `now` with its last value. Returns the work orders opened (or updated).
    pub fn release_silenced(&mut self, now: i64) -> Result<Vec<i64>, super::store::StoreError> {
        type Held = (i64, AlarmEvent);
        let due: Vec<Held> = {
            let mut st = self.conn.prepare(
                "SELECT d.id, d.rule, d.device, d.point, d.severity, d.title, d.team, d.procedure, d.resolve, d.due_within_ms, \
                 d.unit, d.last_value, d.peak_value, d.evidence FROM silenced d JOIN silences s ON s.id = d.silence \
                 WHERE d.cleared_at IS NULL AND d.work_order IS NULL AND (s.removed_at IS NOT NULL OR s.ends_at <= ?1) ORDER BY d.id",
            )?;
            st.query_map(params![now], |r| {
                let ev: String = r.get(13)?;
                Ok((
                    r.get(0)?,
                    AlarmEvent {
                        kind: AlarmKind::Raised,
                        rule: r.get(1)?,
                        device: r.get(2)?,
                        point: r.get(3)?,
                        severity: Severity::parse(&r.get::<_, String>(4)?)
                            .unwrap_or(Severity::Warning),
                        title: r.get(5)?,
                        team: r.get(6)?,
                        procedure: r.get(7)?,
                        resolve: if r.get::<_, String>(8)? == "manual" {
                            Resolve::Manual
                        } else {
                            Resolve::Auto
                        },
                        due_within_ms: r.get(9)?,
                        unit: r.get(10)?,
                        value: r.get::<_, Option<f64>>(11)?.unwrap_or(f64::NAN),
                        peak: r.get::<_, Option<f64>>(12)?.unwrap_or(f64::NAN),
                        at_ms: now,
                        evidence: serde_json::from_str(&ev).unwrap_or_default(),
                    },
                ))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        let mut opened = Vec::new();
        for (row, ev) in due {
            // Another silence may still cover it (overlapping windows): then it stays held back, under that one.
            let a = self.apply(&ev)?;
            if a.work_order > 0 {
                self.conn.execute(
                    "UPDATE silenced SET work_order = ?2 WHERE id = ?1",
                    params![row, a.work_order],
                )?;
                opened.push(a.work_order);
            }
        }
        Ok(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: AlarmKind, at_ms: i64) -> AlarmEvent {
        AlarmEvent {
            kind,
            rule: "too-warm".into(),
            device: "ahu-1".into(),
            point: "supply_air_temp".into(),
            severity: Severity::Major,
            title: "AHU too warm".into(),
            team: Some("hvac".into()),
            procedure: None,
            resolve: Resolve::Auto,
            due_within_ms: None,
            unit: "degC".into(),
            value: 30.0,
            peak: 30.0,
            at_ms,
            evidence: vec![(at_ms, 30.0)],
        }
    }

    fn window(device: &str, point: Option<&str>, from: i64, to: i64) -> NewSilence {
        NewSilence {
            device: device.into(),
            point: point.map(str::to_string),
            rule: None,
            starts_at: from,
            ends_at: to,
            reason: "filter change".into(),
            created_by: "alice".into(),
        }
    }

    #[test]
    fn a_silenced_alarm_opens_nothing_is_recorded_and_opens_when_the_window_ends_still_active() {
        let mut s = Store::in_memory("site").unwrap();
        s.set_targets(&[("hook".into(), "webhook".into())]).unwrap();
        let id = s
            .add_silence(&window("ahu-1", None, 1_000, 10_000), "cli", 0)
            .unwrap();
        // Another device, another point: not silenced.
        s.add_silence(&window("ahu-2", None, 0, 10_000), "cli", 0)
            .unwrap();
        s.add_silence(&window("ahu-1", Some("fan"), 0, 10_000), "cli", 0)
            .unwrap();
        assert_eq!(
            s.apply(&ev(AlarmKind::Raised, 2_000)).unwrap().event,
            "silenced"
        );
        assert_eq!(
            s.apply(&ev(AlarmKind::Repeated, 3_000)).unwrap().event,
            "silenced"
        );
        assert!(s.list(None).unwrap().is_empty());
        assert!(s.outbox(None).unwrap().is_empty(), "no target hears of it");
        let held = s.silenced(Some(id)).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].count, held[0].work_order), (2, None));
        // Window still open: nothing released.
        assert!(s.release_silenced(9_999).unwrap().is_empty());
        assert_eq!(s.release_silenced(10_000).unwrap(), vec![1]);
        let w = s.get(1).unwrap().unwrap();
        assert_eq!((w.status.as_str(), w.opened_at), ("open", 10_000));
        assert_eq!(s.silenced(Some(id)).unwrap()[0].work_order, Some(1));
        assert!(s.release_silenced(20_000).unwrap().is_empty(), "once only");
    }

    #[test]
    fn an_alarm_that_clears_inside_the_window_never_opens_and_removal_ends_a_window_early() {
        let mut s = Store::in_memory("site").unwrap();
        let id = s
            .add_silence(
                &window("ahu-1", Some("supply_air_temp"), 0, 100_000),
                "cli",
                0,
            )
            .unwrap();
        s.apply(&ev(AlarmKind::Raised, 2_000)).unwrap();
        s.apply(&ev(AlarmKind::Cleared, 3_000)).unwrap();
        assert!(s.release_silenced(200_000).unwrap().is_empty());
        assert_eq!(s.silenced(None).unwrap()[0].cleared_at, Some(3_000));
        // Raised again, then the silence is removed: the work order opens at the next release.
        s.apply(&ev(AlarmKind::Raised, 4_000)).unwrap();
        assert_eq!(s.silenced(None).unwrap().len(), 2);
        assert!(s.remove_silence(id, "bob", 5_000).unwrap());
        assert!(!s.remove_silence(id, "bob", 5_000).unwrap());
        assert_eq!(s.release_silenced(5_000).unwrap(), vec![1]);
        assert!(s.silences(false, 5_000).unwrap().is_empty());
        assert_eq!(
            s.silences(true, 5_000).unwrap()[0].removed_by.as_deref(),
            Some("bob")
        );
        // After the window, alarms open work orders directly.
        s.apply(&ev(AlarmKind::Cleared, 6_000)).unwrap();
        assert_eq!(
            s.apply(&ev(AlarmKind::Raised, 7_000_000)).unwrap().event,
            "opened"
        );
    }

    #[test]
    fn config_silences_are_synced_as_a_set() {
        let mut s = Store::in_memory("site").unwrap();
        let a = window("ahu-1", None, 0, 10);
        let b = window("ahu-2", None, 0, 10);
        s.sync_config_silences(&[a.clone(), b.clone()], 0).unwrap();
        s.sync_config_silences(std::slice::from_ref(&a), 1).unwrap();
        let all = s.silences(true, 2).unwrap();
        assert_eq!(all.len(), 2);
        let live: Vec<_> = all.iter().filter(|x| x.removed_at.is_none()).collect();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].device, "ahu-1");
        assert_eq!(live[0].source, "config");
    }
}
