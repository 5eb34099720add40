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
pub mod stage;

pub use detector::{Detector, Kind, Params, Score};
pub use forecast::Trend;

use crate::catalog::PointId;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether a point gets a detector: gauges only, and not the yes/no ones. A counter's level only ever rises
/// (its shape says nothing; its rate is the point's power or flow, usually a point of its own, and
/// `counter_stalled` watches the counter itself), a `bool` point is two states, and the synthetic `online`
/// point is the device's link state. See docs/anomaly.md, "Which points are scored".
pub fn scores_point(def: &crate::catalog::profile::PointDef) -> bool {
    use crate::catalog::units::{Kind, Unit};
    def.kind == Kind::Gauge
        && def.unit != Unit::Bool
        && def.name != crate::catalog::profile::ONLINE_POINT
}

/// Every monitored point's detector, indexed by dense `PointId`. A slot is a pointer (8 bytes), so ids without
/// a detector (counters, never-seen points) cost next to nothing; the parameters are one copy shared by all.
#[derive(Debug, Clone)]
pub struct Detectors {
    kind: Kind,
    params: Arc<Params>,
    points: Vec<Option<Box<Detector>>>,
    /// Trends of the points a forecast condition watches (see [`track_trend`](Self::track_trend)).
    trends: Vec<Option<Trend>>,
}

/// Saved state by point name, not yet attached to a `PointId` (points that have not reported since start-up).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pending {
    pub detectors: std::collections::BTreeMap<String, Detector>,
    pub trends: std::collections::BTreeMap<String, Trend>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.detectors.is_empty() && self.trends.is_empty()
    }
}

/// Bumped when the state layout changes; a state file of another version is ignored (relearn) rather than
/// misread.
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
    #[error("{path}: saved with other detector parameters: starting to learn afresh")]
    Params { path: PathBuf },
}

impl Detectors {
    pub fn new(kind: Kind, params: Params) -> Self {
        Detectors {
            kind,
            params: Arc::new(params),
            points: Vec::new(),
            trends: Vec::new(),
        }
    }

    /// Starts keeping a trend (hourly buckets over 14 days) for `point`, fed by [`observe`](Self::observe) and
    /// saved with the detectors. For points that a `forecast:` condition watches.
    pub fn track_trend(&mut self, point: PointId) -> &mut Trend {
        let i = point.0 as usize;
        if i >= self.trends.len() {
            self.trends.resize(i + 1, None);
        }
        self.trends[i].get_or_insert_with(Trend::new)
    }

    /// Puts a (restored) trend in place for `point`.
    pub fn insert_trend(&mut self, point: PointId, trend: Trend) {
        *self.track_trend(point) = trend;
    }

    /// The trend of `point`, if tracked (mutable: a fit may drop history after a reversal).
    pub fn trend_mut(&mut self, point: PointId) -> Option<&mut Trend> {
        self.trends
            .get_mut(point.0 as usize)
            .and_then(|t| t.as_mut())
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
        let at = at_ns.div_euclid(1_000_000_000);
        if let Some(Some(t)) = self.trends.get_mut(i) {
            t.observe(at, value);
        }
        let d = self.points[i]
            .get_or_insert_with(|| Box::new(Detector::with_shared(self.kind, self.params.clone())));
        Some(d.observe(at, value))
    }

    /// Feeds only `point`'s trend, if it has one (a point without a detector: see [`scores_point`]).
    pub fn observe_trend(&mut self, point: PointId, at_ns: i64, value: f64) {
        if value.is_finite() {
            if let Some(Some(t)) = self.trends.get_mut(point.0 as usize) {
                t.observe(at_ns.div_euclid(1_000_000_000), value);
            }
        }
    }

    /// The detector of `point`, if it has seen a reading.
    pub fn get(&self, point: PointId) -> Option<&Detector> {
        self.points.get(point.0 as usize).and_then(|d| d.as_deref())
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

    /// Writes the state atomically (temp file + rename) so a crash mid-write keeps the previous state. Points
    /// are keyed by `name(point)` (e.g. `ahu-3/supply_air_temp`), not by `PointId`, because ids are assigned at
    /// load time and change when the site config does.
    pub fn save(&self, path: &Path, name: impl Fn(PointId) -> String) -> Result<(), StateError> {
        self.save_with(path, name, &Default::default())
    }

    /// Like [`save`](Self::save), plus `extra` detectors by name (restored state of points not seen since the
    /// restart, kept so a device that reports late does not lose what it learnt).
    pub fn save_with(
        &self,
        path: &Path,
        name: impl Fn(PointId) -> String,
        extra: &Pending,
    ) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Borrowed, not cloned, and streamed to the file: saving 10,000 detectors must not double the memory
        // they hold for a moment (a heap grown once stays grown).
        let mut points: std::collections::BTreeMap<String, &Detector> = extra
            .detectors
            .iter()
            .map(|(k, d)| (k.clone(), d))
            .collect();
        let mut trends: std::collections::BTreeMap<String, &Trend> =
            extra.trends.iter().map(|(k, t)| (k.clone(), t)).collect();
        trends.extend(
            self.trends
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.as_ref().map(|t| (name(PointId(i as u32)), t))),
        );
        points.extend(
            self.points
                .iter()
                .enumerate()
                .filter_map(|(i, d)| d.as_deref().map(|d| (name(PointId(i as u32)), d))),
        );
        let saved = SavedRef {
            version: STATE_VERSION,
            kind: self.kind,
            params: &self.params,
            points,
            trends,
        };
        let tmp = path.with_extension("json.tmp");
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = std::io::BufWriter::new(file);
        serde_json::to_writer(&mut w, &saved).map_err(|e| io(std::io::Error::other(e)))?;
        std::io::Write::flush(&mut w).map_err(io)?;
        drop(w);
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Restores state written by [`save`](Self::save) into `self`: every saved point that `resolve` still knows
    /// gets its detector back (points no longer configured are dropped). Returns how many were restored; 0 when
    /// there is no state file yet. State saved with other parameters is ignored (relearning is safer than
    /// mixing).
    pub fn restore(
        &mut self,
        path: &Path,
        resolve: impl Fn(&str) -> Option<PointId>,
    ) -> Result<usize, StateError> {
        let saved = self.load_saved(path)?;
        let mut n = 0;
        for (name, det) in saved.detectors {
            if let Some(id) = resolve(&name) {
                self.insert(id, det);
                n += 1;
            }
        }
        for (name, t) in saved.trends {
            if let Some(id) = resolve(&name) {
                self.insert_trend(id, t);
            }
        }
        Ok(n)
    }

    /// Reads a state file into detectors by point name (empty when there is none), checking that it was saved
    /// with this set's kind and parameters.
    pub fn load_saved(&self, path: &Path) -> Result<Pending, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pending::default()),
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
        let format = |source| StateError::Format {
            path: path.to_path_buf(),
            source,
        };
        let head: Head = serde_json::from_slice(&bytes).map_err(format)?;
        if head.version != STATE_VERSION {
            return Err(StateError::Version {
                path: path.to_path_buf(),
                found: head.version,
            });
        }
        let saved: Saved = serde_json::from_slice(&bytes).map_err(format)?;
        if saved.kind != self.kind || saved.params != *self.params {
            return Err(StateError::Params {
                path: path.to_path_buf(),
            });
        }
        Ok(Pending {
            detectors: saved.points,
            trends: saved.trends,
        })
    }

    /// Puts a (restored) detector in place for `point`; it joins the set's shared parameters when it was made
    /// with the same ones.
    pub fn insert(&mut self, point: PointId, mut det: Detector) {
        let i = point.0 as usize;
        if i >= self.points.len() {
            self.points.resize(i + 1, None);
        }
        det.share_params(&self.params);
        self.points[i] = Some(Box::new(det));
    }

    /// Whether `point` has a detector.
    pub fn contains(&self, point: PointId) -> bool {
        self.get(point).is_some()
    }
}

/// [`Saved`] by reference, for writing.
#[derive(Serialize)]
struct SavedRef<'a> {
    version: u32,
    kind: Kind,
    params: &'a Params,
    points: std::collections::BTreeMap<String, &'a Detector>,
    trends: std::collections::BTreeMap<String, &'a Trend>,
}

/// The state file (its `version` was checked before, by `Head`).
#[derive(Deserialize)]
struct Saved {
    kind: Kind,
    params: Params,
    points: std::collections::BTreeMap<String, Detector>,
    #[serde(default)]
    trends: std::collections::BTreeMap<String, Trend>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_restart_keyed_by_point_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = Detectors::state_path(dir.path());
        let names = ["ahu-1/supply_air_temp", "ahu-1/fan_power"];
        let mut a = Detectors::new(Kind::Combined, Params::default());
        for i in 0..1000i64 {
            let at = i * 300 * 1_000_000_000;
            a.observe(PointId(0), at, 20.0 + (i % 12) as f64);
            a.observe(PointId(1), at, 3.0 + (i % 5) as f64 * 0.1);
            if i == 0 {
                a.track_trend(PointId(1));
            }
        }
        let buckets = a.trend_mut(PointId(1)).unwrap().len();
        assert!(buckets > 70, "{buckets} hourly buckets");
        a.save(&path, |p| names[p.0 as usize].to_string()).unwrap();

        // After the restart the same points have other ids (a device was added in front) and one is gone.
        let mut b = Detectors::new(Kind::Combined, Params::default());
        let n = b
            .restore(&path, |name| (name == names[1]).then_some(PointId(7)))
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(b.get(PointId(7)).unwrap().count(), 1000);
        assert!(b.get(PointId(0)).is_none());
        assert_eq!(
            b.trend_mut(PointId(7)).unwrap().len(),
            buckets,
            "the trend came back too"
        );
        let (x, y) = (
            a.observe(PointId(1), 1000 * 300_000_000_000, 3.2).unwrap(),
            b.observe(PointId(7), 1000 * 300_000_000_000, 3.2).unwrap(),
        );
        assert!(x.ready && y.ready && (x.level - y.level).abs() < 1e-9);

        // No file yet: nothing restored, no error. Garbage: a clear error naming the file.
        let mut c = Detectors::new(Kind::Combined, Params::default());
        assert_eq!(
            c.restore(&dir.path().join("none.json"), |_| None).unwrap(),
            0
        );
        std::fs::write(&path, b"{not json").unwrap();
        let e = c.restore(&path, |_| None).unwrap_err().to_string();
        assert!(
            e.contains("detectors.json") && e.contains("not a detector state file"),
            "{e}"
        );
        // Other parameters: refuse rather than mix.
        a.save(&path, |p| names[p.0 as usize].to_string()).unwrap();
        let p = Params {
            learn: 10,
            ..Params::default()
        };
        let mut d = Detectors::new(Kind::Combined, p);
        assert!(matches!(
            d.restore(&path, |_| None),
            Err(StateError::Params { .. })
        ));
    }

    /// A state file written before the detector's arrays became inline and its parameters shared (saved by the
    /// daemon of commit 35113a3 in the memory benchmark) still loads, into a detector that writes it back field
    /// for field (the fixed-point novelty arrays within half a step) and shares its set's parameters.
    #[test]
    fn state_of_the_first_layout_still_loads() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/anomaly/detectors-v1.json");
        let mut d = Detectors::new(Kind::Combined, Params::default());
        let n = d
            .restore(&path, |name| {
                (name == "dev-0/apparent_power").then_some(PointId(3))
            })
            .unwrap();
        assert_eq!(n, 1);
        let det = d.get(PointId(3)).unwrap();
        assert_eq!(det.count(), 7);
        let old: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        // (through the text: `to_value` would widen the f32 arrays to f64 digits)
        let mut again: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(det).unwrap()).unwrap();
        let mut want = old["points"]["dev-0/apparent_power"].clone();
        // The novelty window and prototypes are now held in 1/4096 fixed point: within half a step of the f32
        // values the old daemon wrote; every other field is written back as it was read.
        for key in ["hist", "protos"] {
            let now = again["novelty"][key].take();
            let was = want["novelty"][key].take();
            let (now, was) = (now.as_array().unwrap(), was.as_array().unwrap());
            assert_eq!(now.len(), was.len(), "{key}");
            if key == "hist" {
                assert!(
                    was.iter().any(|v| v.as_f64() != Some(0.0)),
                    "the fixture has a window"
                );
            }
            for (a, b) in now.iter().zip(was) {
                let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                assert!((a - b).abs() <= 0.5 / 4096.0 + 1e-9, "{key}: {a} vs {b}");
            }
        }
        assert_eq!(again, want);
        assert!(
            std::sync::Arc::ptr_eq(&det.params_shared(), &d.params),
            "the restored detector uses the set's parameters"
        );
        let s = d
            .observe(PointId(3), 1_796_528_087 * 1_000_000_000, 50.0)
            .unwrap();
        assert!(!s.ready && s.expected.is_finite());
        // A file whose arrays have the wrong length is refused with the reason, not indexed out of bounds.
        let mut bad = old.clone();
        bad["points"]["dev-0/apparent_power"]["novelty"]["hist"] = serde_json::json!([0.0]);
        let tmp = tempfile::tempdir().unwrap();
        let bad_path = tmp.path().join("bad.json");
        std::fs::write(&bad_path, bad.to_string()).unwrap();
        let e = d.load_saved(&bad_path).unwrap_err().to_string();
        assert!(e.contains("novelty `hist` of 1 values, expected 16"), "{e}");
    }
}
