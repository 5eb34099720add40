//! CSV in and out, on the `csv` crate: the one reader of every CSV a command takes (`energy import`, `backtest`,
//! `detect`) and the one writer of every CSV it prints (energy reports, work-order lists).
//!
//! What the reader accepts, because real meter and BMS exports look like this:
//! - quoted fields (`"12,5"`, `"Hall ""A"""`), a UTF-8 byte-order mark, CRLF line ends, `#` comment lines, blank
//!   lines, and files that are not UTF-8 (read as Latin-1, which is what Windows tools write for `Zählerstand`);
//! - `,`, `;` or tab as the separator and `.` or `,` as the decimal mark, detected from the first lines unless the
//!   caller says ([`Options::delimiter`], [`Options::decimal`]): `2026-01-05 10:00;12345,6` reads as 12345.6, and
//!   so does `12.345,6`; `1,234.5` with a `.` decimal mark is 1234.5 (a digit group of three, never `1,5`);
//! - dates as RFC 3339 with an offset, Unix seconds or milliseconds, civil ISO `2026-01-05 10:00[:00]` (`T` or a
//!   space), `2026/01/05 10:00`, a bare date, and `05.01.2026 10:00[:00]` (DD.MM.YYYY): civil times are read in
//!   the zone the caller gives;
//! - columns found by header name, with a mapping (`--columns time=Zeitstempel,value=Zählerstand`).
//!
//! Lines that cannot be read are returned as [`Rejected`] (line number and reason) beside the good ones: the
//! caller imports what is good and lists every rejected line.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use std::path::Path;

/// How a caller wants a CSV read; `None` means "detect from the file".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// Field separator: `,`, `;` or `\t`.
    pub delimiter: Option<u8>,
    /// Decimal mark: `.` or `,`.
    pub decimal: Option<u8>,
    /// Column name → header text in the file (`time=Zeitstempel`).
    pub columns: Vec<(String, String)>,
}

impl Options {
    /// Parses `--delimiter` (`,` `;` `tab` `\t`).
    pub fn parse_delimiter(s: &str) -> Result<u8, String> {
        match s {
            "," | "comma" => Ok(b','),
            ";" | "semicolon" => Ok(b';'),
            "\t" | "\\t" | "tab" => Ok(b'\t'),
            _ => Err(format!("--delimiter `{s}`: expected `,`, `;` or `tab`")),
        }
    }

    /// Parses `--decimal` (`.` or `,`).
    pub fn parse_decimal(s: &str) -> Result<u8, String> {
        match s {
            "." | "point" => Ok(b'.'),
            "," | "comma" => Ok(b','),
            _ => Err(format!("--decimal `{s}`: expected `.` or `,`")),
        }
    }

    /// Splits `--columns` items into mappings (`name=Header`, returned in `columns`) and plain names (returned).
    /// Items may also be given comma-separated in one argument.
    pub fn parse_columns(&mut self, items: &[String]) -> Result<Vec<String>, String> {
        let mut plain = Vec::new();
        for item in items.iter().flat_map(|s| s.split(',')) {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!(
                    "--columns: empty column name in `{}`",
                    items.join(",")
                ));
            }
            match item.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                    let k = canonical_name(k.trim());
                    if self.columns.iter().any(|(c, _)| *c == k) {
                        return Err(format!("--columns: `{k}` mapped twice"));
                    }
                    self.columns.push((k, v.trim().to_string()));
                }
                Some(_) => return Err(format!("--columns `{item}`: expected NAME=HEADER")),
                None => plain.push(item.to_string()),
            }
        }
        Ok(plain)
    }

    /// The header text `name` is mapped to, if any.
    pub fn mapped(&self, name: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `time` and `timestamp` name the same column.
fn canonical_name(k: &str) -> String {
    match k {
        "time" | "ts" => "timestamp".into(),
        _ => k.to_string(),
    }
}

/// The separator and decimal mark a file was read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    pub delimiter: u8,
    pub decimal: u8,
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = match self.delimiter {
            b'\t' => "tab".to_string(),
            c => format!("`{}`", c as char),
        };
        write!(f, "separator {d}, decimal mark `{}`", self.decimal as char)
    }
}

/// One line that could not be used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub line: u64,
    pub reason: String,
}

/// One record with the line it starts on (1-based, as an editor counts).
#[derive(Debug, Clone)]
pub struct Record {
    pub line: u64,
    pub fields: Vec<String>,
}

impl Record {
    /// Field `i`, or "" when the line is short.
    pub fn get(&self, i: usize) -> &str {
        self.fields.get(i).map(String::as_str).unwrap_or("")
    }
}

/// A whole file: every record (the header too, if any: the caller decides), plus lines the CSV reader refused.
#[derive(Debug, Clone)]
pub struct Sheet {
    pub dialect: Dialect,
    pub records: Vec<Record>,
    pub rejected: Vec<Rejected>,
}

impl Sheet {
    /// Parses a number with this file's decimal mark.
    pub fn number(&self, s: &str) -> Option<f64> {
        parse_number(s, self.dialect.decimal)
    }
}

/// Reads a file as text: UTF-8 (a BOM dropped), else Latin-1.
pub fn read_file(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => e.into_bytes().iter().map(|&b| b as char).collect(),
    })
}

/// Reads CSV text into records.
pub fn read(text: &str, opts: &Options) -> Sheet {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let delimiter = opts.delimiter.unwrap_or_else(|| detect_delimiter(text));
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    // Line numbers from byte offsets: the reader's own line count is one short after a CRLF line end.
    let newlines: Vec<usize> = text
        .bytes()
        .enumerate()
        .filter(|&(_, b)| b == b'\n')
        .map(|(i, _)| i)
        .collect();
    let bytes = text.as_bytes();
    let line_at = |pos: Option<&csv::Position>, fallback: u64| -> u64 {
        let Some(p) = pos else { return fallback };
        let mut b = p.byte() as usize;
        while b < bytes.len() && matches!(bytes[b], b'\r' | b'\n') {
            b += 1;
        }
        newlines.partition_point(|&n| n < b) as u64 + 1
    };
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {
                let line = line_at(rec.position(), 0);
                if rec.iter().all(str::is_empty) {
                    continue;
                }
                records.push(Record {
                    line,
                    fields: rec.iter().map(str::to_string).collect(),
                });
            }
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                let line = line_at(e.position(), line);
                rejected.push(Rejected {
                    line,
                    reason: format!("not readable as CSV: {e}"),
                });
                if !matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                    break;
                }
            }
        }
    }
    let decimal = opts.decimal.unwrap_or_else(|| detect_decimal(&records));
    Sheet {
        dialect: Dialect { delimiter, decimal },
        records,
        rejected,
    }
}

/// Counts a byte outside double quotes.
fn count_unquoted(line: &str, c: u8) -> usize {
    let mut quoted = false;
    let mut n = 0;
    for &b in line.as_bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if b == c && !quoted {
            n += 1;
        }
    }
    n
}

/// `;` when it appears the same number of times on every one of the first lines, else tab likewise, else `,`.
/// (`2026-01-05 10:00;12345,6` has one of each: a `;` on every line is the European export's mark.)
fn detect_delimiter(text: &str) -> u8 {
    let sample: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .take(20)
        .collect();
    for c in [b';', b'\t'] {
        let counts: Vec<usize> = sample.iter().map(|l| count_unquoted(l, c)).collect();
        if let Some(&first) = counts.first()
            && first > 0
            && counts.iter().all(|&n| n == first)
        {
            return c;
        }
    }
    b','
}

/// `,` when the numbers of the first rows use a decimal comma (`12345,6`, `12.345,6`) more often than a point.
fn detect_decimal(records: &[Record]) -> u8 {
    let (mut comma, mut point) = (0, 0);
    for r in records.iter().take(50) {
        for f in &r.fields {
            match vote(f) {
                Some(b',') => comma += 1,
                Some(_) => point += 1,
                None => {}
            }
        }
    }
    if comma > point { b',' } else { b'.' }
}

/// Which decimal mark a number-like cell uses, if it tells.
fn vote(f: &str) -> Option<u8> {
    let f = f.trim();
    if !f.bytes().any(|b| b.is_ascii_digit())
        || !f
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b',' | b'-' | b'+' | b' '))
    {
        return None;
    }
    let (c, p) = (f.matches(',').count(), f.matches('.').count());
    match (c, p) {
        (0, 1) => Some(b'.'),
        (1, 0) => {
            // `1,234` alone is a thousands group as often as a decimal: only a non-group comma votes.
            let frac = f.rsplit(',').next().unwrap_or("");
            (frac.len() != 3).then_some(b',')
        }
        (0, _) | (_, 0) => None,
        _ => Some(if f.rfind(',') > f.rfind('.') {
            b','
        } else {
            b'.'
        }),
    }
}

/// True when `s` is digits in groups of three after a first group of one to three, split by `sep`.
fn grouped(s: &str, sep: char) -> bool {
    let s = s.trim_start_matches(['-', '+']);
    let mut parts = s.split(sep);
    let first = parts.next().unwrap_or("");
    let mut any = false;
    let ok_first = (1..=3).contains(&first.len()) && first.bytes().all(|b| b.is_ascii_digit());
    let ok_rest = parts.all(|p| {
        any = true;
        p.len() == 3 && p.bytes().all(|b| b.is_ascii_digit())
    });
    ok_first && ok_rest && any
}

/// Parses a number with the given decimal mark, allowing digit-group separators (`12.345,6`, `1,234.5`,
/// `12 345,6`). `true`/`false` are 1 and 0. Rejects NaN and infinities.
pub fn parse_number(s: &str, decimal: u8) -> Option<f64> {
    let s = s.trim();
    match s {
        "true" | "TRUE" | "True" => return Some(1.0),
        "false" | "FALSE" | "False" => return Some(0.0),
        _ => {}
    }
    let s: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '\''))
        .collect();
    let (group, dec) = if decimal == b',' {
        ('.', ',')
    } else {
        (',', '.')
    };
    let (int, frac) = match s.rsplit_once(dec) {
        Some((i, f)) => (i.to_string(), Some(f)),
        None => (s.clone(), None),
    };
    let int = if int.contains(group) {
        if !grouped(&int, group) {
            return None;
        }
        int.replace(group, "")
    } else {
        int
    };
    let text = match frac {
        Some(f) => format!("{int}.{f}"),
        None => int,
    };
    // Only plain decimal notation (with an exponent): Rust would also read `inf` and `NaN`.
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Parses a timestamp cell (see the module docs) into an instant; civil times are read in `tz` (the earlier
/// instant in a DST fold).
pub fn parse_time(s: &str, tz: &TimeZone) -> Option<Timestamp> {
    let s = s.trim().trim_matches('"').trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Some(ts);
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        && let Ok(n) = s.parse::<f64>()
    {
        // Unix seconds, or milliseconds when clearly too large for seconds.
        let secs = if n.abs() > 1e11 { n / 1000.0 } else { n };
        return Timestamp::from_nanosecond((secs * 1e9).round() as i128).ok();
    }
    let civil = civil_iso(s)?;
    let dt = if civil.len() <= 10 {
        civil
            .parse::<jiff::civil::Date>()
            .ok()?
            .to_datetime(jiff::civil::Time::midnight())
    } else {
        civil.parse::<jiff::civil::DateTime>().ok()?
    };
    tz.to_ambiguous_timestamp(dt).compatible().ok()
}

/// Rewrites a civil date/time into ISO `YYYY-MM-DDTHH:MM[:SS]`: `DD.MM.YYYY`, `YYYY/MM/DD`, a space for `T`.
fn civil_iso(s: &str) -> Option<String> {
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t.trim())),
        None => (s, None),
    };
    let date = if let [d, m, y] = date.split('.').collect::<Vec<_>>()[..] {
        if y.len() != 4 || d.is_empty() || d.len() > 2 || m.is_empty() || m.len() > 2 {
            return None;
        }
        format!("{y}-{m:0>2}-{d:0>2}")
    } else if date.len() == 10 && date.as_bytes()[4] == b'/' {
        date.replace('/', "-")
    } else {
        date.to_string()
    };
    Some(match time {
        Some(t) if !t.is_empty() => {
            let t = if t.len() == 4 && t.as_bytes()[1] == b':' {
                format!("0{t}")
            } else {
                t.to_string()
            };
            format!("{date}T{t}")
        }
        _ => date,
    })
}

/// Finds the column for `name` in a header: the mapped header text if `opts` maps it, else the first of
/// `aliases` present (case-insensitive). The error names what was looked for and what the header has.
pub fn find_column(
    header: &Record,
    opts: &Options,
    name: &str,
    aliases: &[&str],
) -> Result<usize, String> {
    let eq = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
    if let Some(h) = opts.mapped(name) {
        return header.fields.iter().position(|f| eq(f, h)).ok_or_else(|| {
            format!(
                "--columns {name}={h}: no column `{h}` in the header (found: {})",
                header.fields.join(", ")
            )
        });
    }
    aliases
        .iter()
        .find_map(|a| header.fields.iter().position(|f| eq(f, a)))
        .ok_or_else(|| {
            format!(
                "no `{name}` column in the header (found: {}; map one with --columns {name}=HEADER)",
                header.fields.join(", ")
            )
        })
}

/// A CSV writer into a `String`: `,` separated, `\n` line ends, quotes only where needed (a field with `,`, `"`,
/// a line break). The energy report's CSV, which the API serves byte for byte, is written with it.
pub struct Writer {
    w: csv::Writer<Vec<u8>>,
}

impl Default for Writer {
    fn default() -> Self {
        Writer::new()
    }
}

impl Writer {
    pub fn new() -> Writer {
        Writer {
            w: csv::WriterBuilder::new()
                .terminator(csv::Terminator::Any(b'\n'))
                .flexible(true)
                .from_writer(Vec::new()),
        }
    }

    /// Writes one record.
    pub fn row<I, T>(&mut self, fields: I)
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        // Writing into a Vec cannot fail.
        let _ = self.w.write_record(fields);
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        let bytes = self.w.into_inner().unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }
}

/// One field quoted as the writer would (for lines built by hand around streamed numbers).
pub fn field(s: &str) -> String {
    let mut w = Writer::new();
    w.row([s]);
    let mut out = w.finish();
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    #[test]
    fn german_export_with_semicolons_decimal_commas_and_dd_mm_yyyy() {
        let text = "\u{feff}Zeitstempel;Zählerstand\r\n05.01.2026 10:00;12345,6\r\n05.01.2026 10:15;12.346,1\r\n";
        let s = read(text, &Options::default());
        assert_eq!(
            s.dialect,
            Dialect {
                delimiter: b';',
                decimal: b','
            }
        );
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.records[0].fields, ["Zeitstempel", "Zählerstand"]);
        assert_eq!(s.records[1].line, 2);
        assert_eq!(s.number(s.records[1].get(1)), Some(12345.6));
        assert_eq!(s.number(s.records[2].get(1)), Some(12346.1));
        let t = parse_time(s.records[1].get(0), &utc()).unwrap();
        assert_eq!(t.to_string(), "2026-01-05T10:00:00Z");
    }

    #[test]
    fn headerless_semicolon_line_is_not_split_on_its_decimal_comma() {
        let s = read("2026-01-05 10:00;12345,6\n", &Options::default());
        assert_eq!(s.dialect.delimiter, b';');
        assert_eq!(s.dialect.decimal, b',');
        assert_eq!(s.number(s.records[0].get(1)), Some(12345.6));
    }

    #[test]
    fn quoted_fields_keep_their_commas_and_quotes() {
        let text =
            "time,device,note,value\n2026-01-05T10:00:00Z,\"Hall \"\"A\"\", east\",x,\"1,234.5\"\n";
        let s = read(text, &Options::default());
        assert_eq!(s.dialect.delimiter, b',');
        assert_eq!(s.records[1].get(1), "Hall \"A\", east");
        assert_eq!(s.number(s.records[1].get(3)), Some(1234.5));
    }

    #[test]
    fn explicit_options_override_detection() {
        let opts = Options {
            delimiter: Some(b','),
            decimal: Some(b'.'),
            ..Default::default()
        };
        let s = read("a;b\n1;2\n", &opts);
        assert_eq!(s.records[0].fields, ["a;b"]);
        assert_eq!(Options::parse_delimiter("tab"), Ok(b'\t'));
        assert!(Options::parse_delimiter("|").is_err());
    }

    #[test]
    fn numbers_by_decimal_mark() {
        assert_eq!(parse_number("12345,6", b','), Some(12345.6));
        assert_eq!(parse_number("12.345,6", b','), Some(12345.6));
        assert_eq!(parse_number("12 345,6", b','), Some(12345.6));
        assert_eq!(parse_number("-0,5", b','), Some(-0.5));
        assert_eq!(parse_number("1,234.5", b'.'), Some(1234.5));
        assert_eq!(parse_number("1,5", b'.'), None);
        assert_eq!(parse_number("1.5", b'.'), Some(1.5));
        assert_eq!(parse_number("1e3", b'.'), Some(1000.0));
        assert_eq!(parse_number("NaN", b'.'), None);
        assert_eq!(parse_number("inf", b'.'), None);
        assert_eq!(parse_number("", b'.'), None);
        assert_eq!(parse_number("true", b'.'), Some(1.0));
    }

    #[test]
    fn times_in_every_accepted_form() {
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let at = |s: &str| parse_time(s, &tz).map(|t| t.to_string());
        let want = Some("2026-01-05T09:00:00Z".to_string());
        assert_eq!(at("2026-01-05 10:00"), want);
        assert_eq!(at("2026-01-05T10:00:00"), want);
        assert_eq!(at("05.01.2026 10:00"), want);
        assert_eq!(at("5.1.2026 10:00:00"), want);
        assert_eq!(at("2026/01/05 10:00"), want);
        assert_eq!(at("2026-01-05T09:00:00Z"), want);
        assert_eq!(at("2026-01-05T10:00:00+01:00"), want);
        assert_eq!(at("1767603600"), want);
        assert_eq!(at("1767603600000"), want);
        assert_eq!(at("05.01.2026"), Some("2026-01-04T23:00:00Z".into()));
        assert_eq!(at("05.13.2026 10:00"), None);
        assert_eq!(at("yesterday"), None);
        assert_eq!(at(""), None);
    }

    #[test]
    fn column_mapping_and_aliases() {
        let mut opts = Options::default();
        let plain = opts
            .parse_columns(&["time=Zeitstempel,value=Zählerstand".into(), "x".into()])
            .unwrap();
        assert_eq!(plain, ["x"]);
        let header = Record {
            line: 1,
            fields: vec!["Zeitstempel".into(), "Zählerstand".into()],
        };
        assert_eq!(
            find_column(&header, &opts, "timestamp", &["timestamp"]),
            Ok(0)
        );
        assert_eq!(find_column(&header, &opts, "value", &["value"]), Ok(1));
        let e = find_column(&header, &Options::default(), "value", &["value"]).unwrap_err();
        assert!(e.contains("--columns value=HEADER"), "{e}");
        assert!(opts.parse_columns(&["value=".into()]).is_err());
        assert!(opts.parse_columns(&["value=Other".into()]).is_err());
    }

    #[test]
    fn writer_quotes_only_where_needed() {
        let mut w = Writer::new();
        w.row(["a", "b,c", "say \"hi\"", ""]);
        assert_eq!(w.finish(), "a,\"b,c\",\"say \"\"hi\"\"\",\n");
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("x,y"), "\"x,y\"");
    }

    #[test]
    fn latin1_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.csv");
        std::fs::write(&p, b"Z\xe4hlerstand;x\n").unwrap();
        assert_eq!(read_file(&p).unwrap(), "Zählerstand;x\n");
    }
}
