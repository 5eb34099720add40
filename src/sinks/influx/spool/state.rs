//! The spool's state behind its lock: the segments, the memory cache of the oldest live records, the read
//! position, the tallies; and the bookkeeping shared by the reader side ([`super::reader`]) and the writer side
//! ([`super::writer`]): finding segments, moving the read position, sealing the active segment.

use super::ledger::Ledger;
use super::recovery::Found;
use super::segment::{Counts, FakeDisk, HEADER, Segment};
use crate::sinks::influx::queue::Chunk;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// A live record in memory.
pub(super) struct Entry {
    pub(super) seg: u64,
    pub(super) start: u64,
    pub(super) chunk: Arc<Chunk>,
}

pub(super) struct State {
    /// Oldest first; the last one is the active segment.
    pub(super) segments: VecDeque<Segment>,
    /// Live records from the oldest on, in order (a prefix of the backlog, or all of it when `complete`).
    pub(super) mem: VecDeque<Entry>,
    pub(super) mem_bytes: u64,
    pub(super) mem_lines: u64,
    /// Where the next record not in `mem` starts.
    pub(super) read: (u64, u64),
    /// `mem` holds every live record.
    pub(super) complete: bool,
    /// The first `in_flight` entries of `mem` were handed to the writer by `peek`.
    pub(super) in_flight: usize,
    pub(super) live: Counts,
    pub(super) oldest_ms: Option<i64>,
    pub(super) disk_bytes: u64,
    pub(super) next_id: u64,
    pub(super) dirty: bool,
    /// Sealed segments with writes not yet flushed (the fsync thread flushes them on its next round).
    pub(super) unsynced: Vec<Arc<File>>,
    pub(super) blocked_since: Option<Instant>,
    pub(super) write_failed: bool,
    /// The last failed write failed because the disk is full (ENOSPC/EDQUOT): `/health` says so.
    pub(super) disk_full: bool,
    /// The last segment must not take more records (a rotation failed, e.g. on a full disk): the next append
    /// starts a new segment first.
    pub(super) sealed: bool,
    /// Test-only fault injection (see [`FakeDisk`]).
    pub(super) fake_disk: Option<FakeDisk>,
    pub(super) dropped: Counts,
    pub(super) corrupt_bytes: u64,
    /// Where the oldest unacknowledged record is recorded.
    pub(super) ledger: Ledger,
}

impl State {
    /// The state of what start-up found, reading from the oldest unacknowledged record on.
    pub(super) fn recovered(found: Found, ledger: Ledger) -> State {
        let Found {
            segments,
            recovery,
            disk_bytes,
            cursor,
            next_id,
        } = found;
        let live = segments.iter().fold(Counts::default(), |mut a, s| {
            a.add(s.total.minus(s.done));
            a
        });
        let read = segments
            .front()
            .map(|s| match cursor {
                Some((cs, off)) if cs == s.id && s.done.chunks > 0 => (s.id, off),
                _ => (s.id, HEADER),
            })
            .unwrap_or((0, HEADER));
        State {
            segments,
            mem: VecDeque::new(),
            mem_bytes: 0,
            mem_lines: 0,
            read,
            complete: false,
            in_flight: 0,
            live,
            oldest_ms: None,
            disk_bytes,
            next_id,
            dirty: false,
            unsynced: Vec::new(),
            blocked_since: None,
            write_failed: false,
            disk_full: false,
            sealed: false,
            fake_disk: None,
            dropped: Counts::default(),
            corrupt_bytes: recovery.corrupt_bytes,
            ledger,
        }
    }

    pub(super) fn seg_index(&self, id: u64) -> Option<usize> {
        // Few segments (about 16): a scan is fine.
        self.segments.iter().position(|s| s.id == id)
    }

    /// Moves the read position past deleted segments and sealed segments' ends.
    pub(super) fn normalize_read(&mut self) {
        loop {
            let (id, off) = self.read;
            match self.seg_index(id) {
                Some(i) => {
                    let s = &self.segments[i];
                    if off >= s.size && i + 1 < self.segments.len() {
                        self.read = (self.segments[i + 1].id, HEADER);
                        continue;
                    }
                    if off == u64::MAX {
                        self.read = (id, s.size);
                    }
                    return;
                }
                None => {
                    match self.segments.iter().find(|s| s.id > id) {
                        Some(s) => self.read = (s.id, HEADER),
                        None => {
                            if let Some(s) = self.segments.back() {
                                self.read = (s.id, s.size);
                            }
                        }
                    }
                    return;
                }
            }
        }
    }

    pub(super) fn refresh_oldest(&mut self) {
        self.oldest_ms = self.mem.front().map(|e| e.chunk.created_ms);
    }

    /// Files with writes not yet flushed: sealed segments, and the active one when dirty.
    pub(super) fn take_unsynced(&mut self) -> Vec<Arc<File>> {
        let mut files = std::mem::take(&mut self.unsynced);
        if self.dirty {
            self.dirty = false;
            files.extend(self.segments.back().map(|s| s.file.clone()));
        }
        files
    }

    /// Seals the active segment (its flush goes to the fsync thread) and starts a new one.
    pub(super) fn rotate(&mut self, dir: &Path) -> io::Result<()> {
        if self.dirty {
            if let Some(s) = self.segments.back() {
                self.unsynced.push(s.file.clone());
            }
            self.dirty = false;
        }
        let seg = match Segment::create(dir, self.next_id, self.fake_disk) {
            Ok(seg) => seg,
            Err(e) => {
                self.sealed = true;
                return Err(e);
            }
        };
        self.sealed = false;
        let id = seg.id;
        self.next_id += 1;
        let was_at_end = self.complete;
        self.segments.push_back(seg);
        self.disk_bytes += HEADER;
        if was_at_end {
            self.read = (id, HEADER);
        }
        Ok(())
    }

    /// After a failed write: frees what acknowledged records hold in the active segment. When every record in
    /// it was acknowledged (the writer caught up while the disk was full), the segment is deleted and a new one
    /// started, so a spool that filled the disk on its own empties it again. Returns whether space was freed.
    pub(super) fn reclaim_acknowledged_active(&mut self, dir: &Path) -> bool {
        let Some(a) = self.segments.back() else {
            return false;
        };
        if a.size <= HEADER || a.total.chunks != a.done.chunks || self.in_flight > 0 {
            return false;
        }
        let seg = self.segments.pop_back().unwrap();
        self.dirty = false;
        self.disk_bytes -= seg.size;
        if let Err(e) = std::fs::remove_file(&seg.path) {
            tracing::warn!(segment = %seg.path.display(), error = %e, "cannot delete acknowledged spool segment");
        }
        // Every record before it is acknowledged too (commits go in order): the spool is empty.
        self.complete = true;
        self.read = (self.next_id, HEADER);
        // A new active segment now if there is room; otherwise the next push makes one.
        if self.rotate(dir).is_ok() {
            self.read = (self.segments.back().unwrap().id, HEADER);
        }
        self.ledger.write(self.read);
        true
    }

    pub(super) fn publish_gauges(&self) {
        metrics::gauge!("caretaker_spool_bytes").set(self.disk_bytes as f64);
        metrics::gauge!("caretaker_spool_segments").set(self.segments.len() as f64);
    }
}
