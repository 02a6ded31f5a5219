//! The typed handler API every job kind implements, and the registry that maps a kind name
//! to its handler and defaults.
//!
//! A handler declares its kind, its args type (serde), its queue, max attempts and timeout
//! ([`KindOptions`]). It gets a [`JobContext`] with the pool, the clock, a cancellation
//! token and the job's own transaction: whatever it writes through [`JobContext::tx`], the
//! job's completion, its workflow children and follow-up jobs ([`JobContext::enqueue`])
//! commit together or not at all.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;

use super::enqueue::enqueue;
use super::job::{Enqueued, Job, NewJob, DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE};
use super::QueueError;
use crate::clock::SharedClock;

/// Per-kind defaults. Options of an individual job (its queue, timeout) win.
#[derive(Debug, Clone)]
pub struct KindOptions {
    pub queue: String,
    pub max_attempts: i32,
    pub timeout: Duration,
    pub priority: i16,
}

/// SPEC A1: 5 minutes unless the kind or the job says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for KindOptions {
    fn default() -> Self {
        KindOptions {
            queue: DEFAULT_QUEUE.to_string(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout: DEFAULT_TIMEOUT,
            priority: 0,
        }
    }
}

/// What a handler asks for when it returns normally.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done; the optional output is stored (a workflow step's children read it).
    Complete(Option<Value>),
    /// Run again at this time; the attempt is given back.
    Snooze(DateTime<Utc>),
}

impl Outcome {
    pub fn done() -> Self {
        Outcome::Complete(None)
    }
    pub fn output(v: Value) -> Self {
        Outcome::Complete(Some(v))
    }
}

/// A failed attempt: retried with backoff, or discarded at once when permanent.
/// Any `std::error::Error` converts into a retryable one with its source chain, so `?`
/// works in handlers. (Deliberately not an `Error` itself, like `anyhow::Error`.)
#[derive(Debug)]
pub struct JobError {
    pub permanent: bool,
    pub message: String,
    pub chain: Vec<String>,
    /// Wait this long before the next attempt instead of the exponential backoff (a
    /// server's `Retry-After`). Ignored when permanent or out of attempts.
    pub retry_after: Option<Duration>,
}

impl JobError {
    pub fn retry(message: impl Into<String>) -> Self {
        JobError {
            permanent: false,
            message: message.into(),
            chain: Vec::new(),
            retry_after: None,
        }
    }
    /// A retryable failure whose next attempt waits `after` (e.g. HTTP 429 `Retry-After`).
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        JobError {
            retry_after: Some(after),
            ..JobError::retry(message)
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        JobError {
            permanent: true,
            message: message.into(),
            chain: Vec::new(),
            retry_after: None,
        }
    }
    /// Marks any error permanent (e.g. `Err(e).map_err(JobError::from).map_err(JobError::into_permanent)`).
    pub fn into_permanent(mut self) -> Self {
        self.permanent = true;
        self
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(e: E) -> Self {
        let mut chain = Vec::new();
        let mut source = e.source();
        while let Some(s) = source {
            chain.push(s.to_string());
            source = s.source();
        }
        JobError {
            permanent: false,
            message: e.to_string(),
            chain,
            retry_after: None,
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        for c in &self.chain {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

/// Everything a running handler may use.
pub struct JobContext {
    pub job: Job,
    pub pool: PgPool,
    pub clock: SharedClock,
    /// Fired when the job is cancelled by hand, its lease is lost, or the worker shuts down
    /// past its grace period. The runtime also drops the handler's future then.
    pub cancel: CancellationToken,
    pub(crate) tx: Option<Transaction<'static, Postgres>>,
}

impl JobContext {
    pub(crate) fn new(
        job: Job,
        pool: PgPool,
        clock: SharedClock,
        cancel: CancellationToken,
    ) -> Self {
        JobContext {
            job,
            pool,
            clock,
            cancel,
            tx: None,
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The job's own transaction, begun on first use. It commits with the job's completion.
    pub async fn tx(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.tx.is_none() {
            self.tx = Some(self.pool.begin().await?);
        }
        match self.tx.as_mut() {
            Some(tx) => Ok(&mut **tx),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// Enqueues a follow-up job in the job's transaction (visible only if the job completes).
    pub async fn enqueue(&mut self, job: NewJob) -> Result<Enqueued, QueueError> {
        let now = self.now();
        let by = format!("job:{}", self.job.id);
        let job = if job.enqueued_by.is_none() {
            job.with_enqueued_by(by)
        } else {
            job
        };
        let conn = self.tx().await?;
        enqueue(conn, now, &job).await
    }

    pub(crate) fn take_tx(&mut self) -> Option<Transaction<'static, Postgres>> {
        self.tx.take()
    }
}

/// A job kind's handler.
pub trait Handler: Send + Sync + 'static {
    /// The kind name stored in `jobs.kind`.
    const KIND: &'static str;
    /// The args, deserialized from the job's jsonb; bad args discard the job at once.
    type Args: DeserializeOwned + Send + 'static;

    fn options(&self) -> KindOptions {
        KindOptions::default()
    }

    fn run(
        &self,
        ctx: &mut JobContext,
        args: Self::Args,
    ) -> impl Future<Output = Result<Outcome, JobError>> + Send;
}

/// The object-safe face of a [`Handler`], kept in the registry.
pub trait ErasedHandler: Send + Sync {
    fn kind(&self) -> &'static str;
    fn options(&self) -> KindOptions;
    /// Checks that `args` deserialize, with serde's message (line/column/field).
    fn check_args(&self, args: &Value) -> Result<(), String>;
    fn call<'a>(
        &'a self,
        ctx: &'a mut JobContext,
        args: Value,
    ) -> BoxFuture<'a, Result<Outcome, JobError>>;
}

impl<H: Handler> ErasedHandler for H {
    fn kind(&self) -> &'static str {
        H::KIND
    }
    fn options(&self) -> KindOptions {
        Handler::options(self)
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        H::Args::deserialize(args)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    fn call<'a>(
        &'a self,
        ctx: &'a mut JobContext,
        args: Value,
    ) -> BoxFuture<'a, Result<Outcome, JobError>> {
        Box::pin(async move {
            let args = serde_json::from_value::<H::Args>(args).map_err(|e| {
                JobError::permanent(format!("args of `{}` do not deserialize: {e}", H::KIND))
            })?;
            self.run(ctx, args).await
        })
    }
}

use serde::Deserialize as _;

/// Kind name → handler. Cheap to clone.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: BTreeMap<&'static str, Arc<dyn ErasedHandler>>,
}

impl HandlerRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register<H: Handler>(&mut self, handler: H) -> &mut Self {
        self.handlers.insert(H::KIND, Arc::new(handler));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn ErasedHandler>> {
        self.handlers.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.handlers.keys().copied()
    }

    fn unknown(&self, kind: &str) -> QueueError {
        QueueError::UnknownKind {
            kind: kind.to_string(),
            known: self.kinds().collect::<Vec<_>>().join(", "),
        }
    }

    /// A job of a registered kind with that kind's defaults, after checking its args.
    pub fn new_job(&self, kind: &str, args: Value) -> Result<NewJob, QueueError> {
        let h = self.get(kind).ok_or_else(|| self.unknown(kind))?;
        h.check_args(&args).map_err(|e| {
            QueueError::InvalidInput(format!("args for job kind `{kind}` are invalid: {e}"))
        })?;
        let o = h.options();
        Ok(NewJob::new(kind, args)
            .with_queue(o.queue)
            .with_max_attempts(o.max_attempts)
            .with_priority(o.priority))
    }

    /// The timeout of a claimed job: its own, else its kind's.
    pub fn timeout_for(&self, job: &Job) -> Duration {
        match job.timeout_ms {
            Some(ms) if ms > 0 => Duration::from_millis(ms as u64),
            _ => self
                .get(&job.kind)
                .map(|h| h.options().timeout)
                .unwrap_or(DEFAULT_TIMEOUT),
        }
    }
}

impl std::fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}
