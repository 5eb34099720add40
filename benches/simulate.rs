//! The simulator's per-message work: building an MQTT payload from a profile's bindings (model value lookup,
//! unit conversion, inverse scale, JSON pointer layout, serialisation) and rewriting a Modbus register bank from
//! a profile's register map (value lookup, type and word-order encoding).
//!
//! References measured in the same run: serialising an already-built `serde_json::Value` of the same payload
//! (the floor for any JSON publisher), and filling a `HashMap<u16, u16>` with the same number of precomputed
//! registers (the floor for any register bank). The printed ratios say what the generic, profile-driven encoding
//! costs on top of those floors; the absolute figures say how many simulated devices one core can drive.

use caretaker::catalog::profile::{load_dirs, parse_profile};
use caretaker::demo::simulate::encode::mqtt_payload;
use caretaker::demo::simulate::modbus::Bank;
use caretaker::demo::simulate::model::{Env, Model};
use caretaker::demo::simulate::site::ModelKind;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A three-phase meter map in the shape of the Eastron SDM630's (FLOAT32 input registers, two per value).
fn meter_profile() -> caretaker::catalog::Profile {
    let names = [
        "voltage_l1",
        "voltage_l2",
        "voltage_l3",
        "current_l1",
        "current_l2",
        "current_l3",
        "power_l1",
        "power_l2",
        "power_l3",
        "power_factor_l1",
        "power_factor_l2",
        "power_factor_l3",
        "power_total",
        "apparent_power_total",
        "reactive_power_total",
        "power_factor_total",
        "frequency",
        "energy_import",
        "energy_total",
        "current_neutral",
    ];
    let units = |n: &str| match n {
        n if n.starts_with("voltage") => "V",
        n if n.starts_with("current") => "A",
        n if n.starts_with("power_factor") => "pf",
        "apparent_power_total" => "VA",
        "reactive_power_total" => "var",
        n if n.starts_with("power") => "W",
        "frequency" => "Hz",
        _ => "kWh",
    };
    let mut y = String::from("schema: 1\nname: bench-meter\ncategory: electricity\npoints:\n");
    for (i, n) in names.iter().enumerate() {
        let kind = if units(n) == "kWh" {
            "counter"
        } else {
            "gauge"
        };
        y.push_str(&format!(
            "  - {{ name: {n}, unit: {}, kind: {kind}, modbus: {{ table: input, address: {}, type: f32 }} }}\n",
            units(n),
            i * 2
        ));
    }
    parse_profile(Path::new("bench-meter.yaml"), &y).expect("bench profile is valid")
}

fn env() -> Env {
    Env {
        hour: 10.0,
        weekday: 2,
        outdoor: 4.0,
        dt: 60.0,
    }
}

fn bench(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("device_profiles");
    let (profiles, errs) = load_dirs(&[dir]);
    assert!(errs.is_empty(), "shipped profiles must load: {errs:?}");
    let room_profile = profiles["generic-room-sensor"].clone();
    let mut room = Model::new(ModelKind::Room, 1.0, 1);
    room.step(&env(), &Default::default());
    let payload = mqtt_payload(&room_profile, &room, 1_768_294_800_000_000_000).unwrap();
    let prebuilt: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(prebuilt.as_object().unwrap().len(), 6, "5 points and ts");

    let meter_profile = meter_profile();
    let mut meter = Model::new(ModelKind::Meter, 1.0, 2);
    meter.step(&env(), &Default::default());
    let bank = Bank::from_model(&meter_profile, &meter, "m", false);
    assert_eq!(bank.input.len(), 40, "20 FLOAT32 points");
    let precomputed: Vec<(u16, u16)> = bank.input.iter().map(|(a, v)| (*a, *v)).collect();

    let mut g = c.benchmark_group("simulate");
    g.throughput(Throughput::Elements(1));
    g.bench_function("mqtt payload (generic-room-sensor)", |b| {
        b.iter(|| mqtt_payload(&room_profile, black_box(&room), 1))
    });
    g.bench_function("reference: serialise a built JSON value", |b| {
        b.iter(|| serde_json::to_vec(black_box(&prebuilt)).unwrap())
    });
    g.bench_function("register bank (20-point FLOAT32 meter)", |b| {
        b.iter(|| Bank::from_model(&meter_profile, black_box(&meter), "m", false))
    });
    g.bench_function("reference: fill 40 precomputed registers", |b| {
        b.iter(|| {
            let mut m = HashMap::new();
            for (a, v) in black_box(&precomputed) {
                m.insert(*a, *v);
            }
            m
        })
    });
    g.bench_function("model step (one simulated minute, room)", |b| {
        b.iter(|| room.step(black_box(&env()), &Default::default()))
    });
    g.finish();

    // The ratios, measured back to back (best of 7 runs of ~0.2 s each), only in a real bench run.
    if std::env::args().any(|a| a == "--bench") {
        let time = |f: &mut dyn FnMut()| {
            let mut best = f64::MAX;
            for _ in 0..7 {
                let t = Instant::now();
                let mut n = 0u64;
                while t.elapsed().as_secs_f64() < 0.2 {
                    for _ in 0..100 {
                        f();
                    }
                    n += 100;
                }
                best = best.min(t.elapsed().as_secs_f64() / n as f64);
            }
            best
        };
        let payload_s = time(&mut || {
            black_box(mqtt_payload(&room_profile, &room, 1));
        });
        let json_s = time(&mut || {
            black_box(serde_json::to_vec(&prebuilt).unwrap());
        });
        let bank_s = time(&mut || {
            black_box(Bank::from_model(&meter_profile, &meter, "m", false));
        });
        let fill_s = time(&mut || {
            let mut m = HashMap::new();
            for (a, v) in &precomputed {
                m.insert(*a, *v);
            }
            black_box(m);
        });
        let step_s = time(&mut || room.step(&env(), &Default::default()));
        println!(
            "simulate: MQTT payload {:.0} k msgs/s vs reference JSON serialise {:.0} k/s (ratio reference/ours = {:.2}); \
             register bank {:.0} k banks/s vs reference fill {:.0} k/s (ratio = {:.2}); model step {:.1} M/s; \
             encoding + physics for ~{:.0} k MQTT devices publishing once a minute fit on one core",
            1e-3 / payload_s,
            1e-3 / json_s,
            json_s / payload_s,
            1e-3 / bank_s,
            1e-3 / fill_s,
            fill_s / bank_s,
            1e-6 / step_s,
            60.0 * 1e-3 / (payload_s + step_s)
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
