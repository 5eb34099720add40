//! The `[mqtt]` section: broker URL, credentials, TLS files and the topic templates to subscribe to.

use crate::catalog::RESERVED_TAGS;
use crate::diag::Collector;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Deserialize)]
pub struct RawMqtt {
    url: String,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    cert_file: Option<PathBuf>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    keep_alive: Option<String>,
    #[serde(default)]
    max_packet_size: Option<usize>,
    #[serde(default)]
    reconnect_max_backoff: Option<String>,
    #[serde(default)]
    max_topic_length: Option<usize>,
    #[serde(default)]
    max_devices: Option<usize>,
    #[serde(default)]
    max_points: Option<usize>,
    #[serde(default)]
    max_json_depth: Option<usize>,
    #[serde(default)]
    subscriptions: Vec<RawSubscription>,
    /// `[[mqtt.sparkplug]]`: Sparkplug B groups read on this connection (`sparkplug.rs`).
    #[serde(default)]
    sparkplug: Vec<RawSparkplug>,
    /// `shared_group = "caretaker"`: subscribe every filter as `$share/<group>/<filter>` (fleet layout).
    #[serde(default)]
    shared_group: Option<String>,
    /// `[mqtt.partition] building = ["north", "south"]`: this gateway's share of the topics, by capture value.
    #[serde(default)]
    partition: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Deserialize)]
pub struct RawSparkplug {
    group: String,
    profile: String,
}

#[derive(Debug, Deserialize)]
pub struct RawSubscription {
    topic: String,
    profile: String,
}

#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsFiles>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    pub max_packet_size: usize,
    pub reconnect_max_backoff: Duration,
    pub limits: MqttLimits,
    pub subscriptions: Vec<Subscription>,
    /// `[[mqtt.sparkplug]]` groups.
    pub sparkplug: Vec<SparkplugGroup>,
    /// `shared_group`: every filter is subscribed as `$share/<group>/<filter>`.
    pub shared_group: Option<String>,
    /// `[mqtt.partition]`: capture name → the values this gateway owns (empty: every value).
    pub partition: Vec<(String, Vec<String>)>,
}

/// Most subscription filters a partition may expand to (one per owned value combination and template).
pub const MAX_PARTITION_FILTERS: usize = 1_000;

impl MqttConfig {
    /// The filters to subscribe, in order, without duplicates: each template's filter with the partition's
    /// captures replaced by every owned value (`campus/+/+/telemetry` with `building = ["n", "s"]` becomes
    /// `campus/n/+/telemetry` and `campus/s/+/telemetry`), then the Sparkplug groups' filters; each prefixed with
    /// `$share/<shared_group>/` when a shared group is set.
    pub fn filters(&self) -> Vec<String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        let owned: Vec<(&str, &[String])> = self
            .partition
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let plain = self
            .subscriptions
            .iter()
            .flat_map(|s| s.topic.partitioned_filters(&owned))
            .chain(self.sparkplug.iter().map(|g| g.filter()));
        for f in plain {
            let f = match &self.shared_group {
                Some(g) => format!("$share/{g}/{f}"),
                None => f,
            };
            if seen.insert(f.clone()) {
                out.push(f);
            }
        }
        out
    }
}

/// Bounds on what a peer on the broker can make Caretaker take or create (docs/reliability.md, "Bad input").
/// A message over a bound is acknowledged, counted in `caretaker_readings_dropped_total{stage="mqtt",reason}`
/// and logged (rate-limited); nothing grows without end.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttLimits {
    /// Longest topic taken, in bytes (`topic_too_long`).
    pub max_topic_length: usize,
    /// Most devices created from MQTT topics; declared devices do not count (`too_many_devices`).
    pub max_devices: usize,
    /// Most points of devices created from MQTT topics (`too_many_points`).
    pub max_points: usize,
    /// Deepest nesting of arrays and objects in a JSON payload (`too_deep`).
    pub max_json_depth: usize,
}

impl Default for MqttLimits {
    fn default() -> Self {
        MqttLimits {
            max_topic_length: 1024,
            max_devices: 10_000,
            max_points: 200_000,
            max_json_depth: 32,
        }
    }
}

/// serde_json refuses deeper JSON by itself; a larger `max_json_depth` could never be reached.
pub const JSON_DEPTH_CEILING: usize = 128;

/// The TLS files of the broker connection: the one type every outbound connection uses.
pub use crate::tls::TlsFiles;

/// One `[[mqtt.subscriptions]]`.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub topic: TopicTemplate,
    pub profile: String,
    /// Index in the file, for diagnostics.
    pub index: usize,
}

/// One `[[mqtt.sparkplug]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkplugGroup {
    pub group: String,
    pub profile: String,
    pub index: usize,
}

impl SparkplugGroup {
    pub fn filter(&self) -> String {
        format!("spBv1.0/{}/#", self.group)
    }
}

/// A topic with `{name}` captures, each standing for one topic level.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicTemplate {
    pub text: String,
    levels: Vec<Level>,
    /// `#` as the last level: matches any remaining levels.
    multi: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Level {
    Literal(String),
    Capture(String),
    Any,
}

impl TopicTemplate {
    pub fn parse(text: &str) -> Result<TopicTemplate, String> {
        if text.is_empty() {
            return Err("empty topic".into());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::new();
        let mut multi = false;
        let mut names = std::collections::HashSet::new();
        for (i, p) in parts.iter().enumerate() {
            if *p == "#" {
                if i + 1 != parts.len() {
                    return Err(format!("`{text}`: `#` is allowed only as the last level"));
                }
                multi = true;
            } else if *p == "+" {
                levels.push(Level::Any);
            } else if let Some(name) = p.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "`{text}`: capture `{{{name}}}` must be a name of letters, digits and `_`"
                    ));
                }
                if !names.insert(name.to_string()) {
                    return Err(format!("`{text}`: capture `{{{name}}}` appears twice"));
                }
                levels.push(Level::Capture(name.to_string()));
            } else if p.contains(['{', '}', '+', '#']) {
                return Err(format!(
                    "`{text}`: level `{p}` mixes text with a capture or wildcard; a capture must be a whole level"
                ));
            } else {
                levels.push(Level::Literal(p.to_string()));
            }
        }
        if !names.contains("device") {
            return Err(format!(
                "`{text}` has no `{{device}}` capture: Caretaker needs it to know which device sent a message"
            ));
        }
        Ok(TopicTemplate {
            text: text.to_string(),
            levels,
            multi,
        })
    }

    /// The MQTT subscription filter (`campus/+/+/telemetry`).
    pub fn filter(&self) -> String {
        let mut parts: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Capture(_) | Level::Any => "+",
            })
            .collect();
        if self.multi {
            parts.push("#");
        }
        parts.join("/")
    }

    /// Matches a concrete topic; returns the captures in template order.
    pub fn captures<'t>(&self, topic: &'t str) -> Option<Vec<(&str, &'t str)>> {
        let mut out = Vec::with_capacity(self.levels.len());
        let mut parts = topic.split('/');
        for level in &self.levels {
            let part = parts.next()?;
            match level {
                Level::Literal(s) if s == part => {}
                Level::Literal(_) => return None,
                Level::Capture(name) => {
                    if part.is_empty() {
                        return None;
                    }
                    out.push((name.as_str(), part));
                }
                Level::Any => {}
            }
        }
        if parts.next().is_some() && !self.multi {
            return None;
        }
        Some(out)
    }
}

impl TopicTemplate {
    /// The filter with each capture named in `owned` replaced by each of its values (the cross product).
    pub fn partitioned_filters(&self, owned: &[(&str, &[String])]) -> Vec<String> {
        let mut filters: Vec<Vec<&str>> = vec![Vec::new()];
        for l in &self.levels {
            let values: Vec<&str> = match l {
                Level::Literal(s) => vec![s.as_str()],
                Level::Any => vec!["+"],
                Level::Capture(name) => match owned.iter().find(|(k, _)| k == name) {
                    Some((_, vs)) => vs.iter().map(String::as_str).collect(),
                    None => vec!["+"],
                },
            };
            filters = filters
                .into_iter()
                .flat_map(|f| {
                    values.iter().map(move |v| {
                        let mut f = f.clone();
                        f.push(*v);
                        f
                    })
                })
                .collect();
        }
        filters
            .into_iter()
            .map(|mut f| {
                if self.multi {
                    f.push("#");
                }
                f.join("/")
            })
            .collect()
    }

    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.levels.iter().filter_map(|l| match l {
            Level::Capture(n) => Some(n.as_str()),
            _ => None,
        })
    }
}

/// Validates `[mqtt]`; `site` names the default client id.
/// `gateway` (`[site] gateway_id`) goes into the default client id when the topics are shared or partitioned:
/// two gateways with one client id would take turns throwing each other off the broker.
pub fn validate(cx: &mut Collector<'_>, m: &RawMqtt, site: &str, gateway: &str) -> MqttConfig {
    let (scheme, rest) = m.url.split_once("://").unwrap_or(("", m.url.as_str()));
    let (tls, default_port) = match scheme {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" | "tls" => (true, 8883),
        _ => {
            cx.err(
                "mqtt.url",
                format!("`{}`: use mqtt://host:port or mqtts://host:port", m.url),
            );
            (false, 1883)
        }
    };
    let hostport = rest.trim_end_matches('/');
    let (host, port) = crate::util::split_host_port(hostport, default_port).unwrap_or_else(|e| {
        cx.err("mqtt.url", format!("`{}`: {e}", m.url));
        (String::new(), default_port)
    });
    let tls = if tls || m.ca_file.is_some() {
        let f = |p: &Option<PathBuf>| p.as_ref().map(|p| cx.path(p));
        let t = TlsFiles {
            ca_file: f(&m.ca_file),
            cert_file: f(&m.cert_file),
            key_file: f(&m.key_file),
        };
        let errs = t.check("mqtt");
        cx.report(errs);
        Some(t)
    } else {
        if m.cert_file.is_some() || m.key_file.is_some() {
            cx.err("mqtt.cert_file", "cert_file/key_file need an mqtts:// url");
        }
        None
    };
    let password = cx.secret("mqtt.password", &m.password, &m.password_file);
    if password.is_some() && m.username.is_none() {
        cx.err("mqtt.username", "a password needs a username");
    }
    let keep_alive = cx.duration("mqtt.keep_alive", &m.keep_alive, Duration::from_secs(30));
    if keep_alive < Duration::from_secs(5) {
        cx.err("mqtt.keep_alive", "must be at least 5s");
    }
    let reconnect_max_backoff = cx.duration(
        "mqtt.reconnect_max_backoff",
        &m.reconnect_max_backoff,
        Duration::from_secs(30),
    );
    let d = MqttLimits::default();
    let mut limit = |key: &str, v: Option<usize>, default: usize, max: usize| match v {
        None => default,
        Some(v) if (1..=max).contains(&v) => v,
        Some(v) => {
            cx.err(
                &format!("mqtt.{key}"),
                format!("{v} is out of range: use 1 to {max}"),
            );
            default
        }
    };
    let limits = MqttLimits {
        max_topic_length: limit(
            "max_topic_length",
            m.max_topic_length,
            d.max_topic_length,
            65_535,
        ),
        max_devices: limit("max_devices", m.max_devices, d.max_devices, 10_000_000),
        max_points: limit("max_points", m.max_points, d.max_points, 100_000_000),
        max_json_depth: limit(
            "max_json_depth",
            m.max_json_depth,
            d.max_json_depth,
            JSON_DEPTH_CEILING,
        ),
    };
    let mut subscriptions = Vec::new();
    let mut sparkplug = Vec::new();
    for (i, g) in m.sparkplug.iter().enumerate() {
        if g.group.is_empty() || g.group.contains(['/', '+', '#']) {
            cx.err(
                &format!("mqtt.sparkplug[{i}].group"),
                format!(
                    "`{}`: a Sparkplug group id is one non-empty topic level (no /, + or #)",
                    g.group
                ),
            );
        } else {
            sparkplug.push(SparkplugGroup {
                group: g.group.clone(),
                profile: g.profile.clone(),
                index: i,
            });
        }
    }
    if m.subscriptions.is_empty() && m.sparkplug.is_empty() {
        cx.err(
            "mqtt.subscriptions",
            "no [[mqtt.subscriptions]] or [[mqtt.sparkplug]]: nothing would be read from the broker",
        );
    }
    for (i, s) in m.subscriptions.iter().enumerate() {
        match TopicTemplate::parse(&s.topic) {
            Ok(topic) => {
                for name in topic.capture_names() {
                    if RESERVED_TAGS.contains(&name) && name != "device" {
                        cx.err(
                            &format!("mqtt.subscriptions[{i}].topic"),
                            format!("capture `{{{name}}}` is a tag Caretaker sets itself"),
                        );
                    }
                }
                subscriptions.push(Subscription {
                    topic,
                    profile: s.profile.clone(),
                    index: i,
                })
            }
            Err(e) => cx.err(&format!("mqtt.subscriptions[{i}].topic"), e),
        }
    }
    let (shared_group, partition) = fleet(cx, m, &subscriptions);
    let fleet_member = shared_group.is_some() || !partition.is_empty();
    MqttConfig {
        host,
        port,
        tls,
        client_id: m.client_id.clone().unwrap_or_else(|| {
            if fleet_member {
                format!("caretaker-{site}-{gateway}")
            } else {
                format!("caretaker-{site}")
            }
        }),
        username: m.username.clone(),
        password,
        keep_alive,
        max_packet_size: m.max_packet_size.unwrap_or(256 * 1024),
        reconnect_max_backoff,
        limits,
        subscriptions,
        sparkplug,
        shared_group,
        partition,
    }
}

/// Validates `shared_group` and `[mqtt.partition]` (the fleet layout, ARCHITECTURE.md).
fn fleet(
    cx: &mut Collector<'_>,
    m: &RawMqtt,
    subscriptions: &[Subscription],
) -> (Option<String>, Vec<(String, Vec<String>)>) {
    let one_level = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#']);
    let shared_group = match &m.shared_group {
        Some(g) if !one_level(g) => {
            cx.err(
                "mqtt.shared_group",
                format!("`{g}`: a share name is one non-empty topic level (no /, + or #)"),
            );
            None
        }
        g => g.clone(),
    };
    let mut partition = Vec::new();
    let Some(raw) = &m.partition else {
        return (shared_group, partition);
    };
    let mut combinations = 1usize;
    for (name, values) in raw {
        let key = format!("mqtt.partition.{name}");
        if values.is_empty() {
            cx.err(&key, "no values: list the values this gateway owns");
            continue;
        }
        if let Some(v) = values.iter().find(|v| !one_level(v)) {
            cx.err(
                &key,
                format!("`{v}`: a value is one non-empty topic level (no /, + or #)"),
            );
            continue;
        }
        // Every template must have the capture: a template without it would be read whole by every gateway.
        for s in subscriptions {
            if !s.topic.capture_names().any(|c| c == name) {
                cx.err(
                    &key,
                    format!(
                        "subscription {} (`{}`) has no `{{{name}}}` capture, so it cannot be partitioned by it \
                         (every gateway would read all of it)",
                        s.index, s.topic.text
                    ),
                );
            }
        }
        combinations = combinations.saturating_mul(values.len());
        let mut vs = values.clone();
        vs.sort();
        vs.dedup();
        partition.push((name.clone(), vs));
    }
    if combinations.saturating_mul(subscriptions.len().max(1)) > MAX_PARTITION_FILTERS {
        cx.err(
            "mqtt.partition",
            format!(
                "expands to more than {MAX_PARTITION_FILTERS} subscription filters; partition by a coarser capture"
            ),
        );
        partition.clear();
    }
    (shared_group, partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<MqttConfig, Vec<crate::diag::Diagnostic>> {
        let raw: RawMqtt = toml::from_str(text).unwrap();
        let mut cx = Collector::new(std::path::Path::new("site.toml"), text);
        let c = validate(&mut cx, &raw, "s", "gw-a");
        if cx.errs.is_empty() {
            Ok(c)
        } else {
            Err(cx.errs)
        }
    }

    #[test]
    fn fleet_filters_are_partitioned_and_shared() {
        let base = "url = \"mqtt://127.0.0.1:1883\"\n[[subscriptions]]\ntopic = \"campus/{building}/{device}/telemetry\"\nprofile = \"p\"\n[[sparkplug]]\ngroup = \"plant1\"\nprofile = \"p\"\n";
        let c = cfg(base).unwrap();
        assert_eq!(c.filters(), ["campus/+/+/telemetry", "spBv1.0/plant1/#"]);
        assert_eq!(
            c.client_id, "caretaker-s",
            "a lone gateway keeps its client id"
        );
        let c = cfg(&format!(
            "shared_group = \"caretaker\"\n{base}[partition]\nbuilding = [\"south\", \"north\", \"north\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.filters(),
            [
                "$share/caretaker/campus/north/+/telemetry",
                "$share/caretaker/campus/south/+/telemetry",
                "$share/caretaker/spBv1.0/plant1/#",
            ]
        );
        assert_eq!(
            c.client_id, "caretaker-s-gw-a",
            "fleet members get the gateway in their client id"
        );
        let errs = cfg(&format!(
            "shared_group = \"a/b\"\n{base}[partition]\nfloor = [\"1\"]\nbuilding = []\n"
        ))
        .unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"mqtt.shared_group"), "{errs:?}");
        assert!(keys.contains(&"mqtt.partition.floor"), "{errs:?}");
        assert!(keys.contains(&"mqtt.partition.building"), "{errs:?}");
    }

    #[test]
    fn topic_templates_capture_levels() {
        let t = TopicTemplate::parse("campus/{building}/{device}/telemetry").unwrap();
        assert_eq!(t.filter(), "campus/+/+/telemetry");
        assert_eq!(
            t.captures("campus/b1/ahu-3/telemetry").unwrap(),
            vec![("building", "b1"), ("device", "ahu-3")]
        );
        assert!(t.captures("campus/b1/ahu-3/status").is_none());
        assert!(t.captures("campus/b1/ahu-3/telemetry/x").is_none());
        assert!(t.captures("campus/b1").is_none());
        let t = TopicTemplate::parse("tele/{device}/#").unwrap();
        assert_eq!(t.filter(), "tele/+/#");
        assert!(t.captures("tele/plug1/SENSOR").is_some());
        assert!(
            TopicTemplate::parse("a/{building}")
                .unwrap_err()
                .contains("{device}")
        );
        assert!(TopicTemplate::parse("a/x{device}").is_err());
        assert!(TopicTemplate::parse("a/#/{device}").is_err());
    }
}
