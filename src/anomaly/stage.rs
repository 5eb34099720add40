//! The pipeline stage that runs every point's detector on every good reading, keeps the latest [`Score`] per
//! point for the rules engine, and persists detector state under `[state].dir/anomaly/` (every `save_every`,
//! and when the pipeline stops), so a restart does not relearn for days.

use super::{Detectors, Kind, Params, Score};
use crate::catalog::{Catalog, PointId};
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
    /// Point names for saving (the catalog is only lent to `process`).
    names: Vec<Option<String>>,
    /// Saved detectors of points that have not reported since the restart.
    pending: super::Pending,
    restored: usize,
    dirty: bool,
}

impl AnomalyStage {
    /// Creates the stage and restores saved state for the catalog's points. Unreadable state is logged and
    /// ignored: the detectors then learn afresh.
    pub fn open(state_dir: &std::path::Path, catalog: &Catalog) -> Self {
        let path = Detectors::state_path(state_dir);
        let _ = catalog;
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
            names: Vec::new(),
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
        let names = &self.names;
        let r = self.detectors.save_with(
            &self.path,
            |p| {
                names
                    .get(p.0 as usize)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| format!("#{}", p.0))
            },
            &self.pending,
        );
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
            if self.names.len() <= i {
                self.names.resize(i + 1, None);
            }
            if self.names[i].is_none() {
                let name = catalog.point_name(r.point);
                if let Some(t) = self.pending.trends.remove(&name) {
                    self.detectors.insert_trend(r.point, t);
                }
                if let Some(det) = self.pending.detectors.remove(&name) {
                    self.detectors.insert(r.point, det);
                    self.restored += 1;
                    tracing::debug!(point = %name, readings = self.detectors.get(r.point).map(|d| d.count()).unwrap_or(0), "anomaly detector restored");
                }
                self.names[i] = Some(name);
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
