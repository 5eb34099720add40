//! Wiring: load and validate a site (`caretaker check`), then start its tasks (`caretaker run`) and stop them
//! in order on SIGINT/SIGTERM: sources first, then the pipeline drains, then the writer flushes.
//!
//! - [`load`]: config + profiles + catalog + rules, every problem listed at once.
//! - [`run`]: starts the InfluxDB sink, the pipeline stages, the sources, and the ordered shutdown.
//! - [`work_orders`]: the rules engine, the work-order store thread, the stale/offline timer and the delivery
//!   workers, started and stopped together.
//!
//! This is the only layer that knows every stage; the stages know the model below them and nothing above.

mod load;
pub mod run;
mod sink;
pub mod work_orders;

pub use load::{Loaded, bacnet_devices, load, modbus_devices};
pub use run::{Reload, run, run_site, run_until, run_until_with, wait_for_signal};
