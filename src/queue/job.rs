//! What a job is: its row ([`Job`]), its states and the one table of allowed transitions
//! ([`JobState::transition`]), and what a caller hands to enqueue ([`NewJob`]).
//! No SQL lives here.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;

use super::QueueError;

/// A job's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The persisted state of a job (SPEC A1). `available` with a future `run_at` is shown as
/// *scheduled*, or *retrying* when it has run before; see [`Job::display_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Available,
    Running,
    Completed,
    Discarded,
    Cancelled,
}

/// Why a job changes state; the transition table is keyed on (state, event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// A worker claimed it (attempt + 1).
    Claim,
    /// The handler succeeded.
    Complete,
    /// The handler failed and attempts remain: back to available with backoff.
    Retry,
    /// Failed permanently or out of attempts.
    Discard,
    /// Snoozed by its handler or released at shutdown: the attempt is given back.
    GiveBack,
    /// The lease expired without a heartbeat: a failed attempt.
    Rescue,
    /// Cancelled by hand (CLI, dashboard, workflow).
    Cancel,
    /// Discarded by hand.
    DiscardByHand,
    /// "Retry now" on an available (scheduled/retrying) job: run_at = now.
    RunNow,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Available,
        JobState::Running,
        JobState::Completed,
        JobState::Discarded,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Available => "available",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Discarded => "discarded",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Final states are never revived: "run again" enqueues a linked copy.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Discarded | JobState::Cancelled
        )
    }

    /// The transition table (also drawn in `docs/ARCHITECTURE.md`). Every state change in
    /// the SQL of this module is one of these rows; anything else is a bug and is refused.
    pub fn transition(self, event: JobEvent) -> Result<JobState, QueueError> {
        use JobEvent as E;
        use JobState as S;
        let next = match (self, event) {
            (S::Available, E::Claim) => S::Running,
            (S::Available, E::RunNow) => S::Available,
            (S::Available, E::Cancel) => S::Cancelled,
            (S::Available, E::DiscardByHand) => S::Discarded,
            (S::Running, E::Complete) => S::Completed,
            (S::Running, E::Retry) => S::Available,
            (S::Running, E::Rescue) => S::Available,
            (S::Running, E::GiveBack) => S::Available,
            (S::Running, E::Discard) => S::Discarded,
            (S::Running, E::Cancel) => S::Cancelled,
            (S::Running, E::DiscardByHand) => S::Discarded,
            (from, event) => return Err(QueueError::InvalidTransition { from, event }),
        };
        Ok(next)
    }
}

// Stored as the PostgreSQL enum `job_state`, whose labels are `as_str()`.
impl sqlx::Type<sqlx::Postgres> for JobState {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_name("job_state")
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for JobState {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
    }
}

impl sqlx::Decode<'_, sqlx::Postgres> for JobState {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
        let s = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(s.parse::<JobState>()?)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = QueueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| QueueError::InvalidInput(format!(
                "unknown job state `{s}` (expected one of available, running, completed, discarded, cancelled)"
            )))
    }
}

/// A job row as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: JobId,
    pub kind: String,
    pub queue: String,
    pub args: Value,
    pub priority: i16,
    pub run_at: DateTime<Utc>,
    pub attempt: i32,
    pub max_attempts: i32,
    pub state: JobState,
    pub timeout_ms: Option<i32>,
    pub unique_key: Option<String>,
    pub errors: Value,
    pub output: Option<Value>,
    pub workflow_run_id: Option<i64>,
    pub workflow_step: Option<String>,
    pub copied_from: Option<i64>,
    pub enqueued_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub worker: Option<String>,
    pub lease_token: Option<i64>,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// The column list every `SELECT`/`RETURNING` of a whole job uses, in [`Job::from_row`]'s order.
pub const JOB_COLUMNS: &str = "id, kind, queue, args, priority, run_at, attempt, max_attempts, \
     state, timeout_ms, unique_key, errors, output, workflow_run_id, workflow_step, copied_from, \
     enqueued_by, created_at, started_at, finished_at, worker, lease_token, lease_expires_at";

impl Job {
    pub fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Job {
            id: JobId(row.try_get("id")?),
            kind: row.try_get("kind")?,
            queue: row.try_get("queue")?,
            args: row.try_get("args")?,
            priority: row.try_get("priority")?,
            run_at: row.try_get("run_at")?,
            attempt: row.try_get("attempt")?,
            max_attempts: row.try_get("max_attempts")?,
            state: row.try_get("state")?,
            timeout_ms: row.try_get("timeout_ms")?,
            unique_key: row.try_get("unique_key")?,
            errors: row.try_get("errors")?,
            output: row.try_get("output")?,
            workflow_run_id: row.try_get("workflow_run_id")?,
            workflow_step: row.try_get("workflow_step")?,
            copied_from: row.try_get("copied_from")?,
            enqueued_by: row.try_get("enqueued_by")?,
            created_at: row.try_get("created_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            worker: row.try_get("worker")?,
            lease_token: row.try_get("lease_token")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
        })
    }

    /// The state a person sees: `scheduled` and `retrying` refine `available`.
    pub fn display_state(&self, now: DateTime<Utc>) -> &'static str {
        match self.state {
            JobState::Available if self.run_at > now && self.attempt > 0 => "retrying",
            JobState::Available if self.run_at > now => "scheduled",
            s => s.as_str(),
        }
    }
}

/// A job to enqueue. Built with [`NewJob::new`] and the `with_*` setters; defaults for the
/// queue, attempts and timeout come from the kind's registration when enqueued through a
/// registry, otherwise from [`NewJob::new`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewJob {
    pub kind: String,
    pub queue: String,
    pub args: Value,
    pub priority: i16,
    /// `None`: run now (the clock's now at enqueue).
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
    pub timeout_ms: Option<i32>,
    pub unique_key: Option<String>,
    pub workflow_run_id: Option<i64>,
    pub workflow_step: Option<String>,
    pub copied_from: Option<i64>,
    pub enqueued_by: Option<String>,
}

pub const DEFAULT_QUEUE: &str = "default";
pub const DEFAULT_MAX_ATTEMPTS: i32 = 20;

impl NewJob {
    pub fn new(kind: impl Into<String>, args: Value) -> Self {
        NewJob {
            kind: kind.into(),
            queue: DEFAULT_QUEUE.to_string(),
            args,
            priority: 0,
            run_at: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout_ms: None,
            unique_key: None,
            workflow_run_id: None,
            workflow_step: None,
            copied_from: None,
            enqueued_by: None,
        }
    }

    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }
    pub fn with_priority(mut self, priority: i16) -> Self {
        self.priority = priority;
        self
    }
    pub fn with_run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }
    pub fn with_max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n;
        self
    }
    pub fn with_timeout_ms(mut self, ms: i32) -> Self {
        self.timeout_ms = Some(ms);
        self
    }
    pub fn with_unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
    pub fn with_enqueued_by(mut self, who: impl Into<String>) -> Self {
        self.enqueued_by = Some(who.into());
        self
    }
    pub fn in_workflow(mut self, run_id: i64, step: impl Into<String>) -> Self {
        self.workflow_run_id = Some(run_id);
        self.workflow_step = Some(step.into());
        self
    }

    /// Checks what the database would otherwise reject with a less helpful message.
    pub fn validate(&self) -> Result<(), QueueError> {
        let bad = |m: String| Err(QueueError::InvalidInput(m));
        if self.kind.trim().is_empty() {
            return bad("job kind is empty".into());
        }
        if self.queue.trim().is_empty() {
            return bad(format!("job `{}`: queue name is empty", self.kind));
        }
        if self.max_attempts < 1 {
            return bad(format!(
                "job `{}`: max_attempts must be at least 1, got {}",
                self.kind, self.max_attempts
            ));
        }
        if matches!(self.timeout_ms, Some(t) if t < 1) {
            return bad(format!("job `{}`: timeout must be positive", self.kind));
        }
        Ok(())
    }
}

/// The result of an enqueue: a new job, or the live job that already holds the unique key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    pub id: JobId,
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_states_cannot_be_revived() {
        for s in [
            JobState::Completed,
            JobState::Discarded,
            JobState::Cancelled,
        ] {
            for e in [
                JobEvent::Claim,
                JobEvent::Retry,
                JobEvent::RunNow,
                JobEvent::GiveBack,
                JobEvent::Rescue,
            ] {
                assert!(s.transition(e).is_err(), "{s:?} + {e:?} must be refused");
            }
        }
    }

    #[test]
    fn running_job_paths() {
        let r = JobState::Running;
        assert_eq!(
            r.transition(JobEvent::Complete).unwrap(),
            JobState::Completed
        );
        assert_eq!(r.transition(JobEvent::Retry).unwrap(), JobState::Available);
        assert_eq!(
            r.transition(JobEvent::Discard).unwrap(),
            JobState::Discarded
        );
        assert!(r.transition(JobEvent::Claim).is_err());
        assert!(JobState::Available.transition(JobEvent::Complete).is_err());
    }

    #[test]
    fn state_parses_from_its_name() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!("done".parse::<JobState>().is_err());
    }
}
