//! Loading a site: the config, its profiles, the catalog of declared devices and the rules, with every
//! problem listed at once (`caretaker check` prints them; `caretaker run` refuses to start on any).

use crate::catalog::{Catalog, CatalogError, Profiles, profile};
use crate::config::SiteConfig;
use crate::diag::Diagnostic;
use crate::sources::modbus::Declared;
use std::path::Path;
use std::sync::Arc;

/// Everything a site is made of, validated.
pub struct Loaded {
    pub config: SiteConfig,
    pub catalog: Catalog,
    pub rules: Arc<crate::rules::RuleSet>,
}

/// Loads the site config, its profiles and declared devices, listing every problem found.
pub fn load(config_file: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let (config, mut errs) = SiteConfig::load_lenient(config_file);
    let Some(config) = config else {
        return Err(errs);
    };
    let config_ok = errs.is_empty();
    let (profiles, profile_errs) = profile::load_dirs(&config.profile_dirs);
    let profiles_ok = profile_errs.is_empty();
    let profiles_for_rules = profiles.clone();
    errs.extend(profile_errs);
    // Unknown profiles are only meaningful once every profile file loaded.
    let catalog = if profiles_ok {
        match build_catalog(&config, profiles) {
            Ok(c) => {
                errs.extend(crate::sources::modbus::check(
                    &config.file,
                    &modbus_devices(&config),
                    &c,
                ));
                let others: Vec<(usize, &str, &str)> = config
                    .devices
                    .iter()
                    .filter(|d| d.bacnet.is_none() && d.modbus.is_none())
                    .map(|d| (d.index, d.id.as_str(), d.profile.as_str()))
                    .collect();
                errs.extend(crate::sources::bacnet::check(
                    &config.file,
                    config.bacnet.is_some(),
                    &bacnet_devices(&config),
                    &others,
                    &c,
                ));
                Some(c)
            }
            Err(es) => {
                errs.extend(es);
                None
            }
        }
    } else {
        None
    };
    // Rules are checked against the profiles that loaded, even when other parts failed, so one run lists all.
    let devices: std::collections::BTreeMap<String, String> = config
        .devices
        .iter()
        .map(|d| (d.id.clone(), d.profile.clone()))
        .collect();
    let rule_cx = crate::rules::Context {
        profiles: &profiles_for_rules,
        devices: &devices,
        timezone: config.site.timezone.as_deref(),
    };
    let (rules, rule_errs) = crate::rules::load_dirs(&config.rule_dirs, &rule_cx);
    errs.extend(rule_errs);
    match catalog {
        Some(catalog) if errs.is_empty() && config_ok => Ok(Loaded {
            config,
            catalog,
            rules: Arc::new(rules),
        }),
        _ => Err(errs),
    }
}

/// The devices with a `modbus` table, as the Modbus source takes them.
pub fn modbus_devices(cfg: &SiteConfig) -> Vec<Declared<'_>> {
    cfg.devices
        .iter()
        .filter_map(|d| {
            d.modbus.as_ref().map(|modbus| Declared {
                index: d.index,
                id: &d.id,
                profile: &d.profile,
                modbus,
            })
        })
        .collect()
}

/// The devices with a `bacnet` table, as the BACnet source takes them.
pub fn bacnet_devices(cfg: &SiteConfig) -> Vec<crate::sources::bacnet::Declared<'_>> {
    cfg.devices
        .iter()
        .filter_map(|d| {
            d.bacnet
                .as_ref()
                .map(|bacnet| crate::sources::bacnet::Declared {
                    index: d.index,
                    id: &d.id,
                    profile: &d.profile,
                    bacnet,
                })
        })
        .collect()
}

/// Builds the catalog of a site: its profiles and its declared devices.
fn build_catalog(cfg: &SiteConfig, profiles: Profiles) -> Result<Catalog, Vec<Diagnostic>> {
    let mut cat = Catalog::new(&cfg.site.name, profiles);
    let mut errs = Vec::new();
    for d in &cfg.devices {
        match cat.add_device(&d.id, &d.profile, d.location.clone(), true) {
            Ok(idx) => {
                for (k, m) in cat.apply_overrides(idx, &d.scale, &d.disabled_points) {
                    errs.push(cfg.diag(&format!("devices[{}].{k}", d.index), m));
                }
            }
            Err(CatalogError::UnknownProfile(p)) => {
                let hint = crate::util::did_you_mean(&p, cat.profiles.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                errs.push(cfg.diag(
                    &format!("devices[{}].profile", d.index),
                    format!("unknown profile `{p}`{hint}"),
                ));
            }
            Err(e) => errs.push(cfg.diag(&format!("devices[{}].id", d.index), e.to_string())),
        }
    }
    if let Some(m) = &cfg.mqtt {
        for g in &m.sparkplug {
            if !cat.profiles.contains_key(&g.profile) {
                errs.push(cfg.diag(
                    &format!("mqtt.sparkplug[{}].profile", g.index),
                    format!("unknown profile `{}`", g.profile),
                ));
            }
        }
        for s in &m.subscriptions {
            match cat.profiles.get(&s.profile) {
                None => {
                    let hint = crate::util::did_you_mean(
                        &s.profile,
                        cat.profiles.keys().map(String::as_str),
                    )
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                    errs.push(cfg.diag(
                        &format!("mqtt.subscriptions[{}].profile", s.index),
                        format!("unknown profile `{}`{hint}", s.profile),
                    ));
                }
                Some(p) if !p.has_mqtt() => errs.push(cfg.diag(
                    &format!("mqtt.subscriptions[{}].profile", s.index),
                    format!(
                        "profile `{}` has no point with an `mqtt:` binding",
                        s.profile
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    if errs.is_empty() { Ok(cat) } else { Err(errs) }
}

#[cfg(test)]
mod tests {
    //! Loading a site with Modbus devices: config errors and the checks that need the profiles.
    #[test]
    fn bad_modbus_tables_are_reported_with_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("device_profiles");
        let cfg = dir.path().join("site.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"[site]
name = "s"
[state]
dir = "state"
[profiles]
dirs = ["{}"]

[[devices]]
id = "m1"
profile = "eastron-sdm630"
modbus = {{ url = "tcp://10.0.0.1:502", points = {{ energy_imprt = "60s" }} }}

[[devices]]
id = "m2"
profile = "eastron-sdm630"
modbus = {{ url = "udp://10.0.0.2", poll = "fast" }}

[[devices]]
id = "m3"
profile = "eastron-sdm630"
modbus = {{ url = "rtu:///dev/ttyUSB0", unit = 2, baud = 9600 }}

[[devices]]
id = "m4"
profile = "eastron-sdm630"
modbus = {{ url = "rtu:///dev/ttyUSB0", unit = 3, baud = 19200 }}
"#,
                profiles.display()
            ),
        )
        .unwrap();
        let errs = match super::load(&cfg) {
            Ok(_) => panic!("a bad config loaded"),
            Err(e) => e,
        };
        let find = |key: &str| {
            errs.iter()
                .find(|e| e.key == key)
                .unwrap_or_else(|| panic!("no error for {key}: {errs:#?}"))
        };
        let e = find("devices[1].modbus.url");
        assert_eq!(e.line, Some(16), "{e}");
        assert!(e.message.contains("tcp://host:port"), "{e}");
        assert!(find("devices[1].modbus.poll").message.contains("fast"));
        // Errors that need the profiles appear once the config itself is valid.
        assert!(errs.iter().all(|e| e.file == cfg));
        std::fs::write(
            &cfg,
            std::fs::read_to_string(&cfg)
                .unwrap()
                .replace("udp://10.0.0.2\", poll = \"fast\"", "tcp://10.0.0.2\""),
        )
        .unwrap();
        let errs = match super::load(&cfg) {
            Ok(_) => panic!("a bad config loaded"),
            Err(e) => e,
        };
        let e = find_in(&errs, "devices[0].modbus.points.energy_imprt");
        assert!(e.message.contains("did you mean `energy_import`"), "{e}");
        assert_eq!(e.line, Some(11), "{e}");
        let e = find_in(&errs, "devices[3].modbus.baud");
        assert!(e.message.contains("devices[2]"), "{e}");
    }

    #[test]
    fn an_unknown_key_in_a_modbus_table_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("site.toml");
        std::fs::write(
            &cfg,
            "[site]\nname = \"s\"\n[state]\ndir = \"state\"\n\n[[devices]]\nid = \"a\"\nprofile = \"p\"\n\n[[devices]]\nid = \"m\"\nprofile = \"p\"\nmodbus = { url = \"tcp://h\", bauds = 9600 }\n",
        )
        .unwrap();
        let errs = crate::config::SiteConfig::load(&cfg).unwrap_err();
        let e = find_in(&errs, "devices[1].modbus.bauds");
        assert_eq!(e.line, Some(13), "{e}");
        // A value of the wrong type names the same path.
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(&cfg, text.replace("bauds = 9600", "unit = 300")).unwrap();
        let errs = crate::config::SiteConfig::load(&cfg).unwrap_err();
        let e = find_in(&errs, "devices[1].modbus.unit");
        assert_eq!(e.line, Some(13), "{e}");
    }

    #[test]
    fn bacnet_devices_are_checked_against_the_section_and_the_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("device_profiles");
        let cfg = dir.path().join("site.toml");
        let text = format!(
            r#"[site]
name = "s"
[state]
dir = "state"
[profiles]
dirs = ["{}"]

[[devices]]
id = "ahu-5"
profile = "generic-bacnet-ahu"
bacnet = {{ address = "10.0.7.20:47808", device_instance = 1205, poll = "30s", cov = true }}

[[devices]]
id = "vav-1"
profile = "generic-bacnet-vav"

[[devices]]
id = "meter"
profile = "eastron-sdm630"
bacnet = {{ address = "10.0.7.21" }}
"#,
            profiles.display()
        );
        std::fs::write(&cfg, &text).unwrap();
        let errs = match super::load(&cfg) {
            Ok(_) => panic!("a bad config loaded"),
            Err(e) => e,
        };
        // The table itself first: the missing instance, with its line.
        let e = find_in(&errs, "devices[2].bacnet.device_instance");
        assert_eq!(e.line, Some(20), "{e}");
        std::fs::write(
            &cfg,
            text.replace(
                "address = \"10.0.7.21\"",
                "address = \"10.0.7.21\", device_instance = 7",
            ),
        )
        .unwrap();
        let errs = match super::load(&cfg) {
            Ok(_) => panic!("a bad config loaded"),
            Err(e) => e,
        };
        assert!(
            find_in(&errs, "devices[0].bacnet")
                .message
                .contains("no [bacnet] section"),
            "{errs:#?}"
        );
        let e = find_in(&errs, "devices[1].profile");
        assert!(e.message.contains("no `bacnet = {"), "{e}");
        assert_eq!(e.line, Some(15), "{e}");
        assert!(
            find_in(&errs, "devices[2].profile")
                .message
                .contains("no point with a `bacnet:` binding"),
            "{errs:#?}"
        );
        // With the section, a bacnet table for the VAV and the meter off BACnet, the site loads.
        let good = text
            .replace("[[devices]]\nid = \"ahu-5\"", "[bacnet]\nbind = \"0.0.0.0:47808\"\n\n[[devices]]\nid = \"ahu-5\"")
            .replace(
                "profile = \"generic-bacnet-vav\"\n",
                "profile = \"generic-bacnet-vav\"\nbacnet = { address = \"10.0.7.22\", device_instance = 3001 }\n",
            )
            .replace("bacnet = {{ address = \"10.0.7.21\" }}", "")
            .replace("bacnet = { address = \"10.0.7.21\" }\n", "");
        std::fs::write(&cfg, &good).unwrap();
        if let Err(errs) = super::load(&cfg) {
            panic!("{errs:#?}\n{good}");
        }
    }

    fn find_in<'a>(errs: &'a [crate::diag::Diagnostic], key: &str) -> &'a crate::diag::Diagnostic {
        errs.iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("no error for {key}: {errs:#?}"))
    }
}
