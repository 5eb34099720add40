//! The HTTP API under `/api/v1` (JSON in and out), served with `/health`, `/metrics` and the web console on the
//! one `[http]` listener, over HTTPS when `[http] tls_cert_file`/`tls_key_file` are set.
//!
//! - [`config`]: the `[http]` section (listen, TLS, tokens and roles).
//! - [`auth`]: Bearer tokens, session cookies with CSRF, failed sign-in limits.
//! - [`routes`]: the one route table: it registers the axum routes and is what [`openapi`] documents.
//! - [`work_orders`], [`devices`], [`reports`]: the handlers; [`events`]: Server-Sent Events.
//! - [`live`]: the live-state pipeline stage (latest values, 24 h history, devices online).
//! - [`serve`]: the listener (plain or rustls).
//! - `console`: the web page's routes (its own module).
//!
//! Errors are `{"error": {"code", "message", "field"?}}` ([`error`]).

pub mod auth;
pub mod config;
pub mod console;
pub mod devices;
pub mod error;
pub mod events;
pub mod live;
pub mod openapi;
pub mod params;
pub mod reports;
pub mod routes;
pub mod serve;
pub mod spec;
pub mod work_orders;

use crate::catalog::SharedCatalog;
use crate::energy::config::EnergyConfig;
use crate::work_orders::WorkOrdersConfig;
use crate::work_orders::store::Store;
use config::HttpConfig;
use error::{ApiError, ApiResult};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, broadcast};

pub use serve::serve;

/// What the API needs from the daemon: its part of the config and the handles it shares with the daemon.
pub struct ApiParts {
    pub http: HttpConfig,
    pub site: String,
    pub tz: jiff::tz::TimeZone,
    pub state_dir: PathBuf,
    pub catalog: SharedCatalog,
    pub live: Arc<live::LiveState>,
    /// Wakes the work-order delivery workers after the API wrote outbox rows.
    pub notify: Arc<Notify>,
    pub work_orders: WorkOrdersConfig,
    pub energy: Option<EnergyConfig>,
    /// Devices polled over Modbus (the others speak MQTT).
    pub modbus_devices: HashSet<String>,
    /// Cancelled when the daemon stops (ends the event streams).
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// What the handlers share: the daemon's [`ApiParts`] (reached through `Deref`, as in `state.catalog`) and the
/// API's own state.
pub struct ApiInner {
    pub parts: ApiParts,
    pub sessions: Mutex<auth::Sessions>,
    /// Live events for `GET /api/v1/events`.
    pub events: broadcast::Sender<events::Event>,
    store: Mutex<Option<Store>>,
}

impl std::ops::Deref for ApiInner {
    type Target = ApiParts;
    fn deref(&self) -> &ApiParts {
        &self.parts
    }
}

/// The axum state: cheap to clone.
#[derive(Clone)]
pub struct ApiState(pub Arc<ApiInner>);

impl std::ops::Deref for ApiState {
    type Target = ApiInner;
    fn deref(&self) -> &ApiInner {
        &self.0
    }
}

impl ApiState {
    pub fn new(parts: ApiParts) -> ApiState {
        ApiState(Arc::new(ApiInner {
            parts,
            sessions: Mutex::new(auth::Sessions::default()),
            events: broadcast::channel(1024).0,
            store: Mutex::new(None),
        }))
    }

    /// The work-order store file.
    pub fn store_path(&self) -> PathBuf {
        crate::work_orders::store::path_in(&self.state_dir)
    }

    /// Runs `f` on the API's store connection (opened on first use) on a blocking thread.
    pub async fn with_store<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> ApiResult<T> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = me.store.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_none() {
                std::fs::create_dir_all(&me.state_dir).map_err(|e| {
                    ApiError::internal(format!("state dir {}: {e}", me.state_dir.display()))
                })?;
                *g = Some(
                    Store::open(&me.store_path(), Some(&me.site))
                        .map_err(|e| ApiError::internal(e.to_string()))?,
                );
            }
            match g.as_mut() {
                Some(s) => f(s),
                None => Err(ApiError::internal("work-order store not open")),
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("store task: {e}")))?
    }
}
