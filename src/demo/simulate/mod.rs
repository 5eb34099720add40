//! The simulated campus (`caretaker simulate`, and the heart of `caretaker demo`): devices that speak the real
//! protocols (MQTT publishers laid out by the shipped MQTT profiles, Modbus TCP servers laid out by the Modbus
//! profiles' register maps, BACnet/IP devices laid out by the BACnet profiles' object maps), driven by plausible
//! physics and schedules, with scripted faults.
//!
//! One task steps every device's model in simulated time (the clock runs `speed` times faster than real time),
//! publishes MQTT messages when a device's interval has passed, and rewrites the register banks the Modbus
//! servers answer from and the objects the BACnet devices answer from. Nothing here knows the daemon: it talks to a broker and listens on ports like real
//! devices do.

pub mod bacnet;
pub mod encode;
pub mod modbus;
pub mod model;
pub mod site;
pub mod vav;

use crate::catalog::{Profile, Profiles};
use crate::util::Backoff;
use modbus::Bank;
use model::{Env, Faults, Model};
use site::{DeviceSpec, FaultKind, FaultStart, SiteSpec, Transport};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Simulated time: `start_ns` at `real_start`, advancing `speed` times faster than real time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub real_start: Instant,
    pub start_ns: i64,
    pub speed: f64,
}

impl Clock {
    pub fn now_ns(&self) -> i64 {
        self.start_ns + (self.real_start.elapsed().as_nanos() as f64 * self.speed) as i64
    }
}

/// One scripted fault, resolved to simulated times.
#[derive(Debug, Clone)]
pub struct ScriptedFault {
    pub device: String,
    pub kind: FaultKind,
    pub from_ns: i64,
    /// `None`: until the end.
    pub until_ns: Option<i64>,
    pub clog_to: Option<f64>,
    pub period: Duration,
    /// Clogging takes `duration`, then stays clogged.
    pub ramp_ns: Option<i64>,
}

impl ScriptedFault {
    pub fn active(&self, now: i64) -> bool {
        now >= self.from_ns
            && (self.kind == FaultKind::FilterClog || self.until_ns.is_none_or(|u| now < u))
    }
}

/// What the simulation has done, for summaries and tests.
#[derive(Debug, Default)]
pub struct Status {
    pub mqtt_published: AtomicU64,
    pub mqtt_dropped: AtomicU64,
    pub modbus_updates: AtomicU64,
    pub bacnet_updates: AtomicU64,
    /// Simulated time of the last step.
    pub now_ns: AtomicU64,
}

/// A running simulation.
pub struct Running {
    pub status: Arc<Status>,
    pub faults: Vec<ScriptedFault>,
    /// Device id → the bound Modbus TCP address.
    pub modbus_addrs: BTreeMap<String, SocketAddr>,
    /// Device id → the bound BACnet/IP (UDP) address and what its server has done.
    pub bacnet_addrs: BTreeMap<String, (SocketAddr, Arc<bacnet::ServerStats>)>,
    /// Devices that run (known profile).
    pub devices: Vec<DeviceSpec>,
    pub task: tokio::task::JoinHandle<()>,
}

/// How to run a site file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Overrides the site's broker (`mqtt://host:port`).
    pub mqtt: Option<(String, u16)>,
    /// Overrides the address Modbus servers listen on.
    pub modbus_host: Option<String>,
    /// Bind every Modbus server to a free port instead of the site's (tests, the demo).
    pub ephemeral_ports: bool,
    /// Leave out devices whose profile is not installed (with a warning) instead of failing.
    pub skip_unknown_profiles: bool,
}

/// The simulated start time of a site: its `start` in its time zone, or now.
pub fn start_ns(spec: &SiteSpec) -> i64 {
    match spec.start {
        Some(dt) => dt
            .to_zoned_datetime(spec.timezone.clone())
            .map(|z| z.timestamp().as_nanosecond() as i64)
            .unwrap_or_else(|_| crate::util::now_ns()),
        None => crate::util::now_ns(),
    }
}

fn resolve_faults(spec: &SiteSpec, devices: &[DeviceSpec], start: i64) -> Vec<ScriptedFault> {
    let mut out = Vec::new();
    for d in devices {
        for f in &d.faults {
            let from_ns = match f.start {
                FaultStart::After(a) => start + a.as_nanos() as i64,
                FaultStart::At(t) => {
                    let z = jiff::Timestamp::from_nanosecond(start as i128)
                        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
                        .to_zoned_datetime(spec.timezone.clone());
                    let mut day = z.date();
                    let mut at = day.to_datetime(t).to_zoned_datetime(spec.timezone.clone());
                    while at
                        .as_ref()
                        .map(|a| a.timestamp().as_nanosecond() < start as i128)
                        .unwrap_or(false)
                    {
                        day = day.tomorrow().unwrap_or(day);
                        at = day.to_datetime(t).to_zoned_datetime(spec.timezone.clone());
                    }
                    at.map(|a| a.timestamp().as_nanosecond() as i64)
                        .unwrap_or(start)
                }
            };
            let dur = f.duration.map(|d| d.as_nanos() as i64);
            out.push(ScriptedFault {
                device: d.id.clone(),
                kind: f.kind,
                from_ns,
                until_ns: dur.map(|d| from_ns + d),
                clog_to: f.to,
                period: f.period,
                ramp_ns: dur,
            });
        }
    }
    out.sort_by_key(|f| f.from_ns);
    out
}

struct SimDevice {
    spec: DeviceSpec,
    profile: Arc<Profile>,
    model: Model,
    faults: Vec<ScriptedFault>,
    next_publish: i64,
    bank: Option<Arc<RwLock<Bank>>>,
    bacnet: Option<Arc<RwLock<bacnet::Device>>>,
}

impl SimDevice {
    fn fault_state(&self, now: i64) -> (Faults, bool) {
        let mut f = Faults::default();
        let mut offline = false;
        for s in self.faults.iter().filter(|s| s.active(now)) {
            match s.kind {
                FaultKind::Stuck => f.stuck = true,
                FaultKind::Leak => f.leak = true,
                FaultKind::Offline => offline = true,
                FaultKind::FilterClog => {
                    let progress = match s.ramp_ns {
                        Some(r) if r > 0 => ((now - s.from_ns) as f64 / r as f64).clamp(0.0, 1.0),
                        _ => 1.0,
                    };
                    f.clog = Some((progress, s.clog_to.unwrap_or(400.0)));
                }
                FaultKind::ShortCycle => {
                    let p = s.period.as_nanos().max(1) as i64;
                    f.short_cycle_on = Some((now - s.from_ns) % p < p / 2);
                }
                FaultKind::StuckDamper => f.vav.stuck_damper = true,
                FaultKind::LeakingValve => f.vav.leaking_valve = true,
                FaultKind::FailedSatSensor => f.vav.failed_sat_sensor = true,
                FaultKind::StaticPressureLoss => f.vav.static_loss = true,
            }
        }
        (f, offline)
    }
}

/// Checks a site against the installed profiles: each device's profile must exist and bind its transport.
pub fn check_profiles(
    spec: &SiteSpec,
    profiles: &Profiles,
    skip_unknown: bool,
) -> Result<Vec<DeviceSpec>, Vec<crate::diag::Diagnostic>> {
    let text = std::fs::read_to_string(&spec.file).unwrap_or_default();
    let mut errs = Vec::new();
    let mut keep = Vec::new();
    for (i, d) in spec.devices.iter().enumerate() {
        let key = format!("devices[{i}].profile");
        let diag = |msg: String| {
            crate::diag::Diagnostic::new(
                &spec.file,
                crate::diag::locate::locate(&text, &key),
                key.clone(),
                msg,
            )
        };
        let Some(p) = profiles.get(&d.profile) else {
            if skip_unknown {
                info!(device = %d.id, profile = %d.profile, "profile not installed: this simulated device is left out");
                continue;
            }
            let hint = crate::util::did_you_mean(&d.profile, profiles.keys().map(String::as_str))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            errs.push(diag(format!("unknown profile `{}`{hint}", d.profile)));
            continue;
        };
        match &d.transport {
            Transport::Mqtt { .. } if !p.has_mqtt() => errs.push(diag(format!(
                "profile `{}` has no `mqtt:` bindings; this device has a topic",
                d.profile
            ))),
            Transport::Modbus { .. } if !p.has_modbus() => errs.push(diag(format!(
                "profile `{}` has no `modbus:` bindings; this device has a Modbus port",
                d.profile
            ))),
            Transport::Bacnet { .. } if !p.has_bacnet() => errs.push(diag(format!(
                "profile `{}` has no `bacnet:` bindings; this device is a BACnet device",
                d.profile
            ))),
            _ => keep.push(d.clone()),
        }
    }
    if errs.is_empty() { Ok(keep) } else { Err(errs) }
}

/// Starts the simulation: binds every Modbus port, connects to the broker and steps the models until `shutdown`.
pub async fn start(
    spec: &SiteSpec,
    profiles: &Profiles,
    clock: Clock,
    opts: &Options,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let devices_spec =
        check_profiles(spec, profiles, opts.skip_unknown_profiles).map_err(|errs| {
            for e in &errs {
                tracing::error!("{e}");
            }
            anyhow::anyhow!("{} error(s) in {}", errs.len(), spec.file.display())
        })?;
    let start = clock.now_ns();
    let faults = resolve_faults(spec, &devices_spec, start);
    let status = Arc::new(Status::default());

    // Models and Modbus banks.
    let mut devices = Vec::new();
    let mut by_port: BTreeMap<u16, HashMap<u8, Arc<RwLock<Bank>>>> = BTreeMap::new();
    let mut port_devices: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let mut bacnet_devices = Vec::new();
    for (i, d) in devices_spec.iter().enumerate() {
        let profile = profiles[&d.profile].clone();
        let model = Model::new(
            d.model,
            d.size,
            spec.seed.wrapping_mul(1000).wrapping_add(i as u64),
        );
        let missing: Vec<&str> = profile
            .points
            .iter()
            .filter(|p| p.mqtt.is_some() || p.modbus.is_some() || p.bacnet.is_some())
            .filter(|p| encode::point_value(&model, p).is_none())
            .map(|p| p.name.as_str())
            .collect();
        if !missing.is_empty() {
            info!(device = %d.id, profile = %d.profile, points = %missing.join(", "), "the model has no value for these points (Modbus and BACnet serve 0, MQTT leaves them out)");
        }
        let bank = match &d.transport {
            Transport::Modbus { port, unit, .. } => {
                let b = Arc::new(RwLock::new(Bank::from_model(
                    &profile, &model, &d.id, false,
                )));
                by_port.entry(*port).or_default().insert(*unit, b.clone());
                port_devices.entry(*port).or_default().push(d.id.clone());
                Some(b)
            }
            Transport::Mqtt { .. } | Transport::Bacnet { .. } => None,
        };
        let bacnet_dev = match &d.transport {
            Transport::Bacnet {
                port,
                device_instance,
                ..
            } => {
                let dev = Arc::new(RwLock::new(bacnet::Device::from_model(
                    *device_instance,
                    &d.id,
                    &profile,
                    &model,
                    false,
                )));
                bacnet_devices.push((d.id.clone(), *port, dev.clone()));
                Some(dev)
            }
            _ => None,
        };
        devices.push(SimDevice {
            spec: d.clone(),
            profile,
            model,
            faults: faults
                .iter()
                .filter(|f| f.device == d.id)
                .cloned()
                .collect(),
            next_publish: start,
            bank,
            bacnet: bacnet_dev,
        });
    }

    // Bind every port before anything runs, so a port in use is an error at start, not a silent gap.
    let host = opts
        .modbus_host
        .clone()
        .unwrap_or_else(|| spec.modbus_host.clone());
    let mut modbus_addrs = BTreeMap::new();
    let mut servers = Vec::new();
    for (port, units) in by_port {
        let want = if opts.ephemeral_ports { 0 } else { port };
        let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), want))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| anyhow::anyhow!("cannot resolve Modbus listen host `{host}`"))?;
        let listener = modbus::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "simulated Modbus devices {} cannot listen on {addr}: {e}",
                port_devices[&port].join(", ")
            )
        })?;
        let bound = listener.local_addr()?;
        for id in &port_devices[&port] {
            modbus_addrs.insert(id.clone(), bound);
        }
        info!(addr = %bound, devices = %port_devices[&port].join(", "), "simulated Modbus TCP server listening");
        servers.push(tokio::spawn(modbus::serve(
            listener,
            Arc::new(units),
            shutdown.clone(),
        )));
    }

    // BACnet/IP: a UDP port per device, on the same host as the Modbus servers.
    let mut bacnet_addrs = BTreeMap::new();
    for (id, port, dev) in bacnet_devices {
        let want = if opts.ephemeral_ports { 0 } else { port };
        let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), want))
            .await
            .ok()
            .and_then(|mut a| a.find(SocketAddr::is_ipv4).or(a.next()))
            .ok_or_else(|| anyhow::anyhow!("cannot resolve BACnet listen host `{host}`"))?;
        let socket = bacnet::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("simulated BACnet device {id} cannot listen on {addr} (UDP): {e}")
        })?;
        let bound = socket.local_addr()?;
        let stats = Arc::new(bacnet::ServerStats::default());
        let instance = dev.read().unwrap_or_else(|e| e.into_inner()).instance;
        info!(addr = %bound, device = %id, instance, "simulated BACnet/IP device listening");
        bacnet_addrs.insert(id, (bound, stats.clone()));
        servers.push(tokio::spawn(bacnet::serve(
            socket,
            dev,
            stats,
            shutdown.clone(),
        )));
    }

    // MQTT.
    let mqtt_target = opts
        .mqtt
        .clone()
        .or_else(|| spec.mqtt.as_ref().map(|m| (m.host.clone(), m.port)));
    let has_mqtt_devices = devices
        .iter()
        .any(|d| matches!(d.spec.transport, Transport::Mqtt { .. }));
    let client = match (mqtt_target, has_mqtt_devices) {
        (Some((h, p)), true) => {
            let client_id = spec
                .mqtt
                .as_ref()
                .map(|m| m.client_id.clone())
                .unwrap_or_else(|| "caretaker-simulator".into());
            Some(mqtt_client(&client_id, &h, p, shutdown.clone()))
        }
        _ => None,
    };

    let st = status.clone();
    let tz = spec.timezone.clone();
    let weather = spec.weather;
    let task = tokio::spawn(async move {
        let mut last = start;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = clock.now_ns();
            step_all(&mut devices, last, now, &tz, weather, client.as_ref(), &st);
            last = now;
            st.now_ns.store(now.max(0) as u64, Ordering::Relaxed);
        }
        for s in servers {
            let _ = s.await;
        }
    });
    Ok(Running {
        status,
        faults,
        modbus_addrs,
        bacnet_addrs,
        devices: devices_spec,
        task,
    })
}

fn env_at(t_ns: i64, tz: &jiff::tz::TimeZone, weather: (f64, f64), dt: f64) -> Env {
    let z = jiff::Timestamp::from_nanosecond(t_ns as i128)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_zoned_datetime(tz.clone());
    let hour = z.hour() as f64 + z.minute() as f64 / 60.0 + z.second() as f64 / 3600.0;
    Env {
        hour,
        weekday: z.weekday().to_monday_one_offset(),
        outdoor: model::outdoor_temp(weather.0, weather.1, hour),
        dt,
    }
}

/// Steps every model from `last` to `now` (in steps of at most a simulated minute), then publishes and
/// rewrites registers.
fn step_all(
    devices: &mut [SimDevice],
    last: i64,
    now: i64,
    tz: &jiff::tz::TimeZone,
    weather: (f64, f64),
    client: Option<&rumqttc::AsyncClient>,
    st: &Status,
) {
    const MAX_STEP_NS: i64 = 60_000_000_000;
    let mut t = last;
    while t < now {
        let next = (t + MAX_STEP_NS).min(now);
        let env = env_at(next, tz, weather, (next - t) as f64 / 1e9);
        for d in devices.iter_mut() {
            let (f, _) = d.fault_state(next);
            d.model.step(&env, &f);
        }
        t = next;
    }
    for d in devices.iter_mut() {
        let (_, offline) = d.fault_state(now);
        match &d.spec.transport {
            Transport::Mqtt { topic } => {
                if now < d.next_publish {
                    continue;
                }
                let interval = d.spec.interval.as_nanos() as i64;
                d.next_publish += interval;
                if d.next_publish < now {
                    d.next_publish = now + interval;
                }
                if offline {
                    continue;
                }
                let (Some(c), Some(payload)) =
                    (client, encode::mqtt_payload(&d.profile, &d.model, now))
                else {
                    continue;
                };
                match c.try_publish(topic.as_str(), rumqttc::QoS::AtLeastOnce, false, payload) {
                    Ok(()) => st.mqtt_published.fetch_add(1, Ordering::Relaxed),
                    Err(_) => st.mqtt_dropped.fetch_add(1, Ordering::Relaxed),
                };
            }
            Transport::Modbus { .. } => {
                if let Some(b) = &d.bank {
                    let bank = Bank::from_model(&d.profile, &d.model, &d.spec.id, offline);
                    *b.write().unwrap_or_else(|e| e.into_inner()) = bank;
                    st.modbus_updates.fetch_add(1, Ordering::Relaxed);
                }
            }
            Transport::Bacnet { .. } => {
                if let Some(b) = &d.bacnet {
                    b.write()
                        .unwrap_or_else(|e| e.into_inner())
                        .update(&d.profile, &d.model, offline);
                    st.bacnet_updates.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// An MQTT client whose event loop runs in its own task, reconnecting with backoff.
fn mqtt_client(
    client_id: &str,
    host: &str,
    port: u16,
    shutdown: CancellationToken,
) -> rumqttc::AsyncClient {
    let mut o = rumqttc::MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(15));
    o.set_inflight(200);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 10_000);
    let target = format!("{host}:{port}");
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut connected = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = el.poll() => match ev {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        info!(broker = %target, "simulator connected to the MQTT broker");
                        connected = true;
                        backoff.reset();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if connected {
                            warn!(broker = %target, error = %e, "simulator lost the MQTT broker; reconnecting");
                        }
                        connected = false;
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
    });
    client
}

/// Steps the site's devices of model `only` (every model with `None`) from `from_ns` for `duration_ns` of
/// simulated time, with no network, and writes every point of every device at each of its intervals as
/// `caretaker backtest` CSV (`timestamp,device,point,value,profile`, RFC 3339 UTC) into `out`, and the scripted faults
/// active at each of those samples into `truth` (`timestamp,device,fault`): the labels an evaluation of fault
/// detection compares with. Returns (rows, truth rows).
pub fn export_csv(
    spec: &SiteSpec,
    profiles: &Profiles,
    only: Option<site::ModelKind>,
    from_ns: i64,
    duration_ns: i64,
    out: &mut dyn std::io::Write,
    truth: &mut dyn std::io::Write,
) -> anyhow::Result<(usize, usize)> {
    let devices_spec = check_profiles(spec, profiles, false)
        .map_err(|errs| anyhow::anyhow!("{} error(s) in {}", errs.len(), spec.file.display()))?;
    let faults = resolve_faults(spec, &devices_spec, from_ns);
    let mut devices: Vec<SimDevice> = devices_spec
        .iter()
        .enumerate()
        .filter(|(_, d)| only.is_none_or(|m| d.model == m))
        .map(|(i, d)| SimDevice {
            spec: d.clone(),
            profile: profiles[&d.profile].clone(),
            model: Model::new(
                d.model,
                d.size,
                spec.seed.wrapping_mul(1000).wrapping_add(i as u64),
            ),
            faults: faults
                .iter()
                .filter(|f| f.device == d.id)
                .cloned()
                .collect(),
            next_publish: from_ns,
            bank: None,
            bacnet: None,
        })
        .collect();
    writeln!(out, "timestamp,device,point,value,profile")?;
    writeln!(truth, "timestamp,device,fault")?;
    let (mut rows, mut truths) = (0, 0);
    const STEP_NS: i64 = 60_000_000_000;
    let end = from_ns + duration_ns.max(0);
    let mut t = from_ns;
    while t < end {
        let next = t + STEP_NS;
        let env = env_at(next, &spec.timezone, spec.weather, (next - t) as f64 / 1e9);
        for d in devices.iter_mut() {
            let (f, _) = d.fault_state(next);
            d.model.step(&env, &f);
            if next < d.next_publish {
                continue;
            }
            d.next_publish += d.spec.interval.as_nanos().max(1) as i64;
            let (_, offline) = d.fault_state(next);
            let ts = crate::work_orders::rfc3339_ms(next / 1_000_000);
            if !offline {
                for p in d
                    .profile
                    .points
                    .iter()
                    .filter(|p| p.mqtt.is_some() || p.modbus.is_some() || p.bacnet.is_some())
                {
                    if let Some(v) = encode::point_value(&d.model, p) {
                        let v = (v * 1000.0).round() / 1000.0;
                        writeln!(out, "{ts},{},{},{v},{}", d.spec.id, p.name, d.profile.name)?;
                        rows += 1;
                    }
                }
            }
            for s in d.faults.iter().filter(|s| s.active(next)) {
                writeln!(truth, "{ts},{},{}", d.spec.id, s.kind.as_str())?;
                truths += 1;
            }
        }
        t = next;
    }
    Ok((rows, truths))
}

/// Counts devices and faults of a site, for `simulate`'s start-up line and the demo.
pub fn summary(devices: &[DeviceSpec]) -> String {
    let mqtt = devices
        .iter()
        .filter(|d| matches!(d.transport, Transport::Mqtt { .. }))
        .count();
    let bacnet = devices
        .iter()
        .filter(|d| matches!(d.transport, Transport::Bacnet { .. }))
        .count();
    let faults: usize = devices.iter().map(|d| d.faults.len()).sum();
    format!(
        "{} devices ({} MQTT, {} Modbus TCP, {} BACnet/IP), {} scripted faults",
        devices.len(),
        mqtt,
        devices.len() - mqtt - bacnet,
        bacnet,
        faults
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_start_after_an_offset_or_at_the_next_local_time_of_day() {
        let text = r#"
[simulation]
timezone = "Europe/Berlin"
start = "2026-01-12T00:30:00"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[[devices]]
id = "r1"
model = "room"
profile = "p"
topic = "t/r1"
faults = [{ kind = "stuck", at = "01:00" }, { kind = "offline", at = "00:15", duration = "1h" }, { kind = "stuck", after = "2h" }]
"#;
        let spec = SiteSpec::parse(std::path::Path::new("s.toml"), text).unwrap();
        let start = start_ns(&spec);
        // 00:30 Berlin in winter is 23:30 UTC the day before.
        assert_eq!(start, 1_768_174_200_000_000_000);
        let f = resolve_faults(&spec, &spec.devices, start);
        let min = 60_000_000_000i64;
        assert_eq!(f[0].from_ns - start, 30 * min);
        assert_eq!(f[1].from_ns - start, 120 * min);
        // 00:15 has passed on the first day: the next one.
        assert_eq!(f[2].from_ns - start, (24 * 60 - 15) * min);
        assert_eq!(f[2].until_ns, Some(f[2].from_ns + 60 * min));
        assert!(f[2].active(f[2].from_ns) && !f[2].active(f[2].from_ns + 60 * min));
    }

    #[test]
    fn a_clogged_filter_stays_clogged_and_short_cycles_alternate() {
        let mk = |kind| ScriptedFault {
            device: "a".into(),
            kind,
            from_ns: 0,
            until_ns: Some(100),
            clog_to: Some(400.0),
            period: Duration::from_nanos(20),
            ramp_ns: Some(100),
        };
        assert!(mk(FaultKind::FilterClog).active(1_000));
        assert!(!mk(FaultKind::Leak).active(1_000));
        let dev = |f: ScriptedFault| {
            SimDevice {
            spec: DeviceSpec {
                id: "a".into(),
                model: site::ModelKind::Ahu,
                profile: "p".into(),
                transport: Transport::Mqtt { topic: "t".into() },
                location: Default::default(),
                interval: Duration::from_secs(60),
                size: 1.0,
                faults: vec![],
            },
            profile: Arc::new(
                crate::catalog::profile::parse_profile(
                    std::path::Path::new("p.yaml"),
                    "schema: 1\nname: p\ncategory: hvac\npoints:\n  - { name: filter_dp, unit: Pa, kind: gauge, mqtt: { json: /dp } }\n",
                )
                .unwrap(),
            ),
            model: Model::new(site::ModelKind::Ahu, 1.0, 1),
            faults: vec![f],
            next_publish: 0,
            bank: None,
            bacnet: None,
        }
        };
        let clog = dev(mk(FaultKind::FilterClog));
        assert_eq!(clog.fault_state(50).0.clog, Some((0.5, 400.0)));
        assert_eq!(clog.fault_state(500).0.clog, Some((1.0, 400.0)));
        let cyc = dev(mk(FaultKind::ShortCycle));
        assert_eq!(cyc.fault_state(5).0.short_cycle_on, Some(true));
        assert_eq!(cyc.fault_state(15).0.short_cycle_on, Some(false));
        assert_eq!(cyc.fault_state(150).0.short_cycle_on, None);
    }
}
