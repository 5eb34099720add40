//! The ledger: where the oldest unacknowledged record starts, kept in `<dir>/cursor` as
//! `segment id u64 | offset u64 | crc32 u32` (little endian; the CRC covers the 16 bytes before it).
//!
//! Rewritten after each commit, never fsynced: a stale cursor only replays chunks InfluxDB already has, and
//! InfluxDB keeps one point per (series, timestamp), so the replay is harmless. A missing or damaged cursor
//! replays every segment from its start, for the same reason.

use super::error::{SpoolError, io_err};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use tracing::warn;

pub(super) const CURSOR_FILE: &str = "cursor";

/// Oldest unacknowledged record: (segment id, offset in it).
pub(super) type Cursor = (u64, u64);

/// The cursor the last run left in `dir`, if it is there and intact.
pub(super) fn read(dir: &Path) -> Option<Cursor> {
    let path = dir.join(CURSOR_FILE);
    let b = std::fs::read(&path).ok()?;
    if b.len() != 20 {
        return None;
    }
    let crc = u32::from_le_bytes(b[16..20].try_into().unwrap());
    if crc32fast::hash(&b[..16]) != crc {
        warn!(file = %path.display(), "spool cursor is damaged; unacknowledged data is replayed from the oldest segment (duplicates are harmless)");
        return None;
    }
    Some((
        u64::from_le_bytes(b[0..8].try_into().unwrap()),
        u64::from_le_bytes(b[8..16].try_into().unwrap()),
    ))
}

/// The cursor file, open for rewriting.
pub(super) struct Ledger {
    file: File,
}

impl Ledger {
    /// Opens (or creates) the cursor file of `dir`.
    pub(super) fn open(dir: &Path) -> Result<Ledger, SpoolError> {
        let path = dir.join(CURSOR_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(Ledger { file })
    }

    /// Records the oldest unacknowledged record; a failure is logged, not returned (it costs only a replay).
    pub(super) fn write(&self, cursor: Cursor) {
        let mut b = [0u8; 20];
        b[0..8].copy_from_slice(&cursor.0.to_le_bytes());
        b[8..16].copy_from_slice(&cursor.1.to_le_bytes());
        let crc = crc32fast::hash(&b[..16]);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
        if let Err(e) = self.file.write_all_at(&b, 0) {
            warn!(error = %e, "cannot write the spool cursor (acknowledged chunks may be replayed after a restart)");
        }
    }
}
