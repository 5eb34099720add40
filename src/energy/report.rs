//! Rollups and reports from the local store: consumption per period (hour, day, ISO week, month in the site's
//! time zone) and group (device, category or a location tag), with cost, baseline, after-hours consumption and
//! demand peak; plus what the HTML report draws (daily totals against baseline, hour-by-day heat map, top
//! after-hours consumers, monthly peaks).
//!
//! One pass: each meter's slots are read day-row by day-row into a dense array covering the report range plus
//! the baseline look-back, then folded into the rows. Memory is one meter's array at a time (plus the terms of
//! virtual meters), whatever the number of meters.
//!
//! - **baseline**: per hour, the median of the same local hour-of-week over the previous `baseline_weeks`
//!   weeks (at least half of them must have data); a period's baseline is the sum over its hours, or `null` when
//!   fewer than half of its hours have one.
//! - **demand peak** (`peak_kw`): the largest settlement-interval average power of the group in the period
//!   (coincident for groups of several meters); kWh meters only.
//! - **cost**: energy × the price in force at each slot's local time, from the tariff valid on that local date
//!   (a new tariff never re-prices the past), plus the standing charge per meter and day (spread over the day's
//!   slots that hold data). Demand charges (monthly peak of each meter × `demand_per_kw_month`) are added to
//!   month rows with `--by month`, and to the totals.

use super::config::EnergyConfig;
use super::counter::{DERIVED, ESTIMATED};
use super::store::{PRESENT, SeriesInfo, Store};
use anyhow::{Context, bail};
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
#[cfg(test)]
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    Hour,
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    Device,
    Category,
    /// A location tag (`building`, `floor`, ...).
    Tag(String),
}

impl Group {
    pub fn parse(s: &str) -> Group {
        match s {
            "device" => Group::Device,
            "category" => Group::Category,
            t => Group::Tag(t.to_string()),
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Group::Device => "device",
            Group::Category => "category",
            Group::Tag(t) => t,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Query {
    pub from: Date,
    /// Exclusive.
    pub to: Date,
    pub by: By,
    pub group: Group,
    /// Only these devices (and virtual meters).
    pub devices: Option<Vec<String>>,
}

/// One row of the report (the JSON contract: period, group, consumption, unit, cost, baseline, estimated; the
/// other fields are additions).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub period: String,
    pub group: String,
    pub consumption: f64,
    pub unit: String,
    pub cost: Option<f64>,
    pub baseline: Option<f64>,
    pub estimated: bool,
    pub derived: bool,
    pub after_hours: f64,
    pub peak_kw: Option<f64>,
    /// Heating degree days of the period (with `[energy.degree_days]` and outdoor temperatures in the store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdd: Option<f64>,
}

/// After-hours consumption of one meter over the report range.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AfterHours {
    pub device: String,
    pub unit: String,
    pub after_hours: f64,
    pub total: f64,
    /// Average power outside opening hours (base load), kW.
    pub base_load_kw: Option<f64>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    #[serde(skip)]
    pub meta: Meta,
}

/// What the HTML report draws besides the rows.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub site: String,
    pub timezone: String,
    pub from: Option<Date>,
    pub to: Option<Date>,
    pub currency: Option<String>,
    /// Site totals per unit: (consumption, cost, estimated share 0..1).
    pub totals: BTreeMap<String, (f64, Option<f64>, f64)>,
    pub demand_charges: f64,
    /// Per local day, site kWh (real meters only), and its baseline.
    pub days: Vec<(Date, f64, Option<f64>)>,
    /// Per local day, kWh per local hour of day.
    pub heat: Vec<[f64; 24]>,
    pub after_hours: Vec<AfterHours>,
    /// Per month: the site's coincident peak kW and when it happened.
    pub peaks: Vec<(String, f64, String)>,
    pub meters: usize,
    /// Meter events in the range per device: kind → count (gaps, resets, wraps, glitches, late readings).
    pub events: BTreeMap<String, BTreeMap<String, i64>>,
}

/// Per-slot facts shared by every meter (local time, period, hour-of-week, ...).
struct Clock {
    /// First slot of the array (look-back included).
    s0: i64,
    /// First slot of the report range, as an array index.
    r0: usize,
    n: usize,
    period: i64,
    local: Vec<DateTime>,
    offset: Vec<i32>,
    period_idx: Vec<u32>,
    day_idx: Vec<u32>,
    after: Vec<bool>,
    labels: Vec<String>,
    days: Vec<Date>,
    /// Local month index per slot (for demand charges), and the month's first date.
    month_idx: Vec<u32>,
    months: Vec<Date>,
    /// Local date index of every slot (look-back included), and those dates.
    all_day: Vec<u32>,
    all_days: Vec<Date>,
    day_hours: Vec<f64>,
}

impl Clock {
    fn new(
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
    fn day_hours(&self, d: usize) -> f64 {
        self.day_hours[d]
    }

    /// Array index of the same local slot `k` weeks earlier.
    #[inline]
    fn weeks_back(&self, i: usize, k: usize) -> Option<usize> {
        let spw = (7 * 86400 / self.period) as usize;
        let j0 = i.checked_sub(k * spw)?;
        let adj = (self.offset[i] - self.offset[j0]) as i64 / self.period;
        let j = j0 as i64 + adj;
        (j >= 0 && (j as usize) < self.n).then_some(j as usize)
    }
}

/// One meter (real or virtual) as the fold sees it.
struct Meter<'a> {
    device: &'a str,
    unit: &'a str,
    category: &'a str,
    location: Option<&'a BTreeMap<String, String>>,
    vals: &'a [f64],
    flags: &'a [u8],
    real: bool,
}

#[derive(Default, Clone)]
struct Acc {
    consumption: f64,
    cost: f64,
    priced: bool,
    baseline: f64,
    baseline_hours: u32,
    hours: u32,
    estimated: bool,
    derived: bool,
    after: f64,
    present: bool,
}

/// Builds a report from the store.
pub fn build(
    store: &Store,
    cfg: &EnergyConfig,
    tz: &TimeZone,
    q: &Query,
    mut progress: Option<&mut dyn FnMut(usize, usize)>,
) -> anyhow::Result<Report> {
    let period = store.period;
    let clock = Clock::new(q, tz, period, cfg.baseline_weeks, cfg)?;
    let spd = store.slots_per_day() as i64;
    let series: Vec<SeriesInfo> = store
        .series()?
        .into_iter()
        .filter(|s| q.devices.as_ref().is_none_or(|d| d.contains(&s.device)))
        .collect();
    if let Group::Tag(t) = &q.group {
        let mut tags: Vec<&str> = series
            .iter()
            .flat_map(|s| s.location.keys().map(String::as_str))
            .collect();
        tags.sort();
        tags.dedup();
        if !series.is_empty() && !tags.contains(&t.as_str()) {
            let hint = crate::util::did_you_mean(t, tags.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            bail!(
                "no meter has a location tag `{t}`{hint}; group by device, category{}",
                tags.iter().map(|t| format!(", {t}")).collect::<String>()
            );
        }
    }
    // Virtual meters whose terms we must keep.
    let virtuals: Vec<_> = cfg
        .virtual_meters
        .iter()
        .filter(|v| q.devices.as_ref().is_none_or(|d| d.contains(&v.name)))
        .filter(|_| q.group == Group::Device)
        .collect();
    let mut keep: HashMap<String, (Vec<f64>, Vec<u8>, String, String)> = HashMap::new();
    let all_series = if virtuals.is_empty() {
        series.clone()
    } else {
        store.series()?
    };
    for v in &virtuals {
        for (_, t) in &v.terms {
            if !all_series.iter().any(|s| &s.device == t) {
                let hint =
                    crate::util::did_you_mean(t, all_series.iter().map(|s| s.device.as_str()))
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                bail!(
                    "virtual meter `{}`: no meter `{t}` in the energy store{hint}",
                    v.name
                );
            }
        }
    }
    let needed: std::collections::HashSet<&str> = virtuals
        .iter()
        .flat_map(|v| v.terms.iter().map(|(_, t)| t.as_str()))
        .collect();

    let mut f = Fold::new(&clock, cfg, q);
    if let Some(dd) = &cfg.degree_days {
        f.hdd = degree_days(store, &clock, dd.base)?;
    }
    let mut vals = vec![f64::NAN; clock.n];
    let mut flags = vec![0u8; clock.n];
    let total = all_series.len();
    for (k, s) in all_series.iter().enumerate() {
        if let Some(p) = progress.as_deref_mut() {
            p(k + 1, total);
        }
        let selected = series.iter().any(|x| x.id == s.id);
        if !selected && !needed.contains(s.device.as_str()) {
            continue;
        }
        vals.fill(f64::NAN);
        flags.fill(0);
        let (d0, d1) = (
            clock.s0.div_euclid(spd),
            (clock.s0 + clock.n as i64).div_euclid(spd) + 1,
        );
        store.for_each_day(s.id, d0, d1, |d, v, fl| {
            let base = d * spd - clock.s0;
            for i in 0..v.len() {
                let j = base + i as i64;
                if j >= 0 && (j as usize) < clock.n && fl[i] & PRESENT != 0 {
                    vals[j as usize] = v[i];
                    flags[j as usize] = fl[i];
                }
            }
        })?;
        if selected {
            f.meter(&Meter {
                device: &s.device,
                unit: &s.unit,
                category: &s.category,
                location: Some(&s.location),
                vals: &vals,
                flags: &flags,
                real: true,
            });
        }
        if needed.contains(s.device.as_str()) {
            let e = keep.entry(s.device.clone()).or_insert_with(|| {
                (
                    vec![f64::NAN; clock.n],
                    vec![0; clock.n],
                    s.unit.clone(),
                    s.category.clone(),
                )
            });
            for i in 0..clock.n {
                if flags[i] & PRESENT != 0 {
                    e.0[i] = if e.0[i].is_nan() {
                        vals[i]
                    } else {
                        e.0[i] + vals[i]
                    };
                    e.1[i] |= flags[i];
                }
            }
        }
    }
    for v in &virtuals {
        let (unit, category) = {
            let first = &keep[&v.terms[0].1];
            (first.2.clone(), first.3.clone())
        };
        for (_, t) in &v.terms {
            if keep[t].2 != unit {
                bail!(
                    "virtual meter `{}` mixes units: `{}` is in {unit}, `{t}` in {}",
                    v.name,
                    v.terms[0].1,
                    keep[t].2
                );
            }
        }
        let mut vv = vec![f64::NAN; clock.n];
        let mut vf = vec![0u8; clock.n];
        for i in 0..clock.n {
            // A slot is known only when every term is.
            if v.terms.iter().all(|(_, t)| keep[t].1[i] & PRESENT != 0) {
                vv[i] = v.terms.iter().map(|(s, t)| s * keep[t].0[i]).sum();
                vf[i] = v.terms.iter().fold(PRESENT, |a, (_, t)| a | keep[t].1[i]);
            }
        }
        f.meter(&Meter {
            device: &v.name,
            unit: &unit,
            category: &category,
            location: None,
            vals: &vv,
            flags: &vf,
            real: false,
        });
    }
    let mut rep = f.finish();
    rep.meta.timezone = tz.iana_name().unwrap_or("").to_string();
    rep.meta.from = Some(q.from);
    rep.meta.to = Some(q.to);
    rep.meta.meters = series.len();
    let (a, b) = (
        ((clock.s0 + clock.r0 as i64) * period) as f64,
        ((clock.s0 + clock.n as i64) * period) as f64,
    );
    for (device, kind, n) in store.event_counts(a, b)? {
        if series.iter().any(|s| s.device == device) {
            rep.meta.events.entry(device).or_default().insert(kind, n);
        }
    }
    Ok(rep)
}

/// Energy price and standing charge per slot of one category.
type Prices = std::rc::Rc<(Vec<f64>, Vec<f64>)>;

struct Fold<'c> {
    c: &'c Clock,
    cfg: &'c EnergyConfig,
    q: &'c Query,
    groups: Vec<(String, String)>,
    group_ix: HashMap<(String, String), usize>,
    /// [group][period]
    acc: Vec<Vec<Acc>>,
    /// Coincident slot sums per group (kWh groups of more than one meter) for the peak.
    gsum: Vec<Option<Vec<f64>>>,
    gpeak: Vec<Vec<f64>>,
    price: HashMap<String, Prices>,
    site_slots: Vec<f64>,
    day_kwh: Vec<f64>,
    day_base: Vec<(f64, u32, u32)>,
    heat: Vec<[f64; 24]>,
    after: Vec<AfterHours>,
    totals: BTreeMap<String, (f64, f64, bool, f64)>,
    demand: f64,
    demand_by_month: HashMap<(usize, u32), f64>,
    /// Heating degree days per local date of the array (`Clock::all_days`), when known.
    hdd: Vec<Option<f64>>,
}

impl<'c> Fold<'c> {
    fn new(c: &'c Clock, cfg: &'c EnergyConfig, q: &'c Query) -> Self {
        Fold {
            c,
            cfg,
            q,
            groups: Vec::new(),
            group_ix: HashMap::new(),
            acc: Vec::new(),
            gsum: Vec::new(),
            gpeak: Vec::new(),
            price: HashMap::new(),
            site_slots: vec![0.0; c.n],
            day_kwh: vec![0.0; c.days.len()],
            day_base: vec![(0.0, 0, 0); c.days.len()],
            heat: vec![[0.0; 24]; c.days.len()],
            after: Vec::new(),
            totals: BTreeMap::new(),
            demand: 0.0,
            demand_by_month: HashMap::new(),
            hdd: Vec::new(),
        }
    }

    /// Energy price and standing charge per slot for a category (NaN where no tariff applies).
    fn prices(&mut self, category: &str) -> Prices {
        let (c, cfg) = (self.c, self.cfg);
        self.price
            .entry(category.to_string())
            .or_insert_with(|| {
                let spd = (86400 / c.period) as f64;
                let mut p = vec![f64::NAN; c.n];
                let mut s = vec![0.0; c.n];
                for i in c.r0..c.n {
                    let dt = c.local[i];
                    if let Some(t) = cfg.tariff(category, dt.date()) {
                        p[i] = t.price(dt).unwrap_or(f64::NAN);
                        s[i] = t.standing_per_day / spd;
                    }
                }
                std::rc::Rc::new((p, s))
            })
            .clone()
    }

    fn group_of(&mut self, m: &Meter) -> usize {
        let name = match &self.q.group {
            Group::Device => m.device.to_string(),
            Group::Category => m.category.to_string(),
            Group::Tag(t) => m
                .location
                .and_then(|l| l.get(t))
                .cloned()
                .unwrap_or_else(|| format!("(no {t})")),
        };
        let key = (name, m.unit.to_string());
        if let Some(&i) = self.group_ix.get(&key) {
            return i;
        }
        let i = self.groups.len();
        self.groups.push(key.clone());
        self.group_ix.insert(key, i);
        self.acc.push(vec![Acc::default(); self.c.labels.len()]);
        self.gsum.push(None);
        self.gpeak.push(vec![f64::NAN; self.c.labels.len()]);
        i
    }

    fn meter(&mut self, m: &Meter) {
        let c = self.c;
        if m.location.is_none() && self.q.group != Group::Device {
            return;
        }
        let g = self.group_of(m);
        let kwh = m.unit == "kWh";
        let prices = self.prices(m.category);
        let (price, standing) = (&prices.0, &prices.1);
        let sph = (3600 / c.period) as usize;
        // Hourly sums over the whole array, for the baseline.
        let hours = c.n.div_ceil(sph);
        let mut hourly = vec![f64::NAN; hours];
        for (h, out) in hourly.iter_mut().enumerate() {
            let mut sum = 0.0;
            let mut any = false;
            for i in h * sph..((h + 1) * sph).min(c.n) {
                if m.flags[i] & PRESENT != 0 {
                    sum += m.vals[i];
                    any = true;
                }
            }
            if any {
                *out = sum;
            }
        }
        let weeks = self.cfg.baseline_weeks as usize;
        let need = weeks.div_ceil(2).max(1);
        let corr = self.weather_correction(m, weeks);
        let mut window = Vec::with_capacity(weeks);
        let mut ah = AfterHours {
            device: m.device.to_string(),
            unit: m.unit.to_string(),
            after_hours: 0.0,
            total: 0.0,
            base_load_kw: None,
        };
        let mut ah_slots = 0u32;
        let single = self.q.group == Group::Device;
        let mut month_peak: HashMap<u32, f64> = HashMap::new();
        for i in c.r0..c.n {
            let pi = c.period_idx[i] as usize;
            // Baseline once per hour (at its first slot).
            if (i % sph == 0) || i == c.r0 {
                let h = i / sph;
                window.clear();
                for k in 1..=weeks {
                    if let Some(j) = c.weeks_back(h * sph, k) {
                        let v = hourly[j / sph];
                        if !v.is_nan() {
                            window.push(v);
                        }
                    }
                }
                let a = &mut self.acc[g][pi];
                a.hours += 1;
                let di = c.day_idx[i] as usize;
                if m.real && kwh {
                    self.day_base[di].2 += 1;
                }
                if window.len() >= need {
                    window.sort_by(f64::total_cmp);
                    let w = window.len();
                    let med = if w % 2 == 1 {
                        window[w / 2]
                    } else {
                        (window[w / 2 - 1] + window[w / 2]) / 2.0
                    };
                    let ad = c.all_day[i] as usize;
                    let med = match corr.get(ad) {
                        // The day's correction, spread over its hours (23, 24 or 25).
                        Some(x) if *x != 0.0 => (med + x / c.day_hours(ad)).max(0.0),
                        _ => med,
                    };
                    a.baseline += med;
                    a.baseline_hours += 1;
                    if m.real && kwh {
                        self.day_base[di].0 += med;
                        self.day_base[di].1 += 1;
                    }
                }
            }
            let fl = m.flags[i];
            if fl & PRESENT == 0 {
                continue;
            }
            let v = m.vals[i];
            let a = &mut self.acc[g][pi];
            a.present = true;
            a.consumption += v;
            a.estimated |= fl & ESTIMATED != 0;
            a.derived |= fl & DERIVED != 0;
            if !price[i].is_nan() {
                a.cost += v * price[i] + standing[i];
                a.priced = true;
            }
            if c.after[i] {
                a.after += v;
                ah.after_hours += v;
                ah_slots += 1;
            }
            ah.total += v;
            if kwh {
                let kw = v * 3600.0 / c.period as f64;
                if single {
                    let p = &mut self.gpeak[g][pi];
                    if p.is_nan() || kw > *p {
                        *p = kw;
                    }
                } else {
                    self.gsum[g].get_or_insert_with(|| vec![0.0; c.n])[i] += v;
                }
                let mi = c.month_idx[i];
                let e = month_peak.entry(mi).or_insert(0.0);
                if kw > *e {
                    *e = kw;
                }
                if m.real {
                    self.site_slots[i] += v;
                    let di = c.day_idx[i] as usize;
                    self.day_kwh[di] += v;
                    self.heat[di][c.local[i].hour() as usize] += v;
                }
            }
        }
        // Demand charges per meter and month.
        for (mi, kw) in month_peak {
            let month = c.months[mi as usize];
            if let Some(t) = self.cfg.tariff(m.category, month) {
                let charge = kw * t.demand_per_kw_month;
                if m.real {
                    // Totals count real meters only (a virtual meter's terms are already in them).
                    self.demand += charge;
                }
                *self.demand_by_month.entry((g, mi)).or_insert(0.0) += charge;
            }
        }
        if ah_slots > 0 {
            ah.base_load_kw =
                kwh.then(|| ah.after_hours / (ah_slots as f64 * c.period as f64 / 3600.0));
        }
        if m.real {
            let t = self.totals.entry(m.unit.to_string()).or_default();
            t.0 += ah.total;
            for i in c.r0..c.n {
                if m.flags[i] & PRESENT != 0 {
                    if !price[i].is_nan() {
                        t.1 += m.vals[i] * price[i] + standing[i];
                        t.2 = true;
                    }
                    if m.flags[i] & ESTIMATED != 0 {
                        t.3 += m.vals[i];
                    }
                }
            }
            self.after.push(ah);
        }
    }

    /// Per local date, what the weather adds to the baseline: `b × (HDD_day − mean HDD of the window)`, where
    /// `b` (kWh per degree day, ≥ 0) is a least-squares fit of the meter's daily consumption on HDD over the
    /// previous `weeks` weeks. Zero where the fit is impossible (fewer than 7 full days, HDD that hardly vary).
    fn weather_correction(&self, m: &Meter, weeks: usize) -> Vec<f64> {
        let c = self.c;
        if self.hdd.is_empty() {
            return Vec::new();
        }
        let nd = c.all_days.len();
        let mut total = vec![0.0; nd];
        let mut count = vec![0u32; nd];
        let mut slots = vec![0u32; nd];
        for i in 0..c.n {
            let d = c.all_day[i] as usize;
            slots[d] += 1;
            if m.flags[i] & PRESENT != 0 {
                total[d] += m.vals[i];
                count[d] += 1;
            }
        }
        let daily: Vec<Option<f64>> = (0..nd)
            .map(|d| (count[d] * 10 >= slots[d] * 9 && slots[d] > 0).then_some(total[d]))
            .collect();
        let win = weeks * 7;
        let mut out = vec![0.0; nd];
        for (d, o) in out.iter_mut().enumerate() {
            let Some(x_d) = self.hdd[d] else { continue };
            let (mut n, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
            let from = d.saturating_sub(win);
            for (x, y) in self.hdd[from..d].iter().zip(&daily[from..d]) {
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

    fn finish(mut self) -> Report {
        let c = self.c;
        // Coincident peaks of multi-meter groups.
        for g in 0..self.groups.len() {
            if let Some(sum) = &self.gsum[g] {
                for (i, v) in sum.iter().enumerate().skip(c.r0) {
                    let pi = c.period_idx[i] as usize;
                    if self.acc[g][pi].present {
                        let kw = v * 3600.0 / c.period as f64;
                        let p = &mut self.gpeak[g][pi];
                        if p.is_nan() || kw > *p {
                            *p = kw;
                        }
                    }
                }
            }
        }
        let mut label_month = vec![0u32; c.labels.len()];
        for i in c.r0..c.n {
            label_month[c.period_idx[i] as usize] = c.month_idx[i];
        }
        let mut period_hdd: Vec<Option<f64>> = vec![None; c.labels.len()];
        if !self.hdd.is_empty() && self.q.by != By::Hour {
            let mut last = u32::MAX;
            for i in c.r0..c.n {
                let d = c.all_day[i];
                if d != last {
                    last = d;
                    if let Some(h) = self.hdd[d as usize] {
                        let p = &mut period_hdd[c.period_idx[i] as usize];
                        *p = Some(p.unwrap_or(0.0) + h);
                    }
                }
            }
        }
        let mut order: Vec<usize> = (0..self.groups.len()).collect();
        order.sort_by(|&a, &b| self.groups[a].cmp(&self.groups[b]));
        let mut rows = Vec::new();
        for (pi, label) in c.labels.iter().enumerate() {
            for &g in &order {
                let (name, unit) = &self.groups[g];
                let a = &self.acc[g][pi];
                if !a.present {
                    continue;
                }
                let mut cost = a.priced.then_some(a.cost);
                if self.q.by == By::Month {
                    // Month rows carry the demand charges of that month.
                    if let Some(d) = self.demand_by_month.get(&(g, label_month[pi])) {
                        cost = Some(cost.unwrap_or(0.0) + d);
                    }
                }
                let peak = self.gpeak[g][pi];
                rows.push(Row {
                    period: label.clone(),
                    group: name.clone(),
                    consumption: round(a.consumption, 6),
                    unit: unit.clone(),
                    cost: cost.map(|x| round(x, 4)),
                    baseline: (a.baseline_hours * 2 >= a.hours && a.hours > 0)
                        .then(|| round(a.baseline, 6)),
                    estimated: a.estimated,
                    derived: a.derived,
                    after_hours: round(a.after, 6),
                    peak_kw: (unit == "kWh" && !peak.is_nan()).then(|| round(peak, 4)),
                    hdd: period_hdd[pi].map(|h| round(h, 2)),
                });
            }
        }
        let mut meta = Meta {
            currency: self.cfg.currency().map(str::to_string),
            demand_charges: self.demand,
            ..Meta::default()
        };
        for (unit, (cons, cost, priced, est)) in &self.totals {
            let mut cost = priced.then_some(*cost);
            if unit == "kWh" && self.demand > 0.0 {
                cost = Some(cost.unwrap_or(0.0) + self.demand);
            }
            meta.totals.insert(
                unit.clone(),
                (*cons, cost, if *cons > 0.0 { est / cons } else { 0.0 }),
            );
        }
        for (di, d) in c.days.iter().enumerate() {
            let (b, bh, h) = self.day_base[di];
            let base = (h > 0 && bh * 2 >= h).then_some(b);
            meta.days.push((*d, self.day_kwh[di], base));
        }
        meta.heat = self.heat;
        self.after
            .sort_by(|a, b| b.after_hours.total_cmp(&a.after_hours));
        meta.after_hours = self.after;
        for (mi, m) in c.months.iter().enumerate() {
            let mut best = (0.0, 0usize);
            for i in c.r0..c.n {
                if c.month_idx[i] as usize == mi && self.site_slots[i] > best.0 {
                    best = (self.site_slots[i], i);
                }
            }
            if best.0 > 0.0 {
                meta.peaks.push((
                    m.strftime("%Y-%m").to_string(),
                    best.0 * 3600.0 / c.period as f64,
                    c.local[best.1].strftime("%Y-%m-%d %H:%M").to_string(),
                ));
            }
        }
        Report { rows, meta }
    }
}

/// Heating degree days per local date of the clock: `max(0, base − mean outdoor temperature)`, for dates with
/// at least 12 hourly means in the store.
fn degree_days(store: &Store, c: &Clock, base: f64) -> anyhow::Result<Vec<Option<f64>>> {
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

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// `{"rows": [...]}`.
pub fn to_json(r: &Report) -> String {
    // Serialised from the struct (not a `json!` map) so keys keep the documented order.
    serde_json::to_string_pretty(r).unwrap_or_default()
}

pub fn to_csv(r: &Report) -> String {
    let mut s = String::from(
        "period,group,consumption,unit,cost,baseline,estimated,derived,after_hours,peak_kw\n",
    );
    let opt = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
    for row in &r.rows {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{}",
            csv_field(&row.period),
            csv_field(&row.group),
            row.consumption,
            row.unit,
            opt(row.cost),
            opt(row.baseline),
            row.estimated,
            row.derived,
            row.after_hours,
            opt(row.peak_kw)
        );
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn to_table(r: &Report) -> String {
    let cur = r.meta.currency.clone().unwrap_or_default();
    let head = [
        "period".to_string(),
        "group".into(),
        "consumption".into(),
        "unit".into(),
        format!("cost {cur}").trim().to_string(),
        "baseline".into(),
        "vs base".into(),
        "peak kW".into(),
        "after-hrs".into(),
        "flags".into(),
    ];
    let mut lines: Vec<Vec<String>> = vec![head.to_vec()];
    for row in &r.rows {
        let vs = match row.baseline {
            Some(b) if b > 0.0 => format!("{:+.0}%", (row.consumption - b) / b * 100.0),
            _ => "-".into(),
        };
        let flags = [(row.estimated, "est"), (row.derived, "derived")]
            .iter()
            .filter(|(b, _)| *b)
            .map(|(_, s)| *s)
            .collect::<Vec<_>>()
            .join(",");
        lines.push(vec![
            row.period.clone(),
            row.group.clone(),
            format!("{:.3}", row.consumption),
            row.unit.clone(),
            row.cost.map(|c| format!("{c:.2}")).unwrap_or("-".into()),
            row.baseline
                .map(|c| format!("{c:.3}"))
                .unwrap_or("-".into()),
            vs,
            row.peak_kw.map(|c| format!("{c:.2}")).unwrap_or("-".into()),
            format!("{:.3}", row.after_hours),
            flags,
        ]);
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|k| {
            lines
                .iter()
                .map(|l| l[k].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for (li, l) in lines.iter().enumerate() {
        for (k, cell) in l.iter().enumerate() {
            let right = (2..=8).contains(&k) && k != 3;
            if right {
                let _ = write!(s, "{:>w$}  ", cell, w = widths[k]);
            } else {
                let _ = write!(s, "{:<w$}  ", cell, w = widths[k]);
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        if li == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            s.push_str(&"-".repeat(total));
            s.push('\n');
        }
    }
    for (unit, (cons, cost, est)) in &r.meta.totals {
        let _ = writeln!(
            s,
            "total: {cons:.3} {unit}{}{}",
            cost.map(|c| format!(", cost {c:.2} {cur}"))
                .unwrap_or_default(),
            if *est > 0.0 {
                format!(", {:.1}% estimated", est * 100.0)
            } else {
                String::new()
            }
        );
    }
    s
}

/// Parses `--from`/`--to`: a local date (`2026-01-05`).
pub fn parse_day(s: &str, what: &str) -> anyhow::Result<Date> {
    s.parse::<Date>()
        .with_context(|| format!("{what} `{s}` is not a date like 2026-01-05"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::energy::config::validate;
    use crate::energy::counter::Slots;
    use crate::energy::store::Mode;

    /// A store with three meters, 15-minute slots, from 2025-12-01 to 2026-04-01 (UTC):
    /// `main` draws 4 kW always; `pv_export` exports 1 kW 10:00-14:00 local; `water-1` 0.01 m3 per slot.
    fn fixture(dir: &Path) -> (Store, TimeZone) {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let mut st = Store::open(
            &crate::energy::store::path_in(dir),
            900,
            "Europe/Berlin",
            "test",
        )
        .unwrap();
        let loc = |b: &str| BTreeMap::from([("building".to_string(), b.to_string())]);
        let main = st
            .series_id(
                "main",
                "energy_total",
                "kWh",
                "electricity",
                false,
                &loc("A"),
            )
            .unwrap();
        let pv = st
            .series_id(
                "pv_export",
                "energy_total",
                "kWh",
                "electricity",
                false,
                &loc("A"),
            )
            .unwrap();
        let water = st
            .series_id("water-1", "volume", "m3", "water", false, &loc("B"))
            .unwrap();
        let (a, b) = (1_764_547_200 / 900, 1_775_001_600 / 900);
        let (mut sm, mut sp, mut sw) = (Slots::default(), Slots::default(), Slots::default());
        for slot in a..b {
            sm.add(slot, 1.0, 0);
            sw.add(slot, 0.01, 0);
            let h = tz
                .to_datetime(Timestamp::from_second(slot * 900).unwrap())
                .hour();
            sp.add(slot, if (10..14).contains(&h) { 0.25 } else { 0.0 }, 0);
        }
        st.write(&[(main, &sm), (pv, &sp), (water, &sw)], Mode::Add, &[], &[])
            .unwrap();
        (st, tz)
    }

    fn cfg() -> EnergyConfig {
        let raw = toml::from_str(
            r#"
            [[tariffs]]
            name = "t"
            category = "electricity"
            valid_from = "2026-01-01"
            currency = "EUR"
            demand_per_kw_month = 10.0
            rates = [{ price = 0.30, days = ["mon","tue","wed","thu","fri"], from = "07:00", to = "21:00" }, { price = 0.20 }]
            [[virtual_meters]]
            name = "building_total"
            expr = "main - pv_export"
            "#,
        )
        .unwrap();
        let (c, errs) = validate(&raw);
        assert!(errs.is_empty(), "{errs:?}");
        c
    }

    fn q(from: &str, to: &str, by: By, group: &str) -> Query {
        Query {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
            by,
            group: Group::parse(group),
            devices: None,
        }
    }

    fn row<'a>(r: &'a Report, period: &str, group: &str) -> &'a Row {
        r.rows
            .iter()
            .find(|x| x.period == period && x.group == group)
            .unwrap_or_else(|| panic!("no row {period}/{group} in {:#?}", r.rows))
    }

    #[test]
    fn day_rows_cost_baseline_peak_and_virtual_meters() {
        let dir = tempfile::tempdir().unwrap();
        let (st, tz) = fixture(dir.path());
        let r = build(
            &st,
            &cfg(),
            &tz,
            &q("2026-01-12", "2026-01-13", By::Day, "device"),
            None,
        )
        .unwrap();
        let m = row(&r, "2026-01-12", "main"); // a Monday
        assert_eq!(m.consumption, 96.0);
        assert_eq!(m.unit, "kWh");
        assert_eq!(m.baseline, Some(96.0));
        assert_eq!(m.peak_kw, Some(4.0));
        assert!(!m.estimated);
        // 14 h at 0.30 and 10 h at 0.20, 4 kWh per hour (demand charges go to month rows).
        assert!((m.cost.unwrap() - 24.8).abs() < 1e-9, "{m:?}");
        // Default calendar: open 07:00-19:00 on weekdays.
        assert_eq!(m.after_hours, 48.0);
        assert_eq!(row(&r, "2026-01-12", "building_total").consumption, 92.0);
        assert_eq!(row(&r, "2026-01-12", "water-1").unit, "m3");
        assert_eq!(
            row(&r, "2026-01-12", "water-1").cost,
            None,
            "no water tariff"
        );
        // Before the tariff's valid_from nothing is priced.
        let r = build(
            &st,
            &cfg(),
            &tz,
            &q("2025-12-31", "2026-01-01", By::Day, "device"),
            None,
        )
        .unwrap();
        assert_eq!(row(&r, "2025-12-31", "main").cost, None);
    }

    #[test]
    fn groups_months_and_dst_days() {
        let dir = tempfile::tempdir().unwrap();
        let (st, tz) = fixture(dir.path());
        let r = build(
            &st,
            &cfg(),
            &tz,
            &q("2026-03-28", "2026-03-31", By::Day, "category"),
            None,
        )
        .unwrap();
        assert_eq!(row(&r, "2026-03-28", "electricity").consumption, 100.0);
        // Summer time starts on 2026-03-29: a 23-hour local day.
        assert_eq!(
            row(&r, "2026-03-29", "electricity").consumption,
            23.0 * 4.0 + 4.0
        );
        assert!((row(&r, "2026-03-29", "water").consumption - 0.92).abs() < 1e-9);
        let r = build(
            &st,
            &cfg(),
            &tz,
            &q("2026-01-01", "2026-03-01", By::Month, "building"),
            None,
        )
        .unwrap();
        let a = row(&r, "2026-01", "A");
        assert_eq!(a.consumption, 31.0 * 100.0);
        assert_eq!(a.peak_kw, Some(5.0), "coincident peak of main + pv_export");
        // Month rows include demand charges: each meter's monthly peak × 10 EUR/kW.
        // 3100 kWh at 0.20, plus 0.10 more on the 60 kWh of 07:00-21:00 on each of 22 weekdays.
        let energy: f64 = 3100.0 * 0.2 + 22.0 * 60.0 * 0.1;
        assert!(
            (a.cost.unwrap() - (energy + 40.0 + 10.0)).abs() < 1e-6,
            "{a:?}"
        );
        assert_eq!(row(&r, "2026-02", "B").unit, "m3");
        // Site totals count real meters once (the virtual meter's demand charge is not added again).
        let r = build(
            &st,
            &cfg(),
            &tz,
            &q("2026-01-01", "2026-02-01", By::Month, "device"),
            None,
        )
        .unwrap();
        let real: f64 = ["main", "pv_export"]
            .iter()
            .map(|g| row(&r, "2026-01", g).cost.unwrap())
            .sum();
        assert!(row(&r, "2026-01", "building_total").cost.is_some());
        assert!(
            (r.meta.totals["kWh"].1.unwrap() - real).abs() < 1e-6,
            "{:?}",
            r.meta.totals
        );
        let r = build(
            &st,
            &cfg(),
            &tz,
            &q("2026-01-05", "2026-01-19", By::Week, "device"),
            None,
        )
        .unwrap();
        assert_eq!(row(&r, "2026-W02", "main").consumption, 7.0 * 96.0);
        let r = build(
            &st,
            &cfg(),
            &tz,
            &q("2026-01-05", "2026-01-06", By::Hour, "device"),
            None,
        )
        .unwrap();
        assert_eq!(
            row(&r, "2026-01-05T10:00+01:00", "pv_export").consumption,
            1.0
        );
    }

    #[test]
    fn baseline_needs_history_and_json_shape_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (st, tz) = fixture(dir.path());
        // 2025-12-02 has one day of history only: no baseline.
        let r = build(
            &st,
            &cfg(),
            &tz,
            &q("2025-12-02", "2025-12-03", By::Day, "device"),
            None,
        )
        .unwrap();
        assert_eq!(row(&r, "2025-12-02", "main").baseline, None);
        let v: serde_json::Value = serde_json::from_str(&to_json(&r)).unwrap();
        let first = &v["rows"][0];
        for k in [
            "period",
            "group",
            "consumption",
            "unit",
            "cost",
            "baseline",
            "estimated",
        ] {
            assert!(first.get(k).is_some(), "missing {k} in {first}");
        }
        assert_eq!(first["period"], "2025-12-02");
        assert!(first["consumption"].is_f64());
        assert!(first["estimated"].is_boolean());
        let csv = to_csv(&r);
        assert!(csv.starts_with("period,group,consumption,unit,cost,baseline,estimated"));
        assert_eq!(csv.lines().count(), r.rows.len() + 1);
    }

    #[test]
    fn baseline_deviation_for_rules() {
        let dir = tempfile::tempdir().unwrap();
        let (mut st, tz) = fixture(dir.path());
        // main draws 30 % more on 2026-01-13 (every slot 1.3 kWh instead of 1.0).
        let id = st
            .series()
            .unwrap()
            .iter()
            .find(|s| s.device == "main")
            .unwrap()
            .id;
        let day0 = tz
            .to_timestamp("2026-01-13T00:00".parse().unwrap())
            .unwrap()
            .as_second()
            / 900;
        let mut extra = crate::energy::counter::Slots::default();
        for s in day0..day0 + 96 {
            extra.add(s, 0.3, 0);
        }
        st.write(&[(id, &extra)], Mode::Add, &[], &[]).unwrap();
        let c = cfg();
        let d = |s: &str| s.parse::<Date>().unwrap();
        let dev =
            crate::energy::daily_deviations(&st, &c, &tz, "main", d("2026-01-12"), d("2026-01-15"))
                .unwrap();
        assert_eq!(dev[0], (d("2026-01-12"), Some(0.0)));
        assert!((dev[1].1.unwrap() - 0.3).abs() < 1e-9, "{dev:?}");
        assert_eq!(dev[2].1, Some(0.0));
        assert_eq!(
            crate::energy::baseline_deviation(&st, &c, &tz, "main", d("2025-12-02")).unwrap(),
            None,
            "no history yet"
        );
        assert_eq!(
            crate::energy::baseline_deviation(&st, &c, &tz, "nope", d("2026-01-12")).unwrap(),
            None
        );
    }

    #[test]
    fn degree_days_normalise_the_baseline() {
        // A heating meter using 10 kWh a day plus 2 kWh per heating degree day (base 15.5 degC). Outdoor
        // temperatures alternate 5 and 10 degC by day; 2026-01-20 is a cold snap at -5 degC.
        let dir = tempfile::tempdir().unwrap();
        let tz = TimeZone::UTC;
        let mut st =
            Store::open(&crate::energy::store::path_in(dir.path()), 900, "UTC", "t").unwrap();
        let id = st
            .series_id("heat-1", "energy", "kWh", "heat", false, &BTreeMap::new())
            .unwrap();
        let (d0, d1) = (1_764_547_200 / 86400, 1_769_904_000 / 86400); // 2025-12-01 .. 2026-02-01
        let cold = 1_768_867_200 / 86400; // 2026-01-20
        let temp = |d: i64| {
            if d == cold {
                -5.0
            } else if d % 2 == 0 {
                5.0
            } else {
                10.0
            }
        };
        let mut slots = Slots::default();
        let mut temps = BTreeMap::new();
        for d in d0..d1 {
            let kwh = 10.0 + 2.0 * (15.5 - temp(d));
            for k in 0..96 {
                slots.add(d * 96 + k, kwh / 96.0, 0);
            }
            for h in 0..24 {
                temps.insert(d * 24 + h, (temp(d), 1u32));
            }
        }
        st.write(&[(id, &slots)], Mode::Add, &[], &[]).unwrap();
        st.write_temperature(&temps, Mode::Add).unwrap();
        let plain = EnergyConfig::default();
        let raw = toml::from_str("[degree_days]\npoint = \"weather/temperature\"\n").unwrap();
        let (dd, errs) = validate(&raw);
        assert!(errs.is_empty(), "{errs:?}");
        let qq = q("2026-01-20", "2026-01-21", By::Day, "device");
        let r0 = build(&st, &plain, &tz, &qq, None).unwrap();
        let r1 = build(&st, &dd, &tz, &qq, None).unwrap();
        let (a, b) = (
            row(&r0, "2026-01-20", "heat-1"),
            row(&r1, "2026-01-20", "heat-1"),
        );
        assert!((a.consumption - 51.0).abs() < 1e-9);
        assert!(
            (a.baseline.unwrap() - 26.0).abs() < 1e-9,
            "hour-of-week median: {a:?}"
        );
        assert!(
            (b.baseline.unwrap() - 51.0).abs() < 1e-6,
            "weather-normalised: {b:?}"
        );
        assert_eq!(b.hdd, Some(20.5));
        assert_eq!(a.hdd, None);
        assert!(!to_json(&r0).contains("hdd"));
    }

    #[test]
    fn hourly_and_half_hourly_settlement_periods() {
        for period in [1800i64, 3600] {
            let dir = tempfile::tempdir().unwrap();
            let mut st = Store::open(
                &crate::energy::store::path_in(dir.path()),
                period,
                "UTC",
                "t",
            )
            .unwrap();
            let id = st
                .series_id("m", "e", "kWh", "electricity", false, &BTreeMap::new())
                .unwrap();
            // 2 kW flat, and 6 kW in the 10:00 hour of 2026-01-05.
            let ten = (1_767_571_200 + 10 * 3600) / period;
            let mut s = Slots::default();
            for slot in 1_767_571_200 / period..1_767_657_600 / period {
                let kw = if slot >= ten && slot < ten + 3600 / period {
                    6.0
                } else {
                    2.0
                };
                s.add(slot, kw * period as f64 / 3600.0, 0);
            }
            st.write(&[(id, &s)], Mode::Add, &[], &[]).unwrap();
            let r = build(
                &st,
                &EnergyConfig::default(),
                &TimeZone::UTC,
                &q("2026-01-05", "2026-01-06", By::Day, "device"),
                None,
            )
            .unwrap();
            let m = row(&r, "2026-01-05", "m");
            assert!(
                (m.consumption - (23.0 * 2.0 + 6.0)).abs() < 1e-9,
                "{period}: {m:?}"
            );
            assert_eq!(m.peak_kw, Some(6.0), "{period}");
        }
    }

    #[test]
    fn virtual_meter_with_unknown_term_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (st, tz) = fixture(dir.path());
        let mut c = cfg();
        c.virtual_meters[0].terms[1].1 = "pv_exprt".into();
        let e = build(
            &st,
            &c,
            &tz,
            &q("2026-01-12", "2026-01-13", By::Day, "device"),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("building_total") && e.contains("did you mean `pv_export`"),
            "{e}"
        );
    }
}
