//! Finds the line of a key path (`mqtt.subscriptions[1].profile`) in a TOML file's text, for diagnostics.
//!
//! The `config` crate merges files and the environment into one tree and forgets where values came from; this
//! scanner recovers the line from the file itself. It understands `[table]`, `[[array.of.tables]]` headers,
//! `key = value` lines, dotted keys and inline tables well enough for error messages; when it cannot find the
//! exact key it returns the line of the deepest enclosing key or table it found.

/// Splits `a.b[2].c` into segments: `a`, `b`, `[2]`, `c`.
fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        while let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(rest[..i].to_string());
            }
            let j = rest[i..].find(']').map(|j| i + j + 1).unwrap_or(rest.len());
            out.push(rest[i..j].to_string());
            rest = &rest[j..];
        }
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out
}

fn unquote(k: &str) -> String {
    k.trim().trim_matches('"').trim_matches('\'').to_string()
}

/// The 1-based line of `path` in `text`, or of its deepest ancestor that appears.
pub fn locate(text: &str, path: &str) -> Option<u64> {
    let want = segments(path);
    if want.is_empty() {
        return None;
    }
    let mut table: Vec<String> = Vec::new();
    let mut array_counts: std::collections::HashMap<String, usize> = Default::default();
    let mut best: Option<(usize, u64)> = None;
    let mut consider = |have: &[String], line: u64| {
        let common = have.iter().zip(&want).take_while(|(a, b)| a == b).count();
        if common == have.len().min(want.len())
            && common > 0
            && best.is_none_or(|(n, _)| common > n)
        {
            best = Some((common, line));
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(inner) = l.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name: Vec<String> = inner.split('.').map(unquote).collect();
            let key = name.join(".");
            let n = array_counts.entry(key).or_insert(0);
            table = name;
            table.push(format!("[{}]", *n));
            *n += 1;
            consider(&table, line_no);
            continue;
        }
        if let Some(inner) = l.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = inner.split('.').map(unquote).collect();
            consider(&table, line_no);
            continue;
        }
        if let Some(eq) = l.find('=') {
            let mut full = table.clone();
            full.extend(l[..eq].split('.').map(unquote));
            consider(&full, line_no);
            // Keys inside an inline table on this line: `modbus = { url = "...", unit = 1 }`.
            let value = &l[eq + 1..];
            if value.trim_start().starts_with('{') {
                for part in value.trim_start().trim_start_matches('{').split(',') {
                    if let Some(e2) = part.find('=') {
                        let mut inner = full.clone();
                        inner.extend(part[..e2].split('.').map(unquote));
                        consider(&inner, line_no);
                    }
                }
            }
        }
    }
    best.map(|(_, l)| l)
}

#[cfg(test)]
mod tests {
    use super::locate;

    const T: &str = r#"[site]
name = "x"

[mqtt]
url = "mqtt://h"
[[mqtt.subscriptions]]
topic = "a/{device}"
profile = "p1"
[[mqtt.subscriptions]]
topic = "b/{device}"
profile = "p2"

[[devices]]
id = "m1"
modbus = { url = "tcp://h:502", unit = 1 }
"#;

    #[test]
    fn finds_keys_tables_and_array_items() {
        assert_eq!(locate(T, "site.name"), Some(2));
        assert_eq!(locate(T, "mqtt.url"), Some(5));
        assert_eq!(locate(T, "mqtt.subscriptions[1].profile"), Some(11));
        assert_eq!(locate(T, "mqtt.subscriptions[0].topic"), Some(7));
        assert_eq!(locate(T, "devices[0].modbus.unit"), Some(15));
        // Missing keys fall back to the enclosing table.
        assert_eq!(locate(T, "mqtt.subscriptions[1].qos"), Some(9));
        assert_eq!(locate(T, "nothing.here"), None);
    }
}
