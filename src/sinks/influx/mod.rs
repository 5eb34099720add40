//! The InfluxDB sink: a queue of encoded chunks (see [`queue`]) drained by one writer task.
//!
//! The writer sends a batch when it holds `batch_size` lines or its oldest line has waited `flush_interval` (after
//! full batches, when input pauses for 20 ms: the tail of a backlog goes out at once),
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
use tracing::{debug, error, info, warn};
use writer::{TimeSeriesWriter, WriteError};

/// How long input must pause, after full batches, before a partial batch goes out without waiting for
/// `flush_interval`.
const BURST_IDLE: Duration = Duration::from_millis(20);

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
        // Set while batches go out full (a backlog or a burst): then a partial batch goes out as soon as input
        // pauses for BURST_IDLE instead of waiting out `flush_interval`, so the tail of a backlog is not held back
        // a second; in steady state (batches never full) the interval still gathers small writes into one.
        let mut bursting = false;
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
                let full = st.lines as usize >= self.settings.batch_size;
                if draining || full || due_in.is_zero() {
                    bursting = full;
                    break;
                }
                let wait = if bursting {
                    due_in.min(BURST_IDLE)
                } else {
                    due_in
                };
                let notified = self.queue.notify_data().notified();
                let idle = tokio::select! {
                    _ = notified => false,
                    _ = tokio::time::sleep(wait) => bursting,
                    _ = drain.cancelled() => false,
                    _ = hard_stop.cancelled() => return,
                };
                if idle {
                    bursting = false;
                    break;
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
        // The first refused line of a batch is logged once; the rest are counted.
        let mut logged = false;
        let mut split_logged = false;
        while let Some((body, readings)) = pending.pop() {
            loop {
                let started = std::time::Instant::now();
                let result = self.writer.write(&body).await;
                metrics::histogram!("caretaker_influx_write_seconds")
                    .record(started.elapsed().as_secs_f64());
                match result {
                    Ok(()) => {
                        self.written(readings);
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
                    Err(e @ WriteError::TooLarge) => {
                        // One line the server finds too large: nothing smaller to send.
                        self.reject(&body, readings, &body, &e, &mut logged);
                        break;
                    }
                    Err(ref e @ WriteError::Rejected { ref refusal, .. }) => {
                        let lines: Vec<&[u8]> = body
                            .split(|&b| b == b'\n')
                            .filter(|l| !l.is_empty())
                            .collect();
                        let (named, unnamed) = refused_lines(&lines, refusal);
                        let fields =
                            |i: &usize| crate::line_protocol::fields_in_line(lines[*i]) as u64;
                        let named_readings: u64 = named.iter().map(fields).sum();
                        let first_named = named.first().map_or(&[][..], |&i| lines[i]);
                        if refusal.partial {
                            // The server stored every line it did not refuse.
                            let unnamed = if named.is_empty() {
                                unnamed.max(1)
                            } else {
                                unnamed
                            };
                            let per_line = readings / lines.len().max(1) as u64;
                            let rejected =
                                (named_readings + unnamed as u64 * per_line.max(1)).min(readings);
                            self.written(readings - rejected);
                            self.reject(&body, rejected, first_named, e, &mut logged);
                        } else if lines.len() <= 1 || named.len() == lines.len() {
                            self.reject(&body, readings, first_named, e, &mut logged);
                        } else if !named.is_empty() {
                            // Refused as a whole for the lines it quoted: send the others again.
                            self.reject(&body, named_readings, first_named, e, &mut logged);
                            let mut rest = Vec::with_capacity(body.len());
                            let mut next = named.iter().peekable();
                            for (i, l) in lines.iter().enumerate() {
                                if next.peek() == Some(&&i) {
                                    next.next();
                                    continue;
                                }
                                rest.extend_from_slice(l);
                                rest.push(b'\n');
                            }
                            pending.push((rest, readings.saturating_sub(named_readings)));
                        } else {
                            // Refused as a whole without naming a line: bisect until the bad lines are alone.
                            if !split_logged {
                                split_logged = true;
                                warn!(error = %e, lines = lines.len(), "InfluxDB refused a batch as a whole; splitting it so only the refused lines are dropped");
                            }
                            let (a, b) = split_half(&body);
                            let ra = count_readings(a);
                            pending.push((b.to_vec(), readings.saturating_sub(ra)));
                            pending.push((a.to_vec(), ra));
                        }
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

    /// Counts readings InfluxDB stored.
    fn written(&self, readings: u64) {
        metrics::counter!("caretaker_readings_written_total").increment(readings);
        self.health
            .readings_written
            .fetch_add(readings, std::sync::atomic::Ordering::Relaxed);
        self.health.influx_ok();
    }

    /// Counts readings InfluxDB refused as data; logs the first refused line of a batch.
    fn reject(
        &self,
        body: &[u8],
        readings: u64,
        first_line: &[u8],
        e: &WriteError,
        logged: &mut bool,
    ) {
        let sample = if first_line.is_empty() {
            "(not named by the server)".to_string()
        } else {
            String::from_utf8_lossy(&first_line[..first_line.len().min(1000)]).into_owned()
        };
        if !*logged {
            *logged = true;
            error!(error = %e, readings, refused_line = %sample, batch_bytes = body.len(),
                "InfluxDB refused readings as data; they are dropped (the other readings of the batch are kept)");
        } else {
            debug!(error = %e, readings, refused_line = %sample, "InfluxDB refused more readings of the batch");
        }
        metrics::counter!("caretaker_errors_total", "stage" => "influx", "class" => e.class())
            .increment(1);
        self.health.write_error(e.class());
        metrics::counter!("caretaker_readings_dropped_total", "stage" => "influx", "reason" => "rejected")
            .increment(readings);
    }
}

/// The lines of a batch a refusal names (indices, quoted or numbered or found by a type conflict), and how many
/// more it says were dropped without naming them.
fn refused_lines(lines: &[&[u8]], r: &writer::Refusal) -> (Vec<usize>, usize) {
    use crate::line_protocol::{
        escape_key, escape_measurement, field_pairs, split_line, value_type,
    };
    // Linear in the batch: a batch of thousands of refused lines must not cost millions of comparisons.
    let mut taken = vec![false; lines.len()];
    let mut by_text: std::collections::HashMap<&[u8], Vec<usize>> = Default::default();
    for (i, l) in lines.iter().enumerate().rev() {
        by_text.entry(*l).or_default().push(i);
    }
    for q in &r.quoted {
        let q = q.trim_end_matches(['\r', '\n']).as_bytes();
        if let Some(i) = by_text.get_mut(q).and_then(|v| v.pop()) {
            taken[i] = true;
        }
    }
    for &n in &r.line_numbers {
        if (1..=lines.len()).contains(&n) {
            taken[n - 1] = true;
        }
    }
    let mut unnamed = r.dropped;
    if let Some((m, f, ty)) = &r.conflict {
        let (m, f) = (escape_measurement(m), escape_key(f));
        for (i, line) in lines.iter().enumerate() {
            if unnamed == 0 {
                break;
            }
            if taken[i] {
                continue;
            }
            if let Some(p) = split_line(line) {
                let conflicting = field_pairs(p.fields)
                    .iter()
                    .any(|(k, v)| *k == f.as_bytes() && value_type(v) == ty);
                if p.measurement == m.as_bytes() && conflicting {
                    taken[i] = true;
                    unnamed -= 1;
                }
            }
        }
    }
    let named = (0..lines.len()).filter(|&i| taken[i]).collect();
    (named, unnamed)
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

    /// After full batches (a backlog), the partial tail goes out once input pauses, not after `flush_interval`
    /// (an hour here); a partial batch with no burst before it waits for the interval.
    #[tokio::test]
    async fn a_backlog_tail_goes_out_when_input_pauses_a_lone_partial_batch_waits() {
        let q = Arc::new(MemQueue::new(1 << 20));
        let w = Arc::new(Scripted {
            script: Mutex::new(vec![]),
            written: Mutex::new(vec![]),
        });
        let settings = WriterSettings {
            batch_size: 2,
            flush_interval: Duration::from_secs(3600),
            max_retry_backoff: Duration::from_millis(300),
        };
        let push = |i: u32| {
            q.try_push(Chunk {
                body: line(i).into_bytes(),
                lines: 1,
                readings: 1,
                created_ms: crate::util::now_ns() / 1_000_000,
            })
            .unwrap()
        };
        push(0);
        let wl = WriterLoop::new(q.clone(), w.clone(), settings, Arc::new(Health::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(wl.run(CancellationToken::new(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            w.written.lock().unwrap().is_empty(),
            "a lone partial batch waits for flush_interval"
        );
        push(1);
        push(2);
        let written = || w.written.lock().unwrap().len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while written() < 2 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let bodies: Vec<String> = w
            .written
            .lock()
            .unwrap()
            .iter()
            .map(|b| String::from_utf8(b.clone()).unwrap())
            .collect();
        assert_eq!(bodies, [format!("{}{}", line(0), line(1)), line(2)]);
        stop.cancel();
        task.await.unwrap();
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
                    refusal: Box::default(),
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
        // 503 retried; 413 split into two halves; the first half refused as a whole without a line named, so
        // split again and both of its lines sent alone (written); the second half written.
        let written = w.written.lock().unwrap().clone();
        assert_eq!(
            written
                .iter()
                .map(|b| String::from_utf8(b.clone()).unwrap())
                .collect::<Vec<_>>(),
            [line(0), line(1), format!("{}{}", line(2), line(3))]
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

    /// A server that refuses a whole batch for one bad line and names none (InfluxDB 2.x on a parse error does
    /// the former; no such server runs here: 1.x writes partially, VictoriaMetrics accepts bad lines). In-process
    /// because no real server available answers this way.
    struct Strict {
        stored: Mutex<Vec<String>>,
        requests: Mutex<u32>,
    }

    impl TimeSeriesWriter for Arc<Strict> {
        fn write(
            &self,
            body: &[u8],
        ) -> impl std::future::Future<Output = Result<(), WriteError>> + Send {
            *self.requests.lock().unwrap() += 1;
            let text = String::from_utf8_lossy(body).into_owned();
            let r = if text.contains("bad") {
                Err(WriteError::Rejected {
                    status: 400,
                    message: "invalid".into(),
                    refusal: Box::default(),
                })
            } else {
                self.stored
                    .lock()
                    .unwrap()
                    .extend(text.lines().map(str::to_string));
                Ok(())
            };
            async move { r }
        }
    }

    async fn run_once<W: TimeSeriesWriter>(q: Arc<MemQueue>, w: W) -> Arc<Health> {
        let settings = WriterSettings {
            batch_size: 10_000,
            flush_interval: Duration::ZERO,
            max_retry_backoff: Duration::from_millis(50),
        };
        let health = Arc::new(Health::default());
        let wl = WriterLoop::new(q, w, settings, health.clone());
        let drain = CancellationToken::new();
        drain.cancel();
        tokio::time::timeout(
            Duration::from_secs(5),
            wl.run(drain, CancellationToken::new()),
        )
        .await
        .unwrap();
        health
    }

    /// Issue 13 item 6: a refused line never takes good lines with it, even from a server that refuses whole
    /// batches without naming the line: 80 good lines stored, the bad one alone dropped, in few requests.
    #[tokio::test]
    async fn a_batch_refused_as_a_whole_is_bisected_down_to_its_bad_line() {
        let q = Arc::new(MemQueue::new(1 << 20));
        let mut body: String = (0..40).map(line).collect();
        body.push_str("m,device=bad a=\"x\" 99\n");
        body.extend((40..80).map(line));
        q.try_push(Chunk {
            body: body.into_bytes(),
            lines: 81,
            readings: 161,
            created_ms: 0,
        })
        .unwrap();
        let w = Arc::new(Strict {
            stored: Mutex::new(vec![]),
            requests: Mutex::new(0),
        });
        let health = run_once(q.clone(), w.clone()).await;
        let mut stored = w.stored.lock().unwrap().clone();
        stored.sort();
        let mut want: Vec<String> = (0..80).map(|i| line(i).trim_end().to_string()).collect();
        want.sort();
        assert_eq!(stored, want);
        assert_eq!(
            health
                .readings_written
                .load(std::sync::atomic::Ordering::Relaxed),
            160
        );
        assert!(*w.requests.lock().unwrap() <= 2 * 7 + 1);
        assert_eq!(q.stats().chunks, 0);
    }

    /// The lines a server names are taken out and the rest sent again, whatever the server's shape.
    #[test]
    fn refused_lines_are_found_by_quote_number_or_type_conflict() {
        let body = "m,d=a x=1 1\nm,d=b x=\"s\" 2\nbroken\nm,d=c x=2 3\n";
        let lines: Vec<&[u8]> = body.lines().map(str::as_bytes).collect();
        let r = writer::Refusal::parse(
            r#"{"error":"partial write: unable to parse 'broken': missing fields dropped=0"}"#,
        );
        assert!(r.partial);
        assert_eq!(refused_lines(&lines, &r), (vec![2], 0));
        let r = writer::Refusal::parse(
            r#"{"error":"partial write: field type conflict: input field \"x\" on measurement \"m\" is type string, already exists as type float dropped=1"}"#,
        );
        assert_eq!(refused_lines(&lines, &r), (vec![1], 0));
        let r = writer::Refusal::parse(
            r#"{"error":"partial write of line protocol occurred","data":[{"original_line":"broken","line_number":3,"error_message":"x"},{"original_line":"m,d=b x=\"s\" 2","line_number":2,"error_message":"y"}]}"#,
        );
        assert!(r.partial);
        assert_eq!(refused_lines(&lines, &r), (vec![1, 2], 0));
        let r = writer::Refusal::parse(
            r#"{"code":"invalid","message":"unable to parse 'broken': missing fields"}"#,
        );
        assert!(!r.partial);
        assert_eq!(refused_lines(&lines, &r), (vec![2], 0));
        let r = writer::Refusal::parse(
            r#"{"error":"partial write: points beyond retention policy dropped=2"}"#,
        );
        assert_eq!(refused_lines(&lines, &r), (vec![], 2));
        assert_eq!(
            writer::Refusal::parse("not json"),
            writer::Refusal::default()
        );
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
