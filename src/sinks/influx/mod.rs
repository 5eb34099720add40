//! The InfluxDB sink: a queue of encoded chunks (see [`queue`]) drained by one writer task.
//!
//! The writer sends a batch when it holds `batch_size` lines or its oldest line has waited `flush_interval`,
//! retries transient failures with capped backoff (honouring `Retry-After`), splits on 413, and drops only what
//! the server refuses as data, counting every dropped reading. It commits chunks only after InfluxDB answered,
//! so a queue that survives restarts (the spool) replays whatever was in flight.

pub mod catchup;
pub mod config;
pub mod encode;
pub mod query;
pub mod queue;
pub mod spool;
pub mod writer;

use crate::telemetry::Health;
use crate::util::{Backoff, RateLimiter};
use queue::ChunkQueue;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use writer::{TimeSeriesWriter, WriteError};

/// Settings of the writer loop.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub max_retry_backoff: Duration,
}

/// What became of one batch.
enum Outcome {
    Done,
    /// Hard stop while retrying: the batch stays queued.
    Aborted,
}

pub struct WriterLoop<W: TimeSeriesWriter> {
    pub queue: Arc<dyn ChunkQueue>,
    pub writer: W,
    pub settings: WriterSettings,
    pub health: Arc<Health>,
    log_limit: RateLimiter,
}

impl<W: TimeSeriesWriter> WriterLoop<W> {
    pub fn new(
        queue: Arc<dyn ChunkQueue>,
        writer: W,
        settings: WriterSettings,
        health: Arc<Health>,
    ) -> Self {
        WriterLoop {
            queue,
            writer,
            settings,
            health,
            log_limit: RateLimiter::new(Duration::from_secs(10)),
        }
    }

    /// Runs until `drain` is cancelled and the queue is empty, or until `hard_stop` is cancelled.
    /// After `drain`, batches go out without waiting for `flush_interval`.
    pub async fn run(self, drain: CancellationToken, hard_stop: CancellationToken) {
        loop {
            // Wait until a batch is due.
            loop {
                let st = self.queue.stats();
                self.health.set_queue(st.bytes, st.readings, st.oldest_ms);
                let draining = drain.is_cancelled();
                if st.chunks == 0 {
                    if draining {
                        return;
                    }
                    let notified = self.queue.notify_data().notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if self.queue.stats().chunks > 0 {
                        continue;
                    }
                    tokio::select! {
                        _ = notified => {}
                        _ = drain.cancelled() => {}
                        _ = hard_stop.cancelled() => return,
                    }
                    continue;
                }
                let age_ms = crate::util::now_ns() / 1_000_000 - st.oldest_ms.unwrap_or(i64::MAX);
                let due_in = self
                    .settings
                    .flush_interval
                    .saturating_sub(Duration::from_millis(age_ms.max(0) as u64));
                if draining || st.lines as usize >= self.settings.batch_size || due_in.is_zero() {
                    break;
                }
                let notified = self.queue.notify_data().notified();
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(due_in) => {}
                    _ = drain.cancelled() => {}
                    _ = hard_stop.cancelled() => return,
                }
            }
            let chunks = self.queue.peek(self.settings.batch_size);
            let readings: u64 = chunks.iter().map(|c| c.readings as u64).sum();
            let body: Vec<u8> = if chunks.len() == 1 {
                chunks[0].body.clone()
            } else {
                let mut b = Vec::with_capacity(chunks.iter().map(|c| c.body.len()).sum());
                for c in &chunks {
                    b.extend_from_slice(&c.body);
                }
                b
            };
            match self.send(&body, readings, &hard_stop).await {
                Outcome::Done => self.queue.commit(chunks.len()),
                Outcome::Aborted => return,
            }
        }
    }

    /// Sends one body until it is written or definitively refused; splits on 413.
    async fn send(&self, body: &[u8], readings: u64, hard_stop: &CancellationToken) -> Outcome {
        let mut pending: Vec<(Vec<u8>, u64)> = vec![(body.to_vec(), readings)];
        let mut backoff = Backoff::new(Duration::from_millis(200), self.settings.max_retry_backoff);
        while let Some((body, readings)) = pending.pop() {
            loop {
                let started = std::time::Instant::now();
                let result = self.writer.write(&body).await;
                metrics::histogram!("caretaker_influx_write_seconds")
                    .record(started.elapsed().as_secs_f64());
                match result {
                    Ok(()) => {
                        metrics::counter!("caretaker_readings_written_total").increment(readings);
                        self.health
                            .readings_written
                            .fetch_add(readings, std::sync::atomic::Ordering::Relaxed);
                        self.health.influx_ok();
                        if backoff.attempts() > 0 {
                            info!(
                                attempts = backoff.attempts(),
                                "InfluxDB writes succeed again"
                            );
                        }
                        backoff.reset();
                        break;
                    }
                    Err(WriteError::TooLarge) if bytecount_lines(&body) > 1 => {
                        let (a, b) = split_half(&body);
                        let ra = count_readings(a);
                        warn!(
                            bytes = body.len(),
                            "InfluxDB refused the batch as too large (413); splitting it"
                        );
                        metrics::counter!("caretaker_errors_total", "stage" => "influx", "class" => "too_large").increment(1);
                        self.health.write_error("too_large");
                        pending.push((b.to_vec(), readings.saturating_sub(ra)));
                        pending.push((a.to_vec(), ra));
                        break;
                    }
                    Err(e @ (WriteError::Rejected { .. } | WriteError::TooLarge)) => {
                        let sample = String::from_utf8_lossy(
                            body.split(|&b| b == b'\n').next().unwrap_or(&[]),
                        )
                        .into_owned();
                        error!(error = %e, readings, first_line = %sample, "InfluxDB rejected a batch; its readings are dropped");
                        metrics::counter!("caretaker_errors_total", "stage" => "influx", "class" => e.class()).increment(1);
                        self.health.write_error(e.class());
                        metrics::counter!("caretaker_readings_dropped_total", "stage" => "influx", "reason" => "rejected")
                            .increment(readings);
                        break;
                    }
                    Err(e @ WriteError::Retry { .. }) => {
                        metrics::counter!("caretaker_errors_total", "stage" => "influx", "class" => e.class()).increment(1);
                        self.health.write_error(e.class());
                        self.health.influx_failed(&e.to_string());
                        let WriteError::Retry {
                            retry_after, class, ..
                        } = &e
                        else {
                            unreachable!()
                        };
                        let wait = backoff.next_delay().max(retry_after.unwrap_or_default());
                        if let Some(suppressed) = self.log_limit.check(class) {
                            let queued = self.queue.stats();
                            if *class == "unauthorized" || *class == "not_found" {
                                error!(error = %e, retry_in = ?wait, queued_readings = queued.readings, suppressed,
                                    "InfluxDB refuses the credentials, org/bucket or database; fix the [influxdb] config; retrying");
                            } else {
                                warn!(error = %e, retry_in = ?wait, queued_readings = queued.readings, suppressed,
                                    "InfluxDB write failed; retrying");
                            }
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = hard_stop.cancelled() => return Outcome::Aborted,
                        }
                    }
                }
            }
        }
        Outcome::Done
    }
}

fn bytecount_lines(body: &[u8]) -> usize {
    body.iter().filter(|&&b| b == b'\n').count()
}

/// Splits a body at the line boundary nearest its middle.
fn split_half(body: &[u8]) -> (&[u8], &[u8]) {
    let mid = body.len() / 2;
    let cut = body[..mid]
        .iter()
        .rposition(|&b| b == b'\n')
        .map(|p| p + 1)
        .or_else(|| {
            body[mid..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|p| mid + p + 1)
        })
        .unwrap_or(body.len());
    body.split_at(cut)
}

fn count_readings(body: &[u8]) -> u64 {
    body.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| crate::line_protocol::fields_in_line(l) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue::{Chunk, MemQueue};
    use std::sync::Mutex;

    /// In-process fault injection: answers each write from a script, then succeeds. A real server cannot be
    /// made to answer 413 once, then 503, on cue.
    struct Scripted {
        script: Mutex<Vec<Result<(), WriteError>>>,
        written: Mutex<Vec<Vec<u8>>>,
    }

    impl TimeSeriesWriter for Arc<Scripted> {
        fn write(
            &self,
            body: &[u8],
        ) -> impl std::future::Future<Output = Result<(), WriteError>> + Send {
            let r = {
                let mut s = self.script.lock().unwrap();
                if s.is_empty() { Ok(()) } else { s.remove(0) }
            };
            if r.is_ok() {
                self.written.lock().unwrap().push(body.to_vec());
            }
            async move { r }
        }
    }

    fn line(i: u32) -> String {
        format!("m,device=d{i} a=1,b=2 {i}\n")
    }

    #[tokio::test]
    async fn retries_splits_and_drops_as_classified() {
        let q = Arc::new(MemQueue::new(1 << 20));
        let body: String = (0..4).map(line).collect();
        q.try_push(Chunk {
            body: body.into_bytes(),
            lines: 4,
            readings: 8,
            created_ms: 0,
        })
        .unwrap();
        let w = Arc::new(Scripted {
            script: Mutex::new(vec![
                Err(WriteError::Retry {
                    class: "server",
                    message: "503".into(),
                    retry_after: None,
                }),
                Err(WriteError::TooLarge),
                Err(WriteError::Rejected {
                    status: 400,
                    message: "bad".into(),
                }),
            ]),
            written: Mutex::new(vec![]),
        });
        let settings = WriterSettings {
            batch_size: 100,
            flush_interval: Duration::ZERO,
            max_retry_backoff: Duration::from_millis(300),
        };
        let wl = WriterLoop::new(q.clone(), w.clone(), settings, Arc::new(Health::default()));
        let drain = CancellationToken::new();
        drain.cancel();
        tokio::time::timeout(
            Duration::from_secs(5),
            wl.run(drain, CancellationToken::new()),
        )
        .await
        .unwrap();
        // 503 retried; 413 split into two halves; the first half rejected (dropped); the second written.
        let written = w.written.lock().unwrap().clone();
        assert_eq!(written.len(), 1);
        assert_eq!(
            String::from_utf8(written[0].clone()).unwrap(),
            format!("{}{}", line(2), line(3))
        );
        assert_eq!(q.stats().chunks, 0);
    }

    #[tokio::test]
    async fn hard_stop_keeps_the_batch_queued() {
        let q = Arc::new(MemQueue::new(1 << 20));
        q.try_push(Chunk {
            body: line(1).into_bytes(),
            lines: 1,
            readings: 2,
            created_ms: 0,
        })
        .unwrap();
        let w = Arc::new(Scripted {
            script: Mutex::new(
                (0..100)
                    .map(|_| {
                        Err(WriteError::Retry {
                            class: "network",
                            message: "down".into(),
                            retry_after: None,
                        })
                    })
                    .collect(),
            ),
            written: Mutex::new(vec![]),
        });
        let settings = WriterSettings {
            batch_size: 100,
            flush_interval: Duration::ZERO,
            max_retry_backoff: Duration::from_millis(50),
        };
        let wl = WriterLoop::new(q.clone(), w, settings, Arc::new(Health::default()));
        let hard = CancellationToken::new();
        let h2 = hard.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            h2.cancel();
        });
        tokio::time::timeout(
            Duration::from_secs(5),
            wl.run(CancellationToken::new(), hard),
        )
        .await
        .unwrap();
        assert_eq!(q.stats().chunks, 1);
    }

    /// InfluxDB is down for good: every write fails, and the bodies tried are kept.
    struct Down {
        tried: Mutex<Vec<usize>>,
    }

    impl TimeSeriesWriter for Arc<Down> {
        fn write(
            &self,
            body: &[u8],
        ) -> impl std::future::Future<Output = Result<(), WriteError>> + Send {
            self.tried.lock().unwrap().push(body.len());
            async {
                Err(WriteError::Retry {
                    class: "network",
                    message: "connection refused".into(),
                    retry_after: None,
                })
            }
        }
    }

    /// Issue 21, end to end through the writer loop: the spool is already full when the writer takes its first
    /// batch (InfluxDB down, `batch_size` larger than the spool). That batch must not pin the whole spool, or
    /// `drop_oldest` has nothing it may drop and intake waits like `block`.
    #[tokio::test]
    async fn drop_oldest_takes_pushes_while_a_full_spool_is_being_sent_to_a_down_influxdb() {
        use spool::{Spool, SpoolOptions, WhenFull};
        let dir = tempfile::tempdir().unwrap();
        let max = 64 << 10;
        let opts = SpoolOptions::new(
            dir.path(),
            max,
            WhenFull::DropOldest,
            Duration::from_secs(1),
        );
        let (q, _) = Spool::open(opts).unwrap();
        let chunk = |i: u32| {
            let body: String = (0..10).map(|l| line(i * 10 + l)).collect();
            Chunk {
                body: body.into_bytes(),
                lines: 10,
                readings: 20,
                created_ms: 0,
            }
        };
        let mut pushed = 0;
        while q.spool_stats().disk_bytes + 1024 <= max {
            q.try_push(chunk(pushed)).unwrap();
            pushed += 1;
        }
        assert_eq!(q.spool_stats().dropped_chunks, 0);
        let w = Arc::new(Down {
            tried: Mutex::new(vec![]),
        });
        let settings = WriterSettings {
            batch_size: 1_000_000,
            flush_interval: Duration::ZERO,
            max_retry_backoff: Duration::from_millis(50),
        };
        let wl = WriterLoop::new(q.clone(), w.clone(), settings, Arc::new(Health::default()));
        let hard = CancellationToken::new();
        let run = tokio::spawn(wl.run(CancellationToken::new(), hard.clone()));
        // The writer has taken its batch once it tried to send it.
        tokio::time::timeout(Duration::from_secs(5), async {
            while w.tried.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the writer tries to send");
        for i in pushed..pushed + 200 {
            assert!(
                q.try_push(chunk(i)).is_ok(),
                "push {i} refused while the writer holds its batch: drop_oldest waited like block"
            );
        }
        let ss = q.spool_stats();
        assert!(ss.dropped_chunks > 0 && !ss.blocked, "{ss:?}");
        assert!(ss.disk_bytes <= max);
        let tried = w.tried.lock().unwrap().clone();
        assert!(
            tried.iter().all(|&n| n as u64 <= max / 4),
            "batches of at most a quarter of the spool: {tried:?}"
        );
        hard.cancel();
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn split_and_count() {
        let body: String = (0..5).map(line).collect();
        let (a, b) = split_half(body.as_bytes());
        assert_eq!(count_readings(a) + count_readings(b), 10);
        assert!(!a.is_empty() && !b.is_empty());
        assert!(a.ends_with(b"\n"));
    }
}
