//! The scheduler tick, a background service every worker process runs (no leader). It
//! fires what is due, then sleeps until the earliest `next_fire_at` of any active schedule,
//! at most `max_sleep`, so a fire starts within milliseconds of its time and a pause,
//! resume or new schedule is seen within `max_sleep`.
//!
//! Options (defaults): `max_sleep` 1 s, `batch` 500 schedules per transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::fire::{fire_due_schedules, Firing, TickReport};
use super::ScheduleError;
use crate::clock::SharedClock;
use crate::queue::HandlerRegistry;
use crate::workflow::{WorkflowDef, WorkflowEngine};

/// The earliest fire any active schedule waits for. Index: `schedules_due_idx`.
const EARLIEST: &str =
    "SELECT min(next_fire_at) FROM schedules WHERE enabled AND NOT paused AND NOT pruned";

pub struct Scheduler {
    pub pool: PgPool,
    pub clock: SharedClock,
    pub registry: HandlerRegistry,
    pub engine: WorkflowEngine,
    pub workflows: Arc<HashMap<String, WorkflowDef>>,
    pub max_sleep: Duration,
    pub batch: i64,
    /// Test signal: one report per tick that fired something.
    pub events: broadcast::Sender<TickReport>,
}

impl Scheduler {
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        registry: HandlerRegistry,
        workflows: Vec<WorkflowDef>,
    ) -> Self {
        Scheduler {
            pool,
            clock,
            engine: WorkflowEngine::new(registry.clone()),
            registry,
            workflows: Arc::new(workflows.into_iter().map(|w| (w.name.clone(), w)).collect()),
            max_sleep: Duration::from_secs(1),
            batch: 500,
            events: broadcast::channel(1024).0,
        }
    }

    pub fn firing(&self) -> Firing<'_> {
        Firing {
            registry: &self.registry,
            engine: &self.engine,
            workflows: &self.workflows,
        }
    }

    /// Fires everything due now, batch after batch.
    pub async fn tick(&self) -> Result<TickReport, ScheduleError> {
        let mut total = TickReport::default();
        loop {
            let r = fire_due_schedules(&self.pool, &self.firing(), self.clock.now(), self.batch)
                .await?;
            total.fired += r.fired;
            total.skipped_missed += r.skipped_missed;
            total.deferred += r.deferred;
            total.lateness.extend(r.lateness);
            if !r.full {
                return Ok(total);
            }
        }
    }

    /// `contended`: something was due that this tick neither fired nor deferred (another
    /// replica holds it), so look again soon for the next fire time.
    async fn sleep_time(&self, contended: bool) -> Duration {
        let earliest: Option<DateTime<Utc>> =
            match sqlx::query_scalar(EARLIEST).fetch_one(&self.pool).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: cannot read the next fire time");
                    None
                }
            };
        let now = self.clock.now();
        match earliest {
            // Due but held by another replica: look again shortly. Rows this worker defers
            // (it lacks their workflow or kind) do not count, or it would poll every 20 ms.
            Some(t) if t <= now && contended => Duration::from_millis(20),
            Some(t) => self.clock.real(t - now).min(self.max_sleep),
            None => self.max_sleep,
        }
    }

    pub fn start(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let contended = match self.tick().await {
                    Ok(r) => {
                        backoff = Duration::from_millis(100);
                        let contended = r.fired == 0 && r.deferred == 0;
                        if r.fired > 0 || r.skipped_missed > 0 {
                            let _unobserved = self.events.send(r);
                        }
                        contended
                    }
                    Err(e) => {
                        // The database may be restarting: try again with back-off.
                        tracing::warn!(error = %e, "scheduler tick failed");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                let wait = self.sleep_time(contended).await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        })
    }
}
