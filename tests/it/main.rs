//! Integration tests: one binary, one module per area. Every server here is real (Debian's mosquitto, influxd
//! 1.6.7, victoria-metrics), started on free loopback ports in temp dirs by `support`.

mod alertmanager;
mod anomaly;
mod api;
mod check_cli;
mod console;
mod demo;
mod deploy;
mod energy;
mod fleet;
mod fuzz;
mod modbus;
mod mqtt_influx;
mod profiles;
mod rules;
mod signals;
mod sparkplug;
mod spool;
mod support;
mod tls;
mod watchdog;
mod webdriver;
mod wire;
mod work_orders_influx;
