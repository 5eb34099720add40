//! Segment files: `<id, 20 digits>.seg`, the 8-byte magic `CTSPOOL1`, then records back to back (see
//! [`super::record`]). Creating one, appending a record, reading one back, and the start-up check that reads
//! every record and cuts a torn or corrupt tail off.

use super::error::{SpoolError, io_err};
use super::record::{BadRecord, REC_HEADER, decode_record, parse_header};
use crate::sinks::influx::queue::Chunk;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{error, warn};

pub(super) const MAGIC: &[u8; 8] = b"CTSPOOL1";
/// Bytes before the first record.
pub(super) const HEADER: u64 = MAGIC.len() as u64;

/// The file of segment `id`.
pub(super) fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Flushes a folder's entries (a created or deleted file).
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Fault injection: a disk of `capacity` bytes holding the folder's segment files, which refuses writes beyond
/// it with ENOSPC after writing what fits, as a real full disk does. A real full disk cannot be made without
/// privileges (mounting a small tmpfs needs root), so the unit tests give the spool this instead; the integration
/// test `spool::a_full_disk_degrades_health_frees_acknowledged_space_and_resumes` uses a real 3 MB tmpfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeDisk {
    pub capacity: u64,
}

impl FakeDisk {
    /// Bytes left: the capacity minus the sizes of the segment files in `dir`.
    fn free(self, dir: &Path) -> u64 {
        let used: u64 = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        self.capacity.saturating_sub(used)
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

/// Whether an I/O error means the file system is out of space (or quota).
pub(super) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Tallies of records: in a segment, in memory, live, dropped.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    pub(super) chunks: u64,
    pub(super) lines: u64,
    pub(super) readings: u64,
    pub(super) bytes: u64,
}

impl Counts {
    pub(super) fn of(c: &Chunk) -> Counts {
        Counts {
            chunks: 1,
            lines: c.lines as u64,
            readings: c.readings as u64,
            bytes: c.body.len() as u64,
        }
    }
    pub(super) fn add(&mut self, o: Counts) {
        self.chunks += o.chunks;
        self.lines += o.lines;
        self.readings += o.readings;
        self.bytes += o.bytes;
    }
    pub(super) fn sub(&mut self, o: Counts) {
        self.chunks = self.chunks.saturating_sub(o.chunks);
        self.lines = self.lines.saturating_sub(o.lines);
        self.readings = self.readings.saturating_sub(o.readings);
        self.bytes = self.bytes.saturating_sub(o.bytes);
    }
    pub(super) fn minus(mut self, o: Counts) -> Counts {
        self.sub(o);
        self
    }
}

/// One segment file and what it holds.
pub(super) struct Segment {
    pub(super) id: u64,
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    /// Bytes of valid data, header included; the next record goes here.
    pub(super) size: u64,
    /// Records written into it, records loaded into memory (or passed), records acknowledged or dropped.
    pub(super) total: Counts,
    pub(super) loaded: Counts,
    pub(super) done: Counts,
}

impl Segment {
    /// Creates segment `id` in `dir`: the file (which must not exist) with its magic, both flushed, and the
    /// folder entry flushed. On failure (a full disk) the file is removed again, so the id can be retried.
    pub(super) fn create(dir: &Path, id: u64, fake: Option<FakeDisk>) -> io::Result<Segment> {
        let path = seg_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let written = match fake {
            Some(f) if f.free(dir) < HEADER => Err(enospc()),
            _ => file.write_all_at(MAGIC, 0).and_then(|()| file.sync_data()),
        };
        if let Err(e) = written {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        sync_dir(dir);
        Ok(Segment {
            id,
            path,
            file: Arc::new(file),
            size: HEADER,
            total: Counts::default(),
            loaded: Counts::default(),
            done: Counts::default(),
        })
    }

    /// Reads and checks one segment; cuts it at the first bad record. `cursor` = offset of the oldest
    /// unacknowledged record when the cursor points into this segment. Returns the segment and the bytes cut.
    pub(super) fn recover(
        id: u64,
        path: &Path,
        cursor: Option<u64>,
    ) -> Result<(Segment, u64), SpoolError> {
        let data = std::fs::read(path).map_err(io_err(path))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        let mut seg = Segment {
            id,
            path: path.to_path_buf(),
            file: Arc::new(file),
            size: HEADER,
            total: Counts::default(),
            loaded: Counts::default(),
            done: Counts::default(),
        };
        if data.len() < HEADER as usize || &data[..HEADER as usize] != MAGIC {
            // A segment created just before a crash may have no complete header; anything else is foreign.
            let corrupt = data.len() as u64;
            if corrupt > 0 {
                error!(segment = %path.display(), bytes = corrupt, "spool segment has no valid header; its contents are skipped");
            }
            seg.size = 0;
            return Ok((seg, corrupt));
        }
        let mut off = HEADER as usize;
        let mut starts_ok = cursor.is_none_or(|c| c <= HEADER);
        let mut done_until_cursor = Counts::default();
        let mut bad = None;
        while off < data.len() {
            let remaining = (data.len() - off) as u64;
            let r = parse_header(&data[off..], remaining).and_then(|(len, crc)| {
                decode_record(&data[off..off + REC_HEADER + len as usize], crc)
            });
            match r {
                Ok(chunk) => {
                    let c = Counts::of(&chunk);
                    if cursor.is_some_and(|cur| (off as u64) < cur) {
                        done_until_cursor.add(c);
                    }
                    seg.total.add(c);
                    off += REC_HEADER + chunk.body.len();
                    if cursor == Some(off as u64) {
                        starts_ok = true;
                    }
                }
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        seg.size = off as u64;
        if starts_ok {
            seg.done = done_until_cursor;
            seg.loaded = done_until_cursor;
        } else {
            warn!(segment = %path.display(), "spool cursor does not point at a record; replaying the whole segment (duplicates are harmless)");
        }
        let mut corrupt = 0;
        if let Some(e) = bad {
            corrupt = data.len() as u64 - off as u64;
            warn!(
                segment = %path.display(),
                offset = off,
                bytes = corrupt,
                reason = %e,
                "spool segment ends in a torn or corrupt record (an interrupted write); the bytes from there are skipped and cut off"
            );
            seg.file.set_len(off as u64).map_err(io_err(path))?;
            seg.file.sync_all().map_err(io_err(path))?;
        }
        Ok((seg, corrupt))
    }

    /// Reads and checks the record at `off` (the valid data ends at `size`).
    pub(super) fn read_record(&self, off: u64) -> Result<Chunk, String> {
        let (file, end) = (&self.file, self.size);
        let mut h = [0u8; REC_HEADER];
        let remaining = end.saturating_sub(off);
        if remaining < REC_HEADER as u64 {
            return Err(BadRecord::Short.to_string());
        }
        file.read_exact_at(&mut h, off).map_err(|e| e.to_string())?;
        let (len, crc) = parse_header(&h, remaining).map_err(|e| e.to_string())?;
        let mut rec = vec![0u8; REC_HEADER + len as usize];
        file.read_exact_at(&mut rec, off)
            .map_err(|e| e.to_string())?;
        decode_record(&rec, crc).map_err(|e| e.to_string())
    }

    /// Writes a record where the valid data ends, without moving that end (the caller does once the write, and
    /// a flush if wanted, succeeded). Header and body in two writes rather than one copied buffer; a crash between
    /// them leaves a short record, which start-up cuts off like any torn write (the chunk was not acknowledged).
    ///
    /// A failed write (a full disk) may leave part of the record behind the valid data: the caller cuts it off
    /// with [`Segment::cut_to_size`], so it neither holds space nor looks like a torn record at the next start.
    pub(super) fn write_record(
        &self,
        header: &[u8; REC_HEADER],
        body: &[u8],
        fake: Option<FakeDisk>,
    ) -> io::Result<()> {
        if let Some(f) = fake {
            let free = self.path.parent().map(|d| f.free(d)).unwrap_or(0);
            // Bytes past the current end of file are what the write adds.
            let on_disk = self.file.metadata().map(|m| m.len()).unwrap_or(self.size);
            let end = self.size + (REC_HEADER + body.len()) as u64;
            if end > on_disk + free {
                // Write what fits, as a real file system does, then refuse.
                let fits = (on_disk + free).saturating_sub(self.size) as usize;
                let mut rec = header.to_vec();
                rec.extend_from_slice(body);
                self.file
                    .write_all_at(&rec[..fits.min(rec.len())], self.size)?;
                return Err(enospc());
            }
        }
        self.file
            .write_all_at(header, self.size)
            .and_then(|()| self.file.write_all_at(body, self.size + REC_HEADER as u64))
    }

    /// Cuts the file back to its valid data (after a failed write left part of a record behind it).
    pub(super) fn cut_to_size(&self) -> io::Result<()> {
        if self.file.metadata()?.len() > self.size {
            self.file.set_len(self.size)?;
        }
        Ok(())
    }
}
