//! Workflows (SPEC A3): DAGs of steps defined in `workflows/*.toml`, each step one job.
//! Built on `queue`: a step's job completing (or being discarded) advances its run in the
//! job's own transaction through the queue's completion hook. The workflow is the only
//! owner of a chain: handlers return outputs and never enqueue the next step themselves.

pub mod condition;
pub mod def;
pub mod engine;
pub mod state;
pub mod store;

pub use def::{StepDef, WorkflowDef};
pub use engine::WorkflowEngine;
pub use state::{RunState, StepState};

use crate::queue::QueueError;

/// Errors of the workflow layer.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("invalid workflow transition: {0}")]
    InvalidTransition(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("unknown workflow `{name}` (known: {known})")]
    UnknownWorkflow { name: String, known: String },
    #[error("workflow run {0} not found")]
    RunNotFound(i64),
    #[error("workflow run {id} is {state}: {action} is not possible")]
    WrongState {
        id: i64,
        state: RunState,
        action: &'static str,
    },
    #[error("stored workflow data is inconsistent: {0}")]
    Corrupt(String),
}
