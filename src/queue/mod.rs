//! The job framework (SPEC A1): tables, enqueue, claim/complete/fail/rescue SQL, the worker
//! runtime, backoff, uniqueness, notify/poll wake-up and pruning.
//!
//! This layer knows nothing about trading; it could be published as its own crate. Higher
//! layers (schedules, workflows, trading handlers) plug in through [`handler::Handler`],
//! [`runtime::CompletionHook`] and the enqueue functions, which take the caller's
//! transaction.

pub mod admin;
pub mod backoff;
pub mod builtin;
pub mod claim;
pub mod enqueue;
pub mod enqueue_copy;
pub mod exec;
pub mod handler;
pub mod heartbeat;
pub mod job;
pub mod metrics;
pub mod notify;
pub mod presence;
pub mod prune;
pub mod rescue;
pub mod runtime;
pub mod slots;
pub mod tracker;
pub mod wake;

pub use enqueue::{enqueue, enqueue_many};
pub use handler::{Handler, HandlerRegistry, JobContext, JobError, KindOptions, Outcome};
pub use job::{Enqueued, Job, JobEvent, JobId, JobState, NewJob};
pub use runtime::{Worker, WorkerConfig};

/// Errors of the queue layer.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("invalid job state transition: {from} on {event:?}")]
    InvalidTransition { from: JobState, event: JobEvent },
    #[error("{0}")]
    InvalidInput(String),
    #[error("unknown job kind `{kind}` (known kinds: {known})")]
    UnknownKind { kind: String, known: String },
    #[error("job {0} not found")]
    NotFound(JobId),
    #[error("job {id} is {state}: {action} is not possible")]
    WrongState {
        id: JobId,
        state: JobState,
        action: &'static str,
    },
}
