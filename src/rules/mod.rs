//! Rules: `rules/*.yaml` files (`schema: 1`) that say when a point's readings become an alarm, and what work
//! order the alarm opens.
//!
//! Loading goes raw → validated like the profiles: serde-saphyr fills raw structs with line numbers, then
//! [`load_dirs`] validates each rule against the site's profiles (unknown profile or point, a unit of another
//! dimension, a counter condition on a gauge) and lists every problem with file and line. Nothing past this
//! module sees raw YAML. The engine ([`engine::Engine`]) evaluates the validated [`Rule`]s; it is pure
//! synchronous code, driven by the pipeline ([`stage::RulesStage`]) live and by `caretaker backtest` on history.

pub mod alarm;
pub mod backtest;
pub mod engine;
pub mod schedule;
pub mod stage;

pub use alarm::{Resolve, Severity};

use crate::catalog::profile::yaml_error;
use crate::catalog::{Category, Kind, Profile, Profiles, Unit};
use crate::diag::Diagnostic;
use crate::util::{did_you_mean, parse_duration};
use schedule::Schedule;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The only rule schema this build reads.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    schema: Spanned<u32>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    applies_to: Spanned<RawAppliesTo>,
    #[serde(default)]
    point: Option<Spanned<String>>,
    #[serde(default)]
    unit: Option<Spanned<String>>,
    when: Spanned<RawCondition>,
    #[serde(default)]
    clear: Option<Spanned<RawCondition>>,
    severity: Spanned<String>,
    #[serde(default)]
    schedule: Option<Spanned<RawSchedule>>,
    #[serde(default)]
    work_order: Option<Spanned<RawWorkOrder>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppliesTo {
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    location: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCondition {
    #[serde(default)]
    above: Option<f64>,
    #[serde(default)]
    below: Option<f64>,
    #[serde(default)]
    outside: Option<[f64; 2]>,
    #[serde(default)]
    inside: Option<[f64; 2]>,
    #[serde(default)]
    rises_by: Option<f64>,
    #[serde(default)]
    falls_by: Option<f64>,
    #[serde(default)]
    within: Option<String>,
    #[serde(default)]
    cycles: Option<u32>,
    #[serde(default)]
    stale: Option<String>,
    #[serde(default)]
    flatline: Option<String>,
    #[serde(default)]
    tolerance: Option<f64>,
    #[serde(default)]
    offline: Option<bool>,
    #[serde(default)]
    counter_stalled: Option<String>,
    #[serde(default)]
    anomaly: Option<RawScore>,
    #[serde(default)]
    equipment_anomaly: Option<RawScore>,
    #[serde(default)]
    forecast: Option<RawForecast>,
    #[serde(default)]
    energy: Option<RawEnergy>,
    #[serde(default, rename = "for")]
    hold: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScore {
    score_above: f64,
    /// `anomaly: { score_above: 0.9, for: 15m }`: the hold may sit inside the condition (the shape the issue
    /// gives) or beside it in `when`.
    #[serde(default, rename = "for")]
    hold: Option<String>,
    /// `equipment_anomaly: { profile: generic-ahu, ... }`: the equipment model's profile (narrows applies_to).
    #[serde(default)]
    profile: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForecast {
    above: f64,
    within: String,
    #[serde(default, rename = "for")]
    hold: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnergy {
    /// Percent: `30%` or `30`.
    above_baseline_by: Percent,
    #[serde(default, rename = "for")]
    hold: Option<String>,
}

/// A percentage written `30%` or as a plain number (`30`).
#[derive(Debug, Clone, Copy)]
struct Percent(f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(v) => Ok(Percent(v)),
            Raw::Text(t) => t
                .trim()
                .trim_end_matches('%')
                .trim()
                .parse::<f64>()
                .map(Percent)
                .map_err(|_| {
                    serde::de::Error::custom(format!("`{t}` is not a percentage like `30%`"))
                }),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default)]
    days: Option<String>,
    #[serde(default)]
    hours: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkOrder {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    due_within: Option<String>,
    #[serde(default)]
    procedure: Option<String>,
    #[serde(default)]
    resolve: Option<String>,
}

/// A score or value computed outside the rules engine (anomaly detectors, forecasts, energy baselines).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SignalKind {
    /// Anomaly score of one point (0 normal .. 1 certainly anomalous).
    Anomaly,
    /// Anomaly score of the whole device (equipment model).
    EquipmentAnomaly,
    /// The highest forecast value of the point within the horizon (ns).
    Forecast { within_ns: i64 },
    /// Consumption above the expected baseline, in percent.
    EnergyAboveBaseline,
}

/// One test on a point's readings (or a device's status).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    Above(f64),
    Below(f64),
    /// Below the first bound or above the second.
    Outside(f64, f64),
    /// Between the bounds, inclusive (a natural `clear` for `outside`).
    Inside(f64, f64),
    /// The value rose by at least `by` above the lowest value of the last `within_ns`.
    RisesBy {
        by: f64,
        within_ns: i64,
    },
    /// The value fell by at least `by` below the highest value of the last `within_ns`.
    FallsBy {
        by: f64,
        within_ns: i64,
    },
    /// More than `max` starts (the value going from off, <= 0.5, to on) within `within_ns`: short cycling.
    Cycles {
        max: u32,
        within_ns: i64,
    },
    /// No good reading for this long (also for devices that never reported since start).
    Stale {
        after_ns: i64,
    },
    /// The value stayed within `tolerance` of itself for this long (a stuck sensor).
    Flatline {
        after_ns: i64,
        tolerance: f64,
    },
    /// The device is unreachable (reported by its source through `Engine::device_status`).
    Offline,
    /// A counter did not increase for this long.
    CounterStalled {
        after_ns: i64,
    },
    /// A value supplied by a [`engine::Signal`] provider is above the threshold.
    Signal {
        kind: SignalKind,
        above: f64,
    },
}

impl Condition {
    /// Conditions about values, whose thresholds are in the point's unit.
    fn has_thresholds(&self) -> bool {
        matches!(
            self,
            Self::Above(_)
                | Self::Below(_)
                | Self::Outside(..)
                | Self::Inside(..)
                | Self::RisesBy { .. }
                | Self::FallsBy { .. }
        )
    }

    /// The condition's keyword in rule files.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Above(_) => "above",
            Self::Below(_) => "below",
            Self::Outside(..) => "outside",
            Self::Inside(..) => "inside",
            Self::RisesBy { .. } => "rises_by",
            Self::FallsBy { .. } => "falls_by",
            Self::Cycles { .. } => "cycles",
            Self::Stale { .. } => "stale",
            Self::Flatline { .. } => "flatline",
            Self::Offline => "offline",
            Self::CounterStalled { .. } => "counter_stalled",
            Self::Signal { .. } => "signal",
        }
    }

    /// The same condition with thresholds converted by `v * factor + offset` (deltas by `factor` only).
    pub fn convert(self, factor: f64, offset: f64) -> Condition {
        let c = |v: f64| v * factor + offset;
        match self {
            Self::Above(v) => Self::Above(c(v)),
            Self::Below(v) => Self::Below(c(v)),
            Self::Outside(a, b) => Self::Outside(c(a), c(b)),
            Self::Inside(a, b) => Self::Inside(c(a), c(b)),
            Self::RisesBy { by, within_ns } => Self::RisesBy {
                by: by * factor,
                within_ns,
            },
            Self::FallsBy { by, within_ns } => Self::FallsBy {
                by: by * factor,
                within_ns,
            },
            other => other,
        }
    }
}

/// A condition and how long it must hold, on reading timestamps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trigger {
    pub cond: Condition,
    pub hold_ns: i64,
}

/// What the work order says.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkOrderSpec {
    /// Template: `{device}`, `{point}`, `{value}`, `{unit}`, `{rule}`, `{site}`, `{severity}`, location tags.
    pub title: String,
    pub team: Option<String>,
    pub due_within: Option<std::time::Duration>,
    pub procedure: Option<String>,
    pub resolve: Resolve,
}

/// Which devices a rule applies to; every given key must match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AppliesTo {
    pub profile: Option<String>,
    pub device: Option<String>,
    pub category: Option<Category>,
    pub location: BTreeMap<String, String>,
}

impl AppliesTo {
    pub fn matches(
        &self,
        device: &str,
        profile: &Profile,
        location: &BTreeMap<String, String>,
    ) -> bool {
        self.profile.as_ref().is_none_or(|p| *p == profile.name)
            && self.device.as_ref().is_none_or(|d| d == device)
            && self.category.is_none_or(|c| c == profile.category)
            && self
                .location
                .iter()
                .all(|(k, v)| location.get(k).is_some_and(|lv| lv == v))
    }
    fn matches_profile(&self, profile: &Profile) -> bool {
        self.profile.as_ref().is_none_or(|p| *p == profile.name)
            && self.category.is_none_or(|c| c == profile.category)
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    pub applies_to: AppliesTo,
    /// The point the rule watches; `None` only for device-level conditions (`offline`, `equipment_anomaly`).
    pub point: Option<String>,
    /// The unit the thresholds are written in; `None` = the point's own unit.
    pub unit: Option<Unit>,
    pub when: Trigger,
    /// `None`: the alarm clears as soon as `when` stops holding.
    pub clear: Option<Trigger>,
    pub severity: Severity,
    pub schedule: Option<Schedule>,
    pub work_order: WorkOrderSpec,
    pub file: PathBuf,
    pub line: u64,
}

/// Every rule of a site, in file order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

impl RuleSet {
    pub fn len(&self) -> usize {
        self.rules.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
    pub fn by_name(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// Rules that no profile of the site can meet (selected by category or location, the point in no profile).
    pub fn dormant<'a>(&'a self, profiles: &'a Profiles) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules.iter().filter(move |r| {
            !profiles.values().any(|p| {
                r.applies_to.matches_profile(p)
                    && r.point
                        .as_ref()
                        .is_none_or(|pt| p.point_index(pt).is_some())
            })
        })
    }
}

pub use crate::catalog::units::unit_conversion;

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn line_of<T>(s: &Spanned<T>) -> Option<u64> {
    Some(s.referenced.line())
}

/// Site facts rules are checked against.
pub struct Context<'a> {
    pub profiles: &'a Profiles,
    /// Declared devices: id → profile name.
    pub devices: &'a BTreeMap<String, String>,
    /// Site time zone (schedules default to it).
    pub timezone: Option<&'a str>,
}

struct Errs<'a> {
    file: &'a Path,
    list: Vec<Diagnostic>,
}

impl Errs<'_> {
    fn push(&mut self, line: Option<u64>, key: String, msg: impl Into<String>) {
        self.list.push(Diagnostic::new(self.file, line, key, msg));
    }
}

fn condition(
    e: &mut Errs<'_>,
    line: Option<u64>,
    key: &str,
    c: &RawCondition,
    is_clear: bool,
) -> Option<Trigger> {
    let mut found: Vec<(&str, Condition)> = Vec::new();
    let dur = |e: &mut Errs<'_>, name: &str, s: &str| -> i64 {
        match parse_duration(s) {
            Ok(d) if !d.is_zero() => d.as_nanos() as i64,
            Ok(_) => {
                e.push(line, format!("{key}.{name}"), "must be longer than 0s");
                0
            }
            Err(m) => {
                e.push(line, format!("{key}.{name}"), m);
                0
            }
        }
    };
    if let Some(v) = c.above {
        found.push(("above", Condition::Above(v)));
    }
    if let Some(v) = c.below {
        found.push(("below", Condition::Below(v)));
    }
    for (name, b, outside) in [("outside", c.outside, true), ("inside", c.inside, false)] {
        if let Some([lo, hi]) = b {
            if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
                e.push(
                    line,
                    format!("{key}.{name}"),
                    format!("[{lo}, {hi}]: the first bound must be below the second"),
                );
            }
            found.push((
                name,
                if outside {
                    Condition::Outside(lo, hi)
                } else {
                    Condition::Inside(lo, hi)
                },
            ));
        }
    }
    for (name, by, rises) in [
        ("rises_by", c.rises_by, true),
        ("falls_by", c.falls_by, false),
    ] {
        if let Some(by) = by {
            if by.is_nan() || by <= 0.0 {
                e.push(line, format!("{key}.{name}"), "must be a positive number");
            }
            let within_ns = match &c.within {
                Some(w) => dur(e, "within", w),
                None => {
                    e.push(
                        line,
                        format!("{key}.within"),
                        format!("`{name}` needs `within` (e.g. `within: 10m`)"),
                    );
                    0
                }
            };
            found.push((
                name,
                if rises {
                    Condition::RisesBy { by, within_ns }
                } else {
                    Condition::FallsBy { by, within_ns }
                },
            ));
        }
    }
    if let Some(max) = c.cycles {
        let within_ns = match &c.within {
            Some(w) => dur(e, "within", w),
            None => {
                e.push(
                    line,
                    format!("{key}.within"),
                    "`cycles` needs `within` (e.g. `within: 1h`)",
                );
                0
            }
        };
        found.push(("cycles", Condition::Cycles { max, within_ns }));
    }
    if c.within.is_some() && c.rises_by.is_none() && c.falls_by.is_none() && c.cycles.is_none() {
        e.push(
            line,
            format!("{key}.within"),
            "`within` belongs to `rises_by`, `falls_by` or `cycles`",
        );
    }
    if let Some(s) = &c.stale {
        found.push((
            "stale",
            Condition::Stale {
                after_ns: dur(e, "stale", s),
            },
        ));
    }
    if let Some(s) = &c.flatline {
        let tolerance = c.tolerance.unwrap_or(0.0);
        if tolerance.is_nan() || tolerance < 0.0 {
            e.push(line, format!("{key}.tolerance"), "must be 0 or more");
        }
        found.push((
            "flatline",
            Condition::Flatline {
                after_ns: dur(e, "flatline", s),
                tolerance,
            },
        ));
    } else if c.tolerance.is_some() {
        e.push(
            line,
            format!("{key}.tolerance"),
            "`tolerance` belongs to `flatline`",
        );
    }
    match c.offline {
        Some(true) => found.push(("offline", Condition::Offline)),
        Some(false) => e.push(
            line,
            format!("{key}.offline"),
            "`offline: false` is not a condition; write `offline: true`",
        ),
        None => {}
    }
    if let Some(s) = &c.counter_stalled {
        found.push((
            "counter_stalled",
            Condition::CounterStalled {
                after_ns: dur(e, "counter_stalled", s),
            },
        ));
    }
    if let Some(a) = &c.anomaly {
        found.push((
            "anomaly",
            Condition::Signal {
                kind: SignalKind::Anomaly,
                above: a.score_above,
            },
        ));
    }
    if let Some(a) = &c.equipment_anomaly {
        found.push((
            "equipment_anomaly",
            Condition::Signal {
                kind: SignalKind::EquipmentAnomaly,
                above: a.score_above,
            },
        ));
    }
    if let Some(f) = &c.forecast {
        let within_ns = dur(e, "forecast.within", &f.within);
        found.push((
            "forecast",
            Condition::Signal {
                kind: SignalKind::Forecast { within_ns },
                above: f.above,
            },
        ));
    }
    if let Some(en) = &c.energy {
        found.push((
            "energy",
            Condition::Signal {
                kind: SignalKind::EnergyAboveBaseline,
                above: en.above_baseline_by.0,
            },
        ));
    }
    // `for` may also sit inside a signal condition (`anomaly: { score_above: 0.9, for: 15m }`).
    let inner_hold = [
        c.anomaly.as_ref().and_then(|a| a.hold.as_ref()),
        c.equipment_anomaly.as_ref().and_then(|a| a.hold.as_ref()),
        c.forecast.as_ref().and_then(|f| f.hold.as_ref()),
        c.energy.as_ref().and_then(|en| en.hold.as_ref()),
    ]
    .into_iter()
    .flatten()
    .next();
    if c.hold.is_some() && inner_hold.is_some() {
        e.push(
            line,
            format!("{key}.for"),
            "give `for` once: inside the condition or beside it, not both",
        );
    }
    let hold_ns = match c.hold.as_ref().or(inner_hold) {
        None => 0,
        Some(s) => match parse_duration(s) {
            Ok(d) => d.as_nanos() as i64,
            Err(m) => {
                e.push(line, format!("{key}.for"), m);
                0
            }
        },
    };
    for (name, v) in [
        ("above", c.above),
        ("below", c.below),
        ("rises_by", c.rises_by),
        ("falls_by", c.falls_by),
    ] {
        if v.is_some_and(|v| !v.is_finite()) {
            e.push(line, format!("{key}.{name}"), "must be a finite number");
        }
    }
    match found.len() {
        0 => {
            e.push(
                line,
                key.to_string(),
                "no condition: give one of above, below, outside, inside, rises_by, falls_by, cycles, stale, \
                 flatline, offline, counter_stalled, anomaly, equipment_anomaly, forecast, energy",
            );
            None
        }
        1 => {
            let cond = found[0].1;
            if is_clear
                && !matches!(
                    cond,
                    Condition::Above(_)
                        | Condition::Below(_)
                        | Condition::Outside(..)
                        | Condition::Inside(..)
                )
            {
                e.push(
                    line,
                    key.to_string(),
                    format!(
                        "`{}` cannot be a clear condition: use above, below, outside or inside (or leave `clear` out \
                         to clear when `when` stops holding)",
                        found[0].0
                    ),
                );
                return None;
            }
            Some(Trigger { cond, hold_ns })
        }
        _ => {
            let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
            e.push(
                line,
                key.to_string(),
                format!(
                    "one condition per rule, found {}: write one rule per condition",
                    names.join(" and ")
                ),
            );
            None
        }
    }
}

/// Parses and validates one rule file's text.
pub fn parse_rules(file: &Path, text: &str, cx: &Context<'_>) -> (Vec<Rule>, Vec<Diagnostic>) {
    let raw: RawFile = match serde_saphyr::from_str(text) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), vec![yaml_error(file, &e)]),
    };
    let mut e = Errs {
        file,
        list: Vec::new(),
    };
    if raw.schema.value != SCHEMA {
        e.push(
            line_of(&raw.schema),
            "schema".into(),
            format!(
                "unsupported schema {}; this Caretaker reads schema {SCHEMA}",
                raw.schema.value
            ),
        );
        return (Vec::new(), e.list);
    }
    let mut rules = Vec::new();
    for (i, sr) in raw.rules.iter().enumerate() {
        let before = e.list.len();
        let r = &sr.value;
        let k = |s: &str| format!("rules[{i}].{s}");
        let name = r.name.value.clone();
        if !valid_name(&name) {
            e.push(
                line_of(&r.name),
                k("name"),
                format!("rule name `{name}`: use lowercase letters, digits, `-` and `_`, starting with a letter"),
            );
        }
        // applies_to
        let aline = line_of(&r.applies_to);
        let mut a = r.applies_to.value.clone();
        // `equipment_anomaly: { profile: ... }` names the equipment's profile: it narrows applies_to.
        if let Some(p) = r
            .when
            .value
            .equipment_anomaly
            .as_ref()
            .and_then(|s| s.profile.clone())
        {
            match &a.profile {
                None => a.profile = Some(p),
                Some(q) if *q != p => e.push(
                    line_of(&r.when),
                    k("when.equipment_anomaly.profile"),
                    format!("`{p}` differs from applies_to.profile `{q}`"),
                ),
                Some(_) => {}
            }
        }
        let a = &a;
        let category = a.category.as_ref().and_then(|c| {
            crate::catalog::units::parse_word("category", c, Category::parse, Category::ALL)
                .map_err(|m| e.push(aline, k("applies_to.category"), m))
                .ok()
        });
        let applies_to = AppliesTo {
            profile: a.profile.clone(),
            device: a.device.clone(),
            category,
            location: a.location.clone(),
        };
        if a.profile.is_none()
            && a.device.is_none()
            && a.category.is_none()
            && a.location.is_empty()
        {
            e.push(
                aline,
                k("applies_to"),
                "say which devices: give profile, device, category or location",
            );
        }
        if let Some(p) = &a.profile {
            if !cx.profiles.contains_key(p) {
                let hint = did_you_mean(p, cx.profiles.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                e.push(
                    aline,
                    k("applies_to.profile"),
                    format!("unknown profile `{p}`{hint}"),
                );
            }
        }
        // The profiles this rule can meet: by profile/category, narrowed to the device's if it is declared.
        let device_profile = a.device.as_ref().and_then(|d| cx.devices.get(d));
        let candidates: Vec<&Profile> = cx
            .profiles
            .values()
            .filter(|p| applies_to.matches_profile(p))
            .filter(|p| device_profile.is_none_or(|dp| *dp == p.name))
            .map(|p| &**p)
            .collect();
        let when = condition(&mut e, line_of(&r.when), &k("when"), &r.when.value, false);
        let clear = r
            .clear
            .as_ref()
            .and_then(|c| condition(&mut e, line_of(c), &k("clear"), &c.value, true));
        if let (Some(w), Some(_)) = (when, clear) {
            if !w.cond.has_thresholds() {
                e.push(
                    r.clear.as_ref().and_then(line_of),
                    k("clear"),
                    format!(
                        "`{}` clears by itself (when readings return, move or count again); remove `clear`",
                        w.cond.name()
                    ),
                );
            }
        }
        let device_level = matches!(
            when.map(|t| t.cond),
            Some(
                Condition::Offline
                    | Condition::Signal {
                        kind: SignalKind::EquipmentAnomaly,
                        ..
                    }
            )
        );
        let unit = r.unit.as_ref().and_then(|u| {
            crate::catalog::units::parse_word("unit", &u.value, Unit::parse, Unit::ALL)
                .map_err(|m| e.push(line_of(u), k("unit"), m))
                .ok()
        });
        let point = r.point.as_ref().map(|p| p.value.clone());
        match (&r.point, device_level) {
            (None, false) => e.push(
                line_of(sr),
                k("point"),
                "missing `point`: which point does the rule watch?",
            ),
            // Selected by category/location with no such profile yet: dormant, not wrong (`check` lists it).
            (Some(_), _) if candidates.is_empty() => {}
            (Some(p), _) => {
                let with_point: Vec<&&Profile> = candidates
                    .iter()
                    .filter(|pr| pr.point_index(&p.value).is_some())
                    .collect();
                let all = candidates
                    .iter()
                    .flat_map(|pr| pr.points.iter().map(|x| x.name.as_str()));
                let typo = did_you_mean(&p.value, all);
                // A rule naming its profile (or device) must name one of its points. A rule for a whole category
                // applies to the devices that have the point; only a near miss of an existing name is an error.
                let exact = a.profile.is_some() || device_profile.is_some();
                if with_point.is_empty() && (exact || typo.is_some()) {
                    let hint = typo
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    let names: Vec<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
                    e.push(
                        line_of(p),
                        k("point"),
                        format!(
                            "unknown point `{}`{hint}: not in profile {}",
                            p.value,
                            names.join(", ")
                        ),
                    );
                }
                for pr in with_point {
                    let pd = &pr.points[pr.point_index(&p.value).unwrap_or(0)];
                    if let Some(u) = unit {
                        if unit_conversion(u, pd.unit).is_none() {
                            e.push(
                                r.unit.as_ref().and_then(line_of),
                                k("unit"),
                                format!(
                                    "wrong unit: thresholds are in {u} but point `{}` of profile `{}` is in {} ({})",
                                    pd.name,
                                    pr.name,
                                    pd.unit,
                                    pd.unit.dimension()
                                ),
                            );
                        }
                    }
                    if let Some(Condition::CounterStalled { .. }) = when.map(|t| t.cond) {
                        if pd.kind != Kind::Counter {
                            e.push(
                                line_of(&r.when),
                                k("when.counter_stalled"),
                                format!(
                                    "point `{}` of profile `{}` is a {}, not a counter",
                                    pd.name, pr.name, pd.kind
                                ),
                            );
                        }
                    }
                }
            }
            (None, true) => {}
        }
        if unit.is_some() && !when.is_some_and(|t| t.cond.has_thresholds()) {
            e.push(
                r.unit.as_ref().and_then(line_of),
                k("unit"),
                "`unit` only applies to threshold conditions (above, below, outside, rises_by, ...)",
            );
        }
        let severity = Severity::parse(&r.severity.value).unwrap_or_else(|| {
            let hint = did_you_mean(&r.severity.value, Severity::ALL.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            e.push(
                line_of(&r.severity),
                k("severity"),
                format!(
                    "unknown severity `{}`{hint}; expected one of: {}",
                    r.severity.value,
                    Severity::ALL.join(", ")
                ),
            );
            Severity::Warning
        });
        let schedule = r.schedule.as_ref().and_then(|s| {
            Schedule::parse(
                s.value.days.as_deref(),
                s.value.hours.as_deref(),
                s.value.timezone.as_deref().or(cx.timezone),
            )
            .map_err(|(key, m)| e.push(line_of(s), k(&format!("schedule.{key}")), m))
            .ok()
        });
        let wo = r.work_order.as_ref();
        let wl = wo.and_then(line_of);
        let wo = wo.map(|w| &w.value);
        let title = wo
            .and_then(|w| w.title.clone())
            .unwrap_or_else(|| format!("{name}: {{device}} {{point}} = {{value}}"));
        if title.matches('{').count() != title.matches('}').count() {
            e.push(
                wl,
                k("work_order.title"),
                "unbalanced `{` / `}` in the title template",
            );
        }
        let due_within = wo.and_then(|w| w.due_within.as_ref()).and_then(|d| {
            parse_duration(d)
                .map_err(|m| e.push(wl, k("work_order.due_within"), m))
                .ok()
        });
        let resolve = match wo.and_then(|w| w.resolve.as_deref()) {
            None | Some("auto") => Resolve::Auto,
            Some("manual") => Resolve::Manual,
            Some(o) => {
                e.push(
                    wl,
                    k("work_order.resolve"),
                    format!("unknown resolve `{o}`; expected auto or manual"),
                );
                Resolve::Auto
            }
        };
        if e.list.len() > before {
            continue;
        }
        let (Some(when), true) = (when, r.clear.is_none() || clear.is_some()) else {
            continue;
        };
        rules.push(Rule {
            name,
            description: r.description.clone(),
            applies_to,
            point,
            unit,
            when,
            clear,
            severity,
            schedule,
            work_order: WorkOrderSpec {
                title,
                team: wo.and_then(|w| w.team.clone()),
                due_within,
                procedure: wo.and_then(|w| w.procedure.clone()),
                resolve,
            },
            file: file.to_path_buf(),
            line: line_of(sr).unwrap_or(0),
        });
    }
    (rules, e.list)
}

/// Loads every `*.yaml` rule file under the given folders, checking each rule against the site.
pub fn load_dirs(dirs: &[PathBuf], cx: &Context<'_>) -> (RuleSet, Vec<Diagnostic>) {
    let mut set = RuleSet::default();
    let mut errs = Vec::new();
    let mut names: HashMap<String, (PathBuf, u64)> = HashMap::new();
    let (files, read_errs) = crate::diag::read_yaml_files(dirs, "rules.dirs", "rule");
    errs.extend(read_errs);
    for (path, text) in files {
        let (rules, es) = parse_rules(&path, &text, cx);
        errs.extend(es);
        for r in rules {
            if let Some((f, l)) = names.get(&r.name) {
                errs.push(Diagnostic::new(
                    &r.file,
                    Some(r.line),
                    "name",
                    format!("rule `{}` is also defined in {}:{l}", r.name, f.display()),
                ));
                continue;
            }
            names.insert(r.name.clone(), (r.file.clone(), r.line));
            set.rules.push(r);
        }
    }
    (set, errs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::profile::parse_profile;
    use std::sync::Arc;

    pub(crate) fn profiles() -> Profiles {
        let mut m = Profiles::new();
        let p = parse_profile(
            Path::new("/p/test-ahu.yaml"),
            "schema: 1
name: test-ahu
category: hvac
points:
  - { name: supply_air_temp, unit: degC, kind: gauge, mqtt: { json: /sat } }
  - { name: filter_dp, unit: Pa, kind: gauge, mqtt: { json: /dp } }
  - { name: fan_power, unit: kW, kind: gauge, mqtt: { json: /fp } }
  - { name: energy, unit: kWh, kind: counter, mqtt: { json: /e } }
",
        )
        .unwrap();
        m.insert(p.name.clone(), Arc::new(p));
        m
    }

    fn parse(text: &str) -> (Vec<Rule>, Vec<Diagnostic>) {
        let profiles = profiles();
        let devices = BTreeMap::new();
        parse_rules(
            Path::new("/r/hvac.yaml"),
            text,
            &Context {
                profiles: &profiles,
                devices: &devices,
                timezone: Some("Europe/Berlin"),
            },
        )
    }

    const GOOD: &str = r#"schema: 1
rules:
  - name: supply-air-too-warm
    applies_to: { profile: test-ahu }
    point: supply_air_temp
    when: { above: 18.0, for: 10m }
    clear: { below: 17.0, for: 5m }
    severity: major
    schedule: { days: mon-fri, hours: "07:00-19:00", timezone: Europe/Berlin }
    work_order:
      title: "AHU {device} supply air {value} degC in {building}"
      team: hvac
      due_within: 8h
      procedure: |
        1. Check chilled-water valve position
      resolve: auto
"#;

    #[test]
    fn the_documented_shape_loads() {
        let (rules, errs) = parse(GOOD);
        assert!(errs.is_empty(), "{errs:?}");
        let r = &rules[0];
        assert_eq!(r.when.cond, Condition::Above(18.0));
        assert_eq!(r.when.hold_ns, 600_000_000_000);
        assert_eq!(r.clear.unwrap().cond, Condition::Below(17.0));
        assert_eq!(r.severity, Severity::Major);
        assert_eq!(r.work_order.team.as_deref(), Some("hvac"));
        assert_eq!(r.work_order.resolve, Resolve::Auto);
        assert_eq!(r.line, 3);
    }

    #[test]
    fn unknown_point_and_profile_name_line_and_hint() {
        let (_, errs) = parse(&GOOD.replace("point: supply_air_temp", "point: suply_air_temp"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, Some(5));
        assert_eq!(errs[0].key, "rules[0].point");
        assert!(
            errs[0].message.contains("did you mean `supply_air_temp`"),
            "{errs:?}"
        );
        let (_, errs) = parse(&GOOD.replace("profile: test-ahu", "profile: test-ahv"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, Some(4));
        assert!(
            errs[0].message.contains("did you mean `test-ahu`"),
            "{errs:?}"
        );
    }

    #[test]
    fn wrong_unit_is_an_error_and_convertible_units_are_not() {
        let (_, errs) =
            parse(&GOOD.replace("point: supply_air_temp", "point: filter_dp\n    unit: degC"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("wrong unit"), "{errs:?}");
        assert_eq!(errs[0].line, Some(6));
        let (rules, errs) =
            parse(&GOOD.replace("point: supply_air_temp", "point: fan_power\n    unit: W"));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(rules[0].unit, Some(Unit::W));
        assert_eq!(unit_conversion(Unit::W, Unit::KW), Some((1e-3, 0.0)));
        let (f, o) = unit_conversion(Unit::DegF, Unit::DegC).unwrap();
        assert!((212.0 * f + o - 100.0).abs() < 1e-9);
    }

    #[test]
    fn every_error_is_listed_with_keys() {
        let text = GOOD
            .replace("severity: major", "severity: majr")
            .replace(
                "{ above: 18.0, for: 10m }",
                "{ above: 18.0, below: 3, for: 10x }",
            )
            .replace("days: mon-fri", "days: mon-fry");
        let (rules, errs) = parse(&text);
        assert!(rules.is_empty());
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "rules[0].severity",
            "rules[0].when",
            "rules[0].when.for",
            "rules[0].schedule.days",
        ] {
            assert!(keys.contains(&k), "{k} missing in {errs:?}");
        }
    }

    #[test]
    fn counter_conditions_need_counters() {
        let text = "schema: 1
rules:
  - name: meter-stuck
    applies_to: { category: hvac }
    point: fan_power
    when: { counter_stalled: 2h }
    severity: minor
";
        let (_, errs) = parse(text);
        assert!(errs[0].message.contains("not a counter"), "{errs:?}");
        let (rules, errs) = parse(&text.replace("fan_power", "energy"));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            rules[0].when.cond,
            Condition::CounterStalled {
                after_ns: 7_200_000_000_000
            }
        );
    }

    #[test]
    fn extension_conditions_parse() {
        let text = "schema: 1
rules:
  - name: odd
    applies_to: { profile: test-ahu }
    point: fan_power
    when: { anomaly: { score_above: 0.9 }, for: 10m }
    severity: minor
  - name: device-down
    applies_to: { profile: test-ahu }
    when: { offline: true, for: 5m }
    severity: major
";
        let (rules, errs) = parse(text);
        assert!(errs.is_empty(), "{errs:?}");
        assert!(
            matches!(rules[0].when.cond, Condition::Signal { kind: SignalKind::Anomaly, above } if above == 0.9)
        );
        assert_eq!(rules[1].point, None);
    }

    #[test]
    fn signal_conditions_take_the_issue_shapes() {
        // The shapes issues 6 and 7 spell out: `for` inside the condition, a profile on equipment_anomaly,
        // and a percentage written with `%`.
        let text = "schema: 1
rules:
  - name: odd
    applies_to: { category: hvac }
    point: fan_power
    when: { anomaly: { score_above: 0.9, for: 15m } }
    severity: minor
  - name: ahu-state
    applies_to: { category: hvac }
    when: { equipment_anomaly: { profile: test-ahu, score_above: 0.95 } }
    severity: minor
  - name: trend
    applies_to: { profile: test-ahu }
    point: fan_power
    when: { forecast: { above: 250, within: 7d } }
    severity: warning
  - name: waste
    applies_to: { profile: test-ahu }
    point: fan_power
    when: { energy: { above_baseline_by: 30%, for: 3d } }
    severity: warning
";
        let (rules, errs) = parse(text);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(rules[0].when.hold_ns, 900_000_000_000);
        assert_eq!(rules[1].applies_to.profile.as_deref(), Some("test-ahu"));
        assert!(matches!(
            rules[2].when.cond,
            Condition::Signal { kind: SignalKind::Forecast { within_ns }, above }
                if above == 250.0 && within_ns == 7 * 86_400_000_000_000
        ));
        assert!(matches!(
            rules[3].when.cond,
            Condition::Signal { kind: SignalKind::EnergyAboveBaseline, above } if above == 30.0
        ));
        assert_eq!(rules[3].when.hold_ns, 3 * 86_400_000_000_000);
        let (_, errs) = parse(&text.replace("30%", "thirty"));
        assert!(errs[0].message.contains("percentage"), "{errs:?}");
        let (_, errs) = parse(&text.replace(
            "score_above: 0.9, for: 15m } }",
            "score_above: 0.9, for: 15m }, for: 5m }",
        ));
        assert!(errs[0].message.contains("give `for` once"), "{errs:?}");
    }

    #[test]
    fn clear_only_for_value_conditions() {
        let text = "schema: 1\nrules:\n  - name: s\n    applies_to: { profile: test-ahu }\n    point: fan_power\n    when: { stale: 5m }\n    clear: { below: 3 }\n    severity: minor\n";
        let (_, errs) = parse(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            (errs[0].key.as_str(), errs[0].line),
            ("rules[0].clear", Some(7))
        );
        let (_, errs) = parse(&text.replace("stale: 5m", "above: 5"));
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn unknown_keys_have_lines() {
        let (_, errs) = parse(&GOOD.replace(
            "    severity: major",
            "    severity: major\n    colour: red",
        ));
        assert_eq!(errs[0].line, Some(9), "{errs:?}");
        assert!(errs[0].message.contains("colour"), "{errs:?}");
    }
}
