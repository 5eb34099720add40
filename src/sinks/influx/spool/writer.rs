//! The writer side: a pushed chunk becomes a record appended to the active segment (sealed and replaced when
//! full), and the `when_full` policy decides what happens when a push would take the spool over `max_bytes`.

use super::options::{SpoolOptions, WhenFull};
use super::record::{REC_HEADER, record_header};
use super::segment::{Counts, HEADER, is_disk_full};
use super::state::{Entry, State};
use crate::sinks::influx::queue::Chunk;
use std::io;
use std::sync::Arc;
use std::time::Instant;
use tracing::{error, info, warn};

impl State {
    /// Appends a chunk, making room first as `when_full` says; hands the chunk back when it must wait (full, or
    /// the disk refuses writes).
    pub(super) fn push(&mut self, opts: &SpoolOptions, chunk: Chunk) -> Result<(), Chunk> {
        let header = record_header(&chunk);
        let len = (REC_HEADER + chunk.body.len()) as u64;
        if self.write_failed {
            // The last write failed (a full disk): space acknowledged since then is freed before the retry.
            self.reclaim_acknowledged_active(&opts.dir);
        }
        if self.disk_bytes + len > opts.max_bytes && !self.make_room(opts, len) {
            return Err(chunk);
        }
        self.append(opts, chunk, &header, len)
    }

    /// Frees room for a record of `len` bytes: acknowledged space first, then (with `drop_oldest`) whole
    /// unsent segments. `false` when the push must wait (logged once per blocked spell).
    fn make_room(&mut self, opts: &SpoolOptions, len: u64) -> bool {
        // Reclaim acknowledged space first: the active segment may hold only acknowledged records.
        if self
            .segments
            .back()
            .is_some_and(|a| a.size > HEADER && a.total.chunks == a.done.chunks)
            && self.rotate(&opts.dir).is_ok()
        {
            self.advance();
        }
        while self.live.chunks > 0 && self.disk_bytes + len > opts.max_bytes {
            if opts.when_full == WhenFull::Block || !self.drop_oldest(opts) {
                if self.blocked_since.is_none() {
                    self.blocked_since = Some(Instant::now());
                    warn!(
                        max_bytes = opts.max_bytes,
                        queued_readings = self.live.readings,
                        policy = opts.when_full.as_str(),
                        "spool full{}: sources wait; MQTT messages stay with the broker until InfluxDB takes the backlog",
                        if opts.when_full == WhenFull::DropOldest {
                            " and all of it is being sent (nothing left to drop)"
                        } else {
                            ""
                        }
                    );
                }
                return false;
            }
            self.advance();
            if self.mem.is_empty() && self.live.chunks > 0 {
                self.fill(&opts.dir, 1, 1);
            }
            self.refresh_oldest();
        }
        true
    }

    /// Writes the record (`header`, then the chunk's body; `len` bytes in all) into the active segment.
    fn append(
        &mut self,
        opts: &SpoolOptions,
        chunk: Chunk,
        header: &[u8; REC_HEADER],
        len: u64,
    ) -> Result<(), Chunk> {
        let created = chunk.created_ms;
        let rotate = self.sealed
            || self
                .segments
                .back()
                .is_none_or(|a| a.size > HEADER && a.size + len > opts.segment_bytes);
        if rotate {
            if let Err(e) = self.rotate(&opts.dir) {
                return self.fail_write(opts, chunk, &e);
            }
        }
        let active = self.segments.back_mut().unwrap();
        if let Err(e) = active.write_record(header, &chunk.body, self.fake_disk) {
            return self.fail_write(opts, chunk, &e);
        }
        if opts.fsync_interval.is_zero() {
            if let Err(e) = active.file.sync_data() {
                return self.fail_write(opts, chunk, &e);
            }
        }
        let start = active.size;
        let id = active.id;
        let c = Counts::of(&chunk);
        active.size += len;
        active.total.add(c);
        self.disk_bytes += len;
        self.live.add(c);
        self.dirty = !opts.fsync_interval.is_zero();
        if self.write_failed {
            self.write_failed = false;
            self.disk_full = false;
            metrics::gauge!("caretaker_spool_disk_full").set(0.0);
            info!("spool writes succeed again; sources resume");
        }
        if let Some(since) = self.blocked_since.take() {
            info!(
                blocked_for = ?since.elapsed(),
                "spool has room again; sources resume"
            );
        }
        if self.complete && self.mem_bytes + c.bytes <= opts.cache_bytes {
            self.mem_bytes += c.bytes;
            self.mem_lines += c.lines;
            self.read = (id, start + len);
            self.segments.back_mut().unwrap().loaded.add(c);
            self.mem.push_back(Entry {
                seg: id,
                start,
                chunk: Arc::new(chunk),
            });
        } else {
            self.complete = false;
        }
        if self.oldest_ms.is_none() {
            self.oldest_ms = Some(created);
        }
        Ok(())
    }

    /// Drops the oldest segment that holds no record in flight. Returns whether anything was freed.
    fn drop_oldest(&mut self, opts: &SpoolOptions) -> bool {
        let in_flight: Vec<u64> = self
            .mem
            .iter()
            .take(self.in_flight)
            .map(|e| e.seg)
            .collect();
        let Some(idx) = self
            .segments
            .iter()
            .position(|s| !in_flight.contains(&s.id) && (s.size > HEADER || s.total.chunks > 0))
        else {
            return false;
        };
        if idx + 1 == self.segments.len() && self.rotate(&opts.dir).is_err() {
            return false;
        }
        let seg = self.segments.remove(idx).unwrap();
        let lost = seg.total.minus(seg.done);
        let before = self.mem.len();
        self.mem.retain(|e| e.seg != seg.id);
        if self.mem.len() != before {
            self.mem_bytes = self.mem.iter().map(|e| e.chunk.body.len() as u64).sum();
            self.mem_lines = self.mem.iter().map(|e| e.chunk.lines as u64).sum();
        }
        self.live.sub(lost);
        self.dropped.add(lost);
        self.disk_bytes -= seg.size;
        if self.read.0 == seg.id {
            self.read = (seg.id, u64::MAX);
        }
        if let Err(e) = std::fs::remove_file(&seg.path) {
            warn!(segment = %seg.path.display(), error = %e, "cannot delete dropped spool segment");
        }
        if lost.readings > 0 || lost.chunks > 0 {
            metrics::counter!("caretaker_readings_dropped_total", "stage" => "spool", "reason" => "spool_full")
                .increment(lost.readings);
            warn!(
                readings = lost.readings,
                bytes = seg.size,
                oldest_ms = ?self.oldest_ms,
                dropped_total = self.dropped.readings,
                max_bytes = opts.max_bytes,
                "spool full (when_full = \"drop_oldest\"): dropped the oldest unsent readings"
            );
        }
        true
    }

    /// A write failed: the chunk goes back to the producer as if the spool were full (logged once per spell).
    /// Whatever part of the record reached the file is cut off again (it would hold space, and look like a torn
    /// record at the next start); with a full disk, space acknowledged records hold is freed at once.
    fn fail_write(
        &mut self,
        opts: &SpoolOptions,
        chunk: Chunk,
        e: &io::Error,
    ) -> Result<(), Chunk> {
        let disk_full = is_disk_full(e);
        if let Some(active) = self.segments.back() {
            if let Err(cut) = active.cut_to_size() {
                warn!(segment = %active.path.display(), error = %cut,
                    "cannot cut a failed write off the spool segment; it is sealed instead");
                self.sealed = true;
            }
        }
        if !self.write_failed {
            if disk_full {
                error!(dir = %opts.dir.display(), error = %e, spool_bytes = self.disk_bytes,
                    "spool: disk full; sources wait (MQTT messages stay with the broker, nothing is acknowledged) and the write is retried every second; /health is degraded until it succeeds");
            } else {
                error!(dir = %opts.dir.display(), error = %e,
                    "cannot write to the spool; sources wait and the write is retried (nothing is acknowledged meanwhile)");
            }
        }
        self.write_failed = true;
        self.disk_full = disk_full;
        if disk_full {
            metrics::gauge!("caretaker_spool_disk_full").set(1.0);
        }
        metrics::counter!("caretaker_errors_total", "stage" => "spool", "class" => if disk_full { "disk_full" } else { "write" })
            .increment(1);
        if disk_full
            && !self.reclaim_acknowledged_active(&opts.dir)
            && opts.when_full == WhenFull::DropOldest
        {
            // The policy keeps the newest readings: a full disk drops the oldest unsent segment as a full spool
            // would, so the retry finds room.
            if self.drop_oldest(opts) {
                self.advance();
                if self.mem.is_empty() && self.live.chunks > 0 {
                    self.fill(&opts.dir, 1, 1);
                }
                self.refresh_oldest();
            }
        }
        Err(chunk)
    }
}
