//! The reader side: records are loaded from the segments into the memory cache in order, handed to the InfluxDB
//! writer oldest first ([`State::peek`]) and removed once it acknowledged them ([`State::commit`]); the cursor
//! then moves on and segments wholly acknowledged are deleted.

use super::record::REC_HEADER;
use super::segment::Counts;
use super::state::{Entry, State};
use crate::sinks::influx::queue::Chunk;
use std::path::Path;
use std::sync::Arc;
use tracing::{error, warn};

/// An active segment wholly acknowledged is deleted (and a new one started) once it is this large.
pub(super) const RECLAIM_ACKED_BYTES: u64 = 1 << 20;

impl State {
    /// Loads records from disk into `mem` until it holds `want_lines` lines or `want_bytes` bytes, or every live
    /// record.
    pub(super) fn fill(&mut self, dir: &Path, want_lines: u64, want_bytes: u64) {
        while !self.complete
            && (self.mem.is_empty() || (self.mem_lines < want_lines && self.mem_bytes < want_bytes))
        {
            self.normalize_read();
            let (id, off) = self.read;
            let Some(idx) = self.seg_index(id) else {
                self.complete = true;
                break;
            };
            let last = idx + 1 == self.segments.len();
            let seg = &self.segments[idx];
            if off >= seg.size {
                // normalize_read moved past every sealed segment's end: this is the end of the active one.
                self.complete = true;
                break;
            }
            match seg.read_record(off) {
                Ok(chunk) => {
                    let c = Counts::of(&chunk);
                    let len = REC_HEADER as u64 + c.bytes;
                    let seg = &mut self.segments[idx];
                    seg.loaded.add(c);
                    self.read = (id, off + len);
                    self.mem_bytes += c.bytes;
                    self.mem_lines += c.lines;
                    self.mem.push_back(Entry {
                        seg: id,
                        start: off,
                        chunk: Arc::new(chunk),
                    });
                }
                Err(e) => {
                    // Damaged after start-up (disk fault): the rest of the segment cannot be framed.
                    let seg = &mut self.segments[idx];
                    let lost = seg.total.minus(seg.loaded);
                    error!(segment = %seg.path.display(), offset = off, reason = %e, readings = lost.readings,
                        "spool segment is damaged; its remaining readings are lost");
                    metrics::counter!("caretaker_readings_dropped_total", "stage" => "spool", "reason" => "corrupt")
                        .increment(lost.readings);
                    metrics::counter!("caretaker_spool_corrupt_bytes_total")
                        .increment(seg.size - off);
                    seg.total = seg.loaded;
                    // Its counts no longer include the lost records; keep the file size for the disk bound.
                    let lost_bytes = seg.size - off;
                    self.live.sub(lost);
                    self.corrupt_bytes += lost_bytes;
                    if last {
                        // Never append behind garbage: seal it.
                        let _ = self.rotate(dir);
                    }
                    self.read = (id, u64::MAX);
                }
            }
        }
    }

    /// The oldest chunks, up to `max_lines` lines and `max_bytes` bytes (at least one chunk when any is live);
    /// they are in flight until the next commit.
    pub(super) fn peek(&mut self, dir: &Path, max_lines: usize, max_bytes: u64) -> Vec<Arc<Chunk>> {
        self.fill(dir, max_lines as u64, max_bytes);
        let mut out = Vec::new();
        let mut lines = 0usize;
        let mut bytes = 0u64;
        for e in &self.mem {
            let len = e.chunk.body.len() as u64;
            if !out.is_empty()
                && (lines + e.chunk.lines as usize > max_lines || bytes + len > max_bytes)
            {
                break;
            }
            lines += e.chunk.lines as usize;
            bytes += len;
            out.push(e.chunk.clone());
        }
        self.in_flight = out.len();
        out
    }

    /// Removes the `n` oldest chunks (acknowledged by InfluxDB, or refused for good).
    pub(super) fn commit(&mut self, dir: &Path, n: usize) {
        for _ in 0..n {
            let Some(e) = self.mem.pop_front() else { break };
            let c = Counts::of(&e.chunk);
            self.mem_bytes -= c.bytes;
            self.mem_lines -= c.lines;
            self.live.sub(c);
            if let Some(i) = self.seg_index(e.seg) {
                self.segments[i].done.add(c);
            }
        }
        self.in_flight = 0;
        if self.mem.is_empty() && self.live.chunks > 0 {
            self.fill(dir, 1, 1);
        }
        self.refresh_oldest();
        self.advance();
        // Free the active segment once wholly acknowledged: at once while writes fail (a full disk), so the
        // retried write finds room; otherwise once it holds RECLAIM_ACKED_BYTES, so acknowledged data never
        // holds more than that on a small disk (segments are sealed only at `segment_bytes`, up to 64 MiB).
        let big = self
            .segments
            .back()
            .is_some_and(|a| a.size >= RECLAIM_ACKED_BYTES);
        if self.write_failed || big {
            self.reclaim_acknowledged_active(dir);
        }
    }

    /// Writes the cursor (oldest unacknowledged record) and deletes segments wholly before it.
    pub(super) fn advance(&mut self) {
        self.normalize_read();
        let cursor = self
            .mem
            .front()
            .map(|e| (e.seg, e.start))
            .unwrap_or(self.read);
        let active = self.segments.back().map(|s| s.id);
        while let Some(s) = self.segments.front() {
            if s.id >= cursor.0 || Some(s.id) == active {
                break;
            }
            let s = self.segments.pop_front().unwrap();
            self.disk_bytes -= s.size;
            if let Err(e) = std::fs::remove_file(&s.path) {
                warn!(segment = %s.path.display(), error = %e, "cannot delete acknowledged spool segment");
            }
        }
        self.ledger.write(cursor);
    }
}
