//! The pipeline stage that runs every point's detector on every good reading, keeps the latest [`Score`] per
//! point for the rules engine, and persists detector state under `[state].dir/anomaly/` (every `save_every`,
//! and when the pipeline stops), so a restart does not relearn for days.

use super::{Detectors, Kind, Params, Score};
use crate::catalog::{Catalog, PointId, SharedCatalog};
use crate::pipeline::Stage;
use crate::reading::{Quality, Reading};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The latest score of each point, shared with whoever decides on work orders (indexed by `PointId`).
#[derive(Debug, Clone, Default)]
pub struct LatestScores(Arc<RwLock<Vec<Option<Score>>>>);

impl LatestScores {
    pub fn get(&self, point: PointId) -> Option<Score> {
        let v = self.0.read().unwrap_or_else(|e| e.into_inner());
        v.get(point.0 as usize).copied().flatten()
    }
}

pub struct AnomalyStage {
    detectors: Detectors,
    latest: LatestScores,
    path: PathBuf,
    save_every: Duration,
    last_save: Instant,
    /// For the point names when saving (on a timer and at drop, outside `process`): point ids stay valid for the
    /// catalog's life (a reload retires devices, it never reuses their ids), so no copy of the names is kept.
    catalog: SharedCatalog,
    /// Per point: not seen yet, or seen and scored, or seen and judged not worth a detector
    /// ([`super::scores_point`]). One byte a point.
    seen: Vec<Seen>,
    /// Saved detectors of points that have not reported since the restart.
    pending: super::Pending,
    restored: usize,
    dirty: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    No,
    Scored,
    Unscored,
}

impl AnomalyStage {
    /// Creates the stage and restores saved state for the catalog's points. Unreadable state is logged and
    /// ignored: the detectors then learn afresh.
    pub fn open(state_dir: &std::path::Path, catalog: &SharedCatalog) -> Self {
        let path = Detectors::state_path(state_dir);
        let detectors = Detectors::new(Kind::Combined, Params::default());
        // Restored lazily, by point name, when each point first reports: devices discovered from MQTT topics
        // only get their ids at run time.
        let pending = match detectors.load_saved(&path) {
            Ok(p) => {
                if !p.is_empty() {
                    info!(points = p.detectors.len(), trends = p.trends.len(), path = %path.display(), "anomaly detector state loaded");
                }
                p
            }
            Err(e) => {
                warn!(error = %e, "anomaly detector state not restored");
                super::Pending::default()
            }
        };
        AnomalyStage {
            detectors,
            latest: LatestScores::default(),
            path,
            save_every: Duration::from_secs(600),
            last_save: Instant::now(),
            catalog: catalog.clone(),
            seen: Vec::new(),
            pending,
            restored: 0,
            dirty: false,
        }
    }

    /// Changes how often state is saved while running (default 10 minutes).
    pub fn save_every(mut self, every: Duration) -> Self {
        self.save_every = every;
        self
    }

    pub fn latest(&self) -> LatestScores {
        self.latest.clone()
    }

    /// Points whose saved detector was restored since start-up.
    pub fn restored(&self) -> usize {
        self.restored
    }

    pub fn detectors(&self) -> &Detectors {
        &self.detectors
    }

    /// Saves now (also done on drop).
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        let cat = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        let r = self.detectors.save_with(
            &self.path,
            |p| {
                if (p.0 as usize) < cat.point_count() {
                    cat.point_name(p)
                } else {
                    format!("#{}", p.0)
                }
            },
            &self.pending,
        );
        drop(cat);
        match r {
            Ok(()) => self.dirty = false,
            Err(e) => warn!(error = %e, "anomaly detector state not saved"),
        }
        self.last_save = Instant::now();
    }
}

impl Stage for AnomalyStage {
    fn name(&self) -> &'static str {
        "anomaly"
    }

    fn process(&mut self, catalog: &Catalog, readings: &[Reading]) {
        let mut latest = self.latest.0.write().unwrap_or_else(|e| e.into_inner());
        for r in readings {
            if r.quality != Quality::Good {
                continue;
            }
            let i = r.point.0 as usize;
            if self.seen.len() <= i {
                self.seen.resize(i + 1, Seen::No);
            }
            if self.seen[i] == Seen::No {
                let scored = super::scores_point(catalog.point(r.point).2);
                if !self.pending.is_empty() {
                    let name = catalog.point_name(r.point);
                    if let Some(t) = self.pending.trends.remove(&name) {
                        self.detectors.insert_trend(r.point, t);
                    }
                    let saved = self.pending.detectors.remove(&name);
                    if let Some(det) = saved.filter(|_| scored) {
                        self.detectors.insert(r.point, det);
                        self.restored += 1;
                        tracing::debug!(point = %name, readings = self.detectors.get(r.point).map(|d| d.count()).unwrap_or(0), "anomaly detector restored");
                    }
                }
                self.seen[i] = if scored { Seen::Scored } else { Seen::Unscored };
            }
            if self.seen[i] == Seen::Unscored {
                self.detectors.observe_trend(r.point, r.at, r.value);
                continue;
            }
            if let Some(s) = self.detectors.observe(r.point, r.at, r.value) {
                if latest.len() <= i {
                    latest.resize(i + 1, None);
                }
                latest[i] = Some(s);
                self.dirty = true;
            }
        }
    }

    fn flush(&mut self) {
        if self.last_save.elapsed() >= self.save_every {
            self.save();
        }
    }
}

impl Drop for AnomalyStage {
    fn drop(&mut self) {
        self.save();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::profile::parse_profile;
    use std::collections::BTreeMap;

    /// Only gauges that are not yes/no get a detector (the rule in docs/anomaly.md); the others cost nothing.
    #[test]
    fn counters_bool_and_online_points_get_no_detector() {
        let text = "schema: 1\nname: m\ncategory: electricity\npoints:\n  - { name: power, unit: W, kind: gauge, mqtt: { json: /p } }\n  - { name: energy, unit: kWh, kind: counter, mqtt: { json: /e } }\n  - { name: relay, unit: bool, kind: gauge, mqtt: { json: /r } }\n  - { name: online, unit: bool, kind: gauge, mqtt: { json: /o } }\n  - { name: rssi, unit: dBm, kind: gauge, mqtt: { json: /s } }\n";
        let p = parse_profile(std::path::Path::new("m.yaml"), text).unwrap();
        let mut c = Catalog::new("s", BTreeMap::from([("m".to_string(), Arc::new(p))]));
        c.add_device("a", "m", BTreeMap::new(), true).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let shared = c.clone().shared();
        let mut stage = AnomalyStage::open(dir.path(), &shared);
        for i in 0..50i64 {
            let at = (1_700_000_000 + i * 60) * 1_000_000_000;
            let rs: Vec<Reading> = (0..5)
                .map(|k| Reading::good(PointId(k), 10.0 + i as f64 + k as f64, at))
                .collect();
            stage.process(&c, &rs);
        }
        let scored: Vec<u32> = (0..5)
            .filter(|&k| stage.detectors().contains(PointId(k)))
            .collect();
        assert_eq!(scored, [0, 4], "power and rssi only");
        let latest = stage.latest();
        assert!(latest.get(PointId(0)).is_some() && latest.get(PointId(1)).is_none());
        // Saved state holds the scored points only, by name.
        stage.save();
        let saved = stage
            .detectors()
            .load_saved(&Detectors::state_path(dir.path()))
            .unwrap();
        assert_eq!(
            saved.detectors.keys().collect::<Vec<_>>(),
            ["a/power", "a/rssi"]
        );
    }
}
