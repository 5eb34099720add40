//! Reading readings back from InfluxDB through the v1 query API (`POST /query`, form-encoded), for
//! `caretaker backtest --from-influx`.
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

/// Every numeric or boolean field of every series with a `device` tag in `[from_ns, to_ns)`.
pub async fn points_by_device(
    target: &V1Target<'_>,
    from_ns: i64,
    to_ns: i64,
) -> anyhow::Result<Vec<Point>> {
    let client = match target.tls {
        Some(t) => t.http_client_builder()?.build()?,
        None => {
            crate::tls::install_default_provider();
            reqwest::Client::new()
        }
    };
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
}
