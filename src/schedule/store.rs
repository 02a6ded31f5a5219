//! Schedule rows: syncing them from the files, listing them with their next fires, pausing
//! and resuming. Workers only add or update what their files hold, so a rolling deploy with
//! two file versions does not flap; `sync --prune` (the deploy's migration step) disables
//! what no file holds any more, and never deletes a row.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};

use super::cron::CronSchedule;
use super::def::ScheduleDef;
use super::ScheduleError;

/// Adds or updates one schedule from its file. The fire state survives: `next_fire_at`
/// only restarts (at the next fire after now) when the cron or zone changed, or the
/// schedule comes back from disabled or pruned. A runtime pause is never touched.
/// Locks: the one schedule row (upsert).
const UPSERT: &str = "
INSERT INTO schedules (name, cron, timezone, target_type, target, args, queue, priority, catch_up,
                       max_catch_up, misfire_grace_ms, enabled, source, next_fire_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT (name) DO UPDATE SET
    cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, target_type = EXCLUDED.target_type,
    target = EXCLUDED.target, args = EXCLUDED.args, queue = EXCLUDED.queue,
    priority = EXCLUDED.priority, catch_up = EXCLUDED.catch_up,
    max_catch_up = EXCLUDED.max_catch_up, misfire_grace_ms = EXCLUDED.misfire_grace_ms,
    enabled = EXCLUDED.enabled, source = EXCLUDED.source, pruned = false,
    next_fire_at = CASE
        WHEN schedules.cron <> EXCLUDED.cron OR schedules.timezone <> EXCLUDED.timezone
          OR schedules.pruned OR (EXCLUDED.enabled AND NOT schedules.enabled)
        THEN EXCLUDED.next_fire_at ELSE schedules.next_fire_at END,
    updated_at = EXCLUDED.updated_at
RETURNING (xmax = 0) AS inserted";

/// Disables (never deletes) schedules no file holds. Row locks on those rows.
const PRUNE: &str = "
UPDATE schedules SET pruned = true, updated_at = $2
WHERE NOT pruned AND NOT (name = ANY($1)) RETURNING name";

/// Pausing keeps the fire state; resuming a paused schedule restarts from the next fire
/// after now, so the paused period is not caught up. Resuming one that is not paused
/// changes nothing (`paused` here is the row's old value), so a due fire is never dropped.
const SET_PAUSED: &str = "
UPDATE schedules SET paused = $2, updated_at = $3,
       next_fire_at = CASE WHEN $2 OR NOT paused THEN next_fire_at ELSE $4 END
WHERE name = $1";

/// Every schedule with its last fire and that fire's result (the job's or run's state).
const LIST: &str = "
SELECT s.name, s.cron, s.timezone, s.target_type, s.target, s.args, s.queue, s.catch_up,
       s.enabled, s.paused, s.pruned, s.source, s.next_fire_at, s.last_fire_at, s.missed_total,
       f.trigger AS last_trigger, f.triggered_by AS last_triggered_by, f.fire_time AS last_fire_time,
       f.job_id AS last_job_id, f.run_id AS last_run_id,
       coalesce(j.state::text, r.state) AS last_result
FROM schedules s
LEFT JOIN LATERAL (SELECT * FROM schedule_fires sf WHERE sf.schedule = s.name
                   ORDER BY sf.id DESC LIMIT 1) f ON true
LEFT JOIN jobs j ON j.id = f.job_id
LEFT JOIN workflow_runs r ON r.id = f.run_id
ORDER BY s.name";

#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub pruned: Vec<String>,
}

/// Upserts every schedule of the files (and with `prune`, disables the rest) in one
/// transaction.
pub async fn sync(
    pool: &PgPool,
    defs: &[ScheduleDef],
    prune: bool,
    now: DateTime<Utc>,
) -> Result<SyncReport, ScheduleError> {
    let mut tx = pool.begin().await?;
    let mut report = SyncReport::default();
    for d in defs {
        let cron = d.cron_schedule().map_err(ScheduleError::InvalidInput)?;
        let next = cron.next_after(now).ok_or_else(|| {
            ScheduleError::InvalidInput(format!("schedule `{}`: `{}` never fires", d.name, d.cron))
        })?;
        let grace_ms = i64::try_from(d.misfire_grace.as_millis()).unwrap_or(i64::MAX);
        let inserted: bool = sqlx::query_scalar(UPSERT)
            .bind(&d.name)
            .bind(&d.cron)
            .bind(d.timezone.name())
            .bind(d.target.type_str())
            .bind(d.target.name())
            .bind(&d.args)
            .bind(&d.queue)
            .bind(d.priority)
            .bind(d.catch_up.as_str())
            .bind(d.max_catch_up)
            .bind(grace_ms)
            .bind(d.enabled)
            .bind(&d.source)
            .bind(next)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        if inserted {
            report.added.push(d.name.clone());
        } else {
            report.updated.push(d.name.clone());
        }
    }
    if prune {
        let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        report.pruned = sqlx::query_scalar(PRUNE)
            .bind(&names)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// Pauses or resumes a schedule by name (the pause outlives restarts and wins over the
/// file's `enabled`).
pub async fn set_paused(
    conn: &mut PgConnection,
    name: &str,
    paused: bool,
    now: DateTime<Utc>,
) -> Result<(), ScheduleError> {
    // The resume restart point needs the cron, so read it first (under the row lock).
    let row = sqlx::query("SELECT cron, timezone FROM schedules WHERE name = $1 FOR UPDATE")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ScheduleError::NotFound(name.to_string()))?;
    let cron = stored_cron(
        name,
        &row.try_get::<String, _>("cron")?,
        &row.try_get::<String, _>("timezone")?,
    )?;
    let restart = cron.next_after(now).unwrap_or(now + Duration::days(36_500));
    sqlx::query(SET_PAUSED)
        .bind(name)
        .bind(paused)
        .bind(now)
        .bind(restart)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub(crate) fn stored_cron(name: &str, cron: &str, tz: &str) -> Result<CronSchedule, ScheduleError> {
    let tz: Tz = tz
        .parse()
        .map_err(|_| ScheduleError::Corrupt(format!("schedule `{name}`: stored zone `{tz}`")))?;
    CronSchedule::parse(cron, tz)
        .map_err(|e| ScheduleError::Corrupt(format!("schedule `{name}`: {e}")))
}

/// A schedule as `schedules list` and the dashboard show it.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleInfo {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub target_type: String,
    pub target: String,
    pub args: Value,
    pub queue: Option<String>,
    pub catch_up: String,
    /// `active`, `paused` (at runtime), `disabled` (by its file) or `pruned` (no file).
    pub status: &'static str,
    pub source: String,
    /// The next fire times, in UTC and in the schedule's zone.
    pub next_fires_utc: Vec<DateTime<Utc>>,
    pub next_fires_local: Vec<String>,
    pub last_fire_at: Option<DateTime<Utc>>,
    pub missed_total: i64,
    pub last_trigger: Option<String>,
    pub last_triggered_by: Option<String>,
    pub last_job_id: Option<i64>,
    pub last_run_id: Option<i64>,
    pub last_result: Option<String>,
}

/// Every schedule, with its next `n` fire times after `now`.
pub async fn list(
    pool: &PgPool,
    now: DateTime<Utc>,
    n: usize,
) -> Result<Vec<ScheduleInfo>, ScheduleError> {
    let rows = sqlx::query(LIST).fetch_all(pool).await?;
    rows.iter().map(|r| info(r, now, n)).collect()
}

fn info(
    r: &sqlx::postgres::PgRow,
    now: DateTime<Utc>,
    n: usize,
) -> Result<ScheduleInfo, ScheduleError> {
    let name: String = r.try_get("name")?;
    let cron_s: String = r.try_get("cron")?;
    let tz_s: String = r.try_get("timezone")?;
    let cron = stored_cron(&name, &cron_s, &tz_s)?;
    let (enabled, paused, pruned): (bool, bool, bool) = (
        r.try_get("enabled")?,
        r.try_get("paused")?,
        r.try_get("pruned")?,
    );
    let status = match (pruned, paused, enabled) {
        (true, _, _) => "pruned",
        (_, true, _) => "paused",
        (_, _, false) => "disabled",
        _ => "active",
    };
    let next_stored: DateTime<Utc> = r.try_get("next_fire_at")?;
    let first = if next_stored > now {
        Some(next_stored)
    } else {
        cron.next_after(now)
    };
    let next: Vec<DateTime<Utc>> = if status == "active" {
        std::iter::successors(first, |t| cron.next_after(*t))
            .take(n)
            .collect()
    } else {
        Vec::new()
    };
    let tz = cron.timezone();
    Ok(ScheduleInfo {
        next_fires_local: next
            .iter()
            .map(|t| {
                t.with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string()
            })
            .collect(),
        next_fires_utc: next,
        name,
        cron: cron_s,
        timezone: tz_s,
        target_type: r.try_get("target_type")?,
        target: r.try_get("target")?,
        args: r.try_get("args")?,
        queue: r.try_get("queue")?,
        catch_up: r.try_get("catch_up")?,
        status,
        source: r.try_get("source")?,
        last_fire_at: r.try_get("last_fire_at")?,
        missed_total: r.try_get("missed_total")?,
        last_trigger: r.try_get("last_trigger")?,
        last_triggered_by: r.try_get("last_triggered_by")?,
        last_job_id: r.try_get("last_job_id")?,
        last_run_id: r.try_get("last_run_id")?,
        last_result: r.try_get("last_result")?,
    })
}
