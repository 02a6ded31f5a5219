//! The worker runtime: the claim loop, and the services it starts beside it (listener,
//! heartbeat, rescuer, completer). A worker serves some queues with a number of slots;
//! it claims at most its free slots, runs each job in its own task, and on shutdown stops
//! claiming, lets running jobs finish within the grace period, then releases the rest.
//!
//! Options (defaults): `concurrency` 10, `prefetch` 0, `lease` 60 s, `poll_interval` 1 s,
//! `rescue_interval` 5 s, `shutdown_grace` 30 s, per-queue limits none, `claimers` 2 (the
//! CLI: 1 below 4 slots), `completed` keep.
//!
//! `prefetch` > 0 lets a claim take up to that many jobs beyond the free slots (as
//! graphile-worker's `localQueue` does): they wait in the worker, leases renewed, for a
//! slot, and are given back at once at shutdown. It trades fairness between workers (one
//! worker may hold jobs another could start) for far fewer claim commits per job; the
//! default 0 claims free slots only, as SPEC A1 says. With prefetch each claim loop takes
//! at most its share of the room, so two loops keep two claims in flight.
//!
//! `completed` ([`CompletedJobs`], `--delete-completed`) deletes a job at completion
//! instead of keeping it until pruning, when it has no output and no workflow run.
//!
//! Free slots are claimed in batches: while a queue has jobs running, the claim waits
//! until half its slots are free, or [`CLAIM_LINGER`] has passed. A claim is a commit
//! (a WAL flush); claiming each slot the moment its handler ends made a 10-slot drain
//! one commit per job. An idle queue claims at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::claim::{claim_batch, give_back, CompletedJobs, Completion};
use super::exec::{Completer, JobRunner};
use super::handler::HandlerRegistry;
use super::heartbeat::Heartbeat;
use super::job::{Job, JobId};
use super::notify::Listener;
use super::presence::Presence;
use super::rescue::Rescuer;
use super::slots::Slots;
use super::tracker::{Capacity, StopReason, Tracker};
use super::wake::Wake;
use super::QueueError;
use crate::clock::SharedClock;

/// Called in the job's transaction when a job that belongs to a workflow run completes or
/// is discarded, so the next steps are enqueued atomically with the completion.
pub trait CompletionHook: Send + Sync {
    fn on_completed<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        job: &'a Job,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), QueueError>>;
    fn on_discarded<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        job: &'a Job,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<(), QueueError>>;
}

/// How long free slots of a busy queue wait to become a batch (half its slots; with
/// prefetch, half of what one claim may take: `Capacity::min_batch`) before
/// they are claimed anyway. Claiming each slot as its handler ends costs one commit, one
/// WAL flush, per job: at 10 slots that held drains near pgbench's commit rate (~2k/s).
/// Idle queues claim at once, so this delays only a claim for a worker already running
/// jobs of that queue, and by at most this.
pub const CLAIM_LINGER: Duration = Duration::from_millis(2);

/// What one claim round did, for the claim loop's next wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Some batch came back full: more jobs may be waiting, claim again at once.
    Full,
    /// Free slots wait for a batch (or the linger's end).
    Deferred,
    /// Nothing more to claim now: wait for a wake-up or the poll.
    Done,
}

/// Test and observability signals: tests wait on these instead of sleeping.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    Claimed(JobId),
    Completed(JobId),
    Failed {
        id: JobId,
        discarded: bool,
    },
    Snoozed(JobId),
    Released(JobId),
    /// A handler stopped because its lease was lost or it was cancelled by hand.
    Stopped(JobId),
    /// A completion was refused because the lease was no longer ours.
    Refused(JobId),
    RescuerRan {
        rescued: usize,
    },
    /// The wake-up listener is subscribed: from now on a commit that enqueues a due job
    /// wakes the claim loops (`NOTIFY`), without waiting for the poll.
    Listening,
    /// A claim loop found nothing to claim and waits for a wake-up or its poll (not sent
    /// again after a round the poll started, so an idle worker stays quiet).
    Idle,
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub name: String,
    /// Queue name → optional per-worker limit on that queue.
    pub queues: Vec<(String, Option<usize>)>,
    pub concurrency: usize,
    /// Jobs claimed ahead of free slots (0: free slots only).
    pub prefetch: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub rescue_interval: Duration,
    pub shutdown_grace: Duration,
    /// Claim loops running side by side (each claims only free slots; with prefetch, at
    /// most its share of slots + prefetch per claim).
    pub claimers: usize,
    /// Keep completed jobs until pruning, or delete them at completion
    /// (`--delete-completed`; see [`CompletedJobs`]).
    pub completed: CompletedJobs,
}

impl WorkerConfig {
    pub fn new(name: impl Into<String>, queues: &[&str]) -> Self {
        WorkerConfig {
            name: name.into(),
            queues: queues.iter().map(|q| (q.to_string(), None)).collect(),
            concurrency: 10,
            prefetch: 0,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            rescue_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            claimers: 2,
            completed: CompletedJobs::Keep,
        }
    }

    /// The served queues' names, without their slot limits.
    pub fn queue_names(&self) -> Vec<String> {
        self.queues.iter().map(|(q, _)| q.clone()).collect()
    }

    /// Parses `--queues` entries like `default`, `market=2` (limit 2 slots on `market`).
    pub fn parse_queues(spec: &str) -> Result<Vec<(String, Option<usize>)>, QueueError> {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once('=') {
                None => Ok((s.to_string(), None)),
                Some((q, n)) => n
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(|n| (q.trim().to_string(), Some(n)))
                    .ok_or_else(|| {
                        QueueError::InvalidInput(format!(
                            "--queues: `{s}`: the limit after `=` must be a positive integer"
                        ))
                    }),
            })
            .collect()
    }
}

/// A worker process's job engine.
pub struct Worker {
    pub(crate) pool: PgPool,
    pub(crate) clock: SharedClock,
    pub(crate) registry: HandlerRegistry,
    pub(crate) config: WorkerConfig,
    pub(crate) hook: Option<Arc<dyn CompletionHook>>,
    pub(crate) tracker: Tracker,
    pub(crate) slots: Slots,
    pub(crate) wake: Arc<Wake>,
    pub(crate) events: broadcast::Sender<WorkerEvent>,
}

impl Worker {
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        registry: HandlerRegistry,
        config: WorkerConfig,
    ) -> Self {
        Worker {
            pool,
            clock,
            registry,
            slots: Slots::new(config.concurrency, &config.queues),
            config,
            hook: None,
            tracker: Tracker::default(),
            wake: Arc::new(Wake::default()),
            events: broadcast::channel(4096).0,
        }
    }

    pub fn with_hook(mut self, hook: Arc<dyn CompletionHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Subscribe to [`WorkerEvent`]s (before calling [`Worker::run`]).
    pub fn events(&self) -> broadcast::Receiver<WorkerEvent> {
        self.events.subscribe()
    }

    /// Runs until `shutdown` fires, then drains gracefully.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), QueueError> {
        let presence = self.presence();
        // Another start's row counts as alive if it beat within two heartbeat periods
        // (`lease / 3` of real time each), measured on the clock the rows are written with.
        let alive_within = chrono::Duration::from_std(self.clock.scaled(self.config.lease * 2 / 3))
            .unwrap_or(chrono::Duration::MAX);
        presence.register(&self.pool, alive_within).await?;
        let services = CancellationToken::new();
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Completion>();
        let handles = self.start_services(&services, done_rx, presence.clone());
        let runner = Arc::new(JobRunner::new(&self, done_tx));
        // Several claimers keep claim statements in flight back to back, so the commits of
        // one overlap the round trips of another (PostgreSQL groups their WAL flushes).
        let claimers = (0..self.config.claimers.max(1)).map(|_| async {
            let mut tasks = tokio::task::JoinSet::new();
            let result = self.claim_loop(&shutdown, &runner, &mut tasks).await;
            (result, tasks)
        });
        let ended = futures_util::future::join_all(claimers).await;
        self.give_back_unstarted().await;
        let (results, task_sets): (Vec<_>, Vec<_>) = ended.into_iter().unzip();
        self.drain(task_sets).await;
        drop(runner);
        services.cancel();
        for h in handles {
            if let Err(e) = h.await {
                tracing::error!(error = %e, "worker service task failed");
            }
        }
        presence.unregister(&self.pool).await;
        results.into_iter().collect()
    }

    /// At shutdown, jobs claimed ahead that never started go back at once, in one
    /// statement (attempt given back). If that fails their leases expire and the rescuer
    /// returns them (counted as a failed attempt): logged, nothing is lost.
    async fn give_back_unstarted(&self) {
        let leases = self.tracker.stop_unstarted();
        if leases.is_empty() {
            return;
        }
        match give_back(&self.pool, &leases, self.clock.now()).await {
            Ok(given) => tracing::info!(jobs = given.len(), "gave back jobs claimed ahead"),
            Err(e) => tracing::error!(error = %e, jobs = leases.len(),
                "could not give back jobs claimed ahead; they return when their leases expire"),
        }
    }

    fn start_services(
        &self,
        stop: &CancellationToken,
        done_rx: mpsc::UnboundedReceiver<Completion>,
        presence: Presence,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let listener = Listener {
            pool: self.pool.clone(),
            queues: self.config.queue_names(),
            wake: self.wake.clone(),
            tracker: self.tracker.clone(),
            events: self.events.clone(),
        };
        let heartbeat = Heartbeat {
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            tracker: self.tracker.clone(),
            lease: self.config.lease,
            presence,
        };
        let rescuer = Rescuer {
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            interval: self.config.rescue_interval,
            hook: self.hook.clone(),
            events: self.events.clone(),
            wake: self.wake.clone(),
        };
        let completer = Completer {
            pool: self.completion_pool(),
            clock: self.clock.clone(),
            tracker: self.tracker.clone(),
            events: self.events.clone(),
            wake: self.wake.clone(),
            completed: self.config.completed,
            stop: stop.clone(),
        };
        vec![
            listener.start(stop.clone()),
            heartbeat.start(stop.clone()),
            rescuer.start(stop.clone()),
            // The completer ends when every sender is gone, after its last flush.
            completer.start(done_rx),
        ]
    }

    /// Batched completions of handlers that wrote nothing of their own are committed
    /// without waiting for the WAL flush (`synchronous_commit = off`): if PostgreSQL
    /// crashes within that window the completion is lost, the lease expires and the job
    /// runs again — at-least-once, never two at once, since the handler had already ended.
    /// Claims stay synchronous: a lost claim could let two workers run a job together.
    fn completion_pool(&self) -> PgPool {
        let opts = (*self.pool.connect_options())
            .clone()
            .options([("synchronous_commit", "off")]);
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(opts)
    }

    async fn claim_loop(
        &self,
        shutdown: &CancellationToken,
        runner: &Arc<JobRunner>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Result<(), QueueError> {
        let mut db_backoff = Duration::from_millis(50);
        // Set while free slots wait for a batch (see `Round::Deferred`): past it they are
        // claimed however few. A deadline, not a timeout per wake, so a stream of wakes
        // cannot postpone a lone free slot forever.
        let mut linger_until: Option<tokio::time::Instant> = None;
        // Whether the last idle wait ended by the poll: an idle round after it is not
        // reported again (a 50 ms poll would flood the event channel with `Idle`s).
        let mut polled = false;
        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let any_size = linger_until.is_some_and(|t| t <= tokio::time::Instant::now());
            let seen = self.wake.seen();
            match self.claim_round(runner, tasks, any_size).await {
                Ok(Round::Full) => {
                    linger_until = None;
                    polled = false;
                    continue; // got full batches: more may be waiting
                }
                Ok(Round::Deferred) => {
                    polled = false;
                    let until = *linger_until
                        .get_or_insert_with(|| tokio::time::Instant::now() + CLAIM_LINGER);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep_until(until) => {}
                    }
                    continue;
                }
                Ok(Round::Done) => {
                    linger_until = None;
                    db_backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = db_backoff.as_millis() as u64, "claim failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(db_backoff) => {}
                    }
                    db_backoff = (db_backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            if self.wake.moved_since(seen) {
                continue; // a wake came during the round: what it announced may be unclaimed
            }
            match self.idle(shutdown, polled).await {
                Some(by_poll) => polled = by_poll,
                None => break,
            }
        }
        Ok(())
    }

    /// Waits for a wake-up or the poll; `Some(true)` when the poll ended it, `None` at
    /// shutdown. Reports [`WorkerEvent::Idle`] unless the previous wait was the poll's.
    async fn idle(&self, shutdown: &CancellationToken, polled: bool) -> Option<bool> {
        if !polled {
            let _unobserved = self.events.send(WorkerEvent::Idle);
        }
        tokio::select! {
            _ = shutdown.cancelled() => None,
            _ = self.wake.notified() => Some(false),
            _ = tokio::time::sleep(self.config.poll_interval) => Some(true),
        }
    }

    /// Claims from each served queue up to its free slots (with prefetch, up to the loop's
    /// share of slots + prefetch): in batches of at least `Capacity::min_batch` while it
    /// has jobs running, unless `any_size` (the linger is over).
    async fn claim_round(
        &self,
        runner: &Arc<JobRunner>,
        tasks: &mut tokio::task::JoinSet<()>,
        any_size: bool,
    ) -> Result<Round, QueueError> {
        let (mut full, mut deferred) = (false, false);
        for (queue, limit) in &self.config.queues {
            let cap = Capacity {
                slots: self.config.concurrency,
                prefetch: self.config.prefetch,
                queue_limit: *limit,
                claimers: self.config.claimers.max(1),
            };
            let min = if any_size { 1 } else { cap.min_batch() };
            let reserved = self.tracker.reserve_batch(queue, cap, min);
            deferred |= reserved.deferred;
            let free = reserved.jobs;
            if free == 0 {
                continue;
            }
            full |= self.claim_into(runner, tasks, queue, free).await? == free;
        }
        Ok(match (full, deferred) {
            (true, _) => Round::Full,
            (false, true) => Round::Deferred,
            (false, false) => Round::Done,
        })
    }

    /// One claim statement for `free` reserved slots of `queue`; spawns a task per job.
    /// Returns how many it claimed.
    async fn claim_into(
        &self,
        runner: &Arc<JobRunner>,
        tasks: &mut tokio::task::JoinSet<()>,
        queue: &str,
        free: usize,
    ) -> Result<usize, QueueError> {
        let now = self.clock.now();
        // The lease runs from `now`; the watchdog counts from this instant too.
        let sent_at = std::time::Instant::now();
        let claimed = claim_batch(
            &self.pool,
            queue,
            now,
            free as i64,
            &self.config.name,
            // The lease expiry is clock time (an accelerated demo clock runs faster).
            self.clock.scaled(self.config.lease),
        )
        .await;
        let jobs = match claimed {
            Ok(jobs) => jobs,
            Err(e) => {
                self.tracker.unreserve(queue, free);
                return Err(e);
            }
        };
        let n = jobs.len();
        let mut held = Vec::with_capacity(n);
        for job in jobs {
            let cancel = CancellationToken::new();
            match lease_token(&job) {
                Ok(token) => self
                    .tracker
                    .hold(job.id, token, queue, cancel.clone(), sent_at),
                Err(e) => {
                    self.tracker.unreserve(queue, free);
                    return Err(e);
                }
            }
            held.push((job, cancel));
        }
        self.tracker.unreserve(queue, free);
        for (job, cancel) in held {
            let _unobserved = self.events.send(WorkerEvent::Claimed(job.id));
            let runner = runner.clone();
            tasks.spawn(async move { runner.run(job, cancel).await });
        }
        Ok(n)
    }

    /// Graceful end: wait for handlers up to the grace period, then stop and release them.
    async fn drain(&self, mut task_sets: Vec<tokio::task::JoinSet<()>>) {
        let graceful = async {
            for tasks in &mut task_sets {
                while tasks.join_next().await.is_some() {}
            }
        };
        if tokio::time::timeout(self.config.shutdown_grace, graceful)
            .await
            .is_ok()
        {
            return;
        }
        let ids = self.tracker.ids();
        tracing::warn!(
            jobs = ids.len(),
            "shutdown grace period over; releasing unfinished jobs"
        );
        for id in ids {
            self.tracker.stop(id, StopReason::Shutdown);
        }
        for tasks in &mut task_sets {
            while tasks.join_next().await.is_some() {}
        }
    }

    /// This start's row in `workers`.
    fn presence(&self) -> Presence {
        Presence {
            name: self.config.name.clone(),
            queues: self.config.queue_names(),
            concurrency: i32::try_from(self.config.concurrency).unwrap_or(i32::MAX),
            started_at: self.clock.now(),
        }
    }
}

fn lease_token(job: &Job) -> Result<i64, QueueError> {
    job.lease_token.ok_or_else(|| {
        QueueError::InvalidInput(format!("claimed job {} has no lease token", job.id))
    })
}

/// Releases leases at once (attempt given back), e.g. for jobs stopped at shutdown.
pub async fn release(
    pool: &PgPool,
    leases: &[(JobId, i64)],
    now: DateTime<Utc>,
) -> Result<Vec<JobId>, QueueError> {
    give_back(pool, leases, now).await
}

/// Output as stored: `null` outputs are not stored.
pub(crate) fn stored_output(out: Option<Value>) -> Option<Value> {
    out.filter(|v| !v.is_null())
}

pub(crate) type EventSender = broadcast::Sender<WorkerEvent>;
