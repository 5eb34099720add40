//! One task per link (a TCP gateway or a serial line): it owns the link's only connection and polls every
//! device on it in turn, so requests on a link are serialized and a slow link never delays another.
//!
//! Schedule: each device has one or more poll periods (its `poll` plus per-point overrides). Due times are
//! anchored (`start + k * period`): work never shifts the next due time, and a poll that is missed because the
//! link was busy is skipped (counted), never bunched. Points whose periods fall due together share requests.
//!
//! Failures: tokio-modbus answers `Err` for the link (I/O, protocol; we add timeouts) and `Ok(Err(exception))`
//! for a device refusing a request. A link failure drops the connection (after a timeout the next reply on a
//! TCP connection would be the late one: tokio-modbus issue #324; on RTU a late reply would be read as the next
//! answer), ends that device's poll, and the link reconnects with capped backoff. An exception on a merged
//! request is bisected to the offending point, which is reported `Bad` and read on its own from then on; when
//! every point reads fine alone, the filler registers the request read are the culprit and become barriers the
//! planner never reads again. A device with no answer for `offline_after` polls in a row is reported offline.

use super::config::{LinkAddr, ModbusDevice, Parity, Serial};
use super::decode::{decode_bit, decode_registers};
use super::planner::{self, Barriers, CostModel, Item, Limits, Request};
use crate::catalog::modbus_binding::Table;
use crate::catalog::{PointId, Profile};
use crate::pipeline::Batch;
use crate::reading::{Quality, Reading};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Most distinct poll periods one device may have (its `poll` plus per-point overrides).
pub const MAX_PERIODS: usize = 64;

/// What one poll of one device needs to know, fixed at start-up.
pub struct DevicePoll {
    pub id: String,
    pub profile: Arc<Profile>,
    pub first_point: u32,
    pub settings: ModbusDevice,
    /// The synthetic `online` point, when the profile has it.
    pub online_point: Option<PointId>,
}

struct DeviceState {
    poll: DevicePoll,
    limits: Limits,
    /// Distinct poll periods; `point_period[i]` indexes it for Modbus points of the profile.
    periods: Vec<Duration>,
    point_period: Vec<Option<usize>>,
    next_due: Vec<Instant>,
    plans: HashMap<u64, Arc<Vec<Request>>>,
    /// Items per period mask, in the order `plans` refers to.
    items: HashMap<u64, Arc<Vec<Item>>>,
    barriers: Barriers,
    /// Points that raised an exception: read on their own until they answer again.
    isolated: BTreeSet<u32>,
    /// Points whose last reading was bad (for logging transitions only).
    bad: BTreeSet<u32>,
    /// Polls in a row without any answer.
    failed_polls: u32,
    online: bool,
    /// Requests sent in the current poll (for `pause_between_requests`, which applies to split requests too).
    sent_this_poll: u32,
    stats: Arc<LinkStats>,
}

/// Why a request failed.
enum ReadError {
    /// The device refused (Modbus exception): the point is bad, the link is fine.
    Exception(ExceptionCode),
    /// The link failed (I/O, protocol error, timeout): reconnect.
    Link(String),
}

enum Data {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// Counters of one link, readable while it runs (tests, diagnostics).
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Read requests sent.
    pub requests: AtomicU64,
    /// Requests the device refused with an exception.
    pub exceptions: AtomicU64,
    /// Requests that failed on the link (I/O, timeout).
    pub link_errors: AtomicU64,
}

/// The poller of one link.
pub struct Link {
    pub addr: LinkAddr,
    devices: Vec<DeviceState>,
    cost: CostModel,
    stats: Arc<LinkStats>,
    health: Option<Arc<crate::telemetry::Health>>,
}

impl Link {
    /// Reports each device's online state in `/health` too.
    pub fn with_health(mut self, health: Arc<crate::telemetry::Health>) -> Link {
        self.health = Some(health);
        self
    }

    pub fn new(addr: LinkAddr, devices: Vec<DevicePoll>) -> Link {
        let stats = Arc::new(LinkStats::default());
        let devices = devices
            .into_iter()
            .map(|d| {
                let mut s = DeviceState::new(d);
                s.stats = stats.clone();
                s
            })
            .collect();
        Link {
            addr,
            devices,
            cost: CostModel::default(),
            stats,
            health: None,
        }
    }

    /// What the link polls (device ids, their first point ids and settings): a configuration reload keeps a
    /// running link whose fingerprint did not change, connection and all.
    pub fn fingerprint(&self) -> String {
        self.devices
            .iter()
            .map(|d| {
                format!(
                    "{}@{}:{:?};",
                    d.poll.id, d.poll.first_point, d.poll.settings
                )
            })
            .collect()
    }

    pub fn stats(&self) -> Arc<LinkStats> {
        self.stats.clone()
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// `(id, settings, profile)` of each device on the link.
    pub fn devices(&self) -> impl Iterator<Item = (&str, &ModbusDevice, &Profile)> {
        self.devices
            .iter()
            .map(|d| (d.poll.id.as_str(), &d.poll.settings, &*d.poll.profile))
    }

    /// Polls until `stop`; sends a batch per device poll on `tx`.
    pub async fn run(mut self, tx: mpsc::Sender<Batch>, stop: CancellationToken) {
        let key = self.addr.key();
        let start = Instant::now();
        for d in &mut self.devices {
            d.next_due = vec![start; d.periods.len()];
            metrics::gauge!("caretaker_device_online", "device" => d.poll.id.clone()).set(1.0);
            if let Some(h) = &self.health {
                h.modbus_online
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(d.poll.id.clone(), true);
            }
        }
        let cap = self
            .devices
            .iter()
            .map(|d| d.periods[0])
            .min()
            .unwrap_or(Duration::from_secs(10))
            .saturating_mul(4)
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut backoff = crate::util::Backoff::new(Duration::from_millis(100), cap);
        let mut reconnect_at = start;
        let mut conn: Option<Context> = None;
        info!(link = %key, devices = self.devices.len(), "Modbus link starting");
        loop {
            let wake = self
                .devices
                .iter()
                .flat_map(|d| d.next_due.iter().copied())
                .min()
                .unwrap_or(start + Duration::from_secs(3600));
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
            for di in 0..self.devices.len() {
                let now = Instant::now();
                let Some(mask) = self.devices[di].take_due(now) else {
                    continue;
                };
                if stop.is_cancelled() {
                    break;
                }
                let at = crate::util::now_ns();
                if conn.is_none() && now >= reconnect_at {
                    let timeout = self.devices[di].poll.settings.timeout;
                    match connect(&self.addr, timeout).await {
                        Ok(c) => {
                            info!(link = %key, "Modbus link connected");
                            backoff.reset();
                            conn = Some(c);
                        }
                        Err(e) => {
                            let wait = backoff.next_delay();
                            reconnect_at = Instant::now() + wait;
                            metrics::counter!("caretaker_modbus_errors_total", "device" => self.devices[di].poll.id.clone(), "kind" => "connect").increment(1);
                            // Logged once per outage; the metric counts every attempt.
                            if backoff.attempts() == 1 {
                                warn!(link = %key, error = %e, retry_in = ?wait, "Modbus link connect failed; retrying with backoff");
                            } else {
                                debug!(link = %key, error = %e, retry_in = ?wait, "Modbus link connect failed");
                            }
                        }
                    }
                }
                let cost = self.cost;
                let dev = &mut self.devices[di];
                let mut readings = Vec::new();
                let answered = match conn.as_mut() {
                    None => false,
                    Some(c) => match dev.poll_once(c, mask, &cost, at, &mut readings).await {
                        Ok(answered) => answered,
                        Err(e) => {
                            metrics::counter!("caretaker_modbus_errors_total", "device" => dev.poll.id.clone(), "kind" => "link").increment(1);
                            if dev.failed_polls == 0 {
                                warn!(link = %key, device = %dev.poll.id, error = %e, "Modbus link failed; reconnecting");
                            } else {
                                debug!(link = %key, device = %dev.poll.id, error = %e, "Modbus link failed again");
                            }
                            if let Some(mut c) = conn.take() {
                                let _ = tokio::time::timeout(
                                    Duration::from_millis(100),
                                    c.disconnect(),
                                )
                                .await;
                            }
                            if matches!(self.addr, LinkAddr::Rtu { .. } | LinkAddr::RtuTcp { .. }) {
                                // Let a late reply finish on the line before the port is reopened and cleared
                                // (a gateway may still be receiving the late reply on its serial side).
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            false
                        }
                    },
                };
                let was_online = dev.online;
                dev.after_poll(answered, at, &mut readings);
                if let (Some(h), true) = (&self.health, was_online != dev.online) {
                    h.modbus_online
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(dev.poll.id.clone(), dev.online);
                }
                if !readings.is_empty() {
                    let n = readings
                        .iter()
                        .filter(|r| r.quality != Quality::Bad)
                        .count();
                    metrics::counter!("caretaker_readings_received_total", "source" => "modbus")
                        .increment(n as u64);
                    if tx.send(Batch::new(readings)).await.is_err() {
                        return; // the pipeline is gone: shutting down
                    }
                }
            }
        }
        if let Some(mut c) = conn.take() {
            let _ = tokio::time::timeout(Duration::from_millis(200), c.disconnect()).await;
        }
        info!(link = %key, "Modbus link stopped");
    }
}

/// Exceptions about the device as a whole rather than the registers asked for.
fn device_level(code: ExceptionCode) -> bool {
    matches!(
        code,
        ExceptionCode::GatewayPathUnavailable
            | ExceptionCode::GatewayTargetDevice
            | ExceptionCode::ServerDeviceBusy
            | ExceptionCode::Acknowledge
    )
}

/// Opens the link's connection under `timeout`.
async fn connect(addr: &LinkAddr, timeout: Duration) -> Result<Context, String> {
    match addr {
        LinkAddr::Tcp { host, port } => {
            let fut = async {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                Ok::<_, String>(tokio_modbus::client::tcp::attach(stream))
            };
            tokio::time::timeout(timeout.max(Duration::from_secs(1)), fut)
                .await
                .map_err(|_| "connect timed out".to_string())?
        }
        LinkAddr::Rtu { path, serial } => open_serial(path, serial),
        LinkAddr::RtuTcp { host, port } => {
            // RTU frames (unit id, PDU, CRC16) on the TCP byte stream; tokio-modbus's RTU codec takes any
            // AsyncRead + AsyncWrite. The unit id is set per request (`set_slave`), as on a serial line.
            let fut = async {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                Ok::<_, String>(tokio_modbus::client::rtu::attach(stream))
            };
            tokio::time::timeout(timeout.max(Duration::from_secs(1)), fut)
                .await
                .map_err(|_| "connect timed out".to_string())?
        }
    }
}

fn open_serial(path: &str, s: &Serial) -> Result<Context, String> {
    use tokio_serial::{SerialPort, SerialPortBuilderExt};
    let builder = tokio_serial::new(path, s.baud)
        .parity(match s.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        })
        .data_bits(match s.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        })
        .stop_bits(if s.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        });
    let port = builder
        .open_native_async()
        .map_err(|e| format!("cannot open {path}: {e}"))?;
    // Whatever is in the input buffer is an old, late reply: never read it as the next answer.
    let _ = port.clear(tokio_serial::ClearBuffer::All);
    Ok(tokio_modbus::client::rtu::attach(port))
}

impl DeviceState {
    fn new(poll: DevicePoll) -> DeviceState {
        let mut periods = vec![poll.settings.poll];
        let point_period = poll
            .profile
            .points
            .iter()
            .map(|p| {
                p.modbus.as_ref()?;
                let d = poll
                    .settings
                    .point_polls
                    .get(&p.name)
                    .copied()
                    .unwrap_or(poll.settings.poll);
                Some(match periods.iter().position(|x| *x == d) {
                    Some(i) => i,
                    // Due periods travel as a u64 mask; `check` refuses more than 64 distinct periods.
                    None if periods.len() == MAX_PERIODS => 0,
                    None => {
                        periods.push(d);
                        periods.len() - 1
                    }
                })
            })
            .collect();
        DeviceState {
            limits: Limits::from_quirks(&poll.profile.modbus),
            poll,
            next_due: vec![Instant::now(); periods.len()],
            periods,
            point_period,
            plans: HashMap::new(),
            items: HashMap::new(),
            barriers: Barriers::new(),
            isolated: BTreeSet::new(),
            bad: BTreeSet::new(),
            failed_polls: 0,
            online: true,
            sent_this_poll: 0,
            stats: Arc::default(),
        }
    }

    /// The mask of periods due at `now`, advancing their anchors past `now` (missed polls are skipped).
    fn take_due(&mut self, now: Instant) -> Option<u64> {
        let mut mask = 0u64;
        for (i, due) in self.next_due.iter_mut().enumerate() {
            if *due <= now {
                mask |= 1 << i;
                let p = self.periods[i];
                let behind = now.duration_since(*due);
                let skip = (behind.as_nanos() / p.as_nanos().max(1)) as u32;
                if skip > 0 {
                    metrics::counter!("caretaker_modbus_polls_skipped_total", "device" => self.poll.id.clone()).increment(skip as u64);
                }
                // Checked: an overflow here would panic the link task. Config caps `poll` at a day, so the
                // fallback (next due a period from now) is a safety net.
                *due = p
                    .checked_mul(skip.saturating_add(1))
                    .and_then(|d| due.checked_add(d))
                    .or_else(|| now.checked_add(p))
                    .unwrap_or(now);
            }
        }
        (mask != 0).then_some(mask)
    }

    /// The plan for a set of due periods, cached until barriers or isolated points change.
    fn plan(&mut self, mask: u64, cost: &CostModel) -> (Arc<Vec<Item>>, Arc<Vec<Request>>) {
        if let (Some(i), Some(p)) = (self.items.get(&mask), self.plans.get(&mask)) {
            return (i.clone(), p.clone());
        }
        let items: Vec<Item> = self
            .poll
            .profile
            .points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let b = p.modbus.as_ref()?;
                let period = self.point_period[i]?;
                (mask & (1 << period) != 0).then_some(Item {
                    key: i as u32,
                    table: b.table,
                    start: b.address,
                    width: b.width(),
                })
            })
            .collect();
        let (alone, merged): (Vec<usize>, Vec<usize>) =
            (0..items.len()).partition(|&i| self.isolated.contains(&items[i].key));
        let merged_items: Vec<Item> = merged.iter().map(|&i| items[i]).collect();
        let mut reqs = planner::plan(&merged_items, &self.limits, cost, &self.barriers);
        for r in &mut reqs {
            r.items.iter_mut().for_each(|i| *i = merged[*i]);
        }
        for i in alone {
            reqs.push(Request {
                table: items[i].table,
                start: items[i].start,
                count: items[i].width,
                items: vec![i],
            });
        }
        let (items, reqs) = (Arc::new(items), Arc::new(reqs));
        self.items.insert(mask, items.clone());
        self.plans.insert(mask, reqs.clone());
        (items, reqs)
    }

    fn forget_plans(&mut self) {
        self.plans.clear();
        self.items.clear();
    }

    /// Reads the due points once. `Ok(answered)`: whether the device answered anything; `Err`: the link failed.
    async fn poll_once(
        &mut self,
        conn: &mut Context,
        mask: u64,
        cost: &CostModel,
        at: i64,
        out: &mut Vec<Reading>,
    ) -> Result<bool, String> {
        conn.set_slave(Slave(self.poll.settings.unit));
        let (items, reqs) = self.plan(mask, cost);
        let mut answered = false;
        self.sent_this_poll = 0;
        for r in reqs.iter() {
            match self.read(conn, r.table, r.start, r.count).await {
                Ok(data) => {
                    answered = true;
                    self.decode(&items, &r.items, r.start, &data, at, out);
                    for &i in &r.items {
                        let it = items[i];
                        if self.isolated.remove(&it.key) {
                            info!(device = %self.poll.id, point = %self.point_name(it.key), "Modbus point answers again");
                            for reg in it.start as u32..it.start as u32 + it.width as u32 {
                                self.barriers.remove(&(it.table, reg as u16));
                            }
                            self.forget_plans();
                        }
                    }
                }
                Err(ReadError::Exception(code)) if device_level(code) => {
                    // A gateway saying the device behind it is silent, or a busy device: nothing to learn about
                    // registers; end this poll as unanswered and try again on schedule.
                    debug!(device = %self.poll.id, ?code, "Modbus device unavailable");
                    return Ok(answered);
                }
                Err(ReadError::Exception(code)) => {
                    answered = true;
                    self.split(conn, &items, &r.items, code, at, out).await?;
                }
                Err(ReadError::Link(e)) => return Err(e),
            }
        }
        Ok(answered)
    }

    fn point_name(&self, key: u32) -> &str {
        &self.poll.profile.points[key as usize].name
    }

    /// Bisects a refused request to find the points the device refuses. Returns whether any point was bad.
    fn split<'a>(
        &'a mut self,
        conn: &'a mut Context,
        items: &'a [Item],
        group: &'a [usize],
        code: ExceptionCode,
        at: i64,
        out: &'a mut Vec<Reading>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, String>> + Send + 'a>>
    {
        Box::pin(async move {
            if device_level(code) {
                return Ok(true); // about the device, not these registers
            }
            if group.len() == 1 {
                let it = items[group[0]];
                self.mark_bad(it.key, &format!("Modbus exception {code:?}"), at, out);
                if self.isolated.insert(it.key) {
                    // Merged requests must not read its registers as filler either.
                    for reg in it.start as u32..it.start as u32 + it.width as u32 {
                        self.barriers.insert((it.table, reg as u16));
                    }
                    self.forget_plans();
                }
                return Ok(true);
            }
            let (left, right) = group.split_at(group.len() / 2);
            let mut any_bad = false;
            for half in [left, right] {
                let table = items[half[0]].table;
                let start = half.iter().map(|&i| items[i].start).min().unwrap_or(0);
                let end = half
                    .iter()
                    .map(|&i| items[i].start as u32 + items[i].width as u32)
                    .max()
                    .unwrap_or(0);
                let count = (end - start as u32) as u16;
                match self.read(conn, table, start, count).await {
                    Ok(data) => self.decode(items, half, start, &data, at, out),
                    Err(ReadError::Exception(c)) => {
                        any_bad |= self.split(conn, items, half, c, at, out).await?
                    }
                    Err(ReadError::Link(e)) => return Err(e),
                }
            }
            if !any_bad {
                // Every part reads fine alone: the filler between them is what the device refuses.
                let table = items[group[0]].table;
                let start = group
                    .iter()
                    .map(|&i| items[i].start as u32)
                    .min()
                    .unwrap_or(0);
                let end = group
                    .iter()
                    .map(|&i| items[i].start as u32 + items[i].width as u32)
                    .max()
                    .unwrap_or(0);
                for r in start..end {
                    let covered = items.iter().any(|it| {
                        it.table == table
                            && it.start as u32 <= r
                            && r < it.start as u32 + it.width as u32
                    });
                    if !covered {
                        self.barriers.insert((table, r as u16));
                    }
                }
                warn!(device = %self.poll.id, table = table.as_str(), start, end, "Modbus device refuses registers between points; no longer reading across them");
                self.forget_plans();
            }
            Ok(any_bad)
        })
    }

    fn mark_bad(&mut self, key: u32, why: &str, at: i64, out: &mut Vec<Reading>) {
        let name = self.point_name(key).to_string();
        // Logged when a point turns bad, not on every poll while it stays bad (the metric counts each).
        if self.bad.insert(key) {
            warn!(device = %self.poll.id, point = %name, reason = why, "Modbus point is bad");
        } else {
            debug!(device = %self.poll.id, point = %name, reason = why, "Modbus point still bad");
        }
        metrics::counter!("caretaker_modbus_bad_readings_total", "device" => self.poll.id.clone(), "point" => name).increment(1);
        out.push(Reading {
            point: PointId(self.poll.first_point + key),
            value: f64::NAN,
            quality: Quality::Bad,
            at,
        });
    }

    fn decode(
        &mut self,
        items: &[Item],
        which: &[usize],
        start: u16,
        data: &Data,
        at: i64,
        out: &mut Vec<Reading>,
    ) {
        for &i in which {
            let it = items[i];
            let p = &self.poll.profile.points[it.key as usize];
            let off = (it.start - start) as usize;
            let raw = match (data, &p.modbus) {
                (Data::Words(w), Some(b)) => {
                    decode_registers(b, w.get(off..).unwrap_or(&[])).map_err(|e| e.to_string())
                }
                (Data::Bits(bits), Some(_)) => bits
                    .get(off)
                    .map(|&v| decode_bit(v))
                    .ok_or_else(|| "short reply".to_string()),
                (_, None) => continue,
            };
            let value = raw.and_then(|raw| p.convert(raw).map_err(|v| p.rejection(v)));
            match value {
                Ok(v) => {
                    if self.bad.remove(&it.key) {
                        info!(device = %self.poll.id, point = %p.name, "Modbus point is good again");
                    }
                    out.push(Reading::good(
                        PointId(self.poll.first_point + it.key),
                        v,
                        at,
                    ))
                }
                Err(e) => self.mark_bad(it.key, &e, at, out),
            }
        }
    }

    async fn read(
        &mut self,
        conn: &mut Context,
        table: Table,
        start: u16,
        count: u16,
    ) -> Result<Data, ReadError> {
        let pause = self.poll.profile.modbus.pause_between_requests;
        if self.sent_this_poll > 0 && !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        self.sent_this_poll += 1;
        let t0 = std::time::Instant::now();
        let timeout = self.poll.settings.timeout;
        metrics::counter!("caretaker_modbus_requests_total", "device" => self.poll.id.clone())
            .increment(1);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let res = match table {
            Table::Holding => {
                tokio::time::timeout(timeout, conn.read_holding_registers(start, count))
                    .await
                    .map(|r| r.map(|r| r.map(Data::Words)))
            }
            Table::Input => tokio::time::timeout(timeout, conn.read_input_registers(start, count))
                .await
                .map(|r| r.map(|r| r.map(Data::Words))),
            Table::Coil => tokio::time::timeout(timeout, conn.read_coils(start, count))
                .await
                .map(|r| r.map(|r| r.map(Data::Bits))),
            Table::Discrete => {
                tokio::time::timeout(timeout, conn.read_discrete_inputs(start, count))
                    .await
                    .map(|r| r.map(|r| r.map(Data::Bits)))
            }
        };
        metrics::histogram!("caretaker_modbus_request_seconds").record(t0.elapsed().as_secs_f64());
        let msg = match res {
            Ok(Ok(Ok(data))) => {
                // A reply with another number of values than asked for belongs to another request (a gateway
                // mixing up transactions, a torn RTU frame) or a broken device: decoding it would put values on
                // the wrong points. Coils and discrete inputs come padded to whole bytes (tokio-modbus truncates).
                let got = match &data {
                    Data::Words(w) => w.len(),
                    Data::Bits(b) => b.len(),
                };
                if got == count as usize {
                    return Ok(data);
                }
                metrics::counter!("caretaker_modbus_errors_total", "device" => self.poll.id.clone(), "kind" => "bad_reply").increment(1);
                format!(
                    "{} {start}+{count}: the reply carries {got} values",
                    table.as_str()
                )
            }
            Ok(Ok(Err(code))) => {
                self.stats.exceptions.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("caretaker_modbus_errors_total", "device" => self.poll.id.clone(), "kind" => "exception").increment(1);
                return Err(ReadError::Exception(code));
            }
            Ok(Err(e)) => format!("{} {start}+{count}: {e}", table.as_str()),
            Err(_) => format!(
                "{} {start}+{count}: no answer within {timeout:?}",
                table.as_str()
            ),
        };
        self.stats.link_errors.fetch_add(1, Ordering::Relaxed);
        Err(ReadError::Link(msg))
    }

    /// Offline bookkeeping after a poll, plus the `online` reading.
    fn after_poll(&mut self, answered: bool, at: i64, out: &mut Vec<Reading>) {
        let id = &self.poll.id;
        if answered {
            if !self.online {
                info!(device = %id, after_polls = self.failed_polls, "Modbus device back online");
                metrics::gauge!("caretaker_device_online", "device" => id.clone()).set(1.0);
            }
            self.failed_polls = 0;
            self.online = true;
        } else {
            self.failed_polls = self.failed_polls.saturating_add(1);
            if self.online && self.failed_polls >= self.poll.settings.offline_after {
                self.online = false;
                warn!(device = %id, polls = self.failed_polls, "Modbus device offline: no answer");
                metrics::gauge!("caretaker_device_online", "device" => id.clone()).set(0.0);
            }
        }
        if let Some(p) = self.poll.online_point {
            out.push(Reading::good(p, if self.online { 1.0 } else { 0.0 }, at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::profile::parse_profile;

    fn device(overrides: &[(&str, u64)]) -> DeviceState {
        let p = parse_profile(
            std::path::Path::new("/t/three.yaml"),
            "schema: 1\nname: three\ncategory: other\npoints:
  - { name: a, unit: none, kind: gauge, modbus: { table: holding, address: 0 } }
  - { name: b, unit: none, kind: gauge, modbus: { table: holding, address: 1 } }
  - { name: c, unit: none, kind: gauge, modbus: { table: holding, address: 2 } }
",
        )
        .unwrap();
        let raw: super::super::config::RawModbusDevice =
            toml::from_str("url = \"tcp://h:502\"\npoll = \"1s\"").unwrap();
        let mut settings = super::super::config::validate(&raw).unwrap();
        for (name, secs) in overrides {
            settings
                .point_polls
                .insert(name.to_string(), Duration::from_secs(*secs));
        }
        DeviceState::new(DevicePoll {
            id: "d".into(),
            profile: Arc::new(p),
            first_point: 0,
            settings,
            online_point: None,
        })
    }

    #[test]
    fn points_due_together_share_requests_and_the_schedule_is_anchored() {
        let mut d = device(&[("b", 2)]);
        assert_eq!(d.periods, [Duration::from_secs(1), Duration::from_secs(2)]);
        let t0 = Instant::now();
        d.next_due = vec![t0; 2];
        let cost = CostModel::default();
        let s = Duration::from_secs(1);
        // t0: both periods due, one request for all three points.
        assert_eq!(d.take_due(t0), Some(0b11));
        let (_, plan) = d.plan(0b11, &cost);
        assert_eq!(plan.len(), 1);
        assert_eq!(
            (plan[0].start, plan[0].count, plan[0].items.len()),
            (0, 3, 3)
        );
        assert_eq!(d.take_due(t0 + s / 2), None);
        // t0+1s: only the 1 s points; still one request (reading b as filler beats a second round trip).
        assert_eq!(d.take_due(t0 + s), Some(0b01));
        let (items, plan) = d.plan(0b01, &cost);
        assert_eq!(items.len(), 2);
        assert_eq!((plan.len(), plan[0].count), (1, 3));
        assert_eq!(d.take_due(t0 + 2 * s), Some(0b11));
        // A poll that runs late does not shift the schedule...
        assert_eq!(d.take_due(t0 + 3 * s + s / 2), Some(0b01));
        assert_eq!(d.next_due[0], t0 + 4 * s);
        // ...and polls missed entirely are skipped, not bunched.
        assert_eq!(d.take_due(t0 + 6 * s + s / 5), Some(0b11));
        assert_eq!(d.next_due, [t0 + 7 * s, t0 + 8 * s]);
    }

    #[test]
    fn offline_after_n_silent_polls_and_back_on_the_first_answer() {
        let mut d = device(&[]);
        d.poll.online_point = Some(PointId(3));
        let mut out = Vec::new();
        for _ in 0..2 {
            d.after_poll(false, 0, &mut out);
        }
        assert!(d.online, "offline_after defaults to 3");
        d.after_poll(false, 0, &mut out);
        assert!(!d.online);
        d.after_poll(true, 0, &mut out);
        assert!(d.online);
        let online: Vec<f64> = out.iter().map(|r| r.value).collect();
        assert_eq!(online, [1.0, 1.0, 0.0, 1.0]);
    }
}
