//! Rules: `rules/*.yaml` files (`schema: 1`) that say when a point's readings become an alarm, and what work
//! order the alarm opens.
//!
//! Loading goes raw → validated like the profiles: serde-saphyr fills raw structs with line numbers, then
//! [`load_dirs`] validates each rule against the site's profiles (unknown profile or point, a unit of another
//! dimension, a counter condition on a gauge) and lists every problem with file and line. Nothing past this
//! module sees raw YAML. The engine ([`engine::Engine`]) evaluates the validated [`Rule`]s; it is pure
//! synchronous code, driven by the pipeline ([`stage::RulesStage`]) live and by `caretaker backtest` on history.
//!
//! Layout: [`model`] holds the validated types, [`load`] the raw YAML and its validation, [`alarm`] the alarm
//! types shared with `work_orders` (which depends on nothing else here).

pub mod alarm;
pub mod engine;
pub mod expr;
pub mod load;
pub mod model;
pub mod schedule;
pub mod signals;
pub mod stage;

pub use crate::catalog::units::unit_conversion;
pub use alarm::{Resolve, Severity};
pub use load::{Context, SCHEMA, load_dirs, parse_rules};
pub use model::{
    AppliesTo, Condition, ExprRule, InputRef, Rule, RuleSet, SignalKind, Trigger, WorkOrderSpec,
};
