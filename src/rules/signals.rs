//! Rule conditions computed outside the rules engine, behind its [`Signal`] trait: anomaly scores
//! (`anomaly:`), trend forecasts (`forecast:`), equipment models (`equipment_anomaly:`) and energy baselines
//! (`energy:`).
//!
//! [`SignalStage`] runs in the pipeline after the anomaly stage and before the rules stage. It keeps only what
//! the loaded rules ask for: a [`Trend`] for points named by a `forecast` rule, an [`EquipmentDetector`] for
//! devices an `equipment_anomaly` rule applies to, and (refreshed every few minutes, never per reading) the
//! energy store's deviation from baseline for devices an `energy` rule applies to. [`HubSignal`], handed to the
//! engine, reads the same shared state, so a reading's signal is up to date when the rules see it.

use crate::anomaly::equipment::EquipmentDetector;
use crate::anomaly::forecast::{Fit, Trend, normal_cdf};
use crate::anomaly::stage::LatestScores;
use crate::catalog::{Catalog, DeviceIdx, PointId};
use crate::pipeline::Stage;
use crate::reading::{Quality, Reading};
use crate::rules::engine::Signal;
use crate::rules::{Condition, RuleSet, SignalKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Confidence a trend needs before a forecast counts (probability that the slope's sign is real).
const FORECAST_CONFIDENCE: f64 = 0.9;
// Operating states and training rows of an equipment model, shared with `caretaker detect --columns`, so offline scores are the daemon's.
use crate::anomaly::equipment::{STATES as EQUIPMENT_STATES, TRAIN_ROWS as EQUIPMENT_TRAIN_ROWS};

#[derive(Default)]
struct Shared {
    /// Point names a `forecast` rule watches.
    forecast_points: HashSet<String>,
    trends: HashMap<PointId, TrendState>,
    /// Profiles (or, with `None`, any profile) an `equipment_anomaly` rule applies to.
    equipment_rules: Vec<crate::rules::AppliesTo>,
    equipment: HashMap<DeviceIdx, Equipment>,
    /// Rules with an `energy` condition (to find their devices).
    energy_rules: Vec<crate::rules::AppliesTo>,
    /// Deviation from baseline of the last complete local days per device, from the energy store.
    energy: HashMap<DeviceIdx, Vec<EnergyDay>>,
    /// Saved state not yet attached (points and devices that have not reported since start-up).
    pending: SavedSignals,
    /// `device/point` of each tracked trend and device id of each equipment model, for saving.
    trend_names: HashMap<PointId, String>,
    equipment_names: HashMap<DeviceIdx, String>,
    dirty: bool,
}

/// Bumped when the layout of the signals state file changes (another version is ignored: relearn).
const SIGNALS_STATE_VERSION: u32 = 1;

/// What `[state].dir/anomaly/signals.json` holds: trends by `device/point`, equipment models by device id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SavedSignals {
    version: u32,
    trends: BTreeMap<String, Trend>,
    equipment: BTreeMap<String, SavedEquipment>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedEquipment {
    /// Number of profile points when saved (a changed profile relearns rather than mixes columns).
    points: usize,
    detector: EquipmentDetector,
}

/// Where SignalStage keeps its state under `[state].dir` (beside the anomaly detectors).
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("anomaly").join("signals.json")
}

fn load_state(path: &Path) -> anyhow::Result<SavedSignals> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SavedSignals::default()),
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
    };
    let saved: SavedSignals = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a signals state file: {e}", path.display()))?;
    if saved.version != SIGNALS_STATE_VERSION {
        anyhow::bail!(
            "{}: state version {}, expected {SIGNALS_STATE_VERSION}: starting to learn afresh",
            path.display(),
            saved.version
        );
    }
    Ok(saved)
}

struct TrendState {
    trend: Trend,
    /// Refit at most once per hour of reading time (a fit is a few ms).
    fitted_at: i64,
    fit: Option<Fit>,
}

struct Equipment {
    detector: EquipmentDetector,
    /// Latest value per point of the device (NaN until seen); `online` is left out.
    row: Vec<f64>,
    columns: Vec<bool>,
    score: Option<f64>,
    touched: bool,
}

/// What the rules engine reads.
#[derive(Clone)]
pub struct HubSignal {
    shared: Arc<Mutex<Shared>>,
    anomaly: Option<LatestScores>,
}

/// The pipeline stage that feeds the signals.
pub struct SignalStage {
    shared: Arc<Mutex<Shared>>,
    touched: Vec<DeviceIdx>,
    /// State file (trends and equipment models), when persisted.
    path: Option<PathBuf>,
    save_every: Duration,
    last_save: Instant,
}

/// Builds the stage and the engine's signal for a rule set; `None` when no rule needs a signal other than
/// anomaly scores (those come straight from the anomaly stage).
pub fn build(rules: &RuleSet, anomaly: Option<LatestScores>) -> (Option<SignalStage>, HubSignal) {
    let mut s = Shared::default();
    let any = needs(rules, &mut s);
    let shared = Arc::new(Mutex::new(s));
    let stage = any.then(|| SignalStage {
        shared: shared.clone(),
        touched: Vec::new(),
        path: None,
        save_every: Duration::from_secs(600),
        last_save: Instant::now(),
    });
    (stage, HubSignal { shared, anomaly })
}

/// Sets what the rules need (forecast points, equipment and energy rules); whether any needs the stage.
fn needs(rules: &RuleSet, s: &mut Shared) -> bool {
    s.forecast_points.clear();
    s.equipment_rules.clear();
    s.energy_rules.clear();
    let mut any = false;
    for r in &rules.rules {
        for t in std::iter::once(&r.when).chain(r.clear.iter()) {
            if let Condition::Signal { kind, .. } = t.cond {
                match kind {
                    SignalKind::Forecast { .. } => {
                        if let Some(p) = &r.point {
                            s.forecast_points.insert(p.clone());
                            any = true;
                        }
                    }
                    SignalKind::EquipmentAnomaly => {
                        s.equipment_rules.push(r.applies_to.clone());
                        any = true;
                    }
                    SignalKind::EnergyAboveBaseline => {
                        s.energy_rules.push(r.applies_to.clone());
                        any = true;
                    }
                    SignalKind::Anomaly => {}
                }
            }
        }
    }
    any
}

impl HubSignal {
    /// A configuration reload: the signals follow the new rules; trends and equipment models already learnt
    /// stay. Returns whether the new rules need the signal stage (the caller knows whether one runs).
    pub fn reconfigure(&self, rules: &RuleSet) -> bool {
        needs(
            rules,
            &mut self.shared.lock().unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// Whether any rule has an `energy` condition.
    pub fn wants_energy(&self) -> bool {
        !self
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .energy_rules
            .is_empty()
    }

    /// Recomputes every energy-rule device's deviation from baseline for the last complete local days, from
    /// the energy store (SQLite; a few ms per device). Called every `[energy] baseline_refresh` off the
    /// pipeline. Returns how many devices have a figure for yesterday.
    pub fn refresh_energy(
        &self,
        catalog: &crate::catalog::SharedCatalog,
        store_path: &std::path::Path,
        settings: &crate::energy::config::EnergyConfig,
        tz: &jiff::tz::TimeZone,
    ) -> anyhow::Result<usize> {
        let today = jiff::Timestamp::now().to_zoned_datetime(tz.clone()).date();
        self.refresh_energy_on(catalog, store_path, settings, tz, today)
    }

    /// [`refresh_energy`](Self::refresh_energy) as if the local date were `today`: the deviations of the
    /// [`ENERGY_DAYS`] local days before it. The `energy` signal at a time `t` is the deviation of the last
    /// complete local day before `t`.
    pub fn refresh_energy_on(
        &self,
        catalog: &crate::catalog::SharedCatalog,
        store_path: &std::path::Path,
        settings: &crate::energy::config::EnergyConfig,
        tz: &jiff::tz::TimeZone,
        today: jiff::civil::Date,
    ) -> anyhow::Result<usize> {
        let rules = self
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .energy_rules
            .clone();
        let devices: Vec<(DeviceIdx, String)> = {
            let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
            cat.devices()
                .filter(|(_, d)| {
                    rules
                        .iter()
                        .any(|a| a.matches(&d.id, &d.profile, &d.location))
                })
                .map(|(i, d)| (i, d.id.clone()))
                .collect()
        };
        if devices.is_empty() || !store_path.exists() {
            return Ok(0);
        }
        let (store, _, _) = crate::energy::store::Store::open_existing(store_path)?;
        let from = today.checked_sub(jiff::Span::new().days(ENERGY_DAYS))?;
        let secs = |d: jiff::civil::Date| -> anyhow::Result<i64> {
            Ok(tz
                .to_timestamp(d.to_datetime(jiff::civil::Time::midnight()))?
                .as_second())
        };
        let mut out = HashMap::new();
        let mut n = 0;
        for (idx, id) in devices {
            let mut days = Vec::new();
            for (day, dev) in
                crate::energy::daily_deviations(&store, settings, tz, &id, from, today)?
            {
                if let Some(d) = dev {
                    days.push(EnergyDay {
                        start: secs(day)?,
                        end: secs(day.tomorrow()?)?,
                        percent: d * 100.0,
                    });
                }
            }
            if days
                .last()
                .is_some_and(|d| d.end == secs(today).unwrap_or(0))
            {
                n += 1;
            }
            out.insert(idx, days);
        }
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).energy = out;
        Ok(n)
    }
}

/// Local days of deviations from baseline kept per device for `energy:` rules.
pub const ENERGY_DAYS: i64 = 7;

/// One complete local day's consumption against its baseline (Unix seconds).
#[derive(Debug, Clone, Copy)]
struct EnergyDay {
    start: i64,
    end: i64,
    /// Percent above baseline (negative: below).
    percent: f64,
}

/// The deviation of the last complete day before `at_s`: the latest day that ended by then, as long as it is
/// yesterday or (while the refresh after midnight has not run yet) the day before.
fn energy_at(days: &[EnergyDay], at_s: i64) -> Option<&EnergyDay> {
    let d = days.iter().rev().find(|d| d.end <= at_s)?;
    (at_s < d.end + 2 * (d.end - d.start)).then_some(d)
}

impl Signal for HubSignal {
    fn value(
        &self,
        kind: SignalKind,
        device: DeviceIdx,
        point: Option<PointId>,
        at: i64,
    ) -> Option<f64> {
        match kind {
            SignalKind::Anomaly => {
                // `level` stays high while the behaviour stays unusual; it is trusted once the detector has
                // learnt this time of day (`settled`, three days of history).
                let s = self.anomaly.as_ref()?.get(point?)?;
                (s.ready && s.settled).then_some(s.level)
            }
            SignalKind::Forecast { within_ns } => {
                let g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                let fit = g.trends.get(&point?)?.fit.as_ref()?;
                Some(forecast_peak(
                    fit,
                    at / 1_000_000_000,
                    within_ns / 1_000_000_000,
                ))
            }
            SignalKind::EquipmentAnomaly => {
                let g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                g.equipment.get(&device)?.score
            }
            SignalKind::EnergyAboveBaseline => {
                let g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                energy_at(g.energy.get(&device)?, at.div_euclid(1_000_000_000)).map(|d| d.percent)
            }
        }
    }

    /// An energy day's deviation applies from the start of that day: `for: 3d` then means three complete days
    /// above baseline, not three days of checks after the first one.
    fn since(
        &self,
        kind: SignalKind,
        device: DeviceIdx,
        _point: Option<PointId>,
        at: i64,
    ) -> Option<i64> {
        match kind {
            SignalKind::EnergyAboveBaseline => {
                let g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                energy_at(g.energy.get(&device)?, at.div_euclid(1_000_000_000))
                    .map(|d| d.start.saturating_mul(1_000_000_000))
            }
            _ => None,
        }
    }
}

/// The highest value the fitted trend reaches between now and `within_s` from now, when the trend is
/// confident; otherwise the fitted level now (a flat or doubtful trend forecasts no change).
pub fn forecast_peak(fit: &Fit, now_s: i64, within_s: i64) -> f64 {
    let confidence = if fit.slope_se > 0.0 {
        normal_cdf(fit.slope.abs() / fit.slope_se)
    } else if fit.slope != 0.0 {
        1.0
    } else {
        0.0
    };
    let now = fit.level_now;
    if confidence < FORECAST_CONFIDENCE {
        return now;
    }
    let ahead = now + fit.slope * (now_s + within_s - fit.now).max(0) as f64;
    now.max(ahead)
}

/// The columns of a device's equipment model: its continuous gauges in profile order (not `online`, booleans
/// or counters: a status bit or a running total is no operating state), at most [`MAX_DIMS`] of them (the
/// mixture's limit; a profile with more keeps its first eight).
///
/// [`MAX_DIMS`]: crate::anomaly::equipment::MAX_DIMS
fn equipment_columns(profile: &crate::catalog::profile::Profile) -> Vec<bool> {
    use crate::catalog::units::{Kind, Unit};
    let mut n = 0;
    profile
        .points
        .iter()
        .map(|p| {
            let use_it = p.name != "online"
                && p.kind == Kind::Gauge
                && p.unit != Unit::Bool
                && n < crate::anomaly::equipment::MAX_DIMS;
            n += use_it as usize;
            use_it
        })
        .collect()
}

impl SignalStage {
    fn observe(&mut self, catalog: &Catalog, r: &Reading) {
        let mut g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let (dev, device, def) = catalog.point(r.point);
        if g.forecast_points.contains(&def.name) {
            let at_s = r.at / 1_000_000_000;
            if !g.trends.contains_key(&r.point) {
                let name = catalog.point_name(r.point);
                let trend = g.pending.trends.remove(&name).unwrap_or_default();
                g.trend_names.insert(r.point, name);
                g.trends.insert(
                    r.point,
                    TrendState {
                        trend,
                        fitted_at: i64::MIN,
                        fit: None,
                    },
                );
            }
            g.dirty = true;
            let t = g.trends.get_mut(&r.point).expect("inserted above");
            t.trend.observe(at_s, r.value);
            if at_s.saturating_sub(t.fitted_at) >= 3600 {
                t.fitted_at = at_s;
                t.fit = t.trend.fit();
            }
        }
        if !g.equipment_rules.is_empty() {
            if !g.equipment.contains_key(&dev) {
                let applies = g
                    .equipment_rules
                    .iter()
                    .any(|a| a.matches(&device.id, &device.profile, &device.location));
                if !applies {
                    return;
                }
                let columns = equipment_columns(&device.profile);
                let n = device.profile.points.len();
                let detector = match g.pending.equipment.remove(&device.id) {
                    Some(s) if s.points == n => s.detector,
                    _ => EquipmentDetector::new(EQUIPMENT_STATES, EQUIPMENT_TRAIN_ROWS),
                };
                g.equipment_names.insert(dev, device.id.clone());
                g.equipment.insert(
                    dev,
                    Equipment {
                        detector,
                        row: vec![f64::NAN; device.profile.points.len()],
                        columns,
                        score: None,
                        touched: false,
                    },
                );
            }
            let (_, index) = catalog.point_index(r.point);
            if let Some(e) = g.equipment.get_mut(&dev) {
                e.row[index] = r.value;
                if !e.touched {
                    e.touched = true;
                    self.touched.push(dev);
                }
            }
        }
    }
}

impl Stage for SignalStage {
    fn name(&self) -> &'static str {
        "signals"
    }

    fn process(&mut self, catalog: &Catalog, readings: &[Reading]) {
        for r in readings {
            if r.quality == Quality::Good && r.value.is_finite() {
                self.observe(catalog, r);
            }
        }
        // One equipment row per device per batch (a poll or a message), once every column has a value.
        let mut g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut g_dirty = false;
        for dev in self.touched.drain(..) {
            if let Some(e) = g.equipment.get_mut(&dev) {
                e.touched = false;
                let row: Vec<f64> = e
                    .row
                    .iter()
                    .zip(&e.columns)
                    .filter(|(_, c)| **c)
                    .map(|(v, _)| *v)
                    .collect();
                if row.iter().all(|v| v.is_finite()) {
                    g_dirty = true;
                    if let Some(s) = e.detector.observe(&row) {
                        e.score = Some(s.score);
                    }
                }
            }
        }
        g.dirty |= g_dirty;
    }

    fn flush(&mut self) {
        if self.path.is_some() && self.last_save.elapsed() >= self.save_every {
            self.save();
        }
    }
}

impl SignalStage {
    /// Keeps the trends and equipment models under `[state].dir` (`anomaly/signals.json`, beside the anomaly
    /// detectors): restores what a previous run saved, lazily by `device/point` and device id as each point
    /// first reports, and saves every `save_every` (10 minutes) and when the pipeline stops, so a restart does
    /// not relearn for days. Unreadable state is logged and ignored (relearn).
    pub fn persist_in(mut self, state_dir: &Path) -> Self {
        let path = state_path(state_dir);
        match load_state(&path) {
            Ok(saved) => {
                if !saved.trends.is_empty() || !saved.equipment.is_empty() {
                    info!(trends = saved.trends.len(), equipment = saved.equipment.len(), path = %path.display(), "signal state loaded");
                }
                self.shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pending = saved;
            }
            Err(e) => warn!(error = %e, "signal state not restored"),
        }
        self.path = Some(path);
        self
    }

    /// Changes how often state is saved while running (default 10 minutes).
    pub fn save_every(mut self, every: Duration) -> Self {
        self.save_every = every;
        self
    }

    /// Saves now, atomically (temp file + rename); also done on drop. A no-op without [`persist_in`](Self::persist_in).
    pub fn save(&mut self) {
        self.last_save = Instant::now();
        let Some(path) = &self.path else {
            return;
        };
        let mut g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if !g.dirty {
            return;
        }
        let mut out = g.pending.clone();
        out.version = SIGNALS_STATE_VERSION;
        for (p, t) in &g.trends {
            if let Some(name) = g.trend_names.get(p) {
                out.trends.insert(name.clone(), t.trend.clone());
            }
        }
        for (d, e) in &g.equipment {
            if let Some(id) = g.equipment_names.get(d) {
                out.equipment.insert(
                    id.clone(),
                    SavedEquipment {
                        points: e.row.len(),
                        detector: e.detector.clone(),
                    },
                );
            }
        }
        let r = (|| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            std::fs::write(
                &tmp,
                serde_json::to_vec(&out).expect("signal state serialises"),
            )?;
            std::fs::rename(&tmp, path)
        })();
        match r {
            Ok(()) => g.dirty = false,
            Err(e) => warn!(error = %e, path = %path.display(), "signal state not saved"),
        }
    }
}

impl Drop for SignalStage {
    fn drop(&mut self) {
        self.save();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::engine::{Engine, Options, Transition, TransitionKind};
    use std::collections::BTreeMap;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_767_225_600 * S; // 2026-01-01T00:00:00Z
    const STEP: i64 = 300 * S;

    /// The shipped profiles, a catalog of `devices` (id, profile) and the rules of `yaml`, checked.
    fn site(devices: &[(&str, &str)], yaml: &str) -> (Catalog, Arc<RuleSet>) {
        let (profiles, errs) = crate::catalog::profile::load_dirs(&[PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/device_profiles"
        ))]);
        assert!(errs.is_empty(), "{errs:?}");
        let declared: BTreeMap<String, String> = devices
            .iter()
            .map(|(d, p)| (d.to_string(), p.to_string()))
            .collect();
        let (rules, errs) = crate::rules::parse_rules(
            Path::new("rules/t.yaml"),
            yaml,
            &crate::rules::Context {
                profiles: &profiles,
                devices: &declared,
                timezone: Some("UTC"),
            },
        );
        assert!(errs.is_empty(), "{errs:?}");
        let mut cat = Catalog::new("site", profiles);
        for (d, p) in devices {
            cat.add_device(d, p, BTreeMap::new(), true).unwrap();
        }
        (cat, Arc::new(RuleSet { rules }))
    }

    /// A signal stage (persisted in `state`, when given) and an engine reading its signals.
    fn start(rules: &Arc<RuleSet>, state: Option<&Path>) -> (SignalStage, HubSignal, Engine) {
        let (stage, hub) = build(rules, None);
        let mut stage = stage.expect("the rules need a signal stage");
        if let Some(dir) = state {
            stage = stage.persist_in(dir);
        }
        let mut engine = Engine::new(rules.clone(), Options::default());
        engine.set_signal(Box::new(hub.clone()));
        (stage, hub, engine)
    }

    /// Feeds readings one at a time through the stage, then the engine; returns the `Raised` transitions.
    fn feed(
        cat: &Catalog,
        stage: &mut SignalStage,
        engine: &mut Engine,
        readings: impl IntoIterator<Item = Reading>,
    ) -> Vec<Transition> {
        let mut raised = Vec::new();
        let mut out = Vec::new();
        for r in readings {
            stage.process(cat, std::slice::from_ref(&r));
            engine.evaluate(cat, &r, &mut out);
            raised.extend(out.drain(..).filter(|t| t.kind == TransitionKind::Raised));
        }
        raised
    }

    const FORECAST_RULE: &str = r#"schema: 1
rules:
  - name: humidity-heading-for-limit
    applies_to: { profile: generic-room-sensor }
    point: humidity
    when: { forecast: { above: 90, within: 2d } }
    severity: warning
"#;

    /// Humidity rising 10 %RH a day from 30: the 2-day forecast passes 90 on day 4.
    fn humidity(cat: &Catalog, from: i64, to: i64) -> Vec<Reading> {
        let p = cat
            .device_by_id("room-1")
            .unwrap()
            .1
            .point_id("humidity")
            .unwrap();
        (from..to)
            .map(|i| Reading {
                point: p,
                value: 30.0 + 10.0 * i as f64 / 288.0 + (((i * 31) % 7) as f64 - 3.0) * 0.1,
                quality: Quality::Good,
                at: T0 + i * STEP,
            })
            .collect()
    }

    #[test]
    fn a_forecast_work_order_opens_after_a_restart_without_relearning() {
        let (cat, rules) = site(&[("room-1", "generic-room-sensor")], FORECAST_RULE);
        let restart = 288 * 15 / 4; // day 3.75: the forecast is ~87.5, below the limit
        let end = 288 * 42 / 10; // day 4.2: 10.8 hours later, too few for a fresh trend (12 hourly buckets)

        // Reference: one run without a restart.
        let (mut stage, _, mut engine) = start(&rules, None);
        let straight = feed(&cat, &mut stage, &mut engine, humidity(&cat, 0, end));
        assert_eq!(straight.len(), 1, "{straight:?}");
        assert!(
            straight[0].at > T0 + restart * STEP,
            "opened before the restart point"
        );

        // Restart at day 3.75: the first run saves its trend when it stops.
        let dir = tempfile::tempdir().unwrap();
        let (mut stage, _, mut engine) = start(&rules, Some(dir.path()));
        let before = feed(&cat, &mut stage, &mut engine, humidity(&cat, 0, restart));
        assert!(before.is_empty(), "{before:?}");
        drop(stage);
        let size = std::fs::metadata(state_path(dir.path())).unwrap().len();
        eprintln!("signals state of one trend (3.75 days of hourly buckets): {size} bytes");
        let (mut stage, _, mut engine) = start(&rules, Some(dir.path()));
        let after = feed(&cat, &mut stage, &mut engine, humidity(&cat, restart, end));
        assert_eq!(
            after.len(),
            1,
            "the work order opens after the restart: {after:?}"
        );
        assert!(
            (after[0].at - straight[0].at).abs() <= 3600 * S,
            "opened at {} after the restart, {} without one",
            after[0].at,
            straight[0].at
        );

        // Control: without the saved trend, the same readings after the restart are too few to open it.
        let (mut stage, _, mut engine) = start(&rules, None);
        let fresh = feed(&cat, &mut stage, &mut engine, humidity(&cat, restart, end));
        assert!(fresh.is_empty(), "{fresh:?}");
    }

    fn fit(slope_per_day: f64, slope_se_per_day: f64) -> Fit {
        Fit {
            origin: 0,
            intercept: 100.0,
            slope: slope_per_day / 86_400.0,
            slope_se: slope_se_per_day / 86_400.0,
            sigma: 1.0,
            buckets: 72,
            now: 1_000_000,
            level_now: 100.0,
        }
    }

    const ENERGY_RULE: &str = r#"schema: 1
rules:
  - name: meter-above-baseline
    applies_to: { device: meter-1 }
    point: energy_import
    when: { energy: { above_baseline_by: 30%, for: 3d } }
    severity: warning
"#;

    #[test]
    fn an_energy_rule_opens_after_days_above_an_imported_baseline() {
        const DAY: i64 = 86_400;
        const START: i64 = 1_767_571_200; // 2026-01-05T00:00:00Z, a Monday
        const NORMAL_DAYS: i64 = 35; // five weeks of history: the baseline (4 weeks)
        const HIGH_DAYS: i64 = 5; // then 60 % above it
        let (cat, rules) = site(&[("meter-1", "eastron-sdm630")], ENERGY_RULE);
        let dir = tempfile::tempdir().unwrap();
        let tz = jiff::tz::TimeZone::UTC;

        // The meter's export, as `caretaker energy import` reads it: an office load, 15-minute counter readings.
        let mut csv = String::from("timestamp,value\n");
        let mut counter = 1000.0;
        for q in 0..=(NORMAL_DAYS + HIGH_DAYS) * 96 {
            let t = START + q * 900;
            csv.push_str(&format!("{t},{counter:.4}\n"));
            let hour = (t % DAY) / 3600;
            let kw = if (8..18).contains(&hour) { 5.0 } else { 2.0 };
            let factor = if q >= NORMAL_DAYS * 96 { 1.6 } else { 1.0 };
            counter += kw * factor * 0.25;
        }
        let csv_path = dir.path().join("meter-1.csv");
        std::fs::write(&csv_path, csv).unwrap();
        let store_path = crate::energy::store::path_in(dir.path());
        let mut store = crate::energy::store::Store::open(&store_path, 900, "UTC", "site").unwrap();
        let summary = crate::energy::import::import(
            &mut store,
            &cat,
            &tz,
            &csv_path,
            &crate::tabular::Options::default(),
            &[],
            "meter-1",
            "energy_import",
            |_| {},
        )
        .unwrap();
        assert_eq!(summary.slots as i64, (NORMAL_DAYS + HIGH_DAYS) * 96);
        drop(store);

        let (_, hub, mut engine) = start(&rules, None);
        let settings = crate::energy::config::EnergyConfig::default();
        let mut raised = Vec::new();
        let mut out = Vec::new();
        // Two weeks before the rise to the day after the data ends: each day the refresh runs, then the meter
        // reports hourly (the rule is evaluated on each reading of its point, as in the daemon).
        let point = cat
            .device_by_id("meter-1")
            .unwrap()
            .1
            .point_id("energy_import")
            .unwrap();
        let cat = cat.shared();
        for day in NORMAL_DAYS - 14..=NORMAL_DAYS + HIGH_DAYS {
            let today = jiff::Timestamp::from_second(START + day * DAY)
                .unwrap()
                .to_zoned_datetime(tz.clone())
                .date();
            let n = hub
                .refresh_energy_on(&cat, &store_path, &settings, &tz, today)
                .unwrap();
            assert_eq!(n, 1, "a figure for the day before {today}");
            let c = cat.read().unwrap();
            for h in 0..24 {
                let r = Reading {
                    point,
                    value: 5000.0 + (day * 24 + h) as f64,
                    quality: Quality::Good,
                    at: (START + day * DAY + h * 3600) * S,
                };
                engine.evaluate(&c, &r, &mut out);
                raised.extend(out.drain(..).filter(|t| t.kind == TransitionKind::Raised));
            }
        }
        let value = |day: i64| {
            hub.value(
                SignalKind::EnergyAboveBaseline,
                DeviceIdx(0),
                Some(point),
                (START + day * DAY) * S,
            )
        };
        assert!(
            value(NORMAL_DAYS).unwrap().abs() < 1.0,
            "{:?}",
            value(NORMAL_DAYS)
        );
        assert!(
            (value(NORMAL_DAYS + 2).unwrap() - 60.0).abs() < 1.0,
            "{:?}",
            value(NORMAL_DAYS + 2)
        );
        assert_eq!(raised.len(), 1, "{raised:?}");
        // Three complete days above (NORMAL_DAYS .. NORMAL_DAYS + 3): the work order opens on the first reading
        // after the third one closed.
        assert_eq!(raised[0].at, (START + (NORMAL_DAYS + 3) * DAY) * S);
        assert!((raised[0].value - 60.0).abs() < 1.0, "{}", raised[0].value);
    }

    const EQUIPMENT_RULE: &str = r#"schema: 1
rules:
  - name: ahu-operating-state-unusual
    applies_to: { category: hvac }
    when: { equipment_anomaly: { profile: generic-ahu, score_above: 0.95, for: 10m } }
    severity: major
"#;

    /// One 5-minute poll of a synthetic AHU (every point of generic-ahu): occupied 07:00-19:00 (fan running,
    /// supply air held at 18 degC, cooling valve following the outdoor temperature), unoccupied otherwise (fan
    /// off, valve shut, supply air drifting to return air). `fault`: while occupied, the supply air is as warm
    /// as the return air although the fan runs and the valve is open as usual; every value stays within its
    /// own normal range (unoccupied supply air is that warm), only the combination is new.
    fn ahu_poll(
        cat: &Catalog,
        device: &str,
        i: i64,
        fault: bool,
        rng: &mut fastrand::Rng,
    ) -> Vec<Reading> {
        let mut n = |sd: f64| (rng.f64() + rng.f64() + rng.f64() - 1.5) * 2.0 * sd;
        let hour = (i * 5 / 60) % 24;
        let occupied = (7..19).contains(&hour);
        let outdoor =
            15.0 + 8.0 * (std::f64::consts::TAU * (hour as f64 - 9.0) / 24.0).sin() + n(0.3);
        let ret = if occupied { 22.0 } else { 20.0 } + n(0.3);
        let values: [(&str, f64); 13] = if occupied {
            let supply = if fault { ret + n(0.2) } else { 18.0 + n(0.2) };
            [
                ("supply_air_temp", supply),
                ("return_air_temp", ret),
                ("outdoor_air_temp", outdoor),
                ("supply_air_setpoint", 18.0),
                ("filter_dp", 180.0 + n(3.0)),
                ("fan_speed", 70.0 + n(1.0)),
                ("fan_power", 3.5 + n(0.05)),
                (
                    "valve_position",
                    (20.0 + 4.0 * (outdoor - 15.0) + n(2.0)).clamp(0.0, 100.0),
                ),
                ("frost_alarm", 0.0),
                ("filter_alarm", 0.0),
                ("fan_run_hours", 1000.0 + (i / 12) as f64),
                ("heating_energy", 5000.0 + (i / 6) as f64),
                ("fan_status", 1.0),
            ]
        } else {
            [
                ("supply_air_temp", ret - 0.5 + n(0.2)),
                ("return_air_temp", ret),
                ("outdoor_air_temp", outdoor),
                ("supply_air_setpoint", 18.0),
                ("filter_dp", 2.0 + n(0.5)),
                ("fan_speed", 0.0),
                ("fan_power", 0.02 + n(0.005)),
                ("valve_position", n(0.1).abs()),
                ("frost_alarm", 0.0),
                ("filter_alarm", 0.0),
                ("fan_run_hours", 1000.0 + (i / 12) as f64),
                ("heating_energy", 5000.0 + (i / 6) as f64),
                ("fan_status", 0.0),
            ]
        };
        let dev = cat.device_by_id(device).unwrap().1;
        values
            .iter()
            .map(|(name, v)| Reading {
                point: dev.point_id(name).unwrap(),
                value: *v,
                quality: Quality::Good,
                at: T0 + i * STEP,
            })
            .collect()
    }

    /// Polls both AHUs from `from` to `to` (ahu-1 faulty during `fault`), ticking the engine after each poll
    /// (the daemon's 1 s timer); returns the `Raised` transitions.
    fn run_ahus(
        cat: &Catalog,
        stage: &mut SignalStage,
        engine: &mut Engine,
        from: i64,
        to: i64,
        fault: std::ops::Range<i64>,
    ) -> Vec<Transition> {
        let mut rng = fastrand::Rng::with_seed(from as u64 + 7);
        let mut raised = Vec::new();
        let mut out = Vec::new();
        for i in from..to {
            for dev in ["ahu-1", "ahu-2"] {
                let poll = ahu_poll(cat, dev, i, dev == "ahu-1" && fault.contains(&i), &mut rng);
                stage.process(cat, &poll);
            }
            engine.tick(cat, T0 + i * STEP, &mut out);
            raised.extend(out.drain(..).filter(|t| t.kind == TransitionKind::Raised));
        }
        raised
    }

    #[test]
    fn an_equipment_rule_opens_one_work_order_for_a_faulty_ahu_across_a_restart() {
        let (cat, rules) = site(
            &[("ahu-1", "generic-ahu"), ("ahu-2", "generic-ahu")],
            EQUIPMENT_RULE,
        );
        let day = 288;
        let restart = 3 * day; // the models trained on the first 500 polls (~42 h), then scored normal days
        let fault = restart + 120..restart + 126; // day 3, 10:00-10:30
        let end = restart + 180;

        let dir = tempfile::tempdir().unwrap();
        let (mut stage, hub, mut engine) = start(&rules, Some(dir.path()));
        let before = run_ahus(&cat, &mut stage, &mut engine, 0, restart, 0..0);
        assert!(
            before.is_empty(),
            "no work order on normal operation: {before:?}"
        );
        let ahu1 = cat.device_by_id("ahu-1").unwrap().0;
        let normal = hub.value(SignalKind::EquipmentAnomaly, ahu1, None, 0);
        assert!(
            normal.is_some_and(|s| s < 0.95),
            "trained and scoring: {normal:?}"
        );
        drop(stage);
        // Trained models keep no training rows: the state stays small.
        let size = std::fs::metadata(state_path(dir.path())).unwrap().len();
        eprintln!("signals state of 2 trained AHU models: {size} bytes");
        assert!(size < 32 * 1024, "{size} bytes");

        // After a restart the saved models score at once (a fresh one would train for 500 polls).
        let (mut stage, hub, mut engine) = start(&rules, Some(dir.path()));
        let after = run_ahus(&cat, &mut stage, &mut engine, restart, end, fault.clone());
        assert_eq!(after.len(), 1, "one work order: {after:?}");
        assert_eq!(after[0].device, ahu1);
        assert!(
            after[0].at >= T0 + fault.start * STEP && after[0].at < T0 + fault.end * STEP,
            "opened during the fault"
        );
        assert!(after[0].value > 0.95, "{}", after[0].value);
        let back = hub.value(SignalKind::EquipmentAnomaly, ahu1, None, 0);
        assert!(back.is_some_and(|s| s < 0.95), "normal again: {back:?}");

        // Control: without the saved models nothing scores yet, so the same fault opens nothing.
        let (mut stage, _, mut engine) = start(&rules, None);
        let fresh = run_ahus(&cat, &mut stage, &mut engine, restart, end, fault);
        assert!(fresh.is_empty(), "{fresh:?}");
    }

    #[test]
    fn unreadable_signal_state_is_ignored_and_replaced() {
        let (cat, rules) = site(&[("room-1", "generic-room-sensor")], FORECAST_RULE);
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{not json").unwrap();
        assert!(
            load_state(&path)
                .unwrap_err()
                .to_string()
                .contains("signals.json: not a signals state file")
        );
        let (mut stage, _, mut engine) = start(&rules, Some(dir.path()));
        feed(&cat, &mut stage, &mut engine, humidity(&cat, 0, 300));
        drop(stage);
        let saved = load_state(&path).unwrap();
        assert_eq!(saved.version, SIGNALS_STATE_VERSION);
        assert!(saved.trends["room-1/humidity"].len() >= 24);
        std::fs::write(&path, br#"{"version": 99, "trends": {}, "equipment": {}}"#).unwrap();
        assert!(
            load_state(&path)
                .unwrap_err()
                .to_string()
                .contains("state version 99")
        );
    }

    #[test]
    fn a_confident_rise_forecasts_the_value_at_the_horizon() {
        let f = fit(10.0, 0.5);
        let v = forecast_peak(&f, 1_000_000, 7 * 86_400);
        assert!((v - 170.0).abs() < 1e-6, "{v}");
    }

    #[test]
    fn a_doubtful_or_falling_trend_forecasts_no_rise() {
        assert_eq!(
            forecast_peak(&fit(10.0, 50.0), 1_000_000, 7 * 86_400),
            100.0
        );
        assert_eq!(
            forecast_peak(&fit(-10.0, 0.5), 1_000_000, 7 * 86_400),
            100.0
        );
    }
}
