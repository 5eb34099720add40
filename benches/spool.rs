//! The spool's two data-moving paths, each against a reference measured in the same run.
//!
//! 1. Append: `Spool::try_push` of 1,000-line chunks (checksum, header, `pwrite`, in-memory cache, periodic
//!    acknowledgement so segments are deleted) against `write_all` of the same bytes to a plain file.
//! 2. Drain (only with `--bench`, it needs Debian's `influxd`): a spool holding 200,000 lines drained by the
//!    real `WriterLoop` + `HttpWriter` into a real influxd, against posting the same pre-encoded batches with a
//!    plain reqwest client, one after the other. Target (issue 4): drain >= 0.8 of the plain client.

use caretaker::sinks::influx::config::{InfluxApi, InfluxConfig};
use caretaker::sinks::influx::queue::{Chunk, ChunkQueue};
use caretaker::sinks::influx::spool::{Spool, SpoolOptions, WhenFull};
use caretaker::sinks::influx::writer::HttpWriter;
use caretaker::sinks::influx::{WriterLoop, WriterSettings};
use caretaker::telemetry::Health;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LINES: usize = 1000;

/// One chunk of realistic line protocol: 1,000 lines of 2 readings, distinct series and timestamps.
fn body(batch: usize, lines: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(lines * 130);
    for l in 0..lines {
        let i = batch * lines + l;
        writeln!(
            b,
            "environment,site=bench\\ campus,building=b{},device=dev-{},profile=generic-room-sensor temperature={},humidity={} {}",
            i % 7,
            i % 500,
            15.0 + (i % 200) as f64 / 10.0,
            i % 97,
            1_767_225_600_000_000_000i64 + i as i64 * 1_000_000
        )
        .unwrap();
    }
    b
}

fn chunk(body: &[u8], lines: usize) -> Chunk {
    Chunk {
        body: body.to_vec(),
        lines: lines as u32,
        readings: 2 * lines as u32,
        created_ms: 0,
    }
}

fn open(dir: &Path) -> Arc<Spool> {
    Spool::open(SpoolOptions::new(
        dir,
        1 << 30,
        WhenFull::Block,
        Duration::from_secs(1),
    ))
    .unwrap()
    .0
}

fn bench(c: &mut Criterion) {
    let payload = body(0, LINES);
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir.path().join("spool"));
    let ref_path = dir.path().join("plain");
    let mut plain = std::fs::File::create(&ref_path).unwrap();
    let mut pushed = 0u64;
    let mut written = 0u64;

    let mut g = c.benchmark_group("spool");
    g.throughput(Throughput::Bytes(payload.len() as u64));
    g.bench_function(
        "append 1000-line chunk (checksum + pwrite, ack every 64)",
        |b| {
            b.iter(|| {
                spool.try_push(chunk(&payload, LINES)).unwrap();
                pushed += 1;
                if pushed % 64 == 0 {
                    let n = spool.peek(usize::MAX).len();
                    spool.commit(n);
                }
            })
        },
    );
    g.bench_function("reference: write_all to a plain file", |b| {
        b.iter(|| {
            let owned = payload.to_vec();
            plain.write_all(&owned).unwrap();
            written += 1;
            if written % 64 == 0 {
                plain.set_len(0).unwrap();
                plain = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&ref_path)
                    .unwrap();
            }
        })
    });
    g.finish();

    if std::env::args().any(|a| a == "--bench") {
        append_ratio(&payload, dir.path());
        drain_ratio();
    }
}

/// Best-of-5 append throughput, spool vs plain file, same bytes.
fn append_ratio(payload: &[u8], dir: &Path) {
    let n = 2000; // 2000 chunks = 2 M lines (~250 MB): well past several segments
    let mut best = (f64::MAX, f64::MAX, f64::MAX);
    for round in 0..5 {
        let sdir = dir.join(format!("append-{round}"));
        let spool = open(&sdir);
        let t = Instant::now();
        for i in 0..n {
            spool.try_push(chunk(payload, LINES)).unwrap();
            if i % 64 == 63 {
                let k = spool.peek(usize::MAX).len();
                spool.commit(k);
            }
        }
        let ours = t.elapsed().as_secs_f64();
        drop(spool);
        let sdir0 = dir.join(format!("append-sync0-{round}"));
        let strict = Spool::open(SpoolOptions::new(
            &sdir0,
            1 << 30,
            WhenFull::Block,
            Duration::ZERO,
        ))
        .unwrap()
        .0;
        let t = Instant::now();
        for i in 0..n / 10 {
            strict.try_push(chunk(payload, LINES)).unwrap();
            if i % 64 == 63 {
                let k = strict.peek(usize::MAX).len();
                strict.commit(k);
            }
        }
        let strict_s = t.elapsed().as_secs_f64() * 10.0;
        drop(strict);
        let p = dir.join(format!("plain-{round}"));
        let mut f = std::fs::File::create(&p).unwrap();
        let t = Instant::now();
        for i in 0..n {
            // An owned copy, as the pipeline hands the spool an owned chunk.
            let owned = payload.to_vec();
            f.write_all(&owned).unwrap();
            if i % 64 == 63 {
                f.set_len(0).unwrap();
                f = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&p)
                    .unwrap();
            }
        }
        let reference = t.elapsed().as_secs_f64();
        best = (
            best.0.min(ours),
            best.1.min(reference),
            best.2.min(strict_s),
        );
        let _ = std::fs::remove_dir_all(&sdir);
        let _ = std::fs::remove_dir_all(&sdir0);
    }
    let bytes = (payload.len() * n) as f64;
    let readings = (2 * LINES * n) as f64;
    println!(
        "spool append: {:.0} MB/s, {:.1} M readings/s (fsync_interval 1s); fsync_interval 0: {:.1} M readings/s; \
         reference write_all: {:.0} MB/s; ratio spool/reference = {:.2}",
        bytes / best.0 / 1e6,
        readings / best.0 / 1e6,
        readings / best.2 / 1e6,
        bytes / best.1 / 1e6,
        best.1 / best.0
    );
}

/// A throwaway influxd 1.x on free ports; killed on drop.
struct Influxd {
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Influxd {
    fn start() -> Option<Influxd> {
        let bin = ["/usr/bin/influxd", "/usr/sbin/influxd"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (port, rpc) = (free_port(), free_port());
        let conf = d.join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n[monitor]\n  store-enabled = false\n[continuous_queries]\n  enabled = false\n",
                d = d.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("influxd.log")).unwrap();
        let child = std::process::Command::new(bin)
            .arg("run")
            .arg("-config")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .ok()?;
        let i = Influxd {
            port,
            child,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "influxd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
        Some(i)
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn influx_config(url: &str, db: &str, batch: usize) -> InfluxConfig {
    InfluxConfig {
        tls: Default::default(),
        url: url.into(),
        api: InfluxApi::V1 {
            database: db.into(),
            retention_policy: None,
            username: None,
            password: None,
        },
        batch_size: batch,
        flush_interval: Duration::ZERO,
        timeout: Duration::from_secs(60),
        gzip: false,
        max_retry_backoff: Duration::from_secs(1),
        queue_max_bytes: 1 << 30,
        spool_max_bytes: 1 << 30,
        when_full: WhenFull::Block,
        fsync_interval: Duration::from_secs(1),
    }
}

fn drain_ratio() {
    let Some(influx) = Influxd::start() else {
        println!(
            "spool drain: influxd is not installed (scripts/test.sh installs it); drain ratio not measured"
        );
        return;
    };
    caretaker::tls::install_default_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        const BATCH: usize = 5000;
        const BATCHES: usize = 40;
        let mut best_ours = f64::MAX;
        let mut best_ref = f64::MAX;
        for round in 0..4 {
            // Fresh databases per round and side, so each side writes new series into an equally empty store.
            let (db_ref, db_ours) = (format!("ref{round}"), format!("ours{round}"));
            for db in [&db_ref, &db_ours] {
                client
                    .post(format!("{}/query", influx.url()))
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(format!("q=CREATE+DATABASE+{db}"))
                    .send()
                    .await
                    .unwrap();
            }
            // Different timestamps per round keep the rounds comparable (no overwrites).
            let bodies: Vec<Vec<u8>> = (0..BATCHES)
                .map(|b| body(round * BATCHES + b, BATCH))
                .collect();

            let url = format!("{}/write?db={db_ref}&precision=ns", influx.url());
            let reference = || async {
                let t = Instant::now();
                for b in &bodies {
                    let r = client.post(&url).body(b.clone()).send().await.unwrap();
                    assert_eq!(r.status().as_u16(), 204);
                }
                t.elapsed().as_secs_f64()
            };
            // Alternate which side goes first, so neither always meets a warmer server.
            if round % 2 == 0 {
                best_ref = best_ref.min(reference().await);
            }

            let dir = tempfile::tempdir().unwrap();
            let spool = open(dir.path());
            for b in &bodies {
                spool.try_push(chunk(b, BATCH)).unwrap();
            }
            let cfg = influx_config(&influx.url(), &db_ours, BATCH);
            let writer = HttpWriter::new(&cfg).unwrap();
            let health = Health::new();
            let wl = WriterLoop::new(
                spool.clone(),
                writer,
                WriterSettings {
                    batch_size: BATCH,
                    flush_interval: Duration::ZERO,
                    max_retry_backoff: Duration::from_secs(1),
                },
                health.clone(),
            );
            let drain = tokio_util::sync::CancellationToken::new();
            drain.cancel();
            let t = Instant::now();
            wl.run(drain, tokio_util::sync::CancellationToken::new())
                .await;
            best_ours = best_ours.min(t.elapsed().as_secs_f64());
            if round % 2 == 1 {
                best_ref = best_ref.min(reference().await);
            }
            assert_eq!(spool.stats().chunks, 0);
            assert_eq!(
                health
                    .readings_written
                    .load(std::sync::atomic::Ordering::Relaxed),
                (2 * BATCH * BATCHES) as u64
            );
        }
        let readings = (2 * BATCH * BATCHES) as f64;
        println!(
            "spool drain to influxd 1.6.7: {:.0} k readings/s; reference plain reqwest posts of the same batches: \
             {:.0} k readings/s; ratio spool/reference = {:.2} (target >= 0.8)",
            readings / best_ours / 1e3,
            readings / best_ref / 1e3,
            best_ref / best_ours
        );
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
