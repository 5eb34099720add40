//! The local energy store: `[state] dir/energy.sqlite`.
//!
//! Layout (compact: one row per meter and UTC day, not per interval):
//! - `meta(key, value)`: `period` (settlement seconds, fixed when the store is created), `timezone`, `site`;
//! - `series(id, device, point, unit, category, derived, location)`: one row per meter point, with what a report
//!   needs to group it without the site config (`caretaker energy report --state DIR` works on a copied store);
//! - `day(series, day, data)`: the slots of one UTC day as a blob: `n` little-endian f64 (NaN = no data) then
//!   `n` flag bytes ([`PRESENT`], `counter::ESTIMATED`, `counter::DERIVED`), `n = 86400 / period`. A 15-minute
//!   year is 365 rows of 864 bytes per meter (~320 KB);
//! - `state(series, json)`: each meter's converter state, written in the same transaction as the slots it
//!   produced, so a restart neither loses nor double-counts consumption;
//! - `temperature(hour, sum, n)`: outdoor temperature per UTC hour (for degree days), as sum and count;
//! - `event(series, at, kind, detail)`: wraps, resets, glitches, gaps, late readings, for audit.
//!
//! SQLite calls block: the live stage talks to the store from a thread of its own.

use super::counter::{Event, Slots, State};
use anyhow::{Context, bail};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::Path;

/// Slot flag: the slot holds data.
pub const PRESENT: u8 = 4;

/// The store file inside a state dir.
pub fn path_in(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("energy.sqlite")
}

/// One meter point known to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesInfo {
    pub id: i64,
    pub device: String,
    pub point: String,
    /// Base unit: kWh or m3.
    pub unit: String,
    pub category: String,
    pub derived: bool,
    pub location: BTreeMap<String, String>,
    /// The meter's role (`import`, `export`, `generation`, `gas`, `water`, `thermal`); stores from before roles
    /// read `import`... or the role of the category (see [`Store::open`]'s migration).
    pub role: super::Role,
}

/// How new slot values combine with stored ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Live readings: consumption adds up.
    Add,
    /// Imports: the imported range replaces what was there (re-importing a file is idempotent).
    Replace,
}

pub struct Store {
    conn: Connection,
    pub period: i64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series(id INTEGER PRIMARY KEY, device TEXT NOT NULL, point TEXT NOT NULL,
  unit TEXT NOT NULL, category TEXT NOT NULL, derived INTEGER NOT NULL, location TEXT NOT NULL,
  UNIQUE(device, point));
CREATE TABLE IF NOT EXISTS day(series INTEGER NOT NULL, day INTEGER NOT NULL, data BLOB NOT NULL,
  PRIMARY KEY(series, day)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state(series INTEGER PRIMARY KEY, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS temperature(hour INTEGER PRIMARY KEY, sum REAL NOT NULL, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS event(series INTEGER NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
";

impl Store {
    /// Opens (creating if needed) a store. `period` is the settlement period in seconds; a store created with
    /// another period is an error (its slots cannot be re-cut).
    pub fn open(path: &Path, period: i64, timezone: &str, site: &str) -> anyhow::Result<Store> {
        if !(period > 0 && 86400 % period == 0) {
            bail!("settlement period of {period} s does not divide a day");
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut conn = Connection::open(path)
            .with_context(|| format!("cannot open energy store {}", path.display()))?;
        // The daemon and `caretaker energy import|report` may use the store at the same time.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Transactions here read then write (slots added to what is stored). A deferred transaction that read
        // first cannot wait for another writer (the daemon and `energy import` at once): SQLite answers "database
        // is locked" at once. Taking the write lock at BEGIN makes it wait instead (as work_orders::store does).
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("cannot initialise energy store {}", path.display()))?;
        migrate(&conn)
            .with_context(|| format!("cannot migrate energy store {}", path.display()))?;
        let stored: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key='period'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match stored {
            Some(p) if p != period.to_string() => bail!(
                "energy store {} was created with a {} s settlement period, the config says {} s \
                 (move the file away to start a new store)",
                path.display(),
                p,
                period
            ),
            Some(_) => {}
            None => {
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('period', ?1)",
                    [period.to_string()],
                )?;
            }
        }
        for (k, v) in [("timezone", timezone), ("site", site)] {
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value=?2",
                [k, v],
            )?;
        }
        Ok(Store { conn, period })
    }

    /// Bounds SQLite's page cache of this connection to `kib` KiB (SQLite's default is 2 MiB a connection, and a
    /// long-lived connection fills it as the file grows). The daemon's writer touches each series' current day
    /// once every few seconds; pages it does not keep are re-read from the OS page cache.
    pub fn limit_cache(&self, kib: u32) -> anyhow::Result<()> {
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{kib};"))?;
        Ok(())
    }

    /// Opens an existing store read-only-ish (no config at hand): period and time zone come from the file.
    pub fn open_existing(path: &Path) -> anyhow::Result<(Store, String, String)> {
        if !path.is_file() {
            bail!(
                "no energy store at {} (run the daemon with an [energy] section, or `caretaker energy import`)",
                path.display()
            );
        }
        let mut conn = Connection::open(path)
            .with_context(|| format!("cannot open energy store {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        let get = |k: &str| -> anyhow::Result<String> {
            conn.query_row("SELECT value FROM meta WHERE key=?1", [k], |r| r.get(0))
                .optional()?
                .with_context(|| format!("{} is not an energy store (no `{k}`)", path.display()))
        };
        let period: i64 = get("period")?.parse()?;
        migrate(&conn)
            .with_context(|| format!("cannot migrate energy store {}", path.display()))?;
        let tz = get("timezone")?;
        let site = get("site").unwrap_or_default();
        Ok((Store { conn, period }, tz, site))
    }

    pub fn slots_per_day(&self) -> usize {
        (86400 / self.period) as usize
    }

    /// The id of a meter point, registering it (and refreshing its grouping) as needed.
    pub fn series_id(
        &mut self,
        device: &str,
        point: &str,
        unit: &str,
        category: &str,
        derived: bool,
        location: &BTreeMap<String, String>,
    ) -> anyhow::Result<i64> {
        let loc = serde_json::to_string(location)?;
        self.conn.execute(
            "INSERT INTO series(device, point, unit, category, derived, location) VALUES (?1,?2,?3,?4,?5,?6)
             ON CONFLICT(device, point) DO UPDATE SET unit=?3, category=?4, derived=?5, location=?6",
            params![device, point, unit, category, derived, loc],
        )?;
        Ok(self.conn.query_row(
            "SELECT id FROM series WHERE device=?1 AND point=?2",
            params![device, point],
            |r| r.get(0),
        )?)
    }

    /// Sets a meter's role (the live stage and `energy import` call it after [`series_id`](Store::series_id)).
    pub fn set_role(&mut self, series: i64, role: super::Role) -> anyhow::Result<()> {
        self.conn.execute(
            "UPDATE series SET role=?2 WHERE id=?1",
            params![series, role.as_str()],
        )?;
        Ok(())
    }

    pub fn series(&self) -> anyhow::Result<Vec<SeriesInfo>> {
        let mut st = self.conn.prepare(
            "SELECT id, device, point, unit, category, derived, location, role FROM series ORDER BY device, point",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, bool>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (id, device, point, unit, category, derived, loc, role) = r?;
            let role = role
                .as_deref()
                .and_then(super::Role::parse)
                .unwrap_or_else(|| {
                    crate::catalog::Category::parse(&category)
                        .map(super::Role::of_category)
                        .unwrap_or(super::Role::Import)
                });
            out.push(SeriesInfo {
                id,
                device,
                point,
                unit,
                category,
                derived,
                location: serde_json::from_str(&loc).unwrap_or_default(),
                role,
            });
        }
        Ok(out)
    }

    pub fn load_state(&self, series: i64) -> anyhow::Result<Option<State>> {
        let j: Option<String> = self
            .conn
            .query_row("SELECT json FROM state WHERE series=?1", [series], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(j.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Writes slots, converter states and events in one transaction.
    pub fn write(
        &mut self,
        slots: &[(i64, &Slots)],
        mode: Mode,
        states: &[(i64, &State)],
        events: &[(i64, &Event)],
    ) -> anyhow::Result<()> {
        let n = self.slots_per_day();
        let per_day = n as i64;
        let tx = self.conn.transaction()?;
        {
            let mut get = tx.prepare_cached("SELECT data FROM day WHERE series=?1 AND day=?2")?;
            let mut put = tx.prepare_cached(
                "INSERT INTO day(series, day, data) VALUES (?1,?2,?3)
                 ON CONFLICT(series, day) DO UPDATE SET data=?3",
            )?;
            for (series, s) in slots {
                // Group this series' slots by UTC day.
                let mut days: BTreeMap<i64, Vec<(usize, f64, u8)>> = BTreeMap::new();
                for (&slot, &(v, f)) in &s.map {
                    let d = slot.div_euclid(per_day);
                    days.entry(d)
                        .or_default()
                        .push((slot.rem_euclid(per_day) as usize, v, f));
                }
                for (d, items) in days {
                    let old: Option<Vec<u8>> =
                        get.query_row(params![series, d], |r| r.get(0)).optional()?;
                    let (mut vals, mut flags) = match old {
                        Some(b) if b.len() == n * 9 => decode(&b, n),
                        _ => (vec![f64::NAN; n], vec![0u8; n]),
                    };
                    for (i, v, f) in items {
                        if mode == Mode::Add && flags[i] & PRESENT != 0 {
                            vals[i] += v;
                            flags[i] |= f;
                        } else {
                            vals[i] = v;
                            flags[i] = f | PRESENT;
                        }
                    }
                    put.execute(params![series, d, encode(&vals, &flags)])?;
                }
            }
            let mut st = tx.prepare_cached(
                "INSERT INTO state(series, json) VALUES (?1, ?2) ON CONFLICT(series) DO UPDATE SET json=?2",
            )?;
            for (series, s) in states {
                st.execute(params![series, serde_json::to_string(s)?])?;
            }
            let mut ev = tx.prepare_cached(
                "INSERT INTO event(series, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (series, e) in events {
                ev.execute(params![series, e.at(), e.kind(), format!("{e:?}")])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Calls `f(day, values, flags)` for each stored UTC day of a series in `[from_day, to_day)`, in order.
    pub fn for_each_day(
        &self,
        series: i64,
        from_day: i64,
        to_day: i64,
        mut f: impl FnMut(i64, &[f64], &[u8]),
    ) -> anyhow::Result<()> {
        let n = self.slots_per_day();
        let mut st = self.conn.prepare_cached(
            "SELECT day, data FROM day WHERE series=?1 AND day>=?2 AND day<?3 ORDER BY day",
        )?;
        let mut rows = st.query(params![series, from_day, to_day])?;
        let mut vals = vec![0f64; n];
        let mut flags = vec![0u8; n];
        while let Some(r) = rows.next()? {
            let d: i64 = r.get(0)?;
            let b = r.get_ref(1)?.as_blob()?;
            if b.len() != n * 9 {
                bail!("energy store: day {d} of series {series} has a malformed blob");
            }
            decode_into(b, &mut vals, &mut flags);
            f(d, &vals, &flags);
        }
        Ok(())
    }

    /// Total stored consumption of a series in slots `[from, to)` (for tests and checks).
    pub fn total(&self, series: i64, from_slot: i64, to_slot: i64) -> anyhow::Result<f64> {
        let per_day = self.slots_per_day() as i64;
        let mut sum = 0.0;
        self.for_each_day(
            series,
            from_slot.div_euclid(per_day),
            to_slot.div_euclid(per_day) + 1,
            |d, v, f| {
                for i in 0..v.len() {
                    let slot = d * per_day + i as i64;
                    if slot >= from_slot && slot < to_slot && f[i] & PRESENT != 0 {
                        sum += v[i];
                    }
                }
            },
        )?;
        Ok(sum)
    }

    /// Adds (live) or replaces (import) outdoor temperature sums per UTC hour (`hour = unix seconds / 3600`).
    pub fn write_temperature(
        &mut self,
        hours: &BTreeMap<i64, (f64, u32)>,
        mode: Mode,
    ) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let sql = match mode {
                Mode::Add => {
                    "INSERT INTO temperature(hour, sum, n) VALUES (?1, ?2, ?3)
                     ON CONFLICT(hour) DO UPDATE SET sum = sum + ?2, n = n + ?3"
                }
                Mode::Replace => {
                    "INSERT INTO temperature(hour, sum, n) VALUES (?1, ?2, ?3)
                     ON CONFLICT(hour) DO UPDATE SET sum = ?2, n = ?3"
                }
            };
            let mut st = tx.prepare_cached(sql)?;
            for (h, (sum, n)) in hours {
                st.execute(params![h, sum, n])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Mean outdoor temperature per UTC hour in `[from_hour, to_hour)`.
    pub fn temperatures(&self, from_hour: i64, to_hour: i64) -> anyhow::Result<Vec<(i64, f64)>> {
        let mut st = self.conn.prepare_cached(
            "SELECT hour, sum / n FROM temperature WHERE hour >= ?1 AND hour < ?2 AND n > 0 ORDER BY hour",
        )?;
        let rows = st.query_map(params![from_hour, to_hour], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored value and flags of given slots (absent slots are left out).
    pub fn slot_values(&self, series: i64, slots: &[i64]) -> anyhow::Result<Vec<(i64, f64, u8)>> {
        let per_day = self.slots_per_day() as i64;
        let mut out = Vec::with_capacity(slots.len());
        let mut days: Vec<i64> = slots.iter().map(|s| s.div_euclid(per_day)).collect();
        days.dedup();
        for d in days {
            self.for_each_day(series, d, d + 1, |_, v, f| {
                for &s in slots.iter().filter(|s| s.div_euclid(per_day) == d) {
                    let i = s.rem_euclid(per_day) as usize;
                    if f[i] & PRESENT != 0 {
                        out.push((s, v[i], f[i]));
                    }
                }
            })?;
        }
        Ok(out)
    }

    /// Meter events per device and kind with `at` in `[from, to)` (unix seconds).
    pub fn event_counts(&self, from: f64, to: f64) -> anyhow::Result<Vec<(String, String, i64)>> {
        let mut st = self.conn.prepare(
            "SELECT s.device, e.kind, count(*) FROM event e JOIN series s ON s.id = e.series
             WHERE e.at >= ?1 AND e.at < ?2 GROUP BY s.device, e.kind ORDER BY s.device, e.kind",
        )?;
        let rows = st.query_map(params![from, to], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn events(&self, series: i64) -> anyhow::Result<Vec<(f64, String)>> {
        let mut st = self
            .conn
            .prepare("SELECT at, kind FROM event WHERE series=?1 ORDER BY at")?;
        let rows = st.query_map([series], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The start of the first and the end of the last slot holding data (unix seconds), if any.
    pub fn data_range(&self) -> anyhow::Result<Option<(i64, i64)>> {
        let (lo, hi): (Option<i64>, Option<i64>) =
            self.conn
                .query_row("SELECT min(day), max(day) FROM day", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return Ok(None);
        };
        let n = self.slots_per_day();
        let mut first = i64::MAX;
        let mut last = i64::MIN;
        let mut st = self
            .conn
            .prepare("SELECT day, data FROM day WHERE day = ?1 OR day = ?2")?;
        let mut rows = st.query(params![lo, hi])?;
        while let Some(r) = rows.next()? {
            let d: i64 = r.get(0)?;
            let b = r.get_ref(1)?.as_blob()?;
            if b.len() != n * 9 {
                continue;
            }
            let flags = &b[n * 8..];
            if let Some(i) = flags.iter().position(|f| f & PRESENT != 0) {
                first = first.min((d * n as i64 + i as i64) * self.period);
            }
            if let Some(i) = flags.iter().rposition(|f| f & PRESENT != 0) {
                last = last.max((d * n as i64 + i as i64 + 1) * self.period);
            }
        }
        Ok((first <= last).then_some((first, last)))
    }
}

/// In-place migrations of stores written by older versions (each checks before it changes anything).
/// - `series.role` (meter roles): added as NULL, read as the role of the series' category, so every meter of an
///   old store keeps counting as consumption exactly as before.
fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let has_role: bool = conn
        .prepare("SELECT 1 FROM pragma_table_info('series') WHERE name='role'")?
        .exists([])?;
    if !has_role {
        conn.execute_batch("ALTER TABLE series ADD COLUMN role TEXT")?;
    }
    Ok(())
}

fn encode(vals: &[f64], flags: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(vals.len() * 9);
    for v in vals {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(flags);
    b
}

fn decode(b: &[u8], n: usize) -> (Vec<f64>, Vec<u8>) {
    let mut v = vec![0f64; n];
    let mut f = vec![0u8; n];
    decode_into(b, &mut v, &mut f);
    (v, f)
}

fn decode_into(b: &[u8], vals: &mut [f64], flags: &mut [u8]) {
    let n = vals.len();
    for (i, c) in b[..n * 8].chunks_exact(8).enumerate() {
        vals[i] = f64::from_le_bytes(c.try_into().unwrap());
    }
    flags.copy_from_slice(&b[n * 8..n * 9]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_writer_keeps_a_bounded_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(&path_in(dir.path()), 900, "UTC", "s").unwrap();
        let pages = |st: &Store| -> i64 {
            st.conn
                .query_row("PRAGMA cache_size", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(pages(&st), -2000, "SQLite's default");
        st.limit_cache(512).unwrap();
        assert_eq!(pages(&st), -512);
    }

    #[test]
    fn a_store_from_before_roles_opens_and_keeps_counting_as_consumption() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_in(dir.path());
        {
            // The schema of the previous release, written by hand.
            let c = Connection::open(&p).unwrap();
            c.execute_batch(
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('period','900'),('timezone','UTC'),('site','s');
                 CREATE TABLE series(id INTEGER PRIMARY KEY, device TEXT NOT NULL, point TEXT NOT NULL,
                   unit TEXT NOT NULL, category TEXT NOT NULL, derived INTEGER NOT NULL, location TEXT NOT NULL,
                   UNIQUE(device, point));
                 INSERT INTO series VALUES (1,'m1','energy_total','kWh','electricity',0,'{}'),
                                           (2,'w1','volume','m3','water',0,'{}');",
            )
            .unwrap();
        }
        let (st, _, _) = Store::open_existing(&p).unwrap();
        let roles: Vec<_> = st.series().unwrap().iter().map(|s| s.role).collect();
        assert_eq!(
            roles,
            [crate::energy::Role::Import, crate::energy::Role::Water]
        );
        drop(st);
        let mut st = Store::open(&p, 900, "UTC", "s").unwrap();
        st.set_role(1, crate::energy::Role::Export).unwrap();
        assert_eq!(st.series().unwrap()[0].role, crate::energy::Role::Export);
    }

    #[test]
    fn add_and_replace_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = path_in(dir.path());
        let mut st = Store::open(&p, 900, "UTC", "s").unwrap();
        let id = st
            .series_id(
                "m1",
                "energy_total",
                "kWh",
                "electricity",
                false,
                &BTreeMap::new(),
            )
            .unwrap();
        let mut s = Slots::default();
        s.add(96 * 20_000 + 3, 1.5, 0);
        s.add(96 * 20_000 + 95, 2.0, 0);
        s.add(96 * 20_001, 0.5, 1);
        st.write(&[(id, &s)], Mode::Add, &[], &[]).unwrap();
        st.write(&[(id, &s)], Mode::Add, &[], &[]).unwrap();
        assert_eq!(st.total(id, 0, i64::MAX / 2).unwrap(), 8.0);
        st.write(&[(id, &s)], Mode::Replace, &[], &[]).unwrap();
        assert_eq!(st.total(id, 0, i64::MAX / 2).unwrap(), 4.0);
        drop(st);
        let e = Store::open(&p, 1800, "UTC", "s").err().unwrap().to_string();
        assert!(e.contains("900 s settlement period"), "{e}");
        let (st, tz, _) = Store::open_existing(&p).unwrap();
        assert_eq!((st.period, tz.as_str()), (900, "UTC"));
        assert_eq!(st.series().unwrap()[0].device, "m1");
    }
}
