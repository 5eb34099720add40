//! Rule evaluation per reading, with 1,000 rules loaded over 1,000 devices of 10 points each.
//!
//! Three measurements in the same run:
//! - the engine with 1,000 rules (each rule applies to one device's point, as site rules written per device or
//!   per location do: most rules do not apply to a given reading);
//! - the engine with 1 rule (the same readings): evaluation cost must not depend on rules that do not apply;
//! - reference: a naive engine that scans every rule per reading (what indexing by point avoids).
//!
//! Target (issue 5): over 5 million reading evaluations per second on one core with 1,000 rules loaded.

use caretaker::catalog::Catalog;
use caretaker::catalog::profile::parse_profile;
use caretaker::reading::Reading;
use caretaker::rules::engine::{Engine, Options, Transition};
use caretaker::rules::{Condition, Context, RuleSet, parse_rules};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const DEVICES: usize = 1000;
const POINTS: usize = 10;
const RULES: usize = 1000;
const READINGS: usize = 100_000;

fn catalog() -> Catalog {
    let mut y = String::from("schema: 1\nname: bench-sensor\ncategory: hvac\npoints:\n");
    for p in 0..POINTS {
        y.push_str(&format!(
            "  - {{ name: p{p}, unit: degC, kind: gauge, mqtt: {{ json: /p{p} }} }}\n"
        ));
    }
    let p = parse_profile(Path::new("/b/bench-sensor.yaml"), &y).unwrap();
    let mut profiles = caretaker::catalog::Profiles::new();
    profiles.insert(p.name.clone(), Arc::new(p));
    let mut cat = Catalog::new("bench", profiles);
    for d in 0..DEVICES {
        let mut loc = BTreeMap::new();
        loc.insert("building".to_string(), format!("b{}", d % 10));
        cat.add_device(&format!("dev-{d}"), "bench-sensor", loc, true)
            .unwrap();
    }
    cat
}

/// `dense`: rules by location (10 buildings × 10 points × 10 variants), so every reading meets 10 rules.
fn rules(cat: &Catalog, n: usize, dense: bool) -> Arc<RuleSet> {
    let mut y = String::from("schema: 1\nrules:\n");
    for i in 0..n {
        let applies = if dense {
            format!("{{ location: {{ building: b{} }} }}", (i / POINTS) % 10)
        } else {
            format!("{{ device: dev-{} }}", i % DEVICES)
        };
        // Mixed conditions, each with a `for` and a hysteresis clear, on one device's point.
        let when = match i % 4 {
            0 => "{ above: 25, for: 5m }",
            1 => "{ below: 15, for: 5m }",
            2 => "{ outside: [10, 30], for: 1m }",
            _ => "{ rises_by: 3, within: 10m }",
        };
        let clear = if i % 4 < 2 {
            "    clear: { inside: [16, 24], for: 1m }\n"
        } else {
            ""
        };
        y.push_str(&format!(
            "  - name: r{i}\n    applies_to: {applies}\n    point: p{}\n    when: {when}\n{clear}    severity: minor\n",
            i % POINTS
        ));
    }
    let devices: BTreeMap<String, String> = cat
        .devices()
        .map(|(_, d)| (d.id.clone(), d.profile.name.clone()))
        .collect();
    let (rules, errs) = parse_rules(
        Path::new("/b/rules.yaml"),
        &y,
        &Context {
            profiles: &cat.profiles,
            devices: &devices,
            timezone: Some("UTC"),
        },
    );
    assert!(errs.is_empty(), "{errs:?}");
    Arc::new(RuleSet { rules })
}

/// Readings over every point of every device, values wandering through the thresholds.
fn readings(cat: &Catalog) -> Vec<Reading> {
    let n = cat.point_count() as u32;
    (0..READINGS)
        .map(|i| {
            let point = caretaker::catalog::PointId((i as u32 * 7919) % n);
            let value = 20.0 + 12.0 * ((i as f64) * 0.001).sin();
            Reading::good(
                point,
                value,
                1_767_225_600_000_000_000 + i as i64 * 1_000_000_000,
            )
        })
        .collect()
}

/// One pass over the readings, shifted past the previous pass in time (time only moves forward, as live).
fn pass(
    e: &mut Engine,
    cat: &Catalog,
    rs: &[Reading],
    out: &mut Vec<Transition>,
    epoch: &mut i64,
) -> usize {
    *epoch += READINGS as i64 * 1_000_000_000;
    for r in rs {
        e.evaluate(
            cat,
            &Reading {
                at: r.at + *epoch,
                ..*r
            },
            out,
        );
    }
    let n = out.len();
    out.clear();
    black_box(n);
    rs.len()
}

/// A naive engine: every rule checked against every reading (applies_to + point name + condition).
fn naive(rules: &RuleSet, cat: &Catalog, rs: &[Reading]) -> usize {
    let mut fired = 0usize;
    for r in rs {
        let (_, d, pd) = cat.point(r.point);
        for rule in &rules.rules {
            if rule.point.as_deref() == Some(pd.name.as_str())
                && rule.applies_to.matches(&d.id, &d.profile, &d.location)
            {
                let hit = match rule.when.cond {
                    Condition::Above(t) => r.value > t,
                    Condition::Below(t) => r.value < t,
                    Condition::Outside(a, b) => r.value < a || r.value > b,
                    _ => false,
                };
                fired += usize::from(hit);
            }
        }
    }
    black_box(fired);
    rs.len()
}

fn bench(c: &mut Criterion) {
    let cat = catalog();
    let rs = readings(&cat);
    let many = rules(&cat, RULES, false);
    let one = rules(&cat, 1, false);
    let dense = rules(&cat, RULES, true);
    let mut e_many = Engine::new(many.clone(), Options::default());
    let mut e_one = Engine::new(one, Options::default());
    let mut e_dense = Engine::new(dense, Options::default());
    e_many.bind(&cat);
    e_one.bind(&cat);
    e_dense.bind(&cat);
    assert_eq!(e_many.instance_count(), RULES);
    // 10 rules per (building, point), each building has 100 devices: 10 rules per reading.
    assert_eq!(e_dense.instance_count(), DEVICES * POINTS * 10);
    let mut out = Vec::new();
    let (mut t1, mut t2, mut t3) = (0i64, 0i64, 0i64);

    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(READINGS as u64));
    g.bench_function("engine, 1000 rules loaded", |b| {
        b.iter(|| pass(&mut e_many, &cat, &rs, &mut out, &mut t1))
    });
    g.bench_function(
        "engine, 1000 rules by location, 10 rules per reading",
        |b| b.iter(|| pass(&mut e_dense, &cat, &rs, &mut out, &mut t3)),
    );
    g.bench_function("engine, 1 rule loaded", |b| {
        b.iter(|| pass(&mut e_one, &cat, &rs, &mut out, &mut t2))
    });
    g.sample_size(10);
    g.bench_function("reference: naive scan of 1000 rules", |b| {
        b.iter(|| naive(&many, &cat, &rs[..10_000]))
    });
    g.finish();

    if std::env::args().any(|a| a == "--bench") {
        let time = |f: &mut dyn FnMut() -> usize| {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                let mut n = 0;
                while t.elapsed().as_secs_f64() < 0.2 {
                    n += f();
                }
                best = best.min(t.elapsed().as_secs_f64() / n as f64);
            }
            best
        };
        let m = time(&mut || pass(&mut e_many, &cat, &rs, &mut out, &mut t1));
        let o = time(&mut || pass(&mut e_one, &cat, &rs, &mut out, &mut t2));
        let d = time(&mut || pass(&mut e_dense, &cat, &rs, &mut out, &mut t3));
        let r = time(&mut || naive(&many, &cat, &rs[..10_000]));
        println!(
            "rules: {:.1} M readings/s with {RULES} rules (1 rule per device point), {:.1} M/s with 1 rule \
             (ratio = {:.2}); {:.1} M readings/s = {:.1} M rule evaluations/s with {RULES} rules by location \
             (10 per reading); reference naive scan of {RULES} rules: {:.3} M readings/s; ratio engine/naive = {:.0}x",
            1e-6 / m,
            1e-6 / o,
            o / m,
            1e-6 / d,
            10e-6 / d,
            1e-6 / r,
            r / m
        );
    }
}

/// Issue 19: a 10-point expression rule (one judgment per AHU per moment, after its 10 readings of that moment)
/// against a single-point threshold rule, on the same readings: 1,000 AHUs × 10 points, each moment one reading
/// of every point of every AHU. One evaluation = one judgment of the rule for one AHU.
fn expressions(c: &mut Criterion) {
    let cat = catalog();
    let devices: BTreeMap<String, String> = cat
        .devices()
        .map(|(_, d)| (d.id.clone(), d.profile.name.clone()))
        .collect();
    let load = |y: &str| {
        let (rules, errs) = parse_rules(
            Path::new("/b/ahu.yaml"),
            y,
            &Context {
                profiles: &cat.profiles,
                devices: &devices,
                timezone: Some("UTC"),
            },
        );
        assert!(errs.is_empty(), "{errs:?}");
        Arc::new(RuleSet { rules })
    };
    let expr = load(
        "schema: 1
params: { spread: 5 K }
inputs: { p0: p0, p1: p1, p2: p2, p3: p3, p4: p4, p5: p5, p6: p6, p7: p7, p8: p8, p9: p9 }
rules:
  - name: ahu-expr
    applies_to: { category: hvac }
    value: max(p0, p1, p2, p3, p4) - min(p5, p6, p7, p8, p9)
    when: { expr: \"max(p0, p1, p2, p3, p4) - min(p5, p6, p7, p8, p9) > spread && avg(p0, p1, p2, p3, p4, p5, p6, p7, p8, p9) < 30\", for: 5m }
    severity: minor
",
    );
    let single = load(
        "schema: 1
rules:
  - name: ahu-threshold
    applies_to: { category: hvac }
    point: p0
    when: { above: 25, for: 5m }
    severity: minor
",
    );
    const MOMENTS: usize = 10;
    let n = cat.point_count() as u32;
    let rs: Vec<Reading> = (0..MOMENTS)
        .flat_map(|m| {
            (0..n).map(move |p| {
                let v = 20.0 + 8.0 * ((p as f64) * 0.37 + m as f64 * 0.5).sin();
                Reading::good(
                    caretaker::catalog::PointId(p),
                    v,
                    1_767_225_600_000_000_000 + m as i64 * 60_000_000_000,
                )
            })
        })
        .collect();
    let evaluations = MOMENTS * DEVICES;
    let mut e_expr = Engine::new(expr, Options::default());
    let mut e_one = Engine::new(single, Options::default());
    e_expr.bind(&cat);
    e_one.bind(&cat);
    let mut out = Vec::new();
    let (mut t1, mut t2) = (0i64, 0i64);
    let run = |e: &mut Engine, epoch: &mut i64, out: &mut Vec<Transition>| {
        *epoch += MOMENTS as i64 * 60_000_000_000;
        for r in &rs {
            e.evaluate(
                &cat,
                &Reading {
                    at: r.at + *epoch,
                    ..*r
                },
                out,
            );
        }
        e.flush(out);
        black_box(out.len());
        out.clear();
        evaluations
    };
    let mut g = c.benchmark_group("rules-expression");
    g.throughput(Throughput::Elements(evaluations as u64));
    g.bench_function("10-point AHU expression", |b| {
        b.iter(|| run(&mut e_expr, &mut t1, &mut out))
    });
    g.bench_function("single-point threshold", |b| {
        b.iter(|| run(&mut e_one, &mut t2, &mut out))
    });
    g.finish();
    if std::env::args().any(|a| a == "--bench") {
        let time = |f: &mut dyn FnMut() -> usize| {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                let mut k = 0;
                while t.elapsed().as_secs_f64() < 0.2 {
                    k += f();
                }
                best = best.min(t.elapsed().as_secs_f64() / k as f64);
            }
            best
        };
        let x = time(&mut || run(&mut e_expr, &mut t1, &mut out));
        let o = time(&mut || run(&mut e_one, &mut t2, &mut out));
        println!(
            "rules-expression: {:.2} M evaluations/s of a 10-point AHU expression, {:.2} M evaluations/s of a \
             single-point threshold (same readings: 10 per evaluation, {:.1} M readings/s vs {:.1} M readings/s); \
             ratio threshold/expression = {:.2}",
            1e-6 / x,
            1e-6 / o,
            10e-6 / x,
            10e-6 / o,
            x / o
        );
    }
}

criterion_group!(benches, bench, expressions);
criterion_main!(benches);
