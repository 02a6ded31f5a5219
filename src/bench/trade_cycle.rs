//! `coinpilot bench trade-cycle`: the bot end to end (issue 8's benchmark). In a fresh
//! database it loads the hourly history and the 1-minute candles closed before `--start`
//! (the shipped `data/` sample by default) for M markets, then drives the shipped
//! `trade-cycle` workflow (collect → evaluate → review with the offline `rules` reviewer →
//! buy / sell → the `notify` jobs, written to a temporary reports directory) with one
//! in-process worker serving every queue and the scheduler, on a manual clock moved one
//! minute per tick. Each market has its own schedule and run per tick; all are fed the
//! same real candles under different names ([`MultiReplay`]) and trade one paper account.
//!
//! A tick's latency runs from the scheduler's tick (the fire) until no job is left
//! unfinished (every run of that minute and its notifications are done), in real time.
//! Reported: p50/p99/max per tick, the throughput in runs/s, and the markets one worker
//! could serve at a 1-minute cadence with the tick's p99 kept under 60 s / [`SAFETY`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::multi_replay::MultiReplay;
use super::queue::{in_fresh_database, round2};
use crate::bot::setup::{load_strategy, DEMO_START, SAMPLE_HOURS, SAMPLE_MINUTES};
use crate::bot::{self, Bot};
use crate::cli::{print_json, CliError};
use crate::clock::{ManualClock, SharedClock};
use crate::db::{self, Target};
use crate::defs::SourceFile;
use crate::domain::candle::{Interval, Market};
use crate::market::replay::ReplaySource;
use crate::market::store_page;
use crate::queue::builtin::register_builtins;
use crate::queue::runtime::WorkerEvent;
use crate::queue::{admin, HandlerRegistry, Worker, WorkerConfig};
use crate::schedule::plan::CatchUp;
use crate::schedule::{self, ScheduleDef, Scheduler, Target as ScheduleTarget};
use crate::workflow::{def as workflow_def, WorkflowDef, WorkflowEngine};

/// The tick's p99 must stay under `60 s / SAFETY` for a market count to count as served.
pub const SAFETY: f64 = 2.0;
/// A tick that has not finished after this long fails the benchmark (and names the jobs).
const TICK_DEADLINE: Duration = Duration::from_secs(300);
/// The shipped workflow, as `coinpilot up` loads it from `workflows/`.
const TRADE_CYCLE: &str = include_str!("../../workflows/trade-cycle.toml");

#[derive(Debug, Clone, Args)]
pub struct TradeCycleBenchArgs {
    /// Minute ticks to drive (each fires one trade-cycle run per market).
    #[arg(long, default_value_t = 60)]
    pub minutes: usize,
    /// Markets the one worker serves (their own schedule each, all fed the same candles).
    #[arg(long, default_value_t = 1)]
    pub markets: usize,
    /// The worker's slots (the `worker.concurrency` default).
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// 1-minute candle CSV to replay.
    #[arg(long, default_value = SAMPLE_MINUTES)]
    pub candles: PathBuf,
    /// Hourly history loaded before the first tick (the regime needs 200 closed hours).
    #[arg(long, default_value = SAMPLE_HOURS)]
    pub hourly: PathBuf,
    /// The clock's start (RFC 3339): the candles closed by then are loaded untimed.
    #[arg(long, default_value = DEMO_START)]
    pub start: DateTime<Utc>,
    /// The worker's poll interval in seconds when no notification wakes it (the
    /// `worker.poll_secs` default).
    #[arg(long, default_value_t = 1.0)]
    pub poll: f64,
    /// The strategy's thresholds; the defaults when the file is absent.
    #[arg(long, default_value = "strategy.toml")]
    pub strategy: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct TradeCycleBenchResult {
    pub minutes: usize,
    pub markets: usize,
    pub concurrency: usize,
    pub runs: usize,
    /// Jobs of every kind the ticks ran (steps, notifications, backfills).
    pub jobs: i64,
    pub discarded: i64,
    /// The distinct `kind: last error` of the discarded jobs (at most 5).
    pub discarded_errors: Vec<String>,
    pub signals: i64,
    pub entry_signals: i64,
    pub ai_decisions: i64,
    pub fills: i64,
    pub notifications: i64,
    pub tick_p50_ms: f64,
    pub tick_p99_ms: f64,
    pub tick_max_ms: f64,
    pub tick_mean_ms: f64,
    /// Ticks slower than 500 ms (at the default 1 s poll, a step that waited for the poll).
    pub ticks_over_500ms: usize,
    /// Runs finished per second of tick time (all ticks' runs / the ticks' summed latency).
    pub runs_per_s: f64,
    /// Markets one worker serves at a 1-minute cadence with the tick's p99 under
    /// 60 s / `safety`, extrapolated linearly from this run's p99 per market.
    pub markets_at_1m_estimate: usize,
    pub safety: f64,
}

pub async fn run(a: TradeCycleBenchArgs, json: bool) -> Result<(), CliError> {
    validate(&a)?;
    let pool_size = (a.concurrency as u32 + 6).min(50);
    let r = in_fresh_database(|_, url| async move {
        let pool = db::connect(&Target::Url(url), pool_size).await?;
        let r = measure(&pool, &a).await;
        pool.close().await;
        r
    })
    .await?;
    if json {
        return print_json(&r);
    }
    print_human(&r);
    Ok(())
}

fn validate(a: &TradeCycleBenchArgs) -> Result<(), CliError> {
    let bad = |m: &str| Err(CliError::BadInput(m.into()));
    match (a.minutes, a.markets, a.concurrency) {
        (0, _, _) => bad("--minutes must be at least 1"),
        (_, 0, _) => bad("--markets must be at least 1"),
        (_, m, _) if m > 10_000 => bad("--markets: at most 10,000"),
        (_, _, 0) => bad("--concurrency must be at least 1"),
        _ if !(a.poll > 0.0 && a.poll <= 60.0) => bad("--poll must be between 0 and 60 seconds"),
        _ => Ok(()),
    }
}

fn print_human(r: &TradeCycleBenchResult) {
    println!(
        "trade-cycle benchmark: {} minute ticks × {} markets, one worker of {} slots",
        r.minutes, r.markets, r.concurrency
    );
    println!(
        "  ran             {} runs, {} jobs ({} discarded): {} signals ({} entries), {} AI decisions, {} fills, {} notifications",
        r.runs, r.jobs, r.discarded, r.signals, r.entry_signals, r.ai_decisions, r.fills, r.notifications
    );
    for e in &r.discarded_errors {
        println!("  discarded       {e}");
    }
    println!(
        "  tick latency    p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  mean {:.2} ms (fire → every run finished)",
        r.tick_p50_ms, r.tick_p99_ms, r.tick_max_ms, r.tick_mean_ms
    );
    println!("  ticks > 500 ms  {} of {}", r.ticks_over_500ms, r.minutes);
    println!("  throughput      {:.1} runs/s", r.runs_per_s);
    println!(
        "  1-minute cadence: ≈ {} markets per worker (tick p99 ≤ 60 s / {})",
        r.markets_at_1m_estimate, r.safety
    );
}

/// The benchmark's market names: KRW-BTC, then KRW-X001, KRW-X002, …
pub fn bench_markets(n: usize) -> Result<Vec<Market>, CliError> {
    (0..n)
        .map(|i| match i {
            0 => "KRW-BTC".to_string(),
            i => format!("KRW-X{i:03}"),
        })
        .map(|s| {
            s.parse()
                .map_err(|e| CliError::Other(format!("market name {s}: {e}")))
        })
        .collect()
}

fn trade_cycle_schedule(market: &Market) -> ScheduleDef {
    ScheduleDef {
        name: format!("trade-cycle-{market}"),
        // As jobs/market.toml: five seconds after the minute.
        cron: "5 * * * * *".into(),
        timezone: chrono_tz::Tz::UTC,
        target: ScheduleTarget::Workflow("trade-cycle".into()),
        args: serde_json::json!({"market": market.as_str(), "unit": "1m"}),
        queue: None,
        priority: 0,
        catch_up: CatchUp::Latest,
        max_catch_up: 100,
        misfire_grace: Duration::from_secs(30),
        enabled: true,
        source: "bench".into(),
    }
}

/// Every job kind, the bot's running on `bot`, notifications to files under `reports`.
fn bench_registry(bot: Bot, reports: &Path) -> Result<HandlerRegistry, CliError> {
    let mut r = HandlerRegistry::new();
    register_builtins(&mut r);
    schedule::register_kinds(&mut r);
    bot::register(&mut r, Arc::new(bot));
    let mut cfg = crate::config::Config::default();
    cfg.notify.reports_dir = Some(reports.to_path_buf());
    let notify = crate::notify::Notify::from_config(&cfg, &Default::default())
        .map_err(|e| CliError::Other(format!("notifications: {e}")))?;
    r.register(notify);
    Ok(r)
}

fn trade_cycle_workflow(registry: &HandlerRegistry) -> Result<WorkflowDef, CliError> {
    let file = SourceFile {
        path: "workflows/trade-cycle.toml".into(),
        text: TRADE_CYCLE.into(),
    };
    Ok(workflow_def::parse(&file, registry)?)
}

/// Stores, for every market, the hours and the minutes closed by `start` (untimed).
async fn seed(
    pool: &PgPool,
    markets: &[Market],
    hours: &ReplaySource,
    minutes: &ReplaySource,
    start: DateTime<Utc>,
) -> Result<(), CliError> {
    let market_err = |e: crate::market::MarketError| CliError::Other(format!("seed: {e}"));
    let mut conn = pool.acquire().await?;
    for m in markets {
        let h = hours.completed_by(start).to_vec();
        store_page(&mut conn, m, Interval::H1, h, start)
            .await
            .map_err(market_err)?;
        for chunk in minutes.completed_by(start).chunks(5000) {
            store_page(&mut conn, m, Interval::M1, chunk.to_vec(), start)
                .await
                .map_err(market_err)?;
        }
    }
    Ok(())
}

/// The replay must hold a candle for every tick: the last tick decides on the minute that
/// opened `minutes − 2` minutes after `start`, and a buy there fills at the next one.
fn check_span(minutes: &ReplaySource, a: &TradeCycleBenchArgs) -> Result<(), CliError> {
    let need = a.start + chrono::Duration::minutes(a.minutes as i64 - 1);
    let last = minutes
        .range(a.start, DateTime::<Utc>::MAX_UTC)
        .last()
        .map(|c| c.open_time);
    match last {
        Some(t) if t >= need => Ok(()),
        Some(t) => Err(CliError::BadInput(format!(
            "--minutes: {} ticks from --start {} need candles up to {need}; {} ends at {t}",
            a.minutes,
            a.start,
            a.candles.display()
        ))),
        None => Err(CliError::BadInput(format!(
            "--start: {} has no candle at or after {}",
            a.candles.display(),
            a.start
        ))),
    }
}

/// Everything a measurement needs, built before the first tick.
struct Rig {
    scheduler: Scheduler,
    clock: ManualClock,
    events: broadcast::Receiver<WorkerEvent>,
    stop: CancellationToken,
    worker: tokio::task::JoinHandle<Result<(), crate::queue::QueueError>>,
    reports: PathBuf,
}

/// One worker on every queue a registered kind uses (and `default`), as `coinpilot up`.
fn worker_config(registry: &HandlerRegistry, a: &TradeCycleBenchArgs) -> WorkerConfig {
    let mut queues: Vec<String> = registry
        .kinds()
        .filter_map(|k| registry.get(k))
        .map(|h| h.options().queue)
        .chain([crate::queue::job::DEFAULT_QUEUE.to_string()])
        .collect();
    queues.sort();
    queues.dedup();
    let queues: Vec<&str> = queues.iter().map(String::as_str).collect();
    let mut config = WorkerConfig::new("bench-trade-cycle", &queues);
    config.concurrency = a.concurrency;
    config.poll_interval = Duration::from_secs_f64(a.poll);
    config.claimers = if a.concurrency >= 4 { 2 } else { 1 };
    config
}

async fn rig(pool: &PgPool, a: &TradeCycleBenchArgs) -> Result<Rig, CliError> {
    let read =
        |p: &Path, i| ReplaySource::from_file(p, i).map_err(|e| CliError::BadInput(e.to_string()));
    let minutes = read(&a.candles, Interval::M1)?;
    let hours = read(&a.hourly, Interval::H1)?;
    check_span(&minutes, a)?;
    let markets = bench_markets(a.markets)?;
    seed(pool, &markets, &hours, &minutes, a.start).await?;
    let strategy =
        load_strategy(&a.strategy).map_err(|e| CliError::BadInput(format!("--strategy: {e}")))?;
    let bot = Bot {
        strategy,
        source: Arc::new(
            MultiReplay::new(&markets, minutes).map_err(|e| CliError::Other(e.to_string()))?,
        ),
        reviewer: Arc::new(crate::ai::RulesReviewer::new(strategy.review)),
        paper: crate::paper::PaperConfig {
            orders: strategy.orders,
            ..crate::paper::PaperConfig::default()
        },
        ..Bot::inert()
    };
    let reports =
        std::env::temp_dir().join(format!("coinpilot-bench-reports-{}", std::process::id()));
    let registry = bench_registry(bot, &reports)?;
    let workflows = vec![trade_cycle_workflow(&registry)?];
    let defs: Vec<ScheduleDef> = markets.iter().map(trade_cycle_schedule).collect();
    let clock = ManualClock::new(a.start);
    let shared: SharedClock = Arc::new(clock.clone());
    schedule::store::sync(pool, &defs, false, a.start).await?;
    let scheduler = Scheduler::new(pool.clone(), shared.clone(), registry.clone(), workflows);
    let config = worker_config(&registry, a);
    let engine = Arc::new(WorkflowEngine::new(registry.clone()));
    let hook = Arc::new(bot::alerts::AlertOnDiscard { inner: engine });
    let worker = Worker::new(pool.clone(), shared, registry, config).with_hook(hook);
    let events = worker.events();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let worker = tokio::spawn(async move { worker.run(s).await });
    Ok(Rig {
        scheduler,
        clock,
        events,
        stop,
        worker,
        reports,
    })
}

pub async fn measure(
    pool: &PgPool,
    a: &TradeCycleBenchArgs,
) -> Result<TradeCycleBenchResult, CliError> {
    validate(a)?;
    let mut rig = rig(pool, a).await?;
    let ticks = drive(pool, &mut rig, a).await;
    rig.stop.cancel();
    let stopped = rig.worker.await;
    if let Err(e) = std::fs::remove_dir_all(&rig.reports) {
        tracing::debug!(error = %e, "no benchmark reports to remove");
    }
    let ticks = ticks?;
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(CliError::Other(format!("the worker task failed: {e}"))),
    }
    figures(pool, a, &ticks).await
}

/// One tick per minute: the clock to hh:mm:05 (the schedule's fire time, from `--start`
/// on), the scheduler's tick (which must fire one run per market), then the wait until
/// nothing is unfinished. Tick k collects the minute that opened k − 1 minutes after
/// `--start` and decides on it.
async fn drive(
    pool: &PgPool,
    rig: &mut Rig,
    a: &TradeCycleBenchArgs,
) -> Result<Vec<Duration>, CliError> {
    let mut ticks = Vec::with_capacity(a.minutes);
    for minute in 0..a.minutes as i64 {
        let at = a.start + chrono::Duration::minutes(minute) + chrono::Duration::seconds(5);
        rig.clock.set(at);
        let t = Instant::now();
        let fired = rig.scheduler.tick().await?.fired;
        if fired != a.markets {
            return Err(CliError::Other(format!(
                "tick at {at}: {fired} runs fired for {} markets",
                a.markets
            )));
        }
        settle(pool, &mut rig.events, t + TICK_DEADLINE).await?;
        ticks.push(t.elapsed());
    }
    Ok(ticks)
}

/// Waits until no job is available or running. Wakes on the worker's next event, or after
/// 5 ms at the latest (a batched completion is written after its event).
async fn settle(
    pool: &PgPool,
    events: &mut broadcast::Receiver<WorkerEvent>,
    deadline: Instant,
) -> Result<(), CliError> {
    loop {
        if !admin::any_unfinished(pool).await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(stuck(pool).await);
        }
        match tokio::time::timeout(Duration::from_millis(5), events.recv()).await {
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) | Err(_) => {}
            Ok(Err(RecvError::Closed)) => {
                return Err(CliError::Other("the worker stopped during a tick".into()))
            }
        }
    }
}

/// The error of a tick that did not finish: the open jobs and their last errors.
async fn stuck(pool: &PgPool) -> CliError {
    const OPEN: &str = "SELECT kind || ' ' || state::text || ' run_at ' || run_at::text \
         || coalesce(': ' || (errors -> -1 ->> 'message'), '') \
         FROM jobs WHERE state IN ('available', 'running') ORDER BY id LIMIT 5";
    let open: Vec<String> = match sqlx::query_scalar(OPEN).fetch_all(pool).await {
        Ok(rows) => rows,
        Err(e) => vec![format!("(cannot list them: {e})")],
    };
    CliError::Other(format!(
        "a tick did not finish within {} s; open jobs: {}",
        TICK_DEADLINE.as_secs(),
        open.join("; ")
    ))
}

/// The counts of what ran, from the rows the ticks left.
const FIGURES: &str = "SELECT \
    (SELECT count(*) FROM jobs), \
    (SELECT count(*) FROM jobs WHERE state = 'discarded'), \
    (SELECT count(*) FROM signals), \
    (SELECT count(*) FROM signals WHERE signal = 'entry'), \
    (SELECT count(*) FROM ai_decisions), \
    (SELECT count(*) FROM fills), \
    (SELECT count(*) FROM jobs WHERE kind = 'notify' AND state = 'completed')";

/// Why jobs were discarded, one line per distinct kind and error.
const DISCARDED: &str =
    "SELECT DISTINCT kind || ': ' || coalesce(errors -> -1 ->> 'message', '?') \
     FROM jobs WHERE state = 'discarded' ORDER BY 1 LIMIT 5";

async fn figures(
    pool: &PgPool,
    a: &TradeCycleBenchArgs,
    ticks: &[Duration],
) -> Result<TradeCycleBenchResult, CliError> {
    let counts: (i64, i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(FIGURES).fetch_one(pool).await?;
    let discarded_errors: Vec<String> = sqlx::query_scalar(DISCARDED).fetch_all(pool).await?;
    let mut ms: Vec<f64> = ticks.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        ms.get(((ms.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let total_s: f64 = ms.iter().sum::<f64>() / 1e3;
    let runs = a.minutes * a.markets;
    let p99 = pct(0.99);
    let budget_ms = 60_000.0 / SAFETY;
    Ok(TradeCycleBenchResult {
        minutes: a.minutes,
        markets: a.markets,
        concurrency: a.concurrency,
        runs,
        jobs: counts.0,
        discarded: counts.1,
        discarded_errors,
        signals: counts.2,
        entry_signals: counts.3,
        ai_decisions: counts.4,
        fills: counts.5,
        notifications: counts.6,
        tick_p50_ms: round2(pct(0.5)),
        tick_p99_ms: round2(p99),
        tick_max_ms: round2(pct(1.0)),
        tick_mean_ms: round2(total_s * 1e3 / ms.len().max(1) as f64),
        ticks_over_500ms: ms.iter().filter(|&&m| m > 500.0).count(),
        runs_per_s: round2(runs as f64 / total_s),
        markets_at_1m_estimate: (budget_ms / p99 * a.markets as f64).floor() as usize,
        safety: SAFETY,
    })
}
