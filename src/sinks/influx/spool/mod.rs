//! The spool: the durable, bounded [`ChunkQueue`] between the encoder and the InfluxDB writer.
//!
//! Layout under `<[state] dir>/spool/`:
//! - `00000000000000000001.seg`, ...: segment files, oldest first. Each starts with the 8-byte magic
//!   `CTSPOOL1`, then records `len u32 | crc32 u32 | lines u32 | readings u32 | created_ms i64 | body[len]`
//!   (little endian; the CRC covers the 16 meta bytes and the body).
//! - `cursor`: where the oldest unacknowledged record starts (segment id, offset, CRC). Rewritten after each
//!   commit, never fsynced: a stale cursor only replays chunks InfluxDB already has, and InfluxDB keeps one
//!   point per (series, timestamp), so the replay is harmless.
//!
//! Invariants:
//! - Append only. [`ChunkQueue::try_push`] writes the whole record (header, then body) before it returns, so
//!   the pipeline acknowledges an MQTT message only once its readings are in the kernel's page cache: a crash of
//!   the process loses nothing. A background thread flushes (`fdatasync`) every `fsync_interval` whatever was
//!   written since, sealed segments included; a power loss can lose at most that window. `fsync_interval = 0`
//!   flushes before every push returns.
//! - The active segment, once every record in it is acknowledged, is deleted and replaced when it reaches 1 MiB
//!   or when a write fails (a full disk), so acknowledged data never fills a small disk.
//! - Segment files are deleted whole, only once every record in them was acknowledged by InfluxDB (or dropped by
//!   `when_full = "drop_oldest"`, which counts and logs every reading it drops).
//! - Replay is oldest first, in write order. Records in flight (peeked by the writer, not yet committed) are
//!   never dropped, and the writer is never handed more than `max_batch_bytes` (a quarter of `max_bytes`) at
//!   once, so `drop_oldest` always finds unsent segments to drop (see [`options::max_batch_bytes`]).
//! - At start-up every segment is read and checked; the first record that is short or fails its checksum ends
//!   its segment: the bytes from there are reported (log + `caretaker_spool_corrupt_bytes_total`) and truncated,
//!   so a torn write needs no manual repair.
//! - Disk use (the sum of segment sizes) stays within `max_bytes`, except that one chunk is always accepted
//!   into an empty spool so an oversized batch cannot wedge the pipeline.
//!
//! Recent records are also kept in memory (up to `cache_bytes`) so a writer that keeps up never reads the disk;
//! a backlog is read back from the segment files in order.
//!
//! Files: `record.rs` (one record's bytes), `segment.rs` (segment files), `ledger.rs` (the cursor), `lock.rs`
//! (one process per folder), `recovery.rs` (start-up), `state.rs` (the state behind the lock), `reader.rs`
//! (peek, commit), `writer.rs` (push, `when_full`), `options.rs` and `error.rs`; here the [`Spool`] itself,
//! which puts them together behind one lock and flushes from a background thread.

mod error;
mod ledger;
mod lock;
mod options;
mod reader;
mod record;
mod recovery;
mod segment;
mod state;
mod writer;

pub use error::SpoolError;
pub use options::{SpoolOptions, WhenFull, max_batch_bytes};
pub use recovery::Recovery;

use super::queue::{Chunk, ChunkQueue, QueueStats};
use error::io_err;
use ledger::Ledger;
use record::REC_HEADER;
use segment::HEADER;
use state::State;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{error, info};

/// Spool-specific figures for health and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpoolStats {
    pub disk_bytes: u64,
    pub max_bytes: u64,
    pub segments: u64,
    pub dropped_readings: u64,
    pub dropped_chunks: u64,
    pub corrupt_bytes: u64,
    /// A push is waiting for space (`when_full = "block"`) or for the disk to accept writes again.
    pub blocked: bool,
    /// The last write failed because the file system is full (ENOSPC or quota); cleared by the next write
    /// that succeeds. Intake waits meanwhile and is retried every `fsync_interval` (at most 1 s).
    pub disk_full: bool,
    /// The last write failed for another reason (`disk_full` false): also a wait, also retried.
    pub write_failed: bool,
}

struct Inner {
    opts: SpoolOptions,
    /// Holds the `flock` on `<dir>/lock` for as long as the spool is open.
    _lock: std::fs::File,
    state: Mutex<State>,
    data: Notify,
    space: Notify,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The durable queue. Cheap to share behind an `Arc`.
pub struct Spool {
    inner: Arc<Inner>,
}

impl Spool {
    /// Opens (or creates) the spool in `opts.dir`, checking every segment and recovering what InfluxDB has not
    /// acknowledged yet.
    pub fn open(opts: SpoolOptions) -> Result<(Arc<Spool>, Recovery), SpoolError> {
        let dir = opts.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock = lock::lock_dir(&dir)?;
        let found = recovery::recover(&dir)?;
        let rec = found.recovery.clone();
        let ledger = Ledger::open(&dir)?;
        let mut st = State::recovered(found, ledger);
        st.fake_disk = opts.fake_disk;
        // Records are never appended to a recovered segment: a fresh active segment starts now. On a full disk
        // the spool opens anyway (the recovered records can still be sent, which frees space); the first push
        // then waits until a segment can be created.
        if let Err(e) = st.rotate(&dir) {
            if !segment::is_disk_full(&e) {
                return Err(io_err(&dir)(e));
            }
            error!(dir = %dir.display(), error = %e,
                "spool folder is on a full disk: sources wait until space returns (retried every second)");
            st.write_failed = true;
            st.disk_full = true;
        }
        let inner = Arc::new(Inner {
            opts,
            _lock: lock,
            state: Mutex::new(st),
            data: Notify::new(),
            space: Notify::new(),
        });
        {
            let mut st = inner.lock();
            st.fill(&inner.opts.dir, 1, 1);
            st.refresh_oldest();
            st.publish_gauges();
        }
        if rec.chunks > 0 {
            info!(
                dir = %dir.display(),
                segments = rec.segments,
                chunks = rec.chunks,
                readings = rec.readings,
                bytes = rec.bytes,
                "spool recovered unsent readings; replaying them oldest first"
            );
        }
        let weak = Arc::downgrade(&inner);
        let every = if inner.opts.fsync_interval.is_zero() {
            Duration::from_millis(200)
        } else {
            inner.opts.fsync_interval
        };
        std::thread::Builder::new()
            .name("spool-fsync".into())
            .spawn(move || fsync_loop(weak, every))
            .map_err(io_err(&dir))?;
        Ok((Arc::new(Spool { inner }), rec))
    }

    /// The folder this spool lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.opts.dir
    }

    pub fn options(&self) -> &SpoolOptions {
        &self.inner.opts
    }

    /// Flushes everything written so far to disk now.
    pub fn sync(&self) -> io::Result<()> {
        let files = self.inner.lock().take_unsynced();
        for f in files {
            f.sync_data()?;
        }
        Ok(())
    }

    pub fn spool_stats(&self) -> SpoolStats {
        let st = self.inner.lock();
        SpoolStats {
            disk_bytes: st.disk_bytes,
            max_bytes: self.inner.opts.max_bytes,
            segments: st.segments.len() as u64,
            dropped_readings: st.dropped.readings,
            dropped_chunks: st.dropped.chunks,
            corrupt_bytes: st.corrupt_bytes,
            blocked: st.blocked_since.is_some() || st.write_failed,
            disk_full: st.write_failed && st.disk_full,
            write_failed: st.write_failed,
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

/// The background flush: every `every`, `fdatasync` whatever was written since the last round, until the spool
/// is gone.
fn fsync_loop(weak: Weak<Inner>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(inner) = weak.upgrade() else { return };
        let (files, retry) = {
            let mut st = inner.lock();
            (st.take_unsynced(), st.write_failed)
        };
        for f in files {
            if let Err(e) = f.sync_data() {
                error!(error = %e, "spool fsync failed; retrying");
                metrics::counter!("caretaker_errors_total", "stage" => "spool", "class" => "fsync")
                    .increment(1);
                inner.lock().unsynced.push(f);
            }
        }
        if retry {
            // A failed write returned the chunk to the producer as if the spool were full; let it try again.
            inner.space.notify_waiters();
        }
    }
}

impl ChunkQueue for Spool {
    fn try_push(&self, chunk: Chunk) -> Result<(), Chunk> {
        let inner = &*self.inner;
        let mut st = inner.lock();
        st.push(&inner.opts, chunk)?;
        st.publish_gauges();
        drop(st);
        inner.data.notify_one();
        Ok(())
    }

    fn peek(&self, max_lines: usize) -> Vec<Arc<Chunk>> {
        let inner = &*self.inner;
        inner
            .lock()
            .peek(&inner.opts.dir, max_lines, inner.opts.max_batch_bytes)
    }

    fn commit(&self, n: usize) {
        let inner = &*self.inner;
        let mut st = inner.lock();
        st.commit(&inner.opts.dir, n);
        st.publish_gauges();
        drop(st);
        inner.space.notify_waiters();
    }

    fn stats(&self) -> QueueStats {
        let st = self.inner.lock();
        QueueStats {
            chunks: st.live.chunks,
            lines: st.live.lines,
            readings: st.live.readings,
            bytes: st.live.bytes,
            oldest_ms: if st.live.chunks > 0 {
                st.oldest_ms
            } else {
                None
            },
        }
    }

    fn notify_data(&self) -> &Notify {
        &self.inner.data
    }
    fn notify_space(&self) -> &Notify {
        &self.inner.space
    }
    fn durable(&self) -> bool {
        true
    }
    fn max_chunk_bytes(&self) -> usize {
        // One chunk fits in one segment, so `drop_oldest` can always make room for it by dropping segments.
        (self.inner.opts.segment_bytes - HEADER) as usize - REC_HEADER
    }
}

#[cfg(test)]
mod tests;
