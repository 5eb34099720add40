//! Integration tests: one binary, one module per area. Every server here is real (Debian's mosquitto, influxd
//! 1.6.7, victoria-metrics), started on free loopback ports in temp dirs by `support`.

mod alertmanager;
mod anomaly;
mod api;
mod atlas;
mod bacnet;
mod check_cli;
mod console;
mod dashboards;
mod demo;
mod deploy;
mod email;
mod energy;
mod fdd;
mod fleet;
mod fuzz;
mod modbus;
mod mqtt_influx;
mod overrides;
mod profiles;
mod reload;
mod rules;
mod service;
mod signals;
mod silences;
mod sparkplug;
mod spool;
mod support;
mod tls;
mod watchdog;
mod webdriver;
mod wire;
mod work_order_site;
mod work_orders_influx;
