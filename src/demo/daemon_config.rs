//! The daemon's config for a running simulation, and where the shipped profiles and rules are found.

use super::simulate::{
    self,
    site::{SiteSpec, Transport},
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Finds a shipped folder (`device_profiles`, `rules`) for a demo started anywhere: the current folder (a source
/// checkout), next to the binary's `share/caretaker`, the system's `/usr/share/caretaker`, then the source tree
/// this binary was built from.
pub fn find_shipped(name: &str) -> Option<PathBuf> {
    let mut c = vec![PathBuf::from(name)];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(prefix) = exe.parent().and_then(Path::parent) {
            c.push(prefix.join("share/caretaker").join(name));
        }
    }
    c.push(Path::new("/usr/share/caretaker").join(name));
    c.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(name));
    c.into_iter()
        .find(|p| p.is_dir())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The daemon's config for a running simulation: every device declared, MQTT subscriptions derived from the
/// devices' topics (the level naming the device becomes `{device}`), Modbus and BACnet devices at their bound
/// addresses (with `[bacnet]` when there is one).
pub fn daemon_config(
    spec: &SiteSpec,
    running: &simulate::Running,
    broker_port: u16,
    state: &Path,
    profiles: &Path,
    rules: Option<&Path>,
    speed: f64,
) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "[site]\nname = {}\ntimezone = {}\n\n[state]\ndir = {}\n\n[profiles]\ndirs = [{}]\n\n",
        toml_str(&spec.name),
        toml_str(&spec.timezone_name),
        toml_str(&state.display().to_string()),
        toml_str(&profiles.display().to_string())
    ));
    if let Some(r) = rules {
        t.push_str(&format!(
            "[rules]\ndirs = [{}]\n\n",
            toml_str(&r.display().to_string())
        ));
    }
    let mut subs = BTreeSet::new();
    for d in &running.devices {
        if let Transport::Mqtt { topic } = &d.transport {
            let template: Vec<&str> = topic
                .split('/')
                .map(|l| if l == d.id { "{device}" } else { l })
                .collect();
            subs.insert((template.join("/"), d.profile.clone()));
        }
    }
    if !subs.is_empty() {
        t.push_str(&format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\nclient_id = \"caretaker-demo\"\nkeep_alive = \"10s\"\nreconnect_max_backoff = \"2s\"\n\n"
        ));
        for (topic, profile) in &subs {
            t.push_str(&format!(
                "[[mqtt.subscriptions]]\ntopic = {}\nprofile = {}\n\n",
                toml_str(topic),
                toml_str(profile)
            ));
        }
    }
    t.push_str("[pipeline]\nshutdown_timeout = \"3s\"\n\n[energy]\n\n");
    if !running.bacnet_addrs.is_empty() {
        // The daemon's BACnet endpoint: any free loopback port (the devices answer to wherever a request came from).
        t.push_str("[bacnet]\nbind = \"127.0.0.1:0\"\n\n");
    }
    for d in &running.devices {
        t.push_str(&format!(
            "[[devices]]\nid = {}\nprofile = {}\n",
            toml_str(&d.id),
            toml_str(&d.profile)
        ));
        if !d.location.is_empty() {
            let loc: Vec<String> = d
                .location
                .iter()
                .map(|(k, v)| format!("{k} = {}", toml_str(v)))
                .collect();
            t.push_str(&format!("location = {{ {} }}\n", loc.join(", ")));
        }
        if let (Transport::Modbus { unit, poll, .. }, Some(addr)) =
            (&d.transport, running.modbus_addrs.get(&d.id))
        {
            // Polls run on the real clock: scale the period so the simulated interval stays what the site says.
            let real = Duration::from_secs_f64((poll.as_secs_f64() / speed).max(0.1));
            t.push_str(&format!(
                "modbus = {{ url = \"tcp://{addr}\", unit = {unit}, poll = \"{}ms\", timeout = \"500ms\" }}\n",
                real.as_millis()
            ));
        }
        if let (
            Transport::Bacnet {
                device_instance,
                poll,
                ..
            },
            Some((addr, _)),
        ) = (&d.transport, running.bacnet_addrs.get(&d.id))
        {
            // Scaled like Modbus polls; COV notifications come in between.
            let real = Duration::from_secs_f64((poll.as_secs_f64() / speed).max(0.1));
            t.push_str(&format!(
                "bacnet = {{ address = \"{addr}\", device_instance = {device_instance}, poll = \"{}ms\", cov = true }}\n",
                real.as_millis()
            ));
        }
        t.push('\n');
    }
    t
}

/// The demo's `[http]` section: the API and the web console on loopback, one operator token (read from
/// `token_file`), and the public repair form on, so every page of the console can be tried in a browser.
pub fn http_section(port: u16, token_file: &Path) -> String {
    format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\nrequests_public = true\n\n[[http.tokens]]\nname = \"demo-operator\"\nrole = \"operator\"\ntoken_file = {}\n\n",
        toml_str(&token_file.display().to_string())
    )
}

/// A fresh random token for the demo's console (32 hex digits), from the OS's random source.
pub fn new_token() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No OS randomness (never seen): fall back to the process's own generator; the token only guards loopback.
        b.iter_mut().for_each(|x| *x = fastrand::u8(..));
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The console's port: 9464 (the daemon's usual one) when free, else any free loopback port. The listener comes
/// back too: hold it until just before the daemon binds, so a second demo starting at the same time sees the port
/// taken and picks another.
pub fn console_port() -> (u16, Option<std::net::TcpListener>) {
    match std::net::TcpListener::bind(("127.0.0.1", 9464))
        .or_else(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
    {
        Ok(l) => (l.local_addr().map(|a| a.port()).unwrap_or(9464), Some(l)),
        Err(_) => (9464, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::DEMO_SITE;
    use std::collections::BTreeMap;

    #[test]
    fn the_daemon_config_declares_every_device_and_derives_subscriptions() {
        let spec = SiteSpec::parse(Path::new("site.toml"), DEMO_SITE).unwrap();
        let running_devices = spec.devices.clone();
        let mut addrs = BTreeMap::new();
        addrs.insert(
            "ahu-1".to_string(),
            "127.0.0.1:40001".parse::<std::net::SocketAddr>().unwrap(),
        );
        let mut bacnet_addrs = BTreeMap::new();
        bacnet_addrs.insert(
            "ahu-bacnet-1".to_string(),
            (
                "127.0.0.1:40002".parse::<std::net::SocketAddr>().unwrap(),
                Default::default(),
            ),
        );
        let running = simulate::Running {
            status: Default::default(),
            faults: vec![],
            modbus_addrs: addrs,
            bacnet_addrs,
            devices: running_devices,
            task: tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .spawn(async {}),
        };
        let text = daemon_config(
            &spec,
            &running,
            1883,
            Path::new("/tmp/st"),
            Path::new("/p"),
            None,
            600.0,
        );
        let v: toml::Table = text.parse().unwrap();
        let devices = v["devices"].as_array().unwrap();
        assert_eq!(devices.len(), spec.devices.len());
        let topics: Vec<&str> = v["mqtt"]["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["topic"].as_str().unwrap())
            .collect();
        assert!(
            topics.contains(&"campus/main/1/{device}/telemetry"),
            "{topics:?}"
        );
        assert!(topics.contains(&"zigbee2mqtt/leak/{device}"), "{topics:?}");
        let ahu = devices
            .iter()
            .find(|d| d["id"].as_str() == Some("ahu-1"))
            .unwrap();
        // 60 s simulated at 600x is polled every 100 ms of real time.
        assert_eq!(ahu["modbus"]["url"].as_str(), Some("tcp://127.0.0.1:40001"));
        assert_eq!(ahu["modbus"]["poll"].as_str(), Some("100ms"));
        assert_eq!(ahu["location"]["room"].as_str(), Some("ahu-1"));
        // The BACnet AHU: its address, instance, a scaled poll and COV; the daemon's endpoint on loopback.
        assert_eq!(v["bacnet"]["bind"].as_str(), Some("127.0.0.1:0"));
        let bac = devices
            .iter()
            .find(|d| d["id"].as_str() == Some("ahu-bacnet-1"))
            .unwrap();
        assert_eq!(bac["profile"].as_str(), Some("generic-bacnet-ahu"));
        assert_eq!(bac["bacnet"]["address"].as_str(), Some("127.0.0.1:40002"));
        assert_eq!(bac["bacnet"]["device_instance"].as_integer(), Some(3001));
        assert_eq!(bac["bacnet"]["poll"].as_str(), Some("100ms"));
        assert_eq!(bac["bacnet"]["cov"].as_bool(), Some(true));
    }
}
