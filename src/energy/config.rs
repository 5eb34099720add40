//! The `[energy]` section of the site config: settlement period, baselines, opening-hours calendar, tariffs and
//! virtual meters. Raw serde structs (unknown keys are reported by the site config loader) are validated into
//! [`EnergyConfig`]; every problem is a `(key, message)` pair the loader turns into a diagnostic with a line.
//!
//! ```toml
//! [energy]
//! period = "15m"              # settlement period: 15m, 30m or 60m
//! baseline_weeks = 4          # baseline = median of the same hour-of-week over this many previous weeks
//!
//! [energy.calendar]           # opening hours; everything else (nights, weekends, holidays) is after-hours
//! open = "07:00-19:00"
//! days = ["mon", "tue", "wed", "thu", "fri"]
//! holidays = ["2026-12-25", "2026-12-26"]
//!
//! [[energy.tariffs]]
//! name = "grid-2026"
//! category = "electricity"
//! valid_from = "2026-01-01"   # a new tariff from a date never re-prices the past
//! currency = "EUR"
//! standing_per_day = 1.20     # per meter and day
//! demand_per_kw_month = 8.50  # times the month's demand peak (largest interval average power)
//! rates = [ { price = 0.32, days = ["mon","tue","wed","thu","fri"], from = "07:00", to = "21:00" },
//!           { price = 0.21 } ]   # first match wins; a rate without days/from/to matches any time
//!
//! [[energy.virtual_meters]]
//! name = "building_total"
//! expr = "main - pv_export"
//!
//! [[energy.meters]]            # more meter points per device, with a role (Home Assistant's energy roles)
//! point = "pv-1/energy_total"
//! role = "generation"          # import, export, generation (or pv), gas, water, thermal
//! ```

use jiff::civil::{Date, DateTime, Time, Weekday};
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawEnergy {
    #[serde(default)]
    pub period: Option<String>,
    #[serde(default)]
    pub baseline_weeks: Option<u32>,
    #[serde(default)]
    pub reorder_window: Option<String>,
    #[serde(default)]
    pub baseline_refresh: Option<String>,
    #[serde(default)]
    pub calendar: Option<RawCalendar>,
    #[serde(default)]
    pub tariffs: Vec<RawTariff>,
    #[serde(default)]
    pub virtual_meters: Vec<RawVirtual>,
    #[serde(default)]
    pub degree_days: Option<RawDegreeDays>,
    /// `[[energy.meters]]`: meter points beyond each device's one, with their role.
    #[serde(default)]
    pub meters: Vec<RawMeter>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawMeter {
    /// `device/point` of an energy or volume counter (or a power point).
    pub point: String,
    /// import, export, generation (pv), gas, water, thermal.
    pub role: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawDegreeDays {
    /// `device/point` of an outdoor temperature (degC).
    pub point: String,
    #[serde(default)]
    pub base: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawCalendar {
    #[serde(default)]
    pub open: Option<String>,
    #[serde(default)]
    pub days: Option<Vec<String>>,
    #[serde(default)]
    pub holidays: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawTariff {
    pub name: String,
    #[serde(default)]
    pub category: Option<String>,
    pub valid_from: String,
    #[serde(default)]
    pub valid_to: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub standing_per_day: Option<f64>,
    #[serde(default)]
    pub demand_per_kw_month: Option<f64>,
    #[serde(default)]
    pub rates: Vec<RawRate>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawRate {
    pub price: f64,
    #[serde(default)]
    pub days: Option<Vec<String>>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawVirtual {
    pub name: String,
    pub expr: String,
}

/// Validated `[energy]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyConfig {
    /// Settlement period in seconds (900, 1800 or 3600).
    pub period: i64,
    pub baseline_weeks: u32,
    /// How long the live stage holds readings to put late ones back in order (seconds).
    pub reorder_window: f64,
    /// How often the daemon recomputes the deviation from baseline that `energy:` rules read (from the store).
    pub baseline_refresh: std::time::Duration,
    pub calendar: Calendar,
    pub tariffs: Vec<Tariff>,
    pub virtual_meters: Vec<VirtualMeter>,
    pub degree_days: Option<DegreeDays>,
    /// Meter points with a role, beyond the one each device meters by default.
    pub meters: Vec<MeterRole>,
}

/// One `[[energy.meters]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterRole {
    pub device: String,
    pub point: String,
    pub role: super::Role,
}

/// Weather normalisation of baselines by heating degree days.
#[derive(Debug, Clone, PartialEq)]
pub struct DegreeDays {
    pub device: String,
    pub point: String,
    /// Heating base temperature (degC): a day's HDD = max(0, base - its mean outdoor temperature).
    pub base: f64,
}

impl Default for EnergyConfig {
    fn default() -> Self {
        EnergyConfig {
            period: 900,
            baseline_weeks: 4,
            reorder_window: 60.0,
            baseline_refresh: std::time::Duration::from_secs(300),
            calendar: Calendar::default(),
            tariffs: Vec::new(),
            virtual_meters: Vec::new(),
            degree_days: None,
            meters: Vec::new(),
        }
    }
}

/// Opening hours: what is not open is after-hours.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    pub open_from: Time,
    pub open_to: Time,
    /// Open weekdays, Monday = 0.
    pub days: [bool; 7],
    pub holidays: Vec<Date>,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar {
            open_from: Time::constant(7, 0, 0, 0),
            open_to: Time::constant(19, 0, 0, 0),
            days: [true, true, true, true, true, false, false],
            holidays: Vec::new(),
        }
    }
}

impl Calendar {
    /// Whether a local time is after-hours (night, closed weekday or holiday).
    pub fn after_hours(&self, dt: DateTime) -> bool {
        let wd = dt.weekday().to_monday_zero_offset() as usize;
        if !self.days[wd] || self.holidays.binary_search(&dt.date()).is_ok() {
            return true;
        }
        !in_window(dt.time(), self.open_from, self.open_to)
    }
}

/// `[from, to)`, wrapping past midnight when `to <= from`.
fn in_window(t: Time, from: Time, to: Time) -> bool {
    if from < to {
        t >= from && t < to
    } else {
        t >= from || t < to
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rate {
    pub price: f64,
    pub days: [bool; 7],
    pub from: Time,
    pub to: Time,
    /// No time window: all day.
    pub all_day: bool,
}

impl Rate {
    fn matches(&self, dt: DateTime) -> bool {
        self.days[dt.weekday().to_monday_zero_offset() as usize]
            && (self.all_day || in_window(dt.time(), self.from, self.to))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tariff {
    pub name: String,
    /// Applies to meters of this category (all when `None`).
    pub category: Option<String>,
    pub valid_from: Date,
    /// Exclusive.
    pub valid_to: Option<Date>,
    pub currency: String,
    pub standing_per_day: f64,
    pub demand_per_kw_month: f64,
    pub rates: Vec<Rate>,
}

impl Tariff {
    pub fn valid_on(&self, d: Date) -> bool {
        d >= self.valid_from && self.valid_to.is_none_or(|t| d < t)
    }
    pub fn applies_to(&self, category: &str) -> bool {
        self.category.as_deref().is_none_or(|c| c == category)
    }
    /// Energy price at a local time (the first matching rate).
    pub fn price(&self, dt: DateTime) -> Option<f64> {
        self.rates.iter().find(|r| r.matches(dt)).map(|r| r.price)
    }
}

impl EnergyConfig {
    /// The tariff in force for a category on a local date.
    pub fn tariff(&self, category: &str, d: Date) -> Option<&Tariff> {
        self.tariffs
            .iter()
            .find(|t| t.applies_to(category) && t.valid_on(d))
    }

    pub fn currency(&self) -> Option<&str> {
        self.tariffs.first().map(|t| t.currency.as_str())
    }
}

/// `name = a + b - c`: a meter computed from others, slot by slot.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualMeter {
    pub name: String,
    /// `(sign, device id)`.
    pub terms: Vec<(f64, String)>,
}

/// Parses `main - pv_export`, `sub1 + sub2`. Device ids may contain `-`, so a minus needs spaces around it.
pub fn parse_expr(expr: &str) -> Result<Vec<(f64, String)>, String> {
    let spaced = expr.replace('+', " + ");
    let mut terms = Vec::new();
    let mut op: Option<f64> = None;
    for tok in spaced.split_whitespace() {
        match tok {
            "+" | "-" => {
                if op.is_some() || (terms.is_empty() && tok == "+") {
                    return Err(format!("`{expr}`: misplaced `{tok}`"));
                }
                op = Some(if tok == "+" { 1.0 } else { -1.0 });
            }
            t => {
                if !terms.is_empty() && op.is_none() {
                    return Err(format!(
                        "`{expr}`: missing `+` or `-` before `{t}` (put spaces around `-`)"
                    ));
                }
                if t.contains(['*', '/', '(', ')']) {
                    return Err(format!(
                        "`{expr}`: `{t}` is not a device id (only `a + b - c` is supported)"
                    ));
                }
                terms.push((op.take().unwrap_or(1.0), t.to_string()));
            }
        }
    }
    if terms.is_empty() || op.is_some() {
        return Err(format!("`{expr}`: expected device ids joined by + and -"));
    }
    Ok(terms)
}

fn weekday(s: &str) -> Option<usize> {
    Some(match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => 0,
        "tue" | "tuesday" => 1,
        "wed" | "wednesday" => 2,
        "thu" | "thursday" => 3,
        "fri" | "friday" => 4,
        "sat" | "saturday" => 5,
        "sun" | "sunday" => 6,
        _ => return None,
    })
}

fn days(key: &str, v: &Option<Vec<String>>, errs: &mut Vec<(String, String)>) -> [bool; 7] {
    match v {
        None => [true; 7],
        Some(list) => {
            let mut d = [false; 7];
            for s in list {
                match weekday(s) {
                    Some(i) => d[i] = true,
                    None => errs.push((
                        key.to_string(),
                        format!("`{s}` is not a weekday (mon, tue, wed, thu, fri, sat, sun)"),
                    )),
                }
            }
            d
        }
    }
}

fn time(key: &str, s: &str, errs: &mut Vec<(String, String)>) -> Time {
    let fixed = if s == "24:00" {
        "23:59:59.999999999"
    } else {
        s
    };
    fixed.parse::<Time>().unwrap_or_else(|_| {
        errs.push((
            key.to_string(),
            format!("`{s}` is not a time of day like 07:00"),
        ));
        Time::midnight()
    })
}

fn date(key: &str, s: &str, errs: &mut Vec<(String, String)>) -> Date {
    s.parse::<Date>().unwrap_or_else(|_| {
        errs.push((
            key.to_string(),
            format!("`{s}` is not a date like 2026-01-01"),
        ));
        Date::constant(1970, 1, 1)
    })
}

/// Validates `[energy]`; errors are `(key, message)`.
/// The largest price, standing or demand charge a tariff may give: finite, and far above any real tariff, so
/// that sums over a year of intervals stay finite (`inf` or `1e308` would make every report `inf` or NaN).
pub const MAX_PRICE: f64 = 1e6;

pub fn validate(raw: &RawEnergy) -> (EnergyConfig, Vec<(String, String)>) {
    let mut errs = Vec::new();
    let mut c = EnergyConfig::default();
    if let Some(p) = &raw.period {
        match crate::util::parse_duration(p).map(|d| d.as_secs()) {
            Ok(s @ (900 | 1800 | 3600)) => c.period = s as i64,
            Ok(_) => errs.push((
                "energy.period".into(),
                format!("`{p}`: the settlement period must be 15m, 30m or 60m"),
            )),
            Err(e) => errs.push(("energy.period".into(), e)),
        }
    }
    if let Some(w) = raw.baseline_weeks {
        if !(1..=52).contains(&w) {
            errs.push((
                "energy.baseline_weeks".into(),
                "must be between 1 and 52".into(),
            ));
        }
        c.baseline_weeks = w.clamp(1, 52);
    }
    if let Some(w) = &raw.reorder_window {
        match crate::util::parse_duration(w) {
            Ok(d) => c.reorder_window = d.as_secs_f64(),
            Err(e) => errs.push(("energy.reorder_window".into(), e)),
        }
    }
    if let Some(r) = &raw.baseline_refresh {
        match crate::util::parse_duration(r) {
            Ok(d)
                if d >= std::time::Duration::from_secs(1)
                    && d <= std::time::Duration::from_secs(86_400) =>
            {
                c.baseline_refresh = d
            }
            Ok(_) => errs.push((
                "energy.baseline_refresh".into(),
                format!("`{r}`: must be between 1s and 24h"),
            )),
            Err(e) => errs.push(("energy.baseline_refresh".into(), e)),
        }
    }
    if let Some(cal) = &raw.calendar {
        if let Some(open) = &cal.open {
            match open.split_once('-') {
                Some((a, b)) => {
                    c.calendar.open_from = time("energy.calendar.open", a.trim(), &mut errs);
                    c.calendar.open_to = time("energy.calendar.open", b.trim(), &mut errs);
                }
                None => errs.push((
                    "energy.calendar.open".into(),
                    format!("`{open}`: expected opening hours like 07:00-19:00"),
                )),
            }
        }
        if cal.days.is_some() {
            c.calendar.days = days("energy.calendar.days", &cal.days, &mut errs);
        }
        c.calendar.holidays = cal
            .holidays
            .iter()
            .map(|h| date("energy.calendar.holidays", h, &mut errs))
            .collect();
        c.calendar.holidays.sort();
    }
    tariffs(&raw.tariffs, &mut c, &mut errs);
    virtual_meters(raw, &mut c, &mut errs);
    degree_days(raw, &mut c, &mut errs);
    meters(raw, &mut c, &mut errs);
    (c, errs)
}

/// `[[energy.tariffs]]`: each valid, and no two of the same category in force at once.
fn tariffs(raw: &[RawTariff], c: &mut EnergyConfig, errs: &mut Vec<(String, String)>) {
    for (i, t) in raw.iter().enumerate() {
        let k = |f: &str| format!("energy.tariffs[{i}].{f}");
        let tariff = tariff(i, t, errs);
        for (j, o) in c.tariffs.iter().enumerate() {
            let same_cat =
                o.category.is_none() || tariff.category.is_none() || o.category == tariff.category;
            let overlap = o.valid_to.is_none_or(|e| tariff.valid_from < e)
                && tariff.valid_to.is_none_or(|e| o.valid_from < e);
            if same_cat && overlap {
                errs.push((
                    k("valid_from"),
                    format!(
                        "tariff `{}` overlaps tariff `{}` (energy.tariffs[{j}]) for the same category; \
                         end the older one with valid_to",
                        tariff.name, o.name
                    ),
                ));
            }
        }
        c.tariffs.push(tariff);
    }
}

/// One `[[energy.tariffs]]` entry, validated (its overlap with the others is checked by [`tariffs`]).
fn tariff(i: usize, t: &RawTariff, errs: &mut Vec<(String, String)>) -> Tariff {
    let k = |f: &str| format!("energy.tariffs[{i}].{f}");
    if let Some(cat) = &t.category {
        if crate::catalog::Category::parse(cat).is_none() {
            errs.push((
                k("category"),
                crate::catalog::units::parse_word(
                    "category",
                    cat,
                    crate::catalog::Category::parse,
                    crate::catalog::Category::ALL,
                )
                .err()
                .unwrap_or_default(),
            ));
        }
    }
    let valid_from = date(&k("valid_from"), &t.valid_from, errs);
    let valid_to = t.valid_to.as_ref().map(|d| date(&k("valid_to"), d, errs));
    if valid_to.is_some_and(|to| to <= valid_from) {
        errs.push((k("valid_to"), "must be after valid_from".into()));
    }
    let mut rates = Vec::new();
    for (j, r) in t.rates.iter().enumerate() {
        let rk = format!("energy.tariffs[{i}].rates[{j}]");
        if !(0.0..=MAX_PRICE).contains(&r.price) {
            errs.push((
                format!("{rk}.price"),
                format!("must be a price from 0 to {MAX_PRICE}"),
            ));
        }
        let all_day = r.from.is_none() && r.to.is_none();
        if r.from.is_some() != r.to.is_some() {
            errs.push((rk.clone(), "give both `from` and `to`, or neither".into()));
        }
        rates.push(Rate {
            price: r.price,
            days: days(&format!("{rk}.days"), &r.days, errs),
            from: r
                .from
                .as_deref()
                .map(|s| time(&format!("{rk}.from"), s, errs))
                .unwrap_or(Time::midnight()),
            to: r
                .to
                .as_deref()
                .map(|s| time(&format!("{rk}.to"), s, errs))
                .unwrap_or(Time::midnight()),
            all_day,
        });
    }
    for (key, v) in [
        ("standing_per_day", t.standing_per_day),
        ("demand_per_kw_month", t.demand_per_kw_month),
    ] {
        if v.is_some_and(|v| !(0.0..=MAX_PRICE).contains(&v)) {
            errs.push((k(key), format!("must be a price from 0 to {MAX_PRICE}")));
        }
    }
    let tariff = Tariff {
        name: t.name.clone(),
        category: t.category.clone(),
        valid_from,
        valid_to,
        currency: t.currency.clone().unwrap_or_else(|| "EUR".into()),
        standing_per_day: t.standing_per_day.unwrap_or(0.0),
        demand_per_kw_month: t.demand_per_kw_month.unwrap_or(0.0),
        rates,
    };
    if tariff.rates.is_empty() {
        errs.push((k("rates"), "a tariff needs at least one rate".into()));
    } else if let Some(gap) = unpriced(&tariff) {
        errs.push((
            k("rates"),
            format!("no rate covers {gap}; add a last rate without days/from/to as the default"),
        ));
    }
    tariff
}

/// `[[energy.virtual_meters]]`: unique names, parsable expressions.
fn virtual_meters(raw: &RawEnergy, c: &mut EnergyConfig, errs: &mut Vec<(String, String)>) {
    let mut names = std::collections::HashSet::new();
    for (i, v) in raw.virtual_meters.iter().enumerate() {
        if !names.insert(v.name.clone()) {
            errs.push((
                format!("energy.virtual_meters[{i}].name"),
                format!("virtual meter `{}` is defined twice", v.name),
            ));
        }
        match parse_expr(&v.expr) {
            Ok(terms) => c.virtual_meters.push(VirtualMeter {
                name: v.name.clone(),
                terms,
            }),
            Err(e) => errs.push((format!("energy.virtual_meters[{i}].expr"), e)),
        }
    }
}

/// `[[energy.meters]]`: `device/point` and a role, each point once.
fn meters(raw: &RawEnergy, c: &mut EnergyConfig, errs: &mut Vec<(String, String)>) {
    for (i, m) in raw.meters.iter().enumerate() {
        let role = super::Role::parse(&m.role);
        if role.is_none() {
            errs.push((
                format!("energy.meters[{i}].role"),
                format!(
                    "unknown role `{}`; expected one of: {}",
                    m.role,
                    super::Role::NAMES.join(", ")
                ),
            ));
        }
        match m.point.split_once('/') {
            Some((d, p)) if !d.is_empty() && !p.is_empty() && !p.contains('/') => {
                if c.meters.iter().any(|x| x.device == d && x.point == p) {
                    errs.push((
                        format!("energy.meters[{i}].point"),
                        format!("`{}` is listed twice", m.point),
                    ));
                } else if let Some(role) = role {
                    c.meters.push(MeterRole {
                        device: d.to_string(),
                        point: p.to_string(),
                        role,
                    });
                }
            }
            _ => errs.push((
                format!("energy.meters[{i}].point"),
                format!(
                    "`{}`: expected `device/point` of a meter point, e.g. `pv-1/energy_export`",
                    m.point
                ),
            )),
        }
    }
}

/// `[energy.degree_days]`: an outdoor temperature point and a heating base.
fn degree_days(raw: &RawEnergy, c: &mut EnergyConfig, errs: &mut Vec<(String, String)>) {
    if let Some(dd) = &raw.degree_days {
        match dd.point.split_once('/') {
            Some((d, p)) if !d.is_empty() && !p.is_empty() && !p.contains('/') => {
                let base = dd.base.unwrap_or(15.5);
                if !(-30.0..=30.0).contains(&base) {
                    errs.push((
                        "energy.degree_days.base".into(),
                        "a heating base temperature between -30 and 30 degC".into(),
                    ));
                }
                c.degree_days = Some(DegreeDays {
                    device: d.to_string(),
                    point: p.to_string(),
                    base,
                });
            }
            _ => errs.push((
                "energy.degree_days.point".into(),
                format!(
                    "`{}`: expected `device/point` of an outdoor temperature, e.g. `weather-1/temperature`",
                    dd.point
                ),
            )),
        }
    }
}

/// The first quarter-hour of a week no rate prices, if any.
fn unpriced(t: &Tariff) -> Option<String> {
    // 2026-01-05 is a Monday.
    let monday = DateTime::constant(2026, 1, 5, 0, 0, 0, 0);
    for q in 0..7 * 96 {
        let dt = monday
            .checked_add(jiff::SignedDuration::from_mins(15 * q))
            .ok()?;
        if t.price(dt).is_none() {
            let wd = match dt.weekday() {
                Weekday::Monday => "mon",
                Weekday::Tuesday => "tue",
                Weekday::Wednesday => "wed",
                Weekday::Thursday => "thu",
                Weekday::Friday => "fri",
                Weekday::Saturday => "sat",
                Weekday::Sunday => "sun",
            };
            return Some(format!("{wd} {}", dt.time().strftime("%H:%M")));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawEnergy {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn tariff_windows_validity_and_boundaries() {
        let (c, errs) = validate(&raw(r#"
            [[tariffs]]
            name = "old"
            valid_from = "2025-01-01"
            valid_to = "2026-03-01"
            rates = [{ price = 0.30, days = ["mon","tue","wed","thu","fri"], from = "07:00", to = "21:00" }, { price = 0.20 }]
            [[tariffs]]
            name = "new"
            valid_from = "2026-03-01"
            rates = [{ price = 0.40, from = "22:00", to = "06:00" }, { price = 0.35 }]
        "#));
        assert!(errs.is_empty(), "{errs:?}");
        let p = |d: &str| {
            let dt: DateTime = d.parse().unwrap();
            c.tariff("electricity", dt.date())
                .unwrap()
                .price(dt)
                .unwrap()
        };
        assert_eq!(p("2026-02-27T06:59:59"), 0.20); // Friday before peak
        assert_eq!(p("2026-02-27T07:00:00"), 0.30); // peak starts inclusive
        assert_eq!(p("2026-02-27T20:59:59"), 0.30);
        assert_eq!(p("2026-02-27T21:00:00"), 0.20); // peak ends exclusive
        assert_eq!(p("2026-02-28T12:00:00"), 0.20); // Saturday
        assert_eq!(p("2026-02-28T23:59:59"), 0.20); // last second of the old tariff
        assert_eq!(p("2026-03-01T00:00:00"), 0.40); // new tariff, night window across midnight
        assert_eq!(p("2026-03-01T06:00:00"), 0.35);
        assert_eq!(p("2026-03-01T22:00:00"), 0.40);
        assert!(
            c.tariff("electricity", "2024-12-31".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn baseline_refresh_defaults_to_five_minutes_and_is_validated() {
        let (c, errs) = validate(&raw(""));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(c.baseline_refresh, std::time::Duration::from_secs(300));
        let (c, errs) = validate(&raw(r#"baseline_refresh = "30s""#));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(c.baseline_refresh, std::time::Duration::from_secs(30));
        for bad in ["often", "0s", "2d"] {
            let (_, errs) = validate(&raw(&format!(r#"baseline_refresh = "{bad}""#)));
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert_eq!(errs[0].0, "energy.baseline_refresh");
            assert!(errs[0].1.contains(bad), "{errs:?}");
        }
    }

    #[test]
    fn tariff_prices_must_be_finite_and_sane() {
        for (field, key) in [
            (
                "standing_per_day = inf",
                "energy.tariffs[0].standing_per_day",
            ),
            (
                "standing_per_day = nan",
                "energy.tariffs[0].standing_per_day",
            ),
            (
                "demand_per_kw_month = 1e308",
                "energy.tariffs[0].demand_per_kw_month",
            ),
            (
                "demand_per_kw_month = -1.0",
                "energy.tariffs[0].demand_per_kw_month",
            ),
        ] {
            let (_, errs) = validate(&raw(&format!(
                "[[tariffs]]\nname = \"t\"\nvalid_from = \"2026-01-01\"\n{field}\nrates = [{{ price = 0.2 }}]"
            )));
            assert_eq!(errs.len(), 1, "{field}: {errs:?}");
            assert_eq!(errs[0].0, key, "{errs:?}");
        }
        let (_, errs) = validate(&raw(
            "[[tariffs]]\nname = \"t\"\nvalid_from = \"2026-01-01\"\nrates = [{ price = 1e308 }]",
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "energy.tariffs[0].rates[0].price");
        let (_, errs) = validate(&raw(
            "[[tariffs]]\nname = \"t\"\nvalid_from = \"2026-01-01\"\nstanding_per_day = 1.2\nrates = [{ price = 0.3 }]",
        ));
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn bad_tariffs_are_explained() {
        let (_, errs) = validate(&raw(r#"
            period = "20m"
            [[tariffs]]
            name = "a"
            valid_from = "2026-01-01"
            rates = [{ price = 0.3, days = ["mon"], from = "07:00", to = "21:00" }]
            [[tariffs]]
            name = "b"
            valid_from = "2026-06-01"
            rates = [{ price = 0.3, days = ["mnday"] }]
            [[virtual_meters]]
            name = "x"
            expr = "a * 2"
        "#));
        let text = format!("{errs:?}");
        assert!(text.contains("15m, 30m or 60m"), "{text}");
        assert!(text.contains("no rate covers mon 00:00"), "{text}");
        assert!(text.contains("overlaps tariff `a`"), "{text}");
        assert!(text.contains("`mnday` is not a weekday"), "{text}");
        assert!(text.contains("energy.virtual_meters[0].expr"), "{text}");
    }

    #[test]
    fn virtual_meter_expressions() {
        assert_eq!(
            parse_expr("main - pv_export").unwrap(),
            vec![(1.0, "main".into()), (-1.0, "pv_export".into())]
        );
        assert_eq!(
            parse_expr("sub1+sub2").unwrap(),
            vec![(1.0, "sub1".into()), (1.0, "sub2".into())]
        );
        assert_eq!(parse_expr("meter-1 + meter-2").unwrap()[1].1, "meter-2");
        assert!(parse_expr("a +").is_err());
        assert!(parse_expr("a b").is_err());
        assert!(parse_expr("").is_err());
    }

    #[test]
    fn calendar_after_hours() {
        let (c, errs) = validate(&raw(r#"
            [calendar]
            open = "07:00-19:00"
            holidays = ["2026-12-25"]
        "#));
        assert!(errs.is_empty(), "{errs:?}");
        let ah = |s: &str| c.calendar.after_hours(s.parse().unwrap());
        assert!(!ah("2026-01-05T07:00")); // Monday opening
        assert!(ah("2026-01-05T19:00"));
        assert!(ah("2026-01-05T06:59"));
        assert!(ah("2026-01-10T12:00")); // Saturday
        assert!(ah("2026-12-25T12:00")); // holiday (a Friday)
    }
}
