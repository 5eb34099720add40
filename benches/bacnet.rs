//! BACnet: requests per poll for the shipped BACnet profiles and a 200-object device (ReadPropertyMultiple batches
//! at common max APDU sizes vs one ReadProperty per property), and the codec's encode/decode rate.
//!
//! Request counts are exact (the poller's own planner), printed before the criterion runs. The codec figures are
//! criterion's: encoding a ReadPropertyMultiple request for a 20-object batch, decoding its answer (20 objects,
//! present-value and status-flags each, as a device sends it), and decoding one COV notification.

use caretaker::catalog::Profile;
use caretaker::catalog::bacnet_binding::ObjectType;
use caretaker::catalog::profile::{load_dirs, parse_profile};
use caretaker::sources::bacnet::codec::{self, PropertyResult, StatusFlags, Value, prop};
use caretaker::sources::bacnet::poll::{objects_of, plan_rpm, requests_per_poll};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

fn shipped() -> Vec<Arc<Profile>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("device_profiles");
    let (profiles, errs) = load_dirs(&[dir]);
    assert!(errs.is_empty(), "shipped profiles must load: {errs:?}");
    profiles.into_values().filter(|p| p.has_bacnet()).collect()
}

/// A BMS-sized controller: 200 analog values.
fn big() -> Profile {
    let mut text = "schema: 1\nname: big\ncategory: hvac\npoints:\n".to_string();
    for i in 0..200 {
        text.push_str(&format!(
            "  - {{ name: p{i}, unit: degC, kind: gauge, bacnet: {{ object: \"analog-value:{i}\" }} }}\n"
        ));
    }
    parse_profile(&PathBuf::from("/b/big.yaml"), &text).unwrap()
}

fn print_plans() {
    println!(
        "requests per poll: ReadPropertyMultiple (max APDU 1476 / 480 / 206, no segmentation) vs one ReadProperty per property"
    );
    let mut all: Vec<Arc<Profile>> = shipped();
    all.push(Arc::new(big()));
    for p in &all {
        let (r1476, single) = requests_per_poll(p, 1476, false);
        let (r480, _) = requests_per_poll(p, 480, false);
        let (r206, _) = requests_per_poll(p, 206, false);
        println!(
            "  {:<22} {:>3} objects: RPM {r1476} / {r480} / {r206}, ReadProperty {single}: {:.1}x fewer at 1476, {:.1}x at 480",
            p.name,
            objects_of(p).len(),
            single as f64 / r1476 as f64,
            single as f64 / r480 as f64,
        );
    }
}

fn rpm_answer(n: usize) -> Vec<u8> {
    let mut results = Vec::new();
    for i in 0..n as u32 {
        let object = (ObjectType::AnalogInput.code(), i);
        results.push(PropertyResult {
            object,
            property: prop::PRESENT_VALUE,
            index: None,
            result: Ok(vec![Value::Real(20.0 + i as f32 / 10.0)]),
        });
        results.push(PropertyResult {
            object,
            property: prop::STATUS_FLAGS,
            index: None,
            result: Ok(vec![StatusFlags::default().to_value()]),
        });
    }
    let mut out = Vec::new();
    codec::put_read_property_multiple_ack(&mut out, &results);
    out
}

fn bench(c: &mut Criterion) {
    print_plans();
    let objects = objects_of(&big());
    let batch = &plan_rpm(&objects, 1476, false)[0];
    println!(
        "first RPM batch of the 200-object device at 1476 bytes: {} objects",
        batch.len()
    );
    let specs: Vec<((u16, u32), Vec<u32>)> = (0..20u32)
        .map(|i| {
            (
                (ObjectType::AnalogInput.code(), i),
                vec![prop::PRESENT_VALUE, prop::STATUS_FLAGS],
            )
        })
        .collect();
    let mut g = c.benchmark_group("bacnet");
    g.throughput(Throughput::Elements(20));
    let mut buf = Vec::with_capacity(512);
    g.bench_function("encode RPM request, 20 objects", |b| {
        b.iter(|| {
            buf.clear();
            codec::begin(&mut buf, false, true);
            codec::put_confirmed_header(&mut buf, 1, codec::SERVICE_READ_PROPERTY_MULTIPLE);
            codec::put_read_property_multiple(&mut buf, black_box(&specs));
            codec::finish(&mut buf);
            black_box(buf.len())
        })
    });
    let answer = rpm_answer(20);
    println!("RPM answer for 20 objects: {} bytes", answer.len());
    g.bench_function("decode RPM answer, 20 objects", |b| {
        b.iter(|| {
            let r = codec::decode_read_property_multiple_ack(black_box(&answer)).unwrap();
            black_box(r.len())
        })
    });
    let n = codec::CovNotification {
        process_id: 1,
        device: (ObjectType::Device.code(), 1205),
        object: (ObjectType::AnalogInput.code(), 1),
        time_remaining: 250,
        values: vec![
            (prop::PRESENT_VALUE, vec![Value::Real(21.5)]),
            (prop::STATUS_FLAGS, vec![StatusFlags::default().to_value()]),
        ],
    };
    let mut cov = Vec::new();
    codec::put_cov_notification(&mut cov, &n);
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode COV notification", |b| {
        b.iter(|| black_box(codec::decode_cov_notification(black_box(&cov)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
