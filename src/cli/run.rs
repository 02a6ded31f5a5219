//! `up`, `worker`, `db`: the long-running commands and the embedded cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{CliError, DefDirs};
use crate::clock::{self, SharedClock};
use crate::config;
use crate::db;
use crate::queue::builtin::register_builtins;
use crate::queue::claim::CompletedJobs;
use crate::queue::{HandlerRegistry, Worker, WorkerConfig};
use crate::schedule::{self, ScheduleDef, Scheduler};
use crate::web;
use crate::workflow::WorkflowEngine;

/// Flags left out fall back to the config (`COINPILOT_WORKER_*` environment, then the
/// `[worker]` section of the file, then the defaults shown).
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Queues to serve, comma separated; `name=N` limits this worker to N slots on it.
    /// Default: every queue a registered job kind or a schedule uses, and `default`.
    #[arg(long)]
    pub queues: Option<String>,
    /// Concurrent jobs on this worker [default: 10].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Jobs claimed ahead of free slots, waiting in the worker for one (leases renewed,
    /// given back at shutdown); fewer claim commits per job for high-throughput queues
    /// [default: 0, claim free slots only].
    #[arg(long)]
    pub prefetch: Option<usize>,
    /// Delete the jobs this worker completes (those without an output or a workflow run)
    /// instead of keeping them until pruning: for high-volume queues whose history nobody
    /// reads [default: keep; config `worker.delete_completed`, which only
    /// `COINPILOT_WORKER_DELETE_COMPLETED=false` turns off again].
    #[arg(long)]
    pub delete_completed: bool,
    /// Worker name (default: host-pid).
    #[arg(long)]
    pub name: Option<String>,
    /// Lease duration in seconds; renewed every third of it while a job runs [default: 60].
    #[arg(long)]
    pub lease: Option<f64>,
    /// Seconds between polls when no notification arrives [default: 1].
    #[arg(long)]
    pub poll: Option<f64>,
    /// Seconds between rescuer rounds [default: 5].
    #[arg(long)]
    pub rescue_interval: Option<f64>,
    /// Seconds running jobs get to finish at shutdown before they are released [default: 30].
    #[arg(long)]
    pub shutdown_grace: Option<f64>,
    /// Serve /healthz, /readyz and /metrics on this address (`worker`: off by default).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Do not run the scheduler tick in this process (it is leaderless: any number of
    /// processes may run it).
    #[arg(long)]
    pub no_scheduler: bool,
    /// Place real orders on Upbit (needs `market.source = "upbit"` and the Upbit keys in the
    /// environment); without it every order fills in the paper executor.
    #[arg(long)]
    pub live: bool,
}

/// `coinpilot dashboard`: the web UI (and /healthz /readyz /metrics), no workers.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Address to serve on [default: `http.listen`, else 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub replay: ReplayArgs,
}

/// The offline demo (`market.source = replay`, the default): the shipped candles replayed
/// on a clock that runs `--replay-speed` times faster than real time.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// 1-minute candle CSV to replay.
    #[arg(long, default_value = crate::bot::setup::SAMPLE_MINUTES)]
    pub replay_candles: std::path::PathBuf,
    /// Hourly history loaded before the first cycle (the regime needs 200 closed hours).
    #[arg(long, default_value = crate::bot::setup::SAMPLE_HOURS)]
    pub replay_hourly: std::path::PathBuf,
    /// Where the demo clock starts (RFC 3339); a restart resumes after the newest candle.
    #[arg(long, default_value = crate::bot::setup::DEMO_START)]
    pub replay_start: chrono::DateTime<chrono::Utc>,
    /// Demo clock seconds per real second.
    #[arg(long, default_value_t = 60.0)]
    pub replay_speed: f64,
    /// The strategy's thresholds (SPEC B3); the defaults when the file is absent.
    #[arg(long, default_value = "strategy.toml")]
    pub strategy: std::path::PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Print where the database is (the embedded cluster's directories, or the URL).
    Info,
    /// Stop the embedded cluster (it is left running between starts).
    Stop,
}

/// Every job kind, for the commands that validate or enqueue (the bot never runs here).
pub fn registry() -> HandlerRegistry {
    registry_for(
        Arc::new(crate::bot::Bot::inert()),
        crate::notify::Notify::files_only(),
    )
}

/// Every job kind, the bot's running with `bot` and notifications going through `notify`.
pub fn registry_for(bot: Arc<crate::bot::Bot>, notify: crate::notify::Notify) -> HandlerRegistry {
    let mut r = HandlerRegistry::new();
    register_builtins(&mut r);
    schedule::register_kinds(&mut r);
    crate::bot::register(&mut r, bot);
    r.register(notify);
    r
}

pub async fn connect_and_migrate(max: u32) -> Result<PgPool, CliError> {
    let target = db::resolve_target().await?;
    let pool = db::connect(&target, max).await?;
    db::migrate(&pool).await?;
    tracing::info!(database = %target.describe(), "database ready");
    Ok(pool)
}

fn secs(s: f64, flag: &str) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            CliError::BadInput(format!(
                "{flag} must be a positive number of seconds, got {s}"
            ))
        })
}

/// Flags win over the config, which already merged environment, file and defaults.
fn worker_config(
    a: &WorkerArgs,
    cfg: &config::WorkerSection,
    registry: &HandlerRegistry,
    schedules: &[ScheduleDef],
) -> Result<WorkerConfig, CliError> {
    let spec = a.queues.clone().unwrap_or_else(|| cfg.queues.join(","));
    let queues = match spec.trim() {
        "" if a.queues.is_none() => default_queues(registry, schedules),
        s => WorkerConfig::parse_queues(s)?,
    };
    if queues.is_empty() {
        return Err(CliError::BadInput("--queues names no queue".into()));
    }
    let concurrency = a.concurrency.unwrap_or(cfg.concurrency);
    if concurrency == 0 {
        return Err(CliError::BadInput(
            "--concurrency must be at least 1".into(),
        ));
    }
    let name = a.name.clone().unwrap_or_else(default_worker_name);
    Ok(WorkerConfig {
        name,
        queues,
        concurrency,
        prefetch: a.prefetch.unwrap_or(cfg.prefetch),
        lease: secs(a.lease.unwrap_or(cfg.lease_secs), "--lease")?,
        poll_interval: secs(a.poll.unwrap_or(cfg.poll_secs), "--poll")?,
        rescue_interval: secs(
            a.rescue_interval.unwrap_or(cfg.rescue_interval_secs),
            "--rescue-interval",
        )?,
        shutdown_grace: secs(
            a.shutdown_grace.unwrap_or(cfg.shutdown_grace_secs),
            "--shutdown-grace",
        )?,
        claimers: if concurrency >= 4 { 2 } else { 1 },
        completed: if a.delete_completed || cfg.delete_completed {
            CompletedJobs::Delete
        } else {
            CompletedJobs::Keep
        },
    })
}

/// Every queue a registered kind or a schedule uses, and `default`.
fn default_queues(
    registry: &HandlerRegistry,
    schedules: &[ScheduleDef],
) -> Vec<(String, Option<usize>)> {
    let mut qs: Vec<String> = registry
        .kinds()
        .filter_map(|k| registry.get(k))
        .map(|h| h.options().queue)
        .chain(schedules.iter().filter_map(|s| s.queue.clone()))
        .collect();
    qs.push(crate::queue::job::DEFAULT_QUEUE.to_string());
    qs.sort();
    qs.dedup();
    qs.into_iter().map(|q| (q, None)).collect()
}

pub fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Fires on SIGTERM or SIGINT.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down gracefully"),
            _ = term => tracing::info!("SIGTERM: shutting down gracefully"),
        }
        t.cancel();
    });
    token
}

pub async fn worker(a: WorkerArgs, cfg: &config::Loaded, dirs: &DefDirs) -> Result<(), CliError> {
    run_worker(a, cfg, dirs, None).await
}

pub async fn up(a: UpArgs, cfg: &config::Loaded, dirs: &DefDirs) -> Result<(), CliError> {
    let mut w = a.worker;
    if w.listen.is_none() && cfg.config.http.listen.is_none() {
        w.listen = Some(SocketAddr::from(([127, 0, 0, 1], 8080)));
    }
    run_worker(w, cfg, dirs, Some(a.replay)).await
}

/// The bot and the clock of this process: `up` on the replay source runs the demo clock.
async fn bot_and_clock(
    pool: &PgPool,
    cfg: &config::Loaded,
    up: Option<&ReplayArgs>,
    live: bool,
) -> Result<(Arc<crate::bot::Bot>, SharedClock), CliError> {
    use crate::bot::setup;
    let bad = |e: crate::bot::BotError| CliError::Other(format!("bot: {e}"));
    let strategy_file = up
        .map(|r| r.strategy.clone())
        .unwrap_or_else(|| "strategy.toml".into());
    let strategy = setup::load_strategy(&strategy_file).map_err(bad)?;
    let replay = up.filter(|_| cfg.config.market.source == config::MarketSource::Replay);
    let Some(r) = replay.filter(|_| !live) else {
        let bot = match (
            cfg.config.market.source,
            setup::build(cfg, strategy, None, live),
        ) {
            (_, Ok(bot)) => bot,
            // `worker` on the replay source: the demo's clock belongs to `up` alone.
            (config::MarketSource::Replay, Err(e)) if !live => {
                tracing::info!(reason = %e, "trading kinds run without market data in this process");
                crate::bot::Bot::inert()
            }
            (_, Err(e)) => return Err(bad(e)),
        };
        if cfg.config.market.source == config::MarketSource::Upbit {
            let market = crate::bot::market_of_config(cfg).map_err(bad)?;
            match setup::load_hourly_history(pool, &bot, &market, chrono::Utc::now()).await {
                Ok(n) => tracing::info!(hours = n, "hourly history loaded for the regime"),
                Err(e) => {
                    tracing::error!(error = %e, "hourly history not loaded: no entries until 200 hours are stored")
                }
            }
        }
        return Ok((Arc::new(bot), clock::system()));
    };
    let opts = setup::ReplayOptions {
        minutes: r.replay_candles.clone(),
        hours: Some(r.replay_hourly.clone()).filter(|p| p.is_file()),
        start: r.replay_start,
        speed: r.replay_speed,
    };
    let bot = setup::build(cfg, strategy, Some(&opts), false).map_err(bad)?;
    let market = crate::bot::market_of_config(cfg).map_err(bad)?;
    let start = setup::resume_point(pool, &market, opts.start)
        .await
        .map_err(bad)?;
    let (hours, minutes) = setup::seed_replay(pool, &market, &opts, start)
        .await
        .map_err(bad)?;
    tracing::info!(%start, speed = opts.speed, hours, minutes,
        "demo: replaying {} on an accelerated clock", opts.minutes.display());
    println!(
        "demo: replaying {} from {start} at {}× (reports and notifications go to reports/)",
        opts.minutes.display(),
        opts.speed
    );
    let clock: SharedClock = Arc::new(clock::AcceleratedClock::new(start, opts.speed));
    Ok((Arc::new(bot), clock))
}

async fn run_worker(
    a: WorkerArgs,
    cfg: &config::Loaded,
    dirs: &DefDirs,
    up: Option<ReplayArgs>,
) -> Result<(), CliError> {
    let is_up = up.is_some();
    let registry = registry();
    // Bad definition files stop the start with their location, before any connection.
    let defs = dirs.load(&registry)?;
    let config = worker_config(&a, &cfg.config.worker, &registry, &defs.schedules)?;
    let pool_size = cfg
        .config
        .database
        .max_connections
        .unwrap_or((config.concurrency as u32 + 6).min(50));
    let pool = connect_and_migrate(pool_size).await?;
    let (bot, clock) = bot_and_clock(&pool, cfg, up.as_ref(), a.live).await?;
    if let Some(client) = &bot.live {
        crate::bot::alerts::reconcile_at_start(&pool, &bot, client, clock.now())
            .await
            .map_err(|e| CliError::Other(format!("live reconciliation: {e}")))?;
    }
    let notify = crate::notify::Notify::from_config(&cfg.config, &cfg.secrets)
        .map_err(|e| CliError::Other(format!("notifications: {e}")))?;
    tracing::info!(to = %notify.describe(), "notifications");
    let registry = registry_for(bot, notify);
    let synced = schedule::store::sync(&pool, &defs.schedules, false, clock.now()).await?;
    tracing::info!(schedules = defs.schedules.len(), added = synced.added.len(),
        workflows = defs.workflows.len(), from = %dirs.describe(), "definitions loaded");
    let shutdown = shutdown_on_signals();
    let http = match a.listen.or(cfg.config.http.listen) {
        // `up` serves the dashboard beside the ops endpoints; `worker` only the latter.
        Some(addr) if is_up => {
            let dash = dashboard_state(&pool, &clock, cfg, &registry, &defs.workflows).await?;
            Some(start_http(&pool, &clock, addr, cfg, Some(dash), shutdown.clone()).await?)
        }
        Some(addr) => Some(start_http(&pool, &clock, addr, cfg, None, shutdown.clone()).await?),
        None => None,
    };
    let queues: Vec<&str> = config.queues.iter().map(|(q, _)| q.as_str()).collect();
    tracing::info!(worker = %config.name, queues = ?queues, concurrency = config.concurrency,
        mode = if is_up { "up" } else { "worker" }, "worker started");
    if let Some((addr, _)) = &http {
        let home = if is_up {
            format!("http://{addr}/  ")
        } else {
            String::new()
        };
        println!(
            "coinpilot is running: {home}http://{addr}/healthz  http://{addr}/metrics  (Ctrl-C to stop)"
        );
    }
    let scheduler = (!a.no_scheduler).then(|| {
        Scheduler::new(
            pool.clone(),
            clock.clone(),
            registry.clone(),
            defs.workflows.clone(),
        )
        .start(shutdown.clone())
    });
    let engine = Arc::new(WorkflowEngine::new(registry.clone()));
    let hook = Arc::new(crate::bot::alerts::AlertOnDiscard { inner: engine });
    let worker = Worker::new(pool.clone(), clock, registry, config).with_hook(hook);
    worker.run(shutdown.clone()).await?;
    shutdown.cancel();
    if let Some(s) = scheduler {
        if let Err(e) = s.await {
            tracing::warn!(error = %e, "scheduler task ended badly");
        }
    }
    if let Some((_, h)) = http {
        if let Err(e) = h.await {
            tracing::warn!(error = %e, "HTTP server task ended badly");
        }
    }
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The dashboard's state: accounts from the environment, or the stored (or, at first
/// start, generated) admin password, printed once to stdout and never logged.
async fn dashboard_state(
    pool: &PgPool,
    clock: &SharedClock,
    cfg: &config::Loaded,
    registry: &HandlerRegistry,
    workflows: &[crate::workflow::WorkflowDef],
) -> Result<web::DashState, CliError> {
    let resolved = web::accounts::resolve(pool, &cfg.secrets, true, clock.now())
        .await
        .map_err(|e| CliError::Other(format!("dashboard accounts: {e}")))?;
    if let Some(p) = &resolved.generated_password {
        // stdout only, once: the log never sees it. Only its argon2 hash is stored.
        println!(
            "dashboard: no password configured; generated one for user `admin`: {p}\n\
             (shown only now; set COINPILOT_DASHBOARD_PASSWORD_HASH to choose your own)"
        );
    }
    let auth = web::AuthConfig {
        accounts: resolved.accounts,
        secure_cookies: cfg.config.http.secure_cookies,
        trust_forwarded_for: cfg.config.http.trust_forwarded_for,
        limiter: Default::default(),
    };
    Ok(web::DashState::new(
        pool.clone(),
        clock.clone(),
        registry.clone(),
        workflows.to_vec(),
        auth,
    ))
}

/// Serves the ops endpoints, and the dashboard when given, on `addr`.
async fn start_http(
    pool: &PgPool,
    clock: &SharedClock,
    addr: SocketAddr,
    cfg: &config::Loaded,
    dashboard: Option<web::DashState>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), CliError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| CliError::Other(format!("cannot install the metrics recorder: {e}")))?;
    let state = web::OpsState {
        pool: pool.clone(),
        clock: clock.clone(),
        metrics: Some(handle),
        metrics_token: cfg.secrets.get("COINPILOT_METRICS_TOKEN").map(Arc::from),
    };
    let router = match dashboard {
        Some(d) => web::app(d, state),
        None => web::ops_router(state),
    };
    web::serve(router, addr, shutdown)
        .await
        .map_err(|e| CliError::Other(format!("cannot listen on {addr}: {e}")))
}

/// `coinpilot dashboard`: the dashboard and ops endpoints until SIGTERM/SIGINT.
pub async fn dashboard(
    a: DashboardArgs,
    cfg: &config::Loaded,
    dirs: &DefDirs,
) -> Result<(), CliError> {
    let registry = registry();
    let defs = dirs.load(&registry)?;
    let pool = connect_and_migrate(cfg.config.database.max_connections.unwrap_or(10)).await?;
    let clock: SharedClock = clock::system();
    let addr = a
        .listen
        .or(cfg.config.http.listen)
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    let dash = dashboard_state(&pool, &clock, cfg, &registry, &defs.workflows).await?;
    let shutdown = shutdown_on_signals();
    let (bound, handle) = start_http(&pool, &clock, addr, cfg, Some(dash), shutdown).await?;
    tracing::info!(listen = %bound, "dashboard started");
    println!("coinpilot dashboard: http://{bound}/  (Ctrl-C to stop)");
    if let Err(e) = handle.await {
        tracing::warn!(error = %e, "HTTP server task ended badly");
    }
    pool.close().await;
    Ok(())
}

pub async fn db(cmd: DbCommand) -> Result<(), CliError> {
    match cmd {
        DbCommand::Info => {
            let target = match std::env::var("DATABASE_URL") {
                Ok(u) if !u.is_empty() => db::Target::Url(u),
                _ => db::Target::Embedded(db::embedded::Cluster::default_location()?),
            };
            println!("{}", target.describe());
        }
        DbCommand::Stop => {
            let cluster = db::embedded::Cluster::default_location()?;
            tokio::task::spawn_blocking(move || cluster.stop())
                .await
                .map_err(|e| CliError::Other(e.to_string()))??;
            println!("embedded PostgreSQL stopped");
        }
    }
    Ok(())
}
