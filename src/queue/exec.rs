//! Running one claimed job: deserialize its args, run its handler under its timeout with
//! panics caught and its cancellation token watched, then record the outcome under the
//! lease. Handlers that wrote through their transaction (or belong to a workflow) complete
//! in that transaction; the others are completed in batches by the [`Completer`], which is
//! what makes draining fast (one commit per batch, not per job).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backoff::backoff;
use super::claim::{
    complete_batch, complete_one, fail_one, give_back, next_after_failure, AttemptError,
    CompletedJobs, CompletedRow, Completion,
};
use super::handler::{ErasedHandler, HandlerRegistry, JobContext, JobError, Outcome};
use super::job::{Job, JobId};
use super::metrics as m;
use super::runtime::{stored_output, CompletionHook, EventSender, Worker, WorkerEvent};
use super::slots::{Slot, Slots};
use super::tracker::{StopReason, Tracker};
use super::wake::Wake;
use super::QueueError;
use crate::clock::SharedClock;

/// How a handler run ended, before it is recorded.
enum RunEnd {
    Returned(Result<Outcome, JobError>),
    Panicked(String),
    TimedOut(Duration),
    Stopped(StopReason),
}

pub struct JobRunner {
    pool: PgPool,
    clock: SharedClock,
    registry: HandlerRegistry,
    hook: Option<Arc<dyn CompletionHook>>,
    tracker: Tracker,
    slots: Slots,
    metrics: m::RunMetrics,
    events: EventSender,
    wake: Arc<Wake>,
    done: mpsc::UnboundedSender<Completion>,
    completed: CompletedJobs,
}

impl JobRunner {
    pub(crate) fn new(w: &Worker, done: mpsc::UnboundedSender<Completion>) -> Self {
        JobRunner {
            pool: w.pool.clone(),
            clock: w.clock.clone(),
            registry: w.registry.clone(),
            hook: w.hook.clone(),
            tracker: w.tracker.clone(),
            slots: w.slots.clone(),
            metrics: m::RunMetrics::default(),
            events: w.events.clone(),
            wake: w.wake.clone(),
            done,
            completed: w.config.completed,
        }
    }

    pub async fn run(&self, job: Job, cancel: CancellationToken) {
        let span = tracing::info_span!("job", job_id = job.id.0, kind = %job.kind, attempt = job.attempt, queue = %job.queue);
        async {
            let (id, queue, kind) = (job.id, job.queue.clone(), job.kind.clone());
            // A job claimed ahead waits here for a slot, unless it is stopped first
            // (cancelled by hand, lease lost, or given back at shutdown).
            let slot = tokio::select! {
                biased;
                _ = cancel.cancelled() => None,
                slot = self.slots.acquire(&queue) => slot,
            };
            let Some(slot) = slot.filter(|_| self.tracker.try_start(id)) else {
                let reason = self.tracker.stop_reason(id).unwrap_or(StopReason::ByHand);
                let token = job.lease_token.unwrap_or_default();
                if let Err(e) = Box::pin(self.record_stop(&job, token, reason)).await {
                    tracing::error!(error = %e, "could not give back a job that never started; its lease will expire");
                    self.tracker.release(id);
                }
                return;
            };
            let started = Instant::now();
            self.metrics.started(&queue, &kind);
            let outcome = self.execute(job, cancel, slot).await;
            let secs = started.elapsed().as_secs_f64();
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "could not record the job's outcome; its lease will expire and it will be retried");
                self.tracker.release(id);
            }
            self.metrics.finished(&queue, &kind, outcome.unwrap_or("unrecorded"), secs);
            self.wake.wake();
        }
        .instrument(span)
        .await
    }

    /// Runs the handler and records the result; returns the metrics outcome label.
    async fn execute(
        &self,
        job: Job,
        cancel: CancellationToken,
        slot: Slot,
    ) -> Result<&'static str, QueueError> {
        let token = job.lease_token.unwrap_or_default();
        let Some(handler) = self.registry.get(&job.kind).cloned() else {
            let err = AttemptError {
                attempt: job.attempt,
                kind: "unknown_kind",
                message: format!("no handler for job kind `{}` on this worker", job.kind),
                chain: vec![],
            };
            self.tracker.mark_handler_done(job.id);
            drop(slot);
            // Retryable, not permanent: during a rolling deploy an older worker may claim a
            // kind only newer workers know; the backoff hands it to them. A kind no worker
            // knows is still discarded once its attempts run out, and visible then.
            return Box::pin(self.record_failure(&job, token, false, err, None, None)).await;
        };
        let timeout = self.registry.timeout_for(&job);
        let mut ctx = JobContext::new(
            job.clone(),
            self.pool.clone(),
            self.clock.clone(),
            cancel.clone(),
        );
        let end = run_handler(
            handler.as_ref(),
            &mut ctx,
            &job,
            timeout,
            &cancel,
            &self.tracker,
        )
        .await;
        self.tracker.mark_handler_done(job.id);
        drop(slot); // the slot is free while the outcome is written
                    // The common case first, without an await: a handler that wrote nothing of its own
                    // is completed in the next batch. Every other outcome is written by `record`, boxed
                    // so that its large future does not enlarge every job task (a task's future is
                    // copied when spawned: that copy was a third of the worker's CPU in a noop drain).
        let end = match end {
            RunEnd::Returned(Ok(Outcome::Complete(out)))
                if ctx.tx.is_none() && !self.in_workflow(&job) =>
            {
                self.send_completion(Completion::of(&job, token, stored_output(out)))?;
                return Ok("completed");
            }
            end => end,
        };
        Box::pin(self.record(&job, token, end, ctx)).await
    }

    fn in_workflow(&self, job: &Job) -> bool {
        job.workflow_run_id.is_some() && self.hook.is_some()
    }

    /// Writes a handler's outcome under its lease.
    async fn record(
        &self,
        job: &Job,
        token: i64,
        end: RunEnd,
        ctx: JobContext,
    ) -> Result<&'static str, QueueError> {
        let failure = |kind: &'static str, message: String, chain: Vec<String>| AttemptError {
            attempt: job.attempt,
            kind,
            message,
            chain,
        };
        match end {
            RunEnd::Returned(Ok(Outcome::Complete(out))) => {
                self.record_success(job, token, ctx, stored_output(out))
                    .await
            }
            RunEnd::Returned(Ok(Outcome::Snooze(at))) => {
                self.record_snooze(job, token, ctx, at).await
            }
            RunEnd::Returned(Err(e)) => {
                let kind = if e.permanent { "permanent" } else { "error" };
                let (permanent, wait) = (e.permanent, e.retry_after);
                let err = failure(kind, e.message, e.chain);
                self.record_failure(job, token, permanent, err, Some(ctx), wait)
                    .await
            }
            RunEnd::Panicked(msg) => {
                let err = failure("panic", format!("handler panicked: {msg}"), vec![]);
                self.record_failure(job, token, false, err, Some(ctx), None)
                    .await
            }
            RunEnd::TimedOut(t) => {
                let message = format!("handler timed out after {} ms", t.as_millis());
                let err = failure("timeout", message, vec![]);
                self.record_failure(job, token, false, err, Some(ctx), None)
                    .await
            }
            RunEnd::Stopped(reason) => self.record_stop(job, token, reason).await,
        }
    }

    async fn record_success(
        &self,
        job: &Job,
        token: i64,
        mut ctx: JobContext,
        output: Option<serde_json::Value>,
    ) -> Result<&'static str, QueueError> {
        let in_workflow = self.in_workflow(job);
        let tx = ctx.take_tx();
        if tx.is_none() && !in_workflow {
            // No writes of its own to commit with: completed in the next batch.
            self.send_completion(Completion::of(job, token, output))?;
            return Ok("completed");
        }
        let mut tx = match tx {
            Some(tx) => tx,
            None => self.pool.begin().await?,
        };
        let now = self.clock.now();
        let Some(done) =
            complete_one(&mut tx, job, token, now, output.as_ref(), self.completed).await?
        else {
            // Lease lost: roll the handler's writes back with it (tx dropped).
            return self.refused(job.id);
        };
        // A workflow step is always kept (`CompletedJobs::deletes`), so its hook sees it.
        if let (Some(hook), CompletedRow::Kept(done)) = (&self.hook, &done) {
            if done.workflow_run_id.is_some() {
                hook.on_completed(&mut tx, done, now).await?;
            }
        }
        tx.commit().await?;
        self.tracker.release(job.id);
        let _unobserved = self.events.send(WorkerEvent::Completed(job.id));
        Ok("completed")
    }

    fn send_completion(&self, c: Completion) -> Result<(), QueueError> {
        self.done
            .send(c)
            .map_err(|_| QueueError::InvalidInput("the completer has stopped".into()))
    }

    async fn record_snooze(
        &self,
        job: &Job,
        token: i64,
        mut ctx: JobContext,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<&'static str, QueueError> {
        // A snoozing handler's writes are kept: they commit with the give-back.
        let given = match ctx.take_tx() {
            Some(mut tx) => {
                let g = give_back(&mut *tx, &[(job.id, token)], at).await?;
                if !g.is_empty() {
                    tx.commit().await?;
                }
                g
            }
            None => give_back(&self.pool, &[(job.id, token)], at).await?,
        };
        self.tracker.release(job.id);
        if given.is_empty() {
            return self.refused(job.id);
        }
        let _unobserved = self.events.send(WorkerEvent::Snoozed(job.id));
        Ok("snoozed")
    }

    async fn record_failure(
        &self,
        job: &Job,
        token: i64,
        permanent: bool,
        err: AttemptError,
        ctx: Option<JobContext>,
        wait: Option<std::time::Duration>,
    ) -> Result<&'static str, QueueError> {
        drop(ctx); // rolls back whatever the failed attempt wrote
        let now = self.clock.now();
        let wait = match wait.map(chrono::Duration::from_std) {
            Some(Ok(w)) => w,
            _ => backoff(job.attempt),
        };
        let retry_at = next_after_failure(job.attempt, job.max_attempts, permanent, now, wait);
        tracing::warn!(error = %err.message, permanent, will_retry = retry_at.is_some(), "job attempt failed");
        let mut tx = self.pool.begin().await?;
        let Some(failed) = fail_one(&mut *tx, job.id, token, now, retry_at, &err).await? else {
            return self.refused(job.id);
        };
        let discarded = retry_at.is_none();
        // Every discard reaches the hook (the workflow engine ignores jobs outside a run;
        // the bot alerts on trading kinds).
        if let (true, Some(hook)) = (discarded, &self.hook) {
            hook.on_discarded(&mut tx, &failed, now).await?;
        }
        tx.commit().await?;
        self.tracker.release(job.id);
        let _unobserved = self.events.send(WorkerEvent::Failed {
            id: job.id,
            discarded,
        });
        Ok(if discarded { "discarded" } else { "failed" })
    }

    async fn record_stop(
        &self,
        job: &Job,
        token: i64,
        reason: StopReason,
    ) -> Result<&'static str, QueueError> {
        match reason {
            StopReason::Shutdown => {
                give_back(&self.pool, &[(job.id, token)], self.clock.now()).await?;
                self.tracker.release(job.id);
                let _unobserved = self.events.send(WorkerEvent::Released(job.id));
                Ok("released")
            }
            StopReason::Unstarted => {
                // Given back with the other waiting jobs by the shutdown.
                self.tracker.release(job.id);
                let _unobserved = self.events.send(WorkerEvent::Released(job.id));
                Ok("released")
            }
            StopReason::LeaseLost | StopReason::ByHand => {
                if reason == StopReason::LeaseLost {
                    m::lease_lost(&job.queue, &job.kind);
                }
                self.tracker.release(job.id);
                let _unobserved = self.events.send(WorkerEvent::Stopped(job.id));
                Ok("stopped")
            }
        }
    }

    fn refused(&self, id: JobId) -> Result<&'static str, QueueError> {
        tracing::warn!(
            job_id = id.0,
            "outcome refused: the lease is no longer ours (rescued or changed by hand)"
        );
        self.tracker.release(id);
        let _unobserved = self.events.send(WorkerEvent::Refused(id));
        Ok("refused")
    }
}

/// Runs a handler with its timeout, catching panics, stopping when its token fires.
async fn run_handler(
    handler: &dyn ErasedHandler,
    ctx: &mut JobContext,
    job: &Job,
    timeout: Duration,
    cancel: &CancellationToken,
    tracker: &Tracker,
) -> RunEnd {
    let fut = AssertUnwindSafe(handler.call(ctx, job.args.clone())).catch_unwind();
    tokio::select! {
        biased;
        _ = cancel.cancelled() => RunEnd::Stopped(tracker.stop_reason(job.id).unwrap_or(StopReason::ByHand)),
        r = tokio::time::timeout(timeout, fut) => match r {
            Err(_) => RunEnd::TimedOut(timeout),
            Ok(Err(panic)) => RunEnd::Panicked(panic_message(panic.as_ref())),
            Ok(Ok(result)) => RunEnd::Returned(result),
        },
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// Writes batched completions: whatever has arrived since the last write goes in one
/// statement. A job stays in the tracker (lease renewed) until its completion is written.
pub struct Completer {
    pub pool: PgPool,
    pub clock: SharedClock,
    pub tracker: Tracker,
    pub events: EventSender,
    pub wake: Arc<Wake>,
    /// Whether completed rows are kept or deleted (`--delete-completed`).
    pub completed: CompletedJobs,
    /// Fired when the worker's services stop (shutdown, after the drain).
    pub stop: CancellationToken,
}

const MAX_BATCH: usize = 1000;

/// How long a shutting-down worker keeps retrying completions the database refuses. Past
/// it the worker exits; the unwritten jobs' leases expire and they run again
/// (at-least-once), rather than the process hanging on a database that is down.
const GIVE_UP_AFTER_STOP: Duration = Duration::from_secs(10);

impl Completer {
    pub fn start(self, mut rx: mpsc::UnboundedReceiver<Completion>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while let Some(first) = rx.recv().await {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                self.flush(&mut batch).await;
            }
        })
    }

    /// Writes one batch, retrying with back-off while the database is unreachable: the
    /// leases are still renewed meanwhile, so nothing is rescued for a slow write.
    async fn flush(&self, batch: &mut Vec<Completion>) {
        let mut wait = Duration::from_millis(50);
        let mut stopped_at: Option<std::time::Instant> = None;
        loop {
            match complete_batch(&self.pool, self.clock.now(), batch, self.completed).await {
                Ok(done) => {
                    let done: std::collections::HashSet<JobId> = done.into_iter().collect();
                    for c in batch.drain(..) {
                        self.tracker.release(c.id);
                        let ev = if done.contains(&c.id) {
                            WorkerEvent::Completed(c.id)
                        } else {
                            WorkerEvent::Refused(c.id)
                        };
                        let _unobserved = self.events.send(ev);
                    }
                    self.wake.wake();
                    return;
                }
                Err(e) => {
                    if self.stop.is_cancelled() {
                        let since = *stopped_at.get_or_insert_with(std::time::Instant::now);
                        if since.elapsed() >= GIVE_UP_AFTER_STOP {
                            tracing::error!(error = %e, jobs = batch.len(),
                                "shutting down with completions unwritten; their jobs run again after the lease");
                            for c in batch.drain(..) {
                                self.tracker.release(c.id);
                            }
                            return;
                        }
                    }
                    tracing::warn!(error = %e, jobs = batch.len(), "writing completions failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
