//! The fold: each meter's slots (real or virtual) into per group and period accumulators, then the report rows
//! (cost, baseline, peaks, degree days) and what the HTML report draws.

use super::baseline::Baseline;
use super::clock::Clock;
use super::{AfterHours, By, Group, Meta, Query, Report, Row};
use crate::energy::config::EnergyConfig;
use crate::energy::counter::{DERIVED, ESTIMATED};
use crate::energy::store::PRESENT;
use std::collections::{BTreeMap, HashMap};

/// One meter (real or virtual) as the fold sees it.
pub(super) struct Meter<'a> {
    pub(super) device: &'a str,
    pub(super) unit: &'a str,
    pub(super) category: &'a str,
    pub(super) location: Option<&'a BTreeMap<String, String>>,
    pub(super) vals: &'a [f64],
    pub(super) flags: &'a [u8],
    pub(super) real: bool,
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
    /// Export and generation meters of the group (roles beside consumption).
    export: f64,
    generation: f64,
    has_export: bool,
    has_generation: bool,
}

/// Energy price and standing charge per slot of one category.
type Prices = std::rc::Rc<(Vec<f64>, Vec<f64>)>;

/// The rows and the HTML extras being accumulated, one meter at a time.
pub(super) struct Fold<'c> {
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
    /// Per unit: site export and generation.
    side_totals: BTreeMap<String, (f64, f64)>,
}

impl<'c> Fold<'c> {
    /// `hdd`: heating degree days per local date of the clock (empty without `[energy.degree_days]`).
    pub(super) fn new(
        c: &'c Clock,
        cfg: &'c EnergyConfig,
        q: &'c Query,
        hdd: Vec<Option<f64>>,
    ) -> Self {
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
            hdd,
            side_totals: BTreeMap::new(),
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

    pub(super) fn meter(&mut self, m: &Meter) {
        let c = self.c;
        if m.location.is_none() && self.q.group != Group::Device {
            return;
        }
        let g = self.group_of(m);
        let kwh = m.unit == "kWh";
        let prices = self.prices(m.category);
        let (price, standing) = (&prices.0, &prices.1);
        let sph = (3600 / c.period) as usize;
        let mut baseline = Baseline::new(
            c,
            m.vals,
            m.flags,
            self.cfg.baseline_weeks as usize,
            &self.hdd,
        );
        let mut ah = AfterHours {
            device: m.device.to_string(),
            unit: m.unit.to_string(),
            after_hours: 0.0,
            total: 0.0,
            base_load_kw: None,
        };
        let mut ah_slots = 0u32;
        let mut month_peak: HashMap<u32, f64> = HashMap::new();
        for i in c.r0..c.n {
            let pi = c.period_idx[i] as usize;
            // Baseline once per hour (at its first slot).
            if (i % sph == 0) || i == c.r0 {
                let med = baseline.hour(i);
                self.add_baseline(g, pi, c.day_idx[i] as usize, m.real && kwh, med);
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
                self.add_kwh(g, pi, i, v, m.real, &mut month_peak);
            }
        }
        self.add_demand_charges(m, g, month_peak);
        if ah_slots > 0 {
            ah.base_load_kw =
                kwh.then(|| ah.after_hours / (ah_slots as f64 * c.period as f64 / 3600.0));
        }
        if m.real {
            self.add_totals(m, price, standing, ah);
        }
    }

    /// A meter whose role is not consumption (export, generation): its slots into the group's `export` or
    /// `generation`, never into consumption, cost, baseline or peaks.
    pub(super) fn side(&mut self, m: &Meter, role: crate::energy::Role) {
        let c = self.c;
        if m.location.is_none() && self.q.group != Group::Device {
            return;
        }
        let g = self.group_of(m);
        let mut total = 0.0;
        for i in c.r0..c.n {
            let fl = m.flags[i];
            if fl & PRESENT == 0 {
                continue;
            }
            let v = m.vals[i];
            let a = &mut self.acc[g][c.period_idx[i] as usize];
            a.present = true;
            a.estimated |= fl & ESTIMATED != 0;
            a.derived |= fl & DERIVED != 0;
            if role == crate::energy::Role::Export {
                a.export += v;
                a.has_export = true;
            } else {
                a.generation += v;
                a.has_generation = true;
            }
            total += v;
        }
        if m.real {
            let t = self.side_totals.entry(m.unit.to_string()).or_default();
            if role == crate::energy::Role::Export {
                t.0 += total;
            } else {
                t.1 += total;
            }
        }
    }

    /// One hour's baseline into its period (and, for real kWh meters, its day of the site chart).
    fn add_baseline(&mut self, g: usize, pi: usize, di: usize, site: bool, med: Option<f64>) {
        let a = &mut self.acc[g][pi];
        a.hours += 1;
        if site {
            self.day_base[di].2 += 1;
        }
        if let Some(med) = med {
            a.baseline += med;
            a.baseline_hours += 1;
            if site {
                self.day_base[di].0 += med;
                self.day_base[di].1 += 1;
            }
        }
    }

    /// A kWh slot's demand: the group's peak (coincident for several meters), the meter's monthly peak, and for
    /// real meters the site's slot sum, daily total and heat map.
    fn add_kwh(
        &mut self,
        g: usize,
        pi: usize,
        i: usize,
        v: f64,
        real: bool,
        month_peak: &mut HashMap<u32, f64>,
    ) {
        let c = self.c;
        let kw = v * 3600.0 / c.period as f64;
        if self.q.group == Group::Device {
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
        if real {
            self.site_slots[i] += v;
            let di = c.day_idx[i] as usize;
            self.day_kwh[di] += v;
            self.heat[di][c.local[i].hour() as usize] += v;
        }
    }

    /// Demand charges per meter and month.
    fn add_demand_charges(&mut self, m: &Meter, g: usize, month_peak: HashMap<u32, f64>) {
        for (mi, kw) in month_peak {
            let month = self.c.months[mi as usize];
            if let Some(t) = self.cfg.tariff(m.category, month) {
                let charge = kw * t.demand_per_kw_month;
                if m.real {
                    // Totals count real meters only (a virtual meter's terms are already in them).
                    self.demand += charge;
                }
                *self.demand_by_month.entry((g, mi)).or_insert(0.0) += charge;
            }
        }
    }

    /// A real meter's share of the site totals per unit, and its after-hours line.
    fn add_totals(&mut self, m: &Meter, price: &[f64], standing: &[f64], ah: AfterHours) {
        let c = self.c;
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

    pub(super) fn finish(mut self) -> Report {
        self.coincident_peaks();
        let rows = self.rows();
        let meta = self.meta();
        Report { rows, meta }
    }

    /// Coincident peaks of multi-meter groups.
    fn coincident_peaks(&mut self) {
        let c = self.c;
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
    }

    /// Heating degree days per period (none by hour).
    fn period_hdd(&self) -> Vec<Option<f64>> {
        let c = self.c;
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
        period_hdd
    }

    /// The rows: by period, then by group name and unit.
    fn rows(&self) -> Vec<Row> {
        let c = self.c;
        let mut label_month = vec![0u32; c.labels.len()];
        for i in c.r0..c.n {
            label_month[c.period_idx[i] as usize] = c.month_idx[i];
        }
        let period_hdd = self.period_hdd();
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
                    export: a.has_export.then(|| round(a.export, 6)),
                    generation: a.has_generation.then(|| round(a.generation, 6)),
                    net: a.has_export.then(|| round(a.consumption - a.export, 6)),
                });
            }
        }
        rows
    }

    /// What the HTML report draws besides the rows: totals, daily chart, heat map, after-hours, monthly peaks.
    fn meta(mut self) -> Meta {
        let c = self.c;
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
        meta.side_totals = std::mem::take(&mut self.side_totals);
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
        meta
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}
