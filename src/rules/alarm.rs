//! The alarm vocabulary that rules and work orders share: how bad an alarm is ([`Severity`]), whether its work
//! order resolves itself ([`Resolve`]), and the rendered alarm transition ([`AlarmEvent`]) the rules stage sends
//! to the work-order store. Rules produce these, work orders consume them; this module depends on neither, so
//! `work_orders` needs nothing else from `rules`.

/// How bad an alarm is; ordered (`warning < minor < major < critical`) so a work order keeps its peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Minor,
    Major,
    Critical,
}

impl Severity {
    pub const ALL: &'static [&'static str] = &["critical", "major", "minor", "warning"];
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "critical" => Self::Critical,
            "major" => Self::Major,
            "minor" => Self::Minor,
            "warning" => Self::Warning,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Major => "major",
            Self::Minor => "minor",
            Self::Warning => "warning",
        }
    }
}

/// Whether the work order resolves itself when the alarm clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    Auto,
    Manual,
}

impl Resolve {
    pub fn as_str(self) -> &'static str {
        match self {
            Resolve::Auto => "auto",
            Resolve::Manual => "manual",
        }
    }
}

/// What happened to an alarm, as the store sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmKind {
    Raised,
    Repeated,
    Cleared,
}

/// One alarm transition with everything the work order needs, already rendered (no ids, no catalog).
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmEvent {
    pub kind: AlarmKind,
    pub rule: String,
    pub device: String,
    /// Empty for device-level rules (offline).
    pub point: String,
    pub severity: Severity,
    pub title: String,
    pub team: Option<String>,
    pub procedure: Option<String>,
    pub resolve: Resolve,
    pub due_within_ms: Option<i64>,
    pub unit: String,
    pub value: f64,
    pub peak: f64,
    /// Unix milliseconds (reading time).
    pub at_ms: i64,
    /// (Unix ms, value), oldest first.
    pub evidence: Vec<(i64, f64)>,
}
