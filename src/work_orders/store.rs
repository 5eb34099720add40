//! The SQLite work-order store: work orders, their history, and the outbox. See the module docs of
//! `work_orders` for the invariants. Blocking API: the daemon calls it from a thread of its own.

use super::rfc3339_ms;
use crate::rules::alarm::{AlarmEvent, AlarmKind, Resolve, Severity};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS work_orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL,
    severity TEXT NOT NULL, status TEXT NOT NULL,
    title TEXT NOT NULL, team TEXT, procedure TEXT, resolve TEXT NOT NULL, unit TEXT NOT NULL,
    opened_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    acknowledged_at INTEGER, acknowledged_by TEXT,
    resolved_at INTEGER, resolved_by TEXT, cleared_at INTEGER, due_at INTEGER,
    count INTEGER NOT NULL, flaps INTEGER NOT NULL DEFAULT 0,
    first_value REAL, last_value REAL, peak_value REAL
);
CREATE INDEX IF NOT EXISTS by_key ON work_orders (rule, device, point, id);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    work_order INTEGER NOT NULL REFERENCES work_orders(id),
    at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, note TEXT,
    value REAL, evidence TEXT
);
CREATE INDEX IF NOT EXISTS history_by_wo ON history (work_order, id);
CREATE TABLE IF NOT EXISTS targets (name TEXT PRIMARY KEY, kind TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL, work_order INTEGER NOT NULL, event TEXT NOT NULL,
    idempotency_key TEXT NOT NULL, payload TEXT NOT NULL,
    created_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL,
    delivered_at INTEGER, last_error TEXT, remote_id TEXT,
    UNIQUE (target, idempotency_key)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (target, id) WHERE delivered_at IS NULL;
";

/// Brings a store file of any earlier version up to date. Idempotent; runs in one write transaction so two
/// processes opening the same file at once do not both add a column.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let cols: Vec<String> = {
        let mut st = tx.prepare("SELECT name FROM pragma_table_info('work_orders')")?;
        st.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    for (name, decl) in [
        ("source", "TEXT NOT NULL DEFAULT 'rule'"),
        ("building", "TEXT"),
        ("details", "TEXT"),
    ] {
        if !cols.iter().any(|c| c == name) {
            tx.execute_batch(&format!("ALTER TABLE work_orders ADD COLUMN {name} {decl}"))?;
        }
    }
    tx.execute_batch(
        "DROP INDEX IF EXISTS one_open_per_alarm;
         CREATE UNIQUE INDEX IF NOT EXISTS one_open_per_rule_alarm ON work_orders (rule, device, point)
             WHERE status != 'resolved' AND source = 'rule';
         CREATE TABLE IF NOT EXISTS requests (
             work_order INTEGER PRIMARY KEY REFERENCES work_orders(id),
             key_hash TEXT NOT NULL, requester_name TEXT, requester_contact TEXT, created_at INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS feedback (
             work_order INTEGER PRIMARY KEY REFERENCES work_orders(id),
             at INTEGER NOT NULL, rating INTEGER NOT NULL, comment TEXT, actor TEXT NOT NULL
         );",
    )?;
    tx.execute_batch(SILENCE_SCHEMA)?;
    tx.commit()
}

/// Maintenance windows and the alarms they held back (see `work_orders::silence`).
const SILENCE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, point TEXT, rule TEXT,
    starts_at INTEGER NOT NULL, ends_at INTEGER NOT NULL,
    reason TEXT NOT NULL, created_by TEXT NOT NULL, created_at INTEGER NOT NULL,
    source TEXT NOT NULL, removed_at INTEGER, removed_by TEXT
);
CREATE TABLE IF NOT EXISTS silenced (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    silence INTEGER NOT NULL REFERENCES silences(id),
    rule TEXT NOT NULL, device TEXT NOT NULL, point TEXT NOT NULL,
    severity TEXT NOT NULL, title TEXT NOT NULL, team TEXT, procedure TEXT, resolve TEXT NOT NULL,
    due_within_ms INTEGER, unit TEXT NOT NULL,
    first_at INTEGER NOT NULL, last_at INTEGER NOT NULL, count INTEGER NOT NULL,
    last_value REAL, peak_value REAL, evidence TEXT NOT NULL,
    cleared_at INTEGER, work_order INTEGER
);
CREATE INDEX IF NOT EXISTS silenced_pending ON silenced (rule, device, point) WHERE cleared_at IS NULL AND work_order IS NULL;
";

/// The silence (lowest id) that holds back `ev` at its reading time, if any.
fn silence_matching(tx: &Transaction<'_>, ev: &AlarmEvent) -> rusqlite::Result<Option<i64>> {
    tx.query_row(
        "SELECT id FROM silences WHERE device = ?1 AND (point IS NULL OR point = ?2) AND (rule IS NULL OR rule = ?3) \
         AND removed_at IS NULL AND starts_at <= ?4 AND ?4 < ends_at ORDER BY id LIMIT 1",
        params![ev.device, ev.point, ev.rule, ev.at_ms],
        |r| r.get(0),
    )
    .optional()
}

/// Records an alarm a silence held back: a new `silenced` row, or the count and last value of the pending one.
fn silence_record(tx: &Transaction<'_>, silence: i64, ev: &AlarmEvent) -> rusqlite::Result<()> {
    let value = ev.value.is_finite().then_some(ev.value);
    let peak = ev.peak.is_finite().then_some(ev.peak).or(value);
    let evidence = serde_json::to_string(&ev.evidence).unwrap_or_else(|_| "[]".into());
    let n = tx.execute(
        "UPDATE silenced SET last_at = ?4, count = count + 1, last_value = ?5, peak_value = coalesce(?6, peak_value), \
         silence = ?7 WHERE rule = ?1 AND device = ?2 AND point = ?3 AND cleared_at IS NULL AND work_order IS NULL",
        params![ev.rule, ev.device, ev.point, ev.at_ms, value, peak, silence],
    )?;
    if n == 0 {
        tx.execute(
            "INSERT INTO silenced (silence, rule, device, point, severity, title, team, procedure, resolve, due_within_ms, \
             unit, first_at, last_at, count, last_value, peak_value, evidence) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, 1, ?13, ?14, ?15)",
            params![
                silence,
                ev.rule,
                ev.device,
                ev.point,
                ev.severity.as_str(),
                ev.title,
                ev.team,
                ev.procedure,
                ev.resolve.as_str(),
                ev.due_within_ms,
                ev.unit,
                ev.at_ms,
                value,
                peak,
                evidence
            ],
        )?;
    }
    Ok(())
}

/// The clear of a held-back alarm: its pending row (if any) is marked cleared; returns whether there was one.
fn silence_cleared(tx: &Transaction<'_>, ev: &AlarmEvent) -> rusqlite::Result<bool> {
    Ok(tx.execute(
        "UPDATE silenced SET cleared_at = ?4 WHERE rule = ?1 AND device = ?2 AND point = ?3 AND cleared_at IS NULL AND work_order IS NULL",
        params![ev.rule, ev.device, ev.point, ev.at_ms],
    )? > 0)
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("work-order store {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error("no work order #{0}")]
    NotFound(i64),
    #[error("work order #{id} is {status}: {what}")]
    State {
        id: i64,
        status: String,
        what: &'static str,
    },
}

/// One work order as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkOrder {
    pub id: i64,
    pub rule: String,
    pub device: String,
    pub point: String,
    pub severity: String,
    pub status: String,
    pub title: String,
    pub team: Option<String>,
    pub procedure: Option<String>,
    pub resolve: String,
    pub unit: String,
    pub opened_at: i64,
    pub updated_at: i64,
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    pub cleared_at: Option<i64>,
    pub due_at: Option<i64>,
    pub count: i64,
    pub flaps: i64,
    pub first_value: Option<f64>,
    pub last_value: Option<f64>,
    pub peak_value: Option<f64>,
    /// `rule` (an alarm opened it) or `request` (a person reported a fault through the API).
    pub source: String,
    /// The building a request names (rule work orders take their device's location tag at the API).
    pub building: Option<String>,
    /// A request's public details (description, category, location, requester name), JSON.
    pub details: Option<String>,
}

pub(super) const COLUMNS: &str = "id, rule, device, point, severity, status, title, team, procedure, resolve, unit, opened_at, \
    updated_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by, cleared_at, due_at, count, flaps, \
    first_value, last_value, peak_value, source, building, details";

pub(super) fn row_to_wo(r: &rusqlite::Row<'_>) -> rusqlite::Result<WorkOrder> {
    Ok(WorkOrder {
        id: r.get(0)?,
        rule: r.get(1)?,
        device: r.get(2)?,
        point: r.get(3)?,
        severity: r.get(4)?,
        status: r.get(5)?,
        title: r.get(6)?,
        team: r.get(7)?,
        procedure: r.get(8)?,
        resolve: r.get(9)?,
        unit: r.get(10)?,
        opened_at: r.get(11)?,
        updated_at: r.get(12)?,
        acknowledged_at: r.get(13)?,
        acknowledged_by: r.get(14)?,
        resolved_at: r.get(15)?,
        resolved_by: r.get(16)?,
        cleared_at: r.get(17)?,
        due_at: r.get(18)?,
        count: r.get(19)?,
        flaps: r.get(20)?,
        first_value: r.get(21)?,
        last_value: r.get(22)?,
        peak_value: r.get(23)?,
        source: r.get(24)?,
        building: r.get(25)?,
        details: r.get(26)?,
    })
}

fn num(v: Option<f64>) -> Value {
    v.filter(|x| x.is_finite())
        .map(Value::from)
        .unwrap_or(Value::Null)
}

impl WorkOrder {
    /// The JSON shape of `work-orders list --format json` and of the webhook's `work_order`.
    pub fn to_json(&self) -> Value {
        let t = |v: Option<i64>| v.map(rfc3339_ms).map(Value::from).unwrap_or(Value::Null);
        json!({
            "id": self.id,
            "status": self.status,
            "rule": self.rule,
            "device": self.device,
            "point": self.point,
            "severity": self.severity,
            "title": self.title,
            "team": self.team,
            "procedure": self.procedure,
            "resolve": self.resolve,
            "opened_at": rfc3339_ms(self.opened_at),
            "updated_at": rfc3339_ms(self.updated_at),
            "acknowledged_at": t(self.acknowledged_at),
            "acknowledged_by": self.acknowledged_by,
            "resolved_at": t(self.resolved_at),
            "resolved_by": self.resolved_by,
            "cleared_at": t(self.cleared_at),
            "due_at": t(self.due_at),
            "count": self.count,
            "flaps": self.flaps,
            "unit": self.unit,
            "first_value": num(self.first_value),
            "last_value": num(self.last_value),
            "peak_value": num(self.peak_value),
            "source": self.source,
            "building": self.building,
            "request": self.details.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
        })
    }
}

/// One history row.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub note: Option<String>,
    pub value: Option<f64>,
    /// (Unix ms, value), oldest first.
    pub evidence: Vec<(i64, f64)>,
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub target: String,
    pub work_order: i64,
    pub event: String,
    pub idempotency_key: String,
    pub payload: String,
    pub attempts: i64,
    pub next_at: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
}

/// What a change did, for logs and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub work_order: i64,
    /// `opened`, `updated`, `resolved`, `silenced` (held back by a maintenance window), or `none` (history only).
    pub event: &'static str,
}

/// Per-team figures of `caretaker work-orders stats` and `GET /api/v1/kpis` (one computation, [`Store::kpis`]).
/// Work orders counted are those opened in the range asked for (all of them without one).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TeamStats {
    pub team: String,
    /// Work orders opened (= `total`).
    pub opened: i64,
    pub total: i64,
    /// Still open (nobody acknowledged yet).
    pub open: i64,
    /// Acknowledged at some point (whatever their status now).
    pub acknowledged: i64,
    pub resolved: i64,
    /// Mean seconds from opened to acknowledged, over acknowledged work orders.
    pub mean_time_to_acknowledge_s: Option<f64>,
    /// Mean seconds from opened to resolved, over resolved work orders.
    pub mean_time_to_resolve_s: Option<f64>,
    /// Median and 90th percentile (nearest rank) of the same times.
    pub ack_median_s: Option<f64>,
    pub ack_p90_s: Option<f64>,
    pub resolve_median_s: Option<f64>,
    pub resolve_p90_s: Option<f64>,
    /// Work orders resolved after their due time, or still unresolved past it.
    pub sla_breaches: i64,
    /// Mean satisfaction rating (1..5) over the rated work orders, and how many were rated.
    pub rating_mean: Option<f64>,
    pub ratings: i64,
}

pub struct Store {
    pub(super) conn: Connection,
    pub(super) site: String,
    /// `[site] gateway_id`, recorded by the daemon (`set_gateway`); empty in stores no daemon ran on (backtests,
    /// tests), whose keys then keep the single-gateway form.
    pub(super) gateway: String,
    flap_window_ms: i64,
}

/// Who makes the keys that leave the process: the site and the gateway within its fleet.
#[derive(Debug, Clone)]
pub(super) struct Origin {
    pub site: String,
    pub gateway: String,
}

impl Store {
    /// Opens (creating) the store file. `site` is recorded the first time and used in idempotency keys.
    pub fn open(path: &Path, site: Option<&str>) -> Result<Store, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::init(conn, site).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })
    }

    /// A store in memory (backtests).
    pub fn in_memory(site: &str) -> Result<Store, StoreError> {
        Ok(Self::init(Connection::open_in_memory()?, Some(site))?)
    }

    fn init(mut conn: Connection, site: Option<&str>) -> rusqlite::Result<Store> {
        conn.busy_timeout(Duration::from_secs(10))?;
        // The store thread, each delivery worker and the CLI have their own connection. Every transaction here
        // reads before it writes; a deferred one would then ask to turn a read into a write, which SQLite refuses
        // at once ("database is locked", the busy timeout never applies) when another connection is writing or
        // wrote since the read. Taking the write lock at BEGIN makes it wait for the other writer instead.
        conn.set_transaction_behavior(TransactionBehavior::Immediate);
        // The daemon keeps several connections open for good (store thread, delivery workers, API, event
        // watcher): 512 KiB of page cache each instead of SQLite's default 2 MiB, which each would fill as the
        // history grows. Work-order queries touch few pages; the rest comes from the OS page cache.
        conn.execute_batch("PRAGMA cache_size = -512;")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&mut conn)?;
        if let Some(s) = site {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('site', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1",
                params![s],
            )?;
        }
        let site = conn
            .query_row("SELECT value FROM meta WHERE key = 'site'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or_else(|| "caretaker".to_string());
        let gateway = conn
            .query_row("SELECT value FROM meta WHERE key = 'gateway'", [], |r| {
                r.get(0)
            })
            .optional()?
            .unwrap_or_default();
        Ok(Store {
            conn,
            site,
            gateway,
            flap_window_ms: 30 * 60 * 1000,
        })
    }

    /// Records this gateway's id (`[site] gateway_id`) in the file, so the CLI and the API, opening the same file,
    /// make the same keys. From now on idempotency keys read `<site>:<gateway>:...` and payloads carry
    /// `gateway` and the work order's `ref` `<gateway>/<id>`: unique across the gateways of a fleet.
    pub fn set_gateway(&mut self, gateway: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('gateway', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1",
            params![gateway],
        )?;
        self.gateway = gateway.to_string();
        Ok(())
    }

    /// This gateway's id (empty when none was recorded).
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    pub(super) fn origin(&self) -> Origin {
        Origin {
            site: self.site.clone(),
            gateway: self.gateway.clone(),
        }
    }

    pub fn set_flap_window(&mut self, d: Duration) {
        self.flap_window_ms = d.as_millis() as i64;
    }

    /// Records the configured delivery targets; changes from now on get an outbox row for each.
    pub fn set_targets(&mut self, targets: &[(String, String)]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM targets", [])?;
        for (name, kind) in targets {
            tx.execute(
                "INSERT INTO targets (name, kind) VALUES (?1, ?2)",
                params![name, kind],
            )?;
        }
        tx.commit()
    }

    /// The work orders whose alarm the engine should consider still active after a restart:
    /// (rule, device, point) of every work order not resolved and not cleared.
    pub fn active_alarms(&self) -> rusqlite::Result<Vec<(String, String, String)>> {
        let mut st = self.conn.prepare(
            "SELECT rule, device, point FROM work_orders WHERE status != 'resolved' AND cleared_at IS NULL AND source = 'rule' ORDER BY id",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect()
    }

    /// Applies one alarm transition in one transaction: work order, history and outbox.
    pub fn apply(&mut self, ev: &AlarmEvent) -> Result<Applied, StoreError> {
        let flap = self.flap_window_ms;
        let site = self.origin();
        let tx = self.conn.transaction()?;
        let open: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, severity FROM work_orders WHERE rule = ?1 AND device = ?2 AND point = ?3 AND status != 'resolved' AND source = 'rule'",
                params![ev.rule, ev.device, ev.point],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let actor = format!("rule:{}", ev.rule);
        let evidence = serde_json::to_string(&ev.evidence).unwrap_or_default();
        let value = ev.value.is_finite().then_some(ev.value);
        let peak = ev.peak.is_finite().then_some(ev.peak);
        let peak_severity = |old: &str| {
            let o = Severity::parse(old).unwrap_or(Severity::Warning);
            o.max(ev.severity).as_str()
        };
        let applied = match ev.kind {
            AlarmKind::Raised | AlarmKind::Repeated => {
                if let Some((id, sev)) = open {
                    tx.execute(
                        "UPDATE work_orders SET count = count + 1, last_value = ?2, peak_value = coalesce(?3, peak_value), \
                         severity = ?4, updated_at = ?5, cleared_at = NULL WHERE id = ?1",
                        params![id, value, peak, peak_severity(&sev), ev.at_ms],
                    )?;
                    let action = if ev.kind == AlarmKind::Raised { "raised again" } else { "still active" };
                    let h = history(&tx, id, ev.at_ms, &actor, action, None, value, &evidence)?;
                    enqueue(&tx, &site, id, "updated", h, ev.at_ms)?;
                    Applied { work_order: id, event: "updated" }
                } else if let Some(silence) = silence_matching(&tx, ev)? {
                    // A maintenance window: recorded, no work order (one opens if it is still active at the end).
                    silence_record(&tx, silence, ev)?;
                    tx.commit()?;
                    return Ok(Applied { work_order: 0, event: "silenced" });
                } else if ev.kind == AlarmKind::Repeated {
                    // Resolved by a person while the condition still held: their decision stands until the
                    // alarm clears and is raised again.
                    return Ok(Applied { work_order: 0, event: "none" });
                } else if let Some(id) = tx
                    .query_row(
                        "SELECT id FROM work_orders WHERE rule = ?1 AND device = ?2 AND point = ?3 AND status = 'resolved' AND source = 'rule' \
                         AND resolved_by = ?4 AND resolved_at >= ?5 ORDER BY id DESC LIMIT 1",
                        params![ev.rule, ev.device, ev.point, actor, ev.at_ms - flap],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()?
                {
                    tx.execute(
                        "UPDATE work_orders SET status = CASE WHEN acknowledged_at IS NULL THEN 'open' ELSE 'acknowledged' END, \
                         resolved_at = NULL, resolved_by = NULL, cleared_at = NULL, count = count + 1, flaps = flaps + 1, \
                         last_value = ?2, peak_value = coalesce(?3, peak_value), updated_at = ?4 WHERE id = ?1",
                        params![id, value, peak, ev.at_ms],
                    )?;
                    let h = history(
                        &tx,
                        id,
                        ev.at_ms,
                        &actor,
                        "reopened",
                        Some("flapping: raised again within flap_window of its resolution"),
                        value,
                        &evidence,
                    )?;
                    enqueue(&tx, &site, id, "updated", h, ev.at_ms)?;
                    Applied { work_order: id, event: "updated" }
                } else {
                    tx.execute(
                        "INSERT INTO work_orders (rule, device, point, severity, status, title, team, procedure, resolve, unit, \
                         opened_at, updated_at, due_at, count, first_value, last_value, peak_value) \
                         VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, 1, ?12, ?12, ?13)",
                        params![
                            ev.rule,
                            ev.device,
                            ev.point,
                            ev.severity.as_str(),
                            ev.title,
                            ev.team,
                            ev.procedure,
                            ev.resolve.as_str(),
                            ev.unit,
                            ev.at_ms,
                            ev.due_within_ms.map(|d| ev.at_ms + d),
                            value,
                            peak.or(value),
                        ],
                    )?;
                    let id = tx.last_insert_rowid();
                    let h = history(&tx, id, ev.at_ms, &actor, "opened", None, value, &evidence)?;
                    enqueue(&tx, &site, id, "opened", h, ev.at_ms)?;
                    Applied { work_order: id, event: "opened" }
                }
            }
            AlarmKind::Cleared => {
                let Some((id, _)) = open else {
                    if silence_cleared(&tx, ev)? {
                        tx.commit()?;
                    }
                    return Ok(Applied {
                        work_order: 0,
                        event: "none",
                    });
                };
                if ev.resolve == Resolve::Auto {
                    tx.execute(
                        "UPDATE work_orders SET status = 'resolved', resolved_at = ?2, resolved_by = ?3, cleared_at = ?2, \
                         updated_at = ?2, peak_value = coalesce(?4, peak_value) WHERE id = ?1",
                        params![id, ev.at_ms, actor, peak],
                    )?;
                    let h = history(
                        &tx,
                        id,
                        ev.at_ms,
                        &actor,
                        "resolved",
                        Some("condition cleared"),
                        value,
                        &evidence,
                    )?;
                    enqueue(&tx, &site, id, "resolved", h, ev.at_ms)?;
                    Applied {
                        work_order: id,
                        event: "resolved",
                    }
                } else {
                    tx.execute(
                        "UPDATE work_orders SET cleared_at = ?2, updated_at = ?2 WHERE id = ?1",
                        params![id, ev.at_ms],
                    )?;
                    history(
                        &tx,
                        id,
                        ev.at_ms,
                        &actor,
                        "condition cleared",
                        Some("resolve: manual, waiting for a person"),
                        value,
                        &evidence,
                    )?;
                    Applied {
                        work_order: id,
                        event: "none",
                    }
                }
            }
        };
        tx.commit()?;
        Ok(applied)
    }

    /// A person acknowledges a work order.
    pub fn acknowledge(
        &mut self,
        id: i64,
        actor: &str,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<WorkOrder, StoreError> {
        self.person(id, actor, note, now_ms, true)
    }

    /// A person resolves a work order.
    pub fn resolve(
        &mut self,
        id: i64,
        actor: &str,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<WorkOrder, StoreError> {
        self.person(id, actor, note, now_ms, false)
    }

    fn person(
        &mut self,
        id: i64,
        actor: &str,
        note: Option<&str>,
        now: i64,
        ack: bool,
    ) -> Result<WorkOrder, StoreError> {
        let site = self.origin();
        let tx = self.conn.transaction()?;
        let wo = get(&tx, id)?.ok_or(StoreError::NotFound(id))?;
        match (ack, wo.status.as_str()) {
            (_, "resolved") => {
                return Err(StoreError::State {
                    id,
                    status: wo.status,
                    what: "nothing to do",
                });
            }
            (true, "acknowledged") => {
                return Err(StoreError::State {
                    id,
                    status: wo.status,
                    what: "already acknowledged",
                });
            }
            _ => {}
        }
        let (action, event) = if ack {
            tx.execute(
                "UPDATE work_orders SET status = 'acknowledged', acknowledged_at = ?2, acknowledged_by = ?3, updated_at = ?2 WHERE id = ?1",
                params![id, now, actor],
            )?;
            ("acknowledged", "acknowledged")
        } else {
            tx.execute(
                "UPDATE work_orders SET status = 'resolved', resolved_at = ?2, resolved_by = ?3, updated_at = ?2 WHERE id = ?1",
                params![id, now, actor],
            )?;
            ("resolved", "resolved")
        };
        let h = history(&tx, id, now, actor, action, note, None, "[]")?;
        enqueue(&tx, &site, id, event, h, now)?;
        let wo = get(&tx, id)?.ok_or(StoreError::NotFound(id))?;
        tx.commit()?;
        Ok(wo)
    }

    pub fn get(&self, id: i64) -> rusqlite::Result<Option<WorkOrder>> {
        get(&self.conn, id)
    }

    /// Work orders, newest first, optionally of one status.
    pub fn list(&self, status: Option<&str>) -> rusqlite::Result<Vec<WorkOrder>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM work_orders WHERE (?1 IS NULL OR status = ?1) ORDER BY opened_at, id"
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(params![status], row_to_wo)?;
        rows.collect()
    }

    pub fn history(&self, id: i64) -> rusqlite::Result<Vec<HistoryEntry>> {
        let mut st = self.conn.prepare(
            "SELECT id, at, actor, action, note, value, evidence FROM history WHERE work_order = ?1 ORDER BY id",
        )?;
        let rows = st.query_map(params![id], |r| {
            let ev: Option<String> = r.get(6)?;
            Ok(HistoryEntry {
                id: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                note: r.get(4)?,
                value: r.get(5)?,
                evidence: ev
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default(),
            })
        })?;
        rows.collect()
    }

    /// Outbox rows of a work order (for `show`) or of every work order.
    pub fn outbox(&self, work_order: Option<i64>) -> rusqlite::Result<Vec<OutboxRow>> {
        let mut st = self.conn.prepare(
            "SELECT id, target, work_order, event, idempotency_key, payload, attempts, next_at, delivered_at, last_error \
             FROM outbox WHERE (?1 IS NULL OR work_order = ?1) ORDER BY id",
        )?;
        let rows = st.query_map(params![work_order], row_to_outbox)?;
        rows.collect()
    }

    /// The oldest undelivered row of a target, if any (rows go out in order: a failing row holds back the rest).
    pub fn next_pending(&self, target: &str) -> rusqlite::Result<Option<OutboxRow>> {
        self.conn
            .query_row(
                "SELECT id, target, work_order, event, idempotency_key, payload, attempts, next_at, delivered_at, last_error \
                 FROM outbox WHERE target = ?1 AND delivered_at IS NULL ORDER BY id LIMIT 1",
                params![target],
                row_to_outbox,
            )
            .optional()
    }

    /// Up to `limit` undelivered rows of a target, oldest first (the InfluxDB target takes them in batches).
    pub fn pending(&self, target: &str, limit: usize) -> rusqlite::Result<Vec<OutboxRow>> {
        let mut st = self.conn.prepare(
            "SELECT id, target, work_order, event, idempotency_key, payload, attempts, next_at, delivered_at, last_error \
             FROM outbox WHERE target = ?1 AND delivered_at IS NULL ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![target, limit as i64], row_to_outbox)?;
        rows.collect()
    }

    /// Marks rows delivered in one transaction.
    pub fn mark_all_delivered(&mut self, ids: &[i64], now_ms: i64) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        for id in ids {
            tx.execute(
                "UPDATE outbox SET delivered_at = ?2, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                params![id, now_ms],
            )?;
        }
        tx.commit()
    }

    pub fn mark_delivered(
        &self,
        id: i64,
        now_ms: i64,
        remote_id: Option<&str>,
    ) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE outbox SET delivered_at = ?2, attempts = attempts + 1, last_error = NULL, remote_id = ?3 WHERE id = ?1",
            params![id, now_ms, remote_id],
        )?;
        Ok(())
    }

    pub fn mark_failed(&self, id: i64, error: &str, next_at_ms: i64) -> rusqlite::Result<()> {
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_at = ?3 WHERE id = ?1",
            params![id, error, next_at_ms],
        )?;
        Ok(())
    }

    /// The id a target system gave a work order when it was opened there (Atlas), for later updates.
    pub fn remote_id(&self, target: &str, work_order: i64) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT remote_id FROM outbox WHERE target = ?1 AND work_order = ?2 AND remote_id IS NOT NULL ORDER BY id LIMIT 1",
                params![target, work_order],
                |r| r.get(0),
            )
            .optional()
    }

    /// (work order, remote id) of every work order not resolved here that `target` gave an id (Atlas): the ones
    /// whose status is read back from it.
    pub fn open_remote_ids(&self, target: &str) -> rusqlite::Result<Vec<(i64, String)>> {
        let mut st = self.conn.prepare(
            "SELECT o.work_order, min(o.remote_id) FROM outbox o JOIN work_orders w ON w.id = o.work_order              WHERE o.target = ?1 AND o.remote_id IS NOT NULL AND w.status != 'resolved' GROUP BY o.work_order ORDER BY o.work_order",
        )?;
        let rows = st.query_map(params![target], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// Undelivered outbox rows of one target.
    pub fn pending_count(&self, target: &str) -> rusqlite::Result<i64> {
        self.conn.query_row(
            "SELECT count(*) FROM outbox WHERE target = ?1 AND delivered_at IS NULL",
            params![target],
            |r| r.get(0),
        )
    }

    /// Undelivered outbox rows per target.
    pub fn pending_counts(&self) -> rusqlite::Result<Vec<(String, i64)>> {
        let mut st = self
            .conn
            .prepare("SELECT target, count(*) FROM outbox WHERE delivered_at IS NULL GROUP BY target ORDER BY target")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// Work-order KPIs per team (`-` for work orders without one), over every work order.
    pub fn stats(&self, now_ms: i64) -> rusqlite::Result<Vec<TeamStats>> {
        self.kpis(None, None, now_ms)
    }
}

fn row_to_outbox(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        target: r.get(1)?,
        work_order: r.get(2)?,
        event: r.get(3)?,
        idempotency_key: r.get(4)?,
        payload: r.get(5)?,
        attempts: r.get(6)?,
        next_at: r.get(7)?,
        delivered_at: r.get(8)?,
        last_error: r.get(9)?,
    })
}

pub(super) fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<WorkOrder>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM work_orders WHERE id = ?1"),
        params![id],
        row_to_wo,
    )
    .optional()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn history(
    tx: &Transaction<'_>,
    wo: i64,
    at: i64,
    actor: &str,
    action: &str,
    note: Option<&str>,
    value: Option<f64>,
    evidence: &str,
) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO history (work_order, at, actor, action, note, value, evidence) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![wo, at, actor, action, note, value, evidence],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Adds one outbox row per target, with the work order as it is now. The idempotency key names the site, the
/// gateway (when recorded), the alarm key, the episode start, the event and the history row: unique per work
/// order and event, and across the gateways of a fleet (each has its own store, ids and history rows).
pub(super) fn enqueue(
    tx: &Transaction<'_>,
    origin: &Origin,
    wo: i64,
    event: &str,
    history_id: i64,
    at: i64,
) -> rusqlite::Result<()> {
    let targets: Vec<String> = {
        let mut st = tx.prepare("SELECT name FROM targets ORDER BY name")?;
        st.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    if targets.is_empty() {
        return Ok(());
    }
    let w = get(tx, wo)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    let (site, gateway) = (&origin.site, &origin.gateway);
    let scope = if gateway.is_empty() {
        site.clone()
    } else {
        format!("{site}:{gateway}")
    };
    let key = format!(
        "{scope}:{}:{}:{}:{}:{event}:{history_id}",
        w.rule, w.device, w.point, w.opened_at
    );
    let mut work_order = w.to_json();
    let mut payload = json!({
        "event": event,
        "idempotency_key": key,
        "site": site,
        "at": rfc3339_ms(at),
    });
    if !gateway.is_empty() {
        // `id` stays the store's readable number; `ref` is the one unique across the fleet.
        work_order["ref"] = json!(format!("{gateway}/{wo}"));
        payload["gateway"] = json!(gateway);
    }
    payload["work_order"] = work_order;
    let payload = payload.to_string();
    let now = super::now_ms();
    for t in targets {
        tx.execute(
            "INSERT OR IGNORE INTO outbox (target, work_order, event, idempotency_key, payload, created_at, next_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![t, wo, event, key, payload, now],
        )?;
    }
    Ok(())
}

/// The store file under `[state].dir`.
pub fn path_in(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("workorders.sqlite")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: AlarmKind, at_ms: i64, value: f64) -> AlarmEvent {
        AlarmEvent {
            kind,
            rule: "too-warm".into(),
            device: "ahu-1".into(),
            point: "supply_air_temp".into(),
            severity: Severity::Major,
            title: "AHU ahu-1 too warm".into(),
            team: Some("hvac".into()),
            procedure: Some("1. look".into()),
            resolve: Resolve::Auto,
            due_within_ms: Some(3_600_000),
            unit: "degC".into(),
            value,
            peak: value,
            at_ms,
            evidence: vec![(at_ms - 1000, value - 1.0), (at_ms, value)],
        }
    }

    fn store() -> Store {
        let mut s = Store::in_memory("site").unwrap();
        s.set_targets(&[("hook".into(), "webhook".into())]).unwrap();
        s.set_flap_window(Duration::from_secs(600));
        s
    }

    /// The daemon's store thread and each delivery worker have their own connection to the file. A transition
    /// applied while a worker holds the write lock (marking a row delivered) must wait for it, not fail: a
    /// failed apply loses the alarm event (seen as a missing "updated" webhook call in the rules integration
    /// test under load). A deferred transaction that reads first cannot wait: SQLite answers "database is
    /// locked" at once, whatever the busy timeout, when a reader asks to become a writer.
    #[test]
    fn every_connection_keeps_a_bounded_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(&dir.path().join("w.sqlite"), Some("s")).unwrap();
        let kib: i64 = st
            .conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kib, -512);
    }

    #[test]
    fn a_transition_waits_for_another_connection_s_write_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wo.sqlite");
        let mut s = Store::open(&path, Some("site")).unwrap();
        s.set_targets(&[("hook".into(), "webhook".into())]).unwrap();
        s.apply(&ev(AlarmKind::Raised, 1_000, 19.0)).unwrap();
        // Another connection (a delivery worker) is in the middle of a write.
        let worker = Connection::open(&path).unwrap();
        worker.execute_batch("BEGIN IMMEDIATE").unwrap();
        worker
            .execute("UPDATE outbox SET attempts = attempts + 1", [])
            .unwrap();
        let done = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            worker.execute_batch("COMMIT").unwrap();
        });
        let applied = s.apply(&ev(AlarmKind::Repeated, 70_000, 20.0));
        done.join().unwrap();
        assert_eq!(
            applied.map(|a| a.event).map_err(|e| e.to_string()),
            Ok("updated")
        );
        assert_eq!(s.get(1).unwrap().unwrap().count, 2);
        assert_eq!(s.outbox(Some(1)).unwrap().len(), 2);
    }

    /// Fleet layout: two gateways' stores both number their first work order 1 and their first history row 1;
    /// the keys and references that leave the process differ by the gateway id, and the CLI reopening the file
    /// (no gateway given) makes the same keys as the daemon.
    #[test]
    fn keys_and_refs_are_unique_across_gateways() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = std::collections::HashSet::new();
        for gw in ["gw-a", "gw-b"] {
            let path = dir.path().join(format!("{gw}.sqlite"));
            let mut s = Store::open(&path, Some("site")).unwrap();
            s.set_gateway(gw).unwrap();
            s.set_targets(&[("hook".into(), "webhook".into())]).unwrap();
            s.apply(&ev(AlarmKind::Raised, 1_000, 19.0)).unwrap();
            let ob = s.outbox(None).unwrap();
            let p: Value = serde_json::from_str(&ob[0].payload).unwrap();
            assert_eq!(p["work_order"]["id"], 1, "ids stay readable numbers");
            assert_eq!(p["work_order"]["ref"], format!("{gw}/1"));
            assert_eq!(p["gateway"], gw);
            assert!(
                ob[0]
                    .idempotency_key
                    .starts_with(&format!("site:{gw}:too-warm:")),
                "{}",
                ob[0].idempotency_key
            );
            keys.insert(ob[0].idempotency_key.clone());
            drop(s);
            // `caretaker work-orders ack` opens the file without a site or gateway.
            let mut cli = Store::open(&path, None).unwrap();
            assert_eq!(cli.gateway(), gw);
            cli.acknowledge(1, "alice", None, 2_000).unwrap();
            let ob = cli.outbox(None).unwrap();
            assert!(ob[1].idempotency_key.starts_with(&format!("site:{gw}:")));
            keys.insert(ob[1].idempotency_key.clone());
        }
        assert_eq!(keys.len(), 4, "{keys:?}");
        // A store no daemon recorded a gateway in keeps the single-gateway form.
        let mut s = store();
        s.apply(&ev(AlarmKind::Raised, 1_000, 19.0)).unwrap();
        let ob = s.outbox(None).unwrap();
        assert!(ob[0].idempotency_key.starts_with("site:too-warm:"));
        let p: Value = serde_json::from_str(&ob[0].payload).unwrap();
        assert!(p.get("gateway").is_none() && p["work_order"].get("ref").is_none());
    }

    #[test]
    fn one_work_order_per_alarm_updated_by_repeats_and_resolved_on_clear() {
        let mut s = store();
        assert_eq!(
            s.apply(&ev(AlarmKind::Raised, 1_000, 19.0)).unwrap().event,
            "opened"
        );
        assert_eq!(
            s.apply(&ev(AlarmKind::Raised, 2_000, 21.0)).unwrap().event,
            "updated"
        );
        assert_eq!(
            s.apply(&ev(AlarmKind::Repeated, 3_000, 20.0))
                .unwrap()
                .event,
            "updated"
        );
        let all = s.list(None).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].count, all[0].last_value), (3, Some(20.0)));
        assert_eq!(all[0].due_at, Some(3_601_000));
        assert_eq!(s.active_alarms().unwrap().len(), 1);
        assert_eq!(
            s.apply(&ev(AlarmKind::Cleared, 4_000, 16.0)).unwrap().event,
            "resolved"
        );
        let w = s.get(1).unwrap().unwrap();
        assert_eq!(w.status, "resolved");
        assert_eq!(w.resolved_by.as_deref(), Some("rule:too-warm"));
        assert!(s.active_alarms().unwrap().is_empty());
        let h = s.history(1).unwrap();
        assert_eq!(
            h.iter().map(|h| h.action.as_str()).collect::<Vec<_>>(),
            ["opened", "raised again", "still active", "resolved"]
        );
        assert_eq!(h[0].evidence, vec![(0, 18.0), (1_000, 19.0)]);
        let ob = s.outbox(None).unwrap();
        assert_eq!(
            ob.iter().map(|o| o.event.as_str()).collect::<Vec<_>>(),
            ["opened", "updated", "updated", "resolved"]
        );
        let keys: std::collections::HashSet<_> = ob.iter().map(|o| &o.idempotency_key).collect();
        assert_eq!(keys.len(), 4, "keys are unique per event");
        let p: Value = serde_json::from_str(&ob[0].payload).unwrap();
        assert_eq!(p["event"], "opened");
        assert_eq!(p["work_order"]["status"], "open");
        assert_eq!(p["work_order"]["id"], 1);
    }

    #[test]
    fn flapping_reopens_and_late_raises_open_anew() {
        let mut s = store();
        s.apply(&ev(AlarmKind::Raised, 0, 19.0)).unwrap();
        s.apply(&ev(AlarmKind::Cleared, 1_000, 16.0)).unwrap();
        assert_eq!(
            s.apply(&ev(AlarmKind::Raised, 60_000, 19.0)).unwrap(),
            Applied {
                work_order: 1,
                event: "updated"
            }
        );
        assert_eq!(s.get(1).unwrap().unwrap().flaps, 1);
        s.apply(&ev(AlarmKind::Cleared, 70_000, 16.0)).unwrap();
        // Outside the 10-minute window: a new work order.
        assert_eq!(
            s.apply(&ev(AlarmKind::Raised, 70_000 + 601_000, 19.0))
                .unwrap()
                .work_order,
            2
        );
    }

    #[test]
    fn people_acknowledge_and_resolve_and_their_word_stands() {
        let mut s = store();
        s.apply(&ev(AlarmKind::Raised, 0, 19.0)).unwrap();
        let w = s
            .acknowledge(1, "alice", Some("on my way"), 60_000)
            .unwrap();
        assert_eq!(w.status, "acknowledged");
        assert!(matches!(
            s.acknowledge(1, "bob", None, 61_000),
            Err(StoreError::State { .. })
        ));
        s.apply(&ev(AlarmKind::Raised, 70_000, 22.0)).unwrap();
        assert_eq!(s.get(1).unwrap().unwrap().status, "acknowledged");
        s.resolve(1, "alice", Some("valve replaced"), 120_000)
            .unwrap();
        // Still breaching: the repeat does not reopen what a person resolved.
        assert_eq!(
            s.apply(&ev(AlarmKind::Repeated, 130_000, 22.0))
                .unwrap()
                .event,
            "none"
        );
        assert!(matches!(
            s.resolve(9, "x", None, 0),
            Err(StoreError::NotFound(9))
        ));
        let st = s.stats(200_000).unwrap();
        assert_eq!(st[0].team, "hvac");
        assert_eq!(st[0].mean_time_to_acknowledge_s, Some(60.0));
        assert_eq!(st[0].mean_time_to_resolve_s, Some(120.0));
        assert_eq!(st[0].sla_breaches, 0);
        let ev_names: Vec<_> = s
            .outbox(Some(1))
            .unwrap()
            .into_iter()
            .map(|o| o.event)
            .collect();
        assert_eq!(ev_names, ["opened", "acknowledged", "updated", "resolved"]);
    }

    #[test]
    fn manual_rules_wait_for_a_person_and_outbox_orders_delivery() {
        let mut s = store();
        let mut e = ev(AlarmKind::Raised, 0, 19.0);
        e.resolve = Resolve::Manual;
        s.apply(&e).unwrap();
        e.kind = AlarmKind::Cleared;
        e.at_ms = 5_000;
        assert_eq!(s.apply(&e).unwrap().event, "none");
        let w = s.get(1).unwrap().unwrap();
        assert_eq!((w.status.as_str(), w.cleared_at), ("open", Some(5_000)));
        assert!(
            s.active_alarms().unwrap().is_empty(),
            "cleared alarms are not restored as active"
        );
        let first = s.next_pending("hook").unwrap().unwrap();
        s.mark_failed(first.id, "connection refused", 10).unwrap();
        assert_eq!(
            s.next_pending("hook").unwrap().unwrap().id,
            first.id,
            "a failing row holds back the rest"
        );
        s.mark_delivered(first.id, 20, None).unwrap();
        assert!(s.next_pending("hook").unwrap().is_none());
    }
}
