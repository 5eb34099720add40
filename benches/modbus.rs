//! Modbus: requests per poll cycle for every shipped profile (optimal planner vs one request per point vs
//! contiguous-only merging), and decode throughput.
//!
//! Plan figures are exact counts, printed before the criterion runs, with the wire time they cost on a 9600-baud
//! RTU line (8 data bits + start/stop = 10 bits a character; request 8 bytes, reply 5 + 2 per register, a
//! 3.5-character silence after each frame; the device's own turnaround comes on top, per request).
//!
//! Decode reference measured in the same run: copying the same registers' bits into `f32`s with
//! `f32::from_bits` and nothing else. The printed ratio is what Caretaker's whole per-point decode (word order,
//! type dispatch, scale/offset, valid range, building the `Reading`) costs relative to that floor.

use caretaker::catalog::modbus_binding::Table;
use caretaker::catalog::profile::load_dirs;
use caretaker::catalog::{PointId, Profile};
use caretaker::reading::Reading;
use caretaker::sources::modbus::decode::decode_registers;
use caretaker::sources::modbus::planner::{self, Barriers, CostModel, Item, Limits, Request};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn profiles() -> Vec<Arc<Profile>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("device_profiles");
    let (profiles, errs) = load_dirs(&[dir]);
    assert!(errs.is_empty(), "shipped profiles must load: {errs:?}");
    profiles.into_values().filter(|p| p.has_modbus()).collect()
}

fn items(p: &Profile) -> Vec<Item> {
    p.points
        .iter()
        .enumerate()
        .filter_map(|(i, pt)| {
            let b = pt.modbus.as_ref()?;
            Some(Item {
                key: i as u32,
                table: b.table,
                start: b.address,
                width: b.width(),
            })
        })
        .collect()
}

/// Milliseconds a plan keeps a 9600-baud RTU line busy.
fn rtu_ms(reqs: &[Request]) -> f64 {
    let char_ms = 10.0 / 9600.0 * 1000.0;
    reqs.iter()
        .map(|r| {
            let reply = if r.table.is_bits() {
                5.0 + (r.count as f64 / 8.0).ceil()
            } else {
                5.0 + 2.0 * r.count as f64
            };
            (8.0 + reply + 7.0) * char_ms
        })
        .sum()
}

fn print_plans() {
    println!("\nModbus requests per full poll cycle (all points due), shipped profiles:");
    println!(
        "{:<24} {:>6} {:>7} {:>11} {:>8}   {:>22}",
        "profile", "points", "naive", "contiguous", "optimal", "RTU 9600 ms (n/c/o)"
    );
    let (mut tn, mut tc, mut to) = (0, 0, 0);
    for p in profiles() {
        let it = items(&p);
        let limits = Limits::from_quirks(&p.modbus);
        let n = planner::naive(&it);
        let c = planner::contiguous(&it, &limits);
        let o = planner::plan(&it, &limits, &CostModel::default(), &Barriers::new());
        planner::validate(&it, &o, &limits).unwrap();
        println!(
            "{:<24} {:>6} {:>7} {:>11} {:>8}   {:>6.0} /{:>6.0} /{:>6.0}",
            p.name,
            it.len(),
            n.len(),
            c.len(),
            o.len(),
            rtu_ms(&n),
            rtu_ms(&c),
            rtu_ms(&o)
        );
        tn += n.len();
        tc += c.len();
        to += o.len();
    }
    println!("{:<24} {:>6} {:>7} {:>11} {:>8}", "total", "", tn, tc, to);
    println!(
        "optimal vs naive: {:.1}x fewer requests; vs contiguous-only: {:.1}x fewer\n",
        tn as f64 / to as f64,
        tc as f64 / to as f64
    );
}

/// A full SDM630 cycle: the registers of its optimal plan, decoded point by point into readings.
fn bench_decode(c: &mut Criterion) {
    print_plans();
    let sdm = profiles()
        .into_iter()
        .find(|p| p.name == "eastron-sdm630")
        .unwrap();
    let it = items(&sdm);
    let reqs = planner::plan(
        &it,
        &Limits::from_quirks(&sdm.modbus),
        &CostModel::default(),
        &Barriers::new(),
    );
    // Replies: each point's value in its valid range (or 1234.5) as a big-endian f32.
    let replies: Vec<Vec<u16>> = reqs
        .iter()
        .map(|r| {
            let mut words = vec![0u16; r.count as usize];
            for &i in &r.items {
                let pt = &sdm.points[it[i].key as usize];
                let v = pt
                    .valid_range
                    .map(|(lo, hi)| (lo + hi) / 2.0)
                    .unwrap_or(1234.5) as f32;
                let off = (it[i].start - r.start) as usize;
                words[off] = (v.to_bits() >> 16) as u16;
                words[off + 1] = v.to_bits() as u16;
            }
            words
        })
        .collect();
    let points: usize = reqs.iter().map(|r| r.items.len()).sum();
    let decode_cycle = |out: &mut Vec<Reading>| {
        out.clear();
        for (r, words) in reqs.iter().zip(&replies) {
            for &i in &r.items {
                let pt = &sdm.points[it[i].key as usize];
                let b = pt.modbus.as_ref().unwrap();
                let off = (it[i].start - r.start) as usize;
                if let Ok(raw) = decode_registers(b, &words[off..]) {
                    if let Ok(v) = pt.convert(raw) {
                        out.push(Reading::good(PointId(it[i].key), v, 0));
                    }
                }
            }
        }
        out.len()
    };
    let floor = |out: &mut Vec<f32>| {
        out.clear();
        for (r, words) in reqs.iter().zip(&replies) {
            for &i in &r.items {
                let off = (it[i].start - r.start) as usize;
                out.push(f32::from_bits(
                    (words[off] as u32) << 16 | words[off + 1] as u32,
                ));
            }
        }
        out.len()
    };
    let mut out = Vec::with_capacity(points);
    let mut fl = Vec::with_capacity(points);
    assert_eq!(decode_cycle(&mut out), points, "every SDM630 point decodes");

    // Same-run ratio, measured outside criterion so it prints as one line.
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this once, briefly.
    let rounds = if std::env::args().any(|a| a == "--bench") {
        200_000
    } else {
        1_000
    };
    let t = Instant::now();
    for _ in 0..rounds {
        black_box(decode_cycle(&mut out));
    }
    let ours = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..rounds {
        black_box(floor(&mut fl));
    }
    let reference = t.elapsed().as_secs_f64();
    let per_s = (rounds * points) as f64 / ours;
    println!(
        "decode: {:.1} M points/s ({:.0} ns per SDM630 cycle of {points} points); reference f32::from_bits copy: {:.1} M points/s; ratio {:.1}x the floor",
        per_s / 1e6,
        ours / rounds as f64 * 1e9,
        (rounds * points) as f64 / reference / 1e6,
        ours / reference
    );

    let mut g = c.benchmark_group("modbus");
    g.throughput(Throughput::Elements(points as u64));
    g.bench_function("decode_sdm630_cycle", |b| {
        b.iter(|| black_box(decode_cycle(&mut out)))
    });
    g.bench_function("reference_f32_from_bits", |b| {
        b.iter(|| black_box(floor(&mut fl)))
    });
    let limits = Limits::from_quirks(&sdm.modbus);
    g.throughput(Throughput::Elements(it.len() as u64));
    g.bench_function("plan_sdm630", |b| {
        b.iter(|| {
            black_box(planner::plan(
                black_box(&it),
                &limits,
                &CostModel::default(),
                &Barriers::new(),
            ))
        })
    });
    // A worst case for the planner: 1000 one-register points spread over a table.
    let many: Vec<Item> = (0..1000u32)
        .map(|k| Item {
            key: k,
            table: Table::Holding,
            start: (k * 3 + k % 7) as u16,
            width: 1 + (k % 2) as u16,
        })
        .collect();
    g.throughput(Throughput::Elements(many.len() as u64));
    g.bench_function("plan_1000_points", |b| {
        b.iter(|| {
            black_box(planner::plan(
                black_box(&many),
                &Limits::default(),
                &CostModel::default(),
                &Barriers::new(),
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
