//! Live state for the API: per point the latest value, quality and time, and the last 24 h as 288 five-minute
//! means; per device when it was last heard of and whether it is online. Fed by a pipeline stage, read by the
//! API; no InfluxDB needed.
//!
//! Memory is bounded: 288 × 2 bytes of history (f16 distances from a per-point anchor, see [`History`]; f32
//! for a point whose day spans more than 131,008 units) plus ~70 bytes of state per point that ever reported,
//! i.e. about 6.5 MB at 10,000 points (measured figure in BENCHMARKS.md). A bucket holds the running mean of the
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
    /// Whether the history block is f32 (`History::wide`) rather than f16 distances from `anchor`.
    wide: bool,
    /// The newest bucket's running mean.
    cur: f64,
    anchor: f64,
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
            wide: false,
            cur: f64::NAN,
            anchor: 0.0,
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
    hist: History,
    devices: Vec<DeviceLive>,
}

#[inline]
fn slot(bucket: i64) -> usize {
    bucket.rem_euclid(BUCKETS as i64) as usize
}

/// Blocks (one point's BUCKETS slots) per storage chunk: storage grows a chunk at a time, never by copying
/// what is there (a doubling Vec would copy, and leave the old copies in the heap).
const CHUNK_BLOCKS: usize = 32;
const F16_NAN: u16 = 0x7e00;

/// Every point's history, compactly: a bucket mean is stored as an f16 of its distance from the point's anchor
/// (its first value; the middle of its day after a re-anchoring): 2 bytes a bucket, within 2^-11 (0.05 %) of that
/// distance; exact for the newest bucket (kept in [`PointLive::cur`]). A point whose day of values does not fit
/// around one anchor (a span over 131,008 units) moves to f32 slots, like every point before.
#[derive(Debug, Default)]
struct History {
    narrow: Vec<Box<[u16]>>,
    narrow_blocks: u32,
    /// Narrow blocks given up by points that went wide, for reuse.
    free: Vec<u32>,
    wide: Vec<Box<[f32]>>,
    wide_blocks: u32,
}

impl History {
    fn new_block(&mut self) -> u32 {
        if let Some(b) = self.free.pop() {
            self.narrow_mut(b).fill(F16_NAN);
            return b;
        }
        let b = self.narrow_blocks;
        if b as usize % CHUNK_BLOCKS == 0 {
            self.narrow
                .push(vec![F16_NAN; CHUNK_BLOCKS * BUCKETS].into_boxed_slice());
        }
        self.narrow_blocks += 1;
        b
    }

    fn narrow(&self, b: u32) -> &[u16] {
        let (c, o) = (b as usize / CHUNK_BLOCKS, b as usize % CHUNK_BLOCKS);
        &self.narrow[c][o * BUCKETS..(o + 1) * BUCKETS]
    }

    fn narrow_mut(&mut self, b: u32) -> &mut [u16] {
        let (c, o) = (b as usize / CHUNK_BLOCKS, b as usize % CHUNK_BLOCKS);
        &mut self.narrow[c][o * BUCKETS..(o + 1) * BUCKETS]
    }

    fn wide_mut(&mut self, b: u32) -> &mut [f32] {
        let (c, o) = (b as usize / CHUNK_BLOCKS, b as usize % CHUNK_BLOCKS);
        &mut self.wide[c][o * BUCKETS..(o + 1) * BUCKETS]
    }

    /// The value of a slot (NaN when empty).
    fn get(&self, p: &PointLive, i: usize) -> f64 {
        if p.wide {
            let (c, o) = (
                p.block as usize / CHUNK_BLOCKS,
                p.block as usize % CHUNK_BLOCKS,
            );
            self.wide[c][o * BUCKETS + i] as f64
        } else {
            decode(self.narrow(p.block)[i], p.anchor)
        }
    }

    /// Stores a slot (NaN empties it). A value too far from the anchor re-anchors the block at the middle of its
    /// values when they then all fit (a span up to 131,008 units), else moves the point to f32 slots.
    fn put(&mut self, p: &mut PointLive, i: usize, v: f64) {
        if !p.wide {
            if let Some(h) = encode(v, p.anchor) {
                self.narrow_mut(p.block)[i] = h;
                return;
            }
            let mut vals = [f64::NAN; BUCKETS];
            for (k, x) in vals.iter_mut().enumerate() {
                *x = decode(self.narrow(p.block)[k], p.anchor);
            }
            vals[i] = v;
            let (lo, hi) = vals
                .iter()
                .filter(|x| !x.is_nan())
                .fold((v, v), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            let mid = lo + (hi - lo) / 2.0;
            let codes: Option<Vec<u16>> = vals.iter().map(|&x| encode(x, mid)).collect();
            if let Some(codes) = codes {
                p.anchor = mid;
                self.narrow_mut(p.block).copy_from_slice(&codes);
                return;
            }
            let old = p.block;
            self.free.push(old);
            let b = self.wide_blocks;
            if b as usize % CHUNK_BLOCKS == 0 {
                self.wide
                    .push(vec![f32::NAN; CHUNK_BLOCKS * BUCKETS].into_boxed_slice());
            }
            self.wide_blocks += 1;
            p.block = b;
            p.wide = true;
            for (k, x) in vals.iter().enumerate() {
                self.wide_mut(b)[k] = *x as f32;
            }
            return;
        }
        self.wide_mut(p.block)[i] = v as f32;
    }

    fn heap_bytes(&self) -> usize {
        self.narrow.iter().map(|c| c.len() * 2).sum::<usize>()
            + self.wide.iter().map(|c| c.len() * 4).sum::<usize>()
            + self.free.capacity() * 4
    }
}

/// `v` as an f16 distance from `anchor`; `None` when it does not fit (NaN encodes as the empty slot).
#[inline]
fn encode(v: f64, anchor: f64) -> Option<u16> {
    if v.is_nan() {
        return Some(F16_NAN);
    }
    let h = half::f16::from_f64(v - anchor);
    h.is_finite().then_some(h.to_bits())
}

#[inline]
fn decode(h: u16, anchor: f64) -> f64 {
    let d = half::f16::from_bits(h);
    if d.is_nan() {
        f64::NAN
    } else {
        anchor + d.to_f64()
    }
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
            let hist = &mut inner.hist;
            if p.block == NO_BLOCK {
                p.block = hist.new_block();
                p.anchor = r.value;
            }
            if b > p.bucket {
                // Clear the slots skipped since the newest bucket (at most a whole day's worth).
                let from = if p.bucket == i64::MIN || b - p.bucket >= BUCKETS as i64 {
                    b - BUCKETS as i64 + 1
                } else {
                    p.bucket + 1
                };
                for k in from..=b {
                    hist.put(p, slot(k), f64::NAN);
                }
                p.bucket = b;
                p.n = 0;
            }
            if b == p.bucket {
                // The newest bucket's mean is kept exactly (f64) and written through to its slot.
                p.n += 1;
                if p.n == 1 {
                    p.cur = r.value;
                } else {
                    p.cur += (r.value - p.cur) / p.n as f64;
                }
                let cur = p.cur;
                hist.put(p, slot(b), cur);
            } else if b > p.bucket - BUCKETS as i64 {
                // A late reading for an older bucket of the window: fold it in with equal weight to the mean.
                let s = hist.get(p, slot(b));
                let v = if s.is_nan() {
                    r.value
                } else {
                    (s + r.value) / 2.0
                };
                hist.put(p, slot(b), v);
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
            for b in (p.bucket - BUCKETS as i64 + 1)..p.bucket {
                let v = g.hist.get(p, slot(b));
                if !v.is_nan() {
                    history.push((b * (BUCKET_NS / 1_000_000), v));
                }
            }
            history.push((p.bucket * (BUCKET_NS / 1_000_000), p.cur));
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
        g.hist.heap_bytes()
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

    /// A day of a slowly varying gauge: every older bucket within 0.05 % of its distance from the anchor (the
    /// first value), the newest one exact; the old f32 slots are the reference.
    #[test]
    fn compact_history_keeps_chart_precision() {
        let c = catalog();
        let live = LiveState::new(Duration::from_secs(900));
        let t0 = 5_000 * BUCKET_NS;
        let mut want = Vec::new();
        for k in 0..BUCKETS as i64 {
            let v = 21.5 + 4.0 * (k as f64 / 20.0).sin() + 0.001 * k as f64;
            live.record(&c, &[Reading::good(PointId(0), v, t0 + k * BUCKET_NS)]);
            want.push(((t0 + k * BUCKET_NS) / 1_000_000, v));
        }
        let h = live.point(PointId(0)).history;
        assert_eq!(h.len(), BUCKETS);
        for ((t, v), (wt, wv)) in h.iter().zip(&want) {
            assert_eq!(t, wt);
            let tol = (wv - 21.5).abs() * 2f64.powi(-11) + 1e-6;
            assert!((v - wv).abs() <= tol, "{v} vs {wv} at {t}");
        }
        assert_eq!(
            h.last().unwrap().1,
            want.last().unwrap().1,
            "newest bucket exact"
        );
        // Half the bytes of f32 slots (one chunk of CHUNK_BLOCKS blocks so far).
        assert_eq!(
            live.inner.read().unwrap().hist.heap_bytes(),
            CHUNK_BLOCKS * BUCKETS * 2
        );
    }

    /// An energy counter in Wh at a large value, rising, then reset to 0 (a meter swap): the distance to the
    /// anchor outgrows f16, so the block re-anchors, then moves to f32 slots; every bucket stays as close as the
    /// f32 slots of before kept it (half a step of f32 at 1.2e9 is 64).
    #[test]
    fn a_large_counter_and_its_reset_stay_right() {
        let c = catalog();
        let live = LiveState::new(Duration::from_secs(900));
        let t0 = 7_000 * BUCKET_NS;
        let mut want = Vec::new();
        for k in 0..250i64 {
            // 400 Wh per five minutes: 100,000 Wh over the window, past the 65,504 an f16 holds.
            let v = 1_234_567_891.0 + 400.0 * k as f64 + 0.25;
            live.record(&c, &[Reading::good(PointId(0), v, t0 + k * BUCKET_NS)]);
            want.push(v);
        }
        let check = |want: &[f64], tol: f64| {
            let h = live.point(PointId(0)).history;
            assert_eq!(h.len(), want.len());
            for ((_, v), w) in h.iter().zip(want) {
                assert!((v - w).abs() <= tol, "{v} vs {w}");
            }
            assert_eq!(h.last().unwrap().1, *want.last().unwrap(), "newest exact");
        };
        check(&want, 64.0);
        {
            let g = live.inner.read().unwrap();
            assert!(!g.points[0].wide, "re-anchored, still f16");
            assert!(g.points[0].anchor > 1_234_567_891.0 + 40_000.0);
        }
        // The reset: 0 is 1.2e9 away from every earlier bucket: f32 slots from now on, every value kept.
        live.record(&c, &[Reading::good(PointId(0), 0.5, t0 + 250 * BUCKET_NS)]);
        want.push(0.5);
        // (the f16 rounding of the moved buckets, up to 32, plus the f32 one)
        check(&want, 96.0);
        live.record(&c, &[Reading::good(PointId(0), 3.5, t0 + 251 * BUCKET_NS)]);
        let h = live.point(PointId(0)).history;
        assert_eq!((h[250].1, h[251].1), (0.5, 3.5));
        let g = live.inner.read().unwrap();
        assert!(g.points[0].wide);
        assert_eq!(g.hist.free, [0], "the f16 block is free for the next point");
    }
}
