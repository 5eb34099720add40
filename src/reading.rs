//! The unit of data: one value of one point at one time.

use crate::catalog::PointId;

/// How far a reading can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Good,
    /// Read, but from a source that flagged doubt (e.g. a gap-filled estimate).
    Uncertain,
    /// Could not be read (Modbus exception, decode failure); `value` is meaningless. Never written as data.
    Bad,
}

/// One value of one point. Small and `Copy` so batches are cheap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub point: PointId,
    pub value: f64,
    pub quality: Quality,
    /// Unix time in nanoseconds.
    pub at: i64,
}

impl Reading {
    pub fn good(point: PointId, value: f64, at: i64) -> Self {
        Reading {
            point,
            value,
            quality: Quality::Good,
            at,
        }
    }
}
