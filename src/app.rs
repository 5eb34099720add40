//! Wiring: load and validate everything (`caretaker check`), then start the tasks (`caretaker run`) and stop
//! them in order on SIGINT/SIGTERM: sources first, then the pipeline drains, then the writer flushes.

use crate::catalog::{Catalog, SharedCatalog, profile};
use crate::config::SiteConfig;
use crate::diag::Diagnostic;
use crate::pipeline::{Batch, Pipeline};
use crate::sinks::influx::queue::{ChunkQueue, MemQueue};
use crate::sinks::influx::spool::{Spool, SpoolOptions};
use crate::sinks::influx::writer::HttpWriter;
use crate::sinks::influx::{WriterLoop, WriterSettings};
use crate::sources::mqtt::MqttSource;
use crate::telemetry::{self, Health};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Everything a site is made of, validated.
pub struct Loaded {
    pub config: SiteConfig,
    pub catalog: Catalog,
    pub rules: Arc<crate::rules::RuleSet>,
}

/// Loads the site config, its profiles and declared devices, listing every problem found.
pub fn load(config_file: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let (config, mut errs) = SiteConfig::load_lenient(config_file);
    let Some(config) = config else {
        return Err(errs);
    };
    let config_ok = errs.is_empty();
    let (profiles, profile_errs) = profile::load_dirs(&config.profile_dirs);
    let profiles_ok = profile_errs.is_empty();
    let profiles_for_rules = profiles.clone();
    errs.extend(profile_errs);
    // Unknown profiles are only meaningful once every profile file loaded.
    let catalog = if profiles_ok {
        match Catalog::from_config(&config, profiles) {
            Ok(c) => {
                errs.extend(crate::sources::modbus::check(&config, &c));
                Some(c)
            }
            Err(es) => {
                errs.extend(es);
                None
            }
        }
    } else {
        None
    };
    // Rules are checked against the profiles that loaded, even when other parts failed, so one run lists all.
    let devices: std::collections::BTreeMap<String, String> = config
        .devices
        .iter()
        .map(|d| (d.id.clone(), d.profile.clone()))
        .collect();
    let rule_cx = crate::rules::Context {
        profiles: &profiles_for_rules,
        devices: &devices,
        timezone: config.site.timezone.as_deref(),
    };
    let (rules, rule_errs) = crate::rules::load_dirs(&config.rule_dirs, &rule_cx);
    errs.extend(rule_errs);
    match catalog {
        Some(catalog) if errs.is_empty() && config_ok => Ok(Loaded {
            config,
            catalog,
            rules: Arc::new(rules),
        }),
        _ => Err(errs),
    }
}

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

/// Opens the spool under `[state] dir`, recovering what the last run left unsent.
fn open_spool(
    config: &SiteConfig,
    influx: &crate::config::InfluxConfig,
) -> Result<Arc<Spool>, crate::sinks::influx::spool::SpoolError> {
    let opts = SpoolOptions::new(
        config.state_dir.join("spool"),
        influx.spool_max_bytes,
        influx.when_full,
        influx.fsync_interval,
    );
    let (spool, rec) = Spool::open(opts)?;
    info!(
        dir = %spool.dir().display(),
        max_bytes = influx.spool_max_bytes,
        when_full = influx.when_full.as_str(),
        fsync_interval = ?influx.fsync_interval,
        recovered_readings = rec.readings,
        corrupt_bytes_skipped = rec.corrupt_bytes,
        "spooling readings to disk before InfluxDB"
    );
    Ok(spool)
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn wait_for_signal() {
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
    extra_stages: Vec<Box<dyn crate::pipeline::Stage>>,
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
    if let Some(http) = &config.http {
        telemetry::serve(
            http.listen,
            config.site.name.clone(),
            health.clone(),
            metrics,
            http_stop.clone(),
        )
        .await?;
    }

    // InfluxDB: queue + writer.
    let writer_drain = CancellationToken::new();
    let writer_hard = CancellationToken::new();
    let reporter_stop = CancellationToken::new();
    let mut spool: Option<Arc<Spool>> = None;
    let (queue, writer_task) = match &config.influxdb {
        Some(influx) => {
            health
                .influx_configured
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let queue: Arc<dyn ChunkQueue> = match open_spool(&config, influx) {
                Ok(s) => {
                    crate::sinks::influx::catchup::publish_spool(&s, &health);
                    spool = Some(s.clone());
                    s
                }
                Err(e) if e.is_locked() => return Err(e.into()),
                Err(e) => {
                    error!(error = %e, queue_max_bytes = influx.queue_max_bytes,
                        "cannot open the spool: readings wait in memory only and are lost if the process stops while InfluxDB is unreachable");
                    *health.spool_error.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(e.to_string());
                    Arc::new(MemQueue::new(influx.queue_max_bytes))
                }
            };
            tokio::spawn(crate::sinks::influx::catchup::run(
                queue.clone(),
                spool.clone(),
                health.clone(),
                Duration::from_secs(5),
                influx.flush_interval + Duration::from_secs(10),
                reporter_stop.clone(),
            ));
            let writer = HttpWriter::new(influx)?;
            info!(endpoint = %writer.endpoint(), "writing to InfluxDB");
            let settings = WriterSettings {
                batch_size: influx.batch_size,
                flush_interval: influx.flush_interval,
                max_retry_backoff: influx.max_retry_backoff,
            };
            let wl = WriterLoop::new(queue.clone(), writer, settings, health.clone());
            let task = tokio::spawn(wl.run(writer_drain.clone(), writer_hard.clone()));
            (Some(queue), Some(task))
        }
        None => {
            warn!("no [influxdb] section: readings are not stored");
            (None, None)
        }
    };

    // Rules and work orders.
    let work_orders =
        crate::work_orders::service::start(&config, &catalog, rules.clone(), queue.clone())?;

    // Pipeline.
    let (tx, rx) = mpsc::channel::<Batch>(config.pipeline.channel_capacity);
    let chunk_lines = config
        .influxdb
        .as_ref()
        .map(|i| i.batch_size as u32)
        .unwrap_or(5000);
    // Anomaly detection: restores detector state from [state].dir and saves it when the pipeline stops.
    let anomaly = {
        let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
        crate::anomaly::stage::AnomalyStage::open(&config.state_dir, &cat)
    };
    // Signals for the rules (anomaly scores, forecasts, equipment models, energy baselines).
    let (signal_stage, hub) = crate::signals::build(&rules, Some(anomaly.latest()));
    // Trends and equipment models are kept under [state].dir like the anomaly detectors.
    let signal_stage = signal_stage.map(|s| s.persist_in(&config.state_dir));
    if let Some(w) = &work_orders {
        w.host
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .engine
            .set_signal(Box::new(hub.clone()));
    }
    if let (Some(energy), true) = (&config.energy, hub.wants_energy()) {
        // Deviations from baseline come from the energy store (SQLite), refreshed every `[energy]
        // baseline_refresh` (5 minutes) off the pipeline: a rule's `for: 3d` needs daily figures, not
        // per-reading ones.
        let (hub, catalog, energy) = (hub.clone(), catalog.clone(), energy.clone());
        let path = crate::energy::store::path_in(&config.state_dir);
        let tz = crate::energy::cli::site_tz(&config);
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
    // Stage order matters: anomaly scores and other signals are computed before the rules read them.
    let mut stages: Vec<Box<dyn crate::pipeline::Stage>> = vec![Box::new(anomaly)];
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
            crate::energy::cli::site_tz(&config)
                .iana_name()
                .unwrap_or("UTC"),
            &config.site.name,
            queue.clone(),
        )?));
    }
    let pipeline = Pipeline {
        rx,
        catalog: catalog.clone(),
        queue: queue.clone(),
        stages,
        chunk_lines,
    };
    let pipeline_task = tokio::spawn(pipeline.run());

    // Sources.
    let source_stop = CancellationToken::new();
    let source_grace = CancellationToken::new();
    let mut sources = Vec::new();
    if let Some(mqtt) = &config.mqtt {
        let src = MqttSource {
            config: mqtt.clone(),
            catalog: catalog.clone(),
            tx: tx.clone(),
            health: health.clone(),
        };
        let (stop, grace) = (source_stop.clone(), source_grace.clone());
        sources.push(tokio::spawn(async move {
            if let Err(e) = src.run(stop, grace).await {
                error!(error = %e, "MQTT source failed");
            }
        }));
    }

    // Modbus: one task per link (TCP gateway or serial line).
    {
        let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
        for link in crate::sources::modbus::build(&config, &cat) {
            let (tx, stop) = (tx.clone(), source_stop.clone());
            let link = link.with_health(health.clone());
            sources.push(tokio::spawn(link.run(tx, stop)));
        }
    }

    shutdown.cancelled().await;
    let deadline = tokio::time::Instant::now() + config.pipeline.shutdown_timeout;

    // 1. Sources stop accepting; the pipeline works through what they sent; the MQTT connection stays up a
    //    moment longer so the acknowledgements of those messages reach the broker; then sources disconnect.
    source_stop.cancel();
    let probe = tx;
    let _ = tokio::time::timeout_at(deadline, async {
        while probe.capacity() < probe.max_capacity() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    drop(probe);
    source_grace.cancel();
    for s in sources {
        let _ = tokio::time::timeout_at(deadline, s).await;
    }
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
    writer_drain.cancel();
    if let Some(task) = writer_task {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            writer_hard.cancel();
            if let Some(q) = &queue {
                let st = q.stats();
                if st.readings > 0 && !q.durable() {
                    metrics::counter!("caretaker_readings_dropped_total", "stage" => "influx", "reason" => "shutdown")
                        .increment(st.readings);
                    error!(
                        readings = st.readings,
                        "InfluxDB unreachable at shutdown: queued readings are lost (no spool)"
                    );
                } else if st.readings > 0 {
                    warn!(
                        readings = st.readings,
                        "InfluxDB unreachable at shutdown: unsent readings stay in the spool and are sent after the next start"
                    );
                }
            }
        }
    }
    reporter_stop.cancel();
    if let Some(Err(e)) = spool.as_ref().map(|s| s.sync()) {
        error!(error = %e, "spool fsync at shutdown failed");
    }
    http_stop.cancel();
    info!("caretaker stopped");
    Ok(())
}
