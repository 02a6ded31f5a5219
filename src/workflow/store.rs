//! Reading workflow runs for people (`workflows list|show`, the dashboard). Reads only; no
//! locks.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgExecutor, Row};

use super::{RunState, StepState, WorkflowError};

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub workflow: String,
    pub state: RunState,
    pub triggered_by: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub step: String,
    pub kind: String,
    pub state: StepState,
    pub after: Vec<String>,
    pub when: Option<String>,
    pub job_id: Option<i64>,
    /// The step job's own state (`running`, `available` …), when it has a job.
    pub job_state: Option<String>,
    pub attempt: Option<i32>,
    pub output: Option<Value>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    #[serde(flatten)]
    pub run: RunSummary,
    pub args: Value,
    pub steps: Vec<StepView>,
}

const RECENT_RUNS: &str = "
SELECT id, workflow, state, triggered_by, created_at, finished_at FROM workflow_runs
WHERE ($1::text IS NULL OR workflow = $1)
ORDER BY id DESC LIMIT $2";

const ONE_RUN: &str = "
SELECT id, workflow, state, triggered_by, created_at, finished_at, args, definition
FROM workflow_runs WHERE id = $1";

/// Steps in definition order, each with its job's state (index `workflow_steps_pkey`).
const RUN_STEPS: &str = "
SELECT s.step, s.kind, s.state, s.job_id, s.output, s.note, j.state::text AS job_state, j.attempt
FROM workflow_steps s LEFT JOIN jobs j ON j.id = s.job_id
WHERE s.run_id = $1";

fn summary(r: &sqlx::postgres::PgRow) -> Result<RunSummary, WorkflowError> {
    let state: String = r.try_get("state")?;
    Ok(RunSummary {
        id: r.try_get("id")?,
        workflow: r.try_get("workflow")?,
        state: state.parse()?,
        triggered_by: r.try_get("triggered_by")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

pub async fn recent_runs(
    db: impl PgExecutor<'_>,
    workflow: Option<&str>,
    limit: i64,
) -> Result<Vec<RunSummary>, WorkflowError> {
    let rows = sqlx::query(RECENT_RUNS)
        .bind(workflow)
        .bind(limit.clamp(1, 1000))
        .fetch_all(db)
        .await?;
    rows.iter().map(summary).collect()
}

pub async fn show_run(db: &mut sqlx::PgConnection, id: i64) -> Result<RunView, WorkflowError> {
    let row = sqlx::query(ONE_RUN)
        .bind(id)
        .fetch_optional(&mut *db)
        .await?
        .ok_or(WorkflowError::RunNotFound(id))?;
    let def: super::WorkflowDef = serde_json::from_value(row.try_get("definition")?)
        .map_err(|e| WorkflowError::Corrupt(format!("run {id}: {e}")))?;
    let rows = sqlx::query(RUN_STEPS).bind(id).fetch_all(&mut *db).await?;
    let mut steps = Vec::with_capacity(rows.len());
    for s in &def.steps {
        let Some(r) = rows
            .iter()
            .find(|r| r.try_get::<String, _>("step").ok().as_deref() == Some(&s.id))
        else {
            continue;
        };
        let state: String = r.try_get("state")?;
        steps.push(StepView {
            step: s.id.clone(),
            kind: r.try_get("kind")?,
            state: state.parse()?,
            after: s.after.clone(),
            when: s.when.clone(),
            job_id: r.try_get("job_id")?,
            job_state: r.try_get("job_state")?,
            attempt: r.try_get("attempt")?,
            output: r.try_get("output")?,
            note: r.try_get("note")?,
        });
    }
    Ok(RunView {
        run: summary(&row)?,
        args: row.try_get("args")?,
        steps,
    })
}
