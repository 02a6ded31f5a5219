//! Running workflows: starting a run, advancing it when a step's job completes or is
//! discarded (in that job's own transaction, as the queue's [`CompletionHook`]), retrying a
//! failed run from its failed steps, and cancelling a run by hand.
//!
//! Every change to a run first locks its `workflow_runs` row ([`LOCK_RUN`]), so two steps of
//! one run finishing at once are applied one after the other: a child with two parents is
//! decided exactly once, by whichever completion comes second. Because the step update,
//! the children's enqueue and the job's completion share one transaction, a worker killed
//! anywhere in between leaves either all of it or none of it (then the job is rescued and
//! runs again, and its completion advances the run).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::{PgConnection, Row};

use super::def::WorkflowDef;
use super::state::{
    plan, run_outcome, Decision, RunEvent, RunState, StepEvent, StepState, StepStatus,
};
use super::WorkflowError;
use crate::queue::job::Job;
use crate::queue::runtime::CompletionHook;
use crate::queue::{enqueue, HandlerRegistry, JobEvent, JobState, QueueError};

/// Locks one run. Every statement below that changes a run's steps runs after this in the
/// same transaction, so changes to one run are serialised; different runs never contend.
const LOCK_RUN: &str = "SELECT state, args, definition FROM workflow_runs WHERE id = $1 FOR UPDATE";

const INSERT_RUN: &str = "
INSERT INTO workflow_runs (workflow, args, definition, triggered_by, created_at)
VALUES ($1, $2, $3, $4, $5) RETURNING id";

const INSERT_STEPS: &str = "
INSERT INTO workflow_steps (run_id, step, kind, updated_at)
SELECT $1, s, k, $4 FROM UNNEST($2::text[], $3::text[]) AS x(s, k)";

const STEPS_OF_RUN: &str =
    "SELECT step, state, output, job_id FROM workflow_steps WHERE run_id = $1";

/// Moves a step on, guarded by its expected state (and job, where it has one), so a stale
/// completion (an old job of a retried step) changes nothing.
const SET_STEP: &str = "
UPDATE workflow_steps SET state = $3, output = coalesce($4, output), note = coalesce($5, note),
       job_id = coalesce($6, job_id), updated_at = $7
WHERE run_id = $1 AND step = $2 AND state = $8 AND ($9::bigint IS NULL OR job_id = $9)";

const SET_RUN: &str = "
UPDATE workflow_runs SET state = $2, finished_at = CASE WHEN $2 = 'running' THEN NULL ELSE $3 END
WHERE id = $1";

/// Cancels the run's jobs that have not started (row locks on those jobs only; running
/// ones finish, and their completion no longer advances the finished run).
const CANCEL_WAITING_JOBS: &str = "
UPDATE jobs SET state = 'cancelled', finished_at = $2,
       errors = errors || jsonb_build_array(jsonb_build_object(
           'attempt', attempt, 'at', $2, 'kind', 'cancel', 'message', $3::text, 'chain', '[]'::jsonb))
WHERE workflow_run_id = $1 AND state = 'available'
RETURNING id";

/// Runs workflows on top of the queue; cheap to clone.
#[derive(Clone, Debug)]
pub struct WorkflowEngine {
    registry: HandlerRegistry,
}

struct LockedRun {
    id: i64,
    state: RunState,
    args: Value,
    def: WorkflowDef,
}

type Steps = HashMap<String, (StepStatus, Option<i64>)>;

impl WorkflowEngine {
    pub fn new(registry: HandlerRegistry) -> Self {
        WorkflowEngine { registry }
    }

    /// Starts a run of `def` with `args` in the caller's transaction; its root steps are
    /// enqueued in it. Returns the run id.
    pub async fn start_run(
        &self,
        conn: &mut PgConnection,
        def: &WorkflowDef,
        args: Value,
        triggered_by: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, WorkflowError> {
        if !args.is_object() {
            return Err(WorkflowError::InvalidInput(
                "workflow args must be a JSON object".into(),
            ));
        }
        let snapshot =
            serde_json::to_value(def).map_err(|e| WorkflowError::Corrupt(e.to_string()))?;
        let id: i64 = sqlx::query_scalar(INSERT_RUN)
            .bind(&def.name)
            .bind(&args)
            .bind(&snapshot)
            .bind(triggered_by)
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
        let ids: Vec<&str> = def.steps.iter().map(|s| s.id.as_str()).collect();
        let kinds: Vec<&str> = def.steps.iter().map(|s| s.job.as_str()).collect();
        sqlx::query(INSERT_STEPS)
            .bind(id)
            .bind(&ids)
            .bind(&kinds)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        let run = LockedRun {
            id,
            state: RunState::Running,
            args,
            def: def.clone(),
        };
        self.advance(conn, &run, now).await?;
        Ok(id)
    }

    async fn lock_run(&self, conn: &mut PgConnection, id: i64) -> Result<LockedRun, WorkflowError> {
        let row = sqlx::query(LOCK_RUN)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(WorkflowError::RunNotFound(id))?;
        let state: String = row.try_get("state")?;
        let def: Value = row.try_get("definition")?;
        Ok(LockedRun {
            id,
            state: state.parse()?,
            args: row.try_get("args")?,
            def: serde_json::from_value(def)
                .map_err(|e| WorkflowError::Corrupt(format!("run {id}: definition: {e}")))?,
        })
    }

    async fn steps(&self, conn: &mut PgConnection, run: i64) -> Result<Steps, WorkflowError> {
        let rows = sqlx::query(STEPS_OF_RUN)
            .bind(run)
            .fetch_all(&mut *conn)
            .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in rows {
            let state: String = r.try_get("state")?;
            out.insert(
                r.try_get("step")?,
                (
                    StepStatus {
                        state: state.parse()?,
                        output: r.try_get("output")?,
                    },
                    r.try_get("job_id")?,
                ),
            );
        }
        Ok(out)
    }

    /// Applies one step transition, checked against the table; `false` if the row was not
    /// in the expected state (a stale or repeated event).
    #[allow(clippy::too_many_arguments)]
    async fn set_step(
        &self,
        conn: &mut PgConnection,
        run: i64,
        step: &str,
        from: StepState,
        event: StepEvent,
        change: StepChange<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, WorkflowError> {
        let to = from.transition(event)?;
        let n = sqlx::query(SET_STEP)
            .bind(run)
            .bind(step)
            .bind(to.as_str())
            .bind(change.output)
            .bind(change.note)
            .bind(change.new_job)
            .bind(now)
            .bind(from.as_str())
            .bind(change.expect_job)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn set_run(
        &self,
        conn: &mut PgConnection,
        run: &LockedRun,
        event: RunEvent,
        now: DateTime<Utc>,
    ) -> Result<RunState, WorkflowError> {
        let to = run.state.transition(event)?;
        sqlx::query(SET_RUN)
            .bind(run.id)
            .bind(to.as_str())
            .bind(now)
            .execute(&mut *conn)
            .await?;
        Ok(to)
    }

    /// Decides every step that can be decided, enqueues the ready ones, and ends the run
    /// when every step is final.
    async fn advance(
        &self,
        conn: &mut PgConnection,
        run: &LockedRun,
        now: DateTime<Utc>,
    ) -> Result<(), WorkflowError> {
        let mut steps = self.steps(conn, run.id).await?;
        let statuses: HashMap<String, StepStatus> = steps
            .iter()
            .map(|(k, (s, _))| (k.clone(), s.clone()))
            .collect();
        for decision in plan(&run.def, &statuses) {
            match decision {
                Decision::Skip { step, note } => {
                    let change = StepChange {
                        note: Some(&note),
                        ..StepChange::default()
                    };
                    self.set_step(
                        conn,
                        run.id,
                        &step,
                        StepState::Pending,
                        StepEvent::Skip,
                        change,
                        now,
                    )
                    .await?;
                    mark(&mut steps, &step, StepState::Skipped);
                }
                Decision::Enqueue { step, note } => {
                    let previous = steps.get(&step).and_then(|(_, j)| *j);
                    let state = self
                        .enqueue_step(
                            conn,
                            run,
                            (&step, note.as_deref(), previous),
                            &statuses,
                            now,
                        )
                        .await?;
                    mark(&mut steps, &step, state);
                }
            }
        }
        if steps.values().any(|(s, _)| s.state == StepState::Failed) {
            return self
                .wind_down(conn, run, "a step could not be enqueued", now)
                .await;
        }
        if let Some(event) = run_outcome(steps.values().map(|(s, _)| &s.state)) {
            self.set_run(conn, run, event, now).await?;
        }
        Ok(())
    }

    /// Enqueues a ready step's job (`step`, the planner's note, the job it replaces on a
    /// retry), its args carrying the parents' outputs. Args the kind refuses fail the step (and so the run)
    /// with the reason instead of failing the parent's completion forever.
    async fn enqueue_step(
        &self,
        conn: &mut PgConnection,
        run: &LockedRun,
        (step, note, previous_job): (&str, Option<&str>, Option<i64>),
        statuses: &HashMap<String, StepStatus>,
        now: DateTime<Utc>,
    ) -> Result<StepState, WorkflowError> {
        let def = run
            .def
            .step(step)
            .ok_or_else(|| WorkflowError::Corrupt(format!("run {}: no step `{step}`", run.id)))?;
        let output_of = |p: &str| statuses.get(p).and_then(|s| s.output.as_ref());
        let args = run.def.step_args(def, &run.args, output_of);
        let job = match self.registry.new_job(&def.job, args) {
            Ok(j) => j,
            Err(e @ (QueueError::InvalidInput(_) | QueueError::UnknownKind { .. })) => {
                let note = format!("cannot enqueue: {e}");
                let change = StepChange {
                    note: Some(&note),
                    ..StepChange::default()
                };
                self.set_step(
                    conn,
                    run.id,
                    step,
                    StepState::Pending,
                    StepEvent::Fail,
                    change,
                    now,
                )
                .await?;
                return Ok(StepState::Failed);
            }
            Err(e) => return Err(e.into()),
        };
        let mut job = job
            .in_workflow(run.id, step)
            .with_enqueued_by(format!("workflow:{}", run.id));
        job.copied_from = previous_job;
        let enqueued = enqueue(conn, now, &job).await?;
        let change = StepChange {
            note,
            new_job: Some(enqueued.id.0),
            ..StepChange::default()
        };
        self.set_step(
            conn,
            run.id,
            step,
            StepState::Pending,
            StepEvent::Enqueue,
            change,
            now,
        )
        .await?;
        Ok(StepState::Enqueued)
    }

    /// The locked run and the step a job belongs to; `None` for a job outside workflows.
    async fn run_of<'j>(
        &self,
        conn: &mut PgConnection,
        job: &'j Job,
    ) -> Result<Option<(LockedRun, &'j str)>, WorkflowError> {
        let (Some(run_id), Some(step)) = (job.workflow_run_id, job.workflow_step.as_deref()) else {
            return Ok(None);
        };
        Ok(Some((self.lock_run(conn, run_id).await?, step)))
    }

    /// A step's job completed (called in the job's transaction).
    pub async fn step_completed(
        &self,
        conn: &mut PgConnection,
        job: &Job,
        now: DateTime<Utc>,
    ) -> Result<(), WorkflowError> {
        let Some((run, step)) = self.run_of(conn, job).await? else {
            return Ok(());
        };
        let run_id = run.id;
        let change = StepChange {
            output: job.output.as_ref(),
            expect_job: Some(job.id.0),
            ..StepChange::default()
        };
        let moved = self
            .set_step(
                conn,
                run_id,
                step,
                StepState::Enqueued,
                StepEvent::Complete,
                change,
                now,
            )
            .await?;
        if moved && run.state == RunState::Running {
            self.advance(conn, &run, now).await?;
        }
        crate::failpoint::hit("workflow.step_completed");
        Ok(())
    }

    /// A step's job was discarded (out of attempts, permanent error, or by hand) or
    /// cancelled by hand: the step ends so, the run fails (or is cancelled) and what has not
    /// started is cancelled.
    pub async fn step_stopped(
        &self,
        conn: &mut PgConnection,
        job: &Job,
        now: DateTime<Utc>,
    ) -> Result<(), WorkflowError> {
        let Some((run, step)) = self.run_of(conn, job).await? else {
            return Ok(());
        };
        let run_id = run.id;
        let event = if job.state == JobState::Cancelled {
            StepEvent::Cancel
        } else {
            StepEvent::Fail
        };
        let note = format!("job {} {}", job.id, job.state);
        let change = StepChange {
            note: Some(&note),
            expect_job: Some(job.id.0),
            ..StepChange::default()
        };
        let moved = self
            .set_step(conn, run_id, step, StepState::Enqueued, event, change, now)
            .await?;
        if moved && run.state == RunState::Running {
            self.wind_down(conn, &run, &format!("step `{step}` {}", job.state), now)
                .await?;
        }
        Ok(())
    }

    /// Cancels what has not run yet; the run's end follows from its steps (a failed step
    /// fails it, otherwise it is cancelled).
    async fn wind_down(
        &self,
        conn: &mut PgConnection,
        run: &LockedRun,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<(), WorkflowError> {
        let message = format!("workflow run {} ended: {why}", run.id);
        self.cancel_pending(conn, run, &message, now).await?;
        let states = self.steps(conn, run.id).await?;
        let failed = states.values().any(|(s, _)| s.state == StepState::Failed);
        let event = if failed {
            RunEvent::Fail
        } else {
            RunEvent::Cancel
        };
        self.set_run(conn, run, event, now).await?;
        Ok(())
    }

    /// Cancels a running run by hand: waiting steps are cancelled; running step jobs finish
    /// but no longer advance it.
    pub async fn cancel_run(
        &self,
        conn: &mut PgConnection,
        run_id: i64,
        now: DateTime<Utc>,
        by: &str,
    ) -> Result<(), WorkflowError> {
        let run = self.lock_run(conn, run_id).await?;
        if run.state != RunState::Running {
            return Err(WorkflowError::WrongState {
                id: run_id,
                state: run.state,
                action: "cancel",
            });
        }
        self.cancel_pending(conn, &run, &format!("cancelled by {by}"), now)
            .await?;
        self.set_run(conn, &run, RunEvent::Cancel, now).await?;
        Ok(())
    }

    /// Cancels the run's pending steps and the jobs of its enqueued steps that have not
    /// started.
    async fn cancel_pending(
        &self,
        conn: &mut PgConnection,
        run: &LockedRun,
        why: &str,
        now: DateTime<Utc>,
    ) -> Result<(), WorkflowError> {
        debug_assert!(JobState::Available.transition(JobEvent::Cancel).is_ok());
        let cancelled: Vec<i64> = sqlx::query_scalar(CANCEL_WAITING_JOBS)
            .bind(run.id)
            .bind(now)
            .bind(why)
            .fetch_all(&mut *conn)
            .await?;
        for (step, (status, job)) in &self.steps(conn, run.id).await? {
            let waiting =
                status.state == StepState::Enqueued && job.is_some_and(|j| cancelled.contains(&j));
            if status.state == StepState::Pending || waiting {
                let change = StepChange {
                    note: Some(why),
                    ..StepChange::default()
                };
                self.set_step(
                    conn,
                    run.id,
                    step,
                    status.state,
                    StepEvent::Cancel,
                    change,
                    now,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Resumes a failed or cancelled run from its failed and cancelled steps: they go back
    /// to pending and are enqueued again (as copies linking to their previous job) once
    /// their parents are complete. Completed steps keep their outputs.
    pub async fn retry_run(
        &self,
        conn: &mut PgConnection,
        run_id: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, WorkflowError> {
        let mut run = self.lock_run(conn, run_id).await?;
        if !matches!(run.state, RunState::Failed | RunState::Cancelled) {
            return Err(WorkflowError::WrongState {
                id: run_id,
                state: run.state,
                action: "retry",
            });
        }
        let mut retried = Vec::new();
        for (step, (status, _)) in &self.steps(conn, run_id).await? {
            if matches!(status.state, StepState::Failed | StepState::Cancelled) {
                self.set_step(
                    conn,
                    run_id,
                    step,
                    status.state,
                    StepEvent::Retry,
                    StepChange::default(),
                    now,
                )
                .await?;
                retried.push(step.clone());
            }
        }
        run.state = self.set_run(conn, &run, RunEvent::Retry, now).await?;
        self.advance(conn, &run, now).await?;
        retried.sort();
        Ok(retried)
    }
}

/// The optional parts of a step update.
#[derive(Default)]
struct StepChange<'a> {
    output: Option<&'a Value>,
    note: Option<&'a str>,
    new_job: Option<i64>,
    expect_job: Option<i64>,
}

fn mark(steps: &mut Steps, step: &str, state: StepState) {
    if let Some((s, _)) = steps.get_mut(step) {
        s.state = state;
    }
}

fn to_queue(e: WorkflowError) -> QueueError {
    match e {
        WorkflowError::Queue(q) => q,
        WorkflowError::Db(d) => QueueError::Db(d),
        other => QueueError::InvalidInput(other.to_string()),
    }
}

impl CompletionHook for WorkflowEngine {
    fn on_completed<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        job: &'a Job,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move { self.step_completed(tx, job, now).await.map_err(to_queue) })
    }

    fn on_discarded<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        job: &'a Job,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), QueueError>> {
        Box::pin(async move { self.step_stopped(tx, job, now).await.map_err(to_queue) })
    }
}
