//! The live side: a pipeline [`Stage`] that turns each device's meter points (see [`super::meter_role`]) into
//! interval consumption as readings arrive, and a worker thread that stores it and writes the `energy`
//! measurement to InfluxDB.
//!
//! - On the pipeline task (CPU only): readings are held per meter for `reorder_window` (by reading time) so
//!   out-of-order arrivals are put back in order, then fed to the meter's [`Converter`]. Every few seconds the
//!   slots produced, the converters' states and their events go to the worker in one message.
//! - On the worker thread (blocking SQLite): one transaction per message adds the slots to the store together
//!   with the states that produced them, so a crash or restart neither loses nor double-counts consumption (the
//!   next reading after a restart continues from the stored state). Then, for every slot it touched, the
//!   worker queues one line `energy,<the device's tags>,point=P,unit=kWh consumption=..,estimated=..,
//!   derived=..,cost=..,power_avg_kw=.. <slot start>` (`cost` when a tariff prices the slot) with the slot's stored total into the InfluxDB queue (the same
//!   queue as readings: spooled and retried like them). A slot still filling is rewritten with its larger
//!   total later; InfluxDB keeps the last value per series and timestamp, so Grafana sees the final figure.
//!
//! Readings later than the reorder window are dropped by the converter (they would only re-split a delta
//! already counted) and recorded as `late` events.

use super::config::EnergyConfig;
use super::counter::{Converter, DERIVED, ESTIMATED, Event, Slots, State};
use super::store::{Mode, PRESENT, Store};
use crate::catalog::{Catalog, PointId};
use crate::line_protocol::{Line, escape_key, escape_tag_value};
use crate::pipeline::Stage;
use crate::reading::{Quality, Reading};
use crate::sinks::influx::queue::{self, Chunk, ChunkQueue};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// One meter's output since the last message to the worker.
struct Item {
    device: String,
    point: String,
    unit: &'static str,
    category: String,
    derived: bool,
    role: super::Role,
    location: std::collections::BTreeMap<String, String>,
    /// Escaped `,tag=value,...` of the device's series (site, device, profile, location), for the line.
    tags: String,
    slots: Slots,
    state: State,
    events: Vec<Event>,
}

enum Msg {
    /// Meter output, and outdoor temperature sums per UTC hour (degree days).
    Write(Vec<Item>, std::collections::BTreeMap<i64, (f64, u32)>),
}

struct Meter {
    conv: Converter,
    buf: Vec<(f64, f64)>,
    max_t: f64,
    slots: Slots,
    events: Vec<Event>,
    dirty: bool,
    device: String,
    point: String,
    unit: &'static str,
    category: String,
    derived: bool,
    role: super::Role,
    location: std::collections::BTreeMap<String, String>,
    tags: String,
}

enum Slot {
    Unknown,
    Skip,
    Meter(usize),
    /// The outdoor temperature of `[energy.degree_days]`, with its conversion to degC.
    Temperature(crate::catalog::Unit),
}

/// The energy pipeline stage.
pub struct EnergyStage {
    window: f64,
    period: i64,
    by_point: Vec<Slot>,
    meters: Vec<Meter>,
    states: HashMap<(String, String), State>,
    tx: Option<mpsc::Sender<Msg>>,
    worker: Option<std::thread::JoinHandle<()>>,
    last_send: Instant,
    pub send_every: Duration,
    temp_point: Option<(String, String)>,
    temps: std::collections::BTreeMap<i64, (f64, u32)>,
    /// `[[energy.meters]]`: meter points with a role beyond each device's default one.
    roles: Vec<super::config::MeterRole>,
}

impl EnergyStage {
    /// Opens the store (errors name the file) and starts the worker thread.
    pub fn start(
        cfg: &EnergyConfig,
        state_dir: &std::path::Path,
        timezone: &str,
        site: &str,
        queue: Option<Arc<dyn ChunkQueue>>,
    ) -> anyhow::Result<EnergyStage> {
        let path = super::store::path_in(state_dir);
        let store = Store::open(&path, cfg.period, timezone, site)?;
        // The writer lives as long as the daemon: 512 KiB of page cache instead of SQLite's 2 MiB (issue 15's
        // memory budget; BENCHMARKS.md "Memory at 10,000 points").
        store.limit_cache(512)?;
        let mut states = HashMap::new();
        for s in store.series()? {
            if let Some(st) = store.load_state(s.id)? {
                states.insert((s.device.clone(), s.point.clone()), st);
            }
        }
        info!(store = %path.display(), meters = states.len(), period_s = cfg.period, "energy store open");
        let (tx, rx) = mpsc::channel::<Msg>();
        let handle = tokio::runtime::Handle::try_current().ok();
        let tz = jiff::tz::TimeZone::get(timezone).unwrap_or(jiff::tz::TimeZone::UTC);
        let prices = cfg.clone();
        let worker = std::thread::Builder::new()
            .name("energy-store".into())
            .spawn(move || worker(store, rx, queue, handle, prices, tz))?;
        Ok(EnergyStage {
            window: cfg.reorder_window,
            period: cfg.period,
            by_point: Vec::new(),
            meters: Vec::new(),
            states,
            tx: Some(tx),
            worker: Some(worker),
            last_send: Instant::now(),
            send_every: Duration::from_secs(5),
            temp_point: cfg
                .degree_days
                .as_ref()
                .map(|d| (d.device.clone(), d.point.clone())),
            temps: Default::default(),
            roles: cfg.meters.clone(),
        })
    }

    fn classify(&mut self, catalog: &Catalog, id: PointId) -> Option<usize> {
        let i = id.0 as usize;
        if self.by_point.len() <= i {
            self.by_point.resize_with(i + 1, || Slot::Unknown);
        }
        match self.by_point[i] {
            Slot::Meter(m) => return Some(m),
            Slot::Skip | Slot::Temperature(_) => return None,
            Slot::Unknown => {}
        }
        let (_, dev, pdef) = catalog.point(id);
        if self
            .temp_point
            .as_ref()
            .is_some_and(|(d, p)| *d == dev.id && *p == pdef.name)
        {
            if pdef.unit.dimension() == "temperature" {
                self.by_point[i] = Slot::Temperature(pdef.unit);
            } else {
                warn!(device = %dev.id, point = %pdef.name, unit = %pdef.unit,
                    "[energy.degree_days] point is not a temperature; degree days are off");
                self.by_point[i] = Slot::Skip;
            }
            return None;
        }
        let (_, index) = catalog.point_index(id);
        let role = super::meter_role(dev, index, &self.roles);
        let spec = super::meter_spec(pdef);
        let (Some(spec), Some(role)) = (spec, role) else {
            self.by_point[i] = Slot::Skip;
            return None;
        };
        let (unit, _, power) = super::base_unit(pdef.unit).expect("meter_spec checked it");
        let mut conv = Converter::new(spec, self.period);
        if let Some(st) = self.states.remove(&(dev.id.clone(), pdef.name.clone())) {
            conv.state = st;
        }
        let tags = match dev.series.find(',') {
            Some(k) => dev.series[k..].to_string(),
            None => String::new(),
        };
        let m = self.meters.len();
        self.meters.push(Meter {
            conv,
            buf: Vec::new(),
            max_t: f64::MIN,
            slots: Slots::default(),
            events: Vec::new(),
            dirty: false,
            device: dev.id.clone(),
            point: pdef.name.clone(),
            unit,
            category: dev.profile.category.as_str().to_string(),
            derived: power,
            role,
            location: dev.location.clone(),
            // Export and generation series carry `role=...` so dashboards can keep them out of consumption sums;
            // consumption series keep their series key from before roles (no tag).
            tags: format!(
                "{tags},point={}{},unit={}",
                escape_tag_value(&pdef.name),
                if role.is_consumption() {
                    String::new()
                } else {
                    format!(",role={}", role.as_str())
                },
                escape_key(unit)
            ),
        });
        self.by_point[i] = Slot::Meter(m);
        Some(m)
    }

    /// Feeds each meter's held readings older than the window (all of them when `drain`).
    fn feed(&mut self, drain: bool) {
        for m in &mut self.meters {
            if m.buf.is_empty() {
                continue;
            }
            m.buf.sort_by(|a, b| a.0.total_cmp(&b.0));
            let limit = if drain {
                f64::MAX
            } else {
                m.max_t - self.window
            };
            let n = m.buf.partition_point(|r| r.0 <= limit);
            for &(t, v) in &m.buf[..n] {
                m.conv.push(t, v, &mut m.slots, &mut m.events);
            }
            if n > 0 {
                m.buf.drain(..n);
                m.dirty = true;
            }
        }
    }

    fn send(&mut self) {
        let mut items = Vec::new();
        for m in &mut self.meters {
            if !m.dirty {
                continue;
            }
            m.dirty = false;
            items.push(Item {
                device: m.device.clone(),
                point: m.point.clone(),
                unit: m.unit,
                category: m.category.clone(),
                derived: m.derived,
                role: m.role,
                location: m.location.clone(),
                tags: m.tags.clone(),
                slots: std::mem::take(&mut m.slots),
                state: m.conv.state.clone(),
                events: std::mem::take(&mut m.events),
            });
        }
        let temps = std::mem::take(&mut self.temps);
        if !items.is_empty() || !temps.is_empty() {
            if let Some(tx) = &self.tx {
                if tx.send(Msg::Write(items, temps)).is_err() {
                    error!("energy store worker is gone; interval consumption is not being stored");
                }
            }
        }
        self.last_send = Instant::now();
    }
}

impl Stage for EnergyStage {
    fn name(&self) -> &'static str {
        "energy"
    }

    fn process(&mut self, catalog: &Catalog, readings: &[Reading]) {
        // A device clock far ahead would make every later reading look late to its converter.
        let horizon = crate::util::now_ns() + 3_600_000_000_000;
        for r in readings {
            if r.quality == Quality::Bad || !r.value.is_finite() {
                continue;
            }
            if r.at > horizon {
                metrics::counter!("caretaker_readings_dropped_total", "stage" => "energy", "reason" => "future")
                    .increment(1);
                continue;
            }
            let Some(m) = self.classify(catalog, r.point) else {
                if let Some(Slot::Temperature(unit)) = self.by_point.get(r.point.0 as usize) {
                    let c = unit
                        .convert_to(r.value, crate::catalog::Unit::DegC)
                        .unwrap_or(r.value);
                    let e = self
                        .temps
                        .entry(r.at.div_euclid(3_600_000_000_000))
                        .or_insert((0.0, 0));
                    e.0 += c;
                    e.1 += 1;
                }
                continue;
            };
            let t = r.at as f64 / 1e9;
            let m = &mut self.meters[m];
            m.buf.push((t, r.value));
            if t > m.max_t {
                m.max_t = t;
            }
        }
    }

    fn flush(&mut self) {
        if self.last_send.elapsed() >= self.send_every {
            self.feed(false);
            self.send();
        }
    }
}

impl Drop for EnergyStage {
    fn drop(&mut self) {
        self.feed(true);
        self.send();
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn worker(
    mut store: Store,
    rx: mpsc::Receiver<Msg>,
    queue: Option<Arc<dyn ChunkQueue>>,
    handle: Option<tokio::runtime::Handle>,
    cfg: EnergyConfig,
    tz: jiff::tz::TimeZone,
) {
    let mut ids: HashMap<(String, String), i64> = HashMap::new();
    let period = store.period;
    while let Ok(Msg::Write(items, temps)) = rx.recv() {
        if !temps.is_empty() {
            if let Err(e) = store.write_temperature(&temps, Mode::Add) {
                error!(error = %e, "energy store: cannot write outdoor temperature");
            }
        }
        let mut resolved = Vec::with_capacity(items.len());
        for it in &items {
            let key = (it.device.clone(), it.point.clone());
            let id = match ids.get(&key) {
                Some(&id) => id,
                None => match store.series_id(
                    &it.device,
                    &it.point,
                    it.unit,
                    &it.category,
                    it.derived,
                    &it.location,
                ) {
                    Ok(id) => {
                        if let Err(e) = store.set_role(id, it.role) {
                            error!(device = %it.device, error = %e, "energy store: cannot record the meter's role");
                        }
                        ids.insert(key, id);
                        id
                    }
                    Err(e) => {
                        error!(device = %it.device, error = %e, "energy store: cannot register meter");
                        continue;
                    }
                },
            };
            resolved.push((id, it));
        }
        let slots: Vec<(i64, &Slots)> = resolved.iter().map(|(id, it)| (*id, &it.slots)).collect();
        let states: Vec<(i64, &State)> = resolved.iter().map(|(id, it)| (*id, &it.state)).collect();
        let events: Vec<(i64, &Event)> = resolved
            .iter()
            .flat_map(|(id, it)| it.events.iter().map(move |e| (*id, e)))
            .collect();
        for (_, it) in &resolved {
            for e in &it.events {
                metrics::counter!("caretaker_energy_events_total", "kind" => e.kind()).increment(1);
                if e.kind() != "gap" {
                    warn!(device = %it.device, point = %it.point, kind = e.kind(), event = ?e, "meter reading anomaly");
                }
            }
        }
        if let Err(e) = store.write(&slots, Mode::Add, &states, &events) {
            error!(error = %e, "energy store write failed; these intervals are lost");
            metrics::counter!("caretaker_errors_total", "stage" => "energy").increment(1);
            continue;
        }
        let (Some(q), Some(h)) = (&queue, &handle) else {
            continue;
        };
        let mut body = Vec::new();
        let mut lines = 0u32;
        for (id, it) in &resolved {
            let wanted: Vec<i64> = it.slots.map.keys().copied().collect();
            let stored = match store.slot_values(*id, &wanted) {
                Ok(v) => v,
                Err(e) => {
                    error!(error = %e, "energy store read failed");
                    continue;
                }
            };
            for (slot, v, f) in stored {
                if f & PRESENT == 0 || !v.is_finite() {
                    continue;
                }
                let mut line = Line::new(&mut body, "energy");
                line.escaped_tags(&it.tags)
                    .field_f64("consumption", v)
                    .field_bool("estimated", f & ESTIMATED != 0)
                    .field_bool("derived", f & DERIVED != 0);
                // Energy cost of the slot at the price in force then (standing and demand charges are not
                // per slot: see `caretaker energy report`).
                if let Ok(ts) = jiff::Timestamp::from_second(slot * period) {
                    let dt = tz.to_datetime(ts);
                    if let Some(price) = cfg
                        .tariff(&it.category, dt.date())
                        .and_then(|t| t.price(dt))
                    {
                        line.field_f64("cost", v * price);
                    }
                }
                if it.unit == "kWh" {
                    line.field_f64("power_avg_kw", v * 3600.0 / period as f64);
                }
                line.end(slot as i128 * period as i128 * 1_000_000_000);
                lines += 1;
            }
        }
        if lines > 0 {
            let chunk = Chunk {
                body,
                lines,
                readings: 0,
                created_ms: crate::util::now_ns() / 1_000_000,
            };
            h.block_on(queue::push(&**q, chunk));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::profile::load_dirs;

    /// A meter with power only (no counter), whose consumption the energy stage integrates.
    pub(super) fn with_power_meter(
        mut profiles: crate::catalog::Profiles,
    ) -> crate::catalog::Profiles {
        let text = "schema: 1\nname: power-meter\ncategory: electricity\npoints:\n  - { name: power_total, unit: W, kind: gauge, mqtt: { json: /p } }\n";
        let p =
            crate::catalog::profile::parse_profile(std::path::Path::new("power-meter.yaml"), text)
                .unwrap();
        profiles.insert(p.name.clone(), std::sync::Arc::new(p));
        profiles
    }

    fn catalog() -> Catalog {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("device_profiles");
        let (profiles, errs) = load_dirs(&[dir]);
        assert!(errs.is_empty());
        let mut c = Catalog::new("test", with_power_meter(profiles));
        let loc = std::collections::BTreeMap::from([("building".to_string(), "A".to_string())]);
        c.add_device("plug-1", "tasmota-energy-plug", loc.clone(), true)
            .unwrap();
        c.add_device("em-1", "power-meter", loc, true).unwrap();
        c
    }

    fn reading(c: &Catalog, dev: &str, point: &str, t: f64, v: f64) -> Reading {
        let (_, d) = c.device_by_id(dev).unwrap();
        Reading::good(d.point_id(point).unwrap(), v, (t * 1e9) as i64)
    }

    #[test]
    fn live_readings_out_of_order_and_across_a_restart_balance() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog();
        let cfg = EnergyConfig::default();
        let t0 = 1_767_571_200.0;
        // Tasmota plug: 1.2 kW, a reading each minute, delivered in pairs swapped (MQTT redelivery order).
        let kwh = |i: usize| 12.345 + 1.2 * i as f64 / 60.0;
        let mut order: Vec<usize> = (0..120).collect();
        for k in (0..118).step_by(4) {
            order.swap(k, k + 1);
        }
        let run = |idx: &[usize]| {
            let mut st = EnergyStage::start(&cfg, dir.path(), "UTC", "test", None).unwrap();
            st.send_every = Duration::ZERO;
            for chunk in idx.chunks(7) {
                let rs: Vec<Reading> = chunk
                    .iter()
                    .map(|&i| reading(&cat, "plug-1", "energy_total", t0 + 60.0 * i as f64, kwh(i)))
                    .chain(chunk.iter().map(|&i| {
                        reading(&cat, "em-1", "power_total", t0 + 60.0 * i as f64, 3000.0)
                    }))
                    .collect();
                st.process(&cat, &rs);
                st.flush();
            }
        };
        run(&order[..60]);
        run(&order[60..]); // a restart: the second stage continues from the stored state
        let (store, _, _) =
            Store::open_existing(&super::super::store::path_in(dir.path())).unwrap();
        let series = store.series().unwrap();
        let plug = series.iter().find(|s| s.device == "plug-1").unwrap();
        assert_eq!(plug.point, "energy_total");
        let total = store.total(plug.id, 0, i64::MAX / 4).unwrap();
        assert!((total - (kwh(119) - kwh(0))).abs() < 1e-9, "{total}");
        // The three-phase meter has no counter: its power_total is integrated (3 kW for 119 minutes).
        let em = series.iter().find(|s| s.device == "em-1").unwrap();
        assert_eq!((em.point.as_str(), em.derived), ("power_total", true));
        let e = store.total(em.id, 0, i64::MAX / 4).unwrap();
        assert!((e - 3.0 * 119.0 / 60.0).abs() < 1e-9, "{e}");
        assert!(
            store.events(plug.id).unwrap().is_empty(),
            "the window reordered every swap"
        );
    }
}

#[cfg(test)]
mod degree_day_tests {
    use super::*;
    use crate::catalog::profile::load_dirs;

    #[test]
    fn outdoor_temperature_is_kept_as_hourly_means() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("device_profiles");
        let (profiles, _) = load_dirs(&[dir]);
        let mut cat = Catalog::new("t", profiles);
        cat.add_device("outside", "generic-room-sensor", Default::default(), true)
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let raw = toml::from_str("[degree_days]\npoint = \"outside/temperature\"\n").unwrap();
        let (cfg, errs) = super::super::config::validate(&raw);
        assert!(errs.is_empty());
        {
            let mut st = EnergyStage::start(&cfg, tmp.path(), "UTC", "t", None).unwrap();
            let p = cat
                .device_by_id("outside")
                .unwrap()
                .1
                .point_id("temperature")
                .unwrap();
            let h = 491_000i64; // an hour since the epoch
            let rs: Vec<Reading> = [(0, 4.0), (1200, 5.0), (2400, 6.0), (3600, -1.0)]
                .iter()
                .map(|&(s, v)| Reading::good(p, v, (h * 3600 + s) * 1_000_000_000))
                .collect();
            st.process(&cat, &rs);
        }
        let (store, _, _) =
            Store::open_existing(&super::super::store::path_in(tmp.path())).unwrap();
        let t = store.temperatures(0, i64::MAX / 4).unwrap();
        assert_eq!(t, vec![(491_000, 5.0), (491_001, -1.0)]);
        assert!(
            store.series().unwrap().is_empty(),
            "a thermometer is not a meter"
        );
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;
    use crate::catalog::profile::load_dirs;

    #[test]
    fn a_reading_from_a_clock_far_ahead_does_not_block_the_meter() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("device_profiles");
        let (profiles, _) = load_dirs(&[dir]);
        let mut cat = Catalog::new("t", profiles);
        cat.add_device("plug", "tasmota-energy-plug", Default::default(), true)
            .unwrap();
        let p = cat
            .device_by_id("plug")
            .unwrap()
            .1
            .point_id("energy_total")
            .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let now = crate::util::now_ns();
        let min = 60_000_000_000i64;
        {
            let mut st =
                EnergyStage::start(&EnergyConfig::default(), tmp.path(), "UTC", "t", None).unwrap();
            let rs = [
                Reading::good(p, 10.0, now - 10 * min),
                Reading::good(p, 99.0, now + 24 * 60 * min), // a device clock a day ahead
                Reading::good(p, 10.5, now - 5 * min),
                Reading::good(p, 11.0, now),
            ];
            st.process(&cat, &rs);
        }
        let (store, _, _) =
            Store::open_existing(&super::super::store::path_in(tmp.path())).unwrap();
        let id = store.series().unwrap()[0].id;
        assert!((store.total(id, 0, i64::MAX / 4).unwrap() - 1.0).abs() < 1e-9);
    }
}

#[cfg(test)]
mod line_tests {
    use super::*;
    use crate::catalog::profile::load_dirs;
    use crate::sinks::influx::queue::MemQueue;
    use std::collections::BTreeMap;

    /// Pins the exact bytes of the `energy` lines (tags escaped, flags, cost, average power, slot timestamp).
    #[test]
    fn energy_lines_keep_their_exact_bytes() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("device_profiles");
        let (profiles, _) = load_dirs(&[dir]);
        let mut cat = Catalog::new("north campus", super::tests::with_power_meter(profiles));
        let loc = BTreeMap::from([("building".to_string(), "Main, East".to_string())]);
        cat.add_device("plug 1", "tasmota-energy-plug", loc, true)
            .unwrap();
        cat.add_device("em=1", "power-meter", Default::default(), true)
            .unwrap();
        cat.add_device("w", "generic-json-water-meter", Default::default(), true)
            .unwrap();
        let raw = toml::from_str(
            "[[tariffs]]\nname = \"grid\"\ncategory = \"electricity\"\nvalid_from = \"2025-01-01\"\nrates = [{ price = 0.3 }]\n",
        )
        .unwrap();
        let (cfg, errs) = super::super::config::validate(&raw);
        assert!(errs.is_empty(), "{errs:?}");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let _enter = rt.enter();
        let q = Arc::new(MemQueue::new(1 << 20));
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut st =
                EnergyStage::start(&cfg, tmp.path(), "UTC", "north campus", Some(q.clone()))
                    .unwrap();
            let t0 = 1_767_571_200i64;
            let point = |dev: &str, p: &str| cat.device_by_id(dev).unwrap().1.point_id(p).unwrap();
            let plug = point("plug 1", "energy_total");
            let em = point("em=1", "power_total");
            let water = point("w", "volume_total");
            let rs: Vec<Reading> = (0..40)
                .flat_map(|i| {
                    let at = (t0 + 60 * i) * 1_000_000_000;
                    [
                        Reading::good(plug, 12.345 + 1.2 * i as f64 / 60.0, at),
                        Reading::good(em, 3000.0, at),
                        Reading::good(water, 100.0 + i as f64 / 8.0, at),
                    ]
                })
                .collect();
            st.process(&cat, &rs);
        }
        let text: String = q
            .peek(usize::MAX)
            .iter()
            .map(|c| String::from_utf8(c.body.clone()).unwrap())
            .collect();
        assert_eq!(
            text,
            "energy,building=Main\\,\\ East,device=plug\\ 1,profile=tasmota-energy-plug,site=north\\ campus,point=energy_total,unit=kWh consumption=0.3000000000000007,estimated=false,derived=false,cost=0.0900000000000002,power_avg_kw=1.2000000000000028 1767571200000000000\n\
             energy,building=Main\\,\\ East,device=plug\\ 1,profile=tasmota-energy-plug,site=north\\ campus,point=energy_total,unit=kWh consumption=0.29999999999999893,estimated=false,derived=false,cost=0.08999999999999968,power_avg_kw=1.1999999999999957 1767572100000000000\n\
             energy,building=Main\\,\\ East,device=plug\\ 1,profile=tasmota-energy-plug,site=north\\ campus,point=energy_total,unit=kWh consumption=0.17999999999999972,estimated=false,derived=false,cost=0.053999999999999916,power_avg_kw=0.7199999999999989 1767573000000000000\n\
             energy,device=em\\=1,profile=power-meter,site=north\\ campus,point=power_total,unit=kWh consumption=0.7500000000000001,estimated=false,derived=true,cost=0.22500000000000003,power_avg_kw=3.0000000000000004 1767571200000000000\n\
             energy,device=em\\=1,profile=power-meter,site=north\\ campus,point=power_total,unit=kWh consumption=0.7500000000000001,estimated=false,derived=true,cost=0.22500000000000003,power_avg_kw=3.0000000000000004 1767572100000000000\n\
             energy,device=em\\=1,profile=power-meter,site=north\\ campus,point=power_total,unit=kWh consumption=0.44999999999999996,estimated=false,derived=true,cost=0.13499999999999998,power_avg_kw=1.7999999999999998 1767573000000000000\n\
             energy,device=w,profile=generic-json-water-meter,site=north\\ campus,point=volume_total,unit=m3 consumption=1.875,estimated=false,derived=false 1767571200000000000\n\
             energy,device=w,profile=generic-json-water-meter,site=north\\ campus,point=volume_total,unit=m3 consumption=1.875,estimated=false,derived=false 1767572100000000000\n\
             energy,device=w,profile=generic-json-water-meter,site=north\\ campus,point=volume_total,unit=m3 consumption=1.125,estimated=false,derived=false 1767573000000000000\n"
        );
    }
}
