//! The poller of one BACnet device: reads its points with ReadPropertyMultiple in batches that fit the device's
//! max APDU (read once from its device object, with segmentation-supported), falls back to one ReadProperty per
//! property when the device rejects RPM, subscribes to COV where `cov = true` (renewed before the lifetime ends;
//! polling continues as the fallback), turns status flags into reading quality, and reports the device offline
//! after `offline_after` polls without any answer, like a Modbus device (`online` point, `/health`, metric).

use super::client::{Ack, Endpoint, RequestError};
use super::codec::{self, CovNotification, PropertyResult, StatusFlags, Value, prop};
use super::config::BacnetDevice;
use crate::catalog::bacnet_binding::{ObjectId, ObjectType};
use crate::catalog::{PointId, Profile};
use crate::pipeline::Batch;
use crate::reading::{Quality, Reading};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// What the poller of one device knows at start.
pub struct DevicePoll {
    pub id: String,
    pub profile: Arc<Profile>,
    pub first_point: u32,
    pub online_point: Option<PointId>,
    pub settings: BacnetDevice,
    /// Subscriber process identifier of this device's COV subscriptions (unique per endpoint).
    pub process_id: u32,
}

/// Counters readable while the poller runs (tests, `caretaker check`).
#[derive(Debug, Default)]
pub struct PollStats {
    pub requests: AtomicU64,
    pub cov_notifications: AtomicU64,
    pub point_errors: AtomicU64,
}

/// One object of the device and the points read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectRead {
    pub object: ObjectId,
    /// `(property, point index in the profile)`.
    pub points: Vec<(u32, usize)>,
    /// Whether status-flags is read with it (objects with a present-value point).
    pub status: bool,
}

impl ObjectRead {
    fn properties(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.points.iter().map(|p| p.0).collect();
        if self.status {
            v.push(prop::STATUS_FLAGS);
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The objects of a profile's BACnet points, in profile order of first appearance.
pub fn objects_of(profile: &Profile) -> Vec<ObjectRead> {
    let mut out: Vec<ObjectRead> = Vec::new();
    for (i, p) in profile.points.iter().enumerate() {
        let Some(b) = &p.bacnet else { continue };
        let pos = match out.iter().position(|o| o.object == b.object) {
            Some(x) => x,
            None => {
                out.push(ObjectRead {
                    object: b.object,
                    points: Vec::new(),
                    status: false,
                });
                out.len() - 1
            }
        };
        out[pos].points.push((b.property, i));
        if b.property == prop::PRESENT_VALUE {
            out[pos].status = true;
        }
    }
    out
}

/// Estimated bytes of one object in an RPM request and in its answer (a value is at most 10 bytes for the
/// numeric types points read; an error result is 6).
fn rpm_sizes(o: &ObjectRead) -> (usize, usize) {
    let n = o.properties().len();
    (5 + 2 + 3 * n, 5 + 2 + n * (3 + 2 + 10))
}

/// Groups objects into ReadPropertyMultiple requests: each request, and each answer unless the device can send
/// segmented answers, fits in `max_apdu` (less the APDU header). Objects are never split.
pub fn plan_rpm(objects: &[ObjectRead], max_apdu: u32, segmented_answers: bool) -> Vec<Vec<usize>> {
    let limit = (max_apdu as usize).saturating_sub(8).max(40);
    let answer_limit = if segmented_answers {
        limit * super::client::MAX_SEGMENTS / 2
    } else {
        limit
    };
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let (mut req, mut ans) = (0usize, 0usize);
    for (i, o) in objects.iter().enumerate() {
        let (r, a) = rpm_sizes(o);
        match batches.last_mut() {
            Some(b) if req + r <= limit && ans + a <= answer_limit => {
                b.push(i);
                req += r;
                ans += a;
            }
            _ => {
                batches.push(vec![i]);
                req = r;
                ans = a;
            }
        }
    }
    batches
}

/// Requests per full poll: with RPM (planned) and with one ReadProperty per property (status flags included).
pub fn requests_per_poll(profile: &Profile, max_apdu: u32, segmented: bool) -> (usize, usize) {
    let objects = objects_of(profile);
    let single: usize = objects.iter().map(|o| o.properties().len()).sum();
    (plan_rpm(&objects, max_apdu, segmented).len(), single)
}

/// The reading quality status flags mean: a fault makes the value unusable (bad); an overridden or
/// out-of-service object reports a value that is not the process's own (uncertain); in-alarm is about the
/// process, not the measurement (good).
pub fn quality(f: StatusFlags) -> Quality {
    if f.fault {
        Quality::Bad
    } else if f.overridden || f.out_of_service {
        Quality::Uncertain
    } else {
        Quality::Good
    }
}

struct Cov {
    /// When each subscribed object's subscription is renewed next.
    renew_at: BTreeMap<ObjectId, Instant>,
    /// Objects the device refused to subscribe (logged once; polled only).
    refused: BTreeSet<ObjectId>,
}

/// The poller.
pub struct Poller {
    dev: DevicePoll,
    peer: Option<SocketAddr>,
    objects: Vec<ObjectRead>,
    /// `(max APDU, segmented answers)` once read from the device object.
    info: Option<(u32, bool)>,
    batches: Vec<Vec<usize>>,
    rpm: bool,
    failed_polls: u32,
    online: bool,
    /// Points whose last reading was bad (log transitions only).
    bad: BTreeSet<usize>,
    /// Last status flags per object (for COV notifications that carry only the value).
    flags: HashMap<ObjectId, StatusFlags>,
    cov: Cov,
    stats: Arc<PollStats>,
    health: Option<Arc<crate::telemetry::Health>>,
}

impl Poller {
    pub fn new(dev: DevicePoll) -> Poller {
        let objects = objects_of(&dev.profile);
        Poller {
            dev,
            peer: None,
            objects,
            info: None,
            batches: Vec::new(),
            rpm: true,
            failed_polls: 0,
            online: true,
            bad: BTreeSet::new(),
            flags: HashMap::new(),
            cov: Cov {
                renew_at: BTreeMap::new(),
                refused: BTreeSet::new(),
            },
            stats: Arc::default(),
            health: None,
        }
    }

    pub fn with_health(mut self, h: Arc<crate::telemetry::Health>) -> Self {
        self.health = Some(h);
        self
    }

    pub fn stats(&self) -> Arc<PollStats> {
        self.stats.clone()
    }

    fn set_health(&self) {
        if let Some(h) = &self.health {
            h.bacnet_online
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(self.dev.id.clone(), self.online);
        }
        metrics::gauge!("caretaker_device_online", "device" => self.dev.id.clone())
            .set(if self.online { 1.0 } else { 0.0 });
    }

    /// Polls until `stop`, sending a batch per poll (and per COV notification) on `tx`.
    pub async fn run(mut self, ep: Endpoint, tx: mpsc::Sender<Batch>, stop: CancellationToken) {
        self.set_health();
        let mut cov_rx = ep.cov_channel(self.dev.process_id);
        let start = Instant::now();
        let period = self.dev.settings.poll;
        let mut next_poll = start;
        info!(device = %self.dev.id, objects = self.objects.len(), cov = self.dev.settings.cov, "BACnet device poller starting");
        loop {
            let renew = self.cov.renew_at.values().min().copied();
            let wake = renew.map_or(next_poll, |r| r.min(next_poll));
            tokio::select! {
                _ = stop.cancelled() => break,
                Some((from, n)) = cov_rx.recv() => {
                    let mut out = Vec::new();
                    self.on_cov(from, &n, &mut out);
                    if !out.is_empty() && tx.send(Batch::new(out)).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            let mut out = Vec::new();
            let at = crate::util::now_ns();
            if now >= next_poll {
                // Anchored schedule: a slow poll never shifts the next one; missed polls are skipped.
                let behind = now.duration_since(next_poll).as_nanos() / period.as_nanos().max(1);
                next_poll += period * (behind as u32 + 1);
                let answered = self.poll_once(&ep, at, &mut out).await;
                let answered = self.subscribe_due(&ep, true).await.unwrap_or(answered) || answered;
                self.after_poll(answered, at, &mut out);
            } else if let Some(answered) = self.subscribe_due(&ep, false).await {
                // A renewal round counts as a poll for the device's online state.
                if !answered {
                    self.after_poll(false, at, &mut out);
                }
            }
            if !out.is_empty() {
                let n = out.iter().filter(|r| r.quality != Quality::Bad).count();
                metrics::counter!("caretaker_readings_received_total", "source" => "bacnet")
                    .increment(n as u64);
                if tx.send(Batch::new(out)).await.is_err() {
                    return; // the pipeline is gone: shutting down
                }
            }
        }
        info!(device = %self.dev.id, "BACnet device poller stopped");
    }

    async fn resolve(&mut self) -> Option<SocketAddr> {
        if self.peer.is_none() {
            let (h, p) = &self.dev.settings.address;
            match super::client::resolve(h, *p).await {
                Ok(a) => self.peer = Some(a),
                Err(e) if self.failed_polls == 0 => {
                    warn!(device = %self.dev.id, error = %e, "BACnet device address does not resolve")
                }
                Err(e) => {
                    debug!(device = %self.dev.id, error = %e, "BACnet device address does not resolve")
                }
            }
        }
        self.peer
    }

    async fn request(
        &self,
        ep: &Endpoint,
        peer: SocketAddr,
        service: u8,
        body: &[u8],
    ) -> Result<Ack, RequestError> {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("caretaker_bacnet_device_requests_total", "device" => self.dev.id.clone())
            .increment(1);
        ep.request(peer, service, body).await
    }

    /// ReadProperty of one property; `Ok(values)` or the failure.
    async fn read_property(
        &self,
        ep: &Endpoint,
        peer: SocketAddr,
        object: (u16, u32),
        property: u32,
    ) -> Result<Vec<Value>, RequestError> {
        let mut body = Vec::with_capacity(16);
        codec::put_read_property(&mut body, object, property, None);
        match self
            .request(ep, peer, codec::SERVICE_READ_PROPERTY, &body)
            .await?
        {
            Ack::Complex(data) => Ok(codec::decode_read_property_ack(&data)?.1),
            Ack::Simple => Err(RequestError::Decode(codec::DecodeError::Invalid(
                "Simple-ACK to ReadProperty",
            ))),
        }
    }

    /// Reads max-apdu-length-accepted and segmentation-supported of the device object once. `None`: no answer.
    async fn device_info(&mut self, ep: &Endpoint, peer: SocketAddr) -> Option<(u32, bool)> {
        if let Some(i) = self.info {
            return Some(i);
        }
        let dev = (ObjectType::Device.code(), self.dev.settings.device_instance);
        let max = match self
            .read_property(ep, peer, dev, prop::MAX_APDU_LENGTH_ACCEPTED)
            .await
        {
            Ok(v) => v.first().and_then(Value::as_f64).unwrap_or(480.0) as u32,
            Err(e) if e.answered() => {
                info!(device = %self.dev.id, error = %e, "BACnet device object unreadable; assuming 480-byte APDUs without segmentation");
                480
            }
            Err(_) => return None,
        };
        let seg = match self
            .read_property(ep, peer, dev, prop::SEGMENTATION_SUPPORTED)
            .await
        {
            Ok(v) => matches!(
                v.first(),
                Some(Value::Enumerated(
                    codec::SEGMENTED_BOTH | codec::SEGMENTED_TRANSMIT
                ))
            ),
            Err(e) if e.answered() => false,
            Err(_) => return None,
        };
        let max = max.clamp(50, codec::MAX_APDU as u32);
        info!(device = %self.dev.id, max_apdu = max, segmented_answers = seg, "BACnet device parameters read");
        self.info = Some((max, seg));
        self.batches = plan_rpm(&self.objects, max, seg);
        Some((max, seg))
    }

    /// Reads every point once. Returns whether the device answered anything.
    async fn poll_once(&mut self, ep: &Endpoint, at: i64, out: &mut Vec<Reading>) -> bool {
        let Some(peer) = self.resolve().await else {
            return false;
        };
        if self.device_info(ep, peer).await.is_none() {
            debug!(device = %self.dev.id, "BACnet device silent");
            return false;
        }
        let mut answered = true;
        let batches = self.batches.clone();
        for batch in &batches {
            if self.rpm {
                let specs: Vec<((u16, u32), Vec<u32>)> = batch
                    .iter()
                    .map(|&i| {
                        let o = &self.objects[i];
                        ((o.object.kind.code(), o.object.instance), o.properties())
                    })
                    .collect();
                let mut body = Vec::with_capacity(64);
                codec::put_read_property_multiple(&mut body, &specs);
                match self
                    .request(ep, peer, codec::SERVICE_READ_PROPERTY_MULTIPLE, &body)
                    .await
                {
                    Ok(Ack::Complex(data)) => match codec::decode_read_property_multiple_ack(&data)
                    {
                        Ok(results) => {
                            self.apply(batch, &results, at, out);
                            continue;
                        }
                        Err(e) => {
                            warn!(device = %self.dev.id, error = %e, "undecodable ReadPropertyMultiple answer; reading these points one by one");
                        }
                    },
                    Ok(Ack::Simple) => {}
                    Err(RequestError::Reject { .. })
                    | Err(RequestError::Error {
                        class: codec::ERROR_CLASS_SERVICES,
                        ..
                    }) => {
                        info!(device = %self.dev.id, "device does not take ReadPropertyMultiple; reading one property per ReadProperty");
                        self.rpm = false;
                    }
                    Err(e) if e.answered() => {
                        // The whole request refused (some devices answer one unknown object so): read each
                        // property alone to find which.
                        debug!(device = %self.dev.id, error = %e, "ReadPropertyMultiple refused; reading this batch one by one");
                    }
                    Err(e) => {
                        debug!(device = %self.dev.id, error = %e, "BACnet device did not answer");
                        return false;
                    }
                }
            }
            // One ReadProperty per property.
            let mut results = Vec::new();
            for &i in batch {
                let o = self.objects[i].clone();
                let raw = (o.object.kind.code(), o.object.instance);
                for p in o.properties() {
                    let result = match self.read_property(ep, peer, raw, p).await {
                        Ok(v) => Ok(v),
                        Err(RequestError::Error { class, code }) => Err((class, code)),
                        Err(e) if e.answered() => Err((0, 0)),
                        Err(e) => {
                            debug!(device = %self.dev.id, error = %e, "BACnet device did not answer");
                            answered = false;
                            break;
                        }
                    };
                    results.push(PropertyResult {
                        object: raw,
                        property: p,
                        index: None,
                        result,
                    });
                }
                if !answered {
                    break;
                }
            }
            self.apply(batch, &results, at, out);
            if !answered {
                return false;
            }
        }
        answered
    }

    /// Turns results for a batch of objects into readings; a point without a result is bad.
    fn apply(
        &mut self,
        batch: &[usize],
        results: &[PropertyResult],
        at: i64,
        out: &mut Vec<Reading>,
    ) {
        for &i in batch {
            let o = self.objects[i].clone();
            let raw = (o.object.kind.code(), o.object.instance);
            let find = |p: u32| results.iter().find(|r| r.object == raw && r.property == p);
            let flags = if o.status {
                match find(prop::STATUS_FLAGS).map(|r| &r.result) {
                    Some(Ok(v)) => v.first().and_then(StatusFlags::from_value),
                    _ => None,
                }
            } else {
                None
            };
            if let Some(f) = flags {
                self.flags.insert(o.object, f);
            }
            for &(property, point) in &o.points {
                match find(property).map(|r| &r.result) {
                    Some(Ok(values)) => {
                        let q = if property == prop::PRESENT_VALUE {
                            flags.map(quality).unwrap_or(Quality::Good)
                        } else {
                            Quality::Good
                        };
                        self.value(point, values.first(), q, at, out);
                    }
                    Some(Err((class, code))) => {
                        let why = if (*class, *code) == (0, 0) {
                            "the device refused the request".to_string()
                        } else {
                            codec::error_text(*class, *code)
                        };
                        self.point_error(point, &why, at, out);
                    }
                    None => self.point_error(point, "not in the device's answer", at, out),
                }
            }
        }
    }

    fn value(
        &mut self,
        point: usize,
        v: Option<&Value>,
        q: Quality,
        at: i64,
        out: &mut Vec<Reading>,
    ) {
        let p = &self.dev.profile.points[point];
        let raw = match v {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("a {} is not a number", v.type_name())),
            None => Err("no value".to_string()),
        };
        match raw.and_then(|r| p.convert(r).map_err(|x| p.rejection(x))) {
            Ok(value) if q != Quality::Bad => {
                if self.bad.remove(&point) {
                    info!(device = %self.dev.id, point = %p.name, "BACnet point is good again");
                }
                out.push(Reading {
                    point: PointId(self.dev.first_point + point as u32),
                    value,
                    quality: q,
                    at,
                });
            }
            Ok(_) => self.point_error(point, "status flags say fault", at, out),
            Err(e) => self.point_error(point, &e, at, out),
        }
    }

    fn point_error(&mut self, point: usize, why: &str, at: i64, out: &mut Vec<Reading>) {
        let p = &self.dev.profile.points[point];
        let object = p
            .bacnet
            .as_ref()
            .map(|b| format!("{} {}", b.object, b.property_name()))
            .unwrap_or_default();
        // Logged when a point turns bad, not on every poll while it stays bad (the metric counts each).
        if self.bad.insert(point) {
            warn!(device = %self.dev.id, point = %p.name, object = %object, reason = why, "BACnet point is bad");
        }
        self.stats.point_errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("caretaker_bacnet_point_errors_total", "device" => self.dev.id.clone(), "point" => p.name.clone()).increment(1);
        out.push(Reading {
            point: PointId(self.dev.first_point + point as u32),
            value: f64::NAN,
            quality: Quality::Bad,
            at,
        });
    }

    /// Subscribes (or renews) the objects due; `None` when none was due, else whether the device answered.
    async fn subscribe_due(&mut self, ep: &Endpoint, first_round: bool) -> Option<bool> {
        if !self.dev.settings.cov {
            return None;
        }
        let now = Instant::now();
        let due: Vec<ObjectId> = self
            .objects
            .iter()
            .filter(|o| o.status && !self.cov.refused.contains(&o.object))
            .map(|o| o.object)
            .filter(|o| match self.cov.renew_at.get(o) {
                None => first_round,
                Some(t) => *t <= now,
            })
            .collect();
        if due.is_empty() {
            return None;
        }
        let peer = self.resolve().await?;
        let lifetime = self.dev.settings.cov_lifetime;
        let mut answered = false;
        for object in due {
            let mut body = Vec::with_capacity(24);
            codec::put_subscribe_cov(
                &mut body,
                self.dev.process_id,
                object,
                true,
                lifetime.as_secs() as u32,
            );
            match self
                .request(ep, peer, codec::SERVICE_SUBSCRIBE_COV, &body)
                .await
            {
                Ok(_) => {
                    answered = true;
                    debug!(device = %self.dev.id, %object, ?lifetime, "COV subscription made");
                    self.cov
                        .renew_at
                        .insert(object, Instant::now() + lifetime * 3 / 4);
                }
                Err(e) if e.answered() => {
                    answered = true;
                    warn!(device = %self.dev.id, %object, error = %e, "device refused a COV subscription; the object is polled only");
                    self.cov.refused.insert(object);
                    self.cov.renew_at.remove(&object);
                }
                Err(e) => {
                    debug!(device = %self.dev.id, %object, error = %e, "COV subscription not answered; retried on the next poll");
                    // Retried at the next poll (first_round) or in a tenth of the lifetime.
                    self.cov.renew_at.insert(
                        object,
                        Instant::now() + (lifetime / 10).max(Duration::from_secs(1)),
                    );
                    break;
                }
            }
        }
        Some(answered)
    }

    fn on_cov(&mut self, from: SocketAddr, n: &CovNotification, out: &mut Vec<Reading>) {
        if Some(from) != self.peer {
            debug!(device = %self.dev.id, %from, "COV notification from another address; ignored");
            return;
        }
        self.stats.cov_notifications.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("caretaker_bacnet_cov_notifications_total", "device" => self.dev.id.clone())
            .increment(1);
        let Some(o) = self
            .objects
            .iter()
            .find(|o| (o.object.kind.code(), o.object.instance) == n.object)
            .cloned()
        else {
            return;
        };
        let at = crate::util::now_ns();
        let flags = n
            .values
            .iter()
            .find(|(p, _)| *p == prop::STATUS_FLAGS)
            .and_then(|(_, v)| v.first().and_then(StatusFlags::from_value));
        if let Some(f) = flags {
            self.flags.insert(o.object, f);
        }
        let flags = self.flags.get(&o.object).copied().unwrap_or_default();
        for &(property, point) in &o.points {
            if let Some((_, values)) = n.values.iter().find(|(p, _)| *p == property) {
                let q = if property == prop::PRESENT_VALUE {
                    quality(flags)
                } else {
                    Quality::Good
                };
                self.value(point, values.first(), q, at, out);
            }
        }
    }

    /// Offline bookkeeping after a poll, plus the `online` reading.
    fn after_poll(&mut self, answered: bool, at: i64, out: &mut Vec<Reading>) {
        let id = self.dev.id.clone();
        if answered {
            if !self.online {
                info!(device = %id, after_polls = self.failed_polls, "BACnet device back online");
                // Subscriptions may have lapsed while it was away.
                self.cov.renew_at.clear();
            }
            self.failed_polls = 0;
            self.online = true;
        } else {
            self.failed_polls = self.failed_polls.saturating_add(1);
            if self.online && self.failed_polls >= self.dev.settings.offline_after {
                self.online = false;
                warn!(device = %id, polls = self.failed_polls, "BACnet device offline: no answer");
            }
        }
        self.set_health();
        if let Some(p) = self.dev.online_point {
            out.push(Reading::good(p, if self.online { 1.0 } else { 0.0 }, at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::profile::parse_profile;

    fn profile(n: usize) -> Profile {
        let mut text = "schema: 1\nname: b\ncategory: hvac\npoints:\n".to_string();
        for i in 0..n {
            text.push_str(&format!(
                "  - {{ name: p{i}, unit: degC, kind: gauge, bacnet: {{ object: \"analog-input:{i}\" }} }}\n"
            ));
        }
        text.push_str("  - { name: p0_units, unit: none, kind: gauge, bacnet: { object: \"analog-input:0\", property: units } }\n");
        parse_profile(std::path::Path::new("/t/b.yaml"), &text).unwrap()
    }

    #[test]
    fn objects_group_points_and_batches_fit_the_max_apdu() {
        let p = profile(40);
        let objects = objects_of(&p);
        assert_eq!(objects.len(), 40);
        assert_eq!(
            objects[0].properties(),
            [prop::PRESENT_VALUE, prop::STATUS_FLAGS, 117]
        );
        assert!(p.points.iter().any(|x| x.name == "online"));
        let (rpm, single) = requests_per_poll(&p, 1476, false);
        assert_eq!(single, 81);
        assert!(rpm <= 2, "{rpm}");
        // A 128-byte device takes more, smaller requests; a segmenting one fewer.
        let small = plan_rpm(&objects, 128, false);
        assert!(small.len() > 10, "{}", small.len());
        for b in &small {
            let (req, ans) = b
                .iter()
                .map(|&i| rpm_sizes(&objects[i]))
                .fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1));
            assert!(req <= 120 && ans <= 120, "{req} {ans}");
        }
        assert!(plan_rpm(&objects, 128, true).len() < small.len());
        assert_eq!(
            plan_rpm(&objects, 128, false).concat(),
            (0..40).collect::<Vec<_>>()
        );
    }

    #[test]
    fn status_flags_become_quality() {
        let f = |in_alarm, fault, overridden, out_of_service| StatusFlags {
            in_alarm,
            fault,
            overridden,
            out_of_service,
        };
        assert_eq!(quality(f(false, false, false, false)), Quality::Good);
        assert_eq!(quality(f(true, false, false, false)), Quality::Good);
        assert_eq!(quality(f(false, true, false, false)), Quality::Bad);
        assert_eq!(quality(f(false, false, true, false)), Quality::Uncertain);
        assert_eq!(quality(f(false, false, false, true)), Quality::Uncertain);
    }
}
