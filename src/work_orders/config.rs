//! The `[work_orders]` section of the site config: store options and `[[work_orders.targets]]`.

use crate::util::parse_duration;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
pub struct RawWorkOrders {
    #[serde(default)]
    flap_window: Option<String>,
    #[serde(default)]
    update_every: Option<String>,
    #[serde(default)]
    targets: Vec<RawTarget>,
    /// Routing of repair requests (`POST /api/v1/requests`) by category and building; first match wins.
    #[serde(default)]
    routes: Vec<RawRoute>,
    /// Send a requester's contact (phone, e-mail) to the targets with the request (default false: it stays in
    /// the store, for the team to look up).
    #[serde(default)]
    share_requester_contact: Option<bool>,
    /// `[work_orders.teams.NAME]`: what Caretaker knows of a team (its e-mail address, for `kind = "email"`).
    #[serde(default)]
    teams: std::collections::BTreeMap<String, RawTeam>,
}

/// One `[[silences]]` of the site config: a maintenance window (times RFC 3339 with an offset, e.g.
/// `2026-12-07T08:00:00+01:00`).
#[derive(Debug, Deserialize)]
pub struct RawSilence {
    device: String,
    #[serde(default)]
    point: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    start: String,
    end: String,
    reason: String,
}

/// `[[silences]]`, validated into the store's shape; problems as (key, message).
pub fn validate_silences(
    raw: &[RawSilence],
) -> (
    Vec<crate::work_orders::silence::NewSilence>,
    Vec<(String, String)>,
) {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let k = |s: &str| format!("silences[{i}].{s}");
        let time = |errs: &mut Vec<(String, String)>, key: &str, v: &str| {
            v.parse::<jiff::Timestamp>()
                .map(|t| t.as_millisecond())
                .map_err(|e| {
                    errs.push((
                        k(key),
                        format!("`{v}`: expected RFC 3339 with an offset, e.g. 2026-12-07T08:00:00+01:00 ({e})"),
                    ))
                })
                .ok()
        };
        let (start, end) = (
            time(&mut errs, "start", &r.start),
            time(&mut errs, "end", &r.end),
        );
        if r.device.trim().is_empty() {
            errs.push((k("device"), "must name a device".into()));
        }
        if r.reason.trim().is_empty() {
            errs.push((
                k("reason"),
                "say why (who reads the record will ask)".into(),
            ));
        }
        if let (Some(s), Some(e)) = (start, end) {
            if e <= s {
                errs.push((
                    k("end"),
                    format!("`{}` is not after start `{}`", r.end, r.start),
                ));
            }
            out.push(crate::work_orders::silence::NewSilence {
                device: r.device.clone(),
                point: r.point.clone().filter(|p| !p.is_empty()),
                rule: r.rule.clone().filter(|p| !p.is_empty()),
                starts_at: s,
                ends_at: e,
                reason: r.reason.clone(),
                created_by: "config".into(),
            });
        }
    }
    (out, errs)
}

/// One `[work_orders.teams.NAME]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawTeam {
    #[serde(default)]
    email: Option<String>,
}

/// A validated team.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Team {
    /// Where `kind = "email"` targets send this team's work orders.
    pub email: Option<String>,
}

/// One `[[work_orders.routes]]`.
#[derive(Debug, Deserialize)]
pub struct RawRoute {
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    building: Option<String>,
    #[serde(default)]
    team: Option<String>,
    #[serde(default)]
    procedure: Option<String>,
    #[serde(default)]
    due: Option<String>,
    #[serde(default)]
    severity: Option<String>,
}

/// Where a repair request goes. A route without `category`/`building` matches any.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub category: Option<String>,
    pub building: Option<String>,
    pub team: Option<String>,
    pub procedure: Option<String>,
    pub due: Option<Duration>,
    pub severity: String,
}

impl Route {
    /// The default when no route matches: no team, due in 3 days, severity minor.
    pub fn fallback() -> Route {
        Route {
            category: None,
            building: None,
            team: None,
            procedure: None,
            due: Some(Duration::from_secs(3 * 86_400)),
            severity: "minor".into(),
        }
    }
}

impl WorkOrdersConfig {
    /// The route of a request: the first whose category and building (when set) both match.
    pub fn route(&self, category: Option<&str>, building: Option<&str>) -> Route {
        self.routes
            .iter()
            .find(|r| {
                r.category.as_deref().is_none_or(|c| Some(c) == category)
                    && r.building.as_deref().is_none_or(|b| Some(b) == building)
            })
            .cloned()
            .unwrap_or_else(Route::fallback)
    }
}

#[derive(Debug, Deserialize)]
pub struct RawTarget {
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    api_key_file: Option<PathBuf>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    max_retry_backoff: Option<String>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    /// Alertmanager: how often open work orders are posted again (default 5m).
    #[serde(default)]
    resend_every: Option<String>,
    /// Atlas: how often the status of our work orders is read back from Atlas (default 1m; "0s": never).
    #[serde(default)]
    poll_every: Option<String>,
    /// E-mail: the sender address.
    #[serde(default)]
    from: Option<String>,
    /// E-mail: the address for work orders whose team has no `email` in `[work_orders.teams]`.
    #[serde(default)]
    to: Option<String>,
    /// E-mail: the web console's address as people reach it (`https://caretaker.example.org`), for the link.
    #[serde(default)]
    console_url: Option<String>,
}

/// Validated `[work_orders]`.
#[derive(Debug, Clone)]
pub struct WorkOrdersConfig {
    /// A work order raised again within this long of its automatic resolution is reopened, not duplicated.
    pub flap_window: Duration,
    /// While an alarm stays active, its work order's count and last value are updated this often (reading time).
    pub update_every: Duration,
    pub targets: Vec<TargetConfig>,
    /// `[[work_orders.routes]]`, in order.
    pub routes: Vec<Route>,
    pub share_requester_contact: bool,
    /// `[work_orders.teams]`, by name.
    pub teams: std::collections::BTreeMap<String, Team>,
    /// The top-level `[[silences]]` (maintenance windows), written into the store at daemon start.
    pub silences: Vec<crate::work_orders::silence::NewSilence>,
}

impl Default for WorkOrdersConfig {
    fn default() -> Self {
        WorkOrdersConfig {
            flap_window: Duration::from_secs(30 * 60),
            update_every: Duration::from_secs(15 * 60),
            targets: Vec::new(),
            routes: Vec::new(),
            share_requester_contact: false,
            teams: Default::default(),
            silences: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TargetKind {
    /// POST JSON to `url`; `X-Caretaker-Signature: sha256=HEX` when a secret is set.
    Webhook {
        url: String,
        secret: Option<Vec<u8>>,
    },
    /// Publish JSON (QoS 1) to `topic` on the broker at `url`.
    Mqtt {
        host: String,
        port: u16,
        topic: String,
        client_id: String,
        /// `mqtts://`: TLS with the target's `ca_file` (or the system's roots) and optional client certificate.
        tls: bool,
        username: Option<String>,
        /// From `password_file`.
        password: Option<String>,
    },
    /// Atlas CMMS: `POST {url}/work-orders` with `x-api-key`.
    /// Work orders completed in Atlas (`GET {url}/work-orders/{id}`, status `COMPLETE`) are resolved here too,
    /// read every `poll_every` (none: never).
    Atlas {
        url: String,
        api_key: String,
        poll_every: Option<Duration>,
    },
    /// Prometheus Alertmanager: `POST {url}/api/v2/alerts`; open work orders are posted again every
    /// `resend_every` with `endsAt` = now + 4 × `resend_every`, a resolved one with `endsAt` = its resolution.
    Alertmanager { url: String, resend_every: Duration },
    /// E-mail over SMTP: one message per opened and per resolved work order, to its team's `email` (else `to`).
    /// `smtp://` requires STARTTLS (port 587 by default); `smtps://` is TLS from the first byte (465).
    Email {
        host: String,
        port: u16,
        /// `smtps://`.
        implicit_tls: bool,
        from: String,
        to: String,
        /// Team name → address, from `[work_orders.teams]`.
        teams: std::collections::BTreeMap<String, String>,
        console_url: Option<String>,
        username: Option<String>,
        password: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// Unique name (outbox rows are per target name): `name`, or `KIND-INDEX`.
    pub name: String,
    pub kind: TargetKind,
    /// `ca_file`, `cert_file`, `key_file` (https:// and mqtts:// targets).
    pub tls: crate::tls::TlsFiles,
    pub timeout: Duration,
    pub max_retry_backoff: Duration,
}

/// Validates the raw section; problems come back as (key, message) for the config loader to locate.
pub fn validate(
    raw: &RawWorkOrders,
    config_file: &Path,
) -> (WorkOrdersConfig, Vec<(String, String)>) {
    let mut errs = Vec::new();
    let mut dur = |key: &str, v: &Option<String>, d: Duration| match v {
        None => d,
        Some(s) => parse_duration(s).unwrap_or_else(|e| {
            errs.push((key.to_string(), e));
            d
        }),
    };
    let flap_window = dur(
        "work_orders.flap_window",
        &raw.flap_window,
        Duration::from_secs(1800),
    );
    let update_every = dur(
        "work_orders.update_every",
        &raw.update_every,
        Duration::from_secs(900),
    );
    let mut timings = Vec::new();
    for (i, t) in raw.targets.iter().enumerate() {
        timings.push((
            dur(
                &format!("work_orders.targets[{i}].timeout"),
                &t.timeout,
                Duration::from_secs(10),
            ),
            dur(
                &format!("work_orders.targets[{i}].max_retry_backoff"),
                &t.max_retry_backoff,
                Duration::from_secs(300),
            ),
        ));
    }
    let mut teams = std::collections::BTreeMap::new();
    for (name, t) in &raw.teams {
        if let Some(e) = &t.email
            && let Err(msg) = check_address(e)
        {
            errs.push((format!("work_orders.teams.{name}.email"), msg));
        }
        teams.insert(
            name.clone(),
            Team {
                email: t.email.clone(),
            },
        );
    }
    let mut targets = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, t) in raw.targets.iter().enumerate() {
        let k = |s: &str| format!("work_orders.targets[{i}].{s}");
        let Some(mut kind) = target_kind(i, t, config_file, &mut errs) else {
            continue;
        };
        if let TargetKind::Email { teams: addrs, .. } = &mut kind {
            *addrs = teams
                .iter()
                .filter_map(|(n, t)| Some((n.clone(), t.email.clone()?)))
                .collect();
        }
        let name = t.name.clone().unwrap_or_else(|| format!("{}-{i}", t.kind));
        if !names.insert(name.clone()) {
            errs.push((k("name"), format!("target name `{name}` is used twice")));
        }
        let tls = crate::tls::TlsFiles {
            ca_file: t
                .ca_file
                .as_ref()
                .map(|p| crate::diag::resolve(config_file, p)),
            cert_file: t
                .cert_file
                .as_ref()
                .map(|p| crate::diag::resolve(config_file, p)),
            key_file: t
                .key_file
                .as_ref()
                .map(|p| crate::diag::resolve(config_file, p)),
        };
        errs.extend(tls.check(&format!("work_orders.targets[{i}]")));
        let secure = t.url.as_deref().is_some_and(|u| {
            ["https://", "mqtts://", "ssl://", "smtp://", "smtps://"]
                .iter()
                .any(|p| u.starts_with(p))
        });
        if !tls.is_empty() && !secure {
            errs.push((
                k("ca_file"),
                "ca_file/cert_file/key_file need an https://, mqtts:// or smtp(s):// url".into(),
            ));
        }
        targets.push(TargetConfig {
            name,
            kind,
            tls,
            timeout: timings[i].0,
            max_retry_backoff: timings[i].1,
        });
    }
    let mut routes = Vec::new();
    for (i, r) in raw.routes.iter().enumerate() {
        let k = |s: &str| format!("work_orders.routes[{i}].{s}");
        let due = match &r.due {
            None => Some(Duration::from_secs(3 * 86_400)),
            Some(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    errs.push((k("due"), e));
                    None
                }
            },
        };
        let severity = r.severity.clone().unwrap_or_else(|| "minor".into());
        if crate::rules::alarm::Severity::parse(&severity).is_none() {
            errs.push((
                k("severity"),
                format!(
                    "unknown severity `{severity}`; expected critical, major, minor or warning"
                ),
            ));
        }
        routes.push(Route {
            category: r.category.clone(),
            building: r.building.clone(),
            team: r.team.clone(),
            procedure: r.procedure.clone(),
            due,
            severity,
        });
    }
    (
        WorkOrdersConfig {
            flap_window,
            update_every,
            targets,
            routes,
            share_requester_contact: raw.share_requester_contact.unwrap_or(false),
            teams,
            silences: Vec::new(),
        },
        errs,
    )
}

/// The kind-specific part of one `[[work_orders.targets]]` (URL, secrets, topic); `None` for an unknown kind.
fn target_kind(
    i: usize,
    t: &RawTarget,
    config_file: &Path,
    errs: &mut Vec<(String, String)>,
) -> Option<TargetKind> {
    let k = |s: &str| format!("work_orders.targets[{i}].{s}");
    let read = |errs: &mut Vec<(String, String)>, key: &str, p: &Path| -> Option<Vec<u8>> {
        let path = crate::diag::resolve(config_file, p);
        match std::fs::read(&path) {
            Ok(b) => {
                let s = String::from_utf8_lossy(&b)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                Some(s.into_bytes())
            }
            Err(e) => {
                errs.push((
                    key.to_string(),
                    format!("cannot read {}: {e}", path.display()),
                ));
                None
            }
        }
    };
    let url = t.url.clone().unwrap_or_default();
    let http_url = |errs: &mut Vec<(String, String)>| {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            errs.push((
                k("url"),
                format!("`{url}`: use http://host:port/path or https://..."),
            ));
        }
    };
    let extra = |errs: &mut Vec<(String, String)>, allowed: &[&str]| {
        for (name, set) in [
            ("secret_file", t.secret_file.is_some()),
            ("topic", t.topic.is_some()),
            ("client_id", t.client_id.is_some()),
            ("api_key_file", t.api_key_file.is_some()),
            ("username", t.username.is_some()),
            ("password_file", t.password_file.is_some()),
            ("resend_every", t.resend_every.is_some()),
            ("poll_every", t.poll_every.is_some()),
            ("from", t.from.is_some()),
            ("to", t.to.is_some()),
            ("console_url", t.console_url.is_some()),
        ] {
            if set && !allowed.contains(&name) {
                errs.push((
                    k(name),
                    format!("`{name}` does not apply to kind = \"{}\"", t.kind),
                ));
            }
        }
    };
    let kind = match t.kind.as_str() {
        "webhook" => {
            http_url(errs);
            extra(errs, &["secret_file"]);
            let secret = t
                .secret_file
                .as_ref()
                .and_then(|p| read(errs, &k("secret_file"), p));
            TargetKind::Webhook {
                url: url.clone(),
                secret,
            }
        }
        "mqtt" => {
            extra(errs, &["topic", "client_id", "username", "password_file"]);
            let (rest, tls) = if let Some(r) = url
                .strip_prefix("mqtts://")
                .or_else(|| url.strip_prefix("ssl://"))
            {
                (r, true)
            } else {
                let r = url
                    .strip_prefix("mqtt://")
                    .or_else(|| url.strip_prefix("tcp://"))
                    .unwrap_or_else(|| {
                        errs.push((
                            k("url"),
                            format!("`{url}`: use mqtt://host:port or mqtts://host:port"),
                        ));
                        ""
                    });
                (r, false)
            };
            let default_port = if tls { 8883 } else { 1883 };
            let password = t
                .password_file
                .as_ref()
                .and_then(|p| read(errs, &k("password_file"), p))
                .map(|b| String::from_utf8_lossy(&b).to_string());
            if password.is_some() && t.username.is_none() {
                errs.push((k("username"), "a password_file needs a username".into()));
            }
            let (host, port) =
                crate::util::split_host_port(rest.trim_end_matches('/'), default_port)
                    .unwrap_or_else(|e| {
                        if !rest.is_empty() {
                            errs.push((k("url"), e));
                        }
                        (String::new(), default_port)
                    });
            let topic = t.topic.clone().unwrap_or_else(|| {
                errs.push((k("topic"), "required for kind = \"mqtt\"".into()));
                String::new()
            });
            if topic.contains(['+', '#']) {
                errs.push((
                    k("topic"),
                    "a publish topic cannot contain `+` or `#`".into(),
                ));
            }
            TargetKind::Mqtt {
                host,
                port,
                topic,
                client_id: t
                    .client_id
                    .clone()
                    .unwrap_or_else(|| format!("caretaker-wo-{i}")),
                tls,
                username: t.username.clone(),
                password,
            }
        }
        "atlas" => {
            http_url(errs);
            extra(errs, &["api_key_file", "poll_every"]);
            let poll_every = match &t.poll_every {
                None => Some(Duration::from_secs(60)),
                Some(s) => match parse_duration(s) {
                    Ok(d) if d.is_zero() => None,
                    Ok(d) => Some(d),
                    Err(e) => {
                        errs.push((k("poll_every"), e));
                        None
                    }
                },
            };
            let api_key = match &t.api_key_file {
                Some(p) => read(errs, &k("api_key_file"), p)
                    .map(|b| String::from_utf8_lossy(&b).to_string())
                    .unwrap_or_default(),
                None => {
                    errs.push((k("api_key_file"), "required for kind = \"atlas\"".into()));
                    String::new()
                }
            };
            TargetKind::Atlas {
                url: url.trim_end_matches('/').to_string(),
                api_key,
                poll_every,
            }
        }
        "alertmanager" => {
            http_url(errs);
            extra(errs, &["resend_every"]);
            let resend_every = match &t.resend_every {
                None => Duration::from_secs(300),
                Some(s) => match parse_duration(s) {
                    Ok(d) if d >= Duration::from_secs(1) => d,
                    Ok(_) => {
                        errs.push((k("resend_every"), format!("`{s}`: must be at least 1s")));
                        Duration::from_secs(300)
                    }
                    Err(e) => {
                        errs.push((k("resend_every"), e));
                        Duration::from_secs(300)
                    }
                },
            };
            let url = url.trim_end_matches('/');
            let url = url.strip_suffix("/api/v2/alerts").unwrap_or(url);
            TargetKind::Alertmanager {
                url: url.to_string(),
                resend_every,
            }
        }
        "email" => {
            extra(
                errs,
                &["from", "to", "console_url", "username", "password_file"],
            );
            let (rest, implicit_tls) = if let Some(r) = url.strip_prefix("smtps://") {
                (r, true)
            } else {
                let r = url.strip_prefix("smtp://").unwrap_or_else(|| {
                    errs.push((
                        k("url"),
                        format!("`{url}`: use smtp://host:port (STARTTLS) or smtps://host:port"),
                    ));
                    ""
                });
                (r, false)
            };
            let default_port = if implicit_tls { 465 } else { 587 };
            let (host, port) =
                crate::util::split_host_port(rest.trim_end_matches('/'), default_port)
                    .unwrap_or_else(|e| {
                        if !rest.is_empty() {
                            errs.push((k("url"), e));
                        }
                        (String::new(), default_port)
                    });
            let mut address = |key: &str, v: &Option<String>| -> String {
                match v {
                    None => {
                        errs.push((k(key), "required for kind = \"email\"".into()));
                        String::new()
                    }
                    Some(a) => {
                        if let Err(e) = check_address(a) {
                            errs.push((k(key), e));
                        }
                        a.clone()
                    }
                }
            };
            let from = address("from", &t.from);
            let to = address("to", &t.to);
            if let Some(c) = &t.console_url
                && !(c.starts_with("http://") || c.starts_with("https://"))
            {
                errs.push((
                    k("console_url"),
                    format!("`{c}`: use http(s)://host[:port] as people open the console"),
                ));
            }
            let password = t
                .password_file
                .as_ref()
                .and_then(|p| read(errs, &k("password_file"), p))
                .map(|b| String::from_utf8_lossy(&b).to_string());
            if password.is_some() != t.username.is_some() {
                errs.push((
                    k("username"),
                    "username and password_file go together".into(),
                ));
            }
            TargetKind::Email {
                host,
                port,
                implicit_tls,
                from,
                to,
                teams: Default::default(),
                console_url: t
                    .console_url
                    .as_deref()
                    .map(|c| c.trim_end_matches('/').to_string()),
                username: t.username.clone(),
                password,
            }
        }
        other => {
            let hint = crate::util::did_you_mean(
                other,
                ["webhook", "mqtt", "atlas", "alertmanager", "email"],
            )
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
            errs.push((
                k("kind"),
                format!(
                    "unknown kind `{other}`{hint}; expected webhook, mqtt, atlas, alertmanager or email"
                ),
            ));
            return None;
        }
    };
    Some(kind)
}

/// An e-mail address as lettre will take it (`a@b.example` or `Name <a@b.example>`).
fn check_address(a: &str) -> Result<(), String> {
    a.parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| format!("`{a}` is not an e-mail address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawWorkOrders {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn requests_take_the_first_matching_route() {
        let cfg = std::path::Path::new("site.toml");
        let (c, errs) = validate(
            &raw(r#"
[[routes]]
category = "plumbing"
building = "library"
team = "plumbing-north"
due = "8h"
[[routes]]
category = "plumbing"
team = "plumbing"
procedure = "1. Shut the valve."
[[routes]]
team = "service-desk"
severity = "major"
"#),
            cfg,
        );
        assert!(errs.is_empty(), "{errs:?}");
        let r = c.route(Some("plumbing"), Some("library"));
        assert_eq!(
            (r.team.as_deref(), r.due),
            (Some("plumbing-north"), Some(Duration::from_secs(8 * 3600)))
        );
        assert_eq!(
            c.route(Some("plumbing"), Some("gym")).team.as_deref(),
            Some("plumbing")
        );
        let r = c.route(None, Some("gym"));
        assert_eq!(
            (r.team.as_deref(), r.severity.as_str()),
            (Some("service-desk"), "major")
        );
        let (_, errs) = validate(
            &raw("[[routes]]\ndue = \"soon\"\nseverity = \"meh\"\n"),
            cfg,
        );
        let keys: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            keys,
            [
                "work_orders.routes[0].due",
                "work_orders.routes[0].severity"
            ]
        );
    }

    #[test]
    fn targets_validate_with_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s"), "abc\n").unwrap();
        let cfg = dir.path().join("site.toml");
        let (c, errs) = validate(
            &raw(r#"
flap_window = "5m"
[[targets]]
kind = "webhook"
url = "http://127.0.0.1:1/hook"
secret_file = "s"
[[targets]]
kind = "mqtt"
url = "mqtt://127.0.0.1:1883"
topic = "wo"
"#),
            &cfg,
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(c.flap_window, Duration::from_secs(300));
        assert_eq!(c.route(Some("plumbing"), None), Route::fallback());
        assert_eq!(c.targets[0].name, "webhook-0");
        assert_eq!(
            c.targets[0].kind,
            TargetKind::Webhook {
                url: "http://127.0.0.1:1/hook".into(),
                secret: Some(b"abc".to_vec())
            }
        );
        assert!(
            matches!(&c.targets[1].kind, TargetKind::Mqtt { port: 1883, topic, .. } if topic == "wo")
        );
        let (_, errs) = validate(
            &raw(r#"
[[targets]]
kind = "mqtt"
url = "mqtt://h"
[[targets]]
kind = "atlas"
url = "ftp://x"
topic = "t"
[[targets]]
kind = "jira"
"#),
            &cfg,
        );
        let keys: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        for k in [
            "work_orders.targets[0].topic",
            "work_orders.targets[1].url",
            "work_orders.targets[1].topic",
            "work_orders.targets[1].api_key_file",
            "work_orders.targets[2].kind",
        ] {
            assert!(keys.contains(&k), "{k} missing: {errs:?}");
        }
    }

    #[test]
    fn email_target_takes_team_addresses_and_names_bad_keys() {
        let cfg = std::path::Path::new("site.toml");
        let (c, errs) = validate(
            &raw(r#"
[teams.hvac]
email = "hvac@example.org"
[teams.electrical]
[[targets]]
kind = "email"
url = "smtp://mail.example.org"
from = "Caretaker <caretaker@example.org>"
to = "desk@example.org"
console_url = "https://ct.example.org/"
"#),
            cfg,
        );
        assert!(errs.is_empty(), "{errs:?}");
        match &c.targets[0].kind {
            TargetKind::Email {
                host,
                port,
                implicit_tls,
                teams,
                console_url,
                ..
            } => {
                assert_eq!(
                    (host.as_str(), *port, *implicit_tls),
                    ("mail.example.org", 587, false)
                );
                assert_eq!(teams.len(), 1);
                assert_eq!(teams["hvac"], "hvac@example.org");
                assert_eq!(console_url.as_deref(), Some("https://ct.example.org"));
            }
            k => panic!("{k:?}"),
        }
        let (_, errs) = validate(
            &raw(r#"
[teams.hvac]
email = "not an address"
[[targets]]
kind = "email"
url = "http://mail.example.org"
from = "caretaker@example.org"
topic = "x"
username = "u"
"#),
            cfg,
        );
        let keys: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        for k in [
            "work_orders.teams.hvac.email",
            "work_orders.targets[0].url",
            "work_orders.targets[0].topic",
            "work_orders.targets[0].to",
            "work_orders.targets[0].username",
        ] {
            assert!(keys.contains(&k), "{k} missing: {errs:?}");
        }
    }

    #[test]
    fn alertmanager_target_validates_url_and_resend_every() {
        let cfg = std::path::Path::new("site.toml");
        let (c, errs) = validate(
            &raw(r#"
[[targets]]
kind = "alertmanager"
url = "http://am:9093/"
"#),
            cfg,
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            c.targets[0].kind,
            TargetKind::Alertmanager {
                url: "http://am:9093".into(),
                resend_every: Duration::from_secs(300)
            }
        );
        assert_eq!(c.targets[0].name, "alertmanager-0");
        let (_, errs) = validate(
            &raw(r#"
[[targets]]
kind = "alertmanager"
url = "am:9093"
resend_every = "0s"
topic = "x"
[[targets]]
kind = "webhook"
url = "http://h/"
resend_every = "1m"
[[targets]]
kind = "alertmanger"
"#),
            cfg,
        );
        let keys: Vec<&str> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            keys,
            [
                "work_orders.targets[0].url",
                "work_orders.targets[0].topic",
                "work_orders.targets[0].resend_every",
                "work_orders.targets[1].resend_every",
                "work_orders.targets[2].kind",
            ],
            "{errs:?}"
        );
        assert!(
            errs[4].1.contains("did you mean `alertmanager`"),
            "{errs:?}"
        );
    }
}
