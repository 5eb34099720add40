//! Query strings and JSON bodies, read strictly: a wrong parameter or field is a 400 that names it.

use super::error::{ApiError, ApiResult};
use axum::body::Bytes;
use serde_json::Value;

/// Query parameters as (key, value) pairs in order (repeated keys kept).
pub fn query_pairs(q: &Option<String>) -> ApiResult<Vec<(String, String)>> {
    match q {
        None => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .map_err(|e| ApiError::field("query", format!("cannot read the query string: {e}"))),
    }
}

/// Fails on a parameter not in `allowed` (so a typo is an error, not a silently ignored filter). `_` is a
/// cache-buster and always allowed.
pub fn only(pairs: &[(String, String)], allowed: &[&str]) -> ApiResult<()> {
    for (k, _) in pairs {
        if k != "_" && !allowed.contains(&k.as_str()) {
            return Err(ApiError::field(
                k,
                format!("unknown parameter; expected one of {}", allowed.join(", ")),
            ));
        }
    }
    Ok(())
}

pub fn one<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// A JSON object body; 400 when it is not one.
pub fn body_object(body: &Bytes) -> ApiResult<serde_json::Map<String, Value>> {
    if body.is_empty() {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::field("body", "must be a JSON object")),
        Err(e) => Err(ApiError::field("body", format!("invalid JSON: {e}"))),
    }
}

/// An optional string field (null and absent are the same); 400 naming the field on another type or when
/// longer than `max` characters.
pub fn opt_str(
    m: &serde_json::Map<String, Value>,
    field: &str,
    max: usize,
) -> ApiResult<Option<String>> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() > max => Err(ApiError::field(
            field,
            format!("longer than {max} characters"),
        )),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Some(_) => Err(ApiError::field(field, "must be a string")),
    }
}

pub fn req_str(m: &serde_json::Map<String, Value>, field: &str, max: usize) -> ApiResult<String> {
    opt_str(m, field, max)?.ok_or_else(|| ApiError::field(field, "required"))
}

/// A time bound (see `work_orders::query::parse_time`); 400 naming `field`.
pub fn parse_time(
    s: &str,
    field: &str,
    tz: &jiff::tz::TimeZone,
    end_of_day: bool,
) -> ApiResult<i64> {
    crate::work_orders::query::parse_time(s, tz, end_of_day).map_err(|e| ApiError::field(field, e))
}
