//! Catch-up reporting: how fast the backlog in front of InfluxDB drains, and when it will be gone.
//!
//! One task samples the queue and the writer's acknowledged-readings counter every `every`. It publishes
//! `caretaker_influx_drain_readings_per_second`, `caretaker_influx_incoming_readings_per_second`,
//! `caretaker_influx_catch_up_seconds` (estimated time to an empty backlog; -1 while it is not shrinking),
//! the spool gauges, and the same figures in `/health`. While the oldest unsent reading is older than
//! `behind_after`, it logs one progress line per period; when the backlog is gone it logs how long catching up
//! took and how many readings were replayed.

use super::queue::ChunkQueue;
use super::spool::Spool;
use crate::telemetry::{Health, SpoolHealth};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Rates over one sampling period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Readings per second acknowledged by InfluxDB.
    pub drain_rate: f64,
    /// Readings per second entering the queue.
    pub incoming_rate: f64,
    /// Seconds until the backlog is empty at these rates; `None` while it does not shrink.
    pub eta_seconds: Option<f64>,
}

/// Rates from two samples: backlog (readings queued) before and after, readings written and readings dropped
/// (`when_full = "drop_oldest"`) in between.
pub fn progress(
    backlog_before: u64,
    backlog_after: u64,
    written: u64,
    dropped: u64,
    dt: Duration,
) -> Progress {
    let secs = dt.as_secs_f64().max(1e-3);
    // Whatever was written, dropped or added to the backlog came in during the period.
    let incoming = (backlog_after + written + dropped).saturating_sub(backlog_before);
    let drain_rate = written as f64 / secs;
    let incoming_rate = incoming as f64 / secs;
    let net = drain_rate - incoming_rate;
    let eta_seconds = if backlog_after == 0 {
        Some(0.0)
    } else if net > 0.0 {
        Some(backlog_after as f64 / net)
    } else {
        None
    };
    Progress {
        drain_rate,
        incoming_rate,
        eta_seconds,
    }
}

/// Publishes the spool's figures to `/health` and the gauges.
pub fn publish_spool(spool: &Spool, health: &Health) {
    let s = spool.spool_stats();
    metrics::gauge!("caretaker_spool_bytes").set(s.disk_bytes as f64);
    health.set_spool(SpoolHealth {
        dir: spool.dir().display().to_string(),
        bytes: s.disk_bytes,
        max_bytes: s.max_bytes,
        segments: s.segments,
        when_full: spool.options().when_full.as_str(),
        fsync_interval_ms: spool.options().fsync_interval.as_millis() as u64,
        dropped_readings: s.dropped_readings,
        corrupt_bytes: s.corrupt_bytes,
        blocked: s.blocked,
        disk_full: s.disk_full,
        write_failed: s.write_failed,
    });
}

/// Samples every `every` until `stop` (the spool's health every second); logs progress while the oldest unsent reading is older than
/// `behind_after`.
pub async fn run(
    queue: Arc<dyn ChunkQueue>,
    spool: Option<Arc<Spool>>,
    health: Arc<Health>,
    every: Duration,
    behind_after: Duration,
    stop: CancellationToken,
) {
    let mut last = Instant::now();
    let mut last_backlog = queue.stats().readings;
    let mut last_written = health.readings_written.load(Ordering::Relaxed);
    let dropped_now = || {
        spool
            .as_ref()
            .map(|s| s.spool_stats().dropped_readings)
            .unwrap_or(0)
    };
    let mut last_dropped = dropped_now();
    // Start of the current episode of being behind, and the written counter then.
    let mut behind: Option<(Instant, u64)> = None;
    // Health and gauges refresh every second; rates and progress lines every `every`.
    let tick = every.min(Duration::from_secs(1));
    let mut next_report = Instant::now() + every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.cancelled() => return,
        }
        if let Some(s) = &spool {
            publish_spool(s, &health);
        }
        if Instant::now() < next_report {
            continue;
        }
        next_report += every;
        let st = queue.stats();
        let written = health.readings_written.load(Ordering::Relaxed);
        let dropped = dropped_now();
        let now = Instant::now();
        let p = progress(
            last_backlog,
            st.readings,
            written - last_written,
            dropped - last_dropped,
            now - last,
        );
        (last, last_backlog, last_written, last_dropped) = (now, st.readings, written, dropped);
        metrics::gauge!("caretaker_influx_drain_readings_per_second").set(p.drain_rate);
        metrics::gauge!("caretaker_influx_incoming_readings_per_second").set(p.incoming_rate);
        metrics::gauge!("caretaker_influx_catch_up_seconds").set(p.eta_seconds.unwrap_or(-1.0));
        *health.drain_rate.lock().unwrap_or_else(|e| e.into_inner()) =
            (p.drain_rate, p.eta_seconds);
        let age = st
            .oldest_ms
            .map(|o| (crate::util::now_ns() / 1_000_000 - o).max(0) as u64)
            .map(Duration::from_millis)
            .unwrap_or_default();
        if st.readings > 0 && age >= behind_after {
            let since = behind.get_or_insert((now, written));
            info!(
                backlog_readings = st.readings,
                backlog_bytes = st.bytes,
                oldest_unsent_seconds = age.as_secs(),
                drain_per_second = p.drain_rate.round(),
                incoming_per_second = p.incoming_rate.round(),
                eta_seconds = p.eta_seconds.map(|e| e.round()),
                behind_for_seconds = since.0.elapsed().as_secs(),
                "catching up with InfluxDB: {}",
                match p.eta_seconds {
                    Some(e) => format!(
                        "backlog empty in about {}",
                        crate::util::format_duration(Duration::from_secs_f64(e.min(1e9)))
                    ),
                    None => "backlog not shrinking".into(),
                }
            );
        } else if let Some((t0, w0)) = behind.take() {
            info!(
                took_seconds = t0.elapsed().as_secs(),
                readings_written = written - w0,
                "caught up with InfluxDB"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_eta() {
        // 10 s: 5,000 written, backlog 20,000 -> 16,000: 1,000 came in.
        let p = progress(20_000, 16_000, 5_000, 0, Duration::from_secs(10));
        assert_eq!(p.drain_rate, 500.0);
        assert_eq!(p.incoming_rate, 100.0);
        assert_eq!(p.eta_seconds, Some(40.0));
        // Outage: nothing written, backlog grows.
        let p = progress(100, 300, 0, 0, Duration::from_secs(2));
        assert_eq!(
            (p.drain_rate, p.incoming_rate, p.eta_seconds),
            (0.0, 100.0, None)
        );
        // Empty.
        assert_eq!(
            progress(10, 0, 10, 0, Duration::from_secs(1)).eta_seconds,
            Some(0.0)
        );
        // A full spool dropping 400 while 500 came in and nothing was written: the backlog grew by 100.
        let p = progress(1_000, 1_100, 0, 400, Duration::from_secs(1));
        assert_eq!((p.incoming_rate, p.eta_seconds), (500.0, None));
    }
}
