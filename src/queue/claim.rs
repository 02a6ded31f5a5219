//! Claiming jobs and every lease-checked state change of a running job. Each statement
//! here matches the job's current lease token (set only while the job runs, and unique to
//! one claim of one job), so a worker that lost its
//! lease (rescued, cancelled, discarded by hand) can never touch the job's next attempt.
//! The transitions are the rows of [`JobState::transition`](super::job::JobState::transition).
//! A completion may delete the row instead of keeping it as `completed`
//! ([`CompletedJobs::Delete`], `--delete-completed`).

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgExecutor, PgPool};

use super::job::{Job, JobEvent, JobId, JobState};
use super::QueueError;

/// Claims up to `$3` due jobs of queue `$1` for worker `$4`.
///
/// Locks: `FOR UPDATE SKIP LOCKED` on the selected rows, so concurrent claimers never wait
/// on each other and never get the same row; the `UPDATE` then holds those row locks until
/// the statement's transaction commits (autocommit: at once). Index: `jobs_claim_idx`
/// (queue, priority, run_at, id) WHERE state = 'available' — the scan reads only available
/// rows, in claim order. A paused queue (row in `queues`) yields nothing.
///
/// The update finds the chosen rows through the primary key (`id = ANY(ARRAY(…))`), never
/// through a join: with a CTE join and a large batch (prefetch) the planner hashed the whole
/// table for every claim (a sequential scan per claim, growing with the table). Rows come
/// back in id order; [`claim_batch`] puts them back in claim order.
const CLAIM_BATCH: &str = "
UPDATE jobs j
SET state = 'running', attempt = j.attempt + 1, started_at = $2, worker = $4,
    lease_token = nextval('job_lease_token_seq'),
    lease_expires_at = $2 + make_interval(secs => $5)
WHERE j.id = ANY(ARRAY(
    SELECT id FROM jobs
    WHERE state = 'available' AND queue = $1 AND run_at <= $2
      AND NOT EXISTS (SELECT 1 FROM queues WHERE name = $1 AND paused)
    ORDER BY priority, run_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
))
RETURNING j.*";

/// Completes a batch of jobs whose handlers did not use a transaction. Row locks on the
/// matched rows only; rows whose lease token no longer matches are left alone.
///
/// No join with the batch: lease tokens are unique across all jobs and attempts (one
/// `nextval` per claim), so "id in the batch and current token in the batch's tokens"
/// holds exactly when the pair (id, token) is in the batch. A join with `UNNEST(…)` let
/// PostgreSQL's generic plan (used after five executions) loop over every running row for
/// every batch entry once the statistics said "no running rows" (measured: 0.75 s per
/// 1,000 completions, the whole drain's bottleneck). Index: primary key (`id = ANY`).
/// No `state = 'running'` either: a lease token is set exactly while the job runs (the
/// table's CHECK), and naming the state lets the planner pick `jobs_lease_idx`, whose
/// dead entries a drain piles up faster than VACUUM clears them.
/// `$3` is null when no job of the batch has an output (the common case); otherwise the
/// output is looked up by the id's position. Callers pass ids in ascending order, as the
/// lease renewal does: through the primary key's index scan (the plan these take) both lock
/// rows in id order. Under another plan (a bitmap scan locks in heap order) a deadlock is
/// possible but rare; PostgreSQL breaks it after `deadlock_timeout` and both sides retry.
const COMPLETE_BATCH: &str = "
UPDATE jobs j
SET state = 'completed', finished_at = $4,
    output = CASE WHEN $3::jsonb[] IS NULL THEN NULL
                  ELSE ($3::jsonb[])[array_position($1::bigint[], j.id)] END,
    lease_token = NULL, lease_expires_at = NULL
WHERE j.id = ANY($1) AND j.lease_token = ANY($2)
RETURNING j.id";

/// Deletes a batch of completed jobs ([`CompletedJobs::Delete`]), matched on (id, lease
/// token) pairs as [`COMPLETE_BATCH`] is and for the same reasons. Row locks on the matched
/// rows, taken in ascending id order (primary key, `id = ANY`). A deletion writes no new
/// row version and no index entry, where the completion `UPDATE` writes a row version and
/// an entry in the primary key, `jobs_kind_id_idx` and `jobs_finished_idx` (every partial
/// index names `state`, so that update is never HOT): 4.6 µs a row against 14.
const DELETE_BATCH: &str = "
DELETE FROM jobs j
WHERE j.id = ANY($1) AND j.lease_token = ANY($2)
RETURNING j.id";

/// Locks a batch's rows in one ascending pass before a mixed batch (some rows deleted,
/// some completed) is written in two statements: each statement alone locks in ascending
/// order, but two of them in one transaction would lock in two ascending runs, and the
/// lease renewal (one ascending pass over the same worker's rows) could deadlock with them.
const LOCK_BATCH: &str = "
SELECT j.id FROM jobs j
WHERE j.id = ANY($1) AND j.lease_token = ANY($2)
ORDER BY j.id
FOR UPDATE";

/// Completes one job inside the handler's own transaction (its writes commit with it).
/// Row lock on that row; index: primary key.
const COMPLETE_ONE: &str = "
UPDATE jobs SET state = 'completed', finished_at = $3, output = $4,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND lease_token = $2 AND state = 'running'
RETURNING *";

/// [`COMPLETE_ONE`] deleting the job instead ([`CompletedJobs::Delete`]), for a job with
/// no output and no workflow run. Row lock on that row; index: primary key.
const DELETE_ONE: &str = "
DELETE FROM jobs
WHERE id = $1 AND lease_token = $2 AND state = 'running'
RETURNING id";

/// Records a failed attempt: back to `available` at `$4` (retry) or `discarded`.
const FAIL_ONE: &str = "
UPDATE jobs SET state = $3, run_at = $4, errors = errors || $5::jsonb,
    finished_at = CASE WHEN $3 = 'discarded'::job_state THEN $6 END,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND lease_token = $2 AND state = 'running'
RETURNING *";

/// Gives the attempt back (snooze, or release at shutdown): `available` at `$3`. Matches
/// (id, token) pairs without a join, as [`COMPLETE_BATCH`] does and for the same reason.
const GIVE_BACK: &str = "
UPDATE jobs j SET state = 'available', attempt = j.attempt - 1, run_at = $3,
    lease_token = NULL, lease_expires_at = NULL
WHERE j.id = ANY($1) AND j.lease_token = ANY($2)
RETURNING j.id";

/// Claims up to `limit` due jobs from `queue`.
pub async fn claim_batch(
    db: impl PgExecutor<'_>,
    queue: &str,
    now: DateTime<Utc>,
    limit: i64,
    worker: &str,
    lease: std::time::Duration,
) -> Result<Vec<Job>, QueueError> {
    debug_assert!(JobState::Available.transition(JobEvent::Claim).is_ok());
    let rows = sqlx::query(CLAIM_BATCH)
        .bind(queue)
        .bind(now)
        .bind(limit)
        .bind(worker)
        .bind(lease.as_secs_f64())
        .fetch_all(db)
        .await?;
    let mut jobs = rows
        .iter()
        .map(|r| Job::from_row(r).map_err(QueueError::from))
        .collect::<Result<Vec<_>, _>>()?;
    jobs.sort_unstable_by_key(|j| (j.priority, j.run_at, j.id));
    Ok(jobs)
}

/// What a completion does with the job's row. SPEC A1 keeps completed jobs until the
/// prune horizon (24 h by default); a worker started with `--delete-completed` sets that
/// horizon to zero for the jobs it completes, as graphile-worker always does. A job with an
/// output or in a workflow run is kept all the same: its output is read later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CompletedJobs {
    /// Completed rows stay until pruning (the default).
    #[default]
    Keep,
    /// Completed rows without output or workflow run are deleted at completion.
    Delete,
}

impl CompletedJobs {
    /// Whether a job completing with `output` (in a workflow run or not) loses its row.
    pub fn deletes(self, output: Option<&Value>, in_workflow_run: bool) -> bool {
        self == CompletedJobs::Delete && output.is_none() && !in_workflow_run
    }
}

/// A finished handler's result waiting to be written in a batch.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: JobId,
    pub token: i64,
    pub output: Option<Value>,
    /// The job belongs to a workflow run (its row is kept whatever [`CompletedJobs`] says).
    pub in_workflow_run: bool,
}

impl Completion {
    /// The completion of `job`'s attempt under lease `token`, with its stored output.
    pub fn of(job: &Job, token: i64, output: Option<Value>) -> Self {
        Completion {
            id: job.id,
            token,
            output,
            in_workflow_run: job.workflow_run_id.is_some(),
        }
    }
}

/// What [`complete_one`] did with the row.
#[derive(Debug)]
pub enum CompletedRow {
    /// Completed and kept: the row as it is now (boxed: a job row is ~380 bytes).
    Kept(Box<Job>),
    /// Deleted ([`CompletedJobs::Delete`]).
    Deleted(JobId),
}

/// Completes a batch; returns the ids whose lease still held (the others are refused).
/// With [`CompletedJobs::Delete`] the batch's deletable jobs are deleted: one statement
/// when all or none of them are, else one transaction that locks the whole batch in one
/// ascending pass ([`LOCK_BATCH`]) before the delete and the update.
pub async fn complete_batch(
    pool: &PgPool,
    now: DateTime<Utc>,
    batch: &[Completion],
    completed: CompletedJobs,
) -> Result<Vec<JobId>, QueueError> {
    // Ascending ids: the lock order the lease renewal uses too.
    let mut sorted: Vec<&Completion> = batch.iter().collect();
    sorted.sort_unstable_by_key(|c| c.id);
    let (gone, kept): (Vec<&Completion>, Vec<&Completion>) = sorted
        .into_iter()
        .partition(|c| completed.deletes(c.output.as_ref(), c.in_workflow_run));
    let done = match (gone.is_empty(), kept.is_empty()) {
        (true, true) => Vec::new(),
        (true, false) => update_completed(pool, now, &kept).await?,
        (false, true) => delete_completed(pool, &gone).await?,
        (false, false) => {
            let mut tx = pool.begin().await?;
            let all: Vec<&Completion> = gone.iter().chain(&kept).copied().collect();
            let (ids, tokens) = ids_and_tokens(&all);
            sqlx::query(LOCK_BATCH)
                .bind(&ids)
                .bind(&tokens)
                .execute(&mut *tx)
                .await?;
            let mut done = delete_completed(&mut *tx, &gone).await?;
            done.extend(update_completed(&mut *tx, now, &kept).await?);
            tx.commit().await?;
            done
        }
    };
    Ok(done.into_iter().map(JobId).collect())
}

fn ids_and_tokens(batch: &[&Completion]) -> (Vec<i64>, Vec<i64>) {
    batch.iter().map(|c| (c.id.0, c.token)).unzip()
}

async fn delete_completed(
    db: impl PgExecutor<'_>,
    batch: &[&Completion],
) -> Result<Vec<i64>, QueueError> {
    let (ids, tokens) = ids_and_tokens(batch);
    Ok(sqlx::query_scalar(DELETE_BATCH)
        .bind(&ids)
        .bind(&tokens)
        .fetch_all(db)
        .await?)
}

async fn update_completed(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    batch: &[&Completion],
) -> Result<Vec<i64>, QueueError> {
    let (ids, tokens) = ids_and_tokens(batch);
    let outputs: Option<Vec<Option<Value>>> = batch
        .iter()
        .any(|c| c.output.is_some())
        .then(|| batch.iter().map(|c| c.output.clone()).collect());
    Ok(sqlx::query_scalar(COMPLETE_BATCH)
        .bind(&ids)
        .bind(&tokens)
        .bind(&outputs)
        .bind(now)
        .fetch_all(db)
        .await?)
}

/// Completes one job in the caller's transaction; `None` when the lease was lost. With
/// [`CompletedJobs::Delete`] a job with no output and no workflow run is deleted.
pub async fn complete_one(
    tx: &mut PgConnection,
    job: &Job,
    token: i64,
    now: DateTime<Utc>,
    output: Option<&Value>,
    completed: CompletedJobs,
) -> Result<Option<CompletedRow>, QueueError> {
    JobState::Running.transition(JobEvent::Complete)?;
    if completed.deletes(output, job.workflow_run_id.is_some()) {
        let id: Option<i64> = sqlx::query_scalar(DELETE_ONE)
            .bind(job.id.0)
            .bind(token)
            .fetch_optional(tx)
            .await?;
        return Ok(id.map(|id| CompletedRow::Deleted(JobId(id))));
    }
    let row = sqlx::query(COMPLETE_ONE)
        .bind(job.id.0)
        .bind(token)
        .bind(now)
        .bind(output)
        .fetch_optional(tx)
        .await?;
    Ok(row
        .as_ref()
        .map(Job::from_row)
        .transpose()?
        .map(|job| CompletedRow::Kept(Box::new(job))))
}

/// One failed attempt, as stored in `jobs.errors`.
#[derive(Debug, Clone)]
pub struct AttemptError {
    pub attempt: i32,
    /// error | panic | timeout | rescued | permanent | args
    pub kind: &'static str,
    pub message: String,
    pub chain: Vec<String>,
}

impl AttemptError {
    pub fn to_json(&self, at: DateTime<Utc>) -> Value {
        json!({
            "attempt": self.attempt,
            "at": at,
            "kind": self.kind,
            "message": self.message,
            "chain": self.chain,
        })
    }
}

/// Where a failed attempt goes: `Some(retry time)` or `None` for discard.
pub fn next_after_failure(
    attempt: i32,
    max_attempts: i32,
    permanent: bool,
    now: DateTime<Utc>,
    backoff: Duration,
) -> Option<DateTime<Utc>> {
    if permanent || attempt >= max_attempts {
        None
    } else {
        Some(now + backoff)
    }
}

/// Records a failed attempt under the lease; returns the updated job, `None` if the lease
/// was lost (then nothing changed).
pub async fn fail_one(
    db: impl PgExecutor<'_>,
    id: JobId,
    token: i64,
    now: DateTime<Utc>,
    retry_at: Option<DateTime<Utc>>,
    error: &AttemptError,
) -> Result<Option<Job>, QueueError> {
    let (state, run_at) = match retry_at {
        Some(at) => (JobState::Running.transition(JobEvent::Retry)?, at),
        None => (JobState::Running.transition(JobEvent::Discard)?, now),
    };
    let row = sqlx::query(FAIL_ONE)
        .bind(id.0)
        .bind(token)
        .bind(state)
        .bind(run_at)
        .bind(Value::Array(vec![error.to_json(now)]))
        .bind(now)
        .fetch_optional(db)
        .await?;
    Ok(row.as_ref().map(Job::from_row).transpose()?)
}

/// Gives attempts back (snooze to `run_at`, or release at shutdown with `run_at = now`).
pub async fn give_back(
    db: impl PgExecutor<'_>,
    leases: &[(JobId, i64)],
    run_at: DateTime<Utc>,
) -> Result<Vec<JobId>, QueueError> {
    JobState::Running.transition(JobEvent::GiveBack)?;
    let ids: Vec<i64> = leases.iter().map(|(id, _)| id.0).collect();
    let tokens: Vec<i64> = leases.iter().map(|(_, t)| *t).collect();
    let done: Vec<i64> = sqlx::query_scalar(GIVE_BACK)
        .bind(&ids)
        .bind(&tokens)
        .bind(run_at)
        .fetch_all(db)
        .await?;
    Ok(done.into_iter().map(JobId).collect())
}
