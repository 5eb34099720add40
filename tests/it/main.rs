//! Integration tests: one binary, one module per area. Every server here is real (Debian's mosquitto, influxd
//! 1.6.7, victoria-metrics), started on free loopback ports in temp dirs by `support`.

mod anomaly;
mod check_cli;
mod modbus;
mod energy;
mod demo;
mod deploy;
mod mqtt_influx;
mod spool;
mod rules;
mod support;
