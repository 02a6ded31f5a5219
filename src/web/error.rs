//! The dashboard's one error type. Every handler returns it; its response is a generic page
//! that never shows SQL, table names or internals (those go to the log with `tracing`).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::queue::QueueError;
use crate::schedule::ScheduleError;
use crate::workflow::WorkflowError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("not found")]
    NotFound,
    /// The input was refused; the message is written for people and safe to show.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The action does not fit the object's state (e.g. retry of a running job).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("too many login attempts")]
    RateLimited,
    /// Anything else: logged in full, shown as a generic page.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sqlx::Error> for WebError {
    fn from(e: sqlx::Error) -> Self {
        WebError::Internal(e.to_string())
    }
}

impl From<QueueError> for WebError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::NotFound(_) => WebError::NotFound,
            QueueError::WrongState { .. } | QueueError::InvalidTransition { .. } => {
                WebError::Conflict(e.to_string())
            }
            QueueError::InvalidInput(m) => WebError::BadRequest(m),
            QueueError::UnknownKind { .. } => WebError::BadRequest(e.to_string()),
            QueueError::Db(e) => WebError::from(e),
        }
    }
}

impl From<ScheduleError> for WebError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::NotFound(_) => WebError::NotFound,
            ScheduleError::InvalidInput(m) => WebError::BadRequest(m),
            ScheduleError::UnknownWorkflow(_) => WebError::Conflict(e.to_string()),
            ScheduleError::Queue(q) => WebError::from(q),
            ScheduleError::Workflow(w) => WebError::from(w),
            other => WebError::Internal(other.to_string()),
        }
    }
}

impl From<WorkflowError> for WebError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::RunNotFound(_) | WorkflowError::UnknownWorkflow { .. } => {
                WebError::NotFound
            }
            WorkflowError::WrongState { .. } => WebError::Conflict(e.to_string()),
            WorkflowError::InvalidInput(m) => WebError::BadRequest(m),
            WorkflowError::Queue(q) => WebError::from(q),
            other => WebError::Internal(other.to_string()),
        }
    }
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the page may say: people-facing messages only, never an internal error.
    fn public_message(&self) -> String {
        match self {
            WebError::NotFound => "There is nothing here.".into(),
            WebError::BadRequest(m) | WebError::Conflict(m) => m.clone(),
            WebError::Forbidden(m) => (*m).to_string(),
            WebError::RateLimited => "Too many failed logins; wait a minute.".into(),
            WebError::Internal(_) => "Something went wrong on our side; it has been logged.".into(),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "dashboard request failed");
        } else {
            tracing::info!(error = %self, "dashboard request refused");
        }
        let page = super::layout::error_page(status, &self.public_message());
        (status, Html(page.into_string())).into_response()
    }
}
