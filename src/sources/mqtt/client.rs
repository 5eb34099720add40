//! The MQTT client loop: QoS 1, persistent session, manual acks after the pipeline queued a message's
//! readings, resubscribe on every ConnAck, capped backoff with jitter.

use super::config::MqttConfig;
use super::decode::Decoder;
use crate::catalog::SharedCatalog;
use crate::pipeline::{Ack, Batch};
use crate::telemetry::Health;
use crate::util::{Backoff, RateLimiter};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeFilter, Transport};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The largest remaining length an MQTT 3.1.1 packet can have (268,435,455 bytes, 256 MiB).
pub const MQTT_MAX_PACKET: usize = 268_435_455;
/// Outgoing packets are our own subscribes and acks; never let a small `max_packet_size` refuse them.
const MIN_OUTGOING: usize = 64 * 1024;

/// Builds the rumqttc options from the config.
fn options(cfg: &MqttConfig) -> anyhow::Result<MqttOptions> {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive);
    o.set_clean_session(false);
    o.set_manual_acks(true);
    // rumqttc drops the connection on an incoming packet above its limit, before we could acknowledge it, and
    // MQTT 3.1.1 has no way to tell the broker our limit: the broker then redelivers the same QoS 1 message to
    // the persistent session on every reconnect and nothing behind it is ever read. So the framing limit is the
    // protocol's own maximum (every packet can be framed and acknowledged) and `max_packet_size` is enforced on
    // the received message in `run`.
    o.set_max_packet_size(MQTT_MAX_PACKET, cfg.max_packet_size.max(MIN_OUTGOING));
    o.set_request_channel_capacity(4096);
    if let (Some(u), p) = (&cfg.username, &cfg.password) {
        o.set_credentials(u.clone(), p.clone().unwrap_or_default());
    }
    if let Some(tls) = &cfg.tls {
        let c = tls.client_config()?;
        o.set_transport(Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(c),
        ));
    }
    Ok(o)
}

/// The running source.
pub struct MqttSource {
    pub config: MqttConfig,
    pub catalog: SharedCatalog,
    pub tx: mpsc::Sender<Batch>,
    pub health: Arc<Health>,
}

impl MqttSource {
    /// Runs until `stop`. After `stop` it keeps the connection up to `grace` so acknowledgements of messages
    /// already in the pipeline reach the broker, but accepts no new message (the broker keeps those for the next
    /// session).
    pub async fn run(
        self,
        stop: CancellationToken,
        grace: CancellationToken,
    ) -> anyhow::Result<()> {
        let opts = options(&self.config)?;
        let (client, mut eventloop) = AsyncClient::new(opts, 4096);
        self.health.mqtt_configured.store(true, Ordering::Relaxed);
        // Partitioned and/or `$share/<group>/`-prefixed when `[mqtt]` is a fleet member (config.rs `filters`).
        let filters: Vec<SubscribeFilter> = self
            .config
            .filters()
            .into_iter()
            .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce))
            .collect();
        let mut decoder = Decoder::new(self.config.subscriptions.clone(), self.catalog.clone())
            .with_limits(self.config.limits.clone())
            .with_health(self.health.clone());
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            self.config.reconnect_max_backoff,
        );
        let mut sparkplug =
            super::sparkplug::Sparkplug::new(self.config.sparkplug.clone(), self.catalog.clone());
        let limiter = RateLimiter::new(Duration::from_secs(10));
        let endpoint = format!("{}:{}", self.config.host, self.config.port);
        let received = metrics::counter!("caretaker_readings_received_total", "source" => "mqtt");
        let mut accepting = true;
        // The connection a PUBACK belongs to: acks released after a reconnect are dropped, not sent on the new
        // connection (the broker redelivers those messages; rumqttc drops queued PubAcks on reconnect likewise).
        let mut conn: u64 = 0;
        // Packet ids to PUBACK now, written straight into the connection's buffer with one flush (see `Acks`).
        let mut due: Vec<u16> = Vec::new();
        // The message decoded but not yet handed to the pipeline, with what acknowledges it.
        let mut open = OpenBatch::default();
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<Released>();
        let mut problems = Vec::new();
        loop {
            // Hand over each message as its own batch: the pipeline channel's capacity (`[pipeline]
            // channel_capacity`, in batches) is then a bound in messages, which is what holds the source back while
            // the spool is full (tests/it/spool.rs). Gathering the publishes already buffered in the event loop into
            // one batch measured faster but multiplied that bound by up to 10.
            if !open.readings.is_empty() {
                let batch = open.take(conn, &ack_tx, &client, &received);
                if self.tx.send(batch).await.is_err() {
                    break; // pipeline gone: shutting down
                }
            }
            if !due.is_empty() {
                write_acks(&mut eventloop, &mut due).await;
            }
            let event = tokio::select! {
                e = eventloop.poll() => e,
                Some(r) = ack_rx.recv() => {
                    let mut r = r;
                    loop {
                        if r.conn == conn {
                            due.extend_from_slice(&r.pkids);
                        }
                        match ack_rx.try_recv() {
                            Ok(next) => r = next,
                            Err(_) => break,
                        }
                    }
                    continue;
                }
                _ = stop.cancelled(), if accepting => {
                    accepting = false;
                    debug!("MQTT source stopping: no new messages accepted");
                    continue;
                }
                _ = grace.cancelled() => break,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    info!(broker = %endpoint, session_present = ack.session_present, "connected to MQTT broker");
                    self.health.mqtt_connected.store(true, Ordering::Relaxed);
                    backoff.reset();
                    conn += 1;
                    due.clear();
                    // Resubscribe on every ConnAck: a broker that lost its state (restart without persistence)
                    // would otherwise leave us connected and deaf.
                    if let Err(e) = client.try_subscribe_many(filters.clone()) {
                        warn!(error = %e, "cannot queue MQTT subscribe");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    for (code, f) in s.return_codes.iter().zip(&filters) {
                        if matches!(code, rumqttc::SubscribeReasonCode::Failure) {
                            warn!(filter = %f.path, "broker refused the subscription (check its ACL)");
                            metrics::counter!("caretaker_errors_total", "stage" => "mqtt")
                                .increment(1);
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if !accepting {
                        continue; // not acked: the broker redelivers it to the next session
                    }
                    let now = crate::util::now_ns();
                    self.health
                        .mqtt_last_message_ms
                        .store(now / 1_000_000, Ordering::Relaxed);
                    let size = p.size();
                    if size > self.config.max_packet_size {
                        // Acknowledged and dropped: a poison message must never block the session.
                        metrics::counter!("caretaker_readings_dropped_total", "stage" => "mqtt", "reason" => "too_large").increment(1);
                        metrics::counter!("caretaker_errors_total", "stage" => "mqtt").increment(1);
                        if let Some(suppressed) = limiter.check(&format!("too_large:{}", p.topic)) {
                            warn!(topic = %p.topic, size, max_packet_size = self.config.max_packet_size, suppressed, "MQTT message dropped: larger than max_packet_size");
                        }
                        ack_now(&client, &p, &mut due);
                        continue;
                    }
                    problems.clear();
                    let before = open.readings.len();
                    // Sparkplug B topics of a configured group go to their own decoder (sparkplug.rs).
                    let result = if sparkplug.handles(&p.topic) {
                        sparkplug
                            .handle(&p.topic, &p.payload, now, &mut open.readings, &mut problems)
                            .map(|rebirth| {
                                if let Some(r) = rebirth {
                                    if let Err(e) = client.try_publish(
                                        r.topic,
                                        QoS::AtMostOnce,
                                        false,
                                        r.payload,
                                    ) {
                                        debug!(error = %e, "rebirth request not queued");
                                    }
                                }
                            })
                    } else {
                        decoder.decode(&p.topic, &p.payload, now, &mut open.readings, &mut problems)
                    };
                    for pr in problems.drain(..) {
                        metrics::counter!("caretaker_readings_dropped_total", "stage" => "mqtt", "reason" => pr.reason).increment(1);
                        if let Some(suppressed) =
                            limiter.check(&format!("{}/{}/{}", pr.device, pr.point, pr.reason))
                        {
                            warn!(topic = %p.topic, device = %pr.device, point = %pr.point, reason = pr.reason, suppressed, "{}", pr.message);
                        }
                    }
                    if let Err(e) = result {
                        // A failed message adds nothing to the batch.
                        open.readings.truncate(before);
                        metrics::counter!("caretaker_readings_dropped_total", "stage" => "mqtt", "reason" => e.reason()).increment(1);
                        metrics::counter!("caretaker_errors_total", "stage" => "mqtt").increment(1);
                        if let Some(suppressed) = limiter.check(&e.log_key(&p.topic)) {
                            warn!(topic = %p.topic, reason = e.reason(), suppressed, "MQTT message dropped: {e}");
                        }
                        ack_now(&client, &p, &mut due);
                        continue;
                    }
                    if open.readings.len() == before {
                        // A message with nothing to store (a Sparkplug NBIRTH of unmapped metrics, a STATE).
                        ack_now(&client, &p, &mut due);
                        continue;
                    }
                    match p.qos {
                        QoS::AtLeastOnce => open.pkids.push(p.pkid),
                        QoS::ExactlyOnce => open.qos2.push(p),
                        QoS::AtMostOnce => {}
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let was_connected = self.health.mqtt_connected.swap(false, Ordering::Relaxed);
                    metrics::counter!("caretaker_errors_total", "stage" => "mqtt").increment(1);
                    let wait = backoff.next_delay();
                    if was_connected || limiter.check("mqtt-connection").is_some() {
                        warn!(broker = %endpoint, error = %e, retry_in = ?wait, "MQTT connection lost; reconnecting");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = grace.cancelled() => break,
                    }
                }
            }
        }
        // PUBACKs the pipeline released before the end still go out, ahead of the disconnect.
        while let Ok(r) = ack_rx.try_recv() {
            if r.conn == conn {
                due.extend_from_slice(&r.pkids);
            }
        }
        if !due.is_empty() {
            write_acks(&mut eventloop, &mut due).await;
        }
        self.health.mqtt_connected.store(false, Ordering::Relaxed);
        let _ = client.try_disconnect();
        // Give the disconnect a moment to go out.
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
        Ok(())
    }
}

/// Bound on writing PUBACKs into a stalled connection; after it the acks are given up (the broker redelivers).
const ACK_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Packet ids whose readings the pipeline queued, for connection `conn`.
struct Released {
    conn: u64,
    pkids: Vec<u16>,
}

/// Readings of consecutive messages not yet handed to the pipeline, and what acknowledges them.
#[derive(Default)]
struct OpenBatch {
    readings: Vec<crate::reading::Reading>,
    pkids: Vec<u16>,
    /// QoS 2 messages (a broker only sends them if a subscription asked for QoS 2): acked through rumqttc, which
    /// tracks their PUBREC/PUBREL state.
    qos2: Vec<rumqttc::Publish>,
}

impl OpenBatch {
    /// One pipeline batch whose acknowledgement releases every message's PUBACK at once.
    fn take(
        &mut self,
        conn: u64,
        tx: &mpsc::UnboundedSender<Released>,
        client: &AsyncClient,
        received: &metrics::Counter,
    ) -> Batch {
        received.increment(self.readings.len() as u64);
        let pkids = std::mem::take(&mut self.pkids);
        let qos2 = std::mem::take(&mut self.qos2);
        let tx = tx.clone();
        let client = (!qos2.is_empty()).then(|| client.clone());
        Batch {
            readings: std::mem::take(&mut self.readings),
            ack: Some(Ack::new(move || {
                if !pkids.is_empty() {
                    // Fails only once the source is gone; the broker then redelivers.
                    let _ = tx.send(Released { conn, pkids });
                }
                if let Some(c) = client {
                    for p in qos2 {
                        if c.try_ack(&p).is_err() {
                            let c = c.clone();
                            tokio::spawn(async move {
                                let _ = c.ack(&p).await;
                            });
                        }
                    }
                }
            })),
        }
    }
}

/// Acknowledges a message that adds nothing to a batch (dropped, or nothing to store).
fn ack_now(client: &AsyncClient, p: &rumqttc::Publish, due: &mut Vec<u16>) {
    match p.qos {
        QoS::AtLeastOnce => due.push(p.pkid),
        QoS::ExactlyOnce => {
            if let Err(e) = client.try_ack(p) {
                debug!(error = %e, "ack not queued");
            }
        }
        QoS::AtMostOnce => {}
    }
}

/// Writes PUBACKs straight into the connection's write buffer and flushes once.
///
/// rumqttc's own path (`client.ack`) sends each ack through its request channel and its event loop flushes the
/// socket once per request: one write syscall and one event-loop turn per message. With the broker's default
/// window of 20 unacknowledged messages per client (mosquitto's `max_inflight_messages`), that round trip is what
/// limits a backlog drain. Writing into `EventLoop::network` between polls is safe: rumqttc keeps no state for
/// incoming QoS 1 packet ids (`MqttState::handle_incoming_publish` only acts for QoS 2), and a packet is framed
/// whole into the buffer before any byte is flushed. Without a connection the acks are dropped: the broker
/// redelivers those messages on the next session.
async fn write_acks(eventloop: &mut rumqttc::EventLoop, due: &mut Vec<u16>) {
    let Some(net) = eventloop.network.as_mut() else {
        due.clear();
        return;
    };
    let acks = std::mem::take(due);
    let r = tokio::time::timeout(ACK_WRITE_TIMEOUT, async {
        for pkid in acks {
            net.write(Packet::PubAck(rumqttc::PubAck::new(pkid)))
                .await?;
        }
        net.flush().await
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "PUBACKs not written; the broker redelivers"),
        Err(_) => debug!("PUBACKs not written within 5 s; the broker redelivers"),
    }
}
