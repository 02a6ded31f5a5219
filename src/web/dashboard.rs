//! The dashboard's state and routes (SPEC A5), merged with the ops endpoints by
//! [`app`]. Everything but `/login` (and the ops routes) sits behind
//! [`auth::require_session`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use sqlx::PgPool;

use super::accounts::Account;
use super::auth::{self, LoginLimiter};
use super::counts::FinalCounts;
use super::{actions, jobs, pages, trading_page, OpsState};
use crate::clock::SharedClock;
use crate::queue::HandlerRegistry;
use crate::workflow::{WorkflowDef, WorkflowEngine};

/// Who may log in and how cookies are set.
#[derive(Debug, Default)]
pub struct AuthConfig {
    pub accounts: Vec<Account>,
    pub secure_cookies: bool,
    /// Rate-limit on the last `X-Forwarded-For` address instead of the peer's.
    pub trust_forwarded_for: bool,
    pub limiter: LoginLimiter,
}

/// What every dashboard handler gets; cheap to clone.
#[derive(Clone)]
pub struct DashState {
    pub pool: PgPool,
    pub clock: SharedClock,
    pub registry: HandlerRegistry,
    pub engine: WorkflowEngine,
    /// The workflow definitions this process loaded (to run one, or fire its schedule).
    pub workflows: Arc<HashMap<String, WorkflowDef>>,
    pub auth: Arc<AuthConfig>,
    /// The overview's final-state counts snapshot (`web::counts`).
    pub final_counts: Arc<FinalCounts>,
}

impl DashState {
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        registry: HandlerRegistry,
        workflows: Vec<WorkflowDef>,
        auth: AuthConfig,
    ) -> DashState {
        DashState {
            pool,
            clock,
            engine: WorkflowEngine::new(registry.clone()),
            registry,
            workflows: Arc::new(workflows.into_iter().map(|w| (w.name.clone(), w)).collect()),
            auth: Arc::new(auth),
            final_counts: Arc::default(),
        }
    }
}

/// The dashboard routes only (`coinpilot dashboard` adds the ops routes too, see [`app`]).
pub fn dashboard_router(state: DashState) -> Router {
    let protected = Router::new()
        .route("/", get(pages::overview))
        .route("/api/overview", get(pages::overview_json))
        .route("/jobs", get(jobs::list_page))
        .route("/jobs/bulk", post(actions::bulk_jobs))
        .route("/jobs/{id}", get(jobs::detail_page))
        .route("/jobs/{id}/{action}", post(actions::job_action))
        .route("/queues/{name}/{action}", post(actions::queue_action))
        .route("/schedules", get(pages::schedules))
        .route("/schedules/{name}/{action}", post(actions::schedule_action))
        .route("/workflows", get(pages::workflows))
        .route("/workflows/runs/{id}", get(pages::run_detail))
        .route("/workflows/runs/{id}/{action}", post(actions::run_action))
        .route("/workflows/{name}/run", post(actions::start_workflow))
        .route("/trading", get(trading_page::trading_page))
        .route("/api/trading", get(trading_page::trading_json))
        .route("/logout", post(auth::logout))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ));
    Router::new()
        .route("/login", get(auth::login_page).post(auth::login))
        .merge(protected)
        .fallback(pages::not_found)
        .with_state(state)
}

/// The dashboard and the ops endpoints on one listener.
pub fn app(dash: DashState, ops: OpsState) -> Router {
    super::ops_router(ops).merge(dashboard_router(dash))
}
