//! TLS to every outbound target (issue 13, item 8), against a real TLS mosquitto (client certificates required,
//! password file from `mosquitto_passwd`) and HTTPS endpoints that require a client certificate, all under a CA
//! this test makes with `openssl` (a CA plus leaves with SAN and serverAuth/clientAuth: the rustls CA trap in
//! real-servers.md). The HTTPS endpoints are a few lines of rustls over std sockets in this file: no HTTPS server
//! that takes a client certificate is installed here (influxd 1.6.7 serves https only without client auth).

use crate::support::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ca.pem`, `server.{pem,key}` (SAN 127.0.0.1/localhost, serverAuth), `client.{pem,key}` (clientAuth), and an
/// unrelated `other-ca.pem`, in `dir` (world-readable: mosquitto drops root before reading them).
pub(crate) fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        let (key, pem, subj) = (
            format!("{ca}.key"),
            format!("{ca}.pem"),
            format!("/CN=caretaker test {ca}"),
        );
        a.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
        openssl(dir, &a);
    }
    for (leaf, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        ),
        (
            "client",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{leaf}.ext")), ext).unwrap();
        let mut a = vec!["req"];
        a.extend(ec);
        let (key, csr, subj) = (
            format!("{leaf}.key"),
            format!("{leaf}.csr"),
            format!("/CN={leaf}"),
        );
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &a);
        let (pem, ext) = (format!("{leaf}.pem"), format!("{leaf}.ext"));
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// mosquitto with one TLS listener that requires a client certificate from the test CA and a password.
struct TlsBroker {
    port: u16,
    child: Child,
    log: PathBuf,
}

impl TlsBroker {
    fn start(pki: &Path) -> TlsBroker {
        let port = free_port();
        let passwd = pki.join("passwd");
        let st = Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwd)
            .args(["caretaker", "s3cret"])
            .status()
            .expect("mosquitto_passwd");
        assert!(st.success());
        std::fs::write(pki.join("mqtt.password"), "s3cret\n").unwrap();
        let conf = pki.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\npassword_file {passwd}\nallow_anonymous false\nuser root\nlog_dest stderr\n",
                d = pki.display(),
                passwd = passwd.display()
            ),
        )
        .unwrap();
        let log = pki.join("mosquitto.log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("mosquitto");
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < end,
                "TLS mosquitto did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsBroker { port, child, log }
    }

    /// `mosquitto_pub`/`mosquitto_sub` arguments for this broker with the test's client certificate.
    fn client_args(&self, pki: &Path) -> Vec<String> {
        let p = |f: &str| pki.join(f).display().to_string();
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "--cafile".into(),
            p("ca.pem"),
            "--cert".into(),
            p("client.pem"),
            "--key".into(),
            p("client.key"),
            "-u".into(),
            "caretaker".into(),
            "-P".into(),
            "s3cret".into(),
        ]
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request an HTTPS endpoint received: request line and body (gunzipped when sent gzipped).
type Requests = Arc<Mutex<Vec<(String, String)>>>;

/// An HTTPS endpoint (HTTP/1.1, keep-alive) that requires a client certificate from the test CA and answers
/// every request with `status` and an empty body.
fn https_endpoint(pki: &Path, status: &'static str) -> (u16, Requests) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pki.join("server.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(pki.join("server.key")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Requests = Arc::default();
    let out = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (config, seen) = (config.clone(), seen.clone());
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let tls = rustls::StreamOwned::new(conn, stream);
                let mut r = BufReader::new(tls);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut len, mut gzip) = (0usize, false);
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end().to_ascii_lowercase();
                        if h.is_empty() {
                            break;
                        }
                        if let Some(v) = h.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        gzip |= h == "content-encoding: gzip";
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let body = if gzip {
                        let mut s = String::new();
                        flate2::read::GzDecoder::new(&body[..])
                            .read_to_string(&mut s)
                            .unwrap();
                        s
                    } else {
                        String::from_utf8_lossy(&body).into_owned()
                    };
                    seen.lock()
                        .unwrap()
                        .push((line.trim_end().to_string(), body));
                    let tls = r.get_mut();
                    let _ = write!(tls, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                    let _ = tls.flush();
                }
            });
        }
    });
    (port, out)
}

fn config(
    pki: &Path,
    broker: u16,
    http: u16,
    influx: u16,
    hook: u16,
    influx_ca: &str,
    bus_ca: &str,
) -> String {
    let d = pki.display();
    format!(
        r#"[site]
name = "tls campus"
[state]
dir = "{d}/state-{http}"
[profiles]
dirs = ["{profiles}"]
[rules]
dirs = ["{d}/rules"]
[mqtt]
url = "mqtts://127.0.0.1:{broker}"
client_id = "caretaker-tls-{http}"
ca_file = "{d}/ca.pem"
cert_file = "{d}/client.pem"
key_file = "{d}/client.key"
username = "caretaker"
password_file = "{d}/mqtt.password"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[influxdb]
url = "https://127.0.0.1:{influx}"
api = "v1"
database = "ct"
ca_file = "{d}/{influx_ca}"
cert_file = "{d}/client.pem"
key_file = "{d}/client.key"
flush_interval = "200ms"
max_retry_backoff = "1s"
timeout = "2s"
[http]
listen = "127.0.0.1:{http}"
[work_orders]
[[work_orders.targets]]
kind = "webhook"
name = "hook"
url = "https://127.0.0.1:{hook}/hook"
ca_file = "{d}/ca.pem"
cert_file = "{d}/client.pem"
key_file = "{d}/client.key"
timeout = "2s"
max_retry_backoff = "1s"
[[work_orders.targets]]
kind = "mqtt"
name = "bus"
url = "mqtts://127.0.0.1:{broker}"
topic = "caretaker/tls/work-orders"
client_id = "caretaker-tls-wo-{http}"
ca_file = "{d}/{bus_ca}"
cert_file = "{d}/client.pem"
key_file = "{d}/client.key"
username = "caretaker"
password_file = "{d}/mqtt.password"
timeout = "2s"
max_retry_backoff = "1s"
"#,
        profiles = repo().join("device_profiles").display(),
    )
}

fn write_rules(pki: &Path) {
    let rules = pki.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("room.yaml"),
        r#"schema: 1
rules:
  - name: room-too-hot
    applies_to: { profile: generic-room-sensor }
    point: temperature
    unit: degC
    when: { above: 30, for: 2s }
    clear: { below: 25 }
    severity: major
    work_order:
      title: "Room {device} too hot"
      due_within: 4h
"#,
    )
    .unwrap();
}

fn publish_tls(broker: &TlsBroker, pki: &Path, topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args(broker.client_args(pki))
        .args(["-q", "1", "-t", topic, "-m", payload])
        .output()
        .expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outbound_connection_speaks_tls_with_a_client_certificate() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = pki_dir.path();
    make_pki(pki);
    write_rules(pki);
    let broker = TlsBroker::start(pki);
    let (influx_port, influx) = https_endpoint(pki, "204 No Content");
    let (hook_port, hook) = https_endpoint(pki, "200 OK");
    // The work order published to the MQTT target, read back over TLS.
    let sub = Command::new("mosquitto_sub")
        .args(broker.client_args(pki))
        .args([
            "-t",
            "caretaker/tls/work-orders",
            "-C",
            "1",
            "-W",
            "60",
            "-q",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let http = free_port();
    let cfg = write_config(
        pki,
        &config(
            pki,
            broker.port,
            http,
            influx_port,
            hook_port,
            "ca.pem",
            "ca.pem",
        ),
    );
    let daemon = Daemon::start(&cfg, http);
    // Over TLS, with a client certificate and a password: the source subscribes, readings reach InfluxDB.
    let ok = wait_until(Duration::from_secs(30), || async {
        publish_tls(
            &broker,
            pki,
            "campus/b1/room-1/telemetry",
            &format!(r#"{{"ts": {T0}, "temperature": 21}}"#),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        influx
            .lock()
            .unwrap()
            .iter()
            .any(|(l, b)| l.starts_with("POST /write?db=ct") && b.contains("temperature=21"))
    })
    .await;
    assert!(
        ok,
        "no reading reached InfluxDB over https:\n{}\n{}",
        daemon.log_text(),
        std::fs::read_to_string(&broker.log).unwrap_or_default()
    );
    // A breach held for 2 s opens a work order: delivered to the webhook (https) and the MQTT target (mqtts).
    for (t, v) in [(10, 31.0), (11, 32.0), (13, 33.0)] {
        publish_tls(
            &broker,
            pki,
            "campus/b1/room-1/telemetry",
            &format!(r#"{{"ts": {}, "temperature": {v}}}"#, T0 + t * 1000),
        );
    }
    let ok = wait_until(Duration::from_secs(30), || async {
        hook.lock()
            .unwrap()
            .iter()
            .any(|(l, b)| l.starts_with("POST /hook") && b.contains("room-too-hot"))
    })
    .await;
    assert!(ok, "no webhook delivery over https:\n{}", daemon.log_text());
    let out = tokio::task::spawn_blocking(move || sub.wait_with_output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("room-too-hot") && text.contains("opened"),
        "MQTT target: {text:?} {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_fails_with_an_error_naming_the_target() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = pki_dir.path();
    make_pki(pki);
    write_rules(pki);
    let broker = TlsBroker::start(pki);
    let (influx_port, _influx) = https_endpoint(pki, "204 No Content");
    let http = free_port();
    let cfg = write_config(
        pki,
        &config(
            pki,
            broker.port,
            http,
            influx_port,
            free_port(),
            "other-ca.pem",
            "other-ca.pem",
        ),
    );
    let daemon = Daemon::start(&cfg, http);
    let ok = wait_until(Duration::from_secs(30), || async {
        publish_tls(
            &broker,
            pki,
            "campus/b1/room-1/telemetry",
            &format!(r#"{{"ts": {T0}, "temperature": 21}}"#),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let h = health(http).await;
        let e = h["influxdb"]["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string();
        e.contains(&format!("https://127.0.0.1:{influx_port}"))
            && e.contains("invalid peer certificate")
    })
    .await;
    assert!(
        ok,
        "InfluxDB with the wrong CA: no clear error:\n{}",
        daemon.log_text()
    );
    let ok = wait_until(Duration::from_secs(20), || async {
        daemon.log_text().lines().any(|l| {
            l.contains("work-order MQTT target")
                && l.contains("bus")
                && l.contains("invalid peer certificate")
        })
    })
    .await;
    assert!(
        ok,
        "MQTT target with the wrong CA: no clear error:\n{}",
        daemon.log_text()
    );
}

#[test]
fn check_rejects_an_unreadable_or_malformed_ca_file_naming_the_key() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = pki_dir.path();
    make_pki(pki);
    write_rules(pki);
    std::fs::write(pki.join("mqtt.password"), "x\n").unwrap();
    std::fs::write(pki.join("garbage.pem"), "not a certificate\n").unwrap();
    let cfg = write_config(pki, &config(pki, 1, 2, 3, 4, "garbage.pem", "missing.pem"));
    let out = Command::new(env!("CARGO_BIN_EXE_caretaker"))
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("influxdb.ca_file"), "{err}");
    assert!(err.contains("garbage.pem"), "{err}");
    assert!(err.contains("work_orders.targets[1].ca_file"), "{err}");
    assert!(err.contains("missing.pem"), "{err}");
}
