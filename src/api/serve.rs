//! The `[http]` listener: `/health`, `/metrics`, `/api/v1/*` and the console on one port, plain HTTP or HTTPS
//! (rustls with the ring provider, certificate and key loaded when the config was validated).

use super::ApiState;
use super::auth::authenticate;
use super::error::ApiError;
use crate::telemetry::Health;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `/health` and `/metrics` when `metrics_public = false`: any valid token or session.
async fn require_token(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    match authenticate(&st, req.headers(), req.method()) {
        Ok(Some(_)) => next.run(req).await,
        Ok(None) => ApiError::unauthorized("metrics_public = false: send a token").into_response(),
        Err(e) => e.into_response(),
    }
}

/// The whole application: API routes, health and metrics, the console, a JSON 404 for the rest.
pub fn app(state: &ApiState, health: Arc<Health>, metrics: PrometheusHandle) -> Router {
    let telemetry = crate::telemetry::router::<ApiState>(state.site.clone(), health, metrics);
    let telemetry = if state.http.metrics_public {
        telemetry
    } else {
        telemetry.route_layer(middleware::from_fn_with_state(state.clone(), require_token))
    };
    Router::new()
        .merge(super::routes::api_router())
        .merge(telemetry)
        .merge(super::console::routes())
        .fallback(super::routes::no_route)
        .with_state(state.clone())
}

/// Binds `[http] listen`, starts the live-event watchers and serves until `shutdown`. Returns the bound address.
pub async fn serve(
    state: ApiState,
    health: Arc<Health>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listen = state.http.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} ([http] listen): {e}"))?;
    let addr = listener.local_addr()?;
    let app = app(&state, health, metrics);
    super::events::start(state.clone(), shutdown.clone());
    match state.http.tls.clone() {
        None => {
            tracing::info!(%addr, tokens = state.http.tokens.len(), "serving HTTP: /api/v1, /health, /metrics");
            tokio::spawn(async move {
                let r = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "HTTP server stopped");
                }
            });
        }
        Some(tls) => {
            tracing::info!(%addr, tokens = state.http.tokens.len(), "serving HTTPS: /api/v1, /health, /metrics");
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            tokio::spawn(accept_tls(listener, acceptor, app, shutdown));
        }
    }
    Ok(addr)
}

async fn accept_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    stop: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTPS accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, app, stop) = (acceptor.clone(), app.clone(), stop.clone());
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let app = app.clone();
                    async move {
                        use tower::ServiceExt;
                        app.oneshot(req).await
                    }
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, %peer, "HTTPS connection ended"); },
                _ = stop.cancelled() => {}
            }
        });
    }
}
