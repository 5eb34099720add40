//! Self-telemetry: Prometheus metrics through the `metrics` facade, a health summary, and the HTTP server that
//! serves both (`/metrics`, `/health`; mounted by `api::serve` on the `[http]` listener).
//!
//! Metric names are fixed once (ARCHITECTURE.md): `caretaker_readings_received_total{source}`,
//! `caretaker_readings_written_total`, `caretaker_readings_dropped_total{stage,reason}`,
//! `caretaker_errors_total{stage}`, ... A reading is one value of one point.

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install_metrics() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist when embedded (tests); then metrics go there and this handle is empty.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{counter, describe_counter, describe_gauge};
    describe_counter!(
        "caretaker_readings_received_total",
        "Readings decoded from sources (one value of one point each)"
    );
    describe_counter!(
        "caretaker_readings_written_total",
        "Readings acknowledged by InfluxDB"
    );
    describe_counter!(
        "caretaker_readings_dropped_total",
        "Readings dropped, by stage and reason; never silent"
    );
    describe_counter!(
        "caretaker_readings_queued_total",
        "Readings encoded as line protocol and queued for InfluxDB"
    );
    describe_counter!("caretaker_errors_total", "Errors by stage");
    describe_gauge!(
        "caretaker_influx_queue_bytes",
        "Encoded bytes waiting for InfluxDB"
    );
    describe_gauge!(
        "caretaker_influx_queue_readings",
        "Readings waiting for InfluxDB"
    );
    describe_gauge!(
        "caretaker_influx_oldest_unsent_seconds",
        "Age of the oldest reading not yet written to InfluxDB"
    );
    describe_gauge!(
        "caretaker_spool_bytes",
        "Bytes of spool segment files on disk"
    );
    describe_gauge!("caretaker_spool_segments", "Spool segment files on disk");
    describe_counter!(
        "caretaker_spool_corrupt_bytes_total",
        "Bytes of torn or corrupt spool records cut off (start-up) or unreadable (later)"
    );
    describe_gauge!(
        "caretaker_influx_drain_readings_per_second",
        "Readings acknowledged by InfluxDB per second (catch-up rate)"
    );
    describe_gauge!(
        "caretaker_influx_incoming_readings_per_second",
        "Readings entering the InfluxDB queue per second"
    );
    describe_gauge!(
        "caretaker_influx_catch_up_seconds",
        "Estimated seconds until the backlog is sent; -1 while it is not shrinking"
    );
    counter!("caretaker_readings_dropped_total", "stage" => "spool", "reason" => "spool_full")
        .increment(0);
    // Register the headline counters at zero so dashboards and scripts see them before the first event.
    counter!("caretaker_readings_received_total", "source" => "mqtt").increment(0);
    counter!("caretaker_readings_written_total").increment(0);
    counter!("caretaker_readings_queued_total").increment(0);
    counter!("caretaker_readings_dropped_total", "stage" => "mqtt", "reason" => "malformed_payload").increment(0);
    counter!("caretaker_errors_total", "stage" => "mqtt").increment(0);
    counter!("caretaker_errors_total", "stage" => "influx").increment(0);
}

/// What `/health` reports; updated by the tasks as they go.
#[derive(Debug, Default)]
pub struct Health {
    pub mqtt_configured: AtomicBool,
    pub mqtt_connected: AtomicBool,
    pub mqtt_last_message_ms: AtomicI64,
    pub influx_configured: AtomicBool,
    pub influx_failing: AtomicBool,
    pub influx_last_ok_ms: AtomicI64,
    pub influx_last_error: Mutex<Option<String>>,
    pub queue_bytes: AtomicU64,
    pub queue_readings: AtomicU64,
    pub queue_oldest_ms: AtomicI64,
    pub started_ms: AtomicI64,
    /// Readings InfluxDB acknowledged (for the catch-up rate).
    pub readings_written: AtomicU64,
    /// Failed InfluxDB writes by class (`network`, `server`, `rejected`, ...).
    pub write_errors: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// The spool, once opened (`None`: no InfluxDB, or it could not be opened).
    pub spool: Mutex<Option<SpoolHealth>>,
    /// Why the spool could not be opened (readings then wait in memory only).
    pub spool_error: Mutex<Option<String>>,
    /// Catch-up figures: readings/s written and seconds to an empty backlog (`None`: not shrinking).
    pub drain_rate: Mutex<(f64, Option<f64>)>,
    /// Polled Modbus devices and whether each is online. An offline device is listed, but does not make the
    /// daemon degraded: one dead meter is a maintenance matter, not a reason to restart Caretaker.
    pub modbus_online: Mutex<std::collections::BTreeMap<String, bool>>,
    /// Device ids seen at two locations (issue 13 item 7), first 100; listed, not degraded.
    pub conflicts: Mutex<Vec<DeviceConflict>>,
}

/// One device id seen at a second location: its readings from there are dropped.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceConflict {
    pub device: String,
    /// The location the device is known at (`building=a,room=1`).
    pub known: String,
    /// The other location a topic placed it at.
    pub seen: String,
    pub topic: String,
}

/// The spool's part of `/health`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SpoolHealth {
    pub dir: String,
    pub bytes: u64,
    pub max_bytes: u64,
    pub segments: u64,
    pub when_full: &'static str,
    pub fsync_interval_ms: u64,
    pub dropped_readings: u64,
    pub corrupt_bytes: u64,
    pub blocked: bool,
}

impl Health {
    pub fn new() -> Arc<Health> {
        let h = Health::default();
        h.started_ms
            .store(crate::util::now_ns() / 1_000_000, Ordering::Relaxed);
        Arc::new(h)
    }

    pub fn influx_ok(&self) {
        self.influx_failing.store(false, Ordering::Relaxed);
        self.influx_last_ok_ms
            .store(crate::util::now_ns() / 1_000_000, Ordering::Relaxed);
    }

    pub fn influx_failed(&self, error: &str) {
        self.influx_failing.store(true, Ordering::Relaxed);
        *self
            .influx_last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }

    pub fn write_error(&self, class: &'static str) {
        *self
            .write_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(class)
            .or_default() += 1;
    }

    /// Lists a device conflict in `/health` (the first 100).
    pub fn add_conflict(&self, c: DeviceConflict) {
        let mut v = self.conflicts.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 100 && !v.contains(&c) {
            v.push(c);
        }
    }

    pub fn set_spool(&self, s: SpoolHealth) {
        *self.spool.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
    }

    /// What waits for InfluxDB: bytes and readings queued, and the oldest one's time (Unix ms).
    pub fn set_queue(&self, bytes: u64, readings: u64, oldest_ms: Option<i64>) {
        self.queue_bytes.store(bytes, Ordering::Relaxed);
        self.queue_readings.store(readings, Ordering::Relaxed);
        self.queue_oldest_ms
            .store(oldest_ms.unwrap_or(0), Ordering::Relaxed);
        metrics::gauge!("caretaker_influx_queue_bytes").set(bytes as f64);
        metrics::gauge!("caretaker_influx_queue_readings").set(readings as f64);
        let age = oldest_ms
            .map(|o| (crate::util::now_ns() / 1_000_000 - o).max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        metrics::gauge!("caretaker_influx_oldest_unsent_seconds").set(age);
    }

    /// The `/health` document and whether everything configured is working.
    pub fn report(&self, site: &str) -> (bool, serde_json::Value) {
        let now = crate::util::now_ns() / 1_000_000;
        let mqtt_ok = !self.mqtt_configured.load(Ordering::Relaxed)
            || self.mqtt_connected.load(Ordering::Relaxed);
        let influx_ok = !self.influx_failing.load(Ordering::Relaxed);
        let oldest = self.queue_oldest_ms.load(Ordering::Relaxed);
        let spool_error = self
            .spool_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let ok = mqtt_ok && influx_ok && spool_error.is_none();
        let spool = self.spool.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (drain_rate, eta) = *self.drain_rate.lock().unwrap_or_else(|e| e.into_inner());
        let write_errors = self
            .write_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let modbus = {
            let m = self.modbus_online.lock().unwrap_or_else(|e| e.into_inner());
            serde_json::json!({
                "devices": m.len(),
                "offline": m.iter().filter(|(_, on)| !**on).map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            })
        };
        let doc = serde_json::json!({
            "status": if ok { "ok" } else { "degraded" },
            "site": site,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": (now - self.started_ms.load(Ordering::Relaxed)) / 1000,
            "mqtt": {
                "configured": self.mqtt_configured.load(Ordering::Relaxed),
                "connected": self.mqtt_connected.load(Ordering::Relaxed),
                "last_message_ms": self.mqtt_last_message_ms.load(Ordering::Relaxed),
            },
            "influxdb": {
                "configured": self.influx_configured.load(Ordering::Relaxed),
                "ok": influx_ok,
                "last_ok_ms": self.influx_last_ok_ms.load(Ordering::Relaxed),
                "last_error": self.influx_last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                "queued_bytes": self.queue_bytes.load(Ordering::Relaxed),
                "queued_readings": self.queue_readings.load(Ordering::Relaxed),
                "oldest_unsent_seconds": if oldest > 0 { (now - oldest).max(0) as f64 / 1000.0 } else { 0.0 },
                "write_errors": write_errors,
                "drain_readings_per_second": drain_rate,
                "catch_up_eta_seconds": eta,
            },
            "spool": match (&spool, &spool_error) {
                (Some(s), _) => serde_json::json!({ "durable": true, "dir": s.dir, "bytes": s.bytes,
                    "max_bytes": s.max_bytes, "segments": s.segments, "when_full": s.when_full,
                    "fsync_interval_ms": s.fsync_interval_ms, "dropped_readings": s.dropped_readings,
                    "corrupt_bytes": s.corrupt_bytes, "blocked": s.blocked }),
                (None, Some(e)) => serde_json::json!({ "durable": false, "error": e }),
                (None, None) => serde_json::Value::Null,
            },
            "modbus": modbus,
            "conflicts": self.conflicts.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        });
        (ok, doc)
    }
}

/// The routes `/health` and `/metrics`; the API's server (`api::serve`) mounts them on the one `[http]`
/// listener, behind a token when `metrics_public = false`.
pub fn router<S: Clone + Send + Sync + 'static>(
    site: String,
    health: Arc<Health>,
    metrics: PrometheusHandle,
) -> Router<S> {
    Router::new()
        .route(
            "/health",
            get(move || {
                let health = health.clone();
                let site = site.clone();
                async move {
                    let (ok, doc) = health.report(&site);
                    let code = if ok {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (code, axum::Json(doc))
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        m.render(),
                    )
                        .into_response()
                }
            }),
        )
}
