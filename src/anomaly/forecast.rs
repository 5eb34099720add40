//! Trend forecasts: when will a slowly degrading point (filter pressure drop, bearing temperature, valve
//! position) cross a limit?
//!
//! A [`Trend`] keeps one point's recent history as bucket means (default: hourly buckets over 14 days, so
//! constant memory), and [`Trend::fit`] fits a robust line on demand:
//! 1. Theil–Sen slope (median of pairwise slopes) and median intercept: a few spikes or a bad hour do not bend it;
//! 2. when the history covers two days or more, the daily cycle is estimated as the median residual per hour of day
//!    and removed, then the line is fitted again on the deseasonalised series;
//! 3. the spread of the residuals gives the slope's standard error, hence a confidence that the trend is real.
//!
//! If the most recent buckets sit far from the line against the trend (a filter was changed, a fault was fixed),
//! the history before them is dropped: the trend has reversed and the forecast starts again from the new level.
//! A rule engine asks [`Trend::crossing_above`] / [`Trend::crossing_below`]: `None` means "no crossing expected"
//! (flat or reversing trend), which is what closes a forecast work order.
//!
//! Why not linfa-linear: ordinary least squares is what it offers, and one spike bends it; Theil–Sen on at most a
//! few hundred buckets is 30 lines and needs no ndarray.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// One point's bucketed history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trend {
    bucket_secs: i64,
    capacity: usize,
    /// Closed buckets: (bucket start, mean).
    buckets: VecDeque<(i64, f64)>,
    open_start: i64,
    open_sum: f64,
    open_n: u32,
    last_at: i64,
}

/// A fitted line, in value units per second from `origin`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub origin: i64,
    pub intercept: f64,
    /// Value units per second.
    pub slope: f64,
    /// Standard error of the slope.
    pub slope_se: f64,
    /// Robust standard deviation of the deseasonalised residuals.
    pub sigma: f64,
    /// Buckets the fit used.
    pub buckets: usize,
    /// Time of the newest reading.
    pub now: i64,
    /// The fitted (deseasonalised) level at `now`.
    pub level_now: f64,
}

/// A predicted limit crossing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crossing {
    /// Predicted crossing time, Unix seconds (equal to `now` when the level is already past the limit).
    pub at: i64,
    /// Probability in [0, 1] that the trend is real (the slope's sign), from its standard error.
    pub confidence: f64,
    /// Value units per day.
    pub slope_per_day: f64,
    /// Fitted level now.
    pub level_now: f64,
}

impl Trend {
    /// Hourly buckets over 14 days.
    pub fn new() -> Self {
        Self::with_buckets(3600, 14 * 24)
    }

    pub fn with_buckets(bucket_secs: i64, capacity: usize) -> Self {
        Trend {
            bucket_secs: bucket_secs.max(1),
            capacity: capacity.max(4),
            buckets: VecDeque::with_capacity(capacity.max(4)),
            open_start: i64::MIN,
            open_sum: 0.0,
            open_n: 0,
            last_at: i64::MIN,
        }
    }

    /// Adds one reading (`at` in Unix seconds). Out-of-order readings count in the current bucket.
    pub fn observe(&mut self, at: i64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let at = at.max(self.last_at);
        self.last_at = at;
        let start = at - at.rem_euclid(self.bucket_secs);
        if start != self.open_start {
            self.close();
            self.open_start = start;
        }
        self.open_sum += value;
        self.open_n += 1;
    }

    fn close(&mut self) {
        if self.open_n > 0 {
            if self.buckets.len() == self.capacity {
                self.buckets.pop_front();
            }
            self.buckets
                .push_back((self.open_start, self.open_sum / self.open_n as f64));
        }
        self.open_sum = 0.0;
        self.open_n = 0;
    }

    /// Closed buckets held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Fits the robust deseasonalised trend; `None` with fewer than 12 closed buckets.
    pub fn fit(&mut self) -> Option<Fit> {
        let f = self.fit_inner()?;
        // Reversal check: the newest buckets far from the line against its direction mean the trend has broken.
        let recent = (self.buckets.len() / 10).max(3);
        if self.buckets.len() >= recent * 3 {
            let season = self.season(&f);
            let res: Vec<f64> = self
                .buckets
                .iter()
                .rev()
                .take(recent)
                .map(|&(t, v)| v - season_at(&season, t, self.bucket_secs) - f.at(t))
                .collect();
            let m = median(&mut res.clone());
            let against = if f.slope > 0.0 { -m } else { m };
            let all_against = res
                .iter()
                .all(|r| if f.slope > 0.0 { *r < 0.0 } else { *r > 0.0 });
            if against > 4.0 * f.sigma.max(1e-9) && all_against {
                let keep = self.buckets.len() - recent;
                self.buckets.drain(..keep);
                return self.fit_inner();
            }
        }
        Some(f)
    }

    fn fit_inner(&self) -> Option<Fit> {
        if self.buckets.len() < 12 {
            return None;
        }
        let origin = self.buckets[0].0;
        let mid = self.bucket_secs / 2;
        let pts: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|&(t, v)| ((t + mid - origin) as f64, v))
            .collect();
        let (mut slope, mut icpt) = theil_sen(&pts);
        let span = pts.last()?.0 - pts[0].0;
        let mut ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
        if span >= 2.0 * 86_400.0 && self.bucket_secs < 86_400 {
            // Daily cycle: median residual per bucket of the day, removed before the final fit.
            let first = Fit {
                origin,
                intercept: icpt,
                slope,
                slope_se: 0.0,
                sigma: 0.0,
                buckets: 0,
                now: 0,
                level_now: 0.0,
            };
            let season = self.season(&first);
            for (y, &(t, _)) in ys.iter_mut().zip(self.buckets.iter()) {
                *y -= season_at(&season, t, self.bucket_secs);
            }
            let de: Vec<(f64, f64)> = pts.iter().zip(&ys).map(|(p, y)| (p.0, *y)).collect();
            (slope, icpt) = theil_sen(&de);
        }
        let mut res: Vec<f64> = pts
            .iter()
            .zip(&ys)
            .map(|(p, y)| y - (icpt + slope * p.0))
            .collect();
        let sigma = 1.4826 * median(&mut res.iter().map(|r| r.abs()).collect::<Vec<_>>());
        res.clear();
        let n = pts.len() as f64;
        let tm = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let sxx: f64 = pts.iter().map(|p| (p.0 - tm) * (p.0 - tm)).sum();
        let slope_se = sigma / sxx.sqrt().max(1e-9);
        let now = self.last_at.max(self.buckets.back()?.0);
        let level_now = icpt + slope * (now - origin) as f64;
        Some(Fit {
            origin,
            intercept: icpt,
            slope,
            slope_se,
            sigma,
            buckets: pts.len(),
            now,
            level_now,
        })
    }

    /// Median residual per bucket of the day around `f` (empty when buckets are a day or longer).
    fn season(&self, f: &Fit) -> Vec<f64> {
        let per_day = (86_400 / self.bucket_secs).max(1) as usize;
        if per_day < 2 {
            return Vec::new();
        }
        let mut slots: Vec<Vec<f64>> = vec![Vec::new(); per_day];
        for &(t, v) in &self.buckets {
            let i = (t.rem_euclid(86_400) / self.bucket_secs) as usize % per_day;
            slots[i].push(v - f.at(t));
        }
        slots
            .into_iter()
            .map(|mut s| if s.is_empty() { 0.0 } else { median(&mut s) })
            .collect()
    }

    /// When the fitted trend reaches `limit` from below, if it is rising toward it.
    pub fn crossing_above(&mut self, limit: f64) -> Option<Crossing> {
        self.crossing(limit, true)
    }

    /// When the fitted trend reaches `limit` from above, if it is falling toward it.
    pub fn crossing_below(&mut self, limit: f64) -> Option<Crossing> {
        self.crossing(limit, false)
    }

    fn crossing(&mut self, limit: f64, above: bool) -> Option<Crossing> {
        let f = self.fit()?;
        let toward = if above { f.slope > 0.0 } else { f.slope < 0.0 };
        let past = if above {
            f.level_now >= limit
        } else {
            f.level_now <= limit
        };
        let confidence = normal_cdf(f.slope.abs() / f.slope_se.max(1e-12));
        if past {
            return Some(Crossing {
                at: f.now,
                confidence: if toward { confidence } else { 0.5 },
                slope_per_day: f.slope * 86_400.0,
                level_now: f.level_now,
            });
        }
        if !toward {
            return None;
        }
        let secs = (limit - f.level_now) / f.slope;
        Some(Crossing {
            at: f.now + secs.min(1e12) as i64,
            confidence,
            slope_per_day: f.slope * 86_400.0,
            level_now: f.level_now,
        })
    }
}

impl Default for Trend {
    fn default() -> Self {
        Self::new()
    }
}

impl Fit {
    /// The fitted (deseasonalised) value at `t`.
    pub fn at(&self, t: i64) -> f64 {
        self.intercept + self.slope * (t - self.origin) as f64
    }
}

fn season_at(season: &[f64], t: i64, bucket_secs: i64) -> f64 {
    if season.is_empty() {
        0.0
    } else {
        season[(t.rem_euclid(86_400) / bucket_secs) as usize % season.len()]
    }
}

/// Theil–Sen slope and median intercept. O(n²) pairs; n is at most a few hundred buckets, and fits run on demand.
fn theil_sen(pts: &[(f64, f64)]) -> (f64, f64) {
    let mut slopes = Vec::with_capacity(pts.len() * (pts.len().saturating_sub(1)) / 2);
    for (i, a) in pts.iter().enumerate() {
        for b in &pts[i + 1..] {
            let dx = b.0 - a.0;
            if dx != 0.0 {
                slopes.push((b.1 - a.1) / dx);
            }
        }
    }
    let slope = if slopes.is_empty() {
        0.0
    } else {
        median(&mut slopes)
    };
    let mut icpts: Vec<f64> = pts.iter().map(|p| p.1 - slope * p.0).collect();
    (slope, median(&mut icpts))
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    let (_, m, _) = v.select_nth_unstable_by(n / 2, |a, b| a.total_cmp(b));
    let m = *m;
    if n % 2 == 1 {
        m
    } else {
        let lo = v[..n / 2].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lo + m) / 2.0
    }
}

/// Standard normal CDF (erfc after Numerical Recipes' Chebyshev fit, relative error below 1.2e-7).
pub fn normal_cdf(z: f64) -> f64 {
    1.0 - 0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function, fractional error below 1.2e-7 everywhere.
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    /// A filter whose pressure drop rises 10 Pa/day from 150 Pa, with a ±8 Pa daily fan cycle and noise.
    fn filter(days: i64, start: i64, seed: u64) -> Vec<(i64, f64)> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..days * 24 * 12)
            .map(|i| {
                let t = start + i * 300;
                let d = (t - start) as f64 / DAY as f64;
                let cycle =
                    8.0 * (2.0 * std::f64::consts::PI * (t % DAY) as f64 / DAY as f64).sin();
                (t, 150.0 + 10.0 * d + cycle + 3.0 * (rng.f64() - 0.5))
            })
            .collect()
    }

    #[test]
    fn predicts_a_filter_crossing_with_its_known_answer() {
        let start = 1_700_000_000 - 1_700_000_000 % DAY;
        let mut tr = Trend::new();
        for (t, v) in filter(5, start, 1) {
            tr.observe(t, v);
        }
        // True level after 5 days: 200 Pa; 250 Pa is reached 5 days later.
        let c = tr.crossing_above(250.0).expect("a rising trend crosses");
        let days = (c.at - start) as f64 / DAY as f64;
        assert!((days - 10.0).abs() < 0.3, "crossing at day {days:.2}");
        assert!((c.slope_per_day - 10.0).abs() < 0.5, "{c:?}");
        assert!(c.confidence > 0.99, "{c:?}");
        // Nothing falls toward 100 Pa.
        assert_eq!(tr.crossing_below(100.0), None);
    }

    #[test]
    fn a_changed_filter_closes_the_forecast() {
        let start = 1_700_000_000 - 1_700_000_000 % DAY;
        let mut tr = Trend::new();
        for (t, v) in filter(6, start, 2) {
            tr.observe(t, v);
        }
        assert!(tr.crossing_above(250.0).is_some());
        // Filter changed: back to 150 Pa and flat (new filter) for a day.
        let mut rng = fastrand::Rng::with_seed(3);
        for i in 0..(24 * 12) {
            let t = start + 6 * DAY + i * 300;
            tr.observe(t, 150.0 + 3.0 * (rng.f64() - 0.5));
        }
        // Either no crossing at all, or the new flat noise makes one only in the far future (a `within: 7d` rule
        // closes either way).
        if let Some(c) = tr.crossing_above(250.0) {
            let days = (c.at - (start + 7 * DAY)) as f64 / DAY as f64;
            assert!(days > 30.0, "trend reversed, yet {c:?}");
        }
    }

    #[test]
    fn a_flat_noisy_point_predicts_nothing_confident() {
        let mut tr = Trend::new();
        let mut rng = fastrand::Rng::with_seed(4);
        for i in 0..(4 * 24 * 12) {
            tr.observe(i * 300, 20.0 + rng.f64() - 0.5);
        }
        match tr.crossing_above(25.0) {
            None => {}
            Some(c) => {
                let days = (c.at - 4 * DAY) as f64 / DAY as f64;
                assert!(days > 30.0 || c.confidence < 0.9, "{c:?}");
            }
        }
    }

    #[test]
    fn numerics() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
        assert!((normal_cdf(-3.0) - 0.001_35).abs() < 1e-5);
        let (s, i) = theil_sen(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 100.0), (4.0, 9.0)]);
        assert_eq!((s, i), (2.0, 1.0));
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 4.0]), 2.5);
    }
}
