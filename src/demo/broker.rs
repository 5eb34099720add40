//! The demo's embedded MQTT broker (rumqttd, behind the default `demo` feature).

#[cfg(feature = "demo")]
pub fn start_broker(port: u16) -> anyhow::Result<u16> {
    // Bind once here so a port in use is a clear error (rumqttd would only log it from its thread).
    let port = std::net::TcpListener::bind(("127.0.0.1", port))
        .map_err(|e| {
            anyhow::anyhow!("embedded MQTT broker: cannot listen on 127.0.0.1:{port}: {e}")
        })?
        .local_addr()?
        .port();
    let cfg = format!(
        r#"id = 0
[router]
id = 0
max_connections = 64
max_outgoing_packet_count = 1000
max_segment_size = 16777216
max_segment_count = 8

[v4.1]
name = "demo"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 10000
    max_payload_size = 262144
    max_inflight_count = 1000
    dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&cfg)?;
    let mut broker = rumqttd::Broker::new(config);
    // rumqttd's start() blocks for the life of the broker and has no shutdown: it ends with the process.
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })?;
    // No readiness probe: rumqttd logs every probe connection as an error. The clients retry until it listens.
    Ok(port)
}

#[cfg(not(feature = "demo"))]
pub fn start_broker(_port: u16) -> anyhow::Result<u16> {
    anyhow::bail!(
        "this build has no embedded MQTT broker: rebuild with the `demo` feature (on by default)"
    )
}
