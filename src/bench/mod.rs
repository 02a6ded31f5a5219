//! `coinpilot bench …`: benchmarks that print figures (never timed tests).

pub mod queue;
pub mod schedules;

use clap::Subcommand;

use crate::cli::CliError;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Enqueue and drain throughput, pickup latency and worker memory of the job queue.
    Queue(queue::QueueBenchArgs),
    /// Per-second schedules across worker processes: fires/s, lateness, duplicates.
    Schedules(schedules::ScheduleBenchArgs),
}

pub async fn run(cmd: BenchCommand, json: bool) -> Result<(), CliError> {
    match cmd {
        BenchCommand::Queue(a) => queue::run(a, json).await,
        BenchCommand::Schedules(a) => schedules::run(a, json).await,
    }
}
