//! The catalog: profiles plus devices, flattened into points with dense integer ids.
//!
//! Every point of every device gets a [`PointId`] when its device becomes known (declared in the site config,
//! or first seen on an MQTT topic); hot paths carry ids, never strings. A device's points are contiguous ids in
//! profile order. The catalog only grows while the daemon runs: ids are never reused, so a reading's id stays
//! valid. It is shared as [`SharedCatalog`]; writers (sources meeting a new device) are rare, readers take the
//! read lock once per batch.

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
            first_point,
            series,
            field_keys,
        });
        self.by_id.insert(id.to_string(), idx);
        DeviceIdx(idx)
    }

    pub fn device(&self, idx: DeviceIdx) -> &Device {
        &self.devices[idx.0 as usize]
    }
    pub fn device_by_id(&self, id: &str) -> Option<(DeviceIdx, &Device)> {
        self.by_id
            .get(id)
            .map(|&i| (DeviceIdx(i), &self.devices[i as usize]))
    }
    pub fn devices(&self) -> impl Iterator<Item = (DeviceIdx, &Device)> {
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| (DeviceIdx(i as u32), d))
    }
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
