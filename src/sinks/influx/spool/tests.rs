//! The spool's behaviour end to end: replay order, acknowledgement, recovery of torn and corrupt segments, the
//! disk bound and both `when_full` policies, the lock, and the on-disk format byte for byte.

use super::ledger::CURSOR_FILE;
use super::record::REC_HEADER;
use super::segment::{HEADER, seg_path};
use super::*;
use crate::sinks::influx::queue::{Chunk, ChunkQueue, QueueStats};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Issue 21: the writer's first peek came when the spool was already full (InfluxDB down, a large
/// `batch_size`), so the batch in flight was the whole spool, `drop_oldest` had nothing it could drop, and
/// intake waited like `block`. Here that timing is forced: the writer asks for everything at once.
#[test]
fn drop_oldest_keeps_taking_pushes_when_the_writer_asks_for_the_whole_spool() {
    let dir = tempfile::tempdir().unwrap();
    let max = 4096;
    let (q, _) = Spool::open(opts(dir.path(), max, WhenFull::DropOldest)).unwrap();
    let rec = (REC_HEADER + chunk(0, 2).body.len()) as u64;
    let mut pushed = 0;
    while q.spool_stats().disk_bytes + rec <= max {
        q.try_push(chunk(pushed, 2)).unwrap();
        pushed += 1;
    }
    assert_eq!(q.spool_stats().dropped_chunks, 0, "filled without dropping");
    // InfluxDB is down and the writer takes the largest batch it may; nothing is committed.
    let in_flight = q.peek(usize::MAX);
    let in_flight_bytes: usize = in_flight.iter().map(|c| c.body.len()).sum();
    assert!(!in_flight.is_empty());
    // Pushes keep being accepted, by dropping older unsent segments, however many come.
    let n = pushed + 200;
    for i in pushed..n {
        assert!(
            q.try_push(chunk(i, 2)).is_ok(),
            "push {i} refused: drop_oldest waited like block"
        );
        assert!(q.spool_stats().disk_bytes <= max);
    }
    assert!(
        in_flight_bytes as u64 <= max / 4,
        "a batch holds at most a quarter of the spool: {in_flight_bytes} bytes"
    );
    let ss = q.spool_stats();
    assert!(!ss.blocked);
    assert!(ss.dropped_chunks > 0);
    assert_eq!(ss.dropped_readings, ss.dropped_chunks * 4);
    assert_eq!(
        q.stats().chunks + ss.dropped_chunks,
        n as u64,
        "kept + dropped = pushed"
    );
    // The batch in flight survived every drop: it is still the oldest, and committing it works.
    let first: Vec<u32> = in_flight.iter().map(|c| index_of(c)).collect();
    assert_eq!(first, (0..in_flight.len() as u32).collect::<Vec<_>>());
    q.commit(in_flight.len());
    let rest = drain(&q);
    assert_eq!(
        rest.len() as u64 + in_flight.len() as u64,
        n as u64 - ss.dropped_chunks
    );
    // After it: the rest of its segments (never dropped while in flight), then the newest without a gap.
    assert!(rest.windows(2).all(|w| w[0] < w[1]), "in order: {rest:?}");
    assert_eq!(*rest.last().unwrap(), n - 1);
    assert_eq!(q.stats(), QueueStats::default());
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

/// Pins the on-disk format byte for byte: the segment (magic, then `len | crc32 | lines | readings |
/// created_ms | body` little endian, the CRC over the 16 meta bytes and the body) and the cursor (segment id,
/// offset, CRC of both). Expected bytes computed independently (zlib's CRC-32).
#[test]
fn segment_and_cursor_bytes_are_the_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (q, _) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
        for (body, lines, readings, created_ms) in [
            (&b"m,d=a x=1 1\n"[..], 1, 1, 1000),
            (&b"m,d=b x=2,y=3 2\n"[..], 1, 2, 1001),
        ] {
            q.try_push(Chunk {
                body: body.to_vec(),
                lines,
                readings,
                created_ms,
            })
            .unwrap();
        }
        let p = q.peek(1);
        q.commit(p.len());
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(
        segment_files(dir.path()),
        [dir.path().join("00000000000000000001.seg")]
    );
    assert_eq!(
        hex(&std::fs::read(dir.path().join("00000000000000000001.seg")).unwrap()),
        "435453504f4f4c31\
         0c0000002aa1ff7c0100000001000000e8030000000000006d2c643d6120783d3120310a\
         1000000044fad0660100000002000000e9030000000000006d2c643d6220783d322c793d3320320a"
    );
    assert_eq!(
        hex(&std::fs::read(dir.path().join("cursor")).unwrap()),
        "01000000000000002c00000000000000ddad0aec"
    );
}

/// Options for a spool whose segment files live on a simulated disk of `capacity` bytes (a real full disk needs
/// root to make; the integration test `spool::a_full_disk_...` uses a real tmpfs).
fn on_small_disk(
    dir: &Path,
    capacity: u64,
    segment_bytes: u64,
    when_full: WhenFull,
) -> SpoolOptions {
    let mut o = SpoolOptions::new(dir, 1 << 30, when_full, Duration::from_secs(1));
    o.segment_bytes = segment_bytes;
    o.cache_bytes = 1 << 20;
    o.fake_disk = Some(super::segment::FakeDisk { capacity });
    o
}

#[test]
fn a_full_disk_is_a_state_acknowledged_space_is_freed_and_intake_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 8192;
    // One big segment, as with the default 64 MiB segments on a small disk: the active segment fills the disk.
    let (q, _) = Spool::open(on_small_disk(dir.path(), cap, 1 << 20, WhenFull::Block)).unwrap();
    let mut pushed = 0;
    while q.try_push(chunk(pushed, 2)).is_ok() {
        pushed += 1;
        assert!(pushed < 1000);
    }
    let ss = q.spool_stats();
    assert!(ss.disk_full && ss.blocked, "{ss:?}");
    // The part of the refused record that fit was cut off again: the file holds whole records only.
    let on_disk = disk_usage(dir.path());
    assert_eq!(on_disk, ss.disk_bytes);
    assert!(on_disk <= cap);
    // Still full: the retry fails the same way, and nothing is lost or duplicated.
    assert!(q.try_push(chunk(pushed, 2)).is_err());
    // The writer drains everything (InfluxDB came back): the active segment, wholly acknowledged, is freed.
    assert_eq!(drain(&q), (0..pushed).collect::<Vec<_>>());
    assert!(
        disk_usage(dir.path()) <= HEADER,
        "acknowledged segment freed, {} bytes left",
        disk_usage(dir.path())
    );
    // Intake resumes by itself, and the state clears.
    for i in pushed..pushed + 5 {
        q.try_push(chunk(i, 2)).unwrap();
    }
    let ss = q.spool_stats();
    assert!(!ss.disk_full && !ss.blocked, "{ss:?}");
    drop(q);
    // No false corruption report at the next start; everything unacknowledged is replayed.
    let (q, rec) = Spool::open(on_small_disk(dir.path(), cap, 1 << 20, WhenFull::Block)).unwrap();
    assert_eq!((rec.corrupt_segments, rec.corrupt_bytes), (0, 0));
    assert_eq!(drain(&q), (pushed..pushed + 5).collect::<Vec<_>>());
}

#[test]
fn a_segment_that_cannot_be_created_on_a_full_disk_is_retried_under_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: the disk fills on a rotation, whose new file cannot even take its magic.
    let (q, _) = Spool::open(on_small_disk(dir.path(), 4096, 1024, WhenFull::Block)).unwrap();
    let mut pushed = 0;
    while q.try_push(chunk(pushed, 2)).is_ok() {
        pushed += 1;
        assert!(pushed < 1000);
    }
    assert!(q.spool_stats().disk_full);
    assert!(disk_usage(dir.path()) <= 4096);
    // Acknowledge about half (two lines a chunk): sealed segments go, the retry succeeds.
    let p = q.peek(pushed as usize);
    q.commit(p.len());
    q.try_push(chunk(pushed, 2)).unwrap();
    assert!(!q.spool_stats().disk_full);
    assert_eq!(drain(&q), (p.len() as u32..=pushed).collect::<Vec<_>>());
    drop(q);
    let (_, rec) = Spool::open(on_small_disk(dir.path(), 4096, 1024, WhenFull::Block)).unwrap();
    assert_eq!((rec.corrupt_bytes, rec.chunks), (0, 0));
}

#[test]
fn a_spool_opens_on_a_full_disk_and_replays_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Spool::open(on_small_disk(dir.path(), 4096, 1 << 20, WhenFull::Block)).unwrap();
    let mut pushed = 0;
    while q.try_push(chunk(pushed, 2)).is_ok() {
        pushed += 1;
    }
    drop(q);
    // Restart with the disk still full: no room for a new segment, yet the spool opens and sends its backlog.
    let full = disk_usage(dir.path());
    let (q, rec) = Spool::open(on_small_disk(dir.path(), full, 1 << 20, WhenFull::Block)).unwrap();
    assert_eq!((rec.chunks, rec.corrupt_bytes), (pushed as u64, 0));
    assert!(q.spool_stats().disk_full);
    assert!(q.try_push(chunk(pushed, 2)).is_err());
    assert_eq!(drain(&q), (0..pushed).collect::<Vec<_>>());
    q.try_push(chunk(pushed, 2)).unwrap();
    assert_eq!(drain(&q), [pushed]);
}

#[test]
fn drop_oldest_on_a_full_disk_drops_the_oldest_unsent_segment_and_keeps_taking_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let (q, _) = Spool::open(on_small_disk(dir.path(), 4096, 1024, WhenFull::DropOldest)).unwrap();
    let mut refused = 0;
    for i in 0..200 {
        if q.try_push(chunk(i, 2)).is_err() {
            refused += 1;
            // The refused push freed a segment: its retry goes in.
            q.try_push(chunk(i, 2)).unwrap();
        }
    }
    assert!(refused > 0);
    assert!(disk_usage(dir.path()) <= 4096);
    let ss = q.spool_stats();
    assert!(ss.dropped_readings > 0);
    let got = drain(&q);
    assert_eq!(*got.last().unwrap(), 199, "the newest are kept");
    assert_eq!(got.len() as u64 * 4 + ss.dropped_readings, 200 * 4);
}

/// Randomized recovery (issue 13, fuzzing): a spool of several segments, then random damage (truncation, flipped
/// bytes, garbage appended, a cursor overwritten, a segment emptied), then open and drain. Never a panic; every
/// chunk that comes back is one that was written, intact, each at most once, and in write order. Iterations:
/// `CARETAKER_FUZZ_ITERS` (default 40, about 3 s: each open syncs files; the figures in docs/reliability.md came from longer runs).
#[test]
fn fuzz_recovery_from_damaged_segments_never_panics_and_returns_only_written_chunks() {
    let iters: u64 = std::env::var("CARETAKER_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let seed = std::env::var("CARETAKER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = fastrand::Rng::with_seed(seed);
    for iter in 0..iters {
        let dir = tempfile::tempdir().unwrap();
        let n = rng.u32(1..80);
        {
            let (q, _) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).unwrap();
            for i in 0..n {
                q.try_push(chunk(i, rng.u32(1..4))).unwrap();
            }
            // Acknowledge a prefix, so the cursor points somewhere inside.
            let p = q.peek(rng.usize(0..=n as usize));
            q.commit(p.len());
        }
        let mut files = segment_files(dir.path());
        files.push(dir.path().join(CURSOR_FILE));
        for _ in 0..rng.usize(1..4) {
            let f = &files[rng.usize(0..files.len())];
            let mut data = std::fs::read(f).unwrap_or_default();
            match rng.u8(0..5) {
                0 if !data.is_empty() => data.truncate(rng.usize(0..data.len())),
                1 if !data.is_empty() => {
                    let at = rng.usize(0..data.len());
                    data[at] ^= 1 << rng.u8(0..8);
                }
                2 => data.extend((0..rng.usize(1..64)).map(|_| rng.u8(..))),
                3 if data.len() >= 4 => {
                    // A plausible but wrong length field somewhere.
                    let at = rng.usize(0..data.len() - 3);
                    data[at..at + 4].copy_from_slice(&rng.u32(..).to_le_bytes());
                }
                _ => data.clear(),
            }
            std::fs::write(f, &data).unwrap();
        }
        let case = format!("iteration {iter} (seed {seed})");
        let (q, _) = Spool::open(opts(dir.path(), 1 << 20, WhenFull::Block)).expect(&case);
        let got = drain(&q);
        assert!(got.iter().all(|&i| i < n), "{case}: {got:?}");
        let mut seen = std::collections::HashSet::new();
        assert!(
            got.iter().all(|i| seen.insert(*i)),
            "{case}: duplicate in {got:?}"
        );
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{case}: out of order {got:?}"
        );
        // Still usable: a push after recovery comes back.
        q.try_push(chunk(n, 1)).unwrap();
        assert_eq!(drain(&q), [n], "{case}");
    }
}

#[test]
fn a_wholly_acknowledged_active_segment_is_replaced_once_it_holds_a_mebibyte() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = SpoolOptions::new(dir.path(), 1 << 30, WhenFull::Block, Duration::from_secs(1));
    o.segment_bytes = 64 << 20;
    let (q, _) = Spool::open(o).unwrap();
    let mut i = 0;
    // A writer that keeps up: every push acknowledged at once. Without the rule the one 64 MiB segment would
    // hold every acknowledged byte until sealed.
    while i < 6000 {
        q.try_push(chunk(i, 20)).unwrap();
        assert_eq!(drain(&q), [i]);
        i += 1;
    }
    let used = disk_usage(dir.path());
    assert!(
        used <= super::reader::RECLAIM_ACKED_BYTES + 2048,
        "{used} bytes of acknowledged records kept"
    );
    assert!(6000 * chunk(0, 20).body.len() as u64 > 2 * super::reader::RECLAIM_ACKED_BYTES);
}
