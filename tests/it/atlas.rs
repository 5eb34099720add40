//! The Atlas CMMS round trip. No Atlas server can be installed here (Java + PostgreSQL; not in Debian, PyPI or
//! npm), so Atlas is an in-process HTTP stand-in that follows Atlas's documented REST API (Grashjs/cmms
//! `WorkOrderController`: `POST /work-orders` answers the created work order with its numeric `id`,
//! `GET /work-orders/{id}` answers it with `status` OPEN / IN_PROGRESS / ON_HOLD / COMPLETE, `PATCH
//! /work-orders/{id}`; `x-api-key` authenticates). Everything else is real: mosquitto, `caretaker run`, the
//! work-order store read back with `caretaker work-orders show`.
//!
//! A breach opens an Atlas work order that carries the device's `asset_id` as its asset reference and the
//! rule's labels and annotations in its description; completing it in Atlas resolves it in Caretaker.

use crate::support::*;
use crate::work_order_site::WorkOrderSite;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Atlas {
    /// (id, body of the POST, status)
    orders: Vec<(i64, serde_json::Value, String)>,
    patches: Vec<(i64, serde_json::Value)>,
}
type Shared = Arc<Mutex<Atlas>>;

fn authorized(h: &HeaderMap) -> bool {
    h.get("x-api-key").and_then(|v| v.to_str().ok()) == Some("atlas-key")
}

async fn create(
    State(a): State<Shared>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    if !authorized(&h) {
        return (StatusCode::UNAUTHORIZED, "{}".into());
    }
    let mut a = a.lock().unwrap();
    let id = 1000 + a.orders.len() as i64;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    a.orders.push((id, v, "OPEN".into()));
    (
        StatusCode::OK,
        serde_json::json!({"id": id, "status": "OPEN"}).to_string(),
    )
}

async fn show(State(a): State<Shared>, h: HeaderMap, Path(id): Path<i64>) -> (StatusCode, String) {
    if !authorized(&h) {
        return (StatusCode::UNAUTHORIZED, "{}".into());
    }
    let a = a.lock().unwrap();
    match a.orders.iter().find(|o| o.0 == id) {
        Some((id, _, status)) => (
            StatusCode::OK,
            serde_json::json!({"id": id, "status": status}).to_string(),
        ),
        None => (StatusCode::NOT_FOUND, "{}".into()),
    }
}

async fn patch(
    State(a): State<Shared>,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> StatusCode {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    a.lock().unwrap().patches.push((id, v));
    StatusCode::OK
}

async fn start_atlas() -> (u16, Shared) {
    let a = Shared::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/work-orders", axum::routing::post(create))
        .route("/work-orders/{id}", axum::routing::get(show).patch(patch))
        .with_state(a.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atlas_work_order_carries_the_asset_and_completing_it_in_atlas_resolves_it_here() {
    let mosq = Mosquitto::start();
    let (atlas_port, atlas) = start_atlas().await;
    let site = WorkOrderSite::new(
        &mosq,
        "atlas",
        "1s",
        r#"    labels: { floor: "3" }
    annotations: { runbook_url: "https://wiki.example.org/room-too-hot" }
    work_order:
      title: "Room {device} too hot"
      team: hvac
"#,
    );
    std::fs::write(site.dir.path().join("atlas.key"), "atlas-key\n").unwrap();
    let run = site
        .start(&format!(
            r#"[[devices]]
id = "room-1"
profile = "generic-room-sensor"
location = {{ building = "b1" }}
asset_id = "42"
[[work_orders.targets]]
kind = "atlas"
name = "atlas"
url = "http://127.0.0.1:{atlas_port}"
api_key_file = "atlas.key"
poll_every = "1s"
timeout = "2s"
max_retry_backoff = "1s"
"#
        ))
        .await;
    let daemon = &run.daemon;
    run.breach("room-1", 2_000).await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            !atlas.lock().unwrap().orders.is_empty()
        })
        .await,
        "no work order reached Atlas:\n{}",
        daemon.log_text()
    );
    let (atlas_id, body, _) = atlas.lock().unwrap().orders[0].clone();
    assert_eq!(body["asset"], serde_json::json!({"id": 42}), "{body}");
    assert_eq!(body["title"], "Room room-1 too hot", "{body}");
    assert_eq!(body["priority"], "MEDIUM", "{body}");
    let description = body["description"].as_str().unwrap_or_default();
    assert!(description.contains("floor: 3"), "{description}");
    assert!(
        description.contains("runbook_url: https://wiki.example.org/room-too-hot"),
        "{description}"
    );

    // Still open here while Atlas says OPEN.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = &site.state;
    let show = || {
        let (code, out, err) = caretaker(&[
            "work-orders",
            "show",
            "--state",
            state.to_str().unwrap(),
            "1",
            "--format",
            "json",
        ]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    assert_eq!(show()["work_order"]["status"], "open");

    // A technician completes it in Atlas: the poll resolves it here, by `atlas`.
    atlas.lock().unwrap().orders[0].2 = "COMPLETE".into();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            show()["work_order"]["status"] == "resolved"
        })
        .await,
        "not resolved after Atlas completed it:\n{}",
        daemon.log_text()
    );
    let v = show();
    assert_eq!(v["work_order"]["resolved_by"], "atlas", "{v}");
    let history = v["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(
        last["note"],
        format!("completed in Atlas (work order {atlas_id})"),
        "{v}"
    );
}
