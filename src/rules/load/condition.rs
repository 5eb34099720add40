//! One `when` or `clear` block of a rule: its raw YAML shape and its validation into a [`Trigger`]. Each family
//! of conditions (thresholds, rates, staleness, signals) is read by its own function; together they must find
//! exactly one condition.

use super::Errs;
use crate::rules::model::{Condition, SignalKind, Trigger};
use crate::util::parse_duration_max;
use std::time::Duration;

/// The longest `for`, `stale`, `flatline`, `counter_stalled` or `within` a rule may give: a year. Longer is a
/// typo (and beyond ~292 years the nanoseconds would not fit the engine's i64).
pub const MAX_RULE_DURATION: Duration = Duration::from_secs(365 * 86_400);
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCondition {
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
    /// A multi-point condition over the rule's inputs (`mat + eps_mat < min(rat, oat)`), see `rules::expr`.
    #[serde(default)]
    pub(super) expr: Option<String>,
}

impl RawCondition {
    /// `equipment_anomaly: { profile: ... }`: the equipment's profile, which narrows the rule's applies_to.
    pub(super) fn equipment_profile(&self) -> Option<String> {
        self.equipment_anomaly
            .as_ref()
            .and_then(|s| s.profile.clone())
    }
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

/// The conditions found in one `when`/`clear` block, with their keywords, in the order they are checked.
type Found = Vec<(&'static str, Condition)>;

/// Where a condition's problems are reported: the line of its `when`/`clear` and its key (`rules[0].when`).
#[derive(Clone, Copy)]
struct At<'k> {
    line: Option<u64>,
    key: &'k str,
}

impl At<'_> {
    /// A problem with one field of the condition (`rules[0].when.within`).
    fn push(self, e: &mut Errs<'_>, field: &str, msg: impl Into<String>) {
        e.push(self.line, format!("{}.{field}", self.key), msg);
    }

    /// A problem with the condition as a whole (`rules[0].when`).
    fn push_whole(self, e: &mut Errs<'_>, msg: impl Into<String>) {
        e.push(self.line, self.key.to_string(), msg);
    }

    /// A duration field that must be longer than 0s, in ns; 0 when it has a problem (reported).
    fn duration(self, e: &mut Errs<'_>, field: &str, s: &str) -> i64 {
        match parse_duration_max(s, MAX_RULE_DURATION) {
            Ok(d) if !d.is_zero() => d.as_nanos() as i64,
            Ok(_) => {
                self.push(e, field, "must be longer than 0s");
                0
            }
            Err(m) => {
                self.push(e, field, m);
                0
            }
        }
    }
}

/// Validates one `when` or `clear` block: exactly one condition, its fields, and its `for`.
pub(super) fn condition(
    e: &mut Errs<'_>,
    line: Option<u64>,
    key: &str,
    c: &RawCondition,
    is_clear: bool,
) -> Option<Trigger> {
    let at = At { line, key };
    let mut found: Found = Vec::new();
    threshold_conditions(e, at, c, &mut found);
    rate_conditions(e, at, c, &mut found);
    staleness_conditions(e, at, c, &mut found);
    signal_conditions(e, at, c, &mut found);
    if c.expr.is_some() {
        found.push(("expr", Condition::Expr));
    }
    let hold_ns = hold(e, at, c);
    check_finite(e, at, c);
    single_trigger(e, at, &found, hold_ns, is_clear)
}

/// `above`, `below`, `outside`, `inside`: value thresholds.
fn threshold_conditions(e: &mut Errs<'_>, at: At<'_>, c: &RawCondition, found: &mut Found) {
    if let Some(v) = c.above {
        found.push(("above", Condition::Above(v)));
    }
    if let Some(v) = c.below {
        found.push(("below", Condition::Below(v)));
    }
    for (name, b, outside) in [("outside", c.outside, true), ("inside", c.inside, false)] {
        if let Some([lo, hi]) = b {
            if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
                at.push(
                    e,
                    name,
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
}

/// `rises_by`, `falls_by` and `cycles`: changes within a `within` window (and a `within` without one).
fn rate_conditions(e: &mut Errs<'_>, at: At<'_>, c: &RawCondition, found: &mut Found) {
    for (name, by, rises) in [
        ("rises_by", c.rises_by, true),
        ("falls_by", c.falls_by, false),
    ] {
        if let Some(by) = by {
            if by.is_nan() || by <= 0.0 {
                at.push(e, name, "must be a positive number");
            }
            let within_ns = match &c.within {
                Some(w) => at.duration(e, "within", w),
                None => {
                    at.push(
                        e,
                        "within",
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
            Some(w) => at.duration(e, "within", w),
            None => {
                at.push(e, "within", "`cycles` needs `within` (e.g. `within: 1h`)");
                0
            }
        };
        found.push(("cycles", Condition::Cycles { max, within_ns }));
    }
    if c.within.is_some() && c.rises_by.is_none() && c.falls_by.is_none() && c.cycles.is_none() {
        at.push(
            e,
            "within",
            "`within` belongs to `rises_by`, `falls_by` or `cycles`",
        );
    }
}

/// `stale`, `flatline` (with its `tolerance`), `offline` and `counter_stalled`: readings missing or not moving.
fn staleness_conditions(e: &mut Errs<'_>, at: At<'_>, c: &RawCondition, found: &mut Found) {
    if let Some(s) = &c.stale {
        found.push((
            "stale",
            Condition::Stale {
                after_ns: at.duration(e, "stale", s),
            },
        ));
    }
    if let Some(s) = &c.flatline {
        let tolerance = c.tolerance.unwrap_or(0.0);
        if tolerance.is_nan() || tolerance < 0.0 {
            at.push(e, "tolerance", "must be 0 or more");
        }
        found.push((
            "flatline",
            Condition::Flatline {
                after_ns: at.duration(e, "flatline", s),
                tolerance,
            },
        ));
    } else if c.tolerance.is_some() {
        at.push(e, "tolerance", "`tolerance` belongs to `flatline`");
    }
    match c.offline {
        Some(true) => found.push(("offline", Condition::Offline)),
        Some(false) => at.push(
            e,
            "offline",
            "`offline: false` is not a condition; write `offline: true`",
        ),
        None => {}
    }
    if let Some(s) = &c.counter_stalled {
        found.push((
            "counter_stalled",
            Condition::CounterStalled {
                after_ns: at.duration(e, "counter_stalled", s),
            },
        ));
    }
}

/// `anomaly`, `equipment_anomaly`, `forecast`, `energy`: values supplied by signal providers.
fn signal_conditions(e: &mut Errs<'_>, at: At<'_>, c: &RawCondition, found: &mut Found) {
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
        let within_ns = at.duration(e, "forecast.within", &f.within);
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
}

/// The condition's `for`, in ns (0 when absent or wrong; a problem is reported).
fn hold(e: &mut Errs<'_>, at: At<'_>, c: &RawCondition) -> i64 {
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
        at.push(
            e,
            "for",
            "give `for` once: inside the condition or beside it, not both",
        );
    }
    match c.hold.as_ref().or(inner_hold) {
        None => 0,
        Some(s) => match parse_duration_max(s, MAX_RULE_DURATION) {
            Ok(d) => d.as_nanos() as i64,
            Err(m) => {
                at.push(e, "for", m);
                0
            }
        },
    }
}

/// Thresholds must be finite numbers.
fn check_finite(e: &mut Errs<'_>, at: At<'_>, c: &RawCondition) {
    for (name, v) in [
        ("above", c.above),
        ("below", c.below),
        ("rises_by", c.rises_by),
        ("falls_by", c.falls_by),
    ] {
        if v.is_some_and(|v| !v.is_finite()) {
            at.push(e, name, "must be a finite number");
        }
    }
}

/// The trigger, when exactly one condition was given (and, for `clear`, one that can clear).
fn single_trigger(
    e: &mut Errs<'_>,
    at: At<'_>,
    found: &Found,
    hold_ns: i64,
    is_clear: bool,
) -> Option<Trigger> {
    match found.len() {
        0 => {
            at.push_whole(
                e,
                "no condition: give one of above, below, outside, inside, rises_by, falls_by, cycles, stale, \
                 flatline, offline, counter_stalled, anomaly, equipment_anomaly, forecast, energy, expr",
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
                        | Condition::Expr
                )
            {
                at.push_whole(
                    e,
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
            at.push_whole(
                e,
                format!(
                    "one condition per rule, found {}: write one rule per condition",
                    names.join(" and ")
                ),
            );
            None
        }
    }
}
