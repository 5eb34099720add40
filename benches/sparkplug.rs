//! Sparkplug B DDATA decode vs the JSON decode of the same readings (issue 16).
//!
//! 256 devices of one edge node, 10 metrics each (4 Float, 3 Double, 2 Int32, 1 Boolean), sent by alias with a
//! timestamp, as real edge nodes send DDATA after their BIRTH. The same readings as JSON messages
//! (`{"ts": ..., "p0": ..., ...}` on `campus/b1/<device>/telemetry`) through the JSON decoder and the same profile.
//! Both sides produce `Reading`s only (no line-protocol encoding: that cost is the same for both). The ratio
//! printed is Sparkplug messages/s ÷ JSON messages/s, measured back to back.

use caretaker::catalog::Catalog;
use caretaker::catalog::profile::parse_profile;
use caretaker::reading::Reading;
use caretaker::sources::mqtt::Decoder;
use caretaker::sources::mqtt::config::SparkplugGroup;
use caretaker::sources::mqtt::sparkplug::Sparkplug;
use caretaker::sources::mqtt::{Subscription, TopicTemplate};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const DEVICES: usize = 256;
const METRICS: usize = 10;
const T0: u64 = 1_767_607_200_000;

fn profile() -> String {
    let mut p = String::from(
        "schema: 1\nname: bench\ncategory: hvac\ntimestamp: { json: /ts, format: epoch_ms }\npoints:\n",
    );
    for i in 0..METRICS {
        let unit = if i == 9 { "bool" } else { "degC" };
        p.push_str(&format!(
            "  - {{ name: p{i}, unit: {unit}, kind: gauge, mqtt: {{ json: /p{i} }} }}\n"
        ));
    }
    p
}

fn catalog() -> caretaker::catalog::SharedCatalog {
    let mut profiles = BTreeMap::new();
    profiles.insert(
        "bench".to_string(),
        Arc::new(parse_profile(Path::new("bench.yaml"), &profile()).unwrap()),
    );
    Catalog::new("bench-site", profiles).shared()
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Datatype and value of metric `m` of device `d`.
fn metric_value(d: usize, m: usize) -> (u32, f64) {
    let v = 20.0 + ((d * 7 + m * 3) % 100) as f64 / 4.0;
    match m {
        0..=3 => (9, v),            // Float
        4..=6 => (10, v + 0.125),   // Double
        7 | 8 => (3, -(v.round())), // Int32 (negative: sign handling)
        _ => (11, (d % 2) as f64),  // Boolean
    }
}

/// One Sparkplug metric: name (BIRTH) or alias only (DATA), timestamp, datatype, value.
fn metric(out: &mut Vec<u8>, name: Option<&str>, alias: u64, ts: u64, dt: u32, v: f64) {
    let mut m = Vec::new();
    if let Some(n) = name {
        m.push(0x0a);
        varint(&mut m, n.len() as u64);
        m.extend_from_slice(n.as_bytes());
    }
    m.push(0x10);
    varint(&mut m, alias);
    m.push(0x18);
    varint(&mut m, ts);
    m.push(0x20);
    varint(&mut m, u64::from(dt));
    match dt {
        9 => {
            m.push(0x65);
            m.extend_from_slice(&(v as f32).to_le_bytes());
        }
        10 => {
            m.push(0x69);
            m.extend_from_slice(&v.to_le_bytes());
        }
        3 => {
            m.push(0x50);
            varint(&mut m, u64::from(v as i32 as u32));
        }
        _ => {
            m.push(0x70);
            varint(&mut m, v as u64);
        }
    }
    out.push(0x12);
    varint(out, m.len() as u64);
    out.extend_from_slice(&m);
}

fn payload(d: usize, seq: u64, birth: bool) -> Vec<u8> {
    let ts = T0 + d as u64;
    let mut p = vec![0x08];
    varint(&mut p, ts);
    for m in 0..METRICS {
        let (dt, v) = metric_value(d, m);
        let name = format!("p{m}");
        let alias = (d * METRICS + m) as u64;
        metric(&mut p, birth.then_some(name.as_str()), alias, ts, dt, v);
    }
    p.push(0x18);
    varint(&mut p, seq);
    p
}

/// A Sparkplug source past its NBIRTH and every DBIRTH, and one pass of DDATA (seq continuing mod 256).
fn sparkplug() -> (Sparkplug, Vec<(String, Vec<u8>)>) {
    let groups = vec![SparkplugGroup {
        group: "plant".into(),
        profile: "bench".into(),
        index: 0,
    }];
    let mut sp = Sparkplug::new(groups, catalog());
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    let mut nbirth = vec![0x08];
    varint(&mut nbirth, T0);
    nbirth.extend_from_slice(&[0x18, 0]);
    sp.handle(
        "spBv1.0/plant/NBIRTH/n1",
        &nbirth,
        0,
        &mut out,
        &mut problems,
    )
    .unwrap();
    for d in 0..DEVICES {
        let seq = (d as u64 + 1) % 256;
        sp.handle(
            &format!("spBv1.0/plant/DBIRTH/n1/d{d}"),
            &payload(d, seq, true),
            0,
            &mut out,
            &mut problems,
        )
        .unwrap();
    }
    // After 256 DBIRTHs the last seq was 0; DDATA d gets (d + 1) % 256, so passes chain without a gap.
    let msgs = (0..DEVICES)
        .map(|d| {
            (
                format!("spBv1.0/plant/DDATA/n1/d{d}"),
                payload(d, (d as u64 + 1) % 256, false),
            )
        })
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    (sp, msgs)
}

fn json() -> (Decoder, Vec<(String, Vec<u8>)>) {
    let sub = Subscription {
        topic: TopicTemplate::parse("campus/{building}/{device}/telemetry").unwrap(),
        profile: "bench".into(),
        index: 0,
    };
    let msgs = (0..DEVICES)
        .map(|d| {
            let mut body = format!("{{\"ts\":{}", T0 + d as u64);
            for m in 0..METRICS {
                let (dt, v) = metric_value(d, m);
                match dt {
                    9 => body.push_str(&format!(",\"p{m}\":{}", v as f32)),
                    11 => body.push_str(&format!(",\"p{m}\":{}", v != 0.0)),
                    _ => body.push_str(&format!(",\"p{m}\":{v}")),
                }
            }
            body.push('}');
            (format!("campus/b1/d{d}/telemetry"), body.into_bytes())
        })
        .collect();
    (Decoder::new(vec![sub], catalog()), msgs)
}

fn sp_pass(sp: &mut Sparkplug, msgs: &[(String, Vec<u8>)], out: &mut Vec<Reading>) -> usize {
    let mut problems = Vec::new();
    out.clear();
    for (topic, body) in msgs {
        let rb = sp.handle(topic, body, 0, out, &mut problems).unwrap();
        debug_assert!(rb.is_none());
    }
    black_box(out.len())
}

fn json_pass(dec: &mut Decoder, msgs: &[(String, Vec<u8>)], out: &mut Vec<Reading>) -> usize {
    let mut problems = Vec::new();
    out.clear();
    for (topic, body) in msgs {
        dec.decode(topic, body, 0, out, &mut problems).unwrap();
    }
    black_box(out.len())
}

fn bench(c: &mut Criterion) {
    let (mut sp, sp_msgs) = sparkplug();
    let (mut dec, json_msgs) = json();
    let mut out = Vec::new();
    let n = sp_pass(&mut sp, &sp_msgs, &mut out);
    assert_eq!(n, DEVICES * METRICS, "every Sparkplug metric decodes");
    let sp_values: Vec<f64> = out.iter().map(|r| r.value).collect();
    assert_eq!(
        json_pass(&mut dec, &json_msgs, &mut out),
        n,
        "every JSON field decodes"
    );
    let json_values: Vec<f64> = out.iter().map(|r| r.value).collect();
    assert_eq!(sp_values, json_values, "the same readings both ways");

    let mut g = c.benchmark_group("sparkplug");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("Sparkplug B DDATA by alias (10 metrics/msg)", |b| {
        b.iter(|| sp_pass(&mut sp, &sp_msgs, &mut out))
    });
    g.bench_function("JSON, same readings (10 fields/msg)", |b| {
        b.iter(|| json_pass(&mut dec, &json_msgs, &mut out))
    });
    g.finish();

    if std::env::args().any(|a| a == "--bench") {
        // Best of 7 runs of ~0.2 s each, back to back: seconds per message.
        let time = |f: &mut dyn FnMut() -> usize| {
            let mut best = f64::MAX;
            for _ in 0..7 {
                let t = Instant::now();
                let mut k = 0;
                while t.elapsed().as_secs_f64() < 0.2 {
                    f();
                    k += DEVICES;
                }
                best = best.min(t.elapsed().as_secs_f64() / k as f64);
            }
            best
        };
        let sp_s = time(&mut || sp_pass(&mut sp, &sp_msgs, &mut out));
        let json_s = time(&mut || json_pass(&mut dec, &json_msgs, &mut out));
        let bytes = |m: &[(String, Vec<u8>)]| {
            m.iter().map(|(_, b)| b.len()).sum::<usize>() as f64 / m.len() as f64
        };
        println!(
            "sparkplug: {:.0} k msgs/s ({:.2} M readings/s, {:.0} B/msg); JSON: {:.0} k msgs/s ({:.2} M readings/s, \
             {:.0} B/msg); ratio sparkplug/json (msgs/s) = {:.2}",
            1e-3 / sp_s,
            1e-6 * METRICS as f64 / sp_s,
            bytes(&sp_msgs),
            1e-3 / json_s,
            1e-6 * METRICS as f64 / json_s,
            bytes(&json_msgs),
            json_s / sp_s
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
