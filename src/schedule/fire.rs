//! Firing schedules without a leader. Every worker runs [`fire_due_schedules`]; a fire is
//! a compare-and-set of the schedule's `next_fire_at` in the transaction that enqueues its
//! job or starts its run, so each (schedule, fire time) produces exactly one, whatever the
//! number of replicas. Due schedules are fired in batches, one transaction per batch.
//! Manual triggers ([`trigger_now`]) enqueue at once and are recorded as such.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row};

use super::plan::{plan_fires, CatchUp, FireKind, Policy};
use super::store::stored_cron;
use super::ScheduleError;
use crate::queue::{enqueue, enqueue_many, HandlerRegistry, NewJob};
use crate::workflow::{WorkflowDef, WorkflowEngine};

/// Due schedules, oldest fire first. Locks: `FOR UPDATE SKIP LOCKED`, so replicas ticking
/// at the same instant split the due schedules between them instead of waiting; a row
/// another replica has just fired no longer matches `next_fire_at <= now` when re-checked
/// after its commit. Index: `schedules_due_idx`.
const DUE: &str = "
SELECT name, cron, timezone, target_type, target, args, queue, priority, catch_up, max_catch_up,
       misfire_grace_ms, next_fire_at
FROM schedules
WHERE enabled AND NOT paused AND NOT pruned AND next_fire_at <= $1
ORDER BY next_fire_at LIMIT $2
FOR UPDATE SKIP LOCKED";

/// The compare-and-set: moves `next_fire_at` on only from the value we planned from.
const ADVANCE: &str = "
UPDATE schedules s SET next_fire_at = x.next, last_fire_at = coalesce(x.last, s.last_fire_at),
       missed_total = s.missed_total + x.skipped, updated_at = $5
FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[], $6::int8[])
     AS x(name, expected, next, last, skipped)
WHERE s.name = x.name AND s.next_fire_at = x.expected";

/// The record of each fire; its unique index on (schedule, fire_time) for cron fires is the
/// last line of defence: a second fire of one time fails the whole batch.
const RECORD: &str = "
INSERT INTO schedule_fires (schedule, fire_time, trigger, triggered_by, job_id, run_id, created_at)
SELECT s, f, t, b, j, r, $7
FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::int8[], $6::int8[])
     AS x(s, f, t, b, j, r)";

/// What the firing needs besides the database.
pub struct Firing<'a> {
    pub registry: &'a HandlerRegistry,
    pub engine: &'a WorkflowEngine,
    pub workflows: &'a HashMap<String, WorkflowDef>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TickReport {
    /// Jobs enqueued and runs started.
    pub fired: usize,
    pub skipped_missed: u64,
    /// Due schedules this worker could not fire (a workflow its files lack).
    pub deferred: usize,
    /// Whether the batch was full (more may be due).
    pub full: bool,
    /// How late each on-time fire was, for the lateness figures.
    pub lateness: Vec<Duration>,
}

struct Due {
    name: String,
    target_type: String,
    target: String,
    args: Value,
    queue: Option<String>,
    priority: i16,
    next_fire_at: DateTime<Utc>,
    policy: Policy,
    cron: super::cron::CronSchedule,
}

fn due_row(r: &sqlx::postgres::PgRow) -> Result<Due, ScheduleError> {
    let name: String = r.try_get("name")?;
    let cron = stored_cron(
        &name,
        &r.try_get::<String, _>("cron")?,
        &r.try_get::<String, _>("timezone")?,
    )?;
    let catch_up: String = r.try_get("catch_up")?;
    let grace: i64 = r.try_get("misfire_grace_ms")?;
    let max: i32 = r.try_get("max_catch_up")?;
    Ok(Due {
        target_type: r.try_get("target_type")?,
        target: r.try_get("target")?,
        args: r.try_get("args")?,
        queue: r.try_get("queue")?,
        priority: r.try_get("priority")?,
        next_fire_at: r.try_get("next_fire_at")?,
        policy: Policy {
            catch_up: CatchUp::parse(&catch_up).ok_or_else(|| {
                ScheduleError::Corrupt(format!("schedule `{name}`: catch_up `{catch_up}`"))
            })?,
            max_catch_up: usize::try_from(max).unwrap_or(1),
            misfire_grace: Duration::milliseconds(grace),
        },
        cron,
        name,
    })
}

/// Columns of [`ADVANCE`] and [`RECORD`], filled while planning.
#[derive(Default)]
struct Batch {
    adv_name: Vec<String>,
    adv_expected: Vec<DateTime<Utc>>,
    adv_next: Vec<DateTime<Utc>>,
    adv_last: Vec<Option<DateTime<Utc>>>,
    adv_skipped: Vec<i64>,
    fire_schedule: Vec<String>,
    fire_time: Vec<DateTime<Utc>>,
    fire_trigger: Vec<&'static str>,
    fire_job: Vec<Option<i64>>,
    fire_run: Vec<Option<i64>>,
    /// Jobs to enqueue in one statement, with their index in the `fire_*` columns.
    jobs: Vec<(usize, NewJob)>,
}

/// Fires every due schedule (up to `limit` of them) at `now`, in one transaction.
pub async fn fire_due_schedules(
    pool: &PgPool,
    f: &Firing<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<TickReport, ScheduleError> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(DUE)
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    let mut report = TickReport::default();
    if rows.is_empty() {
        return Ok(report); // the transaction holds nothing; dropping it ends it
    }
    let mut b = Batch::default();
    for r in &rows {
        let due = due_row(r)?;
        if let Err(why) = can_fire(f, &due) {
            // A rolling deploy: a newer worker synced a schedule whose workflow or job kind
            // (or args) this one does not know. Workers that know it fire it; this one
            // leaves the row as it is, and one bad row never blocks the batch.
            tracing::debug!(schedule = %due.name, %why, "schedule deferred to other workers");
            report.deferred += 1;
            continue;
        }
        let plan = plan_fires(&due.cron, due.next_fire_at, now, &due.policy);
        let Some(next) = plan.next else {
            tracing::warn!(schedule = %due.name, "cron never fires again; leaving it due");
            report.deferred += 1;
            continue;
        };
        report.skipped_missed += plan.skipped;
        if plan.skipped > 0 {
            tracing::warn!(schedule = %due.name, skipped = plan.skipped, catch_up = due.policy.catch_up.as_str(),
                "missed fires skipped after downtime");
        }
        b.adv_name.push(due.name.clone());
        b.adv_expected.push(due.next_fire_at);
        b.adv_next.push(next);
        b.adv_last.push(plan.fires.last().map(|f| f.0));
        b.adv_skipped
            .push(i64::try_from(plan.skipped).unwrap_or(i64::MAX));
        for (at, kind) in &plan.fires {
            if *kind == FireKind::OnTime {
                report.lateness.push(now - *at);
            }
            produce(&mut tx, f, &due, *at, *kind, &mut b, now).await?;
        }
    }
    if !b.jobs.is_empty() {
        let jobs: Vec<NewJob> = b.jobs.iter().map(|(_, j)| j.clone()).collect();
        let ids = enqueue_many(&mut tx, now, &jobs).await?;
        for ((slot, _), e) in b.jobs.iter().zip(ids) {
            b.fire_job[*slot] = Some(e.id.0);
        }
    }
    let advanced = sqlx::query(ADVANCE)
        .bind(&b.adv_name)
        .bind(&b.adv_expected)
        .bind(&b.adv_next)
        .bind(&b.adv_last)
        .bind(now)
        .bind(&b.adv_skipped)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if advanced != b.adv_name.len() as u64 {
        // Cannot happen while we hold the row locks; refuse rather than risk a double fire.
        return Err(ScheduleError::Corrupt(format!(
            "compare-and-set moved {advanced} of {} schedules",
            b.adv_name.len()
        )));
    }
    let by: Vec<String> = b
        .fire_schedule
        .iter()
        .map(|s| format!("schedule:{s}"))
        .collect();
    sqlx::query(RECORD)
        .bind(&b.fire_schedule)
        .bind(&b.fire_time)
        .bind(&b.fire_trigger)
        .bind(&by)
        .bind(&b.fire_job)
        .bind(&b.fire_run)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    report.fired = b.fire_time.len();
    // More may be due only if this batch was full and moved something: a batch of rows
    // this worker must defer would otherwise be selected again at once, forever.
    report.full = rows.len() as i64 == limit && !b.adv_name.is_empty();
    super::metrics::fired(&b.fire_schedule, &report.lateness, report.skipped_missed);
    Ok(report)
}

/// Adds one fire to the batch: a job to enqueue with the batch, or a run started now.
async fn produce(
    tx: &mut PgConnection,
    f: &Firing<'_>,
    due: &Due,
    at: DateTime<Utc>,
    kind: FireKind,
    b: &mut Batch,
    now: DateTime<Utc>,
) -> Result<(), ScheduleError> {
    let slot = b.fire_time.len();
    b.fire_schedule.push(due.name.clone());
    b.fire_time.push(at);
    b.fire_trigger.push(kind.as_str());
    let (job, run) = match due.target_type.as_str() {
        "workflow" => {
            let def = f
                .workflows
                .get(&due.target)
                .ok_or_else(|| ScheduleError::UnknownWorkflow(due.target.clone()))?;
            let run = f
                .engine
                .start_run(
                    tx,
                    def,
                    due.args.clone(),
                    &format!("schedule:{}", due.name),
                    now,
                )
                .await?;
            (None, Some(run))
        }
        _ => {
            b.jobs.push((
                slot,
                schedule_job(f.registry, due, &format!("schedule:{}", due.name))?,
            ));
            (None, None)
        }
    };
    b.fire_job.push(job);
    b.fire_run.push(run);
    Ok(())
}

/// Whether this worker can produce the schedule's fire (it knows the workflow, or the job
/// kind and its args).
fn can_fire(f: &Firing<'_>, due: &Due) -> Result<(), String> {
    match due.target_type.as_str() {
        "workflow" if f.workflows.contains_key(&due.target) => Ok(()),
        "workflow" => Err(format!(
            "no workflow `{}` in this worker's files",
            due.target
        )),
        _ => schedule_job(f.registry, due, "check")
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

fn schedule_job(registry: &HandlerRegistry, due: &Due, by: &str) -> Result<NewJob, ScheduleError> {
    let mut job = registry
        .new_job(&due.target, due.args.clone())?
        .with_enqueued_by(by);
    if let Some(q) = &due.queue {
        job = job.with_queue(q.clone());
    }
    if due.priority != 0 {
        job = job.with_priority(due.priority);
    }
    Ok(job)
}

/// What a manual trigger produced.
#[derive(Debug, Clone, Serialize)]
pub struct Triggered {
    pub schedule: String,
    pub job_id: Option<i64>,
    pub run_id: Option<i64>,
    pub triggered_by: String,
}

/// Fires a schedule now, by hand (paused or not); recorded with who triggered it. The
/// cron's own fire state is left alone.
pub async fn trigger_now(
    pool: &PgPool,
    f: &Firing<'_>,
    name: &str,
    now: DateTime<Utc>,
    by: &str,
) -> Result<Triggered, ScheduleError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT name, cron, timezone, target_type, target, args, queue, priority, catch_up,
                max_catch_up, misfire_grace_ms, next_fire_at FROM schedules WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ScheduleError::NotFound(name.to_string()))?;
    let due = due_row(&row)?;
    let (job_id, run_id) = match due.target_type.as_str() {
        "workflow" => {
            let def = f
                .workflows
                .get(&due.target)
                .ok_or_else(|| ScheduleError::UnknownWorkflow(due.target.clone()))?;
            (
                None,
                Some(
                    f.engine
                        .start_run(&mut tx, def, due.args.clone(), by, now)
                        .await?,
                ),
            )
        }
        _ => {
            let job = schedule_job(f.registry, &due, by)?;
            (Some(enqueue(&mut tx, now, &job).await?.id.0), None)
        }
    };
    sqlx::query(RECORD)
        .bind(vec![name])
        .bind(vec![now])
        .bind(vec!["manual"])
        .bind(vec![by])
        .bind(vec![job_id])
        .bind(vec![run_id])
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Triggered {
        schedule: name.to_string(),
        job_id,
        run_id,
        triggered_by: by.to_string(),
    })
}
