//! The command line (SPEC A4): argument parsing with clap and dispatch to the library.
//! Errors are mapped to exit codes that mean something:
//! 0 ok, 1 failure, 2 bad input (also clap's usage errors), 3 not found or wrong state,
//! 4 database unreachable.

pub mod backtest;
mod jobs;
mod paper;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::db::DbError;
use crate::queue::QueueError;

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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Everything in one process: migrate, workers, scheduler and HTTP endpoints.
    Up(run::UpArgs),
    /// Workers (run as many as you like, on any number of machines).
    Worker(run::WorkerArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Inspect and act on jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Inspect, pause and resume queues.
    #[command(subcommand)]
    Queues(jobs::QueuesCommand),
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
    /// The paper trading account.
    #[command(subcommand)]
    Paper(paper::PaperCommand),
}

/// Errors as the CLI reports them.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Other(String),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::BadInput(_)
            | CliError::Queue(QueueError::InvalidInput(_) | QueueError::UnknownKind { .. }) => 2,
            CliError::Queue(QueueError::NotFound(_) | QueueError::WrongState { .. }) => 3,
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
    let offline = match cli.command {
        Command::Backtest(args) => backtest::run_backtest(args, cli.json),
        Command::Indicators(args) => backtest::run_indicators(args),
        command => {
            return run_online(Cli {
                json: cli.json,
                command,
            })
        }
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
    let long_running = matches!(cli.command, Command::Up(_) | Command::Worker(_));
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
    match cli.command {
        Command::Up(args) => run::up(args).await,
        Command::Worker(args) => run::worker(args).await,
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
        Command::Bench(cmd) => crate::bench::run(cmd, json).await,
        Command::Db(cmd) => run::db(cmd).await,
        Command::Paper(cmd) => paper::run_paper(cmd, json).await,
        Command::Backtest(args) => backtest::run_backtest(args, json),
        Command::Indicators(args) => backtest::run_indicators(args),
    }
}

/// Prints `value` as one JSON line.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    let s = serde_json::to_string(value)
        .map_err(|e| CliError::Other(format!("cannot encode JSON: {e}")))?;
    println!("{s}");
    Ok(())
}
