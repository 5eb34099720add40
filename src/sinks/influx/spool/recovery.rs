//! Start-up: every segment file of the folder is read and checked; segments wholly acknowledged before the last
//! stop are deleted, torn or corrupt tails are cut off and reported, and the rest is what the spool replays.

use super::error::{SpoolError, io_err};
use super::ledger::{self, Cursor};
use super::segment::{Segment, seg_path};
use std::collections::VecDeque;
use std::path::Path;

/// What start-up found in the spool folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovery {
    /// Segments holding unacknowledged records.
    pub segments: usize,
    pub chunks: u64,
    pub readings: u64,
    pub bytes: u64,
    /// Segments that ended in a torn or corrupt record, and the bytes cut off there.
    pub corrupt_segments: usize,
    pub corrupt_bytes: u64,
}

/// The segments to replay and where things stood.
pub(super) struct Found {
    /// Segments holding unacknowledged records, oldest first.
    pub(super) segments: VecDeque<Segment>,
    pub(super) recovery: Recovery,
    /// Sum of the kept segments' sizes.
    pub(super) disk_bytes: u64,
    pub(super) cursor: Option<Cursor>,
    /// The id of the next segment: above every id seen, in a file name or in the cursor.
    pub(super) next_id: u64,
}

/// Checks every segment of `dir` against the cursor the last run left.
pub(super) fn recover(dir: &Path) -> Result<Found, SpoolError> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_suffix(".seg")
            .and_then(|s| s.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let cursor = ledger::read(dir);
    let mut rec = Recovery::default();
    let mut segments = VecDeque::new();
    let mut disk_bytes = 0;
    for &id in &ids {
        let path = seg_path(dir, id);
        if cursor.is_some_and(|(cs, _)| id < cs) {
            // Every record in it was acknowledged before the last stop.
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            continue;
        }
        let at = cursor.and_then(|(cs, off)| (cs == id).then_some(off));
        let (seg, corrupt) = Segment::recover(id, &path, at)?;
        if corrupt > 0 {
            rec.corrupt_segments += 1;
            rec.corrupt_bytes += corrupt;
        }
        let live = seg.total.minus(seg.done);
        if live.chunks == 0 {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            continue;
        }
        rec.segments += 1;
        rec.chunks += live.chunks;
        rec.readings += live.readings;
        rec.bytes += live.bytes;
        disk_bytes += seg.size;
        segments.push_back(seg);
    }
    if rec.corrupt_bytes > 0 {
        metrics::counter!("caretaker_spool_corrupt_bytes_total").increment(rec.corrupt_bytes);
    }
    // Never reuse an id at or below the cursor's: records there would count as acknowledged at the next start.
    let next_id = ids
        .last()
        .copied()
        .max(cursor.map(|(cs, _)| cs))
        .map(|i| i + 1)
        .unwrap_or(1);
    Ok(Found {
        segments,
        recovery: rec,
        disk_bytes,
        cursor,
        next_id,
    })
}
