//! BACnet/IP on the wire (ASHRAE 135): the BVLC header (Annex J), the NPDU (clause 6), the APDU (clause 20),
//! application and context tags, and the services Caretaker speaks: ReadProperty, ReadPropertyMultiple,
//! SubscribeCOV, (Un)confirmedCOVNotification, Who-Is and I-Am. Both directions of each, so the demo's simulated
//! AHU, the benchmarks and the unit tests can answer as a device does.
//!
//! Decoding never panics and never allocates more than the datagram holds: every length is checked against what
//! is left, and a datagram is at most 1,497 bytes (BVLC + NPDU + the largest APDU).

use crate::catalog::bacnet_binding::{ObjectId, ObjectType};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// BVLC type of BACnet/IP.
pub const BVLC_TYPE: u8 = 0x81;
pub const BVLC_RESULT: u8 = 0x00;
pub const BVLC_FORWARDED_NPDU: u8 = 0x04;
pub const BVLC_REGISTER_FOREIGN_DEVICE: u8 = 0x05;
pub const BVLC_DISTRIBUTE_BROADCAST: u8 = 0x09;
pub const BVLC_ORIGINAL_UNICAST: u8 = 0x0A;
pub const BVLC_ORIGINAL_BROADCAST: u8 = 0x0B;

/// Confirmed services.
pub const SERVICE_CONFIRMED_COV_NOTIFICATION: u8 = 1;
pub const SERVICE_SUBSCRIBE_COV: u8 = 5;
pub const SERVICE_READ_PROPERTY: u8 = 12;
pub const SERVICE_READ_PROPERTY_MULTIPLE: u8 = 14;
/// Unconfirmed services.
pub const SERVICE_I_AM: u8 = 0;
pub const SERVICE_UNCONFIRMED_COV_NOTIFICATION: u8 = 2;
pub const SERVICE_WHO_IS: u8 = 8;

/// Properties Caretaker reads besides the points' own.
pub mod prop {
    pub const ALL: u32 = 8;
    pub const DESCRIPTION: u32 = 28;
    pub const MAX_APDU_LENGTH_ACCEPTED: u32 = 62;
    pub const MODEL_NAME: u32 = 70;
    pub const OBJECT_LIST: u32 = 76;
    pub const OBJECT_NAME: u32 = 77;
    pub const PRESENT_VALUE: u32 = 85;
    pub const SEGMENTATION_SUPPORTED: u32 = 107;
    pub const STATUS_FLAGS: u32 = 111;
    pub const UNITS: u32 = 117;
    pub const VENDOR_NAME: u32 = 121;
}

/// Segmentation-supported values (BACnetSegmentation).
pub const SEGMENTED_BOTH: u32 = 0;
pub const SEGMENTED_TRANSMIT: u32 = 1;
pub const NO_SEGMENTATION: u32 = 3;

/// Reject reason "unrecognized-service": what a device without ReadPropertyMultiple answers.
pub const REJECT_UNRECOGNIZED_SERVICE: u8 = 9;

/// Error class `object`, code `unknown-object`; class `property`, code `unknown-property`.
pub const ERROR_CLASS_OBJECT: u32 = 1;
pub const ERROR_CLASS_PROPERTY: u32 = 2;
pub const ERROR_CLASS_SERVICES: u32 = 5;
pub const ERROR_UNKNOWN_OBJECT: u32 = 31;
pub const ERROR_UNKNOWN_PROPERTY: u32 = 32;

/// The largest APDU of BACnet/IP (and what Caretaker accepts).
pub const MAX_APDU: usize = 1476;
/// max-APDU-length-accepted codes (clause 20.1.2.5).
const MAX_APDU_SIZES: [u16; 6] = [50, 128, 206, 480, 1024, 1476];

/// The max-APDU code for a length (the largest size not above it).
pub fn max_apdu_code(len: u32) -> u8 {
    MAX_APDU_SIZES
        .iter()
        .rposition(|&s| s as u32 <= len)
        .unwrap_or(0) as u8
}

pub fn max_apdu_from_code(code: u8) -> u32 {
    MAX_APDU_SIZES.get(code as usize).copied().unwrap_or(50) as u32
}

/// Why bytes are not BACnet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated {0}")]
    Short(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
}

type R<T> = Result<T, DecodeError>;

// ---------------------------------------------------------------------------------------------------------
// Tags

/// What follows a tag byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagLen {
    /// Primitive data of this many bytes (for an application boolean: the value itself).
    Len(u32),
    Open,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub number: u8,
    pub context: bool,
    pub len: TagLen,
}

/// Application tag numbers.
pub mod app {
    pub const NULL: u8 = 0;
    pub const BOOLEAN: u8 = 1;
    pub const UNSIGNED: u8 = 2;
    pub const SIGNED: u8 = 3;
    pub const REAL: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const OCTET_STRING: u8 = 6;
    pub const CHARACTER_STRING: u8 = 7;
    pub const BIT_STRING: u8 = 8;
    pub const ENUMERATED: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const OBJECT_ID: u8 = 12;
}

/// A cursor over received bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos.min(self.buf.len())..]
    }
    pub fn u8(&mut self, what: &'static str) -> R<u8> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Short(what))?;
        self.pos += 1;
        Ok(b)
    }
    pub fn u16(&mut self, what: &'static str) -> R<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn take(&mut self, n: usize, what: &'static str) -> R<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Short(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Short(what))?;
        self.pos = end;
        Ok(s)
    }

    /// Reads one tag header.
    pub fn tag(&mut self) -> R<Tag> {
        let b = self.u8("tag")?;
        let mut number = b >> 4;
        let context = b & 0x08 != 0;
        let lvt = b & 0x07;
        if number == 15 {
            number = self.u8("extended tag number")?;
        }
        let len = match lvt {
            6 if context => TagLen::Open,
            7 if context => TagLen::Close,
            5 => {
                let n = self.u8("tag length")?;
                match n {
                    254 => TagLen::Len(self.u16("tag length")? as u32),
                    255 => {
                        let b = self.take(4, "tag length")?;
                        TagLen::Len(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    }
                    n => TagLen::Len(n as u32),
                }
            }
            n => TagLen::Len(n as u32),
        };
        Ok(Tag {
            number,
            context,
            len,
        })
    }

    pub fn peek_tag(&self) -> Option<Tag> {
        self.clone().tag().ok()
    }

    /// Whether the next tag is context tag `n` (primitive, opening or closing as given).
    fn next_is(&self, n: u8, len: Option<TagLen>) -> bool {
        match self.peek_tag() {
            Some(t) if t.context && t.number == n => match len {
                None => matches!(t.len, TagLen::Len(_)),
                Some(l) => t.len == l,
            },
            _ => false,
        }
    }

    fn expect_open(&mut self, n: u8) -> R<()> {
        match self.tag()? {
            Tag {
                number,
                context: true,
                len: TagLen::Open,
            } if number == n => Ok(()),
            _ => Err(DecodeError::Invalid("opening tag")),
        }
    }
    fn expect_close(&mut self, n: u8) -> R<()> {
        match self.tag()? {
            Tag {
                number,
                context: true,
                len: TagLen::Close,
            } if number == n => Ok(()),
            _ => Err(DecodeError::Invalid("closing tag")),
        }
    }

    /// The data bytes of a primitive context tag `n`.
    fn context_data(&mut self, n: u8, what: &'static str) -> R<&'a [u8]> {
        match self.tag()? {
            Tag {
                number,
                context: true,
                len: TagLen::Len(l),
            } if number == n => self.take(l as usize, what),
            _ => Err(DecodeError::Invalid(what)),
        }
    }
    fn context_unsigned(&mut self, n: u8, what: &'static str) -> R<u64> {
        unsigned(self.context_data(n, what)?, what)
    }
    fn context_object(&mut self, n: u8, what: &'static str) -> R<(u16, u32)> {
        object_id(self.context_data(n, what)?)
    }

    /// Skips one element: a primitive tag and its data, or an opening tag up to its matching closing tag.
    fn skip(&mut self) -> R<()> {
        let t = self.tag()?;
        match t.len {
            TagLen::Len(l) if t.number != app::BOOLEAN || t.context => {
                self.take(l as usize, "skipped data")?;
                Ok(())
            }
            TagLen::Len(_) => Ok(()),
            TagLen::Open => {
                let mut depth = 1u32;
                while depth > 0 {
                    let t = self.tag()?;
                    match t.len {
                        TagLen::Open => depth += 1,
                        TagLen::Close => depth -= 1,
                        TagLen::Len(l) if t.number != app::BOOLEAN || t.context => {
                            self.take(l as usize, "skipped data")?;
                        }
                        TagLen::Len(_) => {}
                    }
                }
                Ok(())
            }
            TagLen::Close => Err(DecodeError::Invalid("unexpected closing tag")),
        }
    }
}

fn unsigned(b: &[u8], what: &'static str) -> R<u64> {
    if b.is_empty() || b.len() > 8 {
        return Err(DecodeError::Invalid(what));
    }
    Ok(b.iter().fold(0u64, |a, &x| (a << 8) | x as u64))
}

fn signed(b: &[u8]) -> R<i64> {
    if b.is_empty() || b.len() > 8 {
        return Err(DecodeError::Invalid("signed"));
    }
    let neg = b[0] & 0x80 != 0;
    let mut v: i64 = if neg { -1 } else { 0 };
    for &x in b {
        v = (v << 8) | x as i64;
    }
    Ok(v)
}

fn object_id(b: &[u8]) -> R<(u16, u32)> {
    if b.len() != 4 {
        return Err(DecodeError::Invalid("object identifier"));
    }
    let v = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok(((v >> 22) as u16, v & 0x3F_FFFF))
}

/// Writes a tag header.
pub fn put_tag(out: &mut Vec<u8>, number: u8, context: bool, len: u32) {
    let class = if context { 0x08 } else { 0 };
    let (first, ext) = if number <= 14 {
        (number << 4, None)
    } else {
        (0xF0, Some(number))
    };
    if len <= 4 {
        out.push(first | class | len as u8);
        out.extend(ext);
    } else {
        out.push(first | class | 5);
        out.extend(ext);
        if len <= 253 {
            out.push(len as u8);
        } else if len <= 65535 {
            out.push(254);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(255);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

pub fn put_open(out: &mut Vec<u8>, n: u8) {
    if n <= 14 {
        out.push((n << 4) | 0x0E);
    } else {
        out.extend_from_slice(&[0xFE, n]);
    }
}
pub fn put_close(out: &mut Vec<u8>, n: u8) {
    if n <= 14 {
        out.push((n << 4) | 0x0F);
    } else {
        out.extend_from_slice(&[0xFF, n]);
    }
}

fn unsigned_bytes(v: u64) -> ([u8; 8], usize) {
    let b = v.to_be_bytes();
    let skip = (b.iter().take_while(|&&x| x == 0).count()).min(7);
    (b, skip)
}

pub fn put_unsigned(out: &mut Vec<u8>, number: u8, context: bool, v: u64) {
    let (b, skip) = unsigned_bytes(v);
    put_tag(out, number, context, (8 - skip) as u32);
    out.extend_from_slice(&b[skip..]);
}

fn put_signed(out: &mut Vec<u8>, number: u8, context: bool, v: i64) {
    let b = v.to_be_bytes();
    let mut skip = 0;
    while skip < 7
        && ((b[skip] == 0 && b[skip + 1] & 0x80 == 0)
            || (b[skip] == 0xFF && b[skip + 1] & 0x80 != 0))
    {
        skip += 1;
    }
    put_tag(out, number, context, (8 - skip) as u32);
    out.extend_from_slice(&b[skip..]);
}

pub fn object_word(o: ObjectId) -> u32 {
    ((o.kind.code() as u32) << 22) | (o.instance & 0x3F_FFFF)
}

pub fn put_object(out: &mut Vec<u8>, number: u8, context: bool, o: ObjectId) {
    put_tag(out, number, context, 4);
    out.extend_from_slice(&object_word(o).to_be_bytes());
}

fn put_object_raw(out: &mut Vec<u8>, number: u8, context: bool, (t, i): (u16, u32)) {
    put_tag(out, number, context, 4);
    out.extend_from_slice(&(((t as u32) << 22) | (i & 0x3F_FFFF)).to_be_bytes());
}

// ---------------------------------------------------------------------------------------------------------
// Values

/// One application-tagged value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    Unsigned(u64),
    Signed(i64),
    Real(f32),
    Double(f64),
    OctetString(Vec<u8>),
    CharacterString(String),
    /// Bits in order (bit 0 first).
    BitString(Vec<bool>),
    Enumerated(u32),
    Date([u8; 4]),
    Time([u8; 4]),
    /// Object type code and instance (types Caretaker has no name for included).
    ObjectId(u16, u32),
}

impl Value {
    /// The number a point stores: reals, integers, enumerations (binary `active` = 1), booleans.
    pub fn as_f64(&self) -> Option<f64> {
        Some(match self {
            Value::Boolean(b) => *b as u8 as f64,
            Value::Unsigned(u) => *u as f64,
            Value::Signed(i) => *i as f64,
            Value::Real(r) => *r as f64,
            Value::Double(d) => *d,
            Value::Enumerated(e) => *e as f64,
            _ => return None,
        })
    }
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Boolean(_) => "boolean",
            Value::Unsigned(_) => "unsigned",
            Value::Signed(_) => "signed",
            Value::Real(_) => "real",
            Value::Double(_) => "double",
            Value::OctetString(_) => "octet string",
            Value::CharacterString(_) => "character string",
            Value::BitString(_) => "bit string",
            Value::Enumerated(_) => "enumerated",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::ObjectId(..) => "object identifier",
        }
    }

    /// Encodes as an application-tagged value.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0x00),
            Value::Boolean(b) => out.push(0x10 | *b as u8),
            Value::Unsigned(u) => put_unsigned(out, app::UNSIGNED, false, *u),
            Value::Signed(i) => put_signed(out, app::SIGNED, false, *i),
            Value::Real(r) => {
                out.push(0x44);
                out.extend_from_slice(&r.to_be_bytes());
            }
            Value::Double(d) => {
                put_tag(out, app::DOUBLE, false, 8);
                out.extend_from_slice(&d.to_be_bytes());
            }
            Value::OctetString(b) => {
                put_tag(out, app::OCTET_STRING, false, b.len() as u32);
                out.extend_from_slice(b);
            }
            Value::CharacterString(s) => {
                put_tag(out, app::CHARACTER_STRING, false, s.len() as u32 + 1);
                out.push(0); // UTF-8
                out.extend_from_slice(s.as_bytes());
            }
            Value::BitString(bits) => {
                let n = bits.len().div_ceil(8);
                put_tag(out, app::BIT_STRING, false, n as u32 + 1);
                out.push((n * 8 - bits.len()) as u8);
                for chunk in bits.chunks(8) {
                    let mut b = 0u8;
                    for (i, &x) in chunk.iter().enumerate() {
                        if x {
                            b |= 0x80 >> i;
                        }
                    }
                    out.push(b);
                }
            }
            Value::Enumerated(e) => put_unsigned(out, app::ENUMERATED, false, *e as u64),
            Value::Date(d) => {
                out.push(0xA4);
                out.extend_from_slice(d);
            }
            Value::Time(t) => {
                out.push(0xB4);
                out.extend_from_slice(t);
            }
            Value::ObjectId(t, i) => put_object_raw(out, app::OBJECT_ID, false, (*t, *i)),
        }
    }
}

/// Reads one application-tagged value.
pub fn read_value(r: &mut Reader<'_>) -> R<Value> {
    let t = r.tag()?;
    if t.context {
        return Err(DecodeError::Invalid(
            "context tag where a value was expected",
        ));
    }
    let TagLen::Len(len) = t.len else {
        return Err(DecodeError::Invalid("value tag"));
    };
    if t.number == app::BOOLEAN {
        return Ok(Value::Boolean(len != 0));
    }
    let d = r.take(len as usize, "value")?;
    Ok(match t.number {
        app::NULL => Value::Null,
        app::UNSIGNED => Value::Unsigned(unsigned(d, "unsigned")?),
        app::SIGNED => Value::Signed(signed(d)?),
        app::REAL => Value::Real(f32::from_be_bytes(
            d.try_into().map_err(|_| DecodeError::Invalid("real"))?,
        )),
        app::DOUBLE => Value::Double(f64::from_be_bytes(
            d.try_into().map_err(|_| DecodeError::Invalid("double"))?,
        )),
        app::OCTET_STRING => Value::OctetString(d.to_vec()),
        app::CHARACTER_STRING => {
            let (&charset, text) = d
                .split_first()
                .ok_or(DecodeError::Invalid("character string"))?;
            Value::CharacterString(match charset {
                0 => String::from_utf8_lossy(text).into_owned(),
                // ISO 8859-1: every byte is the code point.
                5 => text.iter().map(|&b| b as char).collect(),
                // UCS-2 big-endian.
                4 => char::decode_utf16(
                    text.chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]])),
                )
                .map(|c| c.unwrap_or('\u{FFFD}'))
                .collect(),
                _ => String::from_utf8_lossy(text).into_owned(),
            })
        }
        app::BIT_STRING => {
            let (&unused, bytes) = d.split_first().ok_or(DecodeError::Invalid("bit string"))?;
            let total = (bytes.len() * 8).saturating_sub(unused as usize & 7);
            Value::BitString(
                (0..total)
                    .map(|i| bytes[i / 8] & (0x80 >> (i % 8)) != 0)
                    .collect(),
            )
        }
        app::ENUMERATED => Value::Enumerated(unsigned(d, "enumerated")? as u32),
        app::DATE => Value::Date(d.try_into().map_err(|_| DecodeError::Invalid("date"))?),
        app::TIME => Value::Time(d.try_into().map_err(|_| DecodeError::Invalid("time"))?),
        app::OBJECT_ID => {
            let (t, i) = object_id(d)?;
            Value::ObjectId(t, i)
        }
        _ => return Err(DecodeError::Invalid("application tag")),
    })
}

/// Reads application values up to the closing tag `n` (consumed). Constructed values (a priority array's
/// entries, a date range) are skipped: no point reads them.
fn read_values_until_close(r: &mut Reader<'_>, n: u8) -> R<Vec<Value>> {
    let mut values = Vec::new();
    loop {
        let t = r.peek_tag().ok_or(DecodeError::Short("value list"))?;
        if t.context {
            if t.number == n && t.len == TagLen::Close {
                r.tag()?;
                return Ok(values);
            }
            r.skip()?;
            continue;
        }
        values.push(read_value(r)?);
    }
}

/// Status flags (clause 12.x): in-alarm, fault, overridden, out-of-service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusFlags {
    pub in_alarm: bool,
    pub fault: bool,
    pub overridden: bool,
    pub out_of_service: bool,
}

impl StatusFlags {
    pub fn from_value(v: &Value) -> Option<StatusFlags> {
        let Value::BitString(b) = v else {
            return None;
        };
        let bit = |i: usize| b.get(i).copied().unwrap_or(false);
        Some(StatusFlags {
            in_alarm: bit(0),
            fault: bit(1),
            overridden: bit(2),
            out_of_service: bit(3),
        })
    }
    pub fn to_value(self) -> Value {
        Value::BitString(vec![
            self.in_alarm,
            self.fault,
            self.overridden,
            self.out_of_service,
        ])
    }
}

// ---------------------------------------------------------------------------------------------------------
// Frames: BVLC + NPDU + APDU

/// A decoded APDU (clause 20.1).
#[derive(Debug, Clone, PartialEq)]
pub enum Apdu<'a> {
    ConfirmedRequest {
        segmented: bool,
        more_follows: bool,
        segmented_accepted: bool,
        max_segments: u8,
        max_apdu: u8,
        invoke_id: u8,
        sequence: u8,
        window: u8,
        service: u8,
        body: &'a [u8],
    },
    Unconfirmed {
        service: u8,
        body: &'a [u8],
    },
    SimpleAck {
        invoke_id: u8,
        service: u8,
    },
    ComplexAck {
        segmented: bool,
        more_follows: bool,
        invoke_id: u8,
        sequence: u8,
        window: u8,
        service: u8,
        body: &'a [u8],
    },
    SegmentAck {
        nak: bool,
        server: bool,
        invoke_id: u8,
        sequence: u8,
        window: u8,
    },
    Error {
        invoke_id: u8,
        service: u8,
        class: u32,
        code: u32,
    },
    Reject {
        invoke_id: u8,
        reason: u8,
    },
    Abort {
        server: bool,
        invoke_id: u8,
        reason: u8,
    },
}

/// A received datagram, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<'a> {
    /// An APDU from `source` (the original sender for a Forwarded-NPDU).
    Apdu {
        source: Option<SocketAddr>,
        broadcast: bool,
        apdu: Apdu<'a>,
    },
    /// BVLC-Result (e.g. the answer to Register-Foreign-Device: 0 = success).
    BvlcResult(u16),
    /// Anything else: network-layer messages, BVLC functions a client ignores.
    Ignored,
}

/// Decodes one datagram.
pub fn decode_frame(buf: &[u8]) -> R<Frame<'_>> {
    let mut r = Reader::new(buf);
    if r.u8("BVLC type")? != BVLC_TYPE {
        return Err(DecodeError::Invalid("BVLC type (not BACnet/IP)"));
    }
    let function = r.u8("BVLC function")?;
    let len = r.u16("BVLC length")? as usize;
    if len != buf.len() {
        return Err(DecodeError::Invalid("BVLC length"));
    }
    let mut source = None;
    let broadcast = match function {
        BVLC_RESULT => return Ok(Frame::BvlcResult(r.u16("BVLC result")?)),
        BVLC_ORIGINAL_UNICAST => false,
        BVLC_ORIGINAL_BROADCAST => true,
        BVLC_FORWARDED_NPDU => {
            let a = r.take(6, "forwarded address")?;
            source = Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                u16::from_be_bytes([a[4], a[5]]),
            )));
            true
        }
        _ => return Ok(Frame::Ignored),
    };
    // NPDU (clause 6.2).
    if r.u8("NPDU version")? != 1 {
        return Err(DecodeError::Invalid("NPDU version"));
    }
    let control = r.u8("NPDU control")?;
    if control & 0x20 != 0 {
        r.u16("DNET")?;
        let dlen = r.u8("DLEN")?;
        r.take(dlen as usize, "DADR")?;
    }
    if control & 0x08 != 0 {
        r.u16("SNET")?;
        let slen = r.u8("SLEN")?;
        r.take(slen as usize, "SADR")?;
    }
    if control & 0x20 != 0 {
        r.u8("hop count")?;
    }
    if control & 0x80 != 0 {
        return Ok(Frame::Ignored); // network-layer message
    }
    let apdu = decode_apdu(r.rest())?;
    Ok(Frame::Apdu {
        source,
        broadcast,
        apdu,
    })
}

/// Decodes an APDU.
/// A BACnet Error's error-class and error-code (two enumerations), as an Error PDU and an RPM access result
/// carry them.
fn read_error(r: &mut Reader<'_>) -> R<(u32, u32)> {
    let mut one = |what| match read_value(r)? {
        Value::Enumerated(e) => Ok(e),
        _ => Err(DecodeError::Invalid(what)),
    };
    Ok((one("error class")?, one("error code")?))
}

pub fn decode_apdu(buf: &[u8]) -> R<Apdu<'_>> {
    let mut r = Reader::new(buf);
    let b0 = r.u8("APDU type")?;
    Ok(match b0 >> 4 {
        0 => {
            let b1 = r.u8("max segments")?;
            let invoke_id = r.u8("invoke id")?;
            let segmented = b0 & 0x08 != 0;
            let (sequence, window) = if segmented {
                (r.u8("sequence")?, r.u8("window")?)
            } else {
                (0, 0)
            };
            let service = r.u8("service")?;
            Apdu::ConfirmedRequest {
                segmented,
                more_follows: b0 & 0x04 != 0,
                segmented_accepted: b0 & 0x02 != 0,
                max_segments: (b1 >> 4) & 0x07,
                max_apdu: b1 & 0x0F,
                invoke_id,
                sequence,
                window,
                service,
                body: r.rest(),
            }
        }
        1 => Apdu::Unconfirmed {
            service: r.u8("service")?,
            body: r.rest(),
        },
        2 => Apdu::SimpleAck {
            invoke_id: r.u8("invoke id")?,
            service: r.u8("service")?,
        },
        3 => {
            let invoke_id = r.u8("invoke id")?;
            let segmented = b0 & 0x08 != 0;
            let (sequence, window) = if segmented {
                (r.u8("sequence")?, r.u8("window")?)
            } else {
                (0, 0)
            };
            Apdu::ComplexAck {
                segmented,
                more_follows: b0 & 0x04 != 0,
                invoke_id,
                sequence,
                window,
                service: r.u8("service")?,
                body: r.rest(),
            }
        }
        4 => Apdu::SegmentAck {
            nak: b0 & 0x02 != 0,
            server: b0 & 0x01 != 0,
            invoke_id: r.u8("invoke id")?,
            sequence: r.u8("sequence")?,
            window: r.u8("window")?,
        },
        5 => {
            let invoke_id = r.u8("invoke id")?;
            let service = r.u8("service")?;
            // Most services' Error is two enumerations; some wrap them in context tag 0.
            let wrapped = r.next_is(0, Some(TagLen::Open));
            if wrapped {
                r.tag()?;
            }
            let (class, code) = read_error(&mut r)?;
            Apdu::Error {
                invoke_id,
                service,
                class,
                code,
            }
        }
        6 => Apdu::Reject {
            invoke_id: r.u8("invoke id")?,
            reason: r.u8("reject reason")?,
        },
        7 => Apdu::Abort {
            server: b0 & 0x01 != 0,
            invoke_id: r.u8("invoke id")?,
            reason: r.u8("abort reason")?,
        },
        _ => return Err(DecodeError::Invalid("APDU type")),
    })
}

/// Starts a BACnet/IP datagram: BVLC header (length filled by [`finish`]) and an NPDU without routing.
pub fn begin(out: &mut Vec<u8>, broadcast: bool, expecting_reply: bool) {
    out.clear();
    out.extend_from_slice(&[
        BVLC_TYPE,
        if broadcast {
            BVLC_ORIGINAL_BROADCAST
        } else {
            BVLC_ORIGINAL_UNICAST
        },
        0,
        0,
        1,
        if expecting_reply { 0x04 } else { 0x00 },
    ]);
}

/// Fills in the BVLC length.
pub fn finish(out: &mut [u8]) {
    let len = out.len() as u16;
    out[2..4].copy_from_slice(&len.to_be_bytes());
}

/// The header of a confirmed request we send: segmented responses accepted (up to 64 segments), our max APDU.
pub fn put_confirmed_header(out: &mut Vec<u8>, invoke_id: u8, service: u8) {
    put_confirmed_header_max(out, invoke_id, service, MAX_APDU as u32);
}

/// [`put_confirmed_header`] announcing a smaller max APDU (paths through routers to MS/TP take 480 or less).
pub fn put_confirmed_header_max(out: &mut Vec<u8>, invoke_id: u8, service: u8, max_apdu: u32) {
    out.extend_from_slice(&[0x02, 0x60 | max_apdu_code(max_apdu), invoke_id, service]);
}

pub fn put_unconfirmed_header(out: &mut Vec<u8>, service: u8) {
    out.extend_from_slice(&[0x10, service]);
}

pub fn put_simple_ack(out: &mut Vec<u8>, invoke_id: u8, service: u8) {
    out.extend_from_slice(&[0x20, invoke_id, service]);
}

pub fn put_segment_ack(out: &mut Vec<u8>, nak: bool, invoke_id: u8, sequence: u8, window: u8) {
    out.extend_from_slice(&[
        0x40 | if nak { 0x02 } else { 0 },
        invoke_id,
        sequence,
        window,
    ]);
}

pub fn put_complex_ack_header(out: &mut Vec<u8>, invoke_id: u8, service: u8) {
    out.extend_from_slice(&[0x30, invoke_id, service]);
}

pub fn put_error(out: &mut Vec<u8>, invoke_id: u8, service: u8, class: u32, code: u32) {
    out.extend_from_slice(&[0x50, invoke_id, service]);
    Value::Enumerated(class).encode(out);
    Value::Enumerated(code).encode(out);
}

pub fn put_reject(out: &mut Vec<u8>, invoke_id: u8, reason: u8) {
    out.extend_from_slice(&[0x60, invoke_id, reason]);
}

/// Register-Foreign-Device with a time-to-live in seconds (Annex J.5.2).
pub fn register_foreign_device(ttl: u16) -> Vec<u8> {
    let mut v = vec![BVLC_TYPE, BVLC_REGISTER_FOREIGN_DEVICE, 0, 6];
    v.extend_from_slice(&ttl.to_be_bytes());
    v
}

// ---------------------------------------------------------------------------------------------------------
// Services

/// ReadProperty-Request.
pub fn put_read_property(out: &mut Vec<u8>, object: (u16, u32), property: u32, index: Option<u32>) {
    put_object_raw(out, 0, true, object);
    put_unsigned(out, 1, true, property as u64);
    if let Some(i) = index {
        put_unsigned(out, 2, true, i as u64);
    }
}

/// A ReadProperty request as a device receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyRef {
    pub object: (u16, u32),
    pub property: u32,
    pub index: Option<u32>,
}

pub fn decode_read_property(body: &[u8]) -> R<PropertyRef> {
    let mut r = Reader::new(body);
    let object = r.context_object(0, "object identifier")?;
    let property = r.context_unsigned(1, "property identifier")? as u32;
    let index = if r.next_is(2, None) {
        Some(r.context_unsigned(2, "array index")? as u32)
    } else {
        None
    };
    Ok(PropertyRef {
        object,
        property,
        index,
    })
}

/// ReadProperty-ACK: the property and its value(s) (several for a list such as `object-list`).
pub fn decode_read_property_ack(body: &[u8]) -> R<(PropertyRef, Vec<Value>)> {
    let mut r = Reader::new(body);
    let object = r.context_object(0, "object identifier")?;
    let property = r.context_unsigned(1, "property identifier")? as u32;
    let index = if r.next_is(2, None) {
        Some(r.context_unsigned(2, "array index")? as u32)
    } else {
        None
    };
    r.expect_open(3)?;
    let values = read_values_until_close(&mut r, 3)?;
    Ok((
        PropertyRef {
            object,
            property,
            index,
        },
        values,
    ))
}

pub fn put_read_property_ack(out: &mut Vec<u8>, p: &PropertyRef, values: &[Value]) {
    put_object_raw(out, 0, true, p.object);
    put_unsigned(out, 1, true, p.property as u64);
    if let Some(i) = p.index {
        put_unsigned(out, 2, true, i as u64);
    }
    put_open(out, 3);
    for v in values {
        v.encode(out);
    }
    put_close(out, 3);
}

/// ReadPropertyMultiple-Request: per object, its properties.
pub fn put_read_property_multiple(out: &mut Vec<u8>, specs: &[((u16, u32), Vec<u32>)]) {
    for (object, props) in specs {
        put_object_raw(out, 0, true, *object);
        put_open(out, 1);
        for &p in props {
            put_unsigned(out, 0, true, p as u64);
        }
        put_close(out, 1);
    }
}

/// Per object, the properties asked for.
pub type ReadSpecs = Vec<((u16, u32), Vec<u32>)>;

pub fn decode_read_property_multiple(body: &[u8]) -> R<ReadSpecs> {
    let mut r = Reader::new(body);
    let mut specs = Vec::new();
    while !r.is_empty() {
        let object = r.context_object(0, "object identifier")?;
        r.expect_open(1)?;
        let mut props = Vec::new();
        while !r.next_is(1, Some(TagLen::Close)) {
            props.push(r.context_unsigned(0, "property identifier")? as u32);
            if r.next_is(1, None) {
                r.context_unsigned(1, "array index")?;
            }
        }
        r.expect_close(1)?;
        specs.push((object, props));
    }
    Ok(specs)
}

/// One property of a ReadPropertyMultiple-ACK: its value(s), or the device's error `(class, code)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyResult {
    pub object: (u16, u32),
    pub property: u32,
    pub index: Option<u32>,
    pub result: Result<Vec<Value>, (u32, u32)>,
}

pub fn decode_read_property_multiple_ack(body: &[u8]) -> R<Vec<PropertyResult>> {
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    while !r.is_empty() {
        let object = r.context_object(0, "object identifier")?;
        r.expect_open(1)?;
        while !r.next_is(1, Some(TagLen::Close)) {
            let property = r.context_unsigned(2, "property identifier")? as u32;
            let index = if r.next_is(3, None) {
                Some(r.context_unsigned(3, "array index")? as u32)
            } else {
                None
            };
            let result = if r.next_is(4, Some(TagLen::Open)) {
                r.tag()?;
                Ok(read_values_until_close(&mut r, 4)?)
            } else if r.next_is(5, Some(TagLen::Open)) {
                r.tag()?;
                let (class, code) = read_error(&mut r)?;
                r.expect_close(5)?;
                Err((class, code))
            } else {
                return Err(DecodeError::Invalid("read access result"));
            };
            out.push(PropertyResult {
                object,
                property,
                index,
                result,
            });
        }
        r.expect_close(1)?;
    }
    Ok(out)
}

/// Encodes a ReadPropertyMultiple-ACK (results grouped by consecutive equal objects).
pub fn put_read_property_multiple_ack(out: &mut Vec<u8>, results: &[PropertyResult]) {
    let mut i = 0;
    while i < results.len() {
        let object = results[i].object;
        put_object_raw(out, 0, true, object);
        put_open(out, 1);
        while i < results.len() && results[i].object == object {
            let p = &results[i];
            put_unsigned(out, 2, true, p.property as u64);
            if let Some(x) = p.index {
                put_unsigned(out, 3, true, x as u64);
            }
            match &p.result {
                Ok(values) => {
                    put_open(out, 4);
                    for v in values {
                        v.encode(out);
                    }
                    put_close(out, 4);
                }
                Err((class, code)) => {
                    put_open(out, 5);
                    Value::Enumerated(*class).encode(out);
                    Value::Enumerated(*code).encode(out);
                    put_close(out, 5);
                }
            }
            i += 1;
        }
        put_close(out, 1);
    }
}

/// SubscribeCOV-Request (clause 13.14): `lifetime` in seconds (0 would mean "indefinite": never sent).
pub fn put_subscribe_cov(
    out: &mut Vec<u8>,
    process_id: u32,
    object: ObjectId,
    confirmed: bool,
    lifetime: u32,
) {
    put_unsigned(out, 0, true, process_id as u64);
    put_object(out, 1, true, object);
    put_tag(out, 2, true, 1);
    out.push(confirmed as u8);
    put_unsigned(out, 3, true, lifetime as u64);
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeCov {
    pub process_id: u32,
    pub object: (u16, u32),
    /// `None`: a cancellation.
    pub confirmed: Option<bool>,
    pub lifetime: Option<u32>,
}

pub fn decode_subscribe_cov(body: &[u8]) -> R<SubscribeCov> {
    let mut r = Reader::new(body);
    let process_id = r.context_unsigned(0, "subscriber process identifier")? as u32;
    let object = r.context_object(1, "monitored object")?;
    let confirmed = if r.next_is(2, None) {
        Some(
            r.context_data(2, "issue confirmed")?
                .first()
                .copied()
                .unwrap_or(0)
                != 0,
        )
    } else {
        None
    };
    let lifetime = if r.next_is(3, None) {
        Some(r.context_unsigned(3, "lifetime")? as u32)
    } else {
        None
    };
    Ok(SubscribeCov {
        process_id,
        object,
        confirmed,
        lifetime,
    })
}

/// A COV notification (confirmed or not).
#[derive(Debug, Clone, PartialEq)]
pub struct CovNotification {
    pub process_id: u32,
    pub device: (u16, u32),
    pub object: (u16, u32),
    pub time_remaining: u32,
    pub values: Vec<(u32, Vec<Value>)>,
}

pub fn decode_cov_notification(body: &[u8]) -> R<CovNotification> {
    let mut r = Reader::new(body);
    let process_id = r.context_unsigned(0, "subscriber process identifier")? as u32;
    let device = r.context_object(1, "initiating device")?;
    let object = r.context_object(2, "monitored object")?;
    let time_remaining = r.context_unsigned(3, "time remaining")? as u32;
    r.expect_open(4)?;
    let mut values = Vec::new();
    while !r.next_is(4, Some(TagLen::Close)) {
        let property = r.context_unsigned(0, "property identifier")? as u32;
        if r.next_is(1, None) {
            r.context_unsigned(1, "array index")?;
        }
        r.expect_open(2)?;
        let v = read_values_until_close(&mut r, 2)?;
        if r.next_is(3, None) {
            r.context_unsigned(3, "priority")?;
        }
        values.push((property, v));
    }
    r.expect_close(4)?;
    Ok(CovNotification {
        process_id,
        device,
        object,
        time_remaining,
        values,
    })
}

pub fn put_cov_notification(out: &mut Vec<u8>, n: &CovNotification) {
    put_unsigned(out, 0, true, n.process_id as u64);
    put_object_raw(out, 1, true, n.device);
    put_object_raw(out, 2, true, n.object);
    put_unsigned(out, 3, true, n.time_remaining as u64);
    put_open(out, 4);
    for (p, values) in &n.values {
        put_unsigned(out, 0, true, *p as u64);
        put_open(out, 2);
        for v in values {
            v.encode(out);
        }
        put_close(out, 2);
    }
    put_close(out, 4);
}

/// Who-Is with an optional instance range.
pub fn put_who_is(out: &mut Vec<u8>, range: Option<(u32, u32)>) {
    if let Some((lo, hi)) = range {
        put_unsigned(out, 0, true, lo as u64);
        put_unsigned(out, 1, true, hi as u64);
    }
}

pub fn decode_who_is(body: &[u8]) -> R<Option<(u32, u32)>> {
    if body.is_empty() {
        return Ok(None);
    }
    let mut r = Reader::new(body);
    let lo = r.context_unsigned(0, "low limit")? as u32;
    let hi = r.context_unsigned(1, "high limit")? as u32;
    Ok(Some((lo, hi)))
}

/// I-Am.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IAm {
    pub device_instance: u32,
    pub max_apdu: u32,
    pub segmentation: u32,
    pub vendor_id: u32,
}

pub fn decode_i_am(body: &[u8]) -> R<IAm> {
    let mut r = Reader::new(body);
    let Value::ObjectId(t, device_instance) = read_value(&mut r)? else {
        return Err(DecodeError::Invalid("I-Am device identifier"));
    };
    if t != ObjectType::Device.code() {
        return Err(DecodeError::Invalid("I-Am device identifier"));
    }
    let num = |v: Value, what| match v {
        Value::Unsigned(u) => Ok(u as u32),
        Value::Enumerated(e) => Ok(e),
        _ => Err(DecodeError::Invalid(what)),
    };
    Ok(IAm {
        device_instance,
        max_apdu: num(read_value(&mut r)?, "I-Am max APDU")?,
        segmentation: num(read_value(&mut r)?, "I-Am segmentation")?,
        vendor_id: num(read_value(&mut r)?, "I-Am vendor")?,
    })
}

pub fn put_i_am(out: &mut Vec<u8>, i: &IAm) {
    Value::ObjectId(ObjectType::Device.code(), i.device_instance).encode(out);
    Value::Unsigned(i.max_apdu as u64).encode(out);
    Value::Enumerated(i.segmentation).encode(out);
    Value::Unsigned(i.vendor_id as u64).encode(out);
}

/// A readable name for an error class and code.
pub fn error_text(class: u32, code: u32) -> String {
    let class_name = match class {
        0 => "device",
        1 => "object",
        2 => "property",
        3 => "resources",
        4 => "security",
        5 => "services",
        6 => "vt",
        7 => "communication",
        _ => "class",
    };
    let code_name = match code {
        0 => "other",
        27 => "read-access-denied",
        29 => "service-request-denied",
        31 => "unknown-object",
        32 => "unknown-property",
        36 => "unsupported-object-type",
        42 => "invalid-array-index",
        45 => "optional-functionality-not-supported",
        50 => "property-is-not-an-array",
        _ => "",
    };
    if code_name.is_empty() {
        format!("{class_name} error code {code}")
    } else {
        format!("{class_name}: {code_name}")
    }
}

pub fn reject_text(reason: u8) -> &'static str {
    match reason {
        1 => "buffer-overflow",
        2 => "inconsistent-parameters",
        3 => "invalid-parameter-data-type",
        4 => "invalid-tag",
        5 => "missing-required-parameter",
        6 => "parameter-out-of-range",
        7 => "too-many-arguments",
        8 => "undefined-enumeration",
        9 => "unrecognized-service",
        _ => "other",
    }
}

pub fn abort_text(reason: u8) -> &'static str {
    match reason {
        1 => "buffer-overflow",
        2 => "invalid-apdu-in-this-state",
        3 => "preempted-by-higher-priority-task",
        4 => "segmentation-not-supported",
        5 => "security-error",
        6 => "insufficient-security",
        7 => "window-size-out-of-range",
        8 => "application-exceeded-reply-time",
        9 => "out-of-resources",
        10 => "tsm-timeout",
        11 => "apdu-too-long",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(kind: ObjectType, instance: u32) -> (u16, u32) {
        (kind.code(), instance)
    }

    #[test]
    fn tags_round_trip_including_long_lengths_and_extended_numbers() {
        for len in [0u32, 4, 5, 253, 254, 65535, 65536] {
            for number in [0u8, 14, 15, 200] {
                let mut out = Vec::new();
                put_tag(&mut out, number, true, len);
                let t = Reader::new(&out).tag().unwrap();
                assert_eq!(
                    (t.number, t.context, t.len),
                    (number, true, TagLen::Len(len))
                );
            }
        }
        for v in [
            Value::Null,
            Value::Boolean(true),
            Value::Unsigned(0),
            Value::Unsigned(300),
            Value::Unsigned(u64::MAX),
            Value::Signed(-1),
            Value::Signed(-129),
            Value::Signed(128),
            Value::Real(21.5),
            Value::Double(-3.25),
            Value::CharacterString("Zuluft °C".into()),
            Value::BitString(vec![false, true, false, true]),
            Value::Enumerated(1),
            Value::ObjectId(8, 1205),
        ] {
            let mut out = Vec::new();
            v.encode(&mut out);
            let mut r = Reader::new(&out);
            assert_eq!(read_value(&mut r).unwrap(), v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn read_property_multiple_round_trips_with_per_property_errors() {
        let ai1 = oid(ObjectType::AnalogInput, 1);
        let bo2 = oid(ObjectType::BinaryOutput, 2);
        let mut req = Vec::new();
        put_read_property_multiple(
            &mut req,
            &[
                (ai1, vec![prop::PRESENT_VALUE, prop::STATUS_FLAGS]),
                (bo2, vec![prop::PRESENT_VALUE]),
            ],
        );
        let specs = decode_read_property_multiple(&req).unwrap();
        assert_eq!(specs[1], (bo2, vec![prop::PRESENT_VALUE]));
        let results = vec![
            PropertyResult {
                object: ai1,
                property: prop::PRESENT_VALUE,
                index: None,
                result: Ok(vec![Value::Real(21.5)]),
            },
            PropertyResult {
                object: ai1,
                property: prop::STATUS_FLAGS,
                index: None,
                result: Ok(vec![
                    StatusFlags {
                        fault: true,
                        ..Default::default()
                    }
                    .to_value(),
                ]),
            },
            PropertyResult {
                object: bo2,
                property: prop::PRESENT_VALUE,
                index: None,
                result: Err((ERROR_CLASS_OBJECT, ERROR_UNKNOWN_OBJECT)),
            },
        ];
        let mut ack = Vec::new();
        put_read_property_multiple_ack(&mut ack, &results);
        let back = decode_read_property_multiple_ack(&ack).unwrap();
        assert_eq!(back, results);
        let flags = StatusFlags::from_value(&back[1].result.as_ref().unwrap()[0]).unwrap();
        assert!(flags.fault && !flags.in_alarm);
        assert_eq!(error_text(1, 31), "object: unknown-object");
        // A truncated answer is an error, never a panic, unless it ends between objects (then it is a prefix).
        for n in 0..ack.len() {
            if let Ok(r) = decode_read_property_multiple_ack(&ack[..n]) {
                assert!(results.starts_with(&r) && r.len() < results.len(), "{n}");
            }
        }
    }

    #[test]
    fn frames_and_apdus_decode() {
        let mut out = Vec::new();
        begin(&mut out, false, true);
        put_confirmed_header(&mut out, 7, SERVICE_READ_PROPERTY);
        put_read_property(
            &mut out,
            oid(ObjectType::Device, 1205),
            prop::OBJECT_LIST,
            Some(0),
        );
        finish(&mut out);
        let Frame::Apdu { apdu, .. } = decode_frame(&out).unwrap() else {
            panic!()
        };
        let Apdu::ConfirmedRequest {
            invoke_id,
            service,
            body,
            max_apdu,
            ..
        } = apdu
        else {
            panic!()
        };
        assert_eq!(
            (invoke_id, service, max_apdu_from_code(max_apdu)),
            (7, 12, 1476)
        );
        let p = decode_read_property(body).unwrap();
        assert_eq!((p.property, p.index), (prop::OBJECT_LIST, Some(0)));
        // I-Am and COV notifications.
        let i = IAm {
            device_instance: 1205,
            max_apdu: 1476,
            segmentation: SEGMENTED_BOTH,
            vendor_id: 999,
        };
        let mut b = Vec::new();
        put_i_am(&mut b, &i);
        assert_eq!(decode_i_am(&b).unwrap(), i);
        let n = CovNotification {
            process_id: 3,
            device: oid(ObjectType::Device, 1205),
            object: oid(ObjectType::AnalogInput, 1),
            time_remaining: 290,
            values: vec![
                (prop::PRESENT_VALUE, vec![Value::Real(30.0)]),
                (prop::STATUS_FLAGS, vec![StatusFlags::default().to_value()]),
            ],
        };
        let mut b = Vec::new();
        put_cov_notification(&mut b, &n);
        assert_eq!(decode_cov_notification(&b).unwrap(), n);
        let mut b = Vec::new();
        put_subscribe_cov(
            &mut b,
            3,
            ObjectId {
                kind: ObjectType::AnalogInput,
                instance: 1,
            },
            true,
            300,
        );
        let s = decode_subscribe_cov(&b).unwrap();
        assert_eq!(
            (s.process_id, s.confirmed, s.lifetime),
            (3, Some(true), Some(300))
        );
        // Garbage never panics.
        for seed in 0..2000u32 {
            let len = (seed % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i as u32 * 40503) >> 8) as u8)
                .collect();
            let _ = decode_frame(&bytes);
            let _ = decode_apdu(&bytes);
            let _ = decode_read_property_multiple_ack(&bytes);
            let _ = decode_cov_notification(&bytes);
        }
    }
}
