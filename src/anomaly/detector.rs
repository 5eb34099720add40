//! One point's streaming detector: constant memory, O(1) work per reading, no look-ahead.
//!
//! Three complementary views of "normal", each turned into a surprise z (how many typical deviations away):
//! - **short-term**: an exponentially weighted level (catches spikes, dips and level shifts as they happen);
//! - **seasonal**: a per-time-of-day profile learnt over days (catches a missing daily peak, a flat stretch where
//!   the day should move, a shifted daily shape);
//! - **change**: a two-sided CUSUM on the standardised residual (catches slow drifts and small sustained shifts
//!   that never look odd one reading at a time).
//!
//! The surprises are not comparable between series (a noisy CPU metric and a smooth temperature), so each one
//! goes through an *anomaly likelihood* layer (after Numenta's): its recent average is compared with its own
//! long-run distribution, which makes one threshold meaningful across very different points. The combined
//! likelihood is then passed through a refractory step so an event fires once, not once per reading.
//!
//! Invariants: the state is plain numbers (serde round-trips it exactly); nothing here allocates after
//! construction; a non-finite value or a timestamp going backwards never corrupts the state (it is skipped or
//! treated as "same time").

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// General parameters, the same for every point (no per-series tuning).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Readings before the detector speaks (it scores 0 while learning).
    pub learn: u32,
    /// Weight of the newest reading in the short-term level.
    pub level_alpha: f64,
    /// Weight of the newest residual in the typical deviation.
    pub dev_alpha: f64,
    /// Time-of-day buckets in the seasonal profile.
    pub buckets: u16,
    /// Weight of the newest day in a seasonal bucket once it has seen a few days.
    pub season_alpha: f64,
    /// Weight of the newest surprise in its short average.
    pub short_alpha: f64,
    /// Weight of the newest short average in the long-run distribution.
    pub long_alpha: f64,
    /// Readings after an event during which only a clearly larger surprise fires again.
    pub refractory: u32,
    /// How much larger than the last event a surprise must be to fire again within the refractory period.
    pub hold_gain: f64,
    /// Below this sustained surprise the behaviour counts as normal again (for re-arming).
    pub rearm_z: f64,
    /// An event must also reach this fraction of the largest surprise of the long past ...
    pub record_frac: f64,
    /// ... which fades by this factor per reading.
    pub record_decay: f64,
    /// A value this fraction of the seen range beyond the seen minimum or maximum scores at least `range_z`
    /// (0 turns the range view off).
    pub range_tol: f64,
    pub range_z: f64,
    /// A run of identical values longer than `flat_factor` times the longest run seen before (and at least
    /// `flat_min` readings) scores at least `range_z` once (0 turns the flat-line view off).
    pub flat_factor: f64,
    pub flat_min: u32,
    /// Per-reading decay of that bar.
    pub hold_decay: f64,
    /// Where the refractory bar starts when warm-up ends: this multiple of the largest combined surprise seen in
    /// the second half of warm-up (faded like the bar), so the first event must beat what normal warm-up data
    /// already produced, and no more.
    pub warm_hold: f64,
    /// Weight of the newest reading in the long-run normalisation of the novelty view.
    pub norm_alpha: f64,
    /// Smoothing of the normalised series before windows are cut from it.
    pub smooth_alpha: f64,
    /// A window this many typical distances away from every prototype becomes a new prototype.
    pub vigilance: f64,
    /// How far the nearest prototype moves toward a matching window.
    pub proto_rate: f64,
    /// Weight of the newest distance in the typical distance.
    pub dist_alpha: f64,
    /// Weights of the views in the combined score (the seasonal one counts once its buckets have learnt).
    pub w_level: f64,
    pub w_season: f64,
    pub w_change: f64,
    pub w_novelty: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            learn: 200,
            level_alpha: 0.3,
            dev_alpha: 0.01,
            buckets: 48,
            season_alpha: 0.25,
            short_alpha: 0.2,
            long_alpha: 0.0005,
            refractory: 100_000_000,
            hold_gain: 2.0,
            rearm_z: 0.5,
            record_frac: 0.0,
            record_decay: 0.9995,
            range_tol: 0.02,
            range_z: 3.0,
            flat_factor: 2.0,
            flat_min: 6,
            hold_decay: 0.998,
            warm_hold: 1.0,
            norm_alpha: 0.001,
            smooth_alpha: 0.5,
            vigilance: 3.0,
            proto_rate: 0.1,
            dist_alpha: 0.01,
            w_level: 0.0,
            w_season: 1.0,
            w_change: 0.0,
            w_novelty: 1.0,
        }
    }
}

/// Which views feed the final score (`caretaker detect --detector NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// All views combined (what the daemon runs).
    #[default]
    Combined,
    /// Short-term level only.
    Level,
    /// Seasonal profile only.
    Seasonal,
    /// CUSUM change view only.
    Change,
    /// Shape-novelty (prototype memory) view only.
    Novelty,
    /// Mean of the seasonal and novelty likelihoods.
    SeasonNovelty,
    /// Mean of the views' likelihoods.
    Mean,
    /// Plain rolling Gaussian z-score, no likelihood layer: the reference baseline.
    Gaussian,
}

impl Kind {
    pub const NAMES: &'static [&'static str] = &[
        "combined",
        "level",
        "seasonal",
        "change",
        "novelty",
        "season-novelty",
        "mean",
        "gaussian",
    ];

    pub fn parse(name: &str) -> Option<Kind> {
        Some(match name {
            "combined" | "default" => Kind::Combined,
            "level" => Kind::Level,
            "seasonal" => Kind::Seasonal,
            "gaussian" => Kind::Gaussian,
            "change" => Kind::Change,
            "mean" => Kind::Mean,
            "novelty" => Kind::Novelty,
            "season-novelty" => Kind::SeasonNovelty,
            _ => return None,
        })
    }
}

/// What one reading looked like to the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Event score in [0, 1]: high once when something unusual starts, then quiet for the refractory period
    /// unless it gets clearly worse. This is what `caretaker detect` writes.
    pub score: f64,
    /// Sustained anomaly level in [0, 1] (no refractory step): stays high while the behaviour stays unusual.
    /// Rules that need "for: 15m" look at this one.
    pub level: f64,
    /// Expected value from the baseline (seasonal when learnt, else the short-term level).
    pub expected: f64,
    /// Expected range (about ±3 typical deviations around `expected`).
    pub low: f64,
    pub high: f64,
    /// False while the detector is still learning (score and level are 0 then).
    pub ready: bool,
    /// True once the seasonal profile for this time of day has learnt (three days of history): from then on
    /// `level` is trustworthy enough to open work orders. Rules should wait for it.
    pub settled: bool,
}

/// Long-run distribution of one surprise signal, turned into a likelihood. The state is stored as f32 (16
/// bytes instead of 32; four per detector) and updated in f64.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
struct Likelihood {
    short: f32,
    mean: f32,
    var: f32,
    n: u32,
}

impl Likelihood {
    /// Feeds one surprise; returns how many long-run standard deviations the recent average sits above normal.
    #[inline]
    fn update(&mut self, z: f64, p: &Params) -> f64 {
        let (mut short, mut mean, mut var) = (self.short as f64, self.mean as f64, self.var as f64);
        short += p.short_alpha * (z - short);
        let a = if self.n < 1000 {
            (1.0 / (self.n as f64 + 1.0)).max(p.long_alpha)
        } else {
            p.long_alpha
        };
        self.n = self.n.saturating_add(1);
        let sd = var.sqrt().max(0.05 + 0.1 * mean);
        let out = (short - mean) / sd;
        let d = short - mean;
        mean += a * d;
        var = (1.0 - a) * (var + a * d * d);
        (self.short, self.mean, self.var) = (short as f32, mean as f32, var as f32);
        out
    }
}

const DIM: usize = 8;
const PROTOS: usize = 24;
const HIST: usize = 16;

/// The window history and the prototypes hold normalised values (clamped to ±8, then smoothed) as i16 fixed
/// point: 1/4096 resolution, half the bytes of f32 (the prototypes are 40 % of a detector). The scale is a power
/// of two, so a stored value converts back to f32 exactly.
const FIXED: f32 = 4096.0;

#[inline]
fn to_fixed(v: f32) -> i16 {
    (v * FIXED).round().clamp(-32767.0, 32767.0) as i16
}

#[inline]
fn from_fixed(v: i16) -> f32 {
    v as f32 * (1.0 / FIXED)
}

/// Stores `src` into `dst` in fixed point (as many values as the shorter holds).
fn store_fixed(dst: &mut [i16], src: &[f32]) {
    for (slot, &v) in dst.iter_mut().zip(src) {
        *slot = to_fixed(v);
    }
}

/// Density view: a small memory of recent-shape prototypes (online vector quantisation, like a bounded fuzzy
/// ART). A window of the normalised series that is far from every prototype is novel; the nearest prototype
/// learns the window, and a novel window replaces the least recently matched prototype.
///
/// The arrays are inline (one allocation per detector, no per-array header); the saved form is [`NoveltyRepr`].
#[derive(Debug, Clone, PartialEq)]
struct Novelty {
    mean: f64,
    dev: f64,
    smooth: f64,
    /// Recent smoothed values, fixed point (see [`FIXED`]).
    hist: [i16; HIST],
    pos: u32,
    /// `used` prototypes of DIM values each, fixed point.
    protos: [i16; PROTOS * DIM],
    /// Recency rank of each of the `used` prototypes (0 = matched last, all different): what the replacement
    /// of the least recently matched one needs, in a byte each. Saved as the clock values of the first layout
    /// (`last_used`), which give the same order.
    rank: [u8; PROTOS],
    used: u32,
    clock: u32,
    dist: f64,
}

/// The saved form of [`Novelty`] (arrays as JSON lists, as before the arrays became inline).
#[derive(Serialize, Deserialize)]
struct NoveltyRepr {
    mean: f64,
    dev: f64,
    smooth: f64,
    hist: Vec<f32>,
    pos: u32,
    protos: Vec<f32>,
    last_used: Vec<u32>,
    used: u32,
    clock: u32,
    dist: f64,
}

impl Novelty {
    fn new() -> Self {
        Novelty {
            mean: 0.0,
            dev: 0.0,
            smooth: 0.0,
            hist: [0; HIST],
            pos: 0,
            protos: [0; PROTOS * DIM],
            rank: [0; PROTOS],
            used: 0,
            clock: 0,
            dist: 0.0,
        }
    }

    /// Makes prototype `i` (one of the `used`) the most recently matched.
    fn touch(&mut self, i: usize) {
        let r = self.rank[i];
        for x in &mut self.rank[..self.used as usize] {
            if *x < r {
                *x += 1;
            }
        }
        self.rank[i] = 0;
    }

    /// Clock values in the first layout's form: prototype `i` was last matched `rank[i]` updates ago.
    fn last_used(&self) -> Vec<u32> {
        (0..PROTOS)
            .map(|i| {
                if i < self.used as usize {
                    self.clock.wrapping_sub(self.rank[i] as u32)
                } else {
                    0
                }
            })
            .collect()
    }

    /// Ranks from saved clock values: by age, the older first among equal ages being the higher index (as the
    /// first layout's `max_by_key` chose).
    fn set_ranks(&mut self, last_used: &[u32]) {
        let used = self.used as usize;
        let mut by_age: Vec<usize> = (0..used).collect();
        by_age.sort_by_key(|&i| (self.clock.wrapping_sub(last_used[i]), i));
        for (r, &i) in by_age.iter().enumerate() {
            self.rank[i] = r as u8;
        }
        for i in used..PROTOS {
            self.rank[i] = i as u8;
        }
    }

    fn set_proto(&mut self, i: usize, e: &[f32; DIM]) {
        store_fixed(&mut self.protos[i * DIM..(i + 1) * DIM], e);
    }

    /// Returns the novelty of the current window (its distance to the nearest prototype over the typical one).
    #[inline]
    fn update(&mut self, x: f64, n: u64, p: &Params) -> f64 {
        let a = if n < 500 {
            1.0 / n as f64
        } else {
            p.norm_alpha
        };
        let d = x - self.mean;
        self.mean += a * d;
        self.dev += a * (d.abs() - self.dev);
        let u = (d / (self.dev + 1e-9 + 1e-6 * self.mean.abs())).clamp(-8.0, 8.0);
        self.smooth += p.smooth_alpha * (u - self.smooth);
        self.pos = (self.pos + 1) % HIST as u32;
        self.hist[self.pos as usize] = to_fixed(self.smooth as f32);
        if n < (HIST * 2) as u64 {
            return 0.0;
        }
        let mut e = [0f32; DIM];
        let step = HIST / DIM;
        for (k, v) in e.iter_mut().enumerate() {
            *v = from_fixed(self.hist[(self.pos as usize + HIST - k * step) % HIST]);
        }
        self.clock = self.clock.wrapping_add(1);
        let used = self.used as usize;
        let mut best = f32::MAX;
        let mut bi = 0usize;
        for (i, pr) in self.protos.chunks_exact(DIM).take(used).enumerate() {
            let mut s = 0f32;
            for k in 0..DIM {
                let t = from_fixed(pr[k]) - e[k];
                s += t * t;
            }
            if s < best {
                best = s;
                bi = i;
            }
        }
        let dist = (best as f64 / DIM as f64).sqrt();
        let typ = self.dist.max(0.02);
        let nov = if used == 0 { 0.0 } else { dist / typ };
        if used < PROTOS {
            if used == 0 || nov > p.vigilance {
                self.set_proto(used, &e);
                self.rank[used] = PROTOS as u8;
                self.used += 1;
                self.touch(used);
                return nov;
            }
        } else if nov > p.vigilance {
            // Replace the least recently matched prototype.
            let old = (0..PROTOS).max_by_key(|&i| self.rank[i]).unwrap_or(0);
            self.set_proto(old, &e);
            self.touch(old);
            self.dist += p.dist_alpha * (dist.min(3.0 * typ) - self.dist);
            return nov;
        }
        let pr = &mut self.protos[bi * DIM..(bi + 1) * DIM];
        for k in 0..DIM {
            let v = from_fixed(pr[k]);
            pr[k] = to_fixed(v + p.proto_rate as f32 * (e[k] - v));
        }
        self.touch(bi);
        self.dist += p.dist_alpha * (dist.min(3.0 * typ) - self.dist);
        nov
    }
}

/// One point's detector state: 1,152 bytes with the default 48 buckets, in three allocations (see
/// `memory_bytes`). The parameters are shared (an `Arc`) by every detector of a [`super::Detectors`]; the novelty
/// arrays are inline. Saved as [`DetectorRepr`], the layout of the first release (parameters and arrays written
/// out per detector), so state files written before and after the change load alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DetectorRepr", into = "DetectorRepr")]
pub struct Detector {
    params: Arc<Params>,
    kind: Kind,
    n: u64,
    first_at: i64,
    last_at: i64,
    level: f64,
    dev: f64,
    mag: f64,
    cusum_hi: f64,
    cusum_lo: f64,
    /// Seasonal profile: mean and typical deviation per time-of-day bucket ...
    season: Box<[[f32; 2]]>,
    /// ... and the days each bucket has seen, saturating at 255: only "fewer than 3 / 4 days" is ever asked, so
    /// this gives the same scores as a wider count.
    season_n: Box<[u8]>,
    lk_level: Likelihood,
    lk_season: Likelihood,
    lk_change: Likelihood,
    novelty: Novelty,
    lk_novelty: Likelihood,
    hold: f64,
    record: f64,
    last_x: f64,
    run: u32,
    max_run: f64,
    lo: f64,
    hi: f64,
    since_event: u32,
}

/// The saved form of a [`Detector`]: field for field what the detector held before its arrays became inline and
/// its parameters shared (state files keep loading; `season_n` was a u16 then and still is here).
#[derive(Serialize, Deserialize)]
struct DetectorRepr {
    params: Params,
    kind: Kind,
    n: u64,
    first_at: i64,
    last_at: i64,
    level: f64,
    dev: f64,
    mag: f64,
    cusum_hi: f64,
    cusum_lo: f64,
    season_mean: Vec<f32>,
    season_dev: Vec<f32>,
    season_n: Vec<u16>,
    lk_level: Likelihood,
    lk_season: Likelihood,
    lk_change: Likelihood,
    novelty: NoveltyRepr,
    lk_novelty: Likelihood,
    hold: f64,
    record: f64,
    last_x: f64,
    run: u32,
    max_run: f64,
    lo: f64,
    hi: f64,
    since_event: u32,
}

impl From<Detector> for DetectorRepr {
    fn from(d: Detector) -> Self {
        let nv = d.novelty;
        DetectorRepr {
            params: *d.params,
            kind: d.kind,
            n: d.n,
            first_at: d.first_at,
            last_at: d.last_at,
            level: d.level,
            dev: d.dev,
            mag: d.mag,
            cusum_hi: d.cusum_hi,
            cusum_lo: d.cusum_lo,
            season_mean: d.season.iter().map(|b| b[0]).collect(),
            season_dev: d.season.iter().map(|b| b[1]).collect(),
            season_n: d.season_n.iter().map(|&n| n as u16).collect(),
            lk_level: d.lk_level,
            lk_season: d.lk_season,
            lk_change: d.lk_change,
            novelty: NoveltyRepr {
                mean: nv.mean,
                dev: nv.dev,
                smooth: nv.smooth,
                hist: nv.hist.iter().map(|&v| from_fixed(v)).collect(),
                pos: nv.pos,
                protos: nv.protos.iter().map(|&v| from_fixed(v)).collect(),
                last_used: nv.last_used(),
                used: nv.used,
                clock: nv.clock,
                dist: nv.dist,
            },
            lk_novelty: d.lk_novelty,
            hold: d.hold,
            record: d.record,
            last_x: d.last_x,
            run: d.run,
            max_run: d.max_run,
            lo: d.lo,
            hi: d.hi,
            since_event: d.since_event,
        }
    }
}

impl TryFrom<DetectorRepr> for Detector {
    type Error = String;

    fn try_from(r: DetectorRepr) -> Result<Self, String> {
        let b = r.params.buckets.max(1) as usize;
        if r.season_mean.len() != b || r.season_dev.len() != b || r.season_n.len() != b {
            return Err(format!(
                "seasonal profile of {}/{}/{} buckets, expected {b}",
                r.season_mean.len(),
                r.season_dev.len(),
                r.season_n.len()
            ));
        }
        let nv = r.novelty;
        let array = |name: &str, len: usize, want: usize| {
            if len == want {
                Ok(())
            } else {
                Err(format!("novelty `{name}` of {len} values, expected {want}"))
            }
        };
        array("hist", nv.hist.len(), HIST)?;
        array("protos", nv.protos.len(), PROTOS * DIM)?;
        array("last_used", nv.last_used.len(), PROTOS)?;
        let mut novelty = Novelty::new();
        novelty.mean = nv.mean;
        novelty.dev = nv.dev;
        novelty.smooth = nv.smooth;
        store_fixed(&mut novelty.hist, &nv.hist);
        novelty.pos = nv.pos % HIST as u32;
        store_fixed(&mut novelty.protos, &nv.protos);
        novelty.used = nv.used.min(PROTOS as u32);
        novelty.clock = nv.clock;
        novelty.set_ranks(&nv.last_used);
        novelty.dist = nv.dist;
        Ok(Detector {
            params: Arc::new(r.params),
            kind: r.kind,
            n: r.n,
            first_at: r.first_at,
            last_at: r.last_at,
            level: r.level,
            dev: r.dev,
            mag: r.mag,
            cusum_hi: r.cusum_hi,
            cusum_lo: r.cusum_lo,
            season: r
                .season_mean
                .iter()
                .zip(&r.season_dev)
                .map(|(&m, &d)| [m, d])
                .collect(),
            season_n: r.season_n.iter().map(|&n| n.min(255) as u8).collect(),
            lk_level: r.lk_level,
            lk_season: r.lk_season,
            lk_change: r.lk_change,
            novelty,
            lk_novelty: r.lk_novelty,
            hold: r.hold,
            record: r.record,
            last_x: r.last_x,
            run: r.run,
            max_run: r.max_run,
            lo: r.lo,
            hi: r.hi,
            since_event: r.since_event,
        })
    }
}

/// Surprise (likelihood z) at which the score reaches 0.9. Chosen so that 0.9 sits where the threshold that
/// maximises NAB's standard profile falls (about z = 1.2 on nab-dev), so `score_above: 0.9` means "as unusual
/// as what NAB counts as an anomaly". The map is strictly increasing, so it changes no NAB figure.
const Z_AT_09: f64 = 1.2;

/// Same for the sustained `level`, which is not thinned by the refractory step: a smoothed surprise above 1.2 for
/// a few readings is common on normal data, one above 3 is not, so `level` reaches 0.9 at z = 3.
const LEVEL_Z_AT_09: f64 = 3.0;

#[inline]
fn squash_at(z: f64, z09: f64) -> f64 {
    if z <= 0.0 {
        0.0
    } else {
        1.0 - (-z * std::f64::consts::LN_10 / z09).exp()
    }
}

#[inline]
fn squash(z: f64) -> f64 {
    squash_at(z, Z_AT_09)
}

impl Detector {
    pub fn new(kind: Kind, params: Params) -> Self {
        Self::with_shared(kind, Arc::new(params))
    }

    /// A detector using parameters shared with others (what [`super::Detectors`] does: one copy per set).
    pub fn with_shared(kind: Kind, params: Arc<Params>) -> Self {
        let b = params.buckets.max(1) as usize;
        Detector {
            params,
            kind,
            n: 0,
            first_at: 0,
            last_at: i64::MIN,
            level: 0.0,
            dev: 0.0,
            mag: 0.0,
            cusum_hi: 0.0,
            cusum_lo: 0.0,
            season: vec![[0.0; 2]; b].into_boxed_slice(),
            season_n: vec![0; b].into_boxed_slice(),
            lk_level: Likelihood::default(),
            lk_season: Likelihood::default(),
            lk_change: Likelihood::default(),
            novelty: Novelty::new(),
            lk_novelty: Likelihood::default(),
            hold: 0.0,
            record: 0.0,
            last_x: 0.0,
            run: 0,
            max_run: 0.0,
            lo: f64::MAX,
            hi: f64::MIN,
            since_event: u32::MAX,
        }
    }

    /// Readings seen so far.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Heap + inline bytes this detector holds (for the memory-per-point figure).
    /// The shared parameters are not counted (one copy per set of detectors).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + std::mem::size_of_val(&*self.season) + self.season_n.len()
    }

    /// The parameters this detector uses.
    pub fn params_shared(&self) -> Arc<Params> {
        self.params.clone()
    }

    /// Uses `params` (equal to this detector's own) instead of its own copy: a restored detector joins its
    /// set's shared parameters. Returns false (and keeps its own) when they differ.
    pub fn share_params(&mut self, params: &Arc<Params>) -> bool {
        if *self.params == **params {
            self.params = params.clone();
            true
        } else {
            false
        }
    }

    /// Scores one reading. `at` is in seconds since the epoch (any fixed origin works; only time of day is used).
    ///
    /// The hot path (millions of readings per second per core): the views below are `#[inline]` helpers on
    /// plain values, with no allocation.
    pub fn observe(&mut self, at: i64, x: f64) -> Score {
        if !x.is_finite() {
            return self.quiet(self.level);
        }
        let at = if at < self.last_at { self.last_at } else { at };
        self.last_at = at;
        let p = *self.params;
        if self.n == 0 {
            self.first_at = at;
            self.level = x;
            self.mag = x.abs();
        }
        self.n += 1;
        let eps = self.track_run(x);
        let (z_level, dev, z_change) = self.short_term(x, eps, &p);
        let (sn, z_season, expected_s, dev_s) = self.seasonal(at, x, eps, dev, &p);

        let expected = expected_s.unwrap_or(self.level);
        let spread = 3.0 * if expected_s.is_some() { dev_s } else { dev };

        let zl = self.lk_level.update(z_level.min(50.0).ln_1p(), &p);
        // A view's likelihood history learns only from the surprises the view really gives: the seasonal view
        // speaks once its bucket has seen three days, the novelty view once it has two windows of history.
        // Placeholder zeros before that would make its first real surprises look enormous.
        let zs = if sn >= 3 {
            self.lk_season.update(z_season.min(50.0).ln_1p(), &p)
        } else {
            0.0
        };
        let zc = self.lk_change.update((z_change / 4.0).ln_1p(), &p);
        let z_nov = self.novelty.update(x, self.n, &p);
        let zn = if self.n >= (HIST * 2) as u64 {
            self.lk_novelty.update(z_nov.min(50.0).ln_1p(), &p)
        } else {
            0.0
        };

        let z = self.combine(sn, z_level, [zl, zs, zc, zn], &p);
        // The range and the runs of repeats are learnt during warm-up too, so the first scored reading is judged
        // against what warm-up saw, never against an empty range.
        let (z, flat_hit) = self.range_and_flat(x, z, &p);
        if self.n <= p.learn as u64 {
            // Warm-up: no event can fire. The refractory bar follows the largest surprise of the second half of
            // warm-up (the first half is the views initialising), so when scoring starts a first real anomaly
            // fires as soon as it beats what normal data already did.
            if self.n > (p.learn / 2) as u64 {
                self.hold = (self.hold * p.hold_decay).max(p.warm_hold * z);
            }
            return Score {
                score: 0.0,
                level: 0.0,
                expected,
                low: expected - spread,
                high: expected + spread,
                ready: false,
                settled: false,
            };
        }
        let ev = self.refractory(z, flat_hit, &p);
        Score {
            score: squash(ev),
            level: squash_at(z, LEVEL_Z_AT_09),
            expected,
            low: expected - spread,
            high: expected + spread,
            ready: true,
            settled: at - self.first_at >= 3 * 86_400,
        }
    }

    /// Flat-line tracking: the current run of identical values, and the longest run of the past (fading slowly,
    /// so a point that legitimately holds its value for long stretches is not flagged). Also tracks the typical
    /// magnitude and returns the floor for deviations derived from it.
    #[inline]
    fn track_run(&mut self, x: f64) -> f64 {
        if self.n > 1 && x == self.last_x {
            self.run = self.run.saturating_add(1);
        } else {
            // Only finished runs count as "held still before", or a stuck value would raise its own bar.
            self.max_run = self.max_run.max(self.run as f64);
            self.run = 0;
        }
        self.last_x = x;
        self.max_run *= 0.9995;
        self.mag += 0.01 * (x.abs() - self.mag);
        // Floor for deviations: a perfectly flat series must not make the first wiggle infinitely surprising.
        1e-3 * self.mag + 1e-9
    }

    /// Short-term view (level and typical deviation) and change view (CUSUM on the standardised residual,
    /// slack 0.5 sd, reset on decision). Returns the level surprise, the deviation used, and the CUSUM statistic.
    #[inline]
    fn short_term(&mut self, x: f64, eps: f64, p: &Params) -> (f64, f64, f64) {
        let res = x - self.level;
        let dev = self.dev.max(eps);
        let z_level = res.abs() / dev;
        let dev_a = if self.n < 100 {
            1.0 / self.n as f64
        } else {
            p.dev_alpha
        };
        // A huge residual only moves the typical deviation a little (robustness against spikes).
        self.dev += dev_a * (res.abs().min(6.0 * dev + eps) - self.dev);
        self.level += p.level_alpha * res;

        let r = (res / dev).clamp(-4.0, 4.0);
        self.cusum_hi = (self.cusum_hi + r - 0.5).max(0.0);
        self.cusum_lo = (self.cusum_lo - r - 0.5).max(0.0);
        let z_change = self.cusum_hi.max(self.cusum_lo);
        if z_change > 20.0 {
            self.cusum_hi = 0.0;
            self.cusum_lo = 0.0;
        }
        (z_level, dev, z_change)
    }

    /// Seasonal view: the time-of-day bucket's profile scores the reading, then learns it. Returns the days the
    /// bucket had seen, the seasonal surprise, the bucket's mean once it has seen 3 days, and its deviation.
    #[inline]
    fn seasonal(
        &mut self,
        at: i64,
        x: f64,
        eps: f64,
        dev: f64,
        p: &Params,
    ) -> (u8, f64, Option<f64>, f64) {
        let b = self.season_n.len();
        let day = at.rem_euclid(86_400);
        let i = (day as usize * b) / 86_400;
        let sn = self.season_n[i];
        let (z_season, expected_s, dev_s) = if sn >= 3 {
            let m = self.season[i][0] as f64;
            let d = (self.season[i][1] as f64).max(eps);
            ((x - m).abs() / d, Some(m), d)
        } else {
            (0.0, None, dev)
        };
        let a = if sn < 4 {
            1.0 / (sn as f64 + 1.0)
        } else {
            p.season_alpha / 4.0
        };
        let m = self.season[i][0] as f64;
        let e = if sn == 0 { dev } else { (x - m).abs() };
        self.season[i][0] = (m + a * (x - m)) as f32;
        let d = self.season[i][1] as f64;
        self.season[i][1] = (d + a * (e.min(6.0 * d.max(eps)) - d)) as f32;
        self.season_n[i] = sn.saturating_add(1);
        (sn, z_season, expected_s, dev_s)
    }

    /// The detector kind's surprise from the raw level surprise and the views' likelihood z values (level,
    /// season, change, novelty); `sn`: days the seasonal bucket had seen.
    #[inline]
    fn combine(&self, sn: u8, z_level: f64, z: [f64; 4], p: &Params) -> f64 {
        let [zl, zs, zc, zn] = z;
        match self.kind {
            Kind::Combined => {
                let ws = if sn >= 3 { p.w_season } else { 0.0 };
                let w = p.w_level + ws + p.w_change + p.w_novelty;
                (p.w_level * zl + ws * zs + p.w_change * zc + p.w_novelty * zn) / w.max(1e-9)
            }
            Kind::Level => zl,
            Kind::Seasonal => {
                if sn >= 3 {
                    zs
                } else {
                    0.0
                }
            }
            Kind::Gaussian => z_level,
            Kind::Change => zc,
            Kind::Novelty => zn,
            Kind::SeasonNovelty => {
                if sn >= 3 {
                    (zs + zn) / 2.0
                } else {
                    zn
                }
            }
            Kind::Mean => {
                if sn >= 3 {
                    (zl + zs + zc) / 3.0
                } else {
                    (zl + zc) / 2.0
                }
            }
        }
    }

    /// Range view: a value well beyond anything seen so far is unusual whatever the models say. Flat-line view:
    /// a value stuck for much longer than this point has ever held still (a frozen sensor, a stalled controller)
    /// is unusual even when the stuck value itself is normal. Returns the surprise and whether the flat line fired.
    #[inline]
    fn range_and_flat(&mut self, x: f64, z: f64, p: &Params) -> (f64, bool) {
        let range = self.hi - self.lo;
        let z = if p.range_tol > 0.0
            && self.n > p.learn as u64
            && (x > self.hi + p.range_tol * range || x < self.lo - p.range_tol * range)
        {
            z.max(p.range_z)
        } else {
            z
        };
        self.hi = self.hi.max(x);
        self.lo = self.lo.min(x);
        let bar = (p.flat_factor * self.max_run).max(p.flat_min as f64);
        // It fires once per run (when the run passes the bar), so it is not held back by the refractory step.
        let flat_hit =
            p.flat_factor > 0.0 && self.run as f64 >= bar && (self.run as f64) < bar + 1.0;
        let z = if flat_hit { z.max(p.range_z) } else { z };
        (z, flat_hit)
    }

    /// Refractory step: after an event, only a surprise that beats the decaying peak fires again, until the
    /// behaviour has looked normal (below `rearm_z`) for `refractory` readings in a row. Returns the event's
    /// surprise (0 when none fires).
    #[inline]
    fn refractory(&mut self, z: f64, flat_hit: bool, p: &Params) -> f64 {
        if z > p.rearm_z {
            self.since_event = 0;
        } else {
            self.since_event = self.since_event.saturating_add(1);
        }
        let ev = if flat_hit || (z > self.hold && z > p.record_frac * self.record) {
            self.hold = z * p.hold_gain;
            z
        } else {
            0.0
        };
        self.record = (self.record * p.record_decay).max(z);
        if self.since_event >= p.refractory {
            self.hold = 0.0;
        } else {
            self.hold *= p.hold_decay;
        }
        ev
    }

    fn quiet(&self, expected: f64) -> Score {
        Score {
            score: 0.0,
            level: 0.0,
            expected,
            low: expected,
            high: expected,
            ready: self.n > self.params.learn as u64,
            settled: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Five-minute readings with a daily cycle and noise.
    fn daily(n: usize, seed: u64) -> Vec<(i64, f64)> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|i| {
                let t = 1_400_000_000 + i as i64 * 300;
                let ph = 2.0 * std::f64::consts::PI * (t % 86_400) as f64 / 86_400.0;
                (t, 50.0 + 20.0 * ph.sin() + 2.0 * (rng.f64() - 0.5))
            })
            .collect()
    }

    fn run(det: &mut Detector, data: &[(i64, f64)]) -> Vec<Score> {
        data.iter().map(|&(t, v)| det.observe(t, v)).collect()
    }

    /// The score of the normal tail of a run, and of a window after an injected fault.
    fn peak(scores: &[Score], from: usize, to: usize) -> f64 {
        scores[from..to].iter().map(|s| s.score).fold(0.0, f64::max)
    }

    #[test]
    fn silent_while_learning_and_scores_in_unit_range() {
        let mut det = Detector::new(Kind::Combined, Params::default());
        let s = run(&mut det, &daily(3000, 1));
        assert!(s[..200].iter().all(|s| !s.ready && s.score == 0.0));
        assert!(
            s.iter()
                .all(|s| (0.0..=1.0).contains(&s.score) && (0.0..=1.0).contains(&s.level))
        );
    }

    #[test]
    fn no_event_from_warm_up_state_on_flat_or_ramp_series() {
        let flat: Vec<(i64, f64)> = (0..1500).map(|i| (1_400_000_000 + i * 300, 21.5)).collect();
        let ramp: Vec<(i64, f64)> = (0..1500)
            .map(|i| (1_400_000_000 + i * 300, 10.0 + 0.05 * i as f64))
            .collect();
        for (name, data) in [("flat", flat), ("ramp", ramp)] {
            let p = Params::default();
            let mut det = Detector::new(Kind::Combined, p);
            let s = run(&mut det, &data);
            let first = p.learn as usize;
            assert!(s[first].ready && !s[first - 1].ready, "{name}");
            assert_eq!(s[first].score, 0.0, "{name}: the first scored row fired");
            // Nothing fires from what warm-up left behind (the first 50 scored rows); a flat series never fires.
            // (A ramp that keeps rising past everything seen does fire later, near row 289: the novelty view
            // sees a level it has never seen, which is a judgement on the data, not on uninitialised state.)
            let early = peak(&s, first, first + 50);
            assert!(early < 0.5, "{name}: scored {early} right after warm-up");
            if name == "flat" {
                assert!(s.iter().all(|s| s.score == 0.0), "a flat series fired");
            }
        }
    }

    #[test]
    fn a_real_anomaly_right_after_warm_up_fires() {
        let p = Params::default();
        let at = p.learn as usize + 40;
        let mut data = daily(at + 100, 11);
        data[at].1 += 60.0;
        let mut det = Detector::new(Kind::Combined, p);
        let s = run(&mut det, &data);
        let before = peak(&s, 0, at);
        assert!(
            s[at].score > 0.9 && s[at].score > before,
            "spike {} vs before {before}",
            s[at].score
        );
    }

    #[test]
    fn spike_level_shift_and_flat_stretch_stand_out_from_normal_days() {
        let normal = 288 * 7;
        for (name, fault) in [
            (
                "spike",
                Box::new(|i: usize, v: f64| if i == 0 { v + 80.0 } else { v })
                    as Box<dyn Fn(usize, f64) -> f64>,
            ),
            ("shift", Box::new(|_: usize, v: f64| v + 30.0)),
            ("flat", Box::new(|_: usize, _: f64| 50.0)),
        ] {
            let mut data = daily(normal + 288, 2);
            for (i, p) in data[normal..].iter_mut().enumerate() {
                p.1 = fault(i, p.1);
            }
            let mut det = Detector::new(Kind::Combined, Params::default());
            let s = run(&mut det, &data);
            // Quiet baseline: the highest score of the last normal days (after learning has settled).
            let base = peak(&s, 288 * 4, normal);
            let hit = peak(&s, normal, normal + 288);
            assert!(
                hit > base + 0.1 && hit > 0.4,
                "{name}: fault {hit:.3} vs normal {base:.3}"
            );
        }
    }

    #[test]
    fn an_event_fires_once_not_every_reading() {
        let normal = 288 * 6;
        let mut data = daily(normal + 288, 3);
        for p in data[normal..].iter_mut() {
            p.1 += 30.0;
        }
        let mut det = Detector::new(Kind::Combined, Params::default());
        let s = run(&mut det, &data);
        let hit = peak(&s, normal, normal + 288);
        let fired = s[normal..].iter().filter(|s| s.score >= hit * 0.8).count();
        assert!(fired <= 3, "{fired} readings fired for one level shift");
        // The sustained level stays high while the shift lasts.
        let sustained = s[normal..normal + 36]
            .iter()
            .filter(|s| s.level > 0.3)
            .count();
        assert!(sustained > 10, "level high for only {sustained} readings");
    }

    #[test]
    fn a_frozen_sensor_fires_within_a_few_readings() {
        let normal = 288 * 5;
        let mut data = daily(normal + 100, 7);
        let stuck = data[normal].1;
        for p in data[normal..].iter_mut() {
            p.1 = stuck;
        }
        let mut det = Detector::new(Kind::Combined, Params::default());
        let s = run(&mut det, &data);
        let first = s[normal..].iter().position(|s| s.score > 0.99);
        assert!(
            first.is_some_and(|i| i <= 8),
            "frozen value fired at {first:?}"
        );
        let fired = s[normal..].iter().filter(|s| s.score > 0.99).count();
        assert_eq!(fired, 1, "once per frozen stretch");
    }

    #[test]
    fn expected_range_brackets_normal_values() {
        let data = daily(288 * 5, 4);
        let mut det = Detector::new(Kind::Combined, Params::default());
        let s = run(&mut det, &data);
        let inside = s[288 * 4..]
            .iter()
            .zip(&data[288 * 4..])
            .filter(|(s, d)| s.low <= d.1 && d.1 <= s.high)
            .count();
        assert!(
            inside > 280,
            "{inside} of 288 normal readings inside the expected range"
        );
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let data = daily(2000, 5);
        let mut a = Detector::new(Kind::Combined, Params::default());
        run(&mut a, &data[..1500]);
        let mut b: Detector = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        for &(t, v) in &data[1500..] {
            let (x, y) = (a.observe(t, v), b.observe(t, v));
            assert!((x.score - y.score).abs() < 1e-9 && (x.level - y.level).abs() < 1e-9);
        }
    }

    /// The prototype memory full and replacing (the least recently matched one goes): the saved clock values
    /// keep the recency order, and a restored detector continues exactly, replacements included.
    #[test]
    fn a_full_prototype_memory_round_trips_in_recency_order() {
        // A daily shape plus jumps every few hours: many novel windows, so prototypes are replaced.
        let data: Vec<(i64, f64)> = daily(6000, 11)
            .into_iter()
            .enumerate()
            .map(|(i, (t, v))| (t, v + if (i / 37) % 3 == 0 { 40.0 } else { 0.0 }))
            .collect();
        let mut a = Detector::new(Kind::Combined, Params::default());
        run(&mut a, &data[..4000]);
        assert_eq!(a.novelty.used as usize, PROTOS, "the memory is full");
        let mut ranks = a.novelty.rank.to_vec();
        ranks.sort_unstable();
        assert_eq!(
            ranks,
            (0..PROTOS as u8).collect::<Vec<_>>(),
            "ranks are a permutation"
        );
        let saved = a.novelty.last_used();
        for i in 0..PROTOS {
            for j in 0..PROTOS {
                let older = |k: usize| a.novelty.clock.wrapping_sub(saved[k]);
                assert_eq!(a.novelty.rank[i] < a.novelty.rank[j], older(i) < older(j));
            }
        }
        // (serde_json may move an f64 by an ulp; the novelty arrays and ranks come back exactly)
        let mut b: Detector = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(
            (a.novelty.rank, a.novelty.protos),
            (b.novelty.rank, b.novelty.protos)
        );
        let before = a.novelty.protos;
        for &(t, v) in &data[4000..] {
            let (x, y) = (a.observe(t, v), b.observe(t, v));
            assert!((x.score - y.score).abs() < 1e-9);
        }
        assert_ne!(
            a.novelty.protos, before,
            "prototypes were replaced or learnt"
        );
        assert_eq!(
            (a.novelty.rank, a.novelty.protos),
            (b.novelty.rank, b.novelty.protos)
        );
    }

    #[test]
    fn memory_per_point_is_under_1200_bytes() {
        let det = Detector::new(Kind::Combined, Params::default());
        println!("memory_bytes = {}", det.memory_bytes());
        assert!(det.memory_bytes() <= 1200, "{} bytes", det.memory_bytes());
    }

    /// `season_n` saturates at 255 inside (only "fewer than 3 / 4 days" is asked) and loads from the u16 of a
    /// saved file by clamping: scores continue exactly as from the unclamped state.
    #[test]
    fn a_saved_day_count_past_255_loads_clamped_and_scores_the_same() {
        let data = daily(1200, 9);
        let mut a = Detector::new(Kind::Combined, Params::default());
        run(&mut a, &data[..1000]);
        let mut v = serde_json::to_value(&a).unwrap();
        let clamped = v.clone();
        for n in v["season_n"].as_array_mut().unwrap() {
            *n = serde_json::json!(n.as_u64().unwrap() + 1000);
        }
        let mut b: Detector = serde_json::from_value(v).unwrap();
        let mut c: Detector = serde_json::from_value(clamped).unwrap();
        for &(t, x) in &data[1000..] {
            let (sa, sb, sc) = (a.observe(t, x), b.observe(t, x), c.observe(t, x));
            assert_eq!(sa, sc);
            assert_eq!(
                (sa.score, sa.level, sa.expected),
                (sb.score, sb.level, sb.expected)
            );
        }
    }

    #[test]
    fn non_finite_values_and_clock_steps_back_do_not_corrupt_state() {
        let data = daily(1000, 6);
        let mut det = Detector::new(Kind::Combined, Params::default());
        run(&mut det, &data);
        let s = det.observe(data[999].0 + 300, f64::NAN);
        assert_eq!(s.score, 0.0);
        let s = det.observe(data[500].0, data[999].1);
        assert!(s.score.is_finite() && s.level.is_finite());
        let s = det.observe(data[999].0 + 600, data[999].1);
        assert!(s.expected.is_finite() && s.low <= s.high);
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;

    #[test]
    fn early_state_serialises_without_nulls() {
        let mut det = Detector::new(Kind::Combined, Params::default());
        for i in 0..3 {
            let json = serde_json::to_string(&det).unwrap();
            assert!(!json.contains("null"), "after {i} readings: {json}");
            let back: Detector = serde_json::from_str(&json).unwrap();
            assert_eq!(back.count(), i);
            det.observe(i as i64 * 60, 21.0);
        }
    }
}
