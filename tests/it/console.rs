//! The web console in a real browser: Debian's headless Chromium driven over WebDriver (`chromedriver`), against
//! the real daemon with a real mosquitto. A real rule breach opens a work order; an operator signs in with a token,
//! sees it, acknowledges it and sees its status change; a work order made elsewhere appears live (SSE); a fault is
//! reported from a phone-sized window and its status page shows, then offers the rating once the fault is
//! resolved; a viewer sees no action buttons; the page switches to Simplified Chinese; the browser logs no errors.
//!
//! Screenshots of each page go to the test's temp dir; with `CARETAKER_SCREENSHOTS=docs/img` they also refresh
//! the committed ones (`scripts/screenshots.sh`).

use crate::support::*;
use crate::webdriver::{Browser, Chromedriver, json_of};
use std::path::{Path, PathBuf};
use std::time::Duration;

const TOKEN: &str = "op-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";

fn site(dir: &Path, mqtt: &str, http: u16) -> PathBuf {
    let rules = dir.join("rules");
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
      title: "Room {device} too hot: {value} degC"
      team: hvac
      procedure: "1. Check the radiator valve.\n2. Check the AHU supply temperature."
      due_within: 4h
"#,
    )
    .unwrap();
    std::fs::write(dir.join("ops.token"), TOKEN).unwrap();
    std::fs::write(dir.join("viewer.token"), VIEWER).unwrap();
    write_config(
        dir,
        &format!(
            r#"[site]
name = "console campus"
[state]
dir = "{state}"
[profiles]
dirs = ["{profiles}"]
[rules]
dirs = ["rules"]
[mqtt]
url = "{mqtt}"
client_id = "caretaker-console-{http}"
keep_alive = "5s"
reconnect_max_backoff = "1s"
[[mqtt.subscriptions]]
topic = "campus/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[energy]
[[devices]]
id = "room-1"
profile = "generic-room-sensor"
location = {{ building = "b1", floor = "1", room = "101" }}
[http]
listen = "127.0.0.1:{http}"
[[http.tokens]]
name = "ops-desk"
role = "operator"
token_file = "{token}"
[[http.tokens]]
name = "front-desk"
role = "viewer"
token_file = "{viewer}"
"#,
            state = dir.join("state").display(),
            profiles = repo().join("device_profiles").display(),
            token = dir.join("ops.token").display(),
            viewer = dir.join("viewer.token").display(),
        ),
    )
}

/// The screenshots worth committing for the README (the others stay in the temp dir).
const COMMITTED: &[&str] = &[
    "overview",
    "work-order",
    "report",
    "request-status",
    "devices",
    "work-orders-zh",
];

/// Saves a screenshot under the temp dir, and into `$CARETAKER_SCREENSHOTS` when that is set.
async fn shot(b: &Browser, dir: &Path, name: &str) {
    let p = dir.join(format!("{name}.png"));
    b.screenshot(&p).await;
    assert!(
        std::fs::metadata(&p).unwrap().len() > 1000,
        "{name}.png is empty"
    );
    if let (Ok(out), true) = (
        std::env::var("CARETAKER_SCREENSHOTS"),
        COMMITTED.contains(&name),
    ) {
        let out = repo().join(out);
        std::fs::create_dir_all(&out).unwrap();
        std::fs::copy(&p, out.join(format!("console-{name}.png"))).unwrap();
    }
}

/// Errors the page caught itself (window.onerror, unhandled rejections) and SEVERE entries of the browser log.
async fn errors(b: &Browser) -> Vec<String> {
    let mut out: Vec<String> = b
        .js("return window.__caretakerErrors || []")
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    for (level, msg) in b.console_log().await {
        // Chrome logs every 4xx answer to fetch() as a console error; the one expected here is the page asking
        // `GET /api/v1/session` before anyone signed in (401 is that endpoint's contract). Anything else counts.
        let expected = msg.contains("/api/v1/session") && msg.contains("401");
        if level == "SEVERE" && !expected {
            out.push(msg);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_acks_a_real_work_order_reports_a_fault_on_a_phone_and_reads_chinese() {
    let mosq = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let cfg = site(dir.path(), &mosq.url(), http);
    let daemon = Daemon::start(&cfg, http);
    let publisher = Publisher::connect(mosq.port, "console-publisher");
    wait_receiving(
        &publisher,
        &daemon,
        "campus/probe/probe/telemetry",
        r#"{"temperature": 1}"#,
    )
    .await;

    // A real breach, held past `for: 2s` in reading time: work order 1.
    let t0 = chrono_ms();
    for (dt, v) in [(0, 31.0), (3, 32.5)] {
        publisher
            .publish(
                "campus/b1/room-1/telemetry",
                format!(r#"{{"ts": {}, "temperature": {v}}}"#, t0 + dt * 1000),
            )
            .await;
    }
    let client = http_client();
    let api = format!("http://127.0.0.1:{http}/api/v1");
    let opened = wait_until(Duration::from_secs(20), || async {
        let r = client
            .get(format!("{api}/work-orders"))
            .bearer_auth(TOKEN)
            .send()
            .await;
        match r {
            Ok(r) => json_of(r)
                .await
                .map(|v| v["items"].as_array().is_some_and(|a| !a.is_empty()))
                .unwrap_or(false),
            Err(_) => false,
        }
    })
    .await;
    assert!(opened, "no work order opened:\n{}", daemon.log_text());

    let driver = Chromedriver::start(dir.path());
    let b = Browser::start(&driver, dir.path(), "en-US").await;
    let shots = dir.path().join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let base = format!("http://127.0.0.1:{http}/");

    // Not signed in: the sign-in form.
    b.goto(&base).await;
    b.wait_ready("signin").await;
    let lang = b.js("return document.documentElement.lang").await;
    assert_eq!(lang, "en");
    let token = b.wait("input[name=token]").await;
    shot(&b, &shots, "signin").await;
    b.type_into(&token, TOKEN).await;
    let submit = b.find("main form button[type=submit]").await.unwrap();
    b.click(&submit).await;
    b.wait_ready("overview").await;
    let who = b.find("#who").await.unwrap();
    assert_eq!(b.text(&who).await, "ops-desk (operator)");
    shot(&b, &shots, "overview").await;

    // The work order from the breach, in the list and in detail.
    b.route("#/work-orders", "work-orders").await;
    let link = b.wait("a.wo-title[href='#/work-orders/1']").await;
    let title = b.text(&link).await;
    assert!(title.contains("Room room-1 too hot"), "{title}");
    shot(&b, &shots, "work-orders").await;
    b.click(&link).await;
    b.wait("#ack").await;
    b.wait_ready("work-orders").await;
    let status = b.find("#wo-status").await.unwrap();
    assert!(b.text(&status).await.contains("Open"));
    let sop = b.find(".sop").await.unwrap();
    assert!(b.text(&sop).await.contains("Check the radiator valve"));
    // The evidence chart drew the readings.
    let dots = b
        .js("return document.querySelectorAll('svg.chart circle.dot').length")
        .await;
    assert!(
        dots.as_u64().unwrap_or(0) >= 1,
        "no evidence points drawn: {dots}"
    );
    shot(&b, &shots, "work-order").await;

    // Acknowledge: the status changes on the page, and in the store.
    let ack = b.find("#ack").await.unwrap();
    b.click(&ack).await;
    b.wait_js(
        "the status to read Acknowledged",
        "var s = document.getElementById('wo-status'); return !!s && s.textContent.indexOf('Acknowledged') >= 0 && !document.getElementById('ack');",
    )
    .await;
    let wo = json_of(
        client
            .get(format!("{api}/work-orders/1"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(wo["status"], "acknowledged", "{wo}");
    assert_eq!(wo["acknowledged_by"], "ops-desk", "{wo}");

    // Live: with the list open, a work order made elsewhere (a request through the API) appears without a reload,
    // pushed over the page's SSE stream.
    b.route("#/work-orders", "work-orders").await;
    b.wait_js(
        "the live stream to connect",
        "return document.getElementById('live').textContent.indexOf('Live') >= 0;",
    )
    .await;
    let r = client
        .post(format!("{api}/requests"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"title": "Lights flicker in 101", "description": "since Monday", "location": {"building": "b1", "room": "101"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", json_of(r).await);
    b.wait_js(
        "the new work order to appear live",
        "return document.querySelector('main').innerText.indexOf('Lights flicker in 101') >= 0;",
    )
    .await;

    // The other pages render (their data comes from the real daemon).
    b.route("#/devices", "devices").await;
    b.wait("a[href='#/devices/room-1']").await;
    // Each device says how its readings arrive (the API's `protocol`, named as engineers write it).
    let main = b.find("main").await.unwrap();
    let page = b.text(&main).await;
    assert!(page.contains("Protocol") && page.contains("MQTT"), "{page}");
    shot(&b, &shots, "devices").await;
    b.route("#/devices/room-1", "devices").await;
    b.wait("table.points svg.spark").await;
    shot(&b, &shots, "device").await;
    b.route("#/energy", "energy").await;
    shot(&b, &shots, "energy").await;
    b.route("#/kpis", "kpis").await;
    shot(&b, &shots, "kpis").await;

    // Report a fault on a phone-sized window; the requester's status page follows.
    b.set_window(390, 844).await;
    b.route("#/report", "report").await;
    for (name, text) in [
        ("building", "b1"),
        ("room", "204"),
        ("title", "Water leak under the sink"),
        ("contact", "ana@example.edu"),
    ] {
        let el = b
            .find(&format!("#report-form [name={name}]"))
            .await
            .unwrap();
        b.type_into(&el, text).await;
    }
    shot(&b, &shots, "report").await;
    let send = b.find("#report-form button[type=submit]").await.unwrap();
    b.click(&send).await;
    b.wait_ready("request").await;
    let st = b.wait("#request-status").await;
    assert!(b.text(&st).await.contains("Open"), "{}", b.text(&st).await);
    let lead = b.find("p.lead").await.unwrap();
    assert_eq!(b.text(&lead).await, "Water leak under the sink");
    shot(&b, &shots, "request-status").await;
    // The request is a work order in the store, from a person.
    let list = json_of(
        client
            .get(format!("{api}/work-orders"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let from_request = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["source"] == "request" && w["title"] == "Water leak under the sink");
    assert!(from_request, "{list}");

    // A technician resolves it (through the API, as the CLI or another page would); the requester's page, reloaded,
    // offers the 1–5 rating, and the rating sent from it is stored.
    let id = b
        .js("return location.hash.split('/')[2].split('?')[0]")
        .await
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = client
        .post(format!("{api}/work-orders/{id}/resolve"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"note": "Replaced the trap seal"}"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{:?}", json_of(r).await);
    b.js("location.reload()").await;
    b.wait_ready("request").await;
    let four = b.wait("input[name=rating][value='4']").await;
    b.click(&four).await;
    let send = b.find("main form button[type=submit]").await.unwrap();
    b.click(&send).await;
    b.wait_js(
        "the rating to show",
        "return document.body.innerText.indexOf('You rated this 4 of 5') >= 0;",
    )
    .await;
    let wo = json_of(
        client
            .get(format!("{api}/work-orders/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(wo["status"], "resolved", "{wo}");
    assert!(!wo["rating"].is_null(), "rating not stored: {wo}");

    // Sign out, sign in as a viewer: the open work order shows, with no Acknowledge or Resolve button.
    let out = b.find("#signout").await.unwrap();
    b.click(&out).await;
    b.wait_ready("signin").await;
    let token = b.wait("input[name=token]").await;
    b.type_into(&token, VIEWER).await;
    let submit = b.find("main form button[type=submit]").await.unwrap();
    b.click(&submit).await;
    b.wait_ready("overview").await;
    b.route("#/work-orders/1", "work-orders").await;
    let buttons = b
        .js("return document.querySelectorAll('#ack, #resolve').length")
        .await;
    assert_eq!(buttons, 0, "a viewer sees action buttons");
    let body = b.js("return document.body.innerText").await;
    assert!(
        body.as_str()
            .unwrap_or_default()
            .contains("need an operator"),
        "{body}"
    );

    // 中文: the switcher reloads the page in Simplified Chinese, and remembers it.
    b.set_window(1024, 768).await;
    b.route("#/work-orders", "work-orders").await;
    let switch = b.find("#lang").await.unwrap();
    assert_eq!(b.text(&switch).await, "中文");
    b.click(&switch).await;
    b.wait_js(
        "the page in zh-CN",
        "return document.documentElement.lang === 'zh-CN' && document.getElementById('main').getAttribute('data-ready') === 'work-orders';",
    )
    .await;
    let nav = b.find("#nav a[data-route=work-orders]").await.unwrap();
    assert_eq!(b.text(&nav).await, "工单");
    let h1 = b.find("main h1").await.unwrap();
    assert_eq!(b.text(&h1).await, "工单");
    let body = b.js("return document.body.innerText").await;
    let body = body.as_str().unwrap_or_default();
    assert!(
        body.contains("已受理"),
        "status word not translated:\n{body}"
    );
    // Titles come from the rules as written, untranslated.
    assert!(body.contains("Room room-1 too hot"), "{body}");
    shot(&b, &shots, "work-orders-zh").await;
    b.goto(&base).await;
    b.wait_ready("overview").await;
    assert_eq!(b.js("return document.documentElement.lang").await, "zh-CN");

    let errs = errors(&b).await;
    assert!(errs.is_empty(), "browser errors: {errs:#?}");
    b.quit().await;
    drop(driver);
    drop(daemon);
}

/// Now in Unix ms (readings carry their own timestamps).
fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
