//! When a rule is armed: days of the week and hours of the day in a time zone (`days: mon-fri`,
//! `hours: "07:00-19:00"`, `timezone: Europe/Berlin`). A range whose end is before its start runs over midnight
//! (`"19:00-07:00"`); the day is the day the local time falls on.
//!
//! Converting a timestamp to local time costs far more than a threshold test, so the engine caches the answer
//! per rule for the current minute (schedules have minute resolution): a stream of readings pays for the
//! conversion once a minute.

use jiff::tz::TimeZone;

/// A validated schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Bit `i` = weekday `i` (Monday = 0).
    days: u8,
    /// Minute-of-day ranges `[start, end)`; empty = all day.
    hours: Vec<(u16, u16)>,
    tz: TimeZone,
}

impl PartialEq for Schedule {
    fn eq(&self, o: &Self) -> bool {
        self.days == o.days && self.hours == o.hours && self.tz == o.tz
    }
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day(s: &str) -> Result<u8, String> {
    DAYS.iter()
        .position(|d| *d == s)
        .map(|i| i as u8)
        .ok_or_else(|| format!("unknown day `{s}`; use mon, tue, wed, thu, fri, sat, sun"))
}

fn minute(s: &str) -> Result<u16, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}`: write times as HH:MM"))?;
    let h: u16 = h.parse().map_err(|_| format!("`{s}`: bad hour"))?;
    let m: u16 = m.parse().map_err(|_| format!("`{s}`: bad minute"))?;
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(format!("`{s}` is not a time of day"));
    }
    Ok(h * 60 + m)
}

impl Schedule {
    /// Parses `days` (`mon-fri`, `sat,sun`, `daily`), `hours` (`07:00-19:00`, several separated by `,`) and a
    /// time zone (IANA name; `None` = the system's). Errors name the key.
    pub fn parse(
        days: Option<&str>,
        hours: Option<&str>,
        tz: Option<&str>,
    ) -> Result<Schedule, (&'static str, String)> {
        let mut mask = 0u8;
        match days.map(str::trim) {
            None | Some("daily") | Some("all") => mask = 0x7f,
            Some(text) => {
                for part in text.split(',').map(str::trim) {
                    let (a, b) = match part.split_once('-') {
                        Some((a, b)) => (day(a.trim()), day(b.trim())),
                        None => (day(part), day(part)),
                    };
                    let (a, b) = (a.map_err(|e| ("days", e))?, b.map_err(|e| ("days", e))?);
                    let mut d = a;
                    loop {
                        mask |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
            }
        }
        let mut ranges = Vec::new();
        if let Some(text) = hours {
            for part in text.split(',').map(str::trim) {
                let (a, b) = part
                    .split_once('-')
                    .ok_or(("hours", format!("`{part}`: write hours as HH:MM-HH:MM")))?;
                let (a, b) = (
                    minute(a.trim()).map_err(|e| ("hours", e))?,
                    minute(b.trim()).map_err(|e| ("hours", e))?,
                );
                if a == b {
                    return Err(("hours", format!("`{part}` is an empty range")));
                }
                ranges.push((a, b));
            }
        }
        let tz = match tz {
            None => TimeZone::system(),
            Some(name) => TimeZone::get(name).map_err(|_| {
                (
                    "timezone",
                    format!("unknown time zone `{name}` (use an IANA name like Europe/Berlin)"),
                )
            })?,
        };
        Ok(Schedule {
            days: mask,
            hours: ranges,
            tz,
        })
    }

    /// Whether a Unix time in nanoseconds is inside the schedule.
    pub fn contains(&self, at_ns: i64) -> bool {
        let Ok(ts) = jiff::Timestamp::from_nanosecond(at_ns as i128) else {
            return false;
        };
        let dt = self.tz.to_datetime(ts);
        let wd = dt.weekday().to_monday_zero_offset() as u8;
        if self.days & (1 << wd) == 0 {
            return false;
        }
        if self.hours.is_empty() {
            return true;
        }
        let m = dt.hour() as u16 * 60 + dt.minute() as u16;
        self.hours.iter().any(|&(a, b)| {
            if a < b {
                m >= a && m < b
            } else {
                m >= a || m < b
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_nanosecond() as i64
    }

    #[test]
    fn weekdays_hours_and_zone() {
        let s =
            Schedule::parse(Some("mon-fri"), Some("07:00-19:00"), Some("Europe/Berlin")).unwrap();
        // 2026-01-05 is a Monday; Berlin is UTC+1 in January.
        assert!(s.contains(at("2026-01-05T06:30:00Z"))); // 07:30 local
        assert!(!s.contains(at("2026-01-05T05:30:00Z"))); // 06:30 local
        assert!(!s.contains(at("2026-01-05T18:00:00Z"))); // 19:00 local, end excluded
        assert!(!s.contains(at("2026-01-10T10:00:00Z"))); // Saturday
    }

    #[test]
    fn overnight_and_lists() {
        let s = Schedule::parse(Some("sat,sun"), Some("22:00-06:00"), Some("UTC")).unwrap();
        assert!(s.contains(at("2026-01-10T23:00:00Z")));
        assert!(s.contains(at("2026-01-11T05:59:00Z")));
        assert!(!s.contains(at("2026-01-11T12:00:00Z")));
        assert!(!s.contains(at("2026-01-12T23:00:00Z"))); // Monday
        let s = Schedule::parse(Some("fri-mon"), None, Some("UTC")).unwrap();
        assert!(s.contains(at("2026-01-11T12:00:00Z")));
        assert!(!s.contains(at("2026-01-07T12:00:00Z"))); // Wednesday
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            Schedule::parse(Some("mon-fry"), None, None).unwrap_err().0,
            "days"
        );
        assert_eq!(
            Schedule::parse(None, Some("7-19"), None).unwrap_err().0,
            "hours"
        );
        assert_eq!(
            Schedule::parse(None, None, Some("Mars/Base"))
                .unwrap_err()
                .0,
            "timezone"
        );
    }
}
