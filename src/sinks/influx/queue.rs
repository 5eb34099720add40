//! The queue between the encoder and the InfluxDB writer: chunks of encoded lines, oldest first.
//!
//! [`ChunkQueue`] is the seam where the durable spool plugs in. The contract, whatever the implementation:
//! - `try_push` accepts a chunk (for a durable queue: only once it is written to it) or hands it back when full;
//!   the pipeline acknowledges MQTT messages only after the push succeeded.
//! - `peek` returns the oldest chunks without removing them; `commit(n)` removes the first `n` once InfluxDB
//!   acknowledged (or definitively rejected) them. A crash between the two replays those chunks: at-least-once.
//! - `notify_data` wakes the writer after a push; `notify_space` wakes blocked producers after a commit.
//!
//! [`MemQueue`] keeps chunks in memory, bounded in bytes: what it holds is lost if the process dies.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// A run of encoded lines handed over in one piece.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub body: Vec<u8>,
    pub lines: u32,
    pub readings: u32,
    /// Unix milliseconds when it was encoded (survives restarts, unlike an `Instant`).
    pub created_ms: i64,
}

/// Size and age of what is queued.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueStats {
    pub chunks: u64,
    pub lines: u64,
    pub readings: u64,
    pub bytes: u64,
    pub oldest_ms: Option<i64>,
}

pub trait ChunkQueue: Send + Sync + 'static {
    /// Accepts a chunk, or returns it when the queue is full and the producer must wait.
    fn try_push(&self, chunk: Chunk) -> Result<(), Chunk>;
    /// The oldest chunks, up to `max_lines` lines (at least one chunk when any is queued). A queue may hand
    /// fewer: the spool caps a batch's bytes so that `drop_oldest` always has something it may drop.
    fn peek(&self, max_lines: usize) -> Vec<Arc<Chunk>>;
    /// Removes the `n` oldest chunks.
    fn commit(&self, n: usize);
    fn stats(&self) -> QueueStats;
    fn notify_data(&self) -> &Notify;
    fn notify_space(&self) -> &Notify;
    /// Whether queued data survives a crash (for logs and health).
    fn durable(&self) -> bool;
    /// Largest chunk the producer should build (it may still push a bigger one when a single batch is bigger).
    fn max_chunk_bytes(&self) -> usize {
        usize::MAX
    }
}

/// Pushes a chunk, waiting for space while the queue is full.
pub async fn push(queue: &dyn ChunkQueue, mut chunk: Chunk) {
    loop {
        let notified = queue.notify_space().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match queue.try_push(chunk) {
            Ok(()) => return,
            Err(c) => chunk = c,
        }
        notified.await;
    }
}

/// An in-memory queue bounded in bytes. A chunk larger than the bound is still accepted into an empty queue,
/// so one oversized batch cannot wedge the pipeline.
pub struct MemQueue {
    max_bytes: u64,
    state: Mutex<MemState>,
    data: Notify,
    space: Notify,
}

#[derive(Default)]
struct MemState {
    chunks: VecDeque<Arc<Chunk>>,
    stats: QueueStats,
}

impl MemQueue {
    pub fn new(max_bytes: u64) -> Self {
        MemQueue {
            max_bytes,
            state: Mutex::new(MemState::default()),
            data: Notify::new(),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ChunkQueue for MemQueue {
    fn try_push(&self, chunk: Chunk) -> Result<(), Chunk> {
        let mut s = self.lock();
        let len = chunk.body.len() as u64;
        if !s.chunks.is_empty() && s.stats.bytes + len > self.max_bytes {
            return Err(chunk);
        }
        s.stats.chunks += 1;
        s.stats.lines += chunk.lines as u64;
        s.stats.readings += chunk.readings as u64;
        s.stats.bytes += len;
        if s.stats.oldest_ms.is_none() {
            s.stats.oldest_ms = Some(chunk.created_ms);
        }
        s.chunks.push_back(Arc::new(chunk));
        drop(s);
        self.data.notify_one();
        Ok(())
    }

    fn peek(&self, max_lines: usize) -> Vec<Arc<Chunk>> {
        let s = self.lock();
        let mut out = Vec::new();
        let mut lines = 0usize;
        for c in &s.chunks {
            if !out.is_empty() && lines + c.lines as usize > max_lines {
                break;
            }
            lines += c.lines as usize;
            out.push(c.clone());
        }
        out
    }

    fn commit(&self, n: usize) {
        let mut s = self.lock();
        for _ in 0..n {
            if let Some(c) = s.chunks.pop_front() {
                s.stats.chunks -= 1;
                s.stats.lines -= c.lines as u64;
                s.stats.readings -= c.readings as u64;
                s.stats.bytes -= c.body.len() as u64;
            }
        }
        s.stats.oldest_ms = s.chunks.front().map(|c| c.created_ms);
        drop(s);
        self.space.notify_waiters();
    }

    fn stats(&self) -> QueueStats {
        self.lock().stats
    }
    fn notify_data(&self) -> &Notify {
        &self.data
    }
    fn notify_space(&self) -> &Notify {
        &self.space
    }
    fn durable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: usize, lines: u32) -> Chunk {
        Chunk {
            body: vec![b'x'; n],
            lines,
            readings: lines,
            created_ms: 0,
        }
    }

    #[test]
    fn peek_respects_line_budget_and_commit_frees_space() {
        let q = MemQueue::new(100);
        q.try_push(chunk(40, 3)).unwrap();
        q.try_push(chunk(40, 3)).unwrap();
        assert!(q.try_push(chunk(40, 3)).is_err(), "over the byte bound");
        assert_eq!(q.peek(5).len(), 1);
        assert_eq!(q.peek(6).len(), 2);
        assert_eq!(q.peek(1).len(), 1, "always at least one chunk");
        q.commit(1);
        assert_eq!(q.stats().bytes, 40);
        assert!(q.try_push(chunk(40, 3)).is_ok());
    }

    #[tokio::test]
    async fn push_waits_for_space() {
        let q = Arc::new(MemQueue::new(50));
        q.try_push(chunk(40, 1)).unwrap();
        let q2 = q.clone();
        let t = tokio::spawn(async move { push(&*q2, chunk(40, 1)).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!t.is_finished());
        q.commit(1);
        tokio::time::timeout(std::time::Duration::from_secs(2), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(q.stats().chunks, 1);
    }
}
