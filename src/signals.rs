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
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Confidence a trend needs before a forecast counts (probability that the slope's sign is real).
const FORECAST_CONFIDENCE: f64 = 0.9;
/// Operating states and training rows of an equipment model.
const EQUIPMENT_STATES: usize = 3;
const EQUIPMENT_TRAIN_ROWS: usize = 500;

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
    /// Percent above baseline (latest complete local day) per device, from the energy store.
    energy: HashMap<DeviceIdx, f64>,
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
}

/// Builds the stage and the engine's signal for a rule set; `None` when no rule needs a signal other than
/// anomaly scores (those come straight from the anomaly stage).
pub fn build(rules: &RuleSet, anomaly: Option<LatestScores>) -> (Option<SignalStage>, HubSignal) {
    let mut s = Shared::default();
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
    let shared = Arc::new(Mutex::new(s));
    let stage = any.then(|| SignalStage {
        shared: shared.clone(),
        touched: Vec::new(),
    });
    (stage, HubSignal { shared, anomaly })
}

impl HubSignal {
    /// Whether any rule has an `energy` condition.
    pub fn wants_energy(&self) -> bool {
        !self
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .energy_rules
            .is_empty()
    }

    /// Recomputes every energy-rule device's deviation from baseline for the latest complete local day, from
    /// the energy store (SQLite; a few ms per device). Called every few minutes off the pipeline.
    pub fn refresh_energy(
        &self,
        catalog: &crate::catalog::SharedCatalog,
        store_path: &std::path::Path,
        settings: &crate::energy::config::EnergyConfig,
        tz: &jiff::tz::TimeZone,
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
        let yesterday = jiff::Timestamp::now()
            .to_zoned_datetime(tz.clone())
            .date()
            .yesterday()?;
        let mut out = HashMap::new();
        for (idx, id) in devices {
            if let Some(d) =
                crate::energy::baseline_deviation(&store, settings, tz, &id, yesterday)?
            {
                out.insert(idx, d * 100.0);
            }
        }
        let n = out.len();
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).energy = out;
        Ok(n)
    }
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
                g.energy.get(&device).copied()
            }
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

impl SignalStage {
    fn observe(&mut self, catalog: &Catalog, r: &Reading) {
        let mut g = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let (dev, device, def) = catalog.point(r.point);
        if g.forecast_points.contains(&def.name) {
            let at_s = r.at / 1_000_000_000;
            let t = g.trends.entry(r.point).or_insert_with(|| TrendState {
                trend: Trend::new(),
                fitted_at: i64::MIN,
                fit: None,
            });
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
                let columns: Vec<bool> = device
                    .profile
                    .points
                    .iter()
                    .map(|p| p.name != "online")
                    .collect();
                g.equipment.insert(
                    dev,
                    Equipment {
                        detector: EquipmentDetector::new(EQUIPMENT_STATES, EQUIPMENT_TRAIN_ROWS),
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
                    if let Some(s) = e.detector.observe(&row) {
                        e.score = Some(s.score);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
