//! `caretaker bacnet discover`: Who-Is / I-Am, then each device's objects with names, units and present values;
//! `--profile-out DIR` writes a starting profile per device model. docs/bacnet.md.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum BacnetCommand {
    /// Find BACnet/IP devices (Who-Is) and list their objects; optionally write starting profiles.
    Discover(DiscoverArgs),
}

#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Local UDP address to send from and listen on (devices answer Who-Is to the standard port 47808 when
    /// they broadcast I-Am).
    #[arg(long, default_value = "0.0.0.0:47808")]
    pub bind: String,
    /// Where Who-Is goes: a device (`10.0.7.20` or `127.0.0.1:47809`) or a broadcast address (`10.0.7.255`).
    #[arg(long, default_value = "255.255.255.255")]
    pub target: String,
    /// How long to wait for I-Am answers.
    #[arg(long, default_value = "3s")]
    pub wait: String,
    /// Register as a foreign device with this BBMD (`host:port`) and send Who-Is through it.
    #[arg(long)]
    pub bbmd: Option<String>,
    /// Largest answer to accept in one datagram (50..=1476); longer answers come in segments. For paths through
    /// routers to MS/TP networks, which carry 480 bytes or less.
    #[arg(long, default_value_t = 1476)]
    pub max_apdu: u32,
    /// Request timeout (each request is retried twice).
    #[arg(long, default_value = "2s")]
    pub timeout: String,
    /// Write a starting profile per device model into this folder (`<vendor>-<model>.yaml`).
    #[arg(long)]
    pub profile_out: Option<PathBuf>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: BacnetCommand) -> anyhow::Result<i32> {
    match cmd {
        BacnetCommand::Discover(a) => super::runtime()?.block_on(discover(a)),
    }
}

async fn discover(a: DiscoverArgs) -> anyhow::Result<i32> {
    use crate::sources::bacnet::{client, config, discover};
    let wait = crate::util::parse_duration(&a.wait).map_err(|e| anyhow::anyhow!("--wait: {e}"))?;
    let timeout =
        crate::util::parse_duration(&a.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?;
    let (host, port) = crate::util::split_host_port(&a.target, config::DEFAULT_PORT)
        .map_err(|e| anyhow::anyhow!("--target {}: {e}", a.target))?;
    let target = client::resolve(&host, port)
        .await
        .map_err(|e| anyhow::anyhow!("--target: {e}"))?;
    let socket = client::Endpoint::bind(&a.bind)
        .await
        .map_err(|e| anyhow::anyhow!("--bind {}: {e}", a.bind))?;
    let stop = tokio_util::sync::CancellationToken::new();
    let (ep, _rx) = client::Endpoint::start(socket, timeout, 2, stop.clone());
    let mut ep = ep.with_max_apdu(a.max_apdu);
    if let Some(b) = &a.bbmd {
        let (h, p) = crate::util::split_host_port(b, config::DEFAULT_PORT)
            .map_err(|e| anyhow::anyhow!("--bbmd {b}: {e}"))?;
        let addr = client::resolve(&h, p)
            .await
            .map_err(|e| anyhow::anyhow!("--bbmd: {e}"))?;
        ep.register_foreign(addr, std::time::Duration::from_secs(300), stop.clone());
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let devices = discover::discover(&ep, target, wait).await?;
    stop.cancel();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
    } else {
        print!("{}", discover::render(&devices));
    }
    if let Some(dir) = &a.profile_out {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("--profile-out {}: {e}", dir.display()))?;
        let today = jiff::Timestamp::now()
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .date()
            .to_string();
        let mut written = std::collections::BTreeSet::new();
        for d in &devices {
            let name = discover::profile_name(d);
            if !written.insert(name.clone()) {
                continue; // one profile per model
            }
            let path = dir.join(format!("{name}.yaml"));
            std::fs::write(&path, discover::profile_yaml(d, &today))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(if devices.is_empty() { 1 } else { 0 })
}
