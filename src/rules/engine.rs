//! The rules engine: turns readings (and device status, and the passing of time) into alarm transitions.
//!
//! Pure synchronous code with no I/O, used the same way live (the pipeline stage) and by `caretaker backtest`.
//! Invariants:
//! - One *instance* per (rule, device, point), holding that alarm's state. Instances of one point are contiguous,
//!   so a reading costs one bounds check plus the instances of its own point: rules that do not apply to a point
//!   cost nothing (they are indexed by point name when a device is bound, not scanned per reading).
//! - Devices are bound lazily: a reading for a point id beyond the bound range binds every new catalog device.
//! - `for` durations are measured on reading timestamps, never on the wall clock; `stale` and `offline` (which
//!   are about the *absence* of readings) are measured on the time given to [`Engine::tick`].
//! - While an alarm is active, a `Repeated` transition is emitted at most once per `repeat_every` of reading time,
//!   so a work order's count and last value follow a long fault without a store write per reading.

use super::expr::{CallState, Ty};
use super::model::{Condition, InputRef, Rule, RuleSet, SignalKind};
use crate::catalog::{Catalog, DeviceIdx, PointId};
use crate::reading::{Quality, Reading};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// A score or value computed outside the engine: anomaly detectors, forecasts, energy baselines. The lead plugs
/// providers in with [`Engine::set_signal`]; without one, signal conditions never hold.
pub trait Signal: Send {
    /// The current value of `kind` for a point (or, with `point: None`, for the whole device) at time `at`.
    fn value(
        &self,
        kind: SignalKind,
        device: DeviceIdx,
        point: Option<PointId>,
        at: i64,
    ) -> Option<f64>;

    /// When the value `value` just returned for `at` started to apply, for signals that describe a past
    /// period (an energy day's deviation from baseline is known only after the day): a rule's `for` is then
    /// measured from there instead of from `at`. Asked only when a `for` starts. Default: `at`.
    fn since(
        &self,
        _kind: SignalKind,
        _device: DeviceIdx,
        _point: Option<PointId>,
        _at: i64,
    ) -> Option<i64> {
        None
    }
}

/// What happened to an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionKind {
    /// The condition held for its `for`: open (or update) a work order.
    Raised,
    /// Still active after `repeat_every`: update the work order's count and last value.
    Repeated,
    /// The clear condition held for its `for`.
    Cleared,
}

/// One alarm transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub kind: TransitionKind,
    /// Index into the engine's [`RuleSet`].
    pub rule: usize,
    pub device: DeviceIdx,
    pub point: Option<PointId>,
    /// The value that caused it (for `stale`: seconds without a reading).
    pub value: f64,
    /// The most extreme value while active (highest for `above`-like rules, lowest for `below`-like ones).
    pub peak: f64,
    /// Nanoseconds: the reading's time, or the tick's for stale/offline.
    pub at: i64,
    /// The latest readings of the point, oldest first: the evidence attached to the work order. For expression
    /// rules: the latest values of `value:`.
    pub evidence: Vec<(i64, f64)>,
    /// Expression rules: each input and `let` with its value at this moment, rendered (`("mat", "12.1 degC")`,
    /// `("state", "heating")`): title placeholders and the work order's evidence. Empty for other rules.
    pub inputs: Vec<(String, String)>,
}

const EVIDENCE: usize = 8;
const UNSET: i64 = i64::MIN;

#[derive(Debug, Clone)]
struct State {
    active: bool,
    pending_since: i64,
    clear_since: i64,
    /// Last good reading (or bind time / first tick), for `stale`.
    last_at: i64,
    /// Reference value and time for `flatline` and `counter_stalled`.
    ref_value: f64,
    ref_at: i64,
    last_repeat_at: i64,
    peak: f64,
    ring: [(i64, f64); EVIDENCE],
    ring_len: u8,
    ring_head: u8,
    /// Values of the `within` window, for `rises_by` / `falls_by`.
    window: Option<VecDeque<(i64, f64)>>,
}

impl State {
    fn new(last_at: i64, windowed: bool) -> Self {
        State {
            active: false,
            pending_since: UNSET,
            clear_since: UNSET,
            last_at,
            ref_value: f64::NAN,
            ref_at: UNSET,
            last_repeat_at: UNSET,
            peak: f64::NAN,
            ring: [(0, 0.0); EVIDENCE],
            ring_len: 0,
            ring_head: 0,
            window: windowed.then(VecDeque::new),
        }
    }

    #[inline]
    fn remember(&mut self, at: i64, v: f64) {
        self.ring[self.ring_head as usize] = (at, v);
        self.ring_head = ((self.ring_head as usize + 1) % EVIDENCE) as u8;
        if (self.ring_len as usize) < EVIDENCE {
            self.ring_len += 1;
        }
    }

    fn evidence(&self) -> Vec<(i64, f64)> {
        let n = self.ring_len as usize;
        let start = (self.ring_head as usize + EVIDENCE - n) % EVIDENCE;
        (0..n).map(|i| self.ring[(start + i) % EVIDENCE]).collect()
    }

    /// Whether the `when` condition (thresholds in the point's unit) holds for reading `v` at `at`, updating the
    /// state it needs (window, reference value). `sig` is the signal provider's value for signal conditions.
    #[inline]
    fn when_holds(&mut self, when: Condition, v: f64, at: i64, sig: Option<f64>) -> bool {
        match when {
            Condition::Above(t) => v > t,
            Condition::Below(t) => v < t,
            Condition::Outside(lo, hi) => v < lo || v > hi,
            Condition::Inside(lo, hi) => v >= lo && v <= hi,
            Condition::RisesBy { by, within_ns } | Condition::FallsBy { by, within_ns } => {
                let w = self.window.get_or_insert_with(Default::default);
                window_guard(w, at);
                while w.front().is_some_and(|(t, _)| *t < at - within_ns) {
                    w.pop_front();
                }
                // A monotonic queue: for rises_by only values that could still be the window's minimum are
                // kept (ascending), for falls_by the maximum (descending); the front is the answer. O(1) amortized.
                let rises = matches!(when, Condition::RisesBy { .. });
                while w
                    .back()
                    .is_some_and(|b| if rises { b.1 >= v } else { b.1 <= v })
                {
                    w.pop_back();
                }
                w.push_back((at, v));
                let extreme = w.front().map(|f| f.1).unwrap_or(v);
                if rises {
                    v - extreme >= by
                } else {
                    extreme - v >= by
                }
            }
            Condition::Cycles { max, within_ns } => {
                let w = self.window.get_or_insert_with(Default::default);
                window_guard(w, at);
                let on = v > 0.5;
                if on && self.ref_value.is_finite() && self.ref_value <= 0.5 {
                    w.push_back((at, v));
                }
                self.ref_value = v;
                while w.front().is_some_and(|(t, _)| *t < at - within_ns) {
                    w.pop_front();
                }
                w.len() > max as usize
            }
            // A reading arrived: whatever was stale is not.
            Condition::Stale { .. } => false,
            Condition::Flatline {
                after_ns,
                tolerance,
            } => {
                if self.ref_at == UNSET || (v - self.ref_value).abs() > tolerance {
                    self.ref_value = v;
                    self.ref_at = at;
                }
                at - self.ref_at >= after_ns
            }
            Condition::CounterStalled { after_ns } => {
                // Any change (an increase, or a reset to a lower value) restarts the clock.
                if self.ref_at == UNSET || v != self.ref_value {
                    self.ref_value = v;
                    self.ref_at = at;
                }
                at - self.ref_at >= after_ns
            }
            Condition::Offline | Condition::Expr => false,
            Condition::Signal { above, .. } => sig.is_some_and(|x| x > above),
        }
    }
}

/// The inputs and `let`s of an expression rule at this moment, rendered for titles and evidence.
fn render_inputs(er: &super::model::ExprRule, slots: &[f64]) -> Vec<(String, String)> {
    let fmt = |v: f64, t: Ty| -> String {
        match t {
            Ty::State => super::expr::AhuState::name_of(v).to_string(),
            Ty::Bool => (if v != 0.0 { "true" } else { "false" }).to_string(),
            t => {
                let s = format!("{v:.2}");
                let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
                match t.unit() {
                    Some(u) => format!("{s} {u}"),
                    None => s,
                }
            }
        }
    };
    let mut out = Vec::with_capacity(er.inputs.len() + er.shows.len());
    // Inputs as the engine read them, in their evaluation unit; the type of a temperature input is known from
    // its conversion only, so units are shown for lets (typed) and left to the title for inputs.
    for (s, (n, _)) in er.inputs.iter().enumerate() {
        let v = slots.get(s).copied().unwrap_or(f64::NAN);
        let t = format!("{v:.2}");
        out.push((
            n.clone(),
            t.trim_end_matches('0').trim_end_matches('.').to_string(),
        ));
    }
    for (n, p, t) in &er.shows {
        let mut scratch: Vec<CallState> = vec![CallState::default(); p.calls];
        out.push((n.clone(), fmt(p.eval(slots, &mut scratch, 0), *t)));
    }
    out
}

/// Most values kept for a `within` window (a point reporting every second keeps 17 minutes).
const WINDOW_MAX: usize = 1024;

/// Keeps a window sane: a reading older than the newest one (out of order, or a replay) restarts it, and it
/// never grows past [`WINDOW_MAX`].
#[inline]
fn window_guard(w: &mut VecDeque<(i64, f64)>, at: i64) {
    if w.back().is_some_and(|b| b.0 > at) {
        w.clear();
    }
    if w.len() >= WINDOW_MAX {
        w.pop_front();
    }
}

/// Two versions of a rule mean the same (where it is written aside).
fn same_rule(a: &Rule, b: &Rule) -> bool {
    let mut b = b.clone();
    b.file.clone_from(&a.file);
    b.line = a.line;
    *a == b
}

/// Whether an active alarm's clear condition holds for reading `v`; without one, when `when` stopped holding.
#[inline]
fn clear_holds(clear: Option<Condition>, v: f64, holds: bool) -> bool {
    match clear {
        Some(Condition::Above(t)) => v > t,
        Some(Condition::Below(t)) => v < t,
        Some(Condition::Outside(lo, hi)) => v < lo || v > hi,
        Some(Condition::Inside(lo, hi)) => v >= lo && v <= hi,
        Some(_) => false,
        None => !holds,
    }
}

/// Whether a clear `Option<Condition>` given to [`clear_holds`] is really an expression's answer.
#[inline]
fn clear_or(over: Option<bool>, clear: Option<Condition>, v: f64, holds: bool) -> bool {
    match over {
        Some(c) => c,
        None => clear_holds(clear, v, holds),
    }
}

/// Why an expression rule was or was not evaluated at its last chance (see [`Engine::expression_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExprStatus {
    /// No input has reported yet.
    Waiting,
    /// Evaluated on the latest reading.
    Evaluated,
    /// Not evaluated: this input (slot) has no reading within `fresh`.
    Stale(u16),
    /// Not evaluated: this input's device (a site input) is not known yet.
    Unresolved(u16),
    /// Evaluated to a non-finite value (a division by zero): skipped.
    NotFinite,
}

/// The per-device state of one expression rule.
#[derive(Debug, Clone)]
struct ExprInst {
    /// Its alarm instance in `Engine::instances`.
    inst: u32,
    /// Per input slot: the point, and the conversion of its values into the expression's units.
    slots: Vec<Option<PointId>>,
    conv: Vec<(f64, f64)>,
    /// Stateful calls (`changes`) of the value, when and clear programs.
    calls: [Vec<CallState>; 3],
    status: ExprStatus,
    /// Time of inputs read but not yet judged: readings of one moment (one MQTT message, one Modbus poll, one
    /// CSV timestamp) are judged together, once, so a half-updated set of inputs never counts.
    pending_at: i64,
    in_dirty: bool,
}

/// Which way is worse, for the peak.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Worse {
    Higher,
    Lower,
    None,
}

#[derive(Debug, Clone)]
struct Instance {
    rule: u32,
    device: DeviceIdx,
    point: Option<PointId>,
    /// Thresholds converted to the point's unit.
    when: Condition,
    when_hold: i64,
    clear: Option<Condition>,
    clear_hold: i64,
    worse: Worse,
    /// The rule has a schedule (kept here so unscheduled rules never touch the rule itself per reading).
    scheduled: bool,
    st: State,
}

/// Engine options.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Reading time between `Repeated` transitions of an active alarm.
    pub repeat_every_ns: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            repeat_every_ns: 15 * 60 * 1_000_000_000,
        }
    }
}

/// The rules engine. See the module docs.
pub struct Engine {
    rules: Arc<RuleSet>,
    opts: Options,
    instances: Vec<Instance>,
    /// Per point id: the range of its instances.
    ranges: Vec<(u32, u32)>,
    /// Per device: its device-level instances (offline, equipment anomaly).
    device_level: Vec<Vec<u32>>,
    /// Instances that time alone can raise (stale, offline with `for`, device-level signals).
    timed: Vec<u32>,
    /// Rules by point name (rules without a point are under "").
    by_point: HashMap<String, Vec<u32>>,
    /// Rules addressing their point by Brick class (`point: { brick: ... }`).
    brick_rules: Vec<u32>,
    /// Expression rules (`value:`, `when: { expr }`).
    expr_rules: Vec<u32>,
    /// Expression rules' per-device state.
    exprs: Vec<ExprInst>,
    /// Per point id: the expression instances reading it (empty for most points).
    expr_of_point: Vec<Vec<u32>>,
    /// Per point id: latest good reading (time, value), kept for points that some expression reads.
    latest: Vec<(i64, f64)>,
    /// Expression instances with a site input whose device was not known at bind time.
    unresolved: Vec<u32>,
    /// Expression instances with a pending time (see `ExprInst::pending_at`).
    dirty: Vec<u32>,
    /// Per rule: (minute, inside) of the last schedule answer.
    sched_cache: Vec<(i64, bool)>,
    /// Latest time seen (reading or tick), for binding new instances.
    now_hint: i64,
    signal: Option<Box<dyn Signal>>,
}

impl Engine {
    pub fn new(rules: Arc<RuleSet>, opts: Options) -> Engine {
        let mut by_point: HashMap<String, Vec<u32>> = HashMap::new();
        let (mut brick_rules, mut expr_rules) = (Vec::new(), Vec::new());
        for (i, r) in rules.rules.iter().enumerate() {
            if r.expr.is_some() {
                expr_rules.push(i as u32);
            } else if r.point_brick.is_some() {
                brick_rules.push(i as u32);
            } else {
                by_point
                    .entry(r.point.clone().unwrap_or_default())
                    .or_default()
                    .push(i as u32);
            }
        }
        Engine {
            sched_cache: vec![(i64::MIN, false); rules.rules.len()],
            rules,
            opts,
            instances: Vec::new(),
            ranges: Vec::new(),
            device_level: Vec::new(),
            timed: Vec::new(),
            by_point,
            brick_rules,
            expr_rules,
            exprs: Vec::new(),
            expr_of_point: Vec::new(),
            latest: Vec::new(),
            unresolved: Vec::new(),
            dirty: Vec::new(),
            now_hint: UNSET,
            signal: None,
        }
    }

    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Plugs in the provider of anomaly scores, forecasts and energy baselines.
    pub fn set_signal(&mut self, s: Box<dyn Signal>) {
        self.signal = Some(s);
    }

    /// Number of (rule, device, point) alarms being tracked.
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// Binds every catalog device not yet bound: creates the alarm instances of the rules that apply to it.
    pub fn bind(&mut self, catalog: &Catalog) {
        let first_device = self.device_level.len();
        for (di, dev) in catalog.all_devices().skip(first_device) {
            if dev.retired {
                // Replaced by a reload: no rule watches it any more (its ids stay for readings in flight).
                self.device_level.push(Vec::new());
                for _ in dev.point_ids() {
                    let at = self.instances.len() as u32;
                    self.ranges.push((at, at));
                }
                continue;
            }
            let mut dl = Vec::new();
            for r in self.by_point.get("").cloned().unwrap_or_default() {
                let rule = &self.rules.rules[r as usize];
                if rule
                    .applies_to
                    .matches(&dev.id, &dev.profile, &dev.location)
                {
                    dl.push(self.instances.len() as u32);
                    self.push_instance(r, di, None, 1.0, 0.0);
                }
            }
            for id in &dl {
                self.timed.push(*id);
            }
            self.device_level.push(dl);
            self.bind_expressions(catalog, di);
            for (pi, pid) in dev.point_ids().enumerate() {
                debug_assert_eq!(pid.0 as usize, self.ranges.len());
                let pd = &dev.profile.points[pi];
                let start = self.instances.len() as u32;
                if catalog.is_disabled(pid) {
                    self.ranges.push((start, start));
                    continue;
                }
                let mut rs = self.by_point.get(&pd.name).cloned().unwrap_or_default();
                if let Some(b) = &pd.brick {
                    rs.extend(
                        self.brick_rules.iter().copied().filter(|&r| {
                            self.rules.rules[r as usize].point_brick.as_ref() == Some(b)
                        }),
                    );
                }
                for &r in rs.iter() {
                    let rule = &self.rules.rules[r as usize];
                    if !rule
                        .applies_to
                        .matches(&dev.id, &dev.profile, &dev.location)
                    {
                        continue;
                    }
                    let (f, o) = rule
                        .unit
                        .and_then(|u| super::unit_conversion(u, pd.unit))
                        .unwrap_or((1.0, 0.0));
                    let timed = matches!(rule.when.cond, Condition::Stale { .. });
                    if timed {
                        self.timed.push(self.instances.len() as u32);
                    }
                    self.push_instance(r, di, Some(pid), f, o);
                }
                self.ranges.push((start, self.instances.len() as u32));
            }
        }
        // Points of devices added between binds keep ids dense; a catalog never shrinks.
        debug_assert_eq!(self.ranges.len(), catalog.point_count());
        if first_device < self.device_level.len() && !self.unresolved.is_empty() {
            self.resolve_site_inputs(catalog);
        }
    }

    /// Creates the expression instances of device `di` (before its points' instances, so those stay contiguous).
    fn bind_expressions(&mut self, catalog: &Catalog, di: DeviceIdx) {
        if self.expr_rules.is_empty() {
            return;
        }
        let n = catalog.point_count();
        if self.expr_of_point.len() < n {
            self.expr_of_point.resize(n, Vec::new());
            self.latest.resize(n, (UNSET, f64::NAN));
        }
        let dev = catalog.device(di);
        for k in 0..self.expr_rules.len() {
            let r = self.expr_rules[k];
            let rule = &self.rules.rules[r as usize];
            if !rule
                .applies_to
                .matches(&dev.id, &dev.profile, &dev.location)
                || !rule.profile_can_meet(&dev.profile)
            {
                continue;
            }
            let Some(x) = rule.expr.clone() else { continue };
            // The rule's point, if it names one, keys its alarm and work order; else the alarm is the device's.
            let point = match (&rule.point, &rule.point_brick) {
                (Some(n), _) => dev.point_id(n),
                (None, Some(b)) => dev
                    .profile
                    .points_with_brick(b)
                    .next()
                    .map(|i| PointId(dev.first_point + i as u32)),
                _ => None,
            };
            let mut slots = Vec::with_capacity(x.inputs.len());
            let mut conv = Vec::with_capacity(x.inputs.len());
            let mut unresolved = false;
            for (_, inp) in &x.inputs {
                let found = match inp {
                    InputRef::Name(n) => dev.profile.point_index(n).map(|i| (dev, i)),
                    InputRef::Brick(b) => dev.profile.points_with_brick(b).next().map(|i| (dev, i)),
                    InputRef::Site { device, point } => catalog
                        .device_by_id(device)
                        .and_then(|(_, d)| d.profile.point_index(point).map(|i| (d, i))),
                };
                match found {
                    Some((d, i)) => {
                        slots.push(Some(PointId(d.first_point + i as u32)));
                        conv.push(super::expr::input_conversion(d.profile.points[i].unit));
                    }
                    None => {
                        unresolved = true;
                        slots.push(None);
                        conv.push((1.0, 0.0));
                    }
                }
            }
            let inst = self.instances.len() as u32;
            self.push_instance(r, di, point, 1.0, 0.0);
            let e = self.exprs.len() as u32;
            let counts = x.call_counts();
            for p in slots.iter().flatten() {
                self.link_input(*p, e);
            }
            self.exprs.push(ExprInst {
                inst,
                slots,
                conv,
                calls: counts.map(|c| vec![CallState::default(); c]),
                status: ExprStatus::Waiting,
                pending_at: UNSET,
                in_dirty: false,
            });
            if unresolved {
                self.unresolved.push(e);
            }
        }
    }

    fn link_input(&mut self, p: PointId, e: u32) {
        let i = p.0 as usize;
        if self.expr_of_point.len() <= i {
            self.expr_of_point.resize(i + 1, Vec::new());
            self.latest.resize(i + 1, (UNSET, f64::NAN));
        }
        if !self.expr_of_point[i].contains(&e) {
            self.expr_of_point[i].push(e);
        }
    }

    /// Site inputs whose device became known since: link them.
    fn resolve_site_inputs(&mut self, catalog: &Catalog) {
        let list = std::mem::take(&mut self.unresolved);
        for e in list {
            let rule = self.instances[self.exprs[e as usize].inst as usize].rule;
            let Some(x) = self.rules.rules[rule as usize].expr.clone() else {
                continue;
            };
            let mut still = false;
            for (s, (_, inp)) in x.inputs.iter().enumerate() {
                if self.exprs[e as usize].slots[s].is_some() {
                    continue;
                }
                let InputRef::Site { device, point } = inp else {
                    continue;
                };
                match catalog
                    .device_by_id(device)
                    .and_then(|(_, d)| d.profile.point_index(point).map(|i| (d, i)))
                {
                    Some((d, i)) => {
                        let pid = PointId(d.first_point + i as u32);
                        let ex = &mut self.exprs[e as usize];
                        ex.slots[s] = Some(pid);
                        ex.conv[s] = super::expr::input_conversion(d.profile.points[i].unit);
                        self.link_input(pid, e);
                    }
                    None => still = true,
                }
            }
            if still {
                self.unresolved.push(e);
            }
        }
    }

    /// Each expression rule's latest evaluation status per device: (rule index, device, status). An input
    /// older than the rule's `fresh` window shows as [`ExprStatus::Stale`] with its slot.
    pub fn expression_status(&self) -> Vec<(usize, DeviceIdx, String)> {
        self.exprs
            .iter()
            .map(|x| {
                let inst = &self.instances[x.inst as usize];
                let rule = &self.rules.rules[inst.rule as usize];
                let name = |s: u16| {
                    rule.expr
                        .as_ref()
                        .and_then(|e| e.inputs.get(s as usize))
                        .map(|(n, _)| n.clone())
                        .unwrap_or_default()
                };
                let text = match x.status {
                    ExprStatus::Waiting => "waiting for readings".to_string(),
                    ExprStatus::Evaluated => "evaluated".to_string(),
                    ExprStatus::Stale(s) => format!("not evaluated: input `{}` is stale", name(s)),
                    ExprStatus::Unresolved(s) => {
                        format!("not evaluated: input `{}` has no device yet", name(s))
                    }
                    ExprStatus::NotFinite => "not evaluated: the value is not finite".to_string(),
                };
                (inst.rule as usize, inst.device, text)
            })
            .collect()
    }

    /// Evaluates expression instance `e` after a reading at `at`.
    fn eval_expr(&mut self, e: usize, at: i64, out: &mut Vec<Transition>) {
        let rules = self.rules.clone();
        let x = &mut self.exprs[e];
        let inst = x.inst as usize;
        let rule = &rules.rules[self.instances[inst].rule as usize];
        let Some(er) = rule.expr.as_deref() else {
            return;
        };
        let mut vals = [0.0f64; 32];
        for (s, slot) in x.slots.iter().enumerate() {
            let Some(p) = slot else {
                x.status = ExprStatus::Unresolved(s as u16);
                return;
            };
            let (t, v) = self.latest[p.0 as usize];
            if t == UNSET || at - t > er.fresh_ns {
                x.status = ExprStatus::Stale(s as u16);
                return;
            }
            let (f, o) = x.conv[s];
            vals[s] = v * f + o;
        }
        let slots = &vals[..x.slots.len()];
        let [cv, cw, cc] = &mut x.calls;
        let holds = er.when.as_ref().map(|p| p.eval(slots, cw, at) != 0.0);
        let clear = er.clear.as_ref().map(|p| p.eval(slots, cc, at) != 0.0);
        let value = match &er.value {
            Some(p) => p.eval(slots, cv, at),
            None => f64::from(u8::from(holds.unwrap_or(false))),
        };
        if !value.is_finite() {
            x.status = ExprStatus::NotFinite;
            return;
        }
        x.status = ExprStatus::Evaluated;
        let before = out.len();
        self.eval_instance(inst, value, at, holds, clear, out);
        if out.len() > before {
            let shown = render_inputs(er, slots);
            for t in &mut out[before..] {
                t.inputs = shown.clone();
            }
        }
    }

    fn push_instance(&mut self, r: u32, device: DeviceIdx, point: Option<PointId>, f: f64, o: f64) {
        let rule: &Rule = &self.rules.rules[r as usize];
        let when = rule.when.cond.convert(f, o);
        let worse = match when {
            Condition::Above(_) | Condition::RisesBy { .. } | Condition::Signal { .. } => {
                Worse::Higher
            }
            Condition::Below(_) | Condition::FallsBy { .. } => Worse::Lower,
            _ => Worse::None,
        };
        let windowed = matches!(
            when,
            Condition::RisesBy { .. } | Condition::FallsBy { .. } | Condition::Cycles { .. }
        );
        self.instances.push(Instance {
            rule: r,
            device,
            point,
            when,
            when_hold: rule.when.hold_ns,
            clear: rule.clear.map(|c| c.cond.convert(f, o)),
            clear_hold: rule.clear.map(|c| c.hold_ns).unwrap_or(0),
            worse,
            scheduled: rule.schedule.is_some(),
            st: State::new(self.now_hint, windowed),
        });
    }

    /// Marks an alarm active without a transition: called at start-up for the work orders the store still has
    /// open, so that a clear after a restart is not missed and a still-present fault does not open another.
    /// Returns whether such an alarm exists under the current rules.
    pub fn restore_active(
        &mut self,
        catalog: &Catalog,
        rule: &str,
        device: &str,
        point: &str,
    ) -> bool {
        self.bind(catalog);
        let Some(r) = self.rules.rules.iter().position(|x| x.name == rule) else {
            return false;
        };
        let Some((di, dev)) = catalog.device_by_id(device) else {
            return false;
        };
        let pid = if point.is_empty() {
            None
        } else {
            match dev.point_id(point) {
                Some(p) => Some(p),
                None => return false,
            }
        };
        for inst in &mut self.instances {
            if inst.rule as usize == r && inst.device == di && inst.point == pid {
                inst.st.active = true;
                return true;
            }
        }
        false
    }

    /// Replaces the rule set (a configuration reload) and carries state over by key. For every (rule, device,
    /// point) of the new rules: when the rule is unchanged (apart from where it is written) and the device kept
    /// its catalog entry, the whole state moves over (pending `for` and stale timers, windows, an active alarm,
    /// its peak and evidence); when the rule or the device changed, an active alarm stays active (as after a
    /// restart) and the timers start afresh. Returns the active alarms that no longer exist under the new
    /// rules or catalog, as (rule, device, point) names: their work orders stay open in the store.
    pub fn reload(
        &mut self,
        rules: Arc<RuleSet>,
        catalog: &Catalog,
    ) -> Vec<(String, String, String)> {
        self.bind(catalog);
        let mut next = Engine::new(rules, self.opts);
        next.signal = self.signal.take();
        next.now_hint = self.now_hint;
        next.bind(catalog);
        let name = |e: &Engine, inst: &Instance| {
            let point = inst
                .point
                .map(|p| catalog.point(p).2.name.clone())
                .unwrap_or_default();
            (
                e.rules.rules[inst.rule as usize].name.clone(),
                catalog.device(inst.device).id.clone(),
                point,
            )
        };
        // Old instances by (rule name, device entry, point id): a kept device keeps its indexes.
        let mut old: HashMap<(&str, DeviceIdx, Option<PointId>), usize> = HashMap::new();
        for (i, inst) in self.instances.iter().enumerate() {
            let rule = self.rules.rules[inst.rule as usize].name.as_str();
            old.insert((rule, inst.device, inst.point), i);
        }
        let mut carried = vec![false; self.instances.len()];
        for inst in &mut next.instances {
            let rule = &next.rules.rules[inst.rule as usize];
            let Some(&i) = old.get(&(rule.name.as_str(), inst.device, inst.point)) else {
                continue;
            };
            let prev = &self.instances[i];
            carried[i] = true;
            if same_rule(&self.rules.rules[prev.rule as usize], rule)
                && prev.when == inst.when
                && prev.clear == inst.clear
            {
                inst.st = prev.st.clone();
            } else if prev.st.active {
                inst.st.active = true;
            }
        }
        drop(old);
        // Active alarms of changed devices (new entries): restored by name, as after a restart.
        let mut lost = Vec::new();
        for (i, prev) in self.instances.iter().enumerate() {
            if carried[i] || !prev.st.active {
                continue;
            }
            let (r, d, p) = name(self, prev);
            if !next.restore_active(catalog, &r, &d, &p) {
                lost.push((r, d, p));
            }
        }
        *self = next;
        lost
    }

    #[inline]
    fn armed(&mut self, rule: u32, at: i64) -> bool {
        let Some(s) = &self.rules.rules[rule as usize].schedule else {
            return true;
        };
        let min = at.div_euclid(60_000_000_000);
        let c = &mut self.sched_cache[rule as usize];
        if c.0 != min {
            *c = (min, s.contains(at));
        }
        c.1
    }

    /// Evaluates one reading against every rule of its point; appends transitions to `out`.
    #[inline]
    pub fn evaluate(&mut self, catalog: &Catalog, r: &Reading, out: &mut Vec<Transition>) {
        let idx = r.point.0 as usize;
        if idx >= self.ranges.len() {
            self.bind(catalog);
            if idx >= self.ranges.len() {
                return; // an id from another catalog: nothing applies
            }
        }
        if r.at > self.now_hint {
            self.now_hint = r.at;
        }
        let (a, b) = self.ranges[idx];
        let exprs = self.expr_of_point.get(idx).is_some_and(|l| !l.is_empty());
        if (a == b && !exprs) || r.quality == Quality::Bad || !r.value.is_finite() {
            return;
        }
        for i in a..b {
            self.eval_instance(i as usize, r.value, r.at, None, None, out);
        }
        if exprs {
            // A reading of a new moment: first judge what the previous moment's readings showed.
            for k in 0..self.expr_of_point[idx].len() {
                let e = self.expr_of_point[idx][k] as usize;
                let p = self.exprs[e].pending_at;
                if p != UNSET && p != r.at {
                    self.exprs[e].pending_at = UNSET;
                    self.eval_expr(e, p, out);
                }
            }
            self.latest[idx] = (r.at, r.value);
            for k in 0..self.expr_of_point[idx].len() {
                let e = self.expr_of_point[idx][k];
                let x = &mut self.exprs[e as usize];
                x.pending_at = r.at;
                if !x.in_dirty {
                    x.in_dirty = true;
                    self.dirty.push(e);
                }
            }
        }
    }

    /// Judges the expression rules whose inputs changed since the last call: at the end of each batch of
    /// readings (the pipeline stage), on every tick, and at the end of a backtest.
    pub fn flush(&mut self, out: &mut Vec<Transition>) {
        let dirty = std::mem::take(&mut self.dirty);
        for &e in &dirty {
            let x = &mut self.exprs[e as usize];
            x.in_dirty = false;
            let p = std::mem::replace(&mut x.pending_at, UNSET);
            if p != UNSET {
                self.eval_expr(e as usize, p, out);
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty; // keep the allocation
        }
    }

    /// One step of an alarm's state machine for value `v` at `at`. Expression rules pass their condition's
    /// answer (`holds`) and their clear expression's (`clear`) instead of testing `v`.
    fn eval_instance(
        &mut self,
        i: usize,
        v: f64,
        at: i64,
        holds_over: Option<bool>,
        clear_over: Option<bool>,
        out: &mut Vec<Transition>,
    ) {
        let (rule, scheduled) = (self.instances[i].rule, self.instances[i].scheduled);
        let armed = !scheduled || self.armed(rule, at);
        let repeat_every = self.opts.repeat_every_ns;
        let signal = self.signal.as_deref();
        let inst = &mut self.instances[i];
        let st = &mut inst.st;
        st.last_at = at;
        st.remember(at, v);
        // A signal (anomaly score, forecast, ...) is asked for once per reading: it may take a lock.
        let sig = match inst.when {
            Condition::Signal { kind, .. } => {
                signal.and_then(|s| s.value(kind, inst.device, inst.point, at))
            }
            _ => None,
        };
        let holds = match holds_over {
            Some(h) => h,
            None => st.when_holds(inst.when, v, at, sig),
        };
        let value = sig.unwrap_or(v);
        if !st.active {
            if holds && armed {
                if st.pending_since == UNSET {
                    st.pending_since = match (inst.when, signal) {
                        (Condition::Signal { kind, .. }, Some(s)) => s
                            .since(kind, inst.device, inst.point, at)
                            .map_or(at, |t| t.min(at)),
                        _ => at,
                    };
                }
                if at - st.pending_since >= inst.when_hold {
                    st.active = true;
                    st.pending_since = UNSET;
                    st.clear_since = UNSET;
                    st.last_repeat_at = at;
                    st.peak = value;
                    out.push(Transition {
                        kind: TransitionKind::Raised,
                        rule: rule as usize,
                        device: inst.device,
                        point: inst.point,
                        value,
                        peak: value,
                        at,
                        evidence: st.evidence(),
                        inputs: Vec::new(),
                    });
                }
            } else {
                st.pending_since = UNSET;
            }
            return;
        }
        // Active: track the peak, then test the clear.
        match inst.worse {
            Worse::Higher if holds && (value > st.peak || st.peak.is_nan()) => st.peak = value,
            Worse::Lower if holds && (value < st.peak || st.peak.is_nan()) => st.peak = value,
            _ => {}
        }
        if clear_or(clear_over, inst.clear, v, holds) {
            if st.clear_since == UNSET {
                st.clear_since = at;
            }
            if at - st.clear_since >= inst.clear_hold {
                st.active = false;
                st.clear_since = UNSET;
                st.pending_since = UNSET;
                out.push(Transition {
                    kind: TransitionKind::Cleared,
                    rule: rule as usize,
                    device: inst.device,
                    point: inst.point,
                    value,
                    peak: st.peak,
                    at,
                    evidence: st.evidence(),
                    inputs: Vec::new(),
                });
            }
        } else {
            st.clear_since = UNSET;
            if holds && st.last_repeat_at == UNSET {
                // Restored after a restart: the repeat clock starts at the first reading.
                st.last_repeat_at = at;
            } else if holds && at - st.last_repeat_at >= repeat_every {
                st.last_repeat_at = at;
                out.push(Transition {
                    kind: TransitionKind::Repeated,
                    rule: rule as usize,
                    device: inst.device,
                    point: inst.point,
                    value,
                    peak: st.peak,
                    at,
                    evidence: st.evidence(),
                    inputs: Vec::new(),
                });
            }
        }
    }

    /// Advances time to `now` (ns): raises `stale` alarms, `offline` alarms whose `for` has passed and
    /// device-level signal alarms. Call it periodically (live: every second; backtest: as data time passes).
    pub fn tick(&mut self, catalog: &Catalog, now: i64, out: &mut Vec<Transition>) {
        self.bind(catalog);
        if !self.dirty.is_empty() {
            self.flush(out);
        }
        if now > self.now_hint {
            self.now_hint = now;
        }
        for k in 0..self.timed.len() {
            let i = self.timed[k] as usize;
            let rule = self.instances[i].rule;
            let armed = self.armed(rule, now);
            let signal = self.signal.as_deref();
            let inst = &mut self.instances[i];
            let st = &mut inst.st;
            if st.last_at == UNSET {
                // Bound before any time was known: the clock starts now.
                st.last_at = now;
            }
            let (holds, value, since) = match inst.when {
                Condition::Stale { after_ns } => (
                    now - st.last_at >= after_ns,
                    (now - st.last_at) as f64 / 1e9,
                    st.last_at + after_ns,
                ),
                // Offline keeps its start in pending_since (set by device_status).
                Condition::Offline => (
                    st.ref_at != UNSET,
                    (now - st.ref_at.max(0)) as f64 / 1e9,
                    st.ref_at,
                ),
                Condition::Signal { kind, above } => {
                    let x = signal.and_then(|s| s.value(kind, inst.device, inst.point, now));
                    (x.is_some_and(|x| x > above), x.unwrap_or(f64::NAN), now)
                }
                _ => continue,
            };
            if !st.active {
                if holds && armed {
                    if st.pending_since == UNSET {
                        st.pending_since = since;
                    }
                    if now - st.pending_since >= inst.when_hold {
                        st.active = true;
                        st.pending_since = UNSET;
                        st.last_repeat_at = now;
                        st.peak = value;
                        out.push(Transition {
                            kind: TransitionKind::Raised,
                            rule: rule as usize,
                            device: inst.device,
                            point: inst.point,
                            value,
                            peak: value,
                            at: now,
                            evidence: st.evidence(),
                            inputs: Vec::new(),
                        });
                    }
                } else {
                    st.pending_since = UNSET;
                }
            } else if !holds && matches!(inst.when, Condition::Signal { .. }) {
                st.active = false;
                out.push(Transition {
                    kind: TransitionKind::Cleared,
                    rule: rule as usize,
                    device: inst.device,
                    point: inst.point,
                    value,
                    peak: st.peak,
                    at: now,
                    evidence: st.evidence(),
                    inputs: Vec::new(),
                });
            }
        }
    }

    /// A source reports a device reachable or not (Modbus: after `offline_after` failed polls). Raises or
    /// clears the device's `offline` alarms; alarms with a `for` are raised by [`Engine::tick`].
    pub fn device_status(
        &mut self,
        catalog: &Catalog,
        device: DeviceIdx,
        online: bool,
        at: i64,
        out: &mut Vec<Transition>,
    ) {
        self.bind(catalog);
        let Some(list) = self.device_level.get(device.0 as usize) else {
            return;
        };
        for &i in list {
            let inst = &mut self.instances[i as usize];
            if inst.when != Condition::Offline {
                continue;
            }
            let st = &mut inst.st;
            if online {
                st.ref_at = UNSET;
                st.pending_since = UNSET;
                if st.active {
                    st.active = false;
                    out.push(Transition {
                        kind: TransitionKind::Cleared,
                        rule: inst.rule as usize,
                        device,
                        point: None,
                        value: 0.0,
                        peak: st.peak,
                        at,
                        evidence: Vec::new(),
                        inputs: Vec::new(),
                    });
                }
            } else if st.ref_at == UNSET {
                st.ref_at = at;
            }
        }
        if !online {
            self.tick(catalog, at, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::rules::{Context, parse_rules};
    use std::collections::BTreeMap;
    use std::path::Path;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_767_225_600 * S; // 2026-01-01T00:00:00Z, a Thursday

    fn setup(rules_yaml: &str) -> (Catalog, Engine) {
        let profiles = crate::rules::load::tests::profiles();
        let devices = BTreeMap::new();
        let (rules, errs) = parse_rules(
            Path::new("/r/t.yaml"),
            rules_yaml,
            &Context {
                profiles: &profiles,
                devices: &devices,
                timezone: Some("UTC"),
            },
        );
        assert!(errs.is_empty(), "{errs:?}");
        let mut cat = Catalog::new("site", profiles);
        let mut loc = BTreeMap::new();
        loc.insert("building".to_string(), "b1".to_string());
        cat.add_device("ahu-1", "test-ahu", loc, true).unwrap();
        cat.add_device("ahu-2", "test-ahu", BTreeMap::new(), true)
            .unwrap();
        let e = Engine::new(
            Arc::new(crate::rules::RuleSet { rules }),
            Options {
                repeat_every_ns: 60 * S,
            },
        );
        (cat, e)
    }

    fn rule(when: &str, extra: &str) -> String {
        format!(
            "schema: 1\nrules:\n  - name: r\n    applies_to: {{ profile: test-ahu }}\n    point: supply_air_temp\n    when: {when}\n    severity: major\n{extra}"
        )
    }

    fn feed(e: &mut Engine, cat: &Catalog, dev: &str, series: &[(i64, f64)]) -> Vec<Transition> {
        let pid = cat
            .device_by_id(dev)
            .unwrap()
            .1
            .point_id("supply_air_temp")
            .unwrap();
        let mut out = Vec::new();
        for &(t, v) in series {
            e.evaluate(cat, &Reading::good(pid, v, T0 + t * S), &mut out);
        }
        out
    }

    fn kinds(t: &[Transition]) -> Vec<(TransitionKind, i64)> {
        t.iter().map(|t| (t.kind, (t.at - T0) / S)).collect()
    }

    #[test]
    fn above_with_for_and_hysteresis_clear() {
        let (cat, mut e) = setup(&rule(
            "{ above: 18.0, for: 10m }",
            "    clear: { below: 17.0, for: 5m }\n",
        ));
        // Breach at 0, a dip at 300 resets the timer, breach again from 360: raised at 960.
        let out = feed(
            &mut e,
            &cat,
            "ahu-1",
            &[
                (0, 19.0),
                (300, 17.5),
                (360, 19.0),
                (900, 19.5),
                (960, 20.0),
            ],
        );
        assert_eq!(kinds(&out), vec![(TransitionKind::Raised, 960)]);
        assert_eq!(out[0].value, 20.0);
        assert_eq!(out[0].evidence.len(), 5);
        // 17.5 is neither a breach nor a clear (hysteresis); below 17 for 5 minutes clears.
        let out = feed(
            &mut e,
            &cat,
            "ahu-1",
            &[(1000, 17.5), (1100, 16.0), (1300, 16.5), (1400, 16.9)],
        );
        assert_eq!(kinds(&out), vec![(TransitionKind::Cleared, 1400)]);
        assert_eq!(out[0].peak, 20.0);
        // The other device has its own state.
        assert!(feed(&mut e, &cat, "ahu-2", &[(0, 30.0)]).is_empty());
    }

    #[test]
    fn repeats_are_throttled_on_reading_time() {
        let (cat, mut e) = setup(&rule("{ above: 18.0 }", ""));
        let series: Vec<(i64, f64)> = (0..200)
            .map(|i| (i * 10, 19.0 + i as f64 / 100.0))
            .collect();
        let out = feed(&mut e, &cat, "ahu-1", &series);
        let k = kinds(&out);
        assert_eq!(k[0], (TransitionKind::Raised, 0));
        // One repeat per 60 s of reading time over 1990 s.
        assert_eq!(
            k.iter().filter(|x| x.0 == TransitionKind::Repeated).count(),
            33
        );
        let out = feed(&mut e, &cat, "ahu-1", &[(2000, 10.0)]);
        assert_eq!(out[0].kind, TransitionKind::Cleared);
        assert!((out[0].peak - 20.99).abs() < 1e-9);
    }

    #[test]
    fn outside_rate_flatline_and_counter() {
        let (cat, mut e) = setup(&rule("{ outside: [10, 30] }", ""));
        let out = feed(
            &mut e,
            &cat,
            "ahu-1",
            &[(0, 20.0), (1, 9.0), (2, 20.0), (3, 31.0)],
        );
        assert_eq!(
            kinds(&out),
            vec![
                (TransitionKind::Raised, 1),
                (TransitionKind::Cleared, 2),
                (TransitionKind::Raised, 3)
            ]
        );
        let (cat, mut e) = setup(&rule("{ rises_by: 5, within: 10m }", ""));
        let out = feed(
            &mut e,
            &cat,
            "ahu-1",
            &[(0, 20.0), (300, 23.0), (599, 25.0), (1300, 26.0)],
        );
        assert_eq!(
            kinds(&out),
            vec![
                (TransitionKind::Raised, 599),
                (TransitionKind::Cleared, 1300)
            ]
        );
        let (cat, mut e) = setup(&rule("{ falls_by: 4, within: 10m }", ""));
        // The peak 25 at 100 is the window's maximum until it ages out at 700.
        let out = feed(
            &mut e,
            &cat,
            "ahu-1",
            &[
                (0, 22.0),
                (100, 25.0),
                (200, 23.0),
                (300, 21.5),
                (400, 20.9),
                (750, 20.0),
            ],
        );
        assert_eq!(
            kinds(&out),
            vec![
                (TransitionKind::Raised, 400),
                (TransitionKind::Cleared, 750)
            ]
        );
        let (cat, mut e) = setup(&rule("{ flatline: 1h, tolerance: 0.01 }", ""));
        let out = feed(
            &mut e,
            &cat,
            "ahu-1",
            &[(0, 20.0), (1800, 20.005), (3600, 20.0), (3700, 20.5)],
        );
        assert_eq!(
            kinds(&out),
            vec![
                (TransitionKind::Raised, 3600),
                (TransitionKind::Cleared, 3700)
            ]
        );
    }

    #[test]
    fn short_cycling_counts_starts_in_the_window() {
        let (cat, mut e) = setup(&rule("{ cycles: 2, within: 1h }", ""));
        // Starts at 100, 700, 1300 (3 in an hour > 2): raised at the third; an hour later they age out.
        let s: Vec<(i64, f64)> = [
            (0, 0.0),
            (100, 1.0),
            (400, 0.0),
            (700, 1.0),
            (1000, 0.0),
            (1300, 1.0),
            (1350, 1.0),
            (5000, 1.0),
        ]
        .to_vec();
        let out = feed(&mut e, &cat, "ahu-1", &s);
        assert_eq!(
            kinds(&out),
            vec![
                (TransitionKind::Raised, 1300),
                (TransitionKind::Cleared, 5000)
            ]
        );
        assert_eq!(out[0].value, 1.0);
    }

    #[test]
    fn windows_survive_readings_out_of_order() {
        let (cat, mut e) = setup(&rule("{ rises_by: 5, within: 10m }", ""));
        // A replay of older readings restarts the window instead of mixing them with newer ones.
        let out = feed(
            &mut e,
            &cat,
            "ahu-1",
            &[
                (1000, 20.0),
                (1100, 21.0),
                (0, 26.0),
                (100, 27.0),
                (200, 31.5),
            ],
        );
        assert_eq!(kinds(&out), vec![(TransitionKind::Raised, 200)]);
        let pid = cat
            .device_by_id("ahu-1")
            .unwrap()
            .1
            .point_id("supply_air_temp")
            .unwrap();
        let mut out = Vec::new();
        for i in 0..3_000 {
            e.evaluate(&cat, &Reading::good(pid, 40.0, T0 + 300 * S + i), &mut out);
        }
        let w = e.instances[0].st.window.as_ref().unwrap().len();
        assert!(w <= WINDOW_MAX, "{w}");
    }

    #[test]
    fn counter_stalled() {
        let y = "schema: 1\nrules:\n  - name: c\n    applies_to: { profile: test-ahu }\n    point: energy\n    when: { counter_stalled: 1h }\n    severity: minor\n";
        let (cat, mut e) = setup(y);
        let pid = cat
            .device_by_id("ahu-1")
            .unwrap()
            .1
            .point_id("energy")
            .unwrap();
        let mut out = Vec::new();
        for (t, v) in [(0, 5.0), (1800, 6.0), (3600, 6.0), (5400, 6.0), (5500, 7.0)] {
            e.evaluate(&cat, &Reading::good(pid, v, T0 + t * S), &mut out);
        }
        assert_eq!(
            kinds(&out),
            vec![
                (TransitionKind::Raised, 5400),
                (TransitionKind::Cleared, 5500)
            ]
        );
    }

    #[test]
    fn stale_includes_devices_that_never_reported() {
        let (cat, mut e) = setup(&rule("{ stale: 15m }", ""));
        let mut out = Vec::new();
        e.tick(&cat, T0, &mut out);
        feed(&mut e, &cat, "ahu-1", &[(600, 20.0)]);
        e.tick(&cat, T0 + 899 * S, &mut out);
        assert!(out.is_empty());
        e.tick(&cat, T0 + 900 * S, &mut out);
        // ahu-2 never reported: stale since the first tick.
        assert_eq!(out.len(), 1);
        assert_eq!(cat.device(out[0].device).id, "ahu-2");
        e.tick(&cat, T0 + 1500 * S, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(cat.device(out[1].device).id, "ahu-1");
        let out = feed(&mut e, &cat, "ahu-1", &[(1600, 20.0)]);
        assert_eq!(kinds(&out), vec![(TransitionKind::Cleared, 1600)]);
    }

    #[test]
    fn a_disabled_point_binds_no_rule_so_it_never_goes_stale() {
        let (mut cat, mut e) = setup(&rule("{ stale: 15m }", ""));
        let d = cat.device_by_id("ahu-2").unwrap().0;
        let errs = cat.apply_overrides(d, &BTreeMap::new(), &["supply_air_temp".to_string()]);
        assert!(errs.is_empty(), "{errs:?}");
        let mut out = Vec::new();
        e.tick(&cat, T0, &mut out);
        feed(&mut e, &cat, "ahu-1", &[(600, 20.0)]);
        e.tick(&cat, T0 + 1000 * S, &mut out);
        assert!(out.is_empty(), "{out:?}");
        e.tick(&cat, T0 + 1500 * S, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(cat.device(out[0].device).id, "ahu-1");
    }

    #[test]
    fn offline_with_for() {
        let y = "schema: 1\nrules:\n  - name: down\n    applies_to: { device: ahu-1 }\n    when: { offline: true, for: 5m }\n    severity: major\n";
        let (cat, mut e) = setup(y);
        let d = cat.device_by_id("ahu-1").unwrap().0;
        let mut out = Vec::new();
        e.device_status(&cat, d, false, T0, &mut out);
        e.tick(&cat, T0 + 200 * S, &mut out);
        assert!(out.is_empty());
        e.tick(&cat, T0 + 300 * S, &mut out);
        assert_eq!(kinds(&out), vec![(TransitionKind::Raised, 300)]);
        e.device_status(&cat, d, true, T0 + 400 * S, &mut out);
        assert_eq!(out[1].kind, TransitionKind::Cleared);
    }

    #[test]
    fn schedule_and_location_and_unit_conversion() {
        // 2026-01-01 is a Thursday; armed only on weekends: nothing fires.
        let (cat, mut e) = setup(&rule(
            "{ above: 18.0 }",
            "    schedule: { days: sat-sun }\n",
        ));
        assert!(feed(&mut e, &cat, "ahu-1", &[(0, 30.0)]).is_empty());
        let y = "schema: 1\nrules:\n  - name: r\n    applies_to: { location: { building: b1 } }\n    point: fan_power\n    unit: kW\n    when: { above: 1.5 }\n    severity: minor\n";
        let (cat, mut e) = setup(y);
        let mut out = Vec::new();
        for dev in ["ahu-1", "ahu-2"] {
            let pid = cat
                .device_by_id(dev)
                .unwrap()
                .1
                .point_id("fan_power")
                .unwrap();
            // fan_power is kW in the profile, stored in W (the canonical power unit): the rule's 1.5 kW is 1500 W.
            e.evaluate(&cat, &Reading::good(pid, 1600.0, T0), &mut out);
        }
        assert_eq!(out.len(), 1, "only ahu-1 is in building b1");
        assert_eq!(cat.device(out[0].device).id, "ahu-1");
        assert_eq!(e.instance_count(), 1);
    }

    #[test]
    fn restored_alarms_clear_after_a_restart() {
        let (cat, mut e) = setup(&rule("{ above: 18.0 }", ""));
        assert!(e.restore_active(&cat, "r", "ahu-1", "supply_air_temp"));
        assert!(!e.restore_active(&cat, "gone", "ahu-1", "supply_air_temp"));
        // Still breaching: no second raise. Then it clears.
        let out = feed(&mut e, &cat, "ahu-1", &[(0, 19.0), (10, 15.0)]);
        assert_eq!(kinds(&out), vec![(TransitionKind::Cleared, 10)]);
    }

    #[test]
    fn a_reload_keeps_pending_timers_of_unchanged_rules_and_restarts_changed_ones() {
        let two = "schema: 1\nrules:\n  - name: hot\n    applies_to: { profile: test-ahu }\n    point: supply_air_temp\n    when: { above: 18.0, for: 10m }\n    severity: major\n  - name: hotter\n    applies_to: { profile: test-ahu }\n    point: supply_air_temp\n    when: { above: 25.0, for: 10m }\n    severity: major\n";
        let (cat, mut e) = setup(two);
        // Both pending since 0; `hot` unchanged (moved down a line), `hotter`'s threshold changed.
        assert!(feed(&mut e, &cat, "ahu-1", &[(0, 30.0), (300, 30.0)]).is_empty());
        let profiles = crate::rules::load::tests::profiles();
        let devices = BTreeMap::new();
        let cx = Context {
            profiles: &profiles,
            devices: &devices,
            timezone: Some("UTC"),
        };
        let changed = format!("# a comment\n{}", two.replace("above: 25.0", "above: 26.0"));
        let (rules, errs) = parse_rules(Path::new("/r/t.yaml"), &changed, &cx);
        assert!(errs.is_empty(), "{errs:?}");
        let lost = e.reload(Arc::new(crate::rules::RuleSet { rules }), &cat);
        assert!(lost.is_empty());
        let raised = |out: Vec<Transition>, e: &Engine| -> Vec<(String, i64)> {
            out.iter()
                .filter(|t| t.kind == TransitionKind::Raised)
                .map(|t| (e.rules().rules[t.rule].name.clone(), (t.at - T0) / S))
                .collect()
        };
        let out = feed(&mut e, &cat, "ahu-1", &[(600, 30.0), (900, 30.0)]);
        // `hot` completes its 10 minutes on schedule (at 600, not 600 after the reload); `hotter` starts over.
        assert_eq!(raised(out, &e), vec![("hot".to_string(), 600)]);
        let out = feed(&mut e, &cat, "ahu-1", &[(1200, 30.0)]);
        assert_eq!(raised(out, &e), vec![("hotter".to_string(), 1200)]);
        // A rule removed while active: reported, so its work order is known to stay open.
        let (rules, _) = parse_rules(Path::new("/r/t.yaml"), &rule("{ above: 99.0 }", ""), &cx);
        let lost = e.reload(Arc::new(crate::rules::RuleSet { rules }), &cat);
        assert_eq!(lost.len(), 2, "{lost:?}");
        assert!(lost.contains(&("hot".into(), "ahu-1".into(), "supply_air_temp".into())));
    }

    #[test]
    fn a_changed_device_gets_new_ids_and_keeps_its_active_alarm() {
        let (mut cat, mut e) = setup(&rule("{ above: 18.0 }", ""));
        let out = feed(&mut e, &cat, "ahu-1", &[(0, 30.0)]);
        assert_eq!(kinds(&out), vec![(TransitionKind::Raised, 0)]);
        let old_pid = cat
            .device_by_id("ahu-1")
            .unwrap()
            .1
            .point_id("supply_air_temp");
        // The reloaded catalog moves ahu-1 to another building and drops ahu-2.
        let mut new = Catalog::new("site", cat.profiles.clone());
        let loc = BTreeMap::from([("building".to_string(), "b2".to_string())]);
        new.add_device("ahu-1", "test-ahu", loc, true).unwrap();
        let diff = cat.reload_from(&new);
        assert_eq!(diff.changed, ["ahu-1"]);
        assert_eq!(diff.removed, ["ahu-2"]);
        assert!(cat.device_by_id("ahu-2").is_none());
        assert_eq!(cat.devices().count(), 1);
        let new_pid = cat
            .device_by_id("ahu-1")
            .unwrap()
            .1
            .point_id("supply_air_temp");
        assert_ne!(old_pid, new_pid);
        assert!(e.reload(e.rules().clone(), &cat).is_empty());
        // Still breaching: no second raise; then the clear is seen on the new entry.
        let out = feed(&mut e, &cat, "ahu-1", &[(10, 30.0), (20, 10.0)]);
        assert_eq!(kinds(&out), vec![(TransitionKind::Cleared, 20)]);
        // A reading in flight with the old id is not an error (its device is retired: no rule watches it).
        let mut out = Vec::new();
        e.evaluate(&cat, &Reading::good(old_pid.unwrap(), 99.0, T0), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn signals_come_from_a_provider() {
        struct Fixed;
        impl Signal for Fixed {
            fn value(
                &self,
                _: SignalKind,
                _: DeviceIdx,
                _: Option<PointId>,
                at: i64,
            ) -> Option<f64> {
                Some(if at >= T0 + 100 * S { 0.95 } else { 0.1 })
            }
        }
        let (cat, mut e) = setup(&rule("{ anomaly: { score_above: 0.9 } }", ""));
        e.set_signal(Box::new(Fixed));
        let out = feed(&mut e, &cat, "ahu-1", &[(0, 20.0), (100, 20.0)]);
        assert_eq!(kinds(&out), vec![(TransitionKind::Raised, 100)]);
        assert_eq!(out[0].value, 0.95);
    }
}

#[cfg(test)]
mod expr_tests {
    use super::*;
    use crate::rules::load::expression_tests::{FILE, parse, profiles};
    use std::collections::BTreeMap;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_767_225_600 * S;

    fn setup(text: &str) -> (Catalog, Engine) {
        let (rules, errs) = parse(text);
        assert!(errs.is_empty(), "{errs:?}");
        let mut cat = Catalog::new("site", profiles());
        cat.add_device("ahu-1", "vav", BTreeMap::new(), true)
            .unwrap();
        cat.add_device("wx", "weather", BTreeMap::new(), true)
            .unwrap();
        let e = Engine::new(
            Arc::new(RuleSet { rules }),
            Options {
                repeat_every_ns: 3600 * S,
            },
        );
        (cat, e)
    }

    /// Feeds one moment of the AHU (sat degC, mat degF as the profile says, fan %) and flushes.
    fn moment(
        e: &mut Engine,
        cat: &Catalog,
        t: i64,
        sat: f64,
        mat_f: f64,
        fan: f64,
    ) -> Vec<Transition> {
        let d = cat.device_by_id("ahu-1").unwrap().1;
        let mut out = Vec::new();
        for (p, v) in [
            ("sat", sat),
            ("mixed", mat_f),
            ("fan", fan),
            ("rat", 21.0),
            ("dsp", 0.25),
        ] {
            e.evaluate(
                cat,
                &Reading::good(d.point_id(p).unwrap(), v, T0 + t * S),
                &mut out,
            );
        }
        e.flush(&mut out);
        out
    }

    #[test]
    fn a_multi_point_condition_holds_for_its_for_and_clears_with_its_clear() {
        let (cat, mut e) = setup(FILE);
        // mat 59 degF = 15 degC; supply 12 degC: 3 K colder than mixed air (> eps 1.1 K) with the fan on.
        let mut all = Vec::new();
        for m in 0..=10 {
            all.extend(moment(&mut e, &cat, m * 60, 12.0, 59.0, 80.0));
        }
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(
            (all[0].kind, all[0].at),
            (TransitionKind::Raised, T0 + 600 * S)
        );
        assert!((all[0].value - -3.0).abs() < 1e-9, "{}", all[0].value);
        assert_eq!(all[0].point, None);
        let shown: BTreeMap<_, _> = all[0].inputs.iter().cloned().collect();
        assert_eq!(shown["sat"], "12");
        assert_eq!(shown["mat"], "15");
        // Between `when` and `clear` (hysteresis): stays active; above mixed air for 5 minutes: cleared.
        assert!(moment(&mut e, &cat, 700, 14.5, 59.0, 80.0).is_empty());
        let mut out = Vec::new();
        for m in 0..=5 {
            out.extend(moment(&mut e, &cat, 800 + m * 60, 15.5, 59.0, 80.0));
        }
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].kind, out[0].at),
            (TransitionKind::Cleared, T0 + 1100 * S)
        );
    }

    #[test]
    fn stale_inputs_stop_evaluation_and_say_so() {
        let (cat, mut e) = setup(FILE);
        assert!(moment(&mut e, &cat, 0, 12.0, 59.0, 80.0).is_empty());
        let d = cat.device_by_id("ahu-1").unwrap().1;
        let mut out = Vec::new();
        // Only sat keeps reporting: after 5 minutes (fresh) the others are stale and nothing is judged.
        for m in 1..=20 {
            e.evaluate(
                &cat,
                &Reading::good(d.point_id("sat").unwrap(), 12.0, T0 + m * 60 * S),
                &mut out,
            );
            e.flush(&mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        let st = e.expression_status();
        assert_eq!(st.len(), 1);
        assert!(st[0].2.contains("is stale"), "{st:?}");
    }

    #[test]
    fn the_readings_of_one_moment_are_judged_together() {
        // fan > 10 && sat < mat - eps: with `sat` first and `fan` last in a message, judging after each reading
        // would see the new sat with the old fan. Judged once per moment, a fan stop never raises.
        let (cat, mut e) = setup(&FILE.replace("for: 10m", "for: 0s"));
        assert!(moment(&mut e, &cat, 0, 16.0, 59.0, 0.0).is_empty());
        assert!(moment(&mut e, &cat, 60, 12.0, 59.0, 0.0).is_empty());
        assert_eq!(moment(&mut e, &cat, 120, 12.0, 59.0, 80.0).len(), 1);
    }
}
