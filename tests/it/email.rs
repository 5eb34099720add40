//! The e-mail work-order target against a real SMTP server: aiosmtpd (Debian `python3-aiosmtpd`, run by
//! tests/fixtures/smtp_server.py) on a loopback port with STARTTLS required and a certificate from a CA this test
//! makes. A breach through real mosquitto and `caretaker run` while the SMTP server is down is retried, not
//! lost: once the server is up the message arrives, over TLS, to the team's address, with severity, device and
//! title in the subject and the procedure, evidence, due time, runbook and console link in the body; the clear
//! sends a second message.

use crate::support::*;
use crate::work_order_site::WorkOrderSite;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct SmtpServer {
    child: Child,
    out: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl SmtpServer {
    fn start(port: u16, pki: &Path, dir: &Path) -> SmtpServer {
        let (out, log) = (dir.join("mail.jsonl"), dir.join("smtp.log"));
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new("/usr/bin/python3")
            .arg(repo().join("tests/fixtures/smtp_server.py"))
            .arg(port.to_string())
            .arg(pki.join("server.pem"))
            .arg(pki.join("server.key"))
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("python3 runs the SMTP fixture (scripts/test.sh installs python3-aiosmtpd)");
        SmtpServer { child, out, log }
    }

    fn messages(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The decoded subject and body of a received message (lettre writes plain text as quoted-printable or
/// base64 when a line needs it; the subject is RFC 2047-encoded only when not ASCII, which ours are).
fn subject_and_body(data: &str) -> (String, String) {
    let (head, body) = data
        .split_once("\r\n\r\n")
        .or_else(|| data.split_once("\n\n"))
        .unwrap();
    let subject = head
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .to_string();
    let body = if head.contains("Content-Transfer-Encoding: quoted-printable") {
        body.replace("=\r\n", "")
            .replace("=\n", "")
            .replace("=3D", "=")
    } else if head.contains("Content-Transfer-Encoding: base64") {
        let raw: String = body.split_whitespace().collect();
        String::from_utf8(b64(&raw)).unwrap()
    } else {
        body.to_string()
    };
    // SMTP lines end in CRLF.
    (subject, body.replace("\r\n", "\n"))
}

fn b64(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | A.iter().position(|a| *a == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_orders_are_mailed_over_starttls_to_the_team_and_retried_while_the_server_is_down() {
    let mosq = Mosquitto::start();
    let site = WorkOrderSite::new(
        &mosq,
        "mail",
        "2s",
        r#"    labels: { floor: "3" }
    annotations: { runbook_url: "https://wiki.example.org/room-too-hot" }
    work_order:
      title: "Room {device} too hot"
      team: hvac
      procedure: "1. Check the radiator valve."
      due_within: 4h
"#,
    );
    let pki = site.dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    crate::tls::make_pki(&pki);
    let smtp_port = free_port();
    let run = site
        .start(&format!(
            r#"[work_orders.teams.hvac]
email = "hvac@campus.example.org"
[[work_orders.targets]]
kind = "email"
name = "mail"
url = "smtp://127.0.0.1:{smtp_port}"
ca_file = "{ca}"
from = "Caretaker <caretaker@campus.example.org>"
to = "facilities@campus.example.org"
console_url = "https://caretaker.campus.example.org/"
timeout = "2s"
max_retry_backoff = "1s"
"#,
            ca = pki.join("ca.pem").display(),
        ))
        .await;
    let daemon = &run.daemon;
    run.breach("room-1", 3_000).await;
    // No SMTP server yet: the delivery fails and is retried.
    assert!(
        wait_until(Duration::from_secs(30), || async {
            daemon
                .metric(r#"caretaker_work_order_deliveries_total{result="error",target="mail"}"#)
                .await
                >= 2.0
        })
        .await,
        "no failed delivery while the SMTP server is down:\n{}",
        daemon.log_text()
    );
    let smtp = SmtpServer::start(smtp_port, &pki, site.dir.path());
    assert!(
        wait_until(Duration::from_secs(30), || async {
            !smtp.messages().is_empty()
        })
        .await,
        "no message after the SMTP server came up:\nsmtp: {}\ndaemon: {}",
        smtp.log_text(),
        daemon.log_text()
    );
    let m = smtp.messages().remove(0);
    assert_eq!(m["tls"], true, "{m}");
    assert_eq!(m["mail_from"], "caretaker@campus.example.org", "{m}");
    assert_eq!(
        m["rcpt_tos"],
        serde_json::json!(["hvac@campus.example.org"]),
        "{m}"
    );
    let (subject, body) = subject_and_body(m["data"].as_str().unwrap());
    assert_eq!(
        subject, "[MAJOR] room-1: Room room-1 too hot (work order #1 opened)",
        "{m}"
    );
    for want in [
        "Site: test campus",
        "Device: room-1",
        "Point: temperature",
        "Due: ",
        "Procedure:\n1. Check the radiator valve.",
        "Evidence (reading time, value):",
        "runbook_url: https://wiki.example.org/room-too-hot",
        "Open in the console: https://caretaker.campus.example.org/#/work-orders/1",
    ] {
        assert!(body.contains(want), "`{want}` missing from:\n{body}");
    }

    run.clear("room-1").await;
    assert!(
        wait_until(Duration::from_secs(30), || async {
            smtp.messages().len() >= 2
        })
        .await,
        "no message for the resolution:\n{}",
        daemon.log_text()
    );
    let m = smtp.messages().remove(1);
    let (subject, body) = subject_and_body(m["data"].as_str().unwrap());
    assert_eq!(
        subject, "[MAJOR] room-1: Room room-1 too hot (work order #1 resolved)",
        "{m}"
    );
    assert!(body.contains("Resolved by: rule:room-too-hot"), "{body}");
    // Exactly one message per event: updates while open are not mailed, nothing was sent twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.messages().len(), 2, "{:?}", smtp.messages());
}
