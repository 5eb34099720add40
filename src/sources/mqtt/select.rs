//! Where a point's value is in a JSON payload: the first of its binding's pointers that is present (alternatives
//! for one value in several envelopes, like Shelly's `status/switch:0` and `events/rpc` NotifyStatus), and
//! arrays summed when the binding says `array: sum` (Tasmota's per-channel `"Power":[12,0]`).

use crate::catalog::profile::MqttBinding;
use serde_json::Value;

/// The value the binding points at: the first pointer present and not null; `None` when the message carries
/// none (not every message carries every point).
pub fn lookup<'a>(doc: &'a Value, binding: &MqttBinding) -> Option<&'a Value> {
    binding
        .pointers()
        .filter_map(|p| doc.pointer(p))
        .find(|v| !v.is_null())
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
        let b = binding(&["/apower", "/params/switch:0/apower"], false);
        assert_eq!(lookup(&json!({"apower": 1.5}), &b), Some(&json!(1.5)));
        let rpc = json!({"method": "NotifyStatus", "params": {"switch:0": {"apower": 11.5}}});
        assert_eq!(lookup(&rpc, &b), Some(&json!(11.5)));
        assert_eq!(lookup(&json!({"apower": null}), &b), None);
        assert_eq!(lookup(&json!({"other": 1}), &b), None);
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
