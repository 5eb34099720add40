//! Sources produce batches of readings and nothing else: they never know about rules or sinks.

pub mod bacnet;
pub mod modbus;
pub mod mqtt;
