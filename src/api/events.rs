//! Live events: `GET /api/v1/events` as Server-Sent Events.
//!
//! - `event: work_order`, data = the work order's API JSON, on every change from any writer: a watcher reads
//!   the store's history table every second on a connection of its own, so changes made by the rules, by the
//!   API and by `caretaker work-orders` in another process all show up the same way.
//! - `event: device`, data = `{id, online, last_seen}`, when a device goes online or offline (the live state
//!   is re-evaluated every second).
//! - `event: ready` once at the start (the subscription is in place), and keep-alive comments every 15 s.

use super::ApiState;
use super::auth::Auth;
use crate::work_orders::store::Store;
use crate::work_orders::{now_ms, rfc3339_ms};
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// One event for the stream.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub data: String,
}

/// Starts the work-order watcher and the device ticker; both stop with `stop`.
pub fn start(st: ApiState, stop: CancellationToken) {
    let (st2, stop2) = (st.clone(), stop.clone());
    tokio::spawn(async move {
        let path = st2.store_path();
        let mut conn: Option<Store> = None;
        let mut pos: Option<i64> = None;
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop2.cancelled() => return,
                _ = every.tick() => {}
            }
            if !path.exists() {
                // No store yet: every change it will hold happens after the stream started, so none is skipped
                // (a work order opened and resolved before the first read would otherwise be taken as history).
                pos.get_or_insert(0);
                continue;
            }
            let (c, p) = (conn.take(), pos);
            let path2 = path.clone();
            let r = tokio::task::spawn_blocking(move || {
                let s = match c {
                    Some(s) => s,
                    None => Store::open(&path2, None).map_err(|e| e.to_string())?,
                };
                let r = match p {
                    None => s.last_change().map(|n| (Vec::new(), n)),
                    Some(p) => s.changed_since(p),
                };
                match r {
                    Ok(x) => Ok((s, x)),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
            match r {
                Ok(Ok((s, (changed, p)))) => {
                    conn = Some(s);
                    pos = Some(p);
                    if changed.is_empty() || st2.events.receiver_count() == 0 {
                        continue;
                    }
                    let cat = st2.catalog.read().unwrap_or_else(|e| e.into_inner());
                    let now = now_ms();
                    for w in &changed {
                        let v = super::work_orders::wo_json(w, &cat, now);
                        let _ = st2.events.send(Event {
                            kind: "work_order",
                            data: v.to_string(),
                        });
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "live events: cannot read the work-order store")
                }
                Err(_) => {}
            }
        }
    });
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let changes = {
                let cat = st.catalog.read().unwrap_or_else(|e| e.into_inner());
                st.live.tick(&cat, crate::util::now_ns())
            };
            for c in changes {
                let _ = st.events.send(Event {
                    kind: "device",
                    data: json!({"id": c.id, "online": c.online, "last_seen": c.last_seen_ms.map(rfc3339_ms)})
                        .to_string(),
                });
            }
        }
    });
}

/// `GET /api/v1/events`.
pub async fn stream(
    State(st): State<ApiState>,
    Auth(_): Auth,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = st.events.subscribe();
    let stop = st.shutdown.clone();
    let ready = SseEvent::default()
        .event("ready")
        .data(json!({"site": st.site}).to_string());
    let first = futures_util::stream::once(async move { Ok::<_, Infallible>(ready) });
    let rest = futures_util::stream::unfold((rx, stop), |(mut rx, stop)| async move {
        let ev = tokio::select! {
            _ = stop.cancelled() => return None,
            r = rx.recv() => match r {
                Ok(e) => SseEvent::default().event(e.kind).data(e.data),
                Err(RecvError::Lagged(n)) => SseEvent::default().comment(format!("{n} events were missed: reload")),
                Err(RecvError::Closed) => return None,
            },
        };
        Some((Ok(ev), (rx, stop)))
    });
    use futures_util::StreamExt;
    Sse::new(first.chain(rest)).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keep-alive"),
    )
}
