//! The pipeline: one task that takes batches of readings from every source and routes them to the consumers
//! (InfluxDB encoder, rules, energy, ...). CPU work only; it never waits on the network.
//!
//! Group commit: the pipeline handles every batch that is ready, then hands the encoded lines to the InfluxDB
//! queue in one chunk, then completes the batches' acknowledgements (an MQTT PUBACK). Under load, chunks are big
//! and acks are batched; when idle, a single message is queued and acknowledged at once. A source's message is
//! acknowledged only after its readings are in the queue (for the spool: on disk).

use crate::catalog::{Catalog, SharedCatalog};
use crate::diag::Collector;
use crate::reading::Reading;
use crate::sinks::influx::encode::Encoder;
use crate::sinks::influx::queue::{self, Chunk, ChunkQueue};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The `[pipeline]` section, as written.
#[derive(Debug, serde::Deserialize)]
pub struct RawPipeline {
    #[serde(default)]
    channel_capacity: Option<usize>,
    #[serde(default)]
    shutdown_timeout: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Batches the sources may queue ahead of the pipeline.
    pub channel_capacity: usize,
    /// Bound on each step of the ordered shutdown.
    pub shutdown_timeout: Duration,
}

/// Validates `[pipeline]`; an absent section takes the defaults (1024 batches, 10 s).
pub fn validate(cx: &mut Collector<'_>, p: Option<&RawPipeline>) -> PipelineConfig {
    let channel_capacity = p.and_then(|p| p.channel_capacity).unwrap_or(1024);
    if channel_capacity == 0 {
        cx.err("pipeline.channel_capacity", "must be at least 1");
    }
    let shutdown_timeout = cx.duration(
        "pipeline.shutdown_timeout",
        &p.and_then(|p| p.shutdown_timeout.clone()),
        Duration::from_secs(10),
    );
    PipelineConfig {
        channel_capacity: channel_capacity.max(1),
        shutdown_timeout,
    }
}

/// Called once a batch is safely queued (e.g. sends the MQTT PUBACK).
pub struct Ack(Box<dyn FnOnce() + Send>);

impl Ack {
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        Ack(Box::new(f))
    }
    pub fn complete(self) {
        (self.0)()
    }
}

/// What sources send: readings plus what to do once they are safe.
pub struct Batch {
    pub readings: Vec<Reading>,
    pub ack: Option<Ack>,
}

impl Batch {
    pub fn new(readings: Vec<Reading>) -> Self {
        Batch {
            readings,
            ack: None,
        }
    }
}

/// A consumer of readings other than InfluxDB (rules, energy, anomaly). Runs on the pipeline task: keep it
/// synchronous and quick; hand slow work (SQLite, network) to a task of its own through a channel.
pub trait Stage: Send {
    fn name(&self) -> &'static str;
    fn process(&mut self, catalog: &Catalog, readings: &[Reading]);
    /// Called after each group of batches and at shutdown.
    fn flush(&mut self) {}
}

pub struct Pipeline {
    pub rx: mpsc::Receiver<Batch>,
    pub catalog: SharedCatalog,
    pub queue: Option<Arc<dyn ChunkQueue>>,
    pub stages: Vec<Box<dyn Stage>>,
    /// Most lines per chunk handed to the queue.
    pub chunk_lines: u32,
}

impl Pipeline {
    /// Runs until every sender is gone and everything received is queued.
    pub async fn run(mut self) {
        let mut encoder = Encoder::new();
        let mut acks: Vec<Ack> = Vec::new();
        let max_bytes = self
            .queue
            .as_ref()
            .map(|q| q.max_chunk_bytes())
            .unwrap_or(usize::MAX);
        while let Some(first) = self.rx.recv().await {
            self.handle(first, &mut encoder, &mut acks);
            while encoder.lines < self.chunk_lines && encoder.buf.len() < max_bytes {
                match self.rx.try_recv() {
                    Ok(b) => self.handle(b, &mut encoder, &mut acks),
                    Err(_) => break,
                }
            }
            for s in &mut self.stages {
                s.flush();
            }
            if let (Some(q), false) = (&self.queue, encoder.is_empty()) {
                let (body, lines, readings) = encoder.take();
                let chunk = Chunk {
                    body,
                    lines,
                    readings,
                    created_ms: crate::util::now_ns() / 1_000_000,
                };
                queue::push(&**q, chunk).await;
                metrics::counter!("caretaker_readings_queued_total").increment(readings as u64);
            }
            for a in acks.drain(..) {
                a.complete();
            }
        }
    }

    fn handle(&mut self, batch: Batch, encoder: &mut Encoder, acks: &mut Vec<Ack>) {
        {
            let cat = self.catalog.read().unwrap_or_else(|e| e.into_inner());
            if self.queue.is_some() {
                let skipped = encoder.encode(&cat, &batch.readings);
                if skipped.non_finite > 0 {
                    metrics::counter!("caretaker_readings_dropped_total", "stage" => "influx", "reason" => "non_finite")
                        .increment(skipped.non_finite);
                }
            }
            for s in &mut self.stages {
                s.process(&cat, &batch.readings);
            }
        }
        if let Some(a) = batch.ack {
            acks.push(a);
        }
    }
}
