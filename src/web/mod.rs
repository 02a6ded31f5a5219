//! HTTP surface: the operational endpoints `/healthz` (process alive), `/readyz`
//! (database reachable and migrations current) and `/metrics` (Prometheus; needs the bearer
//! token when `COINPILOT_METRICS_TOKEN` is set), here; and the retry dashboard (SPEC A5) in
//! the submodules, behind a login.

pub mod accounts;
mod actions;
pub mod auth;
pub mod counts;
mod dag;
pub mod dashboard;
pub mod equity;
pub mod error;
pub mod job_search;
pub mod jobs;
mod layout;
mod pages;
pub mod trading;
mod trading_page;

pub use dashboard::{app, dashboard_router, AuthConfig, DashState};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;

#[derive(Clone)]
pub struct OpsState {
    pub pool: PgPool,
    pub clock: SharedClock,
    pub metrics: Option<PrometheusHandle>,
    pub metrics_token: Option<Arc<str>>,
}

pub fn ops_router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<OpsState>) -> Response {
    let applied: Result<Option<i64>, sqlx::Error> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&s.pool)
            .await;
    match applied {
        Ok(Some(v)) if v >= crate::db::latest_migration() => {
            (StatusCode::OK, "ready\n").into_response()
        }
        Ok(_) => (StatusCode::SERVICE_UNAVAILABLE, "migrations pending\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}

async fn metrics(State(s): State<OpsState>, headers: HeaderMap) -> Response {
    if let Some(token) = &s.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return (StatusCode::UNAUTHORIZED, "unauthorized\n").into_response();
        }
    }
    let Some(handle) = &s.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response();
    };
    if let Err(e) = crate::queue::metrics::sample_depths(&s.pool, s.clock.now()).await {
        tracing::warn!(error = %e, "could not sample queue depths");
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves `router` on `addr` until `shutdown`; returns the bound address at once.
pub async fn serve(
    router: Router,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        // Connection info feeds the login rate limit (per client address).
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let served = axum::serve(listener, service)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok((bound, handle))
}
