//! The OpenAPI 3.0 document, generated from the route table (`api::routes::table`): every routed path and
//! method is in it, with its access, parameters, body and success answer. Schemas are short descriptions of
//! the JSON shapes (their fields), not a full type system.

use super::spec::{Access, RouteDef};
use serde_json::{Map, Value, json};

fn obj(props: &[(&str, &str)]) -> Value {
    let mut p = Map::new();
    for (k, t) in props {
        let v = match *t {
            "string" | "integer" | "number" | "boolean" | "object" => json!({"type": t}),
            "string?" => json!({"type": "string", "nullable": true}),
            "number?" => json!({"type": "number", "nullable": true}),
            "integer?" => json!({"type": "integer", "nullable": true}),
            "array" => json!({"type": "array", "items": {}}),
            r => json!({"$ref": format!("#/components/schemas/{r}")}),
        };
        p.insert(k.to_string(), v);
    }
    json!({"type": "object", "properties": p})
}

fn schemas() -> Value {
    let wo = obj(&[
        ("id", "integer"),
        ("status", "string"),
        ("rule", "string"),
        ("device", "string"),
        ("point", "string"),
        ("severity", "string"),
        ("title", "string"),
        ("team", "string?"),
        ("procedure", "string?"),
        ("resolve", "string"),
        ("opened_at", "string"),
        ("updated_at", "string"),
        ("acknowledged_at", "string?"),
        ("acknowledged_by", "string?"),
        ("resolved_at", "string?"),
        ("resolved_by", "string?"),
        ("cleared_at", "string?"),
        ("due_at", "string?"),
        ("count", "integer"),
        ("flaps", "integer"),
        ("unit", "string"),
        ("first_value", "number?"),
        ("last_value", "number?"),
        ("peak_value", "number?"),
        ("source", "string"),
        ("building", "string?"),
        ("overdue", "boolean"),
        ("request", "object"),
    ]);
    json!({
        "Error": obj(&[("error", "ErrorBody")]),
        "ErrorBody": obj(&[("code", "string"), ("message", "string"), ("field", "string?")]),
        "Object": {"type": "object"},
        "WorkOrder": wo,
        "WorkOrderPage": {"type": "object", "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/WorkOrder"}},
            "next_cursor": {"type": "string", "nullable": true}}},
        "WorkOrderDetail": {"allOf": [{"$ref": "#/components/schemas/WorkOrder"}, obj(&[
            ("history", "array"), ("deliveries", "array"), ("rating", "integer?"), ("readings", "array")])]},
        "Note": obj(&[("note", "string")]),
        "Feedback": obj(&[("rating", "integer"), ("comment", "string?"), ("key", "string?")]),
        "FeedbackResult": obj(&[("id", "integer"), ("rating", "integer"), ("work_order", "WorkOrder")]),
        "RepairRequest": {"type": "object", "required": ["title", "description"], "properties": {
            "title": {"type": "string"}, "description": {"type": "string"}, "device": {"type": "string"},
            "category": {"type": "string"},
            "location": obj(&[("building", "string"), ("floor", "string"), ("room", "string")]),
            "requester": obj(&[("name", "string"), ("contact", "string")])}},
        "RequestCreated": obj(&[("id", "integer"), ("key", "string"), ("status_url", "string"), ("work_order", "WorkOrder")]),
        "RequestStatus": obj(&[("id", "integer"), ("title", "string"), ("status", "string"), ("created", "string"),
            ("acknowledged", "string?"), ("resolved", "string?"), ("due", "string?"), ("rating", "integer?")]),
        "Device": obj(&[("id", "string"), ("profile", "string"), ("category", "string"), ("manufacturer", "string?"),
            ("model", "string?"), ("location", "object"), ("protocol", "string"), ("online", "boolean"),
            ("last_seen", "string?"), ("open_work_orders", "integer")]),
        "DeviceList": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Device"}}}},
        "DeviceDetail": {"allOf": [{"$ref": "#/components/schemas/Device"}, {"type": "object", "properties": {
            "points": {"type": "array", "items": obj(&[("name", "string"), ("value", "number?"), ("unit", "string"),
                ("quality", "string?"), ("time", "string?"), ("anomaly_score", "number?"), ("history", "array")])}}}]},
        "EnergyReport": obj(&[("rows", "array")]),
        "Kpis": {"type": "object", "properties": {"teams": {"type": "array", "items": obj(&[
            ("team", "string"), ("opened", "integer"), ("acknowledged", "integer"), ("resolved", "integer"),
            ("ack_median_s", "number?"), ("ack_p90_s", "number?"), ("resolve_median_s", "number?"),
            ("resolve_p90_s", "number?"), ("sla_breaches", "integer"), ("rating_mean", "number?"), ("ratings", "integer")])}}},
        "Silences": obj(&[("silences", "array"), ("silenced", "array")]),
        "Overview": obj(&[("site", "string"), ("devices", "object"), ("work_orders", "object"), ("energy_today", "object")]),
        "OpenApi": {"type": "object"},
        "SignIn": obj(&[("token", "string")]),
        "Session": obj(&[("name", "string"), ("role", "string"), ("csrf", "string?")]),
    })
}

/// The document of these routes (the route table's).
pub fn document<'a>(defs: impl Iterator<Item = &'a RouteDef>) -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for def in defs {
        let mut params: Vec<Value> = def
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(def.query.iter().map(|(name, d)| {
            json!({"name": name, "in": "query", "required": def.access == Access::Key && *name == "key",
                   "description": d, "schema": {"type": "string"}})
        }));
        let (status, what) = def.ok;
        let ok = if what.contains('/') {
            json!({"description": "OK", "content": {what: {"schema": {"type": "string"}}}})
        } else if what == "none" {
            json!({"description": "Done"})
        } else if def.id == "energyReport" {
            json!({"description": "OK", "content": {
                "application/json": {"schema": {"$ref": format!("#/components/schemas/{what}")}},
                "text/csv": {"schema": {"type": "string"}}, "text/html": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}}}})
        } else {
            json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{what}")}}}})
        };
        let err = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        let mut responses = Map::new();
        responses.insert(status.to_string(), ok);
        responses.insert(
            "400".into(),
            err("Bad request: `error.field` names the offending field"),
        );
        if def.access != Access::Public {
            responses.insert("401".into(), err("No or unknown credentials"));
            responses.insert(
                "403".into(),
                err("The role may not, or a missing X-CSRF-Token with the session cookie"),
            );
        }
        if def.path.contains('{') {
            responses.insert("404".into(), err("Not found"));
        }
        if def.method == "POST" && def.path.starts_with("/api/v1/work-orders/") {
            responses.insert("409".into(), err("Illegal state change"));
        }
        if def.id == "signIn" {
            responses.insert(
                "429".into(),
                err("Too many failed sign-ins from this address (Retry-After)"),
            );
        }
        let mut op = json!({
            "operationId": def.id,
            "summary": def.summary,
            "description": format!("Access: {}.", def.access.describe()),
            "parameters": params,
            "responses": responses,
        });
        op["security"] = match def.access {
            Access::Public | Access::Key => json!([]),
            Access::OperatorOrPublicForm | Access::OperatorOrKey => {
                json!([{}, {"bearer": []}, {"session": []}])
            }
            _ => json!([{"bearer": []}, {"session": []}]),
        };
        if let Some(b) = def.body {
            op["requestBody"] = json!({"required": b != "Note", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{b}")}}}});
        }
        paths
            .entry(def.path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|m| m.insert(def.method.to_lowercase(), op));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Caretaker API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Work orders, repair requests, devices, energy and KPIs of one site. Errors: {\"error\": {\"code\", \"message\", \"field\"?}}.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a token from [[http.tokens]]"},
                "session": {"type": "apiKey", "in": "cookie", "name": super::auth::COOKIE,
                            "description": "from POST /api/v1/session; changes need the X-CSRF-Token header"},
            },
        },
    })
}
