//! Brick Schema classes (<https://brickschema.org>): the role vocabulary of points (`brick:
//! Supply_Air_Temperature_Sensor`) and equipment (`brick: AHU`) in profiles, which rules address instead of
//! vendor point names. The class list and its `rdfs:subClassOf` links are a data file generated once from the
//! `brickschema` package's Brick.ttl (`scripts/eval/brick_classes.py`; version in the file's header), so the
//! build does not depend on Python or on parsing RDF.

use std::collections::HashMap;
use std::sync::OnceLock;

const TEXT: &str = include_str!("brick_classes.txt");

/// The shipped Brick classes and their direct superclasses.
pub struct BrickClasses {
    parents: HashMap<&'static str, Vec<&'static str>>,
}

/// The shipped class list (parsed once).
pub fn classes() -> &'static BrickClasses {
    static C: OnceLock<BrickClasses> = OnceLock::new();
    C.get_or_init(|| {
        let parents = TEXT
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let mut w = l.split_whitespace();
                let name = w.next().unwrap_or_default();
                (name, w.collect())
            })
            .collect();
        BrickClasses { parents }
    })
}

/// The Brick version the list was generated from (from the data file's header).
pub fn version() -> &'static str {
    TEXT.lines()
        .find_map(|l| l.strip_prefix("# Generated from Brick "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("?")
}

impl BrickClasses {
    pub fn len(&self) -> usize {
        self.parents.len()
    }
    pub fn is_empty(&self) -> bool {
        self.parents.is_empty()
    }
    pub fn contains(&self, class: &str) -> bool {
        self.parents.contains_key(class)
    }

    /// Whether `class` is `ancestor` or one of its subclasses (a `DOAS` is an `AHU`... if Brick says so).
    pub fn is_a(&self, class: &str, ancestor: &str) -> bool {
        let mut todo = vec![class];
        let mut seen = 0;
        while let Some(c) = todo.pop() {
            if c == ancestor {
                return true;
            }
            seen += 1;
            if seen > 10_000 {
                return false; // a cycle in a hand-edited list: never loop forever
            }
            if let Some(ps) = self.parents.get(c) {
                todo.extend(ps.iter().copied());
            }
        }
        false
    }

    /// `Ok` for a known class, else the message for a diagnostic (with the nearest class name).
    pub fn check(&self, class: &str) -> Result<(), String> {
        if self.contains(class) {
            return Ok(());
        }
        let hint = crate::util::did_you_mean(class, self.parents.keys().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        Err(format!(
            "unknown Brick class `{class}`{hint}: not among the {} classes of Brick {} (src/catalog/brick_classes.txt)",
            self.len(),
            version()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_knows_the_air_handler_roles_and_their_parents() {
        let c = classes();
        assert!(c.len() > 1000, "{}", c.len());
        assert_eq!(version(), "1.4");
        for k in [
            "AHU",
            "Supply_Air_Temperature_Sensor",
            "Mixed_Air_Temperature_Sensor",
            "Return_Air_Temperature_Sensor",
            "Outside_Air_Temperature_Sensor",
            "Supply_Air_Static_Pressure_Sensor",
            "Supply_Air_Static_Pressure_Setpoint",
            "Supply_Air_Temperature_Setpoint",
        ] {
            assert!(c.contains(k), "{k}");
        }
        assert!(c.is_a("Mixed_Air_Temperature_Sensor", "Temperature_Sensor"));
        assert!(c.is_a("Mixed_Air_Temperature_Sensor", "Point"));
        assert!(!c.is_a("Mixed_Air_Temperature_Sensor", "Pressure_Sensor"));
        let e = c.check("Mixed_Air_Temprature_Sensor").unwrap_err();
        assert!(
            e.contains("did you mean `Mixed_Air_Temperature_Sensor`"),
            "{e}"
        );
    }
}
