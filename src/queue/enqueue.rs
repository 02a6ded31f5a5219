//! Putting jobs into the queue, always through the caller's connection or transaction: a
//! job becomes visible only if the caller's business write commits (SPEC A1).
//!
//! Both statements `NOTIFY` the job's queue on the `coinpilot_jobs` channel when the job is
//! due now. PostgreSQL folds identical notifications of one transaction into one, so a
//! transaction that enqueues many jobs wakes each queue's workers once.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, Row};

use super::enqueue_copy::{copy_many, COPY_FROM_JOBS};
use super::job::{Enqueued, JobId, NewJob};
use super::metrics as m;
use super::QueueError;

/// The channel workers `LISTEN` on; the payload is the queue name.
pub const JOBS_CHANNEL: &str = "coinpilot_jobs";

/// Inserts one job; `$conflict` is the unique-key clause, left out for a job without a key
/// (as in [`enqueue_many_sql`]: `ON CONFLICT` makes the insert speculative, an extra index
/// probe and WAL record, even when the job has no key).
macro_rules! enqueue_one_sql {
    ($conflict:literal) => {
        concat!(
            "
WITH ins AS (
    INSERT INTO jobs (kind, queue, args, priority, run_at, max_attempts, timeout_ms, unique_key,
                      workflow_run_id, workflow_step, copied_from, enqueued_by, created_at)
    VALUES ($1, $2, $3, $4, coalesce($5, $13), $6, $7, $8, $9, $10, $11, $12, $13)
    ",
            $conflict,
            "
    RETURNING id, queue, run_at
)
SELECT id,
       (SELECT count(pg_notify('coinpilot_jobs', d.queue))
        FROM (SELECT ins.queue WHERE ins.run_at <= $13) AS d) AS n
FROM ins"
        )
    };
}

/// Inserts one job with a unique key. A live job (available or running) with the same key
/// wins: the insert does nothing (partial unique index `jobs_unique_key_idx`) and the caller
/// gets that job's id with `duplicate = true`. Takes no lock beyond the new row's and the
/// unique index entry's.
const ENQUEUE_ONE: &str = enqueue_one_sql!(
    "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
    DO NOTHING"
);

/// [`enqueue_one_sql`] for a job without a unique key: no conflict is possible.
const ENQUEUE_ONE_NO_KEY: &str = enqueue_one_sql!("");

/// The live holder of a unique key. Reads only; no lock.
const FIND_LIVE_UNIQUE: &str =
    "SELECT id FROM jobs WHERE unique_key = $1 AND state IN ('available', 'running')";

/// Inserts many jobs in one statement from parallel arrays (`UNNEST`), one `NOTIFY` per due
/// queue. Each input gets its id from the identity's sequence *by its ordinal* (`x`, a
/// materialized CTE: `nextval` is volatile, so it runs once per input, and after the
/// `ORDER BY`, so ids ascend in input order and equal `run_at`s are claimed first in,
/// first out), and the result lists every input in order with whether its row went in.
/// Of inputs repeating one unique key, the first wins: the insert reads `x` in input order.
/// `$conflict` is the unique-key clause: a batch that carries unique keys skips the
/// duplicates of live keys; a batch without any leaves the clause out, since `ON CONFLICT` makes every row a speculative insertion (an extra index
/// probe and WAL record per row) even when no row has a key. Ids of skipped inputs are
/// never used (gaps, as any rolled-back insert leaves).
macro_rules! enqueue_many_sql {
    ($conflict:literal) => {
        concat!(
            "
WITH x AS MATERIALIZED (
    SELECT nextval('jobs_id_seq'::regclass) AS id, o, k, q, a, p, r, m, t, u, e
    FROM UNNEST($1::text[], $2::text[], $3::jsonb[], $4::int2[], $5::timestamptz[], $6::int4[],
                $7::int4[], $8::text[], $9::text[]) WITH ORDINALITY AS i(k, q, a, p, r, m, t, u, e, o)
    ORDER BY o
), ins AS (
    INSERT INTO jobs (id, kind, queue, args, priority, run_at, max_attempts, timeout_ms,
                      unique_key, enqueued_by, created_at)
    OVERRIDING SYSTEM VALUE
    SELECT id, k, q, a, p, coalesce(r, $10), m, t, u, e, $10 FROM x ORDER BY o
    ",
            $conflict,
            "
    RETURNING id, queue, run_at
), woke AS (
    SELECT count(pg_notify('coinpilot_jobs', queue)) AS n
    FROM (SELECT DISTINCT queue FROM ins WHERE run_at <= $10) due
)
SELECT x.id, ins.id IS NOT NULL AS inserted, (SELECT n FROM woke) AS n
FROM x LEFT JOIN ins ON ins.id = x.id
ORDER BY x.o"
        )
    };
}

/// [`enqueue_many_sql`] for a batch with unique keys: takes no lock beyond the new rows' and
/// their unique index entries'.
const ENQUEUE_MANY: &str = enqueue_many_sql!(
    "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
    DO NOTHING"
);

/// [`enqueue_many_sql`] for a batch without unique keys: no conflict is possible.
const ENQUEUE_MANY_NO_KEYS: &str = enqueue_many_sql!("");

/// Enqueues one job on the caller's connection (usually a transaction), at the clock's `now`.
pub async fn enqueue(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    job: &NewJob,
) -> Result<Enqueued, QueueError> {
    job.validate()?;
    // A live duplicate can finish between our insert and our look-up; then the insert is
    // tried again. Two rounds always suffice unless the key churns faster than we query.
    for _ in 0..3 {
        let sql = if job.unique_key.is_some() {
            ENQUEUE_ONE
        } else {
            ENQUEUE_ONE_NO_KEY
        };
        let row = sqlx::query(sql)
            .bind(&job.kind)
            .bind(&job.queue)
            .bind(&job.args)
            .bind(job.priority)
            .bind(job.run_at)
            .bind(job.max_attempts)
            .bind(job.timeout_ms)
            .bind(&job.unique_key)
            .bind(job.workflow_run_id)
            .bind(&job.workflow_step)
            .bind(job.copied_from)
            .bind(&job.enqueued_by)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(row) = row {
            m::enqueued(&job.queue, &job.kind, 1);
            return Ok(Enqueued {
                id: JobId(row.try_get("id")?),
                duplicate: false,
            });
        }
        let existing: Option<i64> = sqlx::query_scalar(FIND_LIVE_UNIQUE)
            .bind(&job.unique_key)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(id) = existing {
            return Ok(Enqueued {
                id: JobId(id),
                duplicate: true,
            });
        }
    }
    Err(QueueError::InvalidInput(format!(
        "unique key {:?} kept changing hands while enqueueing",
        job.unique_key
    )))
}

/// Column arrays for [`ENQUEUE_MANY`].
#[derive(Default)]
struct Columns {
    kind: Vec<String>,
    queue: Vec<String>,
    args: Vec<Value>,
    priority: Vec<i16>,
    run_at: Vec<Option<DateTime<Utc>>>,
    max_attempts: Vec<i32>,
    timeout_ms: Vec<Option<i32>>,
    unique_key: Vec<Option<String>>,
    enqueued_by: Vec<Option<String>>,
}

impl Columns {
    fn from_jobs(jobs: &[NewJob]) -> Result<Self, QueueError> {
        let mut c = Columns::default();
        for job in jobs {
            c.kind.push(job.kind.clone());
            c.queue.push(job.queue.clone());
            c.args.push(job.args.clone());
            c.priority.push(job.priority);
            c.run_at.push(job.run_at);
            c.max_attempts.push(job.max_attempts);
            c.timeout_ms.push(job.timeout_ms);
            c.unique_key.push(job.unique_key.clone());
            c.enqueued_by.push(job.enqueued_by.clone());
        }
        Ok(c)
    }
}

/// Enqueues many jobs in one statement. Returns one [`Enqueued`] per input, in input order;
/// inputs whose unique key was already live come back as `duplicate` with that job's id.
pub async fn enqueue_many(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    jobs: &[NewJob],
) -> Result<Vec<Enqueued>, QueueError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    for job in jobs {
        check_bulk(job)?;
    }
    let has_keys = jobs.iter().any(|j| j.unique_key.is_some());
    if !has_keys && jobs.len() >= COPY_FROM_JOBS {
        let out = copy_many(conn, now, jobs).await?;
        count_enqueued(jobs.iter());
        return Ok(out);
    }
    let c = Columns::from_jobs(jobs)?;
    let sql = if has_keys {
        ENQUEUE_MANY
    } else {
        ENQUEUE_MANY_NO_KEYS
    };
    let rows = sqlx::query(sql)
        .bind(&c.kind)
        .bind(&c.queue)
        .bind(&c.args)
        .bind(&c.priority)
        .bind(&c.run_at)
        .bind(&c.max_attempts)
        .bind(&c.timeout_ms)
        .bind(&c.unique_key)
        .bind(&c.enqueued_by)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    if rows.len() != jobs.len() {
        return Err(QueueError::InvalidInput(format!(
            "bulk enqueue returned {} rows for {} jobs",
            rows.len(),
            jobs.len()
        )));
    }
    let mut out = Vec::with_capacity(jobs.len());
    let mut inserted_jobs = Vec::with_capacity(jobs.len());
    for (job, row) in jobs.iter().zip(&rows) {
        if row.try_get::<bool, _>("inserted")? {
            out.push(Enqueued {
                id: JobId(row.try_get("id")?),
                duplicate: false,
            });
            inserted_jobs.push(job);
            continue;
        }
        // Skipped by ON CONFLICT: a live job holds the key (possibly an earlier input of
        // this batch). It may finish before this look-up; then the single-job path, which
        // retries exactly that race, enqueues it.
        let live: Option<i64> = sqlx::query_scalar(FIND_LIVE_UNIQUE)
            .bind(&job.unique_key)
            .fetch_optional(&mut *conn)
            .await?;
        out.push(match live {
            Some(id) => Enqueued {
                id: JobId(id),
                duplicate: true,
            },
            None => enqueue(conn, now, job).await?,
        });
    }
    count_enqueued(inserted_jobs.into_iter());
    Ok(out)
}

/// What a bulk enqueue refuses, checked before anything is written.
fn check_bulk(job: &NewJob) -> Result<(), QueueError> {
    job.validate()?;
    if job.workflow_run_id.is_some() || job.copied_from.is_some() {
        return Err(QueueError::InvalidInput(
            "bulk enqueue does not take workflow steps or copies; enqueue them one by one".into(),
        ));
    }
    Ok(())
}

/// The enqueued counter, once per (queue, kind) of a batch rather than once per job.
fn count_enqueued<'a>(jobs: impl Iterator<Item = &'a NewJob>) {
    let mut counted: std::collections::HashMap<(&str, &str), u64> = Default::default();
    for job in jobs {
        *counted.entry((&job.queue, &job.kind)).or_default() += 1;
    }
    for ((queue, kind), n) in counted {
        m::enqueued(queue, kind, n);
    }
}
