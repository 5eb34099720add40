//! The watchdog: long-running tasks run under a supervisor that beats their heartbeat in
//! [`crate::telemetry::Health`], and systemd is told `READY=1` after start-up and `WATCHDOG=1` only while every
//! task is healthy, so a wedged daemon is restarted (`Type=notify`, `WatchdogSec=` in deploy/systemd).
//!
//! What "healthy" means here: the task is alive (it has not panicked or returned while the daemon runs) and its
//! future is being polled, i.e. its thread is not blocked (a synchronous call that never returns, a deadlock on a
//! lock, a busy loop) for more than [`crate::telemetry::STUCK_AFTER`] periods. A task waiting for input (a quiet
//! broker, an empty queue) is not stuck. A runtime wedged as a whole stops the `WATCHDOG=1` task too, which is
//! what systemd then sees.
//!
//! The notify protocol is one datagram to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket), written
//! with std's `UnixDatagram`: the `sd-notify` crate does the same in ~100 lines, and a dependency is not worth
//! that.

use crate::telemetry::{Health, Heartbeat};
use std::future::Future;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The heartbeat period of the daemon's tasks: stuck after [`crate::telemetry::STUCK_AFTER`] of these (5 s).
pub const WATCH_PERIOD: Duration = Duration::from_secs(1);

/// Spawns `fut` as task `name` under the watchdog: the supervisor beats every `period` while the future is
/// polled; a panic or an end (other than at shutdown, when the [`Health::stopping`] flag is set) is recorded.
pub fn spawn_watched<F>(
    health: &Arc<Health>,
    name: impl Into<String>,
    period: Duration,
    fut: F,
) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn_watched_stoppable(health, name, period, fut, CancellationToken::new())
}

/// [`spawn_watched`] for a task that may also be stopped on purpose while the daemon runs (a source a
/// configuration reload stops): once `stopped` is cancelled, its end leaves the watchdog's list quietly.
pub fn spawn_watched_stoppable<F>(
    health: &Arc<Health>,
    name: impl Into<String>,
    period: Duration,
    fut: F,
    stopped: CancellationToken,
) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let hb = health.task(name, period);
    let health = health.clone();
    tokio::spawn(async move {
        let out = watched(&hb, period, fut).await;
        if health.stopping.load(std::sync::atomic::Ordering::Relaxed) || stopped.is_cancelled() {
            hb.retire();
        } else {
            warn!(task = hb.name(), "task ended while the daemon runs");
            hb.ended("exited");
        }
        out
    })
}

/// Polls `fut` to completion, beating `hb` every `period` meanwhile (a panic in `fut` drops `hb` while
/// unwinding, which marks the task dead).
pub async fn watched<F: Future>(hb: &Heartbeat, period: Duration, fut: F) -> F::Output {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return out,
            _ = tick.tick() => hb.beat(),
        }
    }
}

/// Sends `state` (e.g. `"READY=1"`) to the service manager. `Ok(false)` when not run by one (no
/// `$NOTIFY_SOCKET`).
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Ok(false);
        }
    } else {
        sock.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}

/// How often systemd wants `WATCHDOG=1` (`$WATCHDOG_USEC`, for this process when `$WATCHDOG_PID` is set).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Tells systemd the daemon is ready, then sends `WATCHDOG=1` every half watchdog interval while every task is
/// healthy, until `stop` (then `STOPPING=1`). Without `$NOTIFY_SOCKET` it does nothing.
pub async fn run_systemd(health: Arc<Health>, stop: CancellationToken) {
    match notify("READY=1") {
        Ok(true) => info!("told systemd READY=1"),
        Ok(false) => return,
        Err(e) => {
            warn!(error = %e, "cannot notify systemd ($NOTIFY_SOCKET)");
            return;
        }
    }
    let Some(every) = watchdog_interval().map(|d| d / 2) else {
        stop.cancelled().await;
        let _ = notify("STOPPING=1");
        return;
    };
    let mut reported = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => {
                let _ = notify("STOPPING=1");
                return;
            }
        }
        let bad = health.unhealthy_tasks();
        if bad.is_empty() {
            reported = false;
            if let Err(e) = notify("WATCHDOG=1") {
                warn!(error = %e, "cannot notify systemd ($NOTIFY_SOCKET)");
            }
        } else if !reported {
            reported = true;
            warn!(tasks = ?bad, "watchdog: not telling systemd we are alive while a task is dead or stuck");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_task_and_a_blocked_task_make_health_degraded_with_their_names() {
        let health = Health::new();
        let ok = spawn_watched(&health, "quiet", Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let dead = spawn_watched(&health, "doomed", Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("boom");
        });
        assert!(dead.await.is_err());
        // Blocks its worker thread (the wedge a watchdog is for): its supervisor cannot beat.
        let _wedged = spawn_watched(&health, "wedged", Duration::from_millis(20), async {
            std::thread::sleep(Duration::from_millis(600));
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let bad = health.unhealthy_tasks();
        assert!(
            bad.contains(&"task doomed: panicked".to_string()),
            "{bad:?}"
        );
        assert!(
            bad.iter().any(|b| b.starts_with("task wedged: stuck")),
            "{bad:?}"
        );
        assert!(!bad.iter().any(|b| b.contains("quiet")), "{bad:?}");
        let (healthy, doc) = health.report("s");
        assert!(!healthy);
        assert_eq!(doc["status"], "degraded");
        assert!(
            doc["reasons"].to_string().contains("task doomed: panicked"),
            "{doc}"
        );
        ok.abort();
    }

    #[test]
    fn notify_writes_the_state_to_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        // Environment of this test process only; no other unit test reads NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        assert!(notify("READY=1").unwrap());
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
