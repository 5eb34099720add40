//! `GET /api/v1/energy/report`: exactly what `caretaker energy report` prints for the same arguments (one
//! code path, `energy::report::produce`), and today's energy for the overview.

use super::ApiState;
use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::params::{only, query_pairs};
use crate::energy::report::{self, By, Format, ProduceError};
use crate::energy::store::{self, Store};
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

fn open_store(st: &ApiState) -> ApiResult<Store> {
    let path = store::path_in(&st.state_dir);
    if !path.is_file() {
        return Err(ApiError::not_found(
            "no energy store yet (the daemon writes one when [energy] is configured and meters report)",
        ));
    }
    Store::open_existing(&path)
        .map(|(s, _, _)| s)
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `GET /api/v1/energy/report?from=&to=&by=&group=&format=&device=`.
pub async fn energy_report(
    State(st): State<ApiState>,
    Auth(_): Auth,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let pairs = query_pairs(&q)?;
    only(&pairs, &["from", "to", "by", "group", "format", "device"])?;
    let get = |k: &str| {
        pairs
            .iter()
            .rev()
            .find(|(x, v)| x == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let by = match get("by") {
        None => By::Day,
        Some(s) => By::parse(&s)
            .ok_or_else(|| ApiError::field("by", "must be hour, day, week or month"))?,
    };
    let format = match get("format") {
        None => Format::Json,
        Some(s) => Format::parse(&s)
            .ok_or_else(|| ApiError::field("format", "must be json, csv, html or table"))?,
    };
    let req = report::Request {
        from: get("from"),
        to: get("to"),
        by,
        group: get("group").unwrap_or_else(|| "device".into()),
        format,
        devices: pairs
            .iter()
            .filter(|(k, v)| k == "device" && !v.is_empty())
            .map(|(_, v)| v.clone())
            .collect(),
    };
    let me = st.clone();
    let out = tokio::task::spawn_blocking(move || {
        let store = open_store(&me)?;
        let cfg = me.energy.clone().unwrap_or_default();
        report::produce(&store, &cfg, &me.tz, &me.site, &req, None).map_err(|e| match e {
            ProduceError::Bad { field, message } => ApiError::field(field, message),
            ProduceError::Failed(e) => ApiError::internal(format!("{e:#}")),
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, format.content_type())], out.text).into_response())
}

/// Today's site consumption (kWh, real meters), its baseline and cost so far; `null` without `[energy]`.
pub async fn energy_today(st: &ApiState) -> Value {
    let Some(cfg) = st.energy.clone() else {
        return Value::Null;
    };
    let me = st.clone();
    let r = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        let path = store::path_in(&me.state_dir);
        if !path.is_file() {
            return Ok(json!({"kwh": null, "baseline_kwh": null, "cost": null}));
        }
        let (store, _, _) = Store::open_existing(&path)?;
        let today = jiff::Timestamp::now()
            .to_zoned_datetime(me.tz.clone())
            .date();
        let q = report::Query {
            from: today,
            to: today.tomorrow()?,
            by: By::Day,
            group: report::Group::Category,
            devices: None,
        };
        let rep = report::build(&store, &cfg, &me.tz, &q, None)?;
        let day = rep.meta.days.iter().find(|(d, _, _)| *d == today);
        let cost = rep.meta.totals.get("kWh").and_then(|t| t.1);
        Ok(json!({
            "kwh": day.map(|d| d.1),
            "baseline_kwh": day.and_then(|d| d.2),
            "cost": cost,
            "currency": rep.meta.currency,
        }))
    })
    .await;
    match r {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "overview: today's energy not available");
            json!({"kwh": null, "baseline_kwh": null, "cost": null, "error": e.to_string()})
        }
        Err(_) => Value::Null,
    }
}
