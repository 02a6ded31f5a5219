//! The command line (SPEC A4): argument parsing with clap and dispatch to the library.
//! Errors are mapped to exit codes that mean something:
//! 0 ok, 1 failure, 2 bad input (also clap's usage errors), 3 not found or wrong state,
//! 4 database unreachable.

pub mod backfill;
pub mod backtest;
mod config;
mod jobs;
mod paper;
mod run;
mod schedules;
mod trading;
mod workflows;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::db::DbError;
use crate::defs::DefError;
use crate::queue::{HandlerRegistry, QueueError};
use crate::schedule::{ScheduleDef, ScheduleError};
use crate::workflow::{WorkflowDef, WorkflowError};

#[derive(Debug, Parser)]
#[command(
    name = "coinpilot",
    version,
    about = "Scheduled-job workflow orchestrator on PostgreSQL that runs a crypto trading bot"
)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Directory of schedule definitions (`*.toml`).
    #[arg(
        long,
        global = true,
        env = "COINPILOT_JOBS_DIR",
        default_value = "jobs"
    )]
    pub jobs_dir: PathBuf,
    /// Directory of workflow definitions (`*.toml`).
    #[arg(
        long,
        global = true,
        env = "COINPILOT_WORKFLOWS_DIR",
        default_value = "workflows"
    )]
    pub workflows_dir: PathBuf,
    /// The TOML config file [default: $COINPILOT_CONFIG, else ./coinpilot.toml when it exists].
    #[arg(long, global = true)]
    pub config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: migrate, workers, scheduler and HTTP endpoints.
    Up(run::UpArgs),
    /// Workers (run as many as you like, on any number of machines).
    Worker(run::WorkerArgs),
    /// The retry dashboard (web UI) and /healthz /readyz /metrics, without workers.
    Dashboard(run::DashboardArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Inspect and act on jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Inspect, pause and resume queues.
    #[command(subcommand)]
    Queues(jobs::QueuesCommand),
    /// Cron schedules from the jobs directory: list, pause, resume, trigger, sync.
    #[command(subcommand)]
    Schedules(schedules::SchedulesCommand),
    /// Workflows from the workflows directory: list, run, show, retry, cancel.
    #[command(subcommand)]
    Workflows(workflows::WorkflowsCommand),
    /// Replay the strategy over candle CSVs (no database): trades, PnL, drawdown, Sharpe.
    Backtest(backtest::BacktestArgs),
    /// Compute the strategy's indicators over a candle CSV (the TA-Lib reference columns).
    Indicators(backtest::IndicatorsArgs),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// The embedded PostgreSQL cluster.
    #[command(subcommand)]
    Db(run::DbCommand),
    /// Check the configuration (file + environment) and print it with secrets masked.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// The paper trading account.
    #[command(subcommand)]
    Paper(paper::PaperCommand),
    /// Fetch and store a range of candles from the configured market source now.
    Backfill(backfill::BackfillArgs),
    /// The kill switch: halt, resume, flatten, status.
    #[command(subcommand)]
    Trading(trading::TradingCommand),
    /// Reports on demand.
    #[command(subcommand)]
    Report(trading::ReportCommand),
}

/// Errors as the CLI reports them.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
    #[error("{0}")]
    Definition(#[from] DefError),
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Other(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::BadInput(_)
            | CliError::Definition(_)
            | CliError::Schedule(ScheduleError::InvalidInput(_))
            | CliError::Workflow(
                WorkflowError::InvalidInput(_) | WorkflowError::UnknownWorkflow { .. },
            )
            | CliError::Config(_)
            | CliError::Queue(QueueError::InvalidInput(_) | QueueError::UnknownKind { .. }) => 2,
            CliError::Queue(QueueError::NotFound(_) | QueueError::WrongState { .. })
            | CliError::Schedule(ScheduleError::NotFound(_))
            | CliError::Workflow(
                WorkflowError::RunNotFound(_) | WorkflowError::WrongState { .. },
            ) => 3,
            CliError::Db(
                DbError::Connect { .. } | DbError::BadUrl { .. } | DbError::Embedded(_),
            ) => 4,
            _ => 1,
        }
    }
}

impl From<sqlx::Error> for CliError {
    fn from(e: sqlx::Error) -> Self {
        CliError::Queue(QueueError::Db(e))
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Offline commands need neither tracing nor an async runtime: starting them would cost
    // a thread pool and milliseconds the backtest's budget does not have.
    // Borrowed, not moved: `cli` goes on whole to the online path, whatever fields it has.
    let offline = match &cli.command {
        Command::Backtest(args) => backtest::run_backtest(args, cli.json),
        Command::Indicators(args) => backtest::run_indicators(args),
        _ => return run_online(cli),
    };
    match offline {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_online(cli: Cli) -> ExitCode {
    // Long-running commands log their progress; one-shot commands only warnings.
    let long_running = matches!(
        cli.command,
        Command::Up(_) | Command::Worker(_) | Command::Dashboard(_)
    );
    init_tracing(if long_running {
        "info,sqlx=warn"
    } else {
        "warn"
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let json = cli.json;
    let dirs = DefDirs {
        jobs: cli.jobs_dir,
        workflows: cli.workflows_dir,
    };
    // Only the commands that use the config load it, so a broken file cannot stop an
    // operator from inspecting jobs or queues.
    // Read here rather than by clap's `env`, so an empty variable counts as unset.
    let file = cli.config.clone().or_else(|| {
        std::env::var_os("COINPILOT_CONFIG")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    });
    let load = || crate::config::load(file.as_deref());
    match cli.command {
        Command::Up(args) => run::up(args, &load()?, &dirs).await,
        Command::Worker(args) => run::worker(args, &load()?, &dirs).await,
        Command::Dashboard(args) => run::dashboard(args, &load()?, &dirs).await,
        Command::Config(cmd) => config::run(cmd, load()?, json),
        Command::Migrate => {
            let pool = run::connect_and_migrate(2).await?;
            pool.close().await;
            println!(
                "migrations applied (latest {})",
                crate::db::latest_migration()
            );
            Ok(())
        }
        Command::Jobs(cmd) => jobs::run_jobs(cmd, json).await,
        Command::Queues(cmd) => jobs::run_queues(cmd, json).await,
        Command::Schedules(cmd) => schedules::run(cmd, &dirs, json).await,
        Command::Workflows(cmd) => workflows::run(cmd, &dirs, json).await,
        Command::Bench(cmd) => crate::bench::run(cmd, json).await,
        Command::Db(cmd) => run::db(cmd).await,
        Command::Backtest(args) => backtest::run_backtest(&args, json),
        Command::Indicators(args) => backtest::run_indicators(&args),
        Command::Paper(cmd) => paper::run_paper(cmd, json).await,
        Command::Backfill(args) => backfill::run_backfill(args, &load()?, json).await,
        Command::Trading(cmd) => trading::run_trading(cmd, &load()?, json).await,
        Command::Report(cmd) => trading::run_report(cmd, &load()?, json).await,
    }
}

/// Prints `value` as one JSON line.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let s = serde_json::to_string(value)
        .map_err(|e| CliError::Other(format!("cannot encode JSON: {e}")))?;
    println!("{s}");
    Ok(())
}

/// Where the definition files are.
#[derive(Debug, Clone)]
pub struct DefDirs {
    pub jobs: PathBuf,
    pub workflows: PathBuf,
}

/// The loaded, validated definitions.
pub struct Definitions {
    pub workflows: Vec<WorkflowDef>,
    pub schedules: Vec<ScheduleDef>,
}

impl DefDirs {
    /// Loads workflows, then the schedules that may start them; the first problem found is
    /// the error (file, line, field).
    pub fn load(&self, registry: &HandlerRegistry) -> Result<Definitions, CliError> {
        let workflows = crate::workflow::def::load_dir(&self.workflows, registry)?;
        let schedules = crate::schedule::def::load_dir(&self.jobs, registry, &workflows)?;
        Ok(Definitions {
            workflows,
            schedules,
        })
    }

    pub fn describe(&self) -> String {
        format!("{} and {}", show(&self.jobs), show(&self.workflows))
    }
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// Who acts from this command line, as recorded on what it triggers.
pub(crate) fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into())
    )
}
