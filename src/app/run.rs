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
    // First, so a SIGHUP while the config loads is a reload request, not the end of the process.
    let requests = reload_requests()?;
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
    let reload = Reload {
        file: config_file.to_path_buf(),
        requests,
    };
    run_site(loaded, shutdown, Vec::new(), Some(reload)).await
}

/// Where reloads come from: the config file to read again, and one message per SIGHUP.
pub struct Reload {
    pub file: std::path::PathBuf,
    pub requests: mpsc::Receiver<()>,
}

/// SIGHUP (`systemctl reload caretaker`) as a stream of reload requests; installed before anything starts, so
/// an early SIGHUP is a reload and never the default action (which ends the process). Requests that arrive
/// while one is being applied collapse into one more.
fn reload_requests() -> anyhow::Result<mpsc::Receiver<()>> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())
            .map_err(|e| anyhow::anyhow!("cannot install the SIGHUP handler: {e}"))?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = tx.try_send(());
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    Ok(rx)
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
    run_site(loaded, shutdown, extra_stages, None).await
}

/// Runs a loaded site until `shutdown`, applying each reload request meanwhile.
pub async fn run_site(
    loaded: Loaded,
    shutdown: CancellationToken,
    extra_stages: Vec<Box<dyn Stage>>,
    mut reload: Option<Reload>,
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
    let (stages, hub, signal_stage) = stages(
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
    let mut sources = Sources::start(&config, &catalog, &tx, &health);
    // Started: systemd hears READY=1, then WATCHDOG=1 while every task is healthy.
    let systemd_stop = CancellationToken::new();
    tokio::spawn(watchdog::run_systemd(health.clone(), systemd_stop.clone()));

    let mut current = config.clone();
    loop {
        let request = async {
            match reload.as_mut() {
                Some(r) => r.requests.recv().await,
                None => std::future::pending().await,
            }
        };
        let reload_now = tokio::select! {
            _ = shutdown.cancelled() => false,
            Some(()) = request => true,
        };
        if !reload_now {
            break;
        }
        if let Some(r) = &reload {
            let running = Running {
                catalog: &catalog,
                rules: work_orders.as_ref().map(|w| &w.host),
                hub: &hub,
                signal_stage,
                tx: &tx,
                health: &health,
            };
            reload_site(&r.file, &mut current, &running, &mut sources).await;
        }
    }
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

/// The stages, the rules' signal hub, and whether a signal stage runs (a reload needs both).
type Staged = (Vec<Box<dyn Stage>>, HubSignal, bool);

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
) -> anyhow::Result<Staged> {
    // Anomaly detection: restores detector state from [state].dir and saves it when the pipeline stops.
    let anomaly = crate::anomaly::stage::AnomalyStage::open(&config.state_dir, catalog);
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
    let signal_stage_runs = signal_stage.is_some();
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
    Ok((stages, hub, signal_stage_runs))
}

/// What a reload changes in the running daemon.
struct Running<'a> {
    catalog: &'a SharedCatalog,
    rules: Option<&'a crate::rules::stage::SharedRules>,
    hub: &'a HubSignal,
    signal_stage: bool,
    tx: &'a mpsc::Sender<Batch>,
    health: &'a Arc<Health>,
}

/// Applies a reload (SIGHUP): reads and checks the whole configuration first (config, profiles, devices,
/// rules, exactly as at start); on any error keeps the running one and logs every error. Otherwise swaps in
/// the new devices and profiles (the catalog keeps the ids of unchanged devices, so their anomaly detectors and
/// live state carry on), the new rules (the engine carries over the state of unchanged (rule, device, point)
/// keys), the signals, and restarts only the sources whose devices changed. Readings keep flowing: the catalog
/// and the engine are swapped under the same locks the pipeline takes per batch, and every id a source already
/// put in the channel stays valid.
async fn reload_site(
    file: &Path,
    current: &mut SiteConfig,
    run: &Running<'_>,
    sources: &mut Sources,
) {
    info!(config = %file.display(), "configuration reload requested (SIGHUP)");
    let f = file.to_path_buf();
    let loaded = match tokio::task::spawn_blocking(move || load(&f)).await {
        Ok(Ok(l)) => l,
        Ok(Err(errs)) => {
            for e in &errs {
                error!("{e}");
            }
            error!(
                errors = errs.len(),
                "configuration reload refused: the running configuration stays in force"
            );
            let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            run.health.config_reloaded(&msgs);
            return;
        }
        Err(e) => {
            error!(error = %e, "configuration reload failed");
            run.health.config_reloaded(&[format!("reload failed: {e}")]);
            return;
        }
    };
    let Loaded {
        config: new,
        catalog: new_catalog,
        rules,
    } = loaded;
    let later = restart_only_changes(current, &new);
    if !later.is_empty() {
        warn!(
            sections = %later.join(", "),
            "changed sections are not reloaded: they take effect at the next restart"
        );
    }
    let (diff, lost) = {
        let mut cat = run.catalog.write().unwrap_or_else(|e| e.into_inner());
        let diff = cat.reload_from(&new_catalog);
        let lost = match run.rules {
            Some(host) => host
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .reload(rules.clone(), &cat),
            None => Vec::new(),
        };
        (diff, lost)
    };
    if run.rules.is_none() && !rules.is_empty() {
        warn!(
            rules = rules.len(),
            "the daemon started without rules or work-order targets: rules take effect at the next restart"
        );
    }
    for (rule, device, point) in lost {
        warn!(%rule, %device, %point, "an active alarm's rule or device is gone after the reload: its work order stays open");
    }
    if run.hub.reconfigure(&rules) && !run.signal_stage {
        warn!(
            "forecast, equipment_anomaly or energy conditions are new: their signals start at the next restart"
        );
    }
    {
        let mut m = run
            .health
            .modbus_online
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut b = run
            .health
            .bacnet_online
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for id in &diff.removed {
            m.remove(id);
            b.remove(id);
        }
    }
    sources
        .reload(
            &new,
            run.catalog,
            &diff,
            run.tx,
            run.health,
            current.pipeline.shutdown_timeout,
        )
        .await;
    info!(
        rules = rules.len(),
        devices_kept = diff.kept.len(),
        devices_added = diff.added.len(),
        devices_changed = diff.changed.len(),
        devices_removed = diff.removed.len(),
        "configuration reloaded"
    );
    run.health.config_reloaded(&[]);
    *current = new;
}

/// The sections a reload does not apply (they need a restart), by the name of their table.
fn restart_only_changes(old: &SiteConfig, new: &SiteConfig) -> Vec<&'static str> {
    let sections = |c: &SiteConfig| {
        [
            ("[site]", format!("{:?}", c.site)),
            ("[state]", format!("{:?}", c.state_dir)),
            ("[influxdb]", format!("{:?}", c.influxdb)),
            ("[http]", format!("{:?}", c.http)),
            ("[pipeline]", format!("{:?}", c.pipeline)),
            (
                "[work_orders] (and [[silences]])",
                format!("{:?}", c.work_orders),
            ),
            ("[energy]", format!("{:?}", c.energy)),
        ]
    };
    sections(old)
        .into_iter()
        .zip(sections(new))
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, _)| a.0)
        .collect()
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

/// What the BACnet task reads: `[bacnet]` and the BACnet devices' settings.
fn bacnet_fingerprint(config: &SiteConfig) -> String {
    let devices: Vec<_> = bacnet_devices(config)
        .iter()
        .map(|d| format!("{} {} {:?}", d.id, d.profile, d.bacnet))
        .collect();
    format!("{:?} {devices:?}", config.bacnet)
}

/// One running source task with its own stop and grace tokens (children of the sources' own, so the ordered
/// shutdown stops them all), and a fingerprint of what it reads, so a reload can tell whether it changed.
struct SourceTask {
    task: JoinHandle<()>,
    stop: CancellationToken,
    grace: CancellationToken,
    fingerprint: String,
}

impl SourceTask {
    /// Stops the task (stop, then grace) and waits for it; false when it did not end within `deadline`.
    async fn halt(self, deadline: Duration) -> bool {
        self.stop.cancel();
        self.grace.cancel();
        tokio::time::timeout(deadline, self.task).await.is_ok()
    }
}

/// Resolves once the pipeline has taken every batch the sources sent, plus a moment for the acknowledgements of
/// those messages to reach the broker.
async fn pipeline_caught_up(tx: &mpsc::Sender<Batch>) {
    while tx.capacity() < tx.max_capacity() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The running sources: the MQTT client and one task per Modbus link (TCP gateway or serial line).
struct Sources {
    mqtt: Option<SourceTask>,
    /// The BACnet/IP endpoint with every device poller on it.
    bacnet: Option<SourceTask>,
    /// Modbus links by link key.
    links: Vec<(String, SourceTask)>,
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
        let mut s = Sources {
            mqtt: None,
            bacnet: None,
            links: Vec::new(),
            stop: CancellationToken::new(),
            grace: CancellationToken::new(),
        };
        s.mqtt = s.start_mqtt(config, catalog, tx, health);
        let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
        for link in crate::sources::modbus::build(&modbus_devices(config), &cat) {
            let t = s.start_link(link, tx, health);
            s.links.push(t);
        }
        s.bacnet = s.start_bacnet(config, catalog, tx, health);
        s
    }

    /// One task for the BACnet/IP endpoint and every device poller on it.
    fn start_bacnet(
        &self,
        config: &SiteConfig,
        catalog: &SharedCatalog,
        tx: &mpsc::Sender<Batch>,
        health: &Arc<Health>,
    ) -> Option<SourceTask> {
        let b = config.bacnet.as_ref()?;
        let devices = bacnet_devices(config);
        let fingerprint = bacnet_fingerprint(config);
        let pollers = {
            let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
            crate::sources::bacnet::build(&devices, &cat)
        };
        let (stop, grace) = self.child();
        let fut = crate::sources::bacnet::run(
            b.clone(),
            pollers,
            tx.clone(),
            stop.clone(),
            health.clone(),
        );
        let task =
            watchdog::spawn_watched_stoppable(health, "bacnet", WATCH_PERIOD, fut, stop.clone());
        Some(SourceTask {
            task,
            stop,
            grace,
            fingerprint,
        })
    }

    fn child(&self) -> (CancellationToken, CancellationToken) {
        (self.stop.child_token(), self.grace.child_token())
    }

    fn start_mqtt(
        &self,
        config: &SiteConfig,
        catalog: &SharedCatalog,
        tx: &mpsc::Sender<Batch>,
        health: &Arc<Health>,
    ) -> Option<SourceTask> {
        let mqtt = config.mqtt.as_ref()?;
        let src = MqttSource {
            config: mqtt.clone(),
            catalog: catalog.clone(),
            tx: tx.clone(),
            health: health.clone(),
        };
        let (stop, grace) = self.child();
        let (s, g) = (stop.clone(), grace.clone());
        let task = watchdog::spawn_watched_stoppable(
            health,
            "mqtt",
            WATCH_PERIOD,
            async move {
                if let Err(e) = src.run(s, g).await {
                    error!(error = %e, "MQTT source failed");
                }
            },
            stop.clone(),
        );
        Some(SourceTask {
            task,
            stop,
            grace,
            fingerprint: format!("{mqtt:?}"),
        })
    }

    fn start_link(
        &self,
        link: crate::sources::modbus::link::Link,
        tx: &mpsc::Sender<Batch>,
        health: &Arc<Health>,
    ) -> (String, SourceTask) {
        let (stop, grace) = self.child();
        let name = format!("modbus {}", link.addr);
        let key = link.addr.key();
        let fingerprint = link.fingerprint();
        let link = link.with_health(health.clone());
        let task = watchdog::spawn_watched_stoppable(
            health,
            name,
            WATCH_PERIOD,
            link.run(tx.clone(), stop.clone()),
            stop.clone(),
        );
        (
            key,
            SourceTask {
                task,
                stop,
                grace,
                fingerprint,
            },
        )
    }

    /// A reload: restarts the sources whose reading changed and starts or stops the ones added or removed;
    /// the others keep running, connections and all. The MQTT client restarts when `[mqtt]` changed or a
    /// device it may read changed or went (its topic cache holds point ids); its session is persistent
    /// (`clean_session = false`), so the broker keeps what arrives meanwhile and redelivers what was not
    /// acknowledged.
    async fn reload(
        &mut self,
        config: &SiteConfig,
        catalog: &SharedCatalog,
        diff: &crate::catalog::CatalogDiff,
        tx: &mpsc::Sender<Batch>,
        health: &Arc<Health>,
        deadline: Duration,
    ) {
        let links = {
            let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
            crate::sources::modbus::build(&modbus_devices(config), &cat)
        };
        let modbus_ids: std::collections::HashSet<&str> =
            modbus_devices(config).iter().map(|d| d.id).collect();
        let mut old: Vec<(String, SourceTask)> = std::mem::take(&mut self.links);
        let mut starting = Vec::new();
        for link in links {
            let key = link.addr.key();
            match old.iter().position(|(k, _)| *k == key) {
                Some(i) if old[i].1.fingerprint == link.fingerprint() => {
                    self.links.push(old.remove(i));
                }
                _ => starting.push(link),
            }
        }
        // Stopped first (a restarted link has the same watchdog name); a stopped link's last readings are in
        // the channel with ids that stay valid (retired catalog entries).
        for (key, t) in old {
            info!(link = %key, "Modbus link stopped by the reload");
            if !t.halt(deadline).await {
                warn!(link = %key, "a Modbus link did not stop within shutdown_timeout after a reload");
            }
        }
        for link in starting {
            info!(link = %link.addr, "Modbus link started by the reload");
            let t = self.start_link(link, tx, health);
            self.links.push(t);
        }
        let bacnet_ids: std::collections::HashSet<&str> =
            bacnet_devices(config).iter().map(|d| d.id).collect();
        let touched = || diff.changed.iter().chain(&diff.removed);
        // One task polls every BACnet device (they share the endpoint): restarted when [bacnet] or any BACnet
        // device changed, as its pollers hold point ids.
        if self.bacnet.as_ref().map(|t| t.fingerprint.clone())
            != config.bacnet.as_ref().map(|_| bacnet_fingerprint(config))
            || touched().any(|id| bacnet_ids.contains(id.as_str()))
        {
            if let Some(t) = self.bacnet.take() {
                info!("BACnet source restarted by the reload");
                if !t.halt(deadline).await {
                    warn!("the BACnet source did not stop within shutdown_timeout after a reload");
                }
            }
            self.bacnet = self.start_bacnet(config, catalog, tx, health);
        }
        let mqtt_devices_changed = touched()
            .any(|id| !modbus_ids.contains(id.as_str()) && !bacnet_ids.contains(id.as_str()));
        let fingerprint = config.mqtt.as_ref().map(|m| format!("{m:?}"));
        let same = self.mqtt.as_ref().map(|t| &t.fingerprint) == fingerprint.as_ref();
        if same && !mqtt_devices_changed {
            return;
        }
        if let Some(t) = self.mqtt.take() {
            info!("MQTT client restarted by the reload");
            // The acknowledgements of what it sent go out before it disconnects (as at shutdown).
            t.stop.cancel();
            let _ = tokio::time::timeout(deadline, pipeline_caught_up(tx)).await;
            if !t.halt(deadline).await {
                warn!("the MQTT client did not stop within shutdown_timeout after a reload");
            }
        }
        self.mqtt = self.start_mqtt(config, catalog, tx, health);
    }

    /// Sources stop accepting; the pipeline works through what they sent; the MQTT connection stays up a moment
    /// longer so the acknowledgements of those messages reach the broker; then sources disconnect.
    async fn stop(self, tx: mpsc::Sender<Batch>, deadline: tokio::time::Instant) {
        self.stop.cancel();
        let _ = tokio::time::timeout_at(deadline, pipeline_caught_up(&tx)).await;
        drop(tx);
        self.grace.cancel();
        for s in self
            .mqtt
            .into_iter()
            .chain(self.bacnet)
            .chain(self.links.into_iter().map(|(_, t)| t))
        {
            let _ = tokio::time::timeout_at(deadline, s.task).await;
        }
    }
}
