//! The one route table: each entry registers its axum handler and carries what the OpenAPI document says
//! about it (summary, access, query parameters, body, success status). Nothing under `/api/v1` is routed
//! outside this table, so the document cannot miss a route.

use super::ApiState;
use super::auth::{Auth, COOKIE, ClientIp, find_token, session_id};
use super::error::{ApiError, ApiResult};
use super::params::{body_object, opt_str};
use super::spec::r;
pub use super::spec::{Access, RouteDef};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use serde_json::json;
use std::time::Instant;

/// The route table with its handlers.
pub fn table() -> Vec<(RouteDef, MethodRouter<ApiState>)> {
    use super::{devices, events, reports, work_orders as wo};
    use Access::*;
    vec![
        (
            RouteDef {
                query: &[
                    (
                        "status",
                        "open, acknowledged, resolved (comma-separated for several)",
                    ),
                    ("team", "team name"),
                    (
                        "severity",
                        "critical, major, minor, warning (comma-separated)",
                    ),
                    ("device", "device id"),
                    (
                        "building",
                        "building (a request's, or its device's location tag)",
                    ),
                    (
                        "since",
                        "only work orders changed at or after this time (RFC 3339, date or Unix ms)",
                    ),
                    ("limit", "page size, 1..1000 (default 100)"),
                    ("cursor", "next_cursor of the previous page"),
                    ("source", "rule or request"),
                ],
                ok: (200, "WorkOrderPage"),
                ..r(
                    "GET",
                    "/api/v1/work-orders",
                    "listWorkOrders",
                    "Work orders, newest first, one page",
                    Viewer,
                )
            },
            get(wo::list),
        ),
        (
            RouteDef {
                ok: (200, "WorkOrderDetail"),
                ..r(
                    "GET",
                    "/api/v1/work-orders/{id}",
                    "getWorkOrder",
                    "A work order with its history, evidence and deliveries",
                    Viewer,
                )
            },
            get(wo::get),
        ),
        (
            RouteDef {
                body: Some("Note"),
                ok: (200, "WorkOrder"),
                ..r(
                    "POST",
                    "/api/v1/work-orders/{id}/ack",
                    "ackWorkOrder",
                    "Acknowledge (409 when already acknowledged or resolved)",
                    Operator,
                )
            },
            post(wo::ack),
        ),
        (
            RouteDef {
                body: Some("Note"),
                ok: (200, "WorkOrder"),
                ..r(
                    "POST",
                    "/api/v1/work-orders/{id}/resolve",
                    "resolveWorkOrder",
                    "Resolve with a note (409 when resolved)",
                    Operator,
                )
            },
            post(wo::resolve),
        ),
        (
            RouteDef {
                body: Some("Feedback"),
                ok: (201, "FeedbackResult"),
                ..r(
                    "POST",
                    "/api/v1/work-orders/{id}/feedback",
                    "giveFeedback",
                    "Satisfaction rating after resolution (409 before, or when already rated)",
                    OperatorOrKey,
                )
            },
            post(wo::feedback),
        ),
        (
            RouteDef {
                body: Some("RepairRequest"),
                ok: (201, "RequestCreated"),
                ..r(
                    "POST",
                    "/api/v1/requests",
                    "createRequest",
                    "Report a fault: becomes a routed work order",
                    OperatorOrPublicForm,
                )
            },
            post(wo::create_request),
        ),
        (
            RouteDef {
                query: &[("key", "the key returned when the request was made")],
                ok: (200, "RequestStatus"),
                ..r(
                    "GET",
                    "/api/v1/requests/{id}",
                    "getRequest",
                    "The requester's view of their request",
                    Key,
                )
            },
            get(wo::get_request),
        ),
        (
            RouteDef {
                query: &[("building", "only this building")],
                ok: (200, "DeviceList"),
                ..r(
                    "GET",
                    "/api/v1/devices",
                    "listDevices",
                    "The asset inventory with online state",
                    Viewer,
                )
            },
            get(devices::list),
        ),
        (
            RouteDef {
                ok: (200, "DeviceDetail"),
                ..r(
                    "GET",
                    "/api/v1/devices/{id}",
                    "getDevice",
                    "A device, its points' latest values and last 24 h",
                    Viewer,
                )
            },
            get(devices::get),
        ),
        (
            RouteDef {
                query: &[
                    (
                        "from",
                        "first day (site time zone), default 30 days before `to`",
                    ),
                    ("to", "last day, included, default yesterday"),
                    ("by", "hour, day, week, month"),
                    ("group", "device, category or a location tag"),
                    ("format", "json (default), csv, html, table"),
                    (
                        "device",
                        "only this device or virtual meter (repeat for several)",
                    ),
                ],
                ok: (200, "EnergyReport"),
                ..r(
                    "GET",
                    "/api/v1/energy/report",
                    "energyReport",
                    "Exactly `caretaker energy report` for the same arguments",
                    Viewer,
                )
            },
            get(reports::energy_report),
        ),
        (
            RouteDef {
                query: &[
                    (
                        "from",
                        "work orders opened at or after (date, RFC 3339 or Unix ms)",
                    ),
                    ("to", "work orders opened before (a date includes that day)"),
                ],
                ok: (200, "Kpis"),
                ..r(
                    "GET",
                    "/api/v1/kpis",
                    "kpis",
                    "Per team: counts, time to acknowledge and resolve, SLA breaches, ratings",
                    Viewer,
                )
            },
            get(wo::kpis),
        ),
        (
            RouteDef {
                query: &[("all", "true: also ended and removed silences")],
                ok: (200, "Silences"),
                ..r(
                    "GET",
                    "/api/v1/silences",
                    "listSilences",
                    "Maintenance windows (active and planned) and the alarms they held back",
                    Viewer,
                )
            },
            get(wo::silences),
        ),
        (
            RouteDef {
                ok: (200, "text/event-stream"),
                ..r(
                    "GET",
                    "/api/v1/events",
                    "events",
                    "Server-Sent Events: work_order and device changes",
                    Viewer,
                )
            },
            get(events::stream),
        ),
        (
            RouteDef {
                ok: (200, "Overview"),
                ..r(
                    "GET",
                    "/api/v1/overview",
                    "overview",
                    "The console's first page",
                    Viewer,
                )
            },
            get(wo::overview),
        ),
        (
            RouteDef {
                ok: (200, "OpenApi"),
                ..r(
                    "GET",
                    "/api/v1/openapi.json",
                    "openapi",
                    "This document",
                    Public,
                )
            },
            get(openapi_json),
        ),
        (
            RouteDef {
                body: Some("SignIn"),
                ok: (200, "Session"),
                ..r(
                    "POST",
                    "/api/v1/session",
                    "signIn",
                    "Sign in with a token: sets the session cookie (429 after repeated failures)",
                    Public,
                )
            },
            post(sign_in),
        ),
        (
            RouteDef {
                ok: (200, "Session"),
                ..r(
                    "GET",
                    "/api/v1/session",
                    "session",
                    "The signed-in session (401 without one)",
                    Viewer,
                )
            },
            get(session),
        ),
        (
            RouteDef {
                ok: (204, "none"),
                ..r("DELETE", "/api/v1/session", "signOut", "Sign out", Public)
            },
            delete(sign_out),
        ),
    ]
}

/// The API's routes (from the table), with a JSON 404 for anything else under `/api/v1`.
pub fn api_router() -> Router<ApiState> {
    let mut router = Router::new();
    for (def, handler) in table() {
        router = router.route(def.path, handler);
    }
    router
}

/// `GET /api/v1/openapi.json`: generated from the table.
async fn openapi_json() -> Json<serde_json::Value> {
    Json(super::openapi::document(table().iter().map(|(d, _)| d)))
}

/// JSON 404 for paths no route serves.
pub async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such path")
}

fn cookie(st: &ApiState, value: &str, max_age: u64) -> HeaderValue {
    let secure = if st.http.tls.is_some() {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `POST /api/v1/session` `{"token"}`.
async fn sign_in(
    State(st): State<ApiState>,
    ClientIp(ip): ClientIp,
    body: Bytes,
) -> ApiResult<Response> {
    let now = Instant::now();
    st.sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check_rate(ip, now)?;
    let m = body_object(&body)?;
    let token = opt_str(&m, "token", 4096)?.ok_or_else(|| ApiError::field("token", "required"))?;
    let Some(t) = find_token(&st.http.tokens, token.as_bytes()) else {
        st.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed(ip, now);
        tracing::warn!(client = ?ip, "failed sign-in");
        return Err(ApiError::unauthorized("unknown token"));
    };
    let (id, csrf) = st
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .open(&t.name, t.role, now)
        .ok_or_else(|| ApiError::internal("no system randomness for a session"))?;
    let mut r =
        Json(json!({"name": t.name, "role": t.role.as_str(), "csrf": csrf})).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&st, &id, super::auth::SESSION_TTL.as_secs()),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `GET /api/v1/session`.
async fn session(Auth(p): Auth) -> Json<serde_json::Value> {
    Json(json!({"name": p.name, "role": p.role.as_str(), "csrf": p.csrf}))
}

/// `DELETE /api/v1/session`: forgets the session and clears the cookie.
async fn sign_out(State(st): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        st.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .close(&id);
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, cookie(&st, "", 0));
    r
}
