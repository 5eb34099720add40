//! The catalog: profiles plus devices, flattened into points with dense integer ids.
//!
//! Every point of every device gets a [`PointId`] when its device becomes known (declared in the site config,
//! or first seen on an MQTT topic); hot paths carry ids, never strings. A device's points are contiguous ids in
//! profile order. The catalog only grows while the daemon runs: ids are never reused, so a reading's id stays
//! valid. It is shared as [`SharedCatalog`]; writers (sources meeting a new device) are rare, readers take the
//! read lock once per batch.

pub mod bacnet_binding;
pub mod brick;
pub mod modbus_binding;
pub mod profile;
pub mod units;

use crate::line_protocol;
pub use profile::{PointDef, Profile, Profiles};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
pub use units::{Category, Kind, Unit};

/// Tag keys Caretaker sets itself; location keys and topic captures may not reuse them.
pub const RESERVED_TAGS: &[&str] = &["site", "device", "profile"];

/// Dense id of one point of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PointId(pub u32);

/// Dense id of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceIdx(pub u32);

/// One installed device.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub profile: Arc<Profile>,
    /// Location tags (building, floor, room, ...).
    pub location: BTreeMap<String, String>,
    /// Declared in the site config (known before its first message).
    pub declared: bool,
    /// Replaced or removed by a configuration reload: its ids stay valid for readings still in flight, but it is
    /// no longer listed ([`Catalog::devices`]) nor found by id, and rules no longer bind it.
    pub retired: bool,
    pub first_point: u32,
    /// Line-protocol series key, escaped: `measurement,tag=value,...` with tags sorted by key.
    pub series: String,
    /// Escaped field key per point, in profile order.
    pub field_keys: Vec<String>,
}

impl Device {
    pub fn point_ids(&self) -> impl Iterator<Item = PointId> + '_ {
        (self.first_point..self.first_point + self.profile.points.len() as u32).map(PointId)
    }
    pub fn point_id(&self, name: &str) -> Option<PointId> {
        self.profile
            .point_index(name)
            .map(|i| PointId(self.first_point + i as u32))
    }
}

#[derive(Debug, Clone, Copy)]
struct PointRef {
    device: u32,
    index: u16,
}

/// All devices and points of the site.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub site: String,
    pub profiles: Profiles,
    devices: Vec<Device>,
    by_id: HashMap<String, u32>,
    points: Vec<PointRef>,
    /// Points a device's `disabled_points` turned off: no rule binds them (a `stale` rule would fire forever).
    disabled: std::collections::HashSet<u32>,
}

pub type SharedCatalog = Arc<RwLock<Catalog>>;

/// Why a device could not be added.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CatalogError {
    #[error("unknown profile `{0}`")]
    UnknownProfile(String),
    #[error("device `{id}` uses profile `{existing}`, not `{requested}`")]
    ProfileConflict {
        id: String,
        existing: String,
        requested: String,
    },
}

impl Catalog {
    pub fn new(site: &str, profiles: Profiles) -> Self {
        Catalog {
            site: site.to_string(),
            profiles,
            devices: Vec::new(),
            by_id: HashMap::new(),
            points: Vec::new(),
            disabled: Default::default(),
        }
    }

    /// Adds a device (or returns the existing one with the same id and profile).
    pub fn add_device(
        &mut self,
        id: &str,
        profile: &str,
        location: BTreeMap<String, String>,
        declared: bool,
    ) -> Result<DeviceIdx, CatalogError> {
        if let Some(&i) = self.by_id.get(id) {
            let d = &self.devices[i as usize];
            if d.profile.name != profile {
                return Err(CatalogError::ProfileConflict {
                    id: id.to_string(),
                    existing: d.profile.name.clone(),
                    requested: profile.to_string(),
                });
            }
            return Ok(DeviceIdx(i));
        }
        let profile = self
            .profiles
            .get(profile)
            .cloned()
            .ok_or_else(|| CatalogError::UnknownProfile(profile.into()))?;
        Ok(self.insert(id, profile, location, declared))
    }

    /// Adds a device with a profile of its own that is not in the library: a library profile plus points the
    /// device announced itself (a Sparkplug BIRTH's unmapped metrics). It keeps the library profile's name, so
    /// rules written for that profile apply; its extra points come after the library's, so their ids do too.
    /// An existing device with that id is returned as it is (its points never change: ids are never reused).
    pub fn add_device_with_profile(
        &mut self,
        id: &str,
        profile: Arc<Profile>,
        location: BTreeMap<String, String>,
        declared: bool,
    ) -> Result<DeviceIdx, CatalogError> {
        if let Some(&i) = self.by_id.get(id) {
            let d = &self.devices[i as usize];
            if d.profile.name != profile.name {
                return Err(CatalogError::ProfileConflict {
                    id: id.to_string(),
                    existing: d.profile.name.clone(),
                    requested: profile.name.clone(),
                });
            }
            return Ok(DeviceIdx(i));
        }
        Ok(self.insert(id, profile, location, declared))
    }

    fn insert(
        &mut self,
        id: &str,
        profile: Arc<Profile>,
        location: BTreeMap<String, String>,
        declared: bool,
    ) -> DeviceIdx {
        let idx = self.devices.len() as u32;
        let first_point = self.points.len() as u32;
        for index in 0..profile.points.len() {
            self.points.push(PointRef {
                device: idx,
                index: index as u16,
            });
        }
        let series = series_key(&self.site, id, &profile, &location);
        let field_keys = profile
            .points
            .iter()
            .map(|p| line_protocol::escape_key(&p.name))
            .collect();
        self.devices.push(Device {
            id: id.to_string(),
            profile,
            location,
            declared,
            retired: false,
            first_point,
            series,
            field_keys,
        });
        self.by_id.insert(id.to_string(), idx);
        DeviceIdx(idx)
    }

    /// A declared device's overrides from the site config: `scale` multiplies a point's conversion (scale,
    /// offset and valid range: a CT ratio), `disabled` points lose their MQTT and Modbus bindings (never read,
    /// never stored; point ids stay as they are). The device gets its own copy of the profile. Unknown point
    /// names come back as (`scale.NAME` or `disabled_points[i]`, message).
    pub fn apply_overrides(
        &mut self,
        idx: DeviceIdx,
        scale: &BTreeMap<String, f64>,
        disabled: &[String],
    ) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if scale.is_empty() && disabled.is_empty() {
            return errs;
        }
        let d = &mut self.devices[idx.0 as usize];
        let mut p = (*d.profile).clone();
        let unknown = |p: &Profile, name: &str| {
            let hint = crate::util::did_you_mean(name, p.points.iter().map(|x| x.name.as_str()))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            format!("profile `{}` has no point `{name}`{hint}", p.name)
        };
        for (name, f) in scale {
            match p.point_index(name) {
                Some(i) => {
                    let pt = &mut p.points[i];
                    pt.scale *= f;
                    pt.offset *= f;
                    pt.valid_range = pt.valid_range.map(|(lo, hi)| {
                        let (a, b) = (lo * f, hi * f);
                        (a.min(b), a.max(b))
                    });
                }
                None => errs.push((format!("scale.{name}"), unknown(&p, name))),
            }
        }
        for (j, name) in disabled.iter().enumerate() {
            match p.point_index(name) {
                Some(i) => {
                    p.points[i].mqtt = None;
                    p.points[i].modbus = None;
                    self.disabled.insert(d.first_point + i as u32);
                }
                None => errs.push((format!("disabled_points[{j}]"), unknown(&p, name))),
            }
        }
        d.profile = Arc::new(p);
        errs
    }

    /// Turned off by the device's `disabled_points`.
    pub fn is_disabled(&self, p: PointId) -> bool {
        self.disabled.contains(&p.0)
    }

    pub fn device(&self, idx: DeviceIdx) -> &Device {
        &self.devices[idx.0 as usize]
    }
    pub fn device_by_id(&self, id: &str) -> Option<(DeviceIdx, &Device)> {
        self.by_id
            .get(id)
            .map(|&i| (DeviceIdx(i), &self.devices[i as usize]))
    }
    /// The devices in service (not [`Device::retired`]), with their dense index.
    pub fn devices(&self) -> impl Iterator<Item = (DeviceIdx, &Device)> {
        self.all_devices().filter(|(_, d)| !d.retired)
    }
    /// Every device entry ever added, retired ones included, in index order (for dense per-device tables).
    pub fn all_devices(&self) -> impl Iterator<Item = (DeviceIdx, &Device)> {
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| (DeviceIdx(i as u32), d))
    }
    /// Device entries, retired ones included (the length of a dense per-device table).
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }
    pub fn point_count(&self) -> usize {
        self.points.len()
    }

    /// The device and definition of a point. Panics on an id this catalog never issued (a bug, not input).
    #[inline]
    pub fn point(&self, id: PointId) -> (DeviceIdx, &Device, &PointDef) {
        let r = self.points[id.0 as usize];
        let d = &self.devices[r.device as usize];
        (DeviceIdx(r.device), d, &d.profile.points[r.index as usize])
    }

    /// Index of a point within its device's profile.
    #[inline]
    pub fn point_index(&self, id: PointId) -> (DeviceIdx, usize) {
        let r = self.points[id.0 as usize];
        (DeviceIdx(r.device), r.index as usize)
    }

    /// `device/point` for logs.
    pub fn point_name(&self, id: PointId) -> String {
        let (_, d, p) = self.point(id);
        format!("{}/{}", d.id, p.name)
    }

    pub fn shared(self) -> SharedCatalog {
        Arc::new(RwLock::new(self))
    }

    /// Takes the devices and profiles of a freshly loaded catalog (a configuration reload) while keeping the
    /// ids of every device that did not change: same id, same profile (by content), same location, same
    /// declared-ness. A changed device gets a new entry (new ids) and its old entry is retired; a device no
    /// longer declared is retired; a device discovered on MQTT stays while its profile is unchanged. The catalog
    /// still only grows, so a reading already in flight with an old id still resolves.
    pub fn reload_from(&mut self, new: &Catalog) -> CatalogDiff {
        let mut diff = CatalogDiff::default();
        let live: Vec<(u32, String)> = self
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| !d.retired)
            .map(|(i, d)| (i as u32, d.id.clone()))
            .collect();
        for (i, id) in live {
            let old = &self.devices[i as usize];
            let keep = match new.device_by_id(&id) {
                Some((_, n)) => {
                    n.declared == old.declared
                        && *n.profile == *old.profile
                        && n.location == old.location
                }
                // Discovered on MQTT: kept while its profile is the same; otherwise found again on its next message.
                None => {
                    !old.declared
                        && new
                            .profiles
                            .get(&old.profile.name)
                            .is_some_and(|p| **p == *old.profile)
                }
            };
            if keep {
                diff.kept.push(id);
                continue;
            }
            self.devices[i as usize].retired = true;
            self.by_id.remove(&id);
            if new.device_by_id(&id).is_some() {
                diff.changed.push(id);
            } else {
                diff.removed.push(id);
            }
        }
        self.profiles = new.profiles.clone();
        for (_, n) in new.devices() {
            if self.by_id.contains_key(&n.id) {
                continue;
            }
            if !diff.changed.contains(&n.id) {
                diff.added.push(n.id.clone());
            }
            // The profile is in `new.profiles`, now ours: cannot fail.
            let _ = self.add_device(&n.id, &n.profile.name, n.location.clone(), n.declared);
        }
        diff
    }
}

/// What a reload did to the catalog's devices (ids).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogDiff {
    /// Unchanged: same entry, same point ids, state kept.
    pub kept: Vec<String>,
    /// New device ids.
    pub added: Vec<String>,
    /// Same id, new profile, location or declaration: a new entry with new point ids.
    pub changed: Vec<String>,
    /// Gone from the config (or a discovered device whose profile changed).
    pub removed: Vec<String>,
}

impl CatalogDiff {
    /// Whether a device id kept its entry.
    pub fn is_kept(&self, id: &str) -> bool {
        self.kept.iter().any(|k| k == id)
    }
}

/// The escaped line-protocol series key of a device: measurement = category, tags sorted by key.
fn series_key(
    site: &str,
    device: &str,
    profile: &Profile,
    location: &BTreeMap<String, String>,
) -> String {
    let mut tags: BTreeMap<&str, &str> = location
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    tags.insert("site", site);
    tags.insert("device", device);
    tags.insert("profile", &profile.name);
    line_protocol::series_key(profile.category.as_str(), tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the exact bytes of series keys and field keys (line protocol escaping of every special character).
    /// A newline or carriage return becomes an escaped space (issue 13: it used to be a plain space, which ended
    /// the tag); a backslash before an ordinary character stays as it is.
    #[test]
    fn series_and_field_keys_keep_their_exact_bytes() {
        let text = "schema: 1\nname: odd\ncategory: environment\npoints:\n  - { name: t_a, unit: degC, kind: gauge, mqtt: { json: /t } }\n  - { name: plain, unit: degC, kind: gauge, mqtt: { json: /p } }\n";
        let p = profile::parse_profile(std::path::Path::new("odd.yaml"), text).unwrap();
        let mut c = Catalog::new(
            "north campus,\n\"x\"",
            BTreeMap::from([("odd".to_string(), Arc::new(p))]),
        );
        let loc = BTreeMap::from([
            ("building".to_string(), "Main, East".to_string()),
            ("floor".to_string(), String::new()),
            ("room key".to_string(), "a=1\\2\r".to_string()),
            ("zone".to_string(), "β 2".to_string()),
        ]);
        let i = c.add_device("r=1 x", "odd", loc, true).unwrap();
        let d = c.device(i);
        assert_eq!(
            d.series,
            "environment,building=Main\\,\\ East,device=r\\=1\\ x,profile=odd,room\\ key=a\\=1\\2\\ ,\
             site=north\\ campus\\,\\ \"x\",zone=β\\ 2"
        );
        assert_eq!(d.field_keys, ["t_a", "plain"]);
    }
}
