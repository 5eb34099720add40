//! Decode + encode per reading: an MQTT payload through a shipped profile into InfluxDB line protocol.
//!
//! Reference measured in the same run: parsing the same payload into a `serde_json::Value` and doing nothing
//! else. The printed ratio says how much Caretaker's whole per-message work (topic → device, JSON pointers,
//! scale/range checks, line-protocol encoding) costs relative to merely parsing the JSON.
//! Target (issue 2): over 2 million readings/s on one core.

use caretaker::catalog::Catalog;
use caretaker::catalog::profile::load_dirs;
use caretaker::reading::Reading;
use caretaker::sinks::influx::encode::Encoder;
use caretaker::sources::mqtt::Decoder;
use caretaker::sources::mqtt::{Subscription, TopicTemplate};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

const DEVICES: usize = 100;

fn payloads() -> Vec<(String, Vec<u8>)> {
    (0..DEVICES)
        .map(|i| {
            let topic = format!("tele/plug-{i}/SENSOR");
            let body = format!(
                r#"{{"Time":"2026-01-05T10:00:00","ENERGY":{{"TotalStartTime":"2025-01-01T00:00:00","Total":{:.3},"Yesterday":0.512,"Today":0.204,"Power":{},"ApparentPower":50,"ReactivePower":21,"Factor":0.90,"Voltage":231,"Current":0.196}}}}"#,
                1000.0 + i as f64 * 1.5,
                40 + i % 20
            );
            (topic, body.into_bytes())
        })
        .collect()
}

fn decoder() -> Decoder {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("device_profiles");
    let (profiles, errs) = load_dirs(&[dir]);
    assert!(errs.is_empty(), "shipped profiles must load: {errs:?}");
    let catalog = Catalog::new("bench-site", profiles).shared();
    let sub = Subscription {
        topic: TopicTemplate::parse("tele/{device}/SENSOR").unwrap(),
        profile: "tasmota-energy-plug".into(),
        index: 0,
    };
    Decoder::new(vec![sub], catalog)
}

/// One pass over all payloads: decode every message, encode every reading. Returns readings handled.
fn pass(
    dec: &mut Decoder,
    msgs: &[(String, Vec<u8>)],
    enc: &mut Encoder,
    out: &mut Vec<Reading>,
) -> usize {
    let mut problems = Vec::new();
    out.clear();
    for (i, (topic, body)) in msgs.iter().enumerate() {
        dec.decode(
            topic,
            body,
            1_767_607_200_000_000_000 + i as i64,
            out,
            &mut problems,
        )
        .unwrap();
    }
    let cat = dec.catalog().read().unwrap();
    enc.encode(&cat, out);
    let n = out.len();
    black_box(enc.take());
    n
}

fn reference(msgs: &[(String, Vec<u8>)]) -> usize {
    let mut n = 0;
    for (_, body) in msgs {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        n += black_box(v).as_object().map(|o| o.len()).unwrap_or(0);
    }
    n
}

fn bench(c: &mut Criterion) {
    let msgs = payloads();
    let mut dec = decoder();
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    let per_pass = pass(&mut dec, &msgs, &mut enc, &mut out);
    assert_eq!(
        per_pass,
        DEVICES * 7,
        "every point of every message decodes"
    );

    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(per_pass as u64));
    g.bench_function("decode+encode (tasmota, 7 readings/msg)", |b| {
        b.iter(|| pass(&mut dec, &msgs, &mut enc, &mut out))
    });
    g.bench_function("reference: serde_json::Value parse only", |b| {
        b.iter(|| reference(&msgs))
    });
    g.finish();

    // The ratio, measured back to back (best of 7 runs of ~0.2 s each), only in a real bench run.
    if std::env::args().any(|a| a == "--bench") {
        let time = |f: &mut dyn FnMut() -> usize| {
            let mut best = f64::MAX;
            for _ in 0..7 {
                let t = Instant::now();
                let mut n = 0;
                while t.elapsed().as_secs_f64() < 0.2 {
                    n += f();
                }
                best = best.min(t.elapsed().as_secs_f64() / n as f64);
            }
            best
        };
        let ours = time(&mut || pass(&mut dec, &msgs, &mut enc, &mut out)); // s per reading
        let msgs_per_pass = msgs.len() as f64;
        let reference_s = time(&mut || {
            reference(&msgs);
            msgs.len()
        }); // s per message
        let ours_per_msg = ours * per_pass as f64 / msgs_per_pass;
        println!(
            "ingest: {:.2} M readings/s ({:.0} k msgs/s); reference JSON parse only: {:.0} k msgs/s; \
             ratio caretaker/reference (msgs/s) = {:.2}",
            1e-6 / ours,
            1e-3 / ours_per_msg,
            1e-3 / reference_s,
            reference_s / ours_per_msg
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
