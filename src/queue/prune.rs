//! Pruning finished jobs (SPEC A1): completed ones older than 24 h, discarded and
//! cancelled ones older than 7 d, and jobs of workflow runs no sooner than the run's
//! horizon (7 d) so a retried run still sees its parents' outputs. Deletes in small batches
//! so no statement holds many row locks or runs long.
//!
//! Options (defaults): `completed` 24 h, `failed` 7 d, `workflow` 7 d, `batch` 1000.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::QueueError;

/// Deletes up to `$4` finished jobs past their horizon.
/// Locks: `FOR UPDATE SKIP LOCKED` on the chosen rows (index `jobs_finished_idx`), so it
/// never waits on (or blocks) an admin action touching the same rows.
const PRUNE_BATCH: &str = "
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE state IN ('completed', 'discarded', 'cancelled')
      AND finished_at < CASE
            WHEN workflow_run_id IS NOT NULL THEN $3
            WHEN state = 'completed' THEN $1
            ELSE $2 END
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneOptions {
    pub completed_hours: i64,
    pub failed_days: i64,
    pub workflow_days: i64,
    pub batch: i64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            completed_hours: 24,
            failed_days: 7,
            workflow_days: 7,
            batch: 1000,
        }
    }
}

/// Deletes everything past its horizon at `now`, batch by batch; returns how many.
pub async fn prune_finished(
    pool: &PgPool,
    now: DateTime<Utc>,
    opts: &PruneOptions,
) -> Result<u64, QueueError> {
    if opts.batch < 1 {
        return Err(QueueError::InvalidInput(
            "prune batch must be at least 1".into(),
        ));
    }
    let mut total = 0;
    loop {
        let n = sqlx::query(PRUNE_BATCH)
            .bind(now - Duration::hours(opts.completed_hours))
            .bind(now - Duration::days(opts.failed_days))
            .bind(now - Duration::days(opts.workflow_days))
            .bind(opts.batch)
            .execute(pool)
            .await?
            .rows_affected();
        total += n;
        if n < opts.batch as u64 {
            return Ok(total);
        }
    }
}
