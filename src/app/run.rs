//! `caretaker run`: starts a loaded site's tasks and stops them in order.
//!
//! Start order: HTTP (health, metrics, API) → InfluxDB sink → rules and work orders → pipeline stages → sources.
//! Stop order: sources stop taking readings → the pipeline drains → work orders are applied → the writer
//! flushes → the spool syncs; each step bounded by `[pipeline] shutdown_timeout`.

use super::load::{Loaded, bacnet_devices, load, modbus_devices};
use super::sink;
use super::work_orders::Service;
use crate::catalog::SharedCatalog;
use crate::config::SiteConfig;
use crate::pipeline::{Batch, Pipeline, Stage};
use crate::rules::signals::HubSignal;
use crate::sinks::influx::queue::ChunkQueue;
use crate::sources::mqtt::MqttSource;
use crate::telemetry::{self, Health};
use crate::watchdog::{self, WATCH_PERIOD};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Runs the daemon until a signal arrives.
pub async fn run(config_file: &Path) -> anyhow::Result<()> {
    let loaded = load(config_file).map_err(|errs| {
        for e in &errs {
            error!("{e}");
        }
        anyhow::anyhow!("{} error(s) in the configuration; nothing started (run `caretaker check` for the list)", errs.len())
    })?;
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested");
        signals.cancel();
    });
    run_until(loaded, shutdown).await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs a loaded site until `shutdown` is cancelled, then stops in order.
pub async fn run_until(loaded: Loaded, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_until_with(loaded, shutdown, Vec::new()).await
}

/// [`run_until`] with extra pipeline stages (the demo's live summary).
pub async fn run_until_with(
    loaded: Loaded,
    shutdown: CancellationToken,
    extra_stages: Vec<Box<dyn Stage>>,
) -> anyhow::Result<()> {
    let Loaded {
        config,
        catalog,
        rules,
    } = loaded;
    std::fs::create_dir_all(&config.state_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create state dir {} ([state] dir): {e}",
            config.state_dir.display()
        )
    })?;
    let metrics = telemetry::install_metrics();
    let health = Health::new();
    info!(
        site = %config.site.name,
        devices = catalog.device_count(),
        points = catalog.point_count(),
        version = env!("CARGO_PKG_VERSION"),
        "caretaker starting"
    );
    let catalog: SharedCatalog = catalog.shared();
    let http_stop = CancellationToken::new();
    // Wakes the work-order delivery workers when the API writes outbox rows.
    let notify = Arc::new(tokio::sync::Notify::new());
    // Latest values, 24 h history and device online state for the API (only with an [http] section).
    let live = config
        .http
        .as_ref()
        .map(|h| crate::api::live::LiveState::new(h.device_offline_after));
    if let (Some(http), Some(live)) = (&config.http, &live) {
        let state = crate::api::ApiState::new(crate::api::ApiParts {
            http: http.clone(),
            site: config.site.name.clone(),
            tz: config.timezone(),
            state_dir: config.state_dir.clone(),
            catalog: catalog.clone(),
            live: live.clone(),
            notify: notify.clone(),
            work_orders: config.work_orders.clone(),
            energy: config.energy.clone(),
            modbus_devices: config
                .devices
                .iter()
                .filter(|d| d.modbus.is_some())
                .map(|d| d.id.clone())
                .collect(),
            shutdown: http_stop.clone(),
        });
        crate::api::serve(state, health.clone(), metrics, http_stop.clone()).await?;
    }
    let sink = sink::start(config.influxdb.as_ref(), &config.state_dir, &health)?;
    let queue = sink.queue.clone();
    let work_orders = super::work_orders::start(
        &config,
        &catalog,
        rules.clone(),
        queue.clone(),
        notify,
        &health,
    )?;

    let (tx, rx) = mpsc::channel::<Batch>(config.pipeline.channel_capacity);
    let stages = stages(
        &config,
        &catalog,
        &rules,
        work_orders.as_ref(),
        &queue,
        extra_stages,
        live.as_ref(),
    )?;
    let pipeline = Pipeline {
        rx,
        catalog: catalog.clone(),
        queue: queue.clone(),
        stages,
        chunk_lines: config
            .influxdb
            .as_ref()
            .map(|i| i.batch_size as u32)
            .unwrap_or(5000),
    };
    let pipeline_task = watchdog::spawn_watched(&health, "pipeline", WATCH_PERIOD, pipeline.run());
    let sources = Sources::start(&config, &catalog, &tx, &health);
    // Started: systemd hears READY=1, then WATCHDOG=1 while every task is healthy.
    let systemd_stop = CancellationToken::new();
    tokio::spawn(watchdog::run_systemd(health.clone(), systemd_stop.clone()));

    shutdown.cancelled().await;
    health
        .stopping
        .store(true, std::sync::atomic::Ordering::Relaxed);
    systemd_stop.cancel();
    let deadline = tokio::time::Instant::now() + config.pipeline.shutdown_timeout;
    // 1. Sources stop; the pipeline works through what they sent.
    sources.stop(tx, deadline).await;
    if tokio::time::timeout_at(deadline, pipeline_task)
        .await
        .is_err()
    {
        warn!("pipeline did not drain before shutdown_timeout");
    }
    if let Some(w) = work_orders {
        w.shutdown(deadline).await;
    }
    // 2. The writer sends what is queued, until the deadline.
    sink.shutdown(deadline).await;
    http_stop.cancel();
    info!("caretaker stopped");
    Ok(())
}

/// The pipeline stages, in the order they run: anomaly scores and other signals are computed before the rules
/// read them; energy last.
fn stages(
    config: &SiteConfig,
    catalog: &SharedCatalog,
    rules: &Arc<crate::rules::RuleSet>,
    work_orders: Option<&Service>,
    queue: &Option<Arc<dyn ChunkQueue>>,
    extra_stages: Vec<Box<dyn Stage>>,
    live: Option<&Arc<crate::api::live::LiveState>>,
) -> anyhow::Result<Vec<Box<dyn Stage>>> {
    // Anomaly detection: restores detector state from [state].dir and saves it when the pipeline stops.
    let anomaly = {
        let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
        crate::anomaly::stage::AnomalyStage::open(&config.state_dir, &cat)
    };
    // Signals for the rules (anomaly scores, forecasts, equipment models, energy baselines).
    let (signal_stage, hub) = crate::rules::signals::build(rules, Some(anomaly.latest()));
    // Trends and equipment models are kept under [state].dir like the anomaly detectors.
    let signal_stage = signal_stage.map(|s| s.persist_in(&config.state_dir));
    if let Some(w) = work_orders {
        w.host
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .engine
            .set_signal(Box::new(hub.clone()));
    }
    if hub.wants_energy() {
        refresh_energy_signal(config, catalog, &hub);
    }
    if let Some(l) = live {
        l.set_scores(anomaly.latest());
    }
    let mut stages: Vec<Box<dyn Stage>> = vec![Box::new(anomaly)];
    // The API's live state reads the anomaly scores just computed.
    stages.extend(live.map(|l| l.stage()));
    if let Some(s) = signal_stage {
        stages.push(Box::new(s));
    }
    stages.extend(extra_stages);
    stages.extend(work_orders.iter().map(|w| w.stage()));
    if let Some(energy) = &config.energy {
        // Interval consumption into [state] dir/energy.sqlite, and the `energy` measurement into the queue.
        stages.push(Box::new(crate::energy::stage::EnergyStage::start(
            energy,
            &config.state_dir,
            config.timezone().iana_name().unwrap_or("UTC"),
            &config.site.name,
            queue.clone(),
        )?));
    }
    Ok(stages)
}

/// Deviations from baseline come from the energy store (SQLite), refreshed every `[energy] baseline_refresh`
/// (5 minutes) off the pipeline: a rule's `for: 3d` needs daily figures, not per-reading ones.
fn refresh_energy_signal(config: &SiteConfig, catalog: &SharedCatalog, hub: &HubSignal) {
    let Some(energy) = &config.energy else {
        return;
    };
    let (hub, catalog, energy) = (hub.clone(), catalog.clone(), energy.clone());
    let path = crate::energy::store::path_in(&config.state_dir);
    let tz = config.timezone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(energy.baseline_refresh);
        loop {
            every.tick().await;
            let (hub, catalog, energy, path, tz) = (
                hub.clone(),
                catalog.clone(),
                energy.clone(),
                path.clone(),
                tz.clone(),
            );
            let r = tokio::task::spawn_blocking(move || {
                hub.refresh_energy(&catalog, &path, &energy, &tz)
            })
            .await;
            if let Ok(Err(e)) = r {
                warn!(error = %e, "energy baselines for rules not refreshed");
            }
        }
    });
}

/// The running sources: the MQTT client and one task per Modbus link (TCP gateway or serial line).
struct Sources {
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
    grace: CancellationToken,
}

impl Sources {
    fn start(
        config: &SiteConfig,
        catalog: &SharedCatalog,
        tx: &mpsc::Sender<Batch>,
        health: &Arc<Health>,
    ) -> Sources {
        let stop = CancellationToken::new();
        let grace = CancellationToken::new();
        let mut tasks = Vec::new();
        if let Some(mqtt) = &config.mqtt {
            let src = MqttSource {
                config: mqtt.clone(),
                catalog: catalog.clone(),
                tx: tx.clone(),
                health: health.clone(),
            };
            let (stop, grace) = (stop.clone(), grace.clone());
            tasks.push(watchdog::spawn_watched(
                health,
                "mqtt",
                WATCH_PERIOD,
                async move {
                    if let Err(e) = src.run(stop, grace).await {
                        error!(error = %e, "MQTT source failed");
                    }
                },
            ));
        }
        let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
        for link in crate::sources::modbus::build(&modbus_devices(config), &cat) {
            let (tx, stop) = (tx.clone(), stop.clone());
            let name = format!("modbus {}", link.addr);
            let link = link.with_health(health.clone());
            tasks.push(watchdog::spawn_watched(
                health,
                name,
                WATCH_PERIOD,
                link.run(tx, stop),
            ));
        }
        if let Some(b) = &config.bacnet {
            // One task for the BACnet/IP endpoint and every device poller on it.
            let pollers = crate::sources::bacnet::build(&bacnet_devices(config), &cat);
            let fut = crate::sources::bacnet::run(
                b.clone(),
                pollers,
                tx.clone(),
                stop.clone(),
                health.clone(),
            );
            tasks.push(watchdog::spawn_watched(health, "bacnet", WATCH_PERIOD, fut));
        }
        Sources { tasks, stop, grace }
    }

    /// Sources stop accepting; the pipeline works through what they sent; the MQTT connection stays up a moment
    /// longer so the acknowledgements of those messages reach the broker; then sources disconnect.
    async fn stop(self, tx: mpsc::Sender<Batch>, deadline: tokio::time::Instant) {
        self.stop.cancel();
        let _ = tokio::time::timeout_at(deadline, async {
            while tx.capacity() < tx.max_capacity() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        })
        .await;
        drop(tx);
        self.grace.cancel();
        for s in self.tasks {
            let _ = tokio::time::timeout_at(deadline, s).await;
        }
    }
}
