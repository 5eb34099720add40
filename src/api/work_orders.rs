//! Work orders, repair requests, feedback, KPIs and the overview.

use super::ApiState;
use super::auth::{Auth, MaybeAuth, random_hex, sha256_hex};
use super::config::Role;
use super::error::{ApiError, ApiResult};
use super::params::{body_object, one, only, opt_str, parse_time, query_pairs, req_str};
use crate::catalog::Catalog;
use crate::work_orders::query::{Filter, NewRequest};
use crate::work_orders::store::WorkOrder;
use crate::work_orders::{now_ms, rfc3339_ms};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The building of a work order: the request's, else its device's location tag.
fn building_of(w: &WorkOrder, cat: &Catalog) -> Option<String> {
    w.building.clone().or_else(|| {
        cat.device_by_id(&w.device)
            .and_then(|(_, d)| d.location.get("building").cloned())
    })
}

/// The API's work-order JSON: `WorkOrder::to_json()` plus `building` (filled from the device) and `overdue`.
pub fn wo_json(w: &WorkOrder, cat: &Catalog, now: i64) -> Value {
    let mut v = w.to_json();
    v["building"] = building_of(w, cat).map(Value::from).unwrap_or(Value::Null);
    v["overdue"] = Value::Bool(w.status != "resolved" && w.due_at.is_some_and(|d| now > d));
    v
}

const STATUSES: &[&str] = &["open", "acknowledged", "resolved"];

fn list_of(pairs: &[(String, String)], key: &str, allowed: &[&str]) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    for (_, v) in pairs.iter().filter(|(k, _)| k == key) {
        for x in v.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            if !allowed.contains(&x) {
                return Err(ApiError::field(
                    key,
                    format!("`{x}` is not one of {}", allowed.join(", ")),
                ));
            }
            out.push(x.to_string());
        }
    }
    Ok(out)
}

/// `GET /api/v1/work-orders`.
pub async fn list(
    State(st): State<ApiState>,
    Auth(_): Auth,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let pairs = query_pairs(&q)?;
    only(
        &pairs,
        &[
            "status", "team", "severity", "device", "building", "since", "limit", "cursor",
            "source",
        ],
    )?;
    let limit = match one(&pairs, "limit") {
        None => 100,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return Err(ApiError::field("limit", "must be a number from 1 to 1000")),
        },
    };
    let before_id = match one(&pairs, "cursor") {
        None => None,
        Some(s) => Some(
            s.parse::<i64>()
                .map_err(|_| ApiError::field("cursor", "not a cursor this API gave out"))?,
        ),
    };
    let source = match one(&pairs, "source") {
        None => None,
        Some(s @ ("rule" | "request")) => Some(s.to_string()),
        Some(_) => return Err(ApiError::field("source", "must be rule or request")),
    };
    let building = one(&pairs, "building").map(|b| {
        let cat = st.catalog.read().unwrap_or_else(|e| e.into_inner());
        let devices: Vec<String> = cat
            .devices()
            .filter(|(_, d)| d.location.get("building").map(String::as_str) == Some(b))
            .map(|(_, d)| d.id.clone())
            .collect();
        (b.to_string(), devices)
    });
    let filter = Filter {
        status: list_of(&pairs, "status", STATUSES)?,
        team: one(&pairs, "team").map(str::to_string),
        severity: list_of(&pairs, "severity", crate::rules::alarm::Severity::ALL)?,
        device: one(&pairs, "device").map(str::to_string),
        building,
        since: one(&pairs, "since")
            .map(|s| parse_time(s, "since", &st.tz, false))
            .transpose()?,
        source,
        limit,
        before_id,
    };
    let (rows, next) = st.with_store(move |s| Ok(s.page(&filter)?)).await?;
    let now = now_ms();
    let cat = st.catalog.read().unwrap_or_else(|e| e.into_inner());
    let items: Vec<Value> = rows.iter().map(|w| wo_json(w, &cat, now)).collect();
    Ok(Json(json!({
        "items": items,
        "next_cursor": next.map(|c| c.to_string()),
    })))
}

fn parse_id(s: &str) -> ApiResult<i64> {
    s.parse::<i64>()
        .map_err(|_| ApiError::field("id", format!("`{s}` is not a work-order id")))
}

/// `GET /api/v1/work-orders/{id}`: the work order, its history with evidence, its deliveries, its rating and
/// the point's live 24 h history (`readings`, when the daemon holds it).
pub async fn get(
    State(st): State<ApiState>,
    Auth(_): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    let (w, hist, out, rating) = st
        .with_store(move |s| {
            let w = s
                .get(id)?
                .ok_or_else(|| ApiError::not_found(format!("no work order #{id}")))?;
            Ok((w, s.history(id)?, s.outbox(Some(id))?, s.rating(id)?))
        })
        .await?;
    let now = now_ms();
    let (mut v, readings) = {
        let cat = st.catalog.read().unwrap_or_else(|e| e.into_inner());
        let readings = cat
            .device_by_id(&w.device)
            .and_then(|(_, d)| d.point_id(&w.point))
            .map(|p| st.live.point(p).history)
            .unwrap_or_default();
        (wo_json(&w, &cat, now), readings)
    };
    v["history"] = hist
        .iter()
        .map(|h| {
            json!({
                "time": rfc3339_ms(h.at),
                "actor": h.actor,
                "event": h.action,
                "note": h.note,
                "value": h.value,
                "evidence": h.evidence.iter().map(|(t, x)| json!({"time": rfc3339_ms(*t), "value": x})).collect::<Vec<_>>(),
            })
        })
        .collect();
    v["deliveries"] = out
        .iter()
        .map(|o| {
            json!({
                "target": o.target, "event": o.event, "attempts": o.attempts,
                "delivered_at": o.delivered_at.map(rfc3339_ms), "last_error": o.last_error,
            })
        })
        .collect();
    v["rating"] = rating.map(Value::from).unwrap_or(Value::Null);
    v["readings"] = readings.iter().map(|(t, x)| json!([t, x])).collect();
    Ok(Json(v))
}

async fn change(
    st: ApiState,
    who: super::auth::Principal,
    id: String,
    body: Bytes,
    ack: bool,
) -> ApiResult<Json<Value>> {
    let what = if ack { "acknowledging" } else { "resolving" };
    who.require(Role::Operator, what)?;
    let id = parse_id(&id)?;
    let m = body_object(&body)?;
    let note = opt_str(&m, "note", 4000)?;
    if !ack && note.is_none() {
        return Err(ApiError::field(
            "note",
            "required: say what was done to resolve it",
        ));
    }
    let actor = who.name.clone();
    let w = st
        .with_store(move |s| {
            let now = now_ms();
            Ok(if ack {
                s.acknowledge(id, &actor, note.as_deref(), now)?
            } else {
                s.resolve(id, &actor, note.as_deref(), now)?
            })
        })
        .await?;
    st.notify.notify_waiters();
    let cat = st.catalog.read().unwrap_or_else(|e| e.into_inner());
    Ok(Json(wo_json(&w, &cat, now_ms())))
}

/// `POST /api/v1/work-orders/{id}/ack` `{"note"?}`.
pub async fn ack(
    State(st): State<ApiState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    change(st, who, id, body, true).await
}

/// `POST /api/v1/work-orders/{id}/resolve` `{"note"}`.
pub async fn resolve(
    State(st): State<ApiState>,
    Auth(who): Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    change(st, who, id, body, false).await
}

/// `POST /api/v1/work-orders/{id}/feedback` `{"rating": 1..5, "comment"?, "key"?}`: an operator, or the
/// requester with their key.
pub async fn feedback(
    State(st): State<ApiState>,
    MaybeAuth(who): MaybeAuth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = parse_id(&id)?;
    let m = body_object(&body)?;
    let key = opt_str(&m, "key", 200)?;
    let rating = match m.get("rating") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(r @ 1..=5) => r,
            _ => {
                return Err(ApiError::field(
                    "rating",
                    "must be a whole number from 1 to 5",
                ));
            }
        },
        None | Some(Value::Null) => return Err(ApiError::field("rating", "required (1 to 5)")),
        Some(_) => {
            return Err(ApiError::field(
                "rating",
                "must be a whole number from 1 to 5",
            ));
        }
    };
    let comment = opt_str(&m, "comment", 2000)?;
    let actor = match (&key, &who) {
        (Some(k), _) => {
            let hash = sha256_hex(k);
            let ok = st
                .with_store(move |s| Ok(s.public_request(id, &hash)?.is_some()))
                .await?;
            if !ok {
                return Err(ApiError::forbidden(
                    "this key does not belong to that request",
                ));
            }
            "requester".to_string()
        }
        (None, Some(p)) => {
            p.require(Role::Operator, "giving feedback")?;
            p.name.clone()
        }
        (None, None) => {
            return Err(ApiError::unauthorized(
                "give the request's `key`, or sign in",
            ));
        }
    };
    let w = st
        .with_store(move |s| Ok(s.feedback(id, rating, comment.as_deref(), &actor, now_ms())?))
        .await?;
    let cat = st.catalog.read().unwrap_or_else(|e| e.into_inner());
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": w.id, "rating": rating, "work_order": wo_json(&w, &cat, now_ms())})),
    ))
}

/// `POST /api/v1/requests`: a person reports a fault; it becomes a work order routed by category and
/// building (`[[work_orders.routes]]`), delivered to the targets like any other.
pub async fn create_request(
    State(st): State<ApiState>,
    MaybeAuth(who): MaybeAuth,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let actor_base = match &who {
        Some(p) => {
            p.require(Role::Operator, "raising requests")?;
            Some(p.name.clone())
        }
        None if st.http.requests_public => None,
        None => {
            return Err(ApiError::unauthorized(
                "sign in to report a fault (this site has no public repair form: [http] requests_public = false)",
            ));
        }
    };
    let m = body_object(&body)?;
    for k in m.keys() {
        if ![
            "title",
            "description",
            "device",
            "location",
            "requester",
            "category",
        ]
        .contains(&k.as_str())
        {
            return Err(ApiError::field(k, "unknown field"));
        }
    }
    let title = req_str(&m, "title", 200)?;
    let description = req_str(&m, "description", 4000)?;
    let device = opt_str(&m, "device", 200)?;
    let category = opt_str(&m, "category", 64)?;
    let sub = |name: &str| -> ApiResult<serde_json::Map<String, Value>> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(Default::default()),
            Some(Value::Object(o)) => Ok(o.clone()),
            Some(_) => Err(ApiError::field(name, "must be an object")),
        }
    };
    let loc = sub("location")?;
    let requester = sub("requester")?;
    let field = |o: &serde_json::Map<String, Value>, parent: &str, k: &str, max: usize| {
        opt_str(o, k, max).map_err(|mut e| {
            e.field = Some(format!("{parent}.{k}"));
            e.message = e
                .message
                .replacen(&format!("`{k}`"), &format!("`{parent}.{k}`"), 1);
            e
        })
    };
    let mut building = field(&loc, "location", "building", 200)?;
    let floor = field(&loc, "location", "floor", 100)?;
    let room = field(&loc, "location", "room", 100)?;
    let requester_name = field(&requester, "requester", "name", 200)?;
    let contact = field(&requester, "requester", "contact", 200)?;
    if let Some(d) = &device {
        let cat = st.catalog.read().unwrap_or_else(|e| e.into_inner());
        match cat.device_by_id(d) {
            Some((_, dev)) => {
                if building.is_none() {
                    building = dev.location.get("building").cloned();
                }
            }
            None => return Err(ApiError::field("device", format!("no device `{d}`"))),
        }
    }
    let route = st
        .work_orders
        .route(category.as_deref(), building.as_deref());
    let now = now_ms();
    let key = random_hex(16);
    if key.is_empty() {
        return Err(ApiError::internal(
            "no system randomness for the request key",
        ));
    }
    let mut details = json!({
        "description": description,
        "category": category,
        "location": {"building": building, "floor": floor, "room": room},
        "requester": {"name": requester_name},
    });
    if st.work_orders.share_requester_contact {
        details["requester"]["contact"] = contact.clone().map(Value::from).unwrap_or(Value::Null);
    }
    let actor = actor_base.unwrap_or_else(|| match &requester_name {
        Some(n) => format!("requester:{n}"),
        None => "requester".into(),
    });
    let req = NewRequest {
        title,
        description,
        device,
        building,
        category,
        severity: route.severity.clone(),
        team: route.team.clone(),
        procedure: route.procedure.clone(),
        due_at: route.due.map(|d| now + d.as_millis() as i64),
        details: details.to_string(),
        requester_name,
        requester_contact: contact,
        key_hash: sha256_hex(&key),
    };
    let w = st
        .with_store(move |s| Ok(s.create_request(&req, &actor, now)?))
        .await?;
    st.notify.notify_waiters();
    let cat = st.catalog.read().unwrap_or_else(|e| e.into_inner());
    let status_url = format!("/api/v1/requests/{}?key={key}", w.id);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": w.id,
            "key": key,
            "status_url": status_url,
            "work_order": wo_json(&w, &cat, now),
        })),
    ))
}

/// `GET /api/v1/requests/{id}?key=K`: the requester's limited view, without a token.
pub async fn get_request(
    State(st): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    let pairs = query_pairs(&q)?;
    only(&pairs, &["key"])?;
    let key = one(&pairs, "key").ok_or_else(|| ApiError::field("key", "required"))?;
    let hash = sha256_hex(key);
    let p = st
        .with_store(move |s| Ok(s.public_request(id, &hash)?))
        .await?
        .ok_or_else(|| ApiError::not_found("no such request, or a wrong key"))?;
    let w = &p.work_order;
    let t = |v: Option<i64>| v.map(rfc3339_ms);
    Ok(Json(json!({
        "id": w.id,
        "title": w.title,
        "status": w.status,
        "created": rfc3339_ms(w.opened_at),
        "acknowledged": t(w.acknowledged_at),
        "resolved": t(w.resolved_at),
        "due": t(w.due_at),
        "rating": p.rating,
    })))
}

/// `GET /api/v1/kpis?from=&to=`: per team, over the work orders opened in the range; the same figures as
/// `caretaker work-orders stats --from --to`.
pub async fn kpis(
    State(st): State<ApiState>,
    Auth(_): Auth,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let pairs = query_pairs(&q)?;
    only(&pairs, &["from", "to"])?;
    let from = one(&pairs, "from")
        .map(|s| parse_time(s, "from", &st.tz, false))
        .transpose()?;
    let to = one(&pairs, "to")
        .map(|s| parse_time(s, "to", &st.tz, true))
        .transpose()?;
    let teams = st
        .with_store(move |s| Ok(s.kpis(from, to, now_ms())?))
        .await?;
    Ok(Json(json!({
        "from": from.map(rfc3339_ms),
        "to": to.map(rfc3339_ms),
        "teams": teams,
    })))
}

/// `GET /api/v1/silences?all=true`: silences active or to come (all with `all=true`) and the alarms they held
/// back; the same JSON as `caretaker silence list --format json`.
pub async fn silences(
    State(st): State<ApiState>,
    Auth(_): Auth,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let pairs = query_pairs(&q)?;
    only(&pairs, &["all"])?;
    let all = match one(&pairs, "all") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::field(
                "all",
                format!("`{other}` is not true or false"),
            ));
        }
    };
    let now = now_ms();
    let (silences, held) = st
        .with_store(move |s| Ok((s.silences(all, now)?, s.silenced(None)?)))
        .await?;
    Ok(Json(json!({
        "silences": silences.iter().map(|x| x.to_json(now)).collect::<Vec<_>>(),
        "silenced": held.iter().map(|x| x.to_json()).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/overview`: the console's first page.
pub async fn overview(State(st): State<ApiState>, Auth(_): Auth) -> ApiResult<Json<Value>> {
    let open = st.with_store(|s| Ok(s.open_summary()?)).await?;
    let now = now_ms();
    let (total, online) = {
        let cat = st.catalog.read().unwrap_or_else(|e| e.into_inner());
        let now_ns = crate::util::now_ns();
        let on = cat
            .devices()
            .filter(|(i, _)| st.live.device(*i, now_ns).0)
            .count();
        (cat.devices().count(), on)
    };
    let mut by_sev: BTreeMap<String, i64> = crate::rules::alarm::Severity::ALL
        .iter()
        .map(|s| (s.to_string(), 0))
        .collect();
    let mut by_team: BTreeMap<String, i64> = BTreeMap::new();
    let mut overdue = 0;
    for o in &open {
        *by_sev.entry(o.severity.clone()).or_default() += 1;
        *by_team.entry(o.team.clone()).or_default() += 1;
        overdue += o.due_at.is_some_and(|d| now > d) as i64;
    }
    let energy = super::reports::energy_today(&st).await;
    Ok(Json(json!({
        "site": st.site,
        "devices": {"total": total, "online": online, "offline": total - online},
        "work_orders": {"open": open.len(), "open_by_severity": by_sev, "open_by_team": by_team, "overdue": overdue},
        "energy_today": energy,
    })))
}
