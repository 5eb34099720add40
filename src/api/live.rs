//! Live state for the API: per point the latest value, quality and time, and the last 24 h as 288 five-minute
//! means (f32); per device when it was last heard of and whether it is online. Fed by a pipeline stage, read by
//! the API; no InfluxDB needed.
//!
//! Memory is bounded: 288 × 4 bytes of history plus ~40 bytes of state per point that ever reported, i.e.
//! about 12 MB at 10,000 points (measured figure in BENCHMARKS.md). A bucket holds the running mean of the
//! readings of its five minutes. The 24 h window ends at the point's newest bucket (reading time, so a replay
//! or a simulated clock shows its own last day).
//!
//! Online: a device is online while its newest reading is younger than `[http] device_offline_after` (15 min)
//! and, when its profile has an `online` point (Modbus devices), that point's latest value is 1.

use crate::anomaly::stage::LatestScores;
use crate::catalog::{Catalog, PointId};
use crate::pipeline::Stage;
use crate::reading::{Quality, Reading};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;

/// Buckets per point: 24 h of 5 minutes.
pub const BUCKETS: usize = 288;
pub const BUCKET_NS: i64 = 300 * 1_000_000_000;
const NO_BLOCK: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct PointLive {
    value: f64,
    at_ns: i64,
    quality: Quality,
    /// Newest bucket number (at_ns / BUCKET_NS) written, or i64::MIN.
    bucket: i64,
    /// Readings folded into the newest bucket.
    n: u32,
    /// Index of this point's block of BUCKETS in `hist`, or NO_BLOCK.
    block: u32,
    /// This point is its device's `online` point.
    online_point: bool,
    seen: bool,
}

impl Default for PointLive {
    fn default() -> Self {
        PointLive {
            value: f64::NAN,
            at_ns: 0,
            quality: Quality::Good,
            bucket: i64::MIN,
            n: 0,
            block: NO_BLOCK,
            online_point: false,
            seen: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct DeviceLive {
    last_seen_ns: i64,
    /// The latest value of the device's `online` point, if it has one.
    online_flag: Option<bool>,
    /// What was last announced (None before the first evaluation).
    announced: Option<bool>,
}

#[derive(Debug, Default)]
struct Inner {
    points: Vec<PointLive>,
    hist: Vec<f32>,
    devices: Vec<DeviceLive>,
}

/// A point's live view, for `GET /api/v1/devices/{id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PointView {
    pub value: Option<f64>,
    pub quality: Option<Quality>,
    pub at_ms: Option<i64>,
    pub anomaly_score: Option<f64>,
    /// (bucket start, Unix ms; mean), oldest first.
    pub history: Vec<(i64, f64)>,
}

/// A device's online state change, for the live events.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceChange {
    pub id: String,
    pub online: bool,
    pub last_seen_ms: Option<i64>,
}

/// The shared live state.
pub struct LiveState {
    inner: RwLock<Inner>,
    scores: RwLock<Option<LatestScores>>,
    offline_after_ns: i64,
    changes: broadcast::Sender<DeviceChange>,
}

impl LiveState {
    pub fn new(offline_after: Duration) -> Arc<LiveState> {
        Arc::new(LiveState {
            inner: RwLock::new(Inner::default()),
            scores: RwLock::new(None),
            offline_after_ns: offline_after.as_nanos().min(i64::MAX as u128) as i64,
            changes: broadcast::channel(1024).0,
        })
    }

    /// The anomaly stage's latest scores (set when the pipeline is built).
    pub fn set_scores(&self, s: LatestScores) {
        *self.scores.write().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<DeviceChange> {
        self.changes.subscribe()
    }

    /// The pipeline stage that feeds this state.
    pub fn stage(self: &Arc<Self>) -> Box<dyn Stage> {
        Box::new(LiveStage(self.clone()))
    }

    /// Folds readings in (the stage calls this once per batch).
    pub fn record(&self, catalog: &Catalog, readings: &[Reading]) {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        for r in readings {
            let i = r.point.0 as usize;
            if i >= inner.points.len() {
                if i >= catalog.point_count() {
                    continue;
                }
                inner
                    .points
                    .resize(catalog.point_count(), PointLive::default());
            }
            let (dev, _, def) = catalog.point(r.point);
            let d = dev.0 as usize;
            if d >= inner.devices.len() {
                inner
                    .devices
                    .resize(catalog.device_count(), DeviceLive::default());
            }
            let p = &mut inner.points[i];
            if !p.seen {
                p.seen = true;
                p.online_point = def.name == crate::catalog::profile::ONLINE_POINT;
            }
            if r.at >= p.at_ns {
                p.at_ns = r.at;
                p.quality = r.quality;
                p.value = if r.quality == Quality::Bad {
                    f64::NAN
                } else {
                    r.value
                };
            }
            let dl = &mut inner.devices[d];
            dl.last_seen_ns = dl.last_seen_ns.max(r.at);
            if p.online_point && r.quality != Quality::Bad && r.at >= p.at_ns {
                dl.online_flag = Some(r.value >= 0.5);
            }
            if r.quality == Quality::Bad || !r.value.is_finite() {
                continue;
            }
            let b = r.at.div_euclid(BUCKET_NS);
            if p.block == NO_BLOCK {
                p.block = (inner.hist.len() / BUCKETS) as u32;
                inner.hist.resize(inner.hist.len() + BUCKETS, f32::NAN);
            }
            let base = p.block as usize * BUCKETS;
            let slots = &mut inner.hist[base..base + BUCKETS];
            if b > p.bucket {
                // Clear the slots skipped since the newest bucket (at most a whole day's worth).
                let from = if p.bucket == i64::MIN || b - p.bucket >= BUCKETS as i64 {
                    b - BUCKETS as i64 + 1
                } else {
                    p.bucket + 1
                };
                for k in from..=b {
                    slots[k.rem_euclid(BUCKETS as i64) as usize] = f32::NAN;
                }
                p.bucket = b;
                p.n = 0;
            }
            if b == p.bucket {
                let s = &mut slots[b.rem_euclid(BUCKETS as i64) as usize];
                p.n += 1;
                if s.is_nan() {
                    *s = r.value as f32;
                } else {
                    *s += ((r.value as f32) - *s) / p.n as f32;
                }
            } else if b > p.bucket - BUCKETS as i64 {
                // A late reading for an older bucket of the window: fold it in with equal weight to the mean.
                let s = &mut slots[b.rem_euclid(BUCKETS as i64) as usize];
                *s = if s.is_nan() {
                    r.value as f32
                } else {
                    (*s + r.value as f32) / 2.0
                };
            }
        }
    }

    /// A point's latest value and its last 24 h.
    pub fn point(&self, id: PointId) -> PointView {
        let score = self
            .scores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|s| s.get(id))
            .map(|s| s.score);
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let Some(p) = g.points.get(id.0 as usize).filter(|p| p.seen) else {
            return PointView {
                value: None,
                quality: None,
                at_ms: None,
                anomaly_score: score,
                history: Vec::new(),
            };
        };
        let mut history = Vec::new();
        if p.block != NO_BLOCK && p.bucket != i64::MIN {
            let base = p.block as usize * BUCKETS;
            for b in (p.bucket - BUCKETS as i64 + 1)..=p.bucket {
                let v = g.hist[base + b.rem_euclid(BUCKETS as i64) as usize];
                if !v.is_nan() {
                    history.push((b * (BUCKET_NS / 1_000_000), v as f64));
                }
            }
        }
        PointView {
            value: p.value.is_finite().then_some(p.value),
            quality: Some(p.quality),
            at_ms: Some(p.at_ns / 1_000_000),
            anomaly_score: score.filter(|s| s.is_finite()),
            history,
        }
    }

    /// Whether a device is online at `now_ns`, and when it was last heard of (Unix ms).
    pub fn device(&self, idx: crate::catalog::DeviceIdx, now_ns: i64) -> (bool, Option<i64>) {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        match g.devices.get(idx.0 as usize) {
            Some(d) if d.last_seen_ns > 0 => {
                (self.online(d, now_ns), Some(d.last_seen_ns / 1_000_000))
            }
            _ => (false, None),
        }
    }

    fn online(&self, d: &DeviceLive, now_ns: i64) -> bool {
        d.last_seen_ns > 0
            && now_ns.saturating_sub(d.last_seen_ns) < self.offline_after_ns
            && d.online_flag.unwrap_or(true)
    }

    /// Re-evaluates every device and announces the ones whose online state changed (the first evaluation of
    /// a device announces nothing, except a device coming online). Returns the changes.
    pub fn tick(&self, catalog: &Catalog, now_ns: i64) -> Vec<DeviceChange> {
        let mut out = Vec::new();
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if g.devices.len() < catalog.device_count() {
            g.devices
                .resize(catalog.device_count(), DeviceLive::default());
        }
        for (idx, dev) in catalog.devices() {
            let d = g.devices[idx.0 as usize];
            let on = self.online(&d, now_ns);
            if d.announced != Some(on) {
                if d.announced.is_some() || on {
                    out.push(DeviceChange {
                        id: dev.id.clone(),
                        online: on,
                        last_seen_ms: (d.last_seen_ns > 0).then_some(d.last_seen_ns / 1_000_000),
                    });
                }
                g.devices[idx.0 as usize].announced = Some(on);
            }
        }
        drop(g);
        for c in &out {
            let _ = self.changes.send(c.clone());
        }
        out
    }

    /// Bytes held for history and state (for the benchmark's cross-check).
    pub fn heap_bytes(&self) -> usize {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        g.hist.capacity() * 4
            + g.points.capacity() * std::mem::size_of::<PointLive>()
            + g.devices.capacity() * std::mem::size_of::<DeviceLive>()
    }
}

struct LiveStage(Arc<LiveState>);

impl Stage for LiveStage {
    fn name(&self) -> &'static str {
        "live"
    }
    fn process(&mut self, catalog: &Catalog, readings: &[Reading]) {
        self.0.record(catalog, readings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::profile::parse_profile;
    use std::collections::BTreeMap;

    fn catalog() -> Catalog {
        let text = "schema: 1\nname: m\ncategory: environment\npoints:\n  - { name: t, unit: degC, kind: gauge, mqtt: { json: /t } }\n  - { name: online, unit: bool, kind: gauge, mqtt: { json: /o } }\n";
        let p = parse_profile(std::path::Path::new("m.yaml"), text).unwrap();
        let mut c = Catalog::new("s", BTreeMap::from([("m".to_string(), Arc::new(p))]));
        c.add_device("a", "m", BTreeMap::new(), true).unwrap();
        c.add_device("b", "m", BTreeMap::new(), true).unwrap();
        c
    }

    const MIN: i64 = 60 * 1_000_000_000;

    #[test]
    fn history_keeps_a_day_of_five_minute_means() {
        let c = catalog();
        let live = LiveState::new(Duration::from_secs(900));
        let t0 = 1_000 * BUCKET_NS;
        // Two readings in the first bucket, one in the next.
        live.record(
            &c,
            &[
                Reading::good(PointId(0), 10.0, t0),
                Reading::good(PointId(0), 20.0, t0 + MIN),
                Reading::good(PointId(0), 30.0, t0 + 5 * MIN),
            ],
        );
        let v = live.point(PointId(0));
        assert_eq!(v.value, Some(30.0));
        assert_eq!(
            v.history,
            vec![(t0 / 1_000_000, 15.0), ((t0 + BUCKET_NS) / 1_000_000, 30.0)]
        );
        // A day later the old buckets fall out of the window.
        live.record(&c, &[Reading::good(PointId(0), 40.0, t0 + 24 * 60 * MIN)]);
        let v = live.point(PointId(0));
        assert_eq!(v.history.len(), 2, "{:?}", v.history);
        assert_eq!(v.history[1].1, 40.0);
        // Two days later only the newest one remains.
        live.record(&c, &[Reading::good(PointId(0), 50.0, t0 + 72 * 60 * MIN)]);
        assert_eq!(live.point(PointId(0)).history.len(), 1);
        // A point that never reported has nothing.
        assert_eq!(live.point(PointId(2)).value, None);
        assert!(live.heap_bytes() >= BUCKETS * 4);
    }

    #[test]
    fn devices_go_offline_when_silent_or_when_their_online_point_says_so() {
        let c = catalog();
        let live = LiveState::new(Duration::from_secs(600));
        let t0 = 1_700_000_000 * 1_000_000_000i64;
        assert!(
            live.tick(&c, t0).is_empty(),
            "never seen: nothing to announce"
        );
        live.record(
            &c,
            &[
                Reading::good(PointId(0), 1.0, t0),
                Reading::good(PointId(2), 1.0, t0),
            ],
        );
        let ch = live.tick(&c, t0 + MIN);
        assert_eq!(
            ch.iter()
                .map(|c| (c.id.as_str(), c.online))
                .collect::<Vec<_>>(),
            [("a", true), ("b", true)]
        );
        // b's online point drops to 0.
        live.record(&c, &[Reading::good(PointId(3), 0.0, t0 + 2 * MIN)]);
        let ch = live.tick(&c, t0 + 3 * MIN);
        assert_eq!(
            ch,
            vec![DeviceChange {
                id: "b".into(),
                online: false,
                last_seen_ms: Some((t0 + 2 * MIN) / 1_000_000)
            }]
        );
        // a goes silent past device_offline_after.
        let ch = live.tick(&c, t0 + 11 * MIN);
        assert_eq!(
            ch.iter()
                .map(|c| (c.id.as_str(), c.online))
                .collect::<Vec<_>>(),
            [("a", false)]
        );
        assert_eq!(
            live.device(crate::catalog::DeviceIdx(0), t0 + 11 * MIN),
            (false, Some(t0 / 1_000_000))
        );
    }
}
