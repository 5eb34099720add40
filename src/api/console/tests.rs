use super::*;
use std::collections::BTreeSet;

/// Every key a page looks up: `{{t:key}}` in the shell, `t('key')` in the JS (the only lookup form app.js uses),
/// and the calls whose key is computed (which a scan cannot check, so app.js must have none).
fn scan_keys(html: &str, js: &str) -> (BTreeSet<String>, Vec<String>) {
    let mut keys = BTreeSet::new();
    let mut computed = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("{{t:") {
        let after = &rest[i + 4..];
        let Some(end) = after.find("}}") else {
            computed.push(after.chars().take(30).collect());
            break;
        };
        keys.insert(after[..end].to_string());
        rest = &after[end..];
    }
    let bytes = js.as_bytes();
    for (at, _) in js.match_indices("t(") {
        // A call of `t` itself, not `split(`, `x.t(`, ...
        if at > 0
            && (bytes[at - 1].is_ascii_alphanumeric()
                || matches!(bytes[at - 1], b'_' | b'.' | b'$'))
        {
            continue;
        }
        let arg = &js[at + 2..];
        match arg.chars().next() {
            Some(q @ ('\'' | '"')) => match arg[1..].find(q) {
                Some(end) => {
                    keys.insert(arg[1..1 + end].to_string());
                }
                None => computed.push(arg.chars().take(30).collect()),
            },
            // The definition `function t(key, vars)`.
            _ if arg.starts_with("key, vars)") => {}
            _ => computed.push(arg.chars().take(30).collect()),
        }
    }
    (keys, computed)
}

fn placeholders(s: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = s;
    while let Some(i) = rest.find('{') {
        let after = &rest[i + 1..];
        match after.find('}') {
            Some(end)
                if after[..end]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
            {
                out.insert(after[..end].to_string());
                rest = &after[end + 1..];
            }
            _ => rest = after,
        }
    }
    out
}

#[test]
fn both_catalogs_have_the_same_keys_and_placeholders() {
    let en = catalog("en");
    let zh = catalog("zh-CN");
    assert!(en.len() > 100, "en.json did not parse: {} keys", en.len());
    let ek: BTreeSet<_> = en.keys().collect();
    let zk: BTreeSet<_> = zh.keys().collect();
    let only_en: Vec<_> = ek.difference(&zk).collect();
    let only_zh: Vec<_> = zk.difference(&ek).collect();
    assert!(
        only_en.is_empty() && only_zh.is_empty(),
        "keys missing from zh-CN.json: {only_en:?}; missing from en.json: {only_zh:?}"
    );
    for (k, v) in &en {
        assert!(
            !v.trim().is_empty() && !zh[k].trim().is_empty(),
            "empty string for {k}"
        );
        assert_eq!(
            placeholders(v),
            placeholders(&zh[k]),
            "{k}: the two languages use different {{placeholders}}"
        );
    }
}

#[test]
fn every_key_the_page_uses_is_in_both_catalogs_and_every_catalog_key_is_used() {
    let (used, computed) = scan_keys(INDEX_HTML, APP_JS);
    assert!(
        computed.is_empty(),
        "t() with a computed key (make it a literal): {computed:?}"
    );
    assert!(
        used.len() > 100,
        "the key scan found only {} keys",
        used.len()
    );
    for lang in ["en", "zh-CN"] {
        let cat = catalog(lang);
        let missing: Vec<_> = used.iter().filter(|k| !cat.contains_key(*k)).collect();
        assert!(
            missing.is_empty(),
            "used but not in {lang}.json: {missing:?}"
        );
        let unused: Vec<_> = cat.keys().filter(|k| !used.contains(*k)).collect();
        assert!(
            unused.is_empty(),
            "in {lang}.json but never used: {unused:?}"
        );
    }
}

#[test]
fn the_key_scan_catches_a_key_in_neither_catalog_and_a_computed_key() {
    let (keys, computed) = scan_keys(
        "<p>{{t:nav.overview}}</p>",
        "x.split(','); t('nope.missing'); h(t(\"also.missing\")); t('status.' + s)",
    );
    // `t('status.' + s)` is caught too: as the key `status.`, which no catalog has.
    assert!(computed.is_empty(), "{computed:?}");
    let keys: Vec<_> = keys.into_iter().collect();
    assert_eq!(
        keys,
        ["also.missing", "nav.overview", "nope.missing", "status."]
    );
    assert!(!catalog("en").contains_key("nope.missing"));
    let (_, computed) = scan_keys("", "t(name)");
    assert_eq!(computed, ["name)"]);
}

#[test]
fn the_language_comes_from_the_cookie_then_accept_language() {
    let h = |pairs: &[(&str, &str)]| {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    };
    assert_eq!(negotiate_lang(&h(&[])), "en");
    assert_eq!(
        negotiate_lang(&h(&[("accept-language", "zh-CN,zh;q=0.9,en;q=0.8")])),
        "zh-CN"
    );
    assert_eq!(negotiate_lang(&h(&[("accept-language", "zh-TW")])), "zh-CN");
    assert_eq!(
        negotiate_lang(&h(&[("accept-language", "fr-FR, en;q=0.5, zh;q=0.4")])),
        "en"
    );
    assert_eq!(
        negotiate_lang(&h(&[("accept-language", "en;q=0.2, zh;q=0.9")])),
        "zh-CN"
    );
    assert_eq!(
        negotiate_lang(&h(&[("accept-language", "zh;q=0, de")])),
        "en"
    );
    assert_eq!(negotiate_lang(&h(&[("accept-language", ";;;,q=,ÿ")])), "en");
    assert_eq!(
        negotiate_lang(&h(&[
            ("accept-language", "en"),
            ("cookie", "a=b; caretaker_lang=zh-CN")
        ])),
        "zh-CN"
    );
    assert_eq!(
        negotiate_lang(&h(&[
            ("accept-language", "zh-CN"),
            ("cookie", "caretaker_lang=en")
        ])),
        "en"
    );
    // An unknown language in the cookie falls back to Accept-Language.
    assert_eq!(
        negotiate_lang(&h(&[
            ("accept-language", "zh-CN"),
            ("cookie", "caretaker_lang=xx")
        ])),
        "zh-CN"
    );
}

#[test]
fn the_shell_is_rendered_per_language_with_nothing_left_unfilled() {
    let a = assets();
    for (i, (lang, _)) in LANGS.iter().enumerate() {
        let html = String::from_utf8(a.shells[i].plain.clone()).unwrap();
        assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{lang}");
        assert!(!html.contains("{{"), "{lang}: an unfilled placeholder");
        assert!(html.contains(&format!("/assets/app.js?v={}", a.js.hash)));
        assert!(html.contains(&format!("/assets/app.css?v={}", a.css.hash)));
        let nav = &catalog(lang)["nav.work_orders"];
        assert!(html.contains(nav.as_str()), "{lang}: nav not translated");
    }
    let zh = String::from_utf8(a.shells[1].plain.clone()).unwrap();
    assert!(zh.contains("工单"));
}

#[test]
fn assets_are_served_gzipped_when_accepted_with_validators() {
    let a = assets();
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("br, gzip;q=0.8"),
    );
    let r = serve(&a.js, &h, "public", "Accept-Encoding");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
    let etag = r.headers()[header::ETAG].clone();
    assert!(
        a.js.gzip.len() * 2 < a.js.plain.len(),
        "gzip should at least halve the JS"
    );
    // The gzip body inflates back to the JS.
    let mut out = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&a.js.gzip[..]), &mut out)
        .unwrap();
    assert_eq!(out, APP_JS);
    // Revalidation: same ETag → 304.
    h.insert(header::IF_NONE_MATCH, etag);
    assert_eq!(
        serve(&a.js, &h, "public", "x").status(),
        StatusCode::NOT_MODIFIED
    );
    // gzip refused → identity, a different ETag.
    let mut h = HeaderMap::new();
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("gzip;q=0, identity"),
    );
    let r = serve(&a.js, &h, "public", "x");
    assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
    assert_ne!(r.headers()[header::ETAG], format!("\"{}-gz\"", a.js.hash));
}
