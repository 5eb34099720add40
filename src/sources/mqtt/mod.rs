//! The MQTT source: subscribes to the site's topic templates, maps each message through its device profile
//! into readings, and acknowledges the message to the broker only after the pipeline queued its readings.
//!
//! Delivery: QoS 1 with a persistent session (clean_session = false, a stable client id) and manual acks, so a
//! message is redelivered by the broker if Caretaker dies or disconnects before queueing it. The event loop is
//! owned by one task that never blocks on slow work; it reconnects with capped, jittered backoff (rumqttc
//! itself retries at once, in a spin) and resubscribes on every ConnAck.
//!
//! Bad input never stops the flow: a malformed payload, an unknown topic or an out-of-range value is counted in
//! `caretaker_readings_dropped_total{stage="mqtt",reason}`, logged (rate-limited) with the topic, device and
//! point, and acknowledged so the broker does not redeliver it forever.
//!
//! - [`config`]: the `[mqtt]` section: broker, credentials, TLS files, topic templates, validated.
//! - [`decode`]: a message's topic and payload to readings, through the device's profile.
//! - [`select`]: where a point's value is in a JSON payload (alternative pointers, summed arrays).
//! - [`sparkplug`]: Sparkplug B (`[[mqtt.sparkplug]]`): protobuf payloads, BIRTH/DATA/DEATH, rebirth requests.
//! - [`client`]: the rumqttc event loop: subscribe, receive, hand batches to the pipeline, acknowledge.

pub mod client;
pub mod config;
pub mod decode;
pub mod select;
pub mod sparkplug;

pub use client::MqttSource;
pub use config::{MqttConfig, Subscription, TopicTemplate};
pub use decode::{DecodeError, Decoder, PointProblem, decode_for, decode_payload};
