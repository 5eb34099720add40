//! Reading readings back from InfluxDB for `caretaker backtest --from-influx`: through the v1 query API (`POST
//! /query`, form-encoded, InfluxQL) or the v2 query API (`POST /api/v2/query`, Flux, answered in annotated CSV,
//! parsed with the `csv` crate by [`points_of_annotated_csv`]). No InfluxDB 2.x/3.x runs on the test machines:
//! the v2 path is tested on the annotated-CSV sample of InfluxData's documentation
//! (tests/fixtures/influx/flux-annotated-docs.csv) and a multi-table answer of the same documented shape.
//!
//! One query, `SELECT * FROM /.*/ WHERE time >= <from> AND time < <to> GROUP BY "device"`, in nanosecond epochs:
//! every field of every measurement whose series has a `device` tag comes back as one [`Point`] per value.

use super::writer::url_encode;
use serde_json::Value;

/// Where and as whom to query (the v1 API of `[influxdb]`).
#[derive(Debug, Clone, Copy)]
pub struct V1Target<'a> {
    /// Base URL, as for writes.
    pub url: &'a str,
    pub database: &'a str,
    /// Sent only when both are set.
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    /// `[influxdb]` `ca_file` and client certificate (https).
    pub tls: Option<&'a crate::tls::TlsFiles>,
}

/// One value read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Unix nanoseconds.
    pub at: i64,
    /// The series' `device` tag.
    pub device: String,
    /// The field name (the point's name for readings).
    pub point: String,
    pub value: f64,
}

/// The form body of a query: `db`, `q`, `epoch=ns`, then `u` and `p` when both are set.
pub fn form_body(target: &V1Target<'_>, query: &str) -> String {
    let mut body = format!(
        "db={}&q={}&epoch=ns",
        url_encode(target.database),
        url_encode(query)
    );
    if let (Some(u), Some(p)) = (target.username, target.password) {
        body.push_str(&format!("&u={}&p={}", url_encode(u), url_encode(p)));
    }
    body
}

/// The HTTP client of a read: the target's TLS files, or the system's roots (`TlsFiles` empty) without any.
fn client(tls: Option<&crate::tls::TlsFiles>) -> anyhow::Result<reqwest::Client> {
    let none = crate::tls::TlsFiles::default();
    Ok(tls.unwrap_or(&none).http_client_builder()?.build()?)
}

/// Every numeric or boolean field of every series with a `device` tag in `[from_ns, to_ns)`.
pub async fn points_by_device(
    target: &V1Target<'_>,
    from_ns: i64,
    to_ns: i64,
) -> anyhow::Result<Vec<Point>> {
    let client = client(target.tls)?;
    let q = format!(
        "SELECT * FROM /.*/ WHERE time >= {from_ns} AND time < {to_ns} GROUP BY \"device\""
    );
    let resp = client
        .post(format!("{}/query", target.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(target, &q))
        .send()
        .await?;
    let v: Value = serde_json::from_str(&resp.text().await?)?;
    points_of(&v)
}

/// Where and as whom to query the v2 API (`[influxdb] api = "v2"`).
#[derive(Debug, Clone, Copy)]
pub struct V2Target<'a> {
    pub url: &'a str,
    pub org: &'a str,
    pub bucket: &'a str,
    pub token: &'a str,
    pub tls: Option<&'a crate::tls::TlsFiles>,
}

/// The Flux query of [`points_by_device_v2`]: every series with a `device` tag in `[from_ns, to_ns)`.
pub fn flux_query(bucket: &str, from_ns: i64, to_ns: i64) -> String {
    let t = |ns: i64| {
        jiff::Timestamp::from_nanosecond(ns as i128)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    format!(
        "from(bucket: {})\n  |> range(start: {}, stop: {})\n  |> filter(fn: (r) => exists r.device)",
        serde_json::Value::String(bucket.to_string()),
        t(from_ns),
        t(to_ns)
    )
}

/// Every numeric or boolean field of every series with a `device` tag in `[from_ns, to_ns)`, over Flux.
pub async fn points_by_device_v2(
    target: &V2Target<'_>,
    from_ns: i64,
    to_ns: i64,
) -> anyhow::Result<Vec<Point>> {
    let client = client(target.tls)?;
    let body = serde_json::json!({
        "query": flux_query(target.bucket, from_ns, to_ns),
        "type": "flux",
        "dialect": {"header": true, "annotations": ["datatype", "group", "default"]},
    });
    let resp = client
        .post(format!(
            "{}/api/v2/query?org={}",
            target.url,
            url_encode(target.org)
        ))
        .header("authorization", format!("Token {}", target.token))
        .header("content-type", "application/json")
        .header("accept", "application/csv")
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        anyhow::bail!("InfluxDB /api/v2/query answered {status}: {}", text.trim());
    }
    points_of_annotated_csv(&text, "device")
}

/// Parses a Flux answer in annotated CSV: tables of annotation rows (`#datatype`, `#group`, `#default`), a header
/// row and records; a blank line or new annotations start the next table. `_time` (RFC 3339), `_value` (double,
/// long, unsignedLong or boolean; other types skipped) and `_field` make a [`Point`] of the series' `device_tag`
/// column. An `error` column (Flux's error table) becomes `InfluxDB: <error>`.
pub fn points_of_annotated_csv(text: &str, device_tag: &str) -> anyhow::Result<Vec<Point>> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut out = Vec::new();
    let mut datatypes: Vec<String> = Vec::new();
    let mut header: Option<Vec<String>> = None;
    for rec in rdr.records() {
        let rec = rec?;
        let first = rec.get(0).unwrap_or("");
        if rec.iter().all(str::is_empty) {
            header = None;
            continue;
        }
        if first.starts_with('#') {
            if first == "#datatype" {
                datatypes = rec.iter().map(str::to_string).collect();
            }
            header = None;
            continue;
        }
        let Some(h) = &header else {
            header = Some(rec.iter().map(str::to_string).collect());
            continue;
        };
        let col = |name: &str| h.iter().position(|c| c == name);
        if let (Some(e), None) = (col("error"), col("_value")) {
            anyhow::bail!("InfluxDB: {}", rec.get(e).unwrap_or(""));
        }
        let (Some(ct), Some(cv), Some(cf), Some(cd)) =
            (col("_time"), col("_value"), col("_field"), col(device_tag))
        else {
            continue;
        };
        let ty = datatypes.get(cv).map(String::as_str).unwrap_or("double");
        let raw = rec.get(cv).unwrap_or("");
        let value = match ty {
            "boolean" => match raw {
                "true" => Some(1.0),
                "false" => Some(0.0),
                _ => None,
            },
            "double" | "long" | "unsignedLong" => raw.parse::<f64>().ok(),
            _ => None,
        };
        let at = rec
            .get(ct)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_nanosecond() as i64);
        if let (Some(value), Some(at)) = (value.filter(|v| v.is_finite()), at) {
            out.push(Point {
                at,
                device: rec.get(cd).unwrap_or("").to_string(),
                point: rec.get(cf).unwrap_or("").to_string(),
                value,
            });
        }
    }
    Ok(out)
}

/// Parses a query response (`results[0].series[]`, each with `tags.device`, `columns` and `values`, time first).
/// An `error` in the response becomes `InfluxDB: <error>`.
pub fn points_of(v: &Value) -> anyhow::Result<Vec<Point>> {
    if let Some(e) = v["results"][0]["error"].as_str().or(v["error"].as_str()) {
        anyhow::bail!("InfluxDB: {e}");
    }
    let mut points = Vec::new();
    for s in v["results"][0]["series"].as_array().into_iter().flatten() {
        let Some(device) = s["tags"]["device"].as_str() else {
            continue;
        };
        let cols: Vec<&str> = s["columns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str())
            .collect();
        for vals in s["values"].as_array().into_iter().flatten() {
            let vals = vals.as_array().cloned().unwrap_or_default();
            let at = vals.first().and_then(|x| x.as_i64()).unwrap_or(0);
            for (c, x) in cols.iter().zip(vals.iter()).skip(1) {
                let value = match x {
                    Value::Number(n) => n.as_f64(),
                    Value::Bool(b) => Some(f64::from(u8::from(*b))),
                    _ => None,
                };
                // Tags other than device come back as string columns: skipped as non-numbers.
                if let Some(value) = value {
                    points.push(Point {
                        at,
                        device: device.to_string(),
                        point: c.to_string(),
                        value,
                    });
                }
            }
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_is_url_encoded_and_credentials_go_only_as_a_pair() {
        let mut t = V1Target {
            url: "http://x",
            database: "site db",
            username: Some("ana"),
            password: None,
            tls: None,
        };
        assert_eq!(
            form_body(&t, "SELECT * FROM /.*/"),
            "db=site%20db&q=SELECT%20%2A%20FROM%20%2F.%2A%2F&epoch=ns"
        );
        t.password = Some("p&w=1");
        assert_eq!(
            form_body(&t, "q"),
            "db=site%20db&q=q&epoch=ns&u=ana&p=p%26w%3D1"
        );
    }

    #[test]
    fn series_become_points_per_device_and_errors_are_reported() {
        let v: Value = serde_json::from_str(
            r#"{"results":[{"statement_id":0,"series":[
                {"name":"hvac","tags":{"device":"ahu-1"},"columns":["time","building","supply","on"],
                 "values":[[1000,"A",19.5,true],[2000,"A",null,false]]},
                {"name":"other","tags":{"device":""},"columns":["time","x"],"values":[[5,1]]},
                {"name":"untagged","columns":["time","x"],"values":[[5,1]]}]}]}"#,
        )
        .unwrap();
        let p = |at, device: &str, point: &str, value| Point {
            at,
            device: device.into(),
            point: point.into(),
            value,
        };
        assert_eq!(
            points_of(&v).unwrap(),
            [
                p(1000, "ahu-1", "supply", 19.5),
                p(1000, "ahu-1", "on", 1.0),
                p(2000, "ahu-1", "on", 0.0),
                p(5, "", "x", 1.0),
            ]
        );
        let err: Value =
            serde_json::from_str(r#"{"results":[{"error":"database not found: x"}]}"#).unwrap();
        assert_eq!(
            points_of(&err).unwrap_err().to_string(),
            "InfluxDB: database not found: x"
        );
        let err: Value = serde_json::from_str(r#"{"error":"authorization failed"}"#).unwrap();
        assert_eq!(
            points_of(&err).unwrap_err().to_string(),
            "InfluxDB: authorization failed"
        );
    }

    #[test]
    fn annotated_csv_from_influxdatas_docs_parses() {
        // The example of https://docs.influxdata.com/influxdb/v2/reference/syntax/annotated-csv/ (no server here
        // speaks Flux), with its `host` tag as the device.
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/influx/flux-annotated-docs.csv"
        ))
        .unwrap();
        let p = points_of_annotated_csv(&text, "host").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].device, "A");
        assert_eq!(p[0].point, "mem");
        assert_eq!(p[0].value, 15.43);
        assert_eq!(p[0].at, 1_672_534_320_000_000_000);
        assert_eq!(p[2].device, "C");
        assert!(points_of_annotated_csv(&text, "device").unwrap().is_empty());
    }

    #[test]
    fn annotated_csv_with_several_tables_types_and_an_error_table() {
        let text = "#group,false,false,true,true,false,false,true,true,true\r\n\
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string\r\n\
#default,_result,,,,,,,,\r\n\
,result,table,_start,_stop,_time,_value,_field,_measurement,device\r\n\
,,0,2026-01-12T00:00:00Z,2026-01-13T00:00:00Z,2026-01-12T00:00:00.5Z,21.5,temperature,environment,\"room, 1\"\r\n\
\r\n\
#group,false,false,true,true,false,false,true,true,true\r\n\
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,boolean,string,string,string\r\n\
#default,_result,,,,,,,,\r\n\
,result,table,_start,_stop,_time,_value,_field,_measurement,device\r\n\
,,1,2026-01-12T00:00:00Z,2026-01-13T00:00:00Z,2026-01-12T01:00:00Z,true,water_leak,water,leak-1\r\n\
,,1,2026-01-12T00:00:00Z,2026-01-13T00:00:00Z,2026-01-12T02:00:00Z,false,water_leak,water,leak-1\r\n\
\r\n\
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,string,string,string,string\r\n\
,result,table,_start,_stop,_time,_value,_field,_measurement,device\r\n\
,,2,2026-01-12T00:00:00Z,2026-01-13T00:00:00Z,2026-01-12T02:00:00Z,hello,note,other,x\r\n";
        let p = points_of_annotated_csv(text, "device").unwrap();
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[0].device, "room, 1");
        assert_eq!(p[0].at, 1_768_176_000_500_000_000);
        assert_eq!((p[1].value, p[2].value), (1.0, 0.0));
        let e = points_of_annotated_csv(
            "#datatype,string,string\n,error,reference\n,bucket not found,\n",
            "device",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "InfluxDB: bucket not found");
        assert!(flux_query("b\"x", 0, 1_000_000_000).contains("from(bucket: \"b\\\"x\")"));
    }
}
