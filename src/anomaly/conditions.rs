//! Alarm logic for the three predictive rule conditions, ready for the rules engine to plug in:
//!
//! - `anomaly: { score_above: 0.9, for: 15m }` → [`AnomalyAlarm`]
//! - `forecast: { above: 250, within: 7d }` (or `below:`) → [`ForecastAlarm`]
//! - `equipment_anomaly: { profile: generic-ahu, score_above: 0.95 }` → [`EquipmentAlarm`]
//!
//! Each alarm is a small state machine fed with the detector's output; it returns a [`Transition`] when the alarm
//! is raised (with the text a work order needs: what is unusual, expected vs observed, since when) or cleared.
//! Pure code: no clock (times come in), no I/O.

use super::Score;
use super::equipment::EquipmentScore;
use super::forecast::Trend;

/// An alarm state change, with the work-order text.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Raised { since: i64, message: String },
    Cleared { at: i64, message: String },
}

fn time(at: i64) -> String {
    jiff::Timestamp::from_second(at)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| at.to_string())
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Human duration: "about 5 days", "about 7 hours", "about 20 minutes".
pub fn about(secs: i64) -> String {
    let s = secs.max(0) as f64;
    if s >= 1.5 * 86_400.0 {
        format!("about {:.0} days", s / 86_400.0)
    } else if s >= 1.5 * 3600.0 {
        format!("about {:.0} hours", s / 3600.0)
    } else {
        format!("about {:.0} minutes", (s / 60.0).max(1.0))
    }
}

/// `anomaly: { score_above, for }` on one point: raised once `Score::level` has stayed above `score_above` for
/// `for_secs`; cleared once it has stayed at or below it for as long.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyAlarm {
    pub score_above: f64,
    pub for_secs: i64,
    active: bool,
    /// Start of the current run of readings on the other side of the threshold.
    run_since: Option<i64>,
    /// Largest departure seen in the current run: (observed, expected, low, high).
    worst: Option<(f64, f64, f64, f64)>,
}

impl AnomalyAlarm {
    pub fn new(score_above: f64, for_secs: i64) -> Self {
        AnomalyAlarm {
            score_above,
            for_secs: for_secs.max(0),
            active: false,
            run_since: None,
            worst: None,
        }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Feeds one scored reading of the point (`point` names it in messages, e.g. `ahu-3/supply_air_temp`).
    pub fn update(
        &mut self,
        point: &str,
        unit: &str,
        at: i64,
        value: f64,
        s: &Score,
    ) -> Option<Transition> {
        if !s.ready || !s.settled {
            return None;
        }
        let unusual = s.level > self.score_above;
        if unusual != self.active {
            let since = *self.run_since.get_or_insert(at);
            if unusual {
                let dev = (value - s.expected).abs();
                if self.worst.is_none_or(|w| dev > (w.0 - w.1).abs()) {
                    self.worst = Some((value, s.expected, s.low, s.high));
                }
            }
            if at - since >= self.for_secs {
                self.active = unusual;
                self.run_since = None;
                let unit = if unit.is_empty() {
                    String::new()
                } else {
                    format!(" {unit}")
                };
                return Some(if unusual {
                    let (v, e, lo, hi) = self
                        .worst
                        .take()
                        .unwrap_or((value, s.expected, s.low, s.high));
                    Transition::Raised {
                        since,
                        message: format!(
                            "{point} behaves unusually since {}: observed {}{unit}, expected about {}{unit} \
                             (normal range {} – {}{unit})",
                            time(since),
                            num(v),
                            num(e),
                            num(lo),
                            num(hi)
                        ),
                    }
                } else {
                    Transition::Cleared {
                        at,
                        message: format!(
                            "{point} back to normal since {}: {}{unit}, expected about {}{unit}",
                            time(since),
                            num(value),
                            num(s.expected)
                        ),
                    }
                });
            }
        } else {
            self.run_since = None;
            self.worst = None;
        }
        None
    }
}

/// Which way a forecast limit is crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Above,
    Below,
}

/// `forecast: { above|below: LIMIT, within: DURATION }` on one point: raised when the trend is predicted to cross
/// the limit within `within_secs` with at least `min_confidence`; cleared when no crossing is expected any more
/// (flat or reversed trend, e.g. after a filter change) or it moved beyond twice `within_secs`.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastAlarm {
    pub limit: f64,
    pub direction: Direction,
    pub within_secs: i64,
    pub min_confidence: f64,
    active: bool,
}

impl ForecastAlarm {
    pub fn new(limit: f64, direction: Direction, within_secs: i64) -> Self {
        ForecastAlarm {
            limit,
            direction,
            within_secs,
            min_confidence: 0.9,
            active: false,
        }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Re-evaluates the trend at `now` (call it e.g. once per closed bucket, not per reading).
    pub fn update(
        &mut self,
        point: &str,
        unit: &str,
        now: i64,
        trend: &mut Trend,
    ) -> Option<Transition> {
        let c = match self.direction {
            Direction::Above => trend.crossing_above(self.limit),
            Direction::Below => trend.crossing_below(self.limit),
        };
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" {unit}")
        };
        let verb = match self.direction {
            Direction::Above => "rise to",
            Direction::Below => "fall to",
        };
        match c {
            Some(c)
                if !self.active
                    && c.at - now <= self.within_secs
                    && c.confidence >= self.min_confidence =>
            {
                self.active = true;
                Some(Transition::Raised {
                    since: now,
                    message: format!(
                        "{point} will {verb} {}{unit} in {} (around {}; now {}{unit}, trend {:+}{unit}/day, \
                         confidence {:.2})",
                        num(self.limit),
                        about(c.at - now),
                        time(c.at),
                        num(c.level_now),
                        num(c.slope_per_day),
                        c.confidence
                    ),
                })
            }
            Some(c) if self.active && c.at - now <= 2 * self.within_secs => None,
            _ if self.active => {
                self.active = false;
                Some(Transition::Cleared {
                    at: now,
                    message: format!(
                        "{point}: the trend toward {}{unit} has stopped or reversed",
                        num(self.limit)
                    ),
                })
            }
            _ => None,
        }
    }
}

/// `equipment_anomaly: { profile, score_above }` on one device: raised after `rows` consecutive rows above
/// `score_above`, cleared after as many rows at or below it.
#[derive(Debug, Clone, PartialEq)]
pub struct EquipmentAlarm {
    pub score_above: f64,
    pub rows: u32,
    active: bool,
    run: u32,
    since: i64,
}

impl EquipmentAlarm {
    pub fn new(score_above: f64) -> Self {
        EquipmentAlarm {
            score_above,
            rows: 3,
            active: false,
            run: 0,
            since: 0,
        }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// `points` names the model's columns (for the message).
    pub fn update(
        &mut self,
        device: &str,
        points: &[&str],
        at: i64,
        s: &EquipmentScore,
    ) -> Option<Transition> {
        let unusual = s.score > self.score_above;
        if unusual == self.active {
            self.run = 0;
            return None;
        }
        if self.run == 0 {
            self.since = at;
        }
        self.run += 1;
        if self.run < self.rows.max(1) {
            return None;
        }
        self.run = 0;
        self.active = unusual;
        let worst = points.get(s.worst.0).copied().unwrap_or("?");
        Some(if unusual {
            Transition::Raised {
                since: self.since,
                message: format!(
                    "{device} runs in no learnt operating state since {}: {worst} is {:.1} standard deviations \
                     {} the nearest normal state (score {:.2})",
                    time(self.since),
                    s.worst.1.abs(),
                    if s.worst.1 > 0.0 { "above" } else { "below" },
                    s.score
                ),
            }
        } else {
            Transition::Cleared {
                at,
                message: format!("{device} back in a learnt operating state"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::{Detector, Kind, Params};

    #[test]
    fn anomaly_alarm_opens_after_the_hold_time_and_says_what_is_unusual() {
        // Supply air at 5-minute steps with a daily cycle; after 6 days a stuck valve adds 12 °C.
        let mut det = Detector::new(Kind::Combined, Params::default());
        let mut alarm = AnomalyAlarm::new(0.9, 15 * 60);
        let mut rng = fastrand::Rng::with_seed(11);
        let start = 1_767_225_600;
        let mut raised = None;
        let mut cleared = None;
        for i in 0..(288 * 8) {
            let t = start + i * 300;
            let ph = 2.0 * std::f64::consts::PI * (t % 86_400) as f64 / 86_400.0;
            let fault = (288 * 6..288 * 6 + 60).contains(&i);
            let v = 16.0 + 2.0 * ph.sin() + 0.3 * rng.f64() + if fault { 12.0 } else { 0.0 };
            let s = det.observe(t, v);
            match alarm.update("ahu-3/supply_air_temp", "degC", t, v, &s) {
                Some(Transition::Raised { since, message }) if raised.is_none() => {
                    raised = Some((i, since, message))
                }
                Some(Transition::Raised { since, message }) => {
                    panic!("raised twice: {raised:?} then at {i} since {since}: {message}")
                }
                Some(Transition::Cleared { at, .. }) => cleared = Some(at),
                None => {}
            }
        }
        let (i, since, msg) = raised.expect("the stuck valve opens a work order");
        assert!(
            (288 * 6 + 3..288 * 6 + 12).contains(&i),
            "raised at reading {i}"
        );
        let fault = start + 288 * 6 * 300;
        assert!(
            (fault..=fault + 900).contains(&since),
            "since the fault began: {since}"
        );
        assert!(
            msg.starts_with("ahu-3/supply_air_temp behaves unusually since 2026-01-07 00:0"),
            "{msg}"
        );
        assert!(
            msg.contains("degC") && msg.contains("expected about"),
            "{msg}"
        );
        assert!(
            cleared.is_some_and(|c| c > since),
            "cleared after the fault ended"
        );
    }

    #[test]
    fn forecast_alarm_opens_with_the_crossing_and_closes_on_a_filter_change() {
        const DAY: i64 = 86_400;
        let start = 1_767_225_600;
        let mut tr = Trend::new();
        let mut alarm = ForecastAlarm::new(250.0, Direction::Above, 7 * DAY);
        let mut rng = fastrand::Rng::with_seed(12);
        let mut events = Vec::new();
        // 9 days of a clogging filter (150 Pa + 10 Pa/day), then a new filter at 140 Pa for 2 days.
        for i in 0..(11 * 24 * 12) {
            let t = start + i * 300;
            let d = (t - start) as f64 / DAY as f64;
            let v = if d < 9.0 { 150.0 + 10.0 * d } else { 140.0 } + 4.0 * (rng.f64() - 0.5);
            tr.observe(t, v);
            if i % 12 == 11 {
                if let Some(e) = alarm.update("ahu-3/filter_dp", "Pa", t, &mut tr) {
                    events.push((t, e));
                }
            }
        }
        let (t, Transition::Raised { message, .. }) = &events[0] else {
            panic!("{events:?}")
        };
        // 250 Pa is 10 days in; raised once the crossing is within 7 days, i.e. around day 3.
        let day = (t - start) as f64 / DAY as f64;
        assert!(
            (2.5..4.5).contains(&day),
            "raised on day {day:.1}: {message}"
        );
        assert!(
            message.starts_with("ahu-3/filter_dp will rise to 250 Pa in about 7 days"),
            "{message}"
        );
        assert!(message.contains("confidence"), "{message}");
        let (t, Transition::Cleared { .. }) = &events[1] else {
            panic!("{events:?}")
        };
        let day = (t - start) as f64 / DAY as f64;
        assert!((9.0..10.5).contains(&day), "cleared on day {day:.1}");
        assert_eq!(events.len(), 2, "{events:?}");
    }

    #[test]
    fn equipment_alarm_needs_consecutive_rows_and_names_the_point() {
        let mut a = EquipmentAlarm::new(0.95);
        let bad = EquipmentScore {
            score: 0.99,
            d2: 80.0,
            state: 0,
            worst: (0, 7.5),
        };
        let ok = EquipmentScore {
            score: 0.1,
            d2: 2.0,
            state: 0,
            worst: (1, 0.5),
        };
        let pts = ["supply_air_temp", "return_air_temp"];
        assert_eq!(a.update("ahu-3", &pts, 0, &bad), None);
        assert_eq!(
            a.update("ahu-3", &pts, 60, &ok),
            None,
            "one odd row is not an alarm"
        );
        assert_eq!(a.update("ahu-3", &pts, 120, &bad), None);
        assert_eq!(a.update("ahu-3", &pts, 180, &bad), None);
        let Some(Transition::Raised { since, message }) = a.update("ahu-3", &pts, 240, &bad) else {
            panic!()
        };
        assert_eq!(since, 120);
        assert!(
            message.contains("supply_air_temp is 7.5 standard deviations above"),
            "{message}"
        );
        for t in [300, 360] {
            assert_eq!(a.update("ahu-3", &pts, t, &ok), None);
        }
        assert!(matches!(
            a.update("ahu-3", &pts, 420, &ok),
            Some(Transition::Cleared { at: 420, .. })
        ));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(about(5 * 86_400 + 3600), "about 5 days");
        assert_eq!(about(7 * 3600), "about 7 hours");
        assert_eq!(about(20 * 60), "about 20 minutes");
    }
}
#[cfg(test)]
mod false_alarms {
    use super::*;
    use crate::anomaly::{Detector, Kind, Params};

    /// A hundred days of normal behaviour (daily cycle plus uniform, near-Gaussian or spiky noise) must not open
    /// a single `anomaly: { score_above: 0.9, for: 15m }` work order.
    #[test]
    fn normal_data_opens_no_work_order_in_a_hundred_days() {
        for (name, noise) in [("uniform", 0), ("near-gaussian", 1), ("spiky", 2)] {
            let mut det = Detector::new(Kind::Combined, Params::default());
            let mut alarm = AnomalyAlarm::new(0.9, 900);
            let mut rng = fastrand::Rng::with_seed(1);
            let mut raises = Vec::new();
            for i in 0..(100 * 288) {
                let t = 1_400_000_000 + i * 300;
                let ph = 2.0 * std::f64::consts::PI * (t % 86_400) as f64 / 86_400.0;
                let e = match noise {
                    0 => 3.0 * rng.f64(),
                    1 => (0..6).map(|_| rng.f64()).sum::<f64>() - 3.0,
                    _ if rng.f64() < 0.01 => 10.0 * rng.f64(),
                    _ => rng.f64(),
                };
                let v = 50.0 + 20.0 * ph.sin() + e;
                let s = det.observe(t, v);
                if let Some(Transition::Raised { message, .. }) = alarm.update("p", "", t, v, &s) {
                    raises.push(message);
                }
            }
            assert!(raises.is_empty(), "{name}: {raises:?}");
        }
    }
}
