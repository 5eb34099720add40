//! The report's time axis: one array index per settlement slot from the baseline look-back to the end of the
//! range, with each slot's local time, period, day, month and after-hours flag.

use super::{By, Query};
use crate::energy::config::EnergyConfig;
use anyhow::bail;
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use std::collections::HashMap;

/// Per-slot facts shared by every meter (local time, period, hour-of-week, ...).
pub(super) struct Clock {
    /// First slot of the array (look-back included).
    pub(super) s0: i64,
    /// First slot of the report range, as an array index.
    pub(super) r0: usize,
    pub(super) n: usize,
    pub(super) period: i64,
    pub(super) local: Vec<DateTime>,
    pub(super) offset: Vec<i32>,
    pub(super) period_idx: Vec<u32>,
    pub(super) day_idx: Vec<u32>,
    pub(super) after: Vec<bool>,
    pub(super) labels: Vec<String>,
    pub(super) days: Vec<Date>,
    /// Local month index per slot (for demand charges), and the month's first date.
    pub(super) month_idx: Vec<u32>,
    pub(super) months: Vec<Date>,
    /// Local date index of every slot (look-back included), and those dates.
    pub(super) all_day: Vec<u32>,
    pub(super) all_days: Vec<Date>,
    pub(super) day_hours: Vec<f64>,
}

impl Clock {
    pub(super) fn new(
        q: &Query,
        tz: &TimeZone,
        period: i64,
        lookback_weeks: u32,
        cfg: &EnergyConfig,
    ) -> anyhow::Result<Clock> {
        let start = tz.to_timestamp(q.from.to_datetime(jiff::civil::Time::midnight()))?;
        let end = tz.to_timestamp(q.to.to_datetime(jiff::civil::Time::midnight()))?;
        if end <= start {
            bail!("--to ({}) must be after --from ({})", q.to, q.from);
        }
        let r_start = start.as_second().div_euclid(period);
        let r_end = (end.as_second() + period - 1).div_euclid(period);
        let s0 = r_start - lookback_weeks as i64 * 7 * 86400 / period;
        let n = (r_end - s0) as usize;
        let r0 = (r_start - s0) as usize;
        let mut c = Clock {
            s0,
            r0,
            n,
            period,
            local: Vec::with_capacity(n),
            offset: Vec::with_capacity(n),
            period_idx: vec![u32::MAX; n],
            day_idx: vec![u32::MAX; n],
            after: vec![false; n],
            labels: Vec::new(),
            days: Vec::new(),
            month_idx: vec![u32::MAX; n],
            months: Vec::new(),
            all_day: Vec::with_capacity(n),
            all_days: Vec::new(),
            day_hours: Vec::new(),
        };
        let mut label_ix: HashMap<String, u32> = HashMap::new();
        for i in 0..n {
            let ts = Timestamp::from_second((s0 + i as i64) * period)?;
            let off = tz.to_offset(ts);
            let dt = off.to_datetime(ts);
            c.local.push(dt);
            c.offset.push(off.seconds());
            if c.all_days.last() != Some(&dt.date()) {
                c.all_days.push(dt.date());
            }
            c.all_day.push((c.all_days.len() - 1) as u32);
            if i < r0 {
                continue;
            }
            let d = dt.date();
            let label = match q.by {
                By::Hour => {
                    let o = off.seconds();
                    let sign = if o < 0 { '-' } else { '+' };
                    let o = o.abs();
                    format!(
                        "{}{sign}{:02}:{:02}",
                        dt.strftime("%Y-%m-%dT%H:00"),
                        o / 3600,
                        o % 3600 / 60
                    )
                }
                By::Day => d.to_string(),
                By::Week => {
                    let w = d.iso_week_date();
                    format!("{}-W{:02}", w.year(), w.week())
                }
                By::Month => format!("{}", d.strftime("%Y-%m")),
            };
            let next = c.labels.len() as u32;
            let pi = *label_ix.entry(label.clone()).or_insert_with(|| {
                c.labels.push(label);
                next
            });
            c.period_idx[i] = pi;
            if c.days.last() != Some(&d) {
                c.days.push(d);
            }
            c.day_idx[i] = (c.days.len() - 1) as u32;
            let m = d.first_of_month();
            if c.months.last() != Some(&m) {
                c.months.push(m);
            }
            c.month_idx[i] = (c.months.len() - 1) as u32;
            c.after[i] = cfg.calendar.after_hours(dt);
        }
        c.day_hours = vec![0.0; c.all_days.len()];
        for &d in &c.all_day {
            c.day_hours[d as usize] += period as f64 / 3600.0;
        }
        Ok(c)
    }

    /// Hours in a local date of the array (23, 24 or 25; fewer at the array's ends).
    pub(super) fn day_hours(&self, d: usize) -> f64 {
        self.day_hours[d]
    }

    /// Array index of the same local slot `k` weeks earlier.
    #[inline]
    pub(super) fn weeks_back(&self, i: usize, k: usize) -> Option<usize> {
        let spw = (7 * 86400 / self.period) as usize;
        let j0 = i.checked_sub(k * spw)?;
        let adj = (self.offset[i] - self.offset[j0]) as i64 / self.period;
        let j = j0 as i64 + adj;
        (j >= 0 && (j as usize) < self.n).then_some(j as usize)
    }
}
