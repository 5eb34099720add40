//! Loading rule files: serde-saphyr fills the raw structs below and in `condition` (with line numbers), then
//! [`parse_rules`] checks each rule against the site ([`Context`]) and turns it into the validated [`Rule`] of
//! [`super::model`], listing every problem with file, line and key. [`load_dirs`] does that for every file of the
//! configured folders and rejects a rule name defined twice. Nothing past this module sees raw YAML.

mod condition;
mod expression;
#[cfg(test)]
pub(crate) use expression::tests as expression_tests;

use super::alarm::{Resolve, Severity};
use super::model::{AppliesTo, Condition, Rule, RuleSet, SignalKind, Trigger, WorkOrderSpec};
use super::schedule::Schedule;
use crate::catalog::profile::yaml_error;
use crate::catalog::units::unit_conversion;
use crate::catalog::{Category, Kind, PointDef, Profile, Profiles, Unit};
use crate::diag::Diagnostic;
use crate::util::{did_you_mean, parse_duration};
use condition::{RawCondition, condition};
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
    /// Named constants of the file's expressions, with units (`eps_sat: 1.1 K`); rules may override them.
    #[serde(default)]
    params: BTreeMap<String, Spanned<expression::RawParam>>,
    /// Inputs every rule of the file may use (`mat: { brick: Mixed_Air_Temperature_Sensor }`).
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<expression::RawInput>>,
    /// Named sub-expressions every rule of the file may use (`state: "ahu_state(fan, hc, cc, oad, oad_min)"`).
    #[serde(default, rename = "let")]
    lets: BTreeMap<String, Spanned<String>>,
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
    point: Option<Spanned<RawPointRef>>,
    #[serde(default)]
    unit: Option<Spanned<String>>,
    /// Expression rules: the rule's own inputs, parameters and `let`s (beside the file's), its computed value
    /// and how fresh its inputs must be.
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<expression::RawInput>>,
    #[serde(default)]
    params: BTreeMap<String, Spanned<expression::RawParam>>,
    #[serde(default, rename = "let")]
    lets: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    value: Option<Spanned<String>>,
    #[serde(default)]
    fresh: Option<Spanned<String>>,
    when: Spanned<RawCondition>,
    #[serde(default)]
    clear: Option<Spanned<RawCondition>>,
    severity: Spanned<String>,
    #[serde(default)]
    schedule: Option<Spanned<RawSchedule>>,
    #[serde(default)]
    work_order: Option<Spanned<RawWorkOrder>>,
    /// Prometheus-style labels and annotations (e.g. `runbook_url`), carried into Alertmanager alerts.
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// `point: supply_air_temp` or `point: { brick: Supply_Air_Temperature_Sensor }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawPointRef {
    Name(String),
    Brick(RawBrick),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBrick {
    brick: String,
}

impl RawPointRef {
    fn name(&self) -> Option<&str> {
        match self {
            RawPointRef::Name(n) => Some(n),
            RawPointRef::Brick(_) => None,
        }
    }
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
    #[serde(default)]
    brick: Option<String>,
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
    let shared = expression::Shared::parse(&mut e, &raw.params, &raw.inputs, &raw.lets);
    let mut rules = Vec::new();
    for (i, sr) in raw.rules.iter().enumerate() {
        if let Some(rule) = parse_rule(&mut e, i, sr, cx, &shared) {
            rules.push(rule);
        }
    }
    (rules, e.list)
}

/// The key of a field of the rule being validated, for diagnostics: `rules[3].when`.
type Key<'a> = &'a dyn Fn(&str) -> String;

/// Validates rule number `i` of a file. Every problem is reported, in the order of the rule's fields as they are
/// checked; a rule with any problem is left out (`None`).
fn parse_rule(
    e: &mut Errs<'_>,
    i: usize,
    sr: &Spanned<RawRule>,
    cx: &Context<'_>,
    shared: &expression::Shared,
) -> Option<Rule> {
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
    let applies_to = applies_to(e, r, &k, cx);
    let when = condition(e, line_of(&r.when), &k("when"), &r.when.value, false);
    let clear = r
        .clear
        .as_ref()
        .and_then(|c| condition(e, line_of(c), &k("clear"), &c.value, true));
    if let (Some(w), Some(_)) = (when, clear) {
        if !w.cond.has_thresholds() && w.cond != Condition::Expr {
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
    let unit = r.unit.as_ref().and_then(|u| {
        crate::catalog::units::parse_word("unit", &u.value, Unit::parse, Unit::ALL)
            .map_err(|m| e.push(line_of(u), k("unit"), m))
            .ok()
    });
    let expr = expression::rule_expression(e, &k, sr, cx, &applies_to, shared, when, clear, unit);
    let is_expr = r.value.is_some()
        || r.when.value.expr.is_some()
        || r.clear.as_ref().is_some_and(|c| c.value.expr.is_some());
    if !is_expr {
        check_point(e, sr, &k, cx, &applies_to, when, unit);
    } else {
        check_point_role(e, sr, &k, cx, &applies_to);
    }
    if unit.is_some() && !is_expr && !when.is_some_and(|t| t.cond.has_thresholds()) {
        e.push(
            r.unit.as_ref().and_then(line_of),
            k("unit"),
            "`unit` only applies to threshold conditions (above, below, outside, rises_by, ...)",
        );
    }
    let severity = severity(e, r, &k);
    let schedule = r.schedule.as_ref().and_then(|s| {
        Schedule::parse(
            s.value.days.as_deref(),
            s.value.hours.as_deref(),
            s.value.timezone.as_deref().or(cx.timezone),
        )
        .map_err(|(key, m)| e.push(line_of(s), k(&format!("schedule.{key}")), m))
        .ok()
    });
    let work_order = work_order(e, r, &k, &name);
    if e.list.len() > before {
        return None;
    }
    let (Some(when), true) = (when, r.clear.is_none() || clear.is_some()) else {
        return None;
    };
    Some(Rule {
        name,
        description: r.description.clone(),
        applies_to,
        point: r
            .point
            .as_ref()
            .and_then(|p| p.value.name().map(str::to_string)),
        point_brick: match r.point.as_ref().map(|p| &p.value) {
            Some(RawPointRef::Brick(b)) => Some(b.brick.clone()),
            _ => None,
        },
        expr,
        unit,
        when,
        clear,
        severity,
        schedule,
        work_order,
        file: e.file.to_path_buf(),
        line: line_of(sr).unwrap_or(0),
    })
}

/// The devices the rule applies to: `applies_to`, narrowed by `equipment_anomaly: { profile }`, checked against
/// the site's profiles.
fn applies_to(e: &mut Errs<'_>, r: &RawRule, k: Key<'_>, cx: &Context<'_>) -> AppliesTo {
    let aline = line_of(&r.applies_to);
    let mut a = r.applies_to.value.clone();
    // `equipment_anomaly: { profile: ... }` names the equipment's profile: it narrows applies_to.
    if let Some(p) = r.when.value.equipment_profile() {
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
    let category = a.category.as_ref().and_then(|c| {
        crate::catalog::units::parse_word("category", c, Category::parse, Category::ALL)
            .map_err(|m| e.push(aline, k("applies_to.category"), m))
            .ok()
    });
    if a.profile.is_none()
        && a.device.is_none()
        && a.category.is_none()
        && a.location.is_empty()
        && a.brick.is_none()
    {
        e.push(
            aline,
            k("applies_to"),
            "say which devices: give profile, device, category, location or brick",
        );
    }
    if let Some(b) = &a.brick {
        if let Err(m) = crate::catalog::brick::classes().check(b) {
            e.push(aline, k("applies_to.brick"), m);
        }
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
    AppliesTo {
        profile: a.profile,
        device: a.device,
        category,
        location: a.location,
        brick: a.brick,
    }
}

/// Checks `point`: given unless the condition is about the whole device, and (with `unit` and counter conditions)
/// consistent with the profiles the rule can meet.
fn check_point(
    e: &mut Errs<'_>,
    sr: &Spanned<RawRule>,
    k: Key<'_>,
    cx: &Context<'_>,
    applies_to: &AppliesTo,
    when: Option<Trigger>,
    unit: Option<Unit>,
) {
    let r = &sr.value;
    // The profiles this rule can meet: by profile/category, narrowed to the device's if it is declared.
    let device_profile = applies_to.device.as_ref().and_then(|d| cx.devices.get(d));
    let candidates: Vec<&Profile> = cx
        .profiles
        .values()
        .filter(|p| applies_to.matches_profile(p))
        .filter(|p| device_profile.is_none_or(|dp| *dp == p.name))
        .map(|p| &**p)
        .collect();
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
    if let Some(p) = &r.point {
        if let RawPointRef::Brick(_) = p.value {
            check_point_role(e, sr, k, cx, applies_to);
            return;
        }
    }
    let point: Option<Spanned<String>> = r.point.as_ref().and_then(|p| {
        p.value.name().map(|n| Spanned {
            value: n.to_string(),
            referenced: p.referenced,
            defined: p.defined,
        })
    });
    match (&point, device_level) {
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
            let exact = applies_to.profile.is_some() || device_profile.is_some();
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
                check_point_def(e, r, k, pr, pd, when, unit);
            }
        }
        (None, true) => {}
    }
}

/// `point: { brick: ... }`: a known class, and (for a rule naming its profile or device) a point of that role.
fn check_point_role(
    e: &mut Errs<'_>,
    sr: &Spanned<RawRule>,
    k: Key<'_>,
    cx: &Context<'_>,
    applies_to: &AppliesTo,
) {
    let Some(p) = &sr.value.point else { return };
    let RawPointRef::Brick(b) = &p.value else {
        return;
    };
    if let Err(m) = crate::catalog::brick::classes().check(&b.brick) {
        e.push(line_of(p), k("point.brick"), m);
        return;
    }
    let device_profile = applies_to.device.as_ref().and_then(|d| cx.devices.get(d));
    if applies_to.profile.is_some() || device_profile.is_some() {
        for pr in cx.profiles.values().filter(|pr| {
            applies_to.matches_profile(pr) && device_profile.is_none_or(|dp| *dp == pr.name)
        }) {
            if pr.points_with_brick(&b.brick).next().is_none() {
                e.push(
                    line_of(p),
                    k("point.brick"),
                    format!(
                        "profile `{}` has no point of Brick class `{}`",
                        pr.name, b.brick
                    ),
                );
            }
        }
    }
}

/// Checks the rule against one profile's definition of its point: the rule's `unit` converts to the point's,
/// and `counter_stalled` watches a counter.
fn check_point_def(
    e: &mut Errs<'_>,
    r: &RawRule,
    k: Key<'_>,
    pr: &Profile,
    pd: &PointDef,
    when: Option<Trigger>,
    unit: Option<Unit>,
) {
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
    if let Some(Condition::Signal {
        kind: SignalKind::Anomaly,
        ..
    }) = when.map(|t| t.cond)
    {
        if !crate::anomaly::scores_point(pd) {
            e.push(
                line_of(&r.when),
                k("when.anomaly"),
                format!(
                    "point `{}` of profile `{}` ({}, {}) has no anomaly detector: only gauges that are not `bool` \
                     or `online` are scored (docs/anomaly.md); watch a counter's rate point, or use counter_stalled",
                    pd.name, pr.name, pd.kind, pd.unit
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

/// The rule's severity; `warning` when it is unknown (reported).
fn severity(e: &mut Errs<'_>, r: &RawRule, k: Key<'_>) -> Severity {
    Severity::parse(&r.severity.value).unwrap_or_else(|| {
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
    })
}

/// What the rule's work orders say: `work_order`, or a default title when it is left out.
fn work_order(e: &mut Errs<'_>, r: &RawRule, k: Key<'_>, name: &str) -> WorkOrderSpec {
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
    let label_name = |n: &str| {
        let mut c = n.chars();
        matches!(c.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    for (key, map) in [("labels", &r.labels), ("annotations", &r.annotations)] {
        for n in map.keys() {
            if !label_name(n) {
                e.push(
                    line_of(&r.name),
                    k(&format!("{key}.{n}")),
                    "not a Prometheus name: use letters, digits and `_`, not starting with a digit",
                );
            }
        }
    }
    for n in r.labels.keys() {
        if crate::rules::model::BUILTIN_LABELS.contains(&n.as_str()) {
            e.push(
                line_of(&r.name),
                k(&format!("labels.{n}")),
                format!("`{n}` is set by Caretaker from the work order; pick another label name"),
            );
        }
    }
    WorkOrderSpec {
        labels: r.labels.clone(),
        annotations: r.annotations.clone(),
        title,
        team: wo.and_then(|w| w.team.clone()),
        due_within,
        procedure: wo.and_then(|w| w.procedure.clone()),
        resolve,
    }
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
pub(super) mod tests {
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
    fn labels_and_annotations_load_and_builtin_or_bad_names_are_refused() {
        let with = |extra: &str| {
            GOOD.replace(
                "    severity: major\n",
                &format!("    severity: major\n{extra}"),
            )
        };
        let (rules, errs) = parse(&with(
            "    labels: { floor: \"3\" }\n    annotations: { runbook_url: \"https://wiki/x\" }\n",
        ));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(rules[0].work_order.labels["floor"], "3");
        assert_eq!(
            rules[0].work_order.annotations["runbook_url"],
            "https://wiki/x"
        );
        let (rules, errs) = parse(&with("    labels: { device: x, 1bad: y }\n"));
        assert!(rules.is_empty());
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            ["rules[0].labels.1bad", "rules[0].labels.device"],
            "{errs:?}"
        );
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

    /// Counters, `bool` points and `online` get no anomaly detector (crate::anomaly::scores_point): a rule
    /// asking for their score would never hold, so it is refused with the reason.
    #[test]
    fn anomaly_conditions_need_a_scored_point() {
        let text = "schema: 1
rules:
  - name: energy-odd
    applies_to: { profile: test-ahu }
    point: energy
    when: { anomaly: { score_above: 0.9 } }
    severity: minor
";
        let (_, errs) = parse(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.contains(
                "point `energy` of profile `test-ahu` (counter, kWh) has no anomaly detector"
            ),
            "{errs:?}"
        );
        let (_, errs) = parse(&text.replace("point: energy", "point: fan_power"));
        assert!(errs.is_empty(), "{errs:?}");
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
