//! The BACnet/IP source: polls (and subscribes to) BACnet devices declared in the site config and sends their
//! readings to the pipeline like any other source. docs/bacnet.md.
//!
//! - [`config`]: `[bacnet]` (bind, bbmd, timeout, retries) and a device's `bacnet = { address, device_instance,
//!   poll, cov }`.
//! - [`codec`]: BVLC, NPDU, APDU, tags and the services, both directions.
//! - [`client`]: the one UDP endpoint: invoke ids, timeouts, retries, segmented answers, COV and I-Am dispatch.
//! - [`poll`]: the per-device poller (RPM batches, ReadProperty fallback, COV, status flags, offline).
//! - [`discover`]: `caretaker bacnet discover` (Who-Is, object lists, a starting profile).
//!
//! Every BACnet profile carries the synthetic `online` point, as Modbus ones do.

pub mod client;
pub mod codec;
pub mod config;
pub mod discover;
pub mod poll;
pub mod units;

use crate::catalog::Catalog;
use crate::diag::{Diagnostic, at_key};
pub use config::{BacnetConfig, BacnetDevice, RawBacnet, RawBacnetDevice};
pub use poll::{DevicePoll, Poller};

/// A `[[devices]]` entry with a `bacnet` table, as the site config declared it.
#[derive(Debug, Clone, Copy)]
pub struct Declared<'a> {
    pub index: usize,
    pub id: &'a str,
    pub profile: &'a str,
    pub bacnet: &'a RawBacnetDevice,
}

/// Checks what needs the site config and the profiles together: a device with a `bacnet` table needs `[bacnet]`
/// and a profile with `bacnet:` points; a profile with `bacnet:` points needs devices that have a `bacnet` table;
/// two devices may not share an address and device instance.
pub fn check(
    file: &std::path::Path,
    section: bool,
    devices: &[Declared<'_>],
    others: &[(usize, &str, &str)],
    catalog: &Catalog,
) -> Vec<Diagnostic> {
    let mut errs = Vec::new();
    let mut seen: std::collections::HashMap<(String, u16, u32), usize> = Default::default();
    for d in devices {
        let key = |k: &str| format!("devices[{}].{k}", d.index);
        if !section {
            errs.push(at_key(
                file,
                &key("bacnet"),
                format!(
                    "device `{}` has a bacnet table but the site has no [bacnet] section (add `[bacnet]` with `bind = \"0.0.0.0:47808\"`)",
                    d.id
                ),
            ));
        }
        if let Some(p) = catalog.profiles.get(d.profile) {
            if !p.has_bacnet() {
                errs.push(at_key(
                    file,
                    &key("profile"),
                    format!(
                        "device `{}` has a bacnet table but profile `{}` has no point with a `bacnet:` binding",
                        d.id, p.name
                    ),
                ));
            }
        }
        if let Ok(b) = config::validate_device(d.bacnet) {
            let k = (b.address.0.clone(), b.address.1, b.device_instance);
            if let Some(first) = seen.insert(k, d.index) {
                errs.push(at_key(
                    file,
                    &key("bacnet.device_instance"),
                    format!(
                        "device {} at {}:{} is also declared as devices[{first}]",
                        b.device_instance, b.address.0, b.address.1
                    ),
                ));
            }
        }
    }
    for (index, id, profile) in others {
        if let Some(p) = catalog.profiles.get(*profile) {
            if p.has_bacnet() && !p.has_mqtt() && !p.has_modbus() {
                errs.push(at_key(
                    file,
                    &format!("devices[{index}].profile"),
                    format!(
                        "profile `{}` is read over BACnet, but device `{id}` has no `bacnet = {{ address, device_instance }}` table",
                        p.name
                    ),
                ));
            }
        }
    }
    errs
}

fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "caretaker_bacnet_requests_total",
        "BACnet confirmed requests sent (retries included)"
    );
    describe_counter!(
        "caretaker_bacnet_device_requests_total",
        "BACnet requests per device (before retries)"
    );
    describe_counter!(
        "caretaker_bacnet_point_errors_total",
        "BACnet points read as bad (unknown object or property, fault, not a number), by device and point"
    );
    describe_counter!(
        "caretaker_bacnet_cov_notifications_total",
        "COV notifications received, by device"
    );
    describe_counter!(
        "caretaker_bacnet_bad_datagrams_total",
        "Datagrams on the BACnet port that are not BACnet/IP (dropped)"
    );
    describe_gauge!(
        "caretaker_device_online",
        "1 while a polled device answers, 0 once it missed offline_after polls in a row"
    );
}

/// The pollers of a site's BACnet devices, in config order (devices whose table does not validate are left out:
/// `check` refuses such configs first).
pub fn build(devices: &[Declared<'_>], catalog: &Catalog) -> Vec<DevicePoll> {
    describe_metrics();
    let mut out = Vec::new();
    for d in devices {
        let Ok(settings) = config::validate_device(d.bacnet) else {
            continue;
        };
        let Some((_, dev)) = catalog.device_by_id(d.id) else {
            continue;
        };
        if !dev.profile.has_bacnet() {
            continue;
        }
        out.push(DevicePoll {
            id: d.id.to_string(),
            profile: dev.profile.clone(),
            first_point: dev.first_point,
            online_point: dev.point_id(crate::catalog::profile::ONLINE_POINT),
            settings,
            process_id: out.len() as u32 + 1,
        });
    }
    out
}

/// Binds the endpoint and runs every device's poller until `stop`. Returns when they all stopped; a bind
/// failure returns at once (the watchdog then shows the task ended).
pub async fn run(
    cfg: BacnetConfig,
    devices: Vec<DevicePoll>,
    tx: tokio::sync::mpsc::Sender<crate::pipeline::Batch>,
    stop: tokio_util::sync::CancellationToken,
    health: std::sync::Arc<crate::telemetry::Health>,
) {
    let socket = match client::Endpoint::bind(&cfg.bind).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(bind = %cfg.bind, error = %e, "cannot bind the BACnet/IP port ([bacnet] bind); no BACnet device is read");
            return;
        }
    };
    let (mut ep, rx_task) = client::Endpoint::start(socket, cfg.timeout, cfg.retries, stop.clone());
    if let Some((h, p)) = &cfg.bbmd {
        match client::resolve(h, *p).await {
            Ok(a) => ep.register_foreign(a, cfg.bbmd_ttl, stop.clone()),
            Err(e) => tracing::error!(error = %e, "BBMD address ([bacnet] bbmd) does not resolve"),
        }
    }
    tracing::info!(bind = %cfg.bind, devices = devices.len(), "BACnet/IP source starting");
    let mut set = tokio::task::JoinSet::new();
    for d in devices {
        let p = Poller::new(d).with_health(health.clone());
        set.spawn(p.run(ep.clone(), tx.clone(), stop.clone()));
    }
    drop(tx);
    while let Some(r) = set.join_next().await {
        if let Err(e) = r {
            tracing::error!(error = %e, "a BACnet device poller failed");
        }
    }
    stop.cancelled().await;
    let _ = rx_task.await;
}
