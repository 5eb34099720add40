//! Small shared helpers: human durations ("10s", "5m"), rate-limited logging and backoff.
//!
//! Nothing here knows about readings or devices; it exists so every module parses durations and backs off the
//! same way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest duration [`parse_duration`] accepts: 3650 days (about 10 years). Anything longer in a site or
/// rule file is a typo, and would overflow the time arithmetic it feeds (`Instant + d`, nanoseconds in an i64).
pub const MAX_DURATION: Duration = Duration::from_secs(3650 * 86_400);

/// Parses a human duration: an integer or decimal followed by `ms`, `s`, `m`, `h`, `d` or `w` (e.g. `250ms`,
/// `10s`, `1.5h`, `7d`). Several parts may follow each other (`1h30m`). At most [`MAX_DURATION`]; never panics.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "invalid duration `{text}`: expected a number, e.g. `10s`, `5m`, `8h`"
            ));
        }
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration `{text}`: bad number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "w" => 604800.0,
            "" => {
                return Err(format!(
                    "invalid duration `{text}`: missing unit (ms, s, m, h, d or w), e.g. `{text}s`"
                ));
            }
            u => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{u}` (use ms, s, m, h, d or w)"
                ));
            }
        };
        total += n * secs;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total < 0.0 {
        return Err(format!("invalid duration `{text}`"));
    }
    match Duration::try_from_secs_f64(total) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!(
            "duration `{text}` is too long (at most {})",
            format_duration(MAX_DURATION)
        )),
    }
}

/// [`parse_duration`] with a tighter upper bound for one key (a poll period, a rule's `for`).
pub fn parse_duration_max(text: &str, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d > max {
        return Err(format!(
            "duration `{text}` is too long (at most {})",
            format_duration(max)
        ));
    }
    Ok(d)
}

/// Formats a duration the way [`parse_duration`] reads it (largest exact unit).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [
        ("w", 604_800_000u128),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Serde adapter for `Duration` fields written as human strings.
pub mod serde_duration {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use serde::{Deserialize, Deserializer};
        use std::time::Duration;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let s: Option<String> = Option::deserialize(d)?;
            s.map(|s| super::super::parse_duration(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// Capped exponential backoff with full jitter, as AWS's architecture blog describes it: the n-th wait is a
/// uniform draw from [base/2, min(cap, base * 2^n)]. Full jitter keeps a campus of gateways from reconnecting
/// to a restarted broker in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next wait; each call doubles the ceiling until the cap.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(20));
        let ceiling = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let floor = (self.base / 2).min(ceiling);
        let span = ceiling.saturating_sub(floor).as_micros() as u64;
        floor
            + Duration::from_micros(if span == 0 {
                0
            } else {
                fastrand::u64(0..=span)
            })
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// Decides whether a log line for a key may be written now: at most one per `every` per key, reporting how many
/// were suppressed meanwhile. A flood of bad payloads must not become a flood of log lines.
pub struct RateLimiter {
    every: Duration,
    state: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RateLimiter {
    pub fn new(every: Duration) -> Self {
        RateLimiter {
            every,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Returns `Some(suppressed)` when the caller should log now.
    pub fn check(&self, key: &str) -> Option<u64> {
        let mut map = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match map.get_mut(key) {
            Some((last, suppressed)) => {
                if now.duration_since(*last) >= self.every {
                    let n = *suppressed;
                    *last = now;
                    *suppressed = 0;
                    Some(n)
                } else {
                    *suppressed += 1;
                    None
                }
            }
            None => {
                if map.len() > 10_000 {
                    map.clear();
                }
                map.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

/// A simulated clock for the whole process: (real instant, simulated ns at that instant, speed).
static SIMULATED_CLOCK: std::sync::OnceLock<(std::time::Instant, i64, f64)> =
    std::sync::OnceLock::new();

/// Makes [`now_ns`] follow a simulated clock that reads `start_ns` now and runs `speed` times faster than real
/// time. Only `caretaker demo` calls it: the simulated campus and the daemon share one process, so readings
/// stamped on arrival carry simulated time, like the simulated devices' own timestamps. Returns false if a clock
/// was already set (it cannot change).
pub fn set_simulated_clock(start_ns: i64, speed: f64) -> bool {
    SIMULATED_CLOCK
        .set((std::time::Instant::now(), start_ns, speed))
        .is_ok()
}

/// Unix time now in nanoseconds (simulated time under `caretaker demo`).
pub fn now_ns() -> i64 {
    if let Some((at, start, speed)) = SIMULATED_CLOCK.get() {
        return start + (at.elapsed().as_nanos() as f64 * speed) as i64;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Levenshtein distance, for "did you mean" hints on typos in closed vocabularies.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(!ca.eq_ignore_ascii_case(cb));
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest candidate to `word` if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Splits `host:port` (or `[v6]:port`, or `host` alone).
pub fn split_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    if s.is_empty() {
        return Err("missing host".into());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed `[`")?;
        (rest[..end].to_string(), rest[end + 1..].strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => p.parse().map_err(|_| format!("bad port `{p}`"))?,
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        assert_eq!(split_host_port("h:1", 5).unwrap(), ("h".into(), 1));
        assert_eq!(split_host_port("h", 5).unwrap(), ("h".into(), 5));
        assert_eq!(split_host_port("[::1]:7", 5).unwrap(), ("::1".into(), 7));
        assert!(split_host_port("h:x", 5).is_err());
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("10").unwrap_err().contains("missing unit"));
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn durations_too_long_are_errors_not_panics() {
        for text in [
            "1000000000000000w",
            "18446744073709551616s",
            "30000000000000w",
            "3651d",
            "99999999999999999999999999999999999999999999ms",
        ] {
            let e = parse_duration(text).unwrap_err();
            assert!(e.contains("too long") && e.contains("3650d"), "{text}: {e}");
        }
        assert_eq!(parse_duration("3650d").unwrap(), MAX_DURATION);
        assert_eq!(
            parse_duration("520w").unwrap(),
            Duration::from_secs(520 * 604_800)
        );
        assert_eq!(
            parse_duration_max("1d", Duration::from_secs(86_400)).unwrap(),
            Duration::from_secs(86_400)
        );
        let e = parse_duration_max("25h", Duration::from_secs(86_400)).unwrap_err();
        assert!(e.contains("at most 1d"), "{e}");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut max_seen = Duration::ZERO;
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(2), "{d:?} over cap");
            assert!(d >= Duration::from_millis(50), "{d:?} under floor");
            max_seen = max_seen.max(d);
        }
        assert!(
            max_seen > Duration::from_millis(400),
            "backoff never grew: {max_seen:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn rate_limiter_suppresses_and_counts() {
        let r = RateLimiter::new(Duration::from_millis(50));
        assert_eq!(r.check("k"), Some(0));
        assert_eq!(r.check("k"), None);
        assert_eq!(r.check("k"), None);
        assert_eq!(r.check("other"), Some(0));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(r.check("k"), Some(2));
    }

    #[test]
    fn typo_hints() {
        assert_eq!(did_you_mean("degc", ["degC", "percent"]), Some("degC"));
        assert_eq!(did_you_mean("kwh", ["kWh", "kW"]), Some("kWh"));
        assert_eq!(did_you_mean("banana", ["degC", "percent"]), None);
    }
}
