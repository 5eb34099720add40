//! Meter readings to interval consumption: the part that must be right whatever real meters do.
//!
//! A [`Converter`] takes one meter point's readings in time order and adds consumption to settlement slots
//! (`slot = floor(t / period)`), in the store's base unit (kWh for energy, m3 for volume):
//! - **counter** points (`kind: counter`): the delta between consecutive readings is spread linearly over the
//!   time between them, so readings that straddle a slot boundary split their delta at the boundary;
//! - **power** points (W, kW): trapezoid integration between consecutive readings, exact per slot for the
//!   straight line between two readings; every slot is flagged [`DERIVED`].
//!
//! Real meter behaviour (each has a test below with real-looking data):
//! - **gap**: readings further apart than 1.1 periods spread their delta over the missing slots, which are
//!   flagged [`ESTIMATED`] (nothing is dropped: the total still equals the counter delta);
//! - **wrap-around** at the register's width (a u16 register with scale 0.1 wraps at 6553.6): the delta is
//!   `width - last + value`;
//! - **reset / replacement**: the counter restarts near zero; the new value counts as consumption since the
//!   restart (the Home Assistant `total_increasing` convention) and a [`Event::Reset`] is reported;
//! - **glitch**: a decrease, or a jump far above the meter's recent rate, is held back until the next reading:
//!   if the next reading returns to the old line, the odd value was a glitch and is dropped ([`Event::Glitch`]);
//!   if the next reading continues from it, it was real (reset, wrap or a genuine jump);
//! - **out of order**: a reading older than the last accepted one would only re-split a delta already
//!   accounted for, so it is dropped and reported ([`Event::Late`]); callers that can (the live stage, imports)
//!   sort readings within a window first so this only happens to readings later than that window.
//!
//! Invariant: for every accepted pair of readings the sum of the slot amounts equals the consumption between them
//! (the counter delta, corrected for wrap/reset), so totals balance.

use std::collections::BTreeMap;

/// Slot flag: this slot's consumption was spread over a gap in the readings.
pub const ESTIMATED: u8 = 1;
/// Slot flag: integrated from power readings rather than read from a counter.
pub const DERIVED: u8 = 2;

/// How a meter point is turned into consumption.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MeterKind {
    /// A running total. `wrap`: the value at which the register rolls over (in the point's unit), when known.
    Counter { wrap: Option<f64> },
    /// An instantaneous power.
    Power,
}

/// A meter point as the converter needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeterSpec {
    pub kind: MeterKind,
    /// Multiplier from the point's unit to the base unit (Wh → kWh: 0.001). For power: to kW.
    pub to_base: f64,
}

/// Something worth telling an energy manager about a meter's readings.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Wrap { at: f64, from: f64, to: f64 },
    Reset { at: f64, from: f64, to: f64 },
    Glitch { at: f64, value: f64 },
    Late { at: f64, value: f64 },
    Gap { from: f64, to: f64 },
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Wrap { .. } => "wrap",
            Event::Reset { .. } => "reset",
            Event::Glitch { .. } => "glitch",
            Event::Late { .. } => "late",
            Event::Gap { .. } => "gap",
        }
    }
    pub fn at(&self) -> f64 {
        match self {
            Event::Wrap { at, .. }
            | Event::Reset { at, .. }
            | Event::Glitch { at, .. }
            | Event::Late { at, .. } => *at,
            Event::Gap { from, .. } => *from,
        }
    }
}

/// Consumption per slot, in base units, with flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slots {
    pub map: BTreeMap<i64, (f64, u8)>,
}

impl Slots {
    pub fn add(&mut self, slot: i64, amount: f64, flags: u8) {
        // Converters produce slots in time order: most adds hit the last slot or append after it.
        if let Some(mut last) = self.map.last_entry() {
            if *last.key() == slot {
                let e = last.get_mut();
                e.0 += amount;
                e.1 |= flags;
                return;
            }
        }
        let e = self.map.entry(slot).or_insert((0.0, 0));
        e.0 += amount;
        e.1 |= flags;
    }
    pub fn total(&self) -> f64 {
        self.map.values().map(|v| v.0).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One reading: seconds since the epoch (fractional) and the value in the point's unit.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub t: f64,
    pub v: f64,
}

/// A converter's state between readings (persisted so a restart continues where it stopped).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    pub last: Option<Sample>,
    /// A suspicious reading waiting for the next one to decide.
    pub pending: Option<Sample>,
    /// Recent consumption rate (point units per second), exponentially averaged over measured deltas.
    pub rate: Option<f64>,
    pub rate_samples: u32,
}

/// Readings of one meter point in, slot consumption out.
#[derive(Debug, Clone)]
pub struct Converter {
    pub spec: MeterSpec,
    /// Settlement period in seconds.
    pub period: i64,
    pub state: State,
}

/// A jump counts as suspicious above this multiple of the recent rate (and only once the rate is known).
const JUMP_FACTOR: f64 = 50.0;
/// Readings before the recent rate is trusted for jump detection.
const RATE_WARMUP: u32 = 4;

impl Converter {
    pub fn new(spec: MeterSpec, period_s: i64) -> Self {
        Converter {
            spec,
            period: period_s,
            state: State::default(),
        }
    }

    /// Feeds one reading (seconds, value in the point's unit). Non-finite values are ignored.
    pub fn push(&mut self, t: f64, v: f64, out: &mut Slots, events: &mut Vec<Event>) {
        if !t.is_finite() || !v.is_finite() {
            return;
        }
        let s = Sample { t, v };
        match self.spec.kind {
            MeterKind::Power => self.push_power(s, out, events),
            MeterKind::Counter { wrap } => self.push_counter(s, wrap, out, events),
        }
    }

    fn push_power(&mut self, s: Sample, out: &mut Slots, events: &mut Vec<Event>) {
        let Some(last) = self.state.last else {
            self.state.last = Some(s);
            return;
        };
        if s.t <= last.t {
            if s.t < last.t {
                events.push(Event::Late {
                    at: s.t,
                    value: s.v,
                });
            }
            return;
        }
        let est = self.is_gap(last.t, s.t, events);
        let k = self.spec.to_base / 3600.0; // kW·s → kWh
        let p = self.period as f64;
        let (p0, p1) = (last.v, s.v);
        let span = s.t - last.t;
        let mut a = last.t;
        while a < s.t {
            let slot = (a / p).floor() as i64;
            let b = (((slot + 1) as f64) * p).min(s.t);
            let pa = p0 + (p1 - p0) * (a - last.t) / span;
            let pb = p0 + (p1 - p0) * (b - last.t) / span;
            let flags = DERIVED | if est { ESTIMATED } else { 0 };
            out.add(slot, (pa + pb) / 2.0 * (b - a) * k, flags);
            a = b;
        }
        self.state.last = Some(s);
    }

    fn is_gap(&self, t0: f64, t1: f64, events: &mut Vec<Event>) -> bool {
        let gap = t1 - t0 > self.period as f64 * 1.1;
        if gap {
            events.push(Event::Gap { from: t0, to: t1 });
        }
        gap
    }

    fn push_counter(
        &mut self,
        s: Sample,
        wrap: Option<f64>,
        out: &mut Slots,
        events: &mut Vec<Event>,
    ) {
        let Some(last) = self.state.last else {
            self.state.last = Some(s);
            return;
        };
        if s.t <= last.t {
            if s.t < last.t {
                events.push(Event::Late {
                    at: s.t,
                    value: s.v,
                });
            }
            return;
        }
        if let Some(pend) = self.state.pending {
            if s.t <= pend.t {
                if s.t < pend.t {
                    events.push(Event::Late {
                        at: s.t,
                        value: s.v,
                    });
                }
                return;
            }
            // Decide about the held reading with this one.
            if s.v >= last.v && !self.jump(last, s) {
                // Back on the old line: the held value was a glitch.
                events.push(Event::Glitch {
                    at: pend.t,
                    value: pend.v,
                });
                self.state.pending = None;
                self.accept(last, s, s.v - last.v, out, events);
                return;
            }
            if s.v >= pend.v {
                // Continues from the held value: it was real.
                self.state.pending = None;
                let delta = self.real_step(last, pend, wrap, events);
                self.accept(last, pend, delta, out, events);
                self.accept(pend, s, s.v - pend.v, out, events);
                return;
            }
            // Neither: the held value is a glitch; judge the new one against the old line afresh.
            events.push(Event::Glitch {
                at: pend.t,
                value: pend.v,
            });
            self.state.pending = None;
        }
        if s.v < last.v || self.jump(last, s) {
            self.state.pending = Some(s);
            return;
        }
        self.accept(last, s, s.v - last.v, out, events);
    }

    /// Whether going from `a` to `b` is far above the recent rate (a possible glitch).
    fn jump(&self, a: Sample, b: Sample) -> bool {
        match self.state.rate {
            Some(r) if self.state.rate_samples >= RATE_WARMUP => {
                let d = b.v - a.v;
                // Small absolute steps (a counter's last digit) are never suspicious.
                let floor = r * self.period as f64;
                d > JUMP_FACTOR * (r * (b.t - a.t)).max(floor) && d > 0.0
            }
            _ => false,
        }
    }

    /// The consumption of a confirmed decrease or jump from `last` to `next`.
    fn real_step(
        &self,
        last: Sample,
        next: Sample,
        wrap: Option<f64>,
        events: &mut Vec<Event>,
    ) -> f64 {
        if next.v >= last.v {
            return next.v - last.v;
        }
        if let Some(w) = wrap {
            // A wrap happens near the top of the register and lands near zero.
            if last.v > w * 0.5 && next.v < w * 0.5 {
                events.push(Event::Wrap {
                    at: next.t,
                    from: last.v,
                    to: next.v,
                });
                return w - last.v + next.v;
            }
        }
        events.push(Event::Reset {
            at: next.t,
            from: last.v,
            to: next.v,
        });
        next.v.max(0.0)
    }

    fn accept(&mut self, a: Sample, b: Sample, delta: f64, out: &mut Slots, ev: &mut Vec<Event>) {
        let est = self.is_gap(a.t, b.t, ev);
        let amount = delta * self.spec.to_base;
        spread(a.t, b.t, amount, self.period, est, out);
        if !est && b.t > a.t {
            let r = delta / (b.t - a.t);
            self.state.rate = Some(match self.state.rate {
                None => r,
                Some(old) => old * 0.8 + r * 0.2,
            });
            self.state.rate_samples = self.state.rate_samples.saturating_add(1);
        }
        self.state.last = Some(b);
    }
}

/// Spreads `amount` linearly over `[t0, t1]` into slots of `period` seconds.
pub fn spread(t0: f64, t1: f64, amount: f64, period: i64, estimated: bool, out: &mut Slots) {
    let p = period as f64;
    let flags = if estimated { ESTIMATED } else { 0 };
    let span = t1 - t0;
    if span <= 0.0 {
        out.add((t1 / p).floor() as i64, amount, flags);
        return;
    }
    let first = (t0 / p).floor() as i64;
    let last = (t1 / p).ceil() as i64 - 1;
    if first >= last {
        out.add(first, amount, flags);
        return;
    }
    // The last slot takes the remainder so the sum is exactly `amount`.
    let mut given = 0.0;
    for slot in first..last {
        let a = (slot as f64 * p).max(t0);
        let b = ((slot + 1) as f64 * p).min(t1);
        let part = amount * (b - a) / span;
        out.add(slot, part, flags);
        given += part;
    }
    out.add(last, amount - given, flags);
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: i64 = 900;
    // 2026-01-05 00:00:00 UTC, a Monday.
    const T0: f64 = 1_767_571_200.0;

    fn counter(wrap: Option<f64>) -> Converter {
        Converter::new(
            MeterSpec {
                kind: MeterKind::Counter { wrap },
                to_base: 1.0,
            },
            P,
        )
    }

    fn run(c: &mut Converter, readings: &[(f64, f64)]) -> (Slots, Vec<Event>) {
        let mut out = Slots::default();
        let mut ev = Vec::new();
        for &(t, v) in readings {
            c.push(t, v, &mut out, &mut ev);
        }
        (out, ev)
    }

    /// A meter drawing `kw` read every `step` seconds from `start` kWh, with the last digit's rounding.
    fn meter(start: f64, kw: f64, step: f64, n: usize) -> Vec<(f64, f64)> {
        (0..n)
            .map(|i| {
                let t = T0 + i as f64 * step;
                let v = start + kw * (i as f64 * step) / 3600.0;
                (t, (v * 100.0).round() / 100.0)
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn steady_meter_totals_balance_and_split_at_boundaries() {
        // 12 kW read every 60 s for 2 hours: 8 slots of 3 kWh.
        let r = meter(15_230.4, 12.0, 60.0, 121);
        let (out, ev) = run(&mut counter(None), &r);
        assert!(ev.is_empty(), "{ev:?}");
        assert!(close(out.total(), r.last().unwrap().1 - r[0].1));
        assert_eq!(out.map.len(), 8);
        for (v, f) in out.map.values() {
            assert!((v - 3.0).abs() < 0.011, "{v}");
            assert_eq!(*f, 0);
        }
    }

    #[test]
    fn unaligned_readings_split_delta_proportionally() {
        let mut c = counter(None);
        // 10 kWh between 00:10 and 00:20: 5 in slot 0 (00:00-00:15), 5 in slot 1.
        let (out, _) = run(&mut c, &[(T0 + 600.0, 100.0), (T0 + 1200.0, 110.0)]);
        let s0 = (T0 / P as f64) as i64;
        assert!(close(out.map[&s0].0, 5.0));
        assert!(close(out.map[&(s0 + 1)].0, 5.0));
    }

    #[test]
    fn gap_is_spread_over_missing_intervals_and_flagged_estimated() {
        // A Modbus meter polled every 5 min that was unreachable for 2 hours: 24 kWh at 12 kW across the gap.
        let mut r = meter(500.0, 12.0, 300.0, 13); // 00:00 .. 01:00
        let after: Vec<_> = meter(500.0, 12.0, 300.0, 49).into_iter().skip(36).collect(); // 03:00 .. 04:00
        r.extend(after);
        let (out, ev) = run(&mut counter(None), &r);
        assert!(ev.iter().any(|e| matches!(e, Event::Gap { .. })));
        assert!(close(out.total(), r.last().unwrap().1 - r[0].1));
        let s0 = (T0 / P as f64) as i64;
        // 01:00..03:00 are 8 estimated slots of 3 kWh each.
        for k in 4..12 {
            let (v, f) = out.map[&(s0 + k)];
            assert_eq!(f & ESTIMATED, ESTIMATED, "slot {k}");
            assert!((v - 3.0).abs() < 0.01, "slot {k}: {v}");
        }
        assert_eq!(out.map[&(s0 + 3)].1, 0);
        assert_eq!(out.map[&(s0 + 12)].1, 0);
    }

    #[test]
    fn wrap_at_register_width() {
        // A u16 register with scale 0.1 kWh wraps at 6553.6 kWh; 12 kW read every minute from 6549.0.
        let wrap = 6553.6;
        let r: Vec<(f64, f64)> = meter(6549.0, 12.0, 60.0, 61)
            .into_iter()
            .map(|(t, v)| (t, ((v % wrap) * 10.0).round() / 10.0))
            .collect();
        assert!(r.iter().any(|&(_, v)| v < 10.0), "the data must wrap");
        let (out, ev) = run(&mut counter(Some(wrap)), &r);
        assert_eq!(
            ev.iter().filter(|e| e.kind() == "wrap").count(),
            1,
            "{ev:?}"
        );
        // 1 hour at 12 kW.
        assert!((out.total() - 12.0).abs() < 0.2, "{}", out.total());
        assert!(out.map.values().all(|(v, _)| *v >= 0.0 && *v < 3.3));
    }

    #[test]
    fn meter_replacement_restarts_near_zero() {
        // Old meter at 48 211.7 kWh is swapped; the new one starts at 0.3 and runs on at 12 kW.
        let mut r = meter(48_200.0, 12.0, 60.0, 60);
        let new: Vec<_> = meter(0.3, 12.0, 60.0, 61)
            .into_iter()
            .skip(1)
            .map(|(t, v)| (t + 3600.0 - 60.0, v))
            .collect();
        r.extend(new);
        let (out, ev) = run(&mut counter(Some(4_294_967.296)), &r);
        assert_eq!(
            ev.iter().filter(|e| e.kind() == "reset").count(),
            1,
            "{ev:?}"
        );
        let old = r[59].1 - r[0].1;
        let after = r.last().unwrap().1; // consumption since the restart, from zero
        assert!(
            close(out.total(), old + after),
            "{} vs {}",
            out.total(),
            old + after
        );
        assert!(out.map.values().all(|(v, _)| *v >= 0.0));
    }

    #[test]
    fn one_off_low_glitch_is_dropped() {
        let mut r = meter(15_230.4, 12.0, 60.0, 30);
        r[15].1 = 0.0; // a spurious zero (a Modbus read during the meter's reboot)
        let (out, ev) = run(&mut counter(None), &r);
        assert_eq!(
            ev.iter().filter(|e| e.kind() == "glitch").count(),
            1,
            "{ev:?}"
        );
        assert!(!ev.iter().any(|e| e.kind() == "reset"));
        assert!(close(out.total(), r[29].1 - r[0].1));
    }

    #[test]
    fn one_off_high_glitch_is_dropped() {
        let mut r = meter(15_230.4, 12.0, 60.0, 30);
        r[20].1 = 1_015_230.0; // a bit flip in the high word
        let (out, ev) = run(&mut counter(None), &r);
        assert_eq!(
            ev.iter().filter(|e| e.kind() == "glitch").count(),
            1,
            "{ev:?}"
        );
        assert!(close(out.total(), r[29].1 - r[0].1));
        assert!(out.map.values().all(|(v, _)| *v < 3.1));
    }

    #[test]
    fn a_real_jump_that_persists_is_kept() {
        // A heat meter whose reading jumps by 500 kWh (a pulse-count correction) and carries on from there.
        let mut r = meter(1000.0, 12.0, 60.0, 30);
        for x in r.iter_mut().skip(20) {
            x.1 += 500.0;
        }
        let (out, ev) = run(&mut counter(None), &r);
        assert!(!ev.iter().any(|e| e.kind() == "glitch"), "{ev:?}");
        assert!(close(out.total(), r[29].1 - r[0].1));
    }

    #[test]
    fn out_of_order_readings_beyond_the_window_do_not_change_totals() {
        let r = meter(100.0, 12.0, 60.0, 30);
        let mut shuffled = r.clone();
        shuffled.swap(10, 12);
        let (out, ev) = run(&mut counter(None), &shuffled);
        assert!(ev.iter().any(|e| e.kind() == "late"));
        assert!(close(out.total(), r[29].1 - r[0].1));
        // Duplicates (MQTT redelivery) count once.
        let mut dup = r.clone();
        dup.insert(5, r[5]);
        let (out2, _) = run(&mut counter(None), &dup);
        assert!(close(out2.total(), out.total()));
    }

    #[test]
    fn power_is_integrated_by_trapezoid_and_flagged_derived() {
        let mut c = Converter::new(
            MeterSpec {
                kind: MeterKind::Power,
                to_base: 0.001,
            },
            P,
        );
        // A ramp from 0 W to 3600 W over one hour, read every 10 s: 1.8 kWh.
        let r: Vec<(f64, f64)> = (0..=360)
            .map(|i| (T0 + i as f64 * 10.0, i as f64 * 10.0))
            .collect();
        let (out, _) = run(&mut c, &r);
        assert!(close(out.total(), 1.8), "{}", out.total());
        assert_eq!(out.map.len(), 4);
        assert!(out.map.values().all(|(_, f)| f & DERIVED == DERIVED));
        // Quarter k of a linear ramp holds (2k+1)/16 of the energy.
        for (k, (_, (v, _))) in out.map.iter().enumerate() {
            assert!(close(*v, 1.8 * (2 * k + 1) as f64 / 16.0), "{k}: {v}");
        }
    }

    #[test]
    fn spread_sums_exactly() {
        let mut out = Slots::default();
        spread(T0 + 7.3, T0 + 86_399.9, 1234.5678, P, false, &mut out);
        assert_eq!(out.map.len(), 96);
        assert_eq!(out.total(), 1234.5678);
    }
}
