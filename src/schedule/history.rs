//! The `prune_history` job kind: deletes schedule fire records and finished workflow runs
//! (with their steps) older than a horizon, in small batches, so the bookkeeping of a
//! per-second schedule does not grow without bound. Jobs themselves are pruned by the
//! queue's `prune` kind.
//!
//! Args (defaults): `days` 7, `batch` 1000.

use chrono::Duration;
use serde::Deserialize;
use serde_json::json;

use crate::queue::{Handler, JobContext, JobError, KindOptions, Outcome};

/// Oldest fire records first. Row locks on the deleted rows only; `SKIP LOCKED` so it
/// never waits on a tick recording a fire.
const PRUNE_FIRES: &str = "
DELETE FROM schedule_fires WHERE id IN (
    SELECT id FROM schedule_fires WHERE created_at < $1 ORDER BY id LIMIT $2
    FOR UPDATE SKIP LOCKED)";

/// Finished runs past the horizon; their steps go with them (`ON DELETE CASCADE`). A
/// running run is never touched. Index: `workflow_runs_finished_idx`.
const PRUNE_RUNS: &str = "
DELETE FROM workflow_runs WHERE id IN (
    SELECT id FROM workflow_runs WHERE finished_at < $1 LIMIT $2
    FOR UPDATE SKIP LOCKED)";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryArgs {
    pub days: i64,
    pub batch: i64,
}

impl Default for HistoryArgs {
    fn default() -> Self {
        HistoryArgs {
            days: 7,
            batch: 1000,
        }
    }
}

pub struct PruneHistory;

impl Handler for PruneHistory {
    const KIND: &'static str = "prune_history";
    type Args = HistoryArgs;

    fn options(&self) -> KindOptions {
        KindOptions {
            queue: "maintenance".into(),
            max_attempts: 3,
            ..KindOptions::default()
        }
    }

    async fn run(&self, ctx: &mut JobContext, a: HistoryArgs) -> Result<Outcome, JobError> {
        if a.days < 1 || a.batch < 1 {
            return Err(JobError::permanent("days and batch must be at least 1"));
        }
        let horizon = ctx.now() - Duration::days(a.days);
        let mut deleted = [0u64; 2];
        for (i, sql) in [PRUNE_FIRES, PRUNE_RUNS].into_iter().enumerate() {
            loop {
                let n = sqlx::query(sql)
                    .bind(horizon)
                    .bind(a.batch)
                    .execute(&ctx.pool)
                    .await?
                    .rows_affected();
                deleted[i] += n;
                if n < a.batch as u64 {
                    break;
                }
            }
        }
        Ok(Outcome::output(
            json!({"fires": deleted[0], "runs": deleted[1]}),
        ))
    }
}
