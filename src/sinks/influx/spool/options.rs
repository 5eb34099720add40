//! How a spool is set up: its folder, its bound and what it does at the bound, how often it flushes, and the
//! sizes of its segments and of its memory cache.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Most bytes handed to the writer at once (at least one chunk), whatever its `batch_size`: a quarter of
    /// `max_bytes`. Records in flight are never dropped, so this keeps most of the spool droppable: with
    /// `drop_oldest` a push always finds an unsent segment to drop, however the writer's timing falls.
    pub max_batch_bytes: u64,
    /// Fault injection for tests only (`None` in production): the segment files live on a simulated disk of
    /// this size, which refuses writes beyond it with ENOSPC. See [`super::segment::FakeDisk`].
    pub(super) fake_disk: Option<super::segment::FakeDisk>,
}

impl SpoolOptions {
    /// Segments of 1/16 of the bound (4 KiB to 64 MiB), so `drop_oldest` frees about 6% at a time; batches of at
    /// most a quarter of it.
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
            max_batch_bytes: max_batch_bytes(max_bytes),
            fake_disk: None,
        }
    }
}

/// The most bytes of encoded lines a spool of `max_bytes` hands the writer at once (at least one chunk).
///
/// Why a quarter: the batch in flight can never be dropped, and it touches at most its own bytes plus one
/// partly filled segment at each end (segments are 1/16 of the bound, a chunk never exceeds one), so at most
/// 1/4 + 2/16 = 3/8 of the spool is pinned and `drop_oldest` can always free room for the next chunk (the
/// pipeline cuts chunks to fit a segment). A quarter of the smallest spool (64 KiB) is still about 120 lines
/// per write; the 1 GiB default cuts only batches of more than about 2 million lines.
pub fn max_batch_bytes(max_bytes: u64) -> u64 {
    max_bytes / 4
}
