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
//!
//! The alarm types the store consumes ([`AlarmEvent`](crate::rules::alarm::AlarmEvent), severity, resolve mode)
//! live in `crate::rules::alarm`, the only part of `rules` this module's model depends on.

pub mod config;
pub mod deliver;
pub mod influx;
pub mod query;
pub mod silence;
pub mod store;

pub use config::{TargetConfig, TargetKind, WorkOrdersConfig};
pub use store::{Store, WorkOrder};

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
