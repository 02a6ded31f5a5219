//! The dashboard's POST actions: retry now / cancel / discard (single and bulk), queue and
//! schedule pause/resume, trigger now, workflow run/retry/cancel. Each goes through the
//! same functions the CLI uses, is recorded as `dashboard:<username>`, and redirects (303)
//! back to a page with a notice. The session, CSRF and admin role were checked by
//! [`super::auth::require_session`] before any of these run.

use axum::extract::{Path, State};
use axum::response::Redirect;
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgConnection;

use super::auth::Session;
use super::dashboard::DashState;
use super::error::WebError;
use super::job_search::{matching_ids, JobQuery};
use crate::queue::admin::{self, Retried};
use crate::queue::{JobEvent, JobId, JobState};
use crate::schedule::{self, Firing};
use crate::workflow::WorkflowEngine;

/// Jobs per transaction in a bulk action: each batch holds its row locks for milliseconds,
/// so workers (which skip locked rows) and other people's actions are never held up long.
pub const BULK_BATCH: i64 = 1000;

fn back(path: &str, msg: &str) -> Redirect {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("msg", msg)
        .finish();
    let sep = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{sep}{q}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobAction {
    Retry,
    Cancel,
    Discard,
}

impl JobAction {
    fn parse(s: &str) -> Result<JobAction, WebError> {
        match s {
            "retry" => Ok(JobAction::Retry),
            "cancel" => Ok(JobAction::Cancel),
            "discard" => Ok(JobAction::Discard),
            _ => Err(WebError::NotFound),
        }
    }

    /// The states the action can apply to (the transition table has the final word).
    fn states(self) -> &'static [JobState] {
        match self {
            JobAction::Retry => &[
                JobState::Available,
                JobState::Completed,
                JobState::Discarded,
                JobState::Cancelled,
            ],
            JobAction::Cancel | JobAction::Discard => &[JobState::Available, JobState::Running],
        }
    }
}

/// One job, in the caller's transaction. A stopped workflow step's job ends its step (and
/// fails or cancels its run) in the same transaction, as `jobs cancel` does.
async fn act_on_job(
    tx: &mut PgConnection,
    engine: &WorkflowEngine,
    action: JobAction,
    id: JobId,
    now: DateTime<Utc>,
    by: &str,
) -> Result<String, WebError> {
    let event = match action {
        JobAction::Retry => {
            return Ok(match admin::retry_job_in(tx, id, now, by).await? {
                Retried::RunNow { id } => format!("Job {id} will run now."),
                Retried::Copied { original, copy } => {
                    format!("Job {original} is final: enqueued copy {}.", copy.id)
                }
            });
        }
        JobAction::Cancel => JobEvent::Cancel,
        JobAction::Discard => JobEvent::DiscardByHand,
    };
    let job = admin::stop_job(tx, id, now, event, by).await?;
    engine.step_stopped(tx, &job, now).await?;
    Ok(format!("Job {} is now {}.", job.id, job.state))
}

pub async fn job_action(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Path((id, action)): Path<(i64, String)>,
) -> Result<Redirect, WebError> {
    let action = JobAction::parse(&action)?;
    let by = s.actor();
    let now = st.clock.now();
    let mut tx = st.pool.begin().await?;
    let msg = act_on_job(&mut tx, &st.engine, action, JobId(id), now, &by).await?;
    tx.commit().await?;
    tracing::info!(by = %by, job = id, action = ?action, "dashboard job action");
    Ok(back(&format!("/jobs/{id}"), &msg))
}

/// The bulk form: the action and the list's filter (spelt out: serde's `flatten` cannot
/// read numbers from a urlencoded body).
#[derive(Debug, Deserialize)]
pub struct BulkForm {
    pub action: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub q: String,
    /// The ids a text search's page searched (`from..=to`): what its bulk form covers.
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl BulkForm {
    /// The ids the action may touch, `floor..before`: the searched range for a text
    /// filter (required: its page only ever showed that range), else every job.
    fn bounds(&self, filter: &JobQuery) -> Result<(i64, i64, Option<i64>), WebError> {
        match (filter.has_text(), self.from, self.to) {
            (false, _, _) => Ok((0, i64::MAX, None)),
            (true, Some(lo), Some(hi)) if lo <= hi => Ok((lo, hi.saturating_add(1), Some(hi))),
            (true, _, _) => Err(WebError::BadRequest(
                "a text search acts on the range its page searched; reload the page".into(),
            )),
        }
    }
}

/// "All matching the current filter", newest first, in batches of [`BULK_BATCH`] ids per
/// transaction; for a text filter, only in the range its page said it searched. The
/// keyset cursor moves below each batch, so copies made by a retry (new, higher ids) are
/// never visited again. Jobs whose state changed meanwhile are skipped.
pub async fn bulk_jobs(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Form(form): Form<BulkForm>,
) -> Result<Redirect, WebError> {
    let action = JobAction::parse(&form.action)?;
    let filter = JobQuery {
        state: form.state.clone(),
        kind: form.kind.clone(),
        queue: form.queue.clone(),
        q: form.q.clone(),
        ..JobQuery::default()
    };
    let (floor, top, searched_to) = form.bounds(&filter)?;
    let mut before = top;
    let by = s.actor();
    let now = st.clock.now();
    let (mut done, mut skipped) = (0u64, 0u64);
    loop {
        let states = action.states();
        let ids = matching_ids(&st.pool, &filter, states, floor, before, BULK_BATCH).await?;
        let Some(last) = ids.last().copied() else {
            break;
        };
        before = last;
        let mut tx = st.pool.begin().await?;
        if action == JobAction::Retry {
            // Set-based: one copy statement per batch (100,000 jobs in seconds).
            let batch: Vec<JobId> = ids.iter().map(|i| JobId(*i)).collect();
            let r = admin::retry_many_in(&mut tx, &batch, now, &by).await?;
            tx.commit().await?;
            let n = r.copied + r.run_now;
            done += n;
            skipped += (batch.len() as u64).saturating_sub(n);
            continue;
        }
        for id in ids {
            // Each job in its own savepoint: a job skipped part-way (its state changed
            // after the stop was written) rolls back whole, never a stop without its
            // workflow step's change.
            let mut one = sqlx::Acquire::begin(&mut *tx).await?;
            match act_on_job(&mut one, &st.engine, action, JobId(id), now, &by).await {
                Ok(_) => {
                    one.commit().await?;
                    done += 1;
                }
                Err(WebError::Conflict(_) | WebError::NotFound) => skipped += 1,
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
    }
    tracing::info!(by = %by, action = ?action, done, skipped, "dashboard bulk job action");
    // A text search goes back to the range it acted on (a retry's copies are newer).
    let (range, page) = match searched_to {
        Some(hi) => (format!(" in jobs #{floor}–#{hi}"), format!("&before={top}")),
        None => (String::new(), String::new()),
    };
    let msg = format!(
        "{action:?}{range}: {done} jobs done, {skipped} skipped (their state had changed)."
    );
    Ok(back(
        &format!("/jobs?{}{page}", filter.to_query_string()),
        &msg,
    ))
}

pub async fn queue_action(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Redirect, WebError> {
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => return Err(WebError::NotFound),
    };
    admin::set_queue_paused(&st.pool, &name, paused, st.clock.now()).await?;
    tracing::info!(by = %s.actor(), queue = %name, paused, "dashboard queue action");
    Ok(back("/", &format!("Queue {name} {action}d.")))
}

pub async fn schedule_action(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Redirect, WebError> {
    let now = st.clock.now();
    let by = s.actor();
    let msg = match action.as_str() {
        "pause" | "resume" => {
            let mut tx = st.pool.begin().await?;
            schedule::store::set_paused(&mut tx, &name, action == "pause", now).await?;
            tx.commit().await?;
            format!("Schedule {name} {action}d.")
        }
        "trigger" => {
            let firing = Firing {
                registry: &st.registry,
                engine: &st.engine,
                workflows: &st.workflows,
            };
            let t = schedule::trigger_now(&st.pool, &firing, &name, now, &by).await?;
            match (t.job_id, t.run_id) {
                (Some(j), _) => format!("Schedule {name} triggered: job {j}."),
                (_, Some(r)) => format!("Schedule {name} triggered: workflow run {r}."),
                _ => format!("Schedule {name} triggered."),
            }
        }
        _ => return Err(WebError::NotFound),
    };
    tracing::info!(by = %by, schedule = %name, action = %action, "dashboard schedule action");
    Ok(back("/schedules", &msg))
}

pub async fn run_action(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Path((id, action)): Path<(i64, String)>,
) -> Result<Redirect, WebError> {
    let now = st.clock.now();
    let by = s.actor();
    let mut tx = st.pool.begin().await?;
    let msg = match action.as_str() {
        "retry" => {
            let steps = st.engine.retry_run(&mut tx, id, now).await?;
            format!("Run {id} retried from: {}.", steps.join(", "))
        }
        "cancel" => {
            st.engine.cancel_run(&mut tx, id, now, &by).await?;
            format!("Run {id} cancelled.")
        }
        _ => return Err(WebError::NotFound),
    };
    tx.commit().await?;
    tracing::info!(by = %by, run = id, action = %action, "dashboard workflow action");
    Ok(back(&format!("/workflows/runs/{id}"), &msg))
}

/// The "Run now" form: the run's args as a JSON object; empty means "what the schedule
/// would pass".
#[derive(Debug, Default, Deserialize)]
pub struct RunForm {
    #[serde(default)]
    pub args: String,
}

/// The args of the (first by name) schedule that starts workflow `$1`; a plain read by
/// the `schedules` primary key order, no lock (a schedule edited meanwhile is a race the
/// person clicking wins either way).
pub const WORKFLOW_SCHEDULE_ARGS: &str = "SELECT args FROM schedules
 WHERE target_type = 'workflow' AND target = $1 ORDER BY name LIMIT 1";

/// A manual run's args: the form's JSON object, else the workflow's schedule's args (so
/// "Run now" of `trade-cycle` gets its `market` and `unit`, as the schedule's fire would),
/// else `{}`.
async fn manual_run_args(
    pool: &sqlx::PgPool,
    workflow: &str,
    given: &str,
) -> Result<serde_json::Value, WebError> {
    if !given.trim().is_empty() {
        let v: serde_json::Value = serde_json::from_str(given)
            .map_err(|e| WebError::BadRequest(format!("args is not valid JSON: {e}")))?;
        if !v.is_object() {
            return Err(WebError::BadRequest(
                "args must be a JSON object, like {\"market\": \"KRW-BTC\"}".into(),
            ));
        }
        return Ok(v);
    }
    let scheduled: Option<serde_json::Value> = sqlx::query_scalar(WORKFLOW_SCHEDULE_ARGS)
        .bind(workflow)
        .fetch_optional(pool)
        .await?;
    Ok(scheduled.unwrap_or_else(|| serde_json::json!({})))
}

pub async fn start_workflow(
    State(st): State<DashState>,
    Extension(s): Extension<Session>,
    Path(name): Path<String>,
    Form(form): Form<RunForm>,
) -> Result<Redirect, WebError> {
    let def = st.workflows.get(&name).ok_or(WebError::NotFound)?;
    let args = manual_run_args(&st.pool, &name, &form.args).await?;
    let by = s.actor();
    let mut tx = st.pool.begin().await?;
    let run = st
        .engine
        .start_run(&mut tx, def, args, &by, st.clock.now())
        .await?;
    tx.commit().await?;
    tracing::info!(by = %by, workflow = %name, run, "dashboard started a workflow run");
    Ok(back(
        &format!("/workflows/runs/{run}"),
        &format!("Run {run} started."),
    ))
}
