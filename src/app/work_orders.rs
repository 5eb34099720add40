//! Wiring of rules and work orders in the daemon: opens the store, restores active alarms into the engine,
//! starts the store thread, the stale/offline timer and one delivery worker per target; stops them in order.

use crate::catalog::SharedCatalog;
use crate::config::SiteConfig;
use crate::pipeline::Stage;
use crate::rules::RuleSet;
use crate::rules::engine::{Engine, Options};
use crate::rules::stage::{RulesHost, RulesStage, SharedRules};
use crate::work_orders::TargetKind;
use crate::work_orders::deliver::{InfluxOut, Worker, run_store};
use crate::work_orders::influx::TARGET as INFLUX_TARGET;
use crate::work_orders::store::{Store, path_in as store_path};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The running rules + work-order machinery.
pub struct Service {
    /// The engine, for `device_status` from sources.
    pub host: SharedRules,
    store_thread: Option<std::thread::JoinHandle<()>>,
    ticker: tokio::task::JoinHandle<()>,
    ticker_stop: CancellationToken,
    workers: Vec<tokio::task::JoinHandle<()>>,
    workers_stop: CancellationToken,
}

/// Starts the machinery when there is anything for it to do (rules or targets).
pub fn start(
    config: &SiteConfig,
    catalog: &SharedCatalog,
    rules: Arc<RuleSet>,
    queue: Option<Arc<dyn crate::sinks::influx::queue::ChunkQueue>>,
    notify: Arc<Notify>,
    health: &Arc<crate::telemetry::Health>,
) -> anyhow::Result<Option<Service>> {
    let wo = &config.work_orders;
    if rules.is_empty() && wo.targets.is_empty() {
        return Ok(None);
    }
    let path = store_path(&config.state_dir);
    let mut store = Store::open(&path, Some(&config.site.name))?;
    store.set_gateway(&config.site.gateway_id)?;
    store.set_flap_window(wo.flap_window);
    let mut kinds: Vec<(String, String)> = wo
        .targets
        .iter()
        .map(|t| {
            let k = match t.kind {
                TargetKind::Webhook { .. } => "webhook",
                TargetKind::Mqtt { .. } => "mqtt",
                TargetKind::Atlas { .. } => "atlas",
                TargetKind::Alertmanager { .. } => "alertmanager",
                TargetKind::Email { .. } => "email",
            };
            (t.name.clone(), k.to_string())
        })
        .collect();
    // The `work_orders` measurement is an outbox target of its own, so changes people make through the CLI
    // reach InfluxDB too; the store thread moves its rows into the InfluxDB queue.
    let influx = match queue {
        Some(queue) if !kinds.iter().any(|(n, _)| n == INFLUX_TARGET) => {
            kinds.push((INFLUX_TARGET.to_string(), "influxdb".to_string()));
            Some(InfluxOut { queue })
        }
        Some(_) => {
            warn!(
                target = INFLUX_TARGET,
                "a work-order target has this reserved name: the work_orders measurement is not written"
            );
            None
        }
        None => None,
    };
    store.set_targets(&kinds)?;
    store.sync_config_silences(&wo.silences, crate::work_orders::now_ms())?;
    let active = store.active_alarms()?;
    let mut engine = Engine::new(
        rules.clone(),
        Options {
            repeat_every_ns: wo.update_every.as_nanos() as i64,
        },
    );
    let pending: Vec<(String, String, String)> = {
        let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
        active
            .into_iter()
            .filter(|(r, d, p)| !engine.restore_active(&cat, r, d, p))
            .collect()
    };
    info!(
        rules = rules.len(),
        targets = wo.targets.len(),
        restored_pending = pending.len(),
        store = %path.display(),
        "rules and work orders ready"
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let n = notify.clone();
    let store_thread = std::thread::Builder::new()
        .name("work-orders".into())
        .spawn(move || run_store(store, rx, n, influx))?;
    let mut host = RulesHost::new(engine, &config.site.name, tx);
    host.pending_restore = pending;
    let host = host.shared();

    let ticker_stop = CancellationToken::new();
    let ticker = {
        let (host, catalog, stop) = (host.clone(), catalog.clone(), ticker_stop.clone());
        crate::watchdog::spawn_watched(
            health,
            "rules-timer",
            crate::watchdog::WATCH_PERIOD,
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = every.tick() => {}
                    }
                    let cat = catalog.read().unwrap_or_else(|e| e.into_inner());
                    host.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .tick(&cat, crate::util::now_ns());
                }
            },
        )
    };
    let workers_stop = CancellationToken::new();
    let mut workers = Vec::new();
    let rule_meta = Arc::new(crate::work_orders::deliver::rule_meta(&rules));
    let assets: Arc<std::collections::HashMap<String, String>> = Arc::new(
        config
            .devices
            .iter()
            .filter_map(|d| Some((d.id.clone(), d.asset_id.clone()?)))
            .collect(),
    );
    for t in &wo.targets {
        let mut w = Worker::open(&path, t.clone(), notify.clone())?;
        w.rule_meta = rule_meta.clone();
        w.assets = assets.clone();
        workers.push(crate::watchdog::spawn_watched(
            health,
            format!("work-order delivery {}", t.name),
            crate::watchdog::WATCH_PERIOD,
            w.run(workers_stop.clone()),
        ));
    }
    Ok(Some(Service {
        host,
        store_thread: Some(store_thread),
        ticker,
        ticker_stop,
        workers,
        workers_stop,
    }))
}

impl Service {
    /// The pipeline stage feeding readings to the engine.
    pub fn stage(&self) -> Box<dyn Stage> {
        Box::new(RulesStage(self.host.clone()))
    }

    /// Stops after the pipeline drained: the timer, then the store thread (after it applied every event), then
    /// the delivery workers (undelivered rows stay in the outbox for the next start).
    pub async fn shutdown(mut self, deadline: tokio::time::Instant) {
        self.ticker_stop.cancel();
        let _ = (&mut self.ticker).await;
        self.host.lock().unwrap_or_else(|e| e.into_inner()).close();
        if let Some(t) = self.store_thread.take() {
            let _ =
                tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(move || t.join()))
                    .await;
        }
        // Give in-flight deliveries a moment to finish before cutting them off.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
        })
        .await;
        self.workers_stop.cancel();
        for w in self.workers.drain(..) {
            if tokio::time::timeout_at(deadline, w).await.is_err() {
                warn!("a work-order delivery worker did not stop in time");
            }
        }
    }
}
