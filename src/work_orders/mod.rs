//! Work orders: the maintenance tickets alarms open, kept in SQLite under `[state].dir/workorders.sqlite`, and
//! delivered to the site's ticket systems through an outbox.
//!
//! Invariants:
//! - At most one work order that is not resolved per alarm key (rule, device, point), enforced by a unique
//!   partial index. Raising an alarm whose work order is open updates it (count, last value, peak severity);
//!   raising it again within `flap_window` of its automatic resolution reopens it (flapping is one work order).
//! - Every change is a history row (time, actor `rule:NAME` or a person, note, the triggering readings) and, when a
//!   target should hear of it, an outbox row per target, all in one SQLite transaction: a crash never leaves a
//!   change without its notification or the other way round.
//! - Delivery workers (one per target) send outbox rows in order, retrying with backoff until the target
//!   acknowledges; each row has an idempotency key unique per work order and event, so a receiver that sees a
//!   row twice (its answer was lost) can drop the duplicate.
//!
//! Who talks to it: the rules stage (alarm transitions, through a channel to the store thread), the CLI
//! (`caretaker work-orders ...`, directly on the file), the delivery workers (their own connections).

pub mod cli;
pub mod config;
pub mod deliver;
pub mod influx;
pub mod store;

pub use config::{TargetConfig, TargetKind, WorkOrdersConfig};
pub use store::{Store, WorkOrder};

use crate::rules::{Resolve, Severity};

/// What happened to an alarm, as the store sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmKind {
    Raised,
    Repeated,
    Cleared,
}

/// One alarm transition with everything the work order needs, already rendered (no ids, no catalog).
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmEvent {
    pub kind: AlarmKind,
    pub rule: String,
    pub device: String,
    /// Empty for device-level rules (offline).
    pub point: String,
    pub severity: Severity,
    pub title: String,
    pub team: Option<String>,
    pub procedure: Option<String>,
    pub resolve: Resolve,
    pub due_within_ms: Option<i64>,
    pub unit: String,
    pub value: f64,
    pub peak: f64,
    /// Unix milliseconds (reading time).
    pub at_ms: i64,
    /// (Unix ms, value), oldest first.
    pub evidence: Vec<(i64, f64)>,
}

/// Formats Unix milliseconds as RFC 3339 (UTC).
pub fn rfc3339_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    crate::util::now_ns() / 1_000_000
}
