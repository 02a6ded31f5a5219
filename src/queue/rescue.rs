//! The rescuer: returns jobs whose lease expired (their worker died, was OOM-killed or cut
//! off) to `available` as a failed attempt with backoff, or discards them when out of
//! attempts. Every worker runs it every `interval`; `SKIP LOCKED` lets rescuers on many
//! replicas share the work without waiting on each other. A job is back within
//! lease + one interval of its worker's death.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::job::{Job, JobEvent, JobState};
use super::metrics as m;
use super::runtime::{CompletionHook, WorkerEvent};
use super::wake::Wake;
use super::QueueError;
use crate::clock::SharedClock;

/// Rescues up to `$2` expired leases at `$1`.
///
/// Locks: `FOR UPDATE SKIP LOCKED` on expired running rows (index `jobs_lease_idx`); a row a
/// live worker is completing at this instant is skipped and looked at next round. The
/// backoff is `backoff.rs`'s formula (2^attempt s, ±10 %, ≤ 1 h) written in SQL because it
/// depends on each row's attempt.
const RESCUE_EXPIRED: &str = "
WITH expired AS (
    SELECT id FROM jobs
    WHERE state = 'running' AND lease_expires_at < $1
    ORDER BY lease_expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j SET
    state = CASE WHEN j.attempt >= j.max_attempts THEN 'discarded'::job_state
                 ELSE 'available'::job_state END,
    run_at = $1 + make_interval(secs => least(power(2, least(j.attempt, 30)), 3600) * (0.9 + random() * 0.2)),
    finished_at = CASE WHEN j.attempt >= j.max_attempts THEN $1 END,
    errors = j.errors || jsonb_build_array(jsonb_build_object(
        'attempt', j.attempt, 'at', $1, 'kind', 'rescued', 'chain', '[]'::jsonb,
        'message', 'lease expired on worker ' || coalesce(j.worker, '?')
                   || ' (it died, hung or lost its database connection)')),
    lease_token = NULL, lease_expires_at = NULL
FROM expired WHERE j.id = expired.id
RETURNING j.*";

/// Rescues one batch in the caller's transaction; returns the rescued jobs.
pub async fn rescue_expired_leases(
    tx: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Job>, QueueError> {
    // Both rows of the table the statement may take: back to available, or discarded
    // when the expired attempt was the last.
    JobState::Running.transition(JobEvent::Rescue)?;
    JobState::Running.transition(JobEvent::Discard)?;
    let rows = sqlx::query(RESCUE_EXPIRED)
        .bind(now)
        .bind(limit)
        .fetch_all(tx)
        .await?;
    Ok(rows.iter().map(Job::from_row).collect::<Result<_, _>>()?)
}

pub struct Rescuer {
    pub pool: PgPool,
    pub clock: SharedClock,
    pub interval: Duration,
    pub hook: Option<Arc<dyn CompletionHook>>,
    pub events: tokio::sync::broadcast::Sender<WorkerEvent>,
    pub wake: Arc<Wake>,
}

impl Rescuer {
    pub fn start(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.run_once().await {
                    Ok(n) => {
                        let _unobserved = self.events.send(WorkerEvent::RescuerRan { rescued: n });
                    }
                    Err(e) => tracing::warn!(error = %e, "rescuer round failed"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(self.interval) => {}
                }
            }
        })
    }

    /// Rescues every expired lease, in batches of 500; returns how many.
    pub async fn run_once(&self) -> Result<usize, QueueError> {
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let now = self.clock.now();
            let jobs = rescue_expired_leases(&mut tx, now, 500).await?;
            if let Some(hook) = &self.hook {
                for job in jobs.iter().filter(|j| j.state == JobState::Discarded) {
                    hook.on_discarded(&mut tx, job, now).await?;
                }
            }
            tx.commit().await?;
            for job in &jobs {
                tracing::warn!(job_id = job.id.0, kind = %job.kind, attempt = job.attempt,
                    state = %job.state, "rescued job whose lease expired");
            }
            total += jobs.len();
            m::rescued(jobs.len() as u64);
            if !jobs.is_empty() {
                self.wake.wake();
            }
            if jobs.len() < 500 {
                return Ok(total);
            }
        }
    }
}
