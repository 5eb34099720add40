//! Launchers for the real servers the tests talk to, and for the daemon under test.
//!
//! Each server runs as a child process on a free loopback port (asked of the OS), in its own temp dir, with
//! output to a log file that is printed when a test fails to start it. Dropping a launcher kills its process.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound then released; the OS does not hand it out again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn wait_port(port: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn find(bin: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("`{bin}` is not installed: run scripts/test.sh, which installs the test servers");
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

fn log_text(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// A real mosquitto broker with persistence, so a restart keeps sessions and queued messages.
pub struct Mosquitto {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Mosquitto {
            port: free_port(),
            dir,
            child: None,
        };
        m.launch();
        m
    }

    fn launch(&mut self) {
        let d = self.dir.path();
        let conf = d.join("mosquitto.conf");
        // `user root`: mosquitto drops privileges before opening files in a 0700 temp dir (real-servers.md).
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 100\nuser root\nlog_dest stderr\n",
                self.port,
                d.display()
            ),
        )
        .unwrap();
        let log = d.join("mosquitto.log");
        let child = spawn_logged(Command::new(find("mosquitto")).arg("-c").arg(&conf), &log);
        self.child = Some(child);
        assert!(
            wait_port(self.port, Duration::from_secs(10)),
            "mosquitto did not start:\n{}",
            log_text(&log)
        );
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops gracefully (SIGTERM: mosquitto saves its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A real InfluxDB 1.6.7 (Debian's `influxd`), for the v1 write API and InfluxQL reads.
pub struct Influxd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    rpc_port: u16,
}

impl Influxd {
    pub fn start() -> Influxd {
        let dir = tempfile::tempdir().unwrap();
        let mut i = Influxd {
            port: free_port(),
            rpc_port: free_port(),
            dir,
            child: None,
        };
        i.launch();
        i
    }

    fn launch(&mut self) {
        // Ports from free_port() are closed again before influxd binds them, so another test's server can take
        // one in between (seen once under load): a start that dies with "address already in use" moves to
        // fresh ports, at most three times.
        for attempt in 0.. {
            match self.launch_once() {
                Ok(()) => return,
                Err(log) if attempt < 3 && self.child.is_none() => {
                    eprintln!(
                        "influxd lost a port to another process, retrying on new ports:\n{log}"
                    );
                    self.port = free_port();
                    self.rpc_port = free_port();
                }
                Err(log) => panic!("influxd did not start:\n{log}"),
            }
        }
    }

    /// Starts influxd; `Err(log)` when it did not answer (`child` is `None` when it exited over a taken port).
    fn launch_once(&mut self) -> Result<(), String> {
        let d = self.dir.path();
        let conf = d.join("influxdb.conf");
        std::fs::write(
            &conf,
            format!(
                "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n[meta]\n  dir = \"{d}/meta\"\n[data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n[http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n[monitor]\n  store-enabled = false\n[continuous_queries]\n  enabled = false\n",
                rpc = self.rpc_port,
                d = d.display(),
                port = self.port
            ),
        )
        .unwrap();
        let log = d.join("influxd.log");
        let child = spawn_logged(
            Command::new(find("influxd"))
                .arg("run")
                .arg("-config")
                .arg(&conf),
            &log,
        );
        self.child = Some(child);
        // 60 s: on a loaded 2-core machine influxd's start-up (WAL, meta) can take well over the usual second.
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                let text = log_text(&log);
                if text.contains("address already in use") {
                    self.child = None;
                    return Err(text);
                }
            }
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::Read;
                let _ = s.write_all(b"GET /ping HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 64];
                if s.read(&mut buf)
                    .map(|n| String::from_utf8_lossy(&buf[..n]).contains("204"))
                    .unwrap_or(false)
                {
                    return Ok(());
                }
            }
            if Instant::now() >= end {
                return Err(log_text(&log));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Runs an InfluxQL statement and returns the JSON answer.
    pub async fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let body = format!("db={}&q={}&epoch=ns", urlencode(db), urlencode(q));
        let resp = http_client()
            .post(format!("{}/query", self.url()))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("influxd query");
        serde_json::from_str(&resp.text().await.expect("influxd body")).expect("influxd JSON")
    }

    pub async fn create_db(&self, db: &str) {
        let v = self.query(db, &format!("CREATE DATABASE \"{db}\"")).await;
        assert!(v["results"][0].get("error").is_none(), "{v}");
    }

    /// Rows of a `SELECT`: (column names, values).
    pub async fn select(&self, db: &str, q: &str) -> (Vec<String>, Vec<Vec<serde_json::Value>>) {
        let v = self.query(db, q).await;
        let series = &v["results"][0]["series"];
        let Some(s) = series.get(0) else {
            return (vec![], vec![]);
        };
        let cols = s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let mut rows = Vec::new();
        for sr in series.as_array().unwrap() {
            for r in sr["values"].as_array().unwrap() {
                rows.push(r.as_array().unwrap().clone());
            }
        }
        (cols, rows)
    }

    /// `SELECT count(field) FROM measurement`, or 0.
    pub async fn count(&self, db: &str, measurement: &str, field: &str) -> u64 {
        let (_, rows) = self
            .select(
                db,
                &format!("SELECT count(\"{field}\") FROM \"{measurement}\""),
            )
            .await;
        rows.first()
            .and_then(|r| r.get(1))
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A real VictoriaMetrics, which speaks InfluxDB's v2 write API (no InfluxDB 2.x server is installable here).
pub struct Victoria {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Victoria {
    pub fn start() -> Victoria {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("vm.log");
        let child = spawn_logged(
            Command::new(find("victoria-metrics"))
                .arg(format!("-storageDataPath={}/data", dir.path().display()))
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg("-retentionPeriod=100y")
                .arg("-search.latencyOffset=0s")
                .arg("-search.disableCache"),
            &log,
        );
        assert!(
            wait_port(port, Duration::from_secs(20)),
            "victoria-metrics did not start:\n{}",
            log_text(&log)
        );
        Victoria {
            port,
            dir,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Exports every sample of metrics matching `selector`: (labels, values, timestamps in ms) per series.
    pub async fn export(&self, selector: &str) -> Vec<serde_json::Value> {
        let c = http_client();
        let _ = c
            .get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await;
        let text = c
            .get(format!(
                "{}/api/v1/export?match[]={}",
                self.url(),
                urlencode(selector)
            ))
            .send()
            .await
            .expect("vm export")
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The daemon under test: `caretaker run --config FILE` as a child process.
pub struct Daemon {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub http_port: u16,
    pub config: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, http_port: u16) -> Daemon {
        let log = config.with_extension(format!("{}.log", free_port()));
        let child = spawn_logged(
            Command::new(env!("CARGO_BIN_EXE_caretaker"))
                .arg("run")
                .arg("--config")
                .arg(config)
                .env("CARETAKER_LOG", "info"),
            &log,
        );
        let d = Daemon {
            child: Some(child),
            log,
            http_port,
            config: config.to_path_buf(),
        };
        if http_port != 0 {
            assert!(
                wait_port(http_port, Duration::from_secs(20)),
                "caretaker did not start:\n{}",
                d.log_text()
            );
        }
        d
    }

    pub fn log_text(&self) -> String {
        log_text(&self.log)
    }

    /// SIGTERM, then waits for the exit; returns the exit code and how long it took.
    pub fn terminate(&mut self) -> (Option<i32>, Duration) {
        let mut c = self.child.take().expect("running");
        let t = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return (s.code(), t.elapsed());
            }
            if Instant::now() > end {
                let _ = c.kill();
                return (None, t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Current value of a Prometheus metric line (name with labels exactly as rendered), or 0.
    pub async fn metric(&self, name_with_labels: &str) -> f64 {
        let Ok(resp) = http_client()
            .get(format!("http://127.0.0.1:{}/metrics", self.http_port))
            .send()
            .await
        else {
            return 0.0;
        };
        let text = resp.text().await.unwrap_or_default();
        metric_value(&text, name_with_labels)
    }
}

/// The daemon's `/health` on `http_port` as JSON; `Null` while it cannot be read (not up yet, stopped).
pub async fn health(http_port: u16) -> serde_json::Value {
    let Ok(r) = http_client()
        .get(format!("http://127.0.0.1:{http_port}/health"))
        .send()
        .await
    else {
        return serde_json::Value::Null;
    };
    serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default()
}

/// Sums the samples of `name` whose labels include every `k="v"` given in `name_with_labels`.
pub fn metric_value(text: &str, name_with_labels: &str) -> f64 {
    let (name, want) = match name_with_labels.split_once('{') {
        Some((n, l)) => (
            n,
            l.trim_end_matches('}')
                .split(',')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>(),
        ),
        None => (name_with_labels, vec![]),
    };
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((key, val)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, labels) = match key.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (key, ""),
        };
        if n != name {
            continue;
        }
        if want.iter().all(|w| labels.split(',').any(|l| l == *w)) {
            sum += val.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- caretaker log ({}) ---\n{}",
                self.log.display(),
                log_text(&self.log)
            );
        }
    }
}

/// The Python of the test venv that scripts/test.sh fills from tests/fixtures/requirements.txt (PyPI packages
/// Debian does not ship, e.g. bacpypes3); `CARETAKER_TEST_VENV` names it, as the script exports.
#[allow(dead_code)]
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("CARETAKER_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/caretaker/test-venv")
        });
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh --deps-only (it makes the venv from tests/fixtures/requirements.txt)",
        python.display()
    );
    python
}

/// The repository's own folders, for configs that use the shipped profiles and rules.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An MQTT publisher (rumqttc, QoS 1, persistent session) that keeps its event loop running in a task and
/// survives broker restarts; `published()` counts broker-acknowledged publishes.
pub struct Publisher {
    pub client: rumqttc::AsyncClient,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub fn connect(port: u16, id: &str) -> Publisher {
        let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        o.set_clean_session(false);
        o.set_keep_alive(Duration::from_secs(5));
        // More packet ids than any test publishes, so they never wrap. With ids wrapping at `inflight`, rumqttc
        // 0.25 loses publishes after a reconnect: it replays the unacknowledged ones with their ids, then the
        // ones still queued take ids that are taken, and each such collision overwrites the previous one
        // (`MqttState::collision` holds one). A broker restart under load then lost a run of ~40 messages the
        // broker had never acknowledged (ten_thousand_messages_arrive_exactly_across_a_broker_restart).
        o.set_inflight(u16::MAX);
        let (client, mut el) = rumqttc::AsyncClient::new(o, 20_000);
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let a = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        a.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Publisher {
            client,
            acked,
            task,
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .await
            .unwrap();
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes a site config into `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("site.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An HTTP client for talking to the servers (reqwest with rustls needs its crypto provider installed).
pub fn http_client() -> reqwest::Client {
    caretaker::tls::install_default_provider();
    reqwest::Client::new()
}

/// Publishes `payload` on `topic` until the daemon has received a reading, so the test's real messages are not
/// sent before the daemon's subscription exists (a QoS 1 message to a topic nobody subscribes to is gone).
pub async fn wait_receiving(p: &Publisher, d: &Daemon, topic: &str, payload: &str) {
    let ok = wait_until(Duration::from_secs(30), || async {
        p.publish(topic, payload.to_string()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        d.metric(r#"caretaker_readings_received_total{source="mqtt"}"#)
            .await
            >= 1.0
    })
    .await;
    assert!(ok, "daemon never received a message:\n{}", d.log_text());
}

/// A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`), clustering off, one catch-all route.
pub struct Alertmanager {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Alertmanager {
    pub fn start() -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path();
        let conf = d.join("alertmanager.yml");
        std::fs::write(
            &conf,
            "route:\n  receiver: none\nreceivers:\n  - name: none\n",
        )
        .unwrap();
        let log = d.join("alertmanager.log");
        let child = spawn_logged(
            Command::new(find("prometheus-alertmanager"))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .arg(format!("--storage.path={}", d.join("data").display()))
                .arg(format!("--config.file={}", conf.display())),
            &log,
        );
        assert!(
            wait_port(port, Duration::from_secs(20)),
            "alertmanager did not start:\n{}",
            log_text(&log)
        );
        Alertmanager {
            port,
            dir,
            child: Some(child),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `GET /api/v2/alerts` (active, silenced and inhibited alerts; resolved ones are left out).
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        let r = http_client()
            .get(format!("{}/api/v2/alerts", self.url()))
            .send()
            .await;
        match r {
            Ok(r) => serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the `caretaker` binary under test with `args`: exit code, stdout, stderr.
pub fn caretaker(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}
