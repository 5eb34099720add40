//! The web console: one server-rendered HTML shell plus a little vanilla JS and CSS, every byte embedded in the
//! binary (no CDN, no Node build step: see ARCHITECTURE.md, "Decisions").
//!
//! - `GET /` renders the shell in the visitor's language (the `caretaker_lang` cookie the switcher sets, else
//!   `Accept-Language`; English and Simplified Chinese), with that language's catalog inlined as JSON for the JS.
//! - `GET /assets/{name}` serves `app.js` and `app.css`; the shell links them with `?v=<hash>` so they can be
//!   cached for a year (`immutable`), while the shell itself is revalidated (`no-cache` + `ETag`).
//! - Everything is gzip-compressed once, when first asked for, and served compressed when the client accepts gzip.
//!
//! Every UI string lives in `i18n/en.json` and `i18n/zh-CN.json`; the tests below fail on a key missing from
//! either catalog and on a key the HTML or JS looks up that neither has.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::OnceLock;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const EN_JSON: &str = include_str!("i18n/en.json");
const ZH_JSON: &str = include_str!("i18n/zh-CN.json");

/// The languages the console speaks, first is the default.
pub const LANGS: &[(&str, &str)] = &[("en", EN_JSON), ("zh-CN", ZH_JSON)];
/// The cookie the language switcher sets.
pub const LANG_COOKIE: &str = "caretaker_lang";

/// The console's routes (`/`, `/index.html`, `/assets/{name}`); they need no state, so they fit any router.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(shell))
        .route("/index.html", get(shell))
        .route("/assets/{name}", get(asset))
}

/// One servable body, plain and gzip-compressed, with its validators.
struct Body {
    content_type: &'static str,
    plain: Vec<u8>,
    gzip: Vec<u8>,
    hash: String,
}

impl Body {
    fn new(content_type: &'static str, plain: Vec<u8>) -> Body {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing into a Vec cannot fail.
        let gzip = enc
            .write_all(&plain)
            .and_then(|_| enc.finish())
            .unwrap_or_default();
        let hash = format!("{:016x}", fnv1a(&plain));
        Body {
            content_type,
            plain,
            gzip,
            hash,
        }
    }
}

struct Assets {
    js: Body,
    css: Body,
    /// The shell per language, in `LANGS` order.
    shells: Vec<Body>,
}

fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let js = Body::new("text/javascript; charset=utf-8", APP_JS.as_bytes().to_vec());
        let css = Body::new("text/css; charset=utf-8", APP_CSS.as_bytes().to_vec());
        let shells = LANGS
            .iter()
            .map(|(lang, _)| {
                let html = render_shell(lang, &js.hash, &css.hash);
                Body::new("text/html; charset=utf-8", html.into_bytes())
            })
            .collect();
        Assets { js, css, shells }
    })
}

/// A language's catalog; an unreadable catalog is an empty one (the unit tests keep both valid).
pub fn catalog(lang: &str) -> BTreeMap<String, String> {
    let text = LANGS
        .iter()
        .find(|(l, _)| *l == lang)
        .map(|(_, j)| *j)
        .unwrap_or(EN_JSON);
    serde_json::from_str(text).unwrap_or_default()
}

/// Fills the shell template: `{{lang}}`, `{{catalog}}` (the JSON for the script), `{{v:js}}`, `{{v:css}}`, and
/// `{{t:key}}` for every string the server renders itself (a key missing from the catalog renders as the key).
fn render_shell(lang: &str, js_hash: &str, css_hash: &str) -> String {
    let cat = catalog(lang);
    // `<` escaped so a catalog string can never close the script element it sits in.
    let json = serde_json::to_string(&cat)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c");
    let mut out = String::with_capacity(INDEX_HTML.len() + json.len());
    let mut rest = INDEX_HTML;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        match name {
            "lang" => out.push_str(lang),
            "catalog" => out.push_str(&json),
            "v:js" => out.push_str(js_hash),
            "v:css" => out.push_str(css_hash),
            _ => {
                let key = name.strip_prefix("t:").unwrap_or(name);
                out.push_str(&html_escape(
                    cat.get(key).map(String::as_str).unwrap_or(key),
                ));
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// 64-bit FNV-1a: a stable content hash for ETags and cache-busting (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The language for a request: the switcher's cookie, else the best `Accept-Language` match, else English.
pub fn negotiate_lang(headers: &HeaderMap) -> &'static str {
    for cookie in headers.get_all(header::COOKIE) {
        let Ok(text) = cookie.to_str() else { continue };
        for part in text.split(';') {
            if let Some((k, v)) = part.trim().split_once('=') {
                if k == LANG_COOKIE {
                    if let Some((l, _)) = LANGS.iter().find(|(l, _)| *l == v.trim()) {
                        return l;
                    }
                }
            }
        }
    }
    let mut best: Option<(f32, &'static str)> = None;
    for value in headers.get_all(header::ACCEPT_LANGUAGE) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            let primary = tag.split('-').next().unwrap_or("");
            let lang = match primary {
                "zh" => "zh-CN",
                "en" => "en",
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
    }
    best.map(|(_, l)| l).unwrap_or(LANGS[0].0)
}

/// Whether the client takes gzip (`Accept-Encoding: gzip` or `*`, not with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            (name == "gzip" || name == "*") && !zero
        })
}

fn serve(body: &Body, headers: &HeaderMap, cache: &'static str, vary: &'static str) -> Response {
    let gz = accepts_gzip(headers);
    // Strong validators differ by encoding, as RFC 9110 asks.
    let etag = if gz {
        format!("\"{}-gz\"", body.hash)
    } else {
        format!("\"{}\"", body.hash)
    };
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        });
    let mut h = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(header::ETAG, &etag);
    set(header::CACHE_CONTROL, cache);
    set(header::VARY, vary);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if matches {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    set(header::CONTENT_TYPE, body.content_type);
    if gz {
        set(header::CONTENT_ENCODING, "gzip");
        (StatusCode::OK, h, body.gzip.clone()).into_response()
    } else {
        (StatusCode::OK, h, body.plain.clone()).into_response()
    }
}

async fn shell(headers: HeaderMap) -> Response {
    let lang = negotiate_lang(&headers);
    let i = LANGS.iter().position(|(l, _)| *l == lang).unwrap_or(0);
    let a = assets();
    let mut r = serve(
        &a.shells[i],
        &headers,
        "no-cache",
        "Accept-Encoding, Accept-Language, Cookie",
    );
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_LANGUAGE,
        HeaderValue::from_static(if i == 0 { "en" } else { "zh-CN" }),
    );
    r
}

async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let a = assets();
    let body = match name.as_str() {
        "app.js" => &a.js,
        "app.css" => &a.css,
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    serve(
        body,
        &headers,
        "public, max-age=31536000, immutable",
        "Accept-Encoding",
    )
}

#[cfg(test)]
mod tests;
