//! Predictive maintenance: streaming anomaly detection per point, trend forecasts, equipment models.
//!
//! Pure code, no I/O except the explicit [`Detectors::save`] / [`Detectors::load`] of detector state. The rules
//! engine calls [`Detectors::observe`] once per reading (O(1), constant memory per point) and decides from the
//! returned [`Score`] whether to open a work order; `caretaker detect` runs the very same [`Detector`] offline on a
//! CSV file (see [`csv`]). See docs/anomaly.md for the API and the NAB evaluation.

pub mod csv;
pub mod detector;
pub mod equipment;
pub mod forecast;

pub use detector::{Detector, Kind, Params, Score};

use crate::catalog::PointId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Every monitored point's detector, indexed by dense `PointId`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detectors {
    /// Bumped when the state layout changes; a state file of another version is ignored (relearn) rather
    /// than misread.
    version: u32,
    kind: Kind,
    params: Params,
    points: Vec<Option<Detector>>,
}

const STATE_VERSION: u32 = 1;

/// Saving or restoring detector state failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a detector state file: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: state version {found}, expected {STATE_VERSION}: starting to learn afresh")]
    Version { path: PathBuf, found: u32 },
}

impl Detectors {
    pub fn new(kind: Kind, params: Params) -> Self {
        Detectors {
            version: STATE_VERSION,
            kind,
            params,
            points: Vec::new(),
        }
    }

    /// Scores one reading of `point` taken at `at_ns` (Unix nanoseconds). The first reading of a point creates
    /// its detector. `None` only for a non-finite value.
    pub fn observe(&mut self, point: PointId, at_ns: i64, value: f64) -> Option<Score> {
        if !value.is_finite() {
            return None;
        }
        let i = point.0 as usize;
        if i >= self.points.len() {
            self.points.resize(i + 1, None);
        }
        let d = self.points[i].get_or_insert_with(|| Detector::new(self.kind, self.params));
        Some(d.observe(at_ns.div_euclid(1_000_000_000), value))
    }

    /// The detector of `point`, if it has seen a reading.
    pub fn get(&self, point: PointId) -> Option<&Detector> {
        self.points.get(point.0 as usize).and_then(|d| d.as_ref())
    }

    /// Points with a detector.
    pub fn len(&self) -> usize {
        self.points.iter().filter(|d| d.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where the state lives under `[state].dir`.
    pub fn state_path(state_dir: &Path) -> PathBuf {
        state_dir.join("anomaly").join("detectors.json")
    }

    /// Writes the state atomically (temp file + rename) so a crash mid-write keeps the previous state.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(self).expect("detector state always serialises");
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads state written by [`save`](Self::save). `Ok(None)` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Self>, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        #[derive(Deserialize)]
        struct Head {
            version: u32,
        }
        let head: Head = serde_json::from_slice(&bytes).map_err(|source| StateError::Format {
            path: path.to_path_buf(),
            source,
        })?;
        if head.version != STATE_VERSION {
            return Err(StateError::Version {
                path: path.to_path_buf(),
                found: head.version,
            });
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateError::Format {
                path: path.to_path_buf(),
                source,
            })
    }
}
