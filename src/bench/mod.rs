//! `coinpilot bench …`: benchmarks that print figures (never timed tests).

pub mod multi_replay;
pub mod queue;
pub mod schedules;
pub mod trade_cycle;
pub mod trading;

use clap::Subcommand;

use crate::cli::CliError;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Enqueue and drain throughput, pickup latency and worker memory of the job queue.
    Queue(queue::QueueBenchArgs),
    /// Per-second schedules across worker processes: fires/s, lateness, duplicates.
    Schedules(schedules::ScheduleBenchArgs),
    /// Indicator step time per candle on a candle file (default: the shared BTC 1m month).
    Indicators(trading::TradingBenchArgs),
    /// Backtest time per candle and peak RSS on a candle file.
    Backtest(trading::TradingBenchArgs),
    /// The bot's trade-cycle workflow end to end on a manual clock: latency per minute
    /// tick and how many markets one worker serves at a 1-minute cadence.
    TradeCycle(trade_cycle::TradeCycleBenchArgs),
}

pub async fn run(cmd: BenchCommand, json: bool) -> Result<(), CliError> {
    match cmd {
        BenchCommand::Queue(a) => queue::run(a, json).await,
        BenchCommand::Schedules(a) => schedules::run(a, json).await,
        BenchCommand::Indicators(a) => trading::indicators(a, json),
        BenchCommand::Backtest(a) => trading::backtest(a, json),
        BenchCommand::TradeCycle(a) => trade_cycle::run(a, json).await,
    }
}
