//! The HTTP API against the real daemon (`caretaker run`) with a real mosquitto: a rule breach opens a work
//! order the API lists; a viewer may not acknowledge; an operator acknowledges and resolves; the CLI and the
//! webhook target see the same changes; a repair request becomes a work order delivered to the webhook;
//! feedback shows in the KPIs (the same figures as `work-orders stats`); SSE delivers the changes; sessions
//! need CSRF; sign-ins are rate-limited; HTTPS with a CA the test makes; `check` rejects a weak token.
//! The webhook receiver is an axum server in this test (the peer under the test's control).

use crate::support::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const VIEWER: &str = "viewer-token-0123456789";
const OPS: &str = "operator-token-0123456789";

#[derive(Clone, Default)]
struct Hook(Arc<Mutex<Vec<Value>>>);

async fn hook(State(h): State<Hook>, body: Bytes) -> StatusCode {
    h.0.lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap_or_default());
    StatusCode::OK
}

async fn start_hook() -> (u16, Hook) {
    let h = Hook::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(h.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, h)
}

fn site(
    dir: &Path,
    mqtt_port: u16,
    http_port: u16,
    hook_port: u16,
    http_extra: &str,
) -> std::path::PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("room.yaml"),
        r#"schema: 1
rules:
  - name: room-too-hot
    applies_to: { profile: generic-room-sensor }
    point: temperature
    unit: degC
    when: { above: 30, for: 2s }
    clear: { below: 25 }
    severity: major
    work_order:
      resolve: manual
      title: "Room {device} at {value} degC"
      team: hvac
      due_within: 4h
      procedure: "1. Check the radiator valve."
"#,
    )
    .unwrap();
    std::fs::write(dir.join("viewer.token"), format!("{VIEWER}\n")).unwrap();
    std::fs::write(dir.join("ops.token"), format!("{OPS}\n")).unwrap();
    write_config(
        dir,
        &format!(
            r#"[site]
name = "api campus"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[rules]
dirs = ["rules"]
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
client_id = "caretaker-api-{http_port}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[http]
listen = "127.0.0.1:{http_port}"
{http_extra}
[[http.tokens]]
name = "front-desk"
role = "viewer"
token_file = "viewer.token"
[[http.tokens]]
name = "ops-desk"
role = "operator"
token_file = "ops.token"
[work_orders]
update_every = "1m"
[[work_orders.routes]]
category = "plumbing"
team = "plumbing"
due = "8h"
procedure = "1. Shut the valve."
[[work_orders.targets]]
kind = "webhook"
name = "hook"
url = "http://127.0.0.1:{hook_port}/hook"
timeout = "2s"
max_retry_backoff = "1s"
"#,
            state = dir.join("state").display(),
            profiles = repo().join("device_profiles").display(),
        ),
    )
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, token, Some(body))
            .await
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Reads an SSE stream into a shared string.
fn sse(api: &Api, token: &str) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let t = text.clone();
    let req = api
        .client
        .get(format!("{}/api/v1/events", api.base))
        .bearer_auth(token);
    tokio::spawn(async move {
        let Ok(mut resp) = req.send().await else {
            return;
        };
        while let Ok(Some(chunk)) = resp.chunk().await {
            t.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk));
        }
    });
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_is_worked_through_the_api_and_everyone_sees_the_same_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mosquitto = Mosquitto::start();
    let (hook_port, hooked) = start_hook().await;
    let http_port = free_port();
    let cfg = site(dir.path(), mosquitto.port, http_port, hook_port, "");
    let state = dir.path().join("state");
    let daemon = Daemon::start(&cfg, http_port);
    let api = Api {
        base: format!("http://127.0.0.1:{http_port}"),
        client: http_client(),
    };

    // No token: 401 with the error shape; a wrong one too.
    let (s, v) = api.get("/api/v1/work-orders", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    assert_eq!(
        api.get("/api/v1/work-orders", Some("nope-nope-nope-nope"))
            .await
            .0,
        401
    );
    // /health and /metrics stay public (metrics_public defaults to true).
    assert_eq!(api.get("/health", None).await.0, 200);

    let events = sse(&api, VIEWER);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            events.lock().unwrap().contains("event: ready")
        })
        .await,
        "no SSE ready event"
    );

    let p = Publisher::connect(mosquitto.port, "api-test-pub");
    wait_receiving(
        &p,
        &daemon,
        "campus/probe/probe/telemetry",
        r#"{"temperature": 1}"#,
    )
    .await;
    let t0 = now_ms();
    let topic = "campus/north/r101/telemetry";
    p.publish(topic, json!({"ts": t0, "temperature": 31.0}).to_string())
        .await;
    p.publish(
        topic,
        json!({"ts": t0 + 3000, "temperature": 32.0}).to_string(),
    )
    .await;

    // The rule's work order appears in the API.
    let found = Arc::new(Mutex::new(Value::Null));
    let ok = wait_until(Duration::from_secs(20), || {
        let (api, found) = (&api, found.clone());
        async move {
            let (_, v) = api
                .get("/api/v1/work-orders?status=open&device=r101", Some(VIEWER))
                .await;
            match v["items"].as_array().and_then(|a| a.first()) {
                Some(i) => {
                    *found.lock().unwrap() = i.clone();
                    true
                }
                None => false,
            }
        }
    })
    .await;
    let item = found.lock().unwrap().clone();
    assert!(ok, "no work order in the API:\n{}", daemon.log_text());
    let id = item["id"].as_i64().unwrap();
    assert_eq!(item["source"], "rule");
    assert_eq!(item["building"], "north");
    assert_eq!(item["overdue"], false);
    assert_eq!(item["team"], "hvac");
    // Same fields as the CLI's JSON.
    let (code, out, err) = caretaker(&[
        "work-orders",
        "list",
        "--state",
        state.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let cli: Vec<Value> = serde_json::from_str(&out).unwrap();
    for k in cli[0].as_object().unwrap().keys() {
        assert!(item.get(k).is_some(), "API item lacks `{k}`");
    }
    // Filters: another building, another status.
    assert_eq!(
        api.get("/api/v1/work-orders?building=south", Some(VIEWER))
            .await
            .1["items"],
        json!([])
    );
    let (s, v) = api
        .get("/api/v1/work-orders?status=closed", Some(VIEWER))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("status")),
        "{v}"
    );

    // A viewer may not acknowledge; an operator can, once.
    let (s, v) = api
        .post(
            &format!("/api/v1/work-orders/{id}/ack"),
            Some(VIEWER),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    let (s, v) = api
        .post(
            &format!("/api/v1/work-orders/{id}/ack"),
            Some(OPS),
            json!({"note": "on my way"}),
        )
        .await;
    assert_eq!(
        (s, v["status"].as_str(), v["acknowledged_by"].as_str()),
        (200, Some("acknowledged"), Some("ops-desk")),
        "{v}"
    );
    assert_eq!(
        api.post(
            &format!("/api/v1/work-orders/{id}/ack"),
            Some(OPS),
            json!({})
        )
        .await
        .0,
        409
    );
    let (s, v) = api
        .post(
            &format!("/api/v1/work-orders/{id}/resolve"),
            Some(OPS),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("note")),
        "{v}"
    );
    let (s, v) = api
        .post(
            &format!("/api/v1/work-orders/{id}/resolve"),
            Some(OPS),
            json!({"note": "valve freed"}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("resolved")), "{v}");
    assert_eq!(
        api.post(
            &format!("/api/v1/work-orders/{id}/resolve"),
            Some(OPS),
            json!({"note": "again"})
        )
        .await
        .0,
        409
    );
    assert_eq!(
        api.post("/api/v1/work-orders/9999/ack", Some(OPS), json!({}))
            .await
            .0,
        404
    );

    // The CLI sees the same change.
    let (_, out, _) = caretaker(&[
        "work-orders",
        "list",
        "--state",
        state.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let cli: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (cli[0]["status"].as_str(), cli[0]["resolved_by"].as_str()),
        (Some("resolved"), Some("ops-desk"))
    );
    // The webhook target too: opened, acknowledged, resolved.
    let events_of = |id: i64| {
        hooked
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c["work_order"]["id"] == id)
            .map(|c| c["event"].as_str().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert!(
        wait_until(Duration::from_secs(15), || async {
            events_of(id).len() >= 3
        })
        .await,
        "webhook got {:?}",
        events_of(id)
    );
    assert_eq!(events_of(id), ["opened", "acknowledged", "resolved"]);
    // SSE delivered the changes.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            let t = events.lock().unwrap();
            t.contains("event: work_order") && t.contains("\"status\":\"resolved\"")
        })
        .await,
        "SSE: {}",
        events.lock().unwrap()
    );
    assert!(
        events.lock().unwrap().contains("event: device"),
        "device online event"
    );

    // The work order's detail: history with actors and the alarm's evidence, and the live readings.
    let (_, w) = api
        .get(&format!("/api/v1/work-orders/{id}"), Some(VIEWER))
        .await;
    let hist: Vec<(&str, &str)> = w["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["event"].as_str().unwrap(), h["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        hist,
        [
            ("opened", "rule:room-too-hot"),
            ("acknowledged", "ops-desk"),
            ("resolved", "ops-desk")
        ]
    );
    assert!(
        !w["history"][0]["evidence"].as_array().unwrap().is_empty(),
        "{w}"
    );
    assert!(!w["readings"].as_array().unwrap().is_empty(), "{w}");

    // A repair request: 401 without a token (requests_public = false), 400 naming a missing field.
    let req = json!({"title": "Tap drips", "description": "Second floor kitchen tap drips", "category": "plumbing",
                     "location": {"building": "north", "floor": "2", "room": "2.14"},
                     "requester": {"name": "Li Wei", "contact": "li.wei@example.edu"}});
    assert_eq!(api.post("/api/v1/requests", None, req.clone()).await.0, 401);
    let (s, v) = api
        .post("/api/v1/requests", Some(OPS), json!({"title": "x"}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("description")),
        "{v}"
    );
    let (s, created) = api.post("/api/v1/requests", Some(OPS), req).await;
    assert_eq!(s, 201, "{created}");
    let rid = created["id"].as_i64().unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    assert_eq!(created["work_order"]["source"], "request");
    assert_eq!(created["work_order"]["team"], "plumbing");
    assert!(created["work_order"]["due_at"].is_string());
    assert!(
        wait_until(Duration::from_secs(15), || async {
            events_of(rid) == ["opened"]
        })
        .await,
        "request not delivered: {:?}",
        events_of(rid)
    );
    let delivered = hooked
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|c| c["work_order"]["id"] == rid)
        .cloned()
        .unwrap();
    assert_eq!(delivered["work_order"]["source"], "request");
    assert_eq!(
        delivered["work_order"]["request"]["requester"]["name"],
        "Li Wei"
    );
    assert!(
        !delivered.to_string().contains("li.wei@example.edu"),
        "contact must not reach targets"
    );

    // The requester's status page, without a token.
    let status_url = created["status_url"].as_str().unwrap();
    let (s, v) = api.get(status_url, None).await;
    assert_eq!(
        (s, v["status"].as_str(), v["title"].as_str()),
        (200, Some("open"), Some("Tap drips")),
        "{v}"
    );
    assert_eq!(
        api.get(&format!("/api/v1/requests/{rid}?key=wrong"), None)
            .await
            .0,
        404
    );
    // Feedback only after resolution.
    let fb = json!({"rating": 4, "comment": "fixed fast", "key": key});
    assert_eq!(
        api.post(
            &format!("/api/v1/work-orders/{rid}/feedback"),
            None,
            fb.clone()
        )
        .await
        .0,
        409
    );

    // Sessions: sign in, the cookie works for reads, changes need the CSRF header.
    let (s, v) = api
        .post("/api/v1/session", None, json!({"token": OPS}))
        .await;
    assert_eq!(s, 200, "{v}");
    let csrf = v["csrf"].as_str().unwrap().to_string();
    let resp = api
        .client
        .post(format!("{}/api/v1/session", api.base))
        .header("content-type", "application/json")
        .body(json!({"token": OPS}).to_string())
        .send()
        .await
        .unwrap();
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Strict")
            && set_cookie.contains("Path=/"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.contains("Secure"),
        "no Secure over plain HTTP: {set_cookie}"
    );
    let csrf2 = serde_json::from_str::<Value>(&resp.text().await.unwrap()).unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(csrf, csrf2);
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let with_cookie = |m: reqwest::Method, path: &str| {
        api.client
            .request(m, format!("{}{path}", api.base))
            .header("cookie", cookie.clone())
    };
    let r = with_cookie(reqwest::Method::GET, "/api/v1/session")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()["name"],
        "ops-desk"
    );
    let r = with_cookie(
        reqwest::Method::POST,
        &format!("/api/v1/work-orders/{rid}/ack"),
    )
    .header("content-type", "application/json")
    .body(json!({}).to_string())
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()["error"]["code"],
        "csrf"
    );
    let r = with_cookie(
        reqwest::Method::POST,
        &format!("/api/v1/work-orders/{rid}/ack"),
    )
    .header("x-csrf-token", &csrf2)
    .header("content-type", "application/json")
    .body(json!({"note": "plumber booked"}).to_string())
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        with_cookie(reqwest::Method::DELETE, "/api/v1/session")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        with_cookie(reqwest::Method::GET, "/api/v1/session")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Resolve the request; the requester rates it; the KPIs show it, the same as `work-orders stats`.
    let (s, _) = api
        .post(
            &format!("/api/v1/work-orders/{rid}/resolve"),
            Some(OPS),
            json!({"note": "washer replaced"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = api
        .post(
            &format!("/api/v1/work-orders/{rid}/feedback"),
            None,
            json!({"rating": 9, "key": key}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("rating")),
        "{v}"
    );
    let (s, v) = api
        .post(
            &format!("/api/v1/work-orders/{rid}/feedback"),
            None,
            fb.clone(),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        api.post(&format!("/api/v1/work-orders/{rid}/feedback"), None, fb)
            .await
            .0,
        409
    );
    assert_eq!(api.get(status_url, None).await.1["rating"], 4);
    let (_, k) = api.get("/api/v1/kpis", Some(VIEWER)).await;
    let teams = k["teams"].as_array().unwrap();
    let plumbing = teams.iter().find(|t| t["team"] == "plumbing").unwrap();
    assert_eq!(
        (
            plumbing["ratings"].as_i64(),
            plumbing["rating_mean"].as_f64()
        ),
        (Some(1), Some(4.0)),
        "{k}"
    );
    assert_eq!(plumbing["acknowledged"], 1);
    let hvac = teams.iter().find(|t| t["team"] == "hvac").unwrap();
    assert_eq!(
        (hvac["opened"].as_i64(), hvac["resolved"].as_i64()),
        (Some(1), Some(1))
    );
    assert!(
        hvac["ack_p90_s"].is_number() && hvac["resolve_median_s"].is_number(),
        "{k}"
    );
    let (_, out, err) = caretaker(&[
        "work-orders",
        "stats",
        "--state",
        state.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let stats: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(
        stats["teams"], k["teams"],
        "API KPIs and `work-orders stats` differ"
    );

    // Paging: one per page, following the cursor, newest first.
    let (_, page1) = api.get("/api/v1/work-orders?limit=1", Some(VIEWER)).await;
    assert_eq!(page1["items"][0]["id"], rid);
    let cursor = page1["next_cursor"].as_str().unwrap().to_string();
    let (_, page2) = api
        .get(
            &format!("/api/v1/work-orders?limit=1&cursor={cursor}"),
            Some(VIEWER),
        )
        .await;
    assert_eq!(
        (
            page2["items"][0]["id"].as_i64(),
            page2["next_cursor"].is_null()
        ),
        (Some(id), true),
        "{page2}"
    );

    // Devices: r101 online with its live values and history.
    let (_, d) = api.get("/api/v1/devices", Some(VIEWER)).await;
    let r101 = d["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == "r101")
        .cloned()
        .unwrap();
    assert_eq!(
        (r101["online"].as_bool(), r101["protocol"].as_str()),
        (Some(true), Some("mqtt")),
        "{r101}"
    );
    assert_eq!(r101["location"]["building"], "north");
    assert_eq!(r101["open_work_orders"], 0);
    let (_, d) = api.get("/api/v1/devices/r101", Some(VIEWER)).await;
    let t = d["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "temperature")
        .cloned()
        .unwrap();
    assert_eq!(
        (t["value"].as_f64(), t["unit"].as_str()),
        (Some(32.0), Some("degC")),
        "{t}"
    );
    assert!(!t["history"].as_array().unwrap().is_empty(), "{t}");
    assert_eq!(api.get("/api/v1/devices/nope", Some(VIEWER)).await.0, 404);
    let (_, o) = api.get("/api/v1/overview", Some(VIEWER)).await;
    assert_eq!(o["site"], "api campus");
    assert!(o["devices"]["online"].as_i64().unwrap() >= 2, "{o}");
    assert!(o["energy_today"].is_null(), "{o}");

    // A change made by the CLI in another process reaches the event stream too.
    let (s, v) = api
        .post(
            "/api/v1/requests",
            Some(OPS),
            json!({"title": "Door sticks", "description": "Main entrance"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (code, _, err) = caretaker(&[
        "work-orders",
        "ack",
        "--state",
        state.to_str().unwrap(),
        &v["id"].to_string(),
        "--by",
        "cli-user",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            events
                .lock()
                .unwrap()
                .contains("\"acknowledged_by\":\"cli-user\"")
        })
        .await,
        "SSE missed the CLI's change"
    );

    // Failed sign-ins are limited per address: 429 with Retry-After.
    let mut last = 0;
    for _ in 0..7 {
        let r = api
            .client
            .post(format!("{}/api/v1/session", api.base))
            .header("content-type", "application/json")
            .body(json!({"token": "wrong-wrong-wrong-wrong"}).to_string())
            .send()
            .await
            .unwrap();
        last = r.status().as_u16();
        if last == 429 {
            assert!(r.headers().get("retry-after").is_some());
            break;
        }
        assert_eq!(last, 401);
    }
    assert_eq!(last, 429);
    assert!(!daemon.log_text().contains(OPS), "a token reached the log");
}

/// Makes a CA and a leaf for 127.0.0.1 with openssl (rustls refuses a self-signed CA:TRUE leaf).
fn make_ca(dir: &Path) {
    let run = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tls.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_ca_the_test_makes_and_check_rejects_weak_tokens() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path());
    let mosquitto = Mosquitto::start();
    let http_port = free_port();
    let cfg = site(
        dir.path(),
        mosquitto.port,
        http_port,
        free_port(),
        "tls_cert_file = \"tls.crt\"\ntls_key_file = \"tls.key\"\nmetrics_public = false\nrequests_public = true",
    );
    let (code, out, err) = caretaker(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let _daemon = Daemon::start(&cfg, http_port);
    let tls = caretaker::tls::client_config(Some(&dir.path().join("ca.crt")), None, None).unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .build()
        .unwrap();
    let api = Api {
        base: format!("https://127.0.0.1:{http_port}"),
        client,
    };
    let (s, v) = api.get("/api/v1/work-orders", Some(VIEWER)).await;
    assert_eq!(s, 200, "{v}");
    // metrics_public = false: /metrics needs a token.
    assert_eq!(api.get("/metrics", None).await.0, 401);
    assert_eq!(api.get("/metrics", Some(VIEWER)).await.0, 200);
    // requests_public = true: the public form works without a token.
    let (s, v) = api
        .post("/api/v1/requests", None, json!({"title": "Light out", "description": "Corridor light", "requester": {"name": "Ana"}}))
        .await;
    assert_eq!(s, 201, "{v}");
    let (_, w) = api
        .get(&format!("/api/v1/work-orders/{}", v["id"]), Some(VIEWER))
        .await;
    assert_eq!(w["history"][0]["actor"], "requester:Ana");
    // The session cookie is Secure under TLS.
    let r = api
        .client
        .post(format!("{}/api/v1/session", api.base))
        .header("content-type", "application/json")
        .body(json!({"token": OPS}).to_string())
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
    // Plain HTTP to the HTTPS port gets nothing useful.
    let plain = http_client()
        .get(format!("http://127.0.0.1:{http_port}/health"))
        .send()
        .await
        .map(|r| r.status().is_success());
    assert!(!plain.unwrap_or(false));

    // `check` names the weak token file and the unknown role.
    std::fs::write(dir.path().join("ops.token"), "short\n").unwrap();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("role = \"viewer\"", "role = \"boss\"");
    std::fs::write(&cfg, text).unwrap();
    let (code, out, err) = caretaker(&["check", "--config", cfg.to_str().unwrap()]);
    let all = format!("{out}{err}");
    assert_ne!(code, 0, "{all}");
    assert!(
        all.contains("http.tokens[1].token_file") && all.contains("at least 16 bytes"),
        "{all}"
    );
    assert!(all.contains("http.tokens[0].role"), "{all}");
}

/// The OpenAPI document lists exactly the routes the router serves, and every route in the table answers
/// (none is missing from the router: no axum 405 or fallback 404 for its method and path).
#[tokio::test]
async fn openapi_covers_every_route() {
    use tower::ServiceExt;
    let table = caretaker::api::routes::table();
    let doc = caretaker::api::openapi::document(table.iter().map(|(d, _)| d));
    let mut in_doc = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            in_doc.insert((m.to_uppercase(), path.clone()));
        }
    }
    let in_table: std::collections::BTreeSet<_> = table
        .iter()
        .map(|(d, _)| (d.method.to_string(), d.path.to_string()))
        .collect();
    assert_eq!(in_doc, in_table);
    let dir = tempfile::tempdir().unwrap();
    let state = caretaker::api::ApiState::new(caretaker::api::ApiParts {
        http: caretaker::api::config::HttpConfig::plain("127.0.0.1:0".parse().unwrap()),
        site: "s".into(),
        tz: jiff::tz::TimeZone::UTC,
        state_dir: dir.path().to_path_buf(),
        catalog: caretaker::catalog::Catalog::new("s", Default::default()).shared(),
        live: caretaker::api::live::LiveState::new(Duration::from_secs(60)),
        notify: Default::default(),
        work_orders: Default::default(),
        energy: None,
        modbus_devices: Default::default(),
        shutdown: Default::default(),
    });
    let app = caretaker::api::serve::app(
        &state,
        caretaker::telemetry::Health::new(),
        caretaker::telemetry::install_metrics(),
    );
    for (method, path) in &in_table {
        let uri = path.replace("{id}", "1");
        let req = axum::http::Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_ne!(status, 405, "{method} {path}: not routed");
        assert!(
            !String::from_utf8_lossy(&body).contains("no_route"),
            "{method} {path}: not routed"
        );
    }
    // And a path outside the table is the JSON 404.
    let req = axum::http::Request::builder()
        .uri("/api/v1/nothing")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 404);
}

/// `GET /api/v1/energy/report` gives exactly what `caretaker energy report` prints for the same arguments, in
/// every format, on a real store filled by `caretaker energy import`; the overview shows today's energy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_energy_report_is_the_same_through_the_cli_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("test-kwh-meter.yaml"),
        "schema: 1\nname: test-kwh-meter\ncategory: electricity\npoints:\n  - { name: energy_total, unit: kWh, kind: counter, mqtt: { json: /kwh } }\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("viewer.token"), format!("{VIEWER}\n")).unwrap();
    let http_port = free_port();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"[site]
name = "energy campus"
timezone = "Europe/Berlin"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[http]
listen = "127.0.0.1:{http_port}"
[[http.tokens]]
name = "front-desk"
role = "viewer"
token_file = "viewer.token"
[[devices]]
id = "meter-1"
profile = "test-kwh-meter"
location = {{ building = "main" }}
[energy]
period = "15m"
[[energy.tariffs]]
name = "grid"
category = "electricity"
valid_from = "2025-01-01"
currency = "EUR"
rates = [{{ price = 0.25 }}]
"#,
            state = dir.path().join("state").display(),
            profiles = profiles.display(),
        ),
    );
    // Three weeks of 15-minute counter values, 1 kWh per quarter hour.
    let mut csv = String::from("timestamp;value\n");
    let start: jiff::civil::DateTime = "2026-01-05T00:00".parse().unwrap();
    for q in 0..(21 * 96 + 1) {
        let dt = start
            .checked_add(jiff::SignedDuration::from_mins(15 * q))
            .unwrap();
        csv.push_str(&format!(
            "{};{}.000\n",
            dt.strftime("%Y-%m-%d %H:%M"),
            1000 + q
        ));
    }
    std::fs::write(dir.path().join("m.csv"), csv).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let csv_s = dir.path().join("m.csv");
    let (code, out, err) = caretaker(&[
        "energy",
        "import",
        "--config",
        cfg_s,
        "--csv",
        csv_s.to_str().unwrap(),
        "--device",
        "meter-1",
        "--point",
        "energy_total",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let _daemon = Daemon::start(&cfg, http_port);
    let api = Api {
        base: format!("http://127.0.0.1:{http_port}"),
        client: http_client(),
    };
    let cases: &[&[(&str, &str)]] = &[
        &[("from", "2026-01-12"), ("to", "2026-01-18")],
        &[
            ("from", "2026-01-12"),
            ("to", "2026-01-25"),
            ("by", "week"),
            ("group", "building"),
            ("format", "csv"),
        ],
        &[
            ("from", "2026-01-19"),
            ("to", "2026-01-19"),
            ("by", "hour"),
            ("format", "table"),
        ],
        &[
            ("from", "2026-01-12"),
            ("to", "2026-01-18"),
            ("format", "html"),
            ("device", "meter-1"),
        ],
        &[
            ("from", "2027-03-01"),
            ("to", "2027-03-02"),
            ("format", "table"),
        ],
    ];
    for case in cases {
        let mut args = vec!["energy", "report", "--config", cfg_s];
        let mut query = Vec::new();
        for (k, v) in *case {
            args.push(match *k {
                "from" => "--from",
                "to" => "--to",
                "by" => "--by",
                "group" => "--group",
                "format" => "--format",
                _ => "--device",
            });
            args.push(v);
            query.push(format!("{k}={}", urlencode(v)));
        }
        if !case.iter().any(|(k, _)| *k == "format") {
            args.extend(["--format", "json"]);
        }
        let (code, cli, err) = caretaker(&args);
        assert_eq!(code, 0, "{err}");
        let resp = api
            .client
            .get(format!(
                "{}/api/v1/energy/report?{}",
                api.base,
                query.join("&")
            ))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{case:?}");
        let body = resp.text().await.unwrap();
        // The CLI ends its output with a newline when the text has none.
        let cli = if body.ends_with('\n') {
            cli
        } else {
            cli.strip_suffix('\n').unwrap_or(&cli).to_string()
        };
        assert_eq!(body, cli, "{case:?}");
        assert!(body.len() > 40, "{case:?}: {body}");
    }
    let (s, v) = api
        .get("/api/v1/energy/report?from=2026-13-01", Some(VIEWER))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (400, Some("from")),
        "{v}"
    );
    let (s, v) = api.get("/api/v1/energy/report?by=year", Some(VIEWER)).await;
    assert_eq!((s, v["error"]["field"].as_str()), (400, Some("by")), "{v}");
    let (_, o) = api.get("/api/v1/overview", Some(VIEWER)).await;
    assert!(o["energy_today"].is_object(), "{o}");
    assert_eq!(o["devices"]["total"], 1);
}
