//! The InfluxDB sink of a running daemon: the spool (or the in-memory queue when the spool cannot open), the
//! catch-up reporter and the writer task, and their part of the ordered shutdown.

use crate::sinks::influx::config::InfluxConfig;
use crate::sinks::influx::queue::{ChunkQueue, MemQueue};
use crate::sinks::influx::spool::{Spool, SpoolError, SpoolOptions};
use crate::sinks::influx::writer::HttpWriter;
use crate::sinks::influx::{WriterLoop, WriterSettings};
use crate::telemetry::Health;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The running sink; `queue` is what the pipeline and the other InfluxDB writers push into.
pub struct Sink {
    pub queue: Option<Arc<dyn ChunkQueue>>,
    spool: Option<Arc<Spool>>,
    writer_task: Option<tokio::task::JoinHandle<()>>,
    writer_drain: CancellationToken,
    writer_hard: CancellationToken,
    reporter_stop: CancellationToken,
}

/// Opens the spool under `[state] dir`, recovering what the last run left unsent.
fn open_spool(state_dir: &Path, influx: &InfluxConfig) -> Result<Arc<Spool>, SpoolError> {
    let opts = SpoolOptions::new(
        state_dir.join("spool"),
        influx.spool_max_bytes,
        influx.when_full,
        influx.fsync_interval,
    );
    let (spool, rec) = Spool::open(opts)?;
    info!(
        dir = %spool.dir().display(),
        max_bytes = influx.spool_max_bytes,
        when_full = influx.when_full.as_str(),
        fsync_interval = ?influx.fsync_interval,
        recovered_readings = rec.readings,
        corrupt_bytes_skipped = rec.corrupt_bytes,
        "spooling readings to disk before InfluxDB"
    );
    Ok(spool)
}

/// Starts the sink for `[influxdb]` (nothing is stored without the section).
pub fn start(
    influx: Option<&InfluxConfig>,
    state_dir: &Path,
    health: &Arc<Health>,
) -> anyhow::Result<Sink> {
    let mut sink = Sink {
        queue: None,
        spool: None,
        writer_task: None,
        writer_drain: CancellationToken::new(),
        writer_hard: CancellationToken::new(),
        reporter_stop: CancellationToken::new(),
    };
    let Some(influx) = influx else {
        warn!("no [influxdb] section: readings are not stored");
        return Ok(sink);
    };
    health
        .influx_configured
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let queue: Arc<dyn ChunkQueue> = match open_spool(state_dir, influx) {
        Ok(s) => {
            crate::sinks::influx::catchup::publish_spool(&s, health);
            sink.spool = Some(s.clone());
            s
        }
        Err(e) if e.is_locked() => return Err(e.into()),
        Err(e) => {
            error!(error = %e, queue_max_bytes = influx.queue_max_bytes,
                "cannot open the spool: readings wait in memory only and are lost if the process stops while InfluxDB is unreachable");
            *health.spool_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            Arc::new(MemQueue::new(influx.queue_max_bytes))
        }
    };
    crate::watchdog::spawn_watched(
        health,
        "influx-catchup",
        crate::watchdog::WATCH_PERIOD,
        crate::sinks::influx::catchup::run(
            queue.clone(),
            sink.spool.clone(),
            health.clone(),
            Duration::from_secs(5),
            influx.flush_interval + Duration::from_secs(10),
            sink.reporter_stop.clone(),
        ),
    );
    let writer = HttpWriter::new(influx)?;
    info!(endpoint = %writer.endpoint(), "writing to InfluxDB");
    let settings = WriterSettings {
        batch_size: influx.batch_size,
        flush_interval: influx.flush_interval,
        max_retry_backoff: influx.max_retry_backoff,
    };
    let wl = WriterLoop::new(queue.clone(), writer, settings, health.clone());
    sink.writer_task = Some(crate::watchdog::spawn_watched(
        health,
        "influx-writer",
        crate::watchdog::WATCH_PERIOD,
        wl.run(sink.writer_drain.clone(), sink.writer_hard.clone()),
    ));
    sink.queue = Some(queue);
    Ok(sink)
}

impl Sink {
    /// The writer sends what is queued until `deadline`; what is left stays in the spool (or, without one, is
    /// counted as lost). Then the spool is synced.
    pub async fn shutdown(self, deadline: tokio::time::Instant) {
        self.writer_drain.cancel();
        if let Some(task) = self.writer_task {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                self.writer_hard.cancel();
                if let Some(q) = &self.queue {
                    report_unsent(q.as_ref());
                }
            }
        }
        self.reporter_stop.cancel();
        if let Some(Err(e)) = self.spool.as_ref().map(|s| s.sync()) {
            error!(error = %e, "spool fsync at shutdown failed");
        }
    }
}

fn report_unsent(q: &dyn ChunkQueue) {
    let st = q.stats();
    if st.readings > 0 && !q.durable() {
        metrics::counter!("caretaker_readings_dropped_total", "stage" => "influx", "reason" => "shutdown")
            .increment(st.readings);
        error!(
            readings = st.readings,
            "InfluxDB unreachable at shutdown: queued readings are lost (no spool)"
        );
    } else if st.readings > 0 {
        warn!(
            readings = st.readings,
            "InfluxDB unreachable at shutdown: unsent readings stay in the spool and are sent after the next start"
        );
    }
}
