//! The engine in the daemon: a pipeline [`Stage`] for readings, a timer for stale/offline, and the
//! `device_status` entry point for sources. All three share one [`RulesHost`] behind a mutex (locked once per
//! batch or tick: uncontended in practice). Transitions leave as rendered [`AlarmEvent`]s on a channel to the
//! work-order store's thread, so the pipeline never waits on SQLite.

use super::alarm::{AlarmEvent, AlarmKind};
use super::engine::{Engine, Transition, TransitionKind};
use super::model::{Rule, RuleSet};
use crate::catalog::{Catalog, DeviceIdx};
use crate::pipeline::Stage;
use crate::reading::{Quality, Reading};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

/// The engine plus where its transitions go.
pub struct RulesHost {
    pub engine: Engine,
    site: String,
    tx: Option<Sender<AlarmEvent>>,
    buf: Vec<Transition>,
    /// Active alarms from the store whose device the catalog does not know yet (MQTT devices appear on their
    /// first message): restored as soon as it does.
    pub pending_restore: Vec<(String, String, String)>,
    restore_checked_devices: usize,
}

pub type SharedRules = Arc<Mutex<RulesHost>>;

impl RulesHost {
    pub fn new(engine: Engine, site: &str, tx: Sender<AlarmEvent>) -> Self {
        RulesHost {
            engine,
            site: site.to_string(),
            tx: Some(tx),
            buf: Vec::new(),
            pending_restore: Vec::new(),
            restore_checked_devices: 0,
        }
    }

    pub fn shared(self) -> SharedRules {
        Arc::new(Mutex::new(self))
    }

    fn emit(&mut self, catalog: &Catalog) {
        if self.buf.is_empty() {
            return;
        }
        let rules = self.engine.rules().clone();
        for t in self.buf.drain(..) {
            let ev = to_event(&rules, catalog, &self.site, &t);
            tracing::info!(rule = %ev.rule, device = %ev.device, point = %ev.point, value = ev.value,
                kind = ?ev.kind, "alarm");
            if let Some(tx) = &self.tx {
                if tx.send(ev).is_err() {
                    tracing::error!("work-order store stopped; alarm transition not recorded");
                }
            }
        }
    }

    pub fn process(&mut self, catalog: &Catalog, readings: &[Reading]) {
        if !self.pending_restore.is_empty()
            && catalog.device_count() != self.restore_checked_devices
        {
            self.restore_checked_devices = catalog.device_count();
            let engine = &mut self.engine;
            self.pending_restore.retain(|(r, d, p)| {
                catalog.device_by_id(d).is_none() || !engine.restore_active(catalog, r, d, p)
            });
        }
        let mut buf = std::mem::take(&mut self.buf);
        for r in readings {
            self.engine.evaluate(catalog, r, &mut buf);
            // Modbus devices report reachability as their `online` point (1 answering, 0 after `offline_after`
            // failed polls): that is what `offline` conditions watch.
            let (dev, _, def) = catalog.point(r.point);
            if def.name == "online" && r.quality == Quality::Good {
                self.engine
                    .device_status(catalog, dev, r.value >= 0.5, r.at, &mut buf);
            }
        }
        // Expression rules judge the batch's readings of one moment together.
        self.engine.flush(&mut buf);
        self.buf = buf;
        self.emit(catalog);
    }

    pub fn tick(&mut self, catalog: &Catalog, now_ns: i64) {
        let mut buf = std::mem::take(&mut self.buf);
        self.engine.tick(catalog, now_ns, &mut buf);
        self.buf = buf;
        self.emit(catalog);
    }

    /// A source reports a device reachable or not (the Modbus poller after `offline_after` failures).
    pub fn device_status(
        &mut self,
        catalog: &Catalog,
        device: DeviceIdx,
        online: bool,
        at_ns: i64,
    ) {
        let mut buf = std::mem::take(&mut self.buf);
        self.engine
            .device_status(catalog, device, online, at_ns, &mut buf);
        self.buf = buf;
        self.emit(catalog);
    }

    /// A configuration reload: the engine takes the new rules and keeps the state of unchanged keys (see
    /// [`Engine::reload`]). Returns the active alarms that no longer exist (their work orders stay open).
    pub fn reload(
        &mut self,
        rules: Arc<RuleSet>,
        catalog: &Catalog,
    ) -> Vec<(String, String, String)> {
        // Transitions of the old rules are rendered with them before the swap.
        self.emit(catalog);
        let lost = self.engine.reload(rules, catalog);
        self.restore_checked_devices = 0;
        lost
    }

    /// Stops sending (at shutdown, so the store thread sees the channel close).
    pub fn close(&mut self) {
        self.tx = None;
    }
}

/// The pipeline stage.
pub struct RulesStage(pub SharedRules);

impl Stage for RulesStage {
    fn name(&self) -> &'static str {
        "rules"
    }
    fn process(&mut self, catalog: &Catalog, readings: &[Reading]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .process(catalog, readings);
    }
}

fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// Renders a title template: `{device}`, `{point}`, `{value}`, `{unit}`, `{rule}`, `{site}`, `{severity}`,
/// `{profile}` and the device's location tags (`{building}`, ...); unknown names render as `-`.
pub fn render(template: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => {
                let name = &rest[start + 1..start + end];
                out.push_str(&vars(name.trim()).unwrap_or_else(|| "-".into()));
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Turns an engine transition into the store's event (names, rendered title).
pub fn to_event(rules: &RuleSet, catalog: &Catalog, site: &str, t: &Transition) -> AlarmEvent {
    let rule: &Rule = &rules.rules[t.rule];
    let dev = catalog.device(t.device);
    let (point, unit) = match t.point {
        Some(p) => {
            let (_, _, pd) = catalog.point(p);
            (pd.name.clone(), pd.unit.as_str().to_string())
        }
        None => (String::new(), String::new()),
    };
    let title = render(&rule.work_order.title, &|name| {
        Some(match name {
            "device" => dev.id.clone(),
            "point" => point.clone(),
            "value" => fmt_value(t.value),
            "peak" => fmt_value(t.peak),
            "unit" => unit.clone(),
            "rule" => rule.name.clone(),
            "site" => site.to_string(),
            "severity" => rule.severity.as_str().to_string(),
            "profile" => dev.profile.name.clone(),
            other => {
                // Expression rules: their inputs and lets (`{mat}`, `{state}`) before location tags.
                if let Some((_, v)) = t.inputs.iter().find(|(n, _)| n == other) {
                    return Some(v.clone());
                }
                return dev.location.get(other).cloned();
            }
        })
    });
    // Expression rules carry the values they judged: the work order lists them under the procedure.
    let procedure = if t.inputs.is_empty() {
        rule.work_order.procedure.clone()
    } else {
        let ev: Vec<String> = t.inputs.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        let line = format!("Evidence ({}): {}", rule.name, ev.join(", "));
        Some(match &rule.work_order.procedure {
            Some(p) => format!("{}\n\n{line}", p.trim_end()),
            None => line,
        })
    };
    AlarmEvent {
        kind: match t.kind {
            TransitionKind::Raised => AlarmKind::Raised,
            TransitionKind::Repeated => AlarmKind::Repeated,
            TransitionKind::Cleared => AlarmKind::Cleared,
        },
        rule: rule.name.clone(),
        device: dev.id.clone(),
        point,
        severity: rule.severity,
        title,
        team: rule.work_order.team.clone(),
        procedure,
        resolve: rule.work_order.resolve,
        due_within_ms: rule.work_order.due_within.map(|d| d.as_millis() as i64),
        unit,
        value: t.value,
        peak: t.peak,
        at_ms: t.at.div_euclid(1_000_000),
        evidence: t
            .evidence
            .iter()
            .map(|&(at, v)| (at.div_euclid(1_000_000), v))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_render_known_names_and_dash_the_rest() {
        let f = |n: &str| match n {
            "device" => Some("ahu-3".to_string()),
            "value" => Some(fmt_value(19.456)),
            _ => None,
        };
        assert_eq!(
            render("AHU {device} supply air {value} degC in {building}", &f),
            "AHU ahu-3 supply air 19.46 degC in -"
        );
        assert_eq!(render("no vars {", &f), "no vars {");
        assert_eq!(fmt_value(20.0), "20");
        assert_eq!(fmt_value(f64::NAN), "-");
    }
}
