//! A small W3C WebDriver client over the `reqwest` client already in the tree, driving Debian's `chromedriver`
//! and a headless `chromium`.
//!
//! Why not `fantoccini`: it brings its own hyper client stack and a cookie/TLS feature set the tests never use;
//! the handful of WebDriver commands the console test needs (new session, navigate, find, click, type, execute,
//! screenshot, window size, browser log) are plain JSON over HTTP and fit in this file.
#![allow(dead_code)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C key of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a5c7-163d45e6a6e6";

fn which(bin: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "`{bin}` is not installed: run scripts/test.sh, which installs chromium and chromium-driver"
    );
}

/// `chromedriver` on a free loopback port, killed on drop.
pub struct Chromedriver {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Chromedriver {
    pub fn start(dir: &Path) -> Chromedriver {
        let port = crate::support::free_port();
        let log = dir.join("chromedriver.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(which("chromedriver"))
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.join("chromedriver-verbose.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn chromedriver");
        let end = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Chromedriver { child, port, log }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session.
pub struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    /// A headless Chromium with its own profile folder under `dir`, browser console logging on.
    pub async fn start(driver: &Chromedriver, dir: &Path, lang: &str) -> Browser {
        let http = crate::support::http_client();
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": which("chromium").display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--user-data-dir={}", profile.display()), format!("--lang={lang}"),
                         "--window-size=1024,768", "--no-first-run", "--disable-extensions",
                         "--disable-background-networking", "--hide-scrollbars"],
                "prefs": {"intl.accept_languages": lang}
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let url = format!("http://127.0.0.1:{}", driver.port);
        let r = http
            .post(format!("{url}/session"))
            .header("content-type", "application/json")
            .body(caps.to_string())
            .send()
            .await
            .expect("chromedriver answers");
        let r = json_of(r).await.unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Browser {
            http,
            base: format!("{url}/session/{id}"),
        }
    }

    /// One command; a WebDriver error becomes `Err(message)`.
    pub async fn cmd(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string()),
        };
        let r = req.send().await.map_err(|e| e.to_string())?;
        let ok = r.status().is_success();
        let v = json_of(r).await?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!("{} {path}: {}", method, v["value"]))
        }
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({"url": url})).await.unwrap();
    }

    pub async fn find(&self, css: &str) -> Result<String, String> {
        let v = self
            .cmd(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        // The W3C key is ELEMENT; this chromedriver answers with a key of the same `element-6066-11e4-` family.
        v.as_object()
            .and_then(|o| {
                o.get(ELEMENT).or_else(|| {
                    o.iter()
                        .find(|(k, _)| k.starts_with("element-6066-11e4-"))
                        .map(|(_, v)| v)
                })
            })
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("no element id in {v}"))
    }

    /// Waits (up to 20 s) for an element matching `css`.
    pub async fn wait(&self, css: &str) -> String {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            match self.find(css).await {
                Ok(e) => return e,
                Err(e) if Instant::now() > end => panic!("no `{css}` after 20 s: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits (up to 20 s) until `script` (a function body) returns true.
    pub async fn wait_js(&self, what: &str, script: &str) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, el: &str) {
        self.cmd("POST", &format!("/element/{el}/click"), json!({}))
            .await
            .unwrap();
    }

    pub async fn type_into(&self, el: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            json!({"text": text}),
        )
        .await
        .unwrap();
    }

    pub async fn text(&self, el: &str) -> String {
        let v = self
            .cmd("GET", &format!("/element/{el}/text"), json!(null))
            .await
            .unwrap();
        v.as_str().unwrap_or_default().to_string()
    }

    /// Runs a function body in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
        .unwrap_or(Value::Null)
    }

    /// Goes to a console route (`#/...`) and waits until the page says it is ready (`main[data-ready]`).
    pub async fn route(&self, hash: &str, ready: &str) {
        self.js(&format!(
            "document.getElementById('main').removeAttribute('data-ready'); location.hash = {};",
            json!(hash)
        ))
        .await;
        self.wait_ready(ready).await;
    }

    pub async fn wait_ready(&self, ready: &str) {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self
                .js("var m = document.getElementById('main'); return m && m.getAttribute('data-ready');")
                .await;
            if v == ready {
                return;
            }
            if Instant::now() > end {
                let body = self
                    .js("return document.body.innerText + '\\ninputs: ' + JSON.stringify([].map.call(document.querySelectorAll('input,textarea'), function (i) { return i.name + '=' + i.value; })) + '\\nerrors: ' + JSON.stringify(window.__caretakerErrors)")
                    .await;
                panic!("page never became `{ready}` (is {v}); page text:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn set_window(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await
        .unwrap();
    }

    /// Saves a PNG screenshot of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", json!(null)).await.unwrap();
        std::fs::write(path, base64_decode(v.as_str().unwrap_or_default())).unwrap();
    }

    /// The browser's console log since the last call (chromedriver's legacy log endpoint), as (level, message).
    pub async fn console_log(&self) -> Vec<(String, String)> {
        let v = self
            .cmd("POST", "/se/log", json!({"type": "browser"}))
            .await
            .unwrap_or(Value::Null);
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or("").to_string(),
                            e["message"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn quit(self) {
        let _ = self.cmd("DELETE", "", json!(null)).await;
    }
}

/// Standard base64 (what WebDriver screenshots come in); padding and whitespace skipped.
fn base64_decode(text: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in text.bytes().filter_map(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A response's body as JSON (the tree's reqwest has no `json` feature).
pub async fn json_of(r: reqwest::Response) -> Result<Value, String> {
    let bytes = r.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&bytes)))
}
