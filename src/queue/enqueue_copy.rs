//! Bulk enqueue through `COPY … FROM STDIN`, for large batches without unique keys: the
//! server inserts the rows in multi-row heap batches instead of one executor row at a time
//! as `INSERT … SELECT FROM UNNEST` does. `COPY` cannot return the new ids, so they are
//! reserved first from the identity's sequence (`COPY` writes given identity values, as
//! `OVERRIDING SYSTEM VALUE` would), which also keeps them in input order. A batch with a
//! unique key never comes here: `COPY` has no `ON CONFLICT`.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::PgConnection;

use super::job::{Enqueued, JobId, NewJob};
use super::QueueError;

/// Batches at least this large (and without unique keys) are copied: below it the extra
/// round trips (ids, COPY, NOTIFY) cost more than the insert saves.
pub const COPY_FROM_JOBS: usize = 1_000;

/// `$1` new job ids. One `nextval` per id: the sequence is shared with every other
/// inserter, so the ids need not be contiguous. No lock beyond the sequence's own, per call.
/// The identity's sequence by its name (`jobs_id_seq`, PostgreSQL's name for `jobs.id`'s):
/// a sequence looked up per row (`pg_get_serial_sequence`) made this ten times slower.
const RESERVE_IDS: &str = "SELECT nextval('jobs_id_seq'::regclass) FROM generate_series(1, $1)";

/// The columns [`encode_rows`] writes, in its order. Locks: the new rows only.
const COPY_JOBS: &str = "COPY jobs (id, kind, queue, args, priority, run_at, max_attempts, \
     timeout_ms, enqueued_by, created_at) FROM STDIN";

/// One `NOTIFY` per distinct queue with a job due now (as `ENQUEUE_MANY` sends).
const NOTIFY_QUEUES: &str =
    "SELECT count(pg_notify('coinpilot_jobs', q)) FROM unnest($1::text[]) AS q";

/// Copies `jobs` (validated, none with a unique key or workflow link) into the table.
pub async fn copy_many(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    jobs: &[NewJob],
) -> Result<Vec<Enqueued>, QueueError> {
    let mut ids: Vec<i64> = sqlx::query_scalar(RESERVE_IDS)
        .bind(jobs.len() as i64)
        .fetch_all(&mut *conn)
        .await?;
    // Ascending, so ids follow input order (as `ENQUEUE_MANY` assigns them, by ordinal).
    ids.sort_unstable();
    if ids.len() != jobs.len() {
        return Err(QueueError::InvalidInput(format!(
            "reserved {} job ids for {} jobs",
            ids.len(),
            jobs.len()
        )));
    }
    let rows = encode_rows(&ids, jobs, now)?;
    let mut copy = conn.copy_in_raw(COPY_JOBS).await?;
    copy.send(rows.into_bytes()).await?;
    copy.finish().await?;
    let mut due: Vec<&str> = jobs
        .iter()
        .filter(|j| j.run_at.is_none_or(|t| t <= now))
        .map(|j| j.queue.as_str())
        .collect();
    due.sort_unstable();
    due.dedup();
    if !due.is_empty() {
        sqlx::query(NOTIFY_QUEUES)
            .bind(&due)
            .execute(&mut *conn)
            .await?;
    }
    Ok(ids
        .into_iter()
        .map(|id| Enqueued {
            id: JobId(id),
            duplicate: false,
        })
        .collect())
}

/// `COPY` text format: one line per job, tab-separated, `\N` for null, and backslash,
/// tab, newline and carriage return escaped inside values.
fn encode_rows(ids: &[i64], jobs: &[NewJob], now: DateTime<Utc>) -> Result<String, QueueError> {
    let mut out = String::with_capacity(jobs.len() * 96);
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
    let created = stamp(now);
    for (id, job) in ids.iter().zip(jobs) {
        let args = serde_json::to_string(&job.args)
            .map_err(|e| QueueError::InvalidInput(format!("args of a `{}` job: {e}", job.kind)))?;
        // Writing to a String cannot fail.
        let _infallible = write!(out, "{id}\t");
        push_text(&mut out, &job.kind);
        out.push('\t');
        push_text(&mut out, &job.queue);
        out.push('\t');
        push_text(&mut out, &args);
        let run_at = stamp(job.run_at.unwrap_or(now));
        let _infallible = write!(out, "\t{}\t{run_at}\t{}\t", job.priority, job.max_attempts);
        match job.timeout_ms {
            Some(ms) => {
                let _infallible = write!(out, "{ms}");
            }
            None => out.push_str("\\N"),
        }
        out.push('\t');
        match &job.enqueued_by {
            Some(by) => push_text(&mut out, by),
            None => out.push_str("\\N"),
        }
        out.push('\t');
        out.push_str(&created);
        out.push('\n');
    }
    Ok(out)
}

fn push_text(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_look_like_copy_syntax_are_escaped() {
        let mut out = String::new();
        push_text(&mut out, "a\tb\nc\\N\rd");
        assert_eq!(out, "a\\tb\\nc\\\\N\\rd");
    }

    #[test]
    fn a_row_has_every_column_and_nulls_as_backslash_n() {
        let now = DateTime::parse_from_rfc3339("2025-09-09T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let job = NewJob::new("noop", serde_json::json!({"text": "tab\there"})).with_queue("q");
        let rows = encode_rows(&[7], &[job], now).unwrap_or_default();
        let cols: Vec<&str> = rows.trim_end_matches('\n').split('\t').collect();
        assert_eq!(cols.len(), 10, "{rows:?}");
        assert_eq!(cols[0], "7");
        assert_eq!(
            cols[3], r#"{"text":"tab\\there"}"#,
            "JSON's own backslash is doubled"
        );
        assert_eq!(cols[5], "2025-09-09T00:00:00.000000Z");
        assert_eq!((cols[7], cols[8]), ("\\N", "\\N"));
    }
}
