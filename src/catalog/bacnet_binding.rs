//! The `bacnet:` binding of a profile point (`bacnet: { object: "analog-input:1", property: "present-value" }`),
//! validated, and the BACnet object types and properties Caretaker names in files.

use serde::Deserialize;

/// The object types a point may be bound to (ASHRAE 135 clause 21, BACnetObjectType), plus `device` for the
/// device object itself (discovery reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    AnalogInput,
    AnalogOutput,
    AnalogValue,
    BinaryInput,
    BinaryOutput,
    BinaryValue,
    MultiStateInput,
    MultiStateOutput,
    MultiStateValue,
    Device,
}

impl ObjectType {
    /// The names a profile may use (not `device`).
    pub const POINT_TYPES: &'static [&'static str] = &[
        "analog-input",
        "analog-output",
        "analog-value",
        "binary-input",
        "binary-output",
        "binary-value",
        "multi-state-input",
        "multi-state-output",
        "multi-state-value",
    ];
    const ALL: [ObjectType; 10] = [
        ObjectType::AnalogInput,
        ObjectType::AnalogOutput,
        ObjectType::AnalogValue,
        ObjectType::BinaryInput,
        ObjectType::BinaryOutput,
        ObjectType::BinaryValue,
        ObjectType::MultiStateInput,
        ObjectType::MultiStateOutput,
        ObjectType::MultiStateValue,
        ObjectType::Device,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::AnalogInput => "analog-input",
            ObjectType::AnalogOutput => "analog-output",
            ObjectType::AnalogValue => "analog-value",
            ObjectType::BinaryInput => "binary-input",
            ObjectType::BinaryOutput => "binary-output",
            ObjectType::BinaryValue => "binary-value",
            ObjectType::MultiStateInput => "multi-state-input",
            ObjectType::MultiStateOutput => "multi-state-output",
            ObjectType::MultiStateValue => "multi-state-value",
            ObjectType::Device => "device",
        }
    }
    pub fn parse(s: &str) -> Option<ObjectType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
    /// The number on the wire (BACnetObjectType).
    pub fn code(self) -> u16 {
        match self {
            ObjectType::AnalogInput => 0,
            ObjectType::AnalogOutput => 1,
            ObjectType::AnalogValue => 2,
            ObjectType::BinaryInput => 3,
            ObjectType::BinaryOutput => 4,
            ObjectType::BinaryValue => 5,
            ObjectType::Device => 8,
            ObjectType::MultiStateInput => 13,
            ObjectType::MultiStateOutput => 14,
            ObjectType::MultiStateValue => 19,
        }
    }
    pub fn from_code(c: u16) -> Option<ObjectType> {
        Self::ALL.into_iter().find(|t| t.code() == c)
    }
    pub fn is_binary(self) -> bool {
        matches!(
            self,
            ObjectType::BinaryInput | ObjectType::BinaryOutput | ObjectType::BinaryValue
        )
    }
    pub fn is_analog(self) -> bool {
        matches!(
            self,
            ObjectType::AnalogInput | ObjectType::AnalogOutput | ObjectType::AnalogValue
        )
    }
}

/// An object of a device: type and instance (22 bits on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub kind: ObjectType,
    pub instance: u32,
}

/// The largest object instance (2^22 - 1; 4194303 itself means "unconfigured").
pub const MAX_INSTANCE: u32 = 4_194_302;

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.instance)
    }
}

/// Properties a point may read (BACnetPropertyIdentifier), by their standard hyphenated names.
pub const PROPERTIES: &[(&str, u32)] = &[
    ("present-value", 85),
    ("relinquish-default", 104),
    ("cov-increment", 22),
    ("high-limit", 45),
    ("low-limit", 59),
    ("min-pres-value", 69),
    ("max-pres-value", 65),
    ("number-of-states", 74),
    ("out-of-service", 81),
    ("event-state", 36),
    ("reliability", 103),
    ("units", 117),
    ("elapsed-active-time", 33),
    ("change-of-state-count", 15),
    ("feedback-value", 40),
    ("deadband", 25),
];

pub const PRESENT_VALUE: u32 = 85;

/// A validated `bacnet:` binding.
#[derive(Debug, Clone, PartialEq)]
pub struct BacnetBinding {
    pub object: ObjectId,
    /// Property identifier on the wire (85 = present-value).
    pub property: u32,
}

impl BacnetBinding {
    pub fn property_name(&self) -> &'static str {
        PROPERTIES
            .iter()
            .find(|(_, c)| *c == self.property)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// The file form.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBacnetBinding {
    pub object: String,
    #[serde(default)]
    pub property: Option<String>,
}

/// Parses `analog-input:1`.
pub fn parse_object(text: &str) -> Result<ObjectId, String> {
    let Some((kind, inst)) = text.rsplit_once(':') else {
        return Err(format!(
            "`{text}`: write the object as TYPE:INSTANCE, e.g. analog-input:1"
        ));
    };
    let kind = match ObjectType::parse(kind) {
        Some(k) if k != ObjectType::Device => k,
        _ => {
            let hint = crate::util::did_you_mean(kind, ObjectType::POINT_TYPES.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "unknown object type `{kind}`{hint}; expected one of {}",
                ObjectType::POINT_TYPES.join(", ")
            ));
        }
    };
    let instance = match inst.trim().parse::<u32>() {
        Ok(i) if i <= MAX_INSTANCE => i,
        Ok(i) => {
            return Err(format!("instance {i} out of range (0..={MAX_INSTANCE})"));
        }
        Err(_) if inst.trim().is_empty() => {
            return Err(format!(
                "`{text}`: missing instance number after `:`, e.g. {}:1",
                kind.as_str()
            ));
        }
        Err(_) => return Err(format!("`{inst}` is not an instance number")),
    };
    Ok(ObjectId { kind, instance })
}

impl RawBacnetBinding {
    /// Errors are `(key, message)` pairs.
    pub fn validate(&self) -> Result<BacnetBinding, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let object = parse_object(&self.object).map_err(|e| errs.push(("bacnet.object".into(), e)));
        let name = self.property.as_deref().unwrap_or("present-value");
        let property = match PROPERTIES.iter().find(|(n, _)| *n == name) {
            Some((_, c)) => Some(*c),
            None => {
                let hint = crate::util::did_you_mean(name, PROPERTIES.iter().map(|(n, _)| *n))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                errs.push((
                    "bacnet.property".into(),
                    format!("unknown or non-numeric property `{name}`{hint}"),
                ));
                None
            }
        };
        match (object, property) {
            (Ok(object), Some(property)) if errs.is_empty() => {
                Ok(BacnetBinding { object, property })
            }
            _ => Err(errs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_and_properties_parse_with_clear_errors() {
        let b = RawBacnetBinding {
            object: "analog-input:1".into(),
            property: None,
        }
        .validate()
        .unwrap();
        assert_eq!(b.object.kind, ObjectType::AnalogInput);
        assert_eq!((b.object.instance, b.property), (1, PRESENT_VALUE));
        assert_eq!(b.object.to_string(), "analog-input:1");
        let e = parse_object("analog-inpt:1").unwrap_err();
        assert!(e.contains("did you mean `analog-input`"), "{e}");
        assert!(
            parse_object("analog-input")
                .unwrap_err()
                .contains("TYPE:INSTANCE")
        );
        assert!(
            parse_object("analog-input:")
                .unwrap_err()
                .contains("missing instance")
        );
        assert!(
            parse_object("binary-value:4194303")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_object("device:1").is_err());
        let errs = RawBacnetBinding {
            object: "x:1".into(),
            property: Some("present-valu".into()),
        }
        .validate()
        .unwrap_err();
        let keys: Vec<_> = errs.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(keys, ["bacnet.object", "bacnet.property"]);
        assert!(errs[1].1.contains("did you mean `present-value`"));
        for t in ObjectType::ALL {
            assert_eq!(ObjectType::from_code(t.code()), Some(t));
        }
    }
}
