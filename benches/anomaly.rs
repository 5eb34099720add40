//! Anomaly detection throughput per point stream and memory per monitored point.
//!
//! Reference measured in the same run: a plain exponentially weighted mean/variance z-score detector (the
//! "windowed Gaussian" family, the cheapest detector worth the name). The printed ratio says what Caretaker's
//! combined detector (seasonal profile, shape-novelty prototypes, likelihood layers, refractory step) costs
//! relative to it. Targets (issue 6): at least 1 million readings/s per point stream; under 4 KiB per point.

use caretaker::anomaly::forecast::Trend;
use caretaker::anomaly::{Detector, Kind, Params};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Instant;

const N: usize = 100_000;

/// Five-minute readings: daily cycle, noise, a few spikes.
fn stream() -> Vec<(i64, f64)> {
    let mut rng = fastrand::Rng::with_seed(42);
    (0..N)
        .map(|i| {
            let t = 1_400_000_000 + i as i64 * 300;
            let ph = 2.0 * std::f64::consts::PI * (t % 86_400) as f64 / 86_400.0;
            let spike = if i % 5000 == 4999 { 40.0 } else { 0.0 };
            (t, 50.0 + 20.0 * ph.sin() + 3.0 * rng.f64() + spike)
        })
        .collect()
}

/// The reference: EW mean and variance, score = squashed |z|.
struct Gaussian {
    mean: f64,
    var: f64,
}

impl Gaussian {
    #[inline]
    fn observe(&mut self, x: f64) -> f64 {
        let d = x - self.mean;
        let z = d.abs() / self.var.sqrt().max(1e-9);
        self.mean += 0.01 * d;
        self.var = 0.99 * (self.var + 0.01 * d * d);
        z / (z + 3.0)
    }
}

fn ours(data: &[(i64, f64)]) -> f64 {
    let mut det = Detector::new(Kind::Combined, Params::default());
    let mut s = 0.0;
    for &(t, v) in data {
        s += det.observe(t, v).score;
    }
    s
}

fn reference(data: &[(i64, f64)]) -> f64 {
    let mut g = Gaussian {
        mean: data[0].1,
        var: 1.0,
    };
    let mut s = 0.0;
    for &(_, v) in data {
        s += g.observe(v);
    }
    s
}

fn bench(c: &mut Criterion) {
    let data = stream();
    let mut g = c.benchmark_group("anomaly");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.bench_function("combined detector, one point stream", |b| {
        b.iter(|| black_box(ours(black_box(&data))))
    });
    g.bench_function("reference: EW mean/variance z-score", |b| {
        b.iter(|| black_box(reference(black_box(&data))))
    });
    g.finish();

    if std::env::args().any(|a| a == "--bench") {
        let time = |f: &dyn Fn() -> f64| {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                black_box(f());
                best = best.min(t.elapsed().as_secs_f64());
            }
            best / N as f64
        };
        let o = time(&|| ours(&data));
        let r = time(&|| reference(&data));
        let det = Detector::new(Kind::Combined, Params::default());
        let json = serde_json::to_vec(&det).unwrap().len();
        let mut tr = Trend::new();
        for &(t, v) in &data {
            tr.observe(t, v);
        }
        let t = Instant::now();
        let c = tr.crossing_above(1000.0);
        let fit_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "anomaly: {:.2} M readings/s per point stream; reference EW z-score: {:.1} M readings/s; \
             ratio caretaker/reference (time per reading) = {:.1}; memory per point: {} bytes in RAM, \
             ~{} bytes of JSON state; trend fit over {} hourly buckets: {:.1} ms ({:?})",
            1e-6 / o,
            1e-6 / r,
            o / r,
            det.memory_bytes(),
            json,
            tr.len(),
            fit_ms,
            c.map(|c| c.slope_per_day)
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
