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
//! - Segment files are deleted whole, only once every record in them was acknowledged by InfluxDB (or dropped by
//!   `when_full = "drop_oldest"`, which counts and logs every reading it drops).
//! - Replay is oldest first, in write order. Records in flight (peeked by the writer, not yet committed) are
//!   never dropped.
//! - At start-up every segment is read and checked; the first record that is short or fails its checksum ends
//!   its segment: the bytes from there are reported (log + `caretaker_spool_corrupt_bytes_total`) and truncated,
//!   so a torn write needs no manual repair.
//! - Disk use (the sum of segment sizes) stays within `max_bytes`, except that one chunk is always accepted
//!   into an empty spool so an oversized batch cannot wedge the pipeline.
//!
//! Recent records are also kept in memory (up to `cache_bytes`) so a writer that keeps up never reads the disk;
//! a backlog is read back from the segment files in order.

use super::queue::{Chunk, ChunkQueue, QueueStats};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::{error, info, warn};

const MAGIC: &[u8; 8] = b"CTSPOOL1";
const HEADER: u64 = MAGIC.len() as u64;
const REC_HEADER: usize = 24;
/// Larger lengths can only come from corruption.
const MAX_RECORD: u64 = 1 << 30;
const CURSOR_FILE: &str = "cursor";

/// What the spool does when a push would take it over `spool_max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// The push waits for the writer to free space (sources stop acknowledging; the broker keeps the messages).
    Block,
    /// The oldest segment not being sent is deleted; every reading in it is counted as dropped.
    DropOldest,
}

impl WhenFull {
    pub fn parse(s: &str) -> Result<WhenFull, String> {
        match s {
            "block" => Ok(WhenFull::Block),
            "drop_oldest" => Ok(WhenFull::DropOldest),
            other => Err(format!(
                "unknown policy `{other}`; expected \"block\" or \"drop_oldest\""
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            WhenFull::Block => "block",
            WhenFull::DropOldest => "drop_oldest",
        }
    }
}

/// How a spool is set up.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// The spool folder (`<[state] dir>/spool`).
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub when_full: WhenFull,
    pub fsync_interval: Duration,
    /// A segment is sealed once it reaches this size.
    pub segment_bytes: u64,
    /// Most bytes of recent records kept in memory for the writer.
    pub cache_bytes: u64,
}

impl SpoolOptions {
    /// Segments of 1/16 of the bound (4 KiB to 64 MiB), so `drop_oldest` frees about 6% at a time.
    pub fn new(
        dir: impl Into<PathBuf>,
        max_bytes: u64,
        when_full: WhenFull,
        fsync_interval: Duration,
    ) -> SpoolOptions {
        SpoolOptions {
            dir: dir.into(),
            max_bytes,
            when_full,
            fsync_interval,
            segment_bytes: (max_bytes / 16).clamp(4 << 10, 64 << 20),
            cache_bytes: (max_bytes / 4).clamp(64 << 10, 16 << 20),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("spool {}: {source}", path.display())]
pub struct SpoolError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_path_buf(),
        source,
    }
}

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
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    chunks: u64,
    lines: u64,
    readings: u64,
    bytes: u64,
}

impl Counts {
    fn of(c: &Chunk) -> Counts {
        Counts {
            chunks: 1,
            lines: c.lines as u64,
            readings: c.readings as u64,
            bytes: c.body.len() as u64,
        }
    }
    fn add(&mut self, o: Counts) {
        self.chunks += o.chunks;
        self.lines += o.lines;
        self.readings += o.readings;
        self.bytes += o.bytes;
    }
    fn sub(&mut self, o: Counts) {
        self.chunks = self.chunks.saturating_sub(o.chunks);
        self.lines = self.lines.saturating_sub(o.lines);
        self.readings = self.readings.saturating_sub(o.readings);
        self.bytes = self.bytes.saturating_sub(o.bytes);
    }
    fn minus(mut self, o: Counts) -> Counts {
        self.sub(o);
        self
    }
}

struct Segment {
    id: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of valid data, header included; the next record goes here.
    size: u64,
    /// Records written into it, records loaded into memory (or passed), records acknowledged or dropped.
    total: Counts,
    loaded: Counts,
    done: Counts,
}

/// A live record in memory.
struct Entry {
    seg: u64,
    start: u64,
    chunk: Arc<Chunk>,
}

struct State {
    /// Oldest first; the last one is the active segment.
    segments: VecDeque<Segment>,
    /// Live records from the oldest on, in order (a prefix of the backlog, or all of it when `complete`).
    mem: VecDeque<Entry>,
    mem_bytes: u64,
    mem_lines: u64,
    /// Where the next record not in `mem` starts.
    read: (u64, u64),
    /// `mem` holds every live record.
    complete: bool,
    /// The first `in_flight` entries of `mem` were handed to the writer by `peek`.
    in_flight: usize,
    live: Counts,
    oldest_ms: Option<i64>,
    disk_bytes: u64,
    next_id: u64,
    dirty: bool,
    /// Sealed segments with writes not yet flushed (the fsync thread flushes them on its next round).
    unsynced: Vec<Arc<File>>,
    blocked_since: Option<Instant>,
    write_failed: bool,
    dropped: Counts,
    corrupt_bytes: u64,
}

struct Inner {
    opts: SpoolOptions,
    /// Holds the `flock` on `<dir>/lock` for as long as the spool is open.
    _lock: File,
    state: Mutex<State>,
    cursor: File,
    data: Notify,
    space: Notify,
}

/// The durable queue. Cheap to share behind an `Arc`.
pub struct Spool {
    inner: Arc<Inner>,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// The 24-byte record header of `chunk` (the body is written right after it, not copied).
fn record_header(chunk: &Chunk) -> [u8; REC_HEADER] {
    let mut h = [0u8; REC_HEADER];
    h[0..4].copy_from_slice(&(chunk.body.len() as u32).to_le_bytes());
    h[8..12].copy_from_slice(&chunk.lines.to_le_bytes());
    h[12..16].copy_from_slice(&chunk.readings.to_le_bytes());
    h[16..24].copy_from_slice(&chunk.created_ms.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[8..]);
    crc.update(&chunk.body);
    h[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// Why a record could not be read.
#[derive(Debug)]
enum BadRecord {
    Short,
    Length(u64),
    Checksum,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadRecord::Short => write!(f, "torn record (file ends inside it)"),
            BadRecord::Length(n) => write!(f, "impossible record length {n}"),
            BadRecord::Checksum => write!(f, "checksum mismatch"),
        }
    }
}

/// Parses the record header at the start of `h` (24 bytes): (body length, crc).
fn parse_header(h: &[u8], remaining: u64) -> Result<(u64, u32), BadRecord> {
    if (h.len() as u64) < REC_HEADER as u64 || remaining < REC_HEADER as u64 {
        return Err(BadRecord::Short);
    }
    let len = u32::from_le_bytes(h[0..4].try_into().unwrap()) as u64;
    let crc = u32::from_le_bytes(h[4..8].try_into().unwrap());
    if len > MAX_RECORD {
        return Err(BadRecord::Length(len));
    }
    if REC_HEADER as u64 + len > remaining {
        return Err(BadRecord::Short);
    }
    Ok((len, crc))
}

/// Checks and decodes a whole record (`rec` = header + body).
fn decode_record(rec: &[u8], crc: u32) -> Result<Chunk, BadRecord> {
    if crc32fast::hash(&rec[8..]) != crc {
        return Err(BadRecord::Checksum);
    }
    Ok(Chunk {
        lines: u32::from_le_bytes(rec[8..12].try_into().unwrap()),
        readings: u32::from_le_bytes(rec[12..16].try_into().unwrap()),
        created_ms: i64::from_le_bytes(rec[16..24].try_into().unwrap()),
        body: rec[REC_HEADER..].to_vec(),
    })
}

fn read_cursor(path: &Path) -> Option<(u64, u64)> {
    let b = std::fs::read(path).ok()?;
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

/// Takes the spool's exclusive lock: two processes appending to one spool would interleave records.
/// `flock` is released by the kernel when the holder dies, even by SIGKILL, so a crash never leaves it stale.
fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    // A spool closed a moment ago in this process may still be releasing it (its fsync thread): retry briefly.
    for attempt in 0..20 {
        // SAFETY: flock on a file descriptor we own and keep open; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(io_err(&path)(e));
        }
        if attempt < 19 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Err(SpoolError {
        path,
        source: io::Error::new(
            io::ErrorKind::WouldBlock,
            "another caretaker process is using this spool; two daemons must not share a [state] dir",
        ),
    })
}

impl SpoolError {
    /// Another process holds the spool.
    pub fn is_locked(&self) -> bool {
        self.source.kind() == io::ErrorKind::WouldBlock
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Spool {
    /// Opens (or creates) the spool in `opts.dir`, checking every segment and recovering what InfluxDB has not
    /// acknowledged yet.
    pub fn open(opts: SpoolOptions) -> Result<(Arc<Spool>, Recovery), SpoolError> {
        let dir = opts.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock = lock_dir(&dir)?;
        let mut ids = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
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
        let cursor_path = dir.join(CURSOR_FILE);
        let cursor = read_cursor(&cursor_path);
        let mut rec = Recovery::default();
        let mut segments = VecDeque::new();
        let mut disk_bytes = 0;
        for &id in &ids {
            let path = seg_path(&dir, id);
            if cursor.is_some_and(|(cs, _)| id < cs) {
                // Every record in it was acknowledged before the last stop.
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let at = cursor.and_then(|(cs, off)| (cs == id).then_some(off));
            let (seg, corrupt) = Self::recover_segment(id, &path, at)?;
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
        // Never reuse an id at or below the cursor's: records there would count as acknowledged at the next start.
        let next_id = ids
            .last()
            .copied()
            .max(cursor.map(|(cs, _)| cs))
            .map(|i| i + 1)
            .unwrap_or(1);
        let cursor_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&cursor_path)
            .map_err(io_err(&cursor_path))?;
        let mut st = State {
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
            dropped: Counts::default(),
            corrupt_bytes: rec.corrupt_bytes,
        };
        // Records are never appended to a recovered segment: a fresh active segment starts now.
        st.rotate(&dir).map_err(io_err(&dir))?;
        let inner = Arc::new(Inner {
            opts,
            _lock: lock,
            state: Mutex::new(st),
            cursor: cursor_file,
            data: Notify::new(),
            space: Notify::new(),
        });
        {
            let mut st = inner.lock();
            inner.fill(&mut st, 1);
            st.refresh_oldest();
            inner.publish_gauges(&st);
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

    /// Reads and checks one segment; cuts it at the first bad record. `cursor` = offset of the oldest
    /// unacknowledged record when the cursor points into this segment. Returns the segment and the bytes cut.
    fn recover_segment(
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
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

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

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_gauges(&self, st: &State) {
        metrics::gauge!("caretaker_spool_bytes").set(st.disk_bytes as f64);
        metrics::gauge!("caretaker_spool_segments").set(st.segments.len() as f64);
    }

    /// Loads records from disk into `mem` until it holds `want_lines` lines or every live record.
    fn fill(&self, st: &mut State, want_lines: u64) {
        while !st.complete && (st.mem.is_empty() || st.mem_lines < want_lines) {
            st.normalize_read();
            let (id, off) = st.read;
            let Some(idx) = st.seg_index(id) else {
                st.complete = true;
                break;
            };
            let last = idx + 1 == st.segments.len();
            let seg = &st.segments[idx];
            if off >= seg.size {
                // normalize_read moved past every sealed segment's end: this is the end of the active one.
                st.complete = true;
                break;
            }
            match read_record(&seg.file, off, seg.size) {
                Ok(chunk) => {
                    let c = Counts::of(&chunk);
                    let len = REC_HEADER as u64 + c.bytes;
                    let seg = &mut st.segments[idx];
                    seg.loaded.add(c);
                    st.read = (id, off + len);
                    st.mem_bytes += c.bytes;
                    st.mem_lines += c.lines;
                    st.mem.push_back(Entry {
                        seg: id,
                        start: off,
                        chunk: Arc::new(chunk),
                    });
                }
                Err(e) => {
                    // Damaged after start-up (disk fault): the rest of the segment cannot be framed.
                    let seg = &mut st.segments[idx];
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
                    st.live.sub(lost);
                    st.corrupt_bytes += lost_bytes;
                    if last {
                        // Never append behind garbage: seal it.
                        let _ = st.rotate(&self.opts.dir);
                    }
                    st.read = (id, u64::MAX);
                }
            }
        }
    }

    /// Writes the cursor (oldest unacknowledged record) and deletes segments wholly before it.
    fn advance(&self, st: &mut State) {
        st.normalize_read();
        let cursor = st.mem.front().map(|e| (e.seg, e.start)).unwrap_or(st.read);
        let active = st.segments.back().map(|s| s.id);
        while let Some(s) = st.segments.front() {
            if s.id >= cursor.0 || Some(s.id) == active {
                break;
            }
            let s = st.segments.pop_front().unwrap();
            st.disk_bytes -= s.size;
            if let Err(e) = std::fs::remove_file(&s.path) {
                warn!(segment = %s.path.display(), error = %e, "cannot delete acknowledged spool segment");
            }
        }
        let mut b = [0u8; 20];
        b[0..8].copy_from_slice(&cursor.0.to_le_bytes());
        b[8..16].copy_from_slice(&cursor.1.to_le_bytes());
        let crc = crc32fast::hash(&b[..16]);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
        if let Err(e) = self.cursor.write_all_at(&b, 0) {
            warn!(error = %e, "cannot write the spool cursor (acknowledged chunks may be replayed after a restart)");
        }
    }

    /// Drops the oldest segment that holds no record in flight. Returns whether anything was freed.
    fn drop_oldest(&self, st: &mut State) -> bool {
        let in_flight: Vec<u64> = st.mem.iter().take(st.in_flight).map(|e| e.seg).collect();
        let Some(idx) = st
            .segments
            .iter()
            .position(|s| !in_flight.contains(&s.id) && (s.size > HEADER || s.total.chunks > 0))
        else {
            return false;
        };
        if idx + 1 == st.segments.len() && st.rotate(&self.opts.dir).is_err() {
            return false;
        }
        let seg = st.segments.remove(idx).unwrap();
        let lost = seg.total.minus(seg.done);
        let before = st.mem.len();
        st.mem.retain(|e| e.seg != seg.id);
        if st.mem.len() != before {
            st.mem_bytes = st.mem.iter().map(|e| e.chunk.body.len() as u64).sum();
            st.mem_lines = st.mem.iter().map(|e| e.chunk.lines as u64).sum();
        }
        st.live.sub(lost);
        st.dropped.add(lost);
        st.disk_bytes -= seg.size;
        if st.read.0 == seg.id {
            st.read = (seg.id, u64::MAX);
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
                oldest_ms = ?st.oldest_ms,
                dropped_total = st.dropped.readings,
                max_bytes = self.opts.max_bytes,
                "spool full (when_full = \"drop_oldest\"): dropped the oldest unsent readings"
            );
        }
        true
    }
}

/// Reads and checks the record at `off` of a segment whose valid data ends at `end`.
fn read_record(file: &File, off: u64, end: u64) -> Result<Chunk, String> {
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

impl State {
    fn seg_index(&self, id: u64) -> Option<usize> {
        // Few segments (about 16): a scan is fine.
        self.segments.iter().position(|s| s.id == id)
    }

    /// Moves the read position past deleted segments and sealed segments' ends.
    fn normalize_read(&mut self) {
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

    fn refresh_oldest(&mut self) {
        self.oldest_ms = self.mem.front().map(|e| e.chunk.created_ms);
    }

    /// Files with writes not yet flushed: sealed segments, and the active one when dirty.
    fn take_unsynced(&mut self) -> Vec<Arc<File>> {
        let mut files = std::mem::take(&mut self.unsynced);
        if self.dirty {
            self.dirty = false;
            files.extend(self.segments.back().map(|s| s.file.clone()));
        }
        files
    }

    /// Seals the active segment (its flush goes to the fsync thread) and starts a new one.
    fn rotate(&mut self, dir: &Path) -> io::Result<()> {
        if self.dirty {
            if let Some(s) = self.segments.back() {
                self.unsynced.push(s.file.clone());
            }
            self.dirty = false;
        }
        let id = self.next_id;
        let path = seg_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        file.write_all_at(MAGIC, 0)?;
        file.sync_data()?;
        sync_dir(dir);
        self.next_id += 1;
        let was_at_end = self.complete;
        self.segments.push_back(Segment {
            id,
            path,
            file: Arc::new(file),
            size: HEADER,
            total: Counts::default(),
            loaded: Counts::default(),
            done: Counts::default(),
        });
        self.disk_bytes += HEADER;
        if was_at_end {
            self.read = (id, HEADER);
        }
        Ok(())
    }
}

impl ChunkQueue for Spool {
    fn try_push(&self, chunk: Chunk) -> Result<(), Chunk> {
        let inner = &*self.inner;
        let opts = &inner.opts;
        let mut st = inner.lock();
        let header = record_header(&chunk);
        let len = (REC_HEADER + chunk.body.len()) as u64;
        let created = chunk.created_ms;
        if st.disk_bytes + len > opts.max_bytes {
            // Reclaim acknowledged space first: the active segment may hold only acknowledged records.
            if st
                .segments
                .back()
                .is_some_and(|a| a.size > HEADER && a.total.chunks == a.done.chunks)
                && st.rotate(&opts.dir).is_ok()
            {
                inner.advance(&mut st);
            }
            while st.live.chunks > 0 && st.disk_bytes + len > opts.max_bytes {
                if opts.when_full == WhenFull::Block || !inner.drop_oldest(&mut st) {
                    if st.blocked_since.is_none() {
                        st.blocked_since = Some(Instant::now());
                        warn!(
                            max_bytes = opts.max_bytes,
                            queued_readings = st.live.readings,
                            policy = opts.when_full.as_str(),
                            "spool full{}: sources wait; MQTT messages stay with the broker until InfluxDB takes the backlog",
                            if opts.when_full == WhenFull::DropOldest {
                                " and all of it is being sent (nothing left to drop)"
                            } else {
                                ""
                            }
                        );
                    }
                    return Err(chunk);
                }
                inner.advance(&mut st);
                if st.mem.is_empty() && st.live.chunks > 0 {
                    inner.fill(&mut st, 1);
                }
                st.refresh_oldest();
            }
        }
        let rotate = st
            .segments
            .back()
            .is_none_or(|a| a.size > HEADER && a.size + len > opts.segment_bytes);
        if rotate {
            if let Err(e) = st.rotate(&opts.dir) {
                return self.write_failed(st, chunk, &e);
            }
        }
        let active = st.segments.back_mut().unwrap();
        // Header and body in two writes rather than one copied buffer; a crash between them leaves a short
        // record, which start-up cuts off like any torn write (the chunk was not acknowledged).
        if let Err(e) = active
            .file
            .write_all_at(&header, active.size)
            .and_then(|()| {
                active
                    .file
                    .write_all_at(&chunk.body, active.size + REC_HEADER as u64)
            })
        {
            return self.write_failed(st, chunk, &e);
        }
        if opts.fsync_interval.is_zero() {
            if let Err(e) = active.file.sync_data() {
                return self.write_failed(st, chunk, &e);
            }
        }
        let start = active.size;
        let id = active.id;
        let c = Counts::of(&chunk);
        active.size += len;
        active.total.add(c);
        st.disk_bytes += len;
        st.live.add(c);
        st.dirty = !opts.fsync_interval.is_zero();
        if st.write_failed {
            st.write_failed = false;
            info!("spool writes succeed again");
        }
        if let Some(since) = st.blocked_since.take() {
            info!(
                blocked_for = ?since.elapsed(),
                "spool has room again; sources resume"
            );
        }
        if st.complete && st.mem_bytes + c.bytes <= opts.cache_bytes {
            st.mem_bytes += c.bytes;
            st.mem_lines += c.lines;
            st.read = (id, start + len);
            st.segments.back_mut().unwrap().loaded.add(c);
            st.mem.push_back(Entry {
                seg: id,
                start,
                chunk: Arc::new(chunk),
            });
        } else {
            st.complete = false;
        }
        if st.oldest_ms.is_none() {
            st.oldest_ms = Some(created);
        }
        inner.publish_gauges(&st);
        drop(st);
        inner.data.notify_one();
        Ok(())
    }

    fn peek(&self, max_lines: usize) -> Vec<Arc<Chunk>> {
        let inner = &*self.inner;
        let mut st = inner.lock();
        inner.fill(&mut st, max_lines as u64);
        let mut out = Vec::new();
        let mut lines = 0usize;
        for e in &st.mem {
            if !out.is_empty() && lines + e.chunk.lines as usize > max_lines {
                break;
            }
            lines += e.chunk.lines as usize;
            out.push(e.chunk.clone());
        }
        st.in_flight = out.len();
        out
    }

    fn commit(&self, n: usize) {
        let inner = &*self.inner;
        let mut st = inner.lock();
        for _ in 0..n {
            let Some(e) = st.mem.pop_front() else { break };
            let c = Counts::of(&e.chunk);
            st.mem_bytes -= c.bytes;
            st.mem_lines -= c.lines;
            st.live.sub(c);
            if let Some(i) = st.seg_index(e.seg) {
                st.segments[i].done.add(c);
            }
        }
        st.in_flight = 0;
        if st.mem.is_empty() && st.live.chunks > 0 {
            inner.fill(&mut st, 1);
        }
        st.refresh_oldest();
        inner.advance(&mut st);
        inner.publish_gauges(&st);
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

impl Spool {
    fn write_failed(
        &self,
        mut st: MutexGuard<'_, State>,
        chunk: Chunk,
        e: &io::Error,
    ) -> Result<(), Chunk> {
        if !st.write_failed {
            error!(dir = %self.inner.opts.dir.display(), error = %e,
                "cannot write to the spool; sources wait and the write is retried (nothing is acknowledged meanwhile)");
        }
        st.write_failed = true;
        metrics::counter!("caretaker_errors_total", "stage" => "spool", "class" => "write")
            .increment(1);
        Err(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk whose body names its index, with `lines` lines and twice as many readings.
    fn chunk(i: u32, lines: u32) -> Chunk {
        let body: String = (0..lines)
            .map(|l| format!("m,c={i:04} a=1,b={l:04} {i:04}\n"))
            .collect();
        Chunk {
            body: body.into_bytes(),
            lines,
            readings: lines * 2,
            created_ms: 1_000 + i as i64,
        }
    }

    fn index_of(c: &Chunk) -> u32 {
        let s = std::str::from_utf8(&c.body).unwrap();
        s[4..s.find(' ').unwrap()].parse().unwrap()
    }

    fn opts(dir: &Path, max: u64, when_full: WhenFull) -> SpoolOptions {
        let mut o = SpoolOptions::new(dir, max, when_full, Duration::from_secs(1));
        o.segment_bytes = 1024;
        o.cache_bytes = 2048;
        o
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    fn disk_usage(dir: &Path) -> u64 {
        segment_files(dir)
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum()
    }

    /// Drains everything, one chunk per peek, returning the chunk indexes in order.
    fn drain(q: &Spool) -> Vec<u32> {
        let mut out = Vec::new();
        loop {
            let p = q.peek(1);
            if p.is_empty() {
                return out;
            }
            out.extend(p.iter().map(|c| index_of(c)));
            q.commit(p.len());
        }
    }

    #[test]
    fn replays_in_order_after_reopen_and_skips_acknowledged_chunks() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, rec) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
            assert_eq!(rec, Recovery::default());
            for i in 0..100 {
                q.try_push(chunk(i, 3)).unwrap();
            }
            let st = q.stats();
            assert_eq!((st.chunks, st.lines, st.readings), (100, 300, 600));
            assert_eq!(st.oldest_ms, Some(1_000));
            // Acknowledge the first 30 (in batches of 2 lines' budget = 1 chunk each, then a big one).
            let p = q.peek(9);
            assert_eq!(p.iter().map(|c| index_of(c)).collect::<Vec<_>>(), [0, 1, 2]);
            q.commit(3);
            let p = q.peek(81);
            assert_eq!(p.len(), 27);
            q.commit(27);
            assert_eq!(q.stats().oldest_ms, Some(1_030));
            assert!(segment_files(dir.path()).len() > 3, "several segments");
        }
        let (q, rec) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
        assert_eq!(rec.chunks, 70);
        assert_eq!(rec.readings, 420);
        assert_eq!(rec.corrupt_bytes, 0);
        assert_eq!(q.stats().oldest_ms, Some(1_030));
        q.try_push(chunk(100, 1)).unwrap();
        assert_eq!(drain(&q), (30..=100).collect::<Vec<_>>());
        assert_eq!(q.stats(), QueueStats::default());
    }

    #[test]
    fn segments_are_deleted_only_once_every_record_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
        for i in 0..80 {
            q.try_push(chunk(i, 2)).unwrap();
        }
        let files = segment_files(dir.path());
        assert!(files.len() >= 4, "{files:?}");
        let per_first = {
            // Records in the first segment: its size over one record's size (all records are alike in size).
            let rec = (REC_HEADER + chunk(0, 2).body.len()) as u64;
            (std::fs::metadata(&files[0]).unwrap().len() - HEADER) / rec
        };
        // All but one record of the first segment acknowledged: the file stays.
        let p = q.peek(2 * (per_first as usize - 1));
        assert_eq!(p.len() as u64, per_first - 1);
        q.commit(p.len());
        assert!(files[0].exists(), "a record in it is still unacknowledged");
        let p = q.peek(2);
        q.commit(p.len());
        assert!(!files[0].exists(), "fully acknowledged segment deleted");
        assert!(files[1].exists());
        assert_eq!(q.spool_stats().disk_bytes, disk_usage(dir.path()));
        assert_eq!(drain(&q), (per_first as u32..80).collect::<Vec<_>>());
        // Only the active segment is left.
        assert_eq!(segment_files(dir.path()).len(), 1);
    }

    #[test]
    fn torn_tail_is_detected_reported_cut_and_the_rest_recovered() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, _) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
            for i in 0..5 {
                q.try_push(chunk(i, 2)).unwrap();
            }
        }
        let last = segment_files(dir.path()).pop().unwrap();
        let len = std::fs::metadata(&last).unwrap().len();
        // A write interrupted in the middle of the fifth record.
        let f = OpenOptions::new().write(true).open(&last).unwrap();
        f.set_len(len - 7).unwrap();
        drop(f);
        let (q, rec) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
        let rec_len = (REC_HEADER + chunk(4, 2).body.len()) as u64;
        assert_eq!(rec.chunks, 4);
        assert_eq!(rec.readings, 16);
        assert_eq!(rec.corrupt_segments, 1);
        assert_eq!(rec.corrupt_bytes, rec_len - 7);
        assert_eq!(
            std::fs::metadata(&last).unwrap().len(),
            len - rec_len,
            "torn bytes cut off"
        );
        assert_eq!(q.spool_stats().corrupt_bytes, rec_len - 7);
        drop(q);
        // Reported once: the next start finds a clean spool.
        let (q, rec) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
        assert_eq!((rec.chunks, rec.corrupt_bytes), (4, 0));
        assert_eq!(drain(&q), [0, 1, 2, 3]);
    }

    #[test]
    fn checksum_mismatch_ends_the_segment_and_later_segments_survive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, _) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
            for i in 0..60 {
                q.try_push(chunk(i, 2)).unwrap();
            }
        }
        let files = segment_files(dir.path());
        assert!(files.len() >= 3);
        let rec_len = REC_HEADER + chunk(0, 2).body.len();
        let per_seg =
            (std::fs::metadata(&files[0]).unwrap().len() as usize - HEADER as usize) / rec_len;
        // Flip one body byte of the second record of the first segment.
        let mut data = std::fs::read(&files[0]).unwrap();
        data[HEADER as usize + rec_len + REC_HEADER + 3] ^= 0x20;
        std::fs::write(&files[0], &data).unwrap();
        let (q, rec) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
        assert_eq!(rec.corrupt_segments, 1);
        assert_eq!(rec.corrupt_bytes, ((per_seg - 1) * rec_len) as u64);
        assert_eq!(rec.chunks, 60 - (per_seg as u64 - 1));
        let got = drain(&q);
        let mut want = vec![0];
        want.extend(per_seg as u32..60);
        assert_eq!(got, want);
    }

    #[test]
    fn block_policy_refuses_pushes_at_the_bound_until_acknowledgements_free_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let max = 4096;
        let (q, _) = Spool::open(opts(dir.path(), max, WhenFull::Block)).unwrap();
        let mut pushed = 0;
        while q.try_push(chunk(pushed, 2)).is_ok() {
            pushed += 1;
            assert!(pushed < 1000);
        }
        let ss = q.spool_stats();
        assert!(ss.blocked);
        assert!(ss.disk_bytes <= max, "{} > {max}", ss.disk_bytes);
        assert_eq!(ss.disk_bytes, disk_usage(dir.path()));
        assert_eq!(ss.dropped_readings, 0);
        assert_eq!(q.stats().chunks, pushed as u64);
        // Acknowledge more than a segment's worth: room again, nothing lost.
        let p = q.peek(64);
        q.commit(p.len());
        assert!(q.try_push(chunk(pushed, 2)).is_ok());
        assert!(!q.spool_stats().blocked);
        assert_eq!(drain(&q), (p.len() as u32..=pushed).collect::<Vec<_>>());
    }

    #[test]
    fn drop_oldest_counts_every_dropped_reading_and_keeps_the_batch_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let max = 4096;
        let (q, _) = Spool::open(opts(dir.path(), max, WhenFull::DropOldest)).unwrap();
        q.try_push(chunk(0, 2)).unwrap();
        // The writer is sending chunk 0 (InfluxDB is down): it must survive whatever is dropped.
        let in_flight = q.peek(2);
        assert_eq!(in_flight.len(), 1);
        let n = 300;
        for i in 1..n {
            q.try_push(chunk(i, 2)).unwrap();
            assert!(q.spool_stats().disk_bytes <= max);
        }
        assert_eq!(q.spool_stats().disk_bytes, disk_usage(dir.path()));
        let ss = q.spool_stats();
        let st = q.stats();
        assert!(ss.dropped_readings > 0);
        assert_eq!(ss.dropped_readings, ss.dropped_chunks * 4);
        assert_eq!(
            st.chunks + ss.dropped_chunks,
            n as u64,
            "kept + dropped = pushed"
        );
        assert_eq!(st.readings + ss.dropped_readings, 4 * n as u64);
        q.commit(1);
        let rest = drain(&q);
        assert_eq!(rest.len() as u64, st.chunks - 1);
        // What survives, in order: the rest of the segment that held the batch in flight (never dropped), then
        // the newest data without a gap.
        let gap = rest.windows(2).position(|w| w[1] != w[0] + 1).unwrap();
        assert_eq!(rest[..=gap], (1..=rest[gap]).collect::<Vec<_>>()[..]);
        assert_eq!(rest[gap + 1..], (rest[gap + 1]..n).collect::<Vec<_>>()[..]);
        assert!(
            rest.len() < (n / 2) as usize,
            "most of the old data was dropped"
        );
    }

    #[test]
    fn an_oversized_chunk_enters_an_empty_spool() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Spool::open(opts(dir.path(), 4096, WhenFull::Block)).unwrap();
        q.try_push(chunk(7, 300)).unwrap();
        assert!(q.spool_stats().disk_bytes > 4096);
        assert!(q.try_push(chunk(8, 1)).is_err(), "full until acknowledged");
        assert_eq!(drain(&q), [7]);
        q.try_push(chunk(8, 1)).unwrap();
        assert_eq!(drain(&q), [8]);
        assert!(q.spool_stats().disk_bytes <= 4096);
    }

    #[test]
    fn a_backlog_bigger_than_the_cache_is_read_back_from_disk_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
        let mut want = Vec::new();
        for i in 0..200 {
            q.try_push(chunk(i, 3)).unwrap();
            want.push(i);
            if i % 50 == 0 {
                // The writer catches up now and then, mixing cached and disk reads.
                let p = q.peek(30);
                q.commit(p.len());
                want.drain(..p.len());
            }
        }
        assert_eq!(drain(&q), want);
    }

    #[tokio::test]
    async fn push_waits_for_space_with_block() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Spool::open(opts(dir.path(), 4096, WhenFull::Block)).unwrap();
        let mut i = 0;
        while q.try_push(chunk(i, 2)).is_ok() {
            i += 1;
        }
        let q2 = q.clone();
        let t = tokio::spawn(async move { super::super::queue::push(&*q2, chunk(i, 2)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!t.is_finished());
        let p = q.peek(100);
        q.commit(p.len());
        tokio::time::timeout(Duration::from_secs(2), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(drain(&q).last(), Some(&i));
    }

    #[test]
    fn a_lost_cursor_replays_rather_than_loses() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, _) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
            for i in 0..10 {
                q.try_push(chunk(i, 2)).unwrap();
            }
            let p = q.peek(6);
            q.commit(p.len());
        }
        std::fs::remove_file(dir.path().join(CURSOR_FILE)).unwrap();
        // Chunks 0..3 were acknowledged but share a segment with the rest: sent again, none lost.
        let (q, rec) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
        assert_eq!(rec.chunks, 10);
        assert_eq!(drain(&q), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_segment_without_a_complete_header_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, _) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
            q.try_push(chunk(1, 2)).unwrap();
        }
        // A crash right after creating the next segment.
        std::fs::write(seg_path(dir.path(), 99), b"CTSP").unwrap();
        let (q, rec) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
        assert_eq!((rec.chunks, rec.corrupt_bytes), (1, 4));
        assert!(!seg_path(dir.path(), 99).exists());
        q.try_push(chunk(2, 2)).unwrap();
        assert_eq!(drain(&q), [1, 2]);
    }

    #[test]
    fn segments_removed_by_hand_never_make_new_data_look_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, _) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
            for i in 0..60 {
                q.try_push(chunk(i, 2)).unwrap();
            }
            assert_eq!(drain(&q).len(), 60);
        }
        for f in segment_files(dir.path()) {
            std::fs::remove_file(f).unwrap();
        }
        {
            let (q, _) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
            q.try_push(chunk(100, 2)).unwrap();
        }
        let (q, rec) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
        assert_eq!(rec.chunks, 1);
        assert_eq!(drain(&q), [100]);
    }

    #[test]
    fn a_second_open_of_a_spool_in_use_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
        let err = match Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)) {
            Err(e) => e,
            Ok(_) => panic!("opened twice"),
        };
        assert!(err.is_locked());
        assert!(
            err.to_string().contains("another caretaker process"),
            "{err}"
        );
        drop(q);
        assert!(Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).is_ok());
    }

    #[test]
    fn when_full_parses_the_documented_values_only() {
        assert_eq!(WhenFull::parse("block"), Ok(WhenFull::Block));
        assert_eq!(WhenFull::parse("drop_oldest"), Ok(WhenFull::DropOldest));
        assert!(
            WhenFull::parse("drop_newest")
                .unwrap_err()
                .contains("drop_oldest")
        );
    }
}
