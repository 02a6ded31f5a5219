//! Operations a person performs on jobs and queues (CLI and dashboard): list, show, retry,
//! cancel, discard, pause and resume. Every change goes through the transition table and
//! locks the one row it changes (`FOR UPDATE`), so it serialises with the worker's own
//! lease-checked updates.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Row};

use super::enqueue::enqueue;
use super::job::{Enqueued, Job, JobEvent, JobId, JobState, NewJob, JOB_COLUMNS};
use super::notify::CONTROL_CHANNEL;
use super::QueueError;

/// Filters of `jobs list`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub limit: i64,
}

/// Newest first, filtered; each filter is a bound parameter (no SQL built from input).
pub async fn list_jobs(pool: &PgPool, f: &JobFilter) -> Result<Vec<Job>, QueueError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE ($1::job_state IS NULL OR state = $1)
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::text IS NULL OR queue = $3)
         ORDER BY id DESC LIMIT $4"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(f.state)
        .bind(&f.kind)
        .bind(&f.queue)
        .bind(f.limit.clamp(1, 10_000))
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(Job::from_row).collect::<Result<_, _>>()?)
}

pub async fn get_job(db: &mut PgConnection, id: JobId, lock: bool) -> Result<Job, QueueError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .fetch_optional(db)
        .await?
        .ok_or(QueueError::NotFound(id))?;
    Ok(Job::from_row(&row)?)
}

/// What `retry` did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Retried {
    /// An available (scheduled/retrying) job was made due now.
    RunNow { id: JobId },
    /// A final job was copied; the copy links to the original.
    Copied { original: JobId, copy: Enqueued },
}

/// "Retry now": a waiting job runs now; a final job is enqueued again as a linked copy.
pub async fn retry_job(
    pool: &PgPool,
    id: JobId,
    now: DateTime<Utc>,
    by: &str,
) -> Result<Retried, QueueError> {
    let mut tx = pool.begin().await?;
    let result = retry_job_in(&mut tx, id, now, by).await?;
    tx.commit().await?;
    Ok(result)
}

/// [`retry_job`] inside the caller's transaction, so a bulk retry can batch many jobs in one.
/// A wrong state is found before any write, so the transaction stays usable after it.
pub async fn retry_job_in(
    tx: &mut PgConnection,
    id: JobId,
    now: DateTime<Utc>,
    by: &str,
) -> Result<Retried, QueueError> {
    let job = get_job(&mut *tx, id, true).await?;
    let result = if job.state.is_final() {
        let mut copy = NewJob::new(job.kind.clone(), job.args.clone())
            .with_queue(job.queue.clone())
            .with_priority(job.priority)
            .with_max_attempts(job.max_attempts)
            .with_enqueued_by(by);
        copy.timeout_ms = job.timeout_ms;
        copy.unique_key = job.unique_key.clone();
        copy.copied_from = Some(job.id.0);
        Retried::Copied {
            original: id,
            copy: enqueue(&mut *tx, now, &copy).await?,
        }
    } else {
        let next = job
            .state
            .transition(JobEvent::RunNow)
            .map_err(|_| QueueError::WrongState {
                id,
                state: job.state,
                action: "retry",
            })?;
        sqlx::query("UPDATE jobs SET state = $2, run_at = $3 WHERE id = $1")
            .bind(id.0)
            .bind(next)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_notify('coinpilot_jobs', $1)")
            .bind(&job.queue)
            .execute(&mut *tx)
            .await?;
        Retried::RunNow { id }
    };
    Ok(result)
}

/// Linked copies of the final jobs among `$1`, set-based (a bulk "retry"): one statement
/// per batch instead of one round trip per job. Locks only the new rows and their unique
/// index entries; the originals are final and only read. A copy whose unique key a live
/// job holds is skipped, as a single retry would report it a duplicate. One `NOTIFY` per
/// queue.
const COPY_FINAL_MANY: &str = "
WITH ins AS (
    INSERT INTO jobs (kind, queue, args, priority, run_at, max_attempts, timeout_ms, unique_key,
                      copied_from, enqueued_by, created_at)
    SELECT kind, queue, args, priority, $2, max_attempts, timeout_ms, unique_key, id, $3, $2
    FROM jobs
    WHERE id = ANY($1) AND state IN ('completed', 'discarded', 'cancelled')
    ORDER BY id
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
    DO NOTHING
    RETURNING queue, kind
), woke AS (
    SELECT count(pg_notify('coinpilot_jobs', queue)) AS n FROM (SELECT DISTINCT queue FROM ins) d
)
SELECT queue, kind, (SELECT n FROM woke) AS woke FROM ins";

/// "Run now" for the waiting jobs among `$1`. Row locks on those rows; a job a worker
/// claims meanwhile no longer matches `state = 'available'` and is left alone.
const RUN_NOW_MANY: &str = "
WITH upd AS (
    UPDATE jobs SET run_at = $2 WHERE id = ANY($1) AND state = 'available' RETURNING queue
)
SELECT count(*) AS n,
       (SELECT count(pg_notify('coinpilot_jobs', queue)) FROM (SELECT DISTINCT queue FROM upd) d) AS woke
FROM upd";

/// What a bulk retry did with one batch of ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetriedMany {
    pub copied: u64,
    pub run_now: u64,
}

/// [`retry_job_in`] for many jobs at once, in the caller's transaction: final jobs get
/// linked copies, waiting ones run now; running jobs (and ids that no longer exist) are
/// left alone.
pub async fn retry_many_in(
    tx: &mut PgConnection,
    ids: &[JobId],
    now: DateTime<Utc>,
    by: &str,
) -> Result<RetriedMany, QueueError> {
    debug_assert!(JobState::Available.transition(JobEvent::RunNow).is_ok());
    let ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
    let rows = sqlx::query(COPY_FINAL_MANY)
        .bind(&ids)
        .bind(now)
        .bind(by)
        .fetch_all(&mut *tx)
        .await?;
    for r in &rows {
        let (queue, kind): (String, String) = (r.try_get("queue")?, r.try_get("kind")?);
        super::metrics::enqueued(&queue, &kind, 1);
    }
    let run_now: i64 = sqlx::query(RUN_NOW_MANY)
        .bind(&ids)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
    Ok(RetriedMany {
        copied: rows.len() as u64,
        run_now: u64::try_from(run_now).unwrap_or(0),
    })
}

/// Cancels (or discards) a job by hand. A running job's worker is told at once over
/// `NOTIFY` and also finds out at its next heartbeat; its late completion is refused.
pub async fn stop_job(
    tx: &mut PgConnection,
    id: JobId,
    now: DateTime<Utc>,
    event: JobEvent,
    by: &str,
) -> Result<Job, QueueError> {
    let job = get_job(tx, id, true).await?;
    let action = if event == JobEvent::Cancel {
        "cancel"
    } else {
        "discard"
    };
    let next = job
        .state
        .transition(event)
        .map_err(|_| QueueError::WrongState {
            id,
            state: job.state,
            action,
        })?;
    let note = serde_json::json!([{
        "attempt": job.attempt, "at": now, "kind": action,
        "message": format!("{action}ed by {by}"), "chain": []
    }]);
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET state = $2, finished_at = $3, errors = errors || $4::jsonb,
             lease_token = NULL, lease_expires_at = NULL
         WHERE id = $1 RETURNING {JOB_COLUMNS}"
    )))
    .bind(id.0)
    .bind(next)
    .bind(now)
    .bind(note)
    .fetch_one(&mut *tx)
    .await?;
    if job.state == JobState::Running {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CONTROL_CHANNEL)
            .bind(format!("cancel:{}", id.0))
            .execute(&mut *tx)
            .await?;
    }
    Ok(Job::from_row(&row)?)
}

/// A queue's switches and counts, for `queues list`.
#[derive(Debug, Clone, Serialize)]
pub struct QueueInfo {
    pub name: String,
    pub paused: bool,
    pub available: i64,
    pub running: i64,
    pub scheduled: i64,
}

pub async fn list_queues(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<QueueInfo>, QueueError> {
    let rows = sqlx::query(
        // One arm per live state, each answered by that state's partial index (claim and
        // lease indexes): an `IN` over both made the planner scan the whole table, seconds
        // at 1M finished jobs. No locks.
        "WITH live AS (
             SELECT queue, sum(available)::bigint AS available, sum(running)::bigint AS running,
                    sum(scheduled)::bigint AS scheduled
             FROM (SELECT queue, count(*) FILTER (WHERE run_at <= $1) AS available,
                          0::bigint AS running, count(*) FILTER (WHERE run_at > $1) AS scheduled
                   FROM jobs WHERE state = 'available' GROUP BY queue
                   UNION ALL
                   SELECT queue, 0, count(*), 0 FROM jobs WHERE state = 'running' GROUP BY queue) arms
             GROUP BY queue)
         SELECT coalesce(l.queue, q.name) AS name, coalesce(q.paused, false) AS paused,
                coalesce(l.available, 0) AS available, coalesce(l.running, 0) AS running,
                coalesce(l.scheduled, 0) AS scheduled
         FROM live l FULL JOIN queues q ON q.name = l.queue ORDER BY 1",
    )
    .bind(now)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(QueueInfo {
                name: r.try_get("name")?,
                paused: r.try_get("paused")?,
                available: r.try_get("available")?,
                running: r.try_get("running")?,
                scheduled: r.try_get("scheduled")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(QueueError::from)
}

/// Pauses or resumes a queue. Claims check the flag in the same statement, so a pause takes
/// effect at the next claim of every worker; running jobs finish.
pub async fn set_queue_paused(
    pool: &PgPool,
    queue: &str,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<(), QueueError> {
    if queue.trim().is_empty() {
        return Err(QueueError::InvalidInput("queue name is empty".into()));
    }
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO queues (name, paused, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET paused = $2, updated_at = $3",
    )
    .bind(queue)
    .bind(paused)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if !paused {
        sqlx::query("SELECT pg_notify('coinpilot_jobs', $1)")
            .bind(queue)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// One `EXISTS` per partial index (`jobs_claim_idx`, `jobs_lease_idx`): each stops at its
/// first live entry. Reads only; no lock.
const ANY_UNFINISHED: &str = "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'available') \
     OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running')";

/// Whether any job is still available or running: the bench's drain monitor.
///
/// Stops at the first live entry of each partial index, where a `count(*)` visits every
/// unfinished row: during a drain of 100,000 jobs that count cost PostgreSQL ~30 ms
/// a call, polled every 20 ms, so the monitor took a core from the drain it measured. Both
/// arms read one snapshot, so a job moving from running to completed is never missed.
pub async fn any_unfinished(pool: &PgPool) -> Result<bool, QueueError> {
    let any: bool = sqlx::query_scalar(ANY_UNFINISHED).fetch_one(pool).await?;
    Ok(any)
}

/// The attempts' errors of a job, oldest first, as stored.
pub fn errors_of(job: &Job) -> Vec<serde_json::Value> {
    job.errors.as_array().cloned().unwrap_or_default()
}
