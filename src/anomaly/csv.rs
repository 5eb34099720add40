//! `caretaker detect`: score a `timestamp,value` CSV offline with the same detector the daemon runs.
//!
//! Input: a header row naming `timestamp` and `value` (in that order, extra columns ignored), then one row per
//! reading; timestamps like `2014-04-01 00:00:00` (also `T` separator, fractional seconds, trailing `Z`, or plain
//! epoch seconds). Output: `timestamp,value,anomaly_score`, one row per input row, in input order; the timestamp
//! and value fields are copied byte for byte. Rows are processed in file order, whatever the clock says.
//!
//! The whole file is read into memory and parsed with the `csv` crate through [`crate::tabular`] (quotes, a BOM,
//! `;` and decimal commas detected, `--columns timestamp=Zeit,value=Wert` maps header names). Unlike `energy
//! import`, a bad row stops the run with its line: the scores are one row per input row.

use super::detector::{Detector, Kind, Params};
use super::equipment;
use crate::tabular;
use std::io::Write;
use std::path::Path;

/// A bad input row, named by file and line.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("cannot {what} {file}: {err}")]
    Io {
        what: &'static str,
        file: String,
        err: std::io::Error,
    },
    #[error("{file}:{line}: {msg}")]
    Row {
        file: String,
        line: usize,
        msg: String,
    },
}

/// Parses `YYYY-MM-DD[ T]HH:MM:SS[.frac][Z]` or epoch seconds into seconds since 1970-01-01 (UTC, no zone).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() >= 19 && b[4] == b'-' && b[7] == b'-' && (b[10] == b' ' || b[10] == b'T') {
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let mut v = 0i64;
            for &c in &b[r] {
                if !c.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + (c - b'0') as i64;
            }
            Some(v)
        };
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
            return None;
        }
        let rest = &b[19..];
        let ok_rest = rest.is_empty()
            || rest == b"Z"
            || (rest[0] == b'.'
                && rest[1..]
                    .iter()
                    .enumerate()
                    .all(|(i, c)| c.is_ascii_digit() || (*c == b'Z' && i == rest.len() - 2)));
        if !ok_rest {
            return None;
        }
        Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
    } else {
        let f: f64 = s.trim().parse().ok()?;
        f.is_finite().then_some(f as i64)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Which score `caretaker detect` writes (`--output-score`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputScore {
    /// The event score: high on the row where something unusual starts, then quiet (NAB-style, the default).
    #[default]
    Event,
    /// The sustained anomaly level: high on every row while the behaviour stays unusual (for benchmarks and
    /// users that label every anomalous row).
    Level,
}

impl OutputScore {
    pub const NAMES: &'static [&'static str] = &["event", "level"];

    pub fn parse(name: &str) -> Option<OutputScore> {
        match name {
            "event" => Some(OutputScore::Event),
            "level" => Some(OutputScore::Level),
            _ => None,
        }
    }
}

/// What `caretaker detect` runs and writes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub kind: Kind,
    pub params: Params,
    pub output: OutputScore,
    /// Empty: one `value` column through the point detector. Otherwise the named columns of a multi-column file,
    /// judged together by the equipment model (the daemon's `equipment_anomaly`).
    pub columns: Vec<String>,
    /// Separator, decimal mark and the `timestamp=`/`value=` header mapping of `--columns`.
    pub csv: tabular::Options,
}

/// Scores `input` into `output`; returns the number of rows written.
pub fn detect_file(input: &Path, output: &Path, opts: &Options) -> Result<usize, DetectError> {
    let file = input.display().to_string();
    let text = std::fs::read_to_string(input).map_err(|err| DetectError::Io {
        what: "read",
        file: file.clone(),
        err,
    })?;
    // Written next to the output and renamed at the end: a failed run leaves no half-written scores file.
    let tmp = output.with_file_name(format!(
        ".{}.partial",
        output
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let out = std::fs::File::create(&tmp).map_err(|err| DetectError::Io {
        what: "create",
        file: output.display().to_string(),
        err,
    })?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    let result = detect_text(&text, &file, &mut w, opts).and_then(|n| {
        w.flush()
            .and_then(|_| std::fs::rename(&tmp, output))
            .map_err(|err| DetectError::Io {
                what: "write",
                file: output.display().to_string(),
                err,
            })?;
        Ok(n)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let n = result?;
    Ok(n)
}

/// Scores CSV text (see the module docs) into `w`.
pub fn detect_text(
    text: &str,
    file: &str,
    w: &mut impl Write,
    opts: &Options,
) -> Result<usize, DetectError> {
    let err = |line: u64, msg: String| DetectError::Row {
        file: file.to_string(),
        line: line as usize,
        msg,
    };
    let io = |err| DetectError::Io {
        what: "write the scores of",
        file: file.to_string(),
        err,
    };
    let sheet = tabular::read(text, &opts.csv);
    // Scores are one row per input row: a line that is not CSV stops the run rather than shifting them.
    if let Some(r) = sheet.rejected.first() {
        return Err(err(r.line, r.reason.clone()));
    }
    let Some(header) = sheet.records.first() else {
        return Err(err(
            1,
            "empty file: expected a `timestamp,value` header".into(),
        ));
    };
    let equipment = !opts.columns.is_empty();
    let hl = header.line;
    let ct = match tabular::find_column(header, &opts.csv, "timestamp", &["timestamp"]) {
        Ok(c) => c,
        // The equipment form takes the first column as the time, whatever its name.
        Err(_) if equipment && opts.csv.mapped("timestamp").is_none() => 0,
        Err(e) => {
            return Err(err(
                hl,
                format!(
                    "expected the header `timestamp,value`, found `{}` ({e}; for several columns use --columns a,b,c)",
                    header.fields.join(",")
                ),
            ));
        }
    };
    let mut idx = Vec::new();
    if equipment {
        if opts.columns.len() > equipment::MAX_DIMS {
            return Err(err(
                hl,
                format!(
                    "--columns: at most {} columns can be judged together, got {}",
                    equipment::MAX_DIMS,
                    opts.columns.len()
                ),
            ));
        }
        for c in &opts.columns {
            let Some(j) = (0..header.fields.len()).find(|&j| j != ct && header.fields[j] == *c)
            else {
                let others: Vec<&str> = (0..header.fields.len())
                    .filter(|&j| j != ct)
                    .map(|j| header.get(j))
                    .collect();
                return Err(err(
                    hl,
                    format!(
                        "--columns: no column `{c}` in the header (columns after the timestamp: {})",
                        others.join(", ")
                    ),
                ));
            };
            if idx.contains(&j) {
                return Err(err(hl, format!("--columns: `{c}` named twice")));
            }
            idx.push(j);
        }
        w.write_all(tabular::field(header.get(ct)).as_bytes())
            .map_err(io)?;
        for c in &opts.columns {
            w.write_all(b",").map_err(io)?;
            w.write_all(tabular::field(c).as_bytes()).map_err(io)?;
        }
        w.write_all(b",anomaly_score\n").map_err(io)?;
    } else {
        let cv = tabular::find_column(header, &opts.csv, "value", &["value"]).map_err(|e| {
            err(
                hl,
                format!(
                    "expected the header `timestamp,value`, found `{}` ({e}; for several columns use --columns a,b,c)",
                    header.fields.join(",")
                ),
            )
        })?;
        idx.push(cv);
        w.write_all(b"timestamp,value,anomaly_score\n")
            .map_err(io)?;
    }
    let need = idx.iter().copied().chain([ct]).max().unwrap_or(0);
    let mut det = Detector::new(opts.kind, opts.params);
    let mut eq = equipment::EquipmentDetector::new(equipment::STATES, equipment::TRAIN_ROWS);
    let mut hold = 0.0f64;
    let (gain, decay) = (opts.params.hold_gain, opts.params.hold_decay);
    let mut row = vec![0.0; idx.len()];
    let mut rows = 0usize;
    let mut buf = ryu::Buffer::new();
    let tz = jiff::tz::TimeZone::UTC;
    for r in &sheet.records[1..] {
        if r.fields.len() <= need {
            return Err(err(
                r.line,
                format!(
                    "expected at least {} fields, found {} in `{}`",
                    need + 1,
                    r.fields.len(),
                    r.fields.join(",")
                ),
            ));
        }
        let ts = r.get(ct);
        let at = parse_timestamp(ts)
            .or_else(|| tabular::parse_time(ts, &tz).map(|t| t.as_second()))
            .ok_or_else(|| {
                err(
                    r.line,
                    format!("bad timestamp `{ts}` (expected e.g. `2014-04-01 00:00:00`)"),
                )
            })?;
        for (k, &j) in idx.iter().enumerate() {
            let v = r.get(j);
            row[k] = sheet.number(v).ok_or_else(|| {
                let what = if equipment {
                    format!(" in column `{}`", opts.columns[k])
                } else {
                    String::new()
                };
                err(r.line, format!("bad value `{v}`{what} (expected a number)"))
            })?;
        }
        let score = if equipment {
            match (opts.output, eq.observe(&row)) {
                (_, None) => 0.0,
                (OutputScore::Level, Some(s)) => s.score,
                (OutputScore::Event, Some(s)) => {
                    // On the unclamped surprise, so a saturated score (1.0) cannot fire row after row.
                    let ev = if s.surprise > hold {
                        hold = s.surprise * gain;
                        s.score
                    } else {
                        0.0
                    };
                    hold *= decay;
                    ev
                }
            }
        } else {
            let s = det.observe(at, row[0]);
            match opts.output {
                OutputScore::Event => s.score,
                OutputScore::Level => s.level,
            }
        };
        w.write_all(tabular::field(ts).as_bytes()).map_err(io)?;
        for &j in &idx {
            w.write_all(b",").map_err(io)?;
            w.write_all(tabular::field(r.get(j)).as_bytes())
                .map_err(io)?;
        }
        w.write_all(b",").map_err(io)?;
        write_score(w, &mut buf, score).map_err(io)?;
        w.write_all(b"\n").map_err(io)?;
        rows += 1;
    }
    Ok(rows)
}

fn write_score(w: &mut impl Write, buf: &mut ryu::Buffer, s: f64) -> std::io::Result<()> {
    if s == 0.0 {
        w.write_all(b"0")
    } else {
        w.write_all(buf.format(s).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_seconds() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp("2014-04-01 00:00:00"), Some(1_396_310_400));
        assert_eq!(
            parse_timestamp("2014-04-10 07:15:00.000000"),
            Some(1_397_114_100)
        );
        assert_eq!(parse_timestamp("2014-04-01T00:00:01Z"), Some(1_396_310_401));
        assert_eq!(parse_timestamp("1396310400"), Some(1_396_310_400));
        assert_eq!(parse_timestamp("2014-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn one_output_row_per_input_row_and_errors_name_the_line() {
        let mut text = String::from("timestamp,value\n");
        for i in 0..500 {
            text += &format!(
                "2014-04-01 {:02}:{:02}:00,{}\n",
                (i / 60) % 24,
                i % 60,
                i % 7
            );
        }
        let mut out = Vec::new();
        let n = detect_text(&text, "t.csv", &mut out, &Options::default()).unwrap();
        assert_eq!(n, 500);
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "timestamp,value,anomaly_score");
        assert_eq!(lines.len(), 501);
        assert!(lines[1].starts_with("2014-04-01 00:00:00,0,"));
        for l in &lines[1..] {
            let s: f64 = l.rsplit(',').next().unwrap().parse().unwrap();
            assert!((0.0..=1.0).contains(&s), "{l}");
        }

        let bad = "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,abc\n";
        let e = detect_text(bad, "t.csv", &mut Vec::new(), &Options::default())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "t.csv:3: bad value `abc` (expected a number)");
        let e = detect_text("tim,v\n", "t.csv", &mut Vec::new(), &Options::default())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.csv:1: expected the header"), "{e}");
    }
}
