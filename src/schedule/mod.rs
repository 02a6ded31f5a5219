//! Schedules (SPEC A2): cron-like definitions in `jobs/*.toml` that enqueue a job or start
//! a workflow run at each fire time, exactly once across any number of replicas and with
//! no leader. Built on `queue` and `workflow`.

pub mod cron;
pub mod def;
pub mod fire;
pub mod history;
mod metrics;
pub mod plan;
pub mod store;
pub mod tick;

pub use def::{ScheduleDef, Target};
pub use fire::{fire_due_schedules, trigger_now, Firing, TickReport};
pub use tick::Scheduler;

use crate::queue::{HandlerRegistry, QueueError};

/// Registers the job kinds this layer owns (`prune_history`).
pub fn register_kinds(registry: &mut HandlerRegistry) {
    registry.register(history::PruneHistory);
}
use crate::workflow::WorkflowError;

/// Errors of the schedule layer.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    #[error("{0}")]
    InvalidInput(String),
    #[error("schedule `{0}` not found")]
    NotFound(String),
    #[error("schedule targets workflow `{0}`, which no loaded file defines")]
    UnknownWorkflow(String),
    #[error("stored schedule data is inconsistent: {0}")]
    Corrupt(String),
}
