//! Rollups and reports from the local store: consumption per period (hour, day, ISO week, month in the site's
//! time zone) and group (device, category or a location tag), with cost, baseline, after-hours consumption and
//! demand peak; plus what the HTML report draws (daily totals against baseline, hour-by-day heat map, top
//! after-hours consumers, monthly peaks).
//!
//! One pass: each meter's slots are read day-row by day-row into a dense array covering the report range plus
//! the baseline look-back, then folded into the rows. Memory is one meter's array at a time (plus the terms of
//! virtual meters), whatever the number of meters.
//!
//! - **baseline**: per hour, the median of the same local hour-of-week over the previous `baseline_weeks`
//!   weeks (at least half of them must have data); a period's baseline is the sum over its hours, or `null` when
//!   fewer than half of its hours have one.
//! - **demand peak** (`peak_kw`): the largest settlement-interval average power of the group in the period
//!   (coincident for groups of several meters); kWh meters only.
//! - **cost**: energy × the price in force at each slot's local time, from the tariff valid on that local date
//!   (a new tariff never re-prices the past), plus the standing charge per meter and day (spread over the day's
//!   slots that hold data). Demand charges (monthly peak of each meter × `demand_per_kw_month`) are added to
//!   month rows with `--by month`, and to the totals.
//!
//! Building the rows is separate from rendering them:
//! - [`build`](fn@build): the entry point (which meters, virtual meters, the store pass); [`clock`]: per-slot
//!   facts shared by every meter; [`fold`]: one meter's slots into the rows and the HTML extras; [`baseline`]:
//!   hour-of-week medians, weather correction and degree days.
//! - [`render`]: table, CSV and JSON; [`html`]: the HTML report.

mod baseline;
mod build;
mod clock;
mod fold;
pub mod html;
mod produce;
mod render;
#[cfg(test)]
mod tests;

pub use build::build;
pub use produce::{Format, ProduceError, Produced, Request, produce};
pub use render::{to_csv, to_json, to_table};

use anyhow::Context;
use jiff::civil::Date;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    Hour,
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group {
    Device,
    Category,
    /// A location tag (`building`, `floor`, ...).
    Tag(String),
}

impl Group {
    pub fn parse(s: &str) -> Group {
        match s {
            "device" => Group::Device,
            "category" => Group::Category,
            t => Group::Tag(t.to_string()),
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Group::Device => "device",
            Group::Category => "category",
            Group::Tag(t) => t,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Query {
    pub from: Date,
    /// Exclusive.
    pub to: Date,
    pub by: By,
    pub group: Group,
    /// Only these devices (and virtual meters).
    pub devices: Option<Vec<String>>,
}

/// One row of the report (the JSON contract: period, group, consumption, unit, cost, baseline, estimated; the
/// other fields are additions).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub period: String,
    pub group: String,
    pub consumption: f64,
    pub unit: String,
    pub cost: Option<f64>,
    pub baseline: Option<f64>,
    pub estimated: bool,
    pub derived: bool,
    pub after_hours: f64,
    pub peak_kw: Option<f64>,
    /// Heating degree days of the period (with `[energy.degree_days]` and outdoor temperatures in the store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hdd: Option<f64>,
    /// What the group's export meters counted (role `export`), when it has any; not in `consumption`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<f64>,
    /// What the group's generation (PV) meters counted (role `generation`), when it has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<f64>,
    /// Net consumption: `consumption - export`, when the group has export meters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<f64>,
}

/// After-hours consumption of one meter over the report range.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AfterHours {
    pub device: String,
    pub unit: String,
    pub after_hours: f64,
    pub total: f64,
    /// Average power outside opening hours (base load), kW.
    pub base_load_kw: Option<f64>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    #[serde(skip)]
    pub meta: Meta,
}

/// What the HTML report draws besides the rows.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub site: String,
    pub timezone: String,
    pub from: Option<Date>,
    pub to: Option<Date>,
    pub currency: Option<String>,
    /// Site totals per unit: (consumption, cost, estimated share 0..1).
    pub totals: BTreeMap<String, (f64, Option<f64>, f64)>,
    pub demand_charges: f64,
    /// Per local day, site kWh (real meters only), and its baseline.
    pub days: Vec<(Date, f64, Option<f64>)>,
    /// Per local day, kWh per local hour of day.
    pub heat: Vec<[f64; 24]>,
    pub after_hours: Vec<AfterHours>,
    /// Per month: the site's coincident peak kW and when it happened.
    pub peaks: Vec<(String, f64, String)>,
    pub meters: usize,
    /// Per unit: site export and generation (meters with those roles).
    pub side_totals: BTreeMap<String, (f64, f64)>,
    /// Meter events in the range per device: kind → count (gaps, resets, wraps, glitches, late readings).
    pub events: BTreeMap<String, BTreeMap<String, i64>>,
}

/// Parses `--from`/`--to`: a local date (`2026-01-05`).
pub fn parse_day(s: &str, what: &str) -> anyhow::Result<Date> {
    s.parse::<Date>()
        .with_context(|| format!("{what} `{s}` is not a date like 2026-01-05"))
}
