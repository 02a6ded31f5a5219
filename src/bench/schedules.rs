//! `coinpilot bench schedules`: in a fresh database, N schedules firing every second
//! (`* * * * * *`, a `noop` job each) with W worker processes ticking side by side for S
//! seconds. Reports fires/s, the lateness of each fire (fire time → the tick that enqueued
//! it, and fire time → the job's start), duplicates (must be 0) and missed fire times
//! (must be 0), all from the rows the run left.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use sqlx::PgPool;

use super::queue::{in_fresh_database, round2, spawn_bench_worker, stop_worker, QUEUE};
use crate::cli::{print_json, CliError};
use crate::clock::{Clock, SystemClock};
use crate::schedule::plan::CatchUp;
use crate::schedule::{store, ScheduleDef, Target as ScheduleTarget};

#[derive(Debug, Args)]
pub struct ScheduleBenchArgs {
    #[arg(long, default_value_t = 1_000)]
    pub schedules: usize,
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    #[arg(long, default_value_t = 60)]
    pub secs: u64,
}

#[derive(Debug, Serialize)]
pub struct ScheduleBenchResult {
    pub schedules: usize,
    pub workers: usize,
    pub secs: u64,
    pub fires: i64,
    pub fires_per_s: f64,
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
    pub lateness_max_ms: f64,
    pub fire_to_start_p50_ms: f64,
    pub fire_to_start_p99_ms: f64,
    pub duplicates: i64,
    pub missed: i64,
}

fn bench_schedule(i: usize) -> ScheduleDef {
    ScheduleDef {
        name: format!("bench-{i:05}"),
        cron: "* * * * * *".into(),
        timezone: chrono_tz::Tz::UTC,
        target: ScheduleTarget::Job("noop".into()),
        args: serde_json::json!({}),
        queue: Some(QUEUE.into()),
        priority: 0,
        catch_up: CatchUp::Latest,
        max_catch_up: 100,
        misfire_grace: Duration::from_secs(60),
        enabled: true,
        source: "bench".into(),
    }
}

pub async fn run(a: ScheduleBenchArgs, json: bool) -> Result<(), CliError> {
    if a.schedules == 0 || a.workers == 0 || a.secs < 3 {
        return Err(CliError::BadInput(
            "--schedules and --workers must be at least 1, --secs at least 3".into(),
        ));
    }
    let r = in_fresh_database(|pool, url| async move { measure(&a, &pool, &url).await }).await?;
    if json {
        return print_json(&r);
    }
    println!(
        "schedule benchmark: {} per-second schedules, {} workers, {} s",
        r.schedules, r.workers, r.secs
    );
    println!("  fires           {:>10} ({:.0}/s)", r.fires, r.fires_per_s);
    println!(
        "  lateness        p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms (fire time → enqueue)",
        r.lateness_p50_ms, r.lateness_p99_ms, r.lateness_max_ms
    );
    println!(
        "  fire → start    p50 {:.2} ms  p99 {:.2} ms",
        r.fire_to_start_p50_ms, r.fire_to_start_p99_ms
    );
    println!("  duplicates {}   missed {}", r.duplicates, r.missed);
    Ok(())
}

async fn measure(
    a: &ScheduleBenchArgs,
    pool: &PgPool,
    url: &str,
) -> Result<ScheduleBenchResult, CliError> {
    let defs: Vec<ScheduleDef> = (0..a.schedules).map(bench_schedule).collect();
    store::sync(pool, &defs, false, SystemClock.now()).await?;
    let mut workers = Vec::with_capacity(a.workers);
    for i in 0..a.workers {
        workers.push(spawn_bench_worker(
            url,
            10,
            &format!("bench-sched-{i}"),
            &[],
        )?);
    }
    tokio::time::sleep(Duration::from_secs(a.secs)).await;
    for w in &mut workers {
        stop_worker(w).await?;
    }
    figures(a, pool).await
}

async fn figures(a: &ScheduleBenchArgs, pool: &PgPool) -> Result<ScheduleBenchResult, CliError> {
    let fires: i64 = sqlx::query_scalar("SELECT count(*) FROM schedule_fires")
        .fetch_one(pool)
        .await?;
    let late = ms_percentiles(
        pool,
        "SELECT (extract(epoch FROM created_at - fire_time) * 1000)::float8 FROM schedule_fires",
    )
    .await?;
    let start = ms_percentiles(
        pool,
        "SELECT (extract(epoch FROM j.started_at - f.fire_time) * 1000)::float8
         FROM schedule_fires f JOIN jobs j ON j.id = f.job_id WHERE j.started_at IS NOT NULL",
    )
    .await?;
    // A fire time recorded twice, or a scheduled job that no fire record accounts for.
    let duplicates: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM schedule_fires
                   GROUP BY schedule, fire_time HAVING count(*) > 1) d)
              + (SELECT count(*) FROM jobs WHERE enqueued_by LIKE 'schedule:%')
              - (SELECT count(DISTINCT job_id) FROM schedule_fires)",
    )
    .fetch_one(pool)
    .await?;
    // Inside the window between the first and the last fire second, every schedule
    // should have fired every second.
    let missed: i64 = sqlx::query_scalar(
        "WITH w AS (SELECT min(fire_time) + interval '1 second' AS a,
                           max(fire_time) - interval '1 second' AS b FROM schedule_fires)
         SELECT coalesce((SELECT (extract(epoch FROM b - a)::bigint + 1) * $1 FROM w), 0)
              - (SELECT count(*) FROM schedule_fires, w WHERE fire_time BETWEEN w.a AND w.b)",
    )
    .bind(a.schedules as i64)
    .fetch_one(pool)
    .await?;
    Ok(ScheduleBenchResult {
        schedules: a.schedules,
        workers: a.workers,
        secs: a.secs,
        fires,
        fires_per_s: round2(fires as f64 / a.secs as f64),
        lateness_p50_ms: late.0,
        lateness_p99_ms: late.1,
        lateness_max_ms: late.2,
        fire_to_start_p50_ms: start.0,
        fire_to_start_p99_ms: start.1,
        duplicates,
        missed: missed.max(0),
    })
}

/// (p50, p99, max) of a column of milliseconds.
async fn ms_percentiles(pool: &PgPool, sql: &'static str) -> Result<(f64, f64, f64), CliError> {
    let mut ms: Vec<f64> = sqlx::query_scalar(sql).fetch_all(pool).await?;
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ms.get(((ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok((round2(pct(0.5)), round2(pct(0.99)), round2(pct(1.0))))
}
