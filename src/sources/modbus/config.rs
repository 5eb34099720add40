//! The `modbus = { ... }` table of a `[[devices]]` entry, validated: where the device is (a TCP gateway or a
//! serial line), its unit id, how often to poll it, and when to call it offline.
//!
//! Devices that name the same `tcp://host:port`, `rtu+tcp://host:port` or the same serial path share one *link*:
//! one connection, requests serialized. `rtu+tcp://` is RTU framing (unit id, PDU, CRC; no MBAP header) over a TCP
//! socket, as transparent RS-485-to-Ethernet gateways forward it. Serial settings of devices on one line must agree (the line has one baud rate).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The `modbus = { ... }` table of a device, as written.
#[derive(Debug, Clone, Deserialize)]
pub struct RawModbusDevice {
    pub url: String,
    #[serde(default)]
    pub unit: Option<u8>,
    #[serde(default)]
    pub poll: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub baud: Option<u32>,
    #[serde(default)]
    pub parity: Option<String>,
    #[serde(default)]
    pub data_bits: Option<u8>,
    #[serde(default)]
    pub stop_bits: Option<u8>,
    /// Per-point poll periods overriding the device's (`points = { energy_total = "60s" }`).
    #[serde(default)]
    pub points: BTreeMap<String, String>,
    /// Consecutive failed polls before the device is reported offline.
    #[serde(default)]
    pub offline_after: Option<u32>,
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// Settings of one serial line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Serial {
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

/// Where a device is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkAddr {
    Tcp {
        host: String,
        port: u16,
    },
    Rtu {
        path: String,
        serial: Serial,
    },
    /// RTU frames over TCP (a transparent serial gateway): one request at a time, like a serial line.
    RtuTcp {
        host: String,
        port: u16,
    },
}

impl LinkAddr {
    /// Devices with equal keys share a link.
    pub fn key(&self) -> String {
        match self {
            LinkAddr::Tcp { host, port } => format!("tcp://{host}:{port}"),
            LinkAddr::Rtu { path, .. } => format!("rtu://{path}"),
            LinkAddr::RtuTcp { host, port } => format!("rtu+tcp://{host}:{port}"),
        }
    }
}

impl fmt::Display for LinkAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// A device's validated Modbus settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusDevice {
    pub link: LinkAddr,
    pub unit: u8,
    pub poll: Duration,
    pub timeout: Duration,
    /// Per-point poll periods overriding `poll`, by point name.
    pub point_polls: BTreeMap<String, Duration>,
    /// Consecutive polls without any answer before the device is reported offline.
    pub offline_after: u32,
}

pub const DEFAULT_POLL: Duration = Duration::from_secs(10);
/// The longest `poll`, per-point poll or `timeout` a device may give.
pub const MAX_POLL: Duration = Duration::from_secs(86_400);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_OFFLINE_AFTER: u32 = 3;

/// Validates a device's `modbus` table; errors are `(key under the device, message)`.
pub fn validate(raw: &RawModbusDevice) -> Result<ModbusDevice, Vec<(String, String)>> {
    let mut errs: Vec<(String, String)> = Vec::new();
    let mut err = |k: &str, m: String| errs.push((format!("modbus.{k}"), m));
    let serial_given = raw.baud.is_some()
        || raw.parity.is_some()
        || raw.data_bits.is_some()
        || raw.stop_bits.is_some();
    let tcp_rest = raw
        .url
        .strip_prefix("tcp://")
        .map(|r| (r, false))
        .or_else(|| raw.url.strip_prefix("rtu+tcp://").map(|r| (r, true)));
    let link = if let Some((rest, rtu_framing)) = tcp_rest {
        if serial_given {
            err(
                "baud",
                "baud, parity, data_bits and stop_bits apply to rtu:// devices only (a gateway's serial side is set on the gateway)".into(),
            );
        }
        match crate::util::split_host_port(rest.trim_end_matches('/'), 502) {
            Ok((host, port)) if !host.is_empty() && port != 0 && rtu_framing => {
                Some(LinkAddr::RtuTcp { host, port })
            }
            Ok((host, port)) if !host.is_empty() && port != 0 => Some(LinkAddr::Tcp { host, port }),
            Ok(_) => {
                err("url", format!("`{}`: missing host or port", raw.url));
                None
            }
            Err(e) => {
                err("url", format!("`{}`: {e}", raw.url));
                None
            }
        }
    } else if let Some(path) = raw.url.strip_prefix("rtu://") {
        if !path.starts_with('/') {
            err(
                "url",
                format!(
                    "`{}`: give the serial device's absolute path, e.g. rtu:///dev/ttyUSB0",
                    raw.url
                ),
            );
        }
        let baud = raw.baud.unwrap_or(9600);
        if !(300..=4_000_000).contains(&baud) {
            err("baud", format!("baud {baud} is not a serial speed"));
        }
        let parity = match raw.parity.as_deref().unwrap_or("none") {
            "none" => Parity::None,
            "even" => Parity::Even,
            "odd" => Parity::Odd,
            p => {
                err(
                    "parity",
                    format!("unknown parity `{p}`; expected none, even or odd"),
                );
                Parity::None
            }
        };
        let data_bits = raw.data_bits.unwrap_or(8);
        if !(5..=8).contains(&data_bits) {
            err("data_bits", format!("data_bits {data_bits}: must be 5..=8"));
        }
        let stop_bits = raw.stop_bits.unwrap_or(1);
        if !(1..=2).contains(&stop_bits) {
            err(
                "stop_bits",
                format!("stop_bits {stop_bits}: must be 1 or 2"),
            );
        }
        Some(LinkAddr::Rtu {
            path: path.to_string(),
            serial: Serial {
                baud,
                parity,
                data_bits,
                stop_bits,
            },
        })
    } else {
        err(
            "url",
            format!(
                "`{}`: use tcp://host:port (port 502 by default), rtu+tcp://host:port (RTU frames over TCP) or rtu:///dev/ttyUSB0",
                raw.url
            ),
        );
        None
    };
    let unit = raw.unit.unwrap_or(1);
    if matches!(link, Some(LinkAddr::Rtu { .. } | LinkAddr::RtuTcp { .. }))
        && !(1..=247).contains(&unit)
    {
        err(
            "unit",
            format!("unit {unit}: serial devices have unit ids 1..=247"),
        );
    }
    // A poll period or timeout of more than a day is a typo; the link's schedule adds it to an `Instant`.
    let mut duration = |k: &str, v: &Option<String>, default: Duration| match v {
        None => default,
        Some(s) => match crate::util::parse_duration_max(s, MAX_POLL) {
            Ok(d) if d >= Duration::from_millis(10) => d,
            Ok(_) => {
                err(k, format!("`{s}` is too short (at least 10ms)"));
                default
            }
            Err(e) => {
                err(k, e);
                default
            }
        },
    };
    let poll = duration("poll", &raw.poll, DEFAULT_POLL);
    let timeout = duration("timeout", &raw.timeout, DEFAULT_TIMEOUT);
    let mut point_polls = BTreeMap::new();
    for (name, text) in &raw.points {
        let d = duration(&format!("points.{name}"), &Some(text.clone()), poll);
        point_polls.insert(name.clone(), d);
    }
    let offline_after = raw.offline_after.unwrap_or(DEFAULT_OFFLINE_AFTER);
    if offline_after == 0 {
        errs.push((
            "modbus.offline_after".into(),
            "must be at least 1 (failed polls in a row)".into(),
        ));
    }
    match link {
        Some(link) if errs.is_empty() => Ok(ModbusDevice {
            link,
            unit,
            poll,
            timeout,
            point_polls,
            offline_after,
        }),
        _ => Err(errs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawModbusDevice {
        RawModbusDevice {
            url: url.into(),
            unit: None,
            poll: None,
            timeout: None,
            baud: None,
            parity: None,
            data_bits: None,
            stop_bits: None,
            points: BTreeMap::new(),
            offline_after: None,
        }
    }

    #[test]
    fn tcp_and_rtu_urls() {
        let d = validate(&raw("tcp://10.0.4.21:502")).unwrap();
        assert_eq!(d.link.key(), "tcp://10.0.4.21:502");
        assert_eq!(
            (d.unit, d.poll, d.timeout),
            (1, DEFAULT_POLL, DEFAULT_TIMEOUT)
        );
        assert_eq!(
            validate(&raw("tcp://gw")).unwrap().link.key(),
            "tcp://gw:502"
        );
        let mut r = raw("rtu:///dev/ttyUSB0");
        r.baud = Some(19200);
        r.parity = Some("even".into());
        let d = validate(&r).unwrap();
        assert_eq!(
            d.link,
            LinkAddr::Rtu {
                path: "/dev/ttyUSB0".into(),
                serial: Serial {
                    baud: 19200,
                    parity: Parity::Even,
                    data_bits: 8,
                    stop_bits: 1
                }
            }
        );
    }

    #[test]
    fn rtu_over_tcp_urls() {
        let mut r = raw("rtu+tcp://10.0.4.30:4001");
        r.unit = Some(3);
        let d = validate(&r).unwrap();
        assert_eq!(
            d.link,
            LinkAddr::RtuTcp {
                host: "10.0.4.30".into(),
                port: 4001
            }
        );
        assert_eq!(d.link.key(), "rtu+tcp://10.0.4.30:4001");
        assert_eq!(d.unit, 3);
        assert_eq!(
            validate(&raw("rtu+tcp://gw")).unwrap().link.key(),
            "rtu+tcp://gw:502"
        );
        // Not the same link as the plain-TCP url of the same address.
        assert_ne!(
            validate(&raw("tcp://gw")).unwrap().link,
            validate(&raw("rtu+tcp://gw")).unwrap().link
        );
        let mut r = raw("rtu+tcp://gw:4001");
        r.unit = Some(0);
        assert_eq!(validate(&r).unwrap_err()[0].0, "modbus.unit");
        let mut r = raw("rtu+tcp://gw:4001");
        r.baud = Some(9600);
        assert_eq!(validate(&r).unwrap_err()[0].0, "modbus.baud");
        assert_eq!(
            validate(&raw("rtu+tcp://:4001")).unwrap_err()[0].0,
            "modbus.url"
        );
    }

    #[test]
    fn every_problem_is_named() {
        let mut r = raw("udp://x");
        r.poll = Some("10".into());
        r.offline_after = Some(0);
        let keys: Vec<String> = validate(&r).unwrap_err().into_iter().map(|e| e.0).collect();
        assert_eq!(keys, ["modbus.url", "modbus.poll", "modbus.offline_after"]);
        let mut r = raw("tcp://h:502");
        r.baud = Some(9600);
        assert_eq!(validate(&r).unwrap_err()[0].0, "modbus.baud");
        let mut r = raw("rtu:///dev/x");
        r.parity = Some("evn".into());
        r.points.insert("energy".into(), "1x".into());
        let keys: Vec<String> = validate(&r).unwrap_err().into_iter().map(|e| e.0).collect();
        assert_eq!(keys, ["modbus.parity", "modbus.points.energy"]);
    }
}
