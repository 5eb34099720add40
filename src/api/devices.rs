//! The asset inventory with live state.

use super::ApiState;
use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::params::{only, query_pairs};
use crate::catalog::{Catalog, DeviceIdx};
use crate::work_orders::rfc3339_ms;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde_json::{Value, json};
use std::collections::HashMap;

fn device_json(
    st: &ApiState,
    cat: &Catalog,
    idx: DeviceIdx,
    open: &HashMap<String, i64>,
    now_ns: i64,
) -> Value {
    let d = cat.device(idx);
    let (online, last_seen) = st.live.device(idx, now_ns);
    json!({
        "id": d.id,
        "profile": d.profile.name,
        "category": d.profile.category.as_str(),
        "manufacturer": d.profile.manufacturer,
        "model": d.profile.model,
        "description": d.profile.description,
        "location": d.location,
        "protocol": if st.modbus_devices.contains(&d.id) {
            "modbus"
        } else if d.profile.has_bacnet() && !d.profile.has_mqtt() {
            "bacnet"
        } else {
            "mqtt"
        },
        "declared": d.declared,
        "online": online,
        "last_seen": last_seen.map(rfc3339_ms),
        "open_work_orders": open.get(&d.id).copied().unwrap_or(0),
    })
}

async fn open_counts(st: &ApiState) -> ApiResult<HashMap<String, i64>> {
    let rows = st.with_store(|s| Ok(s.open_summary()?)).await?;
    let mut m = HashMap::new();
    for r in rows {
        if !r.device.is_empty() {
            *m.entry(r.device).or_default() += 1;
        }
    }
    Ok(m)
}

/// `GET /api/v1/devices?building=`: every device of the catalog (declared or met on a topic).
pub async fn list(
    State(st): State<ApiState>,
    Auth(_): Auth,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let pairs = query_pairs(&q)?;
    only(&pairs, &["building"])?;
    let building = pairs
        .iter()
        .find(|(k, _)| k == "building")
        .map(|(_, v)| v.clone());
    let open = open_counts(&st).await?;
    let now_ns = crate::util::now_ns();
    let cat = st.catalog.read().unwrap_or_else(|e| e.into_inner());
    let items: Vec<Value> = cat
        .devices()
        .filter(|(_, d)| {
            building
                .as_ref()
                .is_none_or(|b| d.location.get("building") == Some(b))
        })
        .map(|(i, _)| device_json(&st, &cat, i, &open, now_ns))
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `GET /api/v1/devices/{id}`: the device and its points with latest value and last 24 h.
pub async fn get(
    State(st): State<ApiState>,
    Auth(_): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let open = open_counts(&st).await?;
    let now_ns = crate::util::now_ns();
    let cat = st.catalog.read().unwrap_or_else(|e| e.into_inner());
    let (idx, d) = cat
        .device_by_id(&id)
        .ok_or_else(|| ApiError::not_found(format!("no device `{id}`")))?;
    let mut v = device_json(&st, &cat, idx, &open, now_ns);
    v["points"] = d
        .point_ids()
        .zip(d.profile.points.iter())
        .map(|(pid, def)| {
            let p = st.live.point(pid);
            json!({
                "name": def.name,
                "unit": def.unit.as_str(),
                "kind": def.kind.as_str(),
                "description": def.description,
                "value": p.value,
                "quality": p.quality,
                "time": p.at_ms.map(rfc3339_ms),
                "anomaly_score": p.anomaly_score,
                "history": p.history.iter().map(|(t, x)| json!([t, x])).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(v))
}
