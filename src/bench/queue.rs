//! `coinpilot bench queue`: in a fresh database, bulk-enqueue N `noop` jobs, enqueue 2,000
//! one by one (each in its own transaction), drain everything with a separate worker
//! process of C slots (timed from the worker's start until no job is unfinished), then
//! measure idle pickup latency (enqueue → claim, 200 single jobs on the idle worker) and
//! the worker's peak RSS.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use sqlx::{ConnectOptions, PgPool};

use crate::cli::{print_json, CliError};
use crate::clock::{Clock, SystemClock};
use crate::db::{self, Target};
use crate::queue::{admin, enqueue, enqueue_many, presence, NewJob};

#[derive(Debug, Args)]
pub struct QueueBenchArgs {
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// The drain worker's `--prefetch` (jobs claimed ahead of free slots).
    #[arg(long, default_value_t = 0)]
    pub prefetch: usize,
    /// The drain worker's `--delete-completed` (completed jobs deleted, not kept until
    /// pruning, as graphile-worker does). The pickup latency is then measured on a second
    /// worker that keeps them (their rows are its record), and the start-up split is not
    /// reported (its clock is the first row's `started_at`).
    #[arg(long)]
    pub delete_completed: bool,
    /// Jobs enqueued one by one, each in its own transaction.
    #[arg(long, default_value_t = 2_000)]
    pub single: usize,
    /// Single jobs for the idle pickup latency.
    #[arg(long, default_value_t = 200)]
    pub pickups: usize,
}

#[derive(Debug, Serialize)]
pub struct QueueBenchResult {
    pub jobs: usize,
    pub concurrency: usize,
    pub prefetch: usize,
    pub delete_completed: bool,
    pub enqueue_bulk_jobs_per_s: f64,
    pub enqueue_single_jobs_per_s: f64,
    pub drain_jobs_per_s: f64,
    /// Worker process spawn → first claim, as the peers' `startup_secs` (`null` with
    /// `--delete-completed`: the rows that would say it are gone).
    pub worker_startup_ms: Option<f64>,
    /// The drain after the start-up (first claim → none unfinished), as the peers'
    /// `steady_jobs_per_s`: the peers' drain clock starts at their library's start call,
    /// after the interpreter loaded, where ours starts at the process's spawn.
    pub steady_drain_jobs_per_s: Option<f64>,
    pub pickup_latency_p50_ms: f64,
    pub pickup_latency_p99_ms: f64,
    pub worker_peak_rss_mib: f64,
}

pub(crate) const QUEUE: &str = "bench";

pub async fn run(a: QueueBenchArgs, json: bool) -> Result<(), CliError> {
    if a.jobs == 0 || a.concurrency == 0 {
        return Err(CliError::BadInput(
            "--jobs and --concurrency must be at least 1".into(),
        ));
    }
    let r = in_fresh_database(|pool, url| async move { measure(&a, &pool, &url).await }).await?;
    if json {
        print_json(&r)
    } else {
        println!(
            "queue benchmark: {} jobs, concurrency {}, prefetch {}",
            r.jobs, r.concurrency, r.prefetch
        );
        println!(
            "  bulk enqueue    {:>10.0} jobs/s",
            r.enqueue_bulk_jobs_per_s
        );
        println!(
            "  single enqueue  {:>10.0} jobs/s",
            r.enqueue_single_jobs_per_s
        );
        println!("  drain           {:>10.0} jobs/s", r.drain_jobs_per_s);
        if let (Some(steady), Some(startup)) = (r.steady_drain_jobs_per_s, r.worker_startup_ms) {
            println!("    after start-up {steady:>9.0} jobs/s (worker start-up {startup:.1} ms)");
        }
        if r.delete_completed {
            println!("    (the drain worker deleted completed jobs)");
        }
        println!(
            "  pickup latency  p50 {:.2} ms, p99 {:.2} ms",
            r.pickup_latency_p50_ms, r.pickup_latency_p99_ms
        );
        println!("  worker peak RSS {:.1} MiB", r.worker_peak_rss_mib);
        Ok(())
    }
}

/// Creates `coinpilot_bench_<pid>` beside the target database; returns a URL to it.
/// Runs `f` on a fresh, migrated database (pool and URL) and drops the database after,
/// whatever `f` returned.
pub(crate) async fn in_fresh_database<T, F, Fut>(f: F) -> Result<T, CliError>
where
    F: FnOnce(PgPool, String) -> Fut,
    Fut: std::future::Future<Output = Result<T, CliError>>,
{
    let target = db::resolve_target().await?;
    let (admin_pool, name, url) = fresh_database(&target).await?;
    let pool = db::connect(&Target::Url(url.clone()), 4).await?;
    db::migrate(&pool).await?;
    let result = f(pool.clone(), url).await;
    pool.close().await;
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&admin_pool)
    .await;
    if let Err(e) = dropped {
        tracing::warn!(error = %e, database = %name, "could not drop the benchmark database");
    }
    result
}

async fn fresh_database(target: &Target) -> Result<(PgPool, String, String), CliError> {
    let admin_pool = db::connect(target, 1).await?;
    let name = format!("coinpilot_bench_{}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\""
    )))
    .execute(&admin_pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&admin_pool)
        .await?;
    let url = target
        .connect_options()?
        .database(&name)
        .to_url_lossy()
        .to_string();
    Ok((admin_pool, name, url))
}

async fn measure(
    a: &QueueBenchArgs,
    pool: &PgPool,
    url: &str,
) -> Result<QueueBenchResult, CliError> {
    let clock = SystemClock;
    let job = NewJob::new("noop", serde_json::json!({})).with_queue(QUEUE);

    let jobs: Vec<NewJob> = (0..a.jobs).map(|_| job.clone()).collect();
    let t = Instant::now();
    let mut tx = pool.begin().await?;
    for chunk in jobs.chunks(10_000) {
        enqueue_many(&mut tx, clock.now(), chunk).await?;
    }
    tx.commit().await?;
    let bulk = a.jobs as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut conn = pool.acquire().await?;
    for _ in 0..a.single {
        // One statement in autocommit: its own transaction, one round trip.
        enqueue(&mut conn, clock.now(), &job).await?;
    }
    drop(conn);
    let single = a.single as f64 / t.elapsed().as_secs_f64();

    let total = a.jobs + a.single;
    settle(pool).await;
    let tokens_before = lease_tokens_drawn(pool).await?;
    let spawned = clock.now();
    let mut worker = spawn_worker(
        url,
        a.concurrency,
        a.prefetch,
        a.delete_completed,
        "bench-worker",
    )?;
    let t = Instant::now();
    wait_drained(pool, &mut worker, tokens_before, total).await?;
    let drain = total as f64 / t.elapsed().as_secs_f64();
    let done = clock.now();
    let (startup_ms, steady) = match start_split(pool, spawned, done, total).await? {
        Some((ms, steady)) => (Some((ms * 10.0).round() / 10.0), Some(steady.round())),
        None => (None, None),
    };

    let rss = peak_rss_mib(worker.id());
    if a.delete_completed {
        worker = keeping_worker_for_pickups(pool, url, a, worker).await?;
    }
    let (p50, p99) = pickup_latency(pool, &mut worker, a.pickups).await?;
    // The pickups run on the drain worker (their RSS counts) unless it was replaced.
    let rss = if a.delete_completed {
        rss
    } else {
        peak_rss_mib(worker.id())
    };
    stop_worker(&mut worker).await?;
    Ok(QueueBenchResult {
        jobs: a.jobs,
        concurrency: a.concurrency,
        prefetch: a.prefetch,
        delete_completed: a.delete_completed,
        enqueue_bulk_jobs_per_s: bulk.round(),
        enqueue_single_jobs_per_s: single.round(),
        drain_jobs_per_s: drain.round(),
        worker_startup_ms: startup_ms,
        steady_drain_jobs_per_s: steady,
        pickup_latency_p50_ms: p50,
        pickup_latency_p99_ms: p99,
        worker_peak_rss_mib: rss,
    })
}

/// How many lease tokens the claims have drawn so far: the sequence's `last_value`, less
/// one while it was never called (a fresh sequence says 1 before handing out 1). Read
/// without a lock.
const LEASE_TOKENS_DRAWN: &str =
    "SELECT last_value - CASE WHEN is_called THEN 0 ELSE 1 END FROM job_lease_token_seq";

async fn lease_tokens_drawn(pool: &PgPool) -> Result<i64, CliError> {
    Ok(sqlx::query_scalar(LEASE_TOKENS_DRAWN)
        .fetch_one(pool)
        .await?)
}

/// Waits for the end of the drain the way the peers' harness does: cheaply while most jobs
/// are still to be claimed, precisely at the end. Every claim draws one lease token per
/// job, and the sequence's `last_value` runs ahead of the tokens used (each backend caches
/// 1,000), never behind: until it has moved by `total` from `before`, jobs are certainly
/// left, and one row read says so. Then [`admin::any_unfinished`] every 5 ms, which costs
/// PostgreSQL ~1 ms a call in a drain (it steps over the claim index's dead entries):
/// polled every 20 ms from the start, it took ~5 % of a core from the drain it timed, and
/// its 20 ms step added ~10 ms on average to a drain of under half a second. The cheap
/// phase still asks `any_unfinished` once a second, and gives up if the worker died.
async fn wait_drained(
    pool: &PgPool,
    worker: &mut tokio::process::Child,
    before: i64,
    total: usize,
) -> Result<(), CliError> {
    let total = i64::try_from(total).unwrap_or(i64::MAX);
    let mut polls = 0u32;
    while lease_tokens_drawn(pool).await?.saturating_sub(before) < total {
        polls += 1;
        if polls.is_multiple_of(50) {
            if !admin::any_unfinished(pool).await? {
                return Ok(());
            }
            still_running(worker, "drain")?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_none_unfinished(pool, worker, "drain", Duration::from_millis(5)).await
}

/// Polls [`admin::any_unfinished`] every `step` until it says no, checking once a second
/// that `worker` (named `role` in the error) is still there to finish the jobs.
async fn wait_none_unfinished(
    pool: &PgPool,
    worker: &mut tokio::process::Child,
    role: &str,
    step: Duration,
) -> Result<(), CliError> {
    let mut last_check = Instant::now();
    while admin::any_unfinished(pool).await? {
        if last_check.elapsed() >= Duration::from_secs(1) {
            still_running(worker, role)?;
            last_check = Instant::now();
        }
        tokio::time::sleep(step).await;
    }
    Ok(())
}

fn still_running(worker: &mut tokio::process::Child, role: &str) -> Result<(), CliError> {
    match worker.try_wait() {
        Ok(Some(status)) => Err(CliError::Other(format!(
            "the {role} worker exited while jobs were left ({status})"
        ))),
        _ => Ok(()),
    }
}

/// Worker spawn → first claim (ms) and the drain rate after it, from the first row's
/// `started_at`; `None` when the drain left no rows (`--delete-completed`).
async fn start_split(
    pool: &PgPool,
    spawned: DateTime<Utc>,
    done: DateTime<Utc>,
    total: usize,
) -> Result<Option<(f64, f64)>, CliError> {
    let first: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT min(started_at) FROM jobs")
        .fetch_one(pool)
        .await?;
    Ok(first.map(|first| {
        let startup_ms = (first - spawned).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        let steady_secs = (done - first).num_microseconds().unwrap_or(0) as f64 / 1e6;
        (startup_ms, total as f64 / steady_secs.max(1e-6))
    }))
}

fn spawn_worker(
    url: &str,
    concurrency: usize,
    prefetch: usize,
    delete_completed: bool,
    name: &str,
) -> Result<tokio::process::Child, CliError> {
    let prefetch = prefetch.to_string();
    let mut extra = vec!["--no-scheduler", "--prefetch", &prefetch];
    if delete_completed {
        extra.push("--delete-completed");
    }
    spawn_bench_worker(url, concurrency, name, &extra)
}

/// With `--delete-completed` the pickups' rows would be gone before they are read: stops
/// the drain worker and starts one that keeps its jobs, returning once it has registered
/// (its `workers` row) and run one warm-up job (its wake-up listener may subscribe after
/// the row is written), so that the first pickups do not time its start.
async fn keeping_worker_for_pickups(
    pool: &PgPool,
    url: &str,
    a: &QueueBenchArgs,
    mut drain_worker: tokio::process::Child,
) -> Result<tokio::process::Child, CliError> {
    stop_worker(&mut drain_worker).await?;
    let mut worker = spawn_worker(url, a.concurrency, a.prefetch, false, PICKUP_WORKER)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if presence::is_registered(pool, PICKUP_WORKER).await? {
            let warm_up = NewJob::new("noop", serde_json::json!({})).with_queue(QUEUE);
            enqueue(&mut *pool.acquire().await?, SystemClock.now(), &warm_up).await?;
            wait_none_unfinished(pool, &mut worker, "pickup", Duration::from_millis(5)).await?;
            return Ok(worker);
        }
        still_running(&mut worker, "pickup")?;
        if Instant::now() > deadline {
            return Err(CliError::Other(
                "the pickup worker did not register within 30 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const PICKUP_WORKER: &str = "bench-pickup-worker";

/// What the peer harness does before each drain (`ANALYZE; CHECKPOINT`), so a checkpoint
/// does not land inside the timed drain and the planner knows the table's size. A role
/// that may not checkpoint only loses the second part: warned, not fatal.
async fn settle(pool: &PgPool) {
    for stmt in ["ANALYZE jobs", "CHECKPOINT"] {
        if let Err(e) = sqlx::query(stmt).execute(pool).await {
            tracing::warn!(error = %e, statement = stmt, "could not settle the database before the drain");
        }
    }
}

/// A worker process of this binary on the bench queue, with no definition files (the
/// checkout's schedules must not fire into the benchmark database).
pub(crate) fn spawn_bench_worker(
    url: &str,
    concurrency: usize,
    name: &str,
    extra: &[&str],
) -> Result<tokio::process::Child, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::Other(format!("cannot find own binary: {e}")))?;
    let none = std::env::temp_dir().join("coinpilot-bench-no-definitions");
    tokio::process::Command::new(exe)
        .args([
            "worker",
            "--queues",
            QUEUE,
            "--concurrency",
            &concurrency.to_string(),
            "--name",
            name,
        ])
        .args(extra)
        .env("COINPILOT_JOBS_DIR", &none)
        .env("COINPILOT_WORKFLOWS_DIR", &none)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CliError::Other(format!("cannot start the worker process: {e}")))
}

pub(crate) async fn stop_worker(child: &mut tokio::process::Child) -> Result<(), CliError> {
    if let Some(pid) = child.id() {
        // SIGTERM: the graceful path.
        let status = tokio::process::Command::new("kill")
            .arg(pid.to_string())
            .status()
            .await;
        if let Err(e) = status {
            tracing::warn!(error = %e, "could not signal the worker");
        }
    }
    match tokio::time::timeout(Duration::from_secs(40), child.wait()).await {
        Ok(Ok(_)) => Ok(()),
        _ => {
            child
                .kill()
                .await
                .map_err(|e| CliError::Other(format!("cannot stop the worker: {e}")))?;
            Ok(())
        }
    }
}

/// Enqueue → claim for single jobs on the idle worker, from the rows' own timestamps.
async fn pickup_latency(
    pool: &PgPool,
    worker: &mut tokio::process::Child,
    n: usize,
) -> Result<(f64, f64), CliError> {
    let clock = SystemClock;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let job = NewJob::new("noop", serde_json::json!({})).with_queue(QUEUE);
        let mut conn = pool.acquire().await?;
        ids.push(enqueue(&mut conn, clock.now(), &job).await?.id.0);
        drop(conn);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    wait_none_unfinished(pool, worker, "pickup", Duration::from_millis(20)).await?;
    let mut ms: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM started_at - created_at) * 1000)::float8 FROM jobs WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ms.get(((ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok((round2(pct(0.5)), round2(pct(0.99))))
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Peak resident set (VmHWM) of a process, in MiB.
fn peak_rss_mib(pid: Option<u32>) -> f64 {
    pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| round2(kb / 1024.0))
}
