//! The baseline: per hour, the median of the same local hour-of-week over the previous weeks, corrected for the
//! weather with heating degree days when the store has outdoor temperatures.

use super::clock::Clock;
use crate::energy::store::{PRESENT, Store};

/// One meter's hour-of-week baseline over the report range.
pub(super) struct Baseline<'c> {
    c: &'c Clock,
    /// Slots per hour.
    sph: usize,
    /// The meter's consumption per hour of the array (NaN: no data in that hour).
    hourly: Vec<f64>,
    /// Per local date of the array, what the weather adds to the day's baseline (empty without degree days).
    corr: Vec<f64>,
    weeks: usize,
    /// Weeks with data needed for a median (at least half of `weeks`).
    need: usize,
    window: Vec<f64>,
}

impl<'c> Baseline<'c> {
    /// `vals` and `flags`: one meter's slots over the clock's array; `hdd`: heating degree days per local date
    /// (empty without them).
    pub(super) fn new(
        c: &'c Clock,
        vals: &[f64],
        flags: &[u8],
        weeks: usize,
        hdd: &[Option<f64>],
    ) -> Self {
        let sph = (3600 / c.period) as usize;
        // Hourly sums over the whole array, for the baseline.
        let hours = c.n.div_ceil(sph);
        let mut hourly = vec![f64::NAN; hours];
        for (h, out) in hourly.iter_mut().enumerate() {
            let mut sum = 0.0;
            let mut any = false;
            for i in h * sph..((h + 1) * sph).min(c.n) {
                if flags[i] & PRESENT != 0 {
                    sum += vals[i];
                    any = true;
                }
            }
            if any {
                *out = sum;
            }
        }
        Baseline {
            c,
            sph,
            hourly,
            corr: weather_correction(c, hdd, vals, flags, weeks),
            weeks,
            need: weeks.div_ceil(2).max(1),
            window: Vec::with_capacity(weeks),
        }
    }

    /// The baseline of the hour that slot `i` starts (or, at the range's first slot, is in): the median of the
    /// same local hour over the previous weeks plus the day's weather correction spread over its hours; `None`
    /// when fewer than half of the weeks have data.
    pub(super) fn hour(&mut self, i: usize) -> Option<f64> {
        let (c, sph) = (self.c, self.sph);
        let h = i / sph;
        let window = &mut self.window;
        window.clear();
        for k in 1..=self.weeks {
            if let Some(j) = c.weeks_back(h * sph, k) {
                let v = self.hourly[j / sph];
                if !v.is_nan() {
                    window.push(v);
                }
            }
        }
        if window.len() < self.need {
            return None;
        }
        window.sort_by(f64::total_cmp);
        let w = window.len();
        let med = if w % 2 == 1 {
            window[w / 2]
        } else {
            (window[w / 2 - 1] + window[w / 2]) / 2.0
        };
        let ad = c.all_day[i] as usize;
        Some(match self.corr.get(ad) {
            // The day's correction, spread over its hours (23, 24 or 25).
            Some(x) if *x != 0.0 => (med + x / c.day_hours(ad)).max(0.0),
            _ => med,
        })
    }
}

/// Per local date, what the weather adds to the baseline: `b × (HDD_day − mean HDD of the window)`, where
/// `b` (kWh per degree day, ≥ 0) is a least-squares fit of the meter's daily consumption on HDD over the
/// previous `weeks` weeks. Zero where the fit is impossible (fewer than 7 full days, HDD that hardly vary).
fn weather_correction(
    c: &Clock,
    hdd: &[Option<f64>],
    vals: &[f64],
    flags: &[u8],
    weeks: usize,
) -> Vec<f64> {
    if hdd.is_empty() {
        return Vec::new();
    }
    let nd = c.all_days.len();
    let mut total = vec![0.0; nd];
    let mut count = vec![0u32; nd];
    let mut slots = vec![0u32; nd];
    for i in 0..c.n {
        let d = c.all_day[i] as usize;
        slots[d] += 1;
        if flags[i] & PRESENT != 0 {
            total[d] += vals[i];
            count[d] += 1;
        }
    }
    let daily: Vec<Option<f64>> = (0..nd)
        .map(|d| (count[d] * 10 >= slots[d] * 9 && slots[d] > 0).then_some(total[d]))
        .collect();
    let win = weeks * 7;
    let mut out = vec![0.0; nd];
    for (d, o) in out.iter_mut().enumerate() {
        let Some(x_d) = hdd[d] else { continue };
        let (mut n, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let from = d.saturating_sub(win);
        for (x, y) in hdd[from..d].iter().zip(&daily[from..d]) {
            if let (Some(x), Some(y)) = (*x, *y) {
                n += 1.0;
                sx += x;
                sy += y;
                sxx += x * x;
                sxy += x * y;
            }
        }
        if n < 7.0 {
            continue;
        }
        let var = sxx / n - (sx / n).powi(2);
        if var < 0.25 {
            continue;
        }
        let b = ((sxy / n - sx / n * sy / n) / var).max(0.0);
        *o = b * (x_d - sx / n);
    }
    out
}

/// Heating degree days per local date of the clock: `max(0, base − mean outdoor temperature)`, for dates with
/// at least 12 hourly means in the store.
pub(super) fn degree_days(store: &Store, c: &Clock, base: f64) -> anyhow::Result<Vec<Option<f64>>> {
    let h0 = c.s0 * c.period / 3600;
    let h1 = (c.s0 + c.n as i64) * c.period / 3600 + 1;
    let temps = store.temperatures(h0, h1)?;
    let mut sum = vec![0.0; c.all_days.len()];
    let mut n = vec![0u32; c.all_days.len()];
    for (h, t) in temps {
        let j = h * 3600 / c.period - c.s0;
        if j >= 0 && (j as usize) < c.n {
            let d = c.all_day[j as usize] as usize;
            sum[d] += t;
            n[d] += 1;
        }
    }
    Ok((0..sum.len())
        .map(|d| (n[d] >= 12).then(|| (base - sum[d] / n[d] as f64).max(0.0)))
        .collect())
}
