//! Caretaker: an edge daemon that turns building telemetry into time series, work orders and energy figures.
//!
//! Data flow (see ARCHITECTURE.md): sources (MQTT, Modbus) → bounded channel of `Batch` → pipeline (decode,
//! map, route) → InfluxDB queue and writer, plus rules, work orders and energy.

pub mod anomaly;
pub mod api;
pub mod app;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod demo;
pub mod diag;
pub mod energy;
pub mod journal;
pub mod line_protocol;
pub mod pipeline;
pub mod reading;
pub mod rules;
pub mod sinks;
pub mod sources;
pub mod tabular;
pub mod telemetry;
pub mod tls;
pub mod util;
pub mod watchdog;
pub mod work_orders;
