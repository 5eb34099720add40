//! `[bacnet]` (the local UDP endpoint, optional foreign-device registration with a BBMD, request timeout and
//! retries) and a device's `bacnet = { address, device_instance, poll, cov }` table, validated.

use crate::diag::Collector;
use serde::Deserialize;
use std::time::Duration;

/// The standard BACnet/IP port (0xBAC0).
pub const DEFAULT_PORT: u16 = 47808;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_POLL: Duration = Duration::from_secs(30);
pub const DEFAULT_OFFLINE_AFTER: u32 = 3;
pub const DEFAULT_COV_LIFETIME: Duration = Duration::from_secs(300);
pub const DEFAULT_BBMD_TTL: Duration = Duration::from_secs(300);

/// `[bacnet]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBacnet {
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub bbmd: Option<String>,
    /// Time-to-live of the foreign-device registration (renewed at half of it).
    #[serde(default)]
    pub bbmd_ttl: Option<String>,
    /// How long to wait for each answer.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Resends after a timeout before a request fails.
    #[serde(default)]
    pub retries: Option<u32>,
}

/// `[bacnet]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct BacnetConfig {
    /// `host:port` to bind the UDP socket to.
    pub bind: String,
    /// `(host, port)` of the BBMD to register with as a foreign device.
    pub bbmd: Option<(String, u16)>,
    pub bbmd_ttl: Duration,
    pub timeout: Duration,
    pub retries: u32,
}

/// A device's `bacnet = { ... }` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBacnetDevice {
    pub address: String,
    #[serde(default)]
    pub device_instance: Option<u32>,
    #[serde(default)]
    pub poll: Option<String>,
    #[serde(default)]
    pub cov: Option<bool>,
    /// Lifetime asked for in SubscribeCOV (renewed at three quarters of it).
    #[serde(default)]
    pub cov_lifetime: Option<String>,
    /// Polls in a row without any answer before the device is reported offline.
    #[serde(default)]
    pub offline_after: Option<u32>,
}

/// A device's validated BACnet settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BacnetDevice {
    /// `(host, port)`; resolved when the source starts.
    pub address: (String, u16),
    pub device_instance: u32,
    pub poll: Duration,
    pub cov: bool,
    pub cov_lifetime: Duration,
    pub offline_after: u32,
}

fn host_port(text: &str) -> Result<(String, u16), String> {
    match crate::util::split_host_port(text, DEFAULT_PORT) {
        Ok((h, p)) if !h.is_empty() && p != 0 => Ok((h, p)),
        Ok(_) => Err(format!("`{text}`: missing host or port")),
        Err(e) => Err(format!("`{text}`: {e}")),
    }
}

fn duration(
    errs: &mut Vec<(String, String)>,
    key: &str,
    v: &Option<String>,
    default: Duration,
    min: Duration,
) -> Duration {
    match v {
        None => default,
        Some(s) => match crate::util::parse_duration_max(s, Duration::from_secs(86_400)) {
            Ok(d) if d >= min => d,
            Ok(_) => {
                errs.push((key.into(), format!("`{s}` is too short (at least {min:?})")));
                default
            }
            Err(e) => {
                errs.push((key.into(), e));
                default
            }
        },
    }
}

/// Validates `[bacnet]` into the collector.
pub fn validate(cx: &mut Collector<'_>, raw: &RawBacnet) -> BacnetConfig {
    let mut errs = Vec::new();
    let bind = raw
        .bind
        .clone()
        .unwrap_or_else(|| format!("0.0.0.0:{DEFAULT_PORT}"));
    // Port 0 is fine here (any free port: a client needs no fixed port unless devices broadcast their answers).
    match crate::util::split_host_port(&bind, DEFAULT_PORT) {
        Ok((h, _)) if !h.is_empty() => {}
        Ok(_) => errs.push(("bacnet.bind".to_string(), format!("`{bind}`: missing host"))),
        Err(e) => errs.push(("bacnet.bind".to_string(), format!("`{bind}`: {e}"))),
    }
    let bbmd = raw.bbmd.as_ref().and_then(|b| {
        host_port(b)
            .map_err(|e| errs.push(("bacnet.bbmd".into(), e)))
            .ok()
    });
    let bbmd_ttl = duration(
        &mut errs,
        "bacnet.bbmd_ttl",
        &raw.bbmd_ttl,
        DEFAULT_BBMD_TTL,
        Duration::from_secs(30),
    );
    let timeout = duration(
        &mut errs,
        "bacnet.timeout",
        &raw.timeout,
        DEFAULT_TIMEOUT,
        Duration::from_millis(10),
    );
    let retries = raw.retries.unwrap_or(DEFAULT_RETRIES);
    if retries > 10 {
        errs.push((
            "bacnet.retries".into(),
            format!("{retries} retries: at most 10"),
        ));
    }
    cx.report(errs);
    BacnetConfig {
        bind,
        bbmd,
        bbmd_ttl,
        timeout,
        retries,
    }
}

/// Validates a device's `bacnet` table; errors are `(key under the device, message)`.
pub fn validate_device(raw: &RawBacnetDevice) -> Result<BacnetDevice, Vec<(String, String)>> {
    let mut errs = Vec::new();
    let address = host_port(&raw.address).map_err(|e| errs.push(("bacnet.address".to_string(), e)));
    let device_instance = match raw.device_instance {
        None => {
            errs.push((
                "bacnet.device_instance".into(),
                "missing: the device object's instance number (Who-Is/I-Am show it; `caretaker bacnet discover` lists it)".into(),
            ));
            0
        }
        Some(i) if i > crate::catalog::bacnet_binding::MAX_INSTANCE => {
            errs.push((
                "bacnet.device_instance".into(),
                format!(
                    "{i} out of range (0..={})",
                    crate::catalog::bacnet_binding::MAX_INSTANCE
                ),
            ));
            0
        }
        Some(i) => i,
    };
    let poll = duration(
        &mut errs,
        "bacnet.poll",
        &raw.poll,
        DEFAULT_POLL,
        Duration::from_millis(100),
    );
    let cov_lifetime = duration(
        &mut errs,
        "bacnet.cov_lifetime",
        &raw.cov_lifetime,
        DEFAULT_COV_LIFETIME,
        Duration::from_secs(10),
    );
    let offline_after = raw.offline_after.unwrap_or(DEFAULT_OFFLINE_AFTER);
    if offline_after == 0 {
        errs.push((
            "bacnet.offline_after".into(),
            "must be at least 1 (failed polls in a row)".into(),
        ));
    }
    match address {
        Ok(address) if errs.is_empty() => Ok(BacnetDevice {
            address,
            device_instance,
            poll,
            cov: raw.cov.unwrap_or(false),
            cov_lifetime,
            offline_after,
        }),
        _ => Err(errs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tables_validate_with_named_keys() {
        let raw: RawBacnetDevice = toml::from_str(
            "address = \"10.0.7.20:47808\"\ndevice_instance = 1205\npoll = \"30s\"\ncov = true",
        )
        .unwrap();
        let d = validate_device(&raw).unwrap();
        assert_eq!(d.address, ("10.0.7.20".to_string(), 47808));
        assert_eq!(
            (d.device_instance, d.poll, d.cov),
            (1205, Duration::from_secs(30), true)
        );
        let raw: RawBacnetDevice = toml::from_str("address = \"10.0.7.21\"").unwrap();
        let keys: Vec<_> = validate_device(&raw)
            .unwrap_err()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(keys, ["bacnet.device_instance"]);
        let raw: RawBacnetDevice = toml::from_str(
            "address = \"h:x\"\ndevice_instance = 4194400\npoll = \"fast\"\noffline_after = 0",
        )
        .unwrap();
        let keys: Vec<_> = validate_device(&raw)
            .unwrap_err()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            keys,
            [
                "bacnet.address",
                "bacnet.device_instance",
                "bacnet.poll",
                "bacnet.offline_after"
            ]
        );
        assert_eq!(
            validate_device(&toml::from_str("address = \"h\"\ndevice_instance = 1").unwrap())
                .unwrap()
                .address
                .1,
            DEFAULT_PORT
        );
    }
}
