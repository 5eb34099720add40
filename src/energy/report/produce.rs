//! One report, from arguments to text: what `caretaker energy report` prints and `GET /api/v1/energy/report`
//! returns, byte for byte, for the same arguments (the CLI adds a final newline when the text has none).

use super::{By, Group, Query, build, html, parse_day, to_csv, to_json, to_table};
use crate::energy::config::EnergyConfig;
use crate::energy::store::Store;
use jiff::tz::TimeZone;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Html,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "table" => Format::Table,
            "csv" => Format::Csv,
            "json" => Format::Json,
            "html" => Format::Html,
            _ => return None,
        })
    }
    /// The HTTP content type of the rendered text.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Table => "text/plain; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Html => "text/html; charset=utf-8",
        }
    }
}

/// The arguments of a report, as given (days in the site's time zone).
#[derive(Debug, Clone)]
pub struct Request {
    /// First day; default 30 days before `to`.
    pub from: Option<String>,
    /// Last day, included; default yesterday.
    pub to: Option<String>,
    pub by: By,
    /// device, category, or a location tag.
    pub group: String,
    pub format: Format,
    /// Only these devices or virtual meters (empty: all).
    pub devices: Vec<String>,
}

/// The rendered report and its row count.
#[derive(Debug, Clone)]
pub struct Produced {
    pub text: String,
    pub rows: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// An argument is wrong: `field` is its name (`from`, `to`).
    #[error("{message}")]
    Bad {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Builds and renders a report. `progress(k, n)` is called as meters are read.
pub fn produce(
    store: &Store,
    cfg: &EnergyConfig,
    tz: &TimeZone,
    site: &str,
    r: &Request,
    progress: Option<&mut dyn FnMut(usize, usize)>,
) -> Result<Produced, ProduceError> {
    let bad = |field: &'static str, e: anyhow::Error| ProduceError::Bad {
        field,
        message: e.to_string(),
    };
    let today = jiff::Timestamp::now().to_zoned_datetime(tz.clone()).date();
    let to = match &r.to {
        Some(s) => parse_day(s, "--to").map_err(|e| bad("to", e))?,
        None => today.yesterday().map_err(anyhow::Error::from)?,
    };
    let from = match &r.from {
        Some(s) => parse_day(s, "--from").map_err(|e| bad("from", e))?,
        None => to
            .checked_sub(jiff::Span::new().days(29))
            .map_err(anyhow::Error::from)?,
    };
    if to < from {
        return Err(ProduceError::Bad {
            field: "to",
            message: format!("--to {to} is before --from {from}"),
        });
    }
    let q = Query {
        from,
        to: to.tomorrow().map_err(|e| bad("to", e.into()))?,
        by: r.by,
        group: Group::parse(&r.group),
        devices: (!r.devices.is_empty()).then(|| r.devices.clone()),
    };
    let mut rep = build(store, cfg, tz, &q, progress)?;
    rep.meta.site = site.to_string();
    let text = match r.format {
        Format::Json => to_json(&rep),
        Format::Csv => to_csv(&rep),
        Format::Table => {
            let by = format!("{:?}", r.by).to_lowercase();
            let mut s = format!(
                "{}  {from} .. {to} (through the end of {to})  by {by}, per {}\n",
                rep.meta.site,
                q.group.name()
            );
            if rep.rows.is_empty() {
                let at = |t: i64| {
                    jiff::Timestamp::from_second(t)
                        .map(|t| {
                            t.to_zoned_datetime(tz.clone())
                                .strftime("%Y-%m-%d %H:%M")
                                .to_string()
                        })
                        .unwrap_or_default()
                };
                match store.data_range()? {
                    Some((a, b)) => s.push_str(&format!(
                        "no data in this range; the store holds {} .. {}\n",
                        at(a),
                        at(b)
                    )),
                    None => s.push_str("the energy store is empty\n"),
                }
            } else {
                s.push_str(&to_table(&rep));
            }
            s
        }
        Format::Html => html::render(&rep, &q),
    };
    Ok(Produced {
        text,
        rows: rep.rows.len(),
    })
}

impl By {
    pub fn parse(s: &str) -> Option<By> {
        Some(match s {
            "hour" => By::Hour,
            "day" => By::Day,
            "week" => By::Week,
            "month" => By::Month,
            _ => return None,
        })
    }
}
