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
        "Deprecated (removed in the next release): use rate(caretaker_readings_written_total[5m])"
    );
    describe_gauge!(
        "caretaker_influx_incoming_readings_per_second",
        "Deprecated (removed in the next release): use rate(caretaker_readings_queued_total[5m])"
    );
    describe_counter!(
        "caretaker_work_order_changes_total",
        "Changes the rules made to work orders, by change: opened, updated (a repeat or a reopen), resolved"
    );
    describe_counter!(
        "caretaker_work_orders_total",
        "Deprecated (removed in the next release): caretaker_work_order_changes_total{change} under its old name"
    );
    describe_gauge!(
        "caretaker_build_info",
        "Always 1; the labels say which build runs: version, commit (when built with CARETAKER_COMMIT), features"
    );
    let (version, commit, features) = build_info_labels();
    metrics::gauge!("caretaker_build_info", "version" => version, "commit" => commit, "features" => features)
        .set(1.0);
    let _ = STARTED_S.get_or_init(|| crate::util::now_ns() as f64 / 1e9);
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
    describe_counter!(
        "caretaker_config_reloads_total",
        "Configuration reloads (SIGHUP), by result: ok (applied) or error (refused, the old one kept)"
    );
    describe_counter!(
        "caretaker_config_reload_errors_total",
        "Errors found in refused configuration reloads"
    );
    describe_gauge!(
        "caretaker_config_last_reload_successful",
        "1 if the last configuration reload was applied (or none was tried), 0 if it was refused"
    );
    describe_gauge!(
        "caretaker_config_last_reload_success_timestamp_seconds",
        "Unix time of the last applied configuration reload (or the start)"
    );
    counter!("caretaker_config_reloads_total", "result" => "ok").increment(0);
    counter!("caretaker_config_reloads_total", "result" => "error").increment(0);
    metrics::gauge!("caretaker_config_last_reload_successful").set(1.0);
    metrics::gauge!("caretaker_config_last_reload_success_timestamp_seconds")
        .set(crate::util::now_ns() as f64 / 1e9);
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
    /// Polled BACnet devices and whether each is online; same rule as `modbus_online`.
    pub bacnet_online: Mutex<std::collections::BTreeMap<String, bool>>,
    /// Device ids seen at two locations (issue 13 item 7), first 100; listed, not degraded.
    pub conflicts: Mutex<Vec<DeviceConflict>>,
    /// Shutdown has begun: tasks that end now end on purpose.
    pub stopping: AtomicBool,
    /// The watchdog's view: every long-running task by name, with its heartbeat (see [`Health::task`]).
    pub tasks: Mutex<std::collections::BTreeMap<String, TaskBeat>>,
    /// The last configuration reload (SIGHUP), for `/health`'s `config_reload`.
    pub config_reload: Mutex<ConfigReload>,
}

/// The outcome of the configuration reloads (SIGHUP / `systemctl reload`) since start-up.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConfigReload {
    /// Whether the last reload was applied (`None`: no reload yet).
    pub last_ok: Option<bool>,
    /// The errors of the last refused reload, one per line (`None` after a successful one).
    pub last_error: Option<String>,
    /// When the last reload was tried (RFC 3339, UTC).
    pub time: Option<String>,
    /// Reloads applied and refused since start-up.
    pub applied: u64,
    pub refused: u64,
}

impl Health {
    /// Records a reload's outcome: `/health` and the `caretaker_config_reloads_total{result}` counter, the
    /// `caretaker_config_last_reload_successful` gauge (as Prometheus itself names it) and the error count.
    pub fn config_reloaded(&self, errors: &[String]) {
        let mut r = self.config_reload.lock().unwrap_or_else(|e| e.into_inner());
        r.last_ok = Some(errors.is_empty());
        r.time = Some(
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or(jiff::Timestamp::now())
                .to_string(),
        );
        if errors.is_empty() {
            r.applied += 1;
            r.last_error = None;
            metrics::counter!("caretaker_config_reloads_total", "result" => "ok").increment(1);
            metrics::gauge!("caretaker_config_last_reload_successful").set(1.0);
            metrics::gauge!("caretaker_config_last_reload_success_timestamp_seconds")
                .set(crate::util::now_ns() as f64 / 1e9);
        } else {
            r.refused += 1;
            r.last_error = Some(errors.join("\n"));
            metrics::counter!("caretaker_config_reloads_total", "result" => "error").increment(1);
            metrics::counter!("caretaker_config_reload_errors_total")
                .increment(errors.len() as u64);
            metrics::gauge!("caretaker_config_last_reload_successful").set(0.0);
        }
    }
}

/// One long-running task as the watchdog sees it.
#[derive(Debug, Clone)]
pub struct TaskBeat {
    /// How often the task beats when healthy; no beat for [`STUCK_AFTER`] periods means stuck.
    pub period: std::time::Duration,
    /// Last beat, monotonic (see [`mono_ms`]).
    pub last_ms: u64,
    /// `Some(why)` once the task ended (panicked, or returned while the daemon still runs).
    pub ended: Option<String>,
}

/// A task is stuck after this many periods without a beat.
pub const STUCK_AFTER: u32 = 5;

/// Milliseconds on a monotonic clock (for heartbeats: wall-clock steps must not make a task look stuck).
pub fn mono_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// A task's handle on its heartbeat: [`Heartbeat::beat`] in its loop; dropping it while panicking marks the
/// task dead, and [`Heartbeat::ended`] records any other end.
#[derive(Debug)]
pub struct Heartbeat {
    health: Arc<Health>,
    name: String,
}

impl Heartbeat {
    pub fn beat(&self) {
        if let Some(t) = self.lock().get_mut(&self.name) {
            t.last_ms = mono_ms();
        }
    }

    /// Records that the task ended, and why (makes `/health` degraded until it is registered again).
    pub fn ended(&self, why: impl Into<String>) {
        if let Some(t) = self.lock().get_mut(&self.name) {
            t.ended = Some(why.into());
        }
    }

    /// The task ended on purpose (shutdown): it leaves the watchdog's list.
    pub fn retire(self) {
        self.lock().remove(&self.name);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, TaskBeat>> {
        self.health.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let why = if std::thread::panicking() {
            "panicked"
        } else {
            "stopped"
        };
        if let Some(t) = self.lock().get_mut(&self.name) {
            if t.ended.is_none() {
                t.ended = Some(why.into());
            }
        }
    }
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
    /// The last write failed with ENOSPC/EDQUOT (cleared by the next write that succeeds).
    pub disk_full: bool,
    /// The last write failed for another reason.
    pub write_failed: bool,
}

impl Health {
    pub fn new() -> Arc<Health> {
        let h = Health::default();
        h.started_ms
            .store(crate::util::now_ns() / 1_000_000, Ordering::Relaxed);
        Arc::new(h)
    }

    /// Registers a long-running task with the watchdog: it must call [`Heartbeat::beat`] at least every
    /// `period`; a task that stops beating for [`STUCK_AFTER`] periods, panics or ends makes `/health` degraded
    /// with its name.
    pub fn task(
        self: &Arc<Self>,
        name: impl Into<String>,
        period: std::time::Duration,
    ) -> Heartbeat {
        let name = name.into();
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).insert(
            name.clone(),
            TaskBeat {
                period,
                last_ms: mono_ms(),
                ended: None,
            },
        );
        Heartbeat {
            health: self.clone(),
            name,
        }
    }

    /// Tasks that are dead or stuck, with why (`"pipeline: stuck (no heartbeat for 12 s)"`); empty when all beat.
    pub fn unhealthy_tasks(&self) -> Vec<String> {
        let now = mono_ms();
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks
            .iter()
            .filter_map(|(name, t)| {
                if let Some(why) = &t.ended {
                    return Some(format!("task {name}: {why}"));
                }
                let silent = now.saturating_sub(t.last_ms);
                let limit = (t.period.as_millis() as u64).saturating_mul(STUCK_AFTER as u64);
                (silent > limit)
                    .then(|| format!("task {name}: stuck (no heartbeat for {} s)", silent / 1000))
            })
            .collect()
    }

    /// Every cause of a degraded status, e.g. `"spool: disk full"`; empty when everything configured works.
    pub fn reasons(&self) -> Vec<String> {
        let mut r = Vec::new();
        if self.mqtt_configured.load(Ordering::Relaxed)
            && !self.mqtt_connected.load(Ordering::Relaxed)
        {
            r.push("mqtt: not connected".to_string());
        }
        if self.influx_failing.load(Ordering::Relaxed) {
            r.push("influxdb: writes failing".to_string());
        }
        if let Some(e) = &*self.spool_error.lock().unwrap_or_else(|e| e.into_inner()) {
            r.push(format!("spool: cannot open ({e})"));
        }
        if let Some(s) = &*self.spool.lock().unwrap_or_else(|e| e.into_inner()) {
            if s.disk_full {
                r.push("spool: disk full".to_string());
            } else if s.write_failed {
                r.push("spool: writes failing".to_string());
            }
        }
        r.extend(self.unhealthy_tasks());
        r
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
        let reasons = self.reasons();
        let ok = mqtt_ok && influx_ok && spool_error.is_none() && reasons.is_empty();
        let tasks: serde_json::Map<String, serde_json::Value> = {
            let t = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            let mono = mono_ms();
            t.iter()
                .map(|(name, b)| {
                    (
                        name.clone(),
                        serde_json::json!({
                            "period_ms": b.period.as_millis() as u64,
                            "last_beat_ms_ago": mono.saturating_sub(b.last_ms),
                            "ended": b.ended,
                        }),
                    )
                })
                .collect()
        };
        let spool = self.spool.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (drain_rate, eta) = *self.drain_rate.lock().unwrap_or_else(|e| e.into_inner());
        let write_errors = self
            .write_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let polled = |map: &Mutex<std::collections::BTreeMap<String, bool>>| {
            let m = map.lock().unwrap_or_else(|e| e.into_inner());
            serde_json::json!({
                "devices": m.len(),
                "offline": m.iter().filter(|(_, on)| !**on).map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            })
        };
        let modbus = polled(&self.modbus_online);
        let bacnet = polled(&self.bacnet_online);
        let doc = serde_json::json!({
            "status": if ok { "ok" } else { "degraded" },
            "reasons": reasons,
            "tasks": tasks,
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
                    "corrupt_bytes": s.corrupt_bytes, "blocked": s.blocked, "disk_full": s.disk_full,
                    "write_failed": s.write_failed }),
                (None, Some(e)) => serde_json::json!({ "durable": false, "error": e }),
                (None, None) => serde_json::Value::Null,
            },
            "modbus": modbus,
            "bacnet": bacnet,
            "conflicts": self.conflicts.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            "config_reload": self.config_reload.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        });
        (ok, doc)
    }
}

/// `caretaker_build_info{version,commit,features} 1`: the commit comes from `CARETAKER_COMMIT` at build time
/// (the Dockerfile passes it; empty when not given), features are the cargo features built in.
pub fn build_info_labels() -> (&'static str, &'static str, String) {
    let mut features = Vec::new();
    if cfg!(feature = "demo") {
        features.push("demo");
    }
    (
        env!("CARGO_PKG_VERSION"),
        option_env!("CARETAKER_COMMIT").unwrap_or(""),
        features.join(","),
    )
}

/// Unix time at which the process started, for `process_start_time_seconds` when `/proc/stat` is hidden (systemd
/// `ProcSubset=pid`): taken when the metrics are installed, first thing in `caretaker run`.
static STARTED_S: OnceLock<f64> = OnceLock::new();

/// The standard process metrics, read from `/proc/self` at each scrape as the Prometheus client libraries do
/// (same names, types and meanings): CPU seconds, resident and virtual memory, open and maximum file
/// descriptors, start time. Empty where `/proc` is not there.
pub fn process_metrics() -> String {
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, v: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    };
    // SAFETY: sysconf has no preconditions.
    let (tick, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let (tick, page) = (tick.max(1) as f64, page.max(1) as f64);
    if let Some(st) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
    {
        put(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (st.utime + st.stime) as f64 / tick,
        );
        put(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            st.vsize as f64,
        );
        put(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            st.rss as f64 * page,
        );
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        let start = match boot {
            Some(b) => b + st.starttime as f64 / tick,
            None => *STARTED_S.get_or_init(|| crate::util::now_ns() as f64 / 1e9),
        };
        put(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries while it is read.
        let n = dir.count().saturating_sub(1);
        put(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            n as f64,
        );
    }
    if let Some(max) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| max_open_files(&s))
    {
        put(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    out
}

/// The fields of `/proc/self/stat` the process metrics need.
#[derive(Debug, PartialEq)]
pub struct ProcStat {
    pub utime: u64,
    pub stime: u64,
    pub starttime: u64,
    pub vsize: u64,
    pub rss: u64,
}

/// Parses `/proc/PID/stat`: the command name (field 2) is in parentheses and may hold spaces and `)`, so
/// fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): field n is f[n - 3].
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        utime: n(14)?,
        stime: n(15)?,
        starttime: n(22)?,
        vsize: n(23)?,
        rss: n(24)?,
    })
}

/// The soft "Max open files" limit of `/proc/self/limits` (`unlimited` as +Inf).
pub fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(f64::INFINITY);
    }
    soft.parse().ok()
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
                        format!("{}{}", m.render(), process_metrics()),
                    )
                        .into_response()
                }
            }),
        )
}

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn proc_stat_and_limits_parse_like_the_prometheus_clients() {
        // A command name with a space and a parenthesis, as the kernel writes it.
        let stat = "4242 (care taker) d) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 9 0 \
                    123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 4096 17987 0 0 0 17 1 0 0 0 0 0";
        let st = parse_stat(stat).unwrap();
        assert_eq!(
            st,
            ProcStat {
                utime: 250,
                stime: 75,
                starttime: 123456,
                vsize: 987654321,
                rss: 2048
            }
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_its_metrics() {
        let text = process_metrics();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
            let v: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
            // CPU seconds may still be 0 ticks in a fresh test process; the others cannot be 0.
            assert!(
                v > 0.0 || name == "process_cpu_seconds_total" && v == 0.0,
                "{line}"
            );
        }
        assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    }
}
