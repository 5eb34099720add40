//! The validated rule model: what a rule file means once [`super::load`] has checked it against the site. The
//! engine, the pipeline stage, backtests and `check` work on these types only; none of them sees raw YAML.

use super::alarm::{Resolve, Severity};
use super::expr::{Program, Ty};
use super::schedule::Schedule;
use crate::catalog::{Category, Profile, Profiles, Unit};
use std::collections::BTreeMap;
use std::path::PathBuf;

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
    /// A value supplied by a [`Signal`](super::engine::Signal) provider is above the threshold.
    Signal {
        kind: SignalKind,
        above: f64,
    },
    /// `expr: "..."`: a condition over the rule's inputs; its program is in [`Rule::expr`].
    Expr,
}

impl Condition {
    /// Conditions about values, whose thresholds are in the point's unit.
    pub(super) fn has_thresholds(&self) -> bool {
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
            Self::Expr => "expr",
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
    /// The rule's Prometheus-style `labels:` (never one of [`BUILTIN_LABELS`]) and `annotations:`.
    pub labels: std::collections::BTreeMap<String, String>,
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The labels Caretaker sets on an Alertmanager alert from the work order itself.
pub const BUILTIN_LABELS: &[&str] = &[
    "alertname",
    "severity",
    "team",
    "site",
    "building",
    "device",
    "point",
];

/// Which devices a rule applies to; every given key must match.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AppliesTo {
    pub profile: Option<String>,
    pub device: Option<String>,
    pub category: Option<Category>,
    pub location: BTreeMap<String, String>,
    /// The equipment's Brick class (`AHU`): profiles whose `brick:` is it or a subclass of it.
    pub brick: Option<String>,
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
            && self.brick.as_ref().is_none_or(|b| profile.is_brick(b))
            && self
                .location
                .iter()
                .all(|(k, v)| location.get(k).is_some_and(|lv| lv == v))
    }
    pub(super) fn matches_profile(&self, profile: &Profile) -> bool {
        self.profile.as_ref().is_none_or(|p| *p == profile.name)
            && self.category.is_none_or(|c| c == profile.category)
            && self.brick.as_ref().is_none_or(|b| profile.is_brick(b))
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    pub applies_to: AppliesTo,
    /// The point the rule watches; `None` only for device-level conditions (`offline`, `equipment_anomaly`),
    /// for `point: { brick: ... }` (then [`Rule::point_brick`]) and for expression rules without a point.
    pub point: Option<String>,
    /// `point: { brick: Mixed_Air_Temperature_Sensor }`: the point of each device whose Brick class it is.
    pub point_brick: Option<String>,
    /// Multi-point rules: inputs, computed value and conditions (`value:`, `when: { expr }`, ...).
    pub expr: Option<std::sync::Arc<ExprRule>>,
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

/// Where an expression input's readings come from.
#[derive(Debug, Clone, PartialEq)]
pub enum InputRef {
    /// A point of the device the rule applies to, by name.
    Name(String),
    /// The point of that device whose Brick class this is.
    Brick(String),
    /// A point of another device of the site (outdoor air temperature from a weather station).
    Site { device: String, point: String },
}

/// The expression part of a rule: the inputs it reads (in slot order), its computed value and conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprRule {
    /// (name in the expressions, where it comes from), in slot order.
    pub inputs: Vec<(String, InputRef)>,
    /// `value:`: the rule's value (thresholds in `when`/`clear` apply to it; titles show it as `{value}`).
    pub value: Option<Program>,
    pub value_ty: Ty,
    /// `when: { expr }` / `clear: { expr }`: conditions (1/0).
    pub when: Option<Program>,
    pub clear: Option<Program>,
    /// Named values shown in titles and evidence (`let`s), with their types.
    pub shows: Vec<(String, Program, Ty)>,
    /// Inputs older than this (against the reading being evaluated) make the rule wait: not evaluated.
    pub fresh_ns: i64,
}

impl ExprRule {
    /// Every program with stateful calls, in the order the engine keeps their state: value, when, clear.
    pub fn call_counts(&self) -> [usize; 3] {
        [&self.value, &self.when, &self.clear].map(|p| p.as_ref().map_or(0, |p| p.calls))
    }
}

impl Rule {
    /// Whether a device of `profile` has what the rule reads (its point, by name or role, and its inputs).
    pub fn profile_can_meet(&self, p: &Profile) -> bool {
        self.point
            .as_ref()
            .is_none_or(|pt| p.point_index(pt).is_some())
            && self
                .point_brick
                .as_ref()
                .is_none_or(|b| p.points_with_brick(b).next().is_some())
            && self.expr.as_ref().is_none_or(|x| {
                x.inputs.iter().all(|(_, i)| match i {
                    InputRef::Name(n) => p.point_index(n).is_some(),
                    InputRef::Brick(b) => p.points_with_brick(b).next().is_some(),
                    InputRef::Site { .. } => true,
                })
            })
    }
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
            !profiles
                .values()
                .any(|p| r.applies_to.matches_profile(p) && r.profile_can_meet(p))
        })
    }
}
