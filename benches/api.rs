//! The HTTP API's figures (issue 12), measured in one run against references in the same run:
//!
//! 1. Latency of `GET /api/v1/work-orders` (first page of 100, and a filtered page) with 10,000 work orders in
//!    the store, over real HTTP on loopback to the real router (p50/p99 of 300 requests each); reference: the
//!    same 10,000 through `caretaker work-orders list --format json` (a process per call, as a script would run
//!    it) and the in-process `Store::list` + JSON of all of them.
//! 2. Memory added by the live history at 10,000 points: process RSS before and after a day of readings (every
//!    point, every 5 minutes) went through `LiveState`, and the structure's own byte count.
//!
//! `cargo bench --bench api` (prints the figures; no criterion statistics).

use caretaker::api::live::LiveState;
use caretaker::api::{ApiParts, ApiState};
use caretaker::catalog::Catalog;
use caretaker::catalog::profile::parse_profile;
use caretaker::reading::Reading;
use caretaker::rules::alarm::{AlarmEvent, AlarmKind, Resolve, Severity};
use caretaker::work_orders::store::Store;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORK_ORDERS: usize = 10_000;
const DEVICES: usize = 1000;
const POINTS: usize = 10;

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
        let loc = BTreeMap::from([("building".to_string(), format!("b{}", d % 10))]);
        cat.add_device(&format!("dev-{d}"), "bench-sensor", loc, true)
            .unwrap();
    }
    cat
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn fill(state: &Path) {
    let mut s = Store::open(
        &caretaker::work_orders::store::path_in(state),
        Some("bench"),
    )
    .unwrap();
    let t0 = 1_767_225_600_000i64;
    for i in 0..WORK_ORDERS {
        let ev = AlarmEvent {
            kind: AlarmKind::Raised,
            rule: format!("rule-{}", i % 20),
            device: format!("dev-{}", i % DEVICES),
            point: format!("p{}", (i / DEVICES) % POINTS),
            severity: [
                Severity::Warning,
                Severity::Minor,
                Severity::Major,
                Severity::Critical,
            ][i % 4],
            title: format!("Work order {i} on dev-{}", i % DEVICES),
            team: Some(["hvac", "power", "water"][i % 3].into()),
            procedure: Some("1. Look. 2. Fix. 3. Note what was done.".into()),
            resolve: Resolve::Manual,
            due_within_ms: Some(4 * 3_600_000),
            unit: "degC".into(),
            value: 30.0,
            peak: 31.0,
            at_ms: t0 + i as i64 * 60_000,
            evidence: vec![
                (t0 + i as i64 * 60_000 - 60_000, 29.0),
                (t0 + i as i64 * 60_000, 30.0),
            ],
        };
        s.apply(&ev).unwrap();
    }
}

async fn latency(client: &reqwest::Client, url: &str, token: &str, n: usize) -> (f64, f64, usize) {
    let mut ms = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = client.get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        bytes = r.bytes().await.unwrap().len();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    (pct(&mut ms, 0.5), pct(&mut ms, 0.99), bytes)
}

fn main() {
    caretaker::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let t = Instant::now();
    fill(&state);
    println!(
        "store: {WORK_ORDERS} work orders written in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Memory of the live history at 10,000 points, before the server exists (nothing else allocates).
    let cat = catalog();
    let before = rss_kb();
    let live = LiveState::new(Duration::from_secs(900));
    let now_ns = caretaker::util::now_ns();
    let start = now_ns - 24 * 3600 * 1_000_000_000;
    let mut batch = Vec::with_capacity(DEVICES * POINTS);
    for step in 0..288i64 {
        batch.clear();
        let at = start + step * 300 * 1_000_000_000;
        for p in 0..(DEVICES * POINTS) as u32 {
            batch.push(Reading::good(
                caretaker::catalog::PointId(p),
                20.0 + (step % 7) as f64,
                at,
            ));
        }
        live.record(&cat, &batch);
    }
    drop(batch);
    let after = rss_kb();
    println!(
        "live history, {} points x 288 buckets: RSS +{:.1} MB (process {:.1} -> {:.1} MB); structure {:.1} MB",
        DEVICES * POINTS,
        (after.saturating_sub(before)) as f64 / 1024.0,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        live.heap_bytes() as f64 / 1_048_576.0
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let token_file = dir.path().join("t");
        std::fs::write(&token_file, "bench-token-0123456789").unwrap();
        let mut http = caretaker::api::config::HttpConfig::plain("127.0.0.1:0".parse().unwrap());
        http.tokens = vec![caretaker::api::config::Token {
            name: "bench".into(),
            role: caretaker::api::config::Role::Viewer,
            secret: b"bench-token-0123456789".to_vec(),
        }];
        let stop = tokio_util::sync::CancellationToken::new();
        let st = ApiState::new(ApiParts {
            http,
            site: "bench".into(),
            tz: jiff::tz::TimeZone::UTC,
            state_dir: state.clone(),
            catalog: cat.shared(),
            live: live.clone(),
            notify: Default::default(),
            work_orders: Default::default(),
            energy: None,
            modbus_devices: Default::default(),
            shutdown: stop.clone(),
        });
        let addr = caretaker::api::serve(
            st,
            caretaker::telemetry::Health::new(),
            caretaker::telemetry::install_metrics(),
            stop.clone(),
        )
        .await
        .unwrap();
        let client = reqwest::Client::new();
        let base = format!("http://{addr}/api/v1/work-orders");
        let _ = latency(&client, &base, "bench-token-0123456789", 20).await; // warm-up
        let (p50, p99, bytes) = latency(&client, &base, "bench-token-0123456789", 300).await;
        println!("GET /api/v1/work-orders (100 per page): p50 {p50:.2} ms, p99 {p99:.2} ms, {bytes} bytes");
        let url = format!("{base}?status=open&team=hvac&building=b3&limit=100");
        let (f50, f99, fbytes) = latency(&client, &url, "bench-token-0123456789", 300).await;
        println!("GET /api/v1/work-orders?status&team&building (filtered): p50 {f50:.2} ms, p99 {f99:.2} ms, {fbytes} bytes");
        let url = format!("{base}?limit=1000");
        let (k50, k99, kbytes) = latency(&client, &url, "bench-token-0123456789", 50).await;
        println!("GET /api/v1/work-orders?limit=1000: p50 {k50:.2} ms, p99 {k99:.2} ms, {kbytes} bytes");
        stop.cancel();
    });

    // References: the CLI's JSON list of all 10,000 (a process per call), and the same in-process.
    let mut cli = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_caretaker"))
            .args([
                "work-orders",
                "list",
                "--state",
                state.to_str().unwrap(),
                "--format",
                "json",
            ])
            .output()
            .unwrap();
        assert!(o.status.success());
        cli.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let s = Store::open(&caretaker::work_orders::store::path_in(&state), None).unwrap();
    let mut inproc = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let v: Vec<_> = s.list(None).unwrap().iter().map(|w| w.to_json()).collect();
        std::hint::black_box(serde_json::to_string_pretty(&v).unwrap());
        inproc.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "reference: `caretaker work-orders list --format json` (all {WORK_ORDERS}): median {:.0} ms; in-process list + JSON: median {:.1} ms",
        pct(&mut cli, 0.5),
        pct(&mut inproc, 0.5)
    );
}
