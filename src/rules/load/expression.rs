//! The expression part of a rule file: `params`, `inputs` and `let` (file-wide and per rule), `value:`,
//! `when: { expr }`, `clear: { expr }` and `fresh:`. Parsed with [`crate::rules::expr`] and unit-checked against
//! every profile the rule can meet, so `sat + dsp` in a rule for AHUs is an error with file and line.

use super::{Errs, Key, RawRule, line_of};
use crate::catalog::{Profile, Unit};
use crate::rules::expr::{self, Ast, Sym, Ty};
use crate::rules::model::{AppliesTo, Condition, ExprRule, InputRef, Trigger};
use crate::util::parse_duration_max;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How long an input's latest reading counts when a rule does not say (`fresh:`).
pub const DEFAULT_FRESH_NS: i64 = 10 * 60 * 1_000_000_000;

/// Most inputs one expression rule may read.
const MAX_INPUTS: usize = 32;

/// `eps_sat: 1.1 K` (a number and a unit) or `delta_os_max: 7` (a plain number).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawParam {
    Num(f64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBrickInput {
    brick: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSiteInput {
    device: String,
    point: String,
}

/// `mat: mixed_air_temp`, `mat: { brick: Mixed_Air_Temperature_Sensor }` or
/// `oat: { device: weather-1, point: temperature }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum RawInput {
    Name(String),
    Brick(RawBrickInput),
    Site(RawSiteInput),
}

/// The file-wide params, inputs and lets, validated once.
pub(super) struct Shared {
    params: BTreeMap<String, (f64, Ty)>,
    inputs: BTreeMap<String, (InputRef, Option<u64>)>,
    lets: BTreeMap<String, (Ast, Option<u64>)>,
}

fn param(e: &mut Errs<'_>, key: String, p: &Spanned<RawParam>) -> Option<(f64, Ty)> {
    let (v, ty) = match &p.value {
        RawParam::Num(v) => (*v, Ty::Num),
        RawParam::Text(t) => {
            let mut w = t.split_whitespace();
            let num = w.next().and_then(|n| n.parse::<f64>().ok());
            let unit = w.next();
            let Some(v) = num else {
                e.push(
                    line_of(p),
                    key,
                    format!("`{t}`: write a number and a unit, like `1.1 K` or `25 Pa`"),
                );
                return None;
            };
            match unit.map(|u| crate::catalog::units::parse_word("unit", u, Unit::parse, Unit::ALL))
            {
                None => (v, Ty::Num),
                Some(Ok(u)) => {
                    // Stored like a point: in the unit its type is evaluated in.
                    let (f, o) = expr::input_conversion(u);
                    (v * f + o, Ty::of_unit(u))
                }
                Some(Err(m)) => {
                    e.push(line_of(p), key, m);
                    return None;
                }
            }
        }
    };
    if !v.is_finite() {
        e.push(line_of(p), key, "must be a finite number");
        return None;
    }
    Some((v, ty))
}

fn input(e: &mut Errs<'_>, key: String, i: &Spanned<RawInput>) -> Option<InputRef> {
    Some(match &i.value {
        RawInput::Name(n) => InputRef::Name(n.clone()),
        RawInput::Brick(b) => {
            if let Err(m) = crate::catalog::brick::classes().check(&b.brick) {
                e.push(line_of(i), key, m);
                return None;
            }
            InputRef::Brick(b.brick.clone())
        }
        RawInput::Site(s) => InputRef::Site {
            device: s.device.clone(),
            point: s.point.clone(),
        },
    })
}

fn valid_name(e: &mut Errs<'_>, key: &str, line: Option<u64>, n: &str) -> bool {
    let mut c = n.chars();
    let ok = matches!(c.next(), Some(x) if x.is_ascii_lowercase() || x == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_');
    if !ok {
        e.push(
            line,
            key.to_string(),
            format!("`{n}`: names in expressions are lowercase letters, digits and `_`"),
        );
    } else if expr::AhuState::NAMES.iter().any(|(s, _)| *s == n) {
        e.push(
            line,
            key.to_string(),
            format!("`{n}` is an operating-state name; pick another name"),
        );
        return false;
    }
    ok
}

fn parse_lets(
    e: &mut Errs<'_>,
    prefix: &str,
    lets: &BTreeMap<String, Spanned<String>>,
) -> BTreeMap<String, (Ast, Option<u64>)> {
    let mut out = BTreeMap::new();
    for (n, t) in lets {
        let key = format!("{prefix}let.{n}");
        if !valid_name(e, &key, line_of(t), n) {
            continue;
        }
        match expr::parse(&t.value) {
            Ok(a) => {
                out.insert(n.clone(), (a, line_of(t)));
            }
            Err(m) => e.push(line_of(t), key, format!("{m}")),
        }
    }
    out
}

impl Shared {
    pub(super) fn parse(
        e: &mut Errs<'_>,
        params: &BTreeMap<String, Spanned<RawParam>>,
        inputs: &BTreeMap<String, Spanned<RawInput>>,
        lets: &BTreeMap<String, Spanned<String>>,
    ) -> Shared {
        let mut s = Shared {
            params: BTreeMap::new(),
            inputs: BTreeMap::new(),
            lets: parse_lets(e, "", lets),
        };
        for (n, p) in params {
            let key = format!("params.{n}");
            if valid_name(e, &key, line_of(p), n) {
                if let Some(v) = param(e, key, p) {
                    s.params.insert(n.clone(), v);
                }
            }
        }
        for (n, i) in inputs {
            let key = format!("inputs.{n}");
            if valid_name(e, &key, line_of(i), n) {
                if let Some(v) = input(e, key, i) {
                    s.inputs.insert(n.clone(), (v, line_of(i)));
                }
            }
        }
        s
    }
}

/// The point of `profile` an input reads, with its unit (`None`: the profile lacks it).
fn input_unit(inp: &InputRef, profile: &Profile, cx: &super::Context<'_>) -> Option<Unit> {
    match inp {
        InputRef::Name(n) => profile.point_index(n).map(|i| profile.points[i].unit),
        InputRef::Brick(b) => profile
            .points_with_brick(b)
            .next()
            .map(|i| profile.points[i].unit),
        InputRef::Site { device, point } => {
            let p = cx.profiles.get(cx.devices.get(device)?)?;
            p.point_index(point).map(|i| p.points[i].unit)
        }
    }
}

fn describe(inp: &InputRef) -> String {
    match inp {
        InputRef::Name(n) => format!("point `{n}`"),
        InputRef::Brick(b) => format!("point of Brick class `{b}`"),
        InputRef::Site { device, point } => format!("point `{point}` of device `{device}`"),
    }
}

/// Validates a rule's expressions (if it has any) and compiles them. `None` for a rule without expressions or
/// with a problem (reported).
#[allow(clippy::too_many_arguments)]
pub(super) fn rule_expression(
    e: &mut Errs<'_>,
    k: Key<'_>,
    sr: &Spanned<RawRule>,
    cx: &super::Context<'_>,
    applies_to: &AppliesTo,
    shared: &Shared,
    when: Option<Trigger>,
    clear: Option<Trigger>,
    unit: Option<Unit>,
) -> Option<Arc<ExprRule>> {
    let r = &sr.value;
    let when_text = r.when.value.expr.as_ref();
    let clear_text = r.clear.as_ref().and_then(|c| c.value.expr.as_ref());
    let has_expr = r.value.is_some() || when_text.is_some() || clear_text.is_some();
    if !has_expr {
        if !r.inputs.is_empty() || !r.lets.is_empty() || !r.params.is_empty() || r.fresh.is_some() {
            e.push(
                line_of(sr),
                k("value"),
                "`inputs`, `params`, `let` and `fresh` belong to rules with `value:` or an `expr` condition",
            );
        }
        return None;
    }
    let before = e.list.len();
    // The rule's names over the file's.
    let mut params = shared.params.clone();
    for (n, p) in &r.params {
        let key = k(&format!("params.{n}"));
        if valid_name(e, &key, line_of(p), n) {
            if let Some(v) = param(e, key, p) {
                params.insert(n.clone(), v);
            }
        }
    }
    let mut inputs = shared.inputs.clone();
    for (n, i) in &r.inputs {
        let key = k(&format!("inputs.{n}"));
        if valid_name(e, &key, line_of(i), n) {
            if let Some(v) = input(e, key, i) {
                inputs.insert(n.clone(), (v, line_of(i)));
            }
        }
    }
    let mut lets = shared.lets.clone();
    lets.extend(parse_lets(e, &k(""), &r.lets));
    let fresh_ns = match &r.fresh {
        None => DEFAULT_FRESH_NS,
        Some(f) => match parse_duration_max(&f.value, super::condition::MAX_RULE_DURATION) {
            Ok(d) if !d.is_zero() => d.as_nanos() as i64,
            Ok(_) => {
                e.push(line_of(f), k("fresh"), "must be longer than 0s");
                0
            }
            Err(m) => {
                e.push(line_of(f), k("fresh"), m);
                0
            }
        },
    };
    // Parse the three expressions.
    let mut parsed: Vec<(&str, String, Option<u64>, Ast)> = Vec::new();
    for (what, key, line, text) in [
        (
            "value",
            k("value"),
            r.value.as_ref().and_then(line_of),
            r.value.as_ref().map(|v| &v.value),
        ),
        ("when", k("when.expr"), line_of(&r.when), when_text),
        (
            "clear",
            k("clear.expr"),
            r.clear.as_ref().and_then(line_of),
            clear_text,
        ),
    ] {
        let Some(text) = text else { continue };
        match expr::parse(text) {
            Ok(a) => parsed.push((what, key, line, a)),
            Err(m) => e.push(line, key, format!("{m}")),
        }
    }
    if when.is_some_and(|t| t.cond.has_thresholds()) && r.value.is_none() {
        e.push(
            line_of(&r.when),
            k("when"),
            "thresholds (above, below, ...) in an expression rule apply to its `value:`; add one, or write `when: { expr: ... }`",
        );
    }
    if let Some(t) = when {
        if !t.cond.has_thresholds() && t.cond != Condition::Expr {
            e.push(
                line_of(&r.when),
                k("when"),
                format!("`{}` watches one point; an expression rule takes `expr` or thresholds on its `value:`", t.cond.name()),
            );
        }
    }
    if clear.is_some_and(|c| c.cond.has_thresholds()) && r.value.is_none() {
        e.push(
            r.clear.as_ref().and_then(line_of),
            k("clear"),
            "thresholds in `clear` apply to `value:`: add one",
        );
    }
    // The inputs the expressions use (through lets too), in the file's order of inputs.
    let mut names = Vec::new();
    for (_, _, _, a) in &parsed {
        a.names(&mut names);
    }
    let mut i = 0;
    while i < names.len() {
        if let Some((a, _)) = lets.get(&names[i]) {
            a.names(&mut names);
        }
        i += 1;
    }
    let used: Vec<(String, InputRef)> = inputs
        .iter()
        .filter(|(n, _)| names.contains(n) && !lets.contains_key(*n) && !params.contains_key(*n))
        .map(|(n, (i, _))| (n.clone(), i.clone()))
        .collect();
    if used.len() > MAX_INPUTS {
        e.push(
            line_of(sr),
            k("inputs"),
            format!("{} inputs: at most {MAX_INPUTS}", used.len()),
        );
    }
    for (_, i) in &used {
        if let InputRef::Site { device, .. } = i {
            if !cx.devices.contains_key(device) {
                e.push(
                    line_of(sr),
                    k("inputs"),
                    format!("site input: device `{device}` is not declared in the site config ([[devices]])"),
                );
            }
        }
    }
    if e.list.len() > before {
        return None;
    }
    // Type-check against every profile the rule can meet (with all its inputs); a rule naming its profile or
    // device must find them there.
    let device_profile = applies_to.device.as_ref().and_then(|d| cx.devices.get(d));
    let exact = applies_to.profile.is_some() || device_profile.is_some();
    let mut typings: Vec<(Option<String>, Vec<Ty>)> = Vec::new();
    for pr in cx
        .profiles
        .values()
        .filter(|p| applies_to.matches_profile(p) && device_profile.is_none_or(|dp| *dp == p.name))
    {
        let units: Vec<Option<Unit>> = used.iter().map(|(_, i)| input_unit(i, pr, cx)).collect();
        if let Some(missing) = units.iter().position(Option::is_none) {
            if exact {
                let (n, i) = &used[missing];
                e.push(
                    inputs.get(n).and_then(|x| x.1).or(line_of(sr)),
                    k(&format!("inputs.{n}")),
                    format!("profile `{}` has no {}", pr.name, describe(i)),
                );
            }
            continue;
        }
        typings.push((
            Some(pr.name.clone()),
            units.into_iter().flatten().map(Ty::of_unit).collect(),
        ));
    }
    if typings.is_empty() {
        // Dormant (no profile has the inputs yet): still check names and syntax, with untyped inputs.
        typings.push((None, vec![Ty::Num; used.len()]));
    }
    let mut out = ExprRule {
        inputs: used.clone(),
        value: None,
        value_ty: Ty::Num,
        when: None,
        clear: None,
        shows: Vec::new(),
        fresh_ns,
    };
    let mut seen_errs: Vec<String> = Vec::new();
    for (pi, (profile, tys)) in typings.iter().enumerate() {
        let resolve = |n: &str| -> Option<Sym> {
            if let Some(s) = used.iter().position(|(u, _)| u == n) {
                return Some(Sym::Input(s as u16, tys[s]));
            }
            if let Some((v, t)) = params.get(n) {
                return Some(Sym::Const(*v, *t));
            }
            lets.get(n).map(|(a, _)| Sym::Let(Box::new(a.clone())))
        };
        let ctx = |m: expr::ExprError| match profile {
            Some(p) if typings.len() > 1 => format!("{m} (inputs of profile `{p}`)"),
            _ => format!("{m}"),
        };
        for (what, key, line, a) in &parsed {
            match expr::compile(a, &resolve) {
                Ok((prog, ty)) => {
                    let bad = match (*what, ty) {
                        ("value", Ty::Bool) => Some(
                            "`value:` is a quantity; a condition belongs in `when: { expr }`"
                                .to_string(),
                        ),
                        ("when" | "clear", t) if t != Ty::Bool => Some(format!(
                            "`expr` must be a condition (a comparison), not {}",
                            match t {
                                Ty::Num => "a number".to_string(),
                                _ => format!("{t:?}"),
                            }
                        )),
                        _ => None,
                    };
                    if let Some(m) = bad {
                        if !seen_errs.contains(&m) {
                            e.push(*line, key.clone(), m.clone());
                            seen_errs.push(m);
                        }
                        continue;
                    }
                    if pi == 0 {
                        match *what {
                            "value" => {
                                out.value = Some(prog);
                                out.value_ty = ty;
                            }
                            "when" => out.when = Some(prog),
                            _ => out.clear = Some(prog),
                        }
                    } else if *what == "value" && ty != out.value_ty && out.value_ty != Ty::Num {
                        e.push(
                            *line,
                            key.clone(),
                            format!(
                                "`value:` is a {:?} for one profile and a {:?} for profile `{}`",
                                out.value_ty,
                                ty,
                                profile.as_deref().unwrap_or("-")
                            ),
                        );
                    }
                }
                Err(m) => {
                    let m = ctx(m);
                    if !seen_errs.contains(&m) {
                        e.push(*line, key.clone(), m.clone());
                        seen_errs.push(m);
                    }
                }
            }
        }
        if pi == 0 {
            for (n, (a, _)) in &lets {
                if names.contains(n) {
                    if let Ok((p, t)) = expr::compile(a, &resolve) {
                        out.shows.push((n.clone(), p, t));
                    }
                }
            }
        }
    }
    if let (Some(u), Some(v)) = (unit, &r.value) {
        let want = out.value_ty.unit();
        if want.is_some_and(|w| w != u) || (want.is_none() && out.value_ty != Ty::Num) {
            e.push(
                line_of(v),
                k("unit"),
                format!(
                    "`value:` is in {} but the rule says `unit: {u}`",
                    want.map(|w| w.as_str()).unwrap_or("no unit")
                ),
            );
        }
    }
    if e.list.len() > before {
        return None;
    }
    Some(Arc::new(out))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{Context, parse_rules};
    use crate::catalog::Profiles;
    use crate::catalog::profile::parse_profile;
    use crate::diag::Diagnostic;
    use crate::rules::Rule;
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    /// An AHU with Brick roles, a weather station, and a meter with phase currents.
    pub(crate) fn profiles() -> Profiles {
        let mut m = Profiles::new();
        for (name, text) in [
            (
                "vav",
                "schema: 1
name: vav
category: hvac
brick: AHU
points:
  - { name: sat, unit: degC, kind: gauge, brick: Supply_Air_Temperature_Sensor, mqtt: { json: /sat } }
  - { name: mixed, unit: degF, kind: gauge, brick: Mixed_Air_Temperature_Sensor, mqtt: { json: /mat } }
  - { name: rat, unit: degC, kind: gauge, brick: Return_Air_Temperature_Sensor, mqtt: { json: /rat } }
  - { name: dsp, unit: kPa, kind: gauge, brick: Supply_Air_Static_Pressure_Sensor, mqtt: { json: /dsp } }
  - { name: fan, unit: percent, kind: gauge, brick: Fan_Speed_Command, mqtt: { json: /fan } }
",
            ),
            (
                "weather",
                "schema: 1
name: weather
category: environment
points:
  - { name: temperature, unit: degC, kind: gauge, mqtt: { json: /t } }
",
            ),
            (
                "meter3",
                "schema: 1
name: meter3
category: electricity
points:
  - { name: current_l1, unit: A, kind: gauge, brick: Current_Sensor, mqtt: { json: /i1 } }
  - { name: current_l2, unit: A, kind: gauge, brick: Current_Sensor, mqtt: { json: /i2 } }
  - { name: current_l3, unit: A, kind: gauge, brick: Current_Sensor, mqtt: { json: /i3 } }
",
            ),
        ] {
            let p = parse_profile(Path::new(&format!("/p/{name}.yaml")), text).unwrap();
            m.insert(p.name.clone(), Arc::new(p));
        }
        m
    }

    pub(crate) fn parse(text: &str) -> (Vec<Rule>, Vec<Diagnostic>) {
        let profiles = profiles();
        let mut devices = BTreeMap::new();
        devices.insert("wx".to_string(), "weather".to_string());
        parse_rules(
            Path::new("/r/fdd.yaml"),
            text,
            &Context {
                profiles: &profiles,
                devices: &devices,
                timezone: Some("UTC"),
            },
        )
    }

    pub(crate) const FILE: &str = r#"schema: 1
params:
  eps: 1.1 K
  eps_dsp: 25 Pa
inputs:
  sat: { brick: Supply_Air_Temperature_Sensor }
  mat: { brick: Mixed_Air_Temperature_Sensor }
  rat: { brick: Return_Air_Temperature_Sensor }
  dsp: { brick: Supply_Air_Static_Pressure_Sensor }
  fan: { brick: Fan_Speed_Command }
  oat: { device: wx, point: temperature }
rules:
  - name: leak
    applies_to: { brick: AHU }
    value: sat - mat
    unit: K
    fresh: 5m
    when: { expr: "fan > 10 && sat < mat - eps", for: 10m }
    clear: { expr: "sat > mat", for: 5m }
    severity: major
    work_order: { title: "{device}: supply {sat} below mixed {mat} (outdoor {oat})" }
"#;

    #[test]
    fn the_documented_shape_loads_with_roles_params_and_a_site_input() {
        let (rules, errs) = parse(FILE);
        assert!(errs.is_empty(), "{errs:?}");
        let x = rules[0].expr.as_ref().unwrap();
        let names: Vec<&str> = x.inputs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["fan", "mat", "sat"]);
        assert_eq!(x.fresh_ns, 300_000_000_000);
        assert_eq!(rules[0].applies_to.brick.as_deref(), Some("AHU"));
        assert_eq!(rules[0].when.hold_ns, 600_000_000_000);
    }

    #[test]
    fn unit_errors_and_unknown_classes_name_file_line_and_key() {
        let (_, errs) = parse(&FILE.replace("value: sat - mat", "value: sat + dsp"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            (errs[0].key.as_str(), errs[0].line),
            ("rules[0].value", Some(15))
        );
        assert!(
            errs[0]
                .message
                .contains("column 5: adding a temperature (degC) and a pressure (Pa)"),
            "{errs:?}"
        );
        assert!(
            errs[0].to_string().starts_with("/r/fdd.yaml:15"),
            "{}",
            errs[0]
        );
        let (_, errs) =
            parse(&FILE.replace("Mixed_Air_Temperature_Sensor", "Mixed_Air_Temp_Sensor"));
        assert_eq!(
            (errs[0].key.as_str(), errs[0].line),
            ("inputs.mat", Some(7)),
            "{errs:?}"
        );
        assert!(errs[0].message.contains("unknown Brick class"), "{errs:?}");
        let (_, errs) = parse(&FILE.replace("{ brick: AHU }", "{ brick: AHUU }"));
        assert_eq!(errs[0].key, "rules[0].applies_to.brick", "{errs:?}");
        let (_, errs) = parse(&FILE.replace("sat < mat - eps", "sat < mat - dsp"));
        assert!(
            errs[0]
                .message
                .contains("subtracting a temperature (degC) and a pressure"),
            "{errs:?}"
        );
        assert_eq!(errs[0].key, "rules[0].when.expr");
        let (_, errs) = parse(&FILE.replace("unit: K", "unit: degC"));
        assert!(errs[0].message.contains("`value:` is in K"), "{errs:?}");
        let (_, errs) = parse(&FILE.replace("fan > 10 && ", "fan + "));
        assert!(
            errs[0].message.contains("must be a condition") || errs[0].message.contains("adding"),
            "{errs:?}"
        );
        let (_, errs) = parse(
            &FILE
                .replace("device: wx", "device: nowhere")
                .replace("(outdoor {oat})", "")
                .replace("fan > 10", "oat > 10"),
        );
        assert!(
            errs[0].message.contains("device `nowhere` is not declared"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_rule_for_a_profile_without_the_role_is_an_error_and_by_brick_it_is_dormant() {
        let (_, errs) = parse(&FILE.replace("{ brick: AHU }", "{ profile: weather }"));
        assert!(
            errs.iter().any(|e| e
                .message
                .contains("profile `weather` has no point of Brick class")),
            "{errs:?}"
        );
        let (rules, errs) = parse(&FILE.replace("{ brick: AHU }", "{ category: electricity }"));
        assert!(errs.is_empty(), "{errs:?}");
        let profiles = profiles();
        assert_eq!(
            crate::rules::RuleSet { rules }.dormant(&profiles).count(),
            1
        );
    }

    #[test]
    fn phase_imbalance_is_a_three_point_rule() {
        let (rules, errs) = parse(
            "schema: 1
rules:
  - name: phase-imbalance
    applies_to: { category: electricity }
    inputs: { l1: current_l1, l2: current_l2, l3: current_l3 }
    value: imbalance(l1, l2, l3)
    unit: percent
    when: { expr: \"avg(l1, l2, l3) >= 5 && imbalance(l1, l2, l3) > 20\", for: 15m }
    severity: minor
",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(rules[0].expr.as_ref().unwrap().inputs.len(), 3);
    }
}
