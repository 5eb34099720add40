//! The BACnet/IP endpoint: one UDP socket shared by every device poller, COV subscriptions and discovery.
//!
//! A confirmed request gets an invoke id unused towards that peer, is sent, and waits up to `timeout` for its
//! answer; it is resent `retries` times before failing. The receive task matches answers to waiting requests by
//! (peer, invoke id), reassembles segmented Complex-ACKs (acknowledging each segment with a Segment-ACK; an
//! out-of-order segment is NAKed so the device resends from the last good one), acknowledges confirmed COV
//! notifications with a Simple-ACK, and hands notifications and I-Am answers to whoever listens. A datagram that
//! is not BACnet, or an answer nobody waits for, is counted and dropped: it never stops the others.

use super::codec::{self, Apdu, CovNotification, DecodeError, Frame, IAm};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, info, warn};

/// Most segments of one answer Caretaker reassembles (and announces in its requests: "up to 64").
pub const MAX_SEGMENTS: usize = 64;

/// A successful answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    Simple,
    /// The service data of a Complex-ACK (reassembled when it came in segments).
    Complex(Vec<u8>),
}

/// Why a confirmed request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("no answer after {tries} tries of {timeout:?}")]
    Timeout { tries: u32, timeout: Duration },
    #[error("device answered with an error: {}", codec::error_text(*class, *code))]
    Error { class: u32, code: u32 },
    #[error("device rejected the request: {}", codec::reject_text(*reason))]
    Reject { reason: u8 },
    #[error("device aborted the request: {}", codec::abort_text(*reason))]
    Abort { reason: u8 },
    #[error("undecodable answer: {0}")]
    Decode(#[from] DecodeError),
    #[error("socket: {0}")]
    Io(String),
    #[error("too many requests waiting on this device")]
    Busy,
}

impl RequestError {
    /// The device answered something (it is there, it just did not like the request).
    pub fn answered(&self) -> bool {
        matches!(
            self,
            RequestError::Error { .. }
                | RequestError::Reject { .. }
                | RequestError::Abort { .. }
                | RequestError::Decode(_)
        )
    }
}

struct Pending {
    tx: Option<oneshot::Sender<Result<Ack, RequestError>>>,
    /// Segments so far of a segmented answer, and the next sequence number expected.
    buf: Vec<u8>,
    next_seq: u8,
    segments: usize,
}

#[derive(Default)]
struct Shared {
    pending: HashMap<(SocketAddr, u8), Pending>,
    next_invoke: u8,
    /// COV notification receivers by subscriber process identifier.
    cov: HashMap<u32, mpsc::Sender<(SocketAddr, CovNotification)>>,
}

/// The endpoint; cheap to clone.
#[derive(Clone)]
pub struct Endpoint {
    socket: Arc<UdpSocket>,
    shared: Arc<Mutex<Shared>>,
    i_am: broadcast::Sender<(SocketAddr, IAm)>,
    pub timeout: Duration,
    pub retries: u32,
    /// Where broadcasts go through when registered as a foreign device (Distribute-Broadcast-To-Network).
    bbmd: Option<SocketAddr>,
    /// The max APDU announced in requests (answers longer than this come in segments).
    max_apdu: u32,
}

impl Endpoint {
    /// Wraps a bound socket and starts the receive task (it ends when every clone of the endpoint is dropped
    /// and `stop` is cancelled).
    pub fn start(
        socket: UdpSocket,
        timeout: Duration,
        retries: u32,
        stop: tokio_util::sync::CancellationToken,
    ) -> (Endpoint, tokio::task::JoinHandle<()>) {
        let _ = socket.set_broadcast(true);
        let (i_am, _) = broadcast::channel(1024);
        let ep = Endpoint {
            socket: Arc::new(socket),
            shared: Arc::new(Mutex::new(Shared::default())),
            i_am,
            timeout,
            retries,
            bbmd: None,
            max_apdu: codec::MAX_APDU as u32,
        };
        let rx = ep.clone();
        let task = tokio::spawn(async move { rx.receive(stop).await });
        (ep, task)
    }

    /// Binds `addr` (`host:port`).
    pub async fn bind(addr: &str) -> std::io::Result<UdpSocket> {
        UdpSocket::bind(addr).await
    }

    /// Announces a smaller max APDU in requests (50..=1476; answers longer than it come in segments).
    pub fn with_max_apdu(mut self, max_apdu: u32) -> Endpoint {
        self.max_apdu = max_apdu.clamp(50, codec::MAX_APDU as u32);
        self
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// Registers with a BBMD as a foreign device, now and every `ttl / 2` until `stop`.
    pub fn register_foreign(
        &mut self,
        bbmd: SocketAddr,
        ttl: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        self.bbmd = Some(bbmd);
        let socket = self.socket.clone();
        let secs = ttl.as_secs().clamp(30, u16::MAX as u64) as u16;
        tokio::spawn(async move {
            let msg = codec::register_foreign_device(secs);
            loop {
                if let Err(e) = socket.send_to(&msg, bbmd).await {
                    warn!(%bbmd, error = %e, "BACnet foreign-device registration not sent");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(secs as u64 / 2)) => {}
                }
            }
        });
    }

    /// Receives COV notifications for `process_id`.
    pub fn cov_channel(&self, process_id: u32) -> mpsc::Receiver<(SocketAddr, CovNotification)> {
        let (tx, rx) = mpsc::channel(256);
        self.lock().cov.insert(process_id, tx);
        rx
    }

    /// I-Am answers from now on.
    pub fn i_am_listener(&self) -> broadcast::Receiver<(SocketAddr, IAm)> {
        self.i_am.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends Who-Is to `target` (a unicast address, a broadcast address, or through the BBMD when registered).
    pub async fn who_is(
        &self,
        target: SocketAddr,
        range: Option<(u32, u32)>,
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(32);
        codec::begin(
            &mut out,
            target.ip().is_unspecified() || is_broadcast(target),
            false,
        );
        codec::put_unconfirmed_header(&mut out, codec::SERVICE_WHO_IS);
        codec::put_who_is(&mut out, range);
        codec::finish(&mut out);
        if let (Some(bbmd), true) = (self.bbmd, is_broadcast(target)) {
            out[1] = codec::BVLC_DISTRIBUTE_BROADCAST;
            self.socket.send_to(&out, bbmd).await?;
            return Ok(());
        }
        self.socket.send_to(&out, target).await.map(|_| ())
    }

    /// Sends a confirmed request and waits for its answer, with timeout and retries.
    pub async fn request(
        &self,
        peer: SocketAddr,
        service: u8,
        body: &[u8],
    ) -> Result<Ack, RequestError> {
        let (tx, mut rx) = oneshot::channel();
        let invoke_id = {
            let mut s = self.lock();
            let mut id = None;
            for _ in 0..256 {
                let candidate = s.next_invoke;
                s.next_invoke = s.next_invoke.wrapping_add(1);
                if !s.pending.contains_key(&(peer, candidate)) {
                    id = Some(candidate);
                    break;
                }
            }
            let Some(id) = id else {
                return Err(RequestError::Busy);
            };
            s.pending.insert(
                (peer, id),
                Pending {
                    tx: Some(tx),
                    buf: Vec::new(),
                    next_seq: 0,
                    segments: 0,
                },
            );
            id
        };
        let mut out = Vec::with_capacity(body.len() + 16);
        codec::begin(&mut out, false, true);
        codec::put_confirmed_header_max(&mut out, invoke_id, service, self.max_apdu);
        out.extend_from_slice(body);
        codec::finish(&mut out);
        let tries = self.retries + 1;
        let mut result = Err(RequestError::Timeout {
            tries,
            timeout: self.timeout,
        });
        for attempt in 0..tries {
            // A resend only while no segment of the answer has arrived (the device is then still sending).
            let receiving = self
                .lock()
                .pending
                .get(&(peer, invoke_id))
                .is_some_and(|p| p.segments > 0);
            if !receiving {
                metrics::counter!("caretaker_bacnet_requests_total").increment(1);
                if let Err(e) = self.socket.send_to(&out, peer).await {
                    result = Err(RequestError::Io(e.to_string()));
                    break;
                }
                if attempt > 0 {
                    debug!(%peer, invoke_id, attempt, "BACnet request resent");
                }
            }
            match tokio::time::timeout(self.timeout, &mut rx).await {
                Ok(Ok(r)) => {
                    result = r;
                    break;
                }
                Ok(Err(_)) => break, // the receive task is gone
                Err(_) => continue,
            }
        }
        self.lock().pending.remove(&(peer, invoke_id));
        result
    }

    async fn send(&self, peer: SocketAddr, f: impl FnOnce(&mut Vec<u8>)) {
        let mut out = Vec::with_capacity(32);
        codec::begin(&mut out, false, false);
        f(&mut out);
        codec::finish(&mut out);
        if let Err(e) = self.socket.send_to(&out, peer).await {
            debug!(%peer, error = %e, "BACnet send failed");
        }
    }

    async fn receive(self, stop: tokio_util::sync::CancellationToken) {
        // The largest BACnet/IP datagram is 1,497 bytes; anything longer is not ours (and is cut, then refused).
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // ICMP port unreachable after a send to a dead device shows up here on Linux.
                        debug!(error = %e, "BACnet receive error");
                        continue;
                    }
                },
            };
            let frame = match codec::decode_frame(&buf[..n]) {
                Ok(f) => f,
                Err(e) => {
                    metrics::counter!("caretaker_bacnet_bad_datagrams_total").increment(1);
                    debug!(%from, error = %e, "not a BACnet/IP datagram; dropped");
                    continue;
                }
            };
            match frame {
                Frame::BvlcResult(0) => debug!(%from, "BVLC result: ok"),
                Frame::BvlcResult(code) => {
                    warn!(%from, code, "BBMD refused a BVLC request (foreign-device registration?)")
                }
                Frame::Ignored => {}
                Frame::Apdu { source, apdu, .. } => {
                    self.handle(source.unwrap_or(from), from, apdu).await
                }
            }
        }
    }

    fn complete(&self, peer: SocketAddr, invoke_id: u8, r: Result<Ack, RequestError>) {
        let mut s = self.lock();
        match s
            .pending
            .get_mut(&(peer, invoke_id))
            .and_then(|p| p.tx.take())
        {
            Some(tx) => {
                let _ = tx.send(r);
            }
            None => {
                metrics::counter!("caretaker_bacnet_unmatched_answers_total").increment(1);
                debug!(%peer, invoke_id, "BACnet answer nobody waits for (late or duplicate); dropped");
            }
        }
    }

    async fn handle(&self, peer: SocketAddr, from: SocketAddr, apdu: Apdu<'_>) {
        match apdu {
            Apdu::SimpleAck { invoke_id, .. } => self.complete(peer, invoke_id, Ok(Ack::Simple)),
            Apdu::ComplexAck {
                segmented: false,
                invoke_id,
                body,
                ..
            } => self.complete(peer, invoke_id, Ok(Ack::Complex(body.to_vec()))),
            Apdu::ComplexAck {
                segmented: true,
                more_follows,
                invoke_id,
                sequence,
                window,
                body,
                ..
            } => {
                self.segment(peer, from, invoke_id, sequence, window, more_follows, body)
                    .await
            }
            Apdu::Error {
                invoke_id,
                class,
                code,
                ..
            } => self.complete(peer, invoke_id, Err(RequestError::Error { class, code })),
            Apdu::Reject { invoke_id, reason } => {
                self.complete(peer, invoke_id, Err(RequestError::Reject { reason }))
            }
            Apdu::Abort {
                invoke_id, reason, ..
            } => self.complete(peer, invoke_id, Err(RequestError::Abort { reason })),
            Apdu::ConfirmedRequest {
                invoke_id,
                service: codec::SERVICE_CONFIRMED_COV_NOTIFICATION,
                body,
                segmented: false,
                ..
            } => {
                // Acknowledged whether or not anyone still listens: the device stops resending either way.
                self.send(from, |o| {
                    codec::put_simple_ack(o, invoke_id, codec::SERVICE_CONFIRMED_COV_NOTIFICATION)
                })
                .await;
                self.notify(peer, body);
            }
            Apdu::ConfirmedRequest { invoke_id, .. } => {
                // Caretaker is a client: it serves no confirmed service but COV notifications.
                self.send(from, |o| {
                    codec::put_reject(o, invoke_id, codec::REJECT_UNRECOGNIZED_SERVICE)
                })
                .await;
            }
            Apdu::Unconfirmed {
                service: codec::SERVICE_UNCONFIRMED_COV_NOTIFICATION,
                body,
            } => self.notify(peer, body),
            Apdu::Unconfirmed {
                service: codec::SERVICE_I_AM,
                body,
            } => match codec::decode_i_am(body) {
                Ok(i) => {
                    let _ = self.i_am.send((peer, i));
                }
                Err(e) => debug!(%peer, error = %e, "bad I-Am"),
            },
            Apdu::Unconfirmed { .. } | Apdu::SegmentAck { .. } => {}
        }
    }

    fn notify(&self, peer: SocketAddr, body: &[u8]) {
        match codec::decode_cov_notification(body) {
            Ok(n) => {
                let tx = self.lock().cov.get(&n.process_id).cloned();
                match tx {
                    Some(tx) => {
                        if tx.try_send((peer, n)).is_err() {
                            metrics::counter!("caretaker_bacnet_cov_dropped_total").increment(1);
                        }
                    }
                    None => {
                        debug!(%peer, process_id = n.process_id, "COV notification for no subscription")
                    }
                }
            }
            Err(e) => {
                metrics::counter!("caretaker_bacnet_bad_datagrams_total").increment(1);
                debug!(%peer, error = %e, "bad COV notification");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn segment(
        &self,
        peer: SocketAddr,
        from: SocketAddr,
        invoke_id: u8,
        sequence: u8,
        window: u8,
        more: bool,
        body: &[u8],
    ) {
        enum Next {
            Ack(u8, bool),
            Done(Vec<u8>, u8),
            TooLong,
            Unknown,
        }
        let next = {
            let mut s = self.lock();
            match s.pending.get_mut(&(peer, invoke_id)) {
                None => Next::Unknown,
                Some(p) if p.tx.is_none() => Next::Unknown,
                Some(p) if sequence != p.next_seq => Next::Ack(p.next_seq.wrapping_sub(1), true),
                Some(p) => {
                    p.buf.extend_from_slice(body);
                    p.segments += 1;
                    p.next_seq = p.next_seq.wrapping_add(1);
                    if p.segments > MAX_SEGMENTS {
                        Next::TooLong
                    } else if more {
                        Next::Ack(sequence, false)
                    } else {
                        Next::Done(std::mem::take(&mut p.buf), sequence)
                    }
                }
            }
        };
        let window = window.clamp(1, 127);
        match next {
            Next::Ack(seq, nak) => {
                self.send(from, |o| {
                    codec::put_segment_ack(o, nak, invoke_id, seq, window)
                })
                .await
            }
            Next::Done(data, seq) => {
                self.send(from, |o| {
                    codec::put_segment_ack(o, false, invoke_id, seq, window)
                })
                .await;
                debug!(%peer, segments = seq as u32 + 1, bytes = data.len(), "segmented answer reassembled");
                self.complete(peer, invoke_id, Ok(Ack::Complex(data)));
            }
            Next::TooLong => {
                info!(%peer, "BACnet answer longer than {MAX_SEGMENTS} segments; aborted");
                self.send(from, |o| o.extend_from_slice(&[0x70, invoke_id, 1]))
                    .await;
                self.complete(peer, invoke_id, Err(RequestError::Abort { reason: 1 }));
            }
            Next::Unknown => {
                self.send(from, |o| o.extend_from_slice(&[0x70, invoke_id, 2]))
                    .await;
            }
        }
    }
}

fn is_broadcast(a: SocketAddr) -> bool {
    match a.ip() {
        std::net::IpAddr::V4(v4) => v4.is_broadcast() || v4.octets()[3] == 255,
        std::net::IpAddr::V6(_) => false,
    }
}

/// Resolves `(host, port)` to one address (IPv4 preferred: BACnet/IP is IPv4).
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host}:{port}: no address"))
}
