//! Where a point's value is in a JSON payload: the first of its binding's pointers that is present (alternatives
//! for one value in several envelopes, like Shelly's `status/switch:0` and `events/rpc` NotifyStatus), and
//! arrays summed when the binding says `array: sum` (Tasmota's per-channel `"Power":[12,0]`).

use crate::catalog::profile::{MqttBinding, MqttValue, Profile};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// What a profile reads from a JSON payload, compiled once per profile: the pointers of its timestamp and its
/// points as a tree of keys. A payload is then parsed in one pass that keeps only the values at those pointers;
/// everything else is skipped without being built (no map, no key string, no value allocated for it). On a
/// backlog drain building a whole `serde_json::Value` per message (a map of owned keys) and walking it was the
/// largest cost of the MQTT task. Results are those of parsing the whole document and looking the pointers up
/// (duplicate keys: the last one wins, as in `Value`); a test compares the two.
#[derive(Debug, Default)]
pub struct JsonPlan {
    root: Node,
    slots: usize,
    /// Slot of the timestamp pointer.
    pub timestamp: Option<usize>,
    /// Per profile point, the slots of its pointers in the order they are tried (empty for a raw point).
    pub points: Vec<Vec<usize>>,
}

#[derive(Debug, Default)]
struct Node {
    /// The value here is wanted whole.
    slot: Option<usize>,
    children: Vec<Child>,
}

#[derive(Debug)]
struct Child {
    key: String,
    /// The key as an array index, when it is one.
    index: Option<usize>,
    node: Node,
}

impl JsonPlan {
    pub fn new(profile: &Profile) -> Self {
        let mut plan = JsonPlan::default();
        plan.timestamp = profile.timestamp.as_ref().and_then(|t| plan.add(&t.json));
        plan.points = profile
            .points
            .iter()
            .map(|p| match &p.mqtt {
                Some(b) if matches!(b.source, MqttValue::Json(_)) => {
                    b.pointers().filter_map(|ptr| plan.add(ptr)).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        plan
    }

    /// Adds a pointer; `None` for one that can never match (no leading `/`).
    fn add(&mut self, pointer: &str) -> Option<usize> {
        let mut node = &mut self.root;
        if !pointer.is_empty() {
            for raw in pointer.strip_prefix('/')?.split('/') {
                let key = raw.replace("~1", "/").replace("~0", "~");
                let at = match node.children.iter().position(|c| c.key == key) {
                    Some(i) => i,
                    None => {
                        node.children.push(Child {
                            index: array_index(&key),
                            key,
                            node: Node::default(),
                        });
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at].node;
            }
        }
        Some(*node.slot.get_or_insert_with(|| {
            self.slots += 1;
            self.slots - 1
        }))
    }

    /// Parses `payload` and returns the values at the plan's pointers (by slot; `None` where absent).
    pub fn extract(&self, payload: &[u8]) -> Result<Vec<Option<Value>>, serde_json::Error> {
        let mut out = vec![None; self.slots];
        let mut de = serde_json::Deserializer::from_slice(payload);
        NodeSeed {
            node: &self.root,
            out: &mut out,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(out)
    }

    /// The value of a point: the first of its pointers present and not null (as [`lookup`]).
    pub fn point<'a>(&self, values: &'a [Option<Value>], point: usize) -> Option<&'a Value> {
        self.points
            .get(point)?
            .iter()
            .filter_map(|&s| values[s].as_ref())
            .find(|v| !v.is_null())
    }
}

/// Empties the slots under `node` (a duplicate key replaces what an earlier one held).
fn clear(node: &Node, out: &mut [Option<Value>]) {
    if let Some(s) = node.slot {
        out[s] = None;
    }
    for c in &node.children {
        clear(&c.node, out);
    }
}

/// Fills the slots below a node whose whole value was kept.
fn fill_below(node: &Node, v: &Value, out: &mut [Option<Value>]) {
    for c in &node.children {
        let child = match v {
            Value::Object(m) => m.get(&c.key),
            Value::Array(a) => c.index.and_then(|i| a.get(i)),
            _ => None,
        };
        if let Some(child) = child {
            if let Some(s) = c.node.slot {
                out[s] = Some(child.clone());
            }
            fill_below(&c.node, child, out);
        }
    }
}

struct NodeSeed<'p, 'o> {
    node: &'p Node,
    out: &'o mut [Option<Value>],
}

impl<'de> DeserializeSeed<'de> for NodeSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if let Some(slot) = self.node.slot {
            let v = Value::deserialize(d)?;
            fill_below(self.node, &v, self.out);
            self.out[slot] = Some(v);
            Ok(())
        } else if self.node.children.is_empty() {
            IgnoredAny::deserialize(d).map(|_| ())
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for NodeSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let children = &self.node.children;
        while let Some(found) = map.next_key_seed(KeySeed(children))? {
            match found {
                Some(i) => {
                    let node = &children[i].node;
                    clear(node, self.out);
                    map.next_value_seed(NodeSeed {
                        node,
                        out: &mut *self.out,
                    })?
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let children = &self.node.children;
        let mut i = 0usize;
        loop {
            let more = match children.iter().find(|c| c.index == Some(i)) {
                Some(c) => seq
                    .next_element_seed(NodeSeed {
                        node: &c.node,
                        out: &mut *self.out,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// Reads a map key and says which child it names, without keeping the key.
struct KeySeed<'p>(&'p [Child]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|c| c.key == key))
    }
}

/// An array index as RFC 6901 allows it: digits only, no leading zero (as serde_json reads it).
fn array_index(s: &str) -> Option<usize> {
    if s.starts_with('+') || (s.starts_with('0') && s.len() != 1) {
        return None;
    }
    s.parse().ok()
}

/// The sum of an array's numbers when the binding sums arrays; `None` when `v` is not an array or the binding
/// does not sum (the caller reads `v` as a single value).
pub fn summed(v: &Value, binding: &MqttBinding) -> Option<Result<f64, String>> {
    let Value::Array(items) = v else { return None };
    if !binding.array_sum {
        return None;
    }
    let mut sum = 0.0;
    for (i, item) in items.iter().enumerate() {
        match item.as_f64() {
            Some(x) => sum += x,
            None => return Some(Err(format!("array element {i} is not a number: {item}"))),
        }
    }
    Some(Ok(sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::profile::MqttValue;
    use serde_json::json;

    /// The reference the plan is checked against: the whole document parsed, the binding's pointers looked up
    /// with serde_json's own `Value::pointer`, the first present and not null wins.
    fn lookup<'a>(doc: &'a Value, binding: &MqttBinding) -> Option<&'a Value> {
        binding
            .pointers()
            .filter_map(|p| doc.pointer(p))
            .find(|v| !v.is_null())
    }

    fn binding(ptrs: &[&str], array_sum: bool) -> MqttBinding {
        MqttBinding {
            source: MqttValue::Json(ptrs[0].into()),
            alternatives: ptrs[1..].iter().map(|s| s.to_string()).collect(),
            array_sum,
            map: Default::default(),
        }
    }

    #[test]
    fn the_first_present_pointer_wins_and_null_is_absent() {
        let profile = crate::catalog::profile::parse_profile(
            std::path::Path::new("p.yaml"),
            "schema: 1\nname: p\ncategory: other\npoints:\n  - { name: apower, unit: W, kind: gauge, mqtt: { json: [/apower, /params/switch:0/apower] } }\n",
        )
        .unwrap();
        let plan = JsonPlan::new(&profile);
        let value = |text: &str| {
            plan.point(&plan.extract(text.as_bytes()).unwrap(), 0)
                .cloned()
        };
        assert_eq!(value(r#"{"apower": 1.5}"#), Some(json!(1.5)));
        let rpc = r#"{"method": "NotifyStatus", "params": {"switch:0": {"apower": 11.5}}}"#;
        assert_eq!(value(rpc), Some(json!(11.5)));
        assert_eq!(value(r#"{"apower": null}"#), None);
        assert_eq!(value(r#"{"other": 1}"#), None);
    }

    #[test]
    fn the_plan_finds_what_parsing_the_whole_document_finds() {
        use crate::catalog::profile::parse_profile;
        let profile = parse_profile(
            std::path::Path::new("p.yaml"),
            "schema: 1\nname: p\ncategory: other\ntimestamp: { json: /meta/ts, format: epoch_ms }\npoints:\n  - { name: a, unit: W, kind: gauge, mqtt: { json: /a } }\n  - { name: b, unit: W, kind: gauge, mqtt: { json: [/x/b~1c, /y/0/b] } }\n  - { name: c, unit: W, kind: gauge, mqtt: { json: /x, array: sum } }\n  - { name: d, unit: W, kind: gauge, mqtt: { json: /x/b~1c } }\n  - { name: e, unit: W, kind: gauge, mqtt: { json: [/y/01, /y/+1, /y/1, /y/-] } }\n  - { name: f, unit: W, kind: gauge, mqtt: { json: [/z/~0k, /z//, /z/] } }\n",
        )
        .unwrap();
        let plan = JsonPlan::new(&profile);
        let docs = [
            r#"{"a": 1.5, "meta": {"ts": 17}, "x": {"b/c": 2}}"#,
            r#"{"a": null, "y": [{"b": 3}, 4], "x": [1, 2]}"#,
            r#"{"a": 1, "a": 2, "x": {"b/c": 5}, "x": {"q": 1}}"#,
            r#"{"a": "ON", "z": {"deep": [[[1]]]}, "meta": 5}"#,
            r#"[1, 2, 3]"#,
            r#"21.5"#,
            r#"{}"#,
            r#"{"y": [0, 7], "z": {"~k": 8, "": {"": 9}}}"#,
            r#"{"y": {"01": 5, "+1": 6, "-": 7}, "z": {"": 10}}"#,
        ];
        for text in docs {
            let got = plan.extract(text.as_bytes()).unwrap();
            let doc: Value = serde_json::from_str(text).unwrap();
            for (i, p) in profile.points.iter().enumerate() {
                let want = lookup(&doc, p.mqtt.as_ref().unwrap());
                assert_eq!(plan.point(&got, i), want, "point {} in {text}", p.name);
            }
            let ts = plan.timestamp.and_then(|s| got[s].as_ref());
            assert_eq!(ts, doc.pointer("/meta/ts"), "timestamp in {text}");
        }
        for bad in [r#"{"a": 1"#, r#"{"a": 1} x"#, "", r#"{"a": tru}"#] {
            let ours = plan
                .extract(bad.as_bytes())
                .map(|_| ())
                .map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<Value>(bad)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{bad:?}");
        }
    }

    #[test]
    fn arrays_sum_only_when_asked() {
        let v = json!([12.5, 0.5]);
        assert_eq!(summed(&v, &binding(&["/p"], true)), Some(Ok(13.0)));
        assert_eq!(summed(&v, &binding(&["/p"], false)), None);
        assert_eq!(summed(&json!(3), &binding(&["/p"], true)), None);
        assert!(matches!(
            summed(&json!([1, "x"]), &binding(&["/p"], true)),
            Some(Err(_))
        ));
    }
}
