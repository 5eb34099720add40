//! A simulated BACnet/IP device: one UDP socket (its own port), one device object and the objects a profile's
//! `bacnet:` bindings name (`generic-bacnet-ahu`: analog, binary and multi-state inputs), with present values
//! the simulation rewrites as the physics moves, like the Modbus register banks next door.
//!
//! What it answers, as a device does (ASHRAE 135):
//! - Who-Is (with or without an instance range) → I-Am: max APDU 1476, segmentation none, vendor id.
//! - ReadProperty and ReadPropertyMultiple (`all`, `required`, `optional` expand to every property the object
//!   has): the device object's object-list (whole, or by array index; index 0 is its length), object-name,
//!   vendor, model, max-apdu-length-accepted, segmentation-supported, protocol version and services; each value
//!   object's name, description, type, present-value, status-flags, event-state, out-of-service, units and
//!   cov-increment (analog), polarity (binary), number-of-states (multi-state). An unknown object answers the
//!   Error `object: unknown-object`, an unknown property `property: unknown-property` (per property inside an
//!   RPM answer); an answer longer than the requester's max APDU is aborted with segmentation-not-supported.
//! - SubscribeCOV: Simple-ACK, a first notification at once, then one whenever present-value moves by the
//!   object's cov-increment (analog) or changes at all (binary, multi-state), or status-flags change; confirmed
//!   or unconfirmed notifications as the subscriber asked; the lifetime is honoured (the subscription lapses
//!   unless renewed); a cancellation removes it.
//! - Any other confirmed service → Reject unrecognized-service; other unconfirmed services are ignored.
//! - A datagram that is not BACnet/IP, or a request that does not decode, is counted and dropped (a malformed
//!   confirmed request is rejected); nothing received stops the server.
//! - An offline device (scripted fault) answers nothing and sends no notification.

use super::encode::{point_value, to_raw};
use super::model::Model;
use crate::catalog::bacnet_binding::{ObjectType, PRESENT_VALUE};
use crate::catalog::{Profile, Unit};
use crate::sources::bacnet::codec::{
    self, Apdu, CovNotification, DecodeError, Frame, PropertyResult, StatusFlags, Value, prop,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// The vendor identifier the simulated device announces (vendor-identifier, I-Am).
pub const VENDOR_ID: u32 = 999;
/// The largest APDU it accepts and sends (BACnet/IP's largest); it cannot segment.
pub const MAX_APDU: u32 = codec::MAX_APDU as u32;
/// Change of an analog present-value that triggers a COV notification (cov-increment), in the point's unit.
pub const COV_INCREMENT: f32 = 0.2;
/// Most COV subscriptions the device keeps (a real controller has a fixed table too).
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// How often subscriptions are checked for changes and expiry (real time).
const COV_CHECK: Duration = Duration::from_millis(100);
/// The instance that means "this device" in a device object identifier (clause 12.11.1).
const WILDCARD_INSTANCE: u32 = 4_194_303;

/// Property identifiers served besides those of `codec::prop`.
mod pid {
    pub const APPLICATION_SOFTWARE_VERSION: u32 = 12;
    pub const APDU_TIMEOUT: u32 = 11;
    pub const COV_INCREMENT: u32 = 22;
    pub const DEVICE_ADDRESS_BINDING: u32 = 30;
    pub const EVENT_STATE: u32 = 36;
    pub const FIRMWARE_REVISION: u32 = 44;
    pub const NUMBER_OF_APDU_RETRIES: u32 = 73;
    pub const NUMBER_OF_STATES: u32 = 74;
    pub const OBJECT_IDENTIFIER: u32 = 75;
    pub const OBJECT_TYPE: u32 = 79;
    pub const OPTIONAL: u32 = 80;
    pub const OUT_OF_SERVICE: u32 = 81;
    pub const POLARITY: u32 = 84;
    pub const PROTOCOL_OBJECT_TYPES_SUPPORTED: u32 = 96;
    pub const PROTOCOL_SERVICES_SUPPORTED: u32 = 97;
    pub const PROTOCOL_VERSION: u32 = 98;
    pub const REQUIRED: u32 = 105;
    pub const SYSTEM_STATUS: u32 = 112;
    pub const VENDOR_IDENTIFIER: u32 = 120;
    pub const PROTOCOL_REVISION: u32 = 139;
    pub const DATABASE_REVISION: u32 = 155;
}

/// Error codes besides those of `codec`.
const ERROR_CLASS_RESOURCES: u32 = 3;
const ERROR_INVALID_ARRAY_INDEX: u32 = 42;
const ERROR_OPTIONAL_FUNCTIONALITY_NOT_SUPPORTED: u32 = 45;
const ERROR_PROPERTY_IS_NOT_AN_ARRAY: u32 = 50;
/// Reject reasons and abort reasons.
const REJECT_INVALID_TAG: u8 = 4;
const REJECT_MISSING_REQUIRED_PARAMETER: u8 = 5;
const ABORT_SEGMENTATION_NOT_SUPPORTED: u8 = 4;

/// One object of the simulated device.
#[derive(Debug, Clone, PartialEq)]
pub struct SimObject {
    pub kind: ObjectType,
    pub instance: u32,
    pub name: String,
    pub description: String,
    /// BACnetEngineeringUnits code (analog objects).
    pub units: Option<u32>,
    pub present_value: Value,
    /// Other properties a profile binds, with the model's value.
    pub extra: Vec<(u32, Value)>,
    pub status: StatusFlags,
}

impl SimObject {
    fn id(&self) -> (u16, u32) {
        (self.kind.code(), self.instance)
    }
}

/// The simulated device: its device object and its objects, as the simulation last wrote them.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub instance: u32,
    pub name: String,
    pub model_name: String,
    pub description: String,
    pub objects: Vec<SimObject>,
    /// Scripted fault: answers nothing.
    pub offline: bool,
}

/// The BACnet units code of a Caretaker unit (95 no-units when BACnet has none).
pub fn units_code(unit: Unit) -> u32 {
    match unit.as_str() {
        "none" | "bool" => 95,
        "percent" => 98,
        word => crate::sources::bacnet::units::UNITS
            .iter()
            .find(|u| u.2 == word)
            .map(|u| u.0)
            .unwrap_or(95),
    }
}

/// A point's value as the object type carries it: REAL for analog objects, active/inactive for binary ones,
/// a state number (1..) for multi-state ones.
fn encode_value(kind: ObjectType, raw: f64) -> Value {
    let raw = if raw.is_finite() { raw } else { 0.0 };
    if kind.is_analog() {
        Value::Real(raw as f32)
    } else if kind.is_binary() {
        Value::Enumerated(u32::from(raw > 0.5))
    } else {
        Value::Unsigned(raw.round().clamp(1.0, u32::MAX as f64) as u64)
    }
}

impl Device {
    /// Lays out a model's current values by a profile's `bacnet:` bindings (objects in profile order; points the
    /// model has no value for read 0, as over Modbus).
    pub fn from_model(
        instance: u32,
        name: &str,
        profile: &Profile,
        model: &Model,
        offline: bool,
    ) -> Device {
        let mut objects: Vec<SimObject> = Vec::new();
        for p in &profile.points {
            let Some(b) = &p.bacnet else { continue };
            let raw = to_raw(p, point_value(model, p).unwrap_or(0.0));
            let value = encode_value(b.object.kind, raw);
            let pos = match objects
                .iter()
                .position(|o| o.kind == b.object.kind && o.instance == b.object.instance)
            {
                Some(i) => i,
                None => {
                    objects.push(SimObject {
                        kind: b.object.kind,
                        instance: b.object.instance,
                        name: p.name.clone(),
                        description: p.description.clone().unwrap_or_default(),
                        units: b.object.kind.is_analog().then(|| units_code(p.wire_unit)),
                        present_value: encode_value(b.object.kind, 0.0),
                        extra: Vec::new(),
                        status: StatusFlags::default(),
                    });
                    objects.len() - 1
                }
            };
            let o = &mut objects[pos];
            if b.property == PRESENT_VALUE {
                o.present_value = value;
                o.name = p.name.clone();
            } else {
                o.extra.retain(|(x, _)| *x != b.property);
                o.extra.push((b.property, value));
            }
        }
        Device {
            instance,
            name: name.to_string(),
            model_name: profile
                .model
                .clone()
                .unwrap_or_else(|| profile.name.clone()),
            description: profile.description.clone().unwrap_or_default(),
            objects,
            offline,
        }
    }

    /// Rewrites the present values (and extra properties) from the model, keeping the object layout.
    pub fn update(&mut self, profile: &Profile, model: &Model, offline: bool) {
        let fresh = Device::from_model(self.instance, &self.name, profile, model, offline);
        *self = fresh;
    }

    fn is_device(&self, object: (u16, u32)) -> bool {
        object.0 == ObjectType::Device.code()
            && (object.1 == self.instance || object.1 == WILDCARD_INSTANCE)
    }

    fn object(&self, id: (u16, u32)) -> Option<&SimObject> {
        self.objects.iter().find(|o| o.id() == id)
    }

    /// Whether the object exists (the device object included).
    pub fn has_object(&self, object: (u16, u32)) -> bool {
        self.is_device(object) || self.object(object).is_some()
    }

    /// The properties an object has, for `all` / `required` / `optional`.
    fn properties(&self, object: (u16, u32)) -> Vec<u32> {
        if self.is_device(object) {
            return vec![
                pid::OBJECT_IDENTIFIER,
                prop::OBJECT_NAME,
                pid::OBJECT_TYPE,
                pid::SYSTEM_STATUS,
                prop::VENDOR_NAME,
                pid::VENDOR_IDENTIFIER,
                prop::MODEL_NAME,
                pid::FIRMWARE_REVISION,
                pid::APPLICATION_SOFTWARE_VERSION,
                prop::DESCRIPTION,
                pid::PROTOCOL_VERSION,
                pid::PROTOCOL_REVISION,
                pid::PROTOCOL_SERVICES_SUPPORTED,
                pid::PROTOCOL_OBJECT_TYPES_SUPPORTED,
                prop::OBJECT_LIST,
                prop::MAX_APDU_LENGTH_ACCEPTED,
                prop::SEGMENTATION_SUPPORTED,
                pid::APDU_TIMEOUT,
                pid::NUMBER_OF_APDU_RETRIES,
                pid::DEVICE_ADDRESS_BINDING,
                pid::DATABASE_REVISION,
            ];
        }
        let Some(o) = self.object(object) else {
            return Vec::new();
        };
        let mut v = vec![
            pid::OBJECT_IDENTIFIER,
            prop::OBJECT_NAME,
            pid::OBJECT_TYPE,
            prop::PRESENT_VALUE,
            prop::DESCRIPTION,
            prop::STATUS_FLAGS,
            pid::EVENT_STATE,
            pid::OUT_OF_SERVICE,
        ];
        if o.kind.is_analog() {
            v.extend([prop::UNITS, pid::COV_INCREMENT]);
        } else if o.kind.is_binary() {
            v.push(pid::POLARITY);
        } else {
            v.push(pid::NUMBER_OF_STATES);
        }
        for (p, _) in &o.extra {
            if !v.contains(p) {
                v.push(*p);
            }
        }
        v
    }

    /// One property's value(s), or the BACnet error `(class, code)`.
    pub fn read(
        &self,
        object: (u16, u32),
        property: u32,
        index: Option<u32>,
    ) -> Result<Vec<Value>, (u32, u32)> {
        let unknown_property = Err((codec::ERROR_CLASS_PROPERTY, codec::ERROR_UNKNOWN_PROPERTY));
        if self.is_device(object) {
            if property == prop::OBJECT_LIST {
                let mut list = vec![Value::ObjectId(ObjectType::Device.code(), self.instance)];
                list.extend(
                    self.objects
                        .iter()
                        .map(|o| Value::ObjectId(o.id().0, o.id().1)),
                );
                return match index {
                    None => Ok(list),
                    Some(0) => Ok(vec![Value::Unsigned(list.len() as u64)]),
                    Some(i) => list
                        .get(i as usize - 1)
                        .cloned()
                        .map(|v| vec![v])
                        .ok_or((codec::ERROR_CLASS_PROPERTY, ERROR_INVALID_ARRAY_INDEX)),
                };
            }
            let v = match property {
                pid::OBJECT_IDENTIFIER => Value::ObjectId(ObjectType::Device.code(), self.instance),
                prop::OBJECT_NAME => Value::CharacterString(self.name.clone()),
                pid::OBJECT_TYPE => Value::Enumerated(ObjectType::Device.code() as u32),
                pid::SYSTEM_STATUS => Value::Enumerated(0), // operational
                prop::VENDOR_NAME => Value::CharacterString("Caretaker simulator".into()),
                pid::VENDOR_IDENTIFIER => Value::Unsigned(VENDOR_ID as u64),
                prop::MODEL_NAME => Value::CharacterString(self.model_name.clone()),
                pid::FIRMWARE_REVISION | pid::APPLICATION_SOFTWARE_VERSION => {
                    Value::CharacterString(env!("CARGO_PKG_VERSION").into())
                }
                prop::DESCRIPTION => Value::CharacterString(self.description.clone()),
                pid::PROTOCOL_VERSION => Value::Unsigned(1),
                pid::PROTOCOL_REVISION => Value::Unsigned(14),
                pid::PROTOCOL_SERVICES_SUPPORTED => {
                    // Services it executes: subscribeCOV (5), readProperty (12), readPropertyMultiple (14),
                    // who-Is (34), of the 41 bits of BACnetServicesSupported (revision 14).
                    let mut bits = vec![false; 41];
                    for b in [5, 12, 14, 34] {
                        bits[b] = true;
                    }
                    Value::BitString(bits)
                }
                pid::PROTOCOL_OBJECT_TYPES_SUPPORTED => {
                    let mut bits = vec![false; 60];
                    bits[ObjectType::Device.code() as usize] = true;
                    for o in &self.objects {
                        if let Some(b) = bits.get_mut(o.kind.code() as usize) {
                            *b = true;
                        }
                    }
                    Value::BitString(bits)
                }
                prop::MAX_APDU_LENGTH_ACCEPTED => Value::Unsigned(MAX_APDU as u64),
                prop::SEGMENTATION_SUPPORTED => Value::Enumerated(codec::NO_SEGMENTATION),
                pid::APDU_TIMEOUT => Value::Unsigned(3000),
                pid::NUMBER_OF_APDU_RETRIES => Value::Unsigned(3),
                pid::DEVICE_ADDRESS_BINDING => return not_array(index, Vec::new()),
                pid::DATABASE_REVISION => Value::Unsigned(1),
                _ => return unknown_property,
            };
            return not_array(index, vec![v]);
        }
        let Some(o) = self.object(object) else {
            return Err((codec::ERROR_CLASS_OBJECT, codec::ERROR_UNKNOWN_OBJECT));
        };
        if let Some((_, v)) = o.extra.iter().find(|(p, _)| *p == property) {
            return not_array(index, vec![v.clone()]);
        }
        let v = match property {
            pid::OBJECT_IDENTIFIER => Value::ObjectId(o.id().0, o.id().1),
            prop::OBJECT_NAME => Value::CharacterString(o.name.clone()),
            pid::OBJECT_TYPE => Value::Enumerated(o.kind.code() as u32),
            prop::PRESENT_VALUE => o.present_value.clone(),
            prop::DESCRIPTION => Value::CharacterString(o.description.clone()),
            prop::STATUS_FLAGS => o.status.to_value(),
            pid::EVENT_STATE => Value::Enumerated(0), // normal
            pid::OUT_OF_SERVICE => Value::Boolean(o.status.out_of_service),
            prop::UNITS if o.kind.is_analog() => Value::Enumerated(o.units.unwrap_or(95)),
            pid::COV_INCREMENT if o.kind.is_analog() => Value::Real(COV_INCREMENT),
            pid::POLARITY if o.kind.is_binary() => Value::Enumerated(0), // normal
            pid::NUMBER_OF_STATES if !o.kind.is_analog() && !o.kind.is_binary() => {
                Value::Unsigned(3)
            }
            _ => return unknown_property,
        };
        not_array(index, vec![v])
    }
}

/// An array index on a property that is not an array is an error.
fn not_array(index: Option<u32>, v: Vec<Value>) -> Result<Vec<Value>, (u32, u32)> {
    match index {
        None => Ok(v),
        Some(_) => Err((codec::ERROR_CLASS_PROPERTY, ERROR_PROPERTY_IS_NOT_AN_ARRAY)),
    }
}

/// What the server has done, for tests and summaries.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Confirmed requests and Who-Is answered (or refused with an Error, Reject or Abort).
    pub requests: AtomicU64,
    /// Datagrams that were not BACnet/IP or did not decode: dropped.
    pub bad_datagrams: AtomicU64,
    pub cov_notifications: AtomicU64,
    /// Subscriptions active after the last check.
    pub subscriptions: AtomicU64,
}

/// One COV subscription.
#[derive(Debug, Clone)]
struct Subscription {
    subscriber: SocketAddr,
    process_id: u32,
    object: (u16, u32),
    confirmed: bool,
    /// `None`: indefinite (lifetime 0 or absent).
    expires: Option<Instant>,
    /// What the last notification carried.
    last: Option<(Value, StatusFlags)>,
}

/// The server's state besides the device: subscriptions and the invoke id of its confirmed notifications.
#[derive(Debug, Default)]
pub struct Server {
    subs: Vec<Subscription>,
    next_invoke: u8,
}

/// A datagram to send.
pub type Reply = (SocketAddr, Vec<u8>);

fn datagram(expecting_reply: bool, apdu: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    codec::begin(&mut out, false, expecting_reply);
    apdu(&mut out);
    codec::finish(&mut out);
    out
}

fn reject(invoke_id: u8, e: &DecodeError) -> Vec<u8> {
    let reason = match e {
        DecodeError::Short(_) => REJECT_MISSING_REQUIRED_PARAMETER,
        DecodeError::Invalid(_) => REJECT_INVALID_TAG,
    };
    datagram(false, |o| codec::put_reject(o, invoke_id, reason))
}

fn abort(invoke_id: u8, reason: u8) -> Vec<u8> {
    // PDU type 7 with the server bit set.
    datagram(false, |o| o.extend_from_slice(&[0x71, invoke_id, reason]))
}

impl Server {
    /// Handles one received datagram; returns what to send. Never panics, whatever the bytes.
    pub fn handle(
        &mut self,
        dev: &Device,
        stats: &ServerStats,
        buf: &[u8],
        from: SocketAddr,
        now: Instant,
    ) -> Vec<Reply> {
        let frame = match codec::decode_frame(buf) {
            Ok(f) => f,
            Err(e) => {
                stats.bad_datagrams.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%from, error = %e, "simulated BACnet device: not a BACnet/IP datagram; dropped");
                return Vec::new();
            }
        };
        let Frame::Apdu { source, apdu, .. } = frame else {
            return Vec::new();
        };
        if dev.offline {
            return Vec::new();
        }
        let peer = source.unwrap_or(from);
        match apdu {
            Apdu::Unconfirmed {
                service: codec::SERVICE_WHO_IS,
                body,
            } => match codec::decode_who_is(body) {
                Ok(range) => {
                    if range.is_some_and(|(lo, hi)| dev.instance < lo || dev.instance > hi) {
                        return Vec::new();
                    }
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    let i_am = codec::IAm {
                        device_instance: dev.instance,
                        max_apdu: MAX_APDU,
                        segmentation: codec::NO_SEGMENTATION,
                        vendor_id: VENDOR_ID,
                    };
                    vec![(
                        peer,
                        datagram(false, |o| {
                            codec::put_unconfirmed_header(o, codec::SERVICE_I_AM);
                            codec::put_i_am(o, &i_am);
                        }),
                    )]
                }
                Err(e) => {
                    stats.bad_datagrams.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%from, error = %e, "simulated BACnet device: bad Who-Is; dropped");
                    Vec::new()
                }
            },
            Apdu::ConfirmedRequest {
                segmented: true,
                invoke_id,
                ..
            } => {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                vec![(peer, abort(invoke_id, ABORT_SEGMENTATION_NOT_SUPPORTED))]
            }
            Apdu::ConfirmedRequest {
                invoke_id,
                service,
                max_apdu,
                body,
                ..
            } => {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                let limit = codec::max_apdu_from_code(max_apdu).min(MAX_APDU) as usize;
                self.confirmed(dev, stats, peer, invoke_id, service, body, limit, now)
            }
            // Acks of our confirmed notifications, other unconfirmed services, answers: nothing to do.
            _ => Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn confirmed(
        &mut self,
        dev: &Device,
        stats: &ServerStats,
        peer: SocketAddr,
        invoke_id: u8,
        service: u8,
        body: &[u8],
        limit: usize,
        now: Instant,
    ) -> Vec<Reply> {
        let error = |class, code| {
            datagram(false, |o| {
                codec::put_error(o, invoke_id, service, class, code)
            })
        };
        // A Complex-ACK, or an abort when it does not fit in one APDU the requester takes.
        let complex = |fill: &dyn Fn(&mut Vec<u8>)| {
            let mut ack = Vec::with_capacity(256);
            codec::put_complex_ack_header(&mut ack, invoke_id, service);
            fill(&mut ack);
            if ack.len() > limit {
                abort(invoke_id, ABORT_SEGMENTATION_NOT_SUPPORTED)
            } else {
                datagram(false, |o| o.extend_from_slice(&ack))
            }
        };
        match service {
            codec::SERVICE_READ_PROPERTY => match codec::decode_read_property(body) {
                Ok(r) => match dev.read(r.object, r.property, r.index) {
                    Ok(values) => vec![(
                        peer,
                        complex(&|o| codec::put_read_property_ack(o, &r, &values)),
                    )],
                    Err((class, code)) => vec![(peer, error(class, code))],
                },
                Err(e) => {
                    stats.bad_datagrams.fetch_add(1, Ordering::Relaxed);
                    vec![(peer, reject(invoke_id, &e))]
                }
            },
            codec::SERVICE_READ_PROPERTY_MULTIPLE => {
                match codec::decode_read_property_multiple(body) {
                    Ok(specs) => {
                        let mut results = Vec::new();
                        for (object, props) in specs {
                            for p in props {
                                let expanded = match p {
                                    prop::ALL | pid::REQUIRED | pid::OPTIONAL
                                        if dev.has_object(object) =>
                                    {
                                        dev.properties(object)
                                    }
                                    _ => vec![p],
                                };
                                for property in expanded {
                                    results.push(PropertyResult {
                                        object,
                                        property,
                                        index: None,
                                        result: dev.read(object, property, None),
                                    });
                                }
                            }
                        }
                        vec![(
                            peer,
                            complex(&|o| codec::put_read_property_multiple_ack(o, &results)),
                        )]
                    }
                    Err(e) => {
                        stats.bad_datagrams.fetch_add(1, Ordering::Relaxed);
                        vec![(peer, reject(invoke_id, &e))]
                    }
                }
            }
            codec::SERVICE_SUBSCRIBE_COV => match codec::decode_subscribe_cov(body) {
                Ok(s) => {
                    if dev.is_device(s.object) {
                        return vec![(
                            peer,
                            error(
                                codec::ERROR_CLASS_SERVICES,
                                ERROR_OPTIONAL_FUNCTIONALITY_NOT_SUPPORTED,
                            ),
                        )];
                    }
                    if dev.object(s.object).is_none() {
                        return vec![(
                            peer,
                            error(codec::ERROR_CLASS_OBJECT, codec::ERROR_UNKNOWN_OBJECT),
                        )];
                    }
                    let same = |x: &Subscription| {
                        x.subscriber == peer && x.process_id == s.process_id && x.object == s.object
                    };
                    let Some(confirmed) = s.confirmed else {
                        // Neither issue-confirmed nor lifetime: a cancellation (clause 13.14.1.1.4).
                        self.subs.retain(|x| !same(x));
                        stats
                            .subscriptions
                            .store(self.subs.len() as u64, Ordering::Relaxed);
                        return vec![(
                            peer,
                            datagram(false, |o| codec::put_simple_ack(o, invoke_id, service)),
                        )];
                    };
                    let expires = s
                        .lifetime
                        .filter(|l| *l > 0)
                        .map(|l| now + Duration::from_secs(l as u64));
                    let full = self.subs.len() >= MAX_SUBSCRIPTIONS;
                    match self.subs.iter_mut().find(|x| same(x)) {
                        Some(x) => {
                            // A renewal: new lifetime, and a fresh notification like a new subscription.
                            x.confirmed = confirmed;
                            x.expires = expires;
                            x.last = None;
                        }
                        None if full => {
                            return vec![(peer, error(ERROR_CLASS_RESOURCES, 0))];
                        }
                        None => self.subs.push(Subscription {
                            subscriber: peer,
                            process_id: s.process_id,
                            object: s.object,
                            confirmed,
                            expires,
                            last: None,
                        }),
                    }
                    stats
                        .subscriptions
                        .store(self.subs.len() as u64, Ordering::Relaxed);
                    let mut out = vec![(
                        peer,
                        datagram(false, |o| codec::put_simple_ack(o, invoke_id, service)),
                    )];
                    // The first notification right after the acknowledgement.
                    out.extend(self.notifications(dev, stats, now));
                    out
                }
                Err(e) => {
                    stats.bad_datagrams.fetch_add(1, Ordering::Relaxed);
                    vec![(peer, reject(invoke_id, &e))]
                }
            },
            _ => vec![(
                peer,
                datagram(false, |o| {
                    codec::put_reject(o, invoke_id, codec::REJECT_UNRECOGNIZED_SERVICE)
                }),
            )],
        }
    }

    /// Drops lapsed subscriptions and notifies the others whose object changed (or that have not been notified
    /// yet). An offline device sends nothing.
    pub fn notifications(&mut self, dev: &Device, stats: &ServerStats, now: Instant) -> Vec<Reply> {
        self.subs.retain(|s| s.expires.is_none_or(|e| e > now));
        stats
            .subscriptions
            .store(self.subs.len() as u64, Ordering::Relaxed);
        if dev.offline {
            return Vec::new();
        }
        let mut out = Vec::new();
        for i in 0..self.subs.len() {
            let s = &self.subs[i];
            let Some(o) = dev.object(s.object) else {
                continue;
            };
            let changed = match &s.last {
                None => true,
                Some((v, flags)) => {
                    *flags != o.status
                        || match (v, &o.present_value) {
                            (Value::Real(a), Value::Real(b)) => (a - b).abs() >= COV_INCREMENT,
                            (a, b) => a != b,
                        }
                }
            };
            if !changed {
                continue;
            }
            let n = CovNotification {
                process_id: s.process_id,
                device: (ObjectType::Device.code(), dev.instance),
                object: s.object,
                time_remaining: s
                    .expires
                    .map(|e| e.saturating_duration_since(now).as_secs() as u32)
                    .unwrap_or(0),
                values: vec![
                    (prop::PRESENT_VALUE, vec![o.present_value.clone()]),
                    (prop::STATUS_FLAGS, vec![o.status.to_value()]),
                ],
            };
            let (to, confirmed) = (s.subscriber, s.confirmed);
            let invoke = self.next_invoke;
            let bytes = if confirmed {
                self.next_invoke = self.next_invoke.wrapping_add(1);
                // Confirmed request, unsegmented, 1476-byte answers accepted; the Simple-ACK is not waited for
                // (a missed one only means the next change is notified again).
                datagram(true, |b| {
                    b.extend_from_slice(&[
                        0x00,
                        codec::max_apdu_code(MAX_APDU),
                        invoke,
                        codec::SERVICE_CONFIRMED_COV_NOTIFICATION,
                    ]);
                    codec::put_cov_notification(b, &n);
                })
            } else {
                datagram(false, |b| {
                    codec::put_unconfirmed_header(b, codec::SERVICE_UNCONFIRMED_COV_NOTIFICATION);
                    codec::put_cov_notification(b, &n);
                })
            };
            self.subs[i].last = Some((o.present_value.clone(), o.status));
            stats.cov_notifications.fetch_add(1, Ordering::Relaxed);
            out.push((to, bytes));
        }
        out
    }
}

/// Binds the device's UDP socket (port 0: a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(addr).await
}

/// Serves the device on a bound socket until `shutdown`.
pub async fn serve(
    socket: UdpSocket,
    device: Arc<RwLock<Device>>,
    stats: Arc<ServerStats>,
    shutdown: CancellationToken,
) {
    let mut server = Server::default();
    // The largest BACnet/IP datagram is 1,497 bytes; a longer one is cut here and then refused by its length.
    let mut buf = vec![0u8; 2048];
    let mut tick = tokio::time::interval(COV_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let replies = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let dev = device.read().unwrap_or_else(|e| e.into_inner());
                    server.handle(&dev, &stats, &buf[..n], from, Instant::now())
                }
                Err(e) => {
                    // ICMP port unreachable from a peer that went away shows up here on Linux.
                    tracing::debug!(error = %e, "simulated BACnet device: receive error");
                    continue;
                }
            },
            _ = tick.tick() => {
                let dev = device.read().unwrap_or_else(|e| e.into_inner());
                server.notifications(&dev, &stats, Instant::now())
            }
        };
        for (to, bytes) in replies {
            if let Err(e) = socket.send_to(&bytes, to).await {
                tracing::debug!(%to, error = %e, "simulated BACnet device: send failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::simulate::model::Env;
    use crate::demo::simulate::site::ModelKind;
    use crate::sources::bacnet::codec::{IAm, StatusFlags};
    use std::net::Ipv4Addr;

    const AI: u16 = 0;
    const BI: u16 = 3;
    const MSI: u16 = 13;
    const DEV: u16 = 8;

    fn profile() -> Profile {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("device_profiles/generic-bacnet-ahu.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        crate::catalog::profile::parse_profile(&path, &text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// An AHU model two hours into a Tuesday morning: running, with a warm filter.
    fn model() -> Model {
        let mut m = Model::new(ModelKind::Ahu, 1.0, 3);
        for i in 0..120 {
            let env = Env {
                hour: 7.0 + i as f64 / 60.0,
                weekday: 2,
                outdoor: 3.0,
                dt: 60.0,
            };
            m.step(&env, &Default::default());
        }
        m
    }

    fn device() -> Device {
        Device::from_model(3001, "ahu-bacnet-1", &profile(), &model(), false)
    }

    fn client() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 47808))
    }

    /// A confirmed request as a client sends it (the client side of the codec).
    fn request(invoke_id: u8, service: u8, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        codec::begin(&mut out, false, true);
        codec::put_confirmed_header(&mut out, invoke_id, service);
        body(&mut out);
        codec::finish(&mut out);
        out
    }

    fn apdu(bytes: &[u8]) -> Apdu<'_> {
        match codec::decode_frame(bytes).unwrap() {
            Frame::Apdu { apdu, .. } => apdu,
            f => panic!("{f:?}"),
        }
    }

    fn one(replies: &[Reply]) -> &[u8] {
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert_eq!(replies[0].0, client());
        &replies[0].1
    }

    #[test]
    fn read_property_multiple_answers_the_device_object_and_the_profile_objects() {
        let dev = device();
        let (mut server, stats) = (Server::default(), ServerStats::default());
        let req = request(7, codec::SERVICE_READ_PROPERTY_MULTIPLE, |o| {
            codec::put_read_property_multiple(
                o,
                &[
                    (
                        (DEV, 3001),
                        vec![
                            prop::OBJECT_LIST,
                            prop::OBJECT_NAME,
                            prop::MAX_APDU_LENGTH_ACCEPTED,
                            prop::SEGMENTATION_SUPPORTED,
                        ],
                    ),
                    (
                        (AI, 25),
                        vec![
                            prop::PRESENT_VALUE,
                            prop::STATUS_FLAGS,
                            prop::UNITS,
                            prop::OBJECT_NAME,
                        ],
                    ),
                    ((BI, 3), vec![prop::PRESENT_VALUE]),
                    ((MSI, 35), vec![prop::PRESENT_VALUE, 9999]),
                    ((AI, 999), vec![prop::PRESENT_VALUE]),
                ],
            )
        });
        let replies = server.handle(&dev, &stats, &req, client(), Instant::now());
        let Apdu::ComplexAck {
            invoke_id: 7,
            service: codec::SERVICE_READ_PROPERTY_MULTIPLE,
            body,
            segmented: false,
            ..
        } = apdu(one(&replies))
        else {
            panic!("{replies:?}")
        };
        let r = codec::decode_read_property_multiple_ack(body).unwrap();
        let get = |o: (u16, u32), p: u32| {
            r.iter()
                .find(|x| x.object == o && x.property == p)
                .unwrap_or_else(|| panic!("{o:?} {p} missing"))
                .result
                .clone()
        };
        // The object list: the device itself, then one object per bound point (19 in this profile).
        let list = get((DEV, 3001), prop::OBJECT_LIST).unwrap();
        assert_eq!(list.len(), 20);
        assert_eq!(list[0], Value::ObjectId(DEV, 3001));
        assert!(list.contains(&Value::ObjectId(MSI, 43)));
        assert_eq!(
            get((DEV, 3001), prop::OBJECT_NAME).unwrap(),
            vec![Value::CharacterString("ahu-bacnet-1".into())]
        );
        assert_eq!(
            get((DEV, 3001), prop::MAX_APDU_LENGTH_ACCEPTED).unwrap(),
            vec![Value::Unsigned(1476)]
        );
        assert_eq!(
            get((DEV, 3001), prop::SEGMENTATION_SUPPORTED).unwrap(),
            vec![Value::Enumerated(codec::NO_SEGMENTATION)]
        );
        // Mixed air in degF (the profile's unit, units code 64) from the model's degC, running at 20 % outdoor air.
        let m = model();
        let mixed_c = m.value("mixed_air_temp").unwrap().0;
        let Value::Real(mixed_f) = get((AI, 25), prop::PRESENT_VALUE).unwrap()[0] else {
            panic!()
        };
        assert!(
            ((mixed_f as f64 - 32.0) * 5.0 / 9.0 - mixed_c).abs() < 0.01,
            "{mixed_f} degF vs {mixed_c} degC"
        );
        assert_eq!(
            get((AI, 25), prop::UNITS).unwrap(),
            vec![Value::Enumerated(64)]
        );
        assert_eq!(
            StatusFlags::from_value(&get((AI, 25), prop::STATUS_FLAGS).unwrap()[0]),
            Some(StatusFlags::default())
        );
        assert_eq!(
            get((AI, 25), prop::OBJECT_NAME).unwrap(),
            vec![Value::CharacterString("mixed_air_temp".into())]
        );
        // Running: unit on (binary active), the filter clean (state 1 of the multi-state filter status).
        assert_eq!(
            get((BI, 3), prop::PRESENT_VALUE).unwrap(),
            vec![Value::Enumerated(1)]
        );
        assert_eq!(
            get((MSI, 35), prop::PRESENT_VALUE).unwrap(),
            vec![Value::Unsigned(1)]
        );
        // Per-property errors: an unknown property, an unknown object; the rest of the answer stands.
        assert_eq!(
            get((MSI, 35), 9999),
            Err((codec::ERROR_CLASS_PROPERTY, codec::ERROR_UNKNOWN_PROPERTY))
        );
        assert_eq!(
            get((AI, 999), prop::PRESENT_VALUE),
            Err((codec::ERROR_CLASS_OBJECT, codec::ERROR_UNKNOWN_OBJECT))
        );
        // `all` expands to every property of the object.
        let req = request(8, codec::SERVICE_READ_PROPERTY_MULTIPLE, |o| {
            codec::put_read_property_multiple(o, &[((AI, 6), vec![prop::ALL])])
        });
        let replies = server.handle(&dev, &stats, &req, client(), Instant::now());
        let Apdu::ComplexAck { body, .. } = apdu(one(&replies)) else {
            panic!()
        };
        let r = codec::decode_read_property_multiple_ack(body).unwrap();
        assert!(r.len() >= 10 && r.iter().all(|x| x.result.is_ok()), "{r:?}");
        assert_eq!(stats.bad_datagrams.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn read_property_errors_rejects_and_aborts_are_bacnet_answers() {
        let dev = device();
        let (mut server, stats) = (Server::default(), ServerStats::default());
        let mut ask = |invoke: u8, service: u8, body: &dyn Fn(&mut Vec<u8>)| {
            let req = request(invoke, service, body);
            let replies = server.handle(&dev, &stats, &req, client(), Instant::now());
            one(&replies).to_vec()
        };
        let rp = |o: (u16, u32), p: u32, i: Option<u32>| {
            move |b: &mut Vec<u8>| codec::put_read_property(b, o, p, i)
        };
        // Unknown object, unknown property: the Error PDU with class and code.
        let a = ask(
            1,
            codec::SERVICE_READ_PROPERTY,
            &rp((AI, 4000), prop::PRESENT_VALUE, None),
        );
        assert_eq!(
            apdu(&a),
            Apdu::Error {
                invoke_id: 1,
                service: codec::SERVICE_READ_PROPERTY,
                class: codec::ERROR_CLASS_OBJECT,
                code: codec::ERROR_UNKNOWN_OBJECT
            }
        );
        let a = ask(2, codec::SERVICE_READ_PROPERTY, &rp((AI, 25), 4242, None));
        assert!(matches!(
            apdu(&a),
            Apdu::Error {
                class: codec::ERROR_CLASS_PROPERTY,
                code: codec::ERROR_UNKNOWN_PROPERTY,
                ..
            }
        ));
        // The object list by index: 0 is its length, 1 the device itself; the wildcard instance is this device.
        let a = ask(
            3,
            codec::SERVICE_READ_PROPERTY,
            &rp((DEV, WILDCARD_INSTANCE), prop::OBJECT_LIST, Some(0)),
        );
        let Apdu::ComplexAck { body, .. } = apdu(&a) else {
            panic!()
        };
        assert_eq!(
            codec::decode_read_property_ack(body).unwrap().1,
            vec![Value::Unsigned(20)]
        );
        let a = ask(
            4,
            codec::SERVICE_READ_PROPERTY,
            &rp((DEV, 3001), prop::OBJECT_LIST, Some(1)),
        );
        let Apdu::ComplexAck { body, .. } = apdu(&a) else {
            panic!()
        };
        assert_eq!(
            codec::decode_read_property_ack(body).unwrap().1,
            vec![Value::ObjectId(DEV, 3001)]
        );
        let a = ask(
            5,
            codec::SERVICE_READ_PROPERTY,
            &rp((DEV, 3001), prop::OBJECT_LIST, Some(21)),
        );
        assert!(matches!(
            apdu(&a),
            Apdu::Error {
                code: ERROR_INVALID_ARRAY_INDEX,
                ..
            }
        ));
        // A service it does not have (WriteProperty, 15): Reject unrecognized-service.
        let a = ask(6, 15, &|b: &mut Vec<u8>| {
            codec::put_read_property(b, (AI, 25), 85, None)
        });
        assert_eq!(
            apdu(&a),
            Apdu::Reject {
                invoke_id: 6,
                reason: codec::REJECT_UNRECOGNIZED_SERVICE
            }
        );
        // A request body that does not decode: rejected, and counted.
        let a = ask(7, codec::SERVICE_READ_PROPERTY, &|b: &mut Vec<u8>| {
            b.extend_from_slice(&[0x0C, 0x00])
        });
        assert!(matches!(apdu(&a), Apdu::Reject { invoke_id: 7, .. }));
        assert_eq!(stats.bad_datagrams.load(Ordering::Relaxed), 1);
        // An answer longer than the requester takes (50 bytes): aborted, the device cannot segment.
        let mut req = Vec::new();
        codec::begin(&mut req, false, true);
        codec::put_confirmed_header_max(&mut req, 9, codec::SERVICE_READ_PROPERTY, 50);
        codec::put_read_property(&mut req, (DEV, 3001), prop::OBJECT_LIST, None);
        codec::finish(&mut req);
        let replies = server.handle(&dev, &stats, &req, client(), Instant::now());
        assert_eq!(
            apdu(one(&replies)),
            Apdu::Abort {
                server: true,
                invoke_id: 9,
                reason: ABORT_SEGMENTATION_NOT_SUPPORTED
            }
        );
    }

    #[test]
    fn junk_datagrams_are_counted_and_dropped_and_never_stop_the_server() {
        let dev = device();
        let (mut server, stats) = (Server::default(), ServerStats::default());
        let now = Instant::now();
        let valid = request(1, codec::SERVICE_READ_PROPERTY_MULTIPLE, |o| {
            codec::put_read_property_multiple(o, &[((AI, 25), vec![prop::PRESENT_VALUE])])
        });
        // Not BACnet/IP at all.
        for junk in [
            &b""[..],
            b"\x00",
            b"hello world",
            b"\x81",
            b"\x81\x0a\x00\x04",
        ] {
            assert!(server.handle(&dev, &stats, junk, client(), now).is_empty());
        }
        assert_eq!(stats.bad_datagrams.load(Ordering::Relaxed), 5);
        // Every truncation of a valid request, with its BVLC length made to match: an answer (Reject/ACK) or
        // nothing, never a panic.
        for n in 0..valid.len() {
            let mut cut = valid[..n].to_vec();
            if cut.len() >= 4 {
                let len = cut.len() as u16;
                cut[2..4].copy_from_slice(&len.to_be_bytes());
            }
            for (_, reply) in server.handle(&dev, &stats, &cut, client(), now) {
                assert!(codec::decode_frame(&reply).is_ok());
            }
        }
        // Random bytes, some behind a plausible BVLC + NPDU header.
        let mut rng = fastrand::Rng::with_seed(16);
        for i in 0..20_000 {
            let n = rng.usize(0..80);
            let mut b: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            if i % 2 == 0 && b.len() >= 6 {
                b[0] = 0x81;
                b[1] = 0x0A;
                let len = b.len() as u16;
                b[2..4].copy_from_slice(&len.to_be_bytes());
                b[4] = 1;
                b[5] &= 0x04;
            }
            let _ = server.handle(&dev, &stats, &b, client(), now);
        }
        assert!(stats.bad_datagrams.load(Ordering::Relaxed) > 1000);
        // Still answering.
        let replies = server.handle(&dev, &stats, &valid, client(), now);
        assert!(matches!(
            apdu(one(&replies)),
            Apdu::ComplexAck { invoke_id: 1, .. }
        ));
    }

    #[test]
    fn who_is_gets_i_am_and_an_offline_device_answers_nothing() {
        let mut dev = device();
        let (mut server, stats) = (Server::default(), ServerStats::default());
        let who_is = |range| {
            let mut out = Vec::new();
            codec::begin(&mut out, true, false);
            codec::put_unconfirmed_header(&mut out, codec::SERVICE_WHO_IS);
            codec::put_who_is(&mut out, range);
            codec::finish(&mut out);
            out
        };
        let now = Instant::now();
        for range in [None, Some((3000, 3001))] {
            let replies = server.handle(&dev, &stats, &who_is(range), client(), now);
            let Apdu::Unconfirmed {
                service: codec::SERVICE_I_AM,
                body,
            } = apdu(one(&replies))
            else {
                panic!()
            };
            assert_eq!(
                codec::decode_i_am(body).unwrap(),
                IAm {
                    device_instance: 3001,
                    max_apdu: 1476,
                    segmentation: codec::NO_SEGMENTATION,
                    vendor_id: VENDOR_ID
                }
            );
        }
        assert!(
            server
                .handle(&dev, &stats, &who_is(Some((1, 3000))), client(), now)
                .is_empty()
        );
        dev.offline = true;
        assert!(
            server
                .handle(&dev, &stats, &who_is(None), client(), now)
                .is_empty()
        );
        let rp = request(1, codec::SERVICE_READ_PROPERTY, |o| {
            codec::put_read_property(o, (AI, 25), prop::PRESENT_VALUE, None)
        });
        assert!(server.handle(&dev, &stats, &rp, client(), now).is_empty());
    }

    #[test]
    fn cov_subscriptions_notify_at_once_on_change_and_lapse_after_their_lifetime() {
        let mut dev = device();
        let (mut server, stats) = (Server::default(), ServerStats::default());
        let t0 = Instant::now();
        let ai = crate::catalog::bacnet_binding::ObjectId {
            kind: ObjectType::AnalogInput,
            instance: 25,
        };
        let subscribe = |invoke, confirmed, lifetime| {
            request(invoke, codec::SERVICE_SUBSCRIBE_COV, |o| {
                codec::put_subscribe_cov(o, 77, ai, confirmed, lifetime)
            })
        };
        let replies = server.handle(&dev, &stats, &subscribe(1, false, 60), client(), t0);
        assert_eq!(replies.len(), 2, "{replies:?}");
        assert_eq!(
            apdu(&replies[0].1),
            Apdu::SimpleAck {
                invoke_id: 1,
                service: codec::SERVICE_SUBSCRIBE_COV
            }
        );
        let Apdu::Unconfirmed {
            service: codec::SERVICE_UNCONFIRMED_COV_NOTIFICATION,
            body,
        } = apdu(&replies[1].1)
        else {
            panic!("{:?}", apdu(&replies[1].1))
        };
        let n = codec::decode_cov_notification(body).unwrap();
        assert_eq!(
            (n.process_id, n.device, n.object),
            (77, (DEV, 3001), (AI, 25))
        );
        assert_eq!(n.time_remaining, 60);
        assert_eq!(n.values[0].0, prop::PRESENT_VALUE);
        // Nothing changed: nothing sent. A change below the increment: nothing; above it: one notification.
        assert!(server.notifications(&dev, &stats, t0).is_empty());
        let Value::Real(v) = dev.objects[0].present_value else {
            panic!()
        };
        dev.objects[0].present_value = Value::Real(v + COV_INCREMENT / 2.0);
        assert!(server.notifications(&dev, &stats, t0).is_empty());
        dev.objects[0].present_value = Value::Real(v + COV_INCREMENT * 2.0);
        let sent = server.notifications(&dev, &stats, t0 + Duration::from_secs(10));
        assert_eq!(sent.len(), 1);
        let Apdu::Unconfirmed { body, .. } = apdu(&sent[0].1) else {
            panic!()
        };
        let n = codec::decode_cov_notification(body).unwrap();
        assert_eq!(n.values[0].1, vec![Value::Real(v + COV_INCREMENT * 2.0)]);
        assert_eq!(n.time_remaining, 50);
        // Status flags changing is a change too.
        dev.objects[0].status.fault = true;
        assert_eq!(server.notifications(&dev, &stats, t0).len(), 1);
        // The lifetime passes without a renewal: the subscription lapses.
        dev.objects[0].present_value = Value::Real(v + 100.0);
        assert!(
            server
                .notifications(&dev, &stats, t0 + Duration::from_secs(61))
                .is_empty()
        );
        assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 0);

        // Confirmed notifications when the subscriber asks for them; a cancellation ends the subscription.
        let replies = server.handle(&dev, &stats, &subscribe(2, true, 300), client(), t0);
        assert!(matches!(
            apdu(&replies[1].1),
            Apdu::ConfirmedRequest {
                service: codec::SERVICE_CONFIRMED_COV_NOTIFICATION,
                ..
            }
        ));
        let mut cancel = Vec::new();
        codec::put_unsigned(&mut cancel, 0, true, 77);
        codec::put_object(&mut cancel, 1, true, ai);
        let req = request(3, codec::SERVICE_SUBSCRIBE_COV, |o| {
            o.extend_from_slice(&cancel)
        });
        let replies = server.handle(&dev, &stats, &req, client(), t0);
        assert!(matches!(
            apdu(one(&replies)),
            Apdu::SimpleAck { invoke_id: 3, .. }
        ));
        assert_eq!(stats.subscriptions.load(Ordering::Relaxed), 0);
        // Unknown objects and the device object cannot be subscribed.
        let req = request(4, codec::SERVICE_SUBSCRIBE_COV, |o| {
            codec::put_subscribe_cov(
                o,
                1,
                crate::catalog::bacnet_binding::ObjectId {
                    kind: ObjectType::AnalogValue,
                    instance: 1,
                },
                false,
                60,
            )
        });
        let replies = server.handle(&dev, &stats, &req, client(), t0);
        assert!(matches!(
            apdu(one(&replies)),
            Apdu::Error {
                code: codec::ERROR_UNKNOWN_OBJECT,
                ..
            }
        ));
    }

    /// Over real UDP with the daemon's own client: discovery finds the device and lists its objects with
    /// names and units; a ReadPropertyMultiple through the endpoint decodes.
    #[tokio::test]
    async fn the_daemons_client_discovers_and_reads_the_simulated_device_over_udp() {
        use crate::sources::bacnet::{client, discover};
        let dev = Arc::new(RwLock::new(device()));
        let socket = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = CancellationToken::new();
        let stats = Arc::new(ServerStats::default());
        let task = tokio::spawn(serve(socket, dev.clone(), stats.clone(), stop.clone()));

        let ep_socket = client::Endpoint::bind("127.0.0.1:0").await.unwrap();
        let (ep, rx) =
            client::Endpoint::start(ep_socket, Duration::from_millis(500), 2, stop.clone());
        let found = discover::discover(&ep, addr, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let d = &found[0];
        assert_eq!(
            (d.device_instance, d.max_apdu, d.segmentation),
            (3001, 1476, 3)
        );
        assert_eq!(d.name, "ahu-bacnet-1");
        assert_eq!(d.objects.len(), 19, "{:?}", d.notes);
        let mixed = d
            .objects
            .iter()
            .find(|o| o.object == "analog-input:25")
            .unwrap();
        assert_eq!(mixed.name, "mixed_air_temp");
        assert_eq!(mixed.units.as_ref().map(|u| u.1), Some("degF"));
        assert!(
            mixed.present_value.is_some_and(|v| v > 32.0 && v < 90.0),
            "{mixed:?}"
        );

        let mut body = Vec::new();
        codec::put_read_property_multiple(
            &mut body,
            &[((AI, 6), vec![prop::PRESENT_VALUE, prop::STATUS_FLAGS])],
        );
        let ack = ep
            .request(addr, codec::SERVICE_READ_PROPERTY_MULTIPLE, &body)
            .await
            .unwrap();
        let client::Ack::Complex(data) = ack else {
            panic!("{ack:?}")
        };
        let r = codec::decode_read_property_multiple_ack(&data).unwrap();
        assert!(
            matches!(r[0].result.as_deref(), Ok([Value::Real(h)]) if *h > 1.5),
            "{r:?}"
        );
        stop.cancel();
        let _ = task.await;
        let _ = rx.await;
    }
}
